// metrics.h: counters, gauges and histograms, exposed in the Prometheus text format 0.0.4.
//
// A `Registry` owns every metric of a process. Metrics are registered once, at start-up, by a
// component's probe class; the returned references stay valid for the registry's lifetime, so
// the hot path keeps them and never looks anything up again:
//
//   metrics::Registry registry;
//   auto& requests = registry.AddCounterFamily("http_requests_total", "Requests served.",
//                                              {"route", "method", "code"});
//   auto& latency = registry.AddHistogram("ingest_latency_seconds", "Time to durability.",
//                                         metrics::LatencyBuckets());
//   requests.With({"/ingest", "POST", "202"}).Inc();
//   latency.Observe(0.0042);
//   std::string body = registry.Expose();   // serve with kContentType on GET /metrics
//
// Updates (`Inc`, `Set`, `Add`, `Observe`) are lock-free atomics. `Family::With` takes a shared
// (reader) lock and does not allocate when the series already exists. Registration and
// `Expose` take the registry's mutex. Registration errors (bad names, duplicates, bad buckets)
// are programming errors found at start-up: they throw std::invalid_argument.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace iot::metrics {

// kContentType is the Content-Type of `Registry::Expose()`'s output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Counter is a monotonically increasing value (requests served, bytes written). Thread-safe.
class alignas(64) Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Inc adds `v` to the counter. A counter never decreases: negative and NaN values are ignored.
  void Inc(double v = 1) {
    if (v >= 0) value_.fetch_add(v, std::memory_order_relaxed);
  }
  // Value returns the current total.
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Gauge is a value that goes up and down (queue depth, connections). Thread-safe.
class alignas(64) Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  // Set replaces the value.
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  // Add adds `v` (which may be negative) to the value.
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  // Value returns the current value.
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Histogram counts observations into buckets with upper bounds (`le`, inclusive) and keeps
// their sum and count. The +Inf bucket is implicit. Thread-safe; `Observe` is lock-free.
class Histogram {
 public:
  // Histogram takes the finite upper bounds, strictly increasing (a trailing +Inf is accepted
  // and dropped). Throws std::invalid_argument otherwise. Registries construct histograms; this
  // constructor is public for tests and for code that wants a histogram outside a registry.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Observe records one value. NaN is ignored (it would poison the sum forever).
  void Observe(double v);

  // Snapshot is a copy of the state with cumulative bucket counts: `cumulative[i]` counts the
  // observations <= `bounds[i]`, and the last element (one past `bounds`) counts all of them
  // (the +Inf bucket, equal to `count`).
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<std::uint64_t> cumulative;
    double sum = 0;
    std::uint64_t count = 0;
  };
  // TakeSnapshot reads the state. Concurrent observations may or may not be included, but the
  // +Inf bucket always equals `count`.
  Snapshot TakeSnapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1 slots
  std::atomic<double> sum_{0};
};

namespace detail {
// Collector writes the samples of one metric family to an exposition.
class Collector {
 public:
  virtual ~Collector() = default;
  // Collect appends the sample lines of the family called `name` to `out`.
  virtual void Collect(std::string_view name, std::string& out) const = 0;
};
}  // namespace detail

// Family is a set of series of one metric that differ by their label values, e.g.
// http_requests_total{route="/ingest",code="202"}. Thread-safe. Series are created on first use
// and live as long as the registry; references returned by `With` stay valid forever.
template <typename M>
class Family final : public detail::Collector {
 public:
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // With returns the series for `label_values` (one per label name, in the order the family
  // declared them), creating it on first use. Throws std::invalid_argument when the number of
  // values differs from the number of labels. Any byte string is a valid label value; bytes
  // that are not well-formed UTF-8 are exposed as U+FFFD.
  M& With(std::initializer_list<std::string_view> label_values);

  // labels returns the label names.
  const std::vector<std::string>& labels() const { return labels_; }

  // Collect appends the samples of every series to `out` (used by Registry::Expose).
  void Collect(std::string_view name, std::string& out) const override;

 private:
  friend class Registry;
  using Factory = std::function<std::unique_ptr<M>()>;
  Family(std::vector<std::string> labels, Factory factory);

  struct Less {
    using is_transparent = void;
    bool operator()(const std::vector<std::string>& a, const std::vector<std::string>& b) const;
    bool operator()(const std::vector<std::string>& a,
                    const std::initializer_list<std::string_view>& b) const;
    bool operator()(const std::initializer_list<std::string_view>& a,
                    const std::vector<std::string>& b) const;
  };
  struct Series {
    std::string labels;  // rendered: a="x",b="y" (without braces), empty when unlabelled
    std::unique_ptr<M> metric;
  };

  std::vector<std::string> labels_;
  Factory factory_;
  mutable std::shared_mutex mu_;
  std::map<std::vector<std::string>, Series, Less> series_;  // guarded by mu_
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// Registry holds the metric families of a process and renders them. Thread-safe. It must
// outlive every reference it handed out. Families are exposed in registration order, series
// of a family sorted by label values.
//
// Names: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and
// must not start with "__"; counter names end in "_total"; "le" is not a histogram label. A
// name may be registered once, and a histogram also reserves <name>_bucket, _sum and _count.
// Violations throw std::invalid_argument.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // AddCounter registers an unlabelled counter; it is exposed (as 0) from now on.
  Counter& AddCounter(std::string name, std::string help);
  // AddCounterFamily registers a counter with labels; series appear on first `With`.
  Family<Counter>& AddCounterFamily(std::string name, std::string help,
                                    std::vector<std::string> labels);
  // AddGauge registers an unlabelled gauge.
  Gauge& AddGauge(std::string name, std::string help);
  // AddGaugeFamily registers a gauge with labels.
  Family<Gauge>& AddGaugeFamily(std::string name, std::string help,
                                std::vector<std::string> labels);
  // AddHistogram registers an unlabelled histogram with the given finite bucket bounds.
  Histogram& AddHistogram(std::string name, std::string help, std::vector<double> buckets);
  // AddHistogramFamily registers a histogram with labels; every series has the same buckets.
  Family<Histogram>& AddHistogramFamily(std::string name, std::string help,
                                        std::vector<double> buckets,
                                        std::vector<std::string> labels);
  // AddCallbackGauge registers a gauge whose value `fn` computes at every `Expose` (queue
  // depth, connections). `fn` runs under the registry's lock: it must be quick and must not
  // call the registry.
  void AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);
  // AddCallbackCounter is AddCallbackGauge for a value that only grows (CPU seconds); the name
  // must end in "_total".
  void AddCallbackCounter(std::string name, std::string help, std::function<double()> fn);

  // Expose renders every family in the Prometheus text format 0.0.4 (see kContentType):
  // HELP and TYPE lines, then the samples.
  std::string Expose() const;

 private:
  struct Entry;
  void Register(std::string name, std::string help, const char* type,
                std::unique_ptr<detail::Collector> collector);

  mutable std::mutex mu_;
  std::vector<Entry> entries_;           // guarded by mu_
  std::vector<std::string> reserved_;    // every name taken, sorted; guarded by mu_
};

// LatencyBuckets returns bounds for request latencies in seconds, 100us to 10s in a 1-2.5-5
// progression: 0.0001, 0.00025, 0.0005, 0.001, ..., 2.5, 5, 10.
std::vector<double> LatencyBuckets();

// AddProcessMetrics registers the standard process metrics, read from /proc/self at scrape
// time: process_resident_memory_bytes, process_virtual_memory_bytes, process_cpu_seconds_total,
// process_start_time_seconds, process_open_fds and process_max_fds.
void AddProcessMetrics(Registry& registry);

// IsValidMetricName reports whether `name` matches [a-zA-Z_:][a-zA-Z0-9_:]*.
bool IsValidMetricName(std::string_view name);
// IsValidLabelName reports whether `name` matches [a-zA-Z_][a-zA-Z0-9_]* and does not start
// with the reserved prefix "__".
bool IsValidLabelName(std::string_view name);

// AppendNumber appends `v` as the exposition format writes sample values: "+Inf", "-Inf",
// "NaN", integers (|v| < 2^53) without fraction or exponent ("1000000", not "1e+06"), otherwise
// the shortest text that reads back as the same double, in printf's %g style ("0.0001",
// "1e-05", "2.5e+20").
void AppendNumber(std::string& out, double v);

}  // namespace iot::metrics
