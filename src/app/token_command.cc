#include "app/token_command.h"

#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "auth/token.h"
#include "auth/token_file.h"
#include "core/time.h"
#include "http/response.h"

namespace iot::app {
namespace {

std::vector<std::string> SplitIds(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (char ch : text + ",") {
    if (ch == ',') {
      auto b = item.find_first_not_of(' ');
      auto e = item.find_last_not_of(' ');
      out.push_back(b == std::string::npos ? "" : item.substr(b, e - b + 1));
      item.clear();
    } else {
      item += ch;
    }
  }
  return out;
}

// Scope is what a token covers, as list shows it.
std::string Scope(const auth::Token& t) {
  if (t.kind == auth::Kind::kRead) return t.prefix.empty() ? "*" : t.prefix + "*";
  std::string out;
  for (const auto& d : t.devices) out += (out.empty() ? "" : ",") + d;
  return out;
}

std::string Json(std::string_view s) {
  std::string out;
  http::AppendJsonString(out, s);
  return out;
}

int Create(const Config& c, const std::string& path) {
  const auto& o = c.token;
  auth::Token t;
  if (!o.device.empty()) {
    t.kind = auth::Kind::kDevice;
    t.devices = {o.device};
  } else if (!o.gateway.empty()) {
    t.kind = auth::Kind::kGateway;
    t.devices = SplitIds(o.gateway);
  } else if (o.read) {
    t.kind = auth::Kind::kRead;
    t.prefix = o.prefix;
  } else {
    std::cerr << "iotd token create: say what the token is for: --device ID, --gateway ID,ID,... "
                 "or --read [--prefix P]\n";
    return 2;
  }
  t.name = o.name;
  t.created = core::SystemClock().Now();
  t.id = "000000000000";  // checked below with the real id
  if (Status s = auth::CheckToken(t); !s) {
    std::cerr << "iotd token create: " << s.error().message << "\n";
    return 2;
  }
  auth::MadeToken made;
  Status s = auth::UpdateTokensFile(path, [&](std::vector<auth::Token>& tokens) {
    // A new id until it is unique (48 random bits: a collision is rare, but never allowed).
    for (bool unique = false; !unique;) {
      made = auth::MakeToken();
      unique = true;
      for (const auto& other : tokens) unique = unique && other.id != made.id;
    }
    t.id = made.id;
    t.digest = made.digest;
    tokens.push_back(t);
    return Status::Ok();
  });
  if (!s) {
    std::cerr << "iotd token create: " << s.error().message << "\n";
    return 1;
  }
  std::cerr << fmt::format("created {} token {} for {} in {}; it is shown only now, keep it "
                           "secret\n",
                           auth::KindName(t.kind), t.id, Scope(t), path);
  std::cout << made.text << std::endl;
  return 0;
}

int List(const Config& c, const std::string& path) {
  auto read = auth::ReadTokensFile(path);
  if (!read) {
    std::cerr << "iotd token list: " << read.error().message << "\n";
    return 1;
  }
  const std::vector<auth::Token> tokens = read->value_or(std::vector<auth::Token>{});
  if (c.token.json) {
    std::string out = "[";
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const auto& t = tokens[i];
      std::string devices = "[";
      for (std::size_t j = 0; j < t.devices.size(); ++j) {
        devices += (j ? "," : "") + Json(t.devices[j]);
      }
      devices += "]";
      out += fmt::format(
          "{}\n  {{\"id\":{},\"kind\":{},\"devices\":{},\"prefix\":{},\"name\":{},"
          "\"created\":{},\"revoked\":{}}}",
          i ? "," : "", Json(t.id), Json(auth::KindName(t.kind)), devices,
          t.kind == auth::Kind::kRead ? Json(t.prefix) : "null", Json(t.name),
          Json(core::FormatIso8601(t.created)),
          t.revoked ? Json(core::FormatIso8601(*t.revoked)) : "null");
    }
    out += tokens.empty() ? "]\n" : "\n]\n";
    std::cout << out;
    return 0;
  }
  std::cout << fmt::format("{:<12}  {:<7}  {:<27}  {:<30}  {:<27}  {}\n", "ID", "KIND", "CREATED",
                           "DEVICES / PREFIX", "REVOKED", "NAME");
  for (const auto& t : tokens) {
    std::cout << fmt::format("{:<12}  {:<7}  {:<27}  {:<30}  {:<27}  {}\n", t.id,
                             auth::KindName(t.kind), core::FormatIso8601(t.created), Scope(t),
                             t.revoked ? core::FormatIso8601(*t.revoked) : "-", t.name);
  }
  return 0;
}

int Revoke(const Config& c, const std::string& path) {
  bool already = false;
  Status s = auth::UpdateTokensFile(path, [&](std::vector<auth::Token>& tokens) {
    for (auto& t : tokens) {
      if (t.id != c.token.id) continue;
      already = t.revoked.has_value();
      if (!already) t.revoked = core::SystemClock().Now();
      return Status::Ok();
    }
    return Status(MakeError(Errc::kNotFound, "no token " + c.token.id + " in " + path));
  });
  if (!s) {
    std::cerr << "iotd token revoke: " << s.error().message << "\n";
    return 1;
  }
  std::cout << (already ? "already revoked " : "revoked ") << c.token.id << std::endl;
  return 0;
}

}  // namespace

int RunToken(const Config& c) {
  const std::string path = TokensFile(c);
  switch (c.role) {
    case Role::kTokenCreate: return Create(c, path);
    case Role::kTokenList: return List(c, path);
    case Role::kTokenRevoke: return Revoke(c, path);
    default: return 2;
  }
}

}  // namespace iot::app
