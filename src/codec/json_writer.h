// json_writer.h: a small, allocation-friendly JSON writer.
//
// JsonWriter appends compact JSON to a caller-owned std::string and inserts the commas itself:
//
//   std::string out;
//   JsonWriter w(out);
//   w.BeginObject();
//   w.Key("device_id"); w.String("dev-1");
//   w.Key("values"); w.BeginArray(); w.Double(1.5); w.Int(2); w.EndArray();
//   w.EndObject();   // out == {"device_id":"dev-1","values":[1.5,2]}
//
// The writer does not check that calls are well nested (a Key outside an object, an EndArray
// closing an object); callers write documents with a fixed shape. Clear the string and call
// Reset() to reuse a writer. Not thread-safe; cheap to construct.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/time.h"

namespace iot::codec {

class JsonWriter {
 public:
  // JsonWriter appends to `out`, which must outlive the writer.
  explicit JsonWriter(std::string& out) : out_(&out) {}

  // BeginObject / EndObject / BeginArray / EndArray open and close a container.
  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  void BeginArray() { Open('['); }
  void EndArray() { Close(']'); }

  // Key writes an object member's name; the next call writes its value.
  void Key(std::string_view name);

  // String writes an escaped string value.
  void String(std::string_view s);
  // Double writes `v` in the shortest form that reads back as the same double; NaN and the
  // infinities, which JSON cannot express, are written as null.
  void Double(double v);
  // Int writes an integer.
  void Int(std::int64_t v);
  // Bool writes true or false.
  void Bool(bool v);
  // Null writes null.
  void Null();
  // Time writes `t` as an ISO 8601 string, exactly as core::FormatIso8601 renders it, without
  // the formatting overhead (dashboard documents carry several timestamps each).
  void Time(core::Timestamp t);
  // Raw writes `json` unchanged as one value; it must be a complete, valid JSON value.
  void Raw(std::string_view json);

  // Reset forgets the comma state, for writing a new document into a cleared string.
  void Reset() { need_comma_ = false; }

  // out returns the string written to.
  std::string& out() { return *out_; }

 private:
  void Separate() {
    if (need_comma_) out_->push_back(',');
  }
  void Open(char c) {
    Separate();
    out_->push_back(c);
    need_comma_ = false;
  }
  void Close(char c) {
    out_->push_back(c);
    need_comma_ = true;
  }

  std::string* out_;
  bool need_comma_ = false;
};

// AppendJsonEscaped appends `s` to `out` escaped for use inside a JSON string (without the
// surrounding quotes): '"' and '\' are backslash-escaped, control characters below 0x20 become
// \b \f \n \r \t or \u00XX. Other bytes, including UTF-8 sequences, are copied unchanged.
void AppendJsonEscaped(std::string& out, std::string_view s);

// AppendIso8601 appends core::FormatIso8601(t) to `out` (without quotes), faster.
void AppendIso8601(std::string& out, core::Timestamp t);

// JsonEscape returns `s` escaped as AppendJsonEscaped does.
std::string JsonEscape(std::string_view s);

}  // namespace iot::codec
