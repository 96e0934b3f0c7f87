#include "loadgen/mqtt_publisher.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <mosquitto.h>

#include "loadgen/device_fleet.h"

namespace iot::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

struct HostPort {
  std::string host;
  int port = 1883;
};

std::optional<HostPort> ParseUrl(const std::string& url) {
  if (!url.starts_with("mqtt://")) return std::nullopt;
  std::string rest = url.substr(7);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  HostPort hp;
  const auto colon = rest.rfind(':');
  if (colon != std::string::npos) {
    try {
      std::size_t used = 0;
      hp.port = std::stoi(rest.substr(colon + 1), &used);
      if (used != rest.size() - colon - 1 || hp.port < 1 || hp.port > 65535) return std::nullopt;
    } catch (...) {
      return std::nullopt;
    }
    rest = rest.substr(0, colon);
  }
  if (rest.empty() || rest.find_first_of("/@") != std::string::npos) return std::nullopt;
  hp.host = rest;
  return hp;
}

// Connection is one libmosquitto client with its window of messages awaiting PUBACK.
struct Connection {
  mosquitto* mosq = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t sent = 0;
  std::uint64_t acked = 0;
  bool connected = false;
};

void OnConnect(mosquitto*, void* obj, int rc) {
  auto* c = static_cast<Connection*>(obj);
  std::lock_guard lock(c->mu);
  c->connected = rc == 0;
  c->cv.notify_all();
}

void OnPublish(mosquitto*, void* obj, int) {
  auto* c = static_cast<Connection*>(obj);
  std::lock_guard lock(c->mu);
  ++c->acked;
  c->cv.notify_all();
}

}  // namespace

Status ValidateMqttLoad(const MqttLoadOptions& o) {
  if (!ParseUrl(o.url)) {
    return MakeError(Errc::kInvalidArgument,
                     "--mqtt-url: expected mqtt://host[:port], got '" + o.url + "'");
  }
  if (o.devices < 1) return MakeError(Errc::kInvalidArgument, "--devices must be at least 1");
  if (o.connections < 1)
    return MakeError(Errc::kInvalidArgument, "--connections must be at least 1");
  if (o.batch < 0) return MakeError(Errc::kInvalidArgument, "--batch must be >= 0");
  if (!o.unthrottled && o.rps <= 0) return MakeError(Errc::kInvalidArgument, "--rps must be > 0");
  return Status::Ok();
}

LoadgenSummary RunMqttLoad(const MqttLoadOptions& o, std::ostream& progress,
                           const std::atomic<bool>& stop) {
  LoadgenSummary summary;
  const auto hp = *ParseUrl(o.url);
  mosquitto_lib_init();
  DeviceFleet fleet({.devices = o.devices,
                     .device_prefix = o.device_prefix,
                     .seed = o.seed,
                     .hot_fraction = o.hot_fraction});
  std::vector<std::unique_ptr<Connection>> conns;
  const auto start = Clock::now();
  for (int i = 0; i < o.connections; ++i) {
    auto c = std::make_unique<Connection>();
    const std::string id = fmt::format("iotd-loadgen-{}-{}", getpid(), i);
    c->mosq = mosquitto_new(id.c_str(), true, c.get());
    mosquitto_connect_callback_set(c->mosq, OnConnect);
    mosquitto_publish_callback_set(c->mosq, OnPublish);
    mosquitto_max_inflight_messages_set(c->mosq, static_cast<unsigned>(o.max_inflight));
    int rc = mosquitto_connect(c->mosq, hp.host.c_str(), hp.port, 30);
    if (rc != MOSQ_ERR_SUCCESS) {
      progress << "iotd loadgen: cannot connect to " << o.url << ": " << mosquitto_strerror(rc)
               << "\n";
      for (auto& done : conns) mosquitto_destroy(done->mosq);
      mosquitto_destroy(c->mosq);
      mosquitto_lib_cleanup();
      summary.errors = 1;
      summary.sent = 1;
      return summary;
    }
    mosquitto_loop_start(c->mosq);
    conns.push_back(std::move(c));
  }
  for (auto& c : conns) {  // wait for CONNACK
    std::unique_lock lock(c->mu);
    c->cv.wait_for(lock, std::chrono::seconds(10), [&] { return c->connected; });
  }

  const double rate = o.devices * o.rps;
  const auto end = o.duration ? start + *o.duration : Clock::time_point::max();
  auto next_progress = Clock::now() + o.progress_interval;
  std::uint64_t last_acked = 0;
  std::uint64_t n = 0;
  std::string body;
  while (!stop.load() && (o.count == 0 || n < o.count) && Clock::now() < end) {
    if (!o.unthrottled) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(n) / rate));
      if (due > Clock::now()) std::this_thread::sleep_until(std::min(due, end));
      if (Clock::now() >= end) break;
    }
    const int device = static_cast<int>(n % static_cast<std::uint64_t>(o.devices));
    const auto now = core::SystemClock().Now();
    body.clear();
    if (o.batch > 0) {
      body += '[';
      for (int j = 0; j < o.batch; ++j) {
        if (j > 0) body += ',';
        fleet.AppendReading(device, now, body);
      }
      body += ']';
    } else {
      fleet.AppendReading(device, now, body);
    }
    const std::string topic = "devices/" + fleet.DeviceId(device) + "/telemetry";
    Connection& c = *conns[n % conns.size()];
    {
      std::unique_lock lock(c.mu);
      c.cv.wait(lock, [&] {
        return c.sent - c.acked < static_cast<std::uint64_t>(o.max_inflight) || stop.load();
      });
      ++c.sent;
    }
    int rc = mosquitto_publish(c.mosq, nullptr, topic.c_str(), static_cast<int>(body.size()),
                               body.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
      std::lock_guard lock(c.mu);
      --c.sent;
      ++summary.errors;
    }
    ++n;
    if (o.progress_interval.count() > 0 && Clock::now() >= next_progress) {
      std::uint64_t acked = 0;
      for (auto& cc : conns) {
        std::lock_guard lock(cc->mu);
        acked += cc->acked;
      }
      const double secs = std::chrono::duration<double>(o.progress_interval).count();
      progress << fmt::format("sent {} acknowledged {} ({:.0f} messages/s)\n", n, acked,
                              static_cast<double>(acked - last_acked) / secs);
      last_acked = acked;
      next_progress += o.progress_interval;
    }
  }
  // Drain: wait for the PUBACKs of what was sent.
  const auto drain_end = Clock::now() + o.drain_timeout;
  for (auto& c : conns) {
    std::unique_lock lock(c->mu);
    c->cv.wait_until(lock, drain_end, [&] { return c->acked >= c->sent; });
  }
  std::uint64_t sent = 0, acked = 0;
  for (auto& c : conns) {
    std::lock_guard lock(c->mu);
    sent += c->sent;
    acked += std::min(c->acked, c->sent);
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& c : conns) {
    mosquitto_disconnect(c->mosq);
    mosquitto_loop_stop(c->mosq, false);
    mosquitto_destroy(c->mosq);
  }
  mosquitto_lib_cleanup();
  summary.sent = sent + summary.errors;
  summary.accepted = acked;
  summary.errors += sent - acked;
  summary.readings_accepted = acked * static_cast<std::uint64_t>(o.batch > 0 ? o.batch : 1);
  if (summary.seconds > 0) {
    summary.requests_per_s = static_cast<double>(summary.sent) / summary.seconds;
    summary.readings_per_s = static_cast<double>(summary.readings_accepted) / summary.seconds;
  }
  return summary;
}

}  // namespace iot::loadgen
