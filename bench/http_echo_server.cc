// http_echo_server: a minimal iot::http server for load tests with wrk (see bench/http_bench.md).
//
// POST /ingest (application/json, body <= 64 KiB) answers 202 {"status":"accepted"}; GET /health
// answers 200. It prints "listening on <port>" and runs until SIGINT/SIGTERM.
//
//   http_echo_server [port (default 8080; 0 = ephemeral)] [threads (default 2)]
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "http/server.h"

int main(int argc, char** argv) {
  namespace http = iot::http;
  using boost::beast::http::verb;
  const auto port = static_cast<std::uint16_t>(argc > 1 ? std::atoi(argv[1]) : 8080);
  const int threads = argc > 2 ? std::max(1, std::atoi(argv[2])) : 2;

  auto router = std::make_shared<http::Router>();
  http::RouteOptions json;
  json.content_types = {"application/json"};
  router->Add(
      verb::post, "/ingest",
      [](const http::Request&, const http::PathParams&, http::Respond respond) {
        respond(http::MakeJson(202, R"({"status":"accepted"})"));
      },
      json);
  router->Add(verb::get, "/health",
              [](const http::Request&, const http::PathParams&, http::Respond respond) {
                respond(http::MakeJson(200, R"({"status":"ok"})"));
              });

  boost::asio::io_context io(threads);
  http::ServerOptions options;
  options.port = port;
  http::Server server(io, options, router);
  if (auto s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "start: %s\n", s.error().message.c_str());
    return 1;
  }
  std::printf("listening on %u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&server](const boost::system::error_code&, int) { server.Stop(); });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
}
