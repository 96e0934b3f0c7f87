// client_limit.h: the rate limit per client address of the ingestion API (RATE_LIMIT_CLIENT).
//
// It runs as the server's admission check (http::Admit), after routing and before the body is
// read, so a flooding client costs a header parse per request, not a JSON decode. Requests to
// /ingest and /ingest/batch take one token from the bucket of their client; /health, /ready and
// /metrics are never limited (a probe must not get 429). Over the limit: 429 with Retry-After.
//
// The client is the connection's peer address, except behind a trusted proxy (TRUSTED_PROXIES:
// addresses or CIDR ranges such as 10.0.0.0/8): then X-Forwarded-For is read from the right,
// skipping trusted hops, and the first address that is not trusted is the client. A header from
// an untrusted peer is ignored, since anyone can write one. IPv6 clients are keyed by their /64
// network, because one host usually holds a whole /64 and could otherwise pick a new address
// per request.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/rate_limiter.h"
#include "core/result.h"
#include "core/time.h"
#include "http/server.h"
#include "metrics/metrics.h"

namespace iot::services {

// Cidr is an address range.
struct Cidr {
  boost::asio::ip::address network;
  unsigned prefix = 0;
  bool Contains(const boost::asio::ip::address& a) const;
};

// ParseCidrs parses a comma-separated list of addresses and ranges ("10.0.0.0/8, ::1").
Result<std::vector<Cidr>> ParseCidrs(std::string_view list);

// ClientKey returns the rate-limit key of a request from `peer` with the given X-Forwarded-For
// value (empty: none), as described above.
std::string ClientKey(const boost::asio::ip::address& peer, std::string_view forwarded_for,
                      const std::vector<Cidr>& trusted);

// MakeClientLimit returns the admission check. `limiter`, `registry` and `clock` must outlive the
// server; it counts refusals in ingest_requests_rate_limited_total.
http::Admit MakeClientLimit(core::RateLimiter& limiter, std::vector<Cidr> trusted,
                            metrics::Registry& registry, const core::Clock& clock);

}  // namespace iot::services
