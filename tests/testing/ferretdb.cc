// ferretdb.cc: starts, stops and restarts the FerretDB test server (see ferretdb.h).
//
// The child is forked and exec'd by hand (not posix_spawn) so that it can ask the kernel to kill
// it when its parent dies (PR_SET_PDEATHSIG): a test that crashes must not leak servers. Only
// async-signal-safe calls run between fork and exec, since the test process may have threads.
#include "testing/ferretdb.h"

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IOT_FERRETDB_DEFAULT_PATH
#define IOT_FERRETDB_DEFAULT_PATH ""
#endif

namespace iot::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(10);
constexpr auto kStopTimeout = std::chrono::seconds(5);
constexpr std::string_view kReadyPrefix = "ferretdb listening on ";
constexpr std::string_view kBuildHint =
    "build it with `scripts/ferretdb.sh build` (needs Go and the Go module proxy), or point "
    "FERRETDB at a FerretDB binary";

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// WaitExit waits up to `timeout` for `pid` to exit; true if it did (and was reaped).
bool WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const pid_t r = ::waitpid(pid, nullptr, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// ReadLine reads one line from `fd` until `deadline`; empty if the deadline passed or the writer
// closed the pipe first.
std::string ReadLine(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string line;
  char c = 0;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};
    const ssize_t got = ::read(fd, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return {};
    if (c == '\n') return line;
    line.push_back(c);
  }
}

// PortOf extracts PORT from `mongodb://127.0.0.1:PORT/`; 0 if there is none.
uint16_t PortOf(const std::string& url) {
  const auto colon = url.rfind(':');
  if (colon == std::string::npos) return 0;
  unsigned long port = 0;
  for (size_t i = colon + 1; i < url.size() && std::isdigit(static_cast<unsigned char>(url[i]));
       ++i) {
    port = port * 10 + static_cast<unsigned long>(url[i] - '0');
    if (port > 65535) return 0;
  }
  return static_cast<uint16_t>(port);
}

}  // namespace

std::string FerretDbServer::BinaryPath() {
  const char* env = std::getenv("FERRETDB");
  if (env != nullptr && *env != '\0') return env;
  return IOT_FERRETDB_DEFAULT_PATH;
}

Result<std::unique_ptr<FerretDbServer>> FerretDbServer::Start() {
  const std::string binary = BinaryPath();
  if (binary.empty() || ::access(binary.c_str(), X_OK) != 0) {
    return MakeError(Errc::kNotFound, "FerretDB binary not found at '" + binary +
                                          "' (from $FERRETDB or the CMake configure step); " +
                                          std::string(kBuildHint));
  }
  std::unique_ptr<FerretDbServer> server(new FerretDbServer());
  std::string pattern = (std::filesystem::temp_directory_path() / "iot_ferretdb_XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return MakeError(Errc::kInternal, Errno("mkdtemp"));
  server->root_ = pattern;
  server->data_dir_ = pattern + "/data/";
  server->log_path_ = pattern + "/ferretdb.log";
  std::error_code ec;
  std::filesystem::create_directory(server->data_dir_, ec);
  if (ec) return MakeError(Errc::kInternal, "mkdir " + server->data_dir_ + ": " + ec.message());
  if (Status s = server->Launch(0); !s.ok()) return s.error();
  return server;
}

FerretDbServer::~FerretDbServer() {
  (void)Stop();  // Stop cannot fail: it ends with SIGKILL
  if (!root_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
}

Status FerretDbServer::Launch(uint16_t port) {
  const std::string binary = BinaryPath();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  const std::string sqlite = "file:" + data_dir_;
  std::vector<std::string> args = {binary, "--listen-addr", listen, "--sqlite-url", sqlite};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return MakeError(Errc::kInternal, Errno("pipe2"));
  const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    ::close(out[0]);
    ::close(out[1]);
    return MakeError(Errc::kInternal, Errno("open ferretdb.log"));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out[0]);
    ::close(out[1]);
    ::close(log);
    return MakeError(Errc::kInternal, Errno("fork"));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(log);
  pid_ = pid;
  stdout_fd_ = out[0];

  const std::string line = ReadLine(stdout_fd_, std::chrono::steady_clock::now() + kStartTimeout);
  if (line.rfind(kReadyPrefix, 0) != 0) {
    (void)Stop();
    return MakeError(Errc::kUnavailable, "FerretDB (" + binary + ") did not report it was ready" +
                                             " within 10 s; its log:\n" + LogTail());
  }
  url_ = line.substr(kReadyPrefix.size());
  port_ = PortOf(url_);
  if (port_ == 0 || (port != 0 && port_ != port)) {
    (void)Stop();
    return MakeError(Errc::kInternal, "unexpected FerretDB URL '" + url_ + "'");
  }
  return Status::Ok();
}

Status FerretDbServer::Stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    if (!WaitExit(pid_, kStopTimeout)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  if (stdout_fd_ >= 0) {
    ::close(stdout_fd_);
    stdout_fd_ = -1;
  }
  return Status::Ok();
}

Status FerretDbServer::Restart() {
  if (Status s = Stop(); !s.ok()) return s;
  return Launch(port_);
}

std::string FerretDbServer::LogTail() const {
  std::ifstream in(log_path_);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from = lines.size() > 20 ? lines.size() - 20 : 0;
  std::ostringstream out;
  for (size_t i = from; i < lines.size(); ++i) out << lines[i] << '\n';
  return out.str();
}

namespace {
FerretDbEnvironment* g_environment = nullptr;
}  // namespace

FerretDbEnvironment* FerretDbEnvironment::Register() {
  if (g_environment == nullptr) {
    g_environment = new FerretDbEnvironment();
    ::testing::AddGlobalTestEnvironment(g_environment);  // GoogleTest owns it
  }
  return g_environment;
}

// SetUp does not assert: GoogleTest would then report every test as skipped, and ctest counts
// "[  SKIPPED ]" as a skip. The error is kept instead and fails each test that asks for the server.
void FerretDbEnvironment::SetUp() {
  auto server = FerretDbServer::Start();
  if (server.ok()) {
    server_ = std::move(*server);
  } else {
    error_ = server.error().message;
  }
}

void FerretDbEnvironment::TearDown() { server_.reset(); }

FerretDbServer* FerretDbEnvironment::Server() {
  if (g_environment == nullptr) {
    ADD_FAILURE() << "no shared FerretDB server: call FerretDbEnvironment::Register() at "
                     "namespace scope in the test binary";
    return nullptr;
  }
  if (g_environment->server_ == nullptr) {
    ADD_FAILURE() << "the shared FerretDB server did not start: " << g_environment->error_;
  }
  return g_environment->server_.get();
}

const std::string& FerretDbEnvironment::Url() {
  static const std::string kNone;
  FerretDbServer* server = Server();
  return server == nullptr ? kNone : server->Url();
}

std::string FerretDbEnvironment::UniqueDatabaseName(std::string_view prefix) {
  static std::atomic<int> counter{0};
  std::string name(prefix);
  name += '_';
  name += std::to_string(++counter);
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name += "_";
    name += info->test_suite_name();
    name += "_";
    name += info->name();
  }
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  }
  if (name.size() > 63) name.resize(63);
  return name;
}

}  // namespace iot::testing
