#include "services/notifier.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "codec/documents.h"
#include "codec/json_writer.h"

namespace iot::services {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr unsigned kHttpVersion11 = 11;
constexpr int kWebhookVersion = 1;
// Alertmanager treats an alert whose endsAt has passed as resolved: active alerts are posted
// with endsAt this many resend intervals ahead, as Prometheus does.
constexpr int kEndsAtIntervals = 4;

// PostResult is the outcome of one POST: the HTTP status, or 0 and the transport error.
struct PostResult {
  unsigned status = 0;
  std::string error;
};

PostResult Post(const HttpUrl& url, const std::string& body, std::chrono::milliseconds timeout) {
  // Asynchronous calls, so that one deadline bounds the whole exchange (see health_probe.cc);
  // run_for also bounds name resolution.
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  http::request<http::string_body> req{http::verb::post, url.target, kHttpVersion11};
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "iotd-notifier");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::connection, "close");
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  PostResult result{0, "no answer in time"};
  auto fail = [&result](const beast::error_code& ec) {
    result.error = ec == beast::error::timeout ? "no answer in time" : ec.message();
  };
  resolver.async_resolve(
      url.host, url.port, [&](const beast::error_code& ec, const tcp::resolver::results_type& r) {
        if (ec) return fail(ec);
        stream.expires_after(timeout);
        stream.async_connect(r, [&](const beast::error_code& ec2, const tcp::endpoint&) {
          if (ec2) return fail(ec2);
          http::async_write(stream, req, [&](const beast::error_code& ec3, std::size_t) {
            if (ec3) return fail(ec3);
            http::async_read(stream, buffer, res, [&](const beast::error_code& ec4, std::size_t) {
              if (ec4) return fail(ec4);
              result.status = res.result_int();
              result.error.clear();
            });
          });
        });
      });
  io.run_for(timeout + std::chrono::milliseconds(200));
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return result;
}

bool Retryable(const PostResult& r) {
  return r.status == 0 || r.status == 408 || r.status == 429 || r.status >= 500;
}

std::string Describe(const PostResult& r) {
  return r.status == 0 ? r.error : fmt::format("HTTP {}", r.status);
}

std::string Number(double v) { return fmt::format("{}", v); }

}  // namespace

const char* AlertEventName(AlertEvent event) {
  switch (event) {
    case AlertEvent::kOpened:
      return "opened";
    case AlertEvent::kSeverityChanged:
      return "severity_changed";
    case AlertEvent::kResolved:
      return "resolved";
  }
  return "?";
}

Result<HttpUrl> ParseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return MakeError(Errc::kInvalidArgument,
                     "not an http:// URL (https needs a local proxy): " + std::string(url));
  }
  const std::string_view rest = url.substr(kScheme.size());
  const std::size_t slash = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, slash);
  HttpUrl u;
  if (slash != std::string_view::npos) {
    u.target = std::string(rest.substr(slash));
    if (u.target.front() == '?') u.target = "/" + u.target;
  }
  if (authority.find('@') != std::string_view::npos) {
    return MakeError(Errc::kInvalidArgument, "user info is not supported: " + std::string(url));
  }
  const std::size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos || (!authority.empty() && authority.back() == ']')) {
    u.host = std::string(authority);
  } else {
    u.host = std::string(authority.substr(0, colon));
    u.port = std::string(authority.substr(colon + 1));
  }
  if (u.host.size() > 2 && u.host.front() == '[' && u.host.back() == ']') {
    u.host = u.host.substr(1, u.host.size() - 2);
  }
  if (u.host.empty() || u.port.empty() ||
      u.port.find_first_not_of("0123456789") != std::string::npos || u.port.size() > 5 ||
      std::stoi(u.port) > 65535 || std::stoi(u.port) == 0 ||
      u.target.find_first_of(" \t\r\n") != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "not http://host[:port][/path]: " + std::string(url));
  }
  return u;
}

std::string WebhookBody(const Notification& n, core::Timestamp sent_at) {
  std::string out;
  codec::JsonWriter w(out);
  w.BeginObject();
  w.Key("version");
  w.Int(kWebhookVersion);
  w.Key("event");
  w.String(AlertEventName(n.event));
  w.Key("previous_severity");
  if (n.previous_severity.empty()) {
    w.Null();
  } else {
    w.String(n.previous_severity);
  }
  w.Key("alert");
  codec::WriteAlert(w, n.alert);
  w.Key("sent_at");
  w.Time(sent_at);
  w.EndObject();
  return out;
}

std::string AlertmanagerAlert(const core::Alert& alert, core::Timestamp ends_at,
                              std::string_view severity) {
  std::string out;
  codec::JsonWriter w(out);
  auto pair = [&w](std::string_view k, std::string_view v) {
    w.Key(k);
    w.String(v);
  };
  w.BeginObject();
  w.Key("labels");
  w.BeginObject();
  pair("alertname", "IotdThreshold");
  pair("device_id", alert.device_id);
  pair("sensor_type", alert.sensor_type);
  pair("severity", severity.empty() ? std::string_view(alert.severity) : severity);
  pair("alert_type", alert.alert_type);
  w.EndObject();
  w.Key("annotations");
  w.BeginObject();
  pair("summary", alert.message);
  pair("value", Number(alert.value));
  pair("threshold", Number(alert.threshold));
  pair("alert_id", std::to_string(alert.id));
  pair("count", std::to_string(alert.count));
  w.EndObject();
  w.Key("startsAt");
  w.Time(alert.created_at);
  w.Key("endsAt");
  w.Time(std::max(ends_at, alert.created_at));
  w.EndObject();
  return out;
}

// ---- one sink -------------------------------------------------------------------------------

class Notifier::Sink {
 public:
  Sink(std::string name, HttpUrl url, bool alertmanager, const NotifierOptions& options, Metrics& m,
       const core::Clock& clock)
      : name_(std::move(name)),
        url_(std::move(url)),
        alertmanager_(alertmanager),
        options_(options),
        clock_(clock),
        sent_(m.sent.With({name_})),
        failed_(m.failed.With({name_})),
        dropped_(m.dropped.With({name_})),
        retries_(m.retries.With({name_})),
        depth_(m.depth.With({name_})),
        resends_ok_(m.resends.With({"ok"})),
        resends_failed_(m.resends.With({"error"})) {}

  ~Sink() { Stop(); }

  void Start() {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "notifier");
      Run();
    });
  }

  void Enqueue(const Notification& n) {
    std::unique_lock lock(mu_);
    if (alertmanager_) {
      if (n.event == AlertEvent::kResolved) {
        active_.erase(n.alert.id);
      } else {
        active_[n.alert.id] = n.alert;
      }
    }
    if (stopping_ || queue_.size() >= options_.queue_size) {
      const bool stopping = stopping_;
      lock.unlock();
      dropped_.Inc();
      spdlog::warn("notifier {}: {}: dropped the {} notification of alert {} ({} {})", name_,
                   stopping ? "stopping" : "queue full", AlertEventName(n.event), n.alert.id,
                   n.alert.device_id, n.alert.sensor_type);
      return;
    }
    queue_.push_back(n);
    depth_.Set(static_cast<double>(queue_.size()));
    lock.unlock();
    cv_.notify_all();
  }

  void SetActive(const std::vector<core::Alert>& open) {
    if (!alertmanager_) return;
    {
      std::lock_guard lock(mu_);
      active_.clear();
      for (const auto& a : open) {
        if (a.status == core::AlertStatus::kActive) active_[a.id] = a;
      }
      resend_now_ = true;
    }
    cv_.notify_all();
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      deadline_ = std::chrono::steady_clock::now() + options_.shutdown_grace;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();  // Run drops what it could not deliver in time
      return;
    }
    // Never started: nothing was delivered.
    std::lock_guard lock(mu_);
    for (const auto& n : queue_) {
      spdlog::warn(
          "notifier {}: stopped before it started: dropped the {} notification of "
          "alert {}",
          name_, AlertEventName(n.event), n.alert.id);
    }
    dropped_.Inc(static_cast<double>(queue_.size()));
    queue_.clear();
    depth_.Set(0);
  }

 private:
 private:
  void Run() {
    auto next_resend = std::chrono::steady_clock::now() + options_.resend_interval;
    std::unique_lock lock(mu_);
    while (true) {
      auto resend_due = [&] {
        return alertmanager_ && !stopping_ &&
               (resend_now_ || std::chrono::steady_clock::now() >= next_resend);
      };
      if (!stopping_ && queue_.empty() && !resend_due()) {
        if (alertmanager_) {
          cv_.wait_until(lock, next_resend);
        } else {
          cv_.wait(lock);
        }
        continue;
      }
      if (stopping_ && (queue_.empty() || std::chrono::steady_clock::now() >= deadline_)) break;
      if (resend_due()) {
        resend_now_ = false;
        next_resend = std::chrono::steady_clock::now() + options_.resend_interval;
        lock.unlock();
        Resend(ActiveAlerts());
        lock.lock();
        continue;
      }
      Notification n = std::move(queue_.front());
      queue_.pop_front();
      depth_.Set(static_cast<double>(queue_.size()));
      lock.unlock();
      Deliver(n);
      lock.lock();
    }
    // Stopping, and out of time: what is left is dropped, counted and logged.
    const auto left = queue_.size();
    for (const auto& n : queue_) {
      spdlog::warn("notifier {}: shutting down: dropped the {} notification of alert {}", name_,
                   AlertEventName(n.event), n.alert.id);
    }
    queue_.clear();
    depth_.Set(0);
    lock.unlock();
    dropped_.Inc(static_cast<double>(left));
  }

  std::string Body(const Notification& n) const {
    const core::Timestamp now = clock_.Now();
    if (!alertmanager_) return WebhookBody(n, now);
    std::string body = "[";
    if (n.event == AlertEvent::kResolved) {
      body += AlertmanagerAlert(n.alert, n.alert.resolved_at.value_or(now));
    } else {
      body += AlertmanagerAlert(n.alert, std::max(now, n.alert.created_at) + EndsAtAhead());
      if (n.event == AlertEvent::kSeverityChanged && !n.previous_severity.empty()) {
        // The labels include the severity: the old series ends now.
        body += ",";
        body += AlertmanagerAlert(n.alert, n.alert.updated_at, n.previous_severity);
      }
    }
    return body + "]";
  }

  core::Micros EndsAtAhead() const {
    return std::chrono::duration_cast<core::Micros>(options_.resend_interval * kEndsAtIntervals);
  }

  void Deliver(const Notification& n) {
    const std::string body = Body(n);
    auto backoff = options_.min_backoff;
    for (int attempt = 0;; ++attempt) {
      PostResult r = Post(url_, body, RequestTimeout());
      if (r.status >= 200 && r.status < 300) {
        sent_.Inc();
        if (attempt > 0) {
          spdlog::info("notifier {}: delivered the {} notification of alert {} after {} retries",
                       name_, AlertEventName(n.event), n.alert.id, attempt);
        }
        return;
      }
      if (!Retryable(r) || attempt >= options_.max_retries) {
        failed_.Inc();
        spdlog::error(
            "notifier {}: the {} notification of alert {} ({} {}) failed after {} "
            "attempts: {}{}",
            name_, AlertEventName(n.event), n.alert.id, n.alert.device_id, n.alert.sensor_type,
            attempt + 1, Describe(r),
            Retryable(r) ? "" : " (not retried: the receiver refused the request)");
        return;
      }
      std::uniform_int_distribution<std::int64_t> jitter(0, backoff.count() / 2);
      const auto wait = backoff + std::chrono::milliseconds(jitter(random_));
      retries_.Inc();
      spdlog::warn(
          "notifier {}: the {} notification of alert {} failed ({}), retry {} of {} in "
          "{} ms",
          name_, AlertEventName(n.event), n.alert.id, Describe(r), attempt + 1,
          options_.max_retries, wait.count());
      if (!Wait(wait)) {
        dropped_.Inc();
        spdlog::warn("notifier {}: shutting down: dropped the {} notification of alert {}", name_,
                     AlertEventName(n.event), n.alert.id);
        return;
      }
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

  // ActiveAlerts is what the store has open (when options_.open_alerts is set and answers),
  // else what SetActive and the notifications left in active_.
  std::vector<core::Alert> ActiveAlerts() {
    if (options_.open_alerts) {
      auto open = options_.open_alerts();
      if (open) {
        std::lock_guard lock(mu_);
        active_.clear();
        for (auto& a : *open) {
          if (a.status == core::AlertStatus::kActive) active_[a.id] = std::move(a);
        }
      } else {
        spdlog::warn("notifier {}: cannot read the open alerts, re-posting the known ones: {}",
                     name_, open.error().message);
      }
    }
    std::lock_guard lock(mu_);
    std::vector<core::Alert> active;
    for (const auto& [id, a] : active_) active.push_back(a);
    return active;
  }

  void Resend(const std::vector<core::Alert>& active) {
    if (active.empty()) return;
    const core::Timestamp now = clock_.Now();
    std::string body = "[";
    for (const auto& a : active) {
      if (body.size() > 1) body += ",";
      body += AlertmanagerAlert(a, std::max(now, a.created_at) + EndsAtAhead());
    }
    body += "]";
    PostResult r = Post(url_, body, RequestTimeout());
    if (r.status >= 200 && r.status < 300) {
      resends_ok_.Inc();
      spdlog::debug("notifier {}: re-sent {} active alerts", name_, active.size());
    } else {
      resends_failed_.Inc();
      spdlog::warn("notifier {}: re-sending {} active alerts failed ({}); next try in {} ms", name_,
                   active.size(), Describe(r), options_.resend_interval.count());
    }
  }

  // RequestTimeout is NOTIFY_TIMEOUT, or what is left of the shutdown grace.
  std::chrono::milliseconds RequestTimeout() {
    std::lock_guard lock(mu_);
    if (!stopping_) return options_.timeout;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline_ - std::chrono::steady_clock::now());
    return std::clamp(left, std::chrono::milliseconds(1), options_.timeout);
  }

  // Wait sleeps `d`; false when the shutdown grace ends first.
  bool Wait(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    const SteadyTime until = std::chrono::steady_clock::now() + d;
    while (true) {
      const auto now = std::chrono::steady_clock::now();
      if (stopping_ && now >= deadline_) return false;
      if (now >= until) return true;
      cv_.wait_until(lock, stopping_ ? std::min(until, deadline_) : until);
    }
  }

  const std::string name_;
  const HttpUrl url_;
  const bool alertmanager_;
  const NotifierOptions& options_;
  const core::Clock& clock_;
  metrics::Counter& sent_;
  metrics::Counter& failed_;
  metrics::Counter& dropped_;
  metrics::Counter& retries_;
  metrics::Gauge& depth_;
  metrics::Counter& resends_ok_;
  metrics::Counter& resends_failed_;
  std::minstd_rand random_{std::random_device{}()};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Notification> queue_;
  std::map<std::int64_t, core::Alert> active_;  // the Alertmanager sink: active alerts by id
  bool resend_now_ = false;
  bool stopping_ = false;
  SteadyTime deadline_{};
};

// ---- the notifier ---------------------------------------------------------------------------

Status Notifier::Validate(const NotifierOptions& o) {
  for (const auto& url : o.webhook_urls) {
    if (auto u = ParseHttpUrl(url); !u) {
      return MakeError(Errc::kInvalidArgument, "NOTIFY_WEBHOOK_URLS: " + u.error().message);
    }
  }
  if (!o.alertmanager_url.empty()) {
    if (auto u = ParseHttpUrl(o.alertmanager_url); !u) {
      return MakeError(Errc::kInvalidArgument, "ALERTMANAGER_URL: " + u.error().message);
    }
  }
  if (o.queue_size == 0) {
    return MakeError(Errc::kInvalidArgument, "NOTIFY_QUEUE_SIZE: must be at least 1");
  }
  if (o.max_retries < 0) {
    return MakeError(Errc::kInvalidArgument, "NOTIFY_MAX_RETRIES: must not be negative");
  }
  if (o.timeout.count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "NOTIFY_TIMEOUT: must be positive");
  }
  if (o.resend_interval.count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "ALERTMANAGER_RESEND_INTERVAL: must be positive");
  }
  return Status::Ok();
}

Notifier::Metrics::Metrics(metrics::Registry& registry)
    : sent(registry.AddCounterFamily("notifications_sent_total",
                                     "Alert notifications delivered, by sink", {"sink"})),
      failed(registry.AddCounterFamily(
          "notifications_failed_total",
          "Alert notifications given up on (refused, or retries exhausted), by sink", {"sink"})),
      dropped(registry.AddCounterFamily(
          "notifications_dropped_total",
          "Alert notifications dropped (queue full, or not delivered at shutdown), by sink",
          {"sink"})),
      retries(registry.AddCounterFamily("notifications_retries_total",
                                        "Notification requests retried, by sink", {"sink"})),
      depth(registry.AddGaugeFamily("notifications_queue_depth",
                                    "Notifications waiting in a sink's queue", {"sink"})),
      resends(registry.AddCounterFamily(
          "notifications_alertmanager_resends_total",
          "Periodic re-posts of the active alerts to Alertmanager, by result", {"result"})) {}

Notifier::Notifier(NotifierOptions options, metrics::Registry& registry, const core::Clock& clock)
    : options_(std::move(options)), metrics_(std::make_unique<Metrics>(registry)) {
  const NotifierOptions& o = options_;
  for (std::size_t i = 0; i < o.webhook_urls.size(); ++i) {
    sinks_.push_back(std::make_unique<Sink>(fmt::format("webhook{}", i + 1),
                                            *ParseHttpUrl(o.webhook_urls[i]), false, o, *metrics_,
                                            clock));
  }
  if (!o.alertmanager_url.empty()) {
    HttpUrl u = *ParseHttpUrl(o.alertmanager_url);
    while (!u.target.empty() && u.target.back() == '/') u.target.pop_back();
    u.target += "/api/v2/alerts";
    sinks_.push_back(
        std::make_unique<Sink>("alertmanager", std::move(u), true, o, *metrics_, clock));
  }
}

Notifier::~Notifier() { Stop(); }

void Notifier::Start() {
  if (started_) return;
  started_ = true;
  for (auto& s : sinks_) s->Start();
  spdlog::info("notifier started with {} sinks", sinks_.size());
}

void Notifier::Notify(const Notification& n) {
  for (auto& s : sinks_) s->Enqueue(n);
}

void Notifier::SetActive(const std::vector<core::Alert>& open) {
  for (auto& s : sinks_) s->SetActive(open);
}

void Notifier::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // The sinks drain in parallel, so the whole shutdown takes at most one grace period.
  std::vector<std::thread> stoppers;
  for (auto& s : sinks_) stoppers.emplace_back([&s] { s->Stop(); });
  for (auto& t : stoppers) t.join();
}

}  // namespace iot::services
