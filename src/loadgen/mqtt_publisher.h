// mqtt_publisher.h: `iotd loadgen --mqtt-url mqtt://host:port`: the load generator publishing
// readings to an MQTT broker (QoS 1) instead of POSTing them, for MQTT ingestion (docs/mqtt.md).
//
// It uses libmosquitto (Debian's libmosquitto-dev), the client library most devices' gateways
// use: `connections` clients (MQTT 3.1.1, clean session), each with its own network thread
// (mosquitto_loop_start). Message n goes to `devices/<id>/telemetry` of device n mod devices;
// its payload is one reading object, or with `batch` B > 0 a JSON array of B readings of that
// device. A message counts as accepted when the broker's PUBACK arrived (which says the broker
// has it, not that iotd stored it). Each client keeps at most `max_inflight` messages without
// PUBACK (closed loop beyond that). Rate as in load_generator.h: `rps` messages per second per
// device (open loop), or unthrottled; `count` stops after that many messages. At the end the
// messages without PUBACK get drain_timeout, then count as errors.
//
//   MqttLoadOptions o; o.url = "mqtt://127.0.0.1:1883"; o.count = 1000; o.unthrottled = true;
//   LoadgenSummary s = RunMqttLoad(o, std::cerr, stop_flag);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "core/result.h"
#include "loadgen/load_generator.h"

namespace iot::loadgen {

struct MqttLoadOptions {
  std::string url;  // mqtt://host[:port]
  int devices = 10;
  double rps = 1.0;  // messages per second per device
  bool unthrottled = false;
  std::optional<std::chrono::milliseconds> duration;
  std::uint64_t count = 0;  // stop after this many messages (0: duration / Stop only)
  int batch = 0;            // readings per message (0: one reading object)
  int connections = 2;
  int max_inflight = 10000;  // per client
  std::string device_prefix = "dev-";
  std::uint64_t seed = 0;
  double hot_fraction = 0.0;
  std::chrono::milliseconds drain_timeout{10'000};
  std::chrono::milliseconds progress_interval{1000};
};

// ValidateMqttLoad checks the options; the error names the flag.
Status ValidateMqttLoad(const MqttLoadOptions& options);

// RunMqttLoad publishes until `count`, the duration, or `stop` becomes true, and returns the
// summary (requests = messages; latency percentiles are not measured).
LoadgenSummary RunMqttLoad(const MqttLoadOptions& options, std::ostream& progress,
                           const std::atomic<bool>& stop);

}  // namespace iot::loadgen
