// Tests of the client-address rate limit of the ingestion API: who the client is (proxies,
// IPv6 networks) and the admission check's answers.
#include "services/client_limit.h"

#include <gtest/gtest.h>

#include "services_test_util.h"

namespace iot::services {
namespace {

namespace ip = boost::asio::ip;
namespace bh = boost::beast::http;

ip::address A(const char* s) { return ip::make_address(s); }

std::vector<Cidr> Cidrs(const char* list) {
  auto r = ParseCidrs(list);
  EXPECT_TRUE(r.ok()) << list;
  return r.ok() ? *r : std::vector<Cidr>{};
}

TEST(ClientLimitTest, ParsesAddressesAndRangesAndRejectsGarbage) {
  auto c = Cidrs(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8 ");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_TRUE(c[0].Contains(A("10.200.3.4")));
  EXPECT_FALSE(c[0].Contains(A("11.0.0.1")));
  EXPECT_TRUE(c[1].Contains(A("192.168.1.7")));
  EXPECT_FALSE(c[1].Contains(A("192.168.1.8")));
  EXPECT_TRUE(c[2].Contains(A("fd12::1")));
  EXPECT_FALSE(c[2].Contains(A("10.0.0.1")));
  EXPECT_TRUE(c[0].Contains(A("::ffff:10.1.2.3")));  // v4-mapped is v4
  EXPECT_TRUE(Cidrs("").empty());
  EXPECT_FALSE(ParseCidrs("10.0.0.0/33").ok());
  EXPECT_FALSE(ParseCidrs("10.0.0.0/x").ok());
  EXPECT_FALSE(ParseCidrs("proxy.local").ok());
}

TEST(ClientLimitTest, TheClientIsThePeerUnlessThePeerIsATrustedProxy) {
  const auto none = Cidrs("");
  const auto proxies = Cidrs("10.0.0.0/8");
  // An untrusted peer's header is ignored: anyone can write one.
  EXPECT_EQ(ClientKey(A("203.0.113.9"), "198.51.100.1", proxies), "203.0.113.9");
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "198.51.100.1", none), "10.0.0.5");
  // Through a trusted proxy: the last address it vouches for.
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "198.51.100.1", proxies), "198.51.100.1");
  // A client cannot pick its key by prepending a forged address.
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "1.2.3.4, 198.51.100.1", proxies), "198.51.100.1");
  // Several trusted hops are skipped from the right.
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "198.51.100.1, 10.9.9.9", proxies), "198.51.100.1");
  // Ports and brackets as proxies write them.
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "198.51.100.1:5555", proxies), "198.51.100.1");
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "[2001:db8::1]", proxies), "2001:db8::/64");
  // Garbage from the proxy: the proxy itself is the client.
  EXPECT_EQ(ClientKey(A("10.0.0.5"), "not-an-address", proxies), "10.0.0.5");
}

TEST(ClientLimitTest, Ipv6ClientsAreKeyedByTheirSlash64) {
  const auto none = Cidrs("");
  EXPECT_EQ(ClientKey(A("2001:db8:1:2::1"), "", none), "2001:db8:1:2::/64");
  EXPECT_EQ(ClientKey(A("2001:db8:1:2:ffff::9"), "", none), "2001:db8:1:2::/64");
  EXPECT_EQ(ClientKey(A("::ffff:192.0.2.1"), "", none), "192.0.2.1");
}

TEST(ClientLimitTest, AdmitLimitsIngestRoutesOnlyAndAnswers429WithRetryAfter) {
  core::RateLimiter limiter({.rate = 1, .burst = 1});
  metrics::Registry registry;
  core::ManualClock clock(core::Timestamp(std::chrono::seconds(1'700'000'000)));
  http::Admit admit = MakeClientLimit(limiter, {}, registry, clock);
  const http::Request req(bh::verb::post, "/ingest", 11);
  const auto me = A("192.0.2.10");
  EXPECT_FALSE(admit(req, me, "/ingest"));
  auto refused = admit(req, me, "/ingest/batch");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result_int(), 429u);
  EXPECT_EQ((*refused)[bh::field::retry_after], "1");
  EXPECT_NE(refused->body().find("rate_limited"), std::string::npos);
  EXPECT_FALSE(admit(req, A("192.0.2.11"), "/ingest"));  // another client
  EXPECT_FALSE(admit(req, me, "/health"));                // probes are never limited
  EXPECT_FALSE(admit(req, me, "/metrics"));
  EXPECT_EQ(testing::MetricValue(registry, "ingest_requests_rate_limited_total"), 1);
  clock.Advance(std::chrono::seconds(1));
  EXPECT_FALSE(admit(req, me, "/ingest"));
}

}  // namespace
}  // namespace iot::services
