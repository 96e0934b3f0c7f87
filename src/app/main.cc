// main.cc: iotd's entry point: parse the configuration, then run the chosen role.
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "app/config.h"
#include "app/health_probe.h"
#include "core/time.h"
#include "app/logging.h"
#include "app/run.h"
#include "app/token_command.h"

int main(int argc, char** argv) {
  iot::app::Config config;
  CLI::App cli{"iotd"};
  cli.set_version_flag("--version", "iotd 0.1.0");
  iot::app::BuildCli(cli, config);
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  if (config.role == iot::app::Role::kOptions) {
    std::fputs(iot::app::DescribeOptions(cli, config.options_json).c_str(), stdout);
    return 0;
  }
  if (!iot::app::InitLogging(config.log_level)) {
    std::fprintf(stderr, "iotd: unknown LOG_LEVEL %s\n", config.log_level.c_str());
    return 2;
  }
  if (iot::Status s = iot::app::Validate(config); !s) {
    spdlog::critical("invalid configuration: {}", s.error().message);
    std::fprintf(stderr, "iotd: %s\n", s.error().message.c_str());
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  if (config.role == iot::app::Role::kHealth) {
    const auto timeout = *iot::core::ParseDuration(config.health_timeout);
    return iot::app::RunHealth(iot::app::HealthUrls(config),
                               std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  }
  if (config.role == iot::app::Role::kLoadgen) return iot::app::RunLoadgen(config);
  if (config.role == iot::app::Role::kDlqReplay) return iot::app::RunDlqReplay(config);
  if (config.role == iot::app::Role::kTokenCreate || config.role == iot::app::Role::kTokenList ||
      config.role == iot::app::Role::kTokenRevoke) {
    return iot::app::RunToken(config);
  }
  return iot::app::RunServer(config);
}
