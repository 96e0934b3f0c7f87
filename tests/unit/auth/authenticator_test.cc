// authenticator_test.cc: checking presented tokens, and following changes of the tokens file.
#include "auth/authenticator.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "auth/token_file.h"
#include "testing/test_util.h"

namespace iot::auth {
namespace {

using ::iot::testing::TempDir;

struct Fixture {
  TempDir dir;
  std::string path = dir.path() + "/tokens";
  std::vector<Token> tokens;

  // Add makes a token, stores it and returns its text.
  std::string Add(Kind kind, std::vector<std::string> devices, std::string prefix = "") {
    MadeToken made = MakeToken();
    Token t{.id = made.id, .kind = kind, .devices = std::move(devices),
            .prefix = std::move(prefix), .digest = made.digest};
    tokens.push_back(t);
    EXPECT_TRUE(WriteTokensFile(path, tokens).ok());
    return made.text;
  }
  std::unique_ptr<Authenticator> Open(std::chrono::milliseconds interval =
                                          std::chrono::milliseconds(0)) {
    auto a = Authenticator::Open({.path = path, .check_interval = interval});
    EXPECT_TRUE(a.ok());
    return a.ok() ? std::move(*a) : nullptr;
  }
};

Denial DenialOf(const std::variant<TokenRef, Denial>& v) {
  return std::holds_alternative<Denial>(v) ? std::get<Denial>(v) : Denial::kMissing;
}

TEST(Authenticator, AcceptsAStoredTokenAndSaysWhatItMayDo) {
  Fixture f;
  const std::string text = f.Add(Kind::kGateway, {"dev-1", "dev-2"});
  auto a = f.Open();
  auto who = a->Authenticate(text);
  ASSERT_TRUE(std::holds_alternative<TokenRef>(who));
  const TokenRef& t = std::get<TokenRef>(who);
  EXPECT_EQ(t->kind, Kind::kGateway);
  EXPECT_TRUE(t->MayWrite("dev-2"));
  EXPECT_FALSE(t->MayWrite("dev-3"));
}

TEST(Authenticator, TellsMissingMalformedAndUnknownApart) {
  Fixture f;
  const std::string text = f.Add(Kind::kDevice, {"dev-1"});
  auto a = f.Open();
  EXPECT_EQ(DenialOf(a->Authenticate("")), Denial::kMissing);
  EXPECT_EQ(DenialOf(a->Authenticate("password")), Denial::kMalformed);
  // Same id, another secret: well-formed, unknown.
  std::string other = text;
  other.back() = other.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(DenialOf(a->Authenticate(other)), Denial::kUnknown);
  EXPECT_EQ(DenialOf(a->Authenticate(MakeToken().text)), Denial::kUnknown);
}

TEST(Authenticator, NoFileMeansNoValidToken) {
  Fixture f;
  auto a = f.Open();
  EXPECT_EQ(a->ValidTokens(), 0u);
  EXPECT_EQ(DenialOf(a->Authenticate(MakeToken().text)), Denial::kUnknown);
}

TEST(Authenticator, ABrokenFileAtStartIsAnError) {
  Fixture f;
  std::ofstream(f.path) << "garbage\n";
  auto a = Authenticator::Open({.path = f.path});
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("line 1"), std::string::npos);
}

TEST(Authenticator, ARevokedTokenStopsWorkingAtTheNextCheck) {
  Fixture f;
  const std::string text = f.Add(Kind::kDevice, {"dev-1"});
  auto a = f.Open();
  ASSERT_TRUE(std::holds_alternative<TokenRef>(a->Authenticate(text)));
  f.tokens[0].revoked = core::Timestamp{};
  IOT_ASSERT_OK(WriteTokensFile(f.path, f.tokens));
  EXPECT_EQ(DenialOf(a->Authenticate(text)), Denial::kRevoked);
  EXPECT_EQ(a->ValidTokens(), 0u);
}

TEST(Authenticator, ANewTokenWorksAfterRefresh) {
  Fixture f;
  f.Add(Kind::kDevice, {"dev-1"});
  // A long interval: nothing is re-read on use, Refresh does it.
  auto a = f.Open(std::chrono::hours(1));
  const std::string second = f.Add(Kind::kRead, {}, "site-");
  EXPECT_EQ(DenialOf(a->Authenticate(second)), Denial::kUnknown);
  a->Refresh();
  auto who = a->Authenticate(second);
  ASSERT_TRUE(std::holds_alternative<TokenRef>(who));
  EXPECT_TRUE(std::get<TokenRef>(who)->InScope("site-9"));
}

TEST(Authenticator, ABrokenRewriteKeepsTheLastGoodTokens) {
  Fixture f;
  const std::string text = f.Add(Kind::kDevice, {"dev-1"});
  Status reported = Status::Ok();
  auto a = Authenticator::Open(
      {.path = f.path,
       .check_interval = std::chrono::milliseconds(0),
       .on_reload = [&reported](const Status& s, std::size_t, bool) { reported = s; }});
  ASSERT_TRUE(a.ok());
  {
    std::ofstream out(f.path + ".new");
    out << "garbage\n";
  }
  std::filesystem::rename(f.path + ".new", f.path);
  EXPECT_TRUE(std::holds_alternative<TokenRef>((*a)->Authenticate(text)));
  EXPECT_FALSE(reported.ok());
}

TEST(Authenticator, ADeletedFileLeavesNoTokenValid) {
  Fixture f;
  const std::string text = f.Add(Kind::kDevice, {"dev-1"});
  auto a = f.Open();
  std::filesystem::remove(f.path);
  EXPECT_EQ(DenialOf(a->Authenticate(text)), Denial::kUnknown);
}

TEST(Authenticator, FollowsASymlinkSwapLikeAKubernetesSecret) {
  // A mounted Secret: tokens -> ..data/tokens, ..data -> ..2026_a; an update swaps ..data.
  TempDir dir;
  namespace fs = std::filesystem;
  MadeToken one = MakeToken(), two = MakeToken();
  Token t1{.id = one.id, .kind = Kind::kDevice, .devices = {"d"}, .digest = one.digest};
  Token t2{.id = two.id, .kind = Kind::kDevice, .devices = {"d"}, .digest = two.digest};
  IOT_ASSERT_OK(WriteTokensFile(dir.path() + "/..v1/tokens", {t1}));
  IOT_ASSERT_OK(WriteTokensFile(dir.path() + "/..v2/tokens", {t2}));
  fs::create_directory_symlink("..v1", dir.path() + "/..data");
  fs::create_symlink("..data/tokens", dir.path() + "/tokens");
  auto a = Authenticator::Open({.path = dir.path() + "/tokens",
                                .check_interval = std::chrono::milliseconds(0)});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(std::holds_alternative<TokenRef>((*a)->Authenticate(one.text)));
  fs::create_directory_symlink("..v2", dir.path() + "/..data_tmp");
  fs::rename(dir.path() + "/..data_tmp", dir.path() + "/..data");
  EXPECT_EQ(DenialOf((*a)->Authenticate(one.text)), Denial::kUnknown);
  EXPECT_TRUE(std::holds_alternative<TokenRef>((*a)->Authenticate(two.text)));
}

}  // namespace
}  // namespace iot::auth
