// server.h: the HTTP/1.1 server (Boost.Beast): a listener and one session per connection.
//
// A session reads a request header, looks the route up, enforces the route's limits (413 body
// too large, 415 media type) and calls the handler, which answers through `Respond` from any
// thread, possibly later. Keep-alive, HTTP/1.0, pipelining (answered in order, one at a time)
// and "Expect: 100-continue" are supported. Every error the server produces itself is JSON
// (see response.h): 400 malformed request, 404/405 from the router, 413, 415, 431 header too
// large, 500 when a handler throws, 503 beyond max_connections. A connection that exceeds the
// idle or read timeout is closed without a response.
//
//   boost::asio::io_context io;
//   Server server(io, options, router, [&](const RequestInfo& i) { probe.Record(i); });
//   if (Status s = server.Start(); !s.ok()) return s;
//   std::thread t([&] { io.run(); });
//   io.run();                       // any number of threads
//   ...
//   server.Stop();                  // from a signal handler's completion, say: io.run() returns
//                                   // once the last connection has closed
//
// Threading: each connection runs on its own strand of `io`, and its handler is called there.
// Start, Stop, port and ActiveConnections may be called from any thread.
// Lifecycle: connections share ownership of the router, the options and the observer, so the
// Server may be destroyed (which calls Stop) while they finish. The io_context must outlive
// the Server and every connection, i.e. keep running until its run() returns. After Stop, a
// connection that had to be closed by the server lingers up to `linger_timeout` while the
// client has not closed its end.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "http/response.h"
#include "http/router.h"

namespace iot::http {

// TlsOptions makes the server speak HTTPS only (TLS 1.2 and 1.3, OpenSSL's default ciphers).
// The files are read at Start, which fails naming a file that is missing or a key that does not
// match the certificate, and read again for new connections once either file changes (checked
// at most every `reload_check`), so a renewed certificate needs no restart; connections already
// open keep theirs. A pair that fails to load then is reported and the previous one is kept.
struct TlsOptions {
  std::string cert_file;  // PEM: the certificate, then any intermediates
  std::string key_file;   // PEM: its private key (unencrypted)
  std::chrono::milliseconds reload_check{5000};
};

// Admit decides, after routing and before the body is read, whether a request may go on:
// nullopt lets it, a response is sent instead (e.g. 429 with Retry-After). `peer` is the
// connection's remote address; `request` has its header only. Called on the connection's strand,
// concurrently for different connections: it must be thread-safe.
using Admit = std::function<std::optional<Response>(
    const Request& request, const boost::asio::ip::address& peer, std::string_view route)>;

struct ServerOptions {
  // address and port to listen on; port 0 picks an ephemeral port (see Server::port()).
  std::string address = "0.0.0.0";
  std::uint16_t port = 0;
  // idle_timeout closes a keep-alive connection that sends no new request for this long.
  std::chrono::milliseconds idle_timeout{60000};
  // read_timeout bounds the time from the first byte of a request to its last byte.
  std::chrono::milliseconds read_timeout{30000};
  // write_timeout bounds the time to write one response (a client that does not read).
  std::chrono::milliseconds write_timeout{30000};
  // linger_timeout bounds how long a closing connection keeps reading (and discarding) what
  // the client still sends, so that the client receives the response instead of a reset.
  std::chrono::milliseconds linger_timeout{2000};
  // max_connections: connections beyond it get 503 and are closed.
  std::size_t max_connections = 10000;
  // max_header_bytes bounds the request line and headers; larger gets 431.
  std::uint32_t max_header_bytes = 16 * 1024;
  // server_name is the value of the Server header.
  std::string server_name = "iotd";
  // tls: serve HTTPS (see TlsOptions); nullopt: plain HTTP.
  std::optional<TlsOptions> tls;
  // admit: an admission check for every routed request (see Admit); empty: none.
  Admit admit;
  // warn receives problems the server gets over by itself (a certificate that failed to reload).
  std::function<void(const std::string&)> warn;
};

// RequestInfo describes one response, for metrics and access logs.
struct RequestInfo {
  std::string_view route;      // the matched pattern, or "unmatched"
  beast::http::verb method;    // verb::unknown when the request line could not be parsed
  unsigned status;
  double seconds;              // from the first byte of the request to the response
};

// Server accepts connections and runs sessions; see the file comment.
class Server {
 public:
  // Server prepares a server; nothing happens until Start. `observer` (optional) is called
  // once per response, on the connection's strand, just before the response is written; it
  // must be thread-safe (connections run concurrently).
  Server(boost::asio::io_context& io, ServerOptions options, std::shared_ptr<const Router> router,
         std::function<void(const RequestInfo&)> observer = {});
  // ~Server calls Stop.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Start binds and listens (port 0: an ephemeral port) and starts accepting on `io`. Returns
  // kInvalidArgument for a bad address or a TLS certificate/key that cannot be loaded, and
  // kUnavailable when the address cannot be bound (e.g. the port is taken). Call once.
  Status Start();

  // port returns the bound port (after a successful Start), 0 before.
  std::uint16_t port() const;

  // Stop shuts down gracefully and returns at once: it stops accepting, closes idle
  // keep-alive connections, and lets a request in flight (being read, handled or written) get
  // its response with "Connection: close" before its connection closes. Idempotent.
  void Stop();

  // ActiveConnections returns the number of open connections.
  std::size_t ActiveConnections() const;

 private:
  struct State;
  class Session;
  class Listener;
  boost::asio::io_context& io_;
  std::shared_ptr<State> state_;
  std::shared_ptr<Listener> listener_;
  std::uint16_t port_ = 0;
};

}  // namespace iot::http
