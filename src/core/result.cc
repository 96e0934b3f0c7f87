#include "core/result.h"

namespace iot {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kNotFound: return "not_found";
    case Errc::kAlreadyExists: return "already_exists";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kResourceExhausted: return "resource_exhausted";
    case Errc::kDeadlineExceeded: return "deadline_exceeded";
    case Errc::kCorruption: return "corruption";
    case Errc::kInternal: return "internal";
    case Errc::kAborted: return "aborted";
  }
  return "unknown";
}

}  // namespace iot
