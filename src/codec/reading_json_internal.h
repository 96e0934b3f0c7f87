// reading_json_internal.h: engine selection for tests and the fuzzer. Not for product code.
//
// DecodeReading and DecodeBatch use simdjson's DOM parser and fall back to On-Demand for
// documents with numbers DOM cannot represent. These entry points force one engine so that tests
// and the fuzzer can check that both engines give the same answer for every input.
#pragma once

#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include "codec/reading_json.h"

namespace iot::codec::internal {

enum class Engine {
  kAuto,      // what DecodeReading / DecodeBatch do: DOM, On-Demand when DOM cannot decide
  kOnDemand,  // On-Demand only
};

// DecodeReadingWith is DecodeReading (`now` given) or DecodeTimedReading (`now` nullopt) with
// the chosen engine.
std::variant<core::Reading, DecodeError> DecodeReadingWith(Engine engine, std::string_view json,
                                                           const core::ReadingLimits& limits,
                                                           std::optional<core::Timestamp> now);

// DecodeBatchWith is DecodeBatch with the chosen engine.
std::variant<std::vector<BatchItem>, BatchError> DecodeBatchWith(
    Engine engine, std::string_view body, BatchFormat format, const core::ReadingLimits& limits,
    core::Timestamp now, std::size_t max_items);

}  // namespace iot::codec::internal
