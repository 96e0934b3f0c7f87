// ferretdb.h: a real MongoDB wire-protocol server (FerretDB, SQLite backend) for tests.
//
// One server per test binary, shared by every test, each test in a database of its own:
//
//   // at namespace scope in one file of the test binary:
//   const auto* const kFerretDb = ::iot::testing::FerretDbEnvironment::Register();
//
//   TEST(MongoStore, Something) {
//     auto store = Open(FerretDbEnvironment::Url(), FerretDbEnvironment::UniqueDatabaseName());
//
// A server of a test's own, for fault tests (stop the server, check the client copes, restart it
// on the same port with the same data):
//
//   auto server = FerretDbServer::Start();
//   ASSERT_TRUE(server.ok()) << server.error().message;
//   IOT_ASSERT_OK((*server)->Stop());
//   IOT_ASSERT_OK((*server)->Restart());
//
// The binary is $FERRETDB, else the path `scripts/ferretdb.sh path` printed when CMake configured
// the build. A missing binary is an error naming `scripts/ferretdb.sh build`: the tests fail,
// they never skip.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <sys/types.h>

#include "core/result.h"

namespace iot::testing {

// FerretDbServer is one FerretDB process listening on 127.0.0.1 with a fresh data directory.
//
// Lifecycle: Start() launches it and waits (at most 10 s) until it prints its URL; Stop() ends
// it (SIGTERM, then SIGKILL after 5 s) and keeps the data; Restart() launches it again on the
// same port with the same data; the destructor stops it and removes the data directory. The
// process also dies with the thread that started it (PR_SET_PDEATHSIG), so a crashed test leaves
// no server behind.
//
// Threading: not thread-safe; call Start, Stop, Restart and the destructor from one thread (the
// one that runs the tests).
class FerretDbServer {
 public:
  // Start launches a server on a free port. Errors: kNotFound when the binary is missing,
  // kUnavailable when it does not come up in time (the message has its log's tail).
  static Result<std::unique_ptr<FerretDbServer>> Start();

  ~FerretDbServer();
  FerretDbServer(const FerretDbServer&) = delete;
  FerretDbServer& operator=(const FerretDbServer&) = delete;

  // Url is the server's connection string, `mongodb://127.0.0.1:PORT/`.
  const std::string& Url() const { return url_; }
  uint16_t port() const { return port_; }
  // pid is the running process's id, or -1 while stopped.
  pid_t pid() const { return pid_; }
  // data_dir is where the server keeps its SQLite files.
  const std::string& data_dir() const { return data_dir_; }
  bool running() const { return pid_ > 0; }

  // Stop ends the server and waits for it to exit; the data and port stay reserved for Restart.
  // Stopping a stopped server is a no-op.
  Status Stop();
  // Restart stops the server if it runs, then launches it on the same port and data directory.
  // Fails with kUnavailable if the port was taken meanwhile or the server does not come up.
  Status Restart();

  // BinaryPath is the FerretDB binary these servers run: $FERRETDB, else the built-in path.
  static std::string BinaryPath();

 private:
  FerretDbServer() = default;
  Status Launch(uint16_t port);
  std::string LogTail() const;

  std::string root_;      // temporary directory holding data/ and ferretdb.log
  std::string data_dir_;  // root_/data/
  std::string log_path_;  // root_/ferretdb.log
  std::string url_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;  // kept open so a late write by the server cannot raise SIGPIPE
};

// FerretDbEnvironment gives a test binary one shared FerretDB server, started before the first
// test and stopped after the last. If the server cannot start, every test that asks for it
// (Url, Server) fails with the reason.
class FerretDbEnvironment : public ::testing::Environment {
 public:
  // Register adds the environment to GoogleTest once per process and returns it; call it from a
  // namespace-scope initializer (before RUN_ALL_TESTS).
  static FerretDbEnvironment* Register();

  // Url is the shared server's connection string; empty (and the test fails) if none runs.
  static const std::string& Url();
  // Server is the shared server; null (and the test fails) if none runs.
  static FerretDbServer* Server();
  // UniqueDatabaseName is a database name used by no other call in this process: `prefix`, a
  // counter and the current test's name, cut to the 63 characters MongoDB allows and limited to
  // [A-Za-z0-9_].
  static std::string UniqueDatabaseName(std::string_view prefix = "t");

  void SetUp() override;
  void TearDown() override;

 private:
  FerretDbEnvironment() = default;
  std::unique_ptr<FerretDbServer> server_;
  std::string error_;  // why server_ is null after SetUp
};

}  // namespace iot::testing
