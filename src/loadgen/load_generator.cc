#include "loadgen/load_generator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "core/time.h"
#include "loadgen/base_url.h"
#include "loadgen/device_fleet.h"
#include "loadgen/latency_histogram.h"
#include "loadgen/send_schedule.h"

namespace iot::loadgen {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using Strand = asio::strand<asio::io_context::executor_type>;

constexpr std::chrono::milliseconds kInitialBackoff{50};
constexpr std::chrono::milliseconds kMaxBackoff{1000};
constexpr unsigned kHttpVersion11 = 11;

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

double Millis(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

bool IsTerminal(const std::ostream& out) {
  if (&out == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  if (&out == &std::cerr || &out == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  return false;
}

// Stats counts outcomes and latencies of one run. Thread-safe: connections on both io threads
// record into it, the progress timer reads it.
class Stats {
 public:
  // IntervalReport is what happened since the previous TakeInterval, plus the running totals.
  struct IntervalReport {
    std::uint64_t sent = 0, accepted = 0, rejected = 0, errors = 0;
    std::uint64_t completed_in_interval = 0;
    std::chrono::nanoseconds p50{0}, p99{0};
    std::string last_error;  // the latest error of the interval, empty when none
  };

  void OnSent() {
    std::lock_guard lock(mu_);
    ++sent_;
  }

  void OnResponse(unsigned status, std::chrono::nanoseconds latency, std::uint64_t readings) {
    std::lock_guard lock(mu_);
    total_latency_.Record(latency);
    interval_latency_.Record(latency);
    ++completed_in_interval_;
    if (status >= 200 && status < 300) {
      ++accepted_;
      readings_accepted_ += readings;
    } else if (status >= 400 && status < 500) {
      ++rejected_;
    } else {
      ++errors_;
      last_error_ = fmt::format("HTTP {}", status);
    }
  }

  void OnError(std::string what) {
    std::lock_guard lock(mu_);
    ++errors_;
    ++completed_in_interval_;
    last_error_ = std::move(what);
  }

  IntervalReport TakeInterval() {
    std::lock_guard lock(mu_);
    IntervalReport r{sent_, accepted_, rejected_, errors_, completed_in_interval_,
                     interval_latency_.ValueAtQuantile(0.50),
                     interval_latency_.ValueAtQuantile(0.99), std::move(last_error_)};
    interval_latency_.Reset();
    completed_in_interval_ = 0;
    last_error_.clear();
    return r;
  }

  LoadgenSummary Summarize(double seconds) const {
    std::lock_guard lock(mu_);
    LoadgenSummary s;
    s.sent = sent_;
    s.accepted = accepted_;
    s.rejected = rejected_;
    s.errors = errors_;
    s.readings_accepted = readings_accepted_;
    s.seconds = seconds;
    s.p50_ms = Millis(total_latency_.ValueAtQuantile(0.50));
    s.p90_ms = Millis(total_latency_.ValueAtQuantile(0.90));
    s.p99_ms = Millis(total_latency_.ValueAtQuantile(0.99));
    s.max_ms = Millis(total_latency_.max());
    if (seconds > 0) {
      s.requests_per_s = static_cast<double>(sent_) / seconds;
      s.readings_per_s = static_cast<double>(readings_accepted_) / seconds;
    }
    return s;
  }

 private:
  mutable std::mutex mu_;
  std::uint64_t sent_ = 0, accepted_ = 0, rejected_ = 0, errors_ = 0, readings_accepted_ = 0;
  std::uint64_t completed_in_interval_ = 0;
  LatencyHistogram total_latency_;
  LatencyHistogram interval_latency_;
  std::string last_error_;
};

// RunContext is what every connection of one run shares. Immutable after construction except
// the thread-safe fleet, schedule, stats and `stopping`.
struct RunContext {
  RunContext(const LoadgenOptions& o, BaseUrl u, SteadyClock::time_point start)
      : options(o),
        url(std::move(u)),
        port_text(std::to_string(url.port)),
        target(url.Target(o.batch > 0 ? "/ingest/batch" : "/ingest")),
        readings_per_request(o.batch > 0 ? static_cast<std::uint64_t>(o.batch) : 1),
        fleet(FleetOptions{o.devices, o.device_prefix, o.seed, o.hot_fraction}),
        schedule(start, o.unthrottled ? 0.0 : o.rps * o.devices,
                 o.duration ? std::optional(start + *o.duration) : std::nullopt) {}

  bool Stopping() const { return stopping.load(std::memory_order_acquire); }

  const LoadgenOptions& options;
  const BaseUrl url;
  const std::string port_text;
  const std::string target;
  const std::uint64_t readings_per_request;
  DeviceFleet fleet;
  SendSchedule schedule;
  Stats stats;
  // stopping: no request may start any more (Stop() or the drain deadline).
  std::atomic<bool> stopping{false};
};

// Connection is one keep-alive HTTP/1.1 client: it claims slots from the schedule, waits until
// each is due, sends the request and reads the answer, reconnecting after failures.
//
// Lifecycle: created by the Session, Loop() is co_spawned on strand(); it returns when the
// schedule is over or the run is stopping. Threading: every member runs on strand(), including
// CancelWait and Abort, which the Session posts there.
class Connection {
 public:
  Connection(asio::io_context& ioc, RunContext& ctx)
      : strand_(asio::make_strand(ioc)),
        stream_(strand_),
        resolver_(strand_),
        timer_(strand_),
        ctx_(ctx) {
    request_.method(http::verb::post);
    request_.target(ctx_.target);
    request_.version(kHttpVersion11);
    request_.set(http::field::host, ctx_.url.HostHeader());
    request_.set(http::field::user_agent, "iotd-loadgen");
    request_.set(http::field::content_type, "application/json");
    if (!ctx_.options.token.empty()) {
      request_.set(http::field::authorization, "Bearer " + ctx_.options.token);
    }
    request_.keep_alive(true);
  }

  const Strand& strand() const { return strand_; }

  asio::awaitable<void> Loop() {
    auto backoff = kInitialBackoff;
    while (!ctx_.Stopping()) {
      const std::optional<SendSchedule::Slot> slot = ctx_.schedule.Claim(SteadyClock::now());
      if (!slot) break;
      if (!co_await WaitUntil(slot->planned)) break;
      ctx_.stats.OnSent();
      // Open loop measures from the planned time (see send_schedule.h), closed loop from now.
      const auto started = ctx_.schedule.open_loop() ? slot->planned : SteadyClock::now();
      if (!connected_) {
        const beast::error_code ec = co_await Connect();
        if (ec) {
          Fail("connect", ec);
          if (!co_await WaitUntil(SteadyClock::now() + backoff)) break;
          backoff = std::min(backoff * 2, kMaxBackoff);
          continue;
        }
        backoff = kInitialBackoff;
      }
      co_await Exchange(slot->index, started);
    }
    Close();
  }

  // CancelWait ends a wait for a slot or a backoff; used when the run stops.
  void CancelWait() { timer_.cancel(); }

  // Abort cancels whatever the connection is doing; used at the drain deadline.
  void Abort() {
    timer_.cancel();
    resolver_.cancel();
    Close();
  }

 private:
  // WaitUntil waits until `when`; false when the run is stopping.
  asio::awaitable<bool> WaitUntil(SteadyClock::time_point when) {
    if (ctx_.Stopping()) co_return false;
    if (when > SteadyClock::now()) {
      beast::error_code ec;
      timer_.expires_at(when);
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return !ctx_.Stopping();
  }

  asio::awaitable<beast::error_code> Connect() {
    beast::error_code ec;
    buffer_.consume(buffer_.size());
    const tcp::resolver::results_type endpoints = co_await resolver_.async_resolve(
        ctx_.url.host, ctx_.port_text, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return ec;
    stream_.expires_after(ctx_.options.request_timeout);
    co_await stream_.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      Close();
      co_return ec;
    }
    beast::error_code ignored;  // Nagle only adds latency; failing to disable it is harmless.
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    connected_ = true;
    co_return ec;
  }

  asio::awaitable<void> Exchange(std::uint64_t index, SteadyClock::time_point started) {
    request_.body() = ctx_.fleet.RequestBody(index, ctx_.options.batch, core::SystemClock().Now());
    request_.prepare_payload();
    beast::error_code ec;
    stream_.expires_after(ctx_.options.request_timeout);
    co_await http::async_write(stream_, request_, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      Fail("write", ec);
      co_return;
    }
    http::response<http::string_body> response;
    co_await http::async_read(stream_, buffer_, response,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      Fail("read", ec);
      co_return;
    }
    stream_.expires_never();
    ctx_.stats.OnResponse(response.result_int(), SteadyClock::now() - started,
                          ctx_.readings_per_request);
    if (!response.keep_alive()) Close();
  }

  void Fail(std::string_view what, const beast::error_code& ec) {
    Close();
    if (ctx_.Stopping()) {
      ctx_.stats.OnError(fmt::format("{}: abandoned at the end of the run", what));
    } else {
      ctx_.stats.OnError(fmt::format("{} {}:{}: {}", what, ctx_.url.host, ctx_.url.port,
                                     ec.message()));
    }
  }

  void Close() {
    beast::error_code ignored;  // closing a socket that failed may fail too; it is closed anyway
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    connected_ = false;
  }

  Strand strand_;
  beast::tcp_stream stream_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  bool connected_ = false;
  RunContext& ctx_;
};

}  // namespace

// Session is one execution of Run: its io_context, connections, timers and progress output.
//
// Lifecycle: constructed by Run, Execute called once, destroyed by Run. Threading: Execute blocks
// its caller and runs the io_context on one or two threads; RequestStop may be called from any
// thread while the Session exists; every other member runs on coord_.
class LoadGenerator::Session {
 public:
  Session(const LoadgenOptions& options, BaseUrl url, std::ostream& progress)
      : coord_(asio::make_strand(ioc_)),
        progress_timer_(coord_),
        deadline_timer_(coord_),
        start_(SteadyClock::now()),
        last_progress_(start_),
        ctx_(options, std::move(url), start_),
        progress_(progress),
        tty_(IsTerminal(progress)) {}

  LoadgenSummary Execute() {
    const LoadgenOptions& options = ctx_.options;
    for (int i = 0; i < options.connections; ++i) {
      auto connection = std::make_shared<Connection>(ioc_, ctx_);
      connections_.push_back(connection);
      ++active_;
      asio::co_spawn(connection->strand(), connection->Loop(),
                     [this, connection](std::exception_ptr failure) {
                       asio::post(coord_, [this, failure] { OnConnectionDone(failure); });
                     });
    }
    if (options.duration) {
      ArmDeadline(start_ + *options.duration + options.drain_timeout);
    }
    if (options.progress_interval.count() > 0) ScheduleProgress();

    std::thread second;
    if (options.connections > 1) second = std::thread([this] { RunIo(); });
    RunIo();
    if (second.joinable()) second.join();
    // Both threads are done: failure_ and io_failure_ can be read without coord_ or the lock.
    if (io_failure_) std::rethrow_exception(io_failure_);
    if (failure_) std::rethrow_exception(failure_);
    return ctx_.stats.Summarize(Seconds(finish_ - start_));
  }

  void RequestStop() {
    asio::post(coord_, [this] { BeginStop(); });
  }

 private:
  // RunIo runs the io_context on the calling thread. Handlers do not throw (connection
  // failures arrive as values); should one throw anyway, the run stops and Execute rethrows.
  void RunIo() {
    try {
      ioc_.run();
    } catch (...) {
      std::lock_guard lock(io_failure_mu_);
      if (!io_failure_) io_failure_ = std::current_exception();
      ioc_.stop();
    }
  }

  void BeginStop() {
    if (finished_ || stop_begun_) return;
    stop_begun_ = true;
    ctx_.stopping.store(true, std::memory_order_release);
    for (const auto& connection : connections_) {
      asio::post(connection->strand(), [connection] { connection->CancelWait(); });
    }
    const auto drain_deadline = SteadyClock::now() + ctx_.options.drain_timeout;
    if (!deadline_armed_ || drain_deadline < deadline_timer_.expiry()) ArmDeadline(drain_deadline);
  }

  void ArmDeadline(SteadyClock::time_point when) {
    deadline_armed_ = true;
    deadline_timer_.expires_at(when);
    deadline_timer_.async_wait(asio::bind_executor(coord_, [this](beast::error_code ec) {
      if (!ec) Abandon();
    }));
  }

  // Abandon aborts every request still in flight; they are counted as errors.
  void Abandon() {
    if (finished_) return;
    ctx_.stopping.store(true, std::memory_order_release);
    for (const auto& connection : connections_) {
      asio::post(connection->strand(), [connection] { connection->Abort(); });
    }
  }

  void OnConnectionDone(std::exception_ptr failure) {
    if (failure) {
      if (!failure_) failure_ = failure;
      Abandon();
    }
    if (--active_ > 0) return;
    finished_ = true;
    finish_ = SteadyClock::now();
    progress_timer_.cancel();
    deadline_timer_.cancel();
    if (ctx_.options.progress_interval.count() > 0) PrintProgress(/*final=*/true);
  }

  void ScheduleProgress() {
    progress_timer_.expires_at(last_progress_ + ctx_.options.progress_interval);
    progress_timer_.async_wait(asio::bind_executor(coord_, [this](beast::error_code ec) {
      if (ec || finished_) return;
      PrintProgress(/*final=*/false);
      ScheduleProgress();
    }));
  }

  void PrintProgress(bool final) {
    const auto now = SteadyClock::now();
    const double interval = std::max(Seconds(now - last_progress_), 1e-6);
    last_progress_ = now;
    const Stats::IntervalReport r = ctx_.stats.TakeInterval();
    std::string line = fmt::format(
        "[{:7.1f}s] sent={} accepted={} rejected={} errors={} rate={:.1f}/s p50={:.2f}ms "
        "p99={:.2f}ms",
        Seconds(now - start_), r.sent, r.accepted, r.rejected, r.errors,
        static_cast<double>(r.completed_in_interval) / interval, Millis(r.p50), Millis(r.p99));
    if (!r.last_error.empty()) line += fmt::format(" last_error=\"{}\"", r.last_error);
    if (tty_) {
      // Rewrite the line in place; "\x1b[K" clears what a longer previous line left behind.
      progress_ << '\r' << line << "\x1b[K";
      if (final) progress_ << '\n';
    } else {
      progress_ << line << '\n';
    }
    progress_.flush();
  }

  // ioc_ is declared first so that it outlives every I/O object below.
  asio::io_context ioc_;
  Strand coord_;
  asio::steady_timer progress_timer_;
  asio::steady_timer deadline_timer_;
  const SteadyClock::time_point start_;
  SteadyClock::time_point last_progress_;
  SteadyClock::time_point finish_;
  RunContext ctx_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::ostream& progress_;
  const bool tty_;
  int active_ = 0;
  bool finished_ = false;
  bool stop_begun_ = false;
  bool deadline_armed_ = false;
  std::exception_ptr failure_;  // the first exception a connection threw
  std::mutex io_failure_mu_;
  std::exception_ptr io_failure_;  // guarded by io_failure_mu_
};

Status ValidateOptions(const LoadgenOptions& o) {
  auto invalid = [](std::string message) {
    return Status(MakeError(Errc::kInvalidArgument, std::move(message)));
  };
  if (o.devices < 1) return invalid(fmt::format("--devices must be at least 1, got {}", o.devices));
  if (!std::isfinite(o.rps) || o.rps < 0) {
    return invalid(fmt::format("--rps must be a number >= 0 (0 = unthrottled), got {}", o.rps));
  }
  if (o.batch < 0) return invalid(fmt::format("--batch must be >= 0, got {}", o.batch));
  if (o.connections < 1) {
    return invalid(fmt::format("--connections must be at least 1, got {}", o.connections));
  }
  if (o.duration && o.duration->count() <= 0) return invalid("--duration must be positive");
  if (!(o.max_error_rate >= 0 && o.max_error_rate <= 1)) {
    return invalid(fmt::format("--max-error-rate must be in [0, 1], got {}", o.max_error_rate));
  }
  if (!(o.hot_fraction >= 0 && o.hot_fraction <= 1)) {
    return invalid(fmt::format("hot fraction must be in [0, 1], got {}", o.hot_fraction));
  }
  if (o.request_timeout.count() <= 0) return invalid("--timeout must be positive");
  if (o.drain_timeout.count() < 0) return invalid("drain timeout must not be negative");
  auto url = ParseBaseUrl(o.base_url);
  if (!url) return url.status();
  return Status::Ok();
}

LoadGenerator::LoadGenerator(LoadgenOptions options) : options_(std::move(options)) {
  if (Status status = ValidateOptions(options_); !status) {
    throw std::invalid_argument(status.error().message);
  }
  if (options_.rps == 0) options_.unthrottled = true;
}

LoadGenerator::~LoadGenerator() = default;

LoadgenSummary LoadGenerator::Run(std::ostream& progress) {
  Result<BaseUrl> url = ParseBaseUrl(options_.base_url);  // validated by the constructor
  Session session(options_, std::move(*url), progress);
  {
    std::lock_guard lock(mu_);
    active_ = &session;
  }
  // Checked after registering, so a Stop() racing with the start is never lost.
  LoadgenSummary summary;
  if (!stop_requested_.load()) {
    try {
      summary = session.Execute();
    } catch (...) {
      std::lock_guard lock(mu_);
      active_ = nullptr;
      throw;
    }
  }
  std::lock_guard lock(mu_);
  active_ = nullptr;
  return summary;
}

void LoadGenerator::Stop() {
  stop_requested_.store(true);
  std::lock_guard lock(mu_);
  if (active_ != nullptr) active_->RequestStop();
}

int ExitCodeFor(const LoadgenSummary& summary, const LoadgenOptions& options) {
  if (summary.sent == 0) return 0;
  const double error_rate =
      static_cast<double>(summary.errors) / static_cast<double>(summary.sent);
  return error_rate > options.max_error_rate ? 1 : 0;
}

void PrintSummary(std::ostream& out, const LoadgenSummary& s) {
  const double error_rate =
      s.sent == 0 ? 0.0 : 100.0 * static_cast<double>(s.errors) / static_cast<double>(s.sent);
  out << fmt::format(
      "Load test summary\n"
      "  duration:   {:.2f} s\n"
      "  requests:   {} sent, {} accepted (2xx), {} rejected (4xx), {} errors (5xx/transport), "
      "error rate {:.2f}%\n"
      "  readings:   {} accepted\n"
      "  throughput: {:.1f} requests/s, {:.1f} readings/s\n"
      "  latency:    p50 {:.2f} ms, p90 {:.2f} ms, p99 {:.2f} ms, max {:.2f} ms\n",
      s.seconds, s.sent, s.accepted, s.rejected, s.errors, error_rate, s.readings_accepted,
      s.requests_per_s, s.readings_per_s, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms);
}

}  // namespace iot::loadgen
