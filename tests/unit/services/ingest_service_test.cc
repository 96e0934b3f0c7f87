// ingest_service_test.cc: the ingest handlers (services/ingest_service.h) called through an
// http::Router with constructed requests, over a FakeProducer: what reaches the bus, when the
// client is answered, and how each failure of the input or of the bus is answered.
#include <gtest/gtest.h>

#include <simdjson.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "codec/wire.h"
#include "core/reading.h"
#include "http/router.h"
#include "metrics/metrics.h"
#include "services/ingest_service.h"

#include "auth/authenticator.h"
#include "auth/token_file.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;
using namespace std::chrono_literals;
using testing::At;

// FakeProducer answers every Produce call as it is told: at once with Ok or an error, or later
// (kDefer) when the test calls Complete. Thread-safe.
class FakeProducer final : public bus::Producer {
 public:
  enum class Mode { kAck, kFail, kDefer };

  void set_mode(Mode mode, Error failure = {Errc::kUnavailable, "fake bus failure"}) {
    std::lock_guard lock(mu_);
    mode_ = mode;
    failure_ = std::move(failure);
  }
  // Calls returns the messages of every Produce call so far.
  std::vector<std::vector<bus::Message>> Calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // Complete answers every deferred call with `s`.
  void Complete(const Status& s) {
    std::vector<Callback> pending;
    {
      std::lock_guard lock(mu_);
      pending.swap(pending_);
    }
    for (auto& done : pending) done(s);
  }

  void Produce(std::vector<bus::Message> messages, Callback done) override {
    Status answer;
    {
      std::lock_guard lock(mu_);
      calls_.push_back(std::move(messages));
      switch (mode_) {
        case Mode::kAck:
          break;
        case Mode::kFail:
          answer = failure_;
          break;
        case Mode::kDefer:
          pending_.push_back(std::move(done));
          return;
      }
    }
    done(answer);
  }
  bool Ready() const override { return true; }
  Status Flush(std::chrono::milliseconds) override { return Status::Ok(); }

 private:
  mutable std::mutex mu_;
  Mode mode_ = Mode::kAck;
  Error failure_{Errc::kUnavailable, "fake bus failure"};
  std::vector<std::vector<bus::Message>> calls_;
  std::vector<Callback> pending_;
};

constexpr const char* kSeedReading =
    R"({"device_id":"sensor-001","temperature_c":25.5,"humidity":60.0,)"
    R"("lat":40.7128,"lon":-74.006})";

std::string ReadingJson(const std::string& device, const std::string& extra = {}) {
  return R"({"device_id":")" + device + R"(","temperature_c":21,"humidity":40)" + extra + "}";
}

class IngestServiceTest : public ::testing::Test {
 protected:
  explicit IngestServiceTest(core::RateLimit device_rate = {}, std::size_t batch_max_items = 5) {
    options_.device_rate = device_rate;
    options_.batch_max_items = batch_max_items;
    service_ = std::make_unique<IngestService>(options_, producer_, registry_, clock_);
    service_->RegisterRoutes(router_);
  }

  std::shared_ptr<testing::Call> Post(const std::string& target, std::string body,
                                       const std::string& content_type = "application/json") {
    return testing::Serve(router_,
                          testing::MakeRequest(bh::verb::post, target, std::move(body),
                                               content_type));
  }
  double Rejected(const std::string& reason) {
    return testing::MetricValue(registry_, R"(ingest_readings_rejected_total{reason=")" +
                                               reason + R"("})")
        .value_or(0);
  }
  double Metric(const std::string& name) {
    return testing::MetricValue(registry_, name).value_or(-1);
  }

  IngestOptions options_;
  FakeProducer producer_;
  metrics::Registry registry_;
  core::ManualClock clock_{At(0)};
  http::Router router_;
  std::unique_ptr<IngestService> service_;
  simdjson::dom::parser parser_;
};

TEST_F(IngestServiceTest, AReadingIsAnsweredOnlyAfterTheBusMadeItDurable) {
  producer_.set_mode(FakeProducer::Mode::kDefer);
  auto call = Post("/ingest", kSeedReading);
  EXPECT_FALSE(call->Answered());

  auto calls = producer_.Calls();
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_EQ(calls[0].size(), 1u);
  EXPECT_EQ(calls[0][0].key, "sensor-001");
  auto reading = codec::DecodePayload(calls[0][0].payload);
  ASSERT_TRUE(reading.ok()) << reading.error().message;
  EXPECT_EQ(reading->device_id, "sensor-001");
  EXPECT_EQ(reading->ts, At(0));  // no ts: the time of receipt, from the injected clock
  EXPECT_EQ(reading->lat, 40.7128);
  EXPECT_EQ(reading->lon, -74.006);
  EXPECT_EQ(reading->sensors,
            (std::vector<core::SensorValue>{{"temperature_c", 25.5}, {"humidity", 60.0}}));
  EXPECT_EQ(Metric("ingest_readings_accepted_total"), 0);

  producer_.Complete(Status::Ok());
  ASSERT_EQ(call->Answers(), 1);
  auto r = call->Response();
  EXPECT_EQ(r.result_int(), 202u);
  auto doc = parser_.parse(r.body());
  EXPECT_EQ(std::string_view(doc["status"]), "queued");
  EXPECT_EQ(std::string_view(doc["device_id"]), "sensor-001");
  EXPECT_EQ(Metric("ingest_readings_accepted_total"), 1);
}

TEST_F(IngestServiceTest, ABusThatCannotTakeTheReadingGets503WithRetryAfter) {
  for (auto code : {Errc::kResourceExhausted, Errc::kUnavailable}) {
    SCOPED_TRACE(ErrcName(code));
    producer_.set_mode(FakeProducer::Mode::kFail, {code, "bus full"});
    auto call = Post("/ingest", kSeedReading);
    ASSERT_EQ(call->Answers(), 1);
    auto r = call->Response();
    EXPECT_EQ(r.result_int(), 503u);
    EXPECT_EQ(testing::Header(r, "Retry-After"), "1");
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), "unavailable");
  }
  // A failure reported later (a failed group commit) is answered the same way.
  producer_.set_mode(FakeProducer::Mode::kDefer);
  auto call = Post("/ingest", kSeedReading);
  producer_.Complete(MakeError(Errc::kUnavailable, "commit failed"));
  ASSERT_EQ(call->Answers(), 1);
  EXPECT_EQ(call->Response().result_int(), 503u);
  EXPECT_EQ(Metric("ingest_readings_unavailable_total"), 3);
  EXPECT_EQ(Metric("ingest_readings_accepted_total"), 0);
}

TEST_F(IngestServiceTest, ACallTheBusCanNeverTakeGets413) {
  producer_.set_mode(FakeProducer::Mode::kFail, {Errc::kInvalidArgument, "too large for a frame"});
  auto call = Post("/ingest", kSeedReading);
  ASSERT_EQ(call->Answers(), 1);
  auto r = call->Response();
  EXPECT_EQ(r.result_int(), 413u);
  EXPECT_TRUE(testing::Header(r, "Retry-After").empty());
  auto doc = parser_.parse(r.body());
  EXPECT_EQ(std::string_view(doc["error"]), "too_large");
}

TEST_F(IngestServiceTest, MalformedJsonIs400AndReachesNothing) {
  for (const char* body : {"{not json", "[1,2]", "\"text\"", ""}) {
    SCOPED_TRACE(body);
    auto call = Post("/ingest", body);
    ASSERT_EQ(call->Answers(), 1);
    auto r = call->Response();
    EXPECT_EQ(r.result_int(), 400u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), "malformed_json");
  }
  EXPECT_TRUE(producer_.Calls().empty());
  EXPECT_EQ(Rejected("malformed_json"), 4);
}

TEST_F(IngestServiceTest, SchemaErrorsAre422NamingTheFieldAndReachNothing) {
  struct Case {
    std::string body;
    std::string field;
    std::string code;
  };
  const std::vector<Case> cases = {
      {R"({"device_id":"d","temperature_c":21})", "humidity", "missing"},
      {R"({"temperature_c":21,"humidity":40})", "device_id", "missing"},
      {R"({"device_id":{"$ne":null},"temperature_c":21,"humidity":40})", "device_id",
       "wrong_type"},
      {R"({"device_id":"a/b","temperature_c":21,"humidity":40})", "device_id", "invalid_format"},
      {ReadingJson("d", R"(,"lat":91)"), "lat", "out_of_range"},
      {ReadingJson("d", R"(,"ts":"yesterday")"), "ts", "invalid_format"},
      {ReadingJson("d", R"(,"pressure":1e400)"), "pressure", "not_finite"},
      {ReadingJson("d", R"(,"pressure":[1])"), "pressure", "unsupported_type"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    auto call = Post("/ingest", c.body);
    ASSERT_EQ(call->Answers(), 1);
    auto r = call->Response();
    EXPECT_EQ(r.result_int(), 422u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::string_view(doc["error"]), c.code);
    EXPECT_EQ(std::string_view(doc["field"]), c.field);
  }
  EXPECT_TRUE(producer_.Calls().empty());
  EXPECT_EQ(Rejected("missing"), 2);
  EXPECT_EQ(Rejected("wrong_type"), 1);
}

TEST_F(IngestServiceTest, TheFutureBoundFollowsTheInjectedClock) {
  const std::string in_4_min = ReadingJson("d", R"(,"ts":"2024-01-01T00:04:00Z")");
  const std::string in_6_min = ReadingJson("d", R"(,"ts":"2024-01-01T00:06:00Z")");
  EXPECT_EQ(Post("/ingest", in_4_min)->Response().result_int(), 202u);
  auto late = Post("/ingest", in_6_min)->Response();
  EXPECT_EQ(late.result_int(), 422u);
  EXPECT_EQ(std::string_view(parser_.parse(late.body())["field"]), "ts");
  clock_.Advance(2min);
  EXPECT_EQ(Post("/ingest", in_6_min)->Response().result_int(), 202u);
  EXPECT_EQ(producer_.Calls().size(), 2u);
}

TEST_F(IngestServiceTest, ABatchProducesOnlyItsValidItemsAndReportsTheOthersByIndex) {
  const std::string body = "[" + ReadingJson("dev-a") + R"(,{"device_id":"dev-x","humidity":1},)" +
                           R"("text",)" + ReadingJson("dev-b") + "]";
  auto call = Post("/ingest/batch", body);
  ASSERT_EQ(call->Answers(), 1);
  auto r = call->Response();
  EXPECT_EQ(r.result_int(), 202u);
  auto doc = parser_.parse(r.body());
  EXPECT_EQ(std::string_view(doc["status"]), "queued");
  EXPECT_EQ(std::int64_t(doc["accepted"]), 2);
  EXPECT_EQ(std::int64_t(doc["rejected"]), 2);
  simdjson::dom::array errors = doc["errors"];
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(std::int64_t(errors.at(0)["index"]), 1);
  EXPECT_EQ(std::string_view(errors.at(0)["field"]), "temperature_c");
  EXPECT_EQ(std::string_view(errors.at(0)["error"]), "missing");
  EXPECT_EQ(std::int64_t(errors.at(1)["index"]), 2);
  EXPECT_EQ(std::string_view(errors.at(1)["error"]), "wrong_type");

  auto calls = producer_.Calls();
  ASSERT_EQ(calls.size(), 1u);  // one durable unit: all or nothing
  ASSERT_EQ(calls[0].size(), 2u);
  EXPECT_EQ(calls[0][0].key, "dev-a");
  EXPECT_EQ(calls[0][1].key, "dev-b");
  auto b = codec::DecodePayload(calls[0][1].payload);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->device_id, "dev-b");
  EXPECT_EQ(Metric("ingest_readings_accepted_total"), 2);
}

TEST_F(IngestServiceTest, ABatchWithoutAValidItemIsRejectedAndReachesNothing) {
  struct Case {
    std::string body;
    unsigned status;
    std::string error;  // the "error" code, or "" for the per-item report
  };
  const std::vector<Case> cases = {
      {R"([{"device_id":"x"}])", 422, ""},
      {"[]", 422, "empty_batch"},
      {"[" + ReadingJson("a"), 400, "malformed_json"},
      {"[" + ReadingJson("a") + "," + ReadingJson("b") + "," + ReadingJson("c") + "," +
           ReadingJson("d") + "," + ReadingJson("e") + "," + ReadingJson("f") + "]",
       413, "too_many_items"},  // batch_max_items is 5
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    auto call = Post("/ingest/batch", c.body);
    ASSERT_EQ(call->Answers(), 1);
    auto r = call->Response();
    EXPECT_EQ(r.result_int(), c.status);
    auto doc = parser_.parse(r.body());
    if (c.error.empty()) {
      EXPECT_EQ(std::string_view(doc["status"]), "rejected");
      EXPECT_EQ(std::int64_t(doc["accepted"]), 0);
      EXPECT_EQ(std::int64_t(doc["rejected"]), 1);
    } else {
      EXPECT_EQ(std::string_view(doc["error"]), c.error);
    }
  }
  EXPECT_TRUE(producer_.Calls().empty());
}

TEST_F(IngestServiceTest, NdjsonBatchesAreReadLineByLine) {
  const std::string body =
      ReadingJson("dev-a") + "\n\n" + R"({"device_id":"dev-x")" + "\n" + ReadingJson("dev-b") + "\n";
  for (const char* type : {"application/x-ndjson", "application/ndjson; charset=utf-8"}) {
    SCOPED_TRACE(type);
    auto call = Post("/ingest/batch", body, type);
    ASSERT_EQ(call->Answers(), 1);
    auto r = call->Response();
    EXPECT_EQ(r.result_int(), 202u);
    auto doc = parser_.parse(r.body());
    EXPECT_EQ(std::int64_t(doc["accepted"]), 2);
    simdjson::dom::array errors = doc["errors"];
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(std::int64_t(errors.at(0)["index"]), 1);  // blank lines are not items
    EXPECT_EQ(std::string_view(errors.at(0)["error"]), "malformed_json");
  }
  auto calls = producer_.Calls();
  ASSERT_EQ(calls.size(), 2u);
  ASSERT_EQ(calls[0].size(), 2u);
  EXPECT_EQ(calls[0][1].key, "dev-b");

  // The same body declared as JSON is not one JSON array.
  EXPECT_EQ(Post("/ingest/batch", body)->Response().result_int(), 400u);
  EXPECT_EQ(producer_.Calls().size(), 2u);
}

TEST_F(IngestServiceTest, ABatchTheBusCannotTakeGets503ForAllItsReadings) {
  producer_.set_mode(FakeProducer::Mode::kFail, {Errc::kResourceExhausted, "full"});
  auto call = Post("/ingest/batch", "[" + ReadingJson("a") + "," + ReadingJson("b") + "]");
  ASSERT_EQ(call->Answers(), 1);
  auto r = call->Response();
  EXPECT_EQ(r.result_int(), 503u);
  EXPECT_EQ(testing::Header(r, "Retry-After"), "1");
  EXPECT_EQ(Metric("ingest_readings_unavailable_total"), 2);
  EXPECT_EQ(Metric("ingest_readings_accepted_total"), 0);
}

// A service whose devices may send 2 readings at once and 1 per second after that.
class RateLimitedIngestTest : public IngestServiceTest {
 protected:
  RateLimitedIngestTest() : IngestServiceTest({.rate = 1, .burst = 2}, 100) {}
  std::size_t Produced() {
    std::size_t n = 0;
    for (const auto& call : producer_.Calls()) n += call.size();
    return n;
  }
};

TEST_F(RateLimitedIngestTest, ADeviceOverItsLimitGets429WithRetryAfterWhileOthersGoOn) {
  EXPECT_EQ(Post("/ingest", ReadingJson("runaway"))->Response().result_int(), 202u);
  EXPECT_EQ(Post("/ingest", ReadingJson("runaway"))->Response().result_int(), 202u);
  auto limited = Post("/ingest", ReadingJson("runaway"))->Response();
  EXPECT_EQ(limited.result_int(), 429u);
  EXPECT_EQ(limited[bh::field::retry_after], "1");
  auto doc = parser_.parse(limited.body());
  EXPECT_EQ(std::string_view(doc["error"]), "rate_limited");
  EXPECT_EQ(std::string_view(doc["field"]), "device_id");
  EXPECT_EQ(Rejected("rate_limited"), 1);
  EXPECT_EQ(Produced(), 2u);  // nothing of the refused reading reached the bus

  EXPECT_EQ(Post("/ingest", ReadingJson("calm"))->Response().result_int(), 202u);
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(Post("/ingest", ReadingJson("runaway"))->Response().result_int(), 202u);
  EXPECT_EQ(Produced(), 4u);
}

TEST_F(RateLimitedIngestTest, ABatchKeepsWhatIsWithinTheLimitAndReportsTheRestByIndex) {
  auto r = Post("/ingest/batch", "[" + ReadingJson("runaway") + "," + ReadingJson("runaway") +
                                     "," + ReadingJson("runaway") + "," + ReadingJson("calm") +
                                     "]")
               ->Response();
  EXPECT_EQ(r.result_int(), 202u);
  auto doc = parser_.parse(r.body());
  EXPECT_EQ(int64_t(doc["accepted"]), 3);
  EXPECT_EQ(int64_t(doc["rejected"]), 1);
  EXPECT_EQ(int64_t(doc["errors"].at(0)["index"]), 2);
  EXPECT_EQ(std::string_view(doc["errors"].at(0)["error"]), "rate_limited");
  ASSERT_EQ(producer_.Calls().size(), 1u);
  EXPECT_EQ(producer_.Calls()[0].size(), 3u);

  // Nothing left for runaway: a batch of it alone is 429 with Retry-After, and reaches nothing.
  auto limited = Post("/ingest/batch", "[" + ReadingJson("runaway") + "]")->Response();
  EXPECT_EQ(limited.result_int(), 429u);
  EXPECT_EQ(limited[bh::field::retry_after], "1");
  EXPECT_EQ(producer_.Calls().size(), 1u);
}

TEST_F(RateLimitedIngestTest, InvalidReadingsAloneAre422NotARateLimit) {
  auto r = Post("/ingest/batch", R"([{"device_id":"x"}])")->Response();
  EXPECT_EQ(r.result_int(), 422u);
}

TEST_F(IngestServiceTest, RoutesDeclareTheirBodyLimitsAndMediaTypes) {
  auto one = router_.Find(bh::verb::post, "/ingest");
  ASSERT_TRUE(std::holds_alternative<http::Router::Match>(one));
  const auto& one_options = *std::get<http::Router::Match>(one).options;
  EXPECT_EQ(one_options.max_body_bytes, options_.max_body_bytes);
  EXPECT_EQ(one_options.content_types, (std::vector<std::string>{"application/json"}));

  auto batch = router_.Find(bh::verb::post, "/ingest/batch");
  ASSERT_TRUE(std::holds_alternative<http::Router::Match>(batch));
  const auto& batch_options = *std::get<http::Router::Match>(batch).options;
  EXPECT_EQ(batch_options.max_body_bytes, options_.max_batch_bytes);
  EXPECT_TRUE(http::MediaTypeMatches("application/x-ndjson", batch_options.content_types));
  EXPECT_TRUE(http::MediaTypeMatches("application/json", batch_options.content_types));
  EXPECT_FALSE(http::MediaTypeMatches("text/plain", batch_options.content_types));

  EXPECT_EQ(testing::Get(router_, "/ingest").result_int(), 405u);
}

// With a guard (INGEST_AUTH=token): the token is checked before the body is decoded, a reading of
// another device is 403, and nothing of a refused request reaches the bus.
class GuardedIngestTest : public IngestServiceTest {
 protected:
  GuardedIngestTest() {
    const std::string path = dir_.path() + "/tokens";
    auth::MadeToken gateway = auth::MakeToken(), read = auth::MakeToken();
    auth::Token g{.id = gateway.id, .kind = auth::Kind::kGateway, .devices = {"a", "b"},
                  .digest = gateway.digest};
    auth::Token r{.id = read.id, .kind = auth::Kind::kRead, .digest = read.digest};
    EXPECT_TRUE(auth::WriteTokensFile(path, {g, r}).ok());
    gateway_ = gateway.text;
    read_ = read.text;
    authenticator_ = std::move(*auth::Authenticator::Open({.path = path}));
    metrics_ = std::make_unique<AuthMetrics>(guard_registry_);
    guard_ = std::make_unique<AuthGuard>(*authenticator_, "ingest", *metrics_);
    guarded_ = std::make_unique<IngestService>(options_, producer_, guard_registry_, clock_,
                                               guard_.get());
    guarded_->RegisterRoutes(guarded_router_);
  }
  std::shared_ptr<testing::Call> PostWith(const std::string& target, std::string body,
                                           const std::string& token) {
    auto req = testing::MakeRequest(bh::verb::post, target, std::move(body), "application/json");
    if (!token.empty()) req.set(bh::field::authorization, "Bearer " + token);
    return testing::Serve(guarded_router_, std::move(req));
  }

  testing::TempDir dir_;
  std::string gateway_, read_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  metrics::Registry guard_registry_;
  std::unique_ptr<AuthMetrics> metrics_;
  std::unique_ptr<AuthGuard> guard_;
  http::Router guarded_router_;
  std::unique_ptr<IngestService> guarded_;
};

TEST_F(GuardedIngestTest, RefusedRequestsGetTheirStatusAndNothingReachesTheBus) {
  struct Case {
    std::string target, body, token;
    unsigned status;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"/ingest", ReadingJson("a"), "", 401, "unauthorized"},
      {"/ingest", "{broken", "", 401, "unauthorized"},  // the token is checked first
      {"/ingest", ReadingJson("a"), "iotd_x", 401, "invalid_token"},
      {"/ingest", ReadingJson("c"), gateway_, 403, "forbidden"},
      {"/ingest", ReadingJson("a"), read_, 403, "forbidden"},
      {"/ingest/batch", "[" + ReadingJson("a") + "," + ReadingJson("c") + "]", gateway_, 403,
       "forbidden"},
  };
  for (const auto& c : cases) {
    auto r = PostWith(c.target, c.body, c.token)->Response();
    EXPECT_EQ(r.result_int(), c.status) << c.target << " " << c.body;
    EXPECT_NE(r.body().find("\"error\":\"" + c.error + "\""), std::string::npos) << r.body();
    if (c.status == 401) {
      EXPECT_FALSE(testing::Header(r, "WWW-Authenticate").empty());
    }
  }
  EXPECT_TRUE(producer_.Calls().empty());
  EXPECT_EQ(testing::MetricValue(guard_registry_,
                                 R"(auth_requests_denied_total{role="ingest",reason="missing"})"),
            2);
  EXPECT_EQ(testing::MetricValue(
                guard_registry_,
                R"(auth_requests_denied_total{role="ingest",reason="device_not_allowed"})"),
            2);

  auto ok = PostWith("/ingest/batch", "[" + ReadingJson("a") + "," + ReadingJson("b") + "]",
                     gateway_)->Response();
  EXPECT_EQ(ok.result_int(), 202u) << ok.body();
  ASSERT_EQ(producer_.Calls().size(), 1u);
  EXPECT_EQ(producer_.Calls()[0].size(), 2u);
}

TEST(BearerToken, TakesTheTokenOfABearerHeaderOnly) {
  EXPECT_EQ(BearerToken(""), std::optional<std::string_view>(""));
  EXPECT_EQ(BearerToken("Bearer abc"), std::optional<std::string_view>("abc"));
  EXPECT_EQ(BearerToken("bearer  abc "), std::optional<std::string_view>("abc"));
  EXPECT_EQ(BearerToken("Basic abc"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(BearerToken("abc"), std::nullopt);
}

}  // namespace
}  // namespace iot::services
