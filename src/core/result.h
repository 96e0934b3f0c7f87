// result.h: errors as values.
//
// `Status` is success or an `Error` (a code and a message); `Result<T>` is a value or an `Error`.
// They are used on hot paths and for expected failures (bad input, a store or bus that is down);
// exceptions are kept for start-up and configuration.
//
//   Result<int> parse(std::string_view s);
//   auto r = parse("42");
//   if (!r) return r.error();
//   use(*r);
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace iot {

// Errc classifies an error so that callers can decide what to do (retry, answer 4xx, give up).
enum class Errc {
  kInvalidArgument,  // bad input from a client; never retried
  kNotFound,
  kAlreadyExists,
  kUnavailable,      // transient: the store or bus is down or busy; retry with backoff
  kResourceExhausted,// a queue or buffer is full; back-pressure (503 + Retry-After)
  kDeadlineExceeded,
  kCorruption,       // stored data failed a check
  kInternal,         // a broken invariant or an unexpected library failure
  kAborted,          // lost a race: another writer moved the state (e.g. a checkpoint) first
};

const char* ErrcName(Errc code);

// Error is an error code with a human-readable message.
struct Error {
  Errc code;
  std::string message;
};

// Status is the outcome of an operation that returns no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  static Status Ok() { return {}; }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{Errc::kInternal, {}};
  bool ok_ = true;
};

// Result<T> holds either a T or an Error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }
  Status status() const { return ok() ? Status::Ok() : Status(error()); }

 private:
  std::variant<T, Error> v_;
};

inline Error MakeError(Errc code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace iot
