// embedded_bus_crash_test.cc: kill -9 at a random moment loses nothing that was acknowledged.
//
// A child process (crash_producer) produces numbered messages and reports every acknowledged
// call on a pipe; the test SIGKILLs it at a random moment, reopens the bus and checks that every
// acknowledged offset holds its message, that offsets are dense from 0 and that every stored
// message is the one meant for its offset (a torn group would break one of these). Several
// rounds on one file also check that offsets continue across crashes.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bus/embedded_bus.h"
#include "bus_test_util.h"
#include "crash_messages.h"

extern char** environ;

namespace iot::bus {
namespace {

using namespace std::chrono_literals;

struct Acked {
  std::int64_t first;
  std::int64_t count;
};

// Child runs crash_producer with its stdout on a pipe.
class Child {
 public:
  Child(const std::string& bus_path, std::uint64_t seed) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2 failed";
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    std::string program = IOT_BUS_CRASH_PRODUCER;
    std::string seed_text = std::to_string(seed);
    std::string path = bus_path;
    char* argv[] = {program.data(), path.data(), seed_text.data(), nullptr};
    int rc = ::posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    read_fd_ = fds[0];
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << program << " failed: " << rc;
      pid_ = -1;
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // ReadAcks reads acknowledgements until `until` messages were acknowledged in total or the
  // pipe is closed; returns false at end of file.
  bool ReadAcks(std::vector<Acked>& acked, std::int64_t& total, std::int64_t until) {
    while (total < until) {
      std::size_t newline;
      while ((newline = buffer_.find('\n')) != std::string::npos) {
        Acked a{};
        if (std::sscanf(buffer_.c_str(), "%ld %ld", &a.first, &a.count) != 2) {
          ADD_FAILURE() << "bad line from the producer: " << buffer_.substr(0, newline);
          return false;
        }
        acked.push_back(a);
        total += a.count;
        buffer_.erase(0, newline + 1);
      }
      if (total >= until) break;
      char chunk[4096];
      ssize_t n = ::read(read_fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
    return true;
  }

  // Kill sends SIGKILL and reaps the child; returns its wait status.
  int Kill() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  std::string buffer_;
};

TEST(EmbeddedBusCrashTest, AcknowledgedMessagesSurviveKill9AndOffsetsStayDense) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/bus.db";
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);

  std::vector<Acked> acked;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::int64_t acked_this_round = 0;
    {
      Child child(path, rng());
      // Kill after a random number of acknowledged messages (mid-stream: more are in flight).
      const auto kill_after = static_cast<std::int64_t>(100 + rng() % 10000);
      ASSERT_TRUE(child.ReadAcks(acked, acked_this_round, kill_after))
          << "the producer exited before it was killed";
      const int status = child.Kill();
      ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
      // Acknowledgements written before the kill are still in the pipe.
      child.ReadAcks(acked, acked_this_round, INT64_MAX);
    }

    EmbeddedBusOptions options;
    options.path = path;
    auto bus = EmbeddedBus::Open(options);
    ASSERT_TRUE(bus.ok()) << bus.error().message;
    const std::int64_t end = (*bus)->EndOffset();
    for (const Acked& a : acked) {
      ASSERT_LE(a.first + a.count, end) << "acknowledged offsets " << a.first << "+" << a.count
                                        << " are missing";
    }
    auto consumer = (*bus)->NewConsumer("");
    std::int64_t next = 0;
    while (next < end) {
      auto records = consumer->Poll(5000, 1s);
      ASSERT_TRUE(records.ok()) << records.error().message;
      ASSERT_FALSE(records->empty()) << "no record at offset " << next << " below end " << end;
      for (const Record& r : *records) {
        ASSERT_EQ(r.offset, next);
        ASSERT_EQ(r.key, testing::CrashKey(next));
        ASSERT_EQ(r.payload, testing::CrashPayload(next));
        ++next;
      }
    }
  }
}

}  // namespace
}  // namespace iot::bus
