#include "store/raw_chunk.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

namespace iot::store::raw {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the chunk format stores doubles in host order; add byte swaps for big-endian hosts");

constexpr std::uint8_t kVersion = 1;
constexpr std::uint8_t kHasLat = 1;
constexpr std::uint8_t kHasLon = 2;

// Distance returns b - a for a <= b without signed overflow.
std::uint64_t Distance(std::int64_t a, std::int64_t b) {
  return static_cast<std::uint64_t>(b) - static_cast<std::uint64_t>(a);
}

void PutVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(static_cast<std::uint8_t>(v) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutZigzag(std::string& out, std::int64_t v) {
  auto u = static_cast<std::uint64_t>(v);
  PutVarint(out, (u << 1) ^ static_cast<std::uint64_t>(v >> 63));
}

// PutDelta encodes cur - prev with wrap-around arithmetic, which decodes exactly.
void PutDelta(std::string& out, std::int64_t prev, std::int64_t cur) {
  PutZigzag(out, static_cast<std::int64_t>(static_cast<std::uint64_t>(cur) -
                                           static_cast<std::uint64_t>(prev)));
}

void PutDouble(std::string& out, double v) {
  char buf[sizeof v];
  std::memcpy(buf, &v, sizeof v);
  out.append(buf, sizeof v);
}

// Reader is a bounds-checked cursor over the blob; every Get returns false when out of bytes.
struct Reader {
  std::string_view s;
  std::size_t& pos;

  bool GetVarint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= s.size()) return false;
      auto b = static_cast<std::uint8_t>(s[pos++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool GetDelta(std::int64_t prev, std::int64_t& cur) {
    std::uint64_t u;
    if (!GetVarint(u)) return false;
    auto delta = (u >> 1) ^ (~(u & 1) + 1);  // zigzag decode, as unsigned
    cur = static_cast<std::int64_t>(static_cast<std::uint64_t>(prev) + delta);
    return true;
  }
  bool GetByte(std::uint8_t& b) {
    if (pos >= s.size()) return false;
    b = static_cast<std::uint8_t>(s[pos++]);
    return true;
  }
  bool GetDouble(double& v) {
    if (s.size() - pos < sizeof v) return false;
    std::memcpy(&v, s.data() + pos, sizeof v);
    pos += sizeof v;
    return true;
  }
};

Error Corrupt(const char* what) {
  return MakeError(Errc::kCorruption, std::string("raw chunk: ") + what);
}

// Dictionary assigns indexes to sensor names in order of first appearance.
class Dictionary {
 public:
  std::uint32_t IndexOf(std::string_view name) {
    if (map_.empty()) {
      for (std::size_t i = 0; i < names_.size(); ++i) {
        if (names_[i] == name) return static_cast<std::uint32_t>(i);
      }
      if (names_.size() < kLinearLimit) return Add(name);
      for (std::size_t i = 0; i < names_.size(); ++i) {
        map_.emplace(names_[i], static_cast<std::uint32_t>(i));
      }
    }
    auto it = map_.find(name);
    if (it != map_.end()) return it->second;
    map_.emplace(name, static_cast<std::uint32_t>(names_.size()));
    return Add(name);
  }
  const std::vector<std::string_view>& names() const { return names_; }

 private:
  static constexpr std::size_t kLinearLimit = 16;
  std::uint32_t Add(std::string_view name) {
    names_.push_back(name);
    return static_cast<std::uint32_t>(names_.size() - 1);
  }
  std::vector<std::string_view> names_;
  std::unordered_map<std::string_view, std::uint32_t> map_;
};

}  // namespace

int SpanClass(std::int64_t min_ts, std::int64_t max_ts) {
  return static_cast<int>(std::bit_width(Distance(min_ts, max_ts)));
}

std::vector<std::span<const StoredReading* const>> SplitIntoChunks(
    std::span<const StoredReading* const> sorted) {
  std::vector<std::span<const StoredReading* const>> runs;
  const std::size_t n = sorted.size();
  if (n == 0) return runs;
  auto ts = [&](std::size_t i) { return core::ToUnixMicros(sorted[i]->reading.ts); };

  std::uint64_t threshold = kMinSplitGapUs;
  if (n >= 3) {
    std::vector<std::uint64_t> gaps(n - 1);
    for (std::size_t i = 1; i < n; ++i) gaps[i - 1] = Distance(ts(i - 1), ts(i));
    auto mid = gaps.begin() + static_cast<std::ptrdiff_t>(gaps.size() / 2);
    std::nth_element(gaps.begin(), mid, gaps.end());
    std::uint64_t median = *mid;
    if (median > threshold / kGapFactor) {
      threshold = median > UINT64_MAX / kGapFactor ? UINT64_MAX : median * kGapFactor;
    }
  }

  std::size_t start = 0;
  for (std::size_t i = 1; i < n; ++i) {
    bool cut = i - start >= kMaxChunkReadings || Distance(ts(i - 1), ts(i)) > threshold ||
               Distance(ts(start), ts(i)) > static_cast<std::uint64_t>(kMaxChunkSpanUs);
    if (cut) {
      runs.push_back(sorted.subspan(start, i - start));
      start = i;
    }
  }
  runs.push_back(sorted.subspan(start));
  return runs;
}

void EncodeChunk(std::span<const StoredReading* const> readings, std::string& out) {
  Dictionary dict;
  for (const StoredReading* r : readings) {
    for (const auto& s : r->reading.sensors) dict.IndexOf(s.name);
  }
  out.push_back(static_cast<char>(kVersion));
  PutVarint(out, readings.size());
  PutVarint(out, dict.names().size());
  for (std::string_view name : dict.names()) {
    PutVarint(out, name.size());
    out.append(name);
  }
  std::int64_t prev_id = 0;
  std::int64_t prev_ts = 0;
  for (const StoredReading* r : readings) {
    const core::Reading& reading = r->reading;
    std::int64_t ts = core::ToUnixMicros(reading.ts);
    PutDelta(out, prev_id, r->id.value);
    PutDelta(out, prev_ts, ts);
    prev_id = r->id.value;
    prev_ts = ts;
    std::uint8_t flags = (reading.lat ? kHasLat : 0) | (reading.lon ? kHasLon : 0);
    out.push_back(static_cast<char>(flags));
    if (reading.lat) PutDouble(out, *reading.lat);
    if (reading.lon) PutDouble(out, *reading.lon);
    PutVarint(out, reading.sensors.size());
    for (const auto& s : reading.sensors) {
      PutVarint(out, dict.IndexOf(s.name));
      PutDouble(out, s.value);
    }
  }
}

std::string EncodeReading(const core::Reading& reading) {
  StoredReading stored{core::MessageId{0}, reading};
  const StoredReading* one = &stored;
  std::string out;
  EncodeChunk(std::span<const StoredReading* const>(&one, 1), out);
  return out;
}

Result<core::Reading> DecodeReading(std::string_view blob, std::string_view device_id) {
  auto dec = ChunkDecoder::Open(blob);
  if (!dec) return dec.error();
  if (dec->size() != 1) return Corrupt("a single reading was expected");
  auto more = dec->Next();
  if (!more) return more.error();
  if (!*more) return Corrupt("missing reading");
  return std::move(dec->Materialize(device_id).reading);
}

Result<ChunkDecoder> ChunkDecoder::Open(std::string_view blob) {
  ChunkDecoder d(blob);
  Reader in{blob, d.pos_};
  std::uint8_t version;
  if (!in.GetByte(version)) return Corrupt("empty");
  if (version != kVersion) return Corrupt("unknown version");
  std::uint64_t n, dict_size;
  if (!in.GetVarint(n) || !in.GetVarint(dict_size)) return Corrupt("truncated header");
  // Every reading takes at least 4 bytes and every name at least 1: reject absurd counts before
  // reserving anything.
  if (n > blob.size() || dict_size > blob.size()) return Corrupt("counts exceed the blob");
  d.n_ = static_cast<std::size_t>(n);
  d.dict_.reserve(static_cast<std::size_t>(dict_size));
  for (std::uint64_t i = 0; i < dict_size; ++i) {
    std::uint64_t len;
    if (!in.GetVarint(len) || len > blob.size() - d.pos_) return Corrupt("truncated dictionary");
    d.dict_.push_back(blob.substr(d.pos_, static_cast<std::size_t>(len)));
    d.pos_ += static_cast<std::size_t>(len);
  }
  return d;
}

Result<bool> ChunkDecoder::Next() {
  if (done_ == n_) {
    if (pos_ != blob_.size()) return Corrupt("trailing bytes");
    return false;
  }
  Reader in{blob_, pos_};
  std::uint8_t flags;
  std::uint64_t m;
  if (!in.GetDelta(id_, id_) || !in.GetDelta(ts_, ts_) || !in.GetByte(flags)) {
    return Corrupt("truncated reading");
  }
  double v;
  lat_.reset();
  lon_.reset();
  if (flags & kHasLat) {
    if (!in.GetDouble(v)) return Corrupt("truncated lat");
    lat_ = v;
  }
  if (flags & kHasLon) {
    if (!in.GetDouble(v)) return Corrupt("truncated lon");
    lon_ = v;
  }
  if ((flags & ~(kHasLat | kHasLon)) != 0) return Corrupt("unknown flags");
  if (!in.GetVarint(m) || m > blob_.size() - pos_) return Corrupt("truncated sensors");
  sensors_.clear();
  for (std::uint64_t i = 0; i < m; ++i) {
    std::uint64_t index;
    if (!in.GetVarint(index) || !in.GetDouble(v)) return Corrupt("truncated sensor");
    if (index >= dict_.size()) return Corrupt("sensor index out of range");
    sensors_.emplace_back(static_cast<std::uint32_t>(index), v);
  }
  ++done_;
  return true;
}

StoredReading ChunkDecoder::Materialize(std::string_view device_id) const {
  StoredReading r;
  r.id = core::MessageId{id_};
  r.reading.device_id = std::string(device_id);
  r.reading.ts = core::FromUnixMicros(ts_);
  r.reading.lat = lat_;
  r.reading.lon = lon_;
  r.reading.sensors.reserve(sensors_.size());
  for (const auto& [index, value] : sensors_) {
    r.reading.sensors.push_back(core::SensorValue{std::string(dict_[index]), value});
  }
  return r;
}

}  // namespace iot::store::raw
