// ingest_service.h: the ingestion API (port 8001).
//
//   POST /ingest        one reading (the seed's JSON) -> 202 {"status":"queued","device_id":...}
//   POST /ingest/batch  a JSON array or NDJSON of readings -> 202 with accepted/rejected counts
//                       and the errors of the rejected items by index; 422 when none is valid
//
// A reading is answered 2xx only after the bus made it durable; when the bus cannot take it the
// answer is 503 with Retry-After. Bad input gets 400/413/415/422 with a JSON error naming the
// field, is counted by reason, and nothing of it reaches the bus. A device over its rate limit
// gets 429 with Retry-After (docs/security.md).
//
// With a guard (INGEST_AUTH=token, docs/security.md) a request needs a device or gateway token:
// 401 before the body is decoded, 403 when a reading's device is not the token's (a batch is
// refused whole, nothing of it written).
//
// Thread-safety: handlers run on the listener's I/O threads; responses to accepted readings are
// sent from the bus's completion thread.
#pragma once

#include <cstddef>

#include "bus/bus.h"
#include "core/rate_limiter.h"
#include "core/reading.h"
#include "core/time.h"
#include "http/router.h"
#include "metrics/metrics.h"
#include "services/auth_guard.h"

namespace iot::services {

struct IngestOptions {
  core::ReadingLimits limits;
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_batch_bytes = 16 * 1024 * 1024;
  std::size_t batch_max_items = 10000;
  // device_rate limits readings per device id (RATE_LIMIT_DEVICE); rate 0: no limit. A reading
  // over the limit gets 429 with Retry-After (in a batch: an error at its index; 429 when no
  // reading of the batch was accepted).
  core::RateLimit device_rate;
};

class IngestService {
 public:
  // The producer, registry, clock and guard must outlive the service; no guard: no tokens.
  IngestService(IngestOptions options, bus::Producer& producer, metrics::Registry& registry,
                const core::Clock& clock, AuthGuard* guard = nullptr);

  // RegisterRoutes adds POST /ingest and POST /ingest/batch to `router`.
  void RegisterRoutes(http::Router& router);

 private:
  void HandleOne(const http::Request& request, http::Respond respond);
  void HandleBatch(const http::Request& request, http::Respond respond);
  void CountRejected(std::string_view code);
  // Authenticate answers 401/403 through `respond` and returns false, or returns true with
  // `token` set (null without a guard).
  bool Authenticate(const http::Request& request, http::Respond& respond, auth::TokenRef& token);

  IngestOptions options_;
  bus::Producer& producer_;
  const core::Clock& clock_;
  AuthGuard* guard_;
  core::RateLimiter device_limiter_;
  // Probe: the ingest metrics.
  metrics::Counter& accepted_;
  metrics::Family<metrics::Counter>& rejected_;
  metrics::Counter& unavailable_;
  metrics::Histogram& batch_size_;
  metrics::Histogram& durable_latency_;
};

}  // namespace iot::services
