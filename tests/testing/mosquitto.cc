#include "testing/mosquitto.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace iot::testing {
namespace {

std::uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool Accepts(std::uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// Run spawns argv and waits for it; its exit status.
int Run(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

Result<std::unique_ptr<Mosquitto>> Mosquitto::Start() {
  std::unique_ptr<Mosquitto> m(new Mosquitto());
  char tmpl[] = "/tmp/iotd-mosquitto-XXXXXX";
  if (!mkdtemp(tmpl)) return MakeError(Errc::kInternal, "mkdtemp failed");
  m->dir_ = tmpl;
  for (int attempt = 0; attempt < 5; ++attempt) {
    m->port_ = FreePort();
    const std::string conf = m->dir_ + "/mosquitto.conf";
    std::ofstream(conf) << "listener " << m->port_ << " 127.0.0.1\n"
                        << "allow_anonymous true\npersistence false\n"
                        << "max_queued_messages 0\nmax_inflight_messages 0\n"
                        << "log_dest none\n";
    std::string bin = "mosquitto";
    if (access("/usr/sbin/mosquitto", X_OK) == 0) bin = "/usr/sbin/mosquitto";
    std::vector<std::string> args = {bin, "-c", conf};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawnp(&m->pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      return MakeError(Errc::kUnavailable, "cannot start mosquitto (apt-get install mosquitto)");
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Accepts(m->port_)) return m;
      int status = 0;
      if (waitpid(m->pid_, &status, WNOHANG) == m->pid_) {
        m->pid_ = -1;
        break;  // the port was taken meanwhile: try another
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return MakeError(Errc::kUnavailable, "mosquitto did not start; see " + m->dir_);
}

Mosquitto::~Mosquitto() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Run({"rm", "-rf", dir_});
}

Status Mosquitto::Publish(const std::string& topic, const std::string& payload, int qos) const {
  const int code = Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port_), "-q",
                        std::to_string(qos), "-t", topic, "-m", payload});
  if (code != 0)
    return MakeError(Errc::kUnavailable, "mosquitto_pub exited " + std::to_string(code));
  return Status::Ok();
}

}  // namespace iot::testing
