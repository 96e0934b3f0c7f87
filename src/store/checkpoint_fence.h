// checkpoint_fence.h: the decision Store::Apply makes from a batch's checkpoint and the stored
// one (store.h), shared by the implementations (private to src/store).
//
//   switch (DecideFence(*batch.checkpoint, stored_next_offset)) {
//     case Fence::kSkip: return Status::Ok();                  // applied already
//     case Fence::kAbort: return FenceError(*batch.checkpoint, *stored_next_offset);
//     case Fence::kApply: break;
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/result.h"
#include "store/store.h"

namespace iot::store {

enum class Fence {
  kApply,  // the batch starts at or after the stored position (or nothing is stored)
  kSkip,   // the stored position is at or past the batch's end: it was applied already
  kAbort,  // the stored position is inside the batch: another worker applied part of it
};

// DecideFence compares the batch's [from_offset, next_offset) with S, the stored next offset of
// its (consumer, partition) (nullopt: none stored yet).
inline Fence DecideFence(const Checkpoint& cp, std::optional<std::int64_t> stored) {
  if (!stored) return Fence::kApply;
  if (cp.next_offset <= *stored) return Fence::kSkip;
  if (cp.from_offset < *stored) return Fence::kAbort;
  return Fence::kApply;
}

// FenceError is the kAborted error of a batch that DecideFence aborted.
inline Error FenceError(const Checkpoint& cp, std::int64_t stored) {
  return MakeError(Errc::kAborted,
                   "checkpoint " + cp.consumer + "/" + std::to_string(cp.partition) + " is at " +
                       std::to_string(stored) + ", inside the batch [" +
                       std::to_string(cp.from_offset) + ", " + std::to_string(cp.next_offset) +
                       "): another worker applied part of it; reload the checkpoint");
}

}  // namespace iot::store
