// mongo_bson.h: a thin C++ layer over libbson for the MongoDB store: owned documents, a builder
// that appends typed values (never text that a server could parse as syntax), and readers.
//
//   Bson filter;
//   Builder(filter).Str("device_id", id).Doc("ts", [&](Builder& b) { b.Date("$lt", to); });
//
// Keys are always literal C++ strings chosen by the store; user input only ever becomes values.
#pragma once

#include <bson/bson.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/time.h"

namespace iot::store::mongo {

// Bson owns one heap-allocated bson_t; movable, not copyable.
class Bson {
 public:
  Bson() : doc_(bson_new()) {}
  // Copy makes an owned copy of a document (e.g. a sub-document of a reply).
  static Bson Copy(const bson_t* doc);
  // FromIter copies the document or array the iterator is on, or the document held as binary
  // data (Builder::Binary); an empty document otherwise.
  static Bson FromIter(const bson_iter_t& it);
  ~Bson() {
    if (doc_ != nullptr) bson_destroy(doc_);
  }
  Bson(Bson&& other) noexcept : doc_(other.doc_) { other.doc_ = nullptr; }
  Bson& operator=(Bson&& other) noexcept;
  Bson(const Bson&) = delete;
  Bson& operator=(const Bson&) = delete;

  bson_t* get() { return doc_; }
  const bson_t* get() const { return doc_; }

 private:
  explicit Bson(bson_t* doc) : doc_(doc) {}
  bson_t* doc_;
};

// Reply is a document that a libmongoc call initializes (its `reply` out-parameters): always
// initialized by the call, success or not, and destroyed here.
class Reply {
 public:
  Reply() { bson_init(&doc_); }
  ~Reply() { bson_destroy(&doc_); }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  // out hands the document to a call that initializes it again.
  bson_t* out() {
    bson_destroy(&doc_);
    return &doc_;
  }
  const bson_t* get() const { return &doc_; }

 private:
  bson_t doc_;
};

// Builder appends fields to a document (or an array: keys are then ignored and numbered).
class Builder {
 public:
  explicit Builder(bson_t* doc, bool array = false) : doc_(doc), array_(array) {}
  explicit Builder(Bson& doc) : Builder(doc.get()) {}

  Builder& Str(std::string_view key, std::string_view value);
  Builder& Int64(std::string_view key, std::int64_t value);
  Builder& Int32(std::string_view key, std::int32_t value);
  Builder& Double(std::string_view key, double value);
  Builder& Bool(std::string_view key, bool value);
  Builder& Null(std::string_view key);
  // Date appends a BSON date: milliseconds since the epoch (sub-millisecond parts are dropped).
  Builder& Date(std::string_view key, core::Timestamp value);
  Builder& Doc(std::string_view key, const std::function<void(Builder&)>& fill);
  Builder& Array(std::string_view key, const std::function<void(Builder&)>& fill);
  // Binary appends a document's bytes as generic binary data: stored opaquely, so its keys
  // (operators such as $inc, dotted paths) are not checked as field names.
  Builder& Binary(std::string_view key, const bson_t* doc);
  // Bytes appends raw bytes as generic binary data (any bytes, also invalid UTF-8).
  Builder& Bytes(std::string_view key, std::string_view bytes);
  // Append copies a whole document as a sub-document.
  Builder& Append(std::string_view key, const bson_t* doc);

 private:
  std::string NextKey(std::string_view key);
  bson_t* doc_;
  bool array_;
  std::uint32_t index_ = 0;
};

// Field readers over an iterator positioned on a field; they accept the numeric types a server
// may return for a number (int32, int64, double).
std::optional<std::int64_t> AsInt64(const bson_iter_t& it);
std::optional<double> AsDouble(const bson_iter_t& it);
std::optional<std::string_view> AsString(const bson_iter_t& it);
// AsBytes reads binary data (Builder::Bytes) or a string as bytes.
std::optional<std::string_view> AsBytes(const bson_iter_t& it);
std::optional<core::Timestamp> AsDate(const bson_iter_t& it);

// Find positions `it` on field `key` of `doc`; false when absent.
bool Find(const bson_t* doc, const char* key, bson_iter_t* it);

// Date conversions: BSON dates are milliseconds; our timestamps are microseconds.
core::Timestamp FromBsonDate(std::int64_t ms);
std::int64_t ToBsonDate(core::Timestamp ts);

}  // namespace iot::store::mongo
