// mongo_bson.cc: see mongo_bson.h.
#include "store/mongo_bson.h"

#include <limits>

namespace iot::store::mongo {

namespace {

int KeyLength(std::string_view key) { return static_cast<int>(key.size()); }

}  // namespace

Bson Bson::Copy(const bson_t* doc) { return Bson(bson_copy(doc)); }

Bson Bson::FromIter(const bson_iter_t& it) {
  std::uint32_t length = 0;
  const std::uint8_t* data = nullptr;
  if (bson_iter_type(&it) == BSON_TYPE_DOCUMENT) {
    bson_iter_document(&it, &length, &data);
  } else if (bson_iter_type(&it) == BSON_TYPE_ARRAY) {
    bson_iter_array(&it, &length, &data);
  } else if (bson_iter_type(&it) == BSON_TYPE_BINARY) {
    bson_subtype_t subtype;
    bson_iter_binary(&it, &subtype, &length, &data);
  }
  if (data == nullptr) return Bson();
  bson_t* doc = bson_new_from_data(data, length);
  return doc != nullptr ? Bson(doc) : Bson();
}

Bson& Bson::operator=(Bson&& other) noexcept {
  if (this != &other) {
    if (doc_ != nullptr) bson_destroy(doc_);
    doc_ = other.doc_;
    other.doc_ = nullptr;
  }
  return *this;
}

std::string Builder::NextKey(std::string_view key) {
  if (!array_) return std::string(key);
  return std::to_string(index_++);
}

Builder& Builder::Str(std::string_view key, std::string_view value) {
  std::string k = NextKey(key);
  bson_append_utf8(doc_, k.data(), KeyLength(k), value.data(), static_cast<int>(value.size()));
  return *this;
}

Builder& Builder::Int64(std::string_view key, std::int64_t value) {
  std::string k = NextKey(key);
  bson_append_int64(doc_, k.data(), KeyLength(k), value);
  return *this;
}

Builder& Builder::Int32(std::string_view key, std::int32_t value) {
  std::string k = NextKey(key);
  bson_append_int32(doc_, k.data(), KeyLength(k), value);
  return *this;
}

Builder& Builder::Double(std::string_view key, double value) {
  std::string k = NextKey(key);
  bson_append_double(doc_, k.data(), KeyLength(k), value);
  return *this;
}

Builder& Builder::Bool(std::string_view key, bool value) {
  std::string k = NextKey(key);
  bson_append_bool(doc_, k.data(), KeyLength(k), value);
  return *this;
}

Builder& Builder::Null(std::string_view key) {
  std::string k = NextKey(key);
  bson_append_null(doc_, k.data(), KeyLength(k));
  return *this;
}

Builder& Builder::Date(std::string_view key, core::Timestamp value) {
  std::string k = NextKey(key);
  bson_append_date_time(doc_, k.data(), KeyLength(k), ToBsonDate(value));
  return *this;
}

Builder& Builder::Doc(std::string_view key, const std::function<void(Builder&)>& fill) {
  std::string k = NextKey(key);
  bson_t child;
  bson_append_document_begin(doc_, k.data(), KeyLength(k), &child);
  Builder b(&child);
  fill(b);
  bson_append_document_end(doc_, &child);
  return *this;
}

Builder& Builder::Array(std::string_view key, const std::function<void(Builder&)>& fill) {
  std::string k = NextKey(key);
  bson_t child;
  bson_append_array_begin(doc_, k.data(), KeyLength(k), &child);
  Builder b(&child, true);
  fill(b);
  bson_append_array_end(doc_, &child);
  return *this;
}

Builder& Builder::Binary(std::string_view key, const bson_t* doc) {
  std::string k = NextKey(key);
  bson_append_binary(doc_, k.data(), KeyLength(k), BSON_SUBTYPE_BINARY, bson_get_data(doc),
                     doc->len);
  return *this;
}

Builder& Builder::Bytes(std::string_view key, std::string_view bytes) {
  std::string k = NextKey(key);
  bson_append_binary(doc_, k.data(), KeyLength(k), BSON_SUBTYPE_BINARY,
                     reinterpret_cast<const std::uint8_t*>(bytes.data()),
                     static_cast<std::uint32_t>(bytes.size()));
  return *this;
}

Builder& Builder::Append(std::string_view key, const bson_t* doc) {
  std::string k = NextKey(key);
  bson_append_document(doc_, k.data(), KeyLength(k), doc);
  return *this;
}

std::optional<std::int64_t> AsInt64(const bson_iter_t& it) {
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
      return bson_iter_int32(&it);
    case BSON_TYPE_INT64:
      return bson_iter_int64(&it);
    case BSON_TYPE_DOUBLE: {
      double d = bson_iter_double(&it);
      if (d < -9.2e18 || d > 9.2e18) return std::nullopt;
      return static_cast<std::int64_t>(d);
    }
    default:
      return std::nullopt;
  }
}

std::optional<double> AsDouble(const bson_iter_t& it) {
  switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
      return bson_iter_int32(&it);
    case BSON_TYPE_INT64:
      return static_cast<double>(bson_iter_int64(&it));
    case BSON_TYPE_DOUBLE:
      return bson_iter_double(&it);
    default:
      return std::nullopt;
  }
}

std::optional<std::string_view> AsString(const bson_iter_t& it) {
  if (bson_iter_type(&it) != BSON_TYPE_UTF8) return std::nullopt;
  std::uint32_t length = 0;
  const char* text = bson_iter_utf8(&it, &length);
  return std::string_view(text, length);
}

std::optional<std::string_view> AsBytes(const bson_iter_t& it) {
  if (bson_iter_type(&it) == BSON_TYPE_UTF8) return AsString(it);
  if (bson_iter_type(&it) != BSON_TYPE_BINARY) return std::nullopt;
  bson_subtype_t subtype;
  std::uint32_t length = 0;
  const std::uint8_t* data = nullptr;
  bson_iter_binary(&it, &subtype, &length, &data);
  if (data == nullptr) return std::string_view();
  return std::string_view(reinterpret_cast<const char*>(data), length);
}

std::optional<core::Timestamp> AsDate(const bson_iter_t& it) {
  if (bson_iter_type(&it) != BSON_TYPE_DATE_TIME) return std::nullopt;
  return FromBsonDate(bson_iter_date_time(&it));
}

bool Find(const bson_t* doc, const char* key, bson_iter_t* it) {
  return bson_iter_init_find(it, doc, key);
}

core::Timestamp FromBsonDate(std::int64_t ms) {
  constexpr std::int64_t kLimit = std::numeric_limits<std::int64_t>::max() / 1000;
  if (ms > kLimit) ms = kLimit;
  if (ms < -kLimit) ms = -kLimit;
  return core::FromUnixMicros(ms * 1000);
}

std::int64_t ToBsonDate(core::Timestamp ts) {
  std::int64_t us = core::ToUnixMicros(ts);
  // Floor division, so that times before the epoch round down like those after it.
  std::int64_t ms = us / 1000;
  if (us % 1000 < 0) --ms;
  return ms;
}

}  // namespace iot::store::mongo
