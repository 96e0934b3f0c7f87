// Tests for codec/reading_json.h: every decode error, batches, and the canonical encoding. Each
// single-document case runs through both decoding engines, which must agree.
#include "codec/reading_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <variant>

#include "codec/reading_json_internal.h"

namespace iot::codec {
namespace {

using internal::Engine;

const core::Timestamp kNow = core::ParseIso8601("2024-05-01T12:00:00Z").value();

std::string Repeat(std::string_view s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// Decode runs `json` through `engine` and fails the test if the engines disagree.
std::variant<core::Reading, DecodeError> Decode(const std::string& json,
                                                const core::ReadingLimits& limits = {}) {
  auto a = internal::DecodeReadingWith(Engine::kAuto, json, limits, kNow);
  auto b = internal::DecodeReadingWith(Engine::kOnDemand, json, limits, kNow);
  EXPECT_EQ(a.index(), b.index()) << "engines disagree on " << json;
  if (a.index() == 0 && b.index() == 0) {
    EXPECT_EQ(std::get<0>(a), std::get<0>(b)) << json;
  } else if (a.index() == 1 && b.index() == 1) {
    const auto& ea = std::get<1>(a);
    const auto& eb = std::get<1>(b);
    EXPECT_EQ(ea.malformed, eb.malformed) << json;
    EXPECT_EQ(ea.error.field, eb.error.field) << json;
    EXPECT_EQ(ea.error.code, eb.error.code) << json;
  }
  auto plain = DecodeReading(json, limits, kNow);
  EXPECT_EQ(plain.index(), a.index());
  return a;
}

core::Reading MustDecode(const std::string& json) {
  auto r = Decode(json);
  if (auto* e = std::get_if<DecodeError>(&r)) {
    ADD_FAILURE() << json << " -> " << e->error.field << " " << e->error.code << ": "
                  << e->error.message;
    return {};
  }
  return std::get<core::Reading>(std::move(r));
}

TEST(DecodeReadingTest, DecodesTheSeedRequest) {
  core::Reading r =
      MustDecode(R"({"device_id": "dev-1", "temperature_c": 25.5, "humidity": 60.0})");
  EXPECT_EQ(r.device_id, "dev-1");
  EXPECT_EQ(r.ts, kNow);  // no ts: the time of receipt
  EXPECT_EQ(r.sensors,
            (std::vector<core::SensorValue>{{"temperature_c", 25.5}, {"humidity", 60}}));
  EXPECT_EQ(r.lat, std::nullopt);
  EXPECT_EQ(r.lon, std::nullopt);
}

TEST(DecodeReadingTest, DecodesEveryField) {
  core::Reading r = MustDecode(
      R"( {"humidity":40,"device_id":"a.b_c:d@e~f-9","ts":"2024-05-01T13:59:00+02:00",)"
      R"("lat":-33.5,"lon":151.25,"co2":415,"temperature_c":-3.75e1} )");
  EXPECT_EQ(r.device_id, "a.b_c:d@e~f-9");
  EXPECT_EQ(r.ts, core::ParseIso8601("2024-05-01T11:59:00Z").value());
  EXPECT_EQ(r.lat, -33.5);
  EXPECT_EQ(r.lon, 151.25);
  EXPECT_EQ(r.sensors, (std::vector<core::SensorValue>{
                           {"humidity", 40}, {"co2", 415}, {"temperature_c", -37.5}}));
}

TEST(DecodeReadingTest, IgnoresStringsBooleansNullsAndIds) {
  core::Reading r = MustDecode(
      R"({"device_id":"d","temperature_c":1,"humidity":2,"firmware":"1.2.3","ok":true,)"
      R"("note":null,"id":7,"_id":{"$oid":"abc"}})");
  EXPECT_EQ(r.sensors.size(), 2u);
}

TEST(DecodeReadingTest, NullTsLatLonMeanAbsent) {
  core::Reading r = MustDecode(
      R"({"device_id":"d","ts":null,"lat":null,"lon":null,"temperature_c":1,"humidity":2})");
  EXPECT_EQ(r.ts, kNow);
  EXPECT_EQ(r.lat, std::nullopt);
  EXPECT_EQ(r.lon, std::nullopt);
}

TEST(DecodeReadingTest, UnescapesKeysAndStrings) {
  core::Reading r = MustDecode(
      R"({"device_id":"dev\u002d1","temp\u0065rature_c":1,"humidity":2})");
  EXPECT_EQ(r.device_id, "dev-1");
  EXPECT_EQ(r.sensors[0].name, "temperature_c");
}

TEST(DecodeReadingTest, LargeIntegersAndTinyNumbersAreDoubles) {
  core::Reading r = MustDecode(
      R"({"device_id":"d","temperature_c":123456789012345678901234567890,"humidity":1e-400,)"
      R"("u":18446744073709551615,"n":-9223372036854775808})");
  EXPECT_DOUBLE_EQ(r.sensors[0].value, 1.2345678901234568e29);
  EXPECT_EQ(r.sensors[1].value, 0);
  EXPECT_DOUBLE_EQ(r.sensors[2].value, 18446744073709551615.0);
  EXPECT_DOUBLE_EQ(r.sensors[3].value, -9223372036854775808.0);
}

TEST(DecodeReadingTest, NumbersWithHugeExponentsThatAreZeroOrTinyAreZero) {
  core::Reading r = MustDecode(
      R"({"device_id":"d","temperature_c":0e99999999999999999999,)"
      R"("humidity":1e-99999999999999999999,"a":-0.000001e-99999,"b":0.0e400})");
  ASSERT_EQ(r.sensors.size(), 4u);
  for (const auto& s : r.sensors) EXPECT_EQ(s.value, 0) << s.name;
  EXPECT_TRUE(std::signbit(r.sensors[2].value));
}

TEST(DecodeReadingTest, NumbersBeyondADoubleAreNotFiniteWhateverTheirForm) {
  const std::string long_integer = "1" + std::string(310, '0') + ".5";
  for (std::string n : {"1e309", "-1e309", "0.001e312", "100000e304", "1e99999999999999999999",
                        long_integer.c_str()}) {
    auto r = Decode(R"({"device_id":"d","humidity":1,"temperature_c":)" + n + "}");
    ASSERT_EQ(r.index(), 1u) << n;
    EXPECT_EQ(std::get<1>(r).error.code, "not_finite") << n;
  }
}

TEST(DecodeReadingTest, IgnoredStringsUpToTheLimitAreAccepted) {
  MustDecode(R"({"device_id":"d","temperature_c":1,"humidity":2,"note":")" +
             std::string(kMaxIgnoredStringLength, 'x') + "\"}");
}

TEST(DecodeReadingTest, SixtyFourFieldsAreAccepted) {
  core::ReadingLimits limits;
  limits.max_sensors = 64;
  std::string json = R"({"device_id":"d")";
  for (int i = 0; i < 63; ++i) json += ",\"s" + std::to_string(i) + "\":1";
  json += "}";
  limits.required_sensors.clear();
  auto r = Decode(json, limits);
  ASSERT_EQ(r.index(), 0u);
  EXPECT_EQ(std::get<0>(r).sensors.size(), 63u);
}

TEST(DecodeReadingTest, NestingDeeperThanThirtyTwoLevelsIsMalformed) {
  // 32 levels of non-empty containers (the root and 31 arrays) is a schema error, as is an empty
  // array inside them; 33 non-empty levels are rejected as malformed by both engines.
  for (const std::string& inner : {std::string("1"), std::string("[]")}) {
    const std::string ok =
        R"({"device_id":"d","x":)" + Repeat("[", 31) + inner + Repeat("]", 31) + "}";
    auto r = Decode(ok);
    ASSERT_EQ(r.index(), 1u);
    EXPECT_FALSE(std::get<1>(r).malformed) << inner;
    EXPECT_EQ(std::get<1>(r).error.code, "unsupported_type");
  }
  const std::string deep = R"({"device_id":"d","x":)" + Repeat("[", 32) + "1" + Repeat("]", 32) + "}";
  auto d = Decode(deep);
  ASSERT_EQ(d.index(), 1u);
  EXPECT_TRUE(std::get<1>(d).malformed);
  const std::string deep_objects =
      R"({"device_id":"d","x":)" + Repeat(R"({"a":)", 32) + "1" + Repeat("}", 32) + "}";
  auto o = Decode(deep_objects);
  ASSERT_EQ(o.index(), 1u);
  EXPECT_TRUE(std::get<1>(o).malformed);
  // The same bound holds when the On-Demand engine decides (a number too large for DOM).
  auto huge = Decode(R"({"device_id":"d","h":1e400,"x":)" + Repeat("[", 32) + "1" +
                     Repeat("]", 32) + "}");
  ASSERT_EQ(huge.index(), 1u);
  EXPECT_TRUE(std::get<1>(huge).malformed);
}

struct BadCase {
  std::string name;
  std::string json;
  bool malformed;
  std::string field;
  std::string code;
};

const std::string kOk = R"("temperature_c":1,"humidity":2)";

std::vector<BadCase> BadCases() {
  std::vector<BadCase> c = {
      // Not JSON, or not an object: 400.
      {"Empty", "", true, "reading", "invalid_json"},
      {"Whitespace", "  \n", true, "reading", "invalid_json"},
      {"Text", "hello", true, "reading", "invalid_json"},
      {"Array", "[]", true, "reading", "invalid_json"},
      {"Number", "5", true, "reading", "invalid_json"},
      {"String", R"("dev-1")", true, "reading", "invalid_json"},
      {"Null", "null", true, "reading", "invalid_json"},
      {"Unclosed", R"({"device_id":"d")", true, "reading", "invalid_json"},
      {"TrailingComma", R"({"device_id":"d",})", true, "reading", "invalid_json"},
      {"MissingColon", R"({"device_id" "d"})", true, "reading", "invalid_json"},
      {"MissingComma", R"({"device_id":"d" "x":1})", true, "reading", "invalid_json"},
      {"ExtraBrace", R"({"device_id":"d"}})", true, "reading", "invalid_json"},
      {"TrailingText", R"({"device_id":"d"} x)", true, "reading", "invalid_json"},
      {"TwoObjects", R"({"device_id":"d"}{"device_id":"e"})", true, "reading", "invalid_json"},
      {"LeadingZero", R"({"device_id":"d","x":01})", true, "reading", "invalid_json"},
      {"BadNumber", R"({"device_id":"d","x":1.5x})", true, "reading", "invalid_json"},
      {"LoneMinus", R"({"device_id":"d","x":-})", true, "reading", "invalid_json"},
      {"LeadingDot", R"({"device_id":"d","x":.5})", true, "reading", "invalid_json"},
      {"NaNLiteral", R"({"device_id":"d","x":NaN})", true, "reading", "invalid_json"},
      {"InfinityLiteral", R"({"device_id":"d","x":Infinity})", true, "reading", "invalid_json"},
      {"BadTrue", R"({"device_id":"d","x":tru})", true, "reading", "invalid_json"},
      {"BadNull", R"({"device_id":"d","x":nul})", true, "reading", "invalid_json"},
      {"BadEscape", R"({"device_id":"d\x"})", true, "reading", "invalid_json"},
      {"UnescapedControl", "{\"device_id\":\"d\nx\"}", true, "reading", "invalid_json"},
      {"InvalidUtf8", "{\"device_id\":\"d\",\"note\":\"\xff\"}", true, "reading",
       "invalid_json"},
      {"SingleQuotes", "{'device_id':'d'}", true, "reading", "invalid_json"},
      {"NestedMalformed", R"({"device_id":"d","x":[1,}})", true, "reading", "invalid_json"},
      {"NestedMismatch", R"({"device_id":"d","x":[1}})", true, "reading", "invalid_json"},
      {"SyntaxErrorAfterSchemaError", R"({"device_id":5,"x":})", true, "reading",
       "invalid_json"},
      {"HugeNumberThenSyntaxError", R"({"device_id":"d","x":1e400,"y":})", true, "reading",
       "invalid_json"},
      {"HugeNumberThenBadNested", R"({"device_id":"d","x":1e400,"y":{"a":[1 2]}})", true,
       "reading", "invalid_json"},
      {"HugeNumberThenTrailing", R"({"device_id":"d","x":1e400} 5)", true, "reading",
       "invalid_json"},
      // Schema errors: 422.
      {"EmptyObject", "{}", false, "device_id", "missing"},
      {"MissingDeviceId", "{" + kOk + "}", false, "device_id", "missing"},
      {"DeviceIdNumber", R"({"device_id":5,)" + kOk + "}", false, "device_id", "wrong_type"},
      {"DeviceIdNull", R"({"device_id":null,)" + kOk + "}", false, "device_id", "wrong_type"},
      {"DeviceIdQueryOperator", R"({"device_id":{"$ne":null},)" + kOk + "}", false, "device_id",
       "wrong_type"},
      {"DeviceIdArray", R"({"device_id":["a"],)" + kOk + "}", false, "device_id", "wrong_type"},
      {"DeviceIdBadChars", R"({"device_id":"a/b",)" + kOk + "}", false, "device_id",
       "invalid_format"},
      {"DeviceIdDollar", R"({"device_id":"$where",)" + kOk + "}", false, "device_id",
       "invalid_format"},
      {"DeviceIdEmpty", R"({"device_id":"",)" + kOk + "}", false, "device_id", "invalid_format"},
      {"DeviceIdTooLong", R"({"device_id":")" + std::string(129, 'd') + "\"," + kOk + "}", false,
       "device_id", "too_long"},
      {"TsNumber", R"({"device_id":"d","ts":1714564800,)" + kOk + "}", false, "ts",
       "wrong_type"},
      {"TsNotIso", R"({"device_id":"d","ts":"yesterday",)" + kOk + "}", false, "ts",
       "invalid_format"},
      {"TsBadDate", R"({"device_id":"d","ts":"2024-02-30T00:00:00Z",)" + kOk + "}", false, "ts",
       "invalid_format"},
      {"TsInTheFuture", R"({"device_id":"d","ts":"2024-05-01T12:05:00.000001Z",)" + kOk + "}",
       false, "ts", "out_of_range"},
      {"LatString", R"({"device_id":"d","lat":"52.1",)" + kOk + "}", false, "lat", "wrong_type"},
      {"LatOutOfRange", R"({"device_id":"d","lat":90.5,)" + kOk + "}", false, "lat",
       "out_of_range"},
      {"LonOutOfRange", R"({"device_id":"d","lon":-180.5,)" + kOk + "}", false, "lon",
       "out_of_range"},
      {"LatHuge", R"({"device_id":"d","lat":1e400,)" + kOk + "}", false, "lat", "not_finite"},
      {"SensorHuge", R"({"device_id":"d","temperature_c":1e400,"humidity":2})", false,
       "temperature_c", "not_finite"},
      {"SensorHugeNegative", R"({"device_id":"d","temperature_c":1,"humidity":-1E+309})", false,
       "humidity", "not_finite"},
      {"SensorObject", R"({"device_id":"d","temperature_c":{"$gt":0},"humidity":2})", false,
       "temperature_c", "unsupported_type"},
      {"SensorArray", R"({"device_id":"d","temperature_c":[1,2],"humidity":2})", false,
       "temperature_c", "unsupported_type"},
      {"IgnoredObject", R"({"device_id":"d","meta":{"a":1},)" + kOk + "}", false, "meta",
       "unsupported_type"},
      {"DuplicateSensor", R"({"device_id":"d","temperature_c":1,"humidity":2,"humidity":3})",
       false, "humidity", "duplicate_field"},
      {"DuplicateDeviceId", R"({"device_id":"d","device_id":"e",)" + kOk + "}", false,
       "device_id", "duplicate_field"},
      {"DuplicateByEscape", R"({"device_id":"d","humidity":1,"temperature_c":1,"hum\u0069dity":2})",
       false, "humidity", "duplicate_field"},
      {"DuplicateIgnored", R"({"device_id":"d","note":"a","note":"b",)" + kOk + "}", false, "note",
       "duplicate_field"},
      {"IgnoredStringTooLong",
       R"({"device_id":"d","note":")" + std::string(kMaxIgnoredStringLength + 1, 'x') + "\"," +
           kOk + "}",
       false, "note", "too_long"},
      {"MissingHumidity", R"({"device_id":"d","temperature_c":1})", false, "humidity", "missing"},
      {"MissingTemperature", R"({"device_id":"d","humidity":1})", false, "temperature_c",
       "missing"},
      {"OnlyStrings", R"({"device_id":"d","temperature_c":"20","humidity":"30"})", false,
       "temperature_c", "missing"},
      {"BadSensorName", R"({"device_id":"d","temp-c":1,)" + kOk + "}", false, "temp-c",
       "invalid_format"},
      {"EmptySensorName", R"({"device_id":"d","":1,)" + kOk + "}", false, "", "invalid_format"},
      {"FirstErrorInDocumentOrder", R"({"lat":"x","device_id":5,"temperature_c":1e400})", false,
       "lat", "wrong_type"},
      {"HugeNumberBeforeWrongType", R"({"device_id":"d","temperature_c":1e400,"lat":"x"})", false,
       "temperature_c", "not_finite"},
  };
  std::string many = R"({"device_id":"d",)" + kOk;
  for (int i = 0; i < 62; ++i) many += ",\"s" + std::to_string(i) + "\":1";
  c.push_back({"SixtyFiveFields", many + "}", false, "reading", "too_many_fields"});
  std::string sensors = R"({"device_id":"d",)" + kOk;
  for (int i = 0; i < 31; ++i) sensors += ",\"s" + std::to_string(i) + "\":1";
  c.push_back({"ThirtyThreeSensors", sensors + "}", false, "sensors", "too_many_fields"});
  return c;
}

class DecodeReadingBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(DecodeReadingBadTest, ReportsTheFieldAndTheReason) {
  const BadCase& c = GetParam();
  auto r = Decode(c.json);
  ASSERT_EQ(r.index(), 1u) << c.json;
  const DecodeError& e = std::get<DecodeError>(r);
  EXPECT_EQ(e.malformed, c.malformed);
  EXPECT_EQ(e.error.field, c.field);
  EXPECT_EQ(e.error.code, c.code);
  EXPECT_FALSE(e.error.message.empty());
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeReadingBadTest, ::testing::ValuesIn(BadCases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(DecodeTimedReadingTest, RequiresTsAndIgnoresTheFutureBound) {
  auto missing = DecodeTimedReading(R"({"device_id":"d",)" + kOk + "}", core::ReadingLimits{});
  ASSERT_EQ(missing.index(), 1u);
  EXPECT_EQ(std::get<1>(missing).error.field, "ts");
  EXPECT_EQ(std::get<1>(missing).error.code, "missing");
  auto future = DecodeTimedReading(
      R"({"device_id":"d","ts":"9999-12-31T23:59:59Z",)" + kOk + "}", core::ReadingLimits{});
  ASSERT_EQ(future.index(), 0u);
  EXPECT_EQ(std::get<0>(future).ts, core::ParseIso8601("9999-12-31T23:59:59Z").value());
}

// --- Batches -----------------------------------------------------------------------------------

std::string Item(int i) {
  return R"({"device_id":"dev-)" + std::to_string(i) + R"(","temperature_c":)" +
         std::to_string(i) + R"(,"humidity":50})";
}

using BatchResult = std::variant<std::vector<BatchItem>, BatchError>;

BatchResult Batch(const std::string& body, BatchFormat format, std::size_t max_items = 1000) {
  auto a = internal::DecodeBatchWith(Engine::kAuto, body, format, {}, kNow, max_items);
  auto b = internal::DecodeBatchWith(Engine::kOnDemand, body, format, {}, kNow, max_items);
  EXPECT_EQ(a.index(), b.index()) << "engines disagree on " << body;
  if (a.index() == 0 && b.index() == 0) {
    const auto& ia = std::get<0>(a);
    const auto& ib = std::get<0>(b);
    EXPECT_EQ(ia.size(), ib.size());
    for (std::size_t i = 0; i < std::min(ia.size(), ib.size()); ++i) {
      EXPECT_EQ(ia[i].index, ib[i].index);
      EXPECT_EQ(ia[i].result.index(), ib[i].result.index()) << i;
    }
  } else if (a.index() == 1 && b.index() == 1) {
    EXPECT_EQ(std::get<1>(a).kind, std::get<1>(b).kind);
  }
  return a;
}

TEST(DecodeBatchTest, ArrayDecodesEveryElementInOrder) {
  auto r = Batch("[" + Item(0) + ",\n" + Item(1) + "," + Item(2) + "]", BatchFormat::kJsonArray);
  ASSERT_EQ(r.index(), 0u);
  const auto& items = std::get<0>(r);
  ASSERT_EQ(items.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(items[i].index, i);
    ASSERT_EQ(items[i].result.index(), 0u);
    EXPECT_EQ(std::get<core::Reading>(items[i].result).device_id, "dev-" + std::to_string(i));
    EXPECT_EQ(std::get<core::Reading>(items[i].result).ts, kNow);
  }
}

TEST(DecodeBatchTest, ArrayItemErrorsDoNotFailTheBatch) {
  auto r = Batch("[" + Item(0) + R"(,{"device_id":5},7,"x",null,[1],{"device_id":"d","temperature_c":1e400}])",
                 BatchFormat::kJsonArray);
  ASSERT_EQ(r.index(), 0u);
  const auto& items = std::get<0>(r);
  ASSERT_EQ(items.size(), 7u);
  EXPECT_EQ(items[0].result.index(), 0u);
  auto err = [&](std::size_t i) { return std::get<DecodeError>(items[i].result); };
  EXPECT_EQ(err(1).error.field, "device_id");
  EXPECT_EQ(err(1).error.code, "wrong_type");
  for (std::size_t i = 2; i <= 5; ++i) {
    EXPECT_FALSE(err(i).malformed) << i;
    EXPECT_EQ(err(i).error.field, "reading") << i;
    EXPECT_EQ(err(i).error.code, "wrong_type") << i;
  }
  EXPECT_EQ(err(6).error.field, "temperature_c");
  EXPECT_EQ(err(6).error.code, "not_finite");
}

TEST(DecodeBatchTest, ArrayWithASyntaxErrorIsMalformed) {
  for (std::string body : std::initializer_list<std::string>{"[" + Item(0) + ",]", "[" + Item(0), "[" + Item(0) + "] x",
                           "[" + Item(0) + R"(,{"device_id":"d","x":1e400,"y":]})", "{}", "5",
                           std::string("not json"), std::string("")}) {
    auto r = Batch(body, BatchFormat::kJsonArray);
    ASSERT_EQ(r.index(), 1u) << body;
    EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kMalformed) << body;
  }
}

TEST(DecodeBatchTest, EmptyArrayIsEmpty) {
  for (std::string body : std::initializer_list<std::string>{"[]", " [ ] "}) {
    auto r = Batch(body, BatchFormat::kJsonArray);
    ASSERT_EQ(r.index(), 1u);
    EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kEmpty);
  }
}

TEST(DecodeBatchTest, AtMostMaxItems) {
  std::string three = "[" + Item(0) + "," + Item(1) + "," + Item(2) + "]";
  EXPECT_EQ(Batch(three, BatchFormat::kJsonArray, 3).index(), 0u);
  auto r = Batch(three, BatchFormat::kJsonArray, 2);
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kTooManyItems);

  std::string lines = Item(0) + "\n" + Item(1) + "\n" + Item(2) + "\n";
  EXPECT_EQ(Batch(lines, BatchFormat::kNdjson, 3).index(), 0u);
  auto n = Batch(lines, BatchFormat::kNdjson, 2);
  ASSERT_EQ(n.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(n).kind, BatchError::kTooManyItems);
}

TEST(DecodeBatchTest, ArraySyntaxErrorWinsOverTooManyItems) {
  const std::string body = "[" + Item(0) + "," + Item(1) + "," + Item(2) + ",]";
  auto r = Batch(body, BatchFormat::kJsonArray, 2);
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kMalformed);
  // Also when a huge number sends the batch to the On-Demand engine.
  const std::string huge = "[" + Item(0) + R"(,{"device_id":"d","x":1e400},)" + Item(2) + ",]";
  auto h = Batch(huge, BatchFormat::kJsonArray, 2);
  ASSERT_EQ(h.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(h).kind, BatchError::kMalformed);
  auto ok = Batch("[" + Item(0) + R"(,{"device_id":"d","x":1e400},)" + Item(2) + "]",
                  BatchFormat::kJsonArray, 2);
  ASSERT_EQ(ok.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(ok).kind, BatchError::kTooManyItems);
}

TEST(DecodeBatchTest, TooManyItemsIsDetectedWithoutDecodingTheExcess) {
  // The excess lines are not JSON at all: only counting them can reject the batch.
  std::string lines = Item(0) + "\n" + Item(1) + "\n";
  for (int i = 0; i < 100; ++i) lines += "garbage\n";
  auto r = Batch(lines, BatchFormat::kNdjson, 2);
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kTooManyItems);
}

TEST(DecodeBatchTest, NdjsonSkipsBlankLinesAndAcceptsCrLf) {
  auto r = Batch("\n" + Item(0) + "\r\n \t\r\n\n" + Item(1), BatchFormat::kNdjson);
  ASSERT_EQ(r.index(), 0u);
  const auto& items = std::get<0>(r);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].index, 0u);
  EXPECT_EQ(items[1].index, 1u);
  EXPECT_EQ(std::get<core::Reading>(items[1].result).device_id, "dev-1");
}

TEST(DecodeBatchTest, NdjsonMalformedLineFailsOnlyItsItem) {
  auto r = Batch(Item(0) + "\n{\"device_id\":\n[1]\n" + Item(3) + "\n" +
                     R"({"device_id":"d","temperature_c":1,"humidity":-1e999})",
                 BatchFormat::kNdjson);
  ASSERT_EQ(r.index(), 0u);
  const auto& items = std::get<0>(r);
  ASSERT_EQ(items.size(), 5u);
  EXPECT_EQ(items[0].result.index(), 0u);
  EXPECT_TRUE(std::get<DecodeError>(items[1].result).malformed);
  EXPECT_TRUE(std::get<DecodeError>(items[2].result).malformed);
  EXPECT_EQ(std::get<core::Reading>(items[3].result).device_id, "dev-3");
  EXPECT_EQ(std::get<DecodeError>(items[4].result).error.code, "not_finite");
}

TEST(DecodeBatchTest, NdjsonWithoutItemsIsEmpty) {
  for (std::string body : std::initializer_list<std::string>{"", "\n", " \r\n\t\n"}) {
    auto r = Batch(body, BatchFormat::kNdjson);
    ASSERT_EQ(r.index(), 1u);
    EXPECT_EQ(std::get<BatchError>(r).kind, BatchError::kEmpty);
  }
}

TEST(DecodeBatchTest, LargeBatchDecodesEveryItem) {
  std::string body = "[";
  for (int i = 0; i < 1000; ++i) body += (i ? "," : "") + Item(i);
  body += "]";
  auto r = Batch(body, BatchFormat::kJsonArray);
  ASSERT_EQ(r.index(), 0u);
  ASSERT_EQ(std::get<0>(r).size(), 1000u);
  EXPECT_EQ(std::get<core::Reading>(std::get<0>(r)[999].result).device_id, "dev-999");
}

// --- Encoding ----------------------------------------------------------------------------------

TEST(EncodeReadingJsonTest, WritesTheCanonicalForm) {
  core::Reading r;
  r.device_id = "dev-1";
  r.ts = core::ParseIso8601("2024-05-01T12:00:00.5Z").value();
  r.sensors = {{"temperature_c", 21.5}, {"humidity", 40}};
  r.lat = 52.1;
  r.lon = -4.25;
  EXPECT_EQ(EncodeReadingJson(r),
            R"({"device_id":"dev-1","ts":"2024-05-01T12:00:00.500000Z","temperature_c":21.5,)"
            R"("humidity":40,"lat":52.1,"lon":-4.25})");
  r.lat.reset();
  r.lon.reset();
  EXPECT_EQ(EncodeReadingJson(r),
            R"({"device_id":"dev-1","ts":"2024-05-01T12:00:00.500000Z","temperature_c":21.5,)"
            R"("humidity":40})");
}

TEST(EncodeReadingJsonTest, RoundTripsThroughDecodeReading) {
  core::Reading r;
  r.device_id = "x~y@z";
  r.ts = core::ParseIso8601("2023-01-02T03:04:05.000006Z").value();
  r.sensors = {{"temperature_c", 0.1 + 0.2}, {"humidity", -0.0}, {"big", 1.7976931348623157e308},
               {"tiny", 4.9e-324}};
  r.lat = -90;
  r.lon = 180;
  EXPECT_EQ(MustDecode(EncodeReadingJson(r)), r);
}

}  // namespace
}  // namespace iot::codec
