# syntax=docker/dockerfile:1
# One image for every role of iotd. The command picks the role:
#   docker run iotd                 -> iotd all (embedded: SQLite + embedded bus, ports 8001/8002)
#   docker run iotd ingest          -> the ingestion API alone (BUS=kafka)
#   docker run iotd aggregator | alerts | dashboard | loadgen ...
# Configuration is environment variables only (README, `iotd options`). Data lives in the
# volume /var/lib/iotd. Built from Debian's packages only; see docs/deployment.md.

# DEBIAN_RELEASE is the Debian release of both stages (the libraries' package names follow it).
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
# The build dependencies, the product libraries of scripts/install-deps.sh, and Node.js + npm
# for the front-end assets the build embeds (web/package-lock.json, from the npm registry).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost-dev libsimdjson-dev libsqlite3-dev libspdlog-dev libfmt-dev libcli11-dev \
      libyaml-cpp-dev libmongoc-dev libbson-dev librdkafka-dev \
      libssl-dev \
      nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt CMakePresets.json ./
COPY cmake cmake
COPY packaging packaging
COPY src src
COPY web web
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DIOT_BUILD_TESTS=OFF -DIOT_BUILD_BENCH=OFF \
 && cmake --build build --target iotd \
 && strip --strip-unneeded -o /usr/local/bin/iotd build/src/app/iotd \
 && /usr/local/bin/iotd --version

FROM debian:${DEBIAN_RELEASE}-slim
# Exactly the packages of the shared libraries iotd loads, directly or through libmongoc and
# librdkafka (checked against `ldd` by tests/deploy/test_image.py), and CA certificates for
# TLS to Kafka and MongoDB.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libbson-1.0-0 \
      libfmt9 \
      libgcc-s1 \
      libicu72 \
      liblz4-1 \
      libmongoc-1.0-0 \
      libmongocrypt0 \
      librdkafka1 \
      libsasl2-2 \
      libsimdjson14 \
      libsnappy1v5 \
      libspdlog1.10 \
      libsqlite3-0 \
      libssl3 \
      libstdc++6 \
      libyaml-cpp0.7 \
      libzstd1 \
      zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 iotd \
 && useradd --system --uid 10001 --gid iotd --home-dir /var/lib/iotd --no-create-home \
      --shell /usr/sbin/nologin iotd \
 && install -d -o iotd -g iotd -m 0750 /var/lib/iotd
COPY --from=build /usr/local/bin/iotd /usr/bin/iotd
USER 10001:10001
WORKDIR /var/lib/iotd
ENV DATA_DIR=/var/lib/iotd
VOLUME ["/var/lib/iotd"]
# 8001 ingestion API, 8002 dashboard API, 8003 aggregator and 8004 alerts metrics/health.
EXPOSE 8001 8002 8003 8004
# `iotd health` asks GET /health of whichever role runs here (no curl needed in the image).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["iotd", "health"]
# iotd handles SIGTERM itself (graceful shutdown within SHUTDOWN_TIMEOUT, 10s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["iotd"]
CMD ["all"]
