#include "services/live_stream.h"

#include <boost/beast/http/verb.hpp>
#include <spdlog/spdlog.h>

#include "codec/documents.h"
#include "codec/json_writer.h"
#include "codec/wire.h"
#include "http/response.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;

// kMaxWatchedAlerts bounds the active alerts compared per poll (the newest ones): beyond it, older
// alerts' changes are not streamed (their state is still in GET /alerts).
constexpr std::size_t kMaxWatchedAlerts = 1000;

// Event renders one Server-Sent Event. Our JSON never holds a raw newline (control characters
// are escaped), so `data` is one line.
std::string Event(std::string_view type, std::string_view data) {
  std::string out;
  out.reserve(data.size() + type.size() + 16);
  out += "event: ";
  out += type;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
  return out;
}

// Fingerprint is what makes an alert change visible to people: a new status, severity,
// count, latest value or acknowledgement.
struct Fingerprint {
  core::AlertStatus status;
  std::string severity;
  std::int64_t count;
  core::Timestamp updated_at;
  bool acknowledged;
  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
};

Fingerprint FingerprintOf(const core::Alert& a) {
  return {a.status, a.severity, a.count, a.updated_at, a.ack.has_value()};
}

// TailListener starts each partition where the ReadingSource says; assignments need no work
// (nothing is committed).
class TailListener final : public bus::AssignmentListener {
 public:
  explicit TailListener(std::function<std::optional<std::int64_t>(std::int32_t)> start)
      : start_(std::move(start)) {}
  Result<std::optional<std::int64_t>> StartOffset(std::int32_t partition) override {
    if (!start_) return std::optional<std::int64_t>();
    return start_(partition);
  }
  void Assigned(const std::vector<std::int32_t>&) override {}
  void Revoked(const std::vector<std::int32_t>&) override {}

 private:
  std::function<std::optional<std::int64_t>(std::int32_t)> start_;
};

}  // namespace

LiveStream::LiveStream(LiveStreamOptions options, store::Store& store, ReadingSource readings,
                       metrics::Registry& registry, AuthGuard* guard)
    : options_(options),
      store_(store),
      readings_(std::move(readings)),
      guard_(guard),
      clients_gauge_(registry.AddGauge("dashboard_stream_clients",
                                       "Clients connected to GET /stream.")),
      events_(registry.AddCounterFamily("dashboard_stream_events_total",
                                        "Events sent on GET /stream, by type (each counted "
                                        "once, whatever the number of clients).",
                                        {"type"})),
      cut_off_(registry.AddCounter("dashboard_stream_clients_cut_off_total",
                                   "Stream clients disconnected because they fell further "
                                   "behind than STREAM_CLIENT_BUFFER.")),
      refused_(registry.AddCounter("dashboard_stream_refused_total",
                                   "GET /stream requests refused (STREAM_MAX_CLIENTS).")) {
  if (readings_.consumer) threads_.emplace_back([this] { TailReadings(); });
  threads_.emplace_back([this] { WatchAlerts(); });
  threads_.emplace_back([this] { KeepAlive(); });
}

LiveStream::~LiveStream() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, c] : clients_) c.writer->Close();
    clients_.clear();
  }
  wake_.notify_all();
  if (readings_.consumer) readings_.consumer->Wakeup();
  for (auto& t : threads_) t.join();
  if (readings_.consumer) readings_.consumer->Close();
}

void LiveStream::RegisterRoutes(http::Router& router) {
  router.AddStream(
      bh::verb::get, "/stream",
      [this](const http::Request& req, const http::PathParams&,
             std::shared_ptr<http::StreamWriter> writer) -> std::optional<http::Response> {
        std::string prefix;
        if (guard_) {
          auto who = guard_->Reader(req);
          if (auto* refused = std::get_if<http::Response>(&who)) return std::move(*refused);
          prefix = std::get<auth::TokenRef>(who)->prefix;
        }
        const auto target = req.target();
        std::string device;
        if (auto d = http::QueryParam({target.data(), target.size()}, "device_id")) {
          if (d->empty() || d->size() > core::ReadingLimits{}.max_device_id_length) {
            return http::MakeError(422, "invalid_parameter",
                                   "device_id must be a device id", "device_id");
          }
          device = std::move(*d);
          if (!std::string_view(device).starts_with(prefix)) {
            return guard_->Forbidden("out_of_scope",
                                     "this token may read only devices whose id starts with " +
                                         prefix,
                                     "device_id");
          }
        }
        std::lock_guard lock(mu_);
        if (stopping_) return http::MakeError(503, "shutting_down", "the server is stopping");
        if (clients_.size() >= options_.max_clients) {
          refused_.Inc();
          auto r = http::MakeError(503, "overloaded", "too many stream clients");
          r.set(bh::field::retry_after, "5");
          return r;
        }
        // "retry:" tells EventSource how soon to reconnect after the connection drops.
        if (!writer->Write(": iotd live stream\nretry: 2000\n\n")) return std::nullopt;
        clients_.emplace(next_client_++,
                         Client{std::move(writer), std::move(device), std::move(prefix)});
        clients_gauge_.Set(static_cast<double>(clients_.size()));
        wake_.notify_all();  // the sources start reading
        return std::nullopt;
      },
      http::StreamOptions{.max_queued_bytes = options_.client_buffer_bytes});
}

std::size_t LiveStream::Clients() {
  std::lock_guard lock(mu_);
  // Streams whose client went away (or were cut off) are dropped here too, not only when an
  // event finds them, so that the gauge and the sources' idling follow the clients closely.
  std::erase_if(clients_, [](const auto& entry) { return !entry.second.writer->Open(); });
  clients_gauge_.Set(static_cast<double>(clients_.size()));
  return clients_.size();
}

void LiveStream::Publish(std::string_view event, std::string_view device_id, bool reading) {
  std::lock_guard lock(mu_);
  for (auto it = clients_.begin(); it != clients_.end();) {
    Client& c = it->second;
    if ((reading && !c.device_id.empty() && c.device_id != device_id) ||
        (!device_id.empty() && !device_id.starts_with(c.prefix))) {
      ++it;
      continue;
    }
    if (c.writer->Write(event)) {
      ++it;
      continue;
    }
    if (c.writer->Overflowed()) {
      cut_off_.Inc();
      spdlog::warn("stream client cut off: more than {} bytes unread",
                   options_.client_buffer_bytes);
    }
    it = clients_.erase(it);
  }
  clients_gauge_.Set(static_cast<double>(clients_.size()));
}

bool LiveStream::Wanted(std::string_view device_id) {
  std::lock_guard lock(mu_);
  for (const auto& [id, c] : clients_) {
    if ((c.device_id.empty() || c.device_id == device_id) && device_id.starts_with(c.prefix)) {
      return true;
    }
  }
  return false;
}

void LiveStream::PublishReading(const core::Reading& reading, std::int64_t id) {
  // Formatting costs more than the check: device pages listen to one device of many.
  if (!Wanted(reading.device_id)) return;
  std::string json;
  codec::JsonWriter w(json);
  codec::WriteReading(w, reading, id);
  events_.With({"reading"}).Inc();
  Publish(Event("reading", json), reading.device_id, true);
}

void LiveStream::PublishAlert(const core::Alert& alert) {
  std::string json;
  codec::JsonWriter w(json);
  codec::WriteAlert(w, alert);
  events_.With({"alert"}).Inc();
  Publish(Event("alert", json), alert.device_id, false);
}

bool LiveStream::Sleep(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

void LiveStream::TailReadings() {
  bus::Consumer& consumer = *readings_.consumer;
  TailListener listener(readings_.start_offset);
  if (Status s = consumer.Subscribe(listener); !s) {
    spdlog::error("live stream: cannot read the bus: {}", s.error().message);
    return;
  }
  const bool idle_when_alone = static_cast<bool>(readings_.end_offset);
  bool listening = false;
  for (;;) {
    if (idle_when_alone) {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !clients_.empty(); });
      if (stopping_) return;
      if (!listening) {
        // Someone listens again: continue at the end, not where the tail stopped.
        lock.unlock();
        (void)consumer.Seek(0, readings_.end_offset());
        listening = true;
      }
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    auto records = consumer.Poll(1000, options_.reading_poll);
    if (!records) {
      if (!Sleep(std::chrono::milliseconds(500))) return;
      continue;
    }
    if (Clients() == 0) {
      listening = false;
      continue;
    }
    for (const bus::Record& r : *records) {
      // The key is the device id (ingest keys by it): skip what nobody listens to undecoded.
      if (!r.key.empty() && !Wanted(r.key)) continue;
      auto reading = codec::DecodePayload(r.payload);
      if (!reading) continue;  // the workers dead-letter it; nothing to show
      const std::int64_t id =
          r.routing.id.value_or(core::MessageId::Of(r.partition, r.offset).value);
      PublishReading(*reading, id);
    }
  }
}

void LiveStream::WatchAlerts() {
  // The active alerts are watched even while nobody listens (one indexed query per poll), so that
  // a client that has just connected sees the very next change.
  std::unordered_map<std::int64_t, Fingerprint> known;  // the active alerts last seen
  bool primed = false;
  // The first look is at once (at start-up), so that a change right after it is streamed.
  for (bool first = true; first || Sleep(options_.alert_poll); first = false) {
    store::AlertQuery q;
    q.status = core::AlertStatus::kActive;
    q.limit = kMaxWatchedAlerts;
    auto active = store_.Alerts(q);
    if (!active) continue;  // the store is down: try again next time
    const bool listened = Clients() > 0;
    std::unordered_map<std::int64_t, Fingerprint> now;
    for (const core::Alert& a : active->items) {
      Fingerprint f = FingerprintOf(a);
      auto was = known.find(a.id);
      if (primed && listened && (was == known.end() || !(was->second == f))) PublishAlert(a);
      now.emplace(a.id, std::move(f));
    }
    if (primed && listened) {
      // An active alert that is no longer listed has resolved.
      for (const auto& [id, f] : known) {
        if (now.contains(id)) continue;
        auto gone = store_.FindAlert(id);
        if (gone && *gone) PublishAlert(**gone);
      }
    }
    known = std::move(now);
    primed = true;
  }
}

void LiveStream::KeepAlive() {
  while (Sleep(options_.keepalive)) Publish(": keepalive\n\n", {}, false);
}

}  // namespace iot::services
