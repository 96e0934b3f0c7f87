// dashboard_service_test.cc: the dashboard handlers (services/dashboard_service.h) called through
// an http::Router with constructed requests, over a real SqliteStore filled with Apply: cursors
// and paging links, 404 and 422 answers, /stats, the server clock of /alerts/recent, /dlq, and a
// store that is down.
#include <gtest/gtest.h>

#include <simdjson.h>

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/alert.h"
#include "core/reading.h"
#include "core/window.h"
#include "http/router.h"
#include "services/dashboard_service.h"

#include "auth/authenticator.h"
#include "auth/token_file.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

using namespace std::chrono_literals;
using testing::At;
using testing::Get;
using testing::Header;
using testing::ReadingAt;

// BatchOf builds the raw readings and device updates of `readings` (ids as given).
store::WriteBatch BatchOf(const std::vector<std::pair<std::int64_t, core::Reading>>& readings) {
  store::WriteBatch b;
  std::map<std::string, std::size_t> index;
  for (const auto& [id, r] : readings) {
    b.readings.push_back(store::StoredReading{core::MessageId{id}, r});
    auto [it, inserted] = index.try_emplace(r.device_id, b.devices.size());
    if (inserted) {
      b.devices.push_back(store::DeviceUpdate{r.device_id, r.ts, r.ts, 1, r});
      continue;
    }
    auto& u = b.devices[it->second];
    ++u.readings;
    u.first_seen = std::min(u.first_seen, r.ts);
    if (r.ts >= u.last_seen) {
      u.last_seen = r.ts;
      u.latest = r;
    }
  }
  return b;
}

core::Alert AlertOf(std::int64_t id, const std::string& device, core::AlertStatus status,
                    core::Timestamp created_at) {
  core::Alert a;
  a.id = id;
  a.device_id = device;
  a.sensor_type = "temperature_c";
  a.value = 60;
  a.alert_type = "threshold_high";
  a.severity = "warning";
  a.message = "temperature_c 60 above 50";
  a.timestamp = created_at;
  a.status = status;
  a.threshold = 50;
  a.created_at = created_at;
  a.updated_at = created_at;
  if (status == core::AlertStatus::kResolved) a.resolved_at = created_at + 1min;
  a.count = 1;
  return a;
}

// LinkTarget returns the target inside `<...>` of a Link header ("" when there is none).
std::string LinkTarget(const std::string& link) {
  auto open = link.find('<');
  auto close = link.find('>');
  if (open == std::string::npos || close == std::string::npos) return {};
  EXPECT_EQ(link.substr(close), R"(>; rel="next")");
  return link.substr(open + 1, close - open - 1);
}

class DashboardServiceTest : public ::testing::Test {
 protected:
  DashboardServiceTest() { service_.RegisterRoutes(router_); }
  void SetUp() override { ASSERT_NE(store_, nullptr); }

  // AddReadings stores dev-1 readings at 10, 20, .., 50 s (ids 1..5) and one of dev-2 (id 6).
  void AddReadings() {
    std::vector<std::pair<std::int64_t, core::Reading>> rs;
    for (std::int64_t i = 1; i <= 5; ++i) {
      rs.emplace_back(i, ReadingAt("dev-1", At(10 * i), static_cast<double>(20 + i)));
    }
    rs.emplace_back(6, ReadingAt("dev-2", At(25), 30));
    auto batch = BatchOf(rs);
    batch.ingested = 6;
    batch.processed_at = At(3570);  // the minute before the clock's
    IOT_ASSERT_OK(store_->Apply(batch));
  }

  // Ids returns the "id" of every item of a JSON array body.
  std::vector<std::string> Ids(const http::Response& r) {
    std::vector<std::string> out;
    simdjson::dom::array items = parser_.parse(r.body());
    for (auto item : items) out.emplace_back(std::string_view(item["id"]));
    return out;
  }

  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::OpenStore(dir_);
  core::ManualClock clock_{At(3630)};  // 2024-01-01T01:00:30Z
  DashboardService service_{*store_, clock_};
  http::Router router_;
  simdjson::dom::parser parser_;
};

TEST(CursorTest, CursorsRoundTripAsUrlSafeText) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  for (store::Cursor c : std::vector<store::Cursor>{
           {0, 0, {}}, {1, 2, {}}, {1'704'067'200'000'000, 5, {}}, {kMax, kMax, {}}, {-1, 0, {}}, {kMin, 7, {}}}) {
    std::string text = EncodeCursor(c);
    SCOPED_TRACE(text);
    EXPECT_EQ(text.find_first_not_of("0123456789abcdef."), std::string::npos);
    auto back = DecodeCursor(text);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->ts_us, c.ts_us);
    EXPECT_EQ(back->id, c.id);
    EXPECT_EQ(back->key, "");
  }
}

TEST(CursorTest, CursorsWithAKeyRoundTripAsUrlSafeText) {
  // The MongoDB store breaks ties between aggregates by their _id, a string.
  for (std::string key : {std::string("dev-1/temperature_c/1m/2026-11-27T21:00:00Z"),
                          std::string("a"), std::string("\x00\xff.%&?", 6)}) {
    store::Cursor c{1'704'067'200'000'000, 0, key};
    std::string text = EncodeCursor(c);
    SCOPED_TRACE(text);
    EXPECT_EQ(text.find_first_not_of("0123456789abcdef."), std::string::npos);
    auto back = DecodeCursor(text);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->ts_us, c.ts_us);
    EXPECT_EQ(back->key, key);
  }
  for (const char* text : {"1.2.", "1.2.a", "1.2.0g", "1.2.61.62", "1.2.6 1"}) {
    EXPECT_FALSE(DecodeCursor(text).has_value()) << "'" << text << "'";
  }
  EXPECT_FALSE(DecodeCursor("1.2." + std::string(1026, 'a')).has_value());  // key too long
}

TEST(CursorTest, GarbageCursorsAreRejected) {
  for (const char* text : {"", ".", "1.", ".1", "1", "1.2.3", "1..2", "g.1", "1.g", " 1.2",
                           "1.2 ", "-1.2", "+1.2", "0x1.2", "1.%32", "11111111111111111.1"}) {
    EXPECT_FALSE(DecodeCursor(text).has_value()) << "'" << text << "'";
  }
}

TEST_F(DashboardServiceTest, ListsRejectCursorsTheServerDidNotIssue) {
  AddReadings();
  for (const char* target : {"/telemetry?cursor=zz", "/aggregated?cursor=1.2.3",
                             "/alerts?cursor=", "/devices/dev-1/telemetry?cursor=-1.2",
                             "/dlq?cursor=1"}) {
    SCOPED_TRACE(target);
    auto r = Get(router_, target);
    EXPECT_EQ(r.result_int(), 422u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), "invalid_parameter");
    EXPECT_EQ(std::string_view(doc["field"]), "cursor");
  }
}

TEST_F(DashboardServiceTest, TelemetryPagesFollowTheLinkWhichKeepsTheOtherParameters) {
  AddReadings();
  const std::string first = "/devices/dev-1/telemetry?limit=2&from=2024-01-01T00:00:00Z";
  auto page1 = Get(router_, first);
  ASSERT_EQ(page1.result_int(), 200u);
  EXPECT_EQ(Ids(page1), (std::vector<std::string>{"5", "4"}));
  const std::string cursor = Header(page1, "X-Next-Cursor");
  ASSERT_FALSE(cursor.empty());
  EXPECT_EQ(DecodeCursor(cursor).has_value(), true);
  const std::string next = LinkTarget(Header(page1, "Link"));
  EXPECT_EQ(next, first + "&cursor=" + cursor);

  auto page2 = Get(router_, next);
  EXPECT_EQ(Ids(page2), (std::vector<std::string>{"3", "2"}));
  // The next link replaces the cursor instead of adding a second one.
  const std::string last = LinkTarget(Header(page2, "Link"));
  EXPECT_EQ(last, first + "&cursor=" + Header(page2, "X-Next-Cursor"));

  auto page3 = Get(router_, last);
  EXPECT_EQ(Ids(page3), (std::vector<std::string>{"1"}));
  EXPECT_TRUE(Header(page3, "Link").empty());
  EXPECT_TRUE(Header(page3, "X-Next-Cursor").empty());

  // A cursor given first in the query does not survive into the next link either.
  auto all = Get(router_, "/telemetry?cursor=" + cursor + "&limit=2");
  EXPECT_EQ(Ids(all), (std::vector<std::string>{"3", "6"}));  // dev-2's reading at 25 s
  EXPECT_EQ(LinkTarget(Header(all, "Link")),
            "/telemetry?limit=2&cursor=" + Header(all, "X-Next-Cursor"));
}

TEST_F(DashboardServiceTest, AggregateLinksKeepTheWindowAndTheSensor) {
  AddReadings();
  store::WriteBatch b;
  for (std::int64_t m : {0, 1, 2}) {
    store::AggregateDelta d;
    d.key = core::AggregateKey{"dev-1", "temperature_c", 1min, At(60 * m)};
    d.acc.Add(static_cast<double>(m));
    b.aggregates.push_back(d);
    d.key.sensor_type = "humidity";
    b.aggregates.push_back(d);
  }
  store::AggregateDelta hour;
  hour.key = core::AggregateKey{"dev-1", "temperature_c", 1h, At(0)};
  hour.acc.Add(1);
  b.aggregates.push_back(hour);
  IOT_ASSERT_OK(store_->Apply(b));

  const std::string first = "/devices/dev-1/aggregates?window=1m&sensor_type=temperature_c&limit=2";
  auto page1 = Get(router_, first);
  ASSERT_EQ(page1.result_int(), 200u);
  simdjson::dom::array items = parser_.parse(page1.body());
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(std::string_view(items.at(0)["timestamp"]), "2024-01-01T00:02:00Z");
  EXPECT_EQ(std::string_view(items.at(1)["timestamp"]), "2024-01-01T00:01:00Z");
  const std::string next = LinkTarget(Header(page1, "Link"));
  EXPECT_EQ(next, first + "&cursor=" + Header(page1, "X-Next-Cursor"));

  auto page2 = Get(router_, next);
  items = parser_.parse(page2.body());
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(std::string_view(items.at(0)["timestamp"]), "2024-01-01T00:00:00Z");
  EXPECT_EQ(std::string_view(items.at(0)["window"]), "1m");
  EXPECT_EQ(std::string_view(items.at(0)["sensor_type"]), "temperature_c");
  EXPECT_TRUE(Header(page2, "Link").empty());
}

TEST_F(DashboardServiceTest, AnUnknownDeviceIs404OnEveryDeviceRoute) {
  AddReadings();
  for (const char* target : {"/devices/nope", "/devices/nope/telemetry",
                             "/devices/nope/aggregates?window=1m"}) {
    SCOPED_TRACE(target);
    auto r = Get(router_, target);
    EXPECT_EQ(r.result_int(), 404u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), "device_not_found");
    EXPECT_EQ(std::string_view(doc["field"]), "device_id");
  }
  EXPECT_EQ(Get(router_, "/devices/dev-2/telemetry").result_int(), 200u);
}

TEST_F(DashboardServiceTest, BadParametersAre422NamingTheParameter) {
  AddReadings();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/telemetry?limit=0", "limit"},
      {"/telemetry?limit=1001", "limit"},
      {"/telemetry?limit=", "limit"},
      {"/telemetry?limit=1.5", "limit"},
      {"/devices?limit=-1", "limit"},
      {"/devices/dev-1/telemetry?limit=x", "limit"},
      {"/telemetry?from=yesterday", "from"},
      {"/telemetry?to=2024-13-01T00:00:00Z", "to"},
      {"/telemetry?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"},
      {"/aggregated?window=5x", "window"},
      {"/aggregated?window=0s", "window"},
      {"/devices/dev-1/aggregates?window=", "window"},
      {"/aggregated?sensor_type=", "sensor_type"},
      {"/alerts?status=open", "status"},
      {"/alerts?status=ACTIVE", "status"},
      {"/alerts/recent?minutes=0", "minutes"},
      {"/alerts/recent?minutes=525601", "minutes"},
      {"/alerts/recent?status=nope", "status"},
      {"/dlq?limit=0", "limit"},
      {"/dlq?from=2024-01-01", "from"},
      {"/dlq?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"},
      {"/dlq?consumer=", "consumer"},
      {"/dlq?consumer=" + std::string(65, 'a'), "consumer"},
  };
  for (const auto& [target, field] : cases) {
    SCOPED_TRACE(target);
    auto r = Get(router_, target);
    EXPECT_EQ(r.result_int(), 422u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), "invalid_parameter");
    EXPECT_EQ(std::string_view(doc["field"]), field);
  }
  // The bounds themselves are fine.
  EXPECT_EQ(Get(router_, "/telemetry?limit=1000").result_int(), 200u);
  EXPECT_EQ(Get(router_, "/alerts/recent?minutes=525600").result_int(), 200u);
}

TEST_F(DashboardServiceTest, StatsHasEveryTotalTheRateAndTheServerTime) {
  AddReadings();
  store::WriteBatch b;
  for (std::int64_t m : {0, 1}) {
    store::AggregateDelta d;
    d.key = core::AggregateKey{"dev-1", "temperature_c", 1min, At(60 * m)};
    d.acc.Add(1);
    b.aggregates.push_back(d);
  }
  b.alert_upserts = {AlertOf(10, "dev-1", core::AlertStatus::kActive, At(0)),
                     AlertOf(11, "dev-1", core::AlertStatus::kResolved, At(1)),
                     AlertOf(12, "dev-2", core::AlertStatus::kPending, At(2))};
  IOT_ASSERT_OK(store_->Apply(b));

  auto r = Get(router_, "/stats");
  ASSERT_EQ(r.result_int(), 200u);
  simdjson::dom::object doc = parser_.parse(r.body());
  std::set<std::string> keys;
  for (auto field : doc) keys.emplace(field.key);
  EXPECT_EQ(keys, (std::set<std::string>{"total_devices", "total_telemetry", "total_aggregated",
                                         "total_alerts", "active_alerts", "ingest_rate_per_s",
                                         "timestamp"}));
  EXPECT_EQ(std::int64_t(doc["total_devices"]), 2);
  EXPECT_EQ(std::int64_t(doc["total_telemetry"]), 6);
  EXPECT_EQ(std::int64_t(doc["total_aggregated"]), 2);
  EXPECT_EQ(std::int64_t(doc["total_alerts"]), 2);  // pending alerts never fired
  EXPECT_EQ(std::int64_t(doc["active_alerts"]), 1);
  EXPECT_DOUBLE_EQ(double(doc["ingest_rate_per_s"]), 0.1);  // 6 readings in the last minute
  EXPECT_EQ(std::string_view(doc["timestamp"]), "2024-01-01T01:00:30Z");
}

TEST_F(DashboardServiceTest, RecentAlertsAreCountedFromTheServerClock) {
  store::WriteBatch b;
  b.alert_upserts = {AlertOf(1, "dev-1", core::AlertStatus::kActive, clock_.Now() - 30min),
                     AlertOf(2, "dev-2", core::AlertStatus::kResolved, clock_.Now() - 2h),
                     AlertOf(3, "dev-1", core::AlertStatus::kPending, clock_.Now() - 1min)};
  IOT_ASSERT_OK(store_->Apply(b));

  EXPECT_EQ(Ids(Get(router_, "/alerts/recent")), (std::vector<std::string>{"1"}));
  EXPECT_EQ(Ids(Get(router_, "/alerts/recent?minutes=180")),
            (std::vector<std::string>{"1", "2"}));
  clock_.Advance(1h);
  EXPECT_TRUE(Ids(Get(router_, "/alerts/recent")).empty());
  EXPECT_EQ(Ids(Get(router_, "/alerts/recent?minutes=120&status=active")),
            (std::vector<std::string>{"1"}));

  // Pending alerts are listed only when asked for.
  EXPECT_EQ(Ids(Get(router_, "/alerts")), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(Ids(Get(router_, "/alerts?status=pending")), (std::vector<std::string>{"3"}));
  EXPECT_EQ(Ids(Get(router_, "/alerts?device_id=dev-2")), (std::vector<std::string>{"2"}));
}

TEST_F(DashboardServiceTest, AnAlertCanBeFetchedAndAcknowledgedOnceAndTheChangeIsAnnounced) {
  store::WriteBatch b;
  b.alert_upserts = {AlertOf(7, "dev-1", core::AlertStatus::kActive, clock_.Now() - 5min),
                     AlertOf(8, "dev-1", core::AlertStatus::kPending, clock_.Now() - 1min)};
  IOT_ASSERT_OK(store_->Apply(b));
  std::vector<core::Alert> announced;
  DashboardService service{*store_, clock_};
  service.OnAlertChanged([&](const core::Alert& a) { announced.push_back(a); });
  http::Router router;
  service.RegisterRoutes(router);
  auto post = [&](const std::string& target, std::string body) {
    auto req = testing::MakeRequest(http::beast::http::verb::post, target, std::move(body),
                                    "application/json");
    return testing::Serve(router, std::move(req))->Response();
  };

  auto one = Get(router, "/alerts/7");
  ASSERT_EQ(one.result_int(), 200u) << one.body();
  simdjson::dom::element alert = parser_.parse(one.body());
  EXPECT_EQ(std::string_view(alert["id"]), "7");
  EXPECT_FALSE(bool(alert["acknowledged"]));
  EXPECT_TRUE(alert["acknowledged_at"].is_null());

  auto acked = post("/alerts/7/ack", R"({"by":"ops","note":"on it"})");
  ASSERT_EQ(acked.result_int(), 200u) << acked.body();
  alert = parser_.parse(acked.body());
  EXPECT_TRUE(bool(alert["acknowledged"]));
  EXPECT_EQ(std::string_view(alert["acknowledged_by"]), "ops");
  EXPECT_EQ(std::string_view(alert["acknowledged_note"]), "on it");
  EXPECT_EQ(std::string_view(alert["acknowledged_at"]), core::FormatIso8601(clock_.Now()));
  ASSERT_EQ(announced.size(), 1u);
  EXPECT_EQ(announced[0].ack->by, "ops");

  // Again, later, by someone else, without a body: the first acknowledgement stays.
  clock_.Advance(1min);
  auto again = post("/alerts/7/ack", "");
  ASSERT_EQ(again.result_int(), 200u);
  EXPECT_EQ(std::string_view(parser_.parse(again.body())["acknowledged_by"]), "ops");
  alert = parser_.parse(Get(router, "/alerts?status=active").body()).at(0);
  EXPECT_EQ(std::string_view(alert["acknowledged_by"]), "ops");

  // Unknown, pending and malformed ids are 404; bad bodies are 422 naming the member.
  for (const char* target : {"/alerts/9/ack", "/alerts/8/ack", "/alerts/x/ack", "/alerts/-7/ack"}) {
    auto r = post(target, "{}");
    EXPECT_EQ(r.result_int(), 404u) << target;
    EXPECT_NE(r.body().find("alert_not_found"), std::string::npos) << target;
  }
  EXPECT_EQ(Get(router, "/alerts/8").result_int(), 404u);
  const std::pair<const char*, const char*> bad[] = {
      {R"({"by":1})", "by"}, {R"({"who":"x"})", "who"}, {R"([1])", "body"},
      {R"({"by":)", "body"}, {R"({"note":"x"})" "  ", ""}};
  for (const auto& [body, field] : bad) {
    auto r = post("/alerts/7/ack", body);
    if (*field == 0) {
      EXPECT_EQ(r.result_int(), 200u) << body;
      continue;
    }
    EXPECT_EQ(r.result_int(), 422u) << body;
    EXPECT_NE(r.body().find(std::string("\"field\":\"") + field + "\""), std::string::npos)
        << r.body();
  }
  const std::string long_by = R"({"by":")" + std::string(201, 'x') + R"("})";
  EXPECT_EQ(post("/alerts/7/ack", long_by).result_int(), 422u);
  EXPECT_EQ(announced.size(), 3u);  // the two accepted requests after the first
}

TEST_F(DashboardServiceTest, DevicesAreListedByIdAndPagedWithTheLastId) {
  AddReadings();
  auto page1 = Get(router_, "/devices?limit=1");
  simdjson::dom::array items = parser_.parse(page1.body());
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(std::string_view(items.at(0)["device_id"]), "dev-1");
  EXPECT_EQ(Header(page1, "X-Next-Cursor"), "dev-1");

  auto page2 = Get(router_, "/devices?limit=1&cursor=dev-1");
  items = parser_.parse(page2.body());
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(std::string_view(items.at(0)["device_id"]), "dev-2");

  auto one = Get(router_, "/devices/dev-1");
  ASSERT_EQ(one.result_int(), 200u);
  simdjson::dom::element d = parser_.parse(one.body());
  EXPECT_EQ(std::string_view(d["first_seen"]), "2024-01-01T00:00:10Z");
  EXPECT_EQ(std::string_view(d["last_seen"]), "2024-01-01T00:00:50Z");
  EXPECT_EQ(std::int64_t(d["readings"]), 5);
  EXPECT_EQ(double(d["latest"]["temperature_c"]), 25);
}

store::DeadLetter DeadLetterOf(const std::string& consumer, std::int64_t offset,
                               core::Timestamp failed_at, std::string payload) {
  store::DeadLetter dl;
  dl.consumer = consumer;
  dl.topic = "telemetry.raw";
  dl.partition = 2;
  dl.offset = offset;
  dl.key = "dev-1";
  dl.payload = std::move(payload);
  dl.reason = "undecodable: not a JSON object";
  dl.attempts = 3;
  dl.failed_at = failed_at;
  return dl;
}

// Offsets returns the "offset" of every item of a JSON array body.
std::vector<std::int64_t> Offsets(simdjson::dom::parser& parser, const http::Response& r) {
  std::vector<std::int64_t> out;
  simdjson::dom::array items = parser.parse(r.body());
  for (auto item : items) out.push_back(std::int64_t(item["offset"]));
  return out;
}

TEST_F(DashboardServiceTest, DlqListsDeadLettersNewestFirstWithTextOrBase64Payloads) {
  store::WriteBatch b;
  b.dead_letters = {DeadLetterOf("aggregator", 7, At(10) + 250ms, R"({"device_id": 5})"),
                    DeadLetterOf("alerts", 8, At(20), std::string("\x00\xff\xfe\x01", 4))};
  IOT_ASSERT_OK(store_->Apply(b));

  auto r = Get(router_, "/dlq");
  ASSERT_EQ(r.result_int(), 200u);
  EXPECT_EQ(Header(r, "Content-Type"), "application/json");
  simdjson::dom::array items = parser_.parse(r.body());
  ASSERT_EQ(items.size(), 2u);
  simdjson::dom::object binary = items.at(0);
  std::set<std::string> keys;
  for (auto field : binary) keys.emplace(field.key);
  EXPECT_EQ(keys, (std::set<std::string>{"consumer", "topic", "partition", "offset", "key",
                                         "key_encoding", "payload", "payload_encoding", "reason", "attempts",
                                         "failed_at"}));
  EXPECT_EQ(std::string_view(binary["consumer"]), "alerts");
  EXPECT_EQ(std::string_view(binary["topic"]), "telemetry.raw");
  EXPECT_EQ(std::int64_t(binary["partition"]), 2);
  EXPECT_EQ(std::int64_t(binary["offset"]), 8);
  EXPECT_EQ(std::string_view(binary["key"]), "dev-1");
  EXPECT_EQ(std::string_view(binary["payload_encoding"]), "base64");
  EXPECT_EQ(std::string_view(binary["payload"]), "AP/+AQ==");
  EXPECT_EQ(std::string_view(binary["reason"]), "undecodable: not a JSON object");
  EXPECT_EQ(std::int64_t(binary["attempts"]), 3);
  EXPECT_EQ(std::string_view(binary["failed_at"]), "2024-01-01T00:00:20Z");
  simdjson::dom::object text = items.at(1);
  EXPECT_EQ(std::string_view(text["consumer"]), "aggregator");
  EXPECT_EQ(std::string_view(text["payload_encoding"]), "utf8");
  EXPECT_EQ(std::string_view(text["payload"]), R"({"device_id": 5})");
  EXPECT_EQ(std::string_view(text["failed_at"]), "2024-01-01T00:00:10.250000Z");
  EXPECT_TRUE(Header(r, "Link").empty());
}

TEST_F(DashboardServiceTest, DlqFiltersByConsumerAndTimeAndPagesWithTheLink) {
  store::WriteBatch b;
  for (std::int64_t i = 1; i <= 5; ++i) {
    b.dead_letters.push_back(DeadLetterOf("aggregator", i, At(10 * i), "x"));
    b.dead_letters.push_back(DeadLetterOf("alerts", 100 + i, At(10 * i), "y"));
  }
  IOT_ASSERT_OK(store_->Apply(b));

  EXPECT_EQ(Offsets(parser_, Get(router_, "/dlq?consumer=alerts")),
            (std::vector<std::int64_t>{105, 104, 103, 102, 101}));
  EXPECT_EQ(Offsets(parser_, Get(router_, "/dlq?consumer=aggregator&from=2024-01-01T00:00:20Z"
                                          "&to=2024-01-01T00:00:40Z")),
            (std::vector<std::int64_t>{3, 2}));
  EXPECT_TRUE(Offsets(parser_, Get(router_, "/dlq?consumer=nobody")).empty());

  const std::string first = "/dlq?consumer=aggregator&limit=2";
  std::vector<std::int64_t> seen;
  std::string target = first;
  for (int page = 0; page < 10 && !target.empty(); ++page) {
    auto r = Get(router_, target);
    ASSERT_EQ(r.result_int(), 200u);
    auto offsets = Offsets(parser_, r);
    EXPECT_LE(offsets.size(), 2u);
    seen.insert(seen.end(), offsets.begin(), offsets.end());
    target = LinkTarget(Header(r, "Link"));
    if (!target.empty()) {
      EXPECT_EQ(target, first + "&cursor=" + Header(r, "X-Next-Cursor"));
    }
  }
  EXPECT_EQ(seen, (std::vector<std::int64_t>{5, 4, 3, 2, 1}));

  // Every consumer: equal failed_at times, cut into pages without gaps or repeats.
  seen.clear();
  target = "/dlq?limit=3";
  for (int page = 0; page < 10 && !target.empty(); ++page) {
    auto r = Get(router_, target);
    auto offsets = Offsets(parser_, r);
    seen.insert(seen.end(), offsets.begin(), offsets.end());
    target = LinkTarget(Header(r, "Link"));
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::set<std::int64_t>(seen.begin(), seen.end()).size(), 10u);
  EXPECT_EQ(std::set<std::int64_t>({seen[0], seen[1]}), (std::set<std::int64_t>{5, 105}));
}

// DownStore fails every call as a store that cannot be reached.
class DownStore final : public store::Store {
 public:
  Status Apply(const store::WriteBatch&) override { return Down(); }
  Result<std::optional<std::int64_t>> LoadCheckpoint(const std::string&, std::int32_t) override {
    return Down();
  }
  Result<std::vector<core::Alert>> OpenAlerts() override { return Down(); }
  Result<store::Page<store::StoredReading>> Telemetry(const store::TelemetryQuery&) override {
    return Down();
  }
  Result<store::Page<store::Aggregate>> Aggregates(const store::AggregateQuery&) override {
    return Down();
  }
  Result<store::Page<core::Alert>> Alerts(const store::AlertQuery&) override { return Down(); }
  Result<std::optional<store::Device>> FindDevice(const std::string&) override { return Down(); }
  Result<std::optional<core::Alert>> FindAlert(std::int64_t) override { return Down(); }
  Result<std::optional<core::Alert>> Acknowledge(std::int64_t, const core::AlertAck&) override {
    return Down();
  }
  Result<std::vector<store::Device>> Devices(const store::DeviceQuery&) override {
    return Down();
  }
  Result<store::Stats> GetStats(core::Timestamp) override { return Down(); }
  Result<store::Page<store::DeadLetter>> DeadLetters(const store::DeadLetterQuery&) override {
    return Down();
  }
  Result<std::int64_t> Expire(core::Timestamp) override { return Down(); }
  Status Ping() override { return Down(); }

 private:
  static Error Down() { return MakeError(Errc::kUnavailable, "store is down"); }
};

TEST(DashboardStoreDownTest, EveryStoreReadIsAnswered503WithRetryAfter) {
  DownStore down;
  core::ManualClock clock(At(0));
  DashboardService service(down, clock);
  http::Router router;
  service.RegisterRoutes(router);
  simdjson::dom::parser parser;
  for (const char* target : {"/telemetry", "/aggregated", "/alerts", "/alerts/recent", "/devices",
                             "/devices/dev-1", "/devices/dev-1/telemetry",
                             "/devices/dev-1/aggregates", "/stats", "/dlq"}) {
    SCOPED_TRACE(target);
    auto r = Get(router, target);
    EXPECT_EQ(r.result_int(), 503u);
    EXPECT_EQ(Header(r, "Retry-After"), "1");
    EXPECT_EQ(std::string_view(parser.parse(r.body())["error"]), "store_unavailable");
  }
  EXPECT_EQ(Get(router, "/").result_int(), 200u);  // the seed's health check needs no store
}

// With a guard (DASHBOARD_AUTH=token): a read token scoped to "dev-1" sees dev-1 only; lists are
// filtered, other devices' routes are 403, the fleet-wide ones too, and another device's alert
// does not exist for it.
class GuardedDashboardTest : public DashboardServiceTest {
 protected:
  GuardedDashboardTest() {
    const std::string path = dir_.path() + "/tokens";
    auth::MadeToken scoped = auth::MakeToken(), device = auth::MakeToken();
    auth::Token s{.id = scoped.id, .kind = auth::Kind::kRead, .prefix = "dev-1",
                  .digest = scoped.digest};
    auth::Token d{.id = device.id, .kind = auth::Kind::kDevice, .devices = {"dev-1"},
                  .digest = device.digest};
    EXPECT_TRUE(auth::WriteTokensFile(path, {s, d}).ok());
    scoped_ = scoped.text;
    device_ = device.text;
    authenticator_ = std::move(*auth::Authenticator::Open({.path = path}));
    metrics_ = std::make_unique<AuthMetrics>(registry_);
    guard_ = std::make_unique<AuthGuard>(*authenticator_, "dashboard", *metrics_);
    guarded_ = std::make_unique<DashboardService>(*store_, clock_, guard_.get());
    guarded_->RegisterRoutes(guarded_router_);
  }
  http::Response GetWith(const std::string& target, const std::string& token) {
    auto req = testing::MakeRequest(http::beast::http::verb::get, target);
    if (!token.empty()) req.set(http::beast::http::field::authorization, "Bearer " + token);
    return testing::Serve(guarded_router_, std::move(req))->Response();
  }

  std::string scoped_, device_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  metrics::Registry registry_;
  std::unique_ptr<AuthMetrics> metrics_;
  std::unique_ptr<AuthGuard> guard_;
  http::Router guarded_router_;
  std::unique_ptr<DashboardService> guarded_;
};

TEST_F(GuardedDashboardTest, AScopedReadTokenSeesOnlyItsDevices) {
  AddReadings();
  store::WriteBatch alerts;
  alerts.alert_upserts = {AlertOf(100, "dev-1", core::AlertStatus::kActive, At(30)),
                          AlertOf(200, "dev-2", core::AlertStatus::kActive, At(40))};
  IOT_ASSERT_OK(store_->Apply(alerts));

  EXPECT_EQ(GetWith("/devices", "").result_int(), 401u);
  EXPECT_EQ(GetWith("/devices", device_).result_int(), 403u);
  for (const char* target : {"/devices", "/telemetry", "/aggregated", "/alerts"}) {
    auto r = GetWith(target, scoped_);
    ASSERT_EQ(r.result_int(), 200u) << target;
    simdjson::dom::array items = parser_.parse(r.body());
    for (auto item : items) {
      EXPECT_EQ(std::string_view(item["device_id"]), "dev-1") << target << " " << r.body();
    }
  }
  EXPECT_EQ(Ids(GetWith("/telemetry?limit=2", scoped_)), (std::vector<std::string>{"5", "4"}));
  EXPECT_EQ(GetWith("/devices/dev-1/telemetry", scoped_).result_int(), 200u);
  EXPECT_EQ(GetWith("/devices/dev-2/telemetry", scoped_).result_int(), 403u);
  EXPECT_EQ(GetWith("/devices/dev-2", scoped_).result_int(), 403u);
  EXPECT_EQ(GetWith("/alerts?device_id=dev-2", scoped_).result_int(), 403u);
  EXPECT_EQ(GetWith("/stats", scoped_).result_int(), 403u);
  EXPECT_EQ(GetWith("/dlq", scoped_).result_int(), 403u);
  EXPECT_EQ(GetWith("/alerts/100", scoped_).result_int(), 200u);
  EXPECT_EQ(GetWith("/alerts/200", scoped_).result_int(), 404u);
  EXPECT_EQ(GetWith("/", "").result_int(), 200u);  // the seed's health answer stays open
  EXPECT_EQ(testing::MetricValue(
                registry_, R"(auth_requests_denied_total{role="dashboard",reason="out_of_scope"})"),
            5);  // the 404 of another scope's alert is not a refusal
}

}  // namespace
}  // namespace iot::services
