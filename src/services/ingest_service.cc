#include "services/ingest_service.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/beast/http/verb.hpp>
#include <fmt/format.h>

#include "codec/json_writer.h"
#include "codec/reading_json.h"
#include "codec/wire.h"
#include "http/response.h"
#include "http/router.h"

namespace iot::services {
namespace {

namespace bh = boost::beast::http;

http::Response Unavailable(const Status& s) {
  if (!s.ok() && s.error().code == Errc::kInvalidArgument) {
    // The bus can never take a call this large (see bus.h); retrying will not help.
    return http::MakeError(413, "too_large", s.error().message);
  }
  auto r = http::MakeError(503, "unavailable",
                           s.ok() ? "the bus is not accepting readings" : s.error().message);
  r.set(bh::field::retry_after, "1");
  return r;
}

http::Response DecodeErrorResponse(const codec::DecodeError& e) {
  if (e.malformed) return http::MakeError(400, "malformed_json", e.error.message);
  return http::MakeError(422, e.error.code, e.error.message, e.error.field);
}

// kNdjsonTypes are the media types of a newline-delimited batch.
const std::vector<std::string> kNdjsonTypes = {"application/x-ndjson", "application/ndjson"};

bool IsNdjson(const http::Request& request) {
  auto ct = request[bh::field::content_type];
  return http::MediaTypeMatches(std::string_view(ct.data(), ct.size()), kNdjsonTypes);
}

http::Response RateLimited(std::string_view device, std::chrono::milliseconds wait) {
  auto r = http::MakeError(429, "rate_limited",
                           fmt::format("device {} sends faster than its rate limit", device),
                           "device_id");
  r.set(bh::field::retry_after, core::RetryAfterSeconds(wait));
  return r;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

IngestService::IngestService(IngestOptions options, bus::Producer& producer,
                             metrics::Registry& registry, const core::Clock& clock,
                             AuthGuard* guard)
    : options_(std::move(options)),
      producer_(producer),
      clock_(clock),
      guard_(guard),
      device_limiter_(options_.device_rate),
      accepted_(registry.AddCounter("ingest_readings_accepted_total",
                                    "Readings made durable on the bus and acknowledged")),
      rejected_(registry.AddCounterFamily("ingest_readings_rejected_total",
                                          "Readings rejected, by reason", {"reason"})),
      unavailable_(registry.AddCounter(
          "ingest_readings_unavailable_total",
          "Readings answered 503 because the bus could not take them")),
      batch_size_(registry.AddHistogram("ingest_batch_readings",
                                        "Valid readings per POST /ingest/batch request",
                                        {1, 10, 100, 500, 1000, 5000, 10000, 100000})),
      durable_latency_(registry.AddHistogram(
          "ingest_durable_seconds", "Time from a valid request to the bus's acknowledgement",
          metrics::LatencyBuckets())) {}

void IngestService::RegisterRoutes(http::Router& router) {
  http::RouteOptions one;
  one.max_body_bytes = options_.max_body_bytes;
  one.content_types = {"application/json"};
  router.Add(
      bh::verb::post, "/ingest",
      [this](const http::Request& req, const http::PathParams&, http::Respond respond) {
        HandleOne(req, std::move(respond));
      },
      one);
  http::RouteOptions batch;
  batch.max_body_bytes = options_.max_batch_bytes;
  batch.content_types = kNdjsonTypes;
  batch.content_types.push_back("application/json");
  router.Add(
      bh::verb::post, "/ingest/batch",
      [this](const http::Request& req, const http::PathParams&, http::Respond respond) {
        HandleBatch(req, std::move(respond));
      },
      batch);
}

void IngestService::CountRejected(std::string_view code) { rejected_.With({code}).Inc(); }

bool IngestService::Authenticate(const http::Request& request, http::Respond& respond,
                                 auth::TokenRef& token) {
  if (!guard_) return true;
  auto who = guard_->Writer(request);
  if (auto* refused = std::get_if<http::Response>(&who)) {
    respond(std::move(*refused));
    return false;
  }
  token = std::get<auth::TokenRef>(std::move(who));
  return true;
}

void IngestService::HandleOne(const http::Request& request, http::Respond respond) {
  auth::TokenRef token;
  if (!Authenticate(request, respond, token)) return;
  auto decoded = codec::DecodeReading(request.body(), options_.limits, clock_.Now());
  if (auto* err = std::get_if<codec::DecodeError>(&decoded)) {
    CountRejected(err->malformed ? "malformed_json" : err->error.code);
    respond(DecodeErrorResponse(*err));
    return;
  }
  auto& reading = std::get<core::Reading>(decoded);
  if (token && !token->MayWrite(reading.device_id)) {
    respond(guard_->Forbidden("device_not_allowed",
                              "this token may not write device " + reading.device_id,
                              "device_id"));
    return;
  }
  // After the token's check: only devices a token may write take buckets.
  if (auto wait = device_limiter_.Take(reading.device_id, clock_.Now())) {
    CountRejected("rate_limited");
    respond(RateLimited(reading.device_id, *wait));
    return;
  }
  std::vector<bus::Message> messages(1);
  messages[0].payload = codec::EncodeWire(reading);
  messages[0].key = std::move(reading.device_id);
  std::string body = R"({"status":"queued","device_id":")" + messages[0].key + "\"}";
  auto start = std::chrono::steady_clock::now();
  producer_.Produce(std::move(messages), [this, respond = std::move(respond),
                                          body = std::move(body), start](Status s) mutable {
    if (!s.ok()) {
      unavailable_.Inc();
      respond(Unavailable(s));
      return;
    }
    durable_latency_.Observe(SecondsSince(start));
    accepted_.Inc();
    respond(http::MakeJson(202, std::move(body)));
  });
}

void IngestService::HandleBatch(const http::Request& request, http::Respond respond) {
  auth::TokenRef token;
  if (!Authenticate(request, respond, token)) return;
  auto format = IsNdjson(request) ? codec::BatchFormat::kNdjson : codec::BatchFormat::kJsonArray;
  auto decoded = codec::DecodeBatch(request.body(), format, options_.limits, clock_.Now(),
                                    options_.batch_max_items);
  if (auto* err = std::get_if<codec::BatchError>(&decoded)) {
    switch (err->kind) {
      case codec::BatchError::kTooManyItems:
        CountRejected("too_many_items");
        respond(http::MakeError(413, "too_many_items",
                                fmt::format("{} (at most {} readings per request)", err->message,
                                            options_.batch_max_items)));
        return;
      case codec::BatchError::kEmpty:
        CountRejected("empty_batch");
        respond(http::MakeError(422, "empty_batch", err->message));
        return;
      case codec::BatchError::kMalformed:
        CountRejected("malformed_json");
        respond(http::MakeError(400, "malformed_json", err->message));
        return;
    }
  }
  auto& items = std::get<std::vector<codec::BatchItem>>(decoded);
  if (token) {
    // One reading the token may not write refuses the whole request: nothing is written, and
    // no reading takes a rate-limit token or counts as rejected.
    for (const auto& item : items) {
      const auto* reading = std::get_if<core::Reading>(&item.result);
      if (reading != nullptr && !token->MayWrite(reading->device_id)) {
        respond(guard_->Forbidden(
            "device_not_allowed",
            fmt::format("this token may not write device {} (item {}); nothing of the batch "
                        "was written",
                        reading->device_id, item.index),
            "device_id"));
        return;
      }
    }
  }
  std::vector<bus::Message> messages;
  messages.reserve(items.size());
  // The errors of rejected items, as a JSON array body fragment.
  std::string errors;
  codec::JsonWriter ew(errors);
  ew.BeginArray();
  std::size_t rejected = 0;
  const auto add_error = [&](std::size_t index, std::string_view field, std::string_view code,
                             std::string_view message) {
    ++rejected;
    CountRejected(code);
    ew.BeginObject();
    ew.Key("index");
    ew.Int(static_cast<std::int64_t>(index));
    ew.Key("field");
    ew.String(field);
    ew.Key("error");
    ew.String(code);
    ew.Key("message");
    ew.String(message);
    ew.EndObject();
  };
  // The longest wait of the readings over their device's limit (zero: none was).
  std::chrono::milliseconds limited_wait{0};
  const core::Timestamp now = clock_.Now();
  for (auto& item : items) {
    if (auto* err = std::get_if<codec::DecodeError>(&item.result)) {
      add_error(item.index, err->error.field,
                err->malformed ? std::string_view("malformed_json") : err->error.code,
                err->error.message);
      continue;
    }
    auto& reading = std::get<core::Reading>(item.result);
    if (auto wait = device_limiter_.Take(reading.device_id, now)) {
      limited_wait = std::max(limited_wait, *wait);
      add_error(item.index, "device_id", "rate_limited",
                fmt::format("device {} sends faster than its rate limit; retry in {} ms",
                            reading.device_id, wait->count()));
      continue;
    }
    bus::Message m;
    m.payload = codec::EncodeWire(reading);
    m.key = std::move(reading.device_id);
    messages.push_back(std::move(m));
  }
  ew.EndArray();
  std::size_t accepted = messages.size();
  auto body = [accepted, rejected, &errors](std::string_view status) {
    return fmt::format(R"({{"status":"{}","accepted":{},"rejected":{},"errors":{}}})", status,
                       accepted, rejected, errors);
  };
  if (accepted == 0) {
    if (limited_wait.count() > 0) {  // a retry can succeed: 429, not 422
      auto r = http::MakeJson(429, body("rejected"));
      r.set(bh::field::retry_after, core::RetryAfterSeconds(limited_wait));
      respond(std::move(r));
      return;
    }
    respond(http::MakeJson(422, body("rejected")));
    return;
  }
  batch_size_.Observe(static_cast<double>(accepted));
  auto start = std::chrono::steady_clock::now();
  producer_.Produce(std::move(messages),
                    [this, respond = std::move(respond), ok_body = body("queued"), accepted,
                     start](Status s) mutable {
                      if (!s.ok()) {
                        unavailable_.Inc(static_cast<double>(accepted));
                        respond(Unavailable(s));
                        return;
                      }
                      durable_latency_.Observe(SecondsSince(start));
                      accepted_.Inc(static_cast<double>(accepted));
                      respond(http::MakeJson(202, std::move(ok_body)));
                    });
}

}  // namespace iot::services
