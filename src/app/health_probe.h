// health_probe.h: `iotd health`, a container health check that needs no curl in the image.
//
// It asks GET /health of each URL (by default http://127.0.0.1:<port>/health for the ports
// of every role, read from INGEST_PORT, DASHBOARD_PORT, AGGREGATOR_PORT and ALERTS_PORT like
// the roles read them) and is healthy when at least one listener answered and every listener
// that answered said 200. A refused connection is a role this process does not run.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/result.h"

namespace iot::app {

struct HealthTarget {
  std::string host;
  std::string port;
  std::string target;  // the request path, e.g. /health
  bool tls = false;    // https
};

// ParseHealthUrl splits http://host:port/path or https://host:port/path. Over https the probe
// does not verify the certificate: it runs beside iotd and asks whether it answers, and the
// certificate names a public host, not 127.0.0.1.
Result<HealthTarget> ParseHealthUrl(const std::string& url);

enum class ProbeOutcome { kHealthy, kUnhealthy, kNotListening };

struct ProbeResult {
  ProbeOutcome outcome;
  std::string detail;  // the status line or the error
};

// Probe asks one target; the whole exchange is bounded by `timeout`.
ProbeResult Probe(const HealthTarget& target, std::chrono::milliseconds timeout);

// RunHealth probes `urls` and prints one line per target; exit code 0 healthy, 1 not.
int RunHealth(const std::vector<std::string>& urls, std::chrono::milliseconds timeout);

}  // namespace iot::app
