// Tests of JSON responses, JSON escaping and request-target helpers.
#include "http/response.h"

#include <gtest/gtest.h>

#include <boost/beast/http/field.hpp>

namespace iot::http {
namespace {

using beast::http::field;

TEST(MakeJsonTest, SetsStatusContentTypeAndLength) {
  Response res = MakeJson(202, R"({"ok":true})");
  EXPECT_EQ(res.result_int(), 202u);
  EXPECT_EQ(res[field::content_type], "application/json");
  EXPECT_EQ(res[field::content_length], "11");
  EXPECT_EQ(res.body(), R"({"ok":true})");
}

TEST(MakeResponseTest, SetsTheGivenContentType) {
  Response res = MakeResponse(200, "text/plain; version=0.0.4; charset=utf-8", "up 1\n");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(res[field::content_length], "5");
  EXPECT_EQ(res.body(), "up 1\n");
}

TEST(MakeErrorTest, WritesCodeMessageAndOptionalField) {
  EXPECT_EQ(MakeError(404, "not_found", "no such device").body(),
            R"({"error":"not_found","message":"no such device"})");
  Response res = MakeError(422, "out_of_range", "humidity must be <= 100", "humidity");
  EXPECT_EQ(res.result_int(), 422u);
  EXPECT_EQ(res.body(),
            R"({"error":"out_of_range","message":"humidity must be <= 100","field":"humidity"})");
}

TEST(MakeErrorTest, EscapesUserInputAsValidJson) {
  const std::string nasty = std::string("q\"b\\n\nt\tc") + '\x01' + '\x7f' + "\xc3\xa9" + "\xff";
  EXPECT_EQ(MakeError(400, "bad", nasty, "f\"").body(),
            "{\"error\":\"bad\",\"message\":\"q\\\"b\\\\n\\nt\\tc\\u0001\\u007f\xc3\xa9"
            "\xef\xbf\xbd\",\"field\":\"f\\\"\"}");
}

TEST(AppendJsonStringTest, ReplacesEachMalformedByteWithReplacementCharacter) {
  std::string out;
  AppendJsonString(out, "a\xe2\x82" "b\xf0\x9f\x98\x80");  // truncated euro sign, then an emoji
  EXPECT_EQ(out, "\"a\xef\xbf\xbd\xef\xbf\xbd" "b\xf0\x9f\x98\x80\"");
}

TEST(TargetPathTest, StripsQueryAndFragment) {
  EXPECT_EQ(TargetPath("/a/b?x=1#f"), "/a/b");
  EXPECT_EQ(TargetPath("/a#f?x"), "/a");
  EXPECT_EQ(TargetPath("/a"), "/a");
  EXPECT_EQ(TargetPath("/%3F"), "/%3F");
}

TEST(QueryParamTest, ReturnsFirstOccurrenceDecoded) {
  const std::string_view t = "/x?limit=10&q=a+b%2Fc&limit=20&empty=&flag&%6Bey=v#frag";
  EXPECT_EQ(QueryParam(t, "limit"), "10");
  EXPECT_EQ(QueryParam(t, "q"), "a b/c");
  EXPECT_EQ(QueryParam(t, "empty"), "");
  EXPECT_EQ(QueryParam(t, "flag"), "");
  EXPECT_EQ(QueryParam(t, "key"), "v");
  EXPECT_EQ(QueryParam(t, "frag"), std::nullopt);
  EXPECT_EQ(QueryParam(t, "missing"), std::nullopt);
  EXPECT_EQ(QueryParam("/x", "limit"), std::nullopt);
  EXPECT_EQ(QueryParam("/x?", "limit"), std::nullopt);
  EXPECT_EQ(QueryParam("/x?&&a=1", "a"), "1");
}

TEST(QueryParamTest, KeepsMalformedEscapesLiterally) {
  EXPECT_EQ(QueryParam("/x?a=100%&b=%zz", "a"), "100%");
  EXPECT_EQ(QueryParam("/x?a=100%&b=%zz", "b"), "%zz");
}

TEST(PercentDecodeTest, DecodesStrictly) {
  EXPECT_EQ(PercentDecode("a%20b%2fc+d", false), "a b/c+d");
  EXPECT_EQ(PercentDecode("a+b", true), "a b");
  EXPECT_EQ(PercentDecode("%", false), std::nullopt);
  EXPECT_EQ(PercentDecode("%4", false), std::nullopt);
  EXPECT_EQ(PercentDecode("%g0", false), std::nullopt);
  EXPECT_EQ(PercentDecode("", false), "");
}

}  // namespace
}  // namespace iot::http
