#include "services/dashboard_service.h"

#include <charconv>
#include <optional>
#include <string>

#include <boost/beast/http/verb.hpp>
#include <fmt/format.h>

#include "codec/documents.h"
#include "codec/json_writer.h"
#include "http/response.h"
#include "services/dead_letter.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;

constexpr std::size_t kDefaultLimit = 100;
constexpr std::size_t kMaxLimit = 1000;

// BadParam is a query parameter that cannot be used; it becomes a 422.
struct BadParam {
  std::string name;
  std::string message;
};

template <typename T>
using Parsed = std::variant<T, BadParam>;

http::Response BadParamResponse(const BadParam& b) {
  return http::MakeError(422, "invalid_parameter", b.message, b.name);
}

http::Response StoreError(const Error& e) {
  if (e.code == Errc::kInvalidArgument) return http::MakeError(422, "invalid_parameter", e.message);
  auto r = http::MakeError(503, "store_unavailable", e.message);
  r.set(bh::field::retry_after, "1");
  return r;
}

// Target is the request target as a std::string_view (Beast 1.74 has its own string_view).
std::string_view Target(const http::Request& req) {
  auto t = req.target();
  return {t.data(), t.size()};
}

std::optional<std::int64_t> ParseInt(std::string_view s) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// Common list parameters: limit, from, to, cursor.
struct ListParams {
  std::size_t limit = kDefaultLimit;
  store::TimeRange range;
  std::optional<store::Cursor> after;
};

std::optional<BadParam> ParseTime(std::string_view target, const char* name,
                                  std::optional<core::Timestamp>& out) {
  auto v = http::QueryParam(target, name);
  if (!v) return std::nullopt;
  auto t = core::ParseIso8601(*v);
  if (!t) return BadParam{name, fmt::format("{} must be an ISO 8601 timestamp", name)};
  out = *t;
  return std::nullopt;
}

Parsed<ListParams> ParseList(std::string_view target) {
  ListParams p;
  if (auto v = http::QueryParam(target, "limit")) {
    auto n = ParseInt(*v);
    if (!n || *n < 1 || *n > static_cast<std::int64_t>(kMaxLimit)) {
      return BadParam{"limit", fmt::format("limit must be an integer from 1 to {}", kMaxLimit)};
    }
    p.limit = static_cast<std::size_t>(*n);
  }
  if (auto b = ParseTime(target, "from", p.range.from)) return *b;
  if (auto b = ParseTime(target, "to", p.range.to)) return *b;
  if (p.range.from && p.range.to && *p.range.from > *p.range.to) {
    return BadParam{"from", "from must not be after to"};
  }
  if (auto v = http::QueryParam(target, "cursor")) {
    p.after = DecodeCursor(*v);
    if (!p.after) return BadParam{"cursor", "cursor is not one this server issued"};
  }
  return p;
}

// ListResponse renders a page as a JSON array with the paging headers.
template <typename T, typename WriteFn>
http::Response ListResponse(std::string_view target, const store::Page<T>& page, WriteFn write) {
  std::string body;
  body.reserve(page.items.size() * 160 + 2);
  codec::JsonWriter w(body);
  w.BeginArray();
  for (const auto& item : page.items) write(w, item);
  w.EndArray();
  auto r = http::MakeJson(200, std::move(body));
  if (page.next) {
    std::string cursor = EncodeCursor(*page.next);
    r.set("X-Next-Cursor", cursor);
    // The next page's link keeps every parameter but the cursor.
    std::string path(http::TargetPath(target));
    std::string query;
    auto q = target.find('?');
    if (q != std::string_view::npos) {
      std::string_view rest = target.substr(q + 1);
      while (!rest.empty()) {
        auto amp = rest.find('&');
        auto part = rest.substr(0, amp);
        if (!part.starts_with("cursor=") && !part.empty()) {
          query += part;
          query += '&';
        }
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
      }
    }
    r.set(bh::field::link, fmt::format("<{}?{}cursor={}>; rel=\"next\"", path, query, cursor));
  }
  return r;
}

void WriteStoredReading(codec::JsonWriter& w, const store::StoredReading& r) {
  codec::WriteReading(w, r.reading, r.id.value);
}

void WriteAggregate(codec::JsonWriter& w, const store::Aggregate& a) {
  codec::WriteAggregate(w, a.key, a.acc);
}

void WriteDevice(codec::JsonWriter& w, const store::Device& d) {
  w.BeginObject();
  w.Key("device_id");
  w.String(d.device_id);
  w.Key("first_seen");
  w.String(core::FormatIso8601(d.first_seen));
  w.Key("last_seen");
  w.String(core::FormatIso8601(d.last_seen));
  w.Key("readings");
  w.Int(d.readings);
  w.Key("latest");
  codec::WriteReading(w, d.latest, std::nullopt);
  w.EndObject();
}

// DeviceExists answers 404 through `respond` when the device is unknown.
bool DeviceExists(store::Store& store, const std::string& id, http::Respond& respond) {
  auto d = store.FindDevice(id);
  if (!d) {
    respond(StoreError(d.error()));
    return false;
  }
  if (!d->has_value()) {
    respond(http::MakeError(404, "device_not_found", "no readings from device " + id,
                            "device_id"));
    return false;
  }
  return true;
}

}  // namespace

// A cursor is "<ts hex>.<id hex>", followed by ".<key hex>" when the store's tie-breaker is a
// key rather than a number (the MongoDB store's aggregates). Hex keeps it URL-safe.
std::string EncodeCursor(const store::Cursor& c) {
  std::string out = fmt::format("{:x}.{:x}", static_cast<std::uint64_t>(c.ts_us),
                                static_cast<std::uint64_t>(c.id));
  if (!c.key.empty()) {
    out += '.';
    for (unsigned char ch : c.key) out += fmt::format("{:02x}", ch);
  }
  return out;
}

std::optional<store::Cursor> DecodeCursor(std::string_view text) {
  constexpr std::size_t kMaxKeyBytes = 512;
  auto hex = [](std::string_view part, std::uint64_t& value) {
    if (part.empty()) return false;
    auto [p, e] = std::from_chars(part.data(), part.data() + part.size(), value, 16);
    return e == std::errc() && p == part.data() + part.size();
  };
  auto dot = text.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::string_view a = text.substr(0, dot), rest = text.substr(dot + 1);
  auto dot2 = rest.find('.');
  std::string_view b = rest.substr(0, dot2);
  std::uint64_t ts = 0, id = 0;
  if (!hex(a, ts) || !hex(b, id)) return std::nullopt;
  store::Cursor cursor{static_cast<std::int64_t>(ts), static_cast<std::int64_t>(id), {}};
  if (dot2 != std::string_view::npos) {
    std::string_view k = rest.substr(dot2 + 1);
    if (k.empty() || k.size() % 2 != 0 || k.size() / 2 > kMaxKeyBytes) return std::nullopt;
    for (std::size_t i = 0; i < k.size(); i += 2) {
      std::uint64_t byte = 0;
      if (!hex(k.substr(i, 2), byte)) return std::nullopt;
      cursor.key += static_cast<char>(byte);
    }
  }
  return cursor;
}

DashboardService::DashboardService(store::Store& store, const core::Clock& clock,
                                   AuthGuard* guard)
    : store_(store), clock_(clock), guard_(guard) {}

std::optional<DashboardService::Access> DashboardService::Authorize(const http::Request& request,
                                                                    http::Respond& respond) {
  if (!guard_) return Access{};
  auto who = guard_->Reader(request);
  if (auto* refused = std::get_if<http::Response>(&who)) {
    respond(std::move(*refused));
    return std::nullopt;
  }
  const auto& token = std::get<auth::TokenRef>(who);
  Access access;
  if (!token->prefix.empty()) access.prefix = token->prefix;
  return access;
}

bool DashboardService::DeviceAllowed(const Access& access, const std::string& device_id,
                                     http::Respond& respond) {
  if (access.Sees(device_id)) return true;
  respond(guard_->Forbidden("out_of_scope",
                            "this token may read only devices whose id starts with " +
                                *access.prefix,
                            "device_id"));
  return false;
}

bool DashboardService::FleetWide(const Access& access, std::string_view route,
                                 http::Respond& respond) {
  if (!access.prefix) return true;
  respond(guard_->Forbidden("out_of_scope", std::string(route) +
                                                " covers every device: it needs a read token "
                                                "without a prefix"));
  return false;
}

void DashboardService::RegisterRoutes(http::Router& router) {
  using http::PathParams;
  using http::Request;
  using http::Respond;

  router.Add(bh::verb::get, "/", [](const Request&, const PathParams&, Respond respond) {
    respond(http::MakeJson(200, R"({"status":"ok","service":"dashboard-api"})"));
  });

  auto telemetry = [this](const Request& req, const Access& access,
                          std::optional<std::string> device, Respond& respond) {
    auto params = ParseList(Target(req));
    if (auto* bad = std::get_if<BadParam>(&params)) return respond(BadParamResponse(*bad));
    auto& p = std::get<ListParams>(params);
    store::TelemetryQuery q;
    q.device_id = std::move(device);
    q.device_prefix = access.prefix;
    q.range = p.range;
    q.limit = p.limit;
    q.after = p.after;
    auto page = store_.Telemetry(q);
    if (!page) return respond(StoreError(page.error()));
    respond(ListResponse(Target(req), *page, WriteStoredReading));
  };
  router.Add(bh::verb::get, "/telemetry",
             [this, telemetry](const Request& req, const PathParams&, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               telemetry(req, *access, std::nullopt, respond);
             });
  router.Add(bh::verb::get, "/devices/{device_id}/telemetry",
             [this, telemetry](const Request& req, const PathParams& pp, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               std::string id(pp.Get("device_id"));
               if (!DeviceAllowed(*access, id, respond)) return;
               if (!DeviceExists(store_, id, respond)) return;
               telemetry(req, *access, id, respond);
             });

  auto aggregates = [this](const Request& req, const Access& access,
                           std::optional<std::string> device, Respond& respond) {
    auto params = ParseList(Target(req));
    if (auto* bad = std::get_if<BadParam>(&params)) return respond(BadParamResponse(*bad));
    auto& p = std::get<ListParams>(params);
    store::AggregateQuery q;
    q.device_id = std::move(device);
    q.device_prefix = access.prefix;
    q.range = p.range;
    q.limit = p.limit;
    q.after = p.after;
    if (auto w = http::QueryParam(Target(req), "window")) {
      auto d = core::ParseDuration(*w);
      if (!d) {
        return respond(BadParamResponse({"window", "window must be a duration such as 1m or 1h"}));
      }
      q.window = *d;
    }
    if (auto s = http::QueryParam(Target(req), "sensor_type")) {
      if (s->empty() || s->size() > 64) {
        return respond(BadParamResponse({"sensor_type", "sensor_type must be 1 to 64 characters"}));
      }
      q.sensor_type = std::move(*s);
    }
    auto page = store_.Aggregates(q);
    if (!page) return respond(StoreError(page.error()));
    respond(ListResponse(Target(req), *page, WriteAggregate));
  };
  router.Add(bh::verb::get, "/aggregated",
             [this, aggregates](const Request& req, const PathParams&, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               aggregates(req, *access, std::nullopt, respond);
             });
  router.Add(bh::verb::get, "/devices/{device_id}/aggregates",
             [this, aggregates](const Request& req, const PathParams& pp, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               std::string id(pp.Get("device_id"));
               if (!DeviceAllowed(*access, id, respond)) return;
               if (!DeviceExists(store_, id, respond)) return;
               aggregates(req, *access, id, respond);
             });

  auto alerts = [this](const Request& req, const Access& access,
                       std::optional<std::int64_t> recent_minutes, Respond& respond) {
    auto params = ParseList(Target(req));
    if (auto* bad = std::get_if<BadParam>(&params)) return respond(BadParamResponse(*bad));
    auto& p = std::get<ListParams>(params);
    store::AlertQuery q;
    q.range = p.range;
    q.limit = p.limit;
    q.after = p.after;
    if (auto s = http::QueryParam(Target(req), "status")) {
      auto st = core::ParseAlertStatus(*s);
      if (!st) {
        return respond(
            BadParamResponse({"status", "status must be one of active, resolved, pending"}));
      }
      q.status = *st;
    }
    if (auto d = http::QueryParam(Target(req), "device_id")) {
      if (!DeviceAllowed(access, *d, respond)) return;
      q.device_id = std::move(*d);
    }
    q.device_prefix = access.prefix;
    if (recent_minutes) {
      auto since = clock_.Now() - std::chrono::minutes(*recent_minutes);
      if (!q.range.from || *q.range.from < since) q.range.from = since;
    }
    auto page = store_.Alerts(q);
    if (!page) return respond(StoreError(page.error()));
    respond(ListResponse(Target(req), *page, codec::WriteAlert));
  };
  router.Add(bh::verb::get, "/alerts",
             [this, alerts](const Request& req, const PathParams&, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               alerts(req, *access, std::nullopt, respond);
             });
  router.Add(bh::verb::get, "/alerts/recent",
             [this, alerts](const Request& req, const PathParams&, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               std::int64_t minutes = 60;
               if (auto v = http::QueryParam(Target(req), "minutes")) {
                 auto n = ParseInt(*v);
                 if (!n || *n < 1 || *n > 525600) {
                   return respond(BadParamResponse(
                       {"minutes", "minutes must be an integer from 1 to 525600"}));
                 }
                 minutes = *n;
               }
               alerts(req, *access, minutes, respond);
             });

  // One alert, and its acknowledgement. Alert ids are opaque decimal strings to clients: anything
  // else is simply not an alert (404).
  auto find_alert = [](const PathParams& pp) -> std::optional<std::int64_t> {
    auto id = ParseInt(pp.Get("alert_id"));
    if (!id || *id < 0) return std::nullopt;
    return id;
  };
  auto alert_response = [](unsigned status, const core::Alert& a) {
    std::string body;
    codec::JsonWriter w(body);
    codec::WriteAlert(w, a);
    return http::MakeJson(status, std::move(body));
  };
  auto no_alert = [](const PathParams& pp) {
    return http::MakeError(404, "alert_not_found",
                           "no alert " + std::string(pp.Get("alert_id")) + " has fired",
                           "alert_id");
  };
  router.Add(bh::verb::get, "/alerts/{alert_id}",
             [this, find_alert, alert_response, no_alert](const Request& req,
                                                          const PathParams& pp, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               auto id = find_alert(pp);
               if (!id) return respond(no_alert(pp));
               auto a = store_.FindAlert(*id);
               if (!a) return respond(StoreError(a.error()));
               // Another scope's alert is not there for this token.
               if (!*a || !access->Sees((*a)->device_id)) return respond(no_alert(pp));
               respond(alert_response(200, **a));
             });
  router.Add(
      bh::verb::post, "/alerts/{alert_id}/ack",
      [this, find_alert, alert_response, no_alert](const Request& req, const PathParams& pp,
                                                   Respond respond) {
        auto access = Authorize(req, respond);
        if (!access) return;
        auto ack = codec::ParseAlertAck(req.body());
        if (!ack) {
          const std::string& m = ack.error().message;
          const std::string field = m.substr(0, m.find(':'));
          return respond(http::MakeError(422, "invalid_value", m, field));
        }
        auto id = find_alert(pp);
        if (!id) return respond(no_alert(pp));
        if (access->prefix) {
          auto found = store_.FindAlert(*id);
          if (!found) return respond(StoreError(found.error()));
          if (!*found || !access->Sees((*found)->device_id)) return respond(no_alert(pp));
        }
        ack->at = clock_.Now();
        auto a = store_.Acknowledge(*id, *ack);
        if (!a) return respond(StoreError(a.error()));
        if (!*a) return respond(no_alert(pp));
        if (on_alert_) on_alert_(**a);
        respond(alert_response(200, **a));
      },
      {.max_body_bytes = 8 * 1024, .content_types = {"application/json"}});

  router.Add(bh::verb::get, "/devices",
             [this](const Request& req, const PathParams&, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               store::DeviceQuery q;
               if (auto v = http::QueryParam(Target(req), "limit")) {
                 auto n = ParseInt(*v);
                 if (!n || *n < 1 || *n > static_cast<std::int64_t>(kMaxLimit)) {
                   return respond(BadParamResponse(
                       {"limit", fmt::format("limit must be an integer from 1 to {}", kMaxLimit)}));
                 }
                 q.limit = static_cast<std::size_t>(*n);
               }
               if (auto v = http::QueryParam(Target(req), "cursor")) q.after = std::move(*v);
               if (auto v = http::QueryParam(Target(req), "prefix")) q.prefix = std::move(*v);
               if (access->prefix) {
                 // The narrower of the two prefixes; none when they exclude each other.
                 const std::string& scope = *access->prefix;
                 if (!q.prefix || scope.starts_with(*q.prefix)) {
                   q.prefix = scope;
                 } else if (!q.prefix->starts_with(scope)) {
                   return respond(http::MakeJson(200, "[]"));
                 }
               }
               auto devices = store_.Devices(q);
               if (!devices) return respond(StoreError(devices.error()));
               std::string body;
               codec::JsonWriter w(body);
               w.BeginArray();
               for (const auto& d : *devices) WriteDevice(w, d);
               w.EndArray();
               auto r = http::MakeJson(200, std::move(body));
               if (devices->size() == q.limit && !devices->empty()) {
                 r.set("X-Next-Cursor", devices->back().device_id);
               }
               respond(std::move(r));
             });
  router.Add(bh::verb::get, "/devices/{device_id}",
             [this](const Request& req, const PathParams& pp, Respond respond) {
               auto access = Authorize(req, respond);
               if (!access) return;
               std::string id(pp.Get("device_id"));
               if (!DeviceAllowed(*access, id, respond)) return;
               auto d = store_.FindDevice(id);
               if (!d) return respond(StoreError(d.error()));
               if (!d->has_value()) {
                 return respond(http::MakeError(404, "device_not_found",
                                                "no readings from device " + id, "device_id"));
               }
               std::string body;
               codec::JsonWriter w(body);
               WriteDevice(w, **d);
               respond(http::MakeJson(200, std::move(body)));
             });

  router.Add(bh::verb::get, "/dlq", [this](const Request& req, const PathParams&, Respond respond) {
    auto access = Authorize(req, respond);
    if (!access || !FleetWide(*access, "GET /dlq", respond)) return;
    auto params = ParseList(Target(req));
    if (auto* bad = std::get_if<BadParam>(&params)) return respond(BadParamResponse(*bad));
    auto& p = std::get<ListParams>(params);
    store::DeadLetterQuery q;
    q.range = p.range;
    q.limit = p.limit;
    q.after = p.after;
    if (auto c = http::QueryParam(Target(req), "consumer")) {
      if (c->empty() || c->size() > 64) {
        return respond(BadParamResponse({"consumer", "consumer must be 1 to 64 characters"}));
      }
      q.consumer = std::move(*c);
    }
    auto page = store_.DeadLetters(q);
    if (!page) return respond(StoreError(page.error()));
    // The same JSON form as the records published to DLQ_TOPIC (dead_letter.h).
    respond(ListResponse(Target(req), *page, WriteDeadLetter));
  });

  router.Add(bh::verb::get, "/stats", [this](const Request& req, const PathParams&,
                                             Respond respond) {
    auto access = Authorize(req, respond);
    if (!access || !FleetWide(*access, "GET /stats", respond)) return;
    auto s = store_.GetStats(clock_.Now());
    if (!s) return respond(StoreError(s.error()));
    std::string body;
    codec::JsonWriter w(body);
    w.BeginObject();
    w.Key("total_devices");
    w.Int(s->devices);
    w.Key("total_telemetry");
    w.Int(s->readings);
    w.Key("total_aggregated");
    w.Int(s->aggregates);
    w.Key("total_alerts");
    w.Int(s->alerts);
    w.Key("active_alerts");
    w.Int(s->active_alerts);
    w.Key("ingest_rate_per_s");
    w.Double(s->ingest_rate_per_s);
    w.Key("timestamp");
    w.String(core::FormatIso8601(clock_.Now()));
    w.EndObject();
    respond(http::MakeJson(200, std::move(body)));
  });
}

}  // namespace iot::services
