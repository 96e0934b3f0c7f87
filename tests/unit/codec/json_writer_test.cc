// Tests for codec/json_writer.h: structure, numbers and escaping.
#include "codec/json_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

namespace iot::codec {
namespace {

TEST(JsonWriterTest, InsertsCommasInNestedContainers) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("a");
  w.Int(1);
  w.Key("b");
  w.BeginArray();
  w.Int(1);
  w.BeginObject();
  w.EndObject();
  w.BeginArray();
  w.EndArray();
  w.String("x");
  w.EndArray();
  w.Key("c");
  w.BeginObject();
  w.Key("d");
  w.Null();
  w.Key("e");
  w.Bool(true);
  w.Key("f");
  w.Bool(false);
  w.EndObject();
  w.Key("g");
  w.Raw("[1,2]");
  w.EndObject();
  EXPECT_EQ(out, R"({"a":1,"b":[1,{},[],"x"],"c":{"d":null,"e":true,"f":false},"g":[1,2]})");
}

TEST(JsonWriterTest, ConsecutiveTopLevelValuesInAnArrayAreSeparated) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  for (int i = 0; i < 3; ++i) {
    w.BeginObject();
    w.Key("i");
    w.Int(i);
    w.EndObject();
  }
  w.EndArray();
  EXPECT_EQ(out, R"([{"i":0},{"i":1},{"i":2}])");
}

TEST(JsonWriterTest, ResetStartsANewDocument) {
  std::string out;
  JsonWriter w(out);
  w.Int(1);
  out.clear();
  w.Reset();
  w.Int(2);
  EXPECT_EQ(out, "2");
}

std::string Num(double v) {
  std::string out;
  JsonWriter(out).Double(v);
  return out;
}

TEST(JsonWriterTest, DoublesUseTheShortestRoundTripForm) {
  EXPECT_EQ(Num(0.1), "0.1");
  EXPECT_EQ(Num(25), "25");
  EXPECT_EQ(Num(-3.75), "-3.75");
  EXPECT_EQ(Num(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(Num(1e300), "1e+300");
  EXPECT_EQ(Num(-0.0), "-0");
  EXPECT_EQ(std::strtod(Num(std::numeric_limits<double>::max()).c_str(), nullptr),
            std::numeric_limits<double>::max());
  EXPECT_EQ(Num(5e-324), "5e-324");
}

TEST(JsonWriterTest, NonFiniteDoublesAreNull) {
  EXPECT_EQ(Num(std::nan("")), "null");
  EXPECT_EQ(Num(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(Num(-std::numeric_limits<double>::infinity()), "null");
}

TEST(JsonWriterTest, IntsCoverTheFullRange) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  w.Int(std::numeric_limits<std::int64_t>::min());
  w.Int(std::numeric_limits<std::int64_t>::max());
  w.Int(0);
  w.EndArray();
  EXPECT_EQ(out, "[-9223372036854775808,9223372036854775807,0]");
}

TEST(JsonEscapeTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonEscape(R"(say "hi")"), R"(say \"hi\")");
  EXPECT_EQ(JsonEscape(R"(C:\dir)"), R"(C:\\dir)");
  EXPECT_EQ(JsonEscape("a\nb\rc\td\be\ff"), R"(a\nb\rc\td\be\ff)");
  EXPECT_EQ(JsonEscape(std::string("\0\x01\x1f", 3)), R"(\u0000\u0001\u001f)");
  EXPECT_EQ(JsonEscape("\x7f"), "\x7f");
}

TEST(JsonEscapeTest, LeavesUtf8AndPlainTextAlone) {
  EXPECT_EQ(JsonEscape("caf\xc3\xa9 \xe2\x82\xac"), "caf\xc3\xa9 \xe2\x82\xac");
  EXPECT_EQ(JsonEscape(""), "");
  EXPECT_EQ(JsonEscape("plain </script>"), "plain </script>");
}

TEST(JsonWriterTest, TimeMatchesFormatIso8601) {
  std::mt19937_64 rng(7);
  std::vector<core::Timestamp> times = {
      core::FromUnixMicros(0), core::FromUnixMicros(1), core::FromUnixMicros(999'999),
      core::FromUnixMicros(86'399'999'999), core::FromUnixMicros(253'402'300'799'999'999),
      core::FromUnixMicros(-1), core::FromUnixMicros(-62'167'219'200'000'000),  // year 0
      core::FromUnixMicros(253'402'300'800'000'000),                           // year 10000
      core::ParseIso8601("2024-02-29T23:59:59.5Z").value()};
  for (int i = 0; i < 2000; ++i) {
    std::int64_t us = static_cast<std::int64_t>(rng() % 253'402'300'800'000'000ULL);
    if (i % 2 == 0) us -= us % 1'000'000;  // whole seconds take the short form
    times.push_back(core::FromUnixMicros(us));
  }
  for (auto t : times) {
    std::string out;
    JsonWriter(out).Time(t);
    EXPECT_EQ(out, "\"" + core::FormatIso8601(t) + "\"") << core::ToUnixMicros(t);
  }
}

TEST(JsonWriterTest, EscapesKeysAndStrings) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("k\"");
  w.String("v\\\n");
  w.EndObject();
  EXPECT_EQ(out, R"({"k\"":"v\\\n"})");
}

}  // namespace
}  // namespace iot::codec
