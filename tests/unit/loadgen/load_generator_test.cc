#include "loadgen/load_generator.h"

#include <future>
#include <set>
#include <sstream>
#include <stdexcept>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>
#include <simdjson.h>

#include "core/time.h"
#include "unit/loadgen/test_http_server.h"

namespace iot::loadgen {
namespace {

using namespace std::chrono_literals;
using testing::Action;
using testing::Reply;
using testing::TestHttpServer;

// Options for a short run against `server`: 3 devices at 50 rps each = 150 requests/s.
LoadgenOptions ShortRun(const TestHttpServer& server) {
  LoadgenOptions o;
  o.base_url = server.base_url();
  o.devices = 3;
  o.rps = 50;
  o.duration = 200ms;
  o.connections = 2;
  o.progress_interval = 0ms;
  o.seed = 1;
  return o;
}

LoadgenSummary RunToEnd(const LoadgenOptions& options) {
  std::ostringstream progress;
  LoadGenerator generator(options);
  return generator.Run(progress);
}

// Every started request ends up in exactly one outcome.
void ExpectOutcomesAddUp(const LoadgenSummary& s) {
  EXPECT_EQ(s.sent, s.accepted + s.rejected + s.errors);
}

TEST(LoadGenerator, PostsSeedShapedReadingsToIngestOverKeepAliveConnections) {
  TestHttpServer server;
  const LoadgenOptions options = ShortRun(server);
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.accepted, s.sent);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.readings_accepted, s.accepted);
  EXPECT_EQ(server.request_count(), s.sent);
  EXPECT_LE(server.connections_accepted(), options.connections);

  simdjson::dom::parser parser;
  const std::set<std::string> devices = {"dev-1", "dev-2", "dev-3"};
  for (const auto& request : server.requests()) {
    EXPECT_EQ(request.method, "POST");
    EXPECT_EQ(request.target, "/ingest");
    EXPECT_EQ(request.content_type, "application/json");
    EXPECT_EQ(request.host, "127.0.0.1:" + std::to_string(server.port()));
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(request.body).get(doc), simdjson::SUCCESS) << request.body;
    std::string_view device_id, ts;
    double number = 0;
    ASSERT_EQ(doc["device_id"].get(device_id), simdjson::SUCCESS);
    EXPECT_TRUE(devices.count(std::string(device_id))) << device_id;
    ASSERT_EQ(doc["ts"].get(ts), simdjson::SUCCESS);
    EXPECT_TRUE(core::ParseIso8601(ts)) << ts;
    for (const char* field : {"temperature_c", "humidity", "lat", "lon"}) {
      EXPECT_EQ(doc[field].get(number), simdjson::SUCCESS) << field;
    }
  }
}

TEST(LoadGenerator, PutsTheBaseUrlPathInFrontOfTheTarget) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.base_url += "/gateway/";
  options.duration = 50ms;
  const LoadgenSummary s = RunToEnd(options);
  ASSERT_GT(s.sent, 0u);
  for (const auto& request : server.requests()) EXPECT_EQ(request.target, "/gateway/ingest");
}

TEST(LoadGenerator, SendsTheTokenAsABearerHeaderOnlyWhenGiven) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.duration = 50ms;
  ASSERT_GT(RunToEnd(options).sent, 0u);
  for (const auto& request : server.requests()) EXPECT_EQ(request.authorization, "");
  TestHttpServer with_token;
  options = ShortRun(with_token);
  options.duration = 50ms;
  options.token = "iotd_0123456789ab_secret";
  ASSERT_GT(RunToEnd(options).sent, 0u);
  for (const auto& request : with_token.requests()) {
    EXPECT_EQ(request.authorization, "Bearer iotd_0123456789ab_secret");
  }
}

TEST(LoadGenerator, BatchPostsArraysOfTheRequestedSizeToIngestBatch) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.batch = 5;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.accepted, 0u);
  EXPECT_EQ(s.readings_accepted, 5 * s.accepted);
  simdjson::dom::parser parser;
  for (const auto& request : server.requests()) {
    EXPECT_EQ(request.target, "/ingest/batch");
    EXPECT_EQ(request.content_type, "application/json");
    simdjson::dom::array readings;
    ASSERT_EQ(parser.parse(request.body).get(readings), simdjson::SUCCESS) << request.body;
    EXPECT_EQ(readings.size(), 5u);
    for (simdjson::dom::element reading : readings) {
      std::string_view device_id;
      EXPECT_EQ(reading["device_id"].get(device_id), simdjson::SUCCESS);
    }
  }
}

TEST(LoadGenerator, NeverSendsMoreThanTheSchedulePlans) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.devices = 10;
  options.rps = 20;  // 200 requests/s over 300 ms: 60 requests planned
  options.duration = 300ms;
  options.connections = 4;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  EXPECT_GT(s.sent, 0u);
  EXPECT_LE(s.sent, 60u);
  EXPECT_EQ(server.request_count(), s.sent);
}

TEST(LoadGenerator, CountsServerErrorsAndFailsTheRunAboveTheErrorThreshold) {
  // Every 4th request gets 503, the first one included, so that even a run that a loaded
  // machine lets send only a few requests sees one.
  TestHttpServer server([](std::uint64_t index, const auto&) {
    return Reply{index % 4 == 0 ? 503u : 202u};
  });
  LoadgenOptions options = ShortRun(server);
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  const auto replies = server.replies();
  ASSERT_TRUE(replies.count(503)) << "too few requests to see a 503";
  EXPECT_EQ(s.errors, replies.at(503));
  EXPECT_EQ(s.accepted, replies.at(202));
  EXPECT_EQ(s.readings_accepted, s.accepted);
  EXPECT_EQ(ExitCodeFor(s, options), 1);  // at least 25% errors > 1%
  // A threshold at the measured rate passes: only a rate above it fails the run.
  options.max_error_rate = static_cast<double>(s.errors) / static_cast<double>(s.sent);
  EXPECT_EQ(ExitCodeFor(s, options), 0);
}

TEST(LoadGenerator, CountsClientErrorsAsRejectedNotAsErrors) {
  TestHttpServer server([](std::uint64_t, const auto&) { return Reply{422}; });
  const LoadgenOptions options = ShortRun(server);
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.rejected, s.sent);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.readings_accepted, 0u);
  EXPECT_EQ(ExitCodeFor(s, options), 0);
}

TEST(LoadGenerator, ReconnectsAfterTheServerDropsAConnection) {
  // Every 3rd request is dropped without an answer.
  TestHttpServer server([](std::uint64_t index, const auto&) {
    return Reply{202, index % 3 == 2 ? Action::kDrop : Action::kRespond};
  });
  const LoadgenOptions options = ShortRun(server);
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(server.drops(), 0u) << "too few requests to see a drop";
  EXPECT_EQ(s.errors, server.drops());
  EXPECT_EQ(s.accepted, server.replies().at(202));
  EXPECT_EQ(server.request_count(), s.sent);
  // Requests after a drop went out on new connections.
  EXPECT_GT(server.connections_accepted(), options.connections);
}

TEST(LoadGenerator, FollowsConnectionCloseWithoutCountingAnError) {
  TestHttpServer server([](std::uint64_t, const auto&) {
    return Reply{202, Action::kRespondAndClose};
  });
  LoadgenOptions options = ShortRun(server);
  options.duration = 100ms;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.accepted, s.sent);
  EXPECT_EQ(server.connections_accepted(), static_cast<int>(s.sent));
}

TEST(LoadGenerator, LatencyIncludesTimeQueuedBehindTheSchedule) {
  // One connection, 100 requests/s planned, but each answer takes 50 ms: request k (planned at
  // 10k ms) cannot finish before 50(k+1) ms, so its latency is at least 50 + 40k ms. A closed
  // loop measurement would report ~50 ms for all ten.
  TestHttpServer server([](std::uint64_t, const auto&) {
    return Reply{202, Action::kRespond, 50ms};
  });
  LoadgenOptions options = ShortRun(server);
  options.devices = 1;
  options.rps = 100;
  options.duration = 100ms;
  options.connections = 1;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  EXPECT_EQ(s.accepted, 10u);
  EXPECT_GE(s.p50_ms, 50 + 40 * 4);  // rank 5 is request 4
  EXPECT_GE(s.max_ms, 50 + 40 * 9);
  EXPECT_GE(s.p99_ms, s.p50_ms);
}

TEST(LoadGenerator, UnthrottledKeepsOneRequestInFlightPerConnection) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.rps = 0;  // same as --unthrottled
  options.connections = 3;
  options.duration = 200ms;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.accepted, s.sent);
  EXPECT_EQ(server.request_count(), s.sent);
  EXPECT_LE(server.max_open_connections(), 3);
}

TEST(LoadGenerator, CountsEveryAttemptAgainstAClosedPortAsAnError) {
  std::uint16_t port = 0;
  {
    // A port that was just free; nothing listens on it after the acceptor closes.
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::acceptor acceptor(
        ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = acceptor.local_endpoint().port();
  }
  LoadgenOptions options;
  options.base_url = "http://127.0.0.1:" + std::to_string(port);
  options.devices = 1;
  options.rps = 10;  // slots at 0 and 100 ms: no backlog even with connect backoff
  options.duration = 200ms;
  options.connections = 2;
  options.progress_interval = 0ms;
  const LoadgenSummary s = RunToEnd(options);

  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.errors, s.sent);
  EXPECT_EQ(s.accepted, 0u);
  EXPECT_EQ(ExitCodeFor(s, options), 1);
}

TEST(LoadGenerator, StopEndsARunThatHasNoDuration) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.duration.reset();
  LoadGenerator generator(options);
  std::ostringstream progress;
  auto run = std::async(std::launch::async, [&] { return generator.Run(progress); });

  ASSERT_TRUE(server.WaitForRequests(3, 10s));
  generator.Stop();
  ASSERT_EQ(run.wait_for(10s), std::future_status::ready) << "Run did not return after Stop";
  const LoadgenSummary s = run.get();
  ExpectOutcomesAddUp(s);
  EXPECT_GE(s.accepted, 3u);
  EXPECT_EQ(server.request_count(), s.sent);
}

TEST(LoadGenerator, StopBeforeRunMakesRunReturnAtOnce) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.duration.reset();
  LoadGenerator generator(options);
  generator.Stop();
  std::ostringstream progress;
  const LoadgenSummary s = generator.Run(progress);
  EXPECT_EQ(s.sent, 0u);
  EXPECT_EQ(server.request_count(), 0u);
}

TEST(LoadGenerator, WritesProgressLinesEndingWithTheFinalCounts) {
  TestHttpServer server;
  LoadgenOptions options = ShortRun(server);
  options.progress_interval = 50ms;
  LoadGenerator generator(options);
  std::ostringstream progress;
  const LoadgenSummary s = generator.Run(progress);

  const std::string out = progress.str();
  EXPECT_EQ(out.find('\r'), std::string::npos) << "not a terminal: no carriage returns";
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), 1u);
  EXPECT_NE(lines.back().find("sent=" + std::to_string(s.sent) + " "), std::string::npos)
      << lines.back();
}

TEST(LoadGenerator, AbandonsRequestsStillInFlightAfterTheDrainTimeoutAsErrors) {
  // The server answers after 5 s, far beyond the end of the run plus the drain timeout.
  TestHttpServer server([](std::uint64_t, const auto&) {
    return Reply{202, Action::kRespond, 5s};
  });
  LoadgenOptions options = ShortRun(server);
  options.duration = 50ms;
  options.drain_timeout = 100ms;
  const auto started = std::chrono::steady_clock::now();
  const LoadgenSummary s = RunToEnd(options);

  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << "waited for the slow answers";
  ExpectOutcomesAddUp(s);
  ASSERT_GT(s.sent, 0u);
  EXPECT_EQ(s.errors, s.sent);
  EXPECT_EQ(s.accepted, 0u);
}

TEST(LoadGenerator, StopAbandonsRequestsInFlightAfterTheDrainTimeout) {
  TestHttpServer server([](std::uint64_t, const auto&) {
    return Reply{202, Action::kRespond, 5s};
  });
  LoadgenOptions options = ShortRun(server);
  options.duration.reset();
  options.drain_timeout = 100ms;
  LoadGenerator generator(options);
  std::ostringstream progress;
  auto run = std::async(std::launch::async, [&] { return generator.Run(progress); });

  ASSERT_TRUE(server.WaitForRequests(2, 10s));
  generator.Stop();
  ASSERT_EQ(run.wait_for(4s), std::future_status::ready) << "Run waited for the slow answers";
  const LoadgenSummary s = run.get();
  ExpectOutcomesAddUp(s);
  EXPECT_GE(s.errors, 2u);
  EXPECT_EQ(s.accepted, 0u);
}

TEST(LoadGenerator, RejectsInvalidOptionsWithAClearMessage) {
  auto message_of = [](LoadgenOptions o) -> std::string {
    try {
      LoadGenerator generator(std::move(o));
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  LoadgenOptions https;
  https.base_url = "https://localhost:8001";
  EXPECT_NE(message_of(https).find("https is not supported"), std::string::npos);
  LoadgenOptions no_devices;
  no_devices.devices = 0;
  EXPECT_NE(message_of(no_devices).find("--devices"), std::string::npos);
  LoadgenOptions negative_rps;
  negative_rps.rps = -1;
  EXPECT_NE(message_of(negative_rps).find("--rps"), std::string::npos);
  LoadgenOptions no_connections;
  no_connections.connections = 0;
  EXPECT_NE(message_of(no_connections).find("--connections"), std::string::npos);
  LoadgenOptions negative_batch;
  negative_batch.batch = -2;
  EXPECT_NE(message_of(negative_batch).find("--batch"), std::string::npos);
  LoadgenOptions bad_rate;
  bad_rate.max_error_rate = 1.5;
  EXPECT_NE(message_of(bad_rate).find("--max-error-rate"), std::string::npos);
  LoadgenOptions zero_duration;
  zero_duration.duration = 0ms;
  EXPECT_NE(message_of(zero_duration).find("--duration"), std::string::npos);
  LoadgenOptions zero_timeout;
  zero_timeout.request_timeout = 0ms;
  EXPECT_NE(message_of(zero_timeout).find("--timeout"), std::string::npos);
  EXPECT_TRUE(ValidateOptions(LoadgenOptions{}).ok());
}

TEST(ExitCodeFor, FailsOnlyWhenTheErrorRateExceedsTheThreshold) {
  LoadgenOptions options;
  options.max_error_rate = 0.01;
  LoadgenSummary s;
  EXPECT_EQ(ExitCodeFor(s, options), 0) << "nothing sent";
  s.sent = 1000;
  s.errors = 10;  // exactly 1%
  EXPECT_EQ(ExitCodeFor(s, options), 0);
  s.errors = 11;
  EXPECT_EQ(ExitCodeFor(s, options), 1);
  s.errors = 0;
  s.rejected = 1000;
  EXPECT_EQ(ExitCodeFor(s, options), 0) << "4xx are not errors";
  options.max_error_rate = 0;
  s.errors = 1;
  EXPECT_EQ(ExitCodeFor(s, options), 1);
}

}  // namespace
}  // namespace iot::loadgen

namespace iot::loadgen {
namespace {

TEST(PrintSummary, ReportsCountsRatesAndPercentiles) {
  LoadgenSummary s;
  s.sent = 2000;
  s.accepted = 1990;
  s.rejected = 4;
  s.errors = 6;
  s.readings_accepted = 1990;
  s.seconds = 10;
  s.p50_ms = 0.41;
  s.p90_ms = 0.8;
  s.p99_ms = 1.2;
  s.max_ms = 4.31;
  s.requests_per_s = 200;
  s.readings_per_s = 199;
  std::ostringstream out;
  PrintSummary(out, s);
  const std::string text = out.str();
  for (const char* expected : {"2000 sent", "1990 accepted", "4 rejected", "6 errors", "0.30%",
                               "200.0 requests/s", "199.0 readings/s", "p50 0.41 ms",
                               "p99 1.20 ms", "max 4.31 ms"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << " missing in\n" << text;
  }
}

}  // namespace
}  // namespace iot::loadgen
