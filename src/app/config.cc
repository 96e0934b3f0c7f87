#include "app/config.h"

#include <algorithm>
#include <cstdio>

#include <unistd.h>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bus/kafka_bus.h"
#include "core/text.h"
#include "core/time.h"
#include "core/window.h"
#include "http/response.h"
#include "services/client_limit.h"
#include "mqtt/packet.h"

namespace iot::app {
namespace {

void AddCommon(CLI::App* app, Config& c);

// Adds a flag bound to `value`, falling back to the environment variable `env`.
template <typename T>
CLI::Option* Opt(CLI::App* app, const std::string& flag, const char* env, T& value,
                 const std::string& help) {
  return app->add_option(flag, value, help)->envname(env)->capture_default_str();
}

void AddNetwork(CLI::App* app, Config& c, bool ingest, bool dashboard, bool aggregator,
                bool alerts) {
  Opt(app, "--bind-address", "BIND_ADDRESS", c.bind_address, "Address the HTTP listeners bind to");
  if (ingest) Opt(app, "--ingest-port", "INGEST_PORT", c.ingest_port, "Ingestion API port");
  if (dashboard) Opt(app, "--dashboard-port", "DASHBOARD_PORT", c.dashboard_port, "Dashboard API port");
  if (aggregator)
    Opt(app, "--aggregator-port", "AGGREGATOR_PORT", c.aggregator_port, "Aggregator metrics/health port");
  if (alerts) Opt(app, "--alerts-port", "ALERTS_PORT", c.alerts_port, "Alerts worker metrics/health port");
  Opt(app, "--http-threads", "HTTP_THREADS", c.http_threads, "I/O threads per HTTP listener")
      ->check(CLI::Range(1, 64));
  Opt(app, "--tls-cert-file", "TLS_CERT_FILE", c.tls_cert_file,
      "PEM certificate chain: the HTTP listeners speak HTTPS only (with TLS_KEY_FILE)");
  Opt(app, "--tls-key-file", "TLS_KEY_FILE", c.tls_key_file,
      "PEM private key of TLS_CERT_FILE");
}

// AddRateLimits: the ingestion API's token buckets (docs/security.md).
void AddRateLimits(CLI::App* app, Config& c) {
  auto& r = c.rate_limits;
  Opt(app, "--rate-limit-device", "RATE_LIMIT_DEVICE", r.device,
      "Readings per second one device id may send (0: no limit); beyond: 429")
      ->check(CLI::Range(0.0, 1e9));
  Opt(app, "--rate-limit-device-burst", "RATE_LIMIT_DEVICE_BURST", r.device_burst,
      "Readings a device may send at once above its rate (0: one second's worth)")
      ->check(CLI::Range(0.0, 1e9));
  Opt(app, "--rate-limit-client", "RATE_LIMIT_CLIENT", r.client,
      "Requests per second one client address may send to /ingest* (0: no limit); beyond: 429")
      ->check(CLI::Range(0.0, 1e9));
  Opt(app, "--rate-limit-client-burst", "RATE_LIMIT_CLIENT_BURST", r.client_burst,
      "Requests a client may send at once above its rate (0: one second's worth)")
      ->check(CLI::Range(0.0, 1e9));
  Opt(app, "--trusted-proxies", "TRUSTED_PROXIES", r.trusted_proxies,
      "Addresses/CIDRs of proxies whose X-Forwarded-For names the client (e.g. 10.0.0.0/8)");
}

void AddKafka(CLI::App* app, Config& c) {
  auto& k = c.kafka;
  Opt(app, "--kafka-partitions", "KAFKA_PARTITIONS", k.partitions,
      "Partitions of the topics iotd creates (the most aggregator replicas that share work)")
      ->check(CLI::Range(1, 10000));
  Opt(app, "--kafka-replication-factor", "KAFKA_REPLICATION_FACTOR", k.replication_factor,
      "Replication factor of the topics iotd creates")
      ->check(CLI::Range(1, 32));
  Opt(app, "--kafka-create-topics", "KAFKA_CREATE_TOPICS", k.create_topics,
      "Create missing topics at start-up (false: fail, naming what is missing)");
  Opt(app, "--kafka-aggregator-group", "KAFKA_AGGREGATOR_GROUP", k.aggregator_group,
      "Consumer group of the aggregator replicas");
  Opt(app, "--kafka-alerts-group", "KAFKA_ALERTS_GROUP", k.alerts_group,
      "Consumer group of the alerts worker");
  Opt(app, "--kafka-linger", "KAFKA_LINGER", k.linger,
      "How long the producer waits to fill a batch (latency against throughput)");
  Opt(app, "--kafka-batch-bytes", "KAFKA_BATCH_BYTES", k.batch_bytes,
      "Largest producer batch per partition")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{64} << 20));
  Opt(app, "--kafka-compression", "KAFKA_COMPRESSION", k.compression,
      "Producer compression: none | gzip | snappy | lz4 | zstd")
      ->check(CLI::IsMember({"none", "gzip", "snappy", "lz4", "zstd"}));
  Opt(app, "--kafka-delivery-timeout", "KAFKA_DELIVERY_TIMEOUT", k.delivery_timeout,
      "How long a reading may wait for Kafka's acknowledgement before ingest answers 503");
  Opt(app, "--kafka-max-pending", "KAFKA_MAX_PENDING", k.max_pending,
      "Readings waiting for Kafka's acknowledgement beyond which ingest answers 503")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}));
  Opt(app, "--kafka-session-timeout", "KAFKA_SESSION_TIMEOUT", k.session_timeout,
      "How long the group waits for a silent worker before moving its partitions");
  Opt(app, "--kafka-timeout", "KAFKA_TIMEOUT", k.startup_timeout,
      "How long start-up waits for Kafka to answer");
  Opt(app, "--kafka-config", "KAFKA_CONFIG", k.properties,
      "Extra librdkafka properties, key=value;key=value (TLS, SASL, tuning; docs/kafka.md)");
}

void AddBackends(CLI::App* app, Config& c, bool uses_bus, bool uses_store) {
  Opt(app, "--data-dir", "DATA_DIR", c.data_dir, "Directory of the embedded bus and SQLite store");
  if (uses_bus) {
    Opt(app, "--bus", "BUS", c.bus, "Message bus: embedded | kafka")
        ->check(CLI::IsMember({"embedded", "kafka"}));
    Opt(app, "--sync", "SYNC",  c.sync,
        "Durability of the embedded bus: full (fsync per group commit) | normal | off")
        ->check(CLI::IsMember({"full", "normal", "off"}));
    Opt(app, "--kafka-bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", c.kafka_bootstrap_servers,
        "Kafka bootstrap servers (BUS=kafka)");
    Opt(app, "--telemetry-topic", "TELEMETRY_TOPIC", c.telemetry_topic, "Kafka topic for telemetry");
    Opt(app, "--dlq-topic", "DLQ_TOPIC", c.dlq_topic, "Dead letter queue topic");
    Opt(app, "--max-retries", "MAX_RETRIES", c.max_retries,
        "How often a batch the store refuses is retried before its records become dead letters")
        ->check(CLI::Range(0, 100));
    AddKafka(app, c);
  }
  if (uses_store) {
    Opt(app, "--store", "STORE", c.store, "Store: sqlite | mongodb")
        ->check(CLI::IsMember({"sqlite", "mongodb"}));
    Opt(app, "--store-sync", "STORE_SYNC", c.store_sync,
        "Durability of the SQLite store: full | normal | off (the bus is the source of truth)")
        ->check(CLI::IsMember({"full", "normal", "off"}));
    Opt(app, "--mongo-url", "MONGO_URL", c.mongo_url, "MongoDB connection URL (STORE=mongodb)");
    Opt(app, "--mongo-db", "MONGO_DB", c.mongo_db, "MongoDB database name");
    Opt(app, "--mongo-pool-size", "MONGO_POOL_SIZE", c.mongo_pool_size,
        "MongoDB connections per process (0: HTTP_THREADS + 4)")
        ->check(CLI::Range(0, 1000));
    Opt(app, "--mongo-timeout", "MONGO_TIMEOUT", c.mongo_timeout,
        "How long to wait for MongoDB to connect or be selected before an operation fails "
        "(MONGO_URL's own connectTimeoutMS / serverSelectionTimeoutMS win)");
  }
}

void AddIngest(CLI::App* app, Config& c) {
  Opt(app, "--required-sensors", "REQUIRED_SENSORS", c.required_sensors,
      "Comma-separated sensors every reading must carry (empty: none)");
  Opt(app, "--max-future", "MAX_FUTURE", c.max_future,
      "How far in the future a reading's ts may be (e.g. 5m)");
  Opt(app, "--max-body-bytes", "MAX_BODY_BYTES", c.max_body_bytes, "Largest POST /ingest body")
      ->check(CLI::Range(std::size_t{256}, std::size_t{1} << 20));
  Opt(app, "--max-batch-bytes", "MAX_BATCH_BYTES", c.max_batch_bytes,
      "Largest POST /ingest/batch body")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{256} << 20));
  Opt(app, "--batch-max-items", "BATCH_MAX_ITEMS", c.batch_max_items,
      "Most readings in one POST /ingest/batch")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
  Opt(app, "--bus-max-pending", "BUS_MAX_PENDING", c.bus_max_pending,
      "Readings waiting for a group commit beyond which ingest answers 503")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000000}));
}

void AddAggregator(CLI::App* app, Config& c) {
  Opt(app, "--agg-windows", "AGG_WINDOWS", c.agg_windows,
      "Comma-separated tumbling window sizes (e.g. 1m,1h)");
  Opt(app, "--raw-retention", "RAW_RETENTION", c.raw_retention,
      "How long raw readings are kept, on their ts (e.g. 30d; empty: forever)");
  Opt(app, "--agg-retention", "AGG_RETENTION", c.agg_retention,
      "How long aggregates of each window are kept, on their window start (e.g. 1m=7d,1h=52w; "
      "windows not listed and empty: forever)");
  Opt(app, "--retention-interval", "RETENTION_INTERVAL", c.retention_interval,
      "How often data older than the retention is deleted");
}

// ParseRetention checks and converts RAW_RETENTION and AGG_RETENTION; errors name the option.
Result<store::Retention> ParseRetention(const Config& c) {
  store::Retention r;
  if (!core::TrimBlanks(c.raw_retention).empty()) {
    auto raw = core::ParseDuration(core::TrimBlanks(c.raw_retention));
    if (!raw) {
      return MakeError(Errc::kInvalidArgument,
                       "RAW_RETENTION: not a duration: " + c.raw_retention + " (e.g. 30d)");
    }
    r.raw = *raw;
  }
  if (core::TrimBlanks(c.agg_retention).empty()) return r;
  auto windows = core::ParseWindows(c.agg_windows);
  if (!windows) return MakeError(Errc::kInvalidArgument, "AGG_WINDOWS: " + windows.error().message);
  std::string_view rest = c.agg_retention;
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = core::TrimBlanks(rest.substr(0, comma));
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return MakeError(Errc::kInvalidArgument,
                       "AGG_RETENTION: expected WINDOW=DURATION (e.g. 1m=7d), got '" +
                           std::string(item) + "'");
    }
    const std::string_view window_text = core::TrimBlanks(item.substr(0, eq));
    const std::string_view keep_text = core::TrimBlanks(item.substr(eq + 1));
    auto window = core::ParseDuration(window_text);
    if (!window || std::find(windows->begin(), windows->end(), *window) == windows->end()) {
      return MakeError(Errc::kInvalidArgument,
                       "AGG_RETENTION: '" + std::string(window_text) +
                           "' is not one of AGG_WINDOWS (" + c.agg_windows + ")");
    }
    auto keep = core::ParseDuration(keep_text);
    if (!keep) {
      return MakeError(Errc::kInvalidArgument, "AGG_RETENTION: not a duration: '" +
                                                   std::string(keep_text) + "' (for window " +
                                                   std::string(window_text) + ")");
    }
    for (const auto& [w, k] : r.aggregates) {
      if (w == *window) {
        return MakeError(Errc::kInvalidArgument,
                         "AGG_RETENTION: window " + std::string(window_text) + " listed twice");
      }
    }
    r.aggregates.emplace_back(*window, *keep);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return r;
}

void AddAlerts(CLI::App* app, Config& c) {
  Opt(app, "--temp-min-threshold", "TEMP_MIN_THRESHOLD", c.temp_min_threshold,
      "Minimum temperature threshold");
  Opt(app, "--temp-max-threshold", "TEMP_MAX_THRESHOLD", c.temp_max_threshold,
      "Maximum temperature threshold");
  Opt(app, "--humidity-min-threshold", "HUMIDITY_MIN_THRESHOLD", c.humidity_min_threshold,
      "Minimum humidity threshold");
  Opt(app, "--humidity-max-threshold", "HUMIDITY_MAX_THRESHOLD", c.humidity_max_threshold,
      "Maximum humidity threshold");
  Opt(app, "--rules-file", "RULES_FILE", c.rules_file,
      "YAML file of per-sensor and per-device alert rules (docs/alerts.md)");
}

void AddNotify(CLI::App* app, Config& c) {
  Opt(app, "--notify-webhook-urls", "NOTIFY_WEBHOOK_URLS", c.notify_webhook_urls,
      "Comma-separated http:// URLs to POST alert notifications to (docs/notifications.md)");
  Opt(app, "--alertmanager-url", "ALERTMANAGER_URL", c.alertmanager_url,
      "Prometheus Alertmanager base URL (http://host:9093) to post alerts to");
  Opt(app, "--alertmanager-resend-interval", "ALERTMANAGER_RESEND_INTERVAL",
      c.alertmanager_resend_interval, "How often active alerts are re-posted to Alertmanager");
  Opt(app, "--notify-queue-size", "NOTIFY_QUEUE_SIZE", c.notify_queue_size,
      "Notifications queued per receiver before new ones are dropped")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}));
  Opt(app, "--notify-max-retries", "NOTIFY_MAX_RETRIES", c.notify_max_retries,
      "Retries of a notification that failed (5xx, 408, 429, timeout, no connection)")
      ->check(CLI::Range(0, 100));
  Opt(app, "--notify-timeout", "NOTIFY_TIMEOUT", c.notify_timeout,
      "Limit of each notification request (connect, send, answer)");
}

// AddDashboard: the live stream and the web UI. A dashboard on its own reads readings for the
// live stream from Kafka (BUS=kafka); `all` has its embedded bus already.
void AddDashboard(CLI::App* app, Config& c, bool alone) {
  if (alone) {
    Opt(app, "--bus", "BUS", c.bus,
        "Where the live stream (GET /stream) reads new readings: kafka, or embedded (none: only "
        "`iotd all` has the embedded bus)")
        ->check(CLI::IsMember({"embedded", "kafka"}));
    Opt(app, "--kafka-bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", c.kafka_bootstrap_servers,
        "Kafka bootstrap servers (BUS=kafka)");
    Opt(app, "--telemetry-topic", "TELEMETRY_TOPIC", c.telemetry_topic, "Kafka topic for telemetry");
    AddKafka(app, c);
  }
  Opt(app, "--stream-max-clients", "STREAM_MAX_CLIENTS", c.stream_max_clients,
      "Most clients of GET /stream at once (more get 503)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  Opt(app, "--stream-client-buffer", "STREAM_CLIENT_BUFFER", c.stream_client_buffer,
      "Bytes a GET /stream client may fall behind before it is cut off")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30));
  Opt(app, "--ui-stale-after", "UI_STALE_AFTER", c.ui_stale_after,
      "The web UI marks a device stale when silent for longer than this");
}

// AddMqtt: MQTT ingestion (docs/mqtt.md), roles ingest and all.
void AddMqtt(CLI::App* app, Config& c) {
  auto& m = c.mqtt;
  Opt(app, "--mqtt-url", "MQTT_URL", m.url,
      "MQTT broker to take readings from: mqtt://[user:pass@]host[:port] or mqtts:// (TLS); "
      "empty: MQTT off");
  Opt(app, "--mqtt-topics", "MQTT_TOPICS", m.topics,
      "Comma-separated topic filters; the level at the first + is the device id; "
      "$share/<group>/<filter> splits one stream between replicas");
  Opt(app, "--mqtt-client-id", "MQTT_CLIENT_ID", m.client_id,
      "MQTT client id, the key of the persistent session (empty: iotd-ingest-<hostname>)");
  Opt(app, "--mqtt-session-expiry", "MQTT_SESSION_EXPIRY", m.session_expiry,
      "How long the broker keeps our session (and queues QoS 1 messages) while we are away; "
      "0: no persistent session");
  Opt(app, "--mqtt-receive-maximum", "MQTT_RECEIVE_MAXIMUM", m.receive_maximum,
      "Most QoS 1 messages the broker sends us before our acknowledgements")
      ->check(CLI::Range(1, 65535));
  Opt(app, "--mqtt-keepalive", "MQTT_KEEPALIVE", m.keepalive,
      "MQTT keep alive: a silent connection is given up after 1.5 times this");
  Opt(app, "--mqtt-min-backoff", "MQTT_MIN_BACKOFF", m.min_backoff,
      "First delay before reconnecting to the broker (doubled per failure, with jitter)");
  Opt(app, "--mqtt-max-backoff", "MQTT_MAX_BACKOFF", m.max_backoff,
      "Longest delay between reconnects");
  Opt(app, "--mqtt-ca-file", "MQTT_CA_FILE", m.ca_file,
      "PEM CA certificates to verify the broker (mqtts://; empty: the system's)");
  Opt(app, "--mqtt-cert-file", "MQTT_CERT_FILE", m.cert_file,
      "PEM client certificate for the broker (mqtts://, with MQTT_KEY_FILE)");
  Opt(app, "--mqtt-key-file", "MQTT_KEY_FILE", m.key_file, "PEM private key of MQTT_CERT_FILE");
}

// AddAuth: access control of the APIs a role serves (docs/security.md).
void AddAuth(CLI::App* app, Config& c, bool ingest, bool dashboard) {
  if (ingest) {
    Opt(app, "--ingest-auth", "INGEST_AUTH", c.ingest_auth,
        "Access control of POST /ingest[/batch]: off | token (a device or gateway token)")
        ->check(CLI::IsMember({"off", "token"}));
  }
  if (dashboard) {
    Opt(app, "--dashboard-auth", "DASHBOARD_AUTH", c.dashboard_auth,
        "Access control of the dashboard API, stream and UI data: off | token (a read token)")
        ->check(CLI::IsMember({"off", "token"}));
  }
  Opt(app, "--tokens-file", "TOKENS_FILE", c.tokens_file,
      "The tokens file (iotd token create|list|revoke; re-read within a second of a change); "
      "empty: DATA_DIR/tokens");
}

// AddTokenCommands: `iotd token create|list|revoke`.
void AddTokenCommands(CLI::App& app, Config& c) {
  auto* token = app.add_subcommand(
      "token", "Access tokens of devices, gateways and dashboards (docs/security.md)");
  token->require_subcommand(1);
  auto files = [&c](CLI::App* sub) {
    Opt(sub, "--data-dir", "DATA_DIR", c.data_dir, "Directory of the default tokens file");
    Opt(sub, "--tokens-file", "TOKENS_FILE", c.tokens_file,
        "The tokens file; empty: DATA_DIR/tokens");
    AddCommon(sub, c);
  };
  auto& t = c.token;
  auto* create = token->add_subcommand(
      "create", "Make a token and print it once (only its SHA-256 is stored)");
  create->parse_complete_callback([&c] { c.role = Role::kTokenCreate; });
  auto* device = create->add_option("--device", t.device, "A device token: writes this device");
  auto* gateway = create->add_option("--gateway", t.gateway,
                                     "A gateway token: writes these devices (ID,ID,...)");
  auto* read = create->add_flag("--read", t.read, "A read token: the dashboard API and UI");
  device->excludes(gateway)->excludes(read);
  gateway->excludes(read);
  create->add_option("--prefix", t.prefix,
                     "With --read: only devices whose id starts with this")
      ->needs(read);
  create->add_option("--name", t.name, "What or who holds the token (shown by list)");
  files(create);
  auto* list = token->add_subcommand("list", "List tokens (never their secrets)");
  list->parse_complete_callback([&c] { c.role = Role::kTokenList; });
  list->add_flag("--json", t.json, "Print JSON (for tools)");
  files(list);
  auto* revoke = token->add_subcommand(
      "revoke", "Revoke a token by its id: running iotd processes refuse it within seconds");
  revoke->parse_complete_callback([&c] { c.role = Role::kTokenRevoke; });
  revoke->add_option("id", t.id, "The token's id (12 hex characters, as list shows it)")
      ->required();
  files(revoke);
}

void AddCommon(CLI::App* app, Config& c) {
  Opt(app, "--log-level", "LOG_LEVEL", c.log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  Opt(app, "--shutdown-timeout", "SHUTDOWN_TIMEOUT", c.shutdown_timeout,
      "How long a graceful shutdown may take");
}

}  // namespace

std::optional<std::chrono::milliseconds> ParseKafkaDuration(const std::string& text) {
  // "0", "0ms", "0s": librdkafka's linger.ms=0 (send at once) is a useful setting.
  const std::size_t digits = text.find_first_not_of('0');
  if (!text.empty() && digits != 0) {
    const std::string unit = digits == std::string::npos ? "" : text.substr(digits);
    for (const char* u : {"", "ms", "s", "m", "h", "d", "w"}) {
      if (unit == u) return std::chrono::milliseconds(0);
    }
  }
  auto d = core::ParseDuration(text);
  if (!d || d->count() < 0) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(*d);
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAll: return "all";
    case Role::kIngest: return "ingest";
    case Role::kAggregator: return "aggregator";
    case Role::kAlerts: return "alerts";
    case Role::kDashboard: return "dashboard";
    case Role::kLoadgen: return "loadgen";
    case Role::kDlqReplay: return "dlq replay";
    case Role::kHealth: return "health";
    case Role::kOptions: return "options";
    case Role::kTokenCreate: return "token create";
    case Role::kTokenList: return "token list";
    case Role::kTokenRevoke: return "token revoke";
  }
  return "?";
}

void BuildCli(CLI::App& app, Config& c) {
  app.description(
      "iotd: IoT telemetry ingestion, aggregation, alerting and dashboard.\n"
      "Every option can also be set through the environment variable shown as (Env:...);\n"
      "a flag overrides its variable.");
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();

  auto* all = app.add_subcommand("all", "The whole pipeline in one process (embedded bus, SQLite)");
  all->parse_complete_callback([&c] { c.role = Role::kAll; });
  AddNetwork(all, c, true, true, false, false);
  AddBackends(all, c, true, true);
  AddIngest(all, c);
  AddRateLimits(all, c);
  AddAggregator(all, c);
  AddAlerts(all, c);
  AddNotify(all, c);
  AddDashboard(all, c, false);
  AddMqtt(all, c);
  AddAuth(all, c, true, true);
  AddCommon(all, c);

  auto* ingest = app.add_subcommand("ingest", "Ingestion API: validates readings onto the bus");
  ingest->parse_complete_callback([&c] { c.role = Role::kIngest; });
  AddNetwork(ingest, c, true, false, false, false);
  AddBackends(ingest, c, true, false);
  AddIngest(ingest, c);
  AddRateLimits(ingest, c);
  AddMqtt(ingest, c);
  AddAuth(ingest, c, true, false);
  AddCommon(ingest, c);

  auto* agg = app.add_subcommand("aggregator", "Aggregator worker: raw readings and windows");
  agg->parse_complete_callback([&c] { c.role = Role::kAggregator; });
  AddNetwork(agg, c, false, false, true, false);
  AddBackends(agg, c, true, true);
  AddAggregator(agg, c);
  AddCommon(agg, c);

  auto* alerts = app.add_subcommand("alerts", "Alerts worker: threshold rules and alert lifecycle");
  alerts->parse_complete_callback([&c] { c.role = Role::kAlerts; });
  AddNetwork(alerts, c, false, false, false, true);
  AddBackends(alerts, c, true, true);
  AddAlerts(alerts, c);
  AddNotify(alerts, c);
  AddCommon(alerts, c);

  auto* dash = app.add_subcommand("dashboard", "Dashboard API over the store");
  dash->parse_complete_callback([&c] { c.role = Role::kDashboard; });
  AddNetwork(dash, c, false, true, false, false);
  AddBackends(dash, c, false, true);
  AddDashboard(dash, c, true);
  AddAuth(dash, c, false, true);
  AddCommon(dash, c);

  auto* dlq = app.add_subcommand("dlq", "Dead letters (BUS=kafka)");
  dlq->require_subcommand(1);
  auto* replay = dlq->add_subcommand(
      "replay", "Republish the dead letters of DLQ_TOPIC to TELEMETRY_TOPIC, once the cause is "
                "fixed; each to the worker that gave up on it");
  replay->parse_complete_callback([&c] { c.role = Role::kDlqReplay; });
  AddBackends(replay, c, true, false);
  Opt(replay, "--group", "DLQ_REPLAY_GROUP", c.dlq_replay.group,
      "Consumer group of the replay (its committed offsets say what was replayed)");
  Opt(replay, "--consumer", "DLQ_REPLAY_CONSUMER", c.dlq_replay.consumer,
      "Replay only the dead letters of this worker: aggregator | alerts (empty: all)")
      ->check(CLI::IsMember({"", "aggregator", "alerts"}));
  Opt(replay, "--idle", "DLQ_REPLAY_IDLE", c.dlq_replay.idle,
      "Stop after this long without a new dead letter");
  AddCommon(replay, c);

  auto* health = app.add_subcommand(
      "health", "Health check: GET /health of this machine's iotd (exit 0 healthy, 1 not); "
                "for a container's HEALTHCHECK");
  health->parse_complete_callback([&c] { c.role = Role::kHealth; });
  health->add_option("url", c.health_urls,
                     "URLs to probe (default: /health on 127.0.0.1 at every role's port)");
  Opt(health, "--ingest-port", "INGEST_PORT", c.ingest_port, "Ingestion API port");
  Opt(health, "--dashboard-port", "DASHBOARD_PORT", c.dashboard_port, "Dashboard API port");
  Opt(health, "--tls-cert-file", "TLS_CERT_FILE", c.tls_cert_file,
      "Set when the listeners speak HTTPS: the default URLs are then https://");
  Opt(health, "--aggregator-port", "AGGREGATOR_PORT", c.aggregator_port,
      "Aggregator metrics/health port");
  Opt(health, "--alerts-port", "ALERTS_PORT", c.alerts_port, "Alerts worker metrics/health port");
  health->add_option("--timeout", c.health_timeout, "Limit of each probe (e.g. 2s)")
      ->capture_default_str();

  auto* options = app.add_subcommand(
      "options", "List every role's options with their environment variables and defaults");
  options->parse_complete_callback([&c] { c.role = Role::kOptions; });
  options->add_flag("--json", c.options_json, "Print JSON (for tools)");

  auto* lg = app.add_subcommand("loadgen", "Load generator (the seed's tools/load_generator.py)");
  lg->parse_complete_callback([&c] { c.role = Role::kLoadgen; });
  auto& l = c.loadgen;
  lg->add_option("--devices", l.devices, "Number of simulated devices")->check(CLI::Range(1, 1000000));
  lg->add_option("--rps", l.rps, "Requests per second per device (0: unthrottled)")
      ->check(CLI::Range(0.0, 1e9));
  lg->add_option("--base-url", l.base_url, "Base URL of the ingestion API");
  lg->add_option("--duration", l.duration, "Stop after this long (e.g. 30s); default: until Ctrl-C");
  lg->add_option("--batch", l.batch, "Readings per request to POST /ingest/batch (0: POST /ingest)")
      ->check(CLI::Range(0, 1000000));
  lg->add_option("--connections", l.connections, "Concurrent keep-alive connections")
      ->check(CLI::Range(1, 10000));
  lg->add_flag("--unthrottled", l.unthrottled, "Send as fast as the connections allow");
  lg->add_option("--max-error-rate", l.max_error_rate,
                 "Exit with status 1 when errors / sent exceeds this")
      ->check(CLI::Range(0.0, 1.0));
  lg->add_option("--hot-fraction", l.hot_fraction,
                 "Fraction of readings out of range (to exercise alerts)")
      ->check(CLI::Range(0.0, 1.0));
  lg->add_option("--seed", l.seed, "Random seed (0: random)");
  lg->add_option("--timeout", l.timeout, "Limit of each connect and request (e.g. 10s)");
  lg->add_option("--mqtt-url", l.mqtt_url,
                 "Publish to this MQTT broker (mqtt://host:port, QoS 1, topic "
                 "devices/<id>/telemetry) instead of POSTing to --base-url");
  lg->add_option("--count", l.count, "MQTT: stop after this many messages (0: no limit)");
  lg->add_option("--max-inflight", l.max_inflight,
                 "MQTT: QoS 1 messages per connection awaiting the broker's PUBACK")
      ->check(CLI::Range(1, 1000000));
  Opt(lg, "--token", "LOADGEN_TOKEN", l.token,
      "Bearer token to send (INGEST_AUTH=token: a gateway token of dev-1..dev-N)");
  AddCommon(lg, c);

  AddTokenCommands(app, c);
}

Status Validate(const Config& c) {
  if (c.role == Role::kOptions || c.role == Role::kTokenCreate || c.role == Role::kTokenList ||
      c.role == Role::kTokenRevoke) {
    return Status::Ok();  // the token commands check their arguments (token_command.cc)
  }
  if (c.role == Role::kHealth) {
    if (auto t = core::ParseDuration(c.health_timeout); !t || t->count() <= 0) {
      return MakeError(Errc::kInvalidArgument, "--timeout: not a positive duration: " +
                                                   c.health_timeout);
    }
    return Status::Ok();
  }
  if (c.role == Role::kLoadgen) {
    if (!c.loadgen.duration.empty() && !core::ParseDuration(c.loadgen.duration)) {
      return MakeError(Errc::kInvalidArgument, "--duration: not a duration: " + c.loadgen.duration);
    }
    if (!core::ParseDuration(c.loadgen.timeout)) {
      return MakeError(Errc::kInvalidArgument, "--timeout: not a duration: " + c.loadgen.timeout);
    }
    return Status::Ok();
  }
  if (auto w = core::ParseWindows(c.agg_windows); !w) {
    return MakeError(Errc::kInvalidArgument, "AGG_WINDOWS: " + w.error().message);
  }
  if (!core::ParseDuration(c.max_future)) {
    return MakeError(Errc::kInvalidArgument, "MAX_FUTURE: not a duration: " + c.max_future);
  }
  if (!core::ParseDuration(c.shutdown_timeout)) {
    return MakeError(Errc::kInvalidArgument,
                     "SHUTDOWN_TIMEOUT: not a duration: " + c.shutdown_timeout);
  }
  if (auto r = ParseRetention(c); !r) return r.error();
  if (auto t = core::ParseDuration(c.mongo_timeout); !t || t->count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "MONGO_TIMEOUT: not a positive duration: " +
                                                 c.mongo_timeout + " (e.g. 3s)");
  }
  if (auto t = core::ParseDuration(c.ui_stale_after); !t || t->count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "UI_STALE_AFTER: not a positive duration: " +
                                                 c.ui_stale_after + " (e.g. 5m)");
  }
  if (!core::ParseDuration(c.retention_interval)) {
    return MakeError(Errc::kInvalidArgument,
                     "RETENTION_INTERVAL: not a duration: " + c.retention_interval + " (e.g. 1m)");
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return MakeError(Errc::kInvalidArgument,
                     "TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither");
  }
  if (auto proxies = services::ParseCidrs(c.rate_limits.trusted_proxies); !proxies) {
    return MakeError(Errc::kInvalidArgument, "TRUSTED_PROXIES: " + proxies.error().message);
  }
  if (c.role == Role::kAll || c.role == Role::kAlerts) {
    if (auto n = NotifierOptionsFrom(c); !n) return n.status();
  }
  if (c.temp_min_threshold > c.temp_max_threshold) {
    return MakeError(Errc::kInvalidArgument, "TEMP_MIN_THRESHOLD is above TEMP_MAX_THRESHOLD");
  }
  if (c.humidity_min_threshold > c.humidity_max_threshold) {
    return MakeError(Errc::kInvalidArgument,
                     "HUMIDITY_MIN_THRESHOLD is above HUMIDITY_MAX_THRESHOLD");
  }
  if (c.role == Role::kAll && c.ingest_port == c.dashboard_port && c.ingest_port != 0) {
    return MakeError(Errc::kInvalidArgument, "INGEST_PORT and DASHBOARD_PORT are the same");
  }
  if (c.bus == "embedded" &&
      (c.role == Role::kIngest || c.role == Role::kAggregator || c.role == Role::kAlerts)) {
    return MakeError(Errc::kInvalidArgument,
                     std::string("the embedded bus lives inside one process: run `iotd all`, or "
                                 "set BUS=kafka to run `iotd ") +
                         RoleName(c.role) + "` on its own");
  }
  if (c.bus == "embedded" && c.role == Role::kDlqReplay) {
    return MakeError(Errc::kInvalidArgument,
                     "iotd dlq replay reads DLQ_TOPIC: it needs BUS=kafka (with the embedded bus, "
                     "dead letters are listed by GET /dlq)");
  }
  if (c.store == "sqlite" && (c.role == Role::kAggregator || c.role == Role::kAlerts)) {
    return MakeError(Errc::kInvalidArgument,
                     std::string("STORE=sqlite is a file of one process: run `iotd all` (it can "
                                 "use BUS=kafka too), or set STORE=mongodb to run `iotd ") +
                         RoleName(c.role) + "` on its own");
  }
  if ((c.role == Role::kAll || c.role == Role::kIngest) && !c.mqtt.url.empty()) {
    if (auto m = MqttClientFrom(c); !m) return m.status();
  }
  if (c.bus == "kafka") {
    const std::pair<const char*, const std::string*> durations[] = {
        {"KAFKA_LINGER", &c.kafka.linger},
        {"KAFKA_DELIVERY_TIMEOUT", &c.kafka.delivery_timeout},
        {"KAFKA_SESSION_TIMEOUT", &c.kafka.session_timeout},
        {"KAFKA_TIMEOUT", &c.kafka.startup_timeout},
        {"DLQ_REPLAY_IDLE", &c.dlq_replay.idle}};
    for (const auto& [name, value] : durations) {
      auto d = ParseKafkaDuration(*value);
      if (!d) {
        return MakeError(Errc::kInvalidArgument,
                         std::string(name) + ": not a duration: " + *value + " (e.g. 10s)");
      }
    }
    if (auto p = bus::ParseKafkaProperties(c.kafka.properties); !p) return p.error();
    if (c.kafka_bootstrap_servers.empty()) {
      return MakeError(Errc::kInvalidArgument, "KAFKA_BOOTSTRAP_SERVERS is empty");
    }
    if (c.telemetry_topic.empty() || c.dlq_topic.empty() || c.telemetry_topic == c.dlq_topic) {
      return MakeError(Errc::kInvalidArgument,
                       "TELEMETRY_TOPIC and DLQ_TOPIC must be set and differ");
    }
  }
  return Status::Ok();
}

std::string TokensFile(const Config& c) {
  if (!c.tokens_file.empty()) return c.tokens_file;
  return c.data_dir + "/tokens";
}

std::vector<std::string> HealthUrls(const Config& c) {
  if (!c.health_urls.empty()) return c.health_urls;
  std::vector<std::string> urls;
  for (std::uint16_t port : {c.ingest_port, c.dashboard_port, c.aggregator_port, c.alerts_port}) {
    urls.push_back(fmt::format("{}://127.0.0.1:{}/health",
                               c.tls_cert_file.empty() ? "http" : "https", port));
  }
  return urls;
}

namespace {

// Options of `app` and its subcommands, depth first, each under its full name ("dlq replay").
void CollectOptions(const CLI::App& app, const std::string& prefix,
                    std::vector<std::pair<std::string, const CLI::Option*>>& out) {
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    const std::string name = prefix.empty() ? sub->get_name() : prefix + " " + sub->get_name();
    if (sub->get_name() == "options") continue;
    for (const CLI::Option* o : sub->get_options()) {
      if (o->get_name() == "--help") continue;
      out.emplace_back(name, o);
    }
    CollectOptions(*sub, name, out);
  }
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      out += fmt::format("\\u{:04x}", u);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

std::string DescribeOptions(const CLI::App& app, bool json) {
  std::vector<std::pair<std::string, const CLI::Option*>> options;
  CollectOptions(app, "", options);
  std::string out;
  if (!json) {
    for (const auto& [role, o] : options) {
      out += fmt::format("{:<12} {:<28} {:<26} {}\n", role, o->get_name(),
                         o->get_envname().empty() ? "-" : o->get_envname(),
                         o->get_default_str());
    }
    return out;
  }
  out = "{\"roles\": {";
  std::string current;
  for (const auto& [role, o] : options) {
    if (role != current) {
      out += fmt::format("{}\n  {}: [", current.empty() ? "" : "],", JsonString(role));
      current = role;
    } else {
      out += ",";
    }
    out += fmt::format("\n    {{\"flag\": {}, \"env\": {}, \"default\": {}, \"help\": {}}}",
                       JsonString(o->get_name()),
                       o->get_envname().empty() ? "null" : JsonString(o->get_envname()),
                       JsonString(o->get_default_str()), JsonString(o->get_description()));
  }
  out += current.empty() ? "}}\n" : "]\n}}\n";
  return out;
}

Result<services::NotifierOptions> NotifierOptionsFrom(const Config& c) {
  services::NotifierOptions o;
  std::string_view rest = c.notify_webhook_urls;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    std::string_view url = rest.substr(0, comma);
    while (!url.empty() && url.front() == ' ') url.remove_prefix(1);
    while (!url.empty() && url.back() == ' ') url.remove_suffix(1);
    if (!url.empty()) o.webhook_urls.emplace_back(url);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  o.alertmanager_url = c.alertmanager_url;
  const std::pair<const char*, const std::string*> durations[] = {
      {"ALERTMANAGER_RESEND_INTERVAL", &c.alertmanager_resend_interval},
      {"NOTIFY_TIMEOUT", &c.notify_timeout}};
  for (const auto& [name, value] : durations) {
    auto d = core::ParseDuration(*value);
    if (!d || d->count() <= 0) {
      return MakeError(Errc::kInvalidArgument,
                       std::string(name) + ": not a positive duration: " + *value + " (e.g. 5s)");
    }
  }
  o.resend_interval = std::chrono::duration_cast<std::chrono::milliseconds>(
      *core::ParseDuration(c.alertmanager_resend_interval));
  o.timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(*core::ParseDuration(c.notify_timeout));
  o.queue_size = c.notify_queue_size;
  o.max_retries = c.notify_max_retries;
  if (Status s = services::Notifier::Validate(o); !s) return s.error();
  return o;
}

store::Retention RetentionFrom(const Config& c) {
  auto r = ParseRetention(c);
  return r ? std::move(*r) : store::Retention{};
}

Result<mqtt::ClientOptions> MqttClientFrom(const Config& c) {
  const auto& m = c.mqtt;
  auto bad = [](std::string message) { return MakeError(Errc::kInvalidArgument, std::move(message)); };
  mqtt::ClientOptions o;
  std::string_view url = m.url;
  if (url.starts_with("mqtt://")) {
    url.remove_prefix(7);
  } else if (url.starts_with("mqtts://")) {
    url.remove_prefix(8);
    o.tls = true;
  } else {
    return bad("MQTT_URL: expected mqtt://host[:port] or mqtts://host[:port], got '" + m.url + "'");
  }
  if (const auto slash = url.find('/'); slash != std::string_view::npos) {
    if (url.substr(slash) != "/") {
      return bad("MQTT_URL: a broker URL has no path ('" + m.url + "'); topics go in MQTT_TOPICS");
    }
    url = url.substr(0, slash);
  }
  if (const auto at = url.rfind('@'); at != std::string_view::npos) {
    const auto info = url.substr(0, at);
    const auto colon = info.find(':');
    auto user = http::PercentDecode(info.substr(0, colon), false);
    if (!user) return bad("MQTT_URL: bad %-escape in the user name");
    o.username = *user;
    if (colon != std::string_view::npos) {
      auto pass = http::PercentDecode(info.substr(colon + 1), false);
      if (!pass) return bad("MQTT_URL: bad %-escape in the password");
      o.password = *pass;
    }
    url.remove_prefix(at + 1);
  }
  std::string_view host = url;
  std::uint16_t port = o.tls ? 8883 : 1883;
  if (host.starts_with("[")) {  // [IPv6]:port
    const auto close = host.find(']');
    if (close == std::string_view::npos) return bad("MQTT_URL: unclosed [ in '" + m.url + "'");
    std::string_view rest = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("MQTT_URL: expected :port after ] in '" + m.url + "'");
      url = rest;
      url.remove_prefix(1);
    } else {
      url = {};
    }
  } else if (const auto colon = host.rfind(':'); colon != std::string_view::npos) {
    url = host.substr(colon + 1);
    host = host.substr(0, colon);
  } else {
    url = {};
  }
  if (!url.empty()) {
    int p = 0;
    for (char ch : url) {
      if (ch < '0' || ch > '9' || (p = p * 10 + (ch - '0')) > 65535) {
        return bad("MQTT_URL: not a port: '" + std::string(url) + "'");
      }
    }
    if (p == 0) return bad("MQTT_URL: port 0");
    port = static_cast<std::uint16_t>(p);
  }
  if (host.empty()) return bad("MQTT_URL: no host in '" + m.url + "'");
  o.host = host;
  o.port = port;

  std::string_view rest = m.topics;
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = core::TrimBlanks(rest.substr(0, comma));
    if (!item.empty()) {
      if (Status s = mqtt::ValidateTopicFilter(item); !s) return bad("MQTT_TOPICS: " + s.error().message);
      o.topics.emplace_back(item);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (o.topics.empty()) return bad("MQTT_TOPICS: no topic filter (e.g. devices/+/telemetry)");

  o.client_id = m.client_id;
  if (o.client_id.empty()) {
    char host_name[256] = {};
    if (gethostname(host_name, sizeof host_name - 1) != 0) std::snprintf(host_name, sizeof host_name, "unknown");
    o.client_id = std::string("iotd-ingest-") + host_name;
  }
  if (o.client_id.size() > 65535) return bad("MQTT_CLIENT_ID: longer than 65535 bytes");

  auto seconds = [&](const char* name, const std::string& text, std::int64_t max,
                     bool zero_ok) -> Result<std::int64_t> {
    auto d = text == "0" ? std::optional<core::Micros>(core::Micros(0)) : core::ParseDuration(text);
    if (!d || d->count() < 0 || (!zero_ok && d->count() == 0)) {
      return bad(std::string(name) + ": not a duration: '" + text + "' (e.g. 1h)");
    }
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(*d).count();
    if (s > max) return bad(std::string(name) + ": at most " + std::to_string(max) + " seconds");
    return s;
  };
  auto expiry = seconds("MQTT_SESSION_EXPIRY", m.session_expiry, 0xFFFFFFFFll, true);
  if (!expiry) return expiry.error();
  o.session_expiry_s = static_cast<std::uint32_t>(*expiry);
  auto keepalive = seconds("MQTT_KEEPALIVE", m.keepalive, 65535, true);
  if (!keepalive) return keepalive.error();
  o.keep_alive_s = static_cast<std::uint16_t>(*keepalive);
  if (m.receive_maximum < 1 || m.receive_maximum > 65535) {
    return bad("MQTT_RECEIVE_MAXIMUM: must be 1..65535");
  }
  o.receive_maximum = static_cast<std::uint16_t>(m.receive_maximum);
  auto min_b = core::ParseDuration(m.min_backoff);
  auto max_b = core::ParseDuration(m.max_backoff);
  if (!min_b || min_b->count() <= 0) return bad("MQTT_MIN_BACKOFF: not a positive duration: '" + m.min_backoff + "'");
  if (!max_b || *max_b < *min_b) return bad("MQTT_MAX_BACKOFF: not a duration at least MQTT_MIN_BACKOFF: '" + m.max_backoff + "'");
  o.min_backoff = std::chrono::duration_cast<std::chrono::milliseconds>(*min_b);
  o.max_backoff = std::chrono::duration_cast<std::chrono::milliseconds>(*max_b);
  o.max_packet_bytes = c.max_batch_bytes + 64 * 1024;

  if (!o.tls && (!m.ca_file.empty() || !m.cert_file.empty() || !m.key_file.empty())) {
    return bad("MQTT_CA_FILE, MQTT_CERT_FILE and MQTT_KEY_FILE need a TLS broker URL (mqtts://)");
  }
  if (m.cert_file.empty() != m.key_file.empty()) {
    return bad("MQTT_CERT_FILE and MQTT_KEY_FILE go together");
  }
  o.ca_file = m.ca_file;
  o.cert_file = m.cert_file;
  o.key_file = m.key_file;
  return o;
}

}  // namespace iot::app
