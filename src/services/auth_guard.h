// auth_guard.h: the HTTP side of access tokens (docs/security.md): reads
// `Authorization: Bearer <token>`, answers 401 / 403 with JSON errors, and counts every decision.
//
//   AuthMetrics auth_metrics(registry);                  // once per process
//   AuthGuard guard(authenticator, "ingest", auth_metrics);
//   auto who = guard.Writer(request);                    // a device or gateway token, or
//   if (auto* r = std::get_if<http::Response>(&who)) return respond(std::move(*r));  // 401/403
//   if (!token->MayWrite(id)) return respond(guard.Forbidden("device_not_allowed", ...));
//
// 401 (`unauthorized` when no token was sent, `invalid_token` for a malformed, unknown or revoked
// one) carries `WWW-Authenticate: Bearer realm="iotd"` (RFC 6750, with error="invalid_token" for
// a bad token). 403 (`forbidden`) is a valid token that may not do this: a read token writing,
// a device token reading, a device outside the token's devices or scope. Every 401 and 403 is
// counted in auth_requests_denied_total{role,reason}, every accepted token in
// auth_requests_authenticated_total{role,kind}. Nothing in a response or a metric holds a token.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "auth/authenticator.h"
#include "http/response.h"
#include "metrics/metrics.h"

namespace iot::services {

// AuthMetrics are the access-control metrics; one per process, shared by its guards.
class AuthMetrics {
 public:
  explicit AuthMetrics(metrics::Registry& registry);
  metrics::Family<metrics::Counter>& denied;
  metrics::Family<metrics::Counter>& allowed;
};

class AuthGuard {
 public:
  // `role` names the API in the metrics ("ingest", "dashboard"). The authenticator and metrics
  // must outlive the guard.
  AuthGuard(auth::Authenticator& authenticator, std::string role, AuthMetrics& metrics);

  using Outcome = std::variant<auth::TokenRef, http::Response>;
  // Writer accepts a device or gateway token (403 for a read token).
  Outcome Writer(const http::Request& request);
  // Reader accepts a read token (403 for a device or gateway token).
  Outcome Reader(const http::Request& request);
  // Forbidden returns a 403 response and counts it under `reason`.
  http::Response Forbidden(std::string_view reason, std::string_view message,
                           std::string_view field = {});

 private:
  Outcome Check(const http::Request& request, bool write);

  auth::Authenticator& authenticator_;
  const std::string role_;
  AuthMetrics& metrics_;
  metrics::Counter* authenticated_[3];  // by auth::Kind, looked up once (a hot path)
};

// BearerToken returns the token of an Authorization header value: "" when there is none,
// nullopt when the header is not "Bearer <token>".
std::optional<std::string_view> BearerToken(std::string_view authorization);

}  // namespace iot::services
