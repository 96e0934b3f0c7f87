// ferretdb_test.cc: the FerretDB test server starts, speaks the MongoDB wire protocol (pinged
// and written with libmongoc, the client the MongoDB store uses), restarts on its port with its
// data, cleans up after itself, and fails loudly when its binary is missing.
#include "testing/ferretdb.h"

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <mongoc/mongoc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testing/test_util.h"

namespace iot::testing {
namespace {

const auto* const kFerretDb = FerretDbEnvironment::Register();

// CanConnect is whether a TCP connection to 127.0.0.1:port succeeds.
bool CanConnect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

struct ClientDeleter {
  void operator()(mongoc_client_t* c) const { mongoc_client_destroy(c); }
};
using Client = std::unique_ptr<mongoc_client_t, ClientDeleter>;

Client Connect(const std::string& url) {
  mongoc_init();
  // Fail fast instead of the driver's 30 s server selection when the server is down.
  return Client(mongoc_client_new((url + "?serverSelectionTimeoutMS=3000").c_str()));
}

// Ping runs {ping: 1}; empty on success, else the driver's error.
std::optional<std::string> Ping(mongoc_client_t* client) {
  bson_t cmd = BSON_INITIALIZER;
  BSON_APPEND_INT32(&cmd, "ping", 1);
  bson_error_t error;
  const bool ok = mongoc_client_command_simple(client, "admin", &cmd, nullptr, nullptr, &error);
  bson_destroy(&cmd);
  if (ok) return std::nullopt;
  return std::string(error.message);
}

bool InsertOne(mongoc_client_t* client, const std::string& db, int64_t value) {
  mongoc_collection_t* coll = mongoc_client_get_collection(client, db.c_str(), "things");
  bson_t doc = BSON_INITIALIZER;
  BSON_APPEND_INT64(&doc, "value", value);
  bson_error_t error;
  const bool ok = mongoc_collection_insert_one(coll, &doc, nullptr, nullptr, &error);
  if (!ok) ADD_FAILURE() << error.message;
  bson_destroy(&doc);
  mongoc_collection_destroy(coll);
  return ok;
}

int64_t Count(mongoc_client_t* client, const std::string& db) {
  mongoc_collection_t* coll = mongoc_client_get_collection(client, db.c_str(), "things");
  bson_t filter = BSON_INITIALIZER;
  bson_error_t error;
  const int64_t n =
      mongoc_collection_count_documents(coll, &filter, nullptr, nullptr, nullptr, &error);
  if (n < 0) ADD_FAILURE() << error.message;
  bson_destroy(&filter);
  mongoc_collection_destroy(coll);
  return n;
}

std::unique_ptr<FerretDbServer> MustStart() {
  auto server = FerretDbServer::Start();
  if (!server.ok()) {
    ADD_FAILURE() << server.error().message;
    return nullptr;
  }
  return std::move(*server);
}

TEST(FerretDbServer, StartsOnAFreePortAndAcceptsConnections) {
  auto server = MustStart();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->running());
  EXPECT_NE(server->port(), 0);
  EXPECT_EQ(server->Url(), "mongodb://127.0.0.1:" + std::to_string(server->port()) + "/");
  EXPECT_TRUE(CanConnect(server->port()));
}

TEST(FerretDbServer, AnswersPingOverTheMongoDbWireProtocol) {
  auto server = MustStart();
  ASSERT_NE(server, nullptr);
  Client client = Connect(server->Url());
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Ping(client.get()), std::nullopt);
}

TEST(FerretDbServer, RestartKeepsThePortAndTheData) {
  auto server = MustStart();
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->port();
  const std::string url = server->Url();
  {
    Client client = Connect(url);
    ASSERT_TRUE(InsertOne(client.get(), "restart", 42));
  }

  IOT_ASSERT_OK(server->Stop());
  EXPECT_FALSE(server->running());
  EXPECT_FALSE(CanConnect(port));
  IOT_ASSERT_OK(server->Stop());  // stopping twice is harmless

  IOT_ASSERT_OK(server->Restart());
  EXPECT_EQ(server->port(), port);
  EXPECT_EQ(server->Url(), url);
  Client client = Connect(url);
  EXPECT_EQ(Count(client.get(), "restart"), 1);
}

TEST(FerretDbServer, DestructionEndsTheProcessAndRemovesTheData) {
  auto server = MustStart();
  ASSERT_NE(server, nullptr);
  const pid_t pid = server->pid();
  const std::string data = server->data_dir();
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(std::filesystem::exists(data));
  server.reset();
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: no such process
  EXPECT_EQ(errno, ESRCH);
  EXPECT_FALSE(std::filesystem::exists(data));
}

TEST(FerretDbServer, MissingBinaryFailsNamingTheBuildScript) {
  const char* old = std::getenv("FERRETDB");
  const std::string saved = old == nullptr ? "" : old;
  ::setenv("FERRETDB", "/nonexistent/ferretdb", 1);
  auto server = FerretDbServer::Start();
  if (old == nullptr) {
    ::unsetenv("FERRETDB");
  } else {
    ::setenv("FERRETDB", saved.c_str(), 1);
  }
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.error().code, Errc::kNotFound);
  EXPECT_NE(server.error().message.find("scripts/ferretdb.sh build"), std::string::npos)
      << server.error().message;
}

TEST(FerretDbEnvironment, SharedServerAnswersPing) {
  ASSERT_NE(FerretDbEnvironment::Server(), nullptr);
  Client client = Connect(FerretDbEnvironment::Url());
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Ping(client.get()), std::nullopt);
}

TEST(FerretDbEnvironment, DatabaseNamesAreUniqueAndValid) {
  const std::string a = FerretDbEnvironment::UniqueDatabaseName();
  const std::string b = FerretDbEnvironment::UniqueDatabaseName();
  EXPECT_NE(a, b);
  for (const auto& name : {a, b, FerretDbEnvironment::UniqueDatabaseName(std::string(80, 'x'))}) {
    EXPECT_LE(name.size(), 63u);
    EXPECT_EQ(name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_"),
              std::string::npos)
        << name;
  }
  // The server accepts them: a write to each lands in its own database.
  Client client = Connect(FerretDbEnvironment::Url());
  ASSERT_TRUE(InsertOne(client.get(), a, 1));
  ASSERT_TRUE(InsertOne(client.get(), b, 2));
  EXPECT_EQ(Count(client.get(), a), 1);
  EXPECT_EQ(Count(client.get(), b), 1);
}

}  // namespace
}  // namespace iot::testing
