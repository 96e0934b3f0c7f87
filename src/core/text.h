// text.h: small string helpers shared by the layers.
#pragma once

#include <string_view>

namespace iot::core {

// TrimBlanks removes the spaces and tabs around `s` (as HTTP headers and option lists allow).
inline std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace iot::core
