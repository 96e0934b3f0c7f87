// test_util.h: small helpers every test suite shares.
//
//   IOT_ASSERT_OK(store->Apply(batch));            // fails the test with the error's code and text
//   auto page = ::iot::testing::Must(store->Telemetry(q));
//   ::iot::testing::TempDir dir;                   // removed with its contents at scope exit
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include <gtest/gtest.h>

#include "core/result.h"

// IOT_ASSERT_OK asserts that a Status or Result is ok, printing its error otherwise.
#define IOT_ASSERT_OK(expr)                                                     \
  do {                                                                          \
    const auto& iot_status_ = (expr);                                           \
    ASSERT_TRUE(iot_status_.ok()) << ::iot::ErrcName(iot_status_.error().code)  \
                                  << ": " << iot_status_.error().message;       \
  } while (0)

namespace iot::testing {

// Must unwraps a Result, failing the test (and returning a default value) on error.
template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << "unexpected error: " << ErrcName(r.error().code) << ": " << r.error().message;
    return T{};
  }
  return std::move(*r);
}

// TempDir is a fresh directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "iot_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace iot::testing
