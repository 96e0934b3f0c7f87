// window.cc: tumbling window arithmetic (see window.h).
#include "core/window.h"

#include <algorithm>
#include <functional>
#include <string>

namespace iot::core {

Timestamp WindowStart(Timestamp t, Micros size) {
  const std::int64_t n = size.count();
  if (n <= 0) return t;
  const std::int64_t us = ToUnixMicros(t);
  // C++ remainders take the sign of the dividend; make it non-negative so that times before 1970
  // fall into the window that contains them rather than the one after (floor division).
  std::int64_t r = us % n;
  if (r < 0) r += n;
  std::int64_t start;
  if (__builtin_sub_overflow(us, r, &start)) return Timestamp::min();
  return FromUnixMicros(start);
}

Result<std::vector<Micros>> ParseWindows(std::string_view text) {
  std::vector<Micros> sizes;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    std::string_view item = text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    auto d = ParseDuration(item);
    if (!d) {
      return MakeError(Errc::kInvalidArgument,
                       "invalid window size '" + std::string(item) +
                           "' (expected a positive duration such as 1m or 1h)");
    }
    sizes.push_back(*d);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

std::size_t AggregateKeyHash::operator()(const AggregateKey& k) const noexcept {
  // boost::hash_combine's mixing step, applied field by field.
  std::size_t h = std::hash<std::string>{}(k.device_id);
  auto mix = [&h](std::size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
  mix(std::hash<std::string>{}(k.sensor_type));
  mix(std::hash<std::int64_t>{}(k.window.count()));
  mix(std::hash<std::int64_t>{}(ToUnixMicros(k.window_start)));
  return h;
}

}  // namespace iot::core
