#include "mqtt/client.h"

#include <filesystem>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "mqtt/packet.h"

namespace iot::mqtt {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64 * 1024;

Status CheckReadable(const std::string& path, const char* what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return MakeError(Errc::kInvalidArgument, std::string(what) + ": cannot read " + path);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Client>> Client::Create(asio::io_context& io, ClientOptions options,
                                               OnMessage on_message, OnState on_state,
                                               std::shared_ptr<ClientStats> stats) {
  std::unique_ptr<asio::ssl::context> ssl;
  if (options.tls) {
    ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    ssl->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    if (!options.ca_file.empty()) {
      if (Status s = CheckReadable(options.ca_file, "MQTT_CA_FILE"); !s) return s.error();
      ssl->load_verify_file(options.ca_file, ec);
      if (ec)
        return MakeError(Errc::kInvalidArgument,
                         "MQTT_CA_FILE " + options.ca_file + ": " + ec.message());
    } else {
      ssl->set_default_verify_paths(ec);
      if (ec)
        return MakeError(Errc::kInvalidArgument, "the system's CA certificates: " + ec.message());
    }
    ssl->set_verify_mode(asio::ssl::verify_peer);
    if (!options.cert_file.empty()) {
      if (Status s = CheckReadable(options.cert_file, "MQTT_CERT_FILE"); !s) return s.error();
      if (Status s = CheckReadable(options.key_file, "MQTT_KEY_FILE"); !s) return s.error();
      ssl->use_certificate_chain_file(options.cert_file, ec);
      if (ec)
        return MakeError(Errc::kInvalidArgument,
                         "MQTT_CERT_FILE " + options.cert_file + ": " + ec.message());
      ssl->use_private_key_file(options.key_file, asio::ssl::context::pem, ec);
      if (ec)
        return MakeError(Errc::kInvalidArgument,
                         "MQTT_KEY_FILE " + options.key_file + ": " + ec.message());
    }
  }
  return std::unique_ptr<Client>(
      new Client(io, std::move(options), std::move(on_message), std::move(on_state), std::move(ssl),
                 stats ? std::move(stats) : std::make_shared<ClientStats>()));
}

Client::Client(asio::io_context& io, ClientOptions options, OnMessage on_message, OnState on_state,
               std::unique_ptr<asio::ssl::context> ssl, std::shared_ptr<ClientStats> stats)
    : io_(io),
      options_(std::move(options)),
      on_message_(std::move(on_message)),
      on_state_(std::move(on_state)),
      ssl_ctx_(std::move(ssl)),
      resolver_(io),
      connect_timer_(io),
      keepalive_timer_(io),
      reconnect_timer_(io),
      shutdown_timer_(io),
      backoff_(options_.min_backoff),
      stats_(std::move(stats)) {}

Client::~Client() = default;

void Client::Start() {
  asio::post(io_, [this] { Connect(); });
}

Client::Tcp::socket& Client::Socket() { return tls_ ? tls_->next_layer() : *plain_; }

void Client::Connect() {
  if (stopping_) return;
  const std::uint64_t gen = ++gen_;
  if (tls_) tls_.reset();
  plain_.reset();
  if (ssl_ctx_) {
    tls_ = std::make_unique<asio::ssl::stream<Tcp::socket>>(io_, *ssl_ctx_);
    // SNI (a macro with a C cast inside, hence the direct call).
    SSL_ctrl(tls_->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(options_.host.c_str()));
    tls_->set_verify_callback(asio::ssl::host_name_verification(options_.host));
  } else {
    plain_ = std::make_unique<Tcp::socket>(io_);
  }
  open_ = true;
  subscribed_ = false;
  reading_ = false;
  writing_ = false;
  disconnect_sent_ = false;
  in_.clear();
  in_len_ = 0;
  out_.clear();
  wbuf_.clear();
  pending_.clear();
  stats_->in_flight.store(0);
  connect_timer_.expires_after(options_.connect_timeout);
  connect_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (ec || gen != gen_ || subscribed_) return;
    Fail("no CONNACK/SUBACK within the connect timeout");
  });
  resolver_.async_resolve(
      options_.host, std::to_string(options_.port),
      [this, gen](const boost::system::error_code& ec, Tcp::resolver::results_type results) {
        if (gen != gen_) return;
        if (ec) return Fail("cannot resolve " + options_.host + ": " + ec.message());
        asio::async_connect(
            Socket(), results,
            [this, gen](const boost::system::error_code& ec2, const Tcp::endpoint&) {
              if (gen != gen_) return;
              if (ec2) return Fail("cannot connect: " + ec2.message());
              Socket().set_option(Tcp::no_delay(true));
              if (!tls_) return OnConnected(gen);
              tls_->async_handshake(asio::ssl::stream_base::client,
                                    [this, gen](const boost::system::error_code& ec3) {
                                      if (gen != gen_) return;
                                      if (ec3)
                                        return Fail("TLS handshake failed: " + ec3.message());
                                      OnConnected(gen);
                                    });
            });
      });
}

void Client::OnConnected(std::uint64_t gen) {
  ConnectOptions co;
  co.client_id = options_.client_id;
  co.username = options_.username;
  co.password = options_.password;
  co.keep_alive_s = options_.keep_alive_s;
  co.clean_start = options_.session_expiry_s == 0;
  co.session_expiry_s = options_.session_expiry_s;
  co.receive_maximum = options_.receive_maximum;
  co.maximum_packet_size = static_cast<std::uint32_t>(
      std::min<std::size_t>(options_.max_packet_bytes, kMaxRemainingLength));
  last_recv_ = Clock::now();
  Write(EncodeConnect(co));
  ArmKeepAlive(gen);
  StartRead();
}

void Client::StartRead() {
  if (!open_ || reading_ || paused_) return;
  if (in_.size() < in_len_ + kReadChunk) in_.resize(in_len_ + kReadChunk);
  reading_ = true;
  auto buffer = asio::buffer(in_.data() + in_len_, in_.size() - in_len_);
  auto handler = [this, gen = gen_](const boost::system::error_code& ec, std::size_t n) {
    if (gen != gen_) return;
    reading_ = false;
    if (ec) {
      if (stopping_ && disconnect_sent_) return Close();
      return Fail(ec == asio::error::eof ? "the broker closed the connection"
                                         : "read: " + ec.message());
    }
    in_len_ += n;
    last_recv_ = Clock::now();
    ProcessBuffer();
  };
  if (tls_) {
    tls_->async_read_some(buffer, std::move(handler));
  } else {
    plain_->async_read_some(buffer, std::move(handler));
  }
}

void Client::ProcessBuffer() {
  const std::uint64_t gen = gen_;
  std::size_t pos = 0;
  while (!paused_ && gen == gen_) {
    FixedHeader h;
    const std::string_view view(in_.data() + pos, in_len_ - pos);
    const Framing f = ParseFixedHeader(view, options_.max_packet_bytes, h);
    if (f == Framing::kNeedMore) {
      // Make room for a large packet in one piece.
      if (h.header_size > 0 && in_.size() < pos + h.header_size + h.remaining) {
        in_.resize(pos + h.header_size + h.remaining);
      }
      break;
    }
    if (f == Framing::kMalformed) {
      return Fail("malformed packet from the broker (bad length, or larger than announced)");
    }
    const std::string_view body = view.substr(h.header_size, h.remaining);
    pos += h.header_size + h.remaining;
    if (!HandlePacket(static_cast<std::uint8_t>(h.type), h.flags, body)) return;
  }
  if (gen != gen_) return;
  if (pos > 0) {
    in_.erase(0, pos);
    in_len_ -= pos;
  }
  StartRead();
}

bool Client::HandlePacket(std::uint8_t type, std::uint8_t flags, std::string_view body) {
  switch (static_cast<PacketType>(type)) {
    case PacketType::kConnack: {
      auto c = DecodeConnack(flags, body);
      if (!c) return Fail(c.error().message), false;
      if (c->reason >= 0x80 || c->reason == 0x01) {
        std::string why = "the broker refused the connection: " + ReasonName(c->reason);
        if (!c->reason_string.empty()) why += " (" + c->reason_string + ")";
        return Fail(why), false;
      }
      if (options_.session_expiry_s > 0 && !c->session_present) {
        spdlog::info("mqtt: connected to {}:{}, new session", options_.host, options_.port);
      } else {
        spdlog::info("mqtt: connected to {}:{}{}", options_.host, options_.port,
                     c->session_present ? ", session resumed" : "");
      }
      Write(EncodeSubscribe(1, options_.topics, 1));
      return true;
    }
    case PacketType::kSuback: {
      auto s = DecodeSuback(flags, body);
      if (!s) return Fail(s.error().message), false;
      for (std::size_t i = 0; i < s->reasons.size() && i < options_.topics.size(); ++i) {
        if (s->reasons[i] >= 0x80) {
          spdlog::error("mqtt: the broker refused the subscription to {}: {}{}", options_.topics[i],
                        ReasonName(s->reasons[i]),
                        s->reason_string.empty() ? "" : " (" + s->reason_string + ")");
        }
      }
      subscribed_ = true;
      connect_timer_.cancel();
      backoff_ = options_.min_backoff;
      stats_->connected.store(true);
      spdlog::info("mqtt: subscribed to {}", fmt::join(options_.topics, ", "));
      if (on_state_) on_state_(Event::kConnected);
      return true;
    }
    case PacketType::kPublish: {
      auto p = DecodePublish(flags, body);
      if (!p) return Fail(p.error().message), false;
      if (p->qos > 1) return Fail("PUBLISH with QoS 2 on a QoS 1 subscription"), false;
      Message m;
      m.topic.assign(p->topic);
      m.payload.assign(p->payload);
      m.qos = p->qos;
      m.dup = p->dup;
      if (p->qos == 1) {
        m.token = ++next_token_;
        pending_.push_back(Pending{m.token, p->packet_id, false});
        stats_->in_flight.store(pending_.size());
        if (pending_.size() > options_.receive_maximum) {
          return Fail("the broker exceeded our Receive Maximum"), false;
        }
      }
      on_message_(std::move(m));
      return true;
    }
    case PacketType::kPingresp:
      return true;
    case PacketType::kDisconnect: {
      auto d = DecodeDisconnect(flags, body);
      std::string why = "the broker disconnected: ";
      why += d ? ReasonName(d->reason) +
                     (d->reason_string.empty() ? "" : " (" + d->reason_string + ")")
               : d.error().message;
      return Fail(why), false;
    }
    default:
      return Fail("unexpected packet type " + std::to_string(type) + " from the broker"), false;
  }
}

void Client::Complete(std::uint64_t token) {
  if (token == 0) return;
  asio::post(io_, [this, token] { DoComplete(token); });
}

void Client::Complete(std::vector<std::uint64_t> tokens) {
  asio::post(io_, [this, tokens = std::move(tokens)] {
    for (auto token : tokens) MarkDone(token);
    AckDone();
  });
}

void Client::DoComplete(std::uint64_t token) {
  MarkDone(token);
  AckDone();
}

void Client::MarkDone(std::uint64_t token) {
  if (pending_.empty() || token == 0 || token < pending_.front().token ||
      token > pending_.back().token) {
    return;
  }
  pending_[token - pending_.front().token].done = true;
}

void Client::AckDone() {
  bool any = false;
  while (!pending_.empty() && pending_.front().done) {
    AppendPuback(out_, pending_.front().packet_id);
    pending_.pop_front();
    any = true;
  }
  if (any) {
    stats_->in_flight.store(pending_.size());
    Flush();
    if (stopping_) CheckShutdown();
  }
}

void Client::Write(std::string bytes) {
  out_ += bytes;
  Flush();
}

void Client::Flush() {
  if (!open_ || writing_ || out_.empty()) return;
  writing_ = true;
  wbuf_.swap(out_);
  out_.clear();
  last_send_ = Clock::now();
  auto handler = [this, gen = gen_](const boost::system::error_code& ec, std::size_t) {
    if (gen != gen_) return;
    writing_ = false;
    wbuf_.clear();
    if (ec) return Fail("write: " + ec.message());
    if (!out_.empty()) return Flush();
    if (disconnect_sent_) Close();
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(wbuf_), std::move(handler));
  } else {
    asio::async_write(*plain_, asio::buffer(wbuf_), std::move(handler));
  }
}

void Client::ArmKeepAlive(std::uint64_t gen) {
  if (options_.keep_alive_s == 0) return;
  const auto half = std::chrono::milliseconds(options_.keep_alive_s * 500);
  keepalive_timer_.expires_after(half);
  keepalive_timer_.async_wait([this, gen, half](const boost::system::error_code& ec) {
    if (ec || gen != gen_ || !open_) return;
    const auto now = Clock::now();
    // While paused the socket is not read, so an answer cannot be seen: no timeout then.
    if (!paused_ && now - last_recv_ > half * 3)
      return Fail("keep alive timeout: the broker is silent");
    if (now - last_send_ >= half) Write(EncodePingreq());
    ArmKeepAlive(gen);
  });
}

void Client::Pause() {
  asio::post(io_, [this] { paused_ = true; });
}

void Client::Resume() {
  asio::post(io_, [this] {
    if (!paused_ || stopping_) return;
    paused_ = false;
    last_recv_ = Clock::now();
    if (open_ && !reading_) ProcessBuffer();
  });
}

void Client::Fail(const std::string& why) {
  if (stopping_) {
    spdlog::info("mqtt: connection closed during shutdown: {}", why);
  } else {
    spdlog::warn("mqtt: {}:{}: {}; reconnecting", options_.host, options_.port, why);
  }
  Close();
  if (!stopping_) ScheduleReconnect();
}

void Client::Close() {
  ++gen_;  // every handler of this connection is stale now
  const bool was_connected = stats_->connected.exchange(false);
  boost::system::error_code ignored;
  if (open_) {
    Socket().shutdown(Tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }
  open_ = false;
  subscribed_ = false;
  reading_ = false;
  writing_ = false;
  pending_.clear();
  stats_->in_flight.store(0);
  connect_timer_.cancel();
  keepalive_timer_.cancel();
  if (was_connected && on_state_) on_state_(Event::kDisconnected);
  if (stopping_ && shutdown_done_) {
    shutdown_timer_.cancel();
    auto done = std::move(shutdown_done_);
    shutdown_done_ = nullptr;
    done();
  }
}

void Client::ScheduleReconnect() {
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  const auto wait = std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(backoff_.count()) * jitter(rng_)));
  backoff_ = std::min(backoff_ * 2, options_.max_backoff);
  stats_->reconnects.fetch_add(1);
  if (on_state_) on_state_(Event::kRetrying);
  reconnect_timer_.expires_after(wait);
  reconnect_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) Connect();
  });
}

void Client::Shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  asio::post(io_, [this, grace, done = std::move(done)]() mutable {
    stopping_ = true;
    paused_ = true;
    reconnect_timer_.cancel();
    shutdown_deadline_ = Clock::now() + grace;
    shutdown_done_ = std::move(done);
    if (!open_) {
      Close();
      return;
    }
    CheckShutdown();
  });
}

void Client::CheckShutdown() {
  if (!open_ || disconnect_sent_ || !shutdown_done_) return;
  if (!pending_.empty() && subscribed_ && Clock::now() < shutdown_deadline_) {
    shutdown_timer_.expires_after(std::chrono::milliseconds(10));
    shutdown_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) CheckShutdown();
    });
    return;
  }
  if (!pending_.empty()) {
    spdlog::warn(
        "mqtt: shutting down with {} messages not acknowledged (the broker redelivers "
        "them)",
        pending_.size());
  }
  disconnect_sent_ = true;
  Write(EncodeDisconnect());
  // Close when the write completes (Flush); a broker that stalls is cut at the deadline.
  shutdown_timer_.expires_after(std::chrono::milliseconds(500));
  shutdown_timer_.async_wait([this, gen = gen_](const boost::system::error_code& ec) {
    if (!ec && gen == gen_) Close();
  });
}

}  // namespace iot::mqtt
