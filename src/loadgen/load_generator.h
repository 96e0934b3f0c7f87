// load_generator.h: `iotd loadgen`, the seed's load generator (tools/load_generator.py) in C++.
//
// It simulates `devices` devices that POST the seed's readings to the ingest API over a pool of
// HTTP/1.1 keep-alive connections (Boost.Beast), at `rps` requests per second per device, and
// reports what the server answered and how fast:
//
//   LoadgenOptions options;            // defaults are the seed's: 10 devices, 1 rps each,
//   options.rps = 2.0;                 // http://localhost:8001
//   options.duration = std::chrono::seconds(30);
//   LoadGenerator generator(options);  // throws std::invalid_argument on bad options
//   LoadgenSummary summary = generator.Run(std::cerr);   // blocks; progress lines on std::cerr
//   PrintSummary(std::cout, summary);
//   return ExitCodeFor(summary, options);
//
// Rate: open loop by default (see send_schedule.h): request n is due at n / (devices * rps)
// seconds after the start and its latency is measured from that planned time, so a stalling
// server shows up in the percentiles instead of silently lowering the rate. `unthrottled` (or
// rps 0) is a closed loop: each connection sends its next request when it has the answer.
//
// Outcomes: a 2xx is accepted, a 4xx rejected, a 5xx, any other status and every transport
// failure (connect, write, read, timeout) an error. A connection that fails is closed and
// reopened for its next request; a failed connect is retried after a backoff (50 ms doubling to
// 1 s) so that a server that is down is not hammered. Each connect and each exchange is bounded
// by `request_timeout`.
//
// Ending: at the end of `duration` no request due after it is started; requests still due (a
// backlog behind a slow server) and in flight get `drain_timeout` to finish, then are abandoned
// and counted as errors. Stop() stops starting requests at once and gives those in flight the
// same `drain_timeout`. Without `duration`, Run lasts until Stop().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

#include "core/result.h"

namespace iot::loadgen {

// LoadgenOptions are the generator's settings; the flag of each is named in its comment.
struct LoadgenOptions {
  int devices = 10;   // --devices: simulated devices dev-1..dev-N (>= 1)
  double rps = 1.0;   // --rps: requests per second per device; total = devices * rps; 0 = unthrottled
  std::string base_url = "http://localhost:8001";  // --base-url: http://host[:port][/prefix]
  // --duration (e.g. 30s); none = until Stop() (the caller calls it on SIGINT/SIGTERM).
  std::optional<std::chrono::milliseconds> duration;
  int batch = 0;           // --batch N: N readings per request to POST /ingest/batch (a JSON
                           // array); 0 = one reading per request to POST /ingest
  int connections = 8;     // --connections: keep-alive connections (>= 1)
  bool unthrottled = false;// --unthrottled: closed loop, as fast as the connections allow
  double max_error_rate = 0.01;  // --max-error-rate: exit code 1 when errors/sent exceeds it
  std::string device_prefix = "dev-";  // device ids are prefix + 1..N
  // progress_interval: a live progress line this often; zero or negative = no progress lines.
  std::chrono::milliseconds progress_interval{1000};
  std::uint64_t seed = 0;     // RNG seed for the simulated values (0 = random)
  double hot_fraction = 0.0;  // fraction of readings with temperature > 50 to trigger alerts
  // --timeout: bounds each connect and each request/response exchange (> 0).
  std::chrono::milliseconds request_timeout{10'000};
  // drain_timeout is how long requests may still finish after the end or Stop() (>= 0).
  std::chrono::milliseconds drain_timeout{2'000};
  // --token / LOADGEN_TOKEN: sent as `Authorization: Bearer <token>` (INGEST_AUTH=token; a
  // gateway token of dev-1..dev-N, docs/security.md); empty: no Authorization header.
  std::string token = {};
};

// LoadgenSummary is the outcome of a run. When Run returns, sent == accepted + rejected + errors.
struct LoadgenSummary {
  std::uint64_t sent = 0;               // requests started
  std::uint64_t accepted = 0;           // 2xx
  std::uint64_t rejected = 0;           // 4xx
  std::uint64_t errors = 0;             // 5xx, other statuses, transport failures, abandoned
  std::uint64_t readings_accepted = 0;  // readings in accepted requests
  double seconds = 0;                   // wall time of the run
  // Latency of the requests that got a response (any status), in milliseconds: from the planned
  // send time in open loop, from the actual send time when unthrottled.
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  double requests_per_s = 0;  // sent / seconds
  double readings_per_s = 0;  // readings_accepted / seconds
};

// ValidateOptions checks the options and the base URL; kInvalidArgument names the bad option.
Status ValidateOptions(const LoadgenOptions& options);

// LoadGenerator runs one load test.
//
// Lifecycle: construct, Run once (a second Run starts a new test with fresh counters), destroy.
// Threading: Run blocks the calling thread and runs its own io_context on one thread (one
// connection) or two (several); Stop() may be called from any thread (a signal-handling thread)
// at any time, also before Run, in which case Run returns at once with an empty summary. Stop is
// sticky: every later Run also returns at once.
class LoadGenerator {
 public:
  // LoadGenerator validates `options` and throws std::invalid_argument with the message of
  // ValidateOptions when they are invalid.
  explicit LoadGenerator(LoadgenOptions options);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Run sends load until the duration is over or Stop() is called and returns the summary.
  // Progress lines go to `progress` every progress_interval, and once more at the end: one line
  // per interval, or one line rewritten in place with '\r' when `progress` is std::cout,
  // std::cerr or std::clog attached to a terminal.
  LoadgenSummary Run(std::ostream& progress);

  // Stop makes Run stop starting requests and return within drain_timeout (plus scheduling
  // delays). Thread-safe; idempotent.
  void Stop();

 private:
  class Session;

  LoadgenOptions options_;
  std::atomic<bool> stop_requested_{false};
  std::mutex mu_;
  Session* active_ = nullptr;  // guarded by mu_; the Session of the Run in progress
};

// ExitCodeFor returns the process exit code for a run: 1 when errors / sent exceeds
// options.max_error_rate, else 0 (also when nothing was sent). Rejections (4xx) do not count.
int ExitCodeFor(const LoadgenSummary& summary, const LoadgenOptions& options);

// PrintSummary writes a human-readable multi-line summary of `summary` to `out`.
void PrintSummary(std::ostream& out, const LoadgenSummary& summary);

}  // namespace iot::loadgen
