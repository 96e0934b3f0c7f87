// logging.h: one JSON object per line on stderr, at LOG_LEVEL.
//
//   {"ts":"2026-11-27T21:17:08.123456Z","level":"info","logger":"iotd","msg":"..."}
#pragma once

#include <string_view>

namespace iot::app {

// InitLogging installs the JSON logger as spdlog's default; returns false for an unknown level.
bool InitLogging(std::string_view level);

}  // namespace iot::app
