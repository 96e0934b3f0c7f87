#include "app/run.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <future>
#include <map>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <fmt/format.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "bus/embedded_bus.h"
#include "bus/kafka_bus.h"
#include "core/alert.h"
#include "core/window.h"
#include "http/server.h"
#include "loadgen/load_generator.h"
#include "loadgen/mqtt_publisher.h"
#include "metrics/metrics.h"
#include "auth/authenticator.h"
#include "services/aggregator.h"
#include "services/auth_guard.h"
#include "services/alerter.h"
#include "services/dashboard_service.h"
#include "services/live_stream.h"
#include "services/ui_routes.h"
#include "services/client_limit.h"
#include "services/dead_letter.h"
#include "services/ingest_service.h"
#include "services/mqtt_ingest.h"
#include "services/openapi/api_docs.h"
#include "services/ops_routes.h"
#include "store/mongo_store.h"
#include "store/sqlite_store.h"

namespace iot::app {
namespace {

namespace asio = boost::asio;

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(' ');
    auto e = item.find_last_not_of(' ');
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// Listener is one HTTP server with its own I/O threads, so that a slow dashboard query never
// holds up ingestion.
class Listener {
 public:
  Listener(std::string name, const Config& c, std::uint16_t port,
           std::shared_ptr<const http::Router> router, services::HttpProbe& probe,
           http::Admit admit = {})
      : name_(std::move(name)), threads_(c.http_threads) {
    http::ServerOptions o;
    o.address = c.bind_address;
    o.port = port;
    if (!c.tls_cert_file.empty()) {
      o.tls = http::TlsOptions{.cert_file = c.tls_cert_file, .key_file = c.tls_key_file};
      o.warn = [n = name_](const std::string& what) { spdlog::warn("{}: {}", n, what); };
    }
    o.admit = std::move(admit);
    server_ = std::make_unique<http::Server>(io_, o, std::move(router), probe.Observer(name_));
  }
  ~Listener() { Join(std::chrono::seconds(0)); }

  Status Start() {
    if (Status s = server_->Start(); !s) return s;
    spdlog::info("{} listening on port {}", name_, server_->port());
    for (int i = 0; i < threads_; ++i) {
      pool_.emplace_back([this] {
        // Thread names show in top -H, perf and gdb; at most 15 characters.
        pthread_setname_np(pthread_self(), ("http-" + name_).substr(0, 15).c_str());
        io_.run();
      });
    }
    return Status::Ok();
  }
  // Stop stops accepting; requests in flight still get their answers.
  void Stop() { server_->Stop(); }
  // Join waits for the open connections to finish, up to `grace`, then stops the I/O threads.
  void Join(std::chrono::milliseconds grace) {
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (server_->ActiveConnections() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    io_.stop();
    for (auto& t : pool_) t.join();
    pool_.clear();
  }
  std::uint16_t port() const { return server_->port(); }

 private:
  std::string name_;
  int threads_;
  asio::io_context io_;
  std::unique_ptr<http::Server> server_;
  std::vector<std::thread> pool_;
};

core::ReadingLimits LimitsFrom(const Config& c) {
  core::ReadingLimits limits;
  limits.required_sensors = SplitList(c.required_sensors);
  limits.max_future = *core::ParseDuration(c.max_future);
  return limits;
}

Result<core::RuleSet> RulesFrom(const Config& c) {
  auto defaults = core::RuleSet::Defaults(c.temp_min_threshold, c.temp_max_threshold,
                                          c.humidity_min_threshold, c.humidity_max_threshold);
  if (c.rules_file.empty()) return defaults;
  std::ifstream in(c.rules_file);
  if (!in) return MakeError(Errc::kInvalidArgument, "cannot read RULES_FILE " + c.rules_file);
  std::stringstream text;
  text << in.rdbuf();
  auto rules = core::RuleSet::FromYaml(text.str(), defaults);
  if (!rules) {
    return MakeError(Errc::kInvalidArgument, c.rules_file + ": " + rules.error().message);
  }
  return rules;
}

template <typename Sync>
Sync SyncFrom(const std::string& s) {
  if (s == "off") return Sync::kOff;
  if (s == "normal") return Sync::kNormal;
  return Sync::kFull;
}

// SignalWaiter catches SIGINT and SIGTERM from its construction on, so that a signal that
// arrives during start-up still leads to a graceful shutdown.
class SignalWaiter {
 public:
  SignalWaiter() : signals_(io_, SIGINT, SIGTERM) {
    signals_.async_wait([this](const boost::system::error_code&, int sig) { received_ = sig; });
  }
  // Wait blocks until a signal arrives (or has arrived).
  void Wait() {
    io_.run();
    spdlog::info("received signal {}, shutting down", received_);
  }

 private:
  asio::io_context io_;
  asio::signal_set signals_;
  int received_ = 0;
};

// RetentionJob runs Store::Expire on its own thread ("retention"): once at Start, then every
// `interval` until Stop, which wakes it at once (an Expire in progress finishes first; it works in
// short transactions). What it deletes is logged and counted in store_expired_total; a failure
// is logged, counted in store_expire_failures_total and tried again at the next interval.
class RetentionJob {
 public:
  RetentionJob(store::Store& store, std::chrono::microseconds interval, const core::Clock& clock,
               metrics::Registry& registry)
      : store_(store),
        interval_(interval),
        clock_(clock),
        expired_(registry.AddCounter("store_expired_total",
                                     "Raw readings and aggregates deleted by retention")),
        failures_(registry.AddCounter(
            "store_expire_failures_total",
            "Retention runs that failed (retried at the next interval)")) {}
  ~RetentionJob() { Stop(); }
  RetentionJob(const RetentionJob&) = delete;
  RetentionJob& operator=(const RetentionJob&) = delete;

  void Start() {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "retention");
      Run();
    });
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      auto deleted = store_.Expire(clock_.Now());
      if (!deleted) {
        failures_.Inc();
        spdlog::warn("retention: expiring old data failed: {}", deleted.error().message);
      } else if (*deleted > 0) {
        expired_.Inc(static_cast<double>(*deleted));
        spdlog::info("retention: deleted {} raw readings and aggregates", *deleted);
      }
      lock.lock();
      cv_.wait_for(lock, interval_, [this] { return stopping_; });
    }
  }

  store::Store& store_;
  const std::chrono::microseconds interval_;
  const core::Clock& clock_;
  metrics::Counter& expired_;
  metrics::Counter& failures_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

std::chrono::milliseconds Millis(const std::string& duration) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(*core::ParseDuration(duration));
}

bus::KafkaOptions KafkaFrom(const Config& c) {
  bus::KafkaOptions o;
  o.bootstrap_servers = c.kafka_bootstrap_servers;
  o.client_id = std::string("iotd-") + RoleName(c.role);
  o.properties = *bus::ParseKafkaProperties(c.kafka.properties);  // Validate checked it
  return o;
}

bus::KafkaProducerOptions ProducerFrom(const Config& c, const std::string& topic) {
  bus::KafkaProducerOptions o;
  o.kafka = KafkaFrom(c);
  o.topic = topic;
  o.linger = *ParseKafkaDuration(c.kafka.linger);  // Validate checked it
  o.batch_bytes = c.kafka.batch_bytes;
  o.compression = c.kafka.compression;
  o.delivery_timeout = Millis(c.kafka.delivery_timeout);
  o.max_pending = c.kafka.max_pending;
  return o;
}

int Fail(const char* what, const Status& s) {
  spdlog::critical("{}: {}", what, s.error().message);
  return 1;
}

// LiveReadings is where the dashboard's live stream reads new readings: the embedded bus of
// this process (`all`), or Kafka (BUS=kafka) through a consumer group of this process alone that
// starts at the end and commits nothing; otherwise none (the stream then has alerts only).
Result<services::ReadingSource> LiveReadings(const Config& c, bus::EmbeddedBus* embedded) {
  services::ReadingSource source;
  if (embedded) {
    source.consumer = embedded->NewConsumer("");  // anonymous: holds no retention back
    source.start_offset = [embedded](std::int32_t) -> std::optional<std::int64_t> {
      return embedded->EndOffset();
    };
    source.end_offset = [embedded] { return embedded->EndOffset(); };
  } else if (c.bus == "kafka") {
    bus::KafkaConsumerOptions o;
    o.kafka = KafkaFrom(c);
    o.topic = c.telemetry_topic;
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
    o.group = fmt::format("iotd-dashboard-stream-{}-{}", host, getpid());
    o.session_timeout = Millis(c.kafka.session_timeout);
    o.from_latest = true;
    auto made = bus::KafkaConsumer::Create(o);
    if (!made) return made.error();
    source.consumer = std::move(*made);
  }
  return source;
}

// ---- access control (docs/security.md) ----------------------------------------------------

// OpenAuthenticator opens TOKENS_FILE when INGEST_AUTH or DASHBOARD_AUTH of a role this process
// runs is `token` (else null). A file that cannot be parsed refuses the start; no file or no
// valid token starts, warns, and refuses every request with 401 until tokens are created.
Result<std::unique_ptr<auth::Authenticator>> OpenAuthenticator(const Config& c, bool ingest,
                                                               bool dashboard,
                                                               metrics::Registry& registry) {
  const bool ingest_auth = ingest && c.ingest_auth == "token";
  const bool dashboard_auth = dashboard && c.dashboard_auth == "token";
  if (!ingest_auth && !dashboard_auth) return std::unique_ptr<auth::Authenticator>();
  auth::Authenticator::Options o;
  o.path = TokensFile(c);
  auto* file_errors = &registry.AddCounter(
      "auth_tokens_file_errors_total",
      "Reloads of TOKENS_FILE that failed (the previous tokens stayed in force)");
  o.on_reload = [path = o.path, file_errors](const Status& s, std::size_t valid, bool exists) {
    if (!s) {
      file_errors->Inc();
      spdlog::error("tokens: {} cannot be used, the previous tokens stay in force: {}", path,
                    s.error().message);
    } else if (!exists) {
      spdlog::warn("tokens: {} does not exist: every request is refused (401) until tokens are "
                   "created with `iotd token create`",
                   path);
    } else if (valid == 0) {
      spdlog::warn("tokens: {} holds no valid token: every request is refused (401)", path);
    } else {
      spdlog::info("tokens: {} valid tokens in {}", valid, path);
    }
  };
  auto opened = auth::Authenticator::Open(std::move(o));
  if (!opened) return opened.error();
  registry.AddCallbackGauge("auth_tokens_valid",
                            "Tokens in TOKENS_FILE that are not revoked, as last loaded",
                            [a = opened->get()] { return static_cast<double>(a->ValidTokens()); });
  spdlog::info("access control: ingest {}, dashboard {}", ingest ? c.ingest_auth : "-",
               dashboard ? c.dashboard_auth : "-");
  return opened;
}

}  // namespace

int RunServer(const Config& c) {
  SignalWaiter signals;
  const core::Clock& clock = core::SystemClock();
  const auto shutdown_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(*core::ParseDuration(c.shutdown_timeout));
  metrics::Registry registry;
  metrics::AddProcessMetrics(registry);
  services::HttpProbe http_probe(registry);

  std::error_code ec;
  std::filesystem::create_directories(c.data_dir, ec);
  if (ec) {
    spdlog::critical("cannot create DATA_DIR {}: {}", c.data_dir, ec.message());
    return 1;
  }
  const bool runs_ingest = c.role == Role::kAll || c.role == Role::kIngest;
  const bool runs_dashboard = c.role == Role::kAll || c.role == Role::kDashboard;
  const bool runs_aggregator = c.role == Role::kAll || c.role == Role::kAggregator;
  const bool runs_alerts = c.role == Role::kAll || c.role == Role::kAlerts;
  const bool runs_workers = runs_aggregator || runs_alerts;
  const bool kafka = c.bus == "kafka";

  // The store (ingest needs none: the bus is where its readings go).
  std::unique_ptr<store::Store> store;
  if (c.role == Role::kIngest) {
    // no store
  } else if (c.store == "mongodb") {
    store::MongoStoreOptions mo;
    mo.url = c.mongo_url;
    mo.database = c.mongo_db;
    // Threads that use the store: HTTP threads, two workers, retention, the health monitor.
    mo.max_pool_size = c.mongo_pool_size > 0 ? static_cast<std::size_t>(c.mongo_pool_size)
                                             : static_cast<std::size_t>(c.http_threads) + 4;
    auto timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(*core::ParseDuration(c.mongo_timeout));
    mo.connect_timeout = timeout;
    mo.server_selection_timeout = timeout;
    mo.retention = RetentionFrom(c);
    auto opened = store::MongoStore::Open(mo);
    if (!opened) return Fail("cannot open the MongoDB store", opened.status());
    spdlog::info("store: MongoDB database {}", c.mongo_db);
    store = std::move(*opened);
  } else {
    store::SqliteStoreOptions so;
    so.path = (std::filesystem::path(c.data_dir) / "store.db").string();
    so.sync = SyncFrom<store::SqliteStoreOptions::Sync>(c.store_sync);
    so.retention = RetentionFrom(c);
    auto opened = store::SqliteStore::Open(so);
    if (!opened) return Fail("cannot open the store", opened.status());
    store = std::move(*opened);
  }

  // The bus.
  std::shared_ptr<bus::EmbeddedBus> bus;
  std::unique_ptr<bus::Producer> producer;
  std::unique_ptr<bus::KafkaProducer> dlq_producer;  // the workers' dead letters (Kafka)
  std::unique_ptr<bus::Consumer> agg_consumer, alerts_consumer;
  if (kafka && (runs_ingest || runs_workers)) {
    const bus::KafkaOptions ko = KafkaFrom(c);
    const std::vector<bus::TopicSpec> topics = {
        {c.telemetry_topic, c.kafka.partitions, c.kafka.replication_factor},
        {c.dlq_topic, c.kafka.partitions, c.kafka.replication_factor}};
    if (Status s = bus::EnsureTopics(ko, topics, c.kafka.create_topics, Millis(c.kafka.startup_timeout));
        !s) {
      return Fail("Kafka is not ready", s);
    }
    spdlog::info("bus: Kafka at {}, topics {} and {}", c.kafka_bootstrap_servers,
                 c.telemetry_topic, c.dlq_topic);
    if (runs_ingest) {
      auto p = bus::KafkaProducer::Create(ProducerFrom(c, c.telemetry_topic));
      if (!p) return Fail("cannot create the Kafka producer", p.status());
      registry.AddCallbackGauge("kafka_producer_pending_messages",
                                "Readings waiting for Kafka's acknowledgement",
                                [raw = p->get()] { return static_cast<double>(raw->Pending()); });
      producer = std::move(*p);
    }
    if (runs_workers) {
      auto p = bus::KafkaProducer::Create(ProducerFrom(c, c.dlq_topic));
      if (!p) return Fail("cannot create the Kafka dead-letter producer", p.status());
      dlq_producer = std::move(*p);
      auto consumer = [&](const std::string& group) -> Result<std::unique_ptr<bus::Consumer>> {
        bus::KafkaConsumerOptions o;
        o.kafka = ko;
        o.topic = c.telemetry_topic;
        o.group = group;
        o.session_timeout = Millis(c.kafka.session_timeout);
        auto made = bus::KafkaConsumer::Create(o);
        if (!made) return made.error();
        return std::unique_ptr<bus::Consumer>(std::move(*made));
      };
      if (runs_aggregator) {
        auto made = consumer(c.kafka.aggregator_group);
        if (!made) return Fail("cannot create the aggregator's Kafka consumer", made.status());
        agg_consumer = std::move(*made);
      }
      if (runs_alerts) {
        auto made = consumer(c.kafka.alerts_group);
        if (!made) return Fail("cannot create the alerts worker's Kafka consumer", made.status());
        alerts_consumer = std::move(*made);
      }
    }
  } else if (runs_ingest || runs_workers) {
    bus::EmbeddedBusOptions bo;
    bo.path = (std::filesystem::path(c.data_dir) / "bus.db").string();
    bo.sync = SyncFrom<bus::EmbeddedBusOptions::Sync>(c.sync);
    bo.max_pending_messages = c.bus_max_pending;
    auto commit_size = &registry.AddHistogram(
        "bus_group_commit_messages", "Messages made durable per group commit",
        {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536});
    auto commit_seconds = &registry.AddHistogram(
        "bus_group_commit_seconds", "Time to write and sync one group commit",
        metrics::LatencyBuckets());
    auto commit_failures = &registry.AddCounter(
        "bus_group_commit_failures_total", "Group commits that failed (their readings got 503)");
    bo.on_group_commit = [commit_size, commit_seconds,
                          commit_failures](const bus::GroupCommitInfo& info) {
      if (!info.ok) {
        commit_failures->Inc();
        return;
      }
      commit_size->Observe(static_cast<double>(info.messages));
      commit_seconds->Observe(info.commit_seconds);
    };
    // The workers' positions in the store: a bus file that ends below them (a restore of the
    // store without its bus.db, a deleted bus.db) continues from there instead of assigning
    // offsets the workers would skip (docs/deployment.md, "Backup and restore").
    std::vector<std::pair<std::string, std::int64_t>> applied;
    for (const char* worker : {"aggregator", "alerts"}) {
      auto cp = store->LoadCheckpoint(worker, 0);
      if (!cp) return Fail("cannot read the workers' checkpoints", cp.status());
      if (cp->has_value()) {
        applied.emplace_back(worker, **cp);
        bo.min_end_offset = std::max(bo.min_end_offset, **cp);
      }
    }
    auto opened_bus = bus::EmbeddedBus::Open(bo);
    if (!opened_bus) return Fail("cannot open the bus", opened_bus.status());
    bus = std::move(*opened_bus);
    registry.AddCallbackGauge("bus_pending_messages", "Messages waiting for a group commit",
                              [b = bus.get()] {
                                return static_cast<double>(b->GetStats().pending_messages);
                              });
    registry.AddCallbackGauge("bus_end_offset", "The next offset the bus will assign",
                              [b = bus.get()] { return static_cast<double>(b->EndOffset()); });
    if (bus->FoundEndOffset() < bus->EndOffset()) {
      spdlog::warn("bus: {} ended at offset {}, below what the store has applied ({}): it is "
                   "older than the store (restored without it, deleted, or a tail lost with "
                   "SYNC=off); new readings start at offset {}, so none is skipped",
                   bo.path, bus->FoundEndOffset(), bus->EndOffset(), bus->EndOffset());
    }
    for (const auto& [worker, at] : applied) {
      if (at < bus->BeginOffset()) {
        spdlog::error("bus: the store's {} has applied up to offset {}, but {} starts at {}: the "
                      "store is older than the bus (restored without it?); the readings in "
                      "between are not in the bus any more and will be missing",
                      worker, at, bo.path, bus->BeginOffset());
      }
    }
    producer = bus->NewProducer();
    if (runs_aggregator) agg_consumer = bus->NewConsumer("aggregator");
    if (runs_alerts) alerts_consumer = bus->NewConsumer("alerts");
  }

  // The workers.
  services::WorkerTuning tuning;
  tuning.max_retries = c.max_retries;
  tuning.topic = kafka ? c.telemetry_topic : "embedded";
  tuning.dead_letters = dlq_producer.get();
  std::unique_ptr<services::Aggregator> aggregator;
  std::unique_ptr<services::Notifier> notifier;  // outlives the alerter, which uses it
  std::unique_ptr<services::Alerter> alerter;
  if (runs_aggregator) {
    aggregator = std::make_unique<services::Aggregator>(*core::ParseWindows(c.agg_windows),
                                                        *agg_consumer, *store, registry, clock,
                                                        tuning);
    if (Status s = aggregator->Start(); !s) return Fail("cannot start the aggregator", s);
  }
  if (runs_alerts) {
    auto rules = RulesFrom(c);
    if (!rules) return Fail("invalid alert rules", rules.status());
    // Alert notifications (docs/notifications.md): only when a receiver is configured.
    auto notify = NotifierOptionsFrom(c);
    if (!notify) return Fail("invalid notification options", notify.status());
    if (!notify->webhook_urls.empty() || !notify->alertmanager_url.empty()) {
      notify->shutdown_grace = std::min(notify->shutdown_grace, shutdown_timeout / 4);
      notify->open_alerts = [&open_store = *store] { return open_store.OpenAlerts(); };
      notifier = std::make_unique<services::Notifier>(std::move(*notify), registry);
      notifier->Start();
    }
    alerter = std::make_unique<services::Alerter>(std::move(*rules), *alerts_consumer, *store,
                                                  registry, tuning, notifier.get());
    if (Status s = alerter->Start(); !s) return Fail("cannot start the alerts worker", s);
  }

  // Retention: the process that writes the aggregates deletes what it no longer keeps.
  std::unique_ptr<RetentionJob> retention;
  if (runs_aggregator && !RetentionFrom(c).empty()) {
    retention = std::make_unique<RetentionJob>(*store, *core::ParseDuration(c.retention_interval),
                                               clock, registry);
    retention->Start();
  }

  // Access control (docs/security.md): a guard per API whose *_AUTH is `token`.
  auto authenticator = OpenAuthenticator(c, runs_ingest, runs_dashboard, registry);
  if (!authenticator) return Fail("cannot read TOKENS_FILE", authenticator.status());
  std::unique_ptr<services::AuthMetrics> auth_metrics;
  std::unique_ptr<services::AuthGuard> ingest_guard, dashboard_guard;
  if (*authenticator) {
    auth_metrics = std::make_unique<services::AuthMetrics>(registry);
    if (runs_ingest && c.ingest_auth == "token") {
      ingest_guard =
          std::make_unique<services::AuthGuard>(**authenticator, "ingest", *auth_metrics);
    }
    if (runs_dashboard && c.dashboard_auth == "token") {
      dashboard_guard =
          std::make_unique<services::AuthGuard>(**authenticator, "dashboard", *auth_metrics);
    }
  }

  // The listeners.
  // RATE_LIMIT_CLIENT's buckets, kept by the ingest listener's admission check (declared before
  // the listeners, which use it until they are destroyed).
  core::RateLimiter client_limiter(
      {.rate = c.rate_limits.client, .burst = c.rate_limits.client_burst});
  std::unique_ptr<services::IngestService> ingest;
  std::unique_ptr<services::DashboardService> dashboard;
  std::unique_ptr<services::LiveStream> live;
  std::unique_ptr<Listener> ingest_listener, dashboard_listener, worker_listener;
  auto ready = [&]() -> Status {
    if (producer && !producer->Ready()) {
      return MakeError(Errc::kUnavailable, "the bus is not accepting messages");
    }
    if (dlq_producer && !dlq_producer->Ready()) {
      return MakeError(Errc::kUnavailable, "Kafka is unreachable");
    }
    if (aggregator && !aggregator->Healthy()) {
      return MakeError(Errc::kUnavailable, "the aggregator cannot write to the store");
    }
    if (alerter && !alerter->Healthy()) {
      return MakeError(Errc::kUnavailable, "the alerts worker cannot write to the store");
    }
    return store ? store->Ping() : Status::Ok();
  };
  if (runs_ingest) {
    services::IngestOptions io;
    io.limits = LimitsFrom(c);
    io.max_body_bytes = c.max_body_bytes;
    io.max_batch_bytes = c.max_batch_bytes;
    io.batch_max_items = c.batch_max_items;
    io.device_rate = {.rate = c.rate_limits.device, .burst = c.rate_limits.device_burst};
    ingest = std::make_unique<services::IngestService>(io, *producer, registry, clock,
                                                       ingest_guard.get());
    auto router = std::make_shared<http::Router>();
    ingest->RegisterRoutes(*router);
    services::AddOpsRoutes(*router, registry, ready);
    services::AddApiDocsRoutes(*router, services::Api::kIngest);
    ingest_listener = std::make_unique<Listener>(
        "ingest", c, c.ingest_port, std::move(router), http_probe,
        services::MakeClientLimit(client_limiter,
                                  *services::ParseCidrs(c.rate_limits.trusted_proxies), registry,
                                  clock));
    if (Status s = ingest_listener->Start(); !s) return Fail("cannot listen (ingest)", s);
  }
  // MQTT ingestion (docs/mqtt.md): roles ingest and all, when MQTT_URL is set.
  std::unique_ptr<services::MqttIngest> mqtt_ingest;
  if (runs_ingest && !c.mqtt.url.empty()) {
    auto client = MqttClientFrom(c);
    if (!client) return Fail("invalid MQTT options", client.status());
    services::MqttIngestOptions mo;
    mo.limits = LimitsFrom(c);
    mo.max_payload_bytes = c.max_batch_bytes;
    mo.max_items = c.batch_max_items;
    mqtt_ingest = std::make_unique<services::MqttIngest>(mo, std::move(*client), *producer,
                                                         registry, clock);
    if (Status s = mqtt_ingest->Start(); !s) return Fail("cannot start MQTT ingestion", s);
    spdlog::info("mqtt: ingestion on, topics {}", c.mqtt.topics);
  }
  if (runs_dashboard) {
    dashboard = std::make_unique<services::DashboardService>(*store, clock, dashboard_guard.get());
    auto readings = LiveReadings(c, bus.get());
    if (!readings) return Fail("cannot read the bus for the live stream", readings.status());
    services::LiveStreamOptions lo;
    lo.max_clients = c.stream_max_clients;
    lo.client_buffer_bytes = c.stream_client_buffer;
    live = std::make_unique<services::LiveStream>(lo, *store, std::move(*readings), registry,
                                                  dashboard_guard.get());
    dashboard->OnAlertChanged([&live](const core::Alert& a) {
      if (live) live->PublishAlert(a);
    });
    auto router = std::make_shared<http::Router>();
    dashboard->RegisterRoutes(*router);
    live->RegisterRoutes(*router);
    services::UiOptions uo;
    uo.stale_after =
        std::chrono::duration_cast<std::chrono::seconds>(*core::ParseDuration(c.ui_stale_after));
    services::AddUiRoutes(*router, uo);
    services::AddOpsRoutes(*router, registry, ready);
    services::AddApiDocsRoutes(*router, services::Api::kDashboard);
    dashboard_listener = std::make_unique<Listener>("dashboard", c, c.dashboard_port,
                                                    std::move(router), http_probe);
    if (Status s = dashboard_listener->Start(); !s) return Fail("cannot listen (dashboard)", s);
  }
  if (c.role == Role::kAggregator || c.role == Role::kAlerts) {
    // A worker on its own serves /metrics, /health and /ready on its port (the seed's 8003, 8004).
    auto router = std::make_shared<http::Router>();
    services::AddOpsRoutes(*router, registry, ready);
    const bool agg = c.role == Role::kAggregator;
    worker_listener = std::make_unique<Listener>(agg ? "aggregator" : "alerts", c,
                                                 agg ? c.aggregator_port : c.alerts_port,
                                                 std::move(router), http_probe);
    if (Status s = worker_listener->Start(); !s) return Fail("cannot listen (metrics)", s);
  }
  spdlog::info("iotd {} ready", RoleName(c.role));

  signals.Wait();

  // Graceful shutdown: stop accepting, answer what is in flight, make it durable, then stop the
  // workers (they resume from their checkpoints at the next start).
  auto start = std::chrono::steady_clock::now();
  // MQTT: stop reading, let what is in flight become durable and be acknowledged, disconnect.
  if (mqtt_ingest) mqtt_ingest->Stop(shutdown_timeout * 4 / 10);
  if (ingest_listener) ingest_listener->Stop();
  if (dashboard_listener) dashboard_listener->Stop();
  if (worker_listener) worker_listener->Stop();
  auto grace = shutdown_timeout * 6 / 10;
  if (ingest_listener) ingest_listener->Join(grace);
  if (dashboard_listener) dashboard_listener->Join(std::chrono::milliseconds(500));
  live.reset();  // before the bus closes: it reads it
  if (worker_listener) worker_listener->Join(std::chrono::milliseconds(500));
  if (producer) {
    if (Status s = producer->Flush(shutdown_timeout / 5); !s) {
      spdlog::warn("bus flush incomplete: {}", s.error().message);
    }
  }
  if (retention) retention->Stop();
  if (aggregator) aggregator->Stop();
  if (alerter) alerter->Stop();
  if (notifier) notifier->Stop();  // after the alerter: it delivers what the alerter queued
  if (bus) bus->Close();
  spdlog::info("stopped in {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count());
  return 0;
}

namespace {

// ReplayListener starts every partition of DLQ_TOPIC where the replay group left off.
class ReplayListener final : public bus::AssignmentListener {
 public:
  Result<std::optional<std::int64_t>> StartOffset(std::int32_t) override {
    return std::optional<std::int64_t>();
  }
  void Assigned(const std::vector<std::int32_t>&) override {}
  void Revoked(const std::vector<std::int32_t>&) override {}
};

std::atomic<bool> replay_interrupted{false};

}  // namespace

int RunDlqReplay(const Config& c) {
  std::signal(SIGINT, [](int) { replay_interrupted.store(true); });
  std::signal(SIGTERM, [](int) { replay_interrupted.store(true); });
  const bus::KafkaOptions ko = KafkaFrom(c);
  if (Status s = bus::EnsureTopics(ko,
                                   {{c.telemetry_topic, c.kafka.partitions, c.kafka.replication_factor},
                                    {c.dlq_topic, c.kafka.partitions, c.kafka.replication_factor}},
                                   /*create=*/false, Millis(c.kafka.startup_timeout));
      !s) {
    return Fail("Kafka is not ready", s);
  }
  auto producer = bus::KafkaProducer::Create(ProducerFrom(c, c.telemetry_topic));
  if (!producer) return Fail("cannot create the Kafka producer", producer.status());
  bus::KafkaConsumerOptions co;
  co.kafka = ko;
  co.topic = c.dlq_topic;
  co.group = c.dlq_replay.group;
  co.session_timeout = Millis(c.kafka.session_timeout);
  co.synchronous_commit = true;
  auto consumer = bus::KafkaConsumer::Create(co);
  if (!consumer) return Fail("cannot create the Kafka consumer", consumer.status());
  ReplayListener listener;
  if (Status s = (*consumer)->Subscribe(listener); !s) return Fail("cannot subscribe", s);

  // Only what is there now: a dead letter that fails again is published again, and replaying
  // it again would never end.
  auto ends = (*consumer)->EndOffsets(Millis(c.kafka.startup_timeout));
  if (!ends) return Fail("cannot read the end of DLQ_TOPIC", ends.status());
  std::map<std::int32_t, std::int64_t> done;  // next offset per partition, as far as replayed
  auto finished = [&] {
    for (const auto& [partition, end] : *ends) {
      if (end == 0) continue;
      auto it = done.find(partition);
      if (it == done.end() || it->second < end) return false;
    }
    return true;
  };
  const auto idle = Millis(c.dlq_replay.idle);
  auto last_seen = std::chrono::steady_clock::now();
  std::int64_t replayed = 0, skipped = 0;
  while (!replay_interrupted.load() && !finished()) {
    auto polled = (*consumer)->Poll(1000, std::chrono::milliseconds(200));
    if (!polled || polled->empty()) {
      if (!polled) spdlog::warn("dlq replay: {}", polled.error().message);
      // Partitions whose start (the group's committed offset) is already at their end send
      // nothing: stop once nothing came for DLQ_REPLAY_IDLE.
      if (std::chrono::steady_clock::now() - last_seen > idle) break;
      continue;
    }
    last_seen = std::chrono::steady_clock::now();
    std::vector<bus::Message> messages;
    std::map<std::int32_t, std::int64_t> next;
    for (const auto& record : *polled) {
      auto end = ends->find(record.partition);
      if (end == ends->end() || record.offset >= end->second) continue;  // newer than the start
      next[record.partition] = record.offset + 1;
      auto dl = services::ParseDeadLetter(record.payload);
      if (!dl) {
        ++skipped;
        spdlog::warn("dlq replay: skipping partition {} offset {}: {}", record.partition,
                     record.offset, dl.error().message);
        continue;
      }
      if ((!c.dlq_replay.consumer.empty() && dl->consumer != c.dlq_replay.consumer) ||
          dl->topic != c.telemetry_topic) {
        ++skipped;
        continue;
      }
      bus::Message m;
      m.key = dl->key;
      m.payload = std::move(dl->payload);
      // Only the worker that gave up on it takes it again, under its original message id.
      m.routing.only_for = dl->consumer;
      m.routing.id = core::MessageId::Of(dl->partition, dl->offset).value;
      messages.push_back(std::move(m));
    }
    if (!messages.empty()) {
      std::promise<Status> promise;
      auto sent = promise.get_future();
      const auto n = static_cast<std::int64_t>(messages.size());
      (*producer)->Produce(std::move(messages), [&promise](Status s) { promise.set_value(s); });
      if (Status s = sent.get(); !s) return Fail("republishing dead letters failed", s);
      replayed += n;
    }
    for (const auto& [partition, offset] : next) {
      if (Status s = (*consumer)->Commit(partition, offset); !s) {
        return Fail("committing the replay's position failed", s);
      }
      done[partition] = offset;
    }
  }
  (*consumer)->Close();
  std::cout << "replayed " << replayed << " dead letters to " << c.telemetry_topic
            << " (skipped " << skipped << ")" << std::endl;
  return 0;
}

namespace {

std::atomic<bool> mqtt_load_stop{false};

// RunMqttLoadgen: `iotd loadgen --mqtt-url` (loadgen/mqtt_publisher.h).
int RunMqttLoadgen(const Config& c) {
  loadgen::MqttLoadOptions o;
  o.url = c.loadgen.mqtt_url;
  o.devices = c.loadgen.devices;
  o.rps = c.loadgen.rps;
  o.unthrottled = c.loadgen.unthrottled || c.loadgen.rps == 0;
  if (!c.loadgen.duration.empty()) o.duration = Millis(c.loadgen.duration);
  o.count = c.loadgen.count;
  o.batch = c.loadgen.batch;
  o.connections = c.loadgen.connections;
  o.max_inflight = c.loadgen.max_inflight;
  o.seed = c.loadgen.seed;
  o.hot_fraction = c.loadgen.hot_fraction;
  if (Status s = loadgen::ValidateMqttLoad(o); !s) {
    std::cerr << "iotd loadgen: " << s.error().message << "\n";
    return 2;
  }
  std::signal(SIGINT, [](int) { mqtt_load_stop.store(true); });
  std::signal(SIGTERM, [](int) { mqtt_load_stop.store(true); });
  auto summary = loadgen::RunMqttLoad(o, std::cerr, mqtt_load_stop);
  loadgen::PrintSummary(std::cout, summary);
  loadgen::LoadgenOptions lo;
  lo.max_error_rate = c.loadgen.max_error_rate;
  return loadgen::ExitCodeFor(summary, lo);
}

}  // namespace

int RunLoadgen(const Config& c) {
  if (!c.loadgen.mqtt_url.empty()) return RunMqttLoadgen(c);
  loadgen::LoadgenOptions o;
  o.devices = c.loadgen.devices;
  o.rps = c.loadgen.rps;
  o.base_url = c.loadgen.base_url;
  if (!c.loadgen.duration.empty()) {
    o.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        *core::ParseDuration(c.loadgen.duration));
  }
  o.batch = c.loadgen.batch;
  o.connections = c.loadgen.connections;
  o.unthrottled = c.loadgen.unthrottled || c.loadgen.rps == 0;
  o.max_error_rate = c.loadgen.max_error_rate;
  o.hot_fraction = c.loadgen.hot_fraction;
  o.seed = c.loadgen.seed;
  o.request_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      *core::ParseDuration(c.loadgen.timeout));
  o.token = c.loadgen.token;
  if (Status s = loadgen::ValidateOptions(o); !s) {
    std::cerr << "iotd loadgen: " << s.error().message << "\n";
    return 2;
  }
  loadgen::LoadGenerator generator(o);
  asio::io_context io;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&generator](const boost::system::error_code& error, int) {
    if (!error) generator.Stop();
  });
  std::thread signal_thread([&io] { io.run(); });
  auto summary = generator.Run(std::cerr);
  loadgen::PrintSummary(std::cout, summary);
  signals.cancel();
  signal_thread.join();
  return loadgen::ExitCodeFor(summary, o);
}

}  // namespace iot::app
