from debian as build
RUN apt-get update && apt-get install -y curl
RUN echo built > /out

# a release of the tool
ARG VERSION=1

FROM debian:latest as final
ENV PATH=$NOT_DEFINED:/usr/bin
ADD config.txt /etc/app.conf
COPY missing.txt /etc/
COPY secret.key /etc/
HEALTHCHECK CMD curl -f http://localhost/ || exit 1
CMD echo hello
