#include "services/auth_guard.h"

#include <boost/beast/http/field.hpp>

namespace iot::services {
namespace {

namespace bh = boost::beast::http;

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

http::Response Unauthorized(auth::Denial denial) {
  http::Response r;
  switch (denial) {
    case auth::Denial::kMissing:
      r = http::MakeError(401, "unauthorized",
                          "a token is required: send Authorization: Bearer <token>");
      r.set(bh::field::www_authenticate, "Bearer realm=\"iotd\"");
      return r;
    case auth::Denial::kMalformed:
      r = http::MakeError(401, "invalid_token",
                          "the Authorization header is not Bearer with an iotd token");
      break;
    case auth::Denial::kUnknown:
      r = http::MakeError(401, "invalid_token", "the token is not valid");
      break;
    case auth::Denial::kRevoked:
      r = http::MakeError(401, "invalid_token", "the token was revoked");
      break;
  }
  r.set(bh::field::www_authenticate, "Bearer realm=\"iotd\", error=\"invalid_token\"");
  return r;
}

}  // namespace

std::optional<std::string_view> BearerToken(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.empty()) return std::string_view();
  const std::size_t sp = v.find(' ');
  if (sp == std::string_view::npos || !EqualsIgnoringCase(v.substr(0, sp), "bearer")) {
    return std::nullopt;
  }
  std::string_view token = v.substr(sp + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

AuthMetrics::AuthMetrics(metrics::Registry& registry)
    : denied(registry.AddCounterFamily(
          "auth_requests_denied_total",
          "Requests refused by access control, by API (ingest, dashboard) and reason "
          "(missing, malformed, unknown, revoked: 401; wrong_kind, device_not_allowed, "
          "out_of_scope: 403)",
          {"role", "reason"})),
      allowed(registry.AddCounterFamily("auth_requests_authenticated_total",
                                        "Requests that presented a valid token (before the device or scope check), by API and token kind",
                                        {"role", "kind"})) {}

AuthGuard::AuthGuard(auth::Authenticator& authenticator, std::string role, AuthMetrics& metrics)
    : authenticator_(authenticator),
      role_(std::move(role)),
      metrics_(metrics),
      authenticated_{&metrics.allowed.With({role_, auth::KindName(auth::Kind::kDevice)}),
                     &metrics.allowed.With({role_, auth::KindName(auth::Kind::kGateway)}),
                     &metrics.allowed.With({role_, auth::KindName(auth::Kind::kRead)})} {}

AuthGuard::Outcome AuthGuard::Writer(const http::Request& request) { return Check(request, true); }
AuthGuard::Outcome AuthGuard::Reader(const http::Request& request) {
  return Check(request, false);
}

AuthGuard::Outcome AuthGuard::Check(const http::Request& request, bool write) {
  auto header = request[bh::field::authorization];
  auto bearer = BearerToken(std::string_view(header.data(), header.size()));
  auto who = bearer ? authenticator_.Authenticate(*bearer)
                    : std::variant<auth::TokenRef, auth::Denial>(auth::Denial::kMalformed);
  if (auto* denial = std::get_if<auth::Denial>(&who)) {
    metrics_.denied.With({role_, auth::DenialName(*denial)}).Inc();
    return Unauthorized(*denial);
  }
  auth::TokenRef token = std::get<auth::TokenRef>(std::move(who));
  if (write && token->kind == auth::Kind::kRead) {
    return Forbidden("wrong_kind", "a read token cannot write readings");
  }
  if (!write && token->kind != auth::Kind::kRead) {
    return Forbidden("wrong_kind", "a device or gateway token cannot read the dashboard API");
  }
  authenticated_[static_cast<int>(token->kind)]->Inc();
  return token;
}

http::Response AuthGuard::Forbidden(std::string_view reason, std::string_view message,
                                    std::string_view field) {
  metrics_.denied.With({role_, reason}).Inc();
  return http::MakeError(403, "forbidden", message, field);
}

}  // namespace iot::services
