// spool-brickd: keeps chunks on one local disk and serves them over RPC.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "brickd/daemon.h"
#include "common/cpu_policy.h"
#include "common/log.h"
#include "common/signals.h"

int main(int argc, char** argv) {
  spool::brick::BrickOptions options;
  CLI::App app{"spool-brickd: a spoolfs brick (chunk store on one local disk)"};
  app.add_option("--data", options.data_dir, "brick data directory (formatted on first start)")->required();
  app.add_option("--listen", options.listen, "HOST:PORT to serve on")->capture_default_str();
  app.add_option("--cluster-key", options.cluster_key_file, "cluster key file (cluster-id + key)")->required();
  app.add_option("--meta", options.meta_address, "HOST:PORT of spool-meta; empty = run without meta")
      ->capture_default_str();
  app.add_option("--failure-domain", options.failure_domain, "failure domain name (default: this host's name)")
      ->capture_default_str();
  app.add_option("--advertise", options.advertise, "HOST:PORT clients reach this brick at (default: --listen)")
      ->capture_default_str();
  app.add_option("--reserve-bytes", options.reserve_bytes, "refuse puts when free space falls below this")
      ->capture_default_str();
  app.add_option("--compression", options.compression, "compression of chunk bytes on disk: zstd, lz4 or none")
      ->capture_default_str()->check(CLI::IsMember({"zstd", "lz4", "none"}));
  app.add_option("--threads", options.threads, "RPC io threads")->capture_default_str();
  app.add_option("--background-slice-kib", options.background_slice_kib,
                 "KiB of repair writes synced together with a client's put at most (a client waits for no more)")
      ->capture_default_str()->check(CLI::Range(64, 65536));
  uint64_t repair_mbps = options.repair.repair_bytes_per_sec >> 20, scrub_mbps = options.repair.scrub_bytes_per_sec >> 20;
  int64_t scrub_hours = options.repair.scrub_interval.count() / 3600;
  uint64_t repair_quiet_mbps = options.repair.repair_quiet_bytes_per_sec >> 20;
  uint64_t move_mbps = options.repair.move_bytes_per_sec >> 20;
  app.add_option("--repair-mbps", repair_mbps,
                 "MiB/s this brick pulls from peers when repairing while clients use it (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--repair-quiet-mbps", repair_quiet_mbps,
                 "the same once no client has used this brick for a second (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--move-mbps", move_mbps,
                 "at most this much of --repair-mbps goes to moves (add, drain) while clients use this brick "
                 "(0 = no cap of its own)")
      ->capture_default_str();
  app.add_option("--repair-workers", options.repair.workers, "placement groups repaired at once")
      ->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--scrub-mbps", scrub_mbps, "MiB/s the scrubber reads (0 = unlimited)")->capture_default_str();
  app.add_option("--scrub-interval-hours", scrub_hours, "hours between scrub passes (0 = only on request)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  int64_t gc_delay_ms = options.gc.delay.count();
  app.add_option("--gc-delay-ms", gc_delay_ms,
                 "delete the copies of a placement group this long after this brick stopped holding it")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--gc-chunks-per-sec", options.gc.chunks_per_sec,
                 "chunks of departed placement groups deleted per second (0 = unlimited)")
      ->capture_default_str();
  std::string cpu_policy = "batch";
  app.add_option("--cpu-policy", cpu_policy, spool::kCpuPolicyHelp)
      ->capture_default_str()->check([](const std::string& name) {
        auto policy = spool::ParseCpuPolicy(name);
        return policy.ok() ? std::string() : policy.status().message();
      });
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.repair.repair_bytes_per_sec = repair_mbps << 20;
  options.repair.repair_quiet_bytes_per_sec = repair_quiet_mbps << 20;
  options.repair.move_bytes_per_sec = move_mbps << 20;
  options.repair.scrub_bytes_per_sec = scrub_mbps << 20;
  options.repair.scrub_interval = std::chrono::hours(scrub_hours);
  options.gc.delay = std::chrono::milliseconds(gc_delay_ms);
  spool::InitLogging(options.log_level);

  if (auto s = spool::ApplyCpuPolicy(*spool::ParseCpuPolicy(cpu_policy)); !s.ok())
    SPOOL_LOG_WARN("brickd keeps the default cpu policy error=\"{}\"", s.ToString());
  const sigset_t signals = spool::BlockTerminationSignals();

  auto daemon = spool::brick::BrickDaemon::Start(options);
  if (!daemon.ok()) {
    SPOOL_LOG_ERROR("brickd refused to start error=\"{}\"", daemon.status().ToString());
    std::fprintf(stderr, "spool-brickd: %s\n", daemon.status().message().c_str());
    return 1;
  }
  int signal_number = spool::WaitForTerminationSignal(signals);
  SPOOL_LOG_INFO("brickd stopping signal={}", signal_number);
  daemon.value()->Stop();
  return 0;
}
