#include "loadgen/base_url.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace iot::loadgen {
namespace {

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

Error Invalid(std::string_view url, std::string_view why) {
  return MakeError(Errc::kInvalidArgument,
                   "invalid base URL '" + std::string(url) + "': " + std::string(why));
}

bool IsHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_';
}

}  // namespace

std::string BaseUrl::HostHeader() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != 80) out += ":" + std::to_string(port);
  return out;
}

std::string BaseUrl::Target(std::string_view path) const {
  std::string out = path_prefix;
  out += path;
  return out;
}

Result<BaseUrl> ParseBaseUrl(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  if (StartsWithNoCase(url, "https://")) {
    return Invalid(url, "https is not supported (the load generator speaks plain HTTP/1.1); "
                        "use http:// or put a TLS-terminating proxy in front");
  }
  if (!StartsWithNoCase(url, kHttp)) {
    return Invalid(url, "expected http://host[:port][/path]");
  }
  std::string_view rest = url.substr(kHttp.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return Invalid(url, "a query or fragment is not allowed");
  }
  const std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return Invalid(url, "user info is not supported");
  }

  BaseUrl out;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return Invalid(url, "unterminated IPv6 address");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Invalid(url, "unexpected text after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return Invalid(url, "empty port");
    }
    const bool valid_v6 = !out.host.empty() && std::all_of(out.host.begin(), out.host.end(), [](char c) {
      return std::isxdigit(static_cast<unsigned char>(c)) != 0 || c == ':' || c == '.';
    });
    if (!valid_v6) return Invalid(url, "invalid IPv6 address");
  } else {
    const std::size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return Invalid(url, "empty port");
    }
    if (out.host.empty()) return Invalid(url, "missing host");
    if (!std::all_of(out.host.begin(), out.host.end(), IsHostChar)) {
      return Invalid(url, "invalid character in host");
    }
  }

  if (!port_text.empty()) {
    unsigned value = 0;
    const char* end = port_text.data() + port_text.size();
    auto [ptr, ec] = std::from_chars(port_text.data(), end, value);
    if (ec != std::errc{} || ptr != end || value == 0 || value > 65535) {
      return Invalid(url, "port must be a number in 1..65535");
    }
    out.port = static_cast<std::uint16_t>(value);
  }

  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.find_first_of(" \t\r\n") != std::string_view::npos) {
    return Invalid(url, "whitespace in path");
  }
  out.path_prefix = std::string(path);
  return out;
}

}  // namespace iot::loadgen
