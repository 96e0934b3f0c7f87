// client_limit.cc: see client_limit.h.
#include "services/client_limit.h"

#include <boost/beast/http/field.hpp>
#include <optional>
#include <charconv>

#include "core/text.h"

namespace iot::services {
namespace {

namespace ip = boost::asio::ip;
namespace bh = boost::beast::http;

// Normalise maps IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) to IPv4.
ip::address Normalise(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

// ParseForwarded parses one X-Forwarded-For element: an address, possibly "[v6]" or "v4:port".
std::optional<ip::address> ParseForwarded(std::string_view s) {
  s = core::TrimBlanks(s);
  if (!s.empty() && s.front() == '[') {
    auto end = s.find(']');
    if (end == std::string_view::npos) return std::nullopt;
    s = s.substr(1, end - 1);
  } else if (s.find(':') == s.rfind(':') && s.find(':') != std::string_view::npos) {
    s = s.substr(0, s.find(':'));  // v4:port (one colon only; v6 has several)
  }
  boost::system::error_code ec;
  auto a = ip::make_address(std::string(s), ec);
  if (ec) return std::nullopt;
  return Normalise(a);
}

bool Trusted(const ip::address& a, const std::vector<Cidr>& trusted) {
  for (const Cidr& c : trusted) {
    if (c.Contains(a)) return true;
  }
  return false;
}

}  // namespace

bool Cidr::Contains(const ip::address& raw) const {
  const ip::address a = Normalise(raw);
  if (a.is_v4() != network.is_v4()) return false;
  if (a.is_v4()) {
    const std::uint32_t mask = prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
    return (a.to_v4().to_uint() & mask) == (network.to_v4().to_uint() & mask);
  }
  const auto x = a.to_v6().to_bytes();
  const auto y = network.to_v6().to_bytes();
  for (unsigned bit = 0; bit < prefix; ++bit) {
    const unsigned mask = 0x80u >> (bit % 8);
    if ((x[bit / 8] & mask) != (y[bit / 8] & mask)) return false;
  }
  return true;
}

Result<std::vector<Cidr>> ParseCidrs(std::string_view list) {
  std::vector<Cidr> out;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const std::string_view item = core::TrimBlanks(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (item.empty()) continue;
    const auto slash = item.find('/');
    boost::system::error_code ec;
    Cidr c;
    c.network = Normalise(ip::make_address(std::string(item.substr(0, slash)), ec));
    if (ec) return MakeError(Errc::kInvalidArgument, "not an address: " + std::string(item));
    const unsigned max = c.network.is_v4() ? 32 : 128;
    c.prefix = max;
    if (slash != std::string_view::npos) {
      const std::string_view bits = item.substr(slash + 1);
      auto [p, e] = std::from_chars(bits.data(), bits.data() + bits.size(), c.prefix);
      if (e != std::errc() || p != bits.data() + bits.size() || c.prefix > max) {
        return MakeError(Errc::kInvalidArgument, "bad prefix length: " + std::string(item));
      }
    }
    out.push_back(c);
  }
  return out;
}

std::string ClientKey(const ip::address& peer, std::string_view forwarded_for,
                      const std::vector<Cidr>& trusted) {
  ip::address client = Normalise(peer);
  if (Trusted(client, trusted)) {
    // Right to left: each trusted hop vouches for the address before it.
    while (!forwarded_for.empty()) {
      const auto comma = forwarded_for.rfind(',');
      const std::string_view item =
          comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1);
      forwarded_for = comma == std::string_view::npos ? std::string_view()
                                                      : forwarded_for.substr(0, comma);
      auto hop = ParseForwarded(item);
      if (!hop) break;  // garbage: the last good address stands
      client = *hop;
      if (!Trusted(client, trusted)) break;
    }
  }
  if (client.is_v6()) {
    auto bytes = client.to_v6().to_bytes();
    for (std::size_t i = 8; i < bytes.size(); ++i) bytes[i] = 0;
    return ip::address_v6(bytes).to_string() + "/64";
  }
  return client.to_string();
}

http::Admit MakeClientLimit(core::RateLimiter& limiter, std::vector<Cidr> trusted,
                            metrics::Registry& registry, const core::Clock& clock) {
  metrics::Counter& refused = registry.AddCounter(
      "ingest_requests_rate_limited_total",
      "Requests answered 429 because their client address exceeded RATE_LIMIT_CLIENT");
  return [&limiter, trusted = std::move(trusted), &refused, &clock](
             const http::Request& request, const ip::address& peer,
             std::string_view route) -> std::optional<http::Response> {
    if (!limiter.enabled() || !route.starts_with("/ingest")) return std::nullopt;
    const auto xff = request["X-Forwarded-For"];
    const std::string key =
        ClientKey(peer, trusted.empty() ? std::string_view() : std::string_view(xff.data(), xff.size()),
                  trusted);
    auto wait = limiter.Take(key, clock.Now());
    if (!wait) return std::nullopt;
    refused.Inc();
    auto r = http::MakeError(429, "rate_limited",
                             "client " + key + " sends more requests than its rate limit");
    r.set(bh::field::retry_after, core::RetryAfterSeconds(*wait));
    return r;
  };
}

}  // namespace iot::services
