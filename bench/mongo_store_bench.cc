// mongo_store_bench.cc: MongoStore (libmongoc to FerretDB) next to SqliteStore, same data, same
// run. Prints Markdown tables (copied into docs/performance.md, "MongoDB store (FerretDB)").
//
//   mongo_store_bench                              # defaults: at most ~15 minutes
//   IOT_BENCH_READINGS=200000 mongo_store_bench    # a smaller store for the queries
//   IOT_BENCH_LOAD_SECONDS=600 mongo_store_bench   # more of the load in aggregator batches
//   IOT_BENCH_DIR=/mnt/ssd mongo_store_bench       # where the data goes (default: $TMPDIR)
//   FERRETDB=/path/to/ferretdb mongo_store_bench   # the server (default: the path
//                                                  # `scripts/ferretdb.sh path` gave at configure)
//
// It starts its own FerretDB (SQLite backend) on a free port in a temporary directory, then:
//   1. Apply throughput from an empty store, batches of 1,000 and 10,000 readings as the
//      aggregator writes them (bench/store_batches.h: 1,000 devices, 2 sensors, 1m and 1h
//      aggregates, a DeviceUpdate per device, a checkpoint advancing per batch), at least one
//      batch and at most ~20 s per row. FerretDB's 10,000 row is the first part of its load;
//   2. loads IOT_BENCH_READINGS readings (default 1,000,000) into each store, the same batches
//      for both, plus the alerts worker's batches (one alert per 1,000 readings): aggregator
//      batches of 10,000 readings while FerretDB's load is under IOT_BENCH_LOAD_SECONDS (default
//      120, at least one batch), then the rest as raw-only batches of 100,000 readings (readings,
//      ingest count and checkpoint; the store folds the devices from the readings; no
//      aggregates). FerretDB sets the split, SQLite gets the same batches;
//   3. the dashboard's queries against both stores: p50/p99 of up to 200 runs each, at most
//      ~20 s per query and store (the table gives the number of runs);
//   4. bytes on disk per reading, after the servers closed their files (no WAL left).
//
// Why the split: FerretDB 1.24's SQLite backend uses no index for any query, not even for
// {_id: <string>} (its index is on `_ferretdb_sjson->"_id"`, its queries filter on
// `_ferretdb_sjson->'$._id'`, which SQLite does not match), so every update of an aggregate or
// a device scans its collection, and one aggregator batch over 1,000 devices takes minutes.
// Raw inserts do not scan. These are figures to watch, not targets: FerretDB is not MongoDB.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <mongoc/mongoc.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/mongo_store.h"
#include "store/sqlite_store.h"
#include "store_batches.h"

#ifndef IOT_FERRETDB_DEFAULT_PATH
#define IOT_FERRETDB_DEFAULT_PATH ""
#endif

namespace iot::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kLoadBatch = 10'000;    // an aggregator batch
constexpr std::size_t kTopUpBatch = 100'000;  // a raw-only batch
constexpr std::size_t kAlertEvery = 1'000;    // readings per alert in the loaded stores
constexpr std::size_t kMaxSamples = 200;
constexpr double kQuerySeconds = 20;  // per query and store
constexpr double kApplySeconds = 20;  // per batch size and store

fs::path g_root;                        // everything this run writes; removed at exit
volatile std::sig_atomic_t g_stop = 0;  // SIGINT or SIGTERM: stop, clean up, exit

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "mongo_store_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const Status& s, const std::string& what) {
  if (!s) Fail(what + ": " + s.error().message);
  if (g_stop != 0) Fail("interrupted");
}

std::size_t EnvSize(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ---- the FerretDB server ------------------------------------------------------------------

// FerretDb is one FerretDB process on 127.0.0.1:<free port> with its data in `dir`/data. The
// child is killed when this process dies (PR_SET_PDEATHSIG), so a failed run leaves no server.
// Not thread-safe; Start is called before any other thread exists (fork).
class FerretDb {
 public:
  explicit FerretDb(fs::path dir) : dir_(std::move(dir)) {}
  ~FerretDb() { Stop(); }
  FerretDb(const FerretDb&) = delete;
  FerretDb& operator=(const FerretDb&) = delete;

  void Start() {
    const char* env = std::getenv("FERRETDB");
    std::string binary = env != nullptr && *env != '\0' ? env : IOT_FERRETDB_DEFAULT_PATH;
    if (binary.empty() || ::access(binary.c_str(), X_OK) != 0) {
      Fail("FerretDB binary not found at '" + binary +
           "': run `scripts/ferretdb.sh build` or set FERRETDB");
    }
    fs::create_directories(dir_ / "data");
    std::vector<std::string> args = {binary, "--listen-addr", "127.0.0.1:0", "--sqlite-url",
                                     "file:" + (dir_ / "data").string() + "/"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) Fail("pipe2 failed");
    const int log = ::open((dir_ / "ferretdb.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (log < 0) Fail("cannot create ferretdb.log");
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) Fail("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(log);
    stdout_fd_ = out[0];
    const std::string line = ReadLine(Clock::now() + std::chrono::seconds(10));
    constexpr std::string_view kReady = "ferretdb listening on ";
    if (line.rfind(kReady, 0) != 0) Fail("FerretDB did not start within 10 s; its log:\n" + Log());
    url_ = line.substr(kReady.size());
  }

  // Stop ends the server (SIGTERM: it closes its SQLite files, folding their WALs in).
  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
        if (Clock::now() >= deadline) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, nullptr, 0);
          break;
        }
        ::usleep(10'000);
      }
      pid_ = -1;
    }
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
    stdout_fd_ = -1;
  }

  const std::string& url() const { return url_; }
  fs::path data_dir() const { return dir_ / "data"; }

 private:
  // Log is the end of the server's stderr.
  std::string Log() const {
    std::ifstream in(dir_ / "ferretdb.log");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

  std::string ReadLine(Clock::time_point deadline) {
    std::string line;
    char c = 0;
    while (Clock::now() < deadline) {
      pollfd p{stdout_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      if (::read(stdout_fd_, &c, 1) != 1) return line;
      if (c == '\n') return line;
      line.push_back(c);
    }
    return line;
  }

  fs::path dir_;
  std::string url_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

// ---- the two stores -----------------------------------------------------------------------

std::unique_ptr<store::Store> OpenMongo(const FerretDb& server, const std::string& database) {
  store::MongoStoreOptions o;
  o.url = server.url();
  o.database = database;
  o.app_name = "mongo_store_bench";
  auto s = store::MongoStore::Open(o);
  if (!s) Fail("MongoStore::Open: " + s.error().message);
  return std::move(*s);
}

std::unique_ptr<store::Store> OpenSqlite(const fs::path& dir) {
  fs::create_directories(dir);
  store::SqliteStoreOptions o;
  o.path = (dir / "store.db").string();
  auto s = store::SqliteStore::Open(o);
  if (!s) Fail("SqliteStore::Open: " + s.error().message);
  return std::move(*s);
}

// BytesOf sums the sizes of the regular files in `dir` whose names start with `prefix`.
std::uintmax_t BytesOf(const fs::path& dir, const std::string& prefix) {
  std::uintmax_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().filename().string().rfind(prefix, 0) == 0) {
      total += e.file_size();
    }
  }
  return total;
}

// ---- measurements -------------------------------------------------------------------------

struct Percentiles {
  std::size_t n = 0;
  double p50 = 0, p99 = 0, max = 0;
};

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
  };
  p.n = v.size();
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

struct ApplyResult {
  std::size_t batches = 0;
  double readings_per_s = 0;
  Percentiles batch_ms;
};

// MeasureApply applies up to `max_batches` batches of `size` readings to an empty store, for at
// most kApplySeconds.
ApplyResult MeasureApply(store::Store& s, std::size_t size, std::size_t max_batches) {
  Generator gen;
  std::vector<double> ms;
  double total = 0;
  std::size_t readings = 0;
  while (ms.size() < max_batches && total < kApplySeconds) {
    store::WriteBatch b = gen.Next(size);
    const auto start = Clock::now();
    Check(s.Apply(b), "Apply");
    const double took = Seconds(Clock::now() - start);
    total += took;
    ms.push_back(took * 1e3);
    readings += b.readings.size();
  }
  return {ms.size(), static_cast<double>(readings) / total, Summarize(ms)};
}

struct LoadResult {
  std::size_t full_readings = 0;  // in aggregator batches
  double full_seconds = 0;
  std::vector<double> full_batch_ms;
  std::size_t raw_readings = 0;  // in raw-only batches
  double raw_seconds = 0;
  std::size_t readings() const { return full_readings + raw_readings; }
};

// RawOnly drops what the aggregator adds to its readings: the batch keeps its readings, its
// ingest count and its checkpoint, and the store folds the devices from the readings.
store::WriteBatch RawOnly(store::WriteBatch b) {
  b.devices.clear();
  b.aggregates.clear();
  return b;
}

// Load fills `s` with `readings` readings: aggregator batches of kLoadBatch until `full_limit`
// readings are stored or `budget_s` has passed (at least one), then raw-only batches of at most
// kTopUpBatch. Each batch is followed by its alerts batch.
LoadResult Load(store::Store& s, std::size_t readings, std::size_t full_limit, double budget_s,
                const char* name) {
  Generator gen;
  LoadResult r;
  const auto start = Clock::now();
  auto next_report = start + std::chrono::seconds(60);
  auto apply = [&](const store::WriteBatch& b) {
    Check(s.Apply(b), "Apply (load)");
    Check(s.Apply(Generator::AlertsFor(b, kAlertEvery)), "Apply (load, alerts)");
  };
  auto progress = [&] {
    if (Clock::now() < next_report) return;
    std::printf("   %s: %zu readings loaded in %.0f s\n", name, r.readings(),
                Seconds(Clock::now() - start));
    std::fflush(stdout);
    next_report = Clock::now() + std::chrono::seconds(60);
  };
  while (r.full_readings < std::min(readings, full_limit)) {
    store::WriteBatch b = gen.Next(kLoadBatch);
    const auto t = Clock::now();
    apply(b);
    r.full_batch_ms.push_back(Seconds(Clock::now() - t) * 1e3);
    r.full_readings += b.readings.size();
    r.full_seconds = Seconds(Clock::now() - start);
    progress();
    if (r.full_seconds >= budget_s) break;
  }
  const auto raw_start = Clock::now();
  while (r.readings() < readings) {
    store::WriteBatch b = RawOnly(gen.Next(std::min(kTopUpBatch, readings - r.readings())));
    apply(b);
    r.raw_readings += b.readings.size();
    progress();
  }
  r.raw_seconds = Seconds(Clock::now() - raw_start);
  return r;
}

// Query runs one dashboard query against a store; it returns the number of items (kept so the
// call is not optimized away) and fails the run on an error.
using Query = std::function<std::size_t(store::Store&, std::mt19937_64&)>;

template <typename T>
std::size_t Items(const Result<store::Page<T>>& r, const char* what) {
  if (!r) Fail(std::string(what) + ": " + r.error().message);
  return r->items.size();
}

std::size_t Items(const Result<std::vector<store::Device>>& r, const char* what) {
  if (!r) Fail(std::string(what) + ": " + r.error().message);
  return r->size();
}

std::string RandomDevice(std::mt19937_64& rng) {
  return DeviceName(std::uniform_int_distribution<int>(0, kDevices - 1)(rng));
}

struct NamedQuery {
  const char* name;
  Query run;
};

std::vector<NamedQuery> DashboardQueries(std::int64_t end_us) {
  return {
      {"one device's newest 100 telemetry",
       [](store::Store& s, std::mt19937_64& rng) {
         store::TelemetryQuery q;
         q.device_id = RandomDevice(rng);
         q.limit = 100;
         return Items(s.Telemetry(q), "Telemetry");
       }},
      {"all devices' newest 100 telemetry",
       [](store::Store& s, std::mt19937_64&) {
         store::TelemetryQuery q;
         q.limit = 100;
         return Items(s.Telemetry(q), "Telemetry");
       }},
      {"one device's aggregates, limit 100",
       [](store::Store& s, std::mt19937_64& rng) {
         store::AggregateQuery q;
         q.device_id = RandomDevice(rng);
         q.limit = 100;
         return Items(s.Aggregates(q), "Aggregates");
       }},
      {"alerts, limit 100",
       [](store::Store& s, std::mt19937_64&) {
         store::AlertQuery q;
         q.limit = 100;
         return Items(s.Alerts(q), "Alerts");
       }},
      {"devices, limit 100",
       [](store::Store& s, std::mt19937_64&) {
         store::DeviceQuery q;
         q.limit = 100;
         return Items(s.Devices(q), "Devices");
       }},
      {"stats",
       [end_us](store::Store& s, std::mt19937_64&) {
         auto stats = s.GetStats(core::FromUnixMicros(end_us));
         if (!stats) Fail("GetStats: " + stats.error().message);
         return static_cast<std::size_t>(stats->readings);
       }},
  };
}

// MeasureQuery runs `q` once to warm up, then up to kMaxSamples times or kQuerySeconds.
Percentiles MeasureQuery(store::Store& s, const Query& q, std::size_t& items) {
  std::mt19937_64 rng(42);  // the same devices for both stores
  std::vector<double> ms;
  double total = 0;
  // The first run warms the caches; when it is slow, caches are not what matters: it counts.
  const auto warm = Clock::now();
  items = q(s, rng);
  if (const double took = Seconds(Clock::now() - warm); took > kQuerySeconds / 10) {
    total += took;
    ms.push_back(took * 1e3);
  }
  while (ms.size() < kMaxSamples && total < kQuerySeconds) {
    if (g_stop != 0) Fail("interrupted");
    const auto start = Clock::now();
    items = q(s, rng);
    const double took = Seconds(Clock::now() - start);
    total += took;
    ms.push_back(took * 1e3);
  }
  return Summarize(ms);
}

// ---- the run ------------------------------------------------------------------------------

struct Subject {
  const char* name;
  std::unique_ptr<store::Store> store;
};

// ApplyRow is one row of the Apply table.
std::string ApplyRow(std::size_t size, const char* name, const ApplyResult& r) {
  char row[256];
  std::snprintf(row, sizeof row, "| %zu | %s | %zu | %.0f | %.1f | %.1f |\n", size, name, r.batches,
                r.readings_per_s, r.batch_ms.p50, r.batch_ms.p99);
  return row;
}

int Run() {
  const char* base = std::getenv("IOT_BENCH_DIR");
  g_root = (base != nullptr ? fs::path(base) : fs::temp_directory_path()) /
           ("iot_mongo_store_bench_" + std::to_string(::getpid()));
  fs::remove_all(g_root);
  fs::create_directories(g_root);
  std::atexit([] { fs::remove_all(g_root); });
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });

  // Whole aggregator batches and raw-only batches of 1,000 readings per device step.
  const std::size_t want =
      std::max<std::size_t>(kLoadBatch, EnvSize("IOT_BENCH_READINGS", 1'000'000) / 1000 * 1000);
  const double budget = static_cast<double>(EnvSize("IOT_BENCH_LOAD_SECONDS", 120));
  const auto run_start = Clock::now();
  // Keep the tables readable: no info logs, and not libmongoc's warning that FerretDB has no
  // endSessions command (it says so once per closed client).
  spdlog::set_level(spdlog::level::warn);
  mongoc_log_set_handler(
      [](mongoc_log_level_t level, const char* domain, const char* message, void* data) {
        if (level <= MONGOC_LOG_LEVEL_ERROR)
          mongoc_log_default_handler(level, domain, message, data);
      },
      nullptr);

  FerretDb ferret(g_root / "ferretdb");
  ferret.Start();
  std::printf(
      "mongo_store_bench: MongoStore via libmongoc to FerretDB (SQLite backend, %s) vs "
      "SqliteStore; %d devices, 2 sensors, 1m + 1h aggregates; %ld cores\n\n",
      ferret.url().c_str(), kDevices, ::sysconf(_SC_NPROCESSORS_ONLN));
  std::fflush(stdout);

  // 1. Apply throughput from empty stores (FerretDB's 10,000 row comes from its load). The
  // table is printed after the load, which prints its progress.
  std::printf("measuring Apply from empty stores, then loading (progress every minute)\n");
  std::fflush(stdout);
  std::vector<std::string> apply_rows;
  {
    auto s = OpenMongo(ferret, "apply_1000");
    apply_rows.push_back(ApplyRow(1'000, "FerretDB", MeasureApply(*s, 1'000, 300)));
  }
  for (std::size_t size : {std::size_t{1'000}, std::size_t{10'000}}) {
    auto s = OpenSqlite(g_root / ("sqlite_apply_" + std::to_string(size)));
    apply_rows.push_back(
        ApplyRow(size, "SQLite", MeasureApply(*s, size, size == 1'000 ? 300 : 100)));
  }

  // 2. Load; FerretDB first, since its speed decides the split between the batch shapes.
  auto mongo = OpenMongo(ferret, "load");
  LoadResult ml = Load(*mongo, want, want, budget, "FerretDB");
  apply_rows.insert(
      apply_rows.begin() + 2,
      ApplyRow(10'000, "FerretDB",
               {ml.full_batch_ms.size(), static_cast<double>(ml.full_readings) / ml.full_seconds,
                Summarize(ml.full_batch_ms)}));
  auto sqlite = OpenSqlite(g_root / "sqlite_load");
  LoadResult sl = Load(*sqlite, want, ml.full_readings, 1e9, "SQLite");

  std::printf(
      "\n## Apply from an empty store (aggregator batches; at least 1 batch, at most %.0f s per "
      "row; FerretDB's 10,000 row: the first batches of its load)\n\n",
      kApplySeconds);
  std::printf("| batch | store | batches | readings/s | batch p50 ms | batch p99 ms |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const std::string& row : apply_rows) std::fputs(row.c_str(), stdout);
  const std::size_t n = ml.readings();
  std::printf("\n## Load of %zu readings (+ 1 alert per %zu readings)\n\n", n, kAlertEvery);
  std::printf(
      "| store | aggregator batches of %zu: readings | s | readings/s | raw-only batches "
      "of <= %zu: readings | s | readings/s |\n|---|---|---|---|---|---|---|\n",
      kLoadBatch, kTopUpBatch);
  for (auto [name, r] : {std::pair{"FerretDB", &ml}, std::pair{"SQLite", &sl}}) {
    auto rate = [](std::size_t k, double sec) {
      return sec > 0 ? static_cast<double>(k) / sec : 0;
    };
    std::printf("| %s | %zu | %.1f | %.0f | %zu | %.1f | %.0f |\n", name, r->full_readings,
                r->full_seconds, rate(r->full_readings, r->full_seconds), r->raw_readings,
                r->raw_seconds, rate(r->raw_readings, r->raw_seconds));
  }
  if (ml.raw_readings > 0) {
    std::printf(
        "\nFerretDB's aggregator batches reached IOT_BENCH_LOAD_SECONDS=%.0f after %zu "
        "readings: the other %zu came in raw-only batches (no aggregates), in both "
        "stores.\n",
        budget, ml.full_readings, ml.raw_readings);
  }
  std::fflush(stdout);

  // 3. Queries.
  Generator ends;  // where the loaded data ends, for the ingest-rate window of stats
  for (std::size_t done = 0; done < ml.full_readings; done += kLoadBatch) ends.Next(kLoadBatch);
  for (std::size_t done = ml.full_readings; done < n; done += kTopUpBatch) {
    ends.Next(std::min(kTopUpBatch, n - done));
  }
  std::printf("\n## Dashboard queries over %zu readings (ms; up to %zu runs or ~%.0f s each)\n\n",
              n, kMaxSamples, kQuerySeconds);
  std::printf("| query | store | runs | items | p50 ms | p99 ms | max ms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  for (const NamedQuery& q : DashboardQueries(ends.end_us())) {
    for (auto [name, s] : {std::pair{"FerretDB", mongo.get()}, std::pair{"SQLite", sqlite.get()}}) {
      std::size_t items = 0;
      Percentiles p = MeasureQuery(*s, q.run, items);
      std::printf("| %s | %s | %zu | %zu | %.2f | %.2f | %.2f |\n", q.name, name, p.n, items, p.p50,
                  p.p99, p.max);
      std::fflush(stdout);
    }
  }

  // 4. Disk, once both have closed their files.
  mongo.reset();
  sqlite.reset();
  ferret.Stop();
  const std::uintmax_t mongo_bytes = BytesOf(ferret.data_dir(), "load.sqlite");
  const std::uintmax_t sqlite_bytes = BytesOf(g_root / "sqlite_load", "store.db");
  std::printf("\n## Disk after the load (server stopped, WAL folded in)\n\n");
  std::printf("| store | bytes | bytes per reading |\n|---|---|---|\n");
  for (auto [name, bytes] :
       {std::pair{"FerretDB", mongo_bytes}, std::pair{"SQLite", sqlite_bytes}}) {
    std::printf("| %s | %ju | %.0f |\n", name, bytes,
                static_cast<double>(bytes) / static_cast<double>(n));
  }
  std::printf("\ntotal time %.0f s\n", Seconds(Clock::now() - run_start));
  return 0;
}

}  // namespace
}  // namespace iot::bench

int main() { return iot::bench::Run(); }
