// crash_producer.cc: the child process of embedded_bus_crash_test.cc.
//
//   crash_producer <bus path> <seed>
//
// Opens the bus (Sync::kFull) and produces numbered messages (crash_messages.h) forever, with
// up to 16 calls of 1..40 messages in flight. For every acknowledged call it writes one line
// "<first offset> <count>\n" to stdout. The test kills it with SIGKILL at a random moment.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <semaphore>
#include <string>
#include <vector>

#include "bus/embedded_bus.h"
#include "crash_messages.h"

namespace {

// WriteAll writes the whole line (one write() for a short line on a pipe, which is atomic).
void WriteAll(const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(STDOUT_FILENO, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(4);  // the test went away
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using iot::bus::EmbeddedBus;
  using iot::bus::EmbeddedBusOptions;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <bus path> <seed>\n", argv[0]);
    return 2;
  }
  EmbeddedBusOptions options;
  options.path = argv[1];
  options.sync = EmbeddedBusOptions::Sync::kFull;
  auto bus = EmbeddedBus::Open(options);
  if (!bus) {
    std::fprintf(stderr, "open: %s\n", bus.error().message.c_str());
    return 2;
  }
  auto producer = (*bus)->NewProducer();
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  std::counting_semaphore<16> in_flight(16);
  std::int64_t next = (*bus)->EndOffset();  // the bus answers calls in order: offsets follow
  for (;;) {
    in_flight.acquire();
    const auto count = static_cast<std::int64_t>(1 + rng() % 40);
    std::vector<iot::bus::Message> messages;
    for (std::int64_t o = next; o < next + count; ++o) {
      messages.push_back({iot::bus::testing::CrashKey(o), iot::bus::testing::CrashPayload(o)});
    }
    producer->Produce(std::move(messages), [first = next, count, &in_flight](iot::Status s) {
      if (!s) {
        std::fprintf(stderr, "produce: %s\n", s.error().message.c_str());
        std::_Exit(3);
      }
      const std::string line = std::to_string(first) + " " + std::to_string(count) + "\n";
      WriteAll(line.data(), line.size());
      in_flight.release();
    });
    next += count;
  }
}
