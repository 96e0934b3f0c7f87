// stream.h: streaming responses (Server-Sent Events): a handler that keeps the connection and
// writes to it for as long as the client listens.
//
//   router->AddStream(verb::get, "/stream",
//       [&hub](const Request&, const PathParams&, std::shared_ptr<StreamWriter> w)
//           -> std::optional<Response> {
//         if (hub.Full()) return MakeError(503, "overloaded", "too many streams");
//         hub.Add(std::move(w));   // writes "event: ...\ndata: ...\n\n" from any thread later
//         return std::nullopt;     // accepted: the server sends the head at once
//       });
//
// The server answers an accepted stream with 200, the route's content type, Cache-Control:
// no-cache and Connection: close, and no Content-Length: the body is everything written until
// the stream ends, and ends with the connection (valid for HTTP/1.0 and 1.1, and what browsers'
// EventSource expects). Back-pressure: what a client has not read yet is queued in the server,
// up to StreamOptions::max_queued_bytes; a write beyond that ends the stream and closes the
// connection, so a stalled client costs at most that much memory and never slows the writer.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/response.h"

namespace iot::http {

struct PathParams;  // router.h

// StreamWriter is the server's side of one accepted stream. Thread-safe.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Write queues `bytes` for the client and returns true, or returns false when the stream has
  // ended: the client went away, the server is stopping, Close was called, or this write would
  // queue more than max_queued_bytes (the stream then ends: a slow client is cut off).
  virtual bool Write(std::string_view bytes) = 0;
  // Close ends the stream: the connection closes once what is queued has been written.
  virtual void Close() = 0;
  // Open reports whether Write may still succeed.
  virtual bool Open() const = 0;
  // Overflowed reports whether the stream ended because the client fell too far behind.
  virtual bool Overflowed() const = 0;
};

struct StreamOptions {
  std::string content_type = "text/event-stream; charset=utf-8";
  // max_queued_bytes bounds what is written but not yet read by the client.
  std::size_t max_queued_bytes = 1024 * 1024;
};

// StreamHandler accepts a request as a stream (keeps `writer`, returns nullopt) or refuses it
// with an ordinary response (an error, say), which the server sends instead; `writer` is then
// unused. Called on the connection's strand; it must not block.
using StreamHandler = std::function<std::optional<Response>(
    const Request&, const PathParams&, std::shared_ptr<StreamWriter> writer)>;

}  // namespace iot::http
