// utf8.h: UTF-8 well-formedness, for the places that must never emit invalid UTF-8 (JSON
// error bodies, Prometheus label values).
#pragma once

#include <cstddef>
#include <string_view>

namespace iot::core {

// Utf8SequenceLength returns the length of the well-formed UTF-8 sequence at the start of `s`
// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or 0 when it is not one
// (also for an empty `s`).
std::size_t Utf8SequenceLength(std::string_view s);

}  // namespace iot::core
