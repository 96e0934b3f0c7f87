// reading_json.h: the JSON form of a reading, as devices send it and as the store shows it.
//
// A device posts one JSON object per reading:
//
//   {"device_id": "dev-1", "ts": "2024-05-01T12:00:00Z", "temperature_c": 21.5, "humidity": 40,
//    "lat": 52.1, "lon": 4.3}
//
// `device_id` is required, `ts` (ISO 8601) defaults to the time of receipt, `lat`/`lon` are
// optional, and every other field with a numeric value is a sensor named after the field (in the
// order sent). String, boolean and null values of other fields are ignored (the seed's pydantic
// model ignored unknown fields), as are the fields "id" and "_id"; `null` for ts, lat or lon means
// "absent". Decoding is strict about everything else: one object, no duplicate keys, at most
// kMaxFields fields, values of the expected JSON type, finite numbers, then
// core::ValidateReading.
//
//   auto r = DecodeReading(body, limits, clock.Now());
//   if (auto* e = std::get_if<DecodeError>(&r)) return e->malformed ? 400 : 422;
//
// Batches are a JSON array of such objects or NDJSON (one object per line). Decoding uses a
// simdjson parser per thread; every function here is safe to call from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "codec/json_writer.h"
#include "core/reading.h"
#include "core/time.h"

namespace iot::codec {

// kReadingField is the FieldError::field of errors about a reading as a whole (malformed JSON, not
// an object, too many fields).
inline constexpr std::string_view kReadingField = "reading";
// kMaxFields bounds the number of top-level fields of a reading object.
inline constexpr std::size_t kMaxFields = 64;
// kMaxIgnoredStringLength bounds the (unescaped) length of strings in ignored fields.
inline constexpr std::size_t kMaxIgnoredStringLength = 1024;

// DecodeError is why a document is not a valid reading. `malformed` is true when the document is
// not JSON or not a JSON object (HTTP 400) and false when it is an object that breaks the schema
// (HTTP 422). Field-level codes, in addition to those of core::ValidateReading:
//   "invalid_json" (field kReadingField, malformed = true), "missing" (device_id absent),
//   "wrong_type" (device_id not a string, ts not a string, lat/lon
//   not a number, a batch element that is not an object), "invalid_format" (ts not ISO 8601),
//   "not_finite" (a number too large for a double, such as 1e400), "unsupported_type" (an object
//   or array as a sensor value), "duplicate_field", "too_many_fields" (more than kMaxFields),
//   "too_long" (an ignored string longer than kMaxIgnoredStringLength).
struct DecodeError {
  bool malformed = false;
  core::FieldError error;
};

// DecodeReading decodes and validates one reading. `now` is the time of receipt: the default ts
// and the reference for limits.max_future. The first error in document order is reported, but a
// document that is not valid JSON anywhere is always reported as malformed.
std::variant<core::Reading, DecodeError> DecodeReading(std::string_view json,
                                                       const core::ReadingLimits& limits,
                                                       core::Timestamp now);

// DecodeTimedReading decodes a reading that must carry its own ts (a bus payload, a stored
// document): like DecodeReading, but a missing ts is a "missing" error and no future bound
// applies (limits.max_future is ignored).
std::variant<core::Reading, DecodeError> DecodeTimedReading(std::string_view json,
                                                            const core::ReadingLimits& limits);

// BatchItem is the outcome for the element or line at `index` (0-based, counting only items, not
// blank lines).
struct BatchItem {
  std::size_t index = 0;
  std::variant<core::Reading, DecodeError> result;
};

enum class BatchFormat { kJsonArray, kNdjson };

// BatchError is why a batch as a whole is rejected.
struct BatchError {
  enum Kind {
    kMalformed,     // a JSON array body that is not a valid JSON array
    kTooManyItems,  // more than max_items elements or non-blank lines
    kEmpty,         // an empty array, or no non-blank line
  } kind;
  std::string message;
};

// DecodeBatch decodes a batch of readings. kJsonArray: the body must be one valid JSON array (else
// kMalformed); each element is decoded like DecodeReading, a non-object element gives that item a
// "wrong_type" error; a syntax error anywhere in the array wins over the item count.
// kNdjson: every non-blank line (blank: only spaces, tabs, CR) is decoded with DecodeReading, so a
// malformed line fails only its item. Items come back in input order. More than `max_items` items
// is kTooManyItems, detected before the excess is decoded.
std::variant<std::vector<BatchItem>, BatchError> DecodeBatch(std::string_view body,
                                                             BatchFormat format,
                                                             const core::ReadingLimits& limits,
                                                             core::Timestamp now,
                                                             std::size_t max_items);

// EncodeReadingJson renders a reading in canonical form:
// {"device_id":..,"ts":"<ISO 8601>",<sensors in order>,"lat":..,"lon":..} (lat/lon only when
// present). DecodeReading of the result yields the same reading.
std::string EncodeReadingJson(const core::Reading& reading);

// AppendReadingJson appends the canonical form of `reading` to `out`.
void AppendReadingJson(std::string& out, const core::Reading& reading);

// WriteReadingFields writes the canonical fields of `reading` (device_id, ts, the sensors in
// order, lat and lon when present) into the object `w` has open.
void WriteReadingFields(JsonWriter& w, const core::Reading& reading);

}  // namespace iot::codec
