// raw_chunk_test.cc: the raw chunk byte format and the chunk splitting rules.
#include "store/raw_chunk.h"

#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace iot::store::raw {
namespace {

constexpr std::int64_t kBase = 1'700'000'000'000'000;

StoredReading Reading(std::int64_t id, std::int64_t ts_us) {
  StoredReading r;
  r.id = core::MessageId{id};
  r.reading.device_id = "dev";
  r.reading.ts = core::FromUnixMicros(ts_us);
  r.reading.sensors = {{"temperature_c", 21.5}, {"humidity", 40.0}};
  return r;
}

std::vector<const StoredReading*> Pointers(const std::vector<StoredReading>& rs) {
  std::vector<const StoredReading*> out;
  for (const auto& r : rs) out.push_back(&r);
  return out;
}

// DecodeAll decodes every reading of `blob`, or returns the first error.
Result<std::vector<StoredReading>> DecodeAll(std::string_view blob) {
  auto dec = ChunkDecoder::Open(blob);
  if (!dec) return dec.error();
  std::vector<StoredReading> out;
  while (true) {
    auto more = dec->Next();
    if (!more) return more.error();
    if (!*more) return out;
    out.push_back(dec->Materialize("dev"));
  }
}

std::vector<std::size_t> RunSizes(const std::vector<std::span<const StoredReading* const>>& runs) {
  std::vector<std::size_t> out;
  for (auto r : runs) out.push_back(r.size());
  return out;
}

TEST(RawChunkTest, EncodeThenDecodeReturnsEveryFieldInOrder) {
  std::vector<StoredReading> rs;
  rs.push_back(Reading(1, kBase));
  rs.push_back(Reading(std::int64_t{7} << 40, kBase - 5));  // ids and ts may go backwards
  rs[1].reading.lat = -33.8688;
  rs[1].reading.lon = 151.2093;
  rs.push_back(Reading(3, -1));  // before 1970
  rs[2].reading.lon = 0.0;
  rs[2].reading.sensors = {{"z_last", -0.0}, {"a_first", 1e300}};
  rs.push_back(
      Reading(std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()));
  rs[3].reading.sensors.clear();
  // More distinct names than the encoder's linear dictionary holds.
  StoredReading many = Reading(5, kBase);
  many.reading.sensors.clear();
  for (int i = 0; i < 32; ++i) many.reading.sensors.push_back({"s" + std::to_string(i), i * 1.5});
  rs.push_back(many);

  std::string blob;
  auto ptrs = Pointers(rs);
  EncodeChunk(ptrs, blob);
  auto decoded = DecodeAll(blob);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, rs);
}

TEST(RawChunkTest, DecoderReportsCorruptionForEveryTruncation) {
  std::vector<StoredReading> rs = {Reading(1, kBase), Reading(2, kBase + 1000)};
  rs[0].reading.lat = 1.0;
  std::string blob;
  EncodeChunk(Pointers(rs), blob);
  for (std::size_t n = 0; n < blob.size(); ++n) {
    auto decoded = DecodeAll(std::string_view(blob).substr(0, n));
    ASSERT_FALSE(decoded.ok()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(decoded.error().code, Errc::kCorruption);
  }
}

TEST(RawChunkTest, DecoderRejectsTrailingBytesUnknownVersionAndBadNameIndex) {
  std::vector<StoredReading> rs = {Reading(1, kBase)};
  std::string blob;
  EncodeChunk(Pointers(rs), blob);
  EXPECT_FALSE(DecodeAll(blob + "x").ok());
  std::string other_version = blob;
  other_version[0] = 2;
  EXPECT_FALSE(DecodeAll(other_version).ok());
  // version 1, one reading, a one-name dictionary, then a reading naming index 5.
  std::string bad = std::string("\x01\x01\x01\x01t", 5) + std::string("\x02\x02\x00\x01\x05", 5) +
                    std::string(8, '\0');
  auto decoded = DecodeAll(bad);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, Errc::kCorruption);
}

TEST(RawChunkTest, DecoderSurvivesCorruptedBytes) {
  // Flipped bytes must give an error or some readings, never a read out of bounds (run under
  // the asan preset) or an allocation sized by garbage.
  std::vector<StoredReading> rs = {Reading(1, kBase), Reading(2, kBase + 7), Reading(3, kBase)};
  rs[1].reading.lat = 3.5;
  std::string blob;
  EncodeChunk(Pointers(rs), blob);
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bad = blob;
    for (int k = 0; k < 3; ++k) {
      bad[rng() % bad.size()] = static_cast<char>(rng());
    }
    auto decoded = DecodeAll(bad);
    if (!decoded.ok()) {
      ++errors;
      EXPECT_EQ(decoded.error().code, Errc::kCorruption);
    } else {
      EXPECT_LE(decoded->size(), bad.size());
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(RawChunkTest, SingleReadingRoundTripsWithItsDeviceId) {
  core::Reading r = Reading(0, kBase).reading;
  r.device_id = "a.b:c@d~e-f_g";
  r.lat = 45;
  auto back = DecodeReading(EncodeReading(r), r.device_id);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, r);
}

TEST(RawChunkTest, SpanClassIsTheBitWidthOfTheSpan) {
  EXPECT_EQ(SpanClass(kBase, kBase), 0);
  EXPECT_EQ(SpanClass(kBase, kBase + 1), 1);
  EXPECT_EQ(SpanClass(kBase, kBase + 3), 2);
  EXPECT_EQ(SpanClass(kBase, kBase + 4), 3);
  EXPECT_EQ(SpanClass(kBase, kBase + kMaxChunkSpanUs), 32);
  EXPECT_EQ(
      SpanClass(std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()),
      64);
}

TEST(RawChunkTest, RegularReadingsStayInOneChunk) {
  std::vector<StoredReading> rs;
  for (int i = 0; i < 100; ++i) rs.push_back(Reading(i, kBase + i * 5'000'000LL));  // every 5 s
  auto ptrs = Pointers(rs);
  EXPECT_EQ(RunSizes(SplitIntoChunks(ptrs)), (std::vector<std::size_t>{100}));
}

TEST(RawChunkTest, ALateReadingGetsAChunkOfItsOwn) {
  std::vector<StoredReading> rs;
  rs.push_back(Reading(99, kBase - 3'600'000'000LL));  // an hour late, sorted first
  for (int i = 0; i < 50; ++i) rs.push_back(Reading(i, kBase + i * 10'000LL));
  auto ptrs = Pointers(rs);
  auto runs = SplitIntoChunks(ptrs);
  EXPECT_EQ(RunSizes(runs), (std::vector<std::size_t>{1, 50}));
  EXPECT_EQ(SpanClass(core::ToUnixMicros(runs[0].front()->reading.ts),
                      core::ToUnixMicros(runs[0].back()->reading.ts)),
            0);
}

TEST(RawChunkTest, ChunksAreCappedInSizeAndSpan) {
  std::vector<StoredReading> dense;
  for (int i = 0; i < 3000; ++i) dense.push_back(Reading(i, kBase + i));
  auto dense_ptrs = Pointers(dense);
  EXPECT_EQ(RunSizes(SplitIntoChunks(dense_ptrs)),
            (std::vector<std::size_t>{kMaxChunkReadings, kMaxChunkReadings,
                                      3000 - 2 * kMaxChunkReadings}));

  // Readings 10 minutes apart are regular (no gap cut) but would span hours.
  std::vector<StoredReading> sparse;
  for (int i = 0; i < 20; ++i) sparse.push_back(Reading(i, kBase + i * 600'000'000LL));
  auto sparse_ptrs = Pointers(sparse);
  auto runs = SplitIntoChunks(sparse_ptrs);
  std::size_t total = 0;
  for (auto run : runs) {
    total += run.size();
    EXPECT_LE(
        core::ToUnixMicros(run.back()->reading.ts) - core::ToUnixMicros(run.front()->reading.ts),
        kMaxChunkSpanUs);
  }
  EXPECT_EQ(total, 20u);
  EXPECT_GT(runs.size(), 1u);
}

TEST(RawChunkTest, EmptyInputHasNoChunks) { EXPECT_TRUE(SplitIntoChunks({}).empty()); }

}  // namespace
}  // namespace iot::store::raw
