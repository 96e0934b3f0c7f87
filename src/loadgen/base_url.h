// base_url.h: the load generator's `--base-url`, parsed into what a plain HTTP client needs.
//
//   auto url = ParseBaseUrl("http://localhost:8001");
//   if (!url) { std::cerr << url.error().message; return 2; }
//   url->host;                  // "localhost"
//   url->port;                  // 8001
//   url->Target("/ingest");     // "/ingest"
//
// Only `http://` is supported: the generator speaks plain HTTP/1.1 (the seed's services do not
// terminate TLS), so `https://` is rejected with a message that says so.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace iot::loadgen {

// BaseUrl is a parsed `http://host[:port][/prefix]`.
struct BaseUrl {
  // host is a name, an IPv4 address or an IPv6 address (without the brackets of the URL form).
  std::string host;
  std::uint16_t port = 80;
  // path_prefix is empty or starts with '/' and has no trailing '/' ("/api" for
  // "http://gw/api/"); it is put in front of every request path.
  std::string path_prefix;

  // HostHeader returns the value of the `Host` header: "host", or "host:port" when the port is
  // not 80; an IPv6 address is bracketed ("[::1]:8001").
  std::string HostHeader() const;

  // Target returns the request target for `path` (which starts with '/'): prefix + path.
  std::string Target(std::string_view path) const;

  friend bool operator==(const BaseUrl&, const BaseUrl&) = default;
};

// ParseBaseUrl parses `http://host[:port][/path]`. The scheme is case-insensitive; the port
// defaults to 80 and must be 1..65535; a trailing '/' of the path is dropped. User info, a
// query or a fragment, an empty host and any scheme other than http give kInvalidArgument with
// a message naming the problem (https: "https is not supported ...").
Result<BaseUrl> ParseBaseUrl(std::string_view url);

}  // namespace iot::loadgen
