// response.cc: JSON responses and errors, request-target helpers.
#include "http/response.h"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>

#include "core/utf8.h"

namespace iot::http {
namespace {


int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decode decodes %XX (and '+' when plus_is_space). A bad escape fails when `strict`, and is
// kept literally otherwise.
std::optional<std::string> Decode(std::string_view s, bool plus_is_space, bool strict) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      const int h = i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
      const int l = i + 2 < s.size() ? HexValue(s[i + 2]) : -1;
      if (h >= 0 && l >= 0) {
        out += static_cast<char>(h * 16 + l);
        i += 2;
        continue;
      }
      if (strict) return std::nullopt;
      out += c;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  while (!s.empty()) {
    const auto c = static_cast<unsigned char>(s[0]);
    std::size_t n = 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else if (c < 0x80) {
          out += static_cast<char>(c);
        } else if ((n = core::Utf8SequenceLength(s)) > 0) {
          out.append(s.data(), n);
        } else {
          n = 1;
          out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
        }
    }
    s.remove_prefix(n);
  }
  out += '"';
}

Response MakeResponse(unsigned status, std::string_view content_type, std::string body) {
  Response res;
  res.result(status);
  res.version(11);
  res.set(beast::http::field::content_type,
          beast::string_view(content_type.data(), content_type.size()));
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response MakeJson(unsigned status, std::string body) {
  return MakeResponse(status, "application/json", std::move(body));
}

Response MakeError(unsigned status, std::string_view code, std::string_view message,
                   std::string_view field) {
  std::string body;
  body.reserve(32 + code.size() + message.size() + field.size());
  body += "{\"error\":";
  AppendJsonString(body, code);
  body += ",\"message\":";
  AppendJsonString(body, message);
  if (!field.empty()) {
    body += ",\"field\":";
    AppendJsonString(body, field);
  }
  body += '}';
  return MakeJson(status, std::move(body));
}

std::string_view TargetPath(std::string_view target) {
  return target.substr(0, target.find_first_of("?#"));
}

std::optional<std::string> QueryParam(std::string_view target, std::string_view name) {
  const auto question = target.find('?');
  if (question == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(question + 1);
  query = query.substr(0, query.find('#'));
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    const std::string_view raw_key = pair.substr(0, eq);
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    // Fast path: most keys need no decoding.
    const bool plain = raw_key.find_first_of("%+") == std::string_view::npos;
    if (plain ? raw_key != name : *Decode(raw_key, true, false) != name) continue;
    return Decode(raw_value, true, false);
  }
  return std::nullopt;
}

std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  return Decode(s, plus_is_space, true);
}

}  // namespace iot::http
