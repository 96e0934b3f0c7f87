// config_test.cc: iotd's configuration (app/config.h): CLI11 parsing through BuildCli (the seed's
// defaults, environment variables, flags over variables, the loadgen subcommand) and Validate.
//
// Every variable BuildCli reads is unset for the duration of a test and restored afterwards, so
// that the environment of the machine running the tests cannot change their outcome.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "app/config.h"
#include "core/result.h"

namespace iot::app {
namespace {

// kVariables lists every environment variable that BuildCli binds.
const std::vector<std::string> kVariables = {
    "BIND_ADDRESS", "INGEST_PORT", "DASHBOARD_PORT", "AGGREGATOR_PORT", "ALERTS_PORT",
    "HTTP_THREADS", "DATA_DIR", "BUS", "SYNC", "KAFKA_BOOTSTRAP_SERVERS", "TELEMETRY_TOPIC",
    "DLQ_TOPIC", "MAX_RETRIES", "STORE", "STORE_SYNC", "MONGO_URL", "MONGO_DB", "REQUIRED_SENSORS",
    "MAX_FUTURE", "MAX_BODY_BYTES", "MAX_BATCH_BYTES", "BATCH_MAX_ITEMS", "BUS_MAX_PENDING",
    "AGG_WINDOWS", "TEMP_MIN_THRESHOLD", "TEMP_MAX_THRESHOLD", "HUMIDITY_MIN_THRESHOLD",
    "HUMIDITY_MAX_THRESHOLD", "RULES_FILE", "LOG_LEVEL", "SHUTDOWN_TIMEOUT", "RAW_RETENTION",
    "AGG_RETENTION", "RETENTION_INTERVAL", "KAFKA_PARTITIONS", "KAFKA_REPLICATION_FACTOR",
    "KAFKA_CREATE_TOPICS", "KAFKA_AGGREGATOR_GROUP", "KAFKA_ALERTS_GROUP", "KAFKA_LINGER",
    "KAFKA_BATCH_BYTES", "KAFKA_COMPRESSION", "KAFKA_DELIVERY_TIMEOUT", "KAFKA_MAX_PENDING",
    "KAFKA_SESSION_TIMEOUT", "KAFKA_TIMEOUT", "KAFKA_CONFIG", "MONGO_POOL_SIZE", "MONGO_TIMEOUT",
    "DLQ_REPLAY_GROUP", "DLQ_REPLAY_CONSUMER", "DLQ_REPLAY_IDLE",
    // MQTT ingestion (docs/mqtt.md).
    "MQTT_URL", "MQTT_TOPICS", "MQTT_CLIENT_ID", "MQTT_SESSION_EXPIRY", "MQTT_RECEIVE_MAXIMUM",
    "MQTT_KEEPALIVE", "MQTT_MIN_BACKOFF", "MQTT_MAX_BACKOFF", "MQTT_CA_FILE", "MQTT_CERT_FILE",
    "MQTT_KEY_FILE"};

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& name : kVariables) {
      if (const char* v = std::getenv(name.c_str())) saved_[name] = v;
      ::unsetenv(name.c_str());
    }
  }
  void TearDown() override {
    for (const auto& name : kVariables) {
      auto it = saved_.find(name);
      if (it != saved_.end()) {
        ::setenv(name.c_str(), it->second.c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

  static void SetEnv(const std::string& name, const std::string& value) {
    ::setenv(name.c_str(), value.c_str(), 1);
  }

  // Parse runs `iotd <args...>` through BuildCli; CLI11's errors propagate as exceptions.
  static Config Parse(const std::vector<std::string>& args) {
    Config config;
    CLI::App app{"iotd"};
    BuildCli(app, config);
    std::vector<const char*> argv = {"iotd"};
    for (const auto& a : args) argv.push_back(a.c_str());
    app.parse(static_cast<int>(argv.size()), argv.data());
    return config;
  }

  // Invalid returns Validate's error for `args`, or nullopt when they are valid.
  static std::optional<Error> Invalid(const std::vector<std::string>& args) {
    Status s = Validate(Parse(args));
    if (s.ok()) return std::nullopt;
    return s.error();
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST_F(ConfigTest, DefaultsAreTheSeeds) {
  Config c = Parse({"all"});
  EXPECT_EQ(c.role, Role::kAll);
  EXPECT_EQ(c.ingest_port, 8001);
  EXPECT_EQ(c.dashboard_port, 8002);
  EXPECT_EQ(c.kafka_bootstrap_servers, "kafka:9092");
  EXPECT_EQ(c.mongo_url, "mongodb://mongo:27017");
  EXPECT_EQ(c.mongo_db, "iotdb");
  EXPECT_EQ(c.telemetry_topic, "telemetry.raw");
  EXPECT_EQ(c.dlq_topic, "telemetry.dlq");
  EXPECT_EQ(c.max_retries, 3);
  EXPECT_EQ(c.temp_min_threshold, -10);
  EXPECT_EQ(c.temp_max_threshold, 50);
  EXPECT_EQ(c.humidity_min_threshold, 0);
  EXPECT_EQ(c.humidity_max_threshold, 100);
  EXPECT_EQ(c.bus, "embedded");
  EXPECT_EQ(c.store, "sqlite");
  EXPECT_TRUE(Validate(c).ok());

  Config dashboard = Parse({"dashboard"});
  EXPECT_EQ(dashboard.role, Role::kDashboard);
  EXPECT_EQ(dashboard.dashboard_port, 8002);
  EXPECT_TRUE(Validate(dashboard).ok());
}

TEST_F(ConfigTest, EnvironmentVariablesSetValues) {
  SetEnv("INGEST_PORT", "9001");
  SetEnv("KAFKA_BOOTSTRAP_SERVERS", "broker:29092");
  SetEnv("MONGO_DB", "telemetry");
  SetEnv("MAX_RETRIES", "5");
  SetEnv("TEMP_MAX_THRESHOLD", "45.5");
  SetEnv("HUMIDITY_MIN_THRESHOLD", "10");
  SetEnv("AGG_WINDOWS", "5m,1d");
  Config c = Parse({"all"});
  EXPECT_EQ(c.ingest_port, 9001);
  EXPECT_EQ(c.kafka_bootstrap_servers, "broker:29092");
  EXPECT_EQ(c.mongo_db, "telemetry");
  EXPECT_EQ(c.max_retries, 5);
  EXPECT_EQ(c.temp_max_threshold, 45.5);
  EXPECT_EQ(c.humidity_min_threshold, 10);
  EXPECT_EQ(c.agg_windows, "5m,1d");
  EXPECT_EQ(c.dashboard_port, 8002);  // untouched
  EXPECT_TRUE(Validate(c).ok());
}

TEST_F(ConfigTest, AFlagOverridesItsEnvironmentVariable) {
  // BUG (src/app/config.cc:123-159, BuildCli): the same Config field is bound by the options of
  // several subcommands (--ingest-port of `all` and `ingest`, --temp-max-threshold of `all` and
  // `alerts`, ...). CLI11 2.1 reads the environment and runs the option callbacks of every
  // subcommand that has no parse_complete_callback, also of those not on the command line, so
  // INGEST_PORT=9001 `iotd all --ingest-port 9100` ends with 9001 (the unused `ingest`
  // subcommand's option writes last). Registering the role setters with
  // `parse_complete_callback` instead of `callback` makes CLI11 process only the parsed
  // subcommand (checked by hand). Remove this skip once fixed.
  SetEnv("INGEST_PORT", "9001");
  SetEnv("TEMP_MAX_THRESHOLD", "45");
  SetEnv("AGG_WINDOWS", "1m,banana");
  Config c = Parse({"all", "--ingest-port", "9100", "--temp-max-threshold=40", "--agg-windows",
                    "10s"});
  EXPECT_EQ(c.ingest_port, 9100);
  EXPECT_EQ(c.temp_max_threshold, 40);
  EXPECT_EQ(c.agg_windows, "10s");
  EXPECT_TRUE(Validate(c).ok());
}

TEST_F(ConfigTest, ValidateRejectsValuesCli11CannotCheckNamingTheOption) {
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    Errc code;
    std::string names;  // a part of the message
  };
  const std::vector<Case> cases = {
      {{"all"}, {{"AGG_WINDOWS", "1m,banana"}}, Errc::kInvalidArgument, "AGG_WINDOWS"},
      {{"all", "--agg-windows", ""}, {}, Errc::kInvalidArgument, "AGG_WINDOWS"},
      {{"all", "--max-future", "soon"}, {}, Errc::kInvalidArgument, "MAX_FUTURE"},
      {{"all"}, {{"MAX_FUTURE", "-5m"}}, Errc::kInvalidArgument, "MAX_FUTURE"},
      {{"all", "--shutdown-timeout", "never"}, {}, Errc::kInvalidArgument, "SHUTDOWN_TIMEOUT"},
      {{"all", "--temp-min-threshold", "60"}, {}, Errc::kInvalidArgument, "TEMP_MIN_THRESHOLD"},
      {{"all"},
       {{"HUMIDITY_MIN_THRESHOLD", "80"}, {"HUMIDITY_MAX_THRESHOLD", "20"}},
       Errc::kInvalidArgument,
       "HUMIDITY_MIN_THRESHOLD"},
      {{"all", "--ingest-port", "9000", "--dashboard-port", "9000"}, {}, Errc::kInvalidArgument,
       "DASHBOARD_PORT"},
      {{"ingest"}, {}, Errc::kInvalidArgument, "embedded bus"},
      {{"aggregator"}, {}, Errc::kInvalidArgument, "embedded bus"},
      {{"alerts"}, {}, Errc::kInvalidArgument, "embedded bus"},
      {{"dlq", "replay"}, {}, Errc::kInvalidArgument, "BUS=kafka"},
      // A SQLite store is one process's file: workers on their own need MongoDB.
      {{"aggregator"}, {{"BUS", "kafka"}}, Errc::kInvalidArgument, "STORE=mongodb"},
      {{"alerts", "--bus", "kafka", "--store", "sqlite"}, {}, Errc::kInvalidArgument,
       "STORE=mongodb"},
      {{"all", "--bus", "kafka", "--kafka-linger", "a bit"}, {}, Errc::kInvalidArgument,
       "KAFKA_LINGER"},
      {{"ingest", "--bus", "kafka"}, {{"KAFKA_DELIVERY_TIMEOUT", "-1s"}}, Errc::kInvalidArgument,
       "KAFKA_DELIVERY_TIMEOUT"},
      {{"ingest", "--bus", "kafka"}, {{"KAFKA_CONFIG", "security.protocol"}},
       Errc::kInvalidArgument, "KAFKA_CONFIG"},
      {{"ingest", "--bus", "kafka", "--dlq-topic", "telemetry.raw"}, {}, Errc::kInvalidArgument,
       "DLQ_TOPIC"},
      {{"all", "--raw-retention", "30 days"}, {}, Errc::kInvalidArgument, "RAW_RETENTION"},
      {{"all"}, {{"RAW_RETENTION", "0d"}}, Errc::kInvalidArgument, "RAW_RETENTION"},
      {{"all"}, {{"AGG_RETENTION", "1m"}}, Errc::kInvalidArgument, "AGG_RETENTION"},
      {{"all"}, {{"AGG_RETENTION", "1m=7d,"}}, Errc::kInvalidArgument, "AGG_RETENTION"},
      {{"all"}, {{"AGG_RETENTION", "1m=forever"}}, Errc::kInvalidArgument, "AGG_RETENTION"},
      {{"all"}, {{"AGG_RETENTION", "1m=7d,1m=1d"}}, Errc::kInvalidArgument, "listed twice"},
      // Every window must be aggregated.
      {{"all"}, {{"AGG_RETENTION", "5m=7d"}}, Errc::kInvalidArgument, "AGG_WINDOWS"},
      {{"all", "--agg-windows", "5m", "--agg-retention", "1h=52w"},
       {},
       Errc::kInvalidArgument,
       "AGG_RETENTION"},
      {{"aggregator", "--bus", "kafka", "--store", "mongodb", "--agg-retention", "1m=-7d"},
       {},
       Errc::kInvalidArgument,
       "AGG_RETENTION"},
      {{"all", "--retention-interval", "often"}, {}, Errc::kInvalidArgument,
       "RETENTION_INTERVAL"},
      {{"all"}, {{"RETENTION_INTERVAL", "0s"}}, Errc::kInvalidArgument, "RETENTION_INTERVAL"},
  };
  for (const auto& c : cases) {
    std::string trace;
    for (const auto& a : c.args) trace += a + " ";
    for (const auto& [k, v] : c.env) trace += k + "=" + v + " ";
    SCOPED_TRACE(trace);
    for (const auto& [k, v] : c.env) SetEnv(k, v);
    auto error = Invalid(c.args);
    for (const auto& [k, v] : c.env) ::unsetenv(k.c_str());
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code, c.code) << error->message;
    EXPECT_NE(error->message.find(c.names), std::string::npos) << error->message;
  }
}

TEST_F(ConfigTest, ValidateAcceptsTheEdgesOfWhatIsAllowed) {
  // Port 0 (any free port) twice is no clash; equal thresholds leave exactly one valid value.
  EXPECT_FALSE(Invalid({"all", "--ingest-port", "0", "--dashboard-port", "0"}).has_value());
  EXPECT_FALSE(Invalid({"all", "--temp-min-threshold", "20", "--temp-max-threshold", "20"})
                   .has_value());
  EXPECT_FALSE(Invalid({"all", "--agg-windows", " 1h , 1m "}).has_value());
}

TEST_F(ConfigTest, KafkaOptionsHaveDefaultsAndTheirVariables) {
  Config d = Parse({"aggregator", "--bus", "kafka", "--store", "mongodb"});
  EXPECT_FALSE(Invalid({"aggregator", "--bus", "kafka", "--store", "mongodb"}).has_value());
  EXPECT_EQ(d.kafka_bootstrap_servers, "kafka:9092");
  EXPECT_EQ(d.telemetry_topic, "telemetry.raw");
  EXPECT_EQ(d.dlq_topic, "telemetry.dlq");
  EXPECT_EQ(d.max_retries, 3);
  EXPECT_EQ(d.kafka.partitions, 6);
  EXPECT_EQ(d.kafka.aggregator_group, "iotd-aggregator");
  EXPECT_EQ(d.kafka.alerts_group, "iotd-alerts");
  EXPECT_TRUE(d.kafka.create_topics);

  SetEnv("KAFKA_PARTITIONS", "12");
  SetEnv("KAFKA_CREATE_TOPICS", "false");
  SetEnv("KAFKA_COMPRESSION", "zstd");
  SetEnv("KAFKA_CONFIG", "security.protocol=ssl; ssl.ca.location = /etc/ca.pem");
  Config c = Parse({"ingest", "--bus", "kafka", "--kafka-partitions", "3"});
  EXPECT_EQ(c.kafka.partitions, 3);  // the flag wins
  EXPECT_FALSE(c.kafka.create_topics);
  EXPECT_EQ(c.kafka.compression, "zstd");
  EXPECT_FALSE(Invalid({"ingest", "--bus", "kafka"}).has_value());
  EXPECT_FALSE(Invalid({"ingest", "--bus", "kafka", "--kafka-linger", "0"}).has_value());
  EXPECT_EQ(ParseKafkaDuration("0ms"), std::chrono::milliseconds(0));
  EXPECT_EQ(ParseKafkaDuration("0"), std::chrono::milliseconds(0));
  EXPECT_EQ(ParseKafkaDuration("250ms"), std::chrono::milliseconds(250));
  EXPECT_FALSE(ParseKafkaDuration("0x").has_value());
  EXPECT_FALSE(ParseKafkaDuration("").has_value());
  EXPECT_FALSE(ParseKafkaDuration("-1s").has_value());
  Config r = Parse({"dlq", "replay", "--bus", "kafka", "--consumer", "alerts"});
  EXPECT_EQ(r.role, Role::kDlqReplay);
  EXPECT_EQ(r.dlq_replay.consumer, "alerts");
  EXPECT_EQ(r.dlq_replay.group, "iotd-dlq-replay");
  EXPECT_THROW(Parse({"dlq", "replay", "--consumer", "nobody"}), CLI::ValidationError);
}

TEST_F(ConfigTest, RetentionIsOffByDefault) {
  Config c = Parse({"all"});
  EXPECT_EQ(c.raw_retention, "");
  EXPECT_EQ(c.agg_retention, "");
  EXPECT_EQ(c.retention_interval, "1m");
  EXPECT_TRUE(Validate(c).ok());
  EXPECT_TRUE(RetentionFrom(c).empty());
}

TEST_F(ConfigTest, RetentionOptionsBuildTheStoresRetention) {
  SetEnv("RAW_RETENTION", "30d");
  SetEnv("AGG_WINDOWS", "1m,5m,1h");
  SetEnv("AGG_RETENTION", " 1m=7d , 1h=52w");
  SetEnv("RETENTION_INTERVAL", "10s");
  Config c = Parse({"all"});
  EXPECT_EQ(c.retention_interval, "10s");
  ASSERT_TRUE(Validate(c).ok()) << Validate(c).error().message;
  store::Retention r = RetentionFrom(c);
  EXPECT_EQ(r.raw, std::optional<core::Micros>(std::chrono::days(30)));
  using Keep = std::pair<core::Micros, core::Micros>;
  EXPECT_EQ(r.aggregates,
            (std::vector<Keep>{{std::chrono::minutes(1), std::chrono::days(7)},
                               {std::chrono::hours(1), std::chrono::weeks(52)}}));

  // Flags override, and either option alone is enough.
  Config flags = Parse({"all", "--raw-retention", "", "--agg-retention", "5m=1d"});
  ASSERT_TRUE(Validate(flags).ok());
  r = RetentionFrom(flags);
  EXPECT_FALSE(r.raw.has_value());
  EXPECT_EQ(r.aggregates, (std::vector<Keep>{{std::chrono::minutes(5), std::chrono::days(1)}}));
  Config raw_only = Parse({"aggregator", "--bus", "kafka", "--raw-retention", "12h",
                           "--agg-retention", ""});
  EXPECT_EQ(RetentionFrom(raw_only).raw, std::optional<core::Micros>(std::chrono::hours(12)));
  EXPECT_TRUE(RetentionFrom(raw_only).aggregates.empty());
  // The dashboard does not delete anything: the options are not its own.
  EXPECT_THROW(Parse({"dashboard", "--raw-retention", "1d"}), CLI::ParseError);
}

TEST_F(ConfigTest, StoreMongodbIsAccepted) {
  EXPECT_FALSE(Invalid({"all", "--store", "mongodb"}).has_value());
  SetEnv("STORE", "mongodb");
  EXPECT_FALSE(Invalid({"dashboard"}).has_value());
}

TEST_F(ConfigTest, Cli11RejectsValuesOfTheWrongTypeOrRange) {
  EXPECT_THROW(Parse({"all", "--ingest-port", "70000"}), CLI::ParseError);
  EXPECT_THROW(Parse({"all", "--ingest-port", "-1"}), CLI::ParseError);
  EXPECT_THROW(Parse({"all", "--bus", "rabbitmq"}), CLI::ParseError);
  EXPECT_THROW(Parse({"all", "--http-threads", "0"}), CLI::ParseError);
  EXPECT_THROW(Parse({"all", "--log-level", "loud"}), CLI::ParseError);
  EXPECT_THROW(Parse({"all", "--max-retries", "many"}), CLI::ParseError);
  EXPECT_THROW(Parse({"dashboard", "--agg-windows", "1m"}), CLI::ParseError);  // not its option
  EXPECT_THROW(Parse({}), CLI::ParseError);                                    // no role
  SetEnv("INGEST_PORT", "eighty");
  EXPECT_THROW(Parse({"all"}), CLI::ParseError);
}

TEST_F(ConfigTest, LoadgenOptionsParse) {
  Config defaults = Parse({"loadgen"});
  EXPECT_EQ(defaults.role, Role::kLoadgen);
  EXPECT_EQ(defaults.loadgen.devices, 10);
  EXPECT_EQ(defaults.loadgen.rps, 1.0);
  EXPECT_EQ(defaults.loadgen.base_url, "http://localhost:8001");
  EXPECT_TRUE(defaults.loadgen.duration.empty());
  EXPECT_TRUE(Validate(defaults).ok());

  Config c = Parse({"loadgen", "--devices", "50", "--rps", "2.5", "--base-url", "http://h:9001",
                    "--duration", "30s", "--batch", "100", "--connections", "4", "--unthrottled",
                    "--max-error-rate", "0.05", "--hot-fraction", "0.1", "--seed", "42",
                    "--timeout", "5s", "--log-level", "warn"});
  EXPECT_EQ(c.role, Role::kLoadgen);
  EXPECT_EQ(c.loadgen.devices, 50);
  EXPECT_EQ(c.loadgen.rps, 2.5);
  EXPECT_EQ(c.loadgen.base_url, "http://h:9001");
  EXPECT_EQ(c.loadgen.duration, "30s");
  EXPECT_EQ(c.loadgen.batch, 100);
  EXPECT_EQ(c.loadgen.connections, 4);
  EXPECT_TRUE(c.loadgen.unthrottled);
  EXPECT_EQ(c.loadgen.max_error_rate, 0.05);
  EXPECT_EQ(c.loadgen.hot_fraction, 0.1);
  EXPECT_EQ(c.loadgen.seed, 42u);
  EXPECT_EQ(c.loadgen.timeout, "5s");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_TRUE(Validate(c).ok());

  // The load generator does not read the servers' variables.
  SetEnv("AGG_WINDOWS", "banana");
  EXPECT_TRUE(Validate(Parse({"loadgen"})).ok());

  auto duration = Validate(Parse({"loadgen", "--duration", "a while"}));
  ASSERT_FALSE(duration.ok());
  EXPECT_NE(duration.error().message.find("--duration"), std::string::npos);
  auto timeout = Validate(Parse({"loadgen", "--timeout", "0"}));
  ASSERT_FALSE(timeout.ok());
  EXPECT_NE(timeout.error().message.find("--timeout"), std::string::npos);
  EXPECT_THROW(Parse({"loadgen", "--devices", "0"}), CLI::ParseError);
  EXPECT_THROW(Parse({"loadgen", "--hot-fraction", "1.5"}), CLI::ParseError);
  EXPECT_THROW(Parse({"loadgen", "--ingest-port", "1"}), CLI::ParseError);
}

// --- MQTT ingestion (docs/mqtt.md) ---------------------------------------------------------------

TEST_F(ConfigTest, MqttUrlGivesHostPortCredentialsAndTls) {
  Config c = Parse({"all", "--mqtt-url", "mqtts://us%40r:p%3Ass@broker.example:8884"});
  auto o = MqttClientFrom(c);
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_TRUE(o->tls);
  EXPECT_EQ(o->host, "broker.example");
  EXPECT_EQ(o->port, 8884);
  EXPECT_EQ(o->username, "us@r");
  EXPECT_EQ(o->password, "p:ss");
  EXPECT_EQ(o->topics, std::vector<std::string>{"devices/+/telemetry"});
  EXPECT_EQ(o->session_expiry_s, 3600u);
  EXPECT_EQ(o->client_id.rfind("iotd-ingest-", 0), 0u);

  c = Parse({"ingest", "--mqtt-url", "mqtt://[::1]", "--mqtt-topics",
             "$share/g/devices/+/telemetry, plant/#", "--mqtt-session-expiry", "0"});
  o = MqttClientFrom(c);
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_FALSE(o->tls);
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->port, 1883);
  EXPECT_FALSE(o->username.has_value());
  EXPECT_EQ(o->topics, (std::vector<std::string>{"$share/g/devices/+/telemetry", "plant/#"}));
  EXPECT_EQ(o->session_expiry_s, 0u);
}

TEST_F(ConfigTest, BadMqttOptionsAreRejectedNamingTheOption) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"all", "--mqtt-url", "tcp://h:1883"}, "MQTT_URL"},
      {{"all", "--mqtt-url", "mqtt://h:0"}, "MQTT_URL"},
      {{"all", "--mqtt-url", "mqtt://h:70000"}, "MQTT_URL"},
      {{"all", "--mqtt-url", "mqtt://:1883"}, "MQTT_URL"},
      {{"all", "--mqtt-url", "mqtt://h/devices"}, "MQTT_URL"},
      {{"all", "--mqtt-url", "mqtt://h", "--mqtt-topics", "a/#/b"}, "MQTT_TOPICS"},
      {{"all", "--mqtt-url", "mqtt://h", "--mqtt-topics", " , "}, "MQTT_TOPICS"},
      {{"all", "--mqtt-url", "mqtt://h", "--mqtt-keepalive", "20h"}, "MQTT_KEEPALIVE"},
      {{"all", "--mqtt-url", "mqtt://h", "--mqtt-max-backoff", "1ms"}, "MQTT_MAX_BACKOFF"},
      {{"all", "--mqtt-url", "mqtt://h", "--mqtt-ca-file", "ca.pem"}, "mqtts://"},
      {{"all", "--mqtt-url", "mqtts://h", "--mqtt-cert-file", "c.pem"}, "MQTT_KEY_FILE"},
  };
  for (const auto& [args, option] : cases) {
    auto e = Invalid(args);
    ASSERT_TRUE(e.has_value()) << args.back();
    EXPECT_NE(e->message.find(option), std::string::npos) << e->message;
  }
  EXPECT_FALSE(Invalid({"all", "--mqtt-url", "mqtt://127.0.0.1:1883"}).has_value());
  EXPECT_FALSE(Invalid({"all"}).has_value());  // MQTT off
}

}  // namespace
}  // namespace iot::app
