// wire.cc: see wire.h.
#include "codec/wire.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <variant>

#include "codec/reading_json.h"

namespace iot::codec {
namespace {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);

constexpr std::uint8_t kFlagLat = 0x01;
constexpr std::uint8_t kFlagLon = 0x02;
constexpr std::size_t kMaxLength = 255;

// Writer fills a buffer whose size was computed beforehand (WireSize).
class Writer {
 public:
  explicit Writer(char* p) : p_(p) {}
  void U8(std::uint8_t v) { *p_++ = static_cast<char>(v); }
  void U16(std::size_t v) {
    U8(static_cast<std::uint8_t>(v & 0xFF));
    U8(static_cast<std::uint8_t>((v >> 8) & 0xFF));
  }
  void U64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) U8(static_cast<std::uint8_t>((v >> (8 * i)) & 0xFF));
  }
  void Double(double d) { U64(std::bit_cast<std::uint64_t>(d)); }
  void String(std::string_view s) {
    U16(s.size());
    if (!s.empty()) std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  char* position() const { return p_; }

 private:
  char* p_;
};

[[noreturn]] void TooLarge(const char* what, std::size_t n) {
  std::fprintf(stderr, "EncodeWire: %s (%zu) does not fit the wire format\n", what, n);
  std::abort();
}

// WireSize returns the size of the binary form of `r`, checking the format's bounds.
std::size_t WireSize(const core::Reading& r) {
  if (r.device_id.size() > kMaxLength) TooLarge("device_id length", r.device_id.size());
  if (r.sensors.size() > kMaxLength) TooLarge("sensor count", r.sensors.size());
  std::size_t n = 1 + 1 + 8 + 2 + r.device_id.size() + (r.lat ? 8 : 0) + (r.lon ? 8 : 0) + 2;
  for (const auto& s : r.sensors) {
    if (s.name.size() > kMaxLength) TooLarge("sensor name length", s.name.size());
    n += 2 + s.name.size() + 8;
  }
  return n;
}

// Reader consumes a byte string front to back; every Get fails instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool GetU8(std::uint8_t& v) {
    if (pos_ + 1 > data_.size()) return false;
    v = static_cast<std::uint8_t>(data_[pos_++]);
    return true;
  }
  bool GetU16(std::size_t& v) {
    std::uint8_t lo, hi;
    if (!GetU8(lo) || !GetU8(hi)) return false;
    v = static_cast<std::size_t>(lo) | (static_cast<std::size_t>(hi) << 8);
    return true;
  }
  bool GetU64(std::uint64_t& v) {
    if (data_.size() - pos_ < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) {
      v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(data_[pos_ + static_cast<std::size_t>(i)]))
           << (8 * i);
    }
    pos_ += 8;
    return true;
  }
  bool GetDouble(double& d) {
    std::uint64_t v;
    if (!GetU64(v)) return false;
    d = std::bit_cast<double>(v);
    return true;
  }
  bool GetString(std::string& s) {
    std::size_t n;
    if (!GetU16(n) || n > kMaxLength || data_.size() - pos_ < n) return false;
    s.assign(data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool AtEnd() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

Error Invalid(std::string message) {
  return MakeError(Errc::kInvalidArgument, "payload: " + std::move(message));
}

Result<core::Reading> DecodeBinary(std::string_view payload) {
  Reader r(payload);
  std::uint8_t version, flags;
  if (!r.GetU8(version) || version != kWireVersion) return Invalid("unknown format version");
  if (!r.GetU8(flags) || (flags & ~(kFlagLat | kFlagLon)) != 0) return Invalid("unknown flags");
  core::Reading reading;
  std::uint64_t ts;
  if (!r.GetU64(ts)) return Invalid("truncated");
  reading.ts = core::FromUnixMicros(static_cast<std::int64_t>(ts));
  if (!r.GetString(reading.device_id)) return Invalid("truncated device_id");
  if ((flags & kFlagLat) != 0) {
    double d;
    if (!r.GetDouble(d)) return Invalid("truncated lat");
    reading.lat = d;
  }
  if ((flags & kFlagLon) != 0) {
    double d;
    if (!r.GetDouble(d)) return Invalid("truncated lon");
    reading.lon = d;
  }
  std::size_t count;
  if (!r.GetU16(count) || count > kMaxLength) return Invalid("bad sensor count");
  // Each sensor takes at least 10 bytes, which bounds the allocation by the payload's size.
  if (count > payload.size() / 10) return Invalid("truncated sensors");
  reading.sensors.resize(count);
  for (auto& s : reading.sensors) {
    if (!r.GetString(s.name) || !r.GetDouble(s.value)) return Invalid("truncated sensor");
  }
  if (!r.AtEnd()) return Invalid("trailing bytes");
  return reading;
}

}  // namespace

const core::ReadingLimits& WireLimits() {
  static const core::ReadingLimits limits = [] {
    core::ReadingLimits l;
    l.max_device_id_length = kMaxLength;
    l.max_sensor_name_length = kMaxLength;
    l.max_sensors = kMaxLength;
    l.required_sensors.clear();
    l.max_future = core::Micros::max();
    return l;
  }();
  return limits;
}

void AppendWire(std::string& out, const core::Reading& reading) {
  const std::size_t size = WireSize(reading);
  const std::size_t start = out.size();
  out.resize(start + size);
  std::uint8_t flags = 0;
  if (reading.lat) flags |= kFlagLat;
  if (reading.lon) flags |= kFlagLon;
  Writer w(out.data() + start);
  w.U8(kWireVersion);
  w.U8(flags);
  w.U64(static_cast<std::uint64_t>(core::ToUnixMicros(reading.ts)));
  w.String(reading.device_id);
  if (reading.lat) w.Double(*reading.lat);
  if (reading.lon) w.Double(*reading.lon);
  w.U16(reading.sensors.size());
  for (const auto& s : reading.sensors) {
    w.String(s.name);
    w.Double(s.value);
  }
}

std::string EncodeWire(const core::Reading& reading) {
  std::string out;
  AppendWire(out, reading);
  return out;
}

Result<core::Reading> DecodePayload(std::string_view payload) {
  if (payload.empty()) return Invalid("empty");
  if (payload.front() == '{') {
    auto decoded = DecodeTimedReading(payload, WireLimits());
    if (auto* e = std::get_if<DecodeError>(&decoded)) {
      return Invalid(e->error.field + ": " + e->error.code + ": " + e->error.message);
    }
    return std::get<core::Reading>(std::move(decoded));
  }
  auto reading = DecodeBinary(payload);
  if (!reading) return reading;
  if (auto e = core::ValidateReading(*reading, WireLimits(), core::Timestamp::max())) {
    return Invalid(e->field + ": " + e->code + ": " + e->message);
  }
  return reading;
}

namespace {

void AppendShortString(std::string& out, std::string_view s) {
  s = s.substr(0, 65535);
  out += static_cast<char>(s.size() & 0xff);
  out += static_cast<char>(s.size() >> 8);
  out.append(s);
}

bool ReadShortString(std::string_view& in, std::string& out) {
  if (in.size() < 2) return false;
  const std::size_t n = static_cast<std::uint8_t>(in[0]) |
                        (static_cast<std::size_t>(static_cast<std::uint8_t>(in[1])) << 8);
  if (in.size() < 2 + n) return false;
  out.assign(in.substr(2, n));
  in.remove_prefix(2 + n);
  return true;
}

}  // namespace

std::string EncodeRejected(const RejectedInput& r) {
  std::string out;
  out.reserve(5 + r.source.size() + r.reason.size() + r.payload.size());
  out += static_cast<char>(kRejectedVersion);
  AppendShortString(out, r.source);
  AppendShortString(out, r.reason);
  out += r.payload;
  return out;
}

Result<RejectedInput> DecodeRejected(std::string_view payload) {
  if (!IsRejected(payload)) return Invalid("not a rejected-input record");
  payload.remove_prefix(1);
  RejectedInput r;
  if (!ReadShortString(payload, r.source) || !ReadShortString(payload, r.reason)) {
    return Invalid("truncated rejected-input record");
  }
  r.payload.assign(payload);
  return r;
}

}  // namespace iot::codec
