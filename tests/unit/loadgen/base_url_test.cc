#include "loadgen/base_url.h"

#include <gtest/gtest.h>

namespace iot::loadgen {
namespace {

TEST(ParseBaseUrl, ParsesTheSeedDefault) {
  auto url = ParseBaseUrl("http://localhost:8001");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->host, "localhost");
  EXPECT_EQ(url->port, 8001);
  EXPECT_EQ(url->path_prefix, "");
  EXPECT_EQ(url->Target("/ingest"), "/ingest");
  EXPECT_EQ(url->HostHeader(), "localhost:8001");
}

TEST(ParseBaseUrl, DefaultsThePortTo80AndOmitsItFromTheHostHeader) {
  auto url = ParseBaseUrl("http://ingest.example.com");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->port, 80);
  EXPECT_EQ(url->HostHeader(), "ingest.example.com");
}

TEST(ParseBaseUrl, AcceptsAnUpperCaseScheme) {
  auto url = ParseBaseUrl("HTTP://10.0.0.7:9000");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->host, "10.0.0.7");
  EXPECT_EQ(url->port, 9000);
}

TEST(ParseBaseUrl, KeepsAPathPrefixWithoutTrailingSlashes) {
  auto url = ParseBaseUrl("http://gateway:8080/api/v1//");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->path_prefix, "/api/v1");
  EXPECT_EQ(url->Target("/ingest/batch"), "/api/v1/ingest/batch");
}

TEST(ParseBaseUrl, TreatsALoneSlashAsNoPrefix) {
  auto url = ParseBaseUrl("http://localhost:8001/");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->Target("/ingest"), "/ingest");
}

TEST(ParseBaseUrl, ParsesABracketedIpv6Address) {
  auto url = ParseBaseUrl("http://[::1]:8001/x");
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 8001);
  EXPECT_EQ(url->HostHeader(), "[::1]:8001");
  EXPECT_EQ(url->path_prefix, "/x");
}

TEST(ParseBaseUrl, RejectsHttpsWithAMessageSayingItIsUnsupported) {
  auto url = ParseBaseUrl("https://localhost:8001");
  ASSERT_FALSE(url);
  EXPECT_EQ(url.error().code, Errc::kInvalidArgument);
  EXPECT_NE(url.error().message.find("https is not supported"), std::string::npos)
      << url.error().message;
}

TEST(ParseBaseUrl, RejectsMalformedUrls) {
  for (const char* bad : {"", "localhost:8001", "ftp://host", "http://", "http://:8001",
                          "http://host:", "http://host:0", "http://host:65536", "http://host:80a",
                          "http://host:-1", "http://user@host", "http://host/path?x=1",
                          "http://host#frag", "http://[::1", "http://[::1]x", "http://[zz]:80",
                          "http://ho st", "http://host/a b"}) {
    auto url = ParseBaseUrl(bad);
    EXPECT_FALSE(url) << "accepted '" << bad << "'";
    if (!url) {
      EXPECT_EQ(url.error().code, Errc::kInvalidArgument);
    }
  }
}

TEST(ParseBaseUrl, AcceptsTheWholePortRange) {
  auto low = ParseBaseUrl("http://h:1");
  auto high = ParseBaseUrl("http://h:65535");
  ASSERT_TRUE(low);
  ASSERT_TRUE(high);
  EXPECT_EQ(low->port, 1);
  EXPECT_EQ(high->port, 65535);
}

}  // namespace
}  // namespace iot::loadgen
