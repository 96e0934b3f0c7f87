// frame_codec.cc: see frame_codec.h.
#include "bus/frame_codec.h"

#include <cstdint>

namespace iot::bus {
namespace {

std::size_t VarintSize(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void AppendVarint(std::string& out, std::uint64_t v) {
  char buf[10];
  std::size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

// ReadVarint decodes a varint at `pos`; false when it is truncated or longer than 64 bits.
bool ReadVarint(std::string_view data, std::size_t& pos, std::uint64_t& v) {
  v = 0;
  for (unsigned shift = 0; shift < 64 && pos < data.size(); shift += 7) {
    auto byte = static_cast<unsigned char>(data[pos++]);
    v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

std::size_t EncodedEntrySize(std::string_view key, std::string_view payload) {
  return VarintSize(key.size()) + VarintSize(payload.size()) + key.size() + payload.size();
}

void AppendEntry(std::string& out, std::string_view key, std::string_view payload) {
  AppendVarint(out, key.size());
  AppendVarint(out, payload.size());
  out.append(key);
  out.append(payload);
}

FrameReader::Step FrameReader::Next(std::string_view& key, std::string_view& payload) {
  if (pos_ >= data_.size()) return Step::kEnd;
  std::size_t p = pos_;
  std::uint64_t key_size = 0;
  std::uint64_t payload_size = 0;
  if (!ReadVarint(data_, p, key_size) || !ReadVarint(data_, p, payload_size)) {
    return Step::kCorrupt;
  }
  std::size_t left = data_.size() - p;
  if (key_size > left || payload_size > left - key_size) return Step::kCorrupt;
  key = data_.substr(p, key_size);
  payload = data_.substr(p + key_size, payload_size);
  pos_ = p + key_size + payload_size;
  return Step::kEntry;
}

}  // namespace iot::bus
