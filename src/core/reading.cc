#include "core/reading.h"

namespace iot::core {

const SensorValue* Reading::Find(std::string_view name) const {
  for (const auto& s : sensors) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace iot::core
