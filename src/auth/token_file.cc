#include "auth/token_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/reading.h"

namespace iot::auth {
namespace {

constexpr std::string_view kHeader =
    "# iotd tokens (written by `iotd token`; secrets are never stored, only their SHA-256)\n"
    "# id kind sha256 created revoked scope name\n";

Error Bad(std::size_t line, const std::string& what) {
  return {Errc::kInvalidArgument, "tokens file line " + std::to_string(line) + ": " + what};
}

// NextField splits off the text up to the next space.
std::string_view NextField(std::string_view& rest) {
  const std::size_t sp = rest.find(' ');
  std::string_view field = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  return field;
}

bool ValidDeviceId(std::string_view id) {
  return core::IsValidDeviceId(id, core::ReadingLimits{}.max_device_id_length);
}

std::string ErrnoText(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// FdCloser closes a descriptor at the end of a scope.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Status CheckToken(const Token& t) {
  if (t.id.size() != kIdLength ||
      t.id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "id must be 12 lowercase hex characters");
  }
  switch (t.kind) {
    case Kind::kDevice:
      if (t.devices.size() != 1) {
        return MakeError(Errc::kInvalidArgument, "a device token names exactly one device");
      }
      break;
    case Kind::kGateway:
      if (t.devices.empty()) {
        return MakeError(Errc::kInvalidArgument, "a gateway token names at least one device");
      }
      break;
    case Kind::kRead:
      if (!t.devices.empty()) {
        return MakeError(Errc::kInvalidArgument, "a read token names no devices");
      }
      if (!ValidPrefix(t.prefix)) {
        return MakeError(Errc::kInvalidArgument,
                         "invalid prefix '" + t.prefix + "' (characters of a device id)");
      }
      break;
  }
  if (t.kind != Kind::kRead && !t.prefix.empty()) {
    return MakeError(Errc::kInvalidArgument, "only read tokens have a prefix");
  }
  std::set<std::string_view> seen;
  for (const auto& d : t.devices) {
    if (!ValidDeviceId(d)) {
      return MakeError(Errc::kInvalidArgument,
                       "invalid device id '" + d + "' (1-128 characters of [A-Za-z0-9._:@~-])");
    }
    if (!seen.insert(d).second) {
      return MakeError(Errc::kInvalidArgument, "device " + d + " listed twice");
    }
  }
  for (unsigned char c : t.name) {
    if (c < 0x20 || c == 0x7f) {
      return MakeError(Errc::kInvalidArgument, "the name must not hold control characters");
    }
  }
  return Status::Ok();
}

Result<std::vector<Token>> ParseTokens(std::string_view text) {
  std::vector<Token> tokens;
  std::set<std::string> ids;
  std::set<std::string> digests;
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    std::string_view rest = line;
    Token t;
    t.id = std::string(NextField(rest));
    const std::string_view kind = NextField(rest);
    const std::string_view digest = NextField(rest);
    const std::string_view created = NextField(rest);
    const std::string_view revoked = NextField(rest);
    const std::string_view scope = NextField(rest);
    t.name = std::string(rest);
    if (scope.empty()) return Bad(number, "expected: id kind sha256 created revoked scope [name]");
    auto k = ParseKind(kind);
    if (!k) return Bad(number, "unknown kind '" + std::string(kind) + "' (device, gateway, read)");
    t.kind = *k;
    auto d = FromHex(digest);
    if (!d) return Bad(number, "the digest must be 64 lowercase hex characters (SHA-256)");
    t.digest = *d;
    auto c = core::ParseIso8601(created);
    if (!c) return Bad(number, "created is not an ISO 8601 time");
    t.created = *c;
    if (revoked != "-") {
      auto r = core::ParseIso8601(revoked);
      if (!r) return Bad(number, "revoked is neither - nor an ISO 8601 time");
      t.revoked = *r;
    }
    if (t.kind == Kind::kRead) {
      if (scope != "*") t.prefix = std::string(scope);
    } else {
      std::string_view ids_text = scope;
      while (true) {
        const std::size_t comma = ids_text.find(',');
        t.devices.emplace_back(ids_text.substr(0, comma));
        if (comma == std::string_view::npos) break;
        ids_text.remove_prefix(comma + 1);
      }
    }
    if (Status s = CheckToken(t); !s) return Bad(number, s.error().message);
    if (!ids.insert(t.id).second) return Bad(number, "id " + t.id + " appears twice");
    if (!digests.insert(ToHex(t.digest)).second) return Bad(number, "a digest appears twice");
    tokens.push_back(std::move(t));
  }
  return tokens;
}

std::string FormatTokens(const std::vector<Token>& tokens) {
  std::string out(kHeader);
  for (const auto& t : tokens) {
    out += t.id;
    out += ' ';
    out += KindName(t.kind);
    out += ' ';
    out += ToHex(t.digest);
    out += ' ';
    out += core::FormatIso8601(t.created);
    out += ' ';
    out += t.revoked ? core::FormatIso8601(*t.revoked) : "-";
    out += ' ';
    if (t.kind == Kind::kRead) {
      out += t.prefix.empty() ? "*" : t.prefix;
    } else {
      for (std::size_t i = 0; i < t.devices.size(); ++i) {
        if (i > 0) out += ',';
        out += t.devices[i];
      }
    }
    out += ' ';
    out += t.name;
    out += '\n';
  }
  return out;
}

Result<std::optional<std::vector<Token>>> ReadTokensFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::optional<std::vector<Token>>();
    return MakeError(Errc::kUnavailable, ErrnoText("cannot read the tokens file", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto tokens = ParseTokens(text.str());
  if (!tokens) return MakeError(Errc::kInvalidArgument, path + ": " + tokens.error().message);
  return std::optional<std::vector<Token>>(std::move(*tokens));
}

Status WriteTokensFile(const std::string& path, const std::vector<Token>& tokens) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string tmp =
      (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  const std::string text = FormatTokens(tokens);
  {
    FdCloser f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (f.fd < 0) return MakeError(Errc::kUnavailable, ErrnoText("cannot create", tmp));
    // The mode of an existing temporary file (left by a crash) is set again, whatever the umask.
    if (::fchmod(f.fd, 0600) != 0) return MakeError(Errc::kUnavailable, ErrnoText("chmod", tmp));
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(f.fd, text.data() + done, text.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        ::unlink(tmp.c_str());
        return MakeError(Errc::kUnavailable, ErrnoText("cannot write", tmp));
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fsync(f.fd) != 0) {
      ::unlink(tmp.c_str());
      return MakeError(Errc::kUnavailable, ErrnoText("cannot sync", tmp));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return MakeError(Errc::kUnavailable, ErrnoText("cannot replace", path));
  }
  FdCloser d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) (void)::fsync(d.fd);  // the rename itself is durable once the directory is
  return Status::Ok();
}

Status UpdateTokensFile(const std::string& path,
                        const std::function<Status(std::vector<Token>&)>& change) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string lock_path = path + ".lock";
  FdCloser lock{::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)};
  if (lock.fd < 0) return MakeError(Errc::kUnavailable, ErrnoText("cannot open", lock_path));
  while (::flock(lock.fd, LOCK_EX) != 0) {
    if (errno != EINTR) return MakeError(Errc::kUnavailable, ErrnoText("cannot lock", lock_path));
  }
  auto read = ReadTokensFile(path);
  if (!read) return read.error();
  std::vector<Token> tokens = read->value_or(std::vector<Token>{});
  if (Status s = change(tokens); !s) return s;
  return WriteTokensFile(path, tokens);
}

}  // namespace iot::auth
