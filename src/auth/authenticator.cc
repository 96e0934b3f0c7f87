#include "auth/authenticator.h"

#include <cstring>
#include <unordered_map>

#include <sys/stat.h>

#include "auth/token_file.h"

namespace iot::auth {
namespace {

struct DigestHash {
  std::size_t operator()(const Digest& d) const {
    std::size_t h = 0;
    std::memcpy(&h, d.data(), sizeof h);  // a SHA-256 digest is uniformly distributed already
    return h;
  }
};

// DigestEq compares in constant time: the hash map's own comparison is the check of the token.
struct DigestEq {
  bool operator()(const Digest& a, const Digest& b) const { return DigestsEqual(a, b); }
};

std::int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Authenticator::Snapshot {
  std::vector<Token> tokens;
  std::unordered_map<Digest, const Token*, DigestHash, DigestEq> by_digest;
  std::size_t valid = 0;
};

const char* DenialName(Denial d) {
  switch (d) {
    case Denial::kMissing: return "missing";
    case Denial::kMalformed: return "malformed";
    case Denial::kUnknown: return "unknown";
    case Denial::kRevoked: return "revoked";
  }
  return "?";
}

Authenticator::Authenticator(Options options) : options_(std::move(options)) {}
Authenticator::~Authenticator() = default;

Result<std::unique_ptr<Authenticator>> Authenticator::Open(Options options) {
  std::unique_ptr<Authenticator> a(new Authenticator(std::move(options)));
  const FileId id = a->Stat();
  if (Status s = a->Load(id); !s) return s.error();
  a->next_check_ns_ = SteadyNs() + std::chrono::nanoseconds(a->options_.check_interval).count();
  return a;
}

Authenticator::FileId Authenticator::Stat() const {
  struct stat st {};
  FileId id;
  if (::stat(options_.path.c_str(), &st) != 0) return id;
  id.exists = true;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<std::uint64_t>(st.st_size);
  id.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  id.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  return id;
}

Status Authenticator::Load(const FileId& id) {
  auto snapshot = std::make_shared<Snapshot>();
  Status result = Status::Ok();
  if (id.exists) {
    auto read = ReadTokensFile(options_.path);
    if (!read) {
      result = read.error();
    } else if (*read) {
      snapshot->tokens = std::move(**read);
    }
  }
  if (result.ok()) {
    for (const Token& t : snapshot->tokens) {
      snapshot->by_digest.emplace(t.digest, &t);
      if (!t.revoked) ++snapshot->valid;
    }
    std::lock_guard lock(mu_);
    snapshot_ = std::move(snapshot);
    loaded_ = id;
  } else {
    // Keep the last good tokens, but do not read the broken file again until it changes.
    std::lock_guard lock(mu_);
    loaded_ = id;
  }
  if (options_.on_reload) {
    options_.on_reload(result, result.ok() ? ValidTokens() : 0, id.exists);
  }
  return result;
}

void Authenticator::Refresh() {
  std::lock_guard reload(reload_mu_);
  const FileId id = Stat();
  {
    std::lock_guard lock(mu_);
    if (id == loaded_ && snapshot_) return;
  }
  (void)Load(id);  // reported through on_reload
}

std::shared_ptr<const Authenticator::Snapshot> Authenticator::Current() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

std::size_t Authenticator::ValidTokens() const {
  auto s = Current();
  return s ? s->valid : 0;
}

std::variant<TokenRef, Denial> Authenticator::Authenticate(std::string_view presented) {
  const std::int64_t now = SteadyNs();
  std::int64_t due = next_check_ns_.load(std::memory_order_relaxed);
  if (now >= due &&
      next_check_ns_.compare_exchange_strong(
          due, now + std::chrono::nanoseconds(options_.check_interval).count())) {
    Refresh();
  }
  if (presented.empty()) return Denial::kMissing;
  if (!WellFormed(presented)) return Denial::kMalformed;
  const Digest digest = Sha256(presented);
  auto snapshot = Current();
  if (!snapshot) return Denial::kUnknown;
  auto it = snapshot->by_digest.find(digest);
  if (it == snapshot->by_digest.end()) return Denial::kUnknown;
  if (it->second->revoked) return Denial::kRevoked;
  return TokenRef(snapshot, it->second);  // shares the snapshot's lifetime
}

}  // namespace iot::auth
