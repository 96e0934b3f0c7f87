// token_file.h: the tokens file (TOKENS_FILE): every token's id, kind, digest and scope, never a
// secret. A text file, one token per line, so that it diffs and greps well:
//
//   # iotd tokens (written by `iotd token`; secrets are never stored, only their SHA-256)
//   3f9a2b1c4d5e device 9c1e...64 hex... 2026-11-29T07:40:00Z - dev-1 boiler room sensor
//   0a1b2c3d4e5f gateway 77ab... 2026-11-29T07:41:00Z - dev-1,dev-2,dev-3 site A gateway
//   ffee00112233 read 1d2c... 2026-11-29T07:42:00Z 2026-11-30T08:00:00Z site-a- dashboard
//
// Fields: id, kind, digest, created, revoked (`-` while valid), scope (the device id; the
// gateway's ids joined by commas; a read token's device-id prefix, `*` for every device), then
// the name (the rest of the line, possibly empty). `#` lines and blank lines are ignored.
//
// WriteTokensFile replaces the file atomically (a temporary file in the same directory, mode
// 0600, fsync, rename, fsync of the directory): a reader sees the old or the new file, never
// half of one. UpdateTokensFile serialises read-modify-write cycles of `iotd token` processes
// with an flock on `<path>.lock`.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/token.h"
#include "core/result.h"

namespace iot::auth {

// ParseTokens parses a tokens file's text; the error names the line and what is wrong (an
// unknown kind, a bad digest, an invalid device id, a duplicate id or digest, ...).
Result<std::vector<Token>> ParseTokens(std::string_view text);

// FormatTokens renders tokens in the file's format, with the header comment.
std::string FormatTokens(const std::vector<Token>& tokens);

// ReadTokensFile reads and parses `path`; nullopt when the file does not exist.
Result<std::optional<std::vector<Token>>> ReadTokensFile(const std::string& path);

// WriteTokensFile replaces `path` atomically with `tokens` (mode 0600; see above).
Status WriteTokensFile(const std::string& path, const std::vector<Token>& tokens);

// UpdateTokensFile reads `path` (a missing file is empty), lets `change` modify the tokens, and
// writes them back atomically, holding an exclusive lock on `<path>.lock` throughout. `change`
// may return an error, which is returned and nothing is written.
Status UpdateTokensFile(const std::string& path,
                        const std::function<Status(std::vector<Token>&)>& change);

// CheckToken validates one token's fields (as ParseTokens does for each line).
Status CheckToken(const Token& token);

}  // namespace iot::auth
