// mosquitto.h: a real Mosquitto broker (Debian's `mosquitto`) for the MQTT client's tests, on a
// free port of 127.0.0.1 with a generated configuration (no persistence, unlimited queues), and
// mosquitto_pub to publish with (a client that is not ours).
//
//   auto broker = Mosquitto::Start();
//   ASSERT_TRUE(broker.ok()) << broker.error().message;
//   IOT_ASSERT_OK((*broker)->Publish("devices/d1/telemetry", "{...}", /*qos=*/1));
//   (*broker)->port();
//
// The broker is stopped (SIGTERM, then SIGKILL) by the destructor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <sys/types.h>

#include "core/result.h"

namespace iot::testing {

class Mosquitto {
 public:
  static Result<std::unique_ptr<Mosquitto>> Start();
  ~Mosquitto();
  Mosquitto(const Mosquitto&) = delete;
  Mosquitto& operator=(const Mosquitto&) = delete;

  std::uint16_t port() const { return port_; }
  // Publish runs mosquitto_pub once and waits for it (its QoS 1 PUBACK included).
  Status Publish(const std::string& topic, const std::string& payload, int qos) const;

 private:
  Mosquitto() = default;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace iot::testing
