// notifier.h: alert notifications to webhooks and Prometheus Alertmanager (docs/notifications.md).
//
// The alerts worker hands every alert transition it has stored (opened, severity changed,
// resolved) to Notify, which never blocks: each sink (every NOTIFY_WEBHOOK_URLS entry, and
// ALERTMANAGER_URL) has its own bounded queue and thread, so a slow or dead receiver delays only
// itself. A full queue drops the notification (counted in notifications_dropped_total, logged).
// A sink delivers one notification at a time with an HTTP POST (plain http://):
//  - a 2xx answer is success (notifications_sent_total);
//  - 408, 429, 5xx, a timeout, a refused or broken connection are retried up to `max_retries`
//    times with exponential backoff and jitter;
//  - any other answer (a 3xx or a 4xx: the receiver refuses this request, sending it again
//    cannot help) and the exhaustion of the retries count in notifications_failed_total and are
//    logged at error with the alert's id.
// The Alertmanager sink also keeps the active alerts (from SetActive, then from the
// notifications) and re-posts them every `resend_interval` with endsAt = now + 4 intervals, as
// Prometheus does, so Alertmanager keeps them firing, and learns them again after either side
// restarts; a resolved alert is posted once with endsAt = its resolution time.
// Stop delivers what is queued within `shutdown_grace` and counts the rest as dropped.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/alert.h"
#include "core/result.h"
#include "core/time.h"
#include "metrics/metrics.h"

namespace iot::services {

enum class AlertEvent { kOpened, kSeverityChanged, kResolved };
// AlertEventName returns "opened", "severity_changed" or "resolved".
const char* AlertEventName(AlertEvent event);

// Notification is one stored alert transition.
struct Notification {
  AlertEvent event = AlertEvent::kOpened;
  core::Alert alert;              // the alert as stored after the transition
  std::string previous_severity;  // kSeverityChanged: the severity before; empty otherwise
};

// HttpUrl is a parsed http://host[:port][/path] URL.
struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

// ParseHttpUrl accepts http://host[:port][/path[?query]] (IPv6 hosts in brackets); https:// and
// anything else is kInvalidArgument.
Result<HttpUrl> ParseHttpUrl(std::string_view url);

struct NotifierOptions {
  std::vector<std::string> webhook_urls;  // NOTIFY_WEBHOOK_URLS
  std::string alertmanager_url;           // ALERTMANAGER_URL (base URL; /api/v2/alerts added)
  std::chrono::milliseconds resend_interval{60000};  // ALERTMANAGER_RESEND_INTERVAL
  std::size_t queue_size = 10000;                    // NOTIFY_QUEUE_SIZE, per sink
  int max_retries = 5;                               // NOTIFY_MAX_RETRIES
  std::chrono::milliseconds timeout{5000};           // NOTIFY_TIMEOUT, per request
  std::chrono::milliseconds min_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  std::chrono::milliseconds shutdown_grace{5000};
  // Where the periodic Alertmanager re-post reads the open alerts (the store: with several
  // alerts workers, another one may have resolved an alert this one restored). Unset, or when it
  // fails: the alerts known from SetActive and the notifications.
  std::function<Result<std::vector<core::Alert>>()> open_alerts;
};

// WebhookBody is the JSON body posted to webhooks:
// {"version":1,"event":"opened","previous_severity":null,"alert":{<as GET /alerts>},
//  "sent_at":"<ISO 8601>"}.
std::string WebhookBody(const Notification& n, core::Timestamp sent_at);

// AlertmanagerAlert is one postableAlert of Alertmanager's v2 API for `alert`: labels alertname
// ("IotdThreshold"), device_id, sensor_type, severity (`severity` when not empty, else the
// alert's), alert_type; annotations summary, value, threshold, alert_id, count; startsAt
// created_at; endsAt `ends_at`.
std::string AlertmanagerAlert(const core::Alert& alert, core::Timestamp ends_at,
                              std::string_view severity = {});

class Notifier {
 public:
  // Validate checks the URLs (the error names the option); the constructor expects valid ones.
  static Status Validate(const NotifierOptions& options);

  Notifier(NotifierOptions options, metrics::Registry& registry,
           const core::Clock& clock = core::SystemClock());
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Start starts one thread per sink.
  void Start();
  // Notify queues `n` on every sink; never blocks (a full queue drops it, counted and logged).
  void Notify(const Notification& n);
  // SetActive replaces the Alertmanager sink's active alerts with the active ones of `open`
  // (the open alerts restored from the store) and re-posts them soon.
  void SetActive(const std::vector<core::Alert>& open);
  // Stop delivers what is queued within shutdown_grace, counts the rest as dropped and joins
  // the threads; safe to call twice.
  void Stop();

 private:
  class Sink;
  struct Metrics {
    explicit Metrics(metrics::Registry& registry);
    metrics::Family<metrics::Counter>& sent;
    metrics::Family<metrics::Counter>& failed;
    metrics::Family<metrics::Counter>& dropped;
    metrics::Family<metrics::Counter>& retries;
    metrics::Family<metrics::Gauge>& depth;
    metrics::Family<metrics::Counter>& resends;
  };
  NotifierOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace iot::services
