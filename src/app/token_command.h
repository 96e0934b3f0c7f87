// token_command.h: `iotd token create|list|revoke`, the tokens file's command-line tool
// (docs/security.md).
//
//   iotd token create --device dev-1 --name "boiler sensor"   # prints the token, once
//   iotd token create --gateway dev-1,dev-2                    # one token for several devices
//   iotd token create --read [--prefix site-a-]                # the dashboard API and UI
//   iotd token list [--json]                                   # ids, kinds, scopes; no secrets
//   iotd token revoke 3f9a2b1c4d5e                             # refused within seconds
//
// `create` prints only the token on stdout (so `TOKEN=$(iotd token create ...)` works) and
// what it made on stderr. Changes are written atomically under a lock (auth/token_file.h);
// running iotd processes pick them up within a second or two. Exit codes: 0 done, 1 failed
// (unknown id, the file cannot be written), 2 bad arguments.
#pragma once

#include "app/config.h"

namespace iot::app {

int RunToken(const Config& config);

}  // namespace iot::app
