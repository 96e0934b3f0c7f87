// ops_routes.h: the routes every role serves, and the HTTP metrics of every listener.
//
//   GET /health   liveness: 200 {"status":"ok"} while the process runs
//   GET /ready    readiness: 200 {"status":"ready"} when `ready()` is Ok, else 503 with the reason
//   GET /metrics  the process's Prometheus exposition
#pragma once

#include <functional>
#include <string>

#include "core/result.h"
#include "http/router.h"
#include "http/server.h"
#include "metrics/metrics.h"

namespace iot::services {

using ReadinessCheck = std::function<Status()>;

// AddOpsRoutes registers /health, /ready and /metrics on `router`.
void AddOpsRoutes(http::Router& router, metrics::Registry& registry, ReadinessCheck ready);

// HttpProbe counts requests by route, method and status and observes their latency.
// Thread-safe; one per process, shared by every listener.
class HttpProbe {
 public:
  explicit HttpProbe(metrics::Registry& registry);
  // Observer returns the callback to give to http::Server for the listener named `server`.
  std::function<void(const http::RequestInfo&)> Observer(std::string server);

 private:
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Histogram>& latency_;
};

}  // namespace iot::services
