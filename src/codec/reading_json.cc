// reading_json.cc: decoding readings with simdjson (see reading_json.h).
//
// Two engines share one decoder (ReadingBuilder):
//   - DOM (the fast path): simdjson's DOM parser validates the whole document and picks the best
//     SIMD kernel at run time. It rejects a whole document when one number does not fit a double
//     (1e400) or an integer has more than 64 bits, so such documents go to
//   - On-Demand (the fallback): it parses numbers one by one, which tells "a valid number too
//     large for a double" (422, "not_finite") from "not a number" (400). On-Demand only validates
//     what it touches, so the adapter touches every value, walking nested arrays and objects.
// Both engines bound nesting to kMaxDepth levels (deeper is malformed), and must agree on every
// input; tests and the fuzzer check that (internal::DecodeReadingWith).
#include "codec/reading_json.h"

#include <simdjson.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "codec/json_writer.h"
#include "codec/reading_json_internal.h"

namespace iot::codec {
namespace {

namespace od = simdjson::ondemand;
namespace dom = simdjson::dom;

using internal::Engine;

// kMaxDepth bounds the nesting of non-empty arrays and objects in a document (the root counts as
// 1); an empty container may sit one level deeper. This is what simdjson's DOM parser enforces
// with max_depth = kMaxDepth + 1.
constexpr int kMaxDepth = 32;

// ThreadState holds the parsers of this thread and the padded copy of the input they parse.
struct ThreadState {
  dom::parser dom_parser;
  od::parser od_parser;
  std::string buffer;
  bool dom_ready = false;
};

ThreadState& State() {
  thread_local ThreadState state;
  return state;
}

// Prepare copies `text` into the thread's buffer followed by SIMDJSON_PADDING zero bytes, as
// simdjson requires, and returns the size of the usable buffer. Buffers and parsers that grew
// large for a rare big body are released when a small one follows.
std::size_t Prepare(ThreadState& st, std::string_view text) {
  constexpr std::size_t kBig = std::size_t{4} << 20;
  const std::size_t need = text.size() + simdjson::SIMDJSON_PADDING;
  if (need < (std::size_t{64} << 10)) {
    if (st.buffer.capacity() > kBig) std::string().swap(st.buffer);
    if (st.dom_parser.capacity() > kBig) st.dom_ready = false;
    if (st.od_parser.capacity() > kBig) st.od_parser = od::parser();
  }
  if (!st.dom_ready) {
    st.dom_parser = dom::parser();
    // Capacity grows on demand; only the depth is fixed here (DOM allows max_depth - 1 levels).
    if (st.dom_parser.allocate(4096, kMaxDepth + 1) == simdjson::SUCCESS) st.dom_ready = true;
  }
  if (st.buffer.size() < need) st.buffer.resize(need);
  if (!text.empty()) std::memcpy(st.buffer.data(), text.data(), text.size());
  std::memset(st.buffer.data() + text.size(), 0, simdjson::SIMDJSON_PADDING);
  return st.buffer.size();
}

// IsJsonNumber reports whether `token` (possibly followed by whitespace) follows the JSON number
// grammar -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
bool IsJsonNumber(std::string_view token) {
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\n' ||
                            token.back() == '\r')) {
    token.remove_suffix(1);
  }
  std::size_t i = 0;
  const std::size_t n = token.size();
  auto digit = [&](std::size_t k) { return k < n && token[k] >= '0' && token[k] <= '9'; };
  if (i < n && token[i] == '-') ++i;
  if (!digit(i)) return false;
  if (token[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < n && token[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < n && (token[i] == 'e' || token[i] == 'E')) {
    ++i;
    if (i < n && (token[i] == '+' || token[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == n;
}

enum class Kind { kString, kNumber, kBool, kNull, kArray, kObject };
enum class Num { kOk, kNotFinite, kMalformed };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kString: return "a string";
    case Kind::kNumber: return "a number";
    case Kind::kBool: return "a boolean";
    case Kind::kNull: return "null";
    case Kind::kArray: return "an array";
    case Kind::kObject: return "an object";
  }
  return "a value";
}

// --- Value adapters: what ReadingBuilder needs from a JSON value -------------------------------
//
//   bool Type(Kind&)                 false: not valid JSON
//   bool String(std::string_view&)   the unescaped string; false: not valid JSON
//   Num Number(double&)
//   bool Skim(std::size_t* length)   validates a value whose content is unused; a string's length
//                                    goes to *length when given; false: not valid JSON

class DomValue {
 public:
  explicit DomValue(dom::element e) : e_(e) {}

  bool Type(Kind& k) const {
    switch (e_.type()) {
      case dom::element_type::ARRAY: k = Kind::kArray; break;
      case dom::element_type::OBJECT: k = Kind::kObject; break;
      case dom::element_type::STRING: k = Kind::kString; break;
      case dom::element_type::BOOL: k = Kind::kBool; break;
      case dom::element_type::NULL_VALUE: k = Kind::kNull; break;
      default: k = Kind::kNumber; break;  // INT64, UINT64, DOUBLE
    }
    return true;
  }
  bool String(std::string_view& s) const { return !e_.get_string().get(s); }
  Num Number(double& d) const {
    if (e_.get_double().get(d)) return Num::kMalformed;  // cannot happen after Type()
    return std::isfinite(d) ? Num::kOk : Num::kNotFinite;
  }
  bool Skim(std::size_t* length) const {
    if (length != nullptr && e_.is_string()) *length = e_.get_string_length().value_unsafe();
    return true;  // the DOM parser validated the whole document
  }

 private:
  dom::element e_;
};

class OdValue {
 public:
  // OdValue wraps `v`, a container at nesting level `level` if it is one.
  OdValue(od::value v, int level) : v_(v), level_(level) {}

  bool Type(Kind& k) {
    od::json_type t;
    if (v_.type().get(t)) return false;
    switch (t) {
      case od::json_type::array: k = Kind::kArray; break;
      case od::json_type::object: k = Kind::kObject; break;
      case od::json_type::string: k = Kind::kString; break;
      case od::json_type::boolean: k = Kind::kBool; break;
      case od::json_type::null: k = Kind::kNull; break;
      case od::json_type::number: k = Kind::kNumber; break;
    }
    return true;
  }
  bool String(std::string_view& s) { return !v_.get_string().get(s); }
  Num Number(double& d) {
    if (!v_.get_double().get(d)) return std::isfinite(d) ? Num::kOk : Num::kNotFinite;
    // simdjson reports both "too large" and "not a number" as errors: tell them apart. Some
    // valid numbers that it rejects are finite after all (0e99999999999999999999).
    return ParseRejectedNumber(v_.raw_json_token(), d);
  }

  // ParseRejectedNumber decides a number token that simdjson could not parse.
  static Num ParseRejectedNumber(std::string_view token, double& d) {
    if (!IsJsonNumber(token)) return Num::kMalformed;
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t' ||
                              token.back() == '\n' || token.back() == '\r')) {
      token.remove_suffix(1);
    }
    auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), d);
    if (ec == std::errc()) return std::isfinite(d) ? Num::kOk : Num::kNotFinite;
    if (DecimalOrder(token) > 0) return Num::kNotFinite;
    d = token.front() == '-' ? -0.0 : 0.0;  // too small for a double: it rounds to zero
    return Num::kOk;
  }

  // DecimalOrder returns (about) the decimal exponent of the leading digit of a valid JSON
  // number token: 2 for 123, -3 for 0.001, 5 for 1e5; saturated far beyond a double's range.
  static std::int64_t DecimalOrder(std::string_view t) {
    std::size_t i = t.front() == '-' ? 1 : 0;
    std::int64_t order = 0;
    bool nonzero = false;
    for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
      if (t[i] != '0') nonzero = true;
      if (nonzero) ++order;
    }
    order = nonzero ? order - 1 : 0;  // ddd.. has order (digits - 1); 0.0..d counts below
    if (i < t.size() && t[i] == '.') {
      for (++i; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
        if (!nonzero) {
          --order;
          if (t[i] != '0') nonzero = true;
        }
      }
    }
    if (!nonzero) return std::numeric_limits<std::int64_t>::min();  // zero
    std::int64_t exponent = 0;
    if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
      ++i;
      const bool negative = i < t.size() && t[i] == '-';
      if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
      for (; i < t.size(); ++i) {
        if (exponent < 1'000'000'000) exponent = exponent * 10 + (t[i] - '0');
      }
      if (negative) exponent = -exponent;
    }
    return order + exponent;
  }
  bool Skim(std::size_t* length) { return SkimValue(v_, level_, length); }

  // SkimValue validates `v` (a container at `level`) and everything in it.
  static bool SkimValue(od::value& v, int level, std::size_t* length) {
    od::json_type t;
    if (v.type().get(t)) return false;
    switch (t) {
      case od::json_type::string: {
        std::string_view s;
        if (v.get_string().get(s)) return false;
        if (length != nullptr) *length = s.size();
        return true;
      }
      case od::json_type::number: {
        double d;
        if (!v.get_double().get(d)) return true;
        return IsJsonNumber(v.raw_json_token());
      }
      case od::json_type::boolean: {
        bool b;
        return !v.get_bool().get(b);
      }
      case od::json_type::null: {
        bool is_null = false;
        return !v.is_null().get(is_null) && is_null;
      }
      // Like DOM, a container counts towards the depth only when it is not empty.
      case od::json_type::array: {
        od::array a;
        if (v.get_array().get(a)) return false;
        for (auto element : a) {
          if (level > kMaxDepth) return false;
          od::value ev;
          if (std::move(element).get(ev) || !SkimValue(ev, level + 1, nullptr)) return false;
        }
        return true;
      }
      case od::json_type::object: {
        od::object o;
        if (v.get_object().get(o)) return false;
        for (auto field_result : o) {
          if (level > kMaxDepth) return false;
          od::field field;
          std::string_view key;
          if (std::move(field_result).get(field) || field.unescaped_key().get(key)) return false;
          od::value fv = field.value();
          if (!SkimValue(fv, level + 1, nullptr)) return false;
        }
        return true;
      }
    }
    return false;
  }

 private:
  od::value v_;
  int level_;
};

DecodeError Malformed(std::string message) {
  return DecodeError{
      true, core::FieldError{std::string(kReadingField), "invalid_json", std::move(message)}};
}

DecodeError NotAnObject(Kind kind) {
  return DecodeError{false, core::FieldError{std::string(kReadingField), "wrong_type",
                                             std::string("a reading must be an object, not ") +
                                                 KindName(kind)}};
}

// ReadingBuilder turns the fields of one JSON object into a Reading. It records the first schema
// error in document order and keeps reading, so that a syntax error later in the document still
// wins (400 over 422).
class ReadingBuilder {
 public:
  // ReadingBuilder decodes against `limits`; `now` is the default ts, or, when nullopt, ts is
  // required and no future bound applies.
  ReadingBuilder(const core::ReadingLimits& limits, std::optional<core::Timestamp> now)
      : limits_(limits), now_(now) {
    reading_.sensors.reserve(4);
  }

  // Field handles one field; false when its value is not valid JSON.
  template <typename V>
  bool Field(std::string_view key, V& value) {
    const bool counted = ++field_count_ <= kMaxFields;
    if (!counted) {
      Fail(kReadingField, "too_many_fields",
           "a reading may have at most " + std::to_string(kMaxFields) + " fields");
    } else {
      for (std::size_t i = 0; i + 1 < field_count_; ++i) {
        if (keys_[i] == key) {
          Fail(key, "duplicate_field", "field appears more than once");
          break;
        }
      }
      keys_[field_count_ - 1] = key;
    }

    Kind kind;
    if (!value.Type(kind)) return false;
    if (key == "device_id") {
      if (kind != Kind::kString) return WrongType(key, value, kind, "a string");
      std::string_view s;
      if (!value.String(s)) return false;
      reading_.device_id.assign(s.data(), s.size());
      has_device_id_ = true;
      return true;
    }
    if (key == "ts") {
      if (kind == Kind::kNull) return value.Skim(nullptr);
      if (kind != Kind::kString) return WrongType(key, value, kind, "an ISO 8601 string");
      std::string_view s;
      if (!value.String(s)) return false;
      if (auto ts = core::ParseIso8601(s)) {
        reading_.ts = *ts;
        has_ts_ = true;
      } else {
        Fail(key, "invalid_format",
             "ts must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z");
      }
      return true;
    }
    if (key == "lat" || key == "lon") {
      if (kind == Kind::kNull) return value.Skim(nullptr);
      if (kind != Kind::kNumber) return WrongType(key, value, kind, "a number");
      double d = 0;
      if (!Number(key, value, d)) return false;
      (key == "lat" ? reading_.lat : reading_.lon) = d;
      return true;
    }
    if (key == "id" || key == "_id") return Ignore(key, value, kind);
    switch (kind) {
      case Kind::kNumber: {
        double d = 0;
        if (!Number(key, value, d)) return false;
        if (counted) reading_.sensors.push_back(core::SensorValue{std::string(key), d});
        return true;
      }
      case Kind::kArray:
      case Kind::kObject:
        Fail(key, "unsupported_type",
             std::string("a sensor value must be a number, not ") + KindName(kind));
        return value.Skim(nullptr);
      default:
        return Ignore(key, value, kind);
    }
  }

  // Finish applies the defaults and core::ValidateReading once all fields are read.
  std::variant<core::Reading, DecodeError> Finish() {
    if (error_) return DecodeError{false, std::move(*error_)};
    if (!has_device_id_) {
      if (limits_.default_device_id.empty()) {
        return DecodeError{false,
                           core::FieldError{"device_id", "missing", "device_id is required"}};
      }
      reading_.device_id = limits_.default_device_id;
    }
    if (!has_ts_) {
      if (!now_) return DecodeError{false, core::FieldError{"ts", "missing", "ts is required"}};
      reading_.ts = *now_;
    }
    if (auto e = core::ValidateReading(reading_, limits_, now_.value_or(core::Timestamp::max()))) {
      return DecodeError{false, std::move(*e)};
    }
    return std::move(reading_);
  }

 private:
  void Fail(std::string_view field, const char* code, std::string message) {
    if (!error_) error_ = core::FieldError{std::string(field), code, std::move(message)};
  }

  // Number reads a number field; a value too large for a double records "not_finite".
  template <typename V>
  bool Number(std::string_view key, V& value, double& d) {
    switch (value.Number(d)) {
      case Num::kOk: return true;
      case Num::kNotFinite:
        Fail(key, "not_finite", "the number does not fit a double");
        return true;
      case Num::kMalformed: return false;
    }
    return false;
  }

  // Ignore validates an ignored value; its strings must stay within kMaxIgnoredStringLength.
  template <typename V>
  bool Ignore(std::string_view key, V& value, Kind kind) {
    std::size_t length = 0;
    if (!value.Skim(&length)) return false;
    if (kind == Kind::kString && length > kMaxIgnoredStringLength) {
      Fail(key, "too_long",
           "strings are limited to " + std::to_string(kMaxIgnoredStringLength) + " bytes");
    }
    return true;
  }

  template <typename V>
  bool WrongType(std::string_view key, V& value, Kind kind, const char* expected) {
    Fail(key, "wrong_type", std::string(key) + " must be " + expected + ", not " + KindName(kind));
    return value.Skim(nullptr);
  }

  const core::ReadingLimits& limits_;
  std::optional<core::Timestamp> now_;
  core::Reading reading_;
  bool has_device_id_ = false;
  bool has_ts_ = false;
  std::optional<core::FieldError> error_;
  std::size_t field_count_ = 0;
  std::array<std::string_view, kMaxFields> keys_;
};

// --- DOM engine --------------------------------------------------------------------------------

std::variant<core::Reading, DecodeError> DecodeDomObject(dom::object object,
                                                         const core::ReadingLimits& limits,
                                                         std::optional<core::Timestamp> now) {
  ReadingBuilder builder(limits, now);
  for (dom::key_value_pair kv : object) {
    DomValue v(kv.value);
    builder.Field(kv.key, v);  // cannot fail: the document is valid
  }
  return builder.Finish();
}

// DomFallback reports whether a DOM parse error may be a valid document with a number that DOM
// cannot represent, which the On-Demand engine decides.
bool DomFallback(simdjson::error_code e) {
  return e == simdjson::NUMBER_ERROR;
}

// --- On-Demand engine --------------------------------------------------------------------------

// AtEnd reports whether the whole document has been consumed (nothing trails the root value).
bool AtEnd(od::document& doc) { return doc.current_location().error() == simdjson::OUT_OF_BOUNDS; }

// DecodeOdObject decodes an object at nesting `level`; false when it is not valid JSON.
bool DecodeOdObject(od::object& object, int level, ReadingBuilder& builder) {
  for (auto field_result : object) {
    od::field field;
    std::string_view key;
    if (std::move(field_result).get(field) || field.unescaped_key().get(key)) return false;
    OdValue v(field.value(), level + 1);
    if (!builder.Field(key, v)) return false;
  }
  return true;
}

std::variant<core::Reading, DecodeError> DecodeOdDocument(od::parser& parser,
                                                          simdjson::padded_string_view input,
                                                          const core::ReadingLimits& limits,
                                                          std::optional<core::Timestamp> now) {
  od::document doc;
  if (parser.iterate(input).get(doc)) return Malformed("invalid JSON");
  od::object object;
  if (auto err = doc.get_object().get(object)) {
    return Malformed(err == simdjson::INCORRECT_TYPE ? "a reading must be a JSON object"
                                                     : "invalid JSON");
  }
  ReadingBuilder builder(limits, now);
  if (!DecodeOdObject(object, 1, builder) || !AtEnd(doc)) return Malformed("invalid JSON");
  return builder.Finish();
}

// --- Documents ---------------------------------------------------------------------------------

// DecodeDocument decodes one document lying at `data` in a padded buffer of `capacity` bytes.
std::variant<core::Reading, DecodeError> DecodeDocument(ThreadState& st, const char* data,
                                                        std::size_t size, std::size_t capacity,
                                                        const core::ReadingLimits& limits,
                                                        std::optional<core::Timestamp> now,
                                                        Engine engine) {
  if (engine != Engine::kOnDemand) {
    dom::element root;
    const auto err = st.dom_parser.parse(data, size, false).get(root);
    if (!err) {
      dom::object object;
      if (root.get_object().get(object)) return Malformed("a reading must be a JSON object");
      return DecodeDomObject(object, limits, now);
    }
    if (!DomFallback(err)) return Malformed("invalid JSON");
  }
  return DecodeOdDocument(st.od_parser, simdjson::padded_string_view(data, size, capacity), limits,
                          now);
}

std::variant<core::Reading, DecodeError> DecodeOne(std::string_view json,
                                                   const core::ReadingLimits& limits,
                                                   std::optional<core::Timestamp> now,
                                                   Engine engine) {
  auto& st = State();
  const std::size_t capacity = Prepare(st, json);
  return DecodeDocument(st, st.buffer.data(), json.size(), capacity, limits, now, engine);
}

// --- Batches -----------------------------------------------------------------------------------

BatchError TooMany(std::size_t max_items) {
  return BatchError{BatchError::kTooManyItems,
                    "a batch may hold at most " + std::to_string(max_items) + " readings"};
}

BatchError ArrayMalformed(simdjson::error_code err) {
  return BatchError{BatchError::kMalformed, err == simdjson::INCORRECT_TYPE
                                                ? "a batch must be a JSON array"
                                                : "invalid JSON"};
}

using BatchResult = std::variant<std::vector<BatchItem>, BatchError>;

BatchResult DecodeDomArray(dom::array array, const core::ReadingLimits& limits,
                           core::Timestamp now, std::size_t max_items) {
  if (array.size() > max_items) return TooMany(max_items);
  std::vector<BatchItem> items;
  items.reserve(array.size());
  for (dom::element e : array) {
    const std::size_t index = items.size();
    dom::object object;
    if (e.get_object().get(object)) {
      Kind kind;
      DomValue(e).Type(kind);
      items.push_back(BatchItem{index, NotAnObject(kind)});
    } else {
      items.emplace_back().index = index;
      items.back().result = DecodeDomObject(object, limits, now);
    }
  }
  return items;
}

BatchResult DecodeOdArray(od::parser& parser, simdjson::padded_string_view input,
                          const core::ReadingLimits& limits, core::Timestamp now,
                          std::size_t max_items) {
  od::document doc;
  if (auto err = parser.iterate(input).get(doc)) return ArrayMalformed(err);
  od::array array;
  if (auto err = doc.get_array().get(array)) return ArrayMalformed(err);
  std::vector<BatchItem> items;
  bool too_many = false;
  for (auto element : array) {
    od::value value;
    if (std::move(element).get(value)) return ArrayMalformed(simdjson::TAPE_ERROR);
    OdValue v(value, 2);
    if (items.size() == max_items) {
      // Like DOM, which validates the whole document first: a syntax error anywhere wins over
      // the item count, so the excess is validated (not decoded).
      too_many = true;
      if (!v.Skim(nullptr)) return ArrayMalformed(simdjson::TAPE_ERROR);
      continue;
    }
    const std::size_t index = items.size();
    Kind kind;
    if (!v.Type(kind)) return ArrayMalformed(simdjson::TAPE_ERROR);
    if (kind == Kind::kObject) {
      od::object object;
      ReadingBuilder builder(limits, now);
      if (value.get_object().get(object) || !DecodeOdObject(object, 2, builder)) {
        return ArrayMalformed(simdjson::TAPE_ERROR);
      }
      items.push_back(BatchItem{index, builder.Finish()});
    } else {
      if (!v.Skim(nullptr)) return ArrayMalformed(simdjson::TAPE_ERROR);
      items.push_back(BatchItem{index, NotAnObject(kind)});
    }
  }
  if (!AtEnd(doc)) return ArrayMalformed(simdjson::TAPE_ERROR);
  if (too_many) return TooMany(max_items);
  return items;
}

BatchResult DecodeArray(std::string_view body, const core::ReadingLimits& limits,
                        core::Timestamp now, std::size_t max_items, Engine engine) {
  auto& st = State();
  const std::size_t capacity = Prepare(st, body);
  BatchResult result = BatchError{BatchError::kMalformed, "invalid JSON"};
  bool decided = false;
  if (engine != Engine::kOnDemand) {
    dom::element root;
    const auto err = st.dom_parser.parse(st.buffer.data(), body.size(), false).get(root);
    if (!err) {
      dom::array array;
      if (root.get_array().get(array)) return ArrayMalformed(simdjson::INCORRECT_TYPE);
      result = DecodeDomArray(array, limits, now, max_items);
      decided = true;
    } else if (!DomFallback(err)) {
      return ArrayMalformed(err);
    }
  }
  if (!decided) {
    result = DecodeOdArray(st.od_parser,
                           simdjson::padded_string_view(st.buffer.data(), body.size(), capacity),
                           limits, now, max_items);
  }
  if (auto* items = std::get_if<std::vector<BatchItem>>(&result); items && items->empty()) {
    return BatchError{BatchError::kEmpty, "the batch holds no readings"};
  }
  return result;
}

bool IsBlank(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

BatchResult DecodeNdjson(std::string_view body, const core::ReadingLimits& limits,
                         core::Timestamp now, std::size_t max_items, Engine engine) {
  // First pass: count the items, so that an oversized batch is rejected before any decoding.
  std::size_t count = 0;
  for (std::size_t pos = 0; pos < body.size();) {
    std::size_t nl = body.find('\n', pos);
    if (nl == std::string_view::npos) nl = body.size();
    if (!IsBlank(body.substr(pos, nl - pos)) && ++count > max_items) return TooMany(max_items);
    pos = nl + 1;
  }
  if (count == 0) return BatchError{BatchError::kEmpty, "the batch holds no readings"};

  // Second pass: each line is parsed in place in one padded copy of the body; the bytes after a
  // line (its newline, the following lines, the padding) serve as its padding.
  auto& st = State();
  const std::size_t capacity = Prepare(st, body);
  std::vector<BatchItem> items;
  items.reserve(count);
  for (std::size_t pos = 0; pos < body.size();) {
    std::size_t nl = body.find('\n', pos);
    if (nl == std::string_view::npos) nl = body.size();
    const std::string_view line = body.substr(pos, nl - pos);
    if (!IsBlank(line)) {
      items.push_back(BatchItem{items.size(), DecodeDocument(st, st.buffer.data() + pos,
                                                             line.size(), capacity - pos, limits,
                                                             now, engine)});
    }
    pos = nl + 1;
  }
  return items;
}

}  // namespace

namespace internal {

std::variant<core::Reading, DecodeError> DecodeReadingWith(Engine engine, std::string_view json,
                                                           const core::ReadingLimits& limits,
                                                           std::optional<core::Timestamp> now) {
  return DecodeOne(json, limits, now, engine);
}

std::variant<std::vector<BatchItem>, BatchError> DecodeBatchWith(
    Engine engine, std::string_view body, BatchFormat format, const core::ReadingLimits& limits,
    core::Timestamp now, std::size_t max_items) {
  if (format == BatchFormat::kNdjson) return DecodeNdjson(body, limits, now, max_items, engine);
  return DecodeArray(body, limits, now, max_items, engine);
}

}  // namespace internal

std::variant<core::Reading, DecodeError> DecodeReading(std::string_view json,
                                                       const core::ReadingLimits& limits,
                                                       core::Timestamp now) {
  return DecodeOne(json, limits, now, Engine::kAuto);
}

std::variant<core::Reading, DecodeError> DecodeTimedReading(std::string_view json,
                                                            const core::ReadingLimits& limits) {
  return DecodeOne(json, limits, std::nullopt, Engine::kAuto);
}

std::variant<std::vector<BatchItem>, BatchError> DecodeBatch(std::string_view body,
                                                             BatchFormat format,
                                                             const core::ReadingLimits& limits,
                                                             core::Timestamp now,
                                                             std::size_t max_items) {
  return internal::DecodeBatchWith(Engine::kAuto, body, format, limits, now, max_items);
}

void WriteReadingFields(JsonWriter& w, const core::Reading& reading) {
  w.Key("device_id");
  w.String(reading.device_id);
  w.Key("ts");
  w.Time(reading.ts);
  for (const auto& s : reading.sensors) {
    w.Key(s.name);
    w.Double(s.value);
  }
  if (reading.lat) {
    w.Key("lat");
    w.Double(*reading.lat);
  }
  if (reading.lon) {
    w.Key("lon");
    w.Double(*reading.lon);
  }
}

void AppendReadingJson(std::string& out, const core::Reading& reading) {
  JsonWriter w(out);
  w.BeginObject();
  WriteReadingFields(w, reading);
  w.EndObject();
}

std::string EncodeReadingJson(const core::Reading& reading) {
  std::string out;
  out.reserve(64 + reading.device_id.size() + 24 * reading.sensors.size());
  AppendReadingJson(out, reading);
  return out;
}

}  // namespace iot::codec
