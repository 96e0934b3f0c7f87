#include "services/ops_routes.h"

#include <boost/beast/http/verb.hpp>

#include "http/response.h"

namespace iot::services {

namespace http_ns = boost::beast::http;

void AddOpsRoutes(http::Router& router, metrics::Registry& registry, ReadinessCheck ready) {
  router.Add(http_ns::verb::get, "/health",
             [](const http::Request&, const http::PathParams&, http::Respond respond) {
               respond(http::MakeJson(200, R"({"status":"ok"})"));
             });
  router.Add(http_ns::verb::get, "/ready",
             [ready = std::move(ready)](const http::Request&, const http::PathParams&,
                                        http::Respond respond) {
               Status s = ready ? ready() : Status::Ok();
               if (s.ok()) {
                 respond(http::MakeJson(200, R"({"status":"ready"})"));
               } else {
                 auto r = http::MakeError(503, "not_ready", s.error().message);
                 r.set(http_ns::field::retry_after, "1");
                 respond(std::move(r));
               }
             });
  router.Add(http_ns::verb::get, "/metrics",
             [&registry](const http::Request&, const http::PathParams&, http::Respond respond) {
               http::Response r{http_ns::status::ok, 11};
               r.set(http_ns::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
               r.body() = registry.Expose();
               r.prepare_payload();
               respond(std::move(r));
             });
}

HttpProbe::HttpProbe(metrics::Registry& registry)
    : requests_(registry.AddCounterFamily("http_requests_total",
                                          "HTTP requests answered, by listener, route and status",
                                          {"server", "route", "method", "status"})),
      latency_(registry.AddHistogramFamily(
          "http_request_duration_seconds",
          "Time from the first byte of a request to its response, by listener and route",
          metrics::LatencyBuckets(), {"server", "route"})) {}

std::function<void(const http::RequestInfo&)> HttpProbe::Observer(std::string server) {
  return [this, server = std::move(server)](const http::RequestInfo& info) {
    char status[8];
    auto n = std::snprintf(status, sizeof status, "%u", info.status);
    auto method = http_ns::to_string(info.method);
    requests_
        .With({server, info.route, std::string_view(method.data(), method.size()),
               std::string_view(status, static_cast<std::size_t>(n))})
        .Inc();
    latency_.With({server, info.route}).Observe(info.seconds);
  };
}

}  // namespace iot::services
