// json_writer.cc: see json_writer.h.
#include "codec/json_writer.h"

#include <charconv>
#include <cmath>

namespace iot::codec {
namespace {

// kNeedsEscape marks the bytes that cannot appear unescaped inside a JSON string.
constexpr bool NeedsEscape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

}  // namespace

void AppendJsonEscaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!NeedsEscape(c)) continue;
    out.append(s.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(esc, sizeof esc);
      }
    }
  }
  out.append(s.data() + run_start, s.size() - run_start);
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendJsonEscaped(out, s);
  return out;
}

void JsonWriter::Key(std::string_view name) {
  Separate();
  out_->push_back('"');
  AppendJsonEscaped(*out_, name);
  out_->append("\":");
  need_comma_ = false;
}

void JsonWriter::String(std::string_view s) {
  Separate();
  out_->push_back('"');
  AppendJsonEscaped(*out_, s);
  out_->push_back('"');
  need_comma_ = true;
}

void JsonWriter::Double(double v) {
  Separate();
  need_comma_ = true;
  if (!std::isfinite(v)) {
    out_->append("null");
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  // 32 bytes always hold the shortest representation of a double (at most 24 characters).
  out_->append(buf, static_cast<std::size_t>(end - buf));
  (void)ec;
}

void AppendIso8601(std::string& out, core::Timestamp t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const int y = static_cast<int>(ymd.year());
  if (y < 0 || y > 9999) {
    out += core::FormatIso8601(t);  // outside the four-digit years: the reference rendering
    return;
  }
  const std::int64_t us = (t - day).count();  // 0 .. 86'399'999'999
  const auto secs = static_cast<unsigned>(us / 1'000'000);
  const auto frac = static_cast<unsigned>(us % 1'000'000);
  char buf[27];
  auto put = [&buf](std::size_t pos, unsigned v, std::size_t width) {
    for (std::size_t i = width; i > 0; --i) {
      buf[pos + i - 1] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };
  put(0, static_cast<unsigned>(y), 4);
  buf[4] = '-';
  put(5, static_cast<unsigned>(ymd.month()), 2);
  buf[7] = '-';
  put(8, static_cast<unsigned>(ymd.day()), 2);
  buf[10] = 'T';
  put(11, secs / 3600, 2);
  buf[13] = ':';
  put(14, secs / 60 % 60, 2);
  buf[16] = ':';
  put(17, secs % 60, 2);
  std::size_t n = 19;
  if (frac != 0) {
    buf[19] = '.';
    put(20, frac, 6);
    n = 26;
  }
  buf[n++] = 'Z';
  out.append(buf, n);
}

void JsonWriter::Time(core::Timestamp t) {
  Separate();
  need_comma_ = true;
  out_->push_back('"');
  AppendIso8601(*out_, t);
  out_->push_back('"');
}

void JsonWriter::Int(std::int64_t v) {
  Separate();
  need_comma_ = true;
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out_->append(buf, static_cast<std::size_t>(end - buf));
  (void)ec;
}

void JsonWriter::Bool(bool v) {
  Separate();
  need_comma_ = true;
  out_->append(v ? "true" : "false");
}

void JsonWriter::Null() {
  Separate();
  need_comma_ = true;
  out_->append("null");
}

void JsonWriter::Raw(std::string_view json) {
  Separate();
  need_comma_ = true;
  out_->append(json);
}

}  // namespace iot::codec
