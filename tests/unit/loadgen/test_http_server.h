// test_http_server.h: a tiny HTTP/1.1 server on 127.0.0.1 (port 0) for the load generator's
// tests. It records every request and answers as a test-supplied handler says: a status, an
// optional delay, and whether to keep the connection, close it after the answer or drop it
// without answering.
//
// Lifecycle: listening when constructed, stopped and joined when destroyed. Threading: serves on
// one internal thread; every accessor is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iot::loadgen::testing {

struct ReceivedRequest {
  std::string method;
  std::string target;
  std::string host;
  std::string content_type;
  std::string body;
  int connection = 0;  // 1, 2, ... in accept order
  std::string authorization = {};  // the Authorization header (LoadgenOptions::token)
};

enum class Action {
  kRespond,          // answer and keep the connection open
  kRespondAndClose,  // answer with "Connection: close" and close
  kDrop,             // close the connection without answering
};

struct Reply {
  unsigned status = 202;
  Action action = Action::kRespond;
  std::chrono::milliseconds delay{0};  // wait this long before answering
};

class TestHttpServer {
 public:
  // Handler decides the reply to request number `index` (0-based, in arrival order).
  using Handler = std::function<Reply(std::uint64_t index, const ReceivedRequest&)>;

  // TestHttpServer starts listening; without a handler every request gets 202.
  explicit TestHttpServer(Handler handler = {});
  ~TestHttpServer();
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  std::uint16_t port() const { return port_; }
  // base_url returns "http://127.0.0.1:<port>".
  std::string base_url() const;

  std::vector<ReceivedRequest> requests() const;
  std::uint64_t request_count() const;
  // replies returns how many answers of each status were written completely.
  std::map<unsigned, std::uint64_t> replies() const;
  std::uint64_t drops() const;
  int connections_accepted() const;
  int max_open_connections() const;

  // WaitForRequests blocks until `n` requests arrived or `timeout` passed; true when they did.
  bool WaitForRequests(std::uint64_t n, std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  friend struct Impl;

  Handler handler_;
  std::uint16_t port_ = 0;
  mutable std::mutex mu_;
  mutable std::condition_variable arrived_;
  std::vector<ReceivedRequest> requests_;
  std::map<unsigned, std::uint64_t> replies_;
  std::uint64_t drops_ = 0;
  int accepted_ = 0;
  int open_ = 0;
  int max_open_ = 0;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace iot::loadgen::testing
