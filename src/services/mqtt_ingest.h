// mqtt_ingest.h: MQTT ingestion (docs/mqtt.md): readings published to an MQTT broker, made
// durable on the bus, then acknowledged to the broker.
//
// The service owns an MQTT 5 subscriber (mqtt/client.h) on its own thread ("mqtt"). Each
// PUBLISH carries the JSON of POST /ingest: one reading object or an array of them. The device
// id is the topic level at the first `+` of the filter that matched (`devices/+/telemetry`:
// `devices/dev-1/telemetry` is dev-1), or the payload's device_id when the filter has no `+`; a
// payload device_id that differs from the topic's is invalid ("device_mismatch").
//
// Delivery: the PUBLISHes of one socket read are produced to the bus in one call; a QoS 1
// message is acknowledged (PUBACK, in arrival order) only after the bus reported that call
// durable. While the bus refuses (unavailable, overloaded) the call is retried with exponential
// backoff and the socket is not read (the broker holds the rest). Invalid input (bad JSON,
// schema, device mismatch, too large, too many items) is counted by reason and produced as a
// rejected-input record (codec/wire.h) with the reason and the original payload, which the
// aggregator stores as a dead letter (GET /dlq, DLQ_TOPIC on Kafka); valid readings of the same
// array still go through. So every acknowledged message is durable: at least once, and a crash
// between durability and PUBACK means a redelivery (a duplicate reading on the bus).
//
// Lifecycle: construct, Start (returns at once; connecting goes on in the background with
// reconnects), Stop (graceful: stop reading, wait for pending acknowledgements up to the grace,
// DISCONNECT). Thread-safety: Start/Stop from one thread; the rest runs on the service's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bus/bus.h"
#include "core/reading.h"
#include "core/time.h"
#include "metrics/metrics.h"
#include "mqtt/client.h"

namespace iot::services {

struct MqttIngestOptions {
  core::ReadingLimits limits;
  std::size_t max_payload_bytes = 16 * 1024 * 1024;  // MAX_BATCH_BYTES
  std::size_t max_items = 10000;                     // BATCH_MAX_ITEMS
  // A dead letter keeps at most this much of the original payload (the reason says so).
  std::size_t max_dead_letter_payload = 64 * 1024;
  // Most readings produced in one bus call (the PUBLISHes of one socket read are grouped).
  std::size_t max_group_readings = 20000;
  std::chrono::milliseconds min_retry{50};
  std::chrono::milliseconds max_retry{5000};
};

// DeviceLevel is the index of the first `+` level of `filter` (after `$share/<group>/`), or -1.
int DeviceLevel(std::string_view filter);
// StripShare removes `$share/<group>/` from a filter.
std::string_view StripShare(std::string_view filter);
// TopicMatches reports whether `topic` matches `filter` (no `$share/` prefix; §4.7).
bool TopicMatches(std::string_view filter, std::string_view topic);
// TopicLevel is level `index` of `topic` (0-based), or empty.
std::string_view TopicLevel(std::string_view topic, int index);

// DecodedMessage is what one MQTT payload turns into: bus messages (readings, and at most one
// rejected-input record), the readings it holds, and its result for the metrics ("accepted",
// "partial" when an array had invalid items, else the reason: "malformed_json", "too_large",
// "too_many_items", "empty_batch", "device_mismatch", or a schema code such as "missing").
struct DecodedMessage {
  std::vector<bus::Message> messages;
  std::size_t readings = 0;
  std::size_t rejected_items = 0;
  std::string result;
};

// DecodeMqttPayload decodes `payload` of `topic`, whose device id (empty: none) came from the
// topic. `limits` is modified (default_device_id). Pure apart from that; for tests.
DecodedMessage DecodeMqttPayload(std::string_view topic, std::string_view topic_device,
                                 std::string_view payload, const MqttIngestOptions& options,
                                 core::ReadingLimits& limits, core::Timestamp now);

class MqttIngest {
 public:
  // The producer, registry and clock must outlive the service.
  MqttIngest(MqttIngestOptions options, mqtt::ClientOptions client, bus::Producer& producer,
             metrics::Registry& registry, const core::Clock& clock);
  ~MqttIngest();
  MqttIngest(const MqttIngest&) = delete;
  MqttIngest& operator=(const MqttIngest&) = delete;

  // Start checks the TLS files (the error names the option) and starts connecting.
  Status Start();
  // Stop stops reading, waits up to `grace` for what is in flight to become durable and be
  // acknowledged, disconnects and joins the thread. Safe to call twice.
  void Stop(std::chrono::milliseconds grace);
  bool Connected() const;

 private:
  struct Group;
  void OnMessage(mqtt::Message m);
  void FlushGroup();
  void Produce(std::shared_ptr<Group> group);
  void Produced(std::shared_ptr<Group> group, Status s);

  MqttIngestOptions options_;
  mqtt::ClientOptions client_options_;
  bus::Producer& producer_;
  const core::Clock& clock_;
  core::ReadingLimits limits_;  // the service thread's copy (default_device_id changes)
  std::vector<std::pair<std::string, int>> filters_;  // without $share/, and the device level
  // Shared with the bus's callbacks, so that a late one posts to a stopped io_context instead
  // of a destroyed one.
  std::shared_ptr<boost::asio::io_context> io_ = std::make_shared<boost::asio::io_context>();
  std::unique_ptr<mqtt::Client> client_;
  std::thread thread_;
  std::shared_ptr<Group> open_group_;  // collecting the PUBLISHes of the current read
  int retrying_ = 0;                   // groups the bus refused, waiting to be tried again
  bool stopped_ = false;
  std::shared_ptr<mqtt::ClientStats> stats_ = std::make_shared<mqtt::ClientStats>();

  // Probe: the MQTT metrics (docs/mqtt.md).
  metrics::Gauge& connected_;
  metrics::Family<metrics::Counter>& messages_;
  metrics::Counter& accepted_messages_;  // messages_ {result="accepted"}, looked up once
  metrics::Counter& readings_accepted_;
  metrics::Counter& readings_rejected_;
  metrics::Counter& bus_retries_;
};

}  // namespace iot::services
