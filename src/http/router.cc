// router.cc: pattern parsing and request routing.
#include "http/router.h"

#include <algorithm>
#include <array>
#include <stdexcept>

#include <boost/beast/http/field.hpp>

#include "core/text.h"

namespace iot::http {
namespace {

using beast::http::verb;

bool IsParamNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// SplitPath splits "/a/b" into {"a", "b"} ("/" into nothing). Returns false when the path has
// more than `out.size()` segments.
bool SplitPath(std::string_view path, std::array<std::string_view, Router::kMaxSegments>& out,
               std::size_t& count) {
  count = 0;
  if (path == "/") return true;
  path.remove_prefix(1);
  for (;;) {
    if (count == out.size()) return false;
    const auto slash = path.find('/');
    out[count++] = path.substr(0, slash);
    if (slash == std::string_view::npos) return true;
    path.remove_prefix(slash + 1);
  }
}

}  // namespace

std::string_view PathParams::Get(std::string_view name) const {
  for (const auto& [key, value] : values) {
    if (key == name) return value;
  }
  return {};
}

bool MediaTypeMatches(std::string_view content_type, const std::vector<std::string>& allowed) {
  const std::string_view media = core::TrimBlanks(content_type.substr(0, content_type.find(';')));
  return std::any_of(allowed.begin(), allowed.end(),
                     [media](const std::string& a) { return EqualsIgnoreCase(media, a); });
}

void Router::Add(verb method, std::string pattern, Handler handler, RouteOptions options) {
  AddMethod(std::move(pattern),
            std::make_unique<Method>(Method{method, std::move(handler), std::move(options)}));
}

void Router::AddStream(verb method, std::string pattern, StreamHandler handler,
                       StreamOptions stream, RouteOptions options) {
  AddMethod(std::move(pattern), std::make_unique<Method>(Method{
                                    method, {}, std::move(options), std::move(handler),
                                    std::move(stream)}));
}

void Router::AddMethod(std::string pattern, std::unique_ptr<Method> added) {
  const verb method = added->method;
  if (pattern.empty() || pattern[0] != '/') {
    throw std::invalid_argument("route pattern must start with '/': " + pattern);
  }
  auto p = std::make_unique<Pattern>();
  p->pattern = pattern;
  if (pattern != "/") {
    std::string_view rest(pattern);
    rest.remove_prefix(1);
    for (;;) {
      const auto slash = rest.find('/');
      const std::string_view seg = rest.substr(0, slash);
      if (seg.empty()) throw std::invalid_argument("empty segment in route pattern: " + pattern);
      Segment s;
      if (seg.front() == '{' && seg.back() == '}' && seg.size() > 2) {
        s.param = true;
        s.text = seg.substr(1, seg.size() - 2);
        if (!std::all_of(s.text.begin(), s.text.end(), IsParamNameChar)) {
          throw std::invalid_argument("bad parameter name in route pattern: " + pattern);
        }
        for (const Segment& other : p->segments) {
          if (other.param && other.text == s.text) {
            throw std::invalid_argument("repeated parameter in route pattern: " + pattern);
          }
        }
      } else {
        if (seg.find_first_of("{}?#") != std::string_view::npos) {
          throw std::invalid_argument("bad literal segment in route pattern: " + pattern);
        }
        s.text = seg;
      }
      p->segments.push_back(std::move(s));
      if (p->segments.size() > kMaxSegments) {
        throw std::invalid_argument("too many segments in route pattern: " + pattern);
      }
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
  }

  const auto same_shape = [](const Pattern& a, const Pattern& b) {
    if (a.segments.size() != b.segments.size()) return false;
    for (std::size_t i = 0; i < a.segments.size(); ++i) {
      if (a.segments[i].param != b.segments[i].param) return false;
      if (!a.segments[i].param && a.segments[i].text != b.segments[i].text) return false;
    }
    return true;
  };
  Pattern* target = nullptr;
  for (const auto& existing : patterns_) {
    if (!same_shape(*existing, *p)) continue;
    for (const auto& m : existing->methods) {
      if (m->method == method) {
        throw std::invalid_argument("route already registered: " +
                                    std::string(beast::http::to_string(method)) + " " + pattern +
                                    " (as " + existing->pattern + ")");
      }
    }
    if (existing->pattern == pattern) target = existing.get();
  }
  if (target == nullptr) {
    // Sort key: segment count, then literal (0) before parameter (1) segment by segment.
    const auto less = [](const std::unique_ptr<Pattern>& a, const std::unique_ptr<Pattern>& b) {
      if (a->segments.size() != b->segments.size()) {
        return a->segments.size() < b->segments.size();
      }
      for (std::size_t i = 0; i < a->segments.size(); ++i) {
        if (a->segments[i].param != b->segments[i].param) return !a->segments[i].param;
      }
      return false;
    };
    auto pos = std::upper_bound(patterns_.begin(), patterns_.end(), p, less);
    target = patterns_.insert(pos, std::move(p))->get();
  }
  target->methods.push_back(std::move(added));
}

std::vector<Router::RouteInfo> Router::Routes() const {
  std::vector<RouteInfo> out;
  for (const auto& p : patterns_) {
    for (const auto& m : p->methods) out.push_back({m->method, p->pattern});
  }
  return out;
}

std::variant<Router::Match, Response> Router::Find(verb method, std::string_view target) const {
  if (target.empty() || target[0] != '/') {
    return MakeError(400, "bad_request", "the request target must be an absolute path");
  }
  const std::string_view path = TargetPath(target);
  std::array<std::string_view, kMaxSegments> segments;
  std::size_t count = 0;
  const bool fits = SplitPath(path, segments, count);

  const auto matches = [&](const Pattern& p) {
    if (p.segments.size() != count) return false;
    for (std::size_t i = 0; i < count; ++i) {
      const Segment& s = p.segments[i];
      if (s.param ? segments[i].empty() : segments[i] != s.text) return false;
    }
    return true;
  };
  const auto find_method = [](const Pattern& p, verb m) -> const Method* {
    for (const auto& candidate : p.methods) {
      if (candidate->method == m) return candidate.get();
    }
    return nullptr;
  };

  bool path_matched = false;
  if (fits) {
    for (const auto& p : patterns_) {
      if (!matches(*p)) continue;
      path_matched = true;
      const Method* m = find_method(*p, method);
      if (m == nullptr && method == verb::head) m = find_method(*p, verb::get);
      if (m == nullptr) continue;
      Match match;
      if (m->stream) {
        match.stream = &m->stream;
        match.stream_options = &m->stream_options;
      } else {
        match.handler = &m->handler;
      }
      match.options = &m->options;
      match.route = p->pattern;
      for (std::size_t i = 0; i < count; ++i) {
        if (!p->segments[i].param) continue;
        auto value = PercentDecode(segments[i], false);
        if (!value) {
          return MakeError(400, "bad_request", "invalid percent-encoding in the path",
                           p->segments[i].text);
        }
        match.params.values.emplace_back(p->segments[i].text, std::move(*value));
      }
      return match;
    }
  }
  if (!path_matched) {
    return MakeError(404, "not_found", "no route for " + std::string(path));
  }

  std::vector<verb> allowed;
  for (const auto& p : patterns_) {
    if (!matches(*p)) continue;
    for (const auto& m : p->methods) {
      if (std::find(allowed.begin(), allowed.end(), m->method) == allowed.end()) {
        allowed.push_back(m->method);
      }
    }
  }
  if (std::find(allowed.begin(), allowed.end(), verb::get) != allowed.end() &&
      std::find(allowed.begin(), allowed.end(), verb::head) == allowed.end()) {
    allowed.push_back(verb::head);
  }
  std::sort(allowed.begin(), allowed.end(), [](verb a, verb b) {
    return beast::http::to_string(a) < beast::http::to_string(b);
  });
  std::string allow;
  for (verb v : allowed) {
    if (!allow.empty()) allow += ", ";
    const auto name = beast::http::to_string(v);
    allow.append(name.data(), name.size());
  }
  Response res = MakeError(405, "method_not_allowed",
                           "method " + std::string(beast::http::to_string(method)) +
                               " is not allowed for " + std::string(path) + " (allowed: " +
                               allow + ")");
  res.set(beast::http::field::allow, allow);
  return res;
}

}  // namespace iot::http
