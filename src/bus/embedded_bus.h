// embedded_bus.h: the bus of `iotd all`, an append-only log in one SQLite file.
//
// One partition (0). Every Produce call is queued; a single writer thread takes everything that
// is waiting (a group), writes it in ONE SQLite transaction (WAL) and commits; only then is each
// call's callback run with Ok. With Sync::kFull the commit is fsync'd, so an acknowledged message
// survives kill -9 and power loss. A failed commit fails every call of its group and none of its
// messages become visible. Offsets are dense, start at 0 and continue across restarts.
//
// Storage: a row per "frame" (base_offset, count, appended_at, data), where data packs the
// messages of consecutive Produce calls (frame_codec.h), so a commit writes a few rows however
// many messages it holds. Consumer groups and their committed offsets live in the same file;
// frames below every group's committed offset are deleted in small transactions (retention).
//
//   EmbeddedBusOptions options;
//   options.path = data_dir + "/bus.db";
//   auto bus = EmbeddedBus::Open(options);
//   if (!bus) return bus.error();
//   auto producer = (*bus)->NewProducer();
//   producer->Produce({{"dev-1", payload}}, [](Status s) { /* Ok: durable */ });
//   auto consumer = (*bus)->NewConsumer("aggregator");
//   auto records = consumer->Poll(1000, std::chrono::milliseconds(100));
//   ...
//   (*bus)->Close();  // answers what is pending, then stops the writer thread
//
// Lifecycle and threading: EmbeddedBus is thread-safe. Producers and consumers keep the bus's
// internals alive, so they may outlive the EmbeddedBus object; once it is closed (explicitly or
// by its destructor) Produce answers kUnavailable. Produce callbacks run on the writer thread,
// one after the other, so they must be short and must not block (they may call Produce, Commit
// or Close; Flush and ApplyRetention refuse to run there). A call refused at once (closed, queue
// full, too large) gets its callback on the calling thread before Produce returns. The file is
// locked (`<path>.lock`) so that a second bus, also in another process, cannot open it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "bus/bus.h"
#include "core/result.h"
#include "core/time.h"

namespace iot::bus {

// GroupCommitInfo describes one group commit (or one failed attempt), for metrics.
struct GroupCommitInfo {
  std::size_t calls = 0;     // Produce calls answered by this commit
  std::size_t messages = 0;  // messages in those calls
  std::size_t bytes = 0;     // encoded bytes written
  double commit_seconds = 0; // BEGIN .. COMMIT (including the fsync)
  double latency_seconds = 0;// from the oldest call's Produce to its answer
  bool ok = true;            // false: every call of the group got an error
};

struct EmbeddedBusOptions {
  // path is the SQLite file, e.g. DATA_DIR/bus.db; its directory must exist.
  std::string path;
  // sync: kFull fsyncs every commit (durable across power loss); kNormal only at checkpoints
  // (durable across a process crash, not a power loss); kOff never.
  enum class Sync { kOff, kNormal, kFull };
  Sync sync = Sync::kFull;
  // max_group_messages bounds the messages of one commit (a single larger call is still taken).
  std::size_t max_group_messages = 100000;
  // max_pending_messages bounds messages accepted but not yet answered; beyond it Produce fails
  // at once with kResourceExhausted (back-pressure: ingest answers 503).
  std::size_t max_pending_messages = 500000;
  // retention_check_interval: how often frames below every group's committed offset are
  // deleted and committed group offsets are written to the file.
  std::chrono::milliseconds retention_check_interval{1000};
  // max_db_bytes bounds the size of the database file (not counting its WAL); 0 = unlimited.
  // A commit that would grow it further fails with kResourceExhausted until retention frees
  // space: a disk budget for when consumers fall far behind.
  std::uint64_t max_db_bytes = 0;
  // max_frame_bytes: consecutive calls of a group are packed into one row up to this size (a
  // larger call is a row of its own).
  std::size_t max_frame_bytes = 1 << 20;
  // on_group_commit, when set, is called on the writer thread after every commit attempt,
  // before the group's callbacks; it must be cheap (update a histogram).
  std::function<void(const GroupCommitInfo&)> on_group_commit;
  // clock stamps Record::appended_at; nullptr means core::SystemClock(). Must outlive the bus.
  const core::Clock* clock = nullptr;
  // min_end_offset: when the log ends below it, Open moves its end there (persistently), so the
  // next offset assigned is at least this. For a bus file older than its consumers' positions
  // (restored without the store it belongs to, deleted, or a tail lost with SYNC=off): new
  // records then get offsets the consumers have not passed, instead of being skipped.
  std::int64_t min_end_offset = 0;
};

class EmbeddedBusCore;  // the shared internals (embedded_bus.cc)

class EmbeddedBus {
 public:
  // Stats are counters since Open plus the current state, for /metrics.
  struct Stats {
    std::uint64_t groups_committed = 0;
    std::uint64_t messages_committed = 0;
    std::uint64_t calls_committed = 0;
    std::uint64_t bytes_committed = 0;
    std::uint64_t groups_failed = 0;       // commits that failed (their calls got errors)
    std::uint64_t messages_failed = 0;
    std::uint64_t messages_rejected = 0;   // refused at once: closed, full or too large
    std::uint64_t messages_deleted = 0;    // removed by retention
    std::uint64_t maintenance_failures = 0;// retention / group-offset writes that failed
    std::size_t pending_messages = 0;      // accepted, not yet answered (queue depth)
    std::size_t pending_calls = 0;
    std::int64_t begin_offset = 0;         // first offset still stored
    std::int64_t end_offset = 0;           // next offset to be assigned
  };

  // Open opens or creates the bus file, recovers its state (next offset, groups) and starts the
  // writer thread. Fails with kInvalidArgument for bad options, kUnavailable when the file cannot
  // be opened or is locked by another process, kCorruption when it is not a bus file.
  static Result<std::shared_ptr<EmbeddedBus>> Open(const EmbeddedBusOptions& options);

  ~EmbeddedBus();  // Close()
  EmbeddedBus(const EmbeddedBus&) = delete;
  EmbeddedBus& operator=(const EmbeddedBus&) = delete;

  // NewProducer returns a producer writing to this bus.
  std::unique_ptr<Producer> NewProducer();

  // NewConsumer returns a consumer of partition 0 for `group` (e.g. "aggregator"). A non-empty
  // group is registered persistently before this returns: retention keeps everything from its
  // committed offset on, also across restarts. Its first Poll starts at the group's committed
  // offset (a new group: the first stored offset). An empty group is an anonymous reader: not
  // registered, starts at the first stored offset, cannot Commit. If the consumer cannot be set
  // up (bus closed, file unreadable) its Poll returns the error. Two consumers of one group each
  // read every record (there is one partition to assign).
  std::unique_ptr<Consumer> NewConsumer(std::string group);

  // EndOffset is the next offset to be assigned: every offset below it is committed.
  std::int64_t EndOffset() const;
  // FoundEndOffset is where the log ended in the file at Open: below EndOffset when
  // min_end_offset moved the end.
  std::int64_t FoundEndOffset() const;
  // BeginOffset is the first offset still stored (EndOffset when the log is empty).
  std::int64_t BeginOffset() const;

  // ApplyRetention writes the groups' committed offsets and deletes every frame that lies
  // entirely below the minimum of them now, instead of waiting for the periodic check, and
  // returns when it is done. With no group registered nothing is deleted.
  Status ApplyRetention();

  Stats GetStats() const;

  // Close answers every pending Produce call (commits it), writes the groups' offsets, stops
  // the writer thread and closes the writer's connection. Later Produce calls get kUnavailable;
  // consumers still return what is stored, then kUnavailable. Idempotent. Called from a
  // Produce callback it only requests the stop (the writer thread cannot wait for itself).
  void Close();

 private:
  explicit EmbeddedBus(std::shared_ptr<EmbeddedBusCore> core);
  std::shared_ptr<EmbeddedBusCore> core_;
};

}  // namespace iot::bus
