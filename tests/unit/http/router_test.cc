// Tests of the router as pure code: matching, parameters, 404/405/400, media types.
#include "http/router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace iot::http {
namespace {

using beast::http::field;
using beast::http::verb;
using ::testing::HasSubstr;

Handler Named(std::string name, std::string* called) {
  return [name, called](const Request&, const PathParams&, Respond) { *called = name; };
}

class RouterTest : public ::testing::Test {
 protected:
  // Lookup returns the route pattern that matched, failing the test when Find answered an error.
  Router::Match Lookup(verb method, std::string_view target) {
    auto found = router_.Find(method, target);
    EXPECT_TRUE(std::holds_alternative<Router::Match>(found))
        << target << " -> " << std::get<Response>(found).body();
    if (!std::holds_alternative<Router::Match>(found)) return {};
    return std::get<Router::Match>(std::move(found));
  }
  Response Error(verb method, std::string_view target) {
    auto found = router_.Find(method, target);
    EXPECT_TRUE(std::holds_alternative<Response>(found)) << target << " matched";
    if (!std::holds_alternative<Response>(found)) return {};
    return std::get<Response>(std::move(found));
  }
  std::string HandlerOf(verb method, std::string_view target) {
    Router::Match m = Lookup(method, target);
    if (m.handler == nullptr) return "";
    called_.clear();
    (*m.handler)(Request{}, m.params, [](Response) {});
    return called_;
  }

  Router router_;
  std::string called_;
};

TEST_F(RouterTest, ListsEveryRouteWithItsMethodMostSpecificFirst) {
  router_.Add(verb::get, "/devices/{id}", Named("one", &called_));
  router_.Add(verb::get, "/devices/stats", Named("stats", &called_));
  router_.Add(verb::post, "/devices/{id}", Named("post", &called_));
  std::vector<std::pair<verb, std::string>> routes;
  for (const auto& r : router_.Routes()) routes.emplace_back(r.method, std::string(r.pattern));
  EXPECT_EQ(routes, (std::vector<std::pair<verb, std::string>>{{verb::get, "/devices/stats"},
                                                                {verb::get, "/devices/{id}"},
                                                                {verb::post, "/devices/{id}"}}));
  EXPECT_TRUE(Router{}.Routes().empty());
}

TEST_F(RouterTest, MatchesLiteralPatternAndReportsItAsRoute) {
  RouteOptions options;
  options.max_body_bytes = 123;
  router_.Add(verb::post, "/ingest", Named("ingest", &called_), options);
  Router::Match m = Lookup(verb::post, "/ingest");
  EXPECT_EQ(m.route, "/ingest");
  ASSERT_NE(m.options, nullptr);
  EXPECT_EQ(m.options->max_body_bytes, 123u);
  EXPECT_TRUE(m.params.values.empty());
  EXPECT_EQ(HandlerOf(verb::post, "/ingest"), "ingest");
}

TEST_F(RouterTest, ExtractsParametersPercentDecodedInPatternOrder) {
  router_.Add(verb::get, "/devices/{device_id}/sensors/{sensor}", Named("s", &called_));
  Router::Match m = Lookup(verb::get, "/devices/a%2Fb%20c+d/sensors/temp%5Fc");
  EXPECT_EQ(m.route, "/devices/{device_id}/sensors/{sensor}");
  ASSERT_EQ(m.params.values.size(), 2u);
  EXPECT_EQ(m.params.values[0].first, "device_id");
  EXPECT_EQ(m.params.Get("device_id"), "a/b c+d");  // '+' is literal in a path
  EXPECT_EQ(m.params.Get("sensor"), "temp_c");
  EXPECT_EQ(m.params.Get("missing"), "");
}

TEST_F(RouterTest, IgnoresQueryStringAndFragment) {
  router_.Add(verb::get, "/alerts", Named("alerts", &called_));
  EXPECT_EQ(Lookup(verb::get, "/alerts?status=active&limit=10").route, "/alerts");
  EXPECT_EQ(Lookup(verb::get, "/alerts#top").route, "/alerts");
}

TEST_F(RouterTest, AnswersNotFoundWithJsonForUnknownPaths) {
  router_.Add(verb::get, "/health", Named("health", &called_));
  Response res = Error(verb::get, "/nope?x=1");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(res[field::content_type], "application/json");
  EXPECT_EQ(res.body(), R"({"error":"not_found","message":"no route for /nope"})");
}

TEST_F(RouterTest, TrailingSlashIsNotAMatchExceptForRoot) {
  router_.Add(verb::get, "/", Named("root", &called_));
  router_.Add(verb::get, "/devices", Named("devices", &called_));
  router_.Add(verb::get, "/devices/{id}", Named("device", &called_));
  EXPECT_EQ(HandlerOf(verb::get, "/"), "root");
  EXPECT_EQ(Error(verb::get, "/devices/").result_int(), 404u);
  EXPECT_EQ(Error(verb::get, "/devices/x/").result_int(), 404u);
  EXPECT_EQ(Error(verb::get, "//devices").result_int(), 404u);
  EXPECT_EQ(Error(verb::get, "").result_int(), 400u);
}

TEST_F(RouterTest, ParameterDoesNotMatchAnEmptySegment) {
  router_.Add(verb::get, "/devices/{id}/telemetry", Named("t", &called_));
  EXPECT_EQ(Error(verb::get, "/devices//telemetry").result_int(), 404u);
}

TEST_F(RouterTest, AnswersMethodNotAllowedWithAllowHeader) {
  router_.Add(verb::post, "/devices/{id}", Named("post", &called_));
  router_.Add(verb::get, "/devices/{id}", Named("get", &called_));
  Response res = Error(verb::delete_, "/devices/d1");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[field::allow], "GET, HEAD, POST");
  EXPECT_THAT(res.body(), HasSubstr(R"("error":"method_not_allowed")"));
  EXPECT_THAT(res.body(), HasSubstr("DELETE"));
}

TEST_F(RouterTest, ServesHeadWithTheGetHandler) {
  router_.Add(verb::get, "/health", Named("get", &called_));
  EXPECT_EQ(HandlerOf(verb::head, "/health"), "get");
  router_.Add(verb::head, "/health", Named("head", &called_));
  EXPECT_EQ(HandlerOf(verb::head, "/health"), "head");
}

TEST_F(RouterTest, PrefersLiteralSegmentsOverParametersRegardlessOfOrder) {
  router_.Add(verb::get, "/devices/{id}", Named("device", &called_));
  router_.Add(verb::get, "/devices/stats", Named("stats", &called_));
  router_.Add(verb::get, "/{a}/b", Named("param-first", &called_));
  router_.Add(verb::get, "/a/{b}", Named("literal-first", &called_));
  EXPECT_EQ(HandlerOf(verb::get, "/devices/stats"), "stats");
  EXPECT_EQ(Lookup(verb::get, "/devices/stats").route, "/devices/stats");
  EXPECT_EQ(HandlerOf(verb::get, "/devices/d1"), "device");
  EXPECT_EQ(HandlerOf(verb::get, "/a/b"), "literal-first");
  EXPECT_EQ(HandlerOf(verb::get, "/x/b"), "param-first");
}

TEST_F(RouterTest, FallsBackToAParameterPatternThatHasTheMethod) {
  router_.Add(verb::get, "/devices/stats", Named("stats", &called_));
  router_.Add(verb::delete_, "/devices/{id}", Named("delete", &called_));
  EXPECT_EQ(HandlerOf(verb::delete_, "/devices/stats"), "delete");
  Response res = Error(verb::put, "/devices/stats");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[field::allow], "DELETE, GET, HEAD");
}

TEST_F(RouterTest, RejectsBadPercentEncodingInParameters) {
  router_.Add(verb::get, "/devices/{id}", Named("device", &called_));
  Response res = Error(verb::get, "/devices/bad%zz");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_THAT(res.body(), HasSubstr(R"("field":"id")"));
  EXPECT_EQ(Error(verb::get, "/devices/bad%4").result_int(), 400u);
}

TEST_F(RouterTest, RejectsTargetsThatAreNotAbsolutePaths) {
  router_.Add(verb::get, "/", Named("root", &called_));
  EXPECT_EQ(Error(verb::options, "*").result_int(), 400u);
  EXPECT_EQ(Error(verb::get, "http://example.com/").result_int(), 400u);
}

TEST_F(RouterTest, AddRejectsMalformedPatternsAndDuplicates) {
  const auto add = [this](verb v, const char* p) { router_.Add(v, p, Named("x", &called_)); };
  EXPECT_THROW(add(verb::get, ""), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "devices"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/devices/"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/a//b"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/a/{}"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/a/{b-c}"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/a/{x}/{x}"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/a/b{x}"), std::invalid_argument);
  add(verb::get, "/devices/{id}");
  EXPECT_THROW(add(verb::get, "/devices/{id}"), std::invalid_argument);
  EXPECT_THROW(add(verb::get, "/devices/{other}"), std::invalid_argument);
  EXPECT_NO_THROW(add(verb::post, "/devices/{id}"));
}

TEST(MediaTypeMatchesTest, IgnoresParametersCaseAndWhitespace) {
  const std::vector<std::string> json{"application/json"};
  EXPECT_TRUE(MediaTypeMatches("application/json", json));
  EXPECT_TRUE(MediaTypeMatches("application/json; charset=utf-8", json));
  EXPECT_TRUE(MediaTypeMatches("Application/JSON;charset=UTF-8", json));
  EXPECT_TRUE(MediaTypeMatches(" application/json ", json));
  EXPECT_FALSE(MediaTypeMatches("text/plain", json));
  EXPECT_FALSE(MediaTypeMatches("application/jsonx", json));
  EXPECT_FALSE(MediaTypeMatches("", json));
  EXPECT_TRUE(MediaTypeMatches("text/csv", {"application/json", "text/csv"}));
}

}  // namespace
}  // namespace iot::http
