// embedded_bus.cc: see embedded_bus.h.
//
// Data flow: Produce encodes the call's messages on the caller's thread and queues the call;
// the writer thread (Run) takes every queued call up to max_group_messages, writes them as
// frames in one transaction, commits, publishes the new end offset to consumers and answers the
// calls. Between groups it runs maintenance: it writes the groups' committed offsets and
// deletes, in a small transaction, a bounded number of frames below their minimum.
//
// Tables (PRAGMA user_version = 1):
//   frames(base_offset INTEGER PRIMARY KEY, count, appended_at, data)  dense: each frame starts
//                                                                      where the previous ends
//   groups(name PRIMARY KEY, committed)                                consumer group offsets
//   meta(key PRIMARY KEY, value)  'low_water': end of the last deleted frame, so that offsets
//                                 keep increasing when retention has emptied the log
#include "bus/embedded_bus.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <pthread.h>
#include <utility>
#include <vector>

#include "bus/frame_codec.h"
#include "bus/sqlite_db.h"

namespace iot::bus {
namespace {

using SteadyClock = std::chrono::steady_clock;

// kPageSize applies to new files. 16 KiB keeps small commits (single messages) cheap while a
// 1,000-message frame needs only a handful of overflow pages (see bench/bus_bench.cc).
constexpr int kPageSize = 16384;
constexpr std::int64_t kFormatVersion = 1;
constexpr int kBusyTimeoutMs = 10000;
// kRetentionFramesPerTxn bounds one retention transaction so that produce latency stays low.
constexpr std::int64_t kRetentionFramesPerTxn = 256;
// kMaxReserve bounds what Poll reserves up front, whatever max_records says.
constexpr std::size_t kMaxReserve = 4096;

constexpr const char* kSchema = R"sql(
BEGIN;
CREATE TABLE frames(
  base_offset INTEGER PRIMARY KEY,
  count INTEGER NOT NULL,
  appended_at INTEGER NOT NULL,
  data BLOB NOT NULL);
CREATE TABLE groups(
  name TEXT PRIMARY KEY,
  committed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE meta(
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 1;
COMMIT;
)sql";

// tls_writer_of is the core whose writer thread this is (nullptr on other threads), so that
// Close can tell that it is called from a Produce callback.
thread_local const void* tls_writer_of = nullptr;

// ClampTimeout keeps now() + timeout from overflowing (a caller may pass milliseconds::max()).
std::chrono::milliseconds ClampTimeout(std::chrono::milliseconds timeout) {
  return std::clamp(timeout, std::chrono::milliseconds(0),
                    std::chrono::milliseconds(std::chrono::hours(24 * 365)));
}

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// FileLock holds an exclusive flock on a side file for the life of the writer, so that two
// processes (or two opens in one process) never write the same log. A side file is used
// because closing any descriptor of the database file itself would drop SQLite's POSIX locks.
class FileLock {
 public:
  static Result<std::unique_ptr<FileLock>> Acquire(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return MakeError(Errc::kUnavailable, "open " + path + ": " + std::strerror(errno));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd);
      return MakeError(Errc::kUnavailable,
                       "bus " + path + " is locked (another bus has it open): " +
                           std::strerror(err));
    }
    return std::unique_ptr<FileLock>(new FileLock(fd));
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() { ::close(fd_); }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

// PendingCall is one accepted Produce call waiting for its group commit.
struct PendingCall {
  std::string data;  // the encoded entries of its messages (frame_codec.h)
  std::size_t messages = 0;
  Producer::Callback done;
  std::uint64_t seq = 0;
  SteadyClock::time_point enqueued;
};

// OptionalInt64 runs a one-column query: nullopt when it returns no row or NULL.
Result<std::optional<std::int64_t>> OptionalInt64(SqliteDb& db, const char* sql) {
  auto stmt = db.Prepare(sql);
  if (!stmt) return stmt.error();
  auto row = stmt->Step();
  if (!row) return row.error();
  if (!*row || stmt->ColumnIsNull(0)) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>(stmt->ColumnInt64(0));
}

}  // namespace

// EmbeddedBusCore is the state shared by the EmbeddedBus handle, its producers, its consumers
// and the writer thread (which holds a reference until it exits).
class EmbeddedBusCore {
 public:
  explicit EmbeddedBusCore(EmbeddedBusOptions options)
      : options_(std::move(options)),
        clock_(options_.clock != nullptr ? *options_.clock : core::SystemClock()) {}

  ~EmbeddedBusCore() {
    if (writer_.joinable()) {
      // The last reference may be dropped by the writer thread itself as it exits.
      if (std::this_thread::get_id() == writer_.get_id()) {
        writer_.detach();
      } else {
        Close();
      }
    }
  }

  EmbeddedBusCore(const EmbeddedBusCore&) = delete;
  EmbeddedBusCore& operator=(const EmbeddedBusCore&) = delete;

  Status Init();
  void Start(const std::shared_ptr<EmbeddedBusCore>& self) {
    checkpointer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "bus-checkpoint");
      RunCheckpointer();
    });
    writer_ = std::thread([self] {
      pthread_setname_np(pthread_self(), "bus-writer");
      tls_writer_of = self.get();
      self->Run();
    });
  }
  void Close();

  void Produce(std::vector<Message> messages, Producer::Callback done);
  bool Ready() const {
    return !closing_flag_.load(std::memory_order_acquire) &&
           pending_hint_.load(std::memory_order_relaxed) < options_.max_pending_messages;
  }
  Status Flush(std::chrono::milliseconds timeout);

  Result<std::int64_t> RegisterGroup(const std::string& name);
  Status CommitGroup(const std::string& name, std::int64_t next_offset);
  Status ApplyRetention();

  // WaitForData blocks until the end offset passes `next`, `wakeup` is set (it is cleared),
  // the writer has stopped or `deadline` passes; returns the end offset.
  std::int64_t WaitForData(std::int64_t next, SteadyClock::time_point deadline,
                           std::atomic<bool>& wakeup, bool* stopped);
  void WakeConsumers() {
    { std::lock_guard lock(data_mu_); }
    data_cv_.notify_all();
  }

  std::int64_t EndOffset() const { return end_.load(std::memory_order_acquire); }
  std::int64_t BeginOffset() const { return begin_.load(std::memory_order_acquire); }
  EmbeddedBus::Stats GetStats() const;
  const std::string& path() const { return options_.path; }
  std::int64_t found_end() const { return found_end_; }

 private:
  struct MaintenanceResult {
    Status status;
    bool more = false;  // frames below every group's offset remain
  };

  void Run();
  void CommitCalls(std::vector<PendingCall>& calls);
  Status WriteFrames(const std::vector<PendingCall>& calls, std::int64_t* end,
                     std::size_t* bytes);
  MaintenanceResult Maintain(const std::map<std::string, std::int64_t>& groups,
                             const std::map<std::string, std::int64_t>& dirty,
                             bool delete_frames);
  Result<MaintenanceResult> RequestMaintenance();
  Status Rollback(Status cause);
  void Shutdown();
  // RunCheckpointer copies committed WAL frames into the database with passive checkpoints on
  // its own connection, which never block the writer, until StopCheckpointer.
  void RunCheckpointer();
  void StopCheckpointer();

  const EmbeddedBusOptions options_;
  std::int64_t found_end_ = 0;  // where the log ended in the file at Open (set once, by Init)
  const core::Clock& clock_;

  // Owned by the writer thread once started (Init uses them before).
  std::unique_ptr<FileLock> lock_;
  SqliteDb db_;
  SqliteStmt begin_stmt_;
  SqliteStmt commit_stmt_;
  SqliteStmt insert_frame_;
  SqliteStmt upsert_group_;
  SqliteStmt scan_prefix_;
  SqliteStmt delete_frames_;
  SqliteStmt set_low_water_;
  std::string scratch_;  // frame data made of several calls

  std::thread writer_;
  std::mutex join_mu_;

  std::thread checkpointer_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_stop_ = false;  // guarded by checkpoint_mu_

  mutable std::mutex mu_;
  std::condition_variable writer_cv_;    // the writer waits for calls and requests
  std::condition_variable answered_cv_;  // Flush and maintenance requests wait for the writer
  std::deque<PendingCall> queue_;
  std::size_t pending_messages_ = 0;  // accepted and not yet answered (queued or committing)
  std::size_t pending_calls_ = 0;
  bool closing_ = false;
  bool stopped_ = false;
  std::uint64_t last_seq_ = 0;      // of the last accepted call
  std::uint64_t answered_seq_ = 0;  // every call up to this one has been answered
  std::map<std::string, std::int64_t> groups_;  // committed offsets as consumers reported them
  std::map<std::string, std::int64_t> dirty_;   // ... not yet written to the file
  std::uint64_t maintenance_requested_ = 0;
  std::uint64_t maintenance_done_ = 0;
  MaintenanceResult maintenance_result_;
  EmbeddedBus::Stats stats_;  // counters; the state fields are filled by GetStats

  // Read without mu_ on the Produce fast path and by Ready.
  std::atomic<bool> closing_flag_{false};
  std::atomic<std::size_t> pending_hint_{0};
  std::atomic<std::uint64_t> rejected_{0};

  // Visibility for consumers: the writer publishes end_ after each commit.
  std::mutex data_mu_;
  std::condition_variable data_cv_;
  std::atomic<std::int64_t> end_{0};
  std::atomic<std::int64_t> begin_{0};
  bool data_stopped_ = false;  // guarded by data_mu_
};

Status EmbeddedBusCore::Init() {
  auto lock = FileLock::Acquire(options_.path + ".lock");
  if (!lock) return lock.error();
  lock_ = std::move(*lock);

  auto db = SqliteDb::Open(options_.path, SqliteDb::kReadWriteCreate, kBusyTimeoutMs);
  if (!db) return db.error();
  db_ = std::move(*db);

  // page_size only takes effect on a new file, and must precede the switch to WAL.
  if (auto st = db_.Exec(("PRAGMA page_size = " + std::to_string(kPageSize)).c_str()); !st) {
    return st;
  }
  auto mode = db_.QueryText("PRAGMA journal_mode = WAL");
  if (!mode) return mode.error();
  if (*mode != "wal") return MakeError(Errc::kUnavailable, "cannot use WAL mode for " + path());
  const char* sync = options_.sync == EmbeddedBusOptions::Sync::kFull     ? "FULL"
                     : options_.sync == EmbeddedBusOptions::Sync::kNormal ? "NORMAL"
                                                                          : "OFF";
  if (auto st = db_.Exec((std::string("PRAGMA synchronous = ") + sync).c_str()); !st) return st;
  // Keep the WAL file from staying huge after a burst.
  if (auto st = db_.Exec("PRAGMA journal_size_limit = 67108864"); !st) return st;
  // Checkpoints run on their own thread (RunCheckpointer): an automatic checkpoint would run
  // inside a group commit, copy the WAL into the database and fsync it, and every request
  // waiting for that commit would wait for the checkpoint too (p99 latency of POST /ingest).
  if (auto st = db_.Exec("PRAGMA wal_autocheckpoint = 0"); !st) return st;

  auto version = db_.QueryInt64("PRAGMA user_version");
  if (!version) return version.error();
  if (*version == 0) {
    auto tables = db_.QueryInt64("SELECT count(*) FROM sqlite_schema");
    if (!tables) return tables.error();
    if (*tables != 0) return MakeError(Errc::kCorruption, path() + " is not a bus file");
    if (auto st = db_.Exec(kSchema); !st) {
      (void)Rollback(st);
      return st;
    }
  } else if (*version != kFormatVersion) {
    return MakeError(Errc::kCorruption, path() + ": unsupported bus format version " +
                                            std::to_string(*version));
  }
  if (options_.max_db_bytes > 0) {
    auto page_size = db_.QueryInt64("PRAGMA page_size");
    if (!page_size) return page_size.error();
    auto page = static_cast<std::uint64_t>(*page_size);
    std::uint64_t pages = std::max<std::uint64_t>(1, (options_.max_db_bytes + page - 1) / page);
    if (auto st = db_.Exec(("PRAGMA max_page_count = " + std::to_string(pages)).c_str()); !st) {
      return st;
    }
  }

  struct {
    SqliteStmt* stmt;
    const char* sql;
  } statements[] = {
      {&begin_stmt_, "BEGIN IMMEDIATE"},
      {&commit_stmt_, "COMMIT"},
      {&insert_frame_,
       "INSERT INTO frames(base_offset, count, appended_at, data) VALUES(?1, ?2, ?3, ?4)"},
      {&upsert_group_,
       "INSERT INTO groups(name, committed) VALUES(?1, ?2) "
       "ON CONFLICT(name) DO UPDATE SET committed = excluded.committed"},
      {&scan_prefix_,
       "SELECT base_offset, count FROM frames WHERE base_offset >= ?1 "
       "ORDER BY base_offset LIMIT ?2"},
      {&delete_frames_, "DELETE FROM frames WHERE base_offset < ?1"},
      {&set_low_water_,
       "INSERT INTO meta(key, value) VALUES('low_water', ?1) "
       "ON CONFLICT(key) DO UPDATE SET value = excluded.value"},
  };
  for (auto& s : statements) {
    auto stmt = db_.Prepare(s.sql);
    if (!stmt) return stmt.error();
    *s.stmt = std::move(*stmt);
  }

  // Recover the offsets: the log ends where its last frame ends, or at the low-water mark
  // when retention deleted every frame.
  auto low_water = OptionalInt64(db_, "SELECT value FROM meta WHERE key = 'low_water'");
  if (!low_water) return low_water.error();
  auto last_end = OptionalInt64(
      db_, "SELECT base_offset + count FROM frames ORDER BY base_offset DESC LIMIT 1");
  if (!last_end) return last_end.error();
  auto first = OptionalInt64(db_, "SELECT base_offset FROM frames ORDER BY base_offset LIMIT 1");
  if (!first) return first.error();
  std::int64_t end = std::max(low_water->value_or(0), last_end->value_or(0));
  found_end_ = end;
  if (end < options_.min_end_offset) {
    // Offsets [end, min_end_offset) are never assigned: the low-water mark moves past them.
    set_low_water_.BindInt64(1, options_.min_end_offset);
    if (Status st = set_low_water_.Run(); !st) return st;
    end = options_.min_end_offset;
  }
  end_.store(end);
  begin_.store(first->value_or(end));

  auto groups = db_.Prepare("SELECT name, committed FROM groups");
  if (!groups) return groups.error();
  for (;;) {
    auto row = groups->Step();
    if (!row) return row.error();
    if (!*row) break;
    groups_.emplace(std::string(groups->ColumnBlob(0)), groups->ColumnInt64(1));
  }
  return Status::Ok();
}

void EmbeddedBusCore::Close() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
    closing_flag_.store(true, std::memory_order_release);
  }
  writer_cv_.notify_all();
  // From a callback (the writer thread) we can only request the stop.
  if (tls_writer_of == this) return;
  std::lock_guard join_lock(join_mu_);
  if (writer_.joinable()) writer_.join();
}

void EmbeddedBusCore::Produce(std::vector<Message> messages, Producer::Callback done) {
  const std::size_t n = messages.size();
  auto reject = [&](Errc code, const char* why) {
    rejected_.fetch_add(n, std::memory_order_relaxed);
    done(MakeError(code, why));
  };
  // Cheap checks first so that an overloaded bus does not encode what it refuses.
  if (closing_flag_.load(std::memory_order_acquire)) {
    return reject(Errc::kUnavailable, "bus is closed");
  }
  if (n > options_.max_pending_messages) {
    return reject(Errc::kInvalidArgument, "batch is larger than the bus queue");
  }
  if (pending_hint_.load(std::memory_order_relaxed) + n > options_.max_pending_messages) {
    return reject(Errc::kResourceExhausted, "bus queue is full");
  }

  PendingCall call;
  std::size_t size = 0;
  for (const auto& m : messages) size += EncodedEntrySize(m.key, m.payload);
  call.data.reserve(size);
  for (const auto& m : messages) AppendEntry(call.data, m.key, m.payload);
  call.messages = n;
  call.enqueued = SteadyClock::now();

  bool wake = false;
  {
    std::unique_lock lock(mu_);
    if (closing_) {
      lock.unlock();
      return reject(Errc::kUnavailable, "bus is closed");
    }
    if (pending_messages_ + n > options_.max_pending_messages) {
      lock.unlock();
      return reject(Errc::kResourceExhausted, "bus queue is full");
    }
    call.seq = ++last_seq_;
    call.done = std::move(done);
    pending_messages_ += n;
    ++pending_calls_;
    pending_hint_.store(pending_messages_, std::memory_order_relaxed);
    // The writer only sleeps when the queue is empty.
    wake = queue_.empty();
    queue_.push_back(std::move(call));
  }
  if (wake) writer_cv_.notify_one();
}

Status EmbeddedBusCore::Flush(std::chrono::milliseconds timeout) {
  if (tls_writer_of == this) {
    return MakeError(Errc::kInternal, "Flush called from a Produce callback would wait for itself");
  }
  std::unique_lock lock(mu_);
  const std::uint64_t target = last_seq_;
  if (!answered_cv_.wait_for(lock, ClampTimeout(timeout),
                             [&] { return answered_seq_ >= target; })) {
    return MakeError(Errc::kDeadlineExceeded, "bus flush timed out");
  }
  return Status::Ok();
}

Result<std::int64_t> EmbeddedBusCore::RegisterGroup(const std::string& name) {
  std::int64_t committed = 0;
  {
    std::lock_guard lock(mu_);
    if (closing_) return MakeError(Errc::kUnavailable, "bus is closed");
    auto it = groups_.find(name);
    if (it != groups_.end()) return it->second;
    committed = BeginOffset();
    groups_[name] = committed;
    dirty_[name] = committed;
  }
  // Write the registration now, so that retention respects it also after a crash. From a
  // Produce callback (the writer thread) it is written by the next maintenance instead.
  if (tls_writer_of == this) return committed;
  auto result = RequestMaintenance();
  if (!result) return result.error();
  if (!result->status) return result->status.error();
  return committed;
}

Status EmbeddedBusCore::CommitGroup(const std::string& name, std::int64_t next_offset) {
  if (next_offset < 0 || next_offset > EndOffset()) {
    return MakeError(Errc::kInvalidArgument, "commit offset " + std::to_string(next_offset) +
                                                 " is outside [0, end]");
  }
  std::lock_guard lock(mu_);
  if (closing_) return MakeError(Errc::kUnavailable, "bus is closed");
  groups_[name] = next_offset;
  dirty_[name] = next_offset;
  return Status::Ok();
}

Status EmbeddedBusCore::ApplyRetention() {
  if (tls_writer_of == this) {
    return MakeError(Errc::kInternal, "ApplyRetention called from a Produce callback");
  }
  for (;;) {
    auto result = RequestMaintenance();
    if (!result) return result.error();
    if (!result->status) return result->status;
    if (!result->more) return Status::Ok();
  }
}

Result<EmbeddedBusCore::MaintenanceResult> EmbeddedBusCore::RequestMaintenance() {
  std::unique_lock lock(mu_);
  if (closing_) return MakeError(Errc::kUnavailable, "bus is closed");
  const std::uint64_t ticket = ++maintenance_requested_;
  writer_cv_.notify_one();
  answered_cv_.wait(lock, [&] { return maintenance_done_ >= ticket || stopped_; });
  if (maintenance_done_ < ticket) return MakeError(Errc::kUnavailable, "bus is closed");
  return maintenance_result_;
}

std::int64_t EmbeddedBusCore::WaitForData(std::int64_t next, SteadyClock::time_point deadline,
                                          std::atomic<bool>& wakeup, bool* stopped) {
  std::unique_lock lock(data_mu_);
  data_cv_.wait_until(lock, deadline, [&] {
    return EndOffset() > next || wakeup.load(std::memory_order_acquire) || data_stopped_;
  });
  wakeup.store(false, std::memory_order_release);
  *stopped = data_stopped_;
  return EndOffset();
}

EmbeddedBus::Stats EmbeddedBusCore::GetStats() const {
  std::lock_guard lock(mu_);
  EmbeddedBus::Stats s = stats_;
  s.messages_rejected = rejected_.load(std::memory_order_relaxed);
  s.pending_messages = pending_messages_;
  s.pending_calls = pending_calls_;
  s.begin_offset = BeginOffset();
  s.end_offset = EndOffset();
  return s;
}

void EmbeddedBusCore::Run() {
  const auto interval = options_.retention_check_interval;
  auto next_check = SteadyClock::now() + interval;
  bool more_to_delete = false;
  for (;;) {
    std::vector<PendingCall> calls;
    std::map<std::string, std::int64_t> groups;
    std::map<std::string, std::int64_t> dirty;
    std::uint64_t ticket = 0;
    bool maintain = false;
    bool exit_loop = false;
    {
      std::unique_lock lock(mu_);
      if (!more_to_delete) {
        writer_cv_.wait_until(lock, next_check, [&] {
          return !queue_.empty() || closing_ || maintenance_requested_ != maintenance_done_;
        });
      }
      std::size_t taken = 0;
      while (!queue_.empty() &&
             (calls.empty() || taken + queue_.front().messages <= options_.max_group_messages)) {
        taken += queue_.front().messages;
        calls.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      exit_loop = closing_ && queue_.empty();
      ticket = maintenance_requested_;
      maintain = more_to_delete || ticket != maintenance_done_ || exit_loop ||
                 SteadyClock::now() >= next_check;
      if (maintain) {
        groups = groups_;
        dirty.swap(dirty_);
      }
    }

    if (!calls.empty()) CommitCalls(calls);

    if (maintain) {
      // On the way out only the group offsets are written: Close should be quick.
      MaintenanceResult result = Maintain(groups, dirty, /*delete_frames=*/!exit_loop);
      more_to_delete = result.status.ok() && result.more;
      if (!more_to_delete) next_check = SteadyClock::now() + interval;
      std::lock_guard lock(mu_);
      if (!result.status) {
        ++stats_.maintenance_failures;
        // Keep the offsets for the next attempt, unless a newer one arrived meanwhile.
        dirty_.insert(dirty.begin(), dirty.end());
      }
      maintenance_done_ = ticket;
      maintenance_result_ = std::move(result);
      answered_cv_.notify_all();
    }
    if (exit_loop) break;
  }
  Shutdown();
}

void EmbeddedBusCore::CommitCalls(std::vector<PendingCall>& calls) {
  const auto start = SteadyClock::now();
  std::size_t messages = 0;
  for (const auto& c : calls) messages += c.messages;
  std::int64_t end = EndOffset();
  std::size_t bytes = 0;
  Status status = WriteFrames(calls, &end, &bytes);
  const auto committed = SteadyClock::now();
  if (status) {
    {
      std::lock_guard lock(data_mu_);
      end_.store(end, std::memory_order_release);
    }
    data_cv_.notify_all();
  } else if (status.error().code != Errc::kResourceExhausted) {
    // The producer contract knows two failures: full (kResourceExhausted) or not available.
    status = MakeError(Errc::kUnavailable, "bus commit failed: " + status.error().message);
  }
  {
    std::lock_guard lock(mu_);
    pending_messages_ -= messages;
    pending_calls_ -= calls.size();
    pending_hint_.store(pending_messages_, std::memory_order_relaxed);
    if (status) {
      ++stats_.groups_committed;
      stats_.messages_committed += messages;
      stats_.calls_committed += calls.size();
      stats_.bytes_committed += bytes;
    } else {
      ++stats_.groups_failed;
      stats_.messages_failed += messages;
    }
  }
  // The observer sees the commit before any caller learns of it.
  if (options_.on_group_commit) {
    GroupCommitInfo info;
    info.calls = calls.size();
    info.messages = messages;
    info.bytes = bytes;
    info.commit_seconds = Seconds(committed - start);
    info.latency_seconds = Seconds(SteadyClock::now() - calls.front().enqueued);
    info.ok = status.ok();
    options_.on_group_commit(info);
  }
  for (auto& c : calls) c.done(status);
  {
    std::lock_guard lock(mu_);
    answered_seq_ = calls.back().seq;
  }
  answered_cv_.notify_all();
}

Status EmbeddedBusCore::WriteFrames(const std::vector<PendingCall>& calls, std::int64_t* end,
                                    std::size_t* bytes) {
  std::int64_t next = *end;
  const std::int64_t appended_at = core::ToUnixMicros(clock_.Now());
  if (auto st = begin_stmt_.Run(); !st) return Rollback(st);
  std::size_t i = 0;
  while (i < calls.size()) {
    // A frame holds calls [i, j): consecutive calls up to max_frame_bytes, at least one.
    std::size_t j = i;
    std::size_t frame_bytes = 0;
    std::size_t frame_messages = 0;
    while (j < calls.size() &&
           (j == i || frame_bytes + calls[j].data.size() <= options_.max_frame_bytes)) {
      frame_bytes += calls[j].data.size();
      frame_messages += calls[j].messages;
      ++j;
    }
    if (frame_messages > 0) {
      std::string_view data = calls[i].data;
      if (j - i > 1) {
        scratch_.clear();
        scratch_.reserve(frame_bytes);
        for (std::size_t k = i; k < j; ++k) scratch_.append(calls[k].data);
        data = scratch_;
      }
      insert_frame_.BindInt64(1, next);
      insert_frame_.BindInt64(2, static_cast<std::int64_t>(frame_messages));
      insert_frame_.BindInt64(3, appended_at);
      insert_frame_.BindBlobStatic(4, data);
      if (auto st = insert_frame_.Run(); !st) return Rollback(st);
      next += static_cast<std::int64_t>(frame_messages);
      *bytes += frame_bytes;
    }
    i = j;
  }
  if (auto st = commit_stmt_.Run(); !st) return Rollback(st);
  *end = next;
  return Status::Ok();
}

EmbeddedBusCore::MaintenanceResult EmbeddedBusCore::Maintain(
    const std::map<std::string, std::int64_t>& groups,
    const std::map<std::string, std::int64_t>& dirty, bool delete_frames) {
  MaintenanceResult result;
  const std::int64_t begin = BeginOffset();
  std::int64_t cut = begin;
  if (delete_frames && !groups.empty()) {
    std::int64_t min_committed = std::numeric_limits<std::int64_t>::max();
    for (const auto& [name, offset] : groups) min_committed = std::min(min_committed, offset);
    // Frames are dense from `begin`, so those entirely below the minimum are a prefix. Read
    // one more than a transaction may delete, to know whether more remain.
    scan_prefix_.BindInt64(1, begin);
    scan_prefix_.BindInt64(2, kRetentionFramesPerTxn + 1);
    std::int64_t frames = 0;
    for (;;) {
      auto row = scan_prefix_.Step();
      if (!row) {
        scan_prefix_.Reset();
        result.status = row.error();
        return result;
      }
      if (!*row) break;
      std::int64_t frame_end = scan_prefix_.ColumnInt64(0) + scan_prefix_.ColumnInt64(1);
      if (frame_end > min_committed) break;
      if (frames == kRetentionFramesPerTxn) {
        result.more = true;
        break;
      }
      cut = frame_end;
      ++frames;
    }
    scan_prefix_.Reset();
  }
  if (dirty.empty() && cut == begin) return result;

  // Publish the new beginning before deleting: a consumer that finds frames missing can then
  // always tell retention from a broken log.
  if (cut > begin) begin_.store(cut, std::memory_order_release);
  auto fail = [&](Status st) {
    begin_.store(begin, std::memory_order_release);
    result.status = Rollback(std::move(st));
    result.more = false;
    return result;
  };
  if (auto st = begin_stmt_.Run(); !st) return fail(st);
  for (const auto& [name, offset] : dirty) {
    upsert_group_.BindText(1, name);
    upsert_group_.BindInt64(2, offset);
    if (auto st = upsert_group_.Run(); !st) return fail(st);
  }
  if (cut > begin) {
    delete_frames_.BindInt64(1, cut);
    if (auto st = delete_frames_.Run(); !st) return fail(st);
    set_low_water_.BindInt64(1, cut);
    if (auto st = set_low_water_.Run(); !st) return fail(st);
  }
  if (auto st = commit_stmt_.Run(); !st) return fail(st);
  if (cut > begin) {
    std::lock_guard lock(mu_);
    stats_.messages_deleted += static_cast<std::uint64_t>(cut - begin);
  }
  return result;
}

Status EmbeddedBusCore::Rollback(Status cause) {
  if (db_.InTransaction()) (void)db_.Exec("ROLLBACK");
  return cause;
}

void EmbeddedBusCore::RunCheckpointer() {
  auto db = SqliteDb::Open(options_.path, SqliteDb::kReadWrite, kBusyTimeoutMs);
  if (!db) {
    // Without it the WAL grows until the writer's next start; durability is unaffected.
    std::lock_guard lock(mu_);
    ++stats_.maintenance_failures;
    return;
  }
  std::unique_lock lock(checkpoint_mu_);
  while (!checkpoint_stop_) {
    checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (checkpoint_stop_) break;
    lock.unlock();
    int log_frames = 0, checkpointed = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &checkpointed);
    lock.lock();
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      std::lock_guard stats_lock(mu_);
      ++stats_.maintenance_failures;
    }
  }
}

void EmbeddedBusCore::StopCheckpointer() {
  {
    std::lock_guard lock(checkpoint_mu_);
    checkpoint_stop_ = true;
  }
  checkpoint_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
}

void EmbeddedBusCore::Shutdown() {
  StopCheckpointer();
  for (SqliteStmt* s : {&begin_stmt_, &commit_stmt_, &insert_frame_,
                        &upsert_group_, &scan_prefix_, &delete_frames_, &set_low_water_}) {
    *s = SqliteStmt();
  }
  db_.Close();
  lock_.reset();
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  answered_cv_.notify_all();
  {
    std::lock_guard lock(data_mu_);
    data_stopped_ = true;
  }
  data_cv_.notify_all();
}

// ---- Producer ----

namespace {

class EmbeddedProducer final : public Producer {
 public:
  explicit EmbeddedProducer(std::shared_ptr<EmbeddedBusCore> core) : core_(std::move(core)) {}

  void Produce(std::vector<Message> messages, Callback done) override {
    core_->Produce(std::move(messages), std::move(done));
  }
  bool Ready() const override { return core_->Ready(); }
  Status Flush(std::chrono::milliseconds timeout) override { return core_->Flush(timeout); }

 private:
  std::shared_ptr<EmbeddedBusCore> core_;
};

// ---- Consumer ----

// EmbeddedConsumer reads frames through its own connection (a WAL reader never blocks the
// writer). It keeps the frame it stopped in the middle of, so that polling a large frame in
// small steps does not read it again.
class EmbeddedConsumer final : public Consumer {
 public:
  EmbeddedConsumer(std::shared_ptr<EmbeddedBusCore> core, std::string group)
      : core_(std::move(core)), group_(std::move(group)) {
    status_ = Setup();
  }

  Result<std::vector<Record>> Poll(std::size_t max_records,
                                   std::chrono::milliseconds timeout) override;
  Status Seek(std::int32_t partition, std::int64_t next_offset) override;
  Status Commit(std::int32_t partition, std::int64_t next_offset) override;
  // Subscribe assigns partition 0, the only one, at once.
  Status Subscribe(AssignmentListener& listener) override {
    auto start = listener.StartOffset(0);
    if (!start) return start.status();
    if (*start) {
      if (Status s = Seek(0, **start); !s) return s;
    }
    listener.Assigned({0});
    return Status::Ok();
  }
  std::int64_t Lag() const override {
    return std::max<std::int64_t>(0, core_->EndOffset() - next_);
  }
  void Wakeup() override {
    wakeup_.store(true, std::memory_order_release);
    core_->WakeConsumers();
  }

 private:
  struct CachedFrame {
    std::int64_t base = 0;
    std::int64_t count = 0;  // 0: nothing cached
    core::Timestamp appended_at{};
    std::string data;
    std::size_t position = 0;      // byte position of the entry at `position_offset`
    std::int64_t position_offset = 0;
    bool Holds(std::int64_t offset) const {
      return count > 0 && offset >= base && offset < base + count;
    }
  };

  Status Setup();
  Status Read(std::size_t max_records, std::int64_t end, std::vector<Record>& out);
  Status ReadCached(std::size_t max_records, std::vector<Record>& out);
  // Take appends the records of the frame `base` from next_ on, reading from `reader`
  // (positioned at the entry of offset `at`, at <= next_), until `out` holds max_records or
  // the frame ends.
  Status Take(FrameReader& reader, std::int64_t at, std::string_view data, std::int64_t base,
              std::int64_t count, core::Timestamp appended_at, std::size_t max_records,
              std::vector<Record>& out);

  std::shared_ptr<EmbeddedBusCore> core_;
  const std::string group_;
  Status status_;
  SqliteDb db_;
  SqliteStmt scan_;
  std::int64_t next_ = 0;
  std::atomic<bool> wakeup_{false};
  CachedFrame cache_;
};

Status EmbeddedConsumer::Setup() {
  if (group_.empty()) {
    next_ = core_->BeginOffset();
  } else {
    auto committed = core_->RegisterGroup(group_);
    if (!committed) return committed.error();
    next_ = *committed;
  }
  auto db = SqliteDb::Open(core_->path(), SqliteDb::kReadWrite, kBusyTimeoutMs);
  if (!db) return db.error();
  db_ = std::move(*db);
  if (auto st = db_.Exec("PRAGMA query_only = 1"); !st) return st;
  // From the frame holding ?1 (the last one starting at or before it) on, in offset order.
  auto scan = db_.Prepare(
      "SELECT base_offset, count, appended_at, data FROM frames WHERE base_offset >= "
      "IFNULL((SELECT base_offset FROM frames WHERE base_offset <= ?1 "
      "ORDER BY base_offset DESC LIMIT 1), ?1) ORDER BY base_offset");
  if (!scan) return scan.error();
  scan_ = std::move(*scan);
  return Status::Ok();
}

Result<std::vector<Record>> EmbeddedConsumer::Poll(std::size_t max_records,
                                                   std::chrono::milliseconds timeout) {
  if (!status_) return status_.error();
  std::vector<Record> out;
  if (max_records == 0) return out;
  bool stopped = false;
  const std::int64_t end =
      core_->WaitForData(next_, SteadyClock::now() + ClampTimeout(timeout), wakeup_, &stopped);
  if (end <= next_) {
    if (stopped) return MakeError(Errc::kUnavailable, "bus is closed");
    return out;
  }
  out.reserve(std::min({max_records, kMaxReserve, static_cast<std::size_t>(end - next_)}));
  Status st = Read(max_records, end, out);
  // What was read before an error is returned; the error comes back on the next Poll.
  if (!st && out.empty()) return st.error();
  return out;
}

Status EmbeddedConsumer::Read(std::size_t max_records, std::int64_t end,
                              std::vector<Record>& out) {
  while (out.size() < max_records && next_ < end) {
    if (cache_.Holds(next_)) {
      if (auto st = ReadCached(max_records, out); !st) return st;
      continue;
    }
    cache_.count = 0;
    bool found = false;
    Status status = Status::Ok();
    scan_.BindInt64(1, next_);
    while (out.size() < max_records) {
      auto row = scan_.Step();
      if (!row) {
        status = row.error();
        break;
      }
      if (!*row) break;
      const std::int64_t base = scan_.ColumnInt64(0);
      const std::int64_t count = scan_.ColumnInt64(1);
      const core::Timestamp appended_at = core::FromUnixMicros(scan_.ColumnInt64(2));
      const std::string_view data = scan_.ColumnBlob(3);
      if (base + count <= next_) continue;
      if (base > next_) {
        if (next_ >= core_->BeginOffset()) {
          status = MakeError(Errc::kCorruption,
                             "bus log has no frame for offset " + std::to_string(next_));
          break;
        }
        next_ = base;  // retention deleted [next_, base)
      }
      found = true;
      FrameReader reader(data);
      status = Take(reader, base, data, base, count, appended_at, max_records, out);
      if (!status) break;
      if (next_ < base + count) {
        cache_.base = base;
        cache_.count = count;
        cache_.appended_at = appended_at;
        cache_.data.assign(data);
        cache_.position = reader.position();
        cache_.position_offset = next_;
      }
    }
    scan_.Reset();
    if (!status) return status;
    if (!found) {
      // No stored frame holds next_ or follows it: retention deleted [next_, end).
      const std::int64_t begin = core_->BeginOffset();
      if (next_ >= begin) {
        return MakeError(Errc::kCorruption,
                         "bus log has no frame for offset " + std::to_string(next_));
      }
      next_ = begin;
    }
  }
  return Status::Ok();
}

Status EmbeddedConsumer::ReadCached(std::size_t max_records, std::vector<Record>& out) {
  std::size_t position = cache_.position;
  std::int64_t at = cache_.position_offset;
  if (next_ < at) {  // a Seek backwards within the frame: start from its first entry
    position = 0;
    at = cache_.base;
  }
  FrameReader reader(cache_.data, position);
  Status st = Take(reader, at, cache_.data, cache_.base, cache_.count, cache_.appended_at,
                   max_records, out);
  if (!st || next_ >= cache_.base + cache_.count) {
    cache_.count = 0;
    cache_.data.clear();
    return st;
  }
  cache_.position = reader.position();
  cache_.position_offset = next_;
  return Status::Ok();
}

Status EmbeddedConsumer::Take(FrameReader& reader, std::int64_t at, std::string_view data,
                              std::int64_t base, std::int64_t count,
                              core::Timestamp appended_at, std::size_t max_records,
                              std::vector<Record>& out) {
  std::string_view key;
  std::string_view payload;
  auto corrupt = [&] {
    return MakeError(Errc::kCorruption,
                     "bus frame " + std::to_string(base) + " does not match its count");
  };
  for (; at < next_; ++at) {  // Seek into the middle of the frame
    if (reader.Next(key, payload) != FrameReader::Step::kEntry) return corrupt();
  }
  const std::int64_t frame_end = base + count;
  while (out.size() < max_records && next_ < frame_end) {
    if (reader.Next(key, payload) != FrameReader::Step::kEntry) return corrupt();
    Record& r = out.emplace_back();
    r.partition = 0;
    r.offset = next_;
    r.appended_at = appended_at;
    r.key.assign(key);
    r.payload.assign(payload);
    ++next_;
  }
  if (next_ == frame_end && reader.position() != data.size()) return corrupt();
  return Status::Ok();
}

Status EmbeddedConsumer::Seek(std::int32_t partition, std::int64_t next_offset) {
  if (partition != 0) return MakeError(Errc::kInvalidArgument, "the embedded bus has partition 0");
  if (next_offset < 0 || next_offset > core_->EndOffset()) {
    return MakeError(Errc::kInvalidArgument, "seek offset " + std::to_string(next_offset) +
                                                 " is outside [0, end]");
  }
  next_ = next_offset;
  return Status::Ok();
}

Status EmbeddedConsumer::Commit(std::int32_t partition, std::int64_t next_offset) {
  if (partition != 0) return MakeError(Errc::kInvalidArgument, "the embedded bus has partition 0");
  if (group_.empty()) return MakeError(Errc::kInvalidArgument, "consumer has no group");
  if (!status_) return status_;
  return core_->CommitGroup(group_, next_offset);
}

}  // namespace

// ---- EmbeddedBus ----

Result<std::shared_ptr<EmbeddedBus>> EmbeddedBus::Open(const EmbeddedBusOptions& options) {
  if (options.path.empty()) return MakeError(Errc::kInvalidArgument, "bus path is empty");
  if (options.max_group_messages == 0 || options.max_pending_messages == 0 ||
      options.max_frame_bytes == 0 || options.retention_check_interval.count() <= 0) {
    return MakeError(Errc::kInvalidArgument,
                     "bus limits (group, pending, frame size, retention interval) must be > 0");
  }
  auto core = std::make_shared<EmbeddedBusCore>(options);
  if (auto st = core->Init(); !st) return st.error();
  core->Start(core);
  return std::shared_ptr<EmbeddedBus>(new EmbeddedBus(std::move(core)));
}

EmbeddedBus::EmbeddedBus(std::shared_ptr<EmbeddedBusCore> core) : core_(std::move(core)) {}

std::int64_t EmbeddedBus::FoundEndOffset() const { return core_->found_end(); }

EmbeddedBus::~EmbeddedBus() { Close(); }

std::unique_ptr<Producer> EmbeddedBus::NewProducer() {
  return std::make_unique<EmbeddedProducer>(core_);
}

std::unique_ptr<Consumer> EmbeddedBus::NewConsumer(std::string group) {
  return std::make_unique<EmbeddedConsumer>(core_, std::move(group));
}

std::int64_t EmbeddedBus::EndOffset() const { return core_->EndOffset(); }
std::int64_t EmbeddedBus::BeginOffset() const { return core_->BeginOffset(); }
Status EmbeddedBus::ApplyRetention() { return core_->ApplyRetention(); }
EmbeddedBus::Stats EmbeddedBus::GetStats() const { return core_->GetStats(); }
void EmbeddedBus::Close() { core_->Close(); }

}  // namespace iot::bus
