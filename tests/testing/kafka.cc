// kafka.cc: starts, stops, kills and restarts the Kafka test broker (see kafka.h).
//
// The broker is `java -cp 'libs/*' kafka.Kafka server.properties` in KRaft mode. Its storage is
// not formatted with Kafka's StorageTool (a second JVM, about a second on two cores): the data
// directory gets the meta.properties that the tool would write (version 1, a cluster id, the
// node id) and the broker completes the rest on first start (directory id, bootstrap metadata at
// its default metadata.version).
//
// The child is forked and exec'd by hand (not posix_spawn) so that it can ask the kernel to kill
// it when its parent dies (PR_SET_PDEATHSIG): a test that crashes must not leak brokers. Only
// async-signal-safe calls run between fork and exec, since the test process may have threads.
#include "testing/kafka.h"

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IOT_KAFKA_DEFAULT_LIBS
#define IOT_KAFKA_DEFAULT_LIBS ""
#endif

namespace iot::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(60);
constexpr auto kStopTimeout = std::chrono::seconds(10);
constexpr auto kAdminTimeout = std::chrono::seconds(30);
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr int kMetadataTimeoutMs = 1000;
constexpr int kNodeId = 1;
constexpr std::string_view kBuildHint =
    "fetch them with `scripts/kafka.sh build` (needs Java and Maven), or point KAFKA_LIBS at a "
    "directory of Kafka 3.9 jars";

// The JVM: a small heap, and the flags that start it fastest on two cores (measured: serial GC
// and C1 only take a fresh broker from ~1.9 s to ~1.6 s and its RSS from ~190 MB to ~140 MB).
// No perf-data file, which a SIGKILL would leave behind in /tmp; exit on OOM instead of limping.
constexpr std::array kJvmFlags = {
    "-Xms64m",
    "-Xmx320m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
};

std::string Errno(const char* what) {
  const int err = errno;  // before anything below can change it
  return std::string(what) + ": " + std::strerror(err);
}

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

// ExitedStatus is how `pid` ended if it has exited (and reaps it), else empty.
std::string ExitedStatus(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == 0) return {};
  if (r < 0) return "is gone (" + Errno("waitpid") + ")";
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "ended";
}

// CanConnect is whether a TCP connection to 127.0.0.1:port succeeds.
bool CanConnect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// FileContains is whether the file at `path` contains `text`.
bool FileContains(const std::string& path, std::string_view text) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str().find(text) != std::string::npos;
}

// FreePorts returns `n` distinct ports that were free on 127.0.0.1 a moment ago: the sockets are
// bound together (so the kernel hands out distinct ports), then closed for the broker to take.
Result<std::vector<uint16_t>> FreePorts(int n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  Status status = Status::Ok();
  for (int i = 0; i < n && status.ok(); ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      status = MakeError(Errc::kInternal, Errno("socket"));
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = MakeError(Errc::kInternal, Errno("bind 127.0.0.1:0"));
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  if (!status.ok()) return status.error();
  return ports;
}

Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  out.close();
  if (!out) return MakeError(Errc::kInternal, "cannot write " + path);
  return Status::Ok();
}

// ClusterId is a random Kafka Uuid as Kafka prints it: 16 bytes, URL-safe base64 without padding.
// Like Kafka's Uuid.randomUuid it never starts with '-', which command-line tools would misread.
std::string ClusterId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::random_device rd;
  std::string id;
  do {
    std::array<unsigned char, 16> bytes{};
    for (auto& b : bytes) b = static_cast<unsigned char>(rd());
    id.clear();
    uint32_t acc = 0;
    int bits = 0;
    for (unsigned char b : bytes) {
      acc = (acc << 8) | b;
      bits += 8;
      while (bits >= 6) {
        bits -= 6;
        id.push_back(kAlphabet[(acc >> bits) & 0x3f]);
      }
    }
    if (bits > 0) id.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  } while (id.front() == '-');
  return id;
}

// FindJava is $JAVA_HOME/bin/java, else the first java on PATH; empty if there is none. Resolved
// in the parent because the child may only make async-signal-safe calls before exec.
std::string FindJava() {
  if (const char* home = std::getenv("JAVA_HOME"); home != nullptr && *home != '\0') {
    std::string java = std::string(home) + "/bin/java";
    if (::access(java.c_str(), X_OK) == 0) return java;
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path == nullptr ? "/usr/bin:/bin" : path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    std::string java = dir + "/java";
    if (::access(java.c_str(), X_OK) == 0) return java;
  }
  return {};
}

// HasBrokerJar is whether `libs` holds Kafka's broker jar (kafka_2.13-VERSION.jar).
bool HasBrokerJar(const std::string& libs) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(libs, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("kafka_2.13-", 0) == 0 && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".jar") == 0) {
      return true;
    }
  }
  return false;
}

std::string ServerProperties(uint16_t port, uint16_t controller_port, const std::string& data_dir) {
  const std::string host = "127.0.0.1:";
  std::ostringstream p;
  p << "process.roles=broker,controller\n"
    << "node.id=" << kNodeId << "\n"
    << "controller.quorum.voters=" << kNodeId << "@" << host << controller_port << "\n"
    << "listeners=PLAINTEXT://" << host << port << ",CONTROLLER://" << host << controller_port
    << "\n"
    << "advertised.listeners=PLAINTEXT://" << host << port << "\n"
    << "controller.listener.names=CONTROLLER\n"
    << "inter.broker.listener.name=PLAINTEXT\n"
    << "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
    << "log.dirs=" << data_dir
    << "\n"
    // Topics exist only when a test (or the code under test) creates them, as in production.
    << "auto.create.topics.enable=false\n"
    << "num.partitions=1\n"
    // One broker: everything is replicated once, and acks=all means that broker.
    << "offsets.topic.replication.factor=1\n"
    << "transaction.state.log.replication.factor=1\n"
    << "transaction.state.log.min.isr=1\n"
    << "min.insync.replicas=1\n"
    // A consumer group's first member gets its partitions at once, not after 3 s.
    << "group.initial.rebalance.delay.ms=0\n"
    // After a SIGKILL the restarted controller refuses the broker's new registration until the
    // old one's session expires: 9 s by default, which made Restart() take 15 s instead of 5.
    // Heartbeats are frequent enough that a 2.5 s session still survives a stall of 2 s.
    << "broker.heartbeat.interval.ms=500\n"
    << "broker.session.timeout.ms=2500\n"
    // The log cleaner (it compacts the committed offsets) would take 128 MiB of the small heap.
    << "log.cleaner.dedupe.buffer.size=8388608\n";
  return p.str();
}

std::string Log4jProperties(const std::string& log_path) {
  return "log4j.rootLogger=WARN, file\n"
         "log4j.appender.file=org.apache.log4j.FileAppender\n"
         "log4j.appender.file.File=" +
         log_path +
         "\n"
         "log4j.appender.file.Append=true\n"
         "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
         "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
         // The lines that say when the broker started and stopped, for whoever reads the log.
         "log4j.logger.kafka.server.KafkaRaftServer=INFO\n";
}

// --- librdkafka -------------------------------------------------------------------------------

struct ClientDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using Client = std::unique_ptr<rd_kafka_t, ClientDeleter>;

struct MetadataDeleter {
  void operator()(const rd_kafka_metadata_t* md) const { rd_kafka_metadata_destroy(md); }
};
using Metadata = std::unique_ptr<const rd_kafka_metadata_t, MetadataDeleter>;

// NewClient is a librdkafka handle for admin and metadata requests. It reconnects quickly (the
// broker may not listen yet) and logs nothing: refused connections are expected while waiting.
Result<Client> NewClient(const std::string& bootstrap) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", bootstrap},
      {"reconnect.backoff.ms", "20"},
      {"reconnect.backoff.max.ms", "200"},
  };
  for (const auto& [key, value] : settings) {
    if (rd_kafka_conf_set(conf, key, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return MakeError(Errc::kInternal, std::string("librdkafka ") + key + ": " + err);
    }
  }
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int, const char*, const char*) {});
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new takes it only on success
    return MakeError(Errc::kInternal, std::string("rd_kafka_new: ") + err);
  }
  return Client(rk);
}

// FetchMetadata asks for the metadata of every topic, or of `topic` only.
Result<Metadata> FetchMetadata(rd_kafka_t* rk, const std::string* topic) {
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_topic_t* rkt =
      topic == nullptr ? nullptr : rd_kafka_topic_new(rk, topic->c_str(), nullptr);
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk, rkt == nullptr ? 1 : 0, rkt, &md, kMetadataTimeoutMs);
  if (rkt != nullptr) rd_kafka_topic_destroy(rkt);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return MakeError(Errc::kUnavailable, std::string("metadata: ") + rd_kafka_err2str(err));
  }
  return Metadata(md);
}

// NotLedReason is empty if the metadata lists this node and every partition of every topic in it
// has a leader; else it says what is missing.
std::string NotLedReason(const rd_kafka_metadata_t& md) {
  bool found = false;
  for (int i = 0; i < md.broker_cnt; ++i) found = found || md.brokers[i].id == kNodeId;
  if (!found) return "the broker is not in its own metadata yet";
  for (int t = 0; t < md.topic_cnt; ++t) {
    const rd_kafka_metadata_topic_t& topic = md.topics[t];
    if (topic.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return std::string("topic ") + topic.topic + ": " + rd_kafka_err2str(topic.err);
    }
    for (int p = 0; p < topic.partition_cnt; ++p) {
      if (topic.partitions[p].err != RD_KAFKA_RESP_ERR_NO_ERROR || topic.partitions[p].leader < 0) {
        return std::string("topic ") + topic.topic + " partition " +
               std::to_string(topic.partitions[p].id) + " has no leader";
      }
    }
  }
  return {};
}

}  // namespace

// --- KafkaBroker ------------------------------------------------------------------------------

std::string KafkaBroker::LibsPath() {
  const char* env = std::getenv("KAFKA_LIBS");
  if (env != nullptr && *env != '\0') return env;
  return IOT_KAFKA_DEFAULT_LIBS;
}

Result<std::unique_ptr<KafkaBroker>> KafkaBroker::Start() {
  const std::string libs = LibsPath();
  if (libs.empty() || !HasBrokerJar(libs)) {
    return MakeError(Errc::kNotFound, "Kafka's jars not found in '" + libs +
                                          "' (from $KAFKA_LIBS or the CMake configure step); " +
                                          std::string(kBuildHint));
  }
  std::unique_ptr<KafkaBroker> broker(new KafkaBroker());
  broker->libs_ = libs;
  broker->java_ = FindJava();
  if (broker->java_.empty()) {
    return MakeError(Errc::kNotFound,
                     "java not found in $JAVA_HOME/bin or on PATH; the Kafka broker needs a Java "
                     "runtime (17 or later): run scripts/install-deps.sh");
  }
  std::string pattern = (std::filesystem::temp_directory_path() / "iot_kafka_XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return MakeError(Errc::kInternal, Errno("mkdtemp"));
  broker->root_ = pattern;
  broker->data_dir_ = pattern + "/data";
  broker->log_path_ = pattern + "/kafka.log";
  if (Status s = WriteFile(pattern + "/log4j.properties", Log4jProperties(broker->log_path_));
      !s.ok()) {
    return s.error();
  }
  // The ports were free a moment ago; another process may take one before the broker binds it.
  // Then the broker exits at once, and a fresh pair is tried.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    if (Status s = broker->Prepare(); !s.ok()) return s.error();
    Status s = broker->Launch();
    if (s.ok()) return broker;
    if (attempt == kAttempts || !FileContains(broker->log_path_, "Address already in use")) {
      return s.error();
    }
  }
}

// Prepare picks the ports and lays out a fresh data directory with its meta.properties, and a
// fresh log (so that a failure is read from this attempt's log only).
Status KafkaBroker::Prepare() {
  auto ports = FreePorts(2);
  if (!ports.ok()) return ports.error();
  port_ = (*ports)[0];
  controller_port_ = (*ports)[1];
  bootstrap_ = "127.0.0.1:" + std::to_string(port_);
  std::error_code ec;
  std::filesystem::remove(log_path_, ec);
  std::filesystem::remove_all(data_dir_, ec);
  std::filesystem::create_directory(data_dir_, ec);
  if (ec) return MakeError(Errc::kInternal, "mkdir " + data_dir_ + ": " + ec.message());
  if (Status s = WriteFile(
          data_dir_ + "/meta.properties",
          "version=1\ncluster.id=" + ClusterId() + "\nnode.id=" + std::to_string(kNodeId) + "\n");
      !s.ok()) {
    return s;
  }
  return WriteFile(root_ + "/server.properties",
                   ServerProperties(port_, controller_port_, data_dir_));
}

KafkaBroker::~KafkaBroker() {
  // The data goes with it, so there is nothing a graceful shutdown would save.
  (void)Kill();
  if (!root_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
}

Status KafkaBroker::Launch() {
  std::vector<std::string> args = {java_};
  args.insert(args.end(), kJvmFlags.begin(), kJvmFlags.end());
  args.push_back("-Dlog4j.configuration=file:" + root_ + "/log4j.properties");
  args.push_back("-cp");
  args.push_back(libs_ + "/*");  // java expands the wildcard itself
  args.push_back("kafka.Kafka");
  args.push_back(root_ + "/server.properties");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return MakeError(Errc::kInternal, Errno("open kafka.log"));
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null < 0) {
    ::close(log);
    return MakeError(Errc::kInternal, Errno("open /dev/null"));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    ::close(null);
    return MakeError(Errc::kInternal, Errno("fork"));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::dup2(null, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log);
  ::close(null);
  pid_ = pid;
  return WaitServing();
}

// WaitServing polls the broker with metadata requests until it lists itself and every partition
// has a leader: after a restart the broker answers before its partitions are led again. The
// client is made once the port accepts connections (the broker binds it last, when it is ready
// to serve): before that, librdkafka would only back off and wait out its timeouts.
Status KafkaBroker::WaitServing() {
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  Client client;
  std::string last = "the port does not accept connections yet";
  while (true) {
    if (const std::string exited = ExitedStatus(pid_); !exited.empty()) {
      pid_ = -1;
      return MakeError(Errc::kUnavailable, "the Kafka broker on " + bootstrap_ + " " + exited +
                                               " while starting; its log:\n" + LogTail());
    }
    if (client == nullptr && CanConnect(port_)) {
      auto made = NewClient(bootstrap_);
      if (!made.ok()) {
        (void)Kill();
        return made.error();
      }
      client = std::move(*made);
    }
    if (client != nullptr) {
      auto md = FetchMetadata(client.get(), nullptr);
      if (md.ok()) {
        last = NotLedReason(**md);
        if (last.empty()) return Status::Ok();
      } else {
        last = md.error().message;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  (void)Kill();
  return MakeError(Errc::kUnavailable, "the Kafka broker on " + bootstrap_ + " did not serve " +
                                           "within 60 s (last: " + last + "); its log:\n" +
                                           LogTail());
}

Status KafkaBroker::Signal(int sig, bool wait_gracefully) {
  if (pid_ > 0) {
    ::kill(pid_, sig);
    if (!wait_gracefully || !WaitExit(pid_, kStopTimeout)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  return Status::Ok();
}

Status KafkaBroker::Stop() { return Signal(SIGTERM, true); }

Status KafkaBroker::Kill() { return Signal(SIGKILL, false); }

Status KafkaBroker::Restart() {
  if (Status s = Stop(); !s.ok()) return s;
  return Launch();
}

std::string KafkaBroker::LogTail() const {
  std::ifstream in(log_path_);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from = lines.size() > 30 ? lines.size() - 30 : 0;
  std::ostringstream out;
  for (size_t i = from; i < lines.size(); ++i) out << lines[i] << '\n';
  return out.str();
}

// --- KafkaEnvironment -------------------------------------------------------------------------

namespace {
KafkaEnvironment* g_environment = nullptr;
}  // namespace

KafkaEnvironment* KafkaEnvironment::Register() {
  if (g_environment == nullptr) {
    g_environment = new KafkaEnvironment();
    ::testing::AddGlobalTestEnvironment(g_environment);  // GoogleTest owns it
  }
  return g_environment;
}

void KafkaEnvironment::TearDown() { broker_.reset(); }

// Broker does not assert: the error is kept and fails each test that asks for the broker.
KafkaBroker* KafkaEnvironment::Broker() {
  if (g_environment == nullptr) {
    ADD_FAILURE() << "no shared Kafka broker: call KafkaEnvironment::Register() at namespace "
                     "scope in the test binary";
    return nullptr;
  }
  if (!g_environment->tried_) {
    g_environment->tried_ = true;
    auto broker = KafkaBroker::Start();
    if (broker.ok()) {
      g_environment->broker_ = std::move(*broker);
    } else {
      g_environment->error_ = broker.error().message;
    }
  }
  if (g_environment->broker_ == nullptr) {
    ADD_FAILURE() << "the shared Kafka broker did not start: " << g_environment->error_;
  }
  return g_environment->broker_.get();
}

const std::string& KafkaEnvironment::BootstrapServers() {
  static const std::string kNone;
  KafkaBroker* broker = Broker();
  return broker == nullptr ? kNone : broker->BootstrapServers();
}

std::string KafkaEnvironment::UniqueTopicName(std::string_view prefix) {
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
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '_';
  }
  if (name.size() > 200) name.resize(200);  // Kafka allows 249
  return name;
}

// --- CreateTopic ------------------------------------------------------------------------------

namespace {

struct QueueDeleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};

Errc ErrcOfCreate(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
      return Errc::kAlreadyExists;
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
    case RD_KAFKA_RESP_ERR_INVALID_REQUEST:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return Errc::kInvalidArgument;
    default:
      return Errc::kUnavailable;
  }
}

// SendCreateTopics sends one CreateTopics request and returns the topic's outcome.
Status SendCreateTopics(rd_kafka_t* rk, const std::string& topic, int partitions) {
  char err[512];
  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, err, sizeof err);
  if (new_topic == nullptr) return MakeError(Errc::kInvalidArgument, "topic " + topic + ": " + err);
  const int timeout_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(kAdminTimeout).count());
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, err, sizeof err);
  rd_kafka_AdminOptions_set_operation_timeout(options, timeout_ms, err, sizeof err);
  std::unique_ptr<rd_kafka_queue_t, QueueDeleter> queue(rd_kafka_queue_new(rk));
  rd_kafka_CreateTopics(rk, &new_topic, 1, options, queue.get());
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_NewTopic_destroy(new_topic);

  std::unique_ptr<rd_kafka_event_t, EventDeleter> event(
      rd_kafka_queue_poll(queue.get(), timeout_ms + 5000));
  if (event == nullptr) {
    return MakeError(Errc::kUnavailable, "CreateTopics " + topic + ": no answer within 35 s");
  }
  if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return MakeError(ErrcOfCreate(rd_kafka_event_error(event.get())),
                     "CreateTopics " + topic + ": " + rd_kafka_event_error_string(event.get()));
  }
  const rd_kafka_CreateTopics_result_t* result = rd_kafka_event_CreateTopics_result(event.get());
  size_t count = 0;
  const rd_kafka_topic_result_t** topics = rd_kafka_CreateTopics_result_topics(result, &count);
  if (count != 1) return MakeError(Errc::kInternal, "CreateTopics " + topic + ": no topic result");
  if (const rd_kafka_resp_err_t e = rd_kafka_topic_result_error(topics[0]);
      e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* message = rd_kafka_topic_result_error_string(topics[0]);
    return MakeError(ErrcOfCreate(e), "CreateTopics " + topic + ": " +
                                          (message != nullptr ? message : rd_kafka_err2str(e)));
  }
  return Status::Ok();
}

}  // namespace

Status CreateTopic(const std::string& bootstrap, const std::string& topic, int partitions) {
  auto client = NewClient(bootstrap);
  if (!client.ok()) return client.error();
  if (Status s = SendCreateTopics(client->get(), topic, partitions); !s.ok()) return s;

  // The controller has created the topic; wait until the broker's metadata has it, all led.
  const auto deadline = std::chrono::steady_clock::now() + kAdminTimeout;
  std::string last;
  while (true) {
    auto md = FetchMetadata(client->get(), &topic);
    if (md.ok()) {
      const rd_kafka_metadata_t& m = **md;
      if (m.topic_cnt == 1 && m.topics[0].partition_cnt != partitions) {
        last = "it has " + std::to_string(m.topics[0].partition_cnt) + " partitions";
      } else {
        last = m.topic_cnt == 1 ? NotLedReason(m) : "it is not in the metadata";
        if (last.empty()) return Status::Ok();
      }
    } else {
      last = md.error().message;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  return MakeError(Errc::kUnavailable,
                   "topic " + topic + " was created but is not served within 30 s: " + last);
}

}  // namespace iot::testing
