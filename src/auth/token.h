// token.h: access tokens: their format, how they are made and how they are kept.
//
// A token is `iotd_<id>_<secret>`: the prefix makes a leaked token recognisable (secret
// scanners, logs), `id` is 12 lowercase hex characters (48 random bits) that name the token in
// `iotd token list` and `iotd token revoke` and are not secret, and `secret` is 32 random bytes
// (256 bits) in unpadded base64url (43 characters). Only the SHA-256 digest of the whole token
// is stored: a fast hash is right here because the secret is random and long (no dictionary or
// brute force can search 2^256 secrets, so a slow password hash would only slow every request).
//
//   auto made = auth::MakeToken();                   // {token text, id, digest}
//   auth::Token t{.id = made.id, .kind = auth::Kind::kDevice, .devices = {"dev-1"}, ...};
//   t.digest = made.digest;                          // show made.text once, keep only t
//   t.MayWrite("dev-1");                             // true
//
// Everything here is pure and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.h"

namespace iot::auth {

// Kind is what a token is for.
enum class Kind {
  kDevice,   // writes readings of one device (POST /ingest, /ingest/batch)
  kGateway,  // writes readings of a set of devices
  kRead,     // reads the dashboard API and UI, optionally only devices whose id has a prefix
};

const char* KindName(Kind kind);
std::optional<Kind> ParseKind(std::string_view name);

using Digest = std::array<std::uint8_t, 32>;

// Token is a stored token: everything but the secret.
struct Token {
  std::string id = {};               // public short id (kIdLength lowercase hex characters)
  Kind kind = Kind::kDevice;
  std::vector<std::string> devices = {};  // kDevice: one id; kGateway: one or more
  std::string prefix = {};           // kRead: device-id prefix scope ("" = every device)
  std::string name = {};             // for people: what or who holds it (no control characters)
  core::Timestamp created{};
  std::optional<core::Timestamp> revoked = {};  // set by `iotd token revoke`; never valid again
  Digest digest{};                   // SHA-256 of the whole token text

  // MayWrite reports whether this token may write readings of `device_id`.
  bool MayWrite(std::string_view device_id) const;
  // MayRead reports whether this is a read token (of any scope).
  bool MayRead() const { return kind == Kind::kRead; }
  // InScope reports whether a read token may see `device_id` (its id starts with `prefix`).
  bool InScope(std::string_view device_id) const;
  friend bool operator==(const Token&, const Token&) = default;
};

inline constexpr std::string_view kTokenPrefix = "iotd_";
inline constexpr std::size_t kIdLength = 12;
inline constexpr std::size_t kSecretLength = 43;  // 32 bytes, base64url without padding
inline constexpr std::size_t kTokenLength = kTokenPrefix.size() + kIdLength + 1 + kSecretLength;

// MadeToken is a new token: its text (shown once, never stored), id and digest.
struct MadeToken {
  std::string text;
  std::string id;
  Digest digest{};
};

// MakeToken draws a new token from the operating system's CSPRNG (OpenSSL RAND_bytes). Throws
// std::runtime_error when no randomness is available (it is never made up).
MadeToken MakeToken();

// WellFormed reports whether `text` has the form of a token (prefix, lengths, alphabets); a
// cheap check before hashing, so garbage is told apart from unknown tokens in the metrics.
bool WellFormed(std::string_view text);

// TokenId returns the id part of a well-formed token.
std::string_view TokenId(std::string_view text);

// Sha256 returns the SHA-256 digest of `text`.
Digest Sha256(std::string_view text);

// DigestsEqual compares two digests in constant time (CRYPTO_memcmp).
bool DigestsEqual(const Digest& a, const Digest& b);

// ToHex / FromHex convert a digest to and from 64 lowercase hex characters.
std::string ToHex(const Digest& d);
std::optional<Digest> FromHex(std::string_view hex);

// ValidPrefix reports whether `prefix` may scope a read token: empty, or 1..128 characters of a
// device id's alphabet.
bool ValidPrefix(std::string_view prefix);

}  // namespace iot::auth
