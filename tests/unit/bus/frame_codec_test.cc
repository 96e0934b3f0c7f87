// frame_codec_test.cc: the entry encoding inside one frame of the embedded bus.
#include "bus/frame_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace iot::bus {
namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

Entries ReadAll(std::string_view data, FrameReader::Step* last = nullptr) {
  FrameReader reader(data);
  Entries out;
  std::string_view key;
  std::string_view payload;
  FrameReader::Step step;
  while ((step = reader.Next(key, payload)) == FrameReader::Step::kEntry) {
    out.emplace_back(key, payload);
  }
  if (last != nullptr) *last = step;
  return out;
}

TEST(FrameCodecTest, EntriesRoundTripInOrder) {
  const Entries entries = {
      {"dev-1", "{\"t\":1}"},
      {"", ""},                                      // both empty
      {"k", std::string(300, 'p')},                  // payload size needs a two-byte varint
      {std::string(20000, 'k'), std::string(70000, 'x')},  // three-byte varints
  };
  std::string data;
  std::size_t expected_size = 0;
  for (const auto& [k, p] : entries) {
    AppendEntry(data, k, p);
    expected_size += EncodedEntrySize(k, p);
  }
  EXPECT_EQ(data.size(), expected_size);
  FrameReader::Step last;
  EXPECT_EQ(ReadAll(data, &last), entries);
  EXPECT_EQ(last, FrameReader::Step::kEnd);
}

TEST(FrameCodecTest, ReaderResumesFromAPosition) {
  std::string data;
  AppendEntry(data, "a", "1");
  AppendEntry(data, "b", "2");
  FrameReader first(data);
  std::string_view key;
  std::string_view payload;
  ASSERT_EQ(first.Next(key, payload), FrameReader::Step::kEntry);
  FrameReader second(data, first.position());
  ASSERT_EQ(second.Next(key, payload), FrameReader::Step::kEntry);
  EXPECT_EQ(key, "b");
  EXPECT_EQ(payload, "2");
  EXPECT_EQ(second.Next(key, payload), FrameReader::Step::kEnd);
}

TEST(FrameCodecTest, TruncatedEntryIsCorrupt) {
  std::string data;
  AppendEntry(data, "device", "payload");
  for (std::size_t cut = 1; cut < data.size(); ++cut) {
    FrameReader::Step last;
    EXPECT_TRUE(ReadAll(std::string_view(data).substr(0, cut), &last).empty()) << cut;
    EXPECT_EQ(last, FrameReader::Step::kCorrupt) << cut;
  }
}

TEST(FrameCodecTest, OverlongVarintIsCorrupt) {
  const std::string data(11, '\xff');
  FrameReader::Step last;
  EXPECT_TRUE(ReadAll(data, &last).empty());
  EXPECT_EQ(last, FrameReader::Step::kCorrupt);
}

TEST(FrameCodecTest, LengthBeyondTheDataIsCorruptAndLeavesThePosition) {
  std::string data;
  AppendEntry(data, "a", "b");
  data += '\x05';  // key size 5
  data += '\x7f';  // payload size 127, but nothing follows
  FrameReader reader(data);
  std::string_view key;
  std::string_view payload;
  ASSERT_EQ(reader.Next(key, payload), FrameReader::Step::kEntry);
  const std::size_t position = reader.position();
  EXPECT_EQ(reader.Next(key, payload), FrameReader::Step::kCorrupt);
  EXPECT_EQ(reader.position(), position);
}

}  // namespace
}  // namespace iot::bus
