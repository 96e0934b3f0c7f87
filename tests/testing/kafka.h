// kafka.h: a real Apache Kafka broker (3.9, single-node KRaft) for tests of the Kafka bus.
//
// One broker per test binary, shared by every test, each test on topics of its own:
//
//   // at namespace scope in one file of the test binary:
//   const auto* const kKafka = ::iot::testing::KafkaEnvironment::Register();
//
//   TEST(KafkaBus, Something) {
//     const std::string topic = KafkaEnvironment::UniqueTopicName();
//     IOT_ASSERT_OK(CreateTopic(KafkaEnvironment::BootstrapServers(), topic, 3));
//
// A broker of a test's own, for fault tests (kill the broker, check the client copes, restart it
// on the same ports with the same data):
//
//   auto broker = KafkaBroker::Start();
//   ASSERT_TRUE(broker.ok()) << broker.error().message;
//   IOT_ASSERT_OK((*broker)->Kill());
//   IOT_ASSERT_OK((*broker)->Restart());
//
// The broker runs from the jars in $KAFKA_LIBS, else the directory `scripts/kafka.sh path` printed
// when CMake configured the build, with `java` from $JAVA_HOME or PATH. A missing jar directory
// is an error naming `scripts/kafka.sh build`: the tests fail, they never skip.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <sys/types.h>

#include "core/result.h"

namespace iot::testing {

// KafkaBroker is one Kafka process (broker and KRaft controller in one, node id 1) listening on
// 127.0.0.1 with a fresh data directory. Topics are never created automatically; offsets and
// transaction state are replicated once (there is one broker) and min.insync.replicas is 1, so
// acks=all producers work.
//
// Lifecycle: Start() launches it and waits (at most 60 s) until it answers a metadata request
// with every partition led; Stop() ends it (SIGTERM, then SIGKILL after 10 s), Kill() with
// SIGKILL, and both keep the data and ports; Restart() launches it again on the same ports with
// the same data and waits the same way; the destructor kills it and removes the data directory.
// The process also dies with the thread that started it (PR_SET_PDEATHSIG), so a crashed test
// leaves no broker behind. The broker's log (WARN and above) is kafka.log in root_dir(); errors
// carry its tail.
//
// Threading: not thread-safe; call Start, Stop, Kill, Restart and the destructor from one thread
// (the one that runs the tests).
class KafkaBroker {
 public:
  // Start launches a broker on two free ports (clients, controller). Errors: kNotFound when the
  // jars or java are missing, kUnavailable when it does not come up in time (the message has its
  // log's tail).
  static Result<std::unique_ptr<KafkaBroker>> Start();

  ~KafkaBroker();
  KafkaBroker(const KafkaBroker&) = delete;
  KafkaBroker& operator=(const KafkaBroker&) = delete;

  // BootstrapServers is what clients connect to, `127.0.0.1:PORT`.
  const std::string& BootstrapServers() const { return bootstrap_; }
  uint16_t port() const { return port_; }
  // pid is the running process's id, or -1 while stopped.
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // root_dir holds data/ (the broker's log.dirs), kafka.log and the generated configuration.
  const std::string& root_dir() const { return root_; }
  const std::string& data_dir() const { return data_dir_; }

  // Stop ends the broker gracefully and waits for it to exit; data and ports stay for Restart.
  // Stopping a stopped broker is a no-op.
  Status Stop();
  // Kill ends the broker with SIGKILL, as a crash would; data and ports stay for Restart.
  Status Kill();
  // Restart stops the broker if it runs, then launches it on the same ports and data directory
  // and waits until it serves its topics again. Fails with kUnavailable if a port was taken
  // meanwhile or the broker does not come up.
  Status Restart();

  // LogTail is the last lines of the broker's log, for failure messages.
  std::string LogTail() const;

  // LibsPath is the directory of the jars these brokers run: $KAFKA_LIBS, else the built-in path.
  static std::string LibsPath();

 private:
  KafkaBroker() = default;
  Status Prepare();
  Status Launch();
  Status WaitServing();
  Status Signal(int sig, bool wait_gracefully);

  std::string root_;      // temporary directory holding data/, kafka.log and *.properties
  std::string data_dir_;  // root_/data
  std::string log_path_;  // root_/kafka.log
  std::string libs_;      // the jar directory, fixed at Start
  std::string java_;      // the java binary, resolved before the first fork
  std::string bootstrap_;
  uint16_t port_ = 0;             // the PLAINTEXT listener: clients
  uint16_t controller_port_ = 0;  // the CONTROLLER listener: KRaft, only the broker itself
  pid_t pid_ = -1;
};

// KafkaEnvironment gives a test binary one shared Kafka broker, started by the first test that
// asks for it (ctest runs each test in a process of its own, and most need no broker) and
// stopped after the last test. If the broker cannot start, every test that asks for it
// (BootstrapServers, Broker) fails with the reason; the start is not tried again.
class KafkaEnvironment : public ::testing::Environment {
 public:
  // Register adds the environment to GoogleTest once per process and returns it; call it from a
  // namespace-scope initializer (before RUN_ALL_TESTS).
  static KafkaEnvironment* Register();

  // BootstrapServers is the shared broker's address; empty (and the test fails) if none runs.
  static const std::string& BootstrapServers();
  // Broker is the shared broker, started on first use; null (and the test fails) if none runs.
  static KafkaBroker* Broker();
  // UniqueTopicName is a topic name used by no other call in this process: `prefix`, a counter
  // and the current test's name, limited to the characters and length Kafka allows.
  static std::string UniqueTopicName(std::string_view prefix = "t");

  void TearDown() override;

 private:
  KafkaEnvironment() = default;
  std::unique_ptr<KafkaBroker> broker_;
  bool tried_ = false;
  std::string error_;  // why broker_ is null after the start was tried
};

// CreateTopic creates `topic` with `partitions` partitions (replication factor 1) through
// librdkafka's admin API and waits until every partition has a leader, so that producing to it
// right after works. Errors: kAlreadyExists, kInvalidArgument (a bad name or count), kUnavailable
// (the broker did not answer within 30 s).
Status CreateTopic(const std::string& bootstrap, const std::string& topic, int partitions);

}  // namespace iot::testing
