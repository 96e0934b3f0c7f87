// Tests of the HTTP server over real sockets on 127.0.0.1, port 0, with a Beast client.
//
// The server runs on two io_context threads, like in production. Clients use their own
// io_context and fail (instead of hanging) when an expected event does not happen within
// kClientTimeout; no test waits for time to pass except the timeout tests, which wait for the
// server to close a connection.
#include "http/server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iot::http {
namespace {

namespace net = boost::asio;
namespace bhttp = beast::http;
using bhttp::field;
using bhttp::verb;
using tcp = net::ip::tcp;
using ::testing::HasSubstr;

constexpr auto kClientTimeout = std::chrono::seconds(5);

// Client is a blocking HTTP client over one connection whose reads fail after kClientTimeout.
class Client {
 public:
  explicit Client(std::uint16_t port) : socket_(io_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  // Send writes raw bytes.
  void Send(std::string_view raw) { net::write(socket_, net::buffer(raw.data(), raw.size())); }

  // Send writes a request (Content-Length is set from the body).
  void Send(Request req) {
    req.prepare_payload();
    bhttp::write(socket_, req);
  }

  // Read reads one response; `head` for the response to a HEAD request.
  Response Read(bool head = false) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1 << 20);
    if (head) parser.skip(true);
    const auto ec = Await([&](auto handler) { bhttp::async_read(socket_, buffer_, parser, handler); });
    EXPECT_FALSE(ec) << "reading a response: " << ec.message();
    return parser.release();
  }

  // Exchange sends a request and reads its response.
  Response Exchange(verb method, std::string target, std::string body = {},
                    std::string content_type = "application/json") {
    Request req(method, target, 11);
    req.set(field::host, "localhost");
    if (!body.empty() || method == verb::post) req.set(field::content_type, content_type);
    req.body() = std::move(body);
    Send(std::move(req));
    return Read(method == verb::head);
  }

  // ReadHead reads an interim response up to and including its "\r\n\r\n" (nothing may
  // follow it yet).
  std::string ReadHead() {
    std::string head;
    const auto ec = Await([&](auto handler) {
      net::async_read_until(socket_, net::dynamic_buffer(head), "\r\n\r\n", handler);
    });
    EXPECT_FALSE(ec) << ec.message();
    return head;
  }

  // ReadUntil reads up to and including `delim` and returns it all (empty on timeout/close).
  std::string ReadUntil(std::string_view delim) {
    std::size_t n = 0;
    const auto ec = Await([&](auto handler) {
      net::async_read_until(socket_, net::dynamic_buffer(stream_), std::string(delim),
                            [&n, handler](boost::system::error_code e, std::size_t got) mutable {
                              n = got;
                              handler(e, got);
                            });
    });
    if (ec) return {};
    std::string out = stream_.substr(0, n);
    stream_.erase(0, n);
    return out;
  }

  // DrainUntilClosed reads and discards until the server closes the connection; false when it
  // stays open past kClientTimeout.
  bool DrainUntilClosed() {
    for (;;) {
      char chunk[65536];
      std::size_t n = 0;
      const auto ec = Await([&](auto handler) {
        socket_.async_read_some(net::buffer(chunk), [&n, handler](boost::system::error_code e,
                                                                   std::size_t got) mutable {
          n = got;
          handler(e, got);
        });
      });
      if (ec == net::error::eof || ec == net::error::connection_reset) return true;
      if (ec) return false;
    }
  }

  // SetReceiveBuffer makes the kernel hold little for this client (a slow client fills up fast).
  void SetReceiveBuffer(int bytes) { socket_.set_option(net::socket_base::receive_buffer_size(bytes)); }

  void Close() {
    boost::system::error_code ec;
    socket_.close(ec);
  }

  // ClosedByPeer reports whether the server closes the connection (end of stream or reset)
  // without sending anything more; false when data arrives or nothing happens in time.
  bool ClosedByPeer() {
    if (buffer_.size() > 0) return false;
    char byte;
    const auto ec = Await([&](auto handler) { socket_.async_read_some(net::buffer(&byte, 1), handler); });
    return ec == net::error::eof || ec == net::error::connection_reset;
  }

 private:
  template <typename Start>
  boost::system::error_code Await(Start start) {
    boost::system::error_code result = net::error::timed_out;
    bool done = false;
    io_.restart();
    start([&](boost::system::error_code ec, std::size_t) {
      result = ec;
      done = true;
    });
    io_.run_for(kClientTimeout);
    if (!done) {
      socket_.cancel();
      io_.restart();
      io_.run();
      result = net::error::timed_out;
    }
    return result;
  }

  net::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::string stream_;  // what ReadUntil read beyond its delimiter
};

// Held collects the Respond callbacks of requests that a test answers later, from its thread.
class Held {
 public:
  void Add(Respond r) {
    std::lock_guard lock(mu_);
    responds_.push_back(std::move(r));
    cv_.notify_all();
  }
  // WaitFor waits until `n` requests are held; false after kClientTimeout.
  bool WaitFor(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kClientTimeout, [&] { return responds_.size() >= n; });
  }
  // Release answers the oldest held request.
  void Release(Response res) {
    Respond r;
    {
      std::lock_guard lock(mu_);
      ASSERT_FALSE(responds_.empty());
      r = std::move(responds_.front());
      responds_.pop_front();
    }
    r(std::move(res));
  }
  void ReleaseAll() {
    std::deque<Respond> all;
    {
      std::lock_guard lock(mu_);
      all.swap(responds_);
    }
    for (auto& r : all) r(MakeJson(200, "{}"));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Respond> responds_;
};

struct Observed {
  std::string route;
  verb method;
  unsigned status;
};

class ServerTest : public ::testing::Test {
 protected:
  ServerTest() : router_(std::make_shared<Router>()) {
    RouteOptions json;
    json.max_body_bytes = 1024;
    json.content_types = {"application/json"};
    router_->Add(
        verb::post, "/echo",
        [](const Request& req, const PathParams&, Respond respond) {
          respond(MakeJson(200, req.body()));
        },
        json);
    router_->Add(verb::get, "/devices/{id}",
                 [](const Request&, const PathParams& params, Respond respond) {
                   respond(MakeJson(200, "{\"id\":\"" + std::string(params.Get("id")) + "\"}"));
                 });
    router_->Add(verb::get, "/hold", [this](const Request&, const PathParams&, Respond respond) {
      held_.Add(std::move(respond));
    });
    router_->Add(verb::get, "/thread", [this](const Request&, const PathParams&, Respond respond) {
      std::lock_guard lock(workers_mu_);
      workers_.emplace_back([respond = std::move(respond)] {
        respond(MakeJson(201, R"({"from":"worker"})"));
      });
    });
    router_->Add(verb::get, "/throw", [](const Request&, const PathParams&, Respond) {
      throw std::runtime_error("boom");
    });
    router_->Add(verb::get, "/twice", [](const Request&, const PathParams&, Respond respond) {
      respond(MakeJson(200, R"({"n":1})"));
      respond(MakeJson(200, R"({"n":2})"));
    });
    router_->Add(verb::delete_, "/devices/{id}",
                 [](const Request&, const PathParams&, Respond respond) {
                   Response res;
                   res.result(204);
                   respond(std::move(res));
                 });
  }

  ~ServerTest() override { StopAndJoin(); }

  void StartServer(ServerOptions options = {}) {
    options.address = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<Server>(io_, options, router_, [this](const RequestInfo& info) {
      std::lock_guard lock(observed_mu_);
      observed_.push_back({std::string(info.route), info.method, info.status});
    });
    const Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_NE(server_->port(), 0);
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }

  // StopAndJoin stops the server and waits for its io_context to run out of work, i.e. for
  // every connection to be closed.
  void StopAndJoin() {
    if (server_) server_->Stop();
    held_.ReleaseAll();
    for (auto& t : threads_) t.join();
    threads_.clear();
    std::lock_guard lock(workers_mu_);
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<Observed> observed() {
    std::lock_guard lock(observed_mu_);
    return observed_;
  }

  std::uint16_t port() const { return server_->port(); }

  std::shared_ptr<Router> router_;
  net::io_context io_;
  std::unique_ptr<Server> server_;
  std::vector<std::thread> threads_;
  Held held_;
  std::mutex workers_mu_;
  std::vector<std::thread> workers_;
  std::mutex observed_mu_;
  std::vector<Observed> observed_;
};

TEST_F(ServerTest, ServesSeveralRequestsOnOneKeepAliveConnection) {
  StartServer();
  Client client(port());
  for (int i = 0; i < 3; ++i) {
    Response res = client.Exchange(verb::get, "/devices/d" + std::to_string(i));
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "{\"id\":\"d" + std::to_string(i) + "\"}");
    EXPECT_TRUE(res.keep_alive());
    EXPECT_EQ(res[field::server], "iotd");
    EXPECT_THAT(std::string(res[field::date]), HasSubstr(" GMT"));
  }
  EXPECT_EQ(server_->ActiveConnections(), 1u);
}

TEST_F(ServerTest, AnswersPipelinedRequestsInOrder) {
  StartServer();
  Client client(port());
  client.Send(
      "GET /devices/1 HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 7\r\n\r\n{\"a\":2}"
      "GET /devices/3 HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /devices/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(client.Read().body(), R"({"id":"1"})");
  EXPECT_EQ(client.Read().body(), R"({"a":2})");
  EXPECT_EQ(client.Read().body(), R"({"id":"3"})");
  EXPECT_EQ(client.Read().result_int(), 404u);
  Response last = client.Read();
  EXPECT_EQ(last.body(), R"({"id":"5"})");
  EXPECT_FALSE(last.keep_alive());
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(ServerTest, Http10ClosesUnlessKeepAliveIsAsked) {
  StartServer();
  {
    Client client(port());
    client.Send("GET /devices/a HTTP/1.0\r\n\r\n");
    Response res = client.Read();
    EXPECT_EQ(res.version(), 10u);
    EXPECT_EQ(res.body(), R"({"id":"a"})");
    EXPECT_TRUE(client.ClosedByPeer());
  }
  Client client(port());
  client.Send("GET /devices/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  Response res = client.Read();
  EXPECT_EQ(res.version(), 10u);
  EXPECT_TRUE(res.keep_alive());
  client.Send("GET /devices/c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(client.Read().body(), R"({"id":"c"})");
}

TEST_F(ServerTest, RejectsLargeContentLengthWith413BeforeReadingTheBody) {
  StartServer();
  Client client(port());
  // Only the header is sent: the answer must not wait for the 100000 announced bytes.
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 100000\r\n\r\n");
  Response res = client.Read();
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_EQ(res[field::content_type], "application/json");
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"payload_too_large")"));
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(client.ClosedByPeer());
  EXPECT_EQ(observed().back().route, "/echo");
  EXPECT_EQ(observed().back().status, 413u);
}

TEST_F(ServerTest, RejectsChunkedBodyOverTheLimitWith413) {
  StartServer();
  Client client(port());
  const std::string chunk(600, 'x');
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n258\r\n" + chunk + "\r\n258\r\n" + chunk + "\r\n0\r\n\r\n");
  Response res = client.Read();
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"payload_too_large")"));
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(ServerTest, AcceptsChunkedBodyWithinTheLimit) {
  StartServer();
  Client client(port());
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n");
  Response res = client.Read();
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), R"({"a":1})");
  EXPECT_TRUE(res.keep_alive());
}

TEST_F(ServerTest, RejectsWrongContentTypeWith415AndKeepsTheConnection) {
  StartServer();
  Client client(port());
  Response res = client.Exchange(verb::post, "/echo", "a,b", "text/csv");
  EXPECT_EQ(res.result_int(), 415u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"unsupported_media_type")"));
  EXPECT_TRUE(res.keep_alive());
  res = client.Exchange(verb::post, "/echo", "{}", "Application/JSON; charset=utf-8");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "{}");
}

TEST_F(ServerTest, RejectsMissingContentTypeOnABodyWith415) {
  StartServer();
  Client client(port());
  client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(client.Read().result_int(), 415u);
}

TEST_F(ServerTest, RejectsOversizedHeaderWith431) {
  ServerOptions options;
  options.max_header_bytes = 4096;
  StartServer(options);
  Client client(port());
  client.Send("GET /devices/1 HTTP/1.1\r\nHost: x\r\nCookie: " + std::string(8000, 'c') +
              "\r\n\r\n");
  Response res = client.Read();
  EXPECT_EQ(res.result_int(), 431u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"header_too_large")"));
  EXPECT_TRUE(client.ClosedByPeer());
  EXPECT_EQ(observed().back().route, "unmatched");
}

TEST_F(ServerTest, AnswersMalformedRequestsWith400AndCloses) {
  StartServer();
  for (const char* raw : {"GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                          "GET /devices/1 HTTP/9.9\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n"}) {
    Client client(port());
    client.Send(raw);
    Response res = client.Read();
    EXPECT_EQ(res.result_int(), 400u) << raw;
    EXPECT_EQ(res[field::content_type], "application/json") << raw;
    EXPECT_THAT(res.body(), HasSubstr(R"("error":"bad_request")")) << raw;
    EXPECT_TRUE(client.ClosedByPeer()) << raw;
  }
}

TEST_F(ServerTest, AnswersUnknownRoutesWithJson404AndKeepsTheConnection) {
  StartServer();
  Client client(port());
  Response res = client.Exchange(verb::post, "/nope", R"({"x":1})");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"not_found")"));
  EXPECT_TRUE(res.keep_alive());
  res = client.Exchange(verb::put, "/devices/1");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[field::allow], "DELETE, GET, HEAD");
  EXPECT_EQ(client.Exchange(verb::get, "/devices/2").result_int(), 200u);
}

TEST_F(ServerTest, DeliversAResponseProducedOnAnotherThread) {
  StartServer();
  Client a(port());
  Client b(port());
  a.Send("GET /thread HTTP/1.1\r\nHost: x\r\n\r\n");
  b.Send("GET /thread HTTP/1.1\r\nHost: x\r\n\r\n");
  for (Client* c : {&a, &b}) {
    Response res = c->Read();
    EXPECT_EQ(res.result_int(), 201u);
    EXPECT_EQ(res.body(), R"({"from":"worker"})");
  }
  EXPECT_EQ(a.Exchange(verb::get, "/devices/x").result_int(), 200u);
}

TEST_F(ServerTest, WaitsForALateResponseBeforeTheNextPipelinedOne) {
  StartServer();
  Client client(port());
  client.Send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /devices/after HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(held_.WaitFor(1));
  held_.Release(MakeJson(200, R"({"held":true})"));
  EXPECT_EQ(client.Read().body(), R"({"held":true})");
  EXPECT_EQ(client.Read().body(), R"({"id":"after"})");
}

TEST_F(ServerTest, AnswersWith500WhenTheHandlerThrows) {
  StartServer();
  Client client(port());
  Response res = client.Exchange(verb::get, "/throw");
  EXPECT_EQ(res.result_int(), 500u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"internal")"));
  EXPECT_EQ(client.Exchange(verb::get, "/devices/1").result_int(), 200u);
}

TEST_F(ServerTest, IgnoresASecondResponseToTheSameRequest) {
  StartServer();
  Client client(port());
  EXPECT_EQ(client.Exchange(verb::get, "/twice").body(), R"({"n":1})");
  EXPECT_EQ(client.Exchange(verb::get, "/devices/1").body(), R"({"id":"1"})");
}

TEST_F(ServerTest, HeadGetsTheHeadersOfGetWithoutABody) {
  StartServer();
  Client client(port());
  Response res = client.Exchange(verb::head, "/devices/abc");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[field::content_length], std::to_string(std::string(R"({"id":"abc"})").size()));
  EXPECT_EQ(res.body(), "");
  // The connection is still in sync: no stray body bytes precede the next response.
  EXPECT_EQ(client.Exchange(verb::get, "/devices/x").body(), R"({"id":"x"})");
}

TEST_F(ServerTest, NoContentResponseHasNoContentLength) {
  StartServer();
  Client client(port());
  client.Send("DELETE /devices/1 HTTP/1.1\r\nHost: x\r\n\r\n");
  Response res = client.Read(/*head=*/true);
  EXPECT_EQ(res.result_int(), 204u);
  EXPECT_EQ(res.count(field::content_length), 0u);
  EXPECT_EQ(client.Exchange(verb::get, "/devices/x").body(), R"({"id":"x"})");
}

TEST_F(ServerTest, SendsContinueBeforeReadingAnExpectedBody) {
  StartServer();
  Client client(port());
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(client.ReadHead(), "HTTP/1.1 100 Continue\r\n\r\n");
  client.Send("{}");
  Response res = client.Read();
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "{}");
}

TEST_F(ServerTest, ReportsEachResponseToTheObserverWithItsRoute) {
  StartServer();
  Client client(port());
  client.Exchange(verb::get, "/devices/1");
  client.Exchange(verb::get, "/nope");
  client.Exchange(verb::post, "/echo", "x", "text/plain");
  const auto seen = observed();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].route, "/devices/{id}");
  EXPECT_EQ(seen[0].method, verb::get);
  EXPECT_EQ(seen[0].status, 200u);
  EXPECT_EQ(seen[1].route, "unmatched");
  EXPECT_EQ(seen[1].status, 404u);
  EXPECT_EQ(seen[2].route, "/echo");
  EXPECT_EQ(seen[2].status, 415u);
}

TEST_F(ServerTest, StopLetsTheRequestInFlightFinishAndClosesIdleConnections) {
  StartServer();
  {
    Client idle(port());
    EXPECT_EQ(idle.Exchange(verb::get, "/devices/1").result_int(), 200u);
    Client busy(port());
    busy.Send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(held_.WaitFor(1));

    server_->Stop();
    EXPECT_TRUE(idle.ClosedByPeer());
    held_.Release(MakeJson(200, R"({"late":true})"));
    Response res = busy.Read();
    EXPECT_EQ(res.body(), R"({"late":true})");
    EXPECT_FALSE(res.keep_alive());
    EXPECT_TRUE(busy.ClosedByPeer());
  }  // the clients close their ends, which ends the server's lingering close at once

  // Every connection is gone and the io_context ran out of work.
  for (auto& t : threads_) t.join();
  threads_.clear();
  EXPECT_EQ(server_->ActiveConnections(), 0u);
  net::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port()), ec);
  EXPECT_EQ(ec, net::error::connection_refused);
}

TEST_F(ServerTest, ServesManyConcurrentConnections) {
  StartServer();
  constexpr int kConnections = 200;
  net::io_context io;
  std::vector<tcp::socket> sockets;
  for (int i = 0; i < kConnections; ++i) {
    sockets.emplace_back(io).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port()));
  }
  for (int i = 0; i < kConnections; ++i) {
    const std::string req = "GET /devices/" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
    net::write(sockets[i], net::buffer(req));
  }
  std::vector<beast::flat_buffer> buffers(kConnections);
  std::vector<Response> responses(kConnections);
  int done = 0;
  for (int i = 0; i < kConnections; ++i) {
    bhttp::async_read(sockets[i], buffers[i], responses[i],
                      [&done](boost::system::error_code ec, std::size_t) {
                        EXPECT_FALSE(ec) << ec.message();
                        ++done;
                      });
  }
  io.run_for(kClientTimeout);
  ASSERT_EQ(done, kConnections);
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(responses[i].body(), "{\"id\":\"" + std::to_string(i) + "\"}");
  }
  EXPECT_EQ(server_->ActiveConnections(), static_cast<std::size_t>(kConnections));
}

TEST_F(ServerTest, RejectsConnectionsBeyondTheLimitWith503) {
  ServerOptions options;
  options.max_connections = 2;
  StartServer(options);
  Client a(port());
  Client b(port());
  EXPECT_EQ(a.Exchange(verb::get, "/devices/a").result_int(), 200u);
  EXPECT_EQ(b.Exchange(verb::get, "/devices/b").result_int(), 200u);
  Client c(port());
  c.Send("GET /devices/c HTTP/1.1\r\nHost: x\r\n\r\n");
  Response res = c.Read();
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"overloaded")"));
  EXPECT_EQ(res[field::retry_after], "1");
  EXPECT_TRUE(c.ClosedByPeer());
}

TEST_F(ServerTest, ClosesARequestThatStallsPastTheReadTimeout) {
  ServerOptions options;
  options.read_timeout = std::chrono::milliseconds(100);
  options.idle_timeout = std::chrono::minutes(10);  // so only the read timeout can close it
  StartServer(options);
  Client client(port());
  client.Send("GET /devices/1 HTTP/1.1\r\nHo");
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(ServerTest, ClosesAnIdleKeepAliveConnectionAfterTheIdleTimeout) {
  ServerOptions options;
  options.idle_timeout = std::chrono::milliseconds(100);
  options.read_timeout = std::chrono::minutes(10);
  StartServer(options);
  Client client(port());
  EXPECT_EQ(client.Exchange(verb::get, "/devices/1").result_int(), 200u);
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(ServerTest, StartFailsWithUnavailableWhenThePortIsTaken) {
  StartServer();
  net::io_context io;
  ServerOptions options;
  options.address = "127.0.0.1";
  options.port = port();
  Server second(io, options, router_);
  const Status s = second.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kUnavailable);
}

TEST_F(ServerTest, StartFailsWithInvalidArgumentForABadAddress) {
  net::io_context io;
  ServerOptions options;
  options.address = "not-an-address";
  Server server(io, options, router_);
  const Status s = server.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kInvalidArgument);
}

// ---- streaming responses (stream.h) ------------------------------------------------------

// Streams collects the writers of accepted streams.
class Streams {
 public:
  void Add(std::shared_ptr<StreamWriter> w) {
    std::lock_guard lock(mu_);
    writers_.push_back(std::move(w));
    cv_.notify_all();
  }
  std::shared_ptr<StreamWriter> WaitForOne() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, kClientTimeout, [&] { return !writers_.empty(); });
    return writers_.empty() ? nullptr : writers_.back();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<StreamWriter>> writers_;
};

// Eventually polls `fn` until it holds or kClientTimeout passes.
template <typename F>
bool Eventually(F fn) {
  const auto deadline = std::chrono::steady_clock::now() + kClientTimeout;
  while (!fn()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class StreamTest : public ServerTest {
 protected:
  void AddStreams(std::size_t max_queued = 1 << 20) {
    router_->AddStream(
        verb::get, "/events",
        [this](const Request& req, const PathParams&,
               std::shared_ptr<StreamWriter> w) -> std::optional<Response> {
          if (req.target().find("refuse") != beast::string_view::npos) {
            return MakeError(503, "overloaded", "too many streams");
          }
          streams_.Add(std::move(w));
          return std::nullopt;
        },
        StreamOptions{.content_type = "text/event-stream", .max_queued_bytes = max_queued});
  }
  Streams streams_;
};

TEST_F(StreamTest, SendsTheHeadAtOnceThenWhatIsWrittenUntilClosed) {
  AddStreams();
  StartServer();
  Client c(port());
  c.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string head = c.ReadUntil("\r\n\r\n");
  EXPECT_THAT(head, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(head, HasSubstr("Content-Type: text/event-stream\r\n"));
  EXPECT_THAT(head, HasSubstr("Cache-Control: no-cache\r\n"));
  EXPECT_THAT(head, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("Content-Length")));
  auto w = streams_.WaitForOne();
  ASSERT_NE(w, nullptr);
  std::thread writer([w] {
    EXPECT_TRUE(w->Write("data: 1\n\n"));
    EXPECT_TRUE(w->Write("data: 2\n\n"));
  });
  writer.join();
  EXPECT_EQ(c.ReadUntil("data: 1\n\n"), "data: 1\n\n");
  EXPECT_EQ(c.ReadUntil("\n\n"), "data: 2\n\n");
  w->Close();
  EXPECT_FALSE(w->Open());
  EXPECT_FALSE(w->Write("data: 3\n\n"));
  EXPECT_TRUE(c.ClosedByPeer());
  ASSERT_EQ(observed().size(), 1u);
  EXPECT_EQ(observed()[0].route, "/events");
  EXPECT_EQ(observed()[0].status, 200u);
}

TEST_F(StreamTest, ARefusedStreamIsAnOrdinaryResponse) {
  AddStreams();
  StartServer();
  Client c(port());
  Response res = c.Exchange(verb::get, "/events?refuse=1");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_THAT(res.body(), HasSubstr("overloaded"));
  EXPECT_TRUE(res.keep_alive());
  EXPECT_EQ(c.Exchange(verb::get, "/devices/7").result_int(), 200u);
}

TEST_F(StreamTest, AClientThatGoesAwayEndsItsStream) {
  AddStreams();
  StartServer();
  Client c(port());
  c.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  c.ReadUntil("\r\n\r\n");
  auto w = streams_.WaitForOne();
  ASSERT_NE(w, nullptr);
  c.Close();
  EXPECT_TRUE(Eventually([&] { return !w->Open(); }));
  EXPECT_FALSE(w->Write("data: late\n\n"));
  EXPECT_FALSE(w->Overflowed());
  EXPECT_TRUE(Eventually([&] { return server_->ActiveConnections() == 0; }));
}

TEST_F(StreamTest, AClientThatDoesNotReadIsCutOffAtTheQueueBoundWhileOthersGoOn) {
  constexpr std::size_t kBound = 64 * 1024;
  AddStreams(kBound);
  StartServer();
  Client stalled(port());
  stalled.SetReceiveBuffer(4096);
  stalled.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  auto slow = streams_.WaitForOne();
  ASSERT_NE(slow, nullptr);
  Client reader(port());
  reader.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  reader.ReadUntil("\r\n\r\n");
  std::shared_ptr<StreamWriter> fast;
  ASSERT_TRUE(Eventually([&] { return (fast = streams_.WaitForOne()) != slow; }));

  // Write until the stalled stream refuses: the kernel's buffers take some, then the queue
  // fills up to the bound. It must end long before 64 MiB.
  const std::string event = "data: " + std::string(1000, 'x') + "\n\n";
  std::size_t written = 0;
  while (slow->Write(event)) {
    written += event.size();
    ASSERT_LT(written, 64u << 20) << "a stalled client was never cut off";
  }
  EXPECT_TRUE(slow->Overflowed());
  EXPECT_FALSE(slow->Open());
  EXPECT_TRUE(stalled.DrainUntilClosed());

  // The other client was not held up and still gets events.
  EXPECT_TRUE(fast->Open());
  EXPECT_TRUE(fast->Write("data: still here\n\n"));
  EXPECT_FALSE(reader.ReadUntil("data: still here\n\n").empty());
}

TEST_F(StreamTest, StopEndsEveryStream) {
  AddStreams();
  StartServer();
  Client c(port());
  c.Send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  c.ReadUntil("\r\n\r\n");
  auto w = streams_.WaitForOne();
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->Write("data: before\n\n"));
  server_->Stop();
  EXPECT_EQ(c.ReadUntil("\n\n"), "data: before\n\n");
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_TRUE(Eventually([&] { return !w->Open(); }));
}

}  // namespace
}  // namespace iot::http
