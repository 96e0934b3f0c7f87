// store_conformance.h: the behaviour every Store implementation must have (store.h's contract).
//
// The suite is a value-parameterized GTest fixture over a StoreFactory. An implementation's test
// file compiles store_conformance.cc into its test binary and instantiates the suite:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
//                            ::testing::Values(StoreFactory{"sqlite", make, cleanup}),
//                            StoreFactoryName);
//
// `make` returns a new, empty store for one test, configured with the given Retention (what
// Expire deletes; the fixture's own store has none); `cleanup` (optional) runs after the test's
// stores have been destroyed, e.g. to remove their files or drop their databases. Tests use only
// the Store interface, fixed timestamps and no clocks or sleeps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "store/store.h"

namespace iot::store::testing {

struct StoreFactory {
  std::string name;
  std::function<std::unique_ptr<Store>(const Retention&)> make;
  std::function<void()> cleanup;
};

// StoreFactoryName names instantiations after the factory (for readable test names).
std::string StoreFactoryName(const ::testing::TestParamInfo<StoreFactory>& info);

// PrintTo prints a factory as its name in test failure messages.
void PrintTo(const StoreFactory& factory, std::ostream* os);

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;

  Store& store() { return *store_; }

  // MakeStore returns another new, empty store with `retention`, e.g. to test Expire. The test
  // owns it and must let it go before the test ends (cleanup runs in TearDown).
  std::unique_ptr<Store> MakeStore(const Retention& retention);

  std::unique_ptr<Store> store_;
};

// ---- helpers to build input, shared with implementation-specific tests ----------------------

// kBaseUs is an arbitrary fixed time (2023-11-14T22:13:20Z) that tests count from.
inline constexpr std::int64_t kBaseUs = 1'700'000'000'000'000;

// At returns kBaseUs + `seconds` as a Timestamp.
core::Timestamp At(double seconds);

// MakeReading builds a stored reading with the seed's two sensors (temperature_c, humidity).
StoredReading MakeReading(std::int64_t id, const std::string& device_id, core::Timestamp ts,
                          double temperature = 21.5, double humidity = 40.0);

// BatchOf builds the WriteBatch the aggregator would write for `readings`: the raw readings and
// one DeviceUpdate per device (first/last seen, count, newest reading with ties going to the
// later reading). No aggregates, no checkpoint.
WriteBatch BatchOf(std::vector<StoredReading> readings);

// MakeAlert builds an alert with every field set.
core::Alert MakeAlert(std::int64_t id, const std::string& device_id, core::AlertStatus status,
                      core::Timestamp created_at);

// ReadAll pages through Telemetry(q) with q.limit per page until `next` is unset.
std::vector<StoredReading> ReadAll(Store& store, TelemetryQuery q);

// MakeDeadLetter builds a dead letter of topic "telemetry.raw", partition 0, with every field set
// (the key "dev-<offset>", 3 attempts).
DeadLetter MakeDeadLetter(const std::string& consumer, std::int64_t offset,
                          core::Timestamp failed_at, std::string payload = "{\"device_id\":");

// ReadAllDeadLetters pages through DeadLetters(q) with q.limit per page until `next` is unset.
std::vector<DeadLetter> ReadAllDeadLetters(Store& store, DeadLetterQuery q);

}  // namespace iot::store::testing
