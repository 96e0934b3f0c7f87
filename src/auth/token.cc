#include "auth/token.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/reading.h"

namespace iot::auth {
namespace {

constexpr char kHex[] = "0123456789abcdef";
constexpr char kBase64Url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool IsBase64Url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

void RandomBytes(std::uint8_t* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) {
    throw std::runtime_error("no randomness available for a token (RAND_bytes failed)");
  }
}

// Base64Url encodes without padding.
std::string Base64Url(const std::uint8_t* data, std::size_t n) {
  std::string out;
  out.reserve((n * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            data[i + 2];
    out += kBase64Url[(v >> 18) & 63];
    out += kBase64Url[(v >> 12) & 63];
    out += kBase64Url[(v >> 6) & 63];
    out += kBase64Url[v & 63];
  }
  if (n - i == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16;
    out += kBase64Url[(v >> 18) & 63];
    out += kBase64Url[(v >> 12) & 63];
  } else if (n - i == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out += kBase64Url[(v >> 18) & 63];
    out += kBase64Url[(v >> 12) & 63];
    out += kBase64Url[(v >> 6) & 63];
  }
  return out;
}

}  // namespace

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kDevice: return "device";
    case Kind::kGateway: return "gateway";
    case Kind::kRead: return "read";
  }
  return "?";
}

std::optional<Kind> ParseKind(std::string_view name) {
  if (name == "device") return Kind::kDevice;
  if (name == "gateway") return Kind::kGateway;
  if (name == "read") return Kind::kRead;
  return std::nullopt;
}

bool Token::MayWrite(std::string_view device_id) const {
  if (revoked || kind == Kind::kRead) return false;
  for (const auto& d : devices) {
    if (d == device_id) return true;
  }
  return false;
}

bool Token::InScope(std::string_view device_id) const {
  return kind == Kind::kRead && device_id.starts_with(prefix);
}

MadeToken MakeToken() {
  std::uint8_t id_bytes[kIdLength / 2];
  std::uint8_t secret[32];
  RandomBytes(id_bytes, sizeof id_bytes);
  RandomBytes(secret, sizeof secret);
  MadeToken t;
  for (std::uint8_t b : id_bytes) {
    t.id += kHex[b >> 4];
    t.id += kHex[b & 15];
  }
  t.text = std::string(kTokenPrefix) + t.id + "_" + Base64Url(secret, sizeof secret);
  OPENSSL_cleanse(secret, sizeof secret);
  t.digest = Sha256(t.text);
  return t;
}

bool WellFormed(std::string_view text) {
  if (text.size() != kTokenLength || !text.starts_with(kTokenPrefix)) return false;
  std::string_view id = text.substr(kTokenPrefix.size(), kIdLength);
  std::string_view secret = text.substr(kTokenPrefix.size() + kIdLength + 1);
  if (text[kTokenPrefix.size() + kIdLength] != '_') return false;
  for (char c : id) {
    if (!IsLowerHex(c)) return false;
  }
  for (char c : secret) {
    if (!IsBase64Url(c)) return false;
  }
  return true;
}

std::string_view TokenId(std::string_view text) {
  return text.substr(kTokenPrefix.size(), kIdLength);
}

// Sha256 uses a digest fetched once and a context per thread: OpenSSL 3's one-shot SHA256()
// fetches the algorithm from the provider store on every call, under a global lock, which costs
// more than the hashing and serialises the request threads.
Digest Sha256(std::string_view text) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(),
                                                                           EVP_MD_CTX_free);
  Digest d{};
  unsigned int n = 0;
  if (md == nullptr || !ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), text.data(), text.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), d.data(), &n) != 1 || n != d.size()) {
    // Broken invariant: the library cannot hash. Never answer a check without it.
    std::fputs("iotd: OpenSSL cannot compute SHA-256\n", stderr);
    std::abort();
  }
  return d;
}

bool DigestsEqual(const Digest& a, const Digest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string ToHex(const Digest& d) {
  std::string out;
  out.reserve(d.size() * 2);
  for (std::uint8_t b : d) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::optional<Digest> FromHex(std::string_view hex) {
  Digest d{};
  if (hex.size() != d.size() * 2) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < d.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    d[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return d;
}

bool ValidPrefix(std::string_view prefix) {
  return prefix.empty() || core::IsValidDeviceId(prefix, core::ReadingLimits{}.max_device_id_length);
}

}  // namespace iot::auth
