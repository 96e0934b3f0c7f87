// live_stream.h: GET /stream on the dashboard port: new readings and alert changes, live, as
// Server-Sent Events (what the web UI's charts and alert list listen to).
//
//   event: reading            data: a reading as GET /devices/{id}/telemetry lists it
//   event: alert              data: an alert as GET /alerts lists it (opened, changed, resolved
//                             or acknowledged)
//   : keepalive               every `keepalive`, so proxies and clients see a live connection
//
// `GET /stream?device_id=dev-1` sends only that device's readings (alerts of every device).
//
// With a guard (DASHBOARD_AUTH=token) the stream needs a read token, like the dashboard API; a
// token scoped to a device-id prefix gets only those devices' readings and alerts (and 403 for a
// device_id outside it). Browsers send the token with fetch(), as EventSource cannot send headers.
//
// Sources. Readings come from the telemetry bus itself, read from its end by a consumer of our
// own that commits nothing (the embedded bus's anonymous reader, or a Kafka consumer group of
// this process), so an event follows the reading's acknowledgement by a poll interval, not by
// the workers' batching. Alert changes come from the store: its active alerts (the newest 1000)
// are compared every `alert_poll`, so they are the alerts worker's, wherever it runs; an alert
// that opens and resolves between two polls is not streamed. The bus is not read while nobody
// listens (except by a Kafka consumer, which must keep polling to keep its partitions).
//
// Back-pressure: each client has its own bounded queue (http::StreamWriter); a client that falls
// further behind than `client_buffer_bytes` is cut off (counted) and its browser reconnects;
// the others and the server are not slowed. At most `max_clients` streams; more get 503.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "core/alert.h"
#include "core/reading.h"
#include "http/router.h"
#include "metrics/metrics.h"
#include "services/auth_guard.h"
#include "store/store.h"

namespace iot::services {

struct LiveStreamOptions {
  std::size_t max_clients = 256;                 // STREAM_MAX_CLIENTS
  std::size_t client_buffer_bytes = 1 << 20;     // STREAM_CLIENT_BUFFER
  std::chrono::milliseconds keepalive{15000};
  std::chrono::milliseconds alert_poll{500};     // how often the store is asked for changes
  std::chrono::milliseconds reading_poll{100};   // the longest a bus poll waits
};

// ReadingSource is where readings are tailed from. `consumer` is not subscribed yet; its start
// offsets come from `start_offset` (nullopt: the bus's own position, e.g. a Kafka group's
// `latest`). With `end_offset` set, the tail stops reading while nobody listens and seeks
// partition 0 to end_offset() when someone starts listening (the embedded bus).
struct ReadingSource {
  std::unique_ptr<bus::Consumer> consumer;
  std::function<std::optional<std::int64_t>(std::int32_t partition)> start_offset;
  std::function<std::int64_t()> end_offset;
};

class LiveStream {
 public:
  // `store` (for alerts) must outlive the LiveStream; `readings.consumer` may be null (then no
  // reading events). Starts its threads.
  // `guard`, when given, must outlive the LiveStream too.
  LiveStream(LiveStreamOptions options, store::Store& store, ReadingSource readings,
             metrics::Registry& registry, AuthGuard* guard = nullptr);
  // Stops the threads and ends every stream.
  ~LiveStream();
  LiveStream(const LiveStream&) = delete;
  LiveStream& operator=(const LiveStream&) = delete;

  // RegisterRoutes adds GET /stream.
  void RegisterRoutes(http::Router& router);

  // Publish sends an event to every client (any thread). `device_id` is the reading's device, or
  // empty for an event every client gets.
  void PublishReading(const core::Reading& reading, std::int64_t id);
  void PublishAlert(const core::Alert& alert);

  // Clients returns the number of open streams (and forgets closed ones).
  std::size_t Clients();

 private:
  struct Client {
    std::shared_ptr<http::StreamWriter> writer;
    std::string device_id;  // empty: every device
    std::string prefix;     // a read token's scope: only devices whose id starts with it
  };

  // Publish sends `event` to the clients that see `device_id` (empty: every client); a
  // reading goes only to clients of that device (or of every device).
  void Publish(std::string_view event, std::string_view device_id, bool reading);
  // Wanted reports whether a client listens to readings of `device_id`.
  bool Wanted(std::string_view device_id);
  void TailReadings();
  void WatchAlerts();
  void KeepAlive();
  bool Sleep(std::chrono::milliseconds d);  // false when stopping

  const LiveStreamOptions options_;
  store::Store& store_;
  ReadingSource readings_;
  AuthGuard* guard_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::uint64_t next_client_ = 0;
  std::unordered_map<std::uint64_t, Client> clients_;  // guarded by mu_

  metrics::Gauge& clients_gauge_;
  metrics::Family<metrics::Counter>& events_;
  metrics::Counter& cut_off_;
  metrics::Counter& refused_;

  std::vector<std::thread> threads_;
};

}  // namespace iot::services
