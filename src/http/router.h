// router.h: maps (method, path) to a handler. Pure code: no sockets, no threads.
//
// A pattern is a path whose segments are literals or "{name}" parameters; a parameter matches
// one non-empty segment and is handed to the handler percent-decoded:
//
//   auto router = std::make_shared<Router>();
//   router->Add(verb::post, "/ingest", HandleIngest,
//               {.max_body_bytes = 64 * 1024, .content_types = {"application/json"}});
//   router->Add(verb::get, "/devices/{device_id}/telemetry", HandleTelemetry);
//   Server server(io, options, router);   // the router is shared as const from here on
//
// When several patterns match a path, the one with a literal in the first segment where they
// differ wins ("/devices/stats" over "/devices/{id}"); a pattern that matches the path but not
// the method gives way to one that has the method. HEAD is served by the GET handler when the
// pattern has no HEAD handler of its own (the server drops the body).
#pragma once

#include <boost/beast/http/verb.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "http/response.h"
#include "http/stream.h"

namespace iot::http {

// PathParams holds the parameters of a matched pattern, in pattern order, percent-decoded.
struct PathParams {
  std::vector<std::pair<std::string, std::string>> values;
  // Get returns the value of parameter `name`, or "" when the pattern has no such parameter.
  std::string_view Get(std::string_view name) const;
};

// Handler serves one request. It must call `respond` exactly once, from any thread, possibly
// later. `request` and `params` stay valid until `respond` is called.
using Handler = std::function<void(const Request&, const PathParams&, Respond)>;

// RouteOptions are the limits the server enforces before it calls a route's handler.
struct RouteOptions {
  // max_body_bytes bounds the request body; larger bodies get 413.
  std::size_t max_body_bytes = 64 * 1024;
  // content_types lists the accepted media types of a request body (e.g. "application/json").
  // Empty: any. Otherwise a request with a body must have one of them, else 415; parameters
  // such as charset are ignored and the comparison is case-insensitive.
  std::vector<std::string> content_types;
};

// Router holds the routes of a server. Set it up with `Add`, then share it as const: `Find` is
// thread-safe, `Add` must not run concurrently with anything.
class Router {
 public:
  // Add registers `handler` for `method` on `pattern` ("/", "/ingest", "/devices/{device_id}").
  // Throws std::invalid_argument for a malformed pattern (not starting with '/', an empty
  // segment, a trailing slash, a bad or repeated parameter name, more than kMaxSegments
  // segments) and for a (method, pattern) already registered, also under other parameter names.
  void Add(beast::http::verb method, std::string pattern, Handler handler,
           RouteOptions options = {});
  // AddStream registers a streaming route (stream.h), with the same pattern rules as Add.
  void AddStream(beast::http::verb method, std::string pattern, StreamHandler handler,
                 StreamOptions stream = {}, RouteOptions options = {});

  // Match is a successful lookup. Pointers and `route` point into the router.
  struct Match {
    const Handler* handler = nullptr;          // an ordinary route, or
    const StreamHandler* stream = nullptr;     // a streaming route (then `stream_options` too)
    const StreamOptions* stream_options = nullptr;
    const RouteOptions* options = nullptr;
    std::string_view route;  // the pattern, for metrics labels
    PathParams params;
  };

  // Find looks up the handler for a request. The query string is ignored. Returns an error
  // response instead: 404 when no pattern matches the path (a trailing slash is not a match,
  // except for "/"), 405 with an Allow header when a pattern matches but not the method, 400
  // when the target is not an origin-form path or a parameter has a bad percent-escape.
  std::variant<Match, Response> Find(beast::http::verb method, std::string_view target) const;

  // RouteInfo is one registered (method, pattern), as given to Add.
  struct RouteInfo {
    beast::http::verb method;
    std::string_view pattern;  // points into the router
  };
  // Routes lists every registered (method, pattern), most specific pattern first, methods in
  // the order added. HEAD served by a GET handler is not listed (it was not added).
  std::vector<RouteInfo> Routes() const;

  // kMaxSegments is the most segments a pattern may have.
  static constexpr std::size_t kMaxSegments = 32;

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter name
    bool param = false;
  };
  struct Method {
    beast::http::verb method;
    Handler handler;
    RouteOptions options;
    StreamHandler stream = {};
    StreamOptions stream_options = {};
  };
  struct Pattern {
    std::string pattern;
    std::vector<Segment> segments;
    std::vector<std::unique_ptr<Method>> methods;
  };
  void AddMethod(std::string pattern, std::unique_ptr<Method> method);
  // Sorted so that the first match is the most specific one.
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

// MediaTypeMatches reports whether the media type of a Content-Type value (before any ';',
// without surrounding whitespace) equals one of `allowed`, ignoring case.
bool MediaTypeMatches(std::string_view content_type, const std::vector<std::string>& allowed);

}  // namespace iot::http
