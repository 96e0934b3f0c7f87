// token_file_test.cc: the tokens file: round trip, atomic rewrite with mode 0600, bad files.
#include "auth/token_file.h"

#include <filesystem>
#include <fstream>

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace iot::auth {
namespace {

using ::iot::testing::Must;
using ::iot::testing::TempDir;

std::vector<Token> Sample() {
  const auto t0 = *core::ParseIso8601("2026-11-29T07:40:00Z");
  Token device{.id = "0123456789ab", .kind = Kind::kDevice, .devices = {"dev-1"},
               .name = "boiler room sensor", .created = t0};
  device.digest = Sha256("one");
  Token gateway{.id = "0123456789ac", .kind = Kind::kGateway, .devices = {"dev-1", "dev-2"},
                .name = "", .created = t0};
  gateway.digest = Sha256("two");
  Token read{.id = "0123456789ad", .kind = Kind::kRead, .prefix = "site-a-", .name = "ops",
             .created = t0, .revoked = t0 + std::chrono::hours(1)};
  read.digest = Sha256("three");
  Token all{.id = "0123456789ae", .kind = Kind::kRead, .name = "all of it", .created = t0};
  all.digest = Sha256("four");
  return {device, gateway, read, all};
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(TokenFile, FormatThenParseGivesTheSameTokens) {
  auto tokens = Sample();
  auto parsed = ParseTokens(FormatTokens(tokens));
  IOT_ASSERT_OK(parsed);
  EXPECT_EQ(*parsed, tokens);
}

TEST(TokenFile, TheFileHoldsDigestsNeverSecrets) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens";
  MadeToken made = MakeToken();
  Token t{.id = made.id, .kind = Kind::kDevice, .devices = {"dev-1"}, .digest = made.digest};
  IOT_ASSERT_OK(WriteTokensFile(path, {t}));
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find(made.text), std::string::npos);
  EXPECT_EQ(text.find(made.text.substr(made.text.size() - kSecretLength)), std::string::npos);
  EXPECT_NE(text.find(ToHex(made.digest)), std::string::npos);
}

TEST(TokenFile, WriteReplacesTheFileAtomicallyWithMode0600) {
  TempDir dir;
  const std::string path = dir.path() + "/sub/tokens";
  IOT_ASSERT_OK(WriteTokensFile(path, Sample()));
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  EXPECT_EQ(before.st_mode & 0777, 0600u);
  // A reader holding the old file keeps reading the old file: the new one is a new inode.
  std::ifstream old_reader(path);
  auto fewer = Sample();
  fewer.pop_back();
  IOT_ASSERT_OK(WriteTokensFile(path, fewer));
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino);
  EXPECT_EQ(after.st_mode & 0777, 0600u);
  std::string old_text((std::istreambuf_iterator<char>(old_reader)),
                       std::istreambuf_iterator<char>());
  EXPECT_EQ(Must(ParseTokens(old_text)).size(), 4u);
  auto read = Must(ReadTokensFile(path));
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, fewer);
  // No temporary file is left behind.
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/sub")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(TokenFile, AMissingFileIsNoTokensNotAnError) {
  TempDir dir;
  auto read = ReadTokensFile(dir.path() + "/none");
  IOT_ASSERT_OK(read);
  EXPECT_FALSE(*read);
}

TEST(TokenFile, UpdateAppliesTheChangeAndKeepsTheRest) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens";
  IOT_ASSERT_OK(UpdateTokensFile(path, [](std::vector<Token>& tokens) {
    tokens = Sample();
    return Status::Ok();
  }));
  Status refused = UpdateTokensFile(path, [](std::vector<Token>& tokens) {
    tokens.clear();
    return Status(MakeError(Errc::kNotFound, "no"));
  });
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(Must(ReadTokensFile(path))->size(), 4u);
}

TEST(TokenFile, BadLinesAreRefusedNamingTheLine) {
  const std::string digest = ToHex(Sha256("x"));
  const std::string ok = "0123456789ab device " + digest + " 2026-11-29T07:40:00Z - dev-1 n\n";
  IOT_ASSERT_OK(ParseTokens("# comment\n\n" + ok));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"0123456789ab admin " + digest + " 2026-11-29T07:40:00Z - dev-1\n", "unknown kind"},
      {"0123456789ab device abc 2026-11-29T07:40:00Z - dev-1\n", "digest"},
      {"0123456789ab device " + digest + " yesterday - dev-1\n", "created"},
      {"0123456789ab device " + digest + " 2026-11-29T07:40:00Z never dev-1\n", "revoked"},
      {"0123456789ab device " + digest + " 2026-11-29T07:40:00Z - dev/1\n", "invalid device"},
      {"0123456789ab device " + digest + " 2026-11-29T07:40:00Z - a,b\n", "exactly one"},
      {"0123456789ab gateway " + digest + " 2026-11-29T07:40:00Z - a,,b\n", "invalid device"},
      {"0123456789ab read " + digest + " 2026-11-29T07:40:00Z - a*b\n", "prefix"},
      {"0123456789AB device " + digest + " 2026-11-29T07:40:00Z - dev-1\n", "id"},
      {"0123456789ab device " + digest + "\n", "expected"},
      {ok + ok, "appears twice"},
  };
  for (const auto& [text, what] : bad) {
    auto parsed = ParseTokens(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.error().message.find("line"), std::string::npos) << parsed.error().message;
    EXPECT_NE(parsed.error().message.find(what), std::string::npos) << parsed.error().message;
  }
}

TEST(TokenFile, ReadingAnUnparsableFileIsAnErrorNamingThePath) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens";
  WriteText(path, "not a token line\n");
  auto read = ReadTokensFile(path);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.error().message.find(path), std::string::npos);
}

}  // namespace
}  // namespace iot::auth
