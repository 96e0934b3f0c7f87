// token_test.cc: the token format, its randomness, hashing and the constant-time compare.
#include "auth/token.h"

#include <set>

#include <gtest/gtest.h>

namespace iot::auth {
namespace {

TEST(Token, MadeTokensHaveThePrefixTheIdAnd256BitsOfBase64Url) {
  MadeToken t = MakeToken();
  EXPECT_EQ(t.text.size(), kTokenLength);
  EXPECT_TRUE(t.text.starts_with("iotd_"));
  EXPECT_EQ(TokenId(t.text), t.id);
  EXPECT_EQ(t.id.size(), 12u);
  EXPECT_TRUE(WellFormed(t.text));
  // 43 base64url characters carry 258 bits, of which 256 are the secret.
  EXPECT_EQ(t.text.substr(t.text.size() - kSecretLength).find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            std::string::npos);
}

TEST(Token, EveryMadeTokenIsDifferent) {
  std::set<std::string> texts, ids;
  for (int i = 0; i < 1000; ++i) {
    MadeToken t = MakeToken();
    EXPECT_TRUE(texts.insert(t.text).second);
    EXPECT_TRUE(ids.insert(t.id).second);
  }
}

TEST(Token, TheDigestIsTheSha256OfTheWholeText) {
  MadeToken t = MakeToken();
  EXPECT_EQ(t.digest, Sha256(t.text));
  // The SHA-256 test vector of "abc" (FIPS 180-2).
  EXPECT_EQ(ToHex(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(FromHex(ToHex(t.digest)), t.digest);
  EXPECT_FALSE(FromHex("zz"));
  EXPECT_FALSE(FromHex(std::string(64, 'G')));
}

TEST(Token, MalformedTextsAreToldApart) {
  MadeToken t = MakeToken();
  EXPECT_FALSE(WellFormed(""));
  EXPECT_FALSE(WellFormed("secret"));
  EXPECT_FALSE(WellFormed(t.text.substr(1)));                       // short
  EXPECT_FALSE(WellFormed(t.text + "A"));                           // long
  EXPECT_FALSE(WellFormed("xotd_" + t.text.substr(5)));             // prefix
  std::string upper_id = t.text;
  upper_id[5] = 'G';
  EXPECT_FALSE(WellFormed(upper_id));                               // id alphabet
  std::string bad_secret = t.text;
  bad_secret.back() = '=';
  EXPECT_FALSE(WellFormed(bad_secret));                             // secret alphabet
  std::string no_separator = t.text;
  no_separator[17] = 'x';
  EXPECT_FALSE(WellFormed(no_separator));
}

TEST(Token, DigestsEqualComparesEveryByte) {
  Digest a = Sha256("a");
  Digest first = a, last = a;
  first[0] ^= 1;
  last[31] ^= 0x80;
  EXPECT_TRUE(DigestsEqual(a, a));
  EXPECT_FALSE(DigestsEqual(a, first));
  EXPECT_FALSE(DigestsEqual(a, last));
}

TEST(Token, DeviceAndGatewayTokensWriteOnlyTheirDevices) {
  Token device{.id = "0123456789ab", .kind = Kind::kDevice, .devices = {"dev-1"}};
  EXPECT_TRUE(device.MayWrite("dev-1"));
  EXPECT_FALSE(device.MayWrite("dev-2"));
  EXPECT_FALSE(device.MayWrite("dev-10"));
  EXPECT_FALSE(device.MayRead());
  Token gateway{.id = "0123456789ac", .kind = Kind::kGateway, .devices = {"a", "b"}};
  EXPECT_TRUE(gateway.MayWrite("a"));
  EXPECT_TRUE(gateway.MayWrite("b"));
  EXPECT_FALSE(gateway.MayWrite("c"));
  gateway.revoked = core::Timestamp{};
  EXPECT_FALSE(gateway.MayWrite("a"));
}

TEST(Token, ReadTokensReadTheirPrefixAndWriteNothing) {
  Token all{.id = "0123456789ad", .kind = Kind::kRead};
  EXPECT_TRUE(all.MayRead());
  EXPECT_TRUE(all.InScope("anything"));
  EXPECT_FALSE(all.MayWrite("anything"));
  Token site{.id = "0123456789ae", .kind = Kind::kRead, .prefix = "site-a-"};
  EXPECT_TRUE(site.InScope("site-a-1"));
  EXPECT_FALSE(site.InScope("site-b-1"));
  EXPECT_FALSE(site.InScope("site-a"));
}

TEST(Token, PrefixesUseTheDeviceIdAlphabet) {
  EXPECT_TRUE(ValidPrefix(""));
  EXPECT_TRUE(ValidPrefix("site-a."));
  EXPECT_FALSE(ValidPrefix("a b"));
  EXPECT_FALSE(ValidPrefix("a*"));
  EXPECT_FALSE(ValidPrefix(std::string(129, 'a')));
}

}  // namespace
}  // namespace iot::auth
