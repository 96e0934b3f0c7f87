#include "unit/loadgen/test_http_server.h"

#include <algorithm>
#include <utility>  // before Boost: boost/asio/awaitable.hpp (1.74) uses std::exchange unincluded

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace iot::loadgen::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

}  // namespace

struct TestHttpServer::Impl {
  explicit Impl(TestHttpServer& s)
      : server(s), acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}

  asio::awaitable<void> Accept() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      int id = 0;
      {
        std::lock_guard lock(server.mu_);
        id = ++server.accepted_;
        server.max_open_ = std::max(server.max_open_, ++server.open_);
      }
      asio::co_spawn(ioc, Serve(std::move(socket), id), asio::detached);
    }
  }

  asio::awaitable<void> Serve(tcp::socket socket, int id) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      beast::error_code ec;
      http::request<http::string_body> request;
      co_await http::async_read(stream, buffer, request, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      ReceivedRequest received{std::string(request.method_string()), std::string(request.target()),
                               std::string(request[http::field::host]),
                               std::string(request[http::field::content_type]), request.body(), id,
                               std::string(request[http::field::authorization])};
      std::uint64_t index = 0;
      {
        std::lock_guard lock(server.mu_);
        index = server.requests_.size();
        server.requests_.push_back(received);
      }
      server.arrived_.notify_all();
      const Reply reply = server.handler_ ? server.handler_(index, received) : Reply{};
      if (reply.delay.count() > 0) {
        asio::steady_timer timer(ioc, reply.delay);
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (reply.action == Action::kDrop) {
        std::lock_guard lock(server.mu_);
        ++server.drops_;
        break;
      }
      http::response<http::string_body> response{static_cast<http::status>(reply.status),
                                                 request.version()};
      response.set(http::field::content_type, "application/json");
      response.body() = R"({"status":"queued"})";
      response.keep_alive(request.keep_alive() && reply.action == Action::kRespond);
      response.prepare_payload();
      co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      {
        std::lock_guard lock(server.mu_);
        ++server.replies_[reply.status];
      }
      if (!response.keep_alive()) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
    std::lock_guard lock(server.mu_);
    --server.open_;
  }

  TestHttpServer& server;
  asio::io_context ioc;
  tcp::acceptor acceptor;
};

TestHttpServer::TestHttpServer(Handler handler)
    : handler_(std::move(handler)), impl_(std::make_unique<Impl>(*this)) {
  port_ = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->ioc, impl_->Accept(), asio::detached);
  thread_ = std::thread([this] { impl_->ioc.run(); });
}

TestHttpServer::~TestHttpServer() {
  impl_->ioc.stop();
  thread_.join();
}

std::string TestHttpServer::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::vector<ReceivedRequest> TestHttpServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

std::uint64_t TestHttpServer::request_count() const {
  std::lock_guard lock(mu_);
  return requests_.size();
}

std::map<unsigned, std::uint64_t> TestHttpServer::replies() const {
  std::lock_guard lock(mu_);
  return replies_;
}

std::uint64_t TestHttpServer::drops() const {
  std::lock_guard lock(mu_);
  return drops_;
}

int TestHttpServer::connections_accepted() const {
  std::lock_guard lock(mu_);
  return accepted_;
}

int TestHttpServer::max_open_connections() const {
  std::lock_guard lock(mu_);
  return max_open_;
}

bool TestHttpServer::WaitForRequests(std::uint64_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return arrived_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

}  // namespace iot::loadgen::testing
