// spool-bench rebuild: how fast a wiped brick is rebuilt (issue 8).
//
// Starts a real 3-brick cluster (tests/support LocalCluster: spool-meta,
// spool-brickd and spoolfs processes) under --dir, fills it with --messages
// small messages, measures the p99 of a light maildir delivery load through a
// spoolfs mount, then wipes brick 0 (SIGKILL, delete its data directory,
// restart at the same address) and times until meta reports every placement
// group healthy again, with the same delivery load running. It checks that
// the rebuilt brick holds every message (listing with lengths and CRCs), then
// copies the same messages stored as one file each with `rsync -a --fsync`
// (a durable copy, which is what a rebuild is) and with plain `rsync -a`.
//
// The fill bypasses the namespace: a rebuild copies chunks only, and filling
// 200,000 messages through FUSE takes too long. Each message is one chunk
// (as the mount stores a small message), with ids allocated by meta
// (AllocChunkIds, so they cannot collide with the mount's), put in bulk
// (PutChunks) to every brick of its placement group per meta's map.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/cluster_key.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/placement.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tests/support/cluster.h"
#include "tools/bench/bench.h"
#include "tools/bench/cluster_bench.h"

namespace spool::bench {
namespace {

struct Options {
  int messages = 200000;
  std::string dir = "/var/tmp";
  uint64_t seed = 42;
  int repair_mbps = 24;     // brickd's default
  int repair_quiet_mbps = -1;  // -1: brickd's default
  int repair_workers = 0;   // 0: brickd's default
  std::vector<std::string> brick_args;  // more flags for every brick
  bool skip_rsync = false;
  double load_seconds = 15;  // idle latency measurement
  int load_threads = 2;
  bool keep_logs = false;
};

// VmHWM of a process in KiB, or 0.
uint64_t PeakRssKiB(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

// CPU seconds the whole machine spent busy (not idle or waiting for I/O) so far.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  in >> cpu;
  for (auto& x : v) in >> x;
  const unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // user nice system irq softirq steal
  return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string UuidOf(const proto::StatusReply& status, const std::string& failure_domain) {
  for (const auto& b : status.map().bricks())
    if (b.failure_domain() == failure_domain) return b.uuid();
  return "";
}

bool Healthy(const proto::StatusReply& s) {
  return s.pgs_degraded() == 0 && s.repair().pgs_pending() == 0 && s.pgs_healthy() == s.map().pg_count();
}

// Lists every PG on a brick; counts the messages present with the right
// length and CRC.
Result<size_t> CountIntact(rpc::RpcClient& brick, uint32_t pg_count, const std::vector<Message>& messages) {
  std::unordered_map<uint64_t, const Message*> by_id;
  by_id.reserve(messages.size());
  for (const auto& m : messages) by_id[m.chunk_id] = &m;
  size_t intact = 0;
  for (uint32_t pg = 0; pg < pg_count; ++pg) {
    proto::ListChunksRequest req;
    req.set_pg(pg);
    req.set_max_entries(16384);
    for (;;) {
      proto::ListChunksReply reply;
      if (auto s = brick.CallSync(rpc::Method::kListChunks, req, &reply); !s.ok()) return s;
      for (const auto& c : reply.chunks()) {
        auto it = by_id.find(c.chunk_id());
        if (it != by_id.end() && c.length() == it->second->size && c.crc32c() == it->second->crc) ++intact;
      }
      if (reply.complete() || reply.chunks_size() == 0) break;
      req.set_has_after(true);
      req.set_after_chunk_id(reply.chunks(reply.chunks_size() - 1).chunk_id());
    }
  }
  return intact;
}


}  // namespace

int RunRebuild(int argc, char** argv) {
  Options o;
  CLI::App app{"spool-bench rebuild: time to rebuild a wiped brick, beside rsync of the same messages"};
  app.add_option("--messages", o.messages, "messages in the cluster (one chunk each)")->capture_default_str();
  app.add_option("--dir", o.dir, "work directory on the disk under test (cluster, rsync files)")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of message sizes and bytes")->capture_default_str();
  app.add_option("--repair-mbps", o.repair_mbps, "passed to every brick: MiB/s of repair pulls (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--repair-quiet-mbps", o.repair_quiet_mbps,
                 "passed to every brick if >= 0: MiB/s of repair pulls once no client used the brick for 1 s")
      ->capture_default_str();
  app.add_option("--brick-arg", o.brick_args, "one more flag for every brick (repeatable; e.g. --brick-arg=--x=1)");
  app.add_option("--repair-workers", o.repair_workers, "passed to every brick if > 0 (0: brickd's default)")
      ->capture_default_str();
  app.add_option("--load-seconds", o.load_seconds, "duration of the idle latency measurement")->capture_default_str();
  app.add_option("--load-threads", o.load_threads, "delivery threads on the mount")->capture_default_str();
  app.add_flag("--skip-rsync", o.skip_rsync, "skip the rsync baselines");
  app.add_flag("--keep-logs", o.keep_logs, "copy the daemons' logs to DIR/spool-bench-rebuild-logs.PID");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (o.messages <= 0 || o.load_threads <= 0) {
    std::fprintf(stderr, "spool-bench rebuild: --messages and --load-threads must be positive\n");
    return 2;
  }
  spool::InitLogging("warn");
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "spool-bench rebuild: %s\n", what.c_str());
    return 1;
  };

  Cleanup cleanup;
  const std::string work_dir = fs::absolute(o.dir).string() + "/spool-bench-rebuild." + std::to_string(getpid());
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  if (ec) return fail("cannot create " + work_dir + ": " + ec.message());
  cleanup.work_dir = work_dir;
  if (o.keep_logs) cleanup.keep_logs_to = fs::absolute(o.dir).string() + "/spool-bench-rebuild-logs." + std::to_string(getpid());
  // LocalCluster finds the binaries through SPOOL_BUILD_DIR and puts its
  // directory under TMPDIR: both point into this run.
  ::setenv("SPOOL_BUILD_DIR", DefaultBuildDir().c_str(), 0);
  ::setenv("TMPDIR", work_dir.c_str(), 1);

  // The messages: sizes, bytes' seeds and CRCs (bytes regenerated when needed).
  std::mt19937_64 rng(o.seed);
  std::vector<Message> messages(static_cast<size_t>(o.messages));
  uint64_t total_bytes = 0;
  {
    std::string body;
    for (auto& m : messages) {
      m.size = static_cast<uint32_t>(MessageSize(rng));
      m.seed = rng();
      FillBody(&body, m.size, m.seed);
      m.crc = Crc32c(body);
      total_bytes += m.size;
    }
  }

  testing::ClusterConfig config;
  config.bricks = 3;
  config.replicas = 3;
  config.brick_args = {"--repair-mbps", std::to_string(o.repair_mbps), "--scrub-interval-hours", "0"};
  if (o.repair_workers > 0) {
    config.brick_args.push_back("--repair-workers");
    config.brick_args.push_back(std::to_string(o.repair_workers));
  }
  if (o.repair_quiet_mbps >= 0) {
    config.brick_args.push_back("--repair-quiet-mbps");
    config.brick_args.push_back(std::to_string(o.repair_quiet_mbps));
  }
  config.brick_args.insert(config.brick_args.end(), o.brick_args.begin(), o.brick_args.end());
  cleanup.cluster = std::make_unique<testing::LocalCluster>(config);
  auto& cluster = *cleanup.cluster;

  std::printf("spool-bench rebuild\n");
  std::printf("  messages      %d, %.1f MB (mean %.1f KiB; 10%% 256 B-1 KiB, 80%% 1-10 KiB, 9%% 10-64 KiB, 1%% 64-256 KiB), seed %llu\n",
              o.messages, static_cast<double>(total_bytes) / 1e6, static_cast<double>(total_bytes) / 1024.0 / o.messages,
              static_cast<unsigned long long>(o.seed));
  std::printf("  cluster       spool-meta + 3 spool-brickd, 3 copies, on 127.0.0.1, data under %s\n", work_dir.c_str());
  std::printf("  fill          straight to the bricks, not through the namespace: one chunk per message (as the\n"
              "                mount stores a small message), ids from meta's AllocChunkIds, PutChunks in bulk to\n"
              "                every brick of the chunk's placement group per meta's map\n");
  std::printf("  wipe          SIGKILL brick 0, delete its data directory, restart it at the same address; the\n"
              "                rebuild is timed from the deleted directory (an empty new disk) until healthy\n");
  std::printf("  healthy       meta status: pgs_degraded 0, repair.pgs_pending 0, every PG healthy\n");
  std::printf("  repair        --repair-mbps %d%s while clients write, --repair-quiet-mbps %s once none did for\n"
              "                1 s, --repair-workers %s (per brick)\n",
              o.repair_mbps, o.repair_mbps == 0 ? " (unlimited)" : " MiB/s",
              o.repair_quiet_mbps < 0 ? "default" : std::to_string(o.repair_quiet_mbps).c_str(),
              o.repair_workers > 0 ? std::to_string(o.repair_workers).c_str() : "default");
  std::printf("  load          %d threads delivering to a spoolfs mount (create tmp/X, write, fsync, rename into\n"
              "                new/; same sizes): %.0f s idle, then from the rebuild's start until healthy\n",
              o.load_threads, o.load_seconds);
  std::printf("  then          brick 0 wiped again and rebuilt with no load (a quiet cluster)\n");
  std::printf("  caches        dropped (sync; echo 3 > drop_caches) before the rebuild and each rsync\n");
  std::printf("  baseline      %s\n\n",
              o.skip_rsync ? "skipped (--skip-rsync)"
                           : "the same messages as one file each under the same work dir: rsync -a --fsync, rsync -a");
  std::fflush(stdout);

  if (!cluster.Start()) return fail("cluster did not start; see " + cluster.dir() + "/*.log");
  auto key = ClusterKey::Load(cluster.key_path());
  if (!key.ok()) return fail(key.status().message());
  rpc::IoRuntime runtime(2);
  auto meta = rpc::RpcClient::Create(runtime.io(), cluster.meta_address(), *key);
  proto::ClusterMap map;
  if (auto s = meta->CallSync(rpc::Method::kGetMap, proto::GetMapRequest(), &map); !s.ok())
    return fail("GetMap: " + s.ToString());

  // ---- fill
  const auto fill_start = Clock::now();
  for (size_t i = 0; i < messages.size();) {
    proto::AllocChunkIdsRequest req;
    req.set_count(static_cast<uint32_t>(std::min<size_t>(65536, messages.size() - i)));
    proto::AllocChunkIdsReply reply;
    if (auto s = meta->CallSync(rpc::Method::kAllocChunkIds, req, &reply); !s.ok())
      return fail("AllocChunkIds: " + s.ToString());
    for (uint32_t k = 0; k < reply.count() && i < messages.size(); ++k) messages[i++].chunk_id = reply.first() + k;
  }
  {
    Filler filler(runtime, *key, map);
    if (auto s = filler.Put(messages); !s.ok()) return fail("fill: " + s.ToString());
  }
  const double fill_s = Seconds(Clock::now() - fill_start);
  std::printf("fill           %.1f s: %.0f messages/s, %.1f MB/s to each of 3 bricks\n", fill_s,
              o.messages / fill_s, static_cast<double>(total_bytes) / 1e6 / fill_s);
  std::fflush(stdout);

  // ---- foreground latency without a rebuild
  const std::string mount = cluster.Mount();
  if (mount.empty()) return fail("mount failed; see " + cluster.dir());
  auto load = std::make_unique<DeliveryLoad>(mount + "/load", o.load_threads, o.seed);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm-up, not counted
  const auto idle_from = Clock::now();
  for (double t = 0; t < o.load_seconds && !g_interrupted; t += 0.1)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto idle_to = Clock::now();
  load->Stop();
  const auto idle = load->Latencies(idle_from, idle_to);
  if (load->errors() > 0) return fail("delivery errors without a rebuild: " + load->first_error());
  if (g_interrupted) return fail("interrupted");

  // ---- wipe brick 0 and rebuild it: under the same load, then on a quiet cluster
  struct RebuildRun {
    // killed: brick 0 SIGKILLed; wiped: its directory removed (an empty new
    // disk, where the rebuild's time starts, as rsync's starts at an empty
    // destination).
    Clock::time_point killed, wiped, restarted, took_over, healthy_at;
    double cpu[3] = {}, machine = 0;
    uint32_t pgs_marked = 0;
    uint64_t copied = 0, bytes_copied = 0;
    size_t intact = 0;
  };
  // Wipes brick 0 and waits until the cluster is healthy; "" or what went wrong.
  auto wipe_and_rebuild = [&](RebuildRun* run) -> std::string {
    proto::StatusReply status;
    if (!cluster.Status(&status) || !Healthy(status)) return "cluster not healthy before the wipe";
    const std::string old_uuid = UuidOf(status, "brick0");
    const uint64_t copied_before = status.repair().chunks_copied(), bytes_before = status.repair().bytes_copied();
    if (!DropCaches()) std::fprintf(stderr, "spool-bench rebuild: could not drop caches (not root?)\n");
    run->killed = Clock::now();
    cluster.KillBrick(0, SIGKILL);
    fs::remove_all(cluster.brick_dir(0), ec);
    run->wiped = Clock::now();
    if (!cluster.StartBrick(0)) return "brick 0 did not restart";
    run->restarted = Clock::now();
    bool took_over = false, healthy = false;
    double cpu_at_takeover[3] = {}, machine_at_takeover = 0;
    const auto deadline = Clock::now() + std::chrono::minutes(30);
    while (Clock::now() < deadline && !g_interrupted) {
      if (cluster.Status(&status)) {
        if (!took_over && UuidOf(status, "brick0") != old_uuid) {
          took_over = true;
          run->took_over = Clock::now();
          for (int i = 0; i < 3; ++i) cpu_at_takeover[i] = CpuSeconds(cluster.brick_pid(i));
          machine_at_takeover = MachineBusySeconds();
        }
        run->pgs_marked = std::max(run->pgs_marked, status.repair().pgs_pending());
        if (took_over && Healthy(status)) {
          healthy = true;
          run->healthy_at = Clock::now();
          break;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (int i = 0; i < 3; ++i) run->cpu[i] = CpuSeconds(cluster.brick_pid(i)) - cpu_at_takeover[i];
    run->machine = MachineBusySeconds() - machine_at_takeover;
    if (!healthy) return g_interrupted ? "interrupted" : "not healthy after 30 minutes";
    run->copied = status.repair().chunks_copied() - copied_before;
    run->bytes_copied = status.repair().bytes_copied() - bytes_before;
    // The rebuilt brick holds every message, intact.
    auto brick0 = rpc::RpcClient::Create(runtime.io(), cluster.brick_address(0), *key);
    auto intact = CountIntact(*brick0, map.pg_count(), messages);
    brick0->Close();
    if (!intact.ok()) return "listing the rebuilt brick: " + intact.status().ToString();
    run->intact = *intact;
    return "";
  };
  auto print_run = [&](const char* title, const RebuildRun& run) {
    const double total_s = Seconds(run.healthy_at - run.wiped), rebuild_s = Seconds(run.healthy_at - run.took_over);
    std::printf("%-15s%.1f s from the wipe to healthy (before it: kill and rm -r %.2f s; restart %.2f s, takeover of\n"
                "               the old id after %.2f s, then %.1f s of repair over %u placement groups)\n",
                title, total_s, Seconds(run.wiped - run.killed), Seconds(run.restarted - run.wiped),
                Seconds(run.took_over - run.wiped), rebuild_s, run.pgs_marked);
    std::printf("               %.0f messages/s, %.1f MB/s (wipe to healthy); %.0f messages/s, %.1f MB/s (repair alone)\n",
                o.messages / total_s, static_cast<double>(total_bytes) / 1e6 / total_s, o.messages / rebuild_s,
                static_cast<double>(total_bytes) / 1e6 / rebuild_s);
    std::printf("               %llu chunks, %.1f MB copied; rebuilt brick holds %zu of %d messages intact%s\n",
                static_cast<unsigned long long>(run.copied), static_cast<double>(run.bytes_copied) / 1e6, run.intact,
                o.messages, run.intact == messages.size() ? "" : "  (MISSING!)");
    std::printf("               CPU during the repair: brick0 %.1f s, brick1 %.1f s, brick2 %.1f s; whole machine busy\n"
                "               %.1f of %.1f core-seconds (%ld cores; includes the delivery load and anything else)\n",
                run.cpu[0], run.cpu[1], run.cpu[2], run.machine,
                rebuild_s * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)), sysconf(_SC_NPROCESSORS_ONLN));
  };

  RebuildRun loaded;
  load = std::make_unique<DeliveryLoad>(mount + "/load", o.load_threads, o.seed + 1);
  if (auto error = wipe_and_rebuild(&loaded); !error.empty()) return fail(error);
  load->Stop();
  const auto during = load->Latencies(loaded.took_over, loaded.healthy_at);
  const uint64_t load_errors = load->errors();
  uint64_t rss_kib[3];
  for (int i = 0; i < 3; ++i) rss_kib[i] = PeakRssKiB(cluster.brick_pid(i));
  print_run("rebuild", loaded);
  std::printf("               peak RSS (VmHWM): brick0 (rebuilt) %.0f MiB, brick1 %.0f MiB, brick2 %.0f MiB\n",
              rss_kib[0] / 1024.0, rss_kib[1] / 1024.0, rss_kib[2] / 1024.0);
  std::printf("latency        deliveries through the mount, %d threads:\n", o.load_threads);
  PrintLatency("idle", idle, Seconds(idle_to - idle_from));
  PrintLatency("during rebuild", during, Seconds(loaded.healthy_at - loaded.took_over));
  if (load_errors > 0)
    std::printf("  delivery errors during the rebuild: %llu (first: %s)\n",
                static_cast<unsigned long long>(load_errors), load->first_error().c_str());
  const double p99_ratio = Percentile(idle, 0.99) > 0 ? Percentile(during, 0.99) / Percentile(idle, 0.99) : 0;
  std::fflush(stdout);

  RebuildRun quiet;
  if (auto error = wipe_and_rebuild(&quiet); !error.empty()) return fail("quiet: " + error);
  print_run("quiet rebuild", quiet);
  std::fflush(stdout);
  const size_t intact = std::min(loaded.intact, quiet.intact);
  const double msgs_per_s = o.messages / Seconds(loaded.healthy_at - loaded.wiped);
  const double quiet_msgs_per_s = o.messages / Seconds(quiet.healthy_at - quiet.wiped);
  meta->Close();
  runtime.Stop();
  cleanup.StopCluster();  // before the baselines, which get the disk to themselves

  // ---- rsync baselines
  double fsync_s = 0, plain_s = 0;
  if (!o.skip_rsync) {
    const std::string src = work_dir + "/rsync-src", dst1 = work_dir + "/rsync-fsync", dst2 = work_dir + "/rsync-plain";
    const auto write_start = Clock::now();
    constexpr int kMailboxes = 100;
    for (int b = 0; b < kMailboxes; ++b) fs::create_directories(src + "/u" + std::to_string(b) + "/cur", ec);
    std::string body;
    for (size_t i = 0; i < messages.size() && !g_interrupted; ++i) {
      const auto& m = messages[i];
      FillBody(&body, m.size, m.seed);
      const std::string path = src + "/u" + std::to_string(i % kMailboxes) + "/cur/" + std::to_string(1700000000 + i) +
                               ".M" + std::to_string(i) + ".bench:2,S";
      int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
      if (fd < 0 || ::write(fd, body.data(), body.size()) != static_cast<ssize_t>(body.size()))
        return fail("writing " + path + ": " + std::strerror(errno));
      ::close(fd);
    }
    if (g_interrupted) return fail("interrupted");
    DropCaches();
    std::printf("rsync          source: %d files in %d mailboxes written in %.1f s\n", o.messages, kMailboxes,
                Seconds(Clock::now() - write_start));
    std::fflush(stdout);
    auto t0 = Clock::now();
    if (RunCommand("rsync -a --fsync '" + src + "/' '" + dst1 + "/'") != 0) return fail("rsync -a --fsync failed");
    fsync_s = Seconds(Clock::now() - t0);
    DropCaches();
    t0 = Clock::now();
    if (RunCommand("rsync -a '" + src + "/' '" + dst2 + "/'") != 0) return fail("rsync -a failed");
    plain_s = Seconds(Clock::now() - t0);
    std::printf("  rsync -a --fsync      %7.1f s  %8.0f messages/s  %7.1f MB/s\n", fsync_s, o.messages / fsync_s,
                static_cast<double>(total_bytes) / 1e6 / fsync_s);
    std::printf("  rsync -a              %7.1f s  %8.0f messages/s  %7.1f MB/s\n", plain_s, o.messages / plain_s,
                static_cast<double>(total_bytes) / 1e6 / plain_s);
  }

  std::printf("\nratios (wipe to healthy)\n");
  if (!o.skip_rsync) {
    // The speed goals are the benchmark: a wiped brick rebuilt on an
    // otherwise idle cluster. Under load the rebuild is held to --repair-mbps
    // on purpose (its goal is the p99 below).
    struct Row {
      const char* title;
      double rate;
      bool quiet_run;
    };
    for (auto [title, rate, quiet_run] : {Row{"quiet rebuild", quiet_msgs_per_s, true},
                                          Row{"rebuild under load", msgs_per_s, false}}) {
      const double r_fsync = rate / (o.messages / fsync_s), r_plain = rate / (o.messages / plain_s);
      std::printf("  %-18s / rsync -a --fsync  %6.1fx  %s\n", title, r_fsync,
                  !quiet_run ? "(held to --repair-mbps)" : r_fsync >= 10 ? "(goal >= 10x: MET)" : "(goal >= 10x: NOT MET)");
      std::printf("  %-18s / rsync -a          %6.2fx  %s\n", title, r_plain,
                  !quiet_run ? "" : r_plain >= 1 ? "(goal >= 1x:  MET)" : "(goal >= 1x:  NOT MET)");
    }
  }
  std::printf("  p99 during rebuild / idle             %6.2fx  (goal <= 2x:  %s)\n", p99_ratio,
              p99_ratio <= 2 ? "MET" : "NOT MET");
  std::printf("RESULT messages=%d rebuild_s=%.2f msgs_per_s=%.0f quiet_rebuild_s=%.2f quiet_msgs_per_s=%.0f "
              "rsync_fsync_s=%.2f rsync_plain_s=%.2f p99_idle_ms=%.1f p99_rebuild_ms=%.1f repair_mbps=%d intact=%zu\n",
              o.messages, Seconds(loaded.healthy_at - loaded.wiped), msgs_per_s, Seconds(quiet.healthy_at - quiet.wiped),
              quiet_msgs_per_s, fsync_s, plain_s, Percentile(idle, 0.99) / 1000, Percentile(during, 0.99) / 1000,
              o.repair_mbps, intact);
  return intact == messages.size() && load_errors == 0 ? 0 : 1;
}

}  // namespace spool::bench
