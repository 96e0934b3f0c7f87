// authenticator.h: checks a presented token against the tokens file, and follows the file.
//
//   auth::Authenticator::Options o{.path = "/var/lib/iotd/tokens"};
//   auto a = auth::Authenticator::Open(o);           // a bad file is an error; none is empty
//   auto who = (*a)->Authenticate(bearer_text);      // a Token, or why not (a Denial)
//   if (auto* t = std::get_if<auth::TokenRef>(&who)) (*t)->MayWrite("dev-1");
//
// The check: a malformed text is refused before any hashing; otherwise the SHA-256 of the text is
// looked up in a hash map keyed by digest whose key comparison is CRYPTO_memcmp, so the time
// taken does not depend on how much of a stored digest the presented one matches (and the
// digest of a guess tells nothing about a secret anyway). Revoked tokens stay in the file so
// their use is counted as `revoked`, not `unknown`.
//
// Following the file: at most every `check_interval` (on use, no thread of its own) the file's
// identity (device, inode, size, modification and change times; stat follows symlinks, so a
// Kubernetes Secret's atomic symlink swap counts) is compared with the loaded one, and a changed
// file is read again. A file that cannot be parsed any more leaves the last good tokens in place
// (reported through `on_reload`); a file that disappears leaves no token valid.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>

#include "auth/token.h"
#include "core/result.h"

namespace iot::auth {

// Denial is why a presented token was not accepted (the `reason` label of the metrics).
enum class Denial {
  kMissing,    // no credentials at all
  kMalformed,  // not the form of a token (or not "Bearer <token>")
  kUnknown,    // well-formed, but no such token
  kRevoked,    // a token that was revoked
};
const char* DenialName(Denial d);

// TokenRef is an accepted token; it stays valid after the file is reloaded.
using TokenRef = std::shared_ptr<const Token>;

class Authenticator {
 public:
  struct Options {
    std::string path = {};                            // TOKENS_FILE
    std::chrono::milliseconds check_interval{1000};   // how stale the tokens may be
    // on_reload is called after the file was (re)read at start-up or after a change: Ok with
    // the number of valid tokens and whether the file exists, or the error that kept the last
    // good tokens. From the thread of the request that noticed the change.
    std::function<void(const Status&, std::size_t valid, bool exists)> on_reload = {};
  };

  // Open reads the file once. A missing file is an empty set; a file that cannot be read or
  // parsed is an error (start-up refuses it).
  static Result<std::unique_ptr<Authenticator>> Open(Options options);

  // Authenticate checks a presented token's text; may first reload the file (see above).
  std::variant<TokenRef, Denial> Authenticate(std::string_view presented);

  // Refresh compares the file's identity with the loaded one now and reloads it when it changed.
  void Refresh();

  // ValidTokens counts the loaded tokens that are not revoked.
  std::size_t ValidTokens() const;

  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

 private:
  struct Snapshot;
  struct FileId {
    bool exists = false;
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
    friend bool operator==(const FileId&, const FileId&) = default;
  };
  explicit Authenticator(Options options);
  FileId Stat() const;
  Status Load(const FileId& id);
  std::shared_ptr<const Snapshot> Current() const;

  const Options options_;
  mutable std::mutex mu_;                 // guards snapshot_ and loaded_
  std::shared_ptr<const Snapshot> snapshot_;
  FileId loaded_;
  std::mutex reload_mu_;                  // one reload at a time
  std::atomic<std::int64_t> next_check_ns_{0};
};

}  // namespace iot::auth
