// client.h: a small MQTT 5.0 subscriber on Boost.Asio that acknowledges a QoS 1 message only
// when its owner says so.
//
// Why our own: libmosquitto sends the PUBACK before it calls on_message (lib/handle_publish.c;
// eclipse-mosquitto/mosquitto#118 and #2884) and Paho C sends it in
// MQTTProtocol_handlePublishes before the message is processed, so with either a crash after the
// acknowledgement loses the message. Here a QoS 1 message gets a token; Complete(token) marks
// it done, and PUBACKs go out in the order the PUBLISHes arrived (MQTT 5 §4.6) as soon as every
// earlier message is done. See docs/mqtt.md.
//
// It speaks CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH in (QoS 0 and 1; subscriptions ask for
// QoS 1 at most), PUBACK out, PINGREQ/PINGRESP and DISCONNECT, over TCP or TLS (OpenSSL through
// boost::asio::ssl, the peer verified against MQTT_CA_FILE or the system's CAs, optional client
// certificate). It connects, subscribes, and reconnects with exponential backoff and jitter when
// the connection fails; a persistent session (Clean Start 0, Session Expiry > 0) makes the broker
// redeliver what was not acknowledged. Messages of a lost connection that are completed later
// are ignored: the broker redelivers them to the new connection.
//
//   asio::io_context io;
//   auto client = Client::Create(io, options, [&](Message m) { ... later client->Complete(m.token);
//   });
//   (*client)->Start();
//   io.run();   // on one thread
//
// Threading: every callback runs on the io_context's thread, which must be one thread.
// Complete, Pause, Resume and Shutdown may be called from any thread; the getters are atomic.
// Lifecycle: Create, Start, ... Shutdown (calls `done` once closed), then stop the io_context
// before destroying the client.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/result.h"

namespace iot::mqtt {

struct ClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;
  bool tls = false;
  std::string ca_file;    // PEM CAs to verify the broker; empty: the system's
  std::string cert_file;  // PEM client certificate (chain), with key_file
  std::string key_file;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::string client_id;
  std::vector<std::string> topics;     // filters, subscribed with maximum QoS 1
  std::uint32_t session_expiry_s = 0;  // > 0: a persistent session (Clean Start 0)
  std::uint16_t receive_maximum = 1000;
  std::uint16_t keep_alive_s = 30;
  std::size_t max_packet_bytes = (16u << 20) + (64u << 10);  // announced; larger is not sent to us
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{10000};
  std::chrono::milliseconds connect_timeout{10000};
};

// Message is a received PUBLISH. `token` is 0 for QoS 0 (nothing to acknowledge).
struct Message {
  std::uint64_t token = 0;
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool dup = false;
};

// ClientStats are the client's counters, shared so that metrics can outlive the client.
struct ClientStats {
  std::atomic<bool> connected{false};
  std::atomic<std::size_t> in_flight{0};     // QoS 1 messages received, not yet acknowledged
  std::atomic<std::uint64_t> reconnects{0};  // reconnects scheduled after a failure
};

class Client {
 public:
  using OnMessage = std::function<void(Message)>;
  // Event: the subscription is up (kConnected), the connection was lost (kDisconnected), a
  // reconnect was scheduled after a failure (kRetrying, also when no connection was made).
  enum class Event { kConnected, kDisconnected, kRetrying };
  using OnState = std::function<void(Event)>;

  // Create checks the TLS files (a start-up error names the file) and builds the client.
  // `stats`, when given, receives the counters (else the client keeps its own).
  static Result<std::unique_ptr<Client>> Create(boost::asio::io_context& io, ClientOptions options,
                                                OnMessage on_message, OnState on_state = {},
                                                std::shared_ptr<ClientStats> stats = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Start begins connecting; returns at once.
  void Start();
  // Complete marks the QoS 1 message `token` done: its PUBACK goes out once every message
  // received before it on the same connection is done. Unknown tokens are ignored.
  void Complete(std::uint64_t token);
  // Complete marks several messages done at once (one hop to the io thread).
  void Complete(std::vector<std::uint64_t> tokens);
  // Pause stops reading the socket (back-pressure: the broker then holds the messages); Resume
  // reads again. Keep-alive pings continue meanwhile.
  void Pause();
  void Resume();
  // Shutdown stops reading, waits up to `grace` for the messages in flight to be completed and
  // acknowledged, sends DISCONNECT and closes; no reconnect follows. `done` runs once, on the
  // io thread.
  void Shutdown(std::chrono::milliseconds grace, std::function<void()> done);

  bool Connected() const { return stats_->connected.load(); }
  // InFlight is the number of QoS 1 messages received and not yet acknowledged.
  std::size_t InFlight() const { return stats_->in_flight.load(); }
  std::uint64_t Reconnects() const { return stats_->reconnects.load(); }

 private:
  struct Pending {
    std::uint64_t token;
    std::uint16_t packet_id;
    bool done;
  };
  using Tcp = boost::asio::ip::tcp;

  Client(boost::asio::io_context& io, ClientOptions options, OnMessage on_message, OnState on_state,
         std::unique_ptr<boost::asio::ssl::context> ssl, std::shared_ptr<ClientStats> stats);

  void Connect();
  void OnConnected(std::uint64_t gen);
  void StartRead();
  void ProcessBuffer();
  bool HandlePacket(std::uint8_t type, std::uint8_t flags, std::string_view body);
  void DoComplete(std::uint64_t token);
  void MarkDone(std::uint64_t token);
  // AckDone queues the PUBACKs of the done messages at the head of pending_.
  void AckDone();
  void Write(std::string bytes);
  void Flush();
  void Fail(const std::string& why);
  void Close();
  void ScheduleReconnect();
  void ArmKeepAlive(std::uint64_t gen);
  void CheckShutdown();
  Tcp::socket& Socket();

  boost::asio::io_context& io_;
  ClientOptions options_;
  OnMessage on_message_;
  OnState on_state_;
  std::unique_ptr<boost::asio::ssl::context> ssl_ctx_;
  Tcp::resolver resolver_;
  std::unique_ptr<Tcp::socket> plain_;
  std::unique_ptr<boost::asio::ssl::stream<Tcp::socket>> tls_;
  boost::asio::steady_timer connect_timer_;
  boost::asio::steady_timer keepalive_timer_;
  boost::asio::steady_timer reconnect_timer_;
  boost::asio::steady_timer shutdown_timer_;

  // All below: io thread only.
  std::uint64_t gen_ = 0;  // connection generation; stale handlers compare theirs
  bool open_ = false;      // a socket exists (connecting or connected)
  bool subscribed_ = false;
  bool reading_ = false;
  bool paused_ = false;
  bool writing_ = false;
  bool stopping_ = false;
  bool disconnect_sent_ = false;
  std::string in_;  // received bytes not yet parsed
  std::size_t in_len_ = 0;
  std::string out_;              // bytes waiting to be written
  std::string wbuf_;             // bytes being written
  std::deque<Pending> pending_;  // QoS 1 messages in arrival order
  std::uint64_t next_token_ = 0;
  std::chrono::milliseconds backoff_;
  std::chrono::steady_clock::time_point last_send_, last_recv_;
  std::chrono::steady_clock::time_point shutdown_deadline_;
  std::function<void()> shutdown_done_;
  std::mt19937_64 rng_{std::random_device{}()};

  std::shared_ptr<ClientStats> stats_;
};

}  // namespace iot::mqtt
