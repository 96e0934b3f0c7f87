#include "core/time.h"

#include <charconv>
#include <cstdio>

namespace iot::core {
namespace {

// Digits parses exactly `n` decimal digits at `s[pos]`.
bool Digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

class RealClock final : public Clock {
 public:
  Timestamp Now() const override {
    return std::chrono::time_point_cast<Micros>(std::chrono::system_clock::now());
  }
};

}  // namespace

std::optional<Timestamp> ParseIso8601(std::string_view s) {
  using namespace std::chrono;
  int y, mo, d, h, mi, sec;
  if (!Digits(s, 0, 4, y) || s.size() < 19 || s[4] != '-' || !Digits(s, 5, 2, mo) ||
      s[7] != '-' || !Digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Digits(s, 11, 2, h) || s[13] != ':' || !Digits(s, 14, 2, mi) || s[16] != ':' ||
      !Digits(s, 17, 2, sec)) {
    return std::nullopt;
  }
  if (y < 1970 || h > 23 || mi > 59 || sec > 59) return std::nullopt;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;

  std::size_t pos = 19;
  std::int64_t frac_us = 0;
  if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
    ++pos;
    std::size_t digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 6) frac_us = frac_us * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (std::size_t i = digits; i < 6; ++i) frac_us *= 10;
  }
  std::int64_t offset_s = 0;
  if (pos < s.size()) {
    char c = s[pos];
    if (c == 'Z' || c == 'z') {
      ++pos;
    } else if (c == '+' || c == '-') {
      int oh, om;
      if (!Digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
          !Digits(s, pos + 4, 2, om) || oh > 23 || om > 59) {
        return std::nullopt;
      }
      offset_s = (oh * 3600 + om * 60) * (c == '+' ? 1 : -1);
      pos += 6;
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  auto t = sys_days(ymd) + hours(h) + minutes(mi) + seconds(sec) - seconds(offset_s);
  return time_point_cast<Micros>(t) + Micros(frac_us);
}

std::string FormatIso8601(Timestamp t) {
  using namespace std::chrono;
  auto day_point = floor<days>(t);
  year_month_day ymd{day_point};
  auto since_midnight = t - day_point;
  auto h = duration_cast<hours>(since_midnight);
  auto m = duration_cast<minutes>(since_midnight - h);
  auto s = duration_cast<seconds>(since_midnight - h - m);
  auto us = (since_midnight - h - m - s).count();
  char buf[40];
  int n;
  if (us != 0) {
    n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%06lldZ",
                      static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                      static_cast<unsigned>(ymd.day()), static_cast<int>(h.count()),
                      static_cast<int>(m.count()), static_cast<int>(s.count()),
                      static_cast<long long>(us));
  } else {
    n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ",
                      static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                      static_cast<unsigned>(ymd.day()), static_cast<int>(h.count()),
                      static_cast<int>(m.count()), static_cast<int>(s.count()));
  }
  return std::string(buf, static_cast<std::size_t>(n));
}

std::optional<Micros> ParseDuration(std::string_view s) {
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p == s.data() || n <= 0) return std::nullopt;
  std::string_view unit(p, static_cast<std::size_t>(s.data() + s.size() - p));
  std::int64_t mult;
  if (unit == "us") mult = 1;
  else if (unit == "ms") mult = 1000;
  else if (unit == "s") mult = 1'000'000;
  else if (unit == "m") mult = 60'000'000;
  else if (unit == "h") mult = 3'600'000'000;
  else if (unit == "d") mult = 86'400'000'000;
  else if (unit == "w") mult = 604'800'000'000;
  else return std::nullopt;
  if (n > INT64_MAX / mult) return std::nullopt;
  return Micros(n * mult);
}

std::string FormatDuration(Micros d) {
  static constexpr std::pair<std::int64_t, const char*> kUnits[] = {
      {604'800'000'000, "w"}, {86'400'000'000, "d"}, {3'600'000'000, "h"},
      {60'000'000, "m"},      {1'000'000, "s"},      {1000, "ms"}};
  std::int64_t us = d.count();
  for (auto [mult, name] : kUnits) {
    if (us != 0 && us % mult == 0) return std::to_string(us / mult) + name;
  }
  return std::to_string(us) + "us";
}

const Clock& SystemClock() {
  static const RealClock clock;
  return clock;
}

}  // namespace iot::core
