// reading_fuzz.cc: libFuzzer target for the reading codec.
//
// Feeds arbitrary bytes to DecodeReading, DecodeBatch (JSON array and NDJSON) and DecodePayload
// and checks, beyond "no crash, no over-read, no UB":
//   - the DOM and On-Demand engines agree on every input (differential check);
//   - whatever decodes re-encodes (canonical JSON, wire) to an equal reading.
// A violated property aborts, which libFuzzer reports with the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "codec/reading_json.h"
#include "codec/reading_json_internal.h"
#include "codec/wire.h"

namespace {

using iot::codec::BatchFormat;
using iot::codec::DecodeError;
using iot::codec::internal::Engine;
using iot::core::Reading;

const iot::core::Timestamp kNow = iot::core::FromUnixMicros(1'714'564'800'000'000);

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

bool SameError(const DecodeError& a, const DecodeError& b) {
  return a.malformed == b.malformed && a.error.field == b.error.field &&
         a.error.code == b.error.code;
}

bool Same(const std::variant<Reading, DecodeError>& a, const std::variant<Reading, DecodeError>& b) {
  if (a.index() != b.index()) return false;
  if (a.index() == 0) return std::get<0>(a) == std::get<0>(b);
  return SameError(std::get<1>(a), std::get<1>(b));
}

// CheckRoundTrips verifies that a decoded reading survives both encodings unchanged.
void CheckRoundTrips(const Reading& r) {
  auto wire = iot::codec::DecodePayload(iot::codec::EncodeWire(r));
  Check(wire.ok() && *wire == r, "wire round trip");
  auto json = iot::codec::DecodeTimedReading(iot::codec::EncodeReadingJson(r),
                                             iot::codec::WireLimits());
  Check(json.index() == 0 && std::get<0>(json) == r, "JSON round trip");
}

void FuzzReading(std::string_view input) {
  const iot::core::ReadingLimits limits;
  auto a = iot::codec::internal::DecodeReadingWith(Engine::kAuto, input, limits, kNow);
  auto b = iot::codec::internal::DecodeReadingWith(Engine::kOnDemand, input, limits, kNow);
  Check(Same(a, b), "engines agree on DecodeReading");
  if (a.index() == 0) CheckRoundTrips(std::get<0>(a));
}

void FuzzBatch(std::string_view input, BatchFormat format) {
  const iot::core::ReadingLimits limits;
  auto a = iot::codec::internal::DecodeBatchWith(Engine::kAuto, input, format, limits, kNow, 50);
  auto b =
      iot::codec::internal::DecodeBatchWith(Engine::kOnDemand, input, format, limits, kNow, 50);
  Check(a.index() == b.index(), "engines agree on batch acceptance");
  if (a.index() == 1) {
    Check(std::get<1>(a).kind == std::get<1>(b).kind, "engines agree on the batch error");
    return;
  }
  const auto& ia = std::get<0>(a);
  const auto& ib = std::get<0>(b);
  Check(ia.size() == ib.size() && !ia.empty() && ia.size() <= 50, "batch sizes");
  for (std::size_t i = 0; i < ia.size(); ++i) {
    Check(ia[i].index == i && ib[i].index == i, "batch indexes");
    Check(Same(ia[i].result, ib[i].result), "engines agree on batch items");
  }
}

void FuzzPayload(std::string_view input) {
  auto r = iot::codec::DecodePayload(input);
  if (r.ok()) CheckRoundTrips(*r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  FuzzReading(input);
  FuzzBatch(input, BatchFormat::kJsonArray);
  FuzzBatch(input, BatchFormat::kNdjson);
  FuzzPayload(input);
  return 0;
}
