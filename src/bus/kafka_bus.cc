#include "bus/kafka_bus.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <set>
#include <sstream>

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

namespace iot::bus {
namespace {

constexpr const char* kHeaderFor = "iotd-for";
constexpr const char* kHeaderId = "iotd-message-id";

// Handle owns an rd_kafka_t.
struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using Conf = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct ListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const {
    rd_kafka_topic_partition_list_destroy(l);
  }
};
using PartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;

struct MetadataDeleter {
  void operator()(const rd_kafka_metadata_t* m) const { rd_kafka_metadata_destroy(m); }
};
using Metadata = std::unique_ptr<const rd_kafka_metadata_t, MetadataDeleter>;

std::string Trim(std::string s) {
  auto b = s.find_first_not_of(" \t\n");
  auto e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

Status Set(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof(err)) !=
      RD_KAFKA_CONF_OK) {
    return MakeError(Errc::kInvalidArgument, "Kafka property " + key + "=" + value + ": " + err);
  }
  return Status::Ok();
}

// LogCallback sends librdkafka's log lines to spdlog (syslog levels: 0 emerg .. 7 debug).
void LogCallback(const rd_kafka_t*, int level, const char* facility, const char* message) {
  if (level <= 3) {
    spdlog::error("kafka {}: {}", facility, message);
  } else if (level <= 4) {
    spdlog::warn("kafka {}: {}", facility, message);
  } else if (level <= 6) {
    spdlog::info("kafka {}: {}", facility, message);
  } else {
    spdlog::debug("kafka {}: {}", facility, message);
  }
}

// NewConf applies iotd's defaults, then the given ones, then the user's properties.
Result<Conf> NewConf(const KafkaOptions& o,
                     const std::vector<std::pair<std::string, std::string>>& defaults) {
  Conf conf(rd_kafka_conf_new());
  std::vector<std::pair<std::string, std::string>> all = {
      {"bootstrap.servers", o.bootstrap_servers},
      {"client.id", o.client_id},
      // Reconnect quickly after a broker restart, without hammering a broker that stays down.
      {"reconnect.backoff.ms", "100"},
      {"reconnect.backoff.max.ms", "2000"},
      // A lost connection is logged by iotd's own health checks, once, not per attempt.
      {"log.connection.close", "false"},
  };
  all.insert(all.end(), defaults.begin(), defaults.end());
  all.insert(all.end(), o.properties.begin(), o.properties.end());
  for (const auto& [k, v] : all) {
    if (Status s = Set(conf.get(), k, v); !s) return s.error();
  }
  rd_kafka_conf_set_log_cb(conf.get(), LogCallback);
  return conf;
}

Result<Handle> NewHandle(rd_kafka_type_t type, Conf conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err, sizeof(err));
  if (!rk) return MakeError(Errc::kInvalidArgument, std::string("Kafka client: ") + err);
  conf.release();  // rd_kafka_new took it
  return Handle(rk);
}

Error KafkaError(rd_kafka_resp_err_t err, const std::string& what) {
  Errc code = Errc::kUnavailable;
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
      code = err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ? Errc::kUnavailable
                                                     : Errc::kInvalidArgument;
      break;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      code = Errc::kResourceExhausted;
      break;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
      code = Errc::kUnavailable;  // may appear once the topic is created; retry
      break;
    default:
      break;
  }
  return Error{code, what + ": " + rd_kafka_err2str(err)};
}

// TopicHealth asks the cluster for `topic`'s metadata: Ok when every partition has a leader.
Status TopicHealth(rd_kafka_t* rk, const std::string& topic, std::chrono::milliseconds timeout,
                   int* partitions = nullptr) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk, 0, rkt, &md, static_cast<int>(timeout.count()));
  rd_kafka_topic_destroy(rkt);
  if (err) return KafkaError(err, "Kafka metadata of " + topic);
  Metadata owned(md);
  if (md->topic_cnt != 1 || md->topics[0].err) {
    auto e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    return KafkaError(e, "Kafka topic " + topic);
  }
  const auto& t = md->topics[0];
  for (int i = 0; i < t.partition_cnt; ++i) {
    if (t.partitions[i].leader < 0) {
      return MakeError(Errc::kUnavailable, "Kafka topic " + topic + " partition " +
                                               std::to_string(t.partitions[i].id) +
                                               " has no leader");
    }
  }
  if (partitions) *partitions = t.partition_cnt;
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::pair<std::string, std::string>>> ParseKafkaProperties(
    const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ';')) {
    item = Trim(item);
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || Trim(item.substr(0, eq)).empty()) {
      return MakeError(Errc::kInvalidArgument,
                       "KAFKA_CONFIG: expected key=value, got '" + item + "'");
    }
    out.emplace_back(Trim(item.substr(0, eq)), Trim(item.substr(eq + 1)));
  }
  return out;
}

// ---- Topics ---------------------------------------------------------------------------------

Status EnsureTopics(const KafkaOptions& options, const std::vector<TopicSpec>& topics, bool create,
                    std::chrono::milliseconds timeout) {
  auto conf = NewConf(options, {});
  if (!conf) return conf.status();
  auto rk = NewHandle(RD_KAFKA_PRODUCER, std::move(*conf));
  if (!rk) return rk.status();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max<std::int64_t>(
        100, std::chrono::duration_cast<std::chrono::milliseconds>(
                 deadline - std::chrono::steady_clock::now())
                 .count());
  };

  // Which topics exist? Retry until a broker answers.
  std::set<std::string> existing;
  while (true) {
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk->get(), 1, nullptr, &md,
                                                static_cast<int>(std::min<std::int64_t>(left(), 5000)));
    if (!err) {
      Metadata owned(md);
      for (int i = 0; i < md->topic_cnt; ++i) {
        if (!md->topics[i].err) existing.insert(md->topics[i].topic);
      }
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return MakeError(Errc::kUnavailable, "no Kafka broker answered at " +
                                               options.bootstrap_servers + " within " +
                                               std::to_string(timeout.count()) + " ms: " +
                                               rd_kafka_err2str(err));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  std::vector<const TopicSpec*> missing;
  for (const auto& t : topics) {
    if (!existing.count(t.name)) missing.push_back(&t);
  }
  if (missing.empty()) return Status::Ok();
  if (!create) {
    const TopicSpec& t = *missing.front();
    return MakeError(Errc::kNotFound,
                     "Kafka topic " + t.name + " does not exist at " + options.bootstrap_servers +
                         ": create it (kafka-topics.sh --create --topic " + t.name +
                         " --partitions " + std::to_string(t.partitions) +
                         " --replication-factor " + std::to_string(t.replication_factor) +
                         ") or set KAFKA_CREATE_TOPICS=true");
  }

  std::vector<rd_kafka_NewTopic_t*> specs;
  for (const TopicSpec* t : missing) {
    char err[512];
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(t->name.c_str(), t->partitions,
                                                    t->replication_factor, err, sizeof(err));
    if (!nt) {
      for (auto* s : specs) rd_kafka_NewTopic_destroy(s);
      return MakeError(Errc::kInvalidArgument, "Kafka topic " + t->name + ": " + err);
    }
    specs.push_back(nt);
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk->get());
  rd_kafka_AdminOptions_t* admin = rd_kafka_AdminOptions_new(rk->get(), RD_KAFKA_ADMIN_OP_CREATETOPICS);
  char err[512];
  rd_kafka_AdminOptions_set_operation_timeout(admin, static_cast<int>(std::min<std::int64_t>(left(), 30000)), err, sizeof(err));
  rd_kafka_CreateTopics(rk->get(), specs.data(), specs.size(), admin, queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, static_cast<int>(left() + 1000));
  Status result = Status::Ok();
  if (!ev) {
    result = MakeError(Errc::kUnavailable, "creating Kafka topics timed out");
  } else if (rd_kafka_event_error(ev)) {
    result = MakeError(Errc::kUnavailable,
                       std::string("creating Kafka topics: ") + rd_kafka_event_error_string(ev));
  } else {
    const rd_kafka_CreateTopics_result_t* res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(res, &n);
    for (size_t i = 0; i < n; ++i) {
      auto e = rd_kafka_topic_result_error(results[i]);
      std::string name = rd_kafka_topic_result_name(results[i]);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        spdlog::info("created Kafka topic {}", name);
      } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {  // another replica was first
        const char* why = rd_kafka_topic_result_error_string(results[i]);
        result = MakeError(Errc::kUnavailable, "creating Kafka topic " + name + ": " +
                                                   (why ? why : rd_kafka_err2str(e)));
        break;
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(admin);
  rd_kafka_queue_destroy(queue);
  for (auto* s : specs) rd_kafka_NewTopic_destroy(s);
  if (!result) return result;
  // A created topic takes a moment to have leaders everywhere.
  for (const TopicSpec* t : missing) {
    while (true) {
      Status s = TopicHealth(rk->get(), t->name, std::chrono::milliseconds(1000));
      if (s) break;
      if (std::chrono::steady_clock::now() >= deadline) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return Status::Ok();
}

// ---- Producer -------------------------------------------------------------------------------

namespace {

// Call is one Produce call: its callback runs once every message was reported.
struct Call {
  std::atomic<std::int64_t> remaining;
  std::atomic<int> error{0};  // the first rd_kafka_resp_err_t, 0 when none
  Producer::Callback done;
  std::atomic<std::int64_t>* pending;
  std::int64_t count;

  void Report(rd_kafka_resp_err_t err, std::int64_t n) {
    if (err) {
      int expected = 0;
      error.compare_exchange_strong(expected, static_cast<int>(err));
    }
    if (remaining.fetch_sub(n) != n) return;
    pending->fetch_sub(count);
    int e = error.load();
    if (e == 0) {
      done(Status::Ok());
    } else {
      done(KafkaError(static_cast<rd_kafka_resp_err_t>(e), "Kafka did not take the message"));
    }
    delete this;
  }
};

void DeliveryReport(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  static_cast<Call*>(m->_private)->Report(m->err, 1);
}

}  // namespace

struct KafkaProducer::Impl {
  KafkaProducerOptions options;
  Handle rk;
  std::atomic<bool> ready{false};
  std::atomic<std::int64_t> pending{0};
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable cv;
  std::thread poller, health;

  void Poll() {
    pthread_setname_np(pthread_self(), "kafka-dr");
    while (!stopping.load()) rd_kafka_poll(rk.get(), 100);
  }

  void Health() {
    pthread_setname_np(pthread_self(), "kafka-health");
    bool logged_down = false;
    std::unique_lock lock(mu);
    while (!stopping.load()) {
      lock.unlock();
      Status s = TopicHealth(rk.get(), options.topic, std::chrono::milliseconds(2000));
      ready.store(s.ok());
      if (!s && !logged_down) {
        spdlog::warn("Kafka is not accepting readings: {}", s.error().message);
      } else if (s && logged_down) {
        spdlog::info("Kafka accepts readings again ({})", options.topic);
      }
      logged_down = !s.ok();
      lock.lock();
      cv.wait_for(lock, options.health_interval, [&] { return stopping.load(); });
    }
  }
};

Result<std::unique_ptr<KafkaProducer>> KafkaProducer::Create(const KafkaProducerOptions& o) {
  if (o.topic.empty()) return MakeError(Errc::kInvalidArgument, "Kafka producer: no topic");
  if (o.max_pending == 0) return MakeError(Errc::kInvalidArgument, "KAFKA_MAX_PENDING must be > 0");
  auto conf = NewConf(
      o.kafka,
      {
          // Durable and in order: every in-sync replica has it, no duplicates from retries.
          {"enable.idempotence", "true"},
          {"acks", "all"},
          {"linger.ms", std::to_string(o.linger.count())},
          {"batch.size", std::to_string(o.batch_bytes)},
          {"compression.type", o.compression},
          {"message.timeout.ms", std::to_string(o.delivery_timeout.count())},
          // iotd bounds what waits (max_pending) itself; librdkafka's own bound must not bite
          // first, so that a call is refused whole instead of in part.
          {"queue.buffering.max.messages",
           std::to_string(std::min<std::size_t>(o.max_pending + 100000, 10000000))},
          {"queue.buffering.max.kbytes", "2097151"},
          // The key's partition (murmur2, as the Java client), so other producers agree.
          {"partitioner", "murmur2_random"},
      });
  if (!conf) return conf.error();
  rd_kafka_conf_set_dr_msg_cb(conf->get(), DeliveryReport);
  auto rk = NewHandle(RD_KAFKA_PRODUCER, std::move(*conf));
  if (!rk) return rk.error();
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  impl->rk = std::move(*rk);
  // Ready from the start when the broker answers now (EnsureTopics usually just checked).
  impl->ready.store(TopicHealth(impl->rk.get(), o.topic, std::chrono::milliseconds(2000)).ok());
  Impl* p = impl.get();
  impl->poller = std::thread([p] { p->Poll(); });
  impl->health = std::thread([p] { p->Health(); });
  return std::unique_ptr<KafkaProducer>(new KafkaProducer(std::move(impl)));
}

KafkaProducer::KafkaProducer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), ready_(impl_->ready), pending_(impl_->pending) {}

KafkaProducer::~KafkaProducer() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping.store(true);
  }
  impl_->cv.notify_all();
  impl_->health.join();
  impl_->poller.join();
  // Whatever was not delivered by now fails: its callers get their answer (503).
  rd_kafka_flush(impl_->rk.get(), 1000);
  rd_kafka_purge(impl_->rk.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(impl_->rk.get(), 0);
  impl_->rk.reset();
}

void KafkaProducer::Produce(std::vector<Message> messages, Callback done) {
  if (messages.empty()) {
    done(Status::Ok());
    return;
  }
  const auto n = static_cast<std::int64_t>(messages.size());
  if (!ready_.load(std::memory_order_relaxed)) {
    done(MakeError(Errc::kUnavailable, "Kafka is unreachable"));
    return;
  }
  if (pending_.fetch_add(n) + n > static_cast<std::int64_t>(impl_->options.max_pending)) {
    pending_.fetch_sub(n);
    done(MakeError(Errc::kResourceExhausted, "too many readings wait for Kafka"));
    return;
  }
  auto* call = new Call{{n}, {0}, std::move(done), &pending_, n};
  const std::string& topic = impl_->options.topic;
  std::int64_t refused = 0;
  rd_kafka_resp_err_t first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (auto& m : messages) {
    rd_kafka_vu_t vu[8];
    std::size_t k = 0;
    vu[k].vtype = RD_KAFKA_VTYPE_TOPIC;
    vu[k++].u.cstr = topic.c_str();
    vu[k].vtype = RD_KAFKA_VTYPE_KEY;
    vu[k].u.mem.ptr = m.key.data();
    vu[k++].u.mem.size = m.key.size();
    vu[k].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[k].u.mem.ptr = m.payload.data();
    vu[k++].u.mem.size = m.payload.size();
    vu[k].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[k++].u.i = RD_KAFKA_MSG_F_COPY;
    vu[k].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[k++].u.ptr = call;
    std::string id;
    if (!m.routing.only_for.empty()) {
      vu[k].vtype = RD_KAFKA_VTYPE_HEADER;
      vu[k].u.header.name = kHeaderFor;
      vu[k].u.header.val = m.routing.only_for.data();
      vu[k++].u.header.size = static_cast<ssize_t>(m.routing.only_for.size());
    }
    if (m.routing.id) {
      id = std::to_string(*m.routing.id);
      vu[k].vtype = RD_KAFKA_VTYPE_HEADER;
      vu[k].u.header.name = kHeaderId;
      vu[k].u.header.val = id.data();
      vu[k++].u.header.size = static_cast<ssize_t>(id.size());
    }
    rd_kafka_error_t* error = rd_kafka_produceva(impl_->rk.get(), vu, k);
    if (error) {
      if (!first_err) first_err = rd_kafka_error_code(error);
      rd_kafka_error_destroy(error);
      ++refused;
    }
  }
  // Messages librdkafka refused get no delivery report: count them as reported (failed).
  if (refused > 0) call->Report(first_err, refused);
}

Status KafkaProducer::Flush(std::chrono::milliseconds timeout) {
  rd_kafka_resp_err_t err = rd_kafka_flush(impl_->rk.get(), static_cast<int>(timeout.count()));
  if (err) return KafkaError(err, "flushing to Kafka");
  return Status::Ok();
}

// ---- Consumer -------------------------------------------------------------------------------

struct KafkaConsumer::Impl {
  KafkaConsumerOptions options;
  Handle rk;
  AssignmentListener* listener = nullptr;
  std::atomic<bool> closed{false};
  std::atomic<bool> woken{false};
  std::uint64_t generation = 0;  // rebalances so far (the polling thread only)
  mutable std::mutex mu;  // guards `positions`
  // The assigned partitions, each with the next offset this consumer will return (-1: unknown).
  std::map<std::int32_t, std::int64_t> positions;

  static void OnRebalance(rd_kafka_t*, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<Impl*>(opaque)->Rebalance(err, parts);
  }

  std::vector<std::int32_t> Partitions(const rd_kafka_topic_partition_list_t* parts) const {
    std::vector<std::int32_t> out;
    for (int i = 0; i < parts->cnt; ++i) out.push_back(parts->elems[i].partition);
    return out;
  }

  void Rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
    ++generation;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      for (int i = 0; i < parts->cnt; ++i) {
        auto& tp = parts->elems[i];
        tp.offset = StartOffset(tp.partition);
      }
      rd_kafka_assign(rk.get(), parts);
      std::vector<std::int32_t> assigned = Partitions(parts);
      {
        std::lock_guard lock(mu);
        for (int i = 0; i < parts->cnt; ++i) {
          positions[parts->elems[i].partition] = parts->elems[i].offset >= 0 ? parts->elems[i].offset : -1;
        }
      }
      spdlog::info("{}: assigned partitions [{}] of {}", options.group,
                   fmt::join(assigned, ","), options.topic);
      if (listener && !closed.load()) listener->Assigned(assigned);
    } else {
      std::vector<std::int32_t> revoked = Partitions(parts);
      spdlog::info("{}: partitions [{}] of {} revoked", options.group, fmt::join(revoked, ","),
                   options.topic);
      if (listener && !closed.load()) listener->Revoked(revoked);
      rd_kafka_assign(rk.get(), nullptr);
      std::lock_guard lock(mu);
      positions.clear();
    }
  }

  // StartOffset asks the listener, retrying with backoff while it fails (the partition cannot be
  // read before its position is known), until the consumer closes.
  std::int64_t StartOffset(std::int32_t partition) {
    auto backoff = std::chrono::milliseconds(100);
    while (listener && !closed.load()) {
      auto start = listener->StartOffset(partition);
      if (start) return start->value_or(RD_KAFKA_OFFSET_STORED);
      spdlog::warn("{}: cannot load the position of partition {}, retrying in {} ms: {}",
                   options.group, partition, backoff.count(), start.error().message);
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    return RD_KAFKA_OFFSET_STORED;
  }
};

Result<std::unique_ptr<KafkaConsumer>> KafkaConsumer::Create(const KafkaConsumerOptions& o) {
  if (o.topic.empty() || o.group.empty()) {
    return MakeError(Errc::kInvalidArgument, "Kafka consumer: topic and group are required");
  }
  auto conf = NewConf(o.kafka, {
                                   {"group.id", o.group},
                                   // The worker commits after the store has the effect.
                                   {"enable.auto.commit", "false"},
                                   {"enable.auto.offset.store", "false"},
                                   {"auto.offset.reset", o.from_latest ? "latest" : "earliest"},
                                   {"session.timeout.ms", std::to_string(o.session_timeout.count())},
                                   {"heartbeat.interval.ms",
                                    std::to_string(std::max<std::int64_t>(
                                        100, o.session_timeout.count() / 4))},
                                   // Keep fetching while the worker applies a batch: librdkafka
                                   // 2.0 pauses a partition for a second at 100,000 queued
                                   // messages (memory stays bounded by
                                   // queued.max.messages.kbytes, 64 MiB).
                                   {"queued.min.messages", "1000000"},
                                   // Only what the producers committed (no aborted transactions).
                                   {"isolation.level", "read_committed"},
                               });
  if (!conf) return conf.error();
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  rd_kafka_conf_set_opaque(conf->get(), impl.get());
  rd_kafka_conf_set_rebalance_cb(conf->get(), &Impl::OnRebalance);
  auto rk = NewHandle(RD_KAFKA_CONSUMER, std::move(*conf));
  if (!rk) return rk.error();
  impl->rk = std::move(*rk);
  rd_kafka_poll_set_consumer(impl->rk.get());
  return std::unique_ptr<KafkaConsumer>(new KafkaConsumer(std::move(impl)));
}

KafkaConsumer::KafkaConsumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KafkaConsumer::~KafkaConsumer() { Close(); }

void KafkaConsumer::Close() {
  if (impl_->closed.exchange(true)) return;
  impl_->listener = nullptr;
  rd_kafka_consumer_close(impl_->rk.get());
}

Status KafkaConsumer::Subscribe(AssignmentListener& listener) {
  impl_->listener = &listener;
  PartitionList topics(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(topics.get(), impl_->options.topic.c_str(),
                                    RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(impl_->rk.get(), topics.get());
  if (err) return KafkaError(err, "subscribing to " + impl_->options.topic);
  return Status::Ok();
}

namespace {

Routing RoutingOf(const rd_kafka_message_t* m) {
  Routing r;
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(m, &headers) || !headers) return r;
  const void* value = nullptr;
  size_t size = 0;
  if (!rd_kafka_header_get_last(headers, kHeaderFor, &value, &size) && value) {
    r.only_for.assign(static_cast<const char*>(value), size);
  }
  if (!rd_kafka_header_get_last(headers, kHeaderId, &value, &size) && value && size > 0 &&
      size < 20) {
    std::string text(static_cast<const char*>(value), size);
    char* end = nullptr;
    long long id = std::strtoll(text.c_str(), &end, 10);
    if (end && *end == '\0' && id >= 0) r.id = id;
  }
  return r;
}

}  // namespace

Result<std::vector<Record>> KafkaConsumer::Poll(std::size_t max_records,
                                                std::chrono::milliseconds timeout) {
  if (impl_->closed.load()) return MakeError(Errc::kUnavailable, "the Kafka consumer is closed");
  std::vector<Record> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<Error> error;
  std::uint64_t generation = impl_->generation;
  while (out.size() < max_records) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    // Wait only while nothing was returned yet; then take what is already fetched.
    int wait = out.empty() ? static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 100)) : 0;
    if (impl_->woken.exchange(false)) break;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(impl_->rk.get(), wait);
    if (generation != impl_->generation) {
      // A rebalance ran inside this poll: what was collected before it may belong to partitions
      // that are gone, or that start again elsewhere. Drop it; it is fetched again if still ours.
      generation = impl_->generation;
      out.clear();
    }
    if (!m) {
      if (!out.empty() || std::chrono::steady_clock::now() >= deadline) break;
      continue;
    }
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        error = KafkaError(m->err, "consuming " + impl_->options.topic);
      }
      rd_kafka_message_destroy(m);
      if (error) break;
      continue;
    }
    Record r;
    r.partition = m->partition;
    r.offset = m->offset;
    rd_kafka_timestamp_type_t type;
    std::int64_t ms = rd_kafka_message_timestamp(m, &type);
    r.appended_at = core::Timestamp(core::Micros(ms > 0 ? ms * 1000 : 0));
    if (m->key) r.key.assign(static_cast<const char*>(m->key), m->key_len);
    if (m->payload) r.payload.assign(static_cast<const char*>(m->payload), m->len);
    r.routing = RoutingOf(m);
    rd_kafka_message_destroy(m);
    {
      std::lock_guard lock(impl_->mu);
      auto it = impl_->positions.find(r.partition);
      if (it != impl_->positions.end()) it->second = r.offset + 1;
    }
    out.push_back(std::move(r));
  }
  if (out.empty() && error) {
    // Transport errors come and go while a broker restarts; librdkafka reconnects by itself.
    return *error;
  }
  return out;
}

Status KafkaConsumer::Seek(std::int32_t partition, std::int64_t next_offset) {
  PartitionList list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), impl_->options.topic.c_str(), partition)->offset =
      next_offset;
  rd_kafka_error_t* error = rd_kafka_seek_partitions(impl_->rk.get(), list.get(), 5000);
  if (error) {
    Error e{Errc::kUnavailable, std::string("seeking partition ") + std::to_string(partition) +
                                    ": " + rd_kafka_error_string(error)};
    rd_kafka_error_destroy(error);
    return e;
  }
  if (list->elems[0].err) return KafkaError(list->elems[0].err, "seeking partition " + std::to_string(partition));
  std::lock_guard lock(impl_->mu);
  auto it = impl_->positions.find(partition);
  if (it != impl_->positions.end()) it->second = next_offset;
  return Status::Ok();
}

Status KafkaConsumer::Commit(std::int32_t partition, std::int64_t next_offset) {
  PartitionList list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), impl_->options.topic.c_str(), partition)->offset =
      next_offset;
  rd_kafka_resp_err_t err =
      rd_kafka_commit(impl_->rk.get(), list.get(), impl_->options.synchronous_commit ? 0 : 1);
  if (err) return KafkaError(err, "committing to the Kafka group " + impl_->options.group);
  return Status::Ok();
}

std::vector<PartitionLag> KafkaConsumer::Lags() const {
  std::vector<std::pair<std::int32_t, std::int64_t>> positions;
  {
    std::lock_guard lock(impl_->mu);
    positions.assign(impl_->positions.begin(), impl_->positions.end());
  }
  std::vector<PartitionLag> out;
  for (auto [partition, next] : positions) {
    std::int64_t low = 0, high = 0;
    // The watermarks the last fetch response carried: no request to the broker.
    if (rd_kafka_get_watermark_offsets(impl_->rk.get(), impl_->options.topic.c_str(), partition,
                                       &low, &high)) {
      continue;
    }
    if (high < 0) continue;
    std::int64_t from = next >= 0 ? std::max(next, low) : low;
    out.push_back(PartitionLag{partition, std::max<std::int64_t>(0, high - from)});
  }
  return out;
}

std::int64_t KafkaConsumer::Lag() const {
  std::int64_t total = 0;
  for (const auto& l : Lags()) total += l.lag;
  return total;
}

void KafkaConsumer::Wakeup() { impl_->woken.store(true); }

Result<std::map<std::int32_t, std::int64_t>> KafkaConsumer::EndOffsets(
    std::chrono::milliseconds timeout) {
  int partitions = 0;
  if (Status s = TopicHealth(impl_->rk.get(), impl_->options.topic, timeout, &partitions); !s) {
    return s.error();
  }
  std::map<std::int32_t, std::int64_t> out;
  for (std::int32_t p = 0; p < partitions; ++p) {
    std::int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        impl_->rk.get(), impl_->options.topic.c_str(), p, &low, &high,
        static_cast<int>(timeout.count()));
    if (err) return KafkaError(err, "the end offsets of " + impl_->options.topic);
    out[p] = high;
  }
  return out;
}

}  // namespace iot::bus
