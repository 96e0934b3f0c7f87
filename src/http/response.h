// response.h: the request and response types of the HTTP layer, JSON responses and errors, and
// request-target helpers (path, query parameters, percent-decoding).
//
// Every error the platform sends is JSON: {"error":"<code>","message":"<text>"[,"field":"<f>"]}
// where `code` is a stable snake_case identifier clients can switch on:
//
//   respond(MakeError(422, "invalid_value", "humidity must be within [0, 100]", "humidity"));
//   auto limit = QueryParam(req.target(), "limit");   // "/x?limit=10" -> "10"
//
// Everything here is pure and thread-safe.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace iot::http {

namespace beast = boost::beast;

using Request = beast::http::request<beast::http::string_body>;
using Response = beast::http::response<beast::http::string_body>;

// Respond delivers a handler's response to the server. A handler calls it exactly once, from
// any thread, possibly after the handler returned (e.g. after a group commit). The server sets
// the protocol version, Content-Length, Connection, Date and Server headers itself.
using Respond = std::function<void(Response)>;

// MakeResponse returns a response with `status`, `content_type` and `body`, e.g. the
// Prometheus exposition: MakeResponse(200, metrics::kContentType, registry.Expose()).
Response MakeResponse(unsigned status, std::string_view content_type, std::string body);

// MakeJson returns a response with `status`, Content-Type application/json and `body` (which
// must be JSON; it is not checked).
Response MakeJson(unsigned status, std::string body);

// MakeError returns a JSON error response: {"error":code,"message":message} plus "field" when
// `field` is not empty. Strings are escaped as JSON requires; bytes that are not UTF-8 become
// U+FFFD, so user input may be quoted in `message` safely.
Response MakeError(unsigned status, std::string_view code, std::string_view message,
                   std::string_view field = {});

// AppendJsonString appends `s` to `out` as a quoted JSON string (escaping quotes, backslashes
// and control characters; replacing bytes that are not well-formed UTF-8 with U+FFFD).
void AppendJsonString(std::string& out, std::string_view s);

// TargetPath returns the path of a request target: everything before '?' or '#'. The path is
// not decoded.
std::string_view TargetPath(std::string_view target);

// QueryParam returns the value of the first query parameter called `name` (compared after
// decoding), percent-decoded with '+' as space; "" for "?name" and "?name=". Returns nullopt
// when the parameter is absent. A '%' not followed by two hex digits is kept literally.
std::optional<std::string> QueryParam(std::string_view target, std::string_view name);

// PercentDecode decodes %XX escapes (and '+' as space when `plus_is_space`). Returns nullopt
// when a '%' is not followed by two hex digits.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space);

}  // namespace iot::http
