// spool-meta: the metadata service daemon. Parses flags into MetaOptions,
// starts MetaService, and waits for SIGTERM/SIGINT.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/cpu_policy.h"
#include "common/log.h"
#include "common/signals.h"
#include "meta/meta_service.h"

int main(int argc, char** argv) {
  spool::meta::MetaOptions o;
  CLI::App app{"spool-meta: spoolfs metadata service"};
  int64_t down_ms = o.brick_down_after.count(), out_ms = o.brick_out_after.count(),
          session_ms = o.session_timeout.count(), maintenance_ms = o.maintenance_out_after.count(),
          settle_ms = o.move_settle.count();
  app.add_option("--data", o.data_dir, "RocksDB data directory (formatted if empty)")->required();
  app.add_option("--listen", o.listen, "host:port to serve on")->capture_default_str();
  app.add_option("--cluster-key", o.cluster_key_file, "cluster key file")->required();
  app.add_option("--pg-count", o.pg_count, "placement groups (fixed at format time)")
      ->capture_default_str()->check(CLI::Range(1u, 1u << 20));
  app.add_option("--replicas", o.replicas, "copies per chunk (fixed at format time)")
      ->capture_default_str()->check(CLI::Range(1u, 16u));
  app.add_option("--brick-down-after-ms", down_ms, "mark a silent brick down after this long")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--brick-out-after-ms", out_ms,
                 "grace period: rebuild a down brick's placement groups elsewhere after this long")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--maintenance-grace-ms", maintenance_ms,
                 "a brick in maintenance is taken out (and rebuilt elsewhere) only after this long away")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--auto-join", o.auto_join,
                 "a new brick joins placement when it registers (false: wait for spoolctl add-brick)")
      ->capture_default_str();
  app.add_option("--move-settle-ms", settle_ms,
                 "copy a moved placement group to its new brick only this long after the map changed")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--session-timeout-ms", session_ms, "expire a client session not renewed for this long")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "io threads")->capture_default_str()->check(CLI::Range(1, 64));
  std::string cpu_policy = "batch";
  app.add_option("--cpu-policy", cpu_policy, spool::kCpuPolicyHelp)
      ->capture_default_str()->check([](const std::string& name) {
        auto policy = spool::ParseCpuPolicy(name);
        return policy.ok() ? std::string() : policy.status().message();
      });
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.brick_down_after = std::chrono::milliseconds(down_ms);
  o.brick_out_after = std::chrono::milliseconds(out_ms);
  o.session_timeout = std::chrono::milliseconds(session_ms);
  o.maintenance_out_after = std::chrono::milliseconds(maintenance_ms);
  o.move_settle = std::chrono::milliseconds(settle_ms);
  spool::InitLogging(o.log_level);

  if (auto s = spool::ApplyCpuPolicy(*spool::ParseCpuPolicy(cpu_policy)); !s.ok())
    SPOOL_LOG_WARN("meta keeps the default cpu policy error=\"{}\"", s.ToString());
  const sigset_t signals = spool::BlockTerminationSignals();

  auto service = spool::meta::MetaService::Start(o);
  if (!service.ok()) {
    std::fprintf(stderr, "spool-meta: %s\n", service.status().ToString().c_str());
    return 1;
  }
  int sig = spool::WaitForTerminationSignal(signals);
  SPOOL_LOG_INFO("meta signal={} stopping", sig);
  (*service)->Stop();
  return 0;
}
