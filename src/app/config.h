// config.h: every option of iotd, read from the environment and overridden by flags.
//
// Each option has one environment variable (the seed's names where the seed has one) and one
// flag; `iotd <role> --help` lists them with their defaults. `BuildCli` declares the subcommands
// on a CLI11 app; after parsing, `Config` holds the values and `Validate` checks what CLI11
// cannot (window lists, durations, retention, thresholds, port clashes, roles the
// chosen bus supports); the rules file is read and checked at start-up (run.cc).
// `RetentionFrom` turns the retention options into the store's `Retention`.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "mqtt/client.h"
#include "services/notifier.h"
#include "store/store.h"

namespace CLI {
class App;
}

namespace iot::app {

enum class Role {
  kAll, kIngest, kAggregator, kAlerts, kDashboard, kLoadgen, kDlqReplay, kHealth, kOptions,
  // Access tokens (docs/security.md).
  kTokenCreate, kTokenList, kTokenRevoke
};

struct Config {
  Role role = Role::kAll;

  // Network.
  std::string bind_address = "0.0.0.0";
  std::uint16_t ingest_port = 8001;
  std::uint16_t dashboard_port = 8002;
  std::uint16_t aggregator_port = 8003;
  std::uint16_t alerts_port = 8004;
  int http_threads = 2;
  // TLS on every HTTP listener of the process (docs/security.md); both empty: plain HTTP.
  std::string tls_cert_file;  // TLS_CERT_FILE, PEM chain
  std::string tls_key_file;   // TLS_KEY_FILE, PEM key

  // Rate limits of the ingestion API (docs/security.md); rate 0: no limit.
  struct RateLimits {
    double device = 0;        // RATE_LIMIT_DEVICE: readings per second per device id
    double device_burst = 0;  // RATE_LIMIT_DEVICE_BURST (0: one second's worth, at least 1)
    double client = 0;        // RATE_LIMIT_CLIENT: requests per second per client address
    double client_burst = 0;  // RATE_LIMIT_CLIENT_BURST (0: one second's worth, at least 1)
    std::string trusted_proxies;  // TRUSTED_PROXIES: whose X-Forwarded-For is believed
  } rate_limits;

  // Backends.
  std::string bus = "embedded";  // embedded | kafka
  std::string store = "sqlite";  // sqlite | mongodb
  std::string data_dir = "./data";
  std::string sync = "full";        // the embedded bus: full | normal | off
  std::string store_sync = "normal";  // the SQLite store: full | normal | off

  // The seed's variables.
  std::string kafka_bootstrap_servers = "kafka:9092";
  std::string mongo_url = "mongodb://mongo:27017";
  std::string mongo_db = "iotdb";
  int mongo_pool_size = 0;            // MONGO_POOL_SIZE; 0: HTTP_THREADS + 4
  std::string mongo_timeout = "3s";   // MONGO_TIMEOUT: connect and server selection
  std::string telemetry_topic = "telemetry.raw";
  std::string dlq_topic = "telemetry.dlq";
  int max_retries = 3;

  // BUS=kafka (docs/kafka.md).
  struct Kafka {
    int partitions = 6;
    int replication_factor = 1;
    bool create_topics = true;
    std::string aggregator_group = "iotd-aggregator";
    std::string alerts_group = "iotd-alerts";
    std::string linger = "5ms";
    std::size_t batch_bytes = 1024 * 1024;
    std::string compression = "lz4";
    std::string delivery_timeout = "10s";
    std::size_t max_pending = 500000;
    std::string session_timeout = "10s";
    std::string startup_timeout = "30s";
    std::string properties;  // KAFKA_CONFIG
  } kafka;
  double temp_min_threshold = -10;
  double temp_max_threshold = 50;
  double humidity_min_threshold = 0;
  double humidity_max_threshold = 100;

  // Pipeline.
  std::string agg_windows = "1m,1h";
  // Retention, applied by the process that runs the aggregator (empty: kept forever).
  std::string raw_retention;              // RAW_RETENTION, a duration such as 30d
  std::string agg_retention;              // AGG_RETENTION, e.g. "1m=7d,1h=52w"
  std::string retention_interval = "1m";  // RETENTION_INTERVAL: how often Store::Expire runs
  std::string rules_file;
  // Alert notifications (docs/notifications.md), roles all and alerts.
  std::string notify_webhook_urls;                  // NOTIFY_WEBHOOK_URLS, comma-separated
  std::string alertmanager_url;                     // ALERTMANAGER_URL
  std::string alertmanager_resend_interval = "1m";  // ALERTMANAGER_RESEND_INTERVAL
  std::size_t notify_queue_size = 10000;            // NOTIFY_QUEUE_SIZE, per sink
  int notify_max_retries = 5;                       // NOTIFY_MAX_RETRIES
  std::string notify_timeout = "5s";                // NOTIFY_TIMEOUT, per request
  // Dashboard: the live stream (GET /stream) and the web UI (/ui).
  std::size_t stream_max_clients = 256;             // STREAM_MAX_CLIENTS
  std::size_t stream_client_buffer = 1 << 20;       // STREAM_CLIENT_BUFFER, bytes
  std::string ui_stale_after = "5m";                // UI_STALE_AFTER
  std::string required_sensors = "temperature_c,humidity";
  std::string max_future = "5m";
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_batch_bytes = 16 * 1024 * 1024;
  std::size_t batch_max_items = 10000;
  std::size_t bus_max_pending = 1000000;

  // MQTT ingestion (docs/mqtt.md), roles ingest and all. Empty MQTT_URL: off.
  struct Mqtt {
    std::string url;                           // MQTT_URL: mqtt://[user:pass@]host[:port], mqtts://
    std::string topics = "devices/+/telemetry";  // MQTT_TOPICS: comma-separated filters
    std::string client_id;                     // MQTT_CLIENT_ID; empty: iotd-ingest-<hostname>
    std::string session_expiry = "1h";         // MQTT_SESSION_EXPIRY; 0: no persistent session
    int receive_maximum = 5000;                // MQTT_RECEIVE_MAXIMUM: unacknowledged QoS 1 window
    std::string keepalive = "30s";             // MQTT_KEEPALIVE
    std::string min_backoff = "100ms";         // MQTT_MIN_BACKOFF: first reconnect delay
    std::string max_backoff = "10s";           // MQTT_MAX_BACKOFF
    std::string ca_file;                       // MQTT_CA_FILE (mqtts://)
    std::string cert_file;                     // MQTT_CERT_FILE: client certificate (mqtts://)
    std::string key_file;                      // MQTT_KEY_FILE
  } mqtt;

  std::string log_level = "info";
  std::string shutdown_timeout = "10s";

  // Access control (docs/security.md): INGEST_AUTH, DASHBOARD_AUTH, TOKENS_FILE, and the
  // `iotd token create|list|revoke` commands.
  std::string ingest_auth = "off";     // off | token
  std::string dashboard_auth = "off";  // off | token
  std::string tokens_file;             // empty: DATA_DIR/tokens
  struct TokenCommand {
    std::string device;               // create --device ID
    std::string gateway;              // create --gateway ID,ID,...
    bool read = false;                // create --read
    std::string prefix;               // create --read --prefix P
    std::string name;                 // create --name TEXT
    bool json = false;                // list --json
    std::string id;                   // revoke ID
  } token;

  // iotd loadgen (the seed's tools/load_generator.py options, and more).
  struct Loadgen {
    int devices = 10;
    double rps = 1.0;
    std::string base_url = "http://localhost:8001";
    std::string duration;  // empty: until interrupted
    int batch = 0;
    int connections = 8;
    bool unthrottled = false;
    double max_error_rate = 0.01;
    double hot_fraction = 0.0;
    std::uint64_t seed = 0;
    std::string timeout = "10s";
    // MQTT (docs/mqtt.md): publish to a broker with libmosquitto instead of POSTing.
    std::string mqtt_url;       // --mqtt-url mqtt://host:port; empty: HTTP
    std::uint64_t count = 0;    // --count: stop after this many messages (MQTT; 0: no limit)
    int max_inflight = 10000;   // --max-inflight: QoS 1 messages per connection without PUBACK
    std::string token;  // LOADGEN_TOKEN: a bearer token for INGEST_AUTH=token
  } loadgen;

  // iotd dlq replay.
  struct DlqReplay {
    std::string group = "iotd-dlq-replay";  // its consumer group: each dead letter replayed once
    std::string consumer;                   // only dead letters of this worker (empty: all)
    std::string idle = "5s";                // stop after this long without a new dead letter
  } dlq_replay;

  // iotd health (a container health check) and iotd options (every option, for tools).
  std::vector<std::string> health_urls;  // empty: each role's port on 127.0.0.1
  std::string health_timeout = "2s";
  bool options_json = false;
};

// BuildCli declares the subcommands and their options on `app`, bound to `config`.
void BuildCli(CLI::App& app, Config& config);

// Validate checks the parsed values; the error names the option.
Status Validate(const Config& config);

// RetentionFrom builds the store's Retention from RAW_RETENTION and AGG_RETENTION (each window
// of AGG_RETENTION with how long it is kept). For a config that Validate accepted; an invalid
// one gives an empty Retention.
store::Retention RetentionFrom(const Config& config);

// NotifierOptionsFrom builds the notifier's options from NOTIFY_* and ALERTMANAGER_*; the
// error names the option (a bad URL, a bad duration). No URL at all: no sink, no notifier.
Result<services::NotifierOptions> NotifierOptionsFrom(const Config& config);

// ParseKafkaDuration parses a Kafka duration option: what core::ParseDuration takes, or zero
// ("0", "0ms"); nullopt when invalid.
std::optional<std::chrono::milliseconds> ParseKafkaDuration(const std::string& text);

const char* RoleName(Role role);

// MqttClientFrom builds the MQTT subscriber's options from MQTT_* (docs/mqtt.md); the error
// names the option. For a config with MQTT_URL set.
Result<mqtt::ClientOptions> MqttClientFrom(const Config& config);
// TokensFile is TOKENS_FILE, or DATA_DIR/tokens when it is empty.
std::string TokensFile(const Config& config);

// HealthUrls is what `iotd health` probes: its URLs, or /health on 127.0.0.1 at every role's
// port (INGEST_PORT, DASHBOARD_PORT, AGGREGATOR_PORT, ALERTS_PORT).
std::vector<std::string> HealthUrls(const Config& config);

// DescribeOptions lists every subcommand's options with their environment variables and
// defaults: a table, or JSON ({"roles": {"all": [{"flag", "env", "default", "help"}...]}})
// for tools such as the deployment tests that check a manifest sets only variables iotd reads.
std::string DescribeOptions(const CLI::App& app, bool json);

}  // namespace iot::app
