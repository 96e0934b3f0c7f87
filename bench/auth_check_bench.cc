// auth_check_bench.cc: what checking a presented token costs (auth::Authenticator::Authenticate:
// form check, SHA-256, hash-map lookup with a constant-time compare), with 10,000 tokens loaded,
// on one thread and on two (the ingest listener's default HTTP_THREADS). The end-to-end cost on
// POST /ingest is measured by bench/auth_bench.py.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "auth/authenticator.h"
#include "auth/token_file.h"

namespace {

using namespace iot;

struct Fixture {
  std::string path;
  std::string valid;
  std::unique_ptr<auth::Authenticator> authenticator;
  Fixture() {
    path = (std::filesystem::temp_directory_path() /
            ("iotd-auth-bench-" + std::to_string(::getpid())))
               .string();
    std::vector<auth::Token> tokens;
    for (int i = 0; i < 10000; ++i) {
      auth::MadeToken made = auth::MakeToken();
      tokens.push_back({.id = made.id, .kind = auth::Kind::kDevice,
                        .devices = {"dev-" + std::to_string(i)}, .digest = made.digest});
      if (i == 5000) valid = made.text;
    }
    if (!auth::WriteTokensFile(path, tokens).ok()) std::abort();
    authenticator = std::move(*auth::Authenticator::Open({.path = path}));
  }
  ~Fixture() { std::filesystem::remove(path); }
};

Fixture& Shared() {
  static Fixture f;
  return f;
}

void BM_AuthenticateValid(benchmark::State& state) {
  auto& f = Shared();
  for (auto _ : state) benchmark::DoNotOptimize(f.authenticator->Authenticate(f.valid));
}
BENCHMARK(BM_AuthenticateValid)->Threads(1)->Threads(2)->UseRealTime();

void BM_AuthenticateUnknown(benchmark::State& state) {
  auto& f = Shared();
  const std::string unknown = auth::MakeToken().text;
  for (auto _ : state) benchmark::DoNotOptimize(f.authenticator->Authenticate(unknown));
}
BENCHMARK(BM_AuthenticateUnknown)->Threads(1)->UseRealTime();

void BM_Sha256(benchmark::State& state) {
  const std::string token = auth::MakeToken().text;
  for (auto _ : state) benchmark::DoNotOptimize(auth::Sha256(token));
}
BENCHMARK(BM_Sha256);

}  // namespace

BENCHMARK_MAIN();
