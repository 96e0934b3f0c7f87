// api_docs_test.cc: the OpenAPI documents tell the truth about the routes. Each port's router is
// put together as src/app/run.cc does (service routes, ops routes, docs routes) and its route
// table is compared with the document's paths and methods, both ways. Also: /openapi.json,
// /docs and its files are served from the embedded assets with ETag and 304.
#include "services/openapi/api_docs.h"

#include <set>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <simdjson.h>

#include "bus/bus.h"
#include "metrics/metrics.h"
#include "services/dashboard_service.h"
#include "services/ingest_service.h"
#include "services/live_stream.h"
#include "services/ops_routes.h"
#include "services/ui_routes.h"
#include "services_test_util.h"
#include "web/assets.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;
using Route = std::pair<std::string, std::string>;  // (method, pattern)

class NullProducer final : public bus::Producer {
 public:
  void Produce(std::vector<bus::Message>, Callback done) override { done(Status::Ok()); }
  bool Ready() const override { return true; }
  Status Flush(std::chrono::milliseconds) override { return Status::Ok(); }
};

std::set<Route> RouterRoutes(const http::Router& router) {
  std::set<Route> out;
  for (const auto& r : router.Routes()) {
    auto m = bh::to_string(r.method);
    out.emplace(std::string(m.data(), m.size()), std::string(r.pattern));
  }
  return out;
}

// DocumentRoutes lists (METHOD, path) of every operation of an OpenAPI document.
std::set<Route> DocumentRoutes(std::string_view json) {
  static const std::set<std::string> kMethods = {"get",     "put",  "post",  "delete",
                                                 "options", "head", "patch", "trace"};
  simdjson::dom::parser parser;
  simdjson::padded_string text(json);
  simdjson::dom::element doc = parser.parse(text);
  std::set<Route> out;
  for (auto [path, item] : doc["paths"].get_object()) {
    for (auto [key, op] : item.get_object()) {
      std::string method(key);
      if (!kMethods.contains(method)) continue;  // "parameters", "summary", ...
      for (char& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      out.emplace(method, std::string(path));
    }
  }
  return out;
}

std::string Diff(const std::set<Route>& a, const std::set<Route>& b) {
  std::string out;
  for (const auto& r : a) {
    if (!b.contains(r)) out += " " + r.first + " " + r.second;
  }
  return out.empty() ? " (none)" : out;
}

class ApiDocsTest : public ::testing::Test {
 protected:
  ApiDocsTest() {
    ingest_.RegisterRoutes(ingest_router_);
    AddOpsRoutes(ingest_router_, registry_, nullptr);
    AddApiDocsRoutes(ingest_router_, Api::kIngest);
    dashboard_.RegisterRoutes(dashboard_router_);
    live_.RegisterRoutes(dashboard_router_);
    AddUiRoutes(dashboard_router_, UiOptions{});
    AddOpsRoutes(dashboard_router_, registry_, nullptr);
    AddApiDocsRoutes(dashboard_router_, Api::kDashboard);
  }

  void ExpectSameRoutes(const http::Router& router, Api api) {
    auto served = RouterRoutes(router);
    auto documented = DocumentRoutes(OpenApiDocument(api));
    EXPECT_GT(served.size(), 5u);
    EXPECT_EQ(served, documented) << "served but not documented:" << Diff(served, documented)
                                  << "\ndocumented but not served:" << Diff(documented, served);
  }

  NullProducer producer_;
  metrics::Registry registry_;
  core::ManualClock clock_{testing::At(0)};
  IngestService ingest_{IngestOptions{}, producer_, registry_, clock_};
  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::OpenStore(dir_);
  DashboardService dashboard_{*store_, clock_};
  LiveStream live_{LiveStreamOptions{}, *store_, ReadingSource{}, registry_};
  http::Router ingest_router_;
  http::Router dashboard_router_;
};

TEST_F(ApiDocsTest, TheIngestDocumentListsExactlyTheRoutesOfTheIngestPort) {
  ExpectSameRoutes(ingest_router_, Api::kIngest);
}

TEST_F(ApiDocsTest, TheDashboardDocumentListsExactlyTheRoutesOfTheDashboardPort) {
  ExpectSameRoutes(dashboard_router_, Api::kDashboard);
}

TEST_F(ApiDocsTest, TheComparisonSeesARouteMissingFromTheDocument) {
  dashboard_router_.Add(bh::verb::get, "/undocumented",
                        [](const http::Request&, const http::PathParams&, http::Respond r) {
                          r(http::MakeJson(200, "{}"));
                        });
  auto served = RouterRoutes(dashboard_router_);
  auto documented = DocumentRoutes(OpenApiDocument(Api::kDashboard));
  EXPECT_TRUE(served.contains({"GET", "/undocumented"}));
  EXPECT_NE(served, documented);
}

TEST_F(ApiDocsTest, EachPortServesItsOwnDocumentWithAnETag) {
  auto ingest = testing::Get(ingest_router_, "/openapi.json");
  auto dashboard = testing::Get(dashboard_router_, "/openapi.json");
  ASSERT_EQ(ingest.result_int(), 200u);
  ASSERT_EQ(dashboard.result_int(), 200u);
  EXPECT_EQ(testing::Header(ingest, "Content-Type"), "application/json");
  EXPECT_EQ(ingest.body(), OpenApiDocument(Api::kIngest));
  EXPECT_EQ(dashboard.body(), OpenApiDocument(Api::kDashboard));
  EXPECT_NE(ingest.body().find("\"/ingest/batch\""), std::string::npos);
  EXPECT_NE(dashboard.body().find("\"/devices/{device_id}/telemetry\""), std::string::npos);
  auto etag = testing::Header(ingest, "ETag");
  EXPECT_EQ(etag.size(), 34u) << etag;
  EXPECT_NE(etag, testing::Header(dashboard, "ETag"));
  EXPECT_EQ(testing::Header(ingest, "Cache-Control"), "no-cache");

  auto req = testing::MakeRequest(bh::verb::get, "/openapi.json");
  req.set(bh::field::if_none_match, "\"other\", " + etag);
  auto again = testing::Serve(ingest_router_, req)->Response();
  EXPECT_EQ(again.result_int(), 304u);
  EXPECT_TRUE(again.body().empty());
  EXPECT_EQ(testing::Header(again, "ETag"), etag);
  req.set(bh::field::if_none_match, "\"other\"");
  EXPECT_EQ(testing::Serve(ingest_router_, req)->Response().result_int(), 200u);
}

TEST_F(ApiDocsTest, DocsPageAndItsFilesAreEmbedded) {
  auto page = testing::Get(dashboard_router_, "/docs");
  ASSERT_EQ(page.result_int(), 200u);
  EXPECT_EQ(testing::Header(page, "Content-Type"), "text/html; charset=utf-8");
  for (std::string file : {"swagger-ui.css", "swagger-ui-bundle.js", "init.js"}) {
    EXPECT_NE(page.body().find("docs/" + file), std::string::npos) << file;
    auto r = testing::Get(dashboard_router_, "/docs/" + file);
    EXPECT_EQ(r.result_int(), 200u) << file;
    EXPECT_GT(r.body().size(), 100u) << file;
    EXPECT_FALSE(testing::Header(r, "ETag").empty());
  }
  EXPECT_GT(testing::Get(dashboard_router_, "/docs/swagger-ui-bundle.js").body().size(), 500'000u);
  EXPECT_EQ(testing::Header(testing::Get(ingest_router_, "/docs/swagger-ui.css"), "Content-Type"),
            "text/css; charset=utf-8");
  // Only the docs files: not the documents or the page under another name.
  EXPECT_EQ(testing::Get(ingest_router_, "/docs/docs.html").result_int(), 404u);
  EXPECT_EQ(testing::Get(ingest_router_, "/docs/ingest.json").result_int(), 404u);
  EXPECT_EQ(testing::Get(ingest_router_, "/docs/..%2Fingest.json").result_int(), 404u);
}

TEST(IfNoneMatch, ListsWildcardAndWeakTags) {
  EXPECT_TRUE(web::IfNoneMatchMatches("\"a\"", "\"a\""));
  EXPECT_TRUE(web::IfNoneMatchMatches(" \"b\" ,\"a\"", "\"a\""));
  EXPECT_TRUE(web::IfNoneMatchMatches("W/\"a\"", "\"a\""));
  EXPECT_TRUE(web::IfNoneMatchMatches("*", "\"a\""));
  EXPECT_FALSE(web::IfNoneMatchMatches("\"ab\"", "\"a\""));
  EXPECT_FALSE(web::IfNoneMatchMatches("", "\"a\""));
}

}  // namespace
}  // namespace iot::services
