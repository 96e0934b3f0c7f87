// dashboard_service.h: the dashboard API (port 8002), the seed's endpoints over the store.
//
//   GET /                                health (the seed's)
//   GET /telemetry                       raw readings, newest first
//   GET /aggregated                      window aggregates, newest first
//   GET /alerts                          alerts (status=active|resolved|pending), newest first
//   GET /alerts/recent                   alerts created in the last `minutes` (default 60)
//   GET /alerts/{alert_id}               one alert that fired
//   POST /alerts/{alert_id}/ack          acknowledge it ({"by","note"}, both optional; the
//                                        first acknowledgement is kept; 200 with the alert)
//   GET /devices                         devices with first/last seen, count, latest values
//   GET /devices/{device_id}             one device
//   GET /devices/{device_id}/telemetry   one device's readings
//   GET /devices/{device_id}/aggregates  one device's aggregates (window=, sensor_type=)
//   GET /stats                           totals and the current ingest rate
//   GET /dlq                             dead letters (consumer=aggregator|alerts|ingest), newest first
//
// A dead letter is listed as {"consumer","topic","partition","offset","key","payload",
// "payload_encoding","reason","attempts","failed_at"}: `payload` is the record's bytes as text
// when they are valid UTF-8 ("utf8"), else base64 ("base64"); the form of DLQ_TOPIC's records.
//
// Lists are JSON arrays. They take `limit` (1..1000, default 100) and `from`/`to` (ISO 8601);
// when more items follow, the response carries `X-Next-Cursor` and a `Link: <...>; rel="next"`
// header, and `cursor=` continues after the last item (stable while data arrives).
// Bad parameters get 422 naming the parameter; an unknown device 404; a store failure 503.
//
// With a guard (DASHBOARD_AUTH=token, docs/security.md) every route but `/` needs a read token
// (401 without one, 403 for a device or gateway token). A token scoped to a device-id prefix
// sees only those devices: device routes of other devices are 403, lists (/telemetry,
// /aggregated, /alerts, /alerts/recent, /devices) hold only its devices (filtered in the store,
// so pages stay full), an alert of another device is 404 as if it did not exist (also for
// acknowledging it), and the fleet-wide routes /stats and /dlq are 403.
//
// Thread-safety: handlers run on the listener's I/O threads and call the store synchronously.
#pragma once

#include <functional>

#include "core/time.h"
#include "http/router.h"
#include "services/auth_guard.h"
#include "store/store.h"

namespace iot::services {

class DashboardService {
 public:
  // The store, clock and guard must outlive the service; no guard: no tokens.
  DashboardService(store::Store& store, const core::Clock& clock, AuthGuard* guard = nullptr);
  void RegisterRoutes(http::Router& router);
  // OnAlertChanged: `fn` is called with an alert after a request changed it (acknowledged it),
  // on the request's thread; set before RegisterRoutes.
  void OnAlertChanged(std::function<void(const core::Alert&)> fn) { on_alert_ = std::move(fn); }

 private:
  // Access is what a request may see: every device, or those whose id starts with `prefix`.
  struct Access {
    std::optional<std::string> prefix;
    bool Sees(std::string_view device_id) const {
      return !prefix || device_id.starts_with(*prefix);
    }
  };
  // Authorize returns the request's access, or answers 401/403 through `respond` and returns
  // nullopt. Without a guard every request sees everything.
  std::optional<Access> Authorize(const http::Request& request, http::Respond& respond);
  // DeviceAllowed answers 403 through `respond` when `access` does not see `device_id`.
  bool DeviceAllowed(const Access& access, const std::string& device_id, http::Respond& respond);
  // FleetWide answers 403 through `respond` for a scoped token (routes about every device).
  bool FleetWide(const Access& access, std::string_view route, http::Respond& respond);

  store::Store& store_;
  const core::Clock& clock_;
  AuthGuard* guard_;
  std::function<void(const core::Alert&)> on_alert_;
};

// EncodeCursor / DecodeCursor give clients an opaque, URL-safe continuation token.
std::string EncodeCursor(const store::Cursor& cursor);
std::optional<store::Cursor> DecodeCursor(std::string_view text);

}  // namespace iot::services
