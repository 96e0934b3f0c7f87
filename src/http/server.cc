// server.cc: the listener and the per-connection session of the HTTP server.
//
// A session is a small state machine on its connection's strand:
//
//   idle --first bytes--> reading --request parsed--> handling --Respond--> writing --+
//    ^                       |  (early error: 404/405/413/415/431/400)      |          |
//    +---- keep-alive -------+----------------------------------------------+----------+
//                                                          not keep-alive --> closing
//
// The session drives Beast's parser itself (`put` over a flat_buffer), so one read usually
// yields a whole request and pipelined requests already buffered cost no read at all. One
// steady_timer per session enforces the idle, read, write and linger deadlines; moving a
// deadline later is a store, the timer re-arms only when it fires early or a deadline moves
// earlier, so keep-alive traffic does not touch the timer queue per request.
//
// With TLS the same session runs over an SSL stream layered on the socket: a handshake (bounded
// by the read timeout) comes first, and closing sends close_notify before the FIN.
#include "http/server.h"

#include <sys/stat.h>


#include <algorithm>
#include <array>
#include <charconv>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <ctime>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace iot::http {
namespace {

namespace net = boost::asio;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
// Concrete executor types (rather than any_io_executor) keep type erasure off the hot path.
using Strand = net::strand<net::io_context::executor_type>;
using Socket = net::basic_stream_socket<tcp, Strand>;
using Timer = net::basic_waitable_timer<Clock, net::wait_traits<Clock>, Strand>;
using TlsContext = net::ssl::context;
using TlsStream = net::ssl::stream<Socket&>;

constexpr std::string_view kUnmatched = "unmatched";
// kReadChunk is how much one read asks the socket for.
constexpr std::size_t kReadChunk = 16 * 1024;
// kMaxDiscard bounds the body the server reads and discards after an early error (404, 405,
// 415) so that the connection stays usable; larger bodies close the connection instead.
constexpr std::uint64_t kMaxDiscard = 64 * 1024;
// kMaxLinger bounds what a closing connection reads and discards.
constexpr std::size_t kMaxLinger = 1024 * 1024;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

// HttpDate returns the current time as an IMF-fixdate (RFC 7231), formatted once per second
// per thread.
beast::string_view HttpDate() {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local std::time_t cached = -1;
  thread_local char buf[40];
  thread_local int len = 0;
  const std::time_t now = std::time(nullptr);
  if (now != cached) {
    cached = now;
    std::tm t{};
    gmtime_r(&now, &t);
    len = std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[t.tm_wday],
                        t.tm_mday, kMonths[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min,
                        t.tm_sec);
  }
  return {buf, static_cast<std::size_t>(len)};
}

bool IsResourceExhaustion(const boost::system::error_code& ec) {
  return ec == boost::system::errc::too_many_files_open ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == boost::system::errc::no_buffer_space ||
         ec == boost::system::errc::not_enough_memory;
}

// LoadTls builds a server TLS context from a PEM certificate chain and key.
Result<std::shared_ptr<TlsContext>> LoadTls(const TlsOptions& tls) {
  auto ctx = std::make_shared<TlsContext>(TlsContext::tls_server);
  ctx->set_options(TlsContext::default_workarounds | TlsContext::no_sslv2 | TlsContext::no_sslv3 |
                   TlsContext::no_tlsv1 | TlsContext::no_tlsv1_1 | TlsContext::single_dh_use);
  boost::system::error_code ec;
  if (ctx->use_certificate_chain_file(tls.cert_file, ec)) {
    return MakeError(Errc::kInvalidArgument,
                     "cannot load the TLS certificate " + tls.cert_file + ": " + ec.message());
  }
  if (ctx->use_private_key_file(tls.key_file, TlsContext::pem, ec)) {
    return MakeError(Errc::kInvalidArgument,
                     "cannot load the TLS key " + tls.key_file + ": " + ec.message());
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return MakeError(Errc::kInvalidArgument, "the TLS key " + tls.key_file +
                                                 " does not match the certificate " +
                                                 tls.cert_file);
  }
  return ctx;
}

// FileStamp identifies a file's version (device, inode, size, modification time), so that a
// certificate replaced by a rename (as certbot and Kubernetes Secrets do) is noticed.
std::string FileStamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

// TlsStamp identifies the versions of a certificate and key pair.
std::string TlsStamp(const TlsOptions& tls) {
  return FileStamp(tls.cert_file) + "|" + FileStamp(tls.key_file);
}

// SessionStream is the StreamWriter of an accepted stream (stream.h). Writers (any thread) append
// to `pending_`; the session takes it on its strand and writes it. `queued_` counts what was
// written by the handler and not yet by the socket (pending and in flight): the bound.
class SessionStream final : public StreamWriter {
 public:
  SessionStream(std::size_t max_queued, std::function<void()> kick)
      : max_queued_(max_queued), kick_(std::move(kick)) {}

  bool Write(std::string_view bytes) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    if (queued_ + bytes.size() > max_queued_) {
      ended_ = true;
      overflowed_ = true;
      KickLocked();
      return false;
    }
    pending_.append(bytes);
    queued_ += bytes.size();
    KickLocked();
    return true;
  }

  void Close() override {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
    KickLocked();
  }

  bool Open() const override {
    std::lock_guard lock(mu_);
    return !ended_;
  }

  bool Overflowed() const override {
    std::lock_guard lock(mu_);
    return overflowed_;
  }

  // --- the session's side (its strand) ---

  // Take moves what is pending to the end of `out`; returns whether the stream has ended.
  bool Take(std::string& out) {
    std::lock_guard lock(mu_);
    out += pending_;
    pending_.clear();
    kicked_ = false;
    return ended_;
  }
  // Written: `n` bytes taken earlier reached the socket.
  void Written(std::size_t n) {
    std::lock_guard lock(mu_);
    queued_ -= std::min(n, queued_);
  }
  // End: the connection is gone; writers learn it from their next Write.
  void End() {
    std::lock_guard lock(mu_);
    ended_ = true;
    pending_.clear();
    pending_.shrink_to_fit();
  }

 private:
  void KickLocked() {
    if (kicked_) return;
    kicked_ = true;
    kick_();
  }

  const std::size_t max_queued_;
  const std::function<void()> kick_;  // posts the session's Pump to its strand
  mutable std::mutex mu_;
  std::string pending_;
  std::size_t queued_ = 0;
  bool ended_ = false;
  bool overflowed_ = false;
  bool kicked_ = false;
};

}  // namespace

// State is what the server shares with its sessions.
struct Server::State {
  ServerOptions options;
  std::shared_ptr<const Router> router;
  std::function<void(const RequestInfo&)> observer;
  std::atomic<std::size_t> active{0};
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::list<std::weak_ptr<Session>> sessions;  // guarded by mu
  // TLS: the current context and the stamps of the files it was loaded from. Only the
  // listener's strand touches them after Start.
  std::shared_ptr<TlsContext> tls;
  std::string tls_stamp;
  Clock::time_point tls_checked{};

  // CurrentTls returns the context for a new connection, reloading it first when the files
  // changed since (checked at most every reload_check).
  std::shared_ptr<TlsContext> CurrentTls() {
    if (!tls) return nullptr;
    const auto now = Clock::now();
    if (now - tls_checked < options.tls->reload_check) return tls;
    tls_checked = now;
    std::string stamp = TlsStamp(*options.tls);
    if (stamp == tls_stamp) return tls;
    tls_stamp = std::move(stamp);
    auto loaded = LoadTls(*options.tls);
    if (loaded) {
      tls = std::move(*loaded);
    } else if (options.warn) {
      options.warn(loaded.error().message + "; still using the previous certificate");
    }
    return tls;
  }
};

// Session serves one connection; see the file comment. Every member function runs on the
// connection's strand except Deliver (any thread) and the constructor/destructor.
class Server::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket socket, std::shared_ptr<State> state, std::shared_ptr<TlsContext> tls)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        state_(std::move(state)),
        tls_context_(std::move(tls)) {
    if (tls_context_) tls_.emplace(socket_, *tls_context_);
    boost::system::error_code ec;
    peer_ = socket_.remote_endpoint(ec).address();
    state_->active.fetch_add(1, std::memory_order_relaxed);
  }

  ~Session() {
    {
      std::lock_guard lock(state_->mu);
      if (registered_) state_->sessions.erase(registration_);
    }
    state_->active.fetch_sub(1, std::memory_order_relaxed);
  }

  // Start serves requests until the connection closes.
  void Start() {
    Register();
    net::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->Handshake([self] { self->NextRequest(); });
    });
  }

  // Reject answers 503 and closes (too many connections).
  void Reject() {
    Register();
    net::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->Handshake([self] { self->RejectNow(); });
    });
  }

  // Stop closes the connection if it is idle, and ends a stream once what is queued has been
  // written; otherwise the request in flight completes and the connection closes after its
  // response (`State::stopping` is already set).
  void Stop() {
    net::post(socket_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == Phase::kIdle) self->Close();
      if (self->phase_ == Phase::kStreaming) self->stream_->Close();
    });
  }

 private:
  enum class Phase { kIdle, kReading, kHandling, kWriting, kStreaming, kClosing };

  // Io calls `f` with the connection's stream: the TLS stream, or the socket itself.
  template <class F>
  void Io(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(socket_);
    }
  }

  // Handshake runs the TLS handshake (bounded by the read timeout), then `next`; without TLS,
  // `next` at once. A failed handshake closes the connection.
  template <class Next>
  void Handshake(Next next) {
    if (!tls_) {
      next();
      return;
    }
    SetDeadline(Clock::now() + state_->options.read_timeout);
    tls_->async_handshake(net::ssl::stream_base::server,
                          [self = shared_from_this(), next](boost::system::error_code ec) {
                            if (self->closed_) return;
                            if (ec) {
                              self->Close();
                              return;
                            }
                            next();
                          });
  }

  void RejectNow() {
    parser_.emplace();
    request_start_ = Clock::now();
    close_after_ = true;
    Response res = MakeError(503, "overloaded", "too many connections");
    res.set(bhttp::field::retry_after, "1");
    SendResponse(std::move(res));
  }

  void Register() {
    std::lock_guard lock(state_->mu);
    registration_ = state_->sessions.insert(state_->sessions.end(), weak_from_this());
    registered_ = true;
  }

  // --- deadlines -------------------------------------------------------------------------------

  void SetDeadline(Clock::time_point deadline) {
    deadline_ = deadline;
    if (deadline < armed_) Arm(deadline);
  }

  void ClearDeadline() { deadline_ = Clock::time_point::max(); }

  void Arm(Clock::time_point at) {
    armed_ = at;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->OnTimer();
    });
  }

  void OnTimer() {
    armed_ = Clock::time_point::max();
    if (closed_) return;
    if (Clock::now() >= deadline_) {
      Close();  // pending operations complete with an error and release the session
    } else if (deadline_ != Clock::time_point::max()) {
      Arm(deadline_);
    }
  }

  // --- reading ---------------------------------------------------------------------------------

  void NextRequest() {
    if (closed_) return;
    if (state_->stopping.load()) {
      Close();
      return;
    }
    ++seq_;
    parser_.emplace();
    parser_->header_limit(state_->options.max_header_bytes);
    // The route's limit is applied after the header. (Not boost::none: Beast 1.74 compares a
    // Content-Length with `len > optional` at the end of the header, which none always fails.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    header_done_ = false;
    close_after_ = false;
    early_.reset();
    match_ = Router::Match{};
    route_ = kUnmatched;
    if (buffer_.size() > 0) {  // a pipelined request is already here
      BeginRequest();
      Parse();
    } else {
      phase_ = Phase::kIdle;
      SetDeadline(Clock::now() + state_->options.idle_timeout);
      Read();
    }
  }

  void BeginRequest() {
    phase_ = Phase::kReading;
    request_start_ = Clock::now();
    SetDeadline(request_start_ + state_->options.read_timeout);
  }

  void Read() {
    Io([&](auto& stream) {
      stream.async_read_some(
          buffer_.prepare(kReadChunk),
          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            self->OnRead(ec, n);
          });
    });
  }

  void OnRead(boost::system::error_code ec, std::size_t n) {
    if (closed_) return;
    if (ec) {  // end of stream, reset, timeout (the timer closed the socket), Stop
      Close();
      return;
    }
    buffer_.commit(n);
    if (phase_ == Phase::kIdle) BeginRequest();
    Parse();
  }

  void Parse() {
    for (;;) {
      if (buffer_.size() == 0) {
        Read();
        return;
      }
      boost::system::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == bhttp::error::need_more) {
        Read();
        return;
      }
      if (ec) {
        OnParseError(ec);
        return;
      }
      if (!header_done_ && parser_->is_header_done()) {
        header_done_ = true;
        if (!OnHeader()) return;
      }
      if (parser_->is_done()) {
        OnRequest();
        return;
      }
      if (used == 0) {
        Read();
        return;
      }
    }
  }

  void OnParseError(boost::system::error_code ec) {
    close_after_ = true;  // the parser cannot resynchronise on this connection
    if (early_) {
      SendResponse(*std::exchange(early_, std::nullopt));
    } else if (ec == bhttp::error::header_limit) {
      SendResponse(MakeError(431, "header_too_large",
                             "the request header exceeds " +
                                 std::to_string(state_->options.max_header_bytes) + " bytes"));
    } else if (ec == bhttp::error::body_limit) {
      SendResponse(BodyTooLarge());
    } else {
      SendResponse(MakeError(400, "bad_request", "malformed HTTP request: " + ec.message()));
    }
  }

  Response BodyTooLarge() const {
    return MakeError(413, "payload_too_large",
                     "the request body exceeds " +
                         std::to_string(match_.options ? match_.options->max_body_bytes : 0) +
                         " bytes");
  }

  // OnHeader routes the request and checks its limits. Returns false when it took over (an
  // error response, or a 100 Continue being written).
  bool OnHeader() {
    const Request& req = parser_->get();
    auto found = state_->router->Find(req.method(), ToStd(req.target()));
    if (auto* error = std::get_if<Response>(&found)) return Early(std::move(*error));
    match_ = std::get<Router::Match>(std::move(found));
    route_ = match_.route;
    const RouteOptions& options = *match_.options;
    const auto length = parser_->content_length();
    if (length && *length > options.max_body_bytes) {
      close_after_ = true;
      SendResponse(BodyTooLarge());
      return false;
    }
    const bool has_body = parser_->chunked() || length.value_or(0) > 0;
    if (has_body && !options.content_types.empty() &&
        !MediaTypeMatches(ToStd(req[bhttp::field::content_type]), options.content_types)) {
      std::string allowed;
      for (const auto& t : options.content_types) allowed += (allowed.empty() ? "" : ", ") + t;
      return Early(MakeError(415, "unsupported_media_type",
                             "the request body must be of type " + allowed));
    }
    if (state_->options.admit) {
      if (auto refused = state_->options.admit(req, peer_, route_)) {
        return Early(std::move(*refused));
      }
    }
    parser_->body_limit(options.max_body_bytes);
    return MaybeContinue();
  }

  bool ExpectsContinue() const {
    const Request& req = parser_->get();
    return req.version() >= 11 && IEquals(ToStd(req[bhttp::field::expect]), "100-continue");
  }

  // Early answers `res` before the body was read: at once when there is no body; after
  // reading and discarding a small body, so that the connection stays usable; otherwise at
  // once, closing the connection.
  bool Early(Response res) {
    if (parser_->is_done()) {
      SendResponse(std::move(res));
      return false;
    }
    const auto length = parser_->content_length();
    if ((length && *length > kMaxDiscard) || ExpectsContinue()) {
      close_after_ = true;
      SendResponse(std::move(res));
      return false;
    }
    early_ = std::move(res);
    parser_->body_limit(kMaxDiscard);
    return true;
  }

  // MaybeContinue writes "100 Continue" when the client waits for it before sending the body.
  bool MaybeContinue() {
    if (parser_->is_done() || buffer_.size() > 0 || !ExpectsContinue()) return true;
    Io([&](auto& stream) {
      net::async_write(stream, net::buffer(kContinue.data(), kContinue.size()),
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         if (self->closed_) return;
                         if (ec) {
                           self->Close();
                           return;
                         }
                         self->Parse();
                       });
    });
    return false;
  }

  // --- handling --------------------------------------------------------------------------------

  void OnRequest() {
    if (early_) {
      SendResponse(*std::exchange(early_, std::nullopt));
      return;
    }
    phase_ = Phase::kHandling;
    ClearDeadline();
    if (match_.stream) {
      StartStream();
      return;
    }
    const std::uint64_t seq = seq_;
    Respond respond = [self = shared_from_this(), seq](Response res) {
      self->Deliver(seq, std::move(res));
    };
    try {
      (*match_.handler)(parser_->get(), match_.params, std::move(respond));
    } catch (const std::exception&) {
      // The handler broke its contract; the client still gets an answer (ignored if the
      // handler responded before throwing).
      Deliver(seq, MakeError(500, "internal", "internal error"));
    }
  }

  // Deliver hands a handler's response to the strand (any thread, inline when already on it).
  void Deliver(std::uint64_t seq, Response res) {
    net::dispatch(socket_.get_executor(),
                  [self = shared_from_this(), seq, res = std::move(res)]() mutable {
                    if (self->closed_ || self->phase_ != Phase::kHandling || seq != self->seq_) {
                      return;  // a second response for the same request is dropped
                    }
                    self->SendResponse(std::move(res));
                  });
  }

  // --- writing ---------------------------------------------------------------------------------

  void SendResponse(Response res) {
    const Request& req = parser_->get();
    const bhttp::verb method = header_done_ ? req.method() : bhttp::verb::unknown;
    keep_alive_ = header_done_ && !close_after_ && parser_->keep_alive() &&
                  !state_->stopping.load();
    res_ = std::move(res);
    res_.version(header_done_ ? req.version() : 11);
    res_.set(bhttp::field::server, state_->options.server_name);
    res_.set(bhttp::field::date, HttpDate());
    const unsigned status = res_.result_int();
    if (status / 100 == 1 || status == 204 || status == 304) {
      res_.body().clear();  // these responses have no body and no Content-Length
      res_.erase(bhttp::field::content_length);
      res_.erase(bhttp::field::transfer_encoding);
    } else {
      res_.prepare_payload();
      if (method == bhttp::verb::head) res_.body().clear();  // keeps Content-Length
    }
    res_.keep_alive(keep_alive_);
    const Clock::time_point now = Clock::now();
    if (state_->observer) {
      state_->observer(RequestInfo{route_, method, status,
                                   std::chrono::duration<double>(now - request_start_).count()});
    }
    phase_ = Phase::kWriting;
    SetDeadline(now + state_->options.write_timeout);
    // The header is serialised here into a buffer reused by the session and written together
    // with the body in one gather write: Beast's generic serializer costs more CPU per request
    // than the rest of the request path.
    SerializeHeader(res_, head_);
    const std::array<net::const_buffer, 2> buffers{net::buffer(head_), net::buffer(res_.body())};
    Io([&](auto& stream) {
      net::async_write(stream, buffers,
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         self->OnWrite(ec);
                       });
    });
  }

  static void SerializeHeader(const Response& res, std::string& out) {
    out.clear();
    out += res.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    char digits[8];
    const auto status = std::to_chars(digits, digits + sizeof digits, res.result_int());
    out.append(digits, status.ptr);
    out += ' ';
    const beast::string_view reason = res.reason();
    out.append(reason.data(), reason.size());
    out += "\r\n";
    for (const auto& f : res) {
      const beast::string_view name = f.name_string();
      const beast::string_view value = f.value();
      out.append(name.data(), name.size());
      out += ": ";
      out.append(value.data(), value.size());
      out += "\r\n";
    }
    out += "\r\n";
  }

  void OnWrite(boost::system::error_code ec) {
    if (closed_) return;
    if (ec) {
      Close();
    } else if (!keep_alive_) {
      GracefulClose();
    } else {
      NextRequest();
    }
  }

  // --- streaming (stream.h) -------------------------------------------------------------------

  void StartStream() {
    auto stream = std::make_shared<SessionStream>(
        match_.stream_options->max_queued_bytes,
        [weak = weak_from_this(), executor = socket_.get_executor()] {
          net::post(executor, [weak] {
            if (auto self = weak.lock()) self->Pump();
          });
        });
    std::optional<Response> refused;
    try {
      refused = (*match_.stream)(parser_->get(), match_.params, stream);
    } catch (const std::exception&) {
      refused = MakeError(500, "internal", "internal error");
    }
    if (refused) {
      stream->End();
      SendResponse(std::move(*refused));
      return;
    }
    const Request& req = parser_->get();
    Response head(bhttp::status::ok, req.version());
    head.set(bhttp::field::server, state_->options.server_name);
    head.set(bhttp::field::date, HttpDate());
    head.set(bhttp::field::content_type, match_.stream_options->content_type);
    head.set(bhttp::field::cache_control, "no-cache");
    head.set(bhttp::field::connection, "close");
    head.set("X-Accel-Buffering", "no");  // proxies such as NGINX pass events on at once
    if (state_->observer) {
      state_->observer(RequestInfo{
          route_, req.method(), 200,
          std::chrono::duration<double>(Clock::now() - request_start_).count()});
    }
    phase_ = Phase::kStreaming;
    stream_ = std::move(stream);
    SerializeHeader(head, stream_out_);
    uncounted_ = stream_out_.size();
    lingered_ = 0;
    if (req.method() == bhttp::verb::head) stream_->Close();  // the head alone
    WriteStream();
    Discard();
  }

  // Pump writes what the stream has queued, or closes once it has ended and all is written.
  void Pump() {
    if (closed_ || !stream_ || stream_writing_ || phase_ != Phase::kStreaming) return;
    const bool ended = stream_->Take(stream_out_);
    if (!stream_out_.empty()) {
      WriteStream();
    } else if (ended) {
      if (stream_->Overflowed()) {
        Close();  // cut off: what it did not read is dropped with the connection
        return;
      }
      if (tls_) {
        // A read is pending (Discard), and an SSL stream cannot run a shutdown
        // beside it: everything has been written, so the connection just closes.
        Close();
        return;
      }
      // Graceful: FIN, then Discard waits for the client's (up to the linger time).
      phase_ = Phase::kClosing;
      boost::system::error_code ec;
      socket_.shutdown(Socket::shutdown_send, ec);
      if (ec) Close();
      SetDeadline(Clock::now() + state_->options.linger_timeout);
    } else {
      ClearDeadline();  // waiting for events: no deadline
    }
  }

  void WriteStream() {
    stream_writing_ = true;
    SetDeadline(Clock::now() + state_->options.write_timeout);
    Io([&](auto& stream) {
      net::async_write(stream, net::buffer(stream_out_),
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                         self->stream_writing_ = false;
                         if (self->closed_) return;
                         if (ec) {
                           self->Close();
                           return;
                         }
                         self->stream_->Written(n - std::exchange(self->uncounted_, 0));
                         self->stream_out_.clear();
                         self->Pump();
                       });
    });
  }

  // Discard reads and drops what the client sends, up to kMaxLinger bytes, until it closes (or
  // the deadline closes the connection). While streaming it notices the client going away (a
  // stream has no more requests); while closing it lets the client read the response before
  // the connection goes.
  void Discard() {
    Io([&](auto& stream) {
      stream.async_read_some(
          buffer_.prepare(kReadChunk),
          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (self->closed_) return;
            self->lingered_ += n;
            if (ec || self->lingered_ > kMaxLinger) {
              self->Close();
              return;
            }
            self->Discard();
          });
    });
  }

  // --- closing ---------------------------------------------------------------------------------

  // GracefulClose sends FIN, then reads and discards until the client closes too (or the
  // linger deadline), so that unread request bytes do not turn into a reset that would destroy
  // the response in flight.
  void GracefulClose() {
    phase_ = Phase::kClosing;
    SetDeadline(Clock::now() + state_->options.linger_timeout);
    if (tls_) {
      // close_notify, then wait (up to the linger time) for the client's or its FIN; what the
      // client still sends is discarded by the shutdown.
      tls_->async_shutdown([self = shared_from_this()](boost::system::error_code) {
        if (self->closed_) return;
        boost::system::error_code ignored;
        self->socket_.shutdown(Socket::shutdown_send, ignored);
        self->Close();
      });
      return;
    }
    boost::system::error_code ec;
    socket_.shutdown(Socket::shutdown_send, ec);
    if (ec) {
      Close();
      return;
    }
    buffer_.clear();
    Discard();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    if (stream_) stream_->End();
    boost::system::error_code ec;
    socket_.shutdown(Socket::shutdown_both, ec);
    socket_.close(ec);
    timer_.cancel();
  }

  Socket socket_;
  Timer timer_;
  std::shared_ptr<State> state_;
  std::shared_ptr<TlsContext> tls_context_;  // null: plain HTTP
  std::optional<TlsStream> tls_;             // over socket_, when tls_context_
  net::ip::address peer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Response res_;
  std::string head_;  // the serialised header of res_
  std::shared_ptr<SessionStream> stream_;  // an accepted stream
  std::string stream_out_;                 // the stream's bytes being written
  std::size_t uncounted_ = 0;              // of them, the head (not counted by the stream)
  bool stream_writing_ = false;
  Router::Match match_;
  std::optional<Response> early_;  // an error to send once the body has been discarded
  std::string_view route_ = kUnmatched;
  Phase phase_ = Phase::kIdle;
  bool header_done_ = false;
  bool close_after_ = false;
  bool keep_alive_ = false;
  bool closed_ = false;
  std::uint64_t seq_ = 0;
  std::size_t lingered_ = 0;
  Clock::time_point request_start_{};
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point armed_ = Clock::time_point::max();
  bool registered_ = false;
  std::list<std::weak_ptr<Session>>::iterator registration_;
};

// Listener accepts connections on its own strand.
class Server::Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(net::io_context& io, std::shared_ptr<State> state)
      : io_(io),
        acceptor_(Strand(io.get_executor())),
        retry_(acceptor_.get_executor()),
        state_(std::move(state)) {}

  Status Open(const tcp::endpoint& endpoint) {
    boost::system::error_code ec;
    const auto fail = [&](const char* what) {
      return Status(MakeError(Errc::kUnavailable, std::string(what) + " " +
                                                      endpoint.address().to_string() + ":" +
                                                      std::to_string(endpoint.port()) + ": " +
                                                      ec.message()));
    };
    if (acceptor_.open(endpoint.protocol(), ec)) return fail("open");
    if (acceptor_.set_option(net::socket_base::reuse_address(true), ec)) return fail("setsockopt");
    if (acceptor_.bind(endpoint, ec)) return fail("bind");
    if (acceptor_.listen(net::socket_base::max_listen_connections, ec)) return fail("listen");
    port_ = acceptor_.local_endpoint(ec).port();
    return Status::Ok();
  }

  std::uint16_t port() const { return port_; }

  void Accept() {
    acceptor_.async_accept(Strand(io_.get_executor()), [self = shared_from_this()](
                                                           boost::system::error_code ec,
                                                           Socket socket) {
      self->OnAccept(ec, std::move(socket));
    });
  }

  void Stop() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      boost::system::error_code ec;
      self->acceptor_.close(ec);
      self->retry_.cancel();
    });
  }

 private:
  void OnAccept(boost::system::error_code ec, Socket socket) {
    if (!acceptor_.is_open() || ec == net::error::operation_aborted) return;
    if (ec) {
      if (IsResourceExhaustion(ec)) {
        // Accepting again at once would spin: give closing connections time to free fds.
        retry_.expires_after(std::chrono::milliseconds(50));
        retry_.async_wait([self = shared_from_this()](boost::system::error_code wait_ec) {
          if (!wait_ec) self->Accept();
        });
      } else {
        Accept();
      }
      return;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const bool full = state_->active.load(std::memory_order_relaxed) >=
                      state_->options.max_connections;
    auto session = std::make_shared<Session>(std::move(socket), state_, state_->CurrentTls());
    if (full) {
      session->Reject();
    } else {
      session->Start();
    }
    Accept();
  }

  net::io_context& io_;
  net::basic_socket_acceptor<tcp, Strand> acceptor_;
  Timer retry_;
  std::shared_ptr<State> state_;
  std::uint16_t port_ = 0;
};

// --- Server --------------------------------------------------------------------------------------

Server::Server(net::io_context& io, ServerOptions options, std::shared_ptr<const Router> router,
               std::function<void(const RequestInfo&)> observer)
    : io_(io), state_(std::make_shared<State>()) {
  state_->options = std::move(options);
  state_->router = std::move(router);
  state_->observer = std::move(observer);
}

Server::~Server() { Stop(); }

Status Server::Start() {
  if (listener_) return MakeError(Errc::kInternal, "server already started");
  if (!state_->router) return MakeError(Errc::kInvalidArgument, "server has no router");
  boost::system::error_code ec;
  const auto address = net::ip::make_address(state_->options.address, ec);
  if (ec) {
    return MakeError(Errc::kInvalidArgument,
                     "invalid listen address '" + state_->options.address + "': " + ec.message());
  }
  if (state_->options.tls) {
    auto tls = LoadTls(*state_->options.tls);
    if (!tls) return tls.error();
    state_->tls = std::move(*tls);
    state_->tls_stamp = TlsStamp(*state_->options.tls);
    state_->tls_checked = Clock::now();
  }
  auto listener = std::make_shared<Listener>(io_, state_);
  if (Status s = listener->Open(tcp::endpoint(address, state_->options.port)); !s.ok()) return s;
  port_ = listener->port();
  listener_ = std::move(listener);
  listener_->Accept();
  return Status::Ok();
}

std::uint16_t Server::port() const { return port_; }

void Server::Stop() {
  if (state_->stopping.exchange(true)) return;
  if (listener_) listener_->Stop();
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(state_->mu);
    for (const auto& weak : state_->sessions) {
      if (auto s = weak.lock()) sessions.push_back(std::move(s));
    }
  }
  for (const auto& s : sessions) s->Stop();
}

std::size_t Server::ActiveConnections() const {
  return state_->active.load(std::memory_order_relaxed);
}

}  // namespace iot::http
