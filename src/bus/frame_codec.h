// frame_codec.h: how the embedded bus packs messages into one stored frame.
//
// A frame is one row of the bus log holding `count` consecutive messages. Its data is the
// concatenation of one entry per message:
//
//   entry = varint(key size) varint(payload size) key payload     (varint: unsigned LEB128)
//
// Entries carry no offset: the i-th entry of the frame with base offset B has offset B + i.
//
//   std::string data;
//   AppendEntry(data, "dev-1", payload);
//   FrameReader reader(data);
//   std::string_view key, value;
//   while (reader.Next(key, value) == FrameReader::Step::kEntry) { ... }
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace iot::bus {

// EncodedEntrySize is the number of bytes AppendEntry adds for this key and payload.
std::size_t EncodedEntrySize(std::string_view key, std::string_view payload);

// AppendEntry appends the entry of one message to `out`.
void AppendEntry(std::string& out, std::string_view key, std::string_view payload);

// FrameReader walks the entries of a frame's data in order. It does not own the data.
class FrameReader {
 public:
  enum class Step { kEntry, kEnd, kCorrupt };

  explicit FrameReader(std::string_view data, std::size_t position = 0)
      : data_(data), pos_(position) {}

  // Next reads the entry at the current position into `key` and `payload` (views into the
  // data) and moves past it. Returns kEnd at the end of the data and kCorrupt when the entry is
  // truncated or its lengths are malformed; after kCorrupt the position is unchanged.
  Step Next(std::string_view& key, std::string_view& payload);

  // position is the byte offset of the next entry.
  std::size_t position() const { return pos_; }

 private:
  std::string_view data_;
  std::size_t pos_;
};

}  // namespace iot::bus
