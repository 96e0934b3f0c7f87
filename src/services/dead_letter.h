// dead_letter.h: the JSON form of a dead letter, on DLQ_TOPIC and in GET /dlq.
//
//   {"consumer":"aggregator","topic":"telemetry.raw","partition":3,"offset":1234,
//    "key":"dev-1","key_encoding":"utf8","payload":"...","payload_encoding":"utf8",
//    "reason":"undecodable: ...",
//    "attempts":1,"failed_at":"2026-11-28T10:00:00.123456Z"}
//
// `payload` is the record's bytes as text when they are valid UTF-8 ("utf8"), else in base64
// ("base64", RFC 4648 with padding), so that any payload survives the trip byte for byte; `key`
// likewise with `key_encoding`. `reason` is text (an invalid byte shows as U+FFFD).
// ParseDeadLetter reads that form back (iotd dlq replay). Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "codec/json_writer.h"
#include "core/result.h"
#include "store/store.h"

namespace iot::services {

void WriteDeadLetter(codec::JsonWriter& w, const store::DeadLetter& dl);
std::string DeadLetterJson(const store::DeadLetter& dl);
Result<store::DeadLetter> ParseDeadLetter(std::string_view json);

// Base64 encoding (RFC 4648, standard alphabet, padded), for payloads that are not text.
std::string EncodeBase64(std::string_view bytes);
// DecodeBase64 returns nullopt for anything that is not canonical padded base64.
std::optional<std::string> DecodeBase64(std::string_view text);

}  // namespace iot::services
