// metrics.cc: metric types, families, the registry and the text exposition.
#include "metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

#include "core/utf8.h"

namespace iot::metrics {
namespace {

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }


// AppendEscaped appends a label value (escape_quote) or a HELP text, escaping as the text
// format requires: backslash, newline and (in label values) the double quote. The format is
// UTF-8: bytes that are not well-formed UTF-8 become U+FFFD so that a scrape never fails.
void AppendEscaped(std::string& out, std::string_view s, bool escape_quote) {
  while (!s.empty()) {
    const char c = s[0];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else if (static_cast<unsigned char>(c) < 0x80) {
      out += c;
    } else if (const std::size_t n = core::Utf8SequenceLength(s); n > 0) {
      out.append(s.data(), n);
      s.remove_prefix(n);
      continue;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
    }
    s.remove_prefix(1);
  }
}

// RenderLabels renders a="x",b="y" for a series.
template <typename Values>
std::string RenderLabels(const std::vector<std::string>& names, const Values& values) {
  std::string out;
  std::size_t i = 0;
  for (std::string_view v : values) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    AppendEscaped(out, v, true);
    out += '"';
    ++i;
  }
  return out;
}

// AppendSample appends `name{labels} value\n`. `extra` is one more rendered label (le="...").
void AppendSample(std::string& out, std::string_view name, std::string_view labels,
                  std::string_view extra, double value) {
  out += name;
  if (!labels.empty() || !extra.empty()) {
    out += '{';
    out += labels;
    if (!labels.empty() && !extra.empty()) out += ',';
    out += extra;
    out += '}';
  }
  out += ' ';
  AppendNumber(out, value);
  out += '\n';
}

void AppendSample(std::string& out, std::string_view name, std::string_view labels, double v) {
  AppendSample(out, name, labels, {}, v);
}

std::vector<double> CheckBounds(std::vector<double> bounds) {
  if (!bounds.empty() && bounds.back() == std::numeric_limits<double>::infinity()) {
    bounds.pop_back();
  }
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      throw std::invalid_argument("histogram bucket bounds must be finite");
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      throw std::invalid_argument("histogram bucket bounds must be strictly increasing");
    }
  }
  return bounds;
}

// Writes one sample whose value comes from a callback.
class CallbackCollector final : public detail::Collector {
 public:
  explicit CallbackCollector(std::function<double()> fn) : fn_(std::move(fn)) {}
  void Collect(std::string_view name, std::string& out) const override {
    AppendSample(out, name, {}, fn_());
  }

 private:
  std::function<double()> fn_;
};

template <typename M>
void CollectSeries(std::string_view name, std::string_view labels, const M& m, std::string& out) {
  AppendSample(out, name, labels, m.Value());
}

void CollectSeries(std::string_view name, std::string_view labels, const Histogram& h,
                   std::string& out) {
  const Histogram::Snapshot s = h.TakeSnapshot();
  std::string series_name(name);
  const std::size_t base = series_name.size();
  series_name += "_bucket";
  std::string le;
  for (std::size_t i = 0; i <= s.bounds.size(); ++i) {
    le.assign("le=\"");
    if (i < s.bounds.size()) {
      AppendNumber(le, s.bounds[i]);
    } else {
      le += "+Inf";
    }
    le += '"';
    AppendSample(out, series_name, labels, le, static_cast<double>(s.cumulative[i]));
  }
  series_name.resize(base);
  series_name += "_sum";
  AppendSample(out, series_name, labels, s.sum);
  series_name.resize(base);
  series_name += "_count";
  AppendSample(out, series_name, labels, static_cast<double>(s.count));
}

}  // namespace

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || !(IsNameStart(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsNameStart(c) || IsDigit(c) || c == ':'; });
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0]) || name.starts_with("__")) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return IsNameStart(c) || IsDigit(c); });
}

void AppendNumber(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  std::to_chars_result r;
  constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
  if (std::trunc(v) == v && std::fabs(v) < kExactIntegers) {
    r = std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(v));
  } else {
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  }
  out.append(buf, r.ptr);
}

// --- Histogram ---------------------------------------------------------------------------------

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(CheckBounds(std::move(bounds))),
      counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  // The first bound >= v is the bucket (le is inclusive); past the end is the +Inf bucket.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  const auto index = static_cast<std::size_t>(it - bounds_.begin());
  counts_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::TakeSnapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// --- Family ------------------------------------------------------------------------------------

template <typename M>
bool Family<M>::Less::operator()(const std::vector<std::string>& a,
                                 const std::vector<std::string>& b) const {
  return a < b;
}

template <typename M>
bool Family<M>::Less::operator()(const std::vector<std::string>& a,
                                 const std::initializer_list<std::string_view>& b) const {
  return std::lexicographical_compare(
      a.begin(), a.end(), b.begin(), b.end(),
      [](std::string_view x, std::string_view y) { return x < y; });
}

template <typename M>
bool Family<M>::Less::operator()(const std::initializer_list<std::string_view>& a,
                                 const std::vector<std::string>& b) const {
  return std::lexicographical_compare(
      a.begin(), a.end(), b.begin(), b.end(),
      [](std::string_view x, std::string_view y) { return x < y; });
}

template <typename M>
Family<M>::Family(std::vector<std::string> labels, Factory factory)
    : labels_(std::move(labels)), factory_(std::move(factory)) {}

template <typename M>
M& Family<M>::With(std::initializer_list<std::string_view> label_values) {
  if (label_values.size() != labels_.size()) {
    throw std::invalid_argument("metric family expects " + std::to_string(labels_.size()) +
                                " label values, got " + std::to_string(label_values.size()));
  }
  {
    std::shared_lock lock(mu_);
    auto it = series_.find(label_values);
    if (it != series_.end()) return *it->second.metric;
  }
  std::vector<std::string> key(label_values.begin(), label_values.end());
  std::unique_lock lock(mu_);
  auto [it, inserted] = series_.try_emplace(std::move(key));
  if (inserted) {
    it->second.labels = RenderLabels(labels_, it->first);
    it->second.metric = factory_();
  }
  return *it->second.metric;
}

template <typename M>
void Family<M>::Collect(std::string_view name, std::string& out) const {
  std::shared_lock lock(mu_);
  for (const auto& [values, series] : series_) {
    CollectSeries(name, series.labels, *series.metric, out);
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// --- Registry ----------------------------------------------------------------------------------

struct Registry::Entry {
  std::string name;
  std::string help;
  const char* type;
  std::unique_ptr<detail::Collector> collector;
};

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::Register(std::string name, std::string help, const char* type,
                        std::unique_ptr<detail::Collector> collector) {
  if (!IsValidMetricName(name)) throw std::invalid_argument("invalid metric name: " + name);
  const std::string_view t(type);
  if (t == "counter" && !name.ends_with("_total")) {
    throw std::invalid_argument("counter name must end in _total: " + name);
  }
  std::vector<std::string> names{name};
  if (t == "histogram") {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) names.push_back(name + suffix);
  }
  std::lock_guard lock(mu_);
  for (const auto& n : names) {
    if (std::binary_search(reserved_.begin(), reserved_.end(), n)) {
      throw std::invalid_argument("metric name already registered: " + n);
    }
  }
  for (auto& n : names) {
    reserved_.insert(std::upper_bound(reserved_.begin(), reserved_.end(), n), std::move(n));
  }
  entries_.push_back(Entry{std::move(name), std::move(help), type, std::move(collector)});
}

namespace {
void CheckLabels(const std::vector<std::string>& labels, bool histogram) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (!IsValidLabelName(labels[i])) {
      throw std::invalid_argument("invalid label name: " + labels[i]);
    }
    if (histogram && labels[i] == "le") {
      throw std::invalid_argument("\"le\" is reserved in histograms");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (labels[j] == labels[i]) throw std::invalid_argument("duplicate label: " + labels[i]);
    }
  }
}
}  // namespace

Family<Counter>& Registry::AddCounterFamily(std::string name, std::string help,
                                            std::vector<std::string> labels) {
  CheckLabels(labels, false);
  std::unique_ptr<Family<Counter>> family(
      new Family<Counter>(std::move(labels), [] { return std::make_unique<Counter>(); }));
  Family<Counter>& ref = *family;
  Register(std::move(name), std::move(help), "counter", std::move(family));
  return ref;
}

Counter& Registry::AddCounter(std::string name, std::string help) {
  return AddCounterFamily(std::move(name), std::move(help), {}).With({});
}

Family<Gauge>& Registry::AddGaugeFamily(std::string name, std::string help,
                                        std::vector<std::string> labels) {
  CheckLabels(labels, false);
  std::unique_ptr<Family<Gauge>> family(
      new Family<Gauge>(std::move(labels), [] { return std::make_unique<Gauge>(); }));
  Family<Gauge>& ref = *family;
  Register(std::move(name), std::move(help), "gauge", std::move(family));
  return ref;
}

Gauge& Registry::AddGauge(std::string name, std::string help) {
  return AddGaugeFamily(std::move(name), std::move(help), {}).With({});
}

Family<Histogram>& Registry::AddHistogramFamily(std::string name, std::string help,
                                                std::vector<double> buckets,
                                                std::vector<std::string> labels) {
  CheckLabels(labels, true);
  auto bounds = std::make_shared<const std::vector<double>>(CheckBounds(std::move(buckets)));
  std::unique_ptr<Family<Histogram>> family(new Family<Histogram>(
      std::move(labels), [bounds] { return std::make_unique<Histogram>(*bounds); }));
  Family<Histogram>& ref = *family;
  Register(std::move(name), std::move(help), "histogram", std::move(family));
  return ref;
}

Histogram& Registry::AddHistogram(std::string name, std::string help,
                                  std::vector<double> buckets) {
  return AddHistogramFamily(std::move(name), std::move(help), std::move(buckets), {}).With({});
}

void Registry::AddCallbackGauge(std::string name, std::string help, std::function<double()> fn) {
  Register(std::move(name), std::move(help), "gauge",
           std::make_unique<CallbackCollector>(std::move(fn)));
}

void Registry::AddCallbackCounter(std::string name, std::string help,
                                  std::function<double()> fn) {
  Register(std::move(name), std::move(help), "counter",
           std::make_unique<CallbackCollector>(std::move(fn)));
}

std::string Registry::Expose() const {
  std::string out;
  out.reserve(4096);
  std::lock_guard lock(mu_);
  for (const Entry& e : entries_) {
    out += "# HELP ";
    out += e.name;
    out += ' ';
    AppendEscaped(out, e.help, false);
    out += "\n# TYPE ";
    out += e.name;
    out += ' ';
    out += e.type;
    out += '\n';
    e.collector->Collect(e.name, out);
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
}

}  // namespace iot::metrics
