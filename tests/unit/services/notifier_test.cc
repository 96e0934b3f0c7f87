// Alert notifications: the webhook and Alertmanager bodies, retries and backoff, what is not
// retried, the bounded queue, shutdown, and the alerts worker notifying only what the store
// applied. The receivers are real HTTP servers on 127.0.0.1 (a small Beast acceptor).
#include "services/notifier.h"

#include <atomic>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "codec/documents.h"
#include "services/alerter.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using testing::At;
using testing::FakeConsumer;
using testing::kWaitLimit;
using testing::MetricValue;
using testing::ReadingAt;

// Receiver is an HTTP server on a free port of 127.0.0.1 that records every request and answers
// with the status `status_for(n)` for the n-th request (0-based), after `delay`.
class Receiver {
 public:
  explicit Receiver(
      std::function<unsigned(int)> status_for = [](int) { return 200u; },
      milliseconds delay = milliseconds(0))
      : status_for_(std::move(status_for)), delay_(delay) {
    acceptor_.open(tcp::v4());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Receiver() {
    io_.stop();
    thread_.join();
  }

  std::string Url() const {
    return fmt::format("http://127.0.0.1:{}", acceptor_.local_endpoint().port());
  }
  struct Request {
    std::string target;
    std::string content_type;
    std::string body;
  };
  std::vector<Request> Requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // WaitFor waits until `n` requests arrived; false after kWaitLimit.
  bool WaitFor(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWaitLimit, [&] { return requests_.size() >= n; });
  }

 private:
  void Accept() {
    acceptor_.async_accept([this](const beast::error_code& ec, tcp::socket socket) {
      if (ec) return;
      Serve(std::move(socket));
      Accept();
    });
  }
  void Serve(tcp::socket socket) {
    beast::flat_buffer buffer;
    bhttp::request<bhttp::string_body> req;
    beast::error_code ec;
    bhttp::read(socket, buffer, req, ec);
    if (ec) return;
    int n = 0;
    {
      std::lock_guard lock(mu_);
      n = static_cast<int>(requests_.size());
      requests_.push_back(
          {std::string(req.target()), std::string(req[bhttp::field::content_type]), req.body()});
    }
    cv_.notify_all();
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status_for_(n)), 11};
    res.body() = "{}";
    res.prepare_payload();
    bhttp::write(socket, res, ec);
    socket.shutdown(tcp::socket::shutdown_both, ec);
  }

  std::function<unsigned(int)> status_for_;
  milliseconds delay_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> requests_;
};

core::Alert SampleAlert(core::AlertStatus status = core::AlertStatus::kActive) {
  core::Alert a;
  a.id = 4242;
  a.device_id = "dev-1";
  a.sensor_type = "temperature_c";
  a.value = 61.5;
  a.alert_type = "threshold_high";
  a.severity = "critical";
  a.message = "temperature_c 61.5 above 50";
  a.timestamp = At(10);
  a.status = status;
  a.threshold = 50;
  a.created_at = At(5);
  a.updated_at = At(10);
  a.count = 3;
  if (status == core::AlertStatus::kResolved) a.resolved_at = At(20);
  return a;
}

NotifierOptions Fast(std::vector<std::string> webhooks, std::string alertmanager = {}) {
  NotifierOptions o;
  o.webhook_urls = std::move(webhooks);
  o.alertmanager_url = std::move(alertmanager);
  o.min_backoff = milliseconds(10);
  o.max_backoff = milliseconds(40);
  o.timeout = milliseconds(1000);
  o.shutdown_grace = milliseconds(2000);
  return o;
}

// WaitForMetric waits until `series` of `registry` is `value`; false after kWaitLimit.
bool WaitForMetric(const metrics::Registry& registry, std::string_view series, double value) {
  const auto until = std::chrono::steady_clock::now() + kWaitLimit;
  while (std::chrono::steady_clock::now() < until) {
    if (MetricValue(registry, series) == value) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return false;
}

TEST(NotifierTest, WebhookBodyIsVersionedAndCarriesTheAlertAsListed) {
  const core::Alert alert = SampleAlert();
  std::string listed;
  codec::JsonWriter w(listed);
  codec::WriteAlert(w, alert);
  EXPECT_EQ(WebhookBody(Notification{AlertEvent::kOpened, alert, {}}, At(11)),
            R"({"version":1,"event":"opened","previous_severity":null,"alert":)" + listed +
                R"(,"sent_at":"2024-01-01T00:00:11Z"})");
  EXPECT_EQ(WebhookBody(Notification{AlertEvent::kSeverityChanged, alert, "warning"}, At(11)),
            R"({"version":1,"event":"severity_changed","previous_severity":"warning","alert":)" +
                listed + R"(,"sent_at":"2024-01-01T00:00:11Z"})");
}

TEST(NotifierTest, AlertmanagerAlertHasTheLabelsAndTimes) {
  EXPECT_EQ(AlertmanagerAlert(SampleAlert(), At(60)),
            R"({"labels":{"alertname":"IotdThreshold","device_id":"dev-1",)"
            R"("sensor_type":"temperature_c","severity":"critical","alert_type":"threshold_high"},)"
            R"("annotations":{"summary":"temperature_c 61.5 above 50","value":"61.5",)"
            R"("threshold":"50","alert_id":"4242","count":"3"},)"
            R"("startsAt":"2024-01-01T00:00:05Z","endsAt":"2024-01-01T00:01:00Z"})");
  // endsAt never precedes startsAt (Alertmanager refuses that).
  EXPECT_NE(AlertmanagerAlert(SampleAlert(), At(0)).find(R"("endsAt":"2024-01-01T00:00:05Z")"),
            std::string::npos);
}

TEST(NotifierTest, ParsesAndValidatesUrls) {
  auto u = ParseHttpUrl("http://example.org:9093/hooks/a?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "example.org");
  EXPECT_EQ(u->port, "9093");
  EXPECT_EQ(u->target, "/hooks/a?x=1");
  auto v6 = ParseHttpUrl("http://[::1]");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, "80");
  EXPECT_EQ(v6->target, "/");
  for (const char* bad : {"https://x", "ftp://x", "http://", "http://x:y", "http://x:70000",
                          "example.org", "http://u:p@x/"}) {
    EXPECT_FALSE(ParseHttpUrl(bad).ok()) << bad;
  }
  NotifierOptions o;
  o.webhook_urls = {"http://ok", "https://secure"};
  auto s = Notifier::Validate(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("NOTIFY_WEBHOOK_URLS"), std::string::npos);
  o.webhook_urls.clear();
  o.alertmanager_url = "localhost:9093";
  s = Notifier::Validate(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("ALERTMANAGER_URL"), std::string::npos);
}

TEST(NotifierTest, DeliversToEveryWebhook) {
  Receiver a;
  Receiver b;
  metrics::Registry registry;
  core::ManualClock clock(At(30));
  Notifier notifier(Fast({a.Url() + "/hook", b.Url()}), registry, clock);
  notifier.Start();
  const Notification n{AlertEvent::kOpened, SampleAlert(), {}};
  notifier.Notify(n);
  ASSERT_TRUE(a.WaitFor(1));
  ASSERT_TRUE(b.WaitFor(1));
  notifier.Stop();
  EXPECT_EQ(a.Requests()[0].target, "/hook");
  EXPECT_EQ(b.Requests()[0].target, "/");
  EXPECT_EQ(a.Requests()[0].content_type, "application/json");
  EXPECT_EQ(a.Requests()[0].body, WebhookBody(n, At(30)));
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook1"})"), 1);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook2"})"), 1);
  EXPECT_EQ(MetricValue(registry, R"(notifications_failed_total{sink="webhook1"})"), 0);
  EXPECT_EQ(MetricValue(registry, R"(notifications_dropped_total{sink="webhook1"})"), 0);
}

TEST(NotifierTest, RetriesServerErrorsUntilDelivered) {
  // 503, 503, 429, then 200.
  Receiver r([](int n) { return n < 2 ? 503u : n == 2 ? 429u : 200u; });
  metrics::Registry registry;
  Notifier notifier(Fast({r.Url()}), registry);
  notifier.Start();
  notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  ASSERT_TRUE(WaitForMetric(registry, R"(notifications_sent_total{sink="webhook1"})", 1));
  notifier.Stop();
  EXPECT_EQ(r.Requests().size(), 4u);
  EXPECT_EQ(r.Requests()[0].body.substr(0, 30), r.Requests()[3].body.substr(0, 30));
  EXPECT_EQ(MetricValue(registry, R"(notifications_retries_total{sink="webhook1"})"), 3);
  EXPECT_EQ(MetricValue(registry, R"(notifications_failed_total{sink="webhook1"})"), 0);
}

TEST(NotifierTest, RetriesTimeoutsAndRefusedConnections) {
  metrics::Registry registry;
  NotifierOptions o = Fast({"http://127.0.0.1:1/"});  // nothing listens on port 1
  o.max_retries = 2;
  Receiver slow([](int) { return 200u; }, milliseconds(400));
  o.webhook_urls.push_back(slow.Url());
  o.timeout = milliseconds(100);
  Notifier notifier(o, registry);
  notifier.Start();
  notifier.Notify(
      Notification{AlertEvent::kResolved, SampleAlert(core::AlertStatus::kResolved), {}});
  ASSERT_TRUE(WaitForMetric(registry, R"(notifications_failed_total{sink="webhook1"})", 1));
  ASSERT_TRUE(WaitForMetric(registry, R"(notifications_failed_total{sink="webhook2"})", 1));
  notifier.Stop();
  EXPECT_EQ(MetricValue(registry, R"(notifications_retries_total{sink="webhook1"})"), 2);
  EXPECT_EQ(MetricValue(registry, R"(notifications_retries_total{sink="webhook2"})"), 2);
  // The receiver answers one request at a time, each too late: it sees 1 + max_retries.
  ASSERT_TRUE(slow.WaitFor(3));
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_EQ(slow.Requests().size(), 3u);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook2"})"), 0);
}

TEST(NotifierTest, ClientErrorsAreNotRetried) {
  Receiver r([](int) { return 400u; });
  metrics::Registry registry;
  Notifier notifier(Fast({r.Url()}), registry);
  notifier.Start();
  notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  notifier.Notify(
      Notification{AlertEvent::kResolved, SampleAlert(core::AlertStatus::kResolved), {}});
  ASSERT_TRUE(WaitForMetric(registry, R"(notifications_failed_total{sink="webhook1"})", 2));
  notifier.Stop();
  EXPECT_EQ(r.Requests().size(), 2u);  // one attempt each
  EXPECT_EQ(MetricValue(registry, R"(notifications_retries_total{sink="webhook1"})"), 0);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook1"})"), 0);
}

TEST(NotifierTest, AFullQueueDropsAndCounts) {
  Receiver r;
  metrics::Registry registry;
  NotifierOptions o = Fast({r.Url()});
  o.queue_size = 3;
  Notifier notifier(o, registry);
  // Not started: nothing drains the queue, and Notify still returns at once.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i)
    notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(500));
  EXPECT_EQ(MetricValue(registry, R"(notifications_dropped_total{sink="webhook1"})"), 7);
  EXPECT_EQ(MetricValue(registry, R"(notifications_queue_depth{sink="webhook1"})"), 3);
  notifier.Stop();  // never started: the queued ones are dropped too, and counted
  EXPECT_EQ(MetricValue(registry, R"(notifications_dropped_total{sink="webhook1"})"), 10);
  EXPECT_EQ(MetricValue(registry, R"(notifications_queue_depth{sink="webhook1"})"), 0);
  EXPECT_TRUE(r.Requests().empty());
}

TEST(NotifierTest, StopDeliversWhatIsQueued) {
  Receiver r([](int) { return 200u; }, milliseconds(20));
  metrics::Registry registry;
  Notifier notifier(Fast({r.Url()}), registry);
  notifier.Start();
  for (int i = 0; i < 5; ++i) notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  notifier.Stop();
  EXPECT_EQ(r.Requests().size(), 5u);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook1"})"), 5);
  // After Stop, a notification is dropped and counted, not lost silently.
  notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  EXPECT_EQ(MetricValue(registry, R"(notifications_dropped_total{sink="webhook1"})"), 1);
}

TEST(NotifierTest, StopIsBoundedByTheGraceAndCountsTheRestAsDropped) {
  Receiver r([](int) { return 503u; });
  metrics::Registry registry;
  NotifierOptions o = Fast({r.Url()});
  o.max_retries = 1000;
  o.min_backoff = milliseconds(50);
  o.shutdown_grace = milliseconds(300);
  Notifier notifier(o, registry);
  notifier.Start();
  for (int i = 0; i < 3; ++i) notifier.Notify(Notification{AlertEvent::kOpened, SampleAlert(), {}});
  ASSERT_TRUE(r.WaitFor(1));
  const auto start = std::chrono::steady_clock::now();
  notifier.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1500));
  EXPECT_EQ(MetricValue(registry, R"(notifications_dropped_total{sink="webhook1"})"), 3);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="webhook1"})"), 0);
}

TEST(NotifierTest, AlertmanagerGetsOpenAndResolveAndPeriodicResends) {
  Receiver am;
  metrics::Registry registry;
  core::ManualClock clock(At(30));
  NotifierOptions o = Fast({}, am.Url() + "/");
  o.resend_interval = milliseconds(100);
  Notifier notifier(o, registry, clock);
  notifier.Start();
  const core::Alert open = SampleAlert();
  notifier.Notify(Notification{AlertEvent::kOpened, open, {}});
  ASSERT_TRUE(am.WaitFor(1));
  auto first = am.Requests()[0];
  EXPECT_EQ(first.target, "/api/v2/alerts");
  // Active: endsAt = now + 4 resend intervals.
  EXPECT_EQ(first.body, "[" + AlertmanagerAlert(open, At(30) + milliseconds(400)) + "]");
  // The active alert is re-posted every interval.
  ASSERT_TRUE(am.WaitFor(3));
  EXPECT_EQ(am.Requests()[2].body, first.body);
  // Resolve: endsAt = the resolution time; no more re-posts of it.
  const core::Alert resolved = SampleAlert(core::AlertStatus::kResolved);
  notifier.Notify(Notification{AlertEvent::kResolved, resolved, {}});
  const auto until = std::chrono::steady_clock::now() + kWaitLimit;
  std::size_t at = 0;
  while (std::chrono::steady_clock::now() < until && at == 0) {
    auto all = am.Requests();
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (all[i].body == "[" + AlertmanagerAlert(resolved, At(20)) + "]") at = i;
    }
  }
  ASSERT_GT(at, 0u);
  std::this_thread::sleep_for(milliseconds(300));
  notifier.Stop();
  EXPECT_EQ(am.Requests().size(), at + 1) << "re-posted after it was resolved";
  EXPECT_GE(MetricValue(registry, R"(notifications_alertmanager_resends_total{result="ok"})"), 2);
  EXPECT_EQ(MetricValue(registry, R"(notifications_sent_total{sink="alertmanager"})"), 2);
}

TEST(NotifierTest, AlertmanagerSeverityChangeEndsTheOldSeries) {
  Receiver am;
  metrics::Registry registry;
  core::ManualClock clock(At(30));
  NotifierOptions o = Fast({}, am.Url());
  Notifier notifier(o, registry, clock);
  notifier.Start();
  const core::Alert a = SampleAlert();
  notifier.Notify(Notification{AlertEvent::kSeverityChanged, a, "warning"});
  ASSERT_TRUE(am.WaitFor(1));
  notifier.Stop();
  EXPECT_EQ(am.Requests()[0].body, "[" + AlertmanagerAlert(a, At(30) + std::chrono::minutes(4)) +
                                       "," + AlertmanagerAlert(a, a.updated_at, "warning") + "]");
}

TEST(NotifierTest, AlertmanagerResendsWhatTheStoreHasOpen) {
  // With several alerts workers, another one may resolve an alert this one restored: the
  // re-post reads the open alerts from the store, not from memory.
  Receiver am;
  metrics::Registry registry;
  core::ManualClock clock(At(30));
  NotifierOptions o = Fast({}, am.Url());
  o.resend_interval = milliseconds(50);
  std::mutex mu;
  std::vector<core::Alert> in_store;
  o.open_alerts = [&]() -> Result<std::vector<core::Alert>> {
    std::lock_guard lock(mu);
    return in_store;
  };
  core::Alert restored = SampleAlert();
  core::Alert other = SampleAlert();
  other.id = 7;
  other.device_id = "dev-2";
  Notifier notifier(o, registry, clock);
  notifier.SetActive({restored});  // restored, but resolved elsewhere since: not in the store
  {
    std::lock_guard lock(mu);
    in_store = {other};
  }
  notifier.Start();
  ASSERT_TRUE(am.WaitFor(2));
  notifier.Stop();
  for (const auto& r : am.Requests()) {
    EXPECT_EQ(r.body, "[" + AlertmanagerAlert(other, At(30) + milliseconds(200)) + "]");
  }
}

// ---- the alerts worker ----------------------------------------------------------------------

class AlerterNotifyTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::OpenStore(dir_);
  core::RuleSet rules_ = core::RuleSet::Defaults(-10, 50, 0, 100);
};

std::vector<std::string> Events(Receiver& r) {
  std::vector<std::string> out;
  for (const auto& req : r.Requests()) {
    const auto at = req.body.find(R"("event":")");
    out.push_back(req.body.substr(at + 9, req.body.find('"', at + 9) - at - 9));
  }
  return out;
}

TEST_F(AlerterNotifyTest, NotifiesOpenedAndResolvedOnceTheStoreHasThem) {
  Receiver hook;
  metrics::Registry registry;
  Notifier notifier(Fast({hook.Url()}), registry);
  notifier.Start();
  testing::FlakyStore flaky(*store_);
  flaky.FailApplies(2);  // the first batch is retried: it must not be notified twice
  FakeConsumer consumer;
  consumer.AppendReading(ReadingAt("dev-1", At(1), 61));
  consumer.AppendReading(ReadingAt("dev-1", At(2), 62));  // refresh: no notification
  Alerter alerter(rules_, consumer, flaky, registry, {}, &notifier);
  IOT_ASSERT_OK(alerter.Start());
  ASSERT_TRUE(consumer.WaitForCommit(2));
  ASSERT_TRUE(hook.WaitFor(1));
  consumer.AppendReading(ReadingAt("dev-1", At(3), 20));
  ASSERT_TRUE(consumer.WaitForCommit(3));
  ASSERT_TRUE(hook.WaitFor(2));
  alerter.Stop();
  notifier.Stop();
  EXPECT_EQ(Events(hook), (std::vector<std::string>{"opened", "resolved"}));
  EXPECT_NE(hook.Requests()[0].body.find(R"("status":"active")"), std::string::npos);
  EXPECT_NE(hook.Requests()[1].body.find(R"("resolved_at":"2024-01-01T00:00:03Z")"),
            std::string::npos);
}

TEST_F(AlerterNotifyTest, ARestartResendsTheOpenAlertsToAlertmanagerOnly) {
  {
    FakeConsumer consumer;
    consumer.AppendReading(ReadingAt("dev-1", At(1), 61));
    metrics::Registry registry;
    Alerter alerter(rules_, consumer, *store_, registry);
    IOT_ASSERT_OK(alerter.Start());
    ASSERT_TRUE(consumer.WaitForCommit(1));
  }
  Receiver hook;
  Receiver am;
  metrics::Registry registry;
  NotifierOptions o = Fast({hook.Url()}, am.Url());
  Notifier notifier(o, registry);
  notifier.Start();
  FakeConsumer consumer;
  Alerter alerter(rules_, consumer, *store_, registry, {}, &notifier);
  IOT_ASSERT_OK(alerter.Start());
  ASSERT_TRUE(am.WaitFor(1));
  alerter.Stop();
  notifier.Stop();
  const auto body = am.Requests()[0].body;
  EXPECT_NE(body.find(R"("device_id":"dev-1")"), std::string::npos) << body;
  EXPECT_NE(body.find(R"("sensor_type":"temperature_c")"), std::string::npos) << body;
  EXPECT_TRUE(hook.Requests().empty()) << "webhooks get transitions only";
}

}  // namespace
}  // namespace iot::services
