// run.h: the roles' run loops. Concrete bus and store types are chosen here and nowhere else.
#pragma once

#include "app/config.h"

namespace iot::app {

// RunServer runs `config.role` until SIGINT/SIGTERM, then shuts down gracefully.
// Returns the process exit code.
int RunServer(const Config& config);

// RunLoadgen runs the load generator; exit code 1 when the error rate exceeds the threshold.
int RunLoadgen(const Config& config);

// RunDlqReplay republishes DLQ_TOPIC's dead letters to TELEMETRY_TOPIC until none arrived for
// DLQ_REPLAY_IDLE; prints how many. Exit code 1 when Kafka fails.
int RunDlqReplay(const Config& config);

}  // namespace iot::app
