// The MQTT client against a real Mosquitto broker: connect, subscribe, QoS 1 receive, and an
// acknowledgement only when the application says so: what was not completed is redelivered to
// a new connection with the same client id (persistent session).
#include "mqtt/client.h"

#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "testing/mosquitto.h"

namespace iot::mqtt {
namespace {

using namespace std::chrono_literals;
using testing::Mosquitto;

// Harness runs one client on its own io thread and records what it receives.
class Harness {
 public:
  Harness(std::uint16_t port, const std::string& client_id) {
    ClientOptions o;
    o.port = port;
    o.client_id = client_id;
    o.topics = {"devices/+/telemetry"};
    o.session_expiry_s = 600;
    o.receive_maximum = 100;
    o.min_backoff = 50ms;
    o.max_backoff = 200ms;
    auto made = Client::Create(io_, o, [this](Message m) {
      std::lock_guard lock(mu_);
      messages_.push_back(std::move(m));
    });
    EXPECT_TRUE(made.ok());
    client_ = std::move(*made);
    client_->Start();
    thread_ = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io_);
      io_.run();
    });
  }
  ~Harness() { Stop(); }

  void Stop() {
    if (!thread_.joinable()) return;
    std::promise<void> closed;
    client_->Shutdown(0ms, [&closed] { closed.set_value(); });
    closed.get_future().wait_for(5s);
    io_.stop();
    thread_.join();
  }

  template <typename F>
  bool WaitFor(F&& f, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (f()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
  std::vector<Message> Messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }
  Client& client() { return *client_; }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<Client> client_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Message> messages_;
};

TEST(MqttClient, ConnectsSubscribesAndReceivesQos1AndQos0) {
  auto broker = Mosquitto::Start();
  ASSERT_TRUE(broker.ok()) << broker.error().message;
  Harness h((*broker)->port(), "client-test-receive");
  ASSERT_TRUE(h.WaitFor([&] { return h.client().Connected(); }));
  ASSERT_TRUE((*broker)->Publish("devices/d1/telemetry", "one", 1).ok());
  ASSERT_TRUE((*broker)->Publish("devices/d2/telemetry", "two", 0).ok());
  ASSERT_TRUE((*broker)->Publish("other/d3", "not subscribed", 1).ok());
  ASSERT_TRUE(h.WaitFor([&] { return h.Messages().size() >= 2; }));
  auto m = h.Messages();
  EXPECT_EQ(m[0].topic, "devices/d1/telemetry");
  EXPECT_EQ(m[0].payload, "one");
  EXPECT_EQ(m[0].qos, 1);
  EXPECT_NE(m[0].token, 0u);
  EXPECT_EQ(m[1].payload, "two");
  EXPECT_EQ(m[1].qos, 0);
  EXPECT_EQ(m[1].token, 0u);
  EXPECT_EQ(h.client().InFlight(), 1u);
  h.client().Complete(m[0].token);
  ASSERT_TRUE(h.WaitFor([&] { return h.client().InFlight() == 0; }));
}

TEST(MqttClient, UncompletedMessagesAreRedeliveredToTheNextConnection) {
  auto broker = Mosquitto::Start();
  ASSERT_TRUE(broker.ok()) << broker.error().message;
  {
    Harness h((*broker)->port(), "client-test-redelivery");
    ASSERT_TRUE(h.WaitFor([&] { return h.client().Connected(); }));
    for (const char* p : {"a", "b", "c"}) {
      ASSERT_TRUE((*broker)->Publish("devices/d1/telemetry", p, 1).ok());
    }
    ASSERT_TRUE(h.WaitFor([&] { return h.Messages().size() == 3; }));
    // Complete only "a", and "c" (whose ack must wait for "b": acks go out in order).
    auto m = h.Messages();
    h.client().Complete(m[0].token);
    h.client().Complete(m[2].token);
    ASSERT_TRUE(h.WaitFor([&] { return h.client().InFlight() == 2; }));
  }
  Harness again((*broker)->port(), "client-test-redelivery");
  ASSERT_TRUE(again.WaitFor([&] { return again.Messages().size() == 2; }));
  auto m = again.Messages();
  EXPECT_EQ(m[0].payload, "b");
  EXPECT_TRUE(m[0].dup);
  EXPECT_EQ(m[1].payload, "c");
  again.client().Complete(m[0].token);
  again.client().Complete(m[1].token);
  ASSERT_TRUE(again.WaitFor([&] { return again.client().InFlight() == 0; }));
  again.Stop();
  Harness third((*broker)->port(), "client-test-redelivery");
  ASSERT_TRUE(third.WaitFor([&] { return third.client().Connected(); }));
  ASSERT_TRUE((*broker)->Publish("devices/d1/telemetry", "d", 1).ok());
  ASSERT_TRUE(third.WaitFor([&] { return !third.Messages().empty(); }));
  EXPECT_EQ(third.Messages()[0].payload, "d");  // nothing completed came back
}

TEST(MqttClient, KeepsReconnectingWithBackoffWhileTheBrokerIsDown) {
  std::uint16_t port;
  {
    auto probe = Mosquitto::Start();
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  Harness h(port, "client-test-reconnect");
  ASSERT_TRUE(h.WaitFor([&] { return h.client().Reconnects() >= 2; }));
  EXPECT_FALSE(h.client().Connected());
}

TEST(MqttClient, MissingTlsFilesAreAStartUpError) {
  boost::asio::io_context io;
  ClientOptions o;
  o.tls = true;
  o.ca_file = "/nonexistent/ca.pem";
  auto made = Client::Create(io, o, [](Message) {});
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.error().message.find("MQTT_CA_FILE"), std::string::npos);
}

}  // namespace
}  // namespace iot::mqtt
