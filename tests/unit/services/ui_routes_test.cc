// ui_routes_test.cc: the web UI is served from the embedded assets: the page at /ui, its files
// at /ui/{file} with their content types and ETags, the settings at /ui/config.json, and a JSON
// 404 for any other file.
#include "services/ui_routes.h"

#include <string>

#include <gtest/gtest.h>

#include "services_test_util.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;

class UiRoutesTest : public ::testing::Test {
 protected:
  UiRoutesTest() { AddUiRoutes(router_, UiOptions{.stale_after = std::chrono::seconds(42)}); }
  http::Router router_;
};

TEST_F(UiRoutesTest, ThePageLinksItsEmbeddedFilesOnly) {
  auto page = testing::Get(router_, "/ui");
  ASSERT_EQ(page.result_int(), 200u);
  EXPECT_EQ(testing::Header(page, "Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(testing::Header(page, "Cache-Control"), "no-cache");
  for (std::string file : {"app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"}) {
    EXPECT_NE(page.body().find("/ui/" + file), std::string::npos) << file;
  }
  // Nothing from another origin.
  EXPECT_EQ(page.body().find("http://"), std::string::npos);
  EXPECT_EQ(page.body().find("https://"), std::string::npos);
}

TEST_F(UiRoutesTest, FilesHaveTheirContentTypesAndETags) {
  const std::pair<const char*, const char*> kFiles[] = {
      {"app.js", "text/javascript; charset=utf-8"},
      {"app.css", "text/css; charset=utf-8"},
      {"uPlot.iife.min.js", "text/javascript; charset=utf-8"},
      {"uPlot.min.css", "text/css; charset=utf-8"},
      {"LICENSE-uplot.txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [file, type] : kFiles) {
    auto r = testing::Get(router_, std::string("/ui/") + file);
    ASSERT_EQ(r.result_int(), 200u) << file;
    EXPECT_EQ(testing::Header(r, "Content-Type"), type) << file;
    EXPECT_GT(r.body().size(), 100u) << file;
    EXPECT_EQ(testing::Header(r, "ETag").size(), 34u) << file;
  }
  EXPECT_NE(testing::Get(router_, "/ui/uPlot.iife.min.js").body().find("uPlot"), std::string::npos);
  EXPECT_NE(testing::Get(router_, "/ui/LICENSE-uplot.txt").body().find("MIT"), std::string::npos);
}

TEST_F(UiRoutesTest, ARepeatedRequestWithTheETagGets304) {
  auto first = testing::Get(router_, "/ui/app.js");
  auto req = testing::MakeRequest(bh::verb::get, "/ui/app.js");
  req.set(bh::field::if_none_match, testing::Header(first, "ETag"));
  auto again = testing::Serve(router_, req)->Response();
  EXPECT_EQ(again.result_int(), 304u);
  EXPECT_TRUE(again.body().empty());
}

TEST_F(UiRoutesTest, ConfigCarriesTheStaleAfterSetting) {
  auto r = testing::Get(router_, "/ui/config.json");
  ASSERT_EQ(r.result_int(), 200u);
  EXPECT_EQ(testing::Header(r, "Content-Type"), "application/json");
  EXPECT_EQ(r.body(), R"({"stale_after_s":42})");
}

TEST_F(UiRoutesTest, UnknownFilesAreJson404s) {
  for (std::string target : {"/ui/nope.js", "/ui/index.htm", "/ui/..%2Fapp.js", "/ui/app.js/x"}) {
    auto r = testing::Get(router_, target);
    EXPECT_EQ(r.result_int(), 404u) << target;
    EXPECT_EQ(testing::Header(r, "Content-Type"), "application/json") << target;
  }
  EXPECT_NE(testing::Get(router_, "/ui/nope.js").body().find("\"not_found\""), std::string::npos);
}

}  // namespace
}  // namespace iot::services
