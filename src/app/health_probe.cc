#include "app/health_probe.h"

#include <cstdio>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <fmt/format.h>

namespace iot::app {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr unsigned kHttpVersion11 = 11;

}  // namespace

Result<HealthTarget> ParseHealthUrl(const std::string& url) {
  HealthTarget t;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
    t.tls = true;
  } else {
    return MakeError(Errc::kInvalidArgument, "not an http:// or https:// URL: " + url);
  }
  const std::size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  t.target = slash == std::string::npos ? "/health" : rest.substr(slash);
  const std::size_t colon = authority.rfind(':');
  if (colon == std::string::npos || authority.back() == ']') {
    t.host = authority;
    t.port = t.tls ? "443" : "80";
  } else {
    t.host = authority.substr(0, colon);
    t.port = authority.substr(colon + 1);
  }
  if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') {
    t.host = t.host.substr(1, t.host.size() - 2);
  }
  if (t.host.empty() || t.port.empty() ||
      t.port.find_first_not_of("0123456789") != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "not host:port in " + url);
  }
  return t;
}

ProbeResult Probe(const HealthTarget& t, std::chrono::milliseconds timeout) {
  // Asynchronous calls: beast::tcp_stream's deadline bounds only those, and one deadline
  // covers the whole exchange (connect, handshake, request, response).
  asio::io_context io;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.set_verify_mode(asio::ssl::verify_none);  // see ParseHealthUrl
  beast::ssl_stream<beast::tcp_stream> secure(io, tls);
  beast::tcp_stream& stream = beast::get_lowest_layer(secure);
  beast::flat_buffer buffer;
  http::request<http::empty_body> req{http::verb::get, t.target, kHttpVersion11};
  req.set(http::field::host, t.host + ":" + t.port);
  req.set(http::field::user_agent, "iotd-health");
  req.set(http::field::connection, "close");
  http::response<http::string_body> res;
  ProbeResult result{ProbeOutcome::kUnhealthy, ""};
  auto fail = [&result](const beast::error_code& ec) {
    const bool absent = ec == asio::error::connection_refused;
    result = {absent ? ProbeOutcome::kNotListening : ProbeOutcome::kUnhealthy,
              ec == beast::error::timeout ? "no answer in time" : ec.message()};
  };
  tcp::resolver resolver(io);
  beast::error_code resolve_error;
  const auto endpoints = resolver.resolve(t.host, t.port, resolve_error);
  if (resolve_error) {
    fail(resolve_error);
    return result;
  }
  stream.expires_after(timeout);
  // exchange writes the request and reads the response over `s` (the TLS or the TCP stream).
  auto exchange = [&](auto& s) {
    http::async_write(s, req, [&](const beast::error_code& write_error, std::size_t) {
      if (write_error) return fail(write_error);
      http::async_read(s, buffer, res, [&](const beast::error_code& read_error, std::size_t) {
        if (read_error) return fail(read_error);
        result.detail = fmt::format("{} {}", res.result_int(), std::string(res.reason()));
        result.outcome =
            res.result() == http::status::ok ? ProbeOutcome::kHealthy : ProbeOutcome::kUnhealthy;
      });
    });
  };
  stream.async_connect(endpoints, [&](const beast::error_code& connect_error, const tcp::endpoint&) {
    if (connect_error) return fail(connect_error);
    if (!t.tls) return exchange(stream);
    secure.async_handshake(asio::ssl::stream_base::client, [&](const beast::error_code& ec) {
      if (ec) return fail(ec);
      exchange(secure);
    });
  });
  io.run();
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return result;
}

int RunHealth(const std::vector<std::string>& urls, std::chrono::milliseconds timeout) {
  int answered = 0;
  int unhealthy = 0;
  for (const auto& url : urls) {
    auto target = ParseHealthUrl(url);
    if (!target) {
      std::fprintf(stderr, "iotd health: %s\n", target.error().message.c_str());
      return 2;
    }
    const ProbeResult r = Probe(*target, timeout);
    const char* verdict = r.outcome == ProbeOutcome::kHealthy      ? "healthy"
                          : r.outcome == ProbeOutcome::kNotListening ? "not listening"
                                                                     : "UNHEALTHY";
    std::printf("%s: %s (%s)\n", url.c_str(), verdict, r.detail.c_str());
    if (r.outcome != ProbeOutcome::kNotListening) ++answered;
    if (r.outcome == ProbeOutcome::kUnhealthy) ++unhealthy;
  }
  if (answered == 0) std::printf("no iotd listener answered\n");
  return answered > 0 && unhealthy == 0 ? 0 : 1;
}

}  // namespace iot::app
