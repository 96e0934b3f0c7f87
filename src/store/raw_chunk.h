// raw_chunk.h: the compact binary encoding of one device's raw readings, as stored by SqliteStore.
//
// SqliteStore does not keep one row per reading: each Apply writes, per device, one or a few
// "chunks", each holding that device's readings of the batch in one BLOB. This header has the
// pure parts of that design, testable without SQLite:
//
//   - SplitIntoChunks decides where a device's readings (sorted by (ts, id)) are cut into chunks,
//     so that a chunk never spans too much time (late readings get a chunk of their own);
//   - SpanClass classifies a chunk by its time span, which keeps newest-first scans cheap when
//     chunks overlap in time (see sqlite_store.cc, Telemetry);
//   - EncodeChunk / ChunkDecoder are the byte format.
//
//   std::vector<const StoredReading*> sorted = ...;      // one device, ascending (ts, id)
//   for (auto run : SplitIntoChunks(sorted)) { std::string blob; EncodeChunk(run, blob); ... }
//   auto dec = ChunkDecoder::Open(blob);                  // Result<ChunkDecoder>
//   while (true) { auto more = dec->Next(); if (!more) ...corrupt...; if (!*more) break;
//                  if (dec->ts() >= from) items.push_back(dec->Materialize("dev-1")); }
//
// Format (version 1), all integers little-endian; "varint" is LEB128, "zigzag" maps signed to
// unsigned as (v << 1) ^ (v >> 63):
//
//   u8 version = 1 | varint n | varint d | d x (varint len, len bytes: a sensor name)
//   n x reading:  zigzag varint (id - previous id)   (previous id of the first reading: 0)
//                 zigzag varint (ts - previous ts)   (microseconds; previous of the first: 0)
//                 u8 flags (bit 0: lat present, bit 1: lon present)
//                 [f64 lat] [f64 lon]
//                 varint m | m x (varint name index into the dictionary, f64 value)
//
// The device id is not stored in the chunk (the row knows its device). Sensor order within a
// reading is preserved.
//
// Thread-safety: free functions are pure; a ChunkDecoder is used by one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace iot::store::raw {

// kMaxChunkReadings bounds the readings of one chunk, so that a query never decodes much more
// than it returns.
inline constexpr std::size_t kMaxChunkReadings = 1024;
// kMaxChunkSpanUs bounds max_ts - min_ts of a chunk (about 71 minutes), so that SpanClass <= 32.
inline constexpr std::int64_t kMaxChunkSpanUs = (std::int64_t{1} << 32) - 1;
// kMinSplitGapUs: a gap between consecutive readings of a chunk never exceeds
// max(kMinSplitGapUs, kGapFactor * the median gap of the run); longer gaps start a new chunk.
inline constexpr std::int64_t kMinSplitGapUs = 1'000'000;
inline constexpr std::int64_t kGapFactor = 16;

// SpanClass returns the bit width of (max_ts - min_ts): a chunk of class c spans less than 2^c
// microseconds. Requires min_ts <= max_ts; classes are in [0, 64].
int SpanClass(std::int64_t min_ts, std::int64_t max_ts);

// SplitIntoChunks cuts `sorted` (one device's readings in ascending (ts, id) order) into
// consecutive runs that respect kMaxChunkReadings, kMaxChunkSpanUs and the gap rule above. The
// runs cover `sorted` exactly, in order.
std::vector<std::span<const StoredReading* const>> SplitIntoChunks(
    std::span<const StoredReading* const> sorted);

// EncodeChunk appends the encoding of `readings` (any order; callers pass ascending (ts, id)) to
// `out`. Device ids are not encoded.
void EncodeChunk(std::span<const StoredReading* const> readings, std::string& out);

// EncodeReading encodes a single reading (with id 0), e.g. a device's latest reading.
std::string EncodeReading(const core::Reading& reading);

// DecodeReading decodes what EncodeReading produced; `device_id` fills Reading::device_id.
Result<core::Reading> DecodeReading(std::string_view blob, std::string_view device_id);

// ChunkDecoder walks the readings of one encoded chunk without allocating per reading: Next
// decodes the id and ts (and the rest into reused buffers), Materialize builds the full reading.
// The decoder refers to the blob, which must outlive it.
class ChunkDecoder {
 public:
  // Open validates the header and dictionary; kCorruption when they are malformed.
  static Result<ChunkDecoder> Open(std::string_view blob);

  // size is the number of readings the chunk declares.
  std::size_t size() const { return n_; }

  // Next advances to the next reading: true when there is one, false at the end, kCorruption
  // when the bytes are malformed (truncated, bad index, trailing garbage).
  Result<bool> Next();

  // id and ts of the current reading (valid after Next returned true).
  std::int64_t id() const { return id_; }
  std::int64_t ts() const { return ts_; }

  // Materialize returns the current reading as a StoredReading of device `device_id`.
  StoredReading Materialize(std::string_view device_id) const;

 private:
  explicit ChunkDecoder(std::string_view blob) : blob_(blob) {}

  std::string_view blob_;
  std::size_t pos_ = 0;
  std::size_t n_ = 0;
  std::size_t done_ = 0;
  std::vector<std::string_view> dict_;
  std::int64_t id_ = 0;
  std::int64_t ts_ = 0;
  std::optional<double> lat_;
  std::optional<double> lon_;
  std::vector<std::pair<std::uint32_t, double>> sensors_;
};

}  // namespace iot::store::raw
