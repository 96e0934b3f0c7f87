#include "services/dead_letter.h"

#include <simdjson.h>

#include <array>

#include "core/utf8.h"

namespace iot::services {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool IsUtf8(std::string_view s) {
  while (!s.empty()) {
    std::size_t n = core::Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

// ValidUtf8 replaces each byte that does not start a well-formed UTF-8 sequence with U+FFFD.
std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    std::size_t n = core::Utf8SequenceLength(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      n = 1;
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

}  // namespace

std::string EncodeBase64(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(bytes[i])} << 16) |
                      (std::uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8) |
                      static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t v = std::uint32_t{static_cast<unsigned char>(bytes[i])} << 16;
    if (rest == 2) v |= std::uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> DecodeBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::array<int, 256> value;
  value.fill(-1);
  for (std::size_t i = 0; i < kAlphabet.size(); ++i) {
    value[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int>(i);
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    std::uint32_t v = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        if (j == 2 && text[i + 3] != '=') return std::nullopt;
        ++pad;
        v <<= 6;
        continue;
      }
      int d = value[static_cast<unsigned char>(c)];
      if (d < 0 || pad > 0) return std::nullopt;
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>((v >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

void WriteDeadLetter(codec::JsonWriter& w, const store::DeadLetter& dl) {
  const bool text = IsUtf8(dl.payload);
  const bool key_text = IsUtf8(dl.key);
  w.BeginObject();
  w.Key("consumer");
  w.String(dl.consumer);
  w.Key("topic");
  w.String(dl.topic);
  w.Key("partition");
  w.Int(dl.partition);
  w.Key("offset");
  w.Int(dl.offset);
  w.Key("key");
  w.String(key_text ? dl.key : EncodeBase64(dl.key));
  w.Key("key_encoding");
  w.String(key_text ? "utf8" : "base64");
  w.Key("payload");
  w.String(text ? dl.payload : EncodeBase64(dl.payload));
  w.Key("payload_encoding");
  w.String(text ? "utf8" : "base64");
  w.Key("reason");
  w.String(ValidUtf8(dl.reason));
  w.Key("attempts");
  w.Int(dl.attempts);
  w.Key("failed_at");
  w.Time(dl.failed_at);
  w.EndObject();
}

std::string DeadLetterJson(const store::DeadLetter& dl) {
  std::string out;
  codec::JsonWriter w(out);
  WriteDeadLetter(w, dl);
  return out;
}

Result<store::DeadLetter> ParseDeadLetter(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc)) {
    return MakeError(Errc::kInvalidArgument, "a dead letter is not JSON");
  }
  auto bad = [](const char* field) {
    return MakeError(Errc::kInvalidArgument, std::string("a dead letter without a valid \"") +
                                                 field + "\"");
  };
  store::DeadLetter dl;
  std::string_view s;
  std::int64_t i = 0;
  if (doc["consumer"].get(s)) return bad("consumer");
  dl.consumer = s;
  if (doc["topic"].get(s)) return bad("topic");
  dl.topic = s;
  if (doc["partition"].get(i) || i < 0 || i > INT32_MAX) return bad("partition");
  dl.partition = static_cast<std::int32_t>(i);
  if (doc["offset"].get(i) || i < 0) return bad("offset");
  dl.offset = i;
  if (doc["key"].get(s)) return bad("key");
  std::string_view key_encoding = "utf8";  // optional: written since the field was added
  if (auto field = doc["key_encoding"]; field.error() != simdjson::NO_SUCH_FIELD &&
                                        (field.get(key_encoding) ||
                                         (key_encoding != "utf8" && key_encoding != "base64"))) {
    return bad("key_encoding");
  }
  if (key_encoding == "base64") {
    auto bytes = DecodeBase64(s);
    if (!bytes) return bad("key");
    dl.key = std::move(*bytes);
  } else {
    dl.key = s;
  }
  std::string_view encoding;
  if (doc["payload_encoding"].get(encoding) || (encoding != "utf8" && encoding != "base64")) {
    return bad("payload_encoding");
  }
  if (doc["payload"].get(s)) return bad("payload");
  if (encoding == "base64") {
    auto bytes = DecodeBase64(s);
    if (!bytes) return bad("payload");
    dl.payload = std::move(*bytes);
  } else {
    dl.payload = s;
  }
  if (doc["reason"].get(s)) return bad("reason");
  dl.reason = s;
  if (doc["attempts"].get(i) || i < 0 || i > INT32_MAX) return bad("attempts");
  dl.attempts = static_cast<std::int32_t>(i);
  if (doc["failed_at"].get(s)) return bad("failed_at");
  auto t = core::ParseIso8601(s);
  if (!t) return bad("failed_at");
  dl.failed_at = *t;
  return dl;
}

}  // namespace iot::services
