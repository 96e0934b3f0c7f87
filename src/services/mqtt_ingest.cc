#include "services/mqtt_ingest.h"

#include <future>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "codec/reading_json.h"
#include "codec/wire.h"

namespace iot::services {
namespace {

namespace asio = boost::asio;

// kMaxReasonItems bounds how many rejected items of an array the reason lists.
constexpr std::size_t kMaxReasonItems = 10;
// A group (the PUBLISHes of one read, produced in one bus call) closes at these sizes.
constexpr std::size_t kMaxGroupMessages = 2000;
constexpr std::size_t kMaxGroupBytes = 8 << 20;

std::string ItemReason(const codec::DecodeError& e) {
  if (e.malformed) return "malformed_json: " + e.error.message;
  return fmt::format("{}: {}: {}", e.error.field, e.error.code, e.error.message);
}

}  // namespace

std::string_view StripShare(std::string_view filter) {
  if (!filter.starts_with("$share/")) return filter;
  filter.remove_prefix(7);
  const auto slash = filter.find('/');
  return slash == std::string_view::npos ? std::string_view{} : filter.substr(slash + 1);
}

int DeviceLevel(std::string_view filter) {
  filter = StripShare(filter);
  int level = 0;
  std::size_t start = 0;
  while (true) {
    const auto slash = filter.find('/', start);
    const auto part =
        filter.substr(start, slash == std::string_view::npos ? filter.npos : slash - start);
    if (part == "+") return level;
    if (slash == std::string_view::npos) return -1;
    start = slash + 1;
    ++level;
  }
}

std::string_view TopicLevel(std::string_view topic, int index) {
  std::size_t start = 0;
  for (int i = 0; i < index; ++i) {
    const auto slash = topic.find('/', start);
    if (slash == std::string_view::npos) return {};
    start = slash + 1;
  }
  const auto end = topic.find('/', start);
  return topic.substr(start, end == std::string_view::npos ? topic.npos : end - start);
}

bool TopicMatches(std::string_view filter, std::string_view topic) {
  // Topics starting with '$' do not match filters starting with a wildcard (§4.7.2).
  if (!topic.empty() && topic.front() == '$' && !filter.empty() &&
      (filter.front() == '+' || filter.front() == '#')) {
    return false;
  }
  while (true) {
    const auto fs = filter.find('/');
    const auto f = filter.substr(0, fs);
    if (f == "#") return true;
    const auto ts = topic.find('/');
    const auto t = topic.substr(0, ts);
    if (f != "+" && f != t) return false;
    if (fs == std::string_view::npos || ts == std::string_view::npos) {
      // "a/#" also matches "a".
      return fs == ts || (ts == std::string_view::npos && filter.substr(fs + 1) == "#");
    }
    filter.remove_prefix(fs + 1);
    topic.remove_prefix(ts + 1);
  }
}

DecodedMessage DecodeMqttPayload(std::string_view topic, std::string_view topic_device,
                                 std::string_view payload, const MqttIngestOptions& options,
                                 core::ReadingLimits& limits, core::Timestamp now) {
  DecodedMessage out;
  auto reject = [&](std::string reason) {
    codec::RejectedInput r;
    r.source.assign(topic);
    r.reason = "mqtt: " + std::move(reason);
    if (payload.size() > options.max_dead_letter_payload) {
      r.payload.assign(payload.substr(0, options.max_dead_letter_payload));
      r.reason += fmt::format(" (payload cut to its first {} of {} bytes)",
                              options.max_dead_letter_payload, payload.size());
    } else {
      r.payload.assign(payload);
    }
    // The key orders it with the device's readings; a topic level too long for a device id
    // (which is then the reason) is cut.
    out.messages.push_back(
        bus::Message{std::string(topic_device.substr(0, 255)), codec::EncodeRejected(r)});
  };
  auto add = [&](core::Reading& reading) -> std::optional<std::string> {
    if (!topic_device.empty() && reading.device_id != topic_device) {
      return fmt::format(
          "device_id: device_mismatch: the payload's device_id '{}' differs from "
          "the topic's '{}'",
          reading.device_id, topic_device);
    }
    bus::Message m;
    m.payload = codec::EncodeWire(reading);
    m.key = std::move(reading.device_id);
    out.messages.push_back(std::move(m));
    ++out.readings;
    return std::nullopt;
  };
  if (payload.size() > options.max_payload_bytes) {
    out.result = "too_large";
    reject(fmt::format("too_large: the payload has {} bytes, more than MAX_BATCH_BYTES ({})",
                       payload.size(), options.max_payload_bytes));
    return out;
  }
  limits.default_device_id.assign(topic_device);
  const auto first = payload.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && payload[first] == '[') {
    auto decoded =
        codec::DecodeBatch(payload, codec::BatchFormat::kJsonArray, limits, now, options.max_items);
    if (auto* err = std::get_if<codec::BatchError>(&decoded)) {
      switch (err->kind) {
        case codec::BatchError::kTooManyItems:
          out.result = "too_many_items";
          reject(fmt::format("too_many_items: {} (BATCH_MAX_ITEMS)", err->message));
          break;
        case codec::BatchError::kEmpty:
          out.result = "empty_batch";
          reject("empty_batch: " + err->message);
          break;
        case codec::BatchError::kMalformed:
          out.result = "malformed_json";
          reject("malformed_json: " + err->message);
          break;
      }
      return out;
    }
    std::string reasons, first_code;
    for (auto& item : std::get<std::vector<codec::BatchItem>>(decoded)) {
      std::optional<std::string> why;
      std::string code;
      if (auto* e = std::get_if<codec::DecodeError>(&item.result)) {
        why = ItemReason(*e);
        code = e->malformed ? "malformed_json" : e->error.code;
      } else {
        why = add(std::get<core::Reading>(item.result));
        code = "device_mismatch";
      }
      if (!why) continue;
      if (out.rejected_items == 0) first_code = code;
      if (++out.rejected_items <= kMaxReasonItems) {
        reasons += fmt::format("{}item {}: {}", reasons.empty() ? "" : "; ", item.index, *why);
      }
    }
    if (out.rejected_items > kMaxReasonItems) {
      reasons += fmt::format("; and {} more", out.rejected_items - kMaxReasonItems);
    }
    if (out.rejected_items == 0) {
      out.result = "accepted";
    } else {
      out.result = out.readings > 0 ? "partial" : first_code;
      reject(fmt::format("{} of {} readings invalid: {}", out.rejected_items,
                         out.rejected_items + out.readings, reasons));
    }
    return out;
  }
  auto decoded = codec::DecodeReading(payload, limits, now);
  if (auto* e = std::get_if<codec::DecodeError>(&decoded)) {
    out.result = e->malformed ? "malformed_json" : e->error.code;
    out.rejected_items = 1;
    reject(ItemReason(*e));
    return out;
  }
  if (auto why = add(std::get<core::Reading>(decoded))) {
    out.result = "device_mismatch";
    out.rejected_items = 1;
    reject(*why);
    return out;
  }
  out.result = "accepted";
  return out;
}

// Group is the PUBLISHes of one socket read: produced to the bus in one call, acknowledged
// together when it is durable.
struct MqttIngest::Group {
  std::vector<mqtt::Message> inputs;
  std::vector<std::string> devices;  // the topic's device id of each input (may be empty)
  core::Timestamp received{};        // the default ts of readings without one, kept for retries
  std::size_t bytes = 0;
  std::size_t readings = 0;  // of the last attempt
  bool counted = false;      // metrics counted (at the first attempt)
  bool retrying = false;     // the bus refused it; counted in retrying_
  bool oversize = false;     // the bus can never take it: its inputs become dead letters
  std::chrono::milliseconds backoff{0};
};

MqttIngest::MqttIngest(MqttIngestOptions options, mqtt::ClientOptions client,
                       bus::Producer& producer, metrics::Registry& registry,
                       const core::Clock& clock)
    : options_(std::move(options)),
      client_options_(std::move(client)),
      producer_(producer),
      clock_(clock),
      limits_(options_.limits),
      connected_(
          registry.AddGauge("mqtt_connected", "1 while subscribed to the MQTT broker, else 0")),
      messages_(registry.AddCounterFamily(
          "mqtt_messages_total",
          "MQTT messages received, by result: accepted, partial (an array with invalid items), "
          "or why it was dead-lettered",
          {"result"})),
      accepted_messages_(messages_.With({"accepted"})),
      readings_accepted_(
          registry.AddCounter("mqtt_readings_accepted_total",
                              "Readings from MQTT made durable on the bus (then acknowledged)")),
      readings_rejected_(registry.AddCounter("mqtt_readings_rejected_total",
                                             "Readings (or payloads) from MQTT dead-lettered")),
      bus_retries_(registry.AddCounter(
          "mqtt_bus_retries_total",
          "Times a group of MQTT messages was produced again after the bus refused it")) {
  registry.AddCallbackGauge(
      "mqtt_inflight_messages", "QoS 1 messages received from the broker and not yet acknowledged",
      [stats = stats_] { return static_cast<double>(stats->in_flight.load()); });
  registry.AddCallbackCounter(
      "mqtt_reconnects_total", "Reconnects to the MQTT broker after a failed or lost connection",
      [stats = stats_] { return static_cast<double>(stats->reconnects.load()); });
  for (const auto& f : client_options_.topics) {
    filters_.emplace_back(std::string(StripShare(f)), DeviceLevel(f));
  }
}

MqttIngest::~MqttIngest() { Stop(std::chrono::milliseconds(0)); }

Status MqttIngest::Start() {
  auto made = mqtt::Client::Create(
      *io_, client_options_, [this](mqtt::Message m) { OnMessage(std::move(m)); },
      [this](mqtt::Client::Event e) {
        if (e != mqtt::Client::Event::kRetrying) {
          connected_.Set(e == mqtt::Client::Event::kConnected ? 1 : 0);
        }
      },
      stats_);
  if (!made) return made.error();
  client_ = std::move(*made);
  client_->Start();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "mqtt");
    auto guard = asio::make_work_guard(*io_);
    io_->run();
  });
  return Status::Ok();
}

void MqttIngest::Stop(std::chrono::milliseconds grace) {
  if (!thread_.joinable()) return;
  std::promise<void> closed;
  auto done = closed.get_future();
  client_->Shutdown(grace, [&closed] { closed.set_value(); });
  if (done.wait_for(grace + std::chrono::seconds(1)) != std::future_status::ready) {
    spdlog::warn("mqtt: the connection did not close in time");
  }
  asio::post(*io_, [this] { stopped_ = true; });
  io_->stop();
  thread_.join();
  connected_.Set(0);
}

bool MqttIngest::Connected() const { return client_ && client_->Connected(); }

void MqttIngest::OnMessage(mqtt::Message m) {
  std::string device;
  for (const auto& [filter, level] : filters_) {
    if (TopicMatches(filter, m.topic)) {
      if (level >= 0) device.assign(TopicLevel(m.topic, level));
      break;
    }
  }
  if (!open_group_) {
    open_group_ = std::make_shared<Group>();
    open_group_->received = clock_.Now();
    // Runs after the read that delivered this message was processed: one bus call per read.
    asio::post(*io_, [this] { FlushGroup(); });
  }
  open_group_->bytes += m.payload.size();
  open_group_->inputs.push_back(std::move(m));
  open_group_->devices.push_back(std::move(device));
  if (open_group_->inputs.size() >= kMaxGroupMessages || open_group_->bytes >= kMaxGroupBytes) {
    FlushGroup();
  }
}

void MqttIngest::FlushGroup() {
  if (!open_group_) return;
  auto group = std::move(open_group_);
  open_group_.reset();
  Produce(std::move(group));
}

void MqttIngest::Produce(std::shared_ptr<Group> group) {
  if (stopped_) return;
  std::vector<bus::Message> messages;
  group->readings = 0;
  for (std::size_t i = 0; i < group->inputs.size(); ++i) {
    const auto& in = group->inputs[i];
    DecodedMessage d;
    if (group->oversize) {
      d.result = "too_large";
      codec::RejectedInput r{in.topic, "mqtt: too_large: the bus cannot take its readings",
                             in.payload.substr(0, options_.max_dead_letter_payload)};
      d.messages.push_back(
          bus::Message{group->devices[i].substr(0, 255), codec::EncodeRejected(r)});
      d.rejected_items = 1;
    } else {
      d = DecodeMqttPayload(in.topic, group->devices[i], in.payload, options_, limits_,
                            group->received);
    }
    if (!group->counted) {
      (d.result == "accepted" ? accepted_messages_ : messages_.With({d.result})).Inc();
      if (d.rejected_items > 0) {
        readings_rejected_.Inc(static_cast<double>(d.rejected_items));
        spdlog::warn("mqtt: dead letter from {}: {}", in.topic, d.result);
      }
    }
    group->readings += d.readings;
    for (auto& msg : d.messages) messages.push_back(std::move(msg));
  }
  group->counted = true;
  producer_.Produce(std::move(messages), [this, io = io_, group](Status s) {
    asio::post(*io, [this, group, s = std::move(s)] { Produced(group, s); });
  });
}

void MqttIngest::Produced(std::shared_ptr<Group> group, Status s) {
  if (s.ok()) {
    std::vector<std::uint64_t> tokens;
    tokens.reserve(group->inputs.size());
    for (const auto& in : group->inputs) {
      if (in.token != 0) tokens.push_back(in.token);
    }
    if (!tokens.empty()) client_->Complete(std::move(tokens));
    readings_accepted_.Inc(static_cast<double>(group->readings));
    if (group->retrying && --retrying_ == 0) client_->Resume();
    return;
  }
  if (s.error().code == Errc::kInvalidArgument) {
    // The bus can never take this call: split it, and dead-letter a single message.
    if (group->inputs.size() > 1) {
      for (std::size_t i = 0; i < group->inputs.size(); ++i) {
        auto one = std::make_shared<Group>();
        one->inputs.push_back(std::move(group->inputs[i]));
        one->devices.push_back(std::move(group->devices[i]));
        one->received = group->received;
        one->counted = true;
        Produce(std::move(one));
      }
      if (group->retrying && --retrying_ == 0) client_->Resume();
      return;
    }
    if (!group->oversize) {
      group->oversize = true;
      Produce(std::move(group));
      return;
    }
  }
  bus_retries_.Inc();
  if (!group->retrying) {
    group->retrying = true;
    if (retrying_++ == 0) client_->Pause();
    spdlog::warn(
        "mqtt: the bus refused {} messages, retrying (not reading the broker "
        "meanwhile): {}",
        group->inputs.size(), s.error().message);
  }
  group->backoff = group->backoff.count() == 0 ? options_.min_retry
                                               : std::min(group->backoff * 2, options_.max_retry);
  auto timer = std::make_shared<asio::steady_timer>(*io_, group->backoff);
  timer->async_wait([this, timer, group](const boost::system::error_code& ec) {
    if (!ec) Produce(group);
  });
}

}  // namespace iot::services
