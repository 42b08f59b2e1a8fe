// spool-bench rebalance: how fast placement groups move when bricks are
// added and drained (issue 11), and what that does to delivery latency.
//
// Starts a real 3-brick cluster (tests/support LocalCluster), fills it with
// --messages mail-sized messages straight to the bricks (as spool-bench
// rebuild does: one chunk per message, ids from meta, bulk puts to every
// brick of the chunk's group), measures the p99 of a maildir delivery load
// through a spoolfs mount, then adds two bricks and times until no group is
// moving or pending and every group is healthy; then drains brick 0 and
// times until it holds no group. The same delivery load runs during both.
// Last, brick 1 is drained on a quiet cluster (no load): the drain rate.
// Baseline: `rsync -a` of the same messages stored as one file each.
// (Filler, DeliveryLoad and the helpers are shared with spool-bench
// rebuild: cluster_bench.h.)
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
#include <functional>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
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
  int move_mbps = 8;        // brickd's default
  std::vector<std::string> brick_args;  // more flags for every brick
  std::vector<std::string> meta_args;   // more flags for meta
  std::vector<std::string> mount_args;  // more flags for the mount
  int repair_workers = 0;   // 0: brickd's default
  bool skip_rsync = false;
  double load_seconds = 15;  // idle latency measurement
  int load_threads = 2;
  bool keep_logs = false;
  bool timeline = false;
};


}  // namespace

int RunRebalance(int argc, char** argv) {
  Options o;
  CLI::App app{"spool-bench rebalance: add two bricks and drain one under load, beside rsync -a"};
  app.add_option("--messages", o.messages, "messages in the cluster (one chunk each)")->capture_default_str();
  app.add_option("--dir", o.dir, "work directory on the disk under test")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of message sizes and bytes")->capture_default_str();
  app.add_option("--repair-mbps", o.repair_mbps, "passed to every brick: MiB/s of repair and move pulls while clients write (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--move-mbps", o.move_mbps,
                 "passed to every brick: MiB/s of --repair-mbps moves may take while clients write (0 = all)")
      ->capture_default_str();
  app.add_option("--brick-arg", o.brick_args, "one more flag for every brick (repeatable; e.g. --brick-arg=--x=1)");
  app.add_option("--meta-arg", o.meta_args, "one more flag for meta (repeatable)");
  app.add_option("--mount-arg", o.mount_args, "one more flag for the mount (repeatable)");
  app.add_flag("--keep-logs", o.keep_logs, "copy the daemons' logs to DIR/spool-bench-rebalance-logs.PID");
  app.add_flag("--timeline", o.timeline, "print each loaded phase's deliveries second by second");
  app.add_option("--load-seconds", o.load_seconds, "duration of the idle latency measurement")->capture_default_str();
  app.add_option("--load-threads", o.load_threads, "delivery threads on the mount")->capture_default_str();
  app.add_flag("--skip-rsync", o.skip_rsync, "skip the rsync baseline");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (o.messages <= 0 || o.load_threads <= 0) {
    std::fprintf(stderr, "spool-bench rebalance: --messages and --load-threads must be positive\n");
    return 2;
  }
  spool::InitLogging("warn");
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "spool-bench rebalance: %s\n", what.c_str());
    return 1;
  };
  Cleanup cleanup;
  const std::string work_dir = fs::absolute(o.dir).string() + "/spool-bench-rebalance." + std::to_string(getpid());
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  if (ec) return fail("cannot create " + work_dir + ": " + ec.message());
  cleanup.work_dir = work_dir;
  ::setenv("SPOOL_BUILD_DIR", DefaultBuildDir().c_str(), 0);
  ::setenv("TMPDIR", work_dir.c_str(), 1);

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
  config.meta_args = {"--move-settle-ms", "1000"};
  config.brick_args = {"--repair-mbps", std::to_string(o.repair_mbps), "--move-mbps", std::to_string(o.move_mbps),
                       "--scrub-interval-hours", "0", "--gc-delay-ms", "2000"};
  config.brick_args.insert(config.brick_args.end(), o.brick_args.begin(), o.brick_args.end());
  config.meta_args.insert(config.meta_args.end(), o.meta_args.begin(), o.meta_args.end());
  config.mount_args = o.mount_args;
  if (o.keep_logs)
    cleanup.keep_logs_to = fs::absolute(o.dir).string() + "/spool-bench-rebalance-logs." + std::to_string(getpid());
  cleanup.cluster = std::make_unique<testing::LocalCluster>(config);
  auto& cluster = *cleanup.cluster;

  std::printf("spool-bench rebalance\n");
  std::printf("  messages      %d, %.1f MB (mean %.1f KiB), seed %llu\n", o.messages,
              static_cast<double>(total_bytes) / 1e6, static_cast<double>(total_bytes) / 1024.0 / o.messages,
              static_cast<unsigned long long>(o.seed));
  std::printf("  cluster       spool-meta + 3 spool-brickd (equal disks), 3 copies, data under %s\n", work_dir.c_str());
  std::printf("  phases        add 2 bricks -> until balanced; drain brick 0 -> until it holds no group (both\n"
              "                under load); drain brick 1 with no load -> until it holds no group\n");
  std::printf("  moves         --repair-mbps %d%s, --move-mbps %d%s per brick while clients write, unlimited once\n"
              "                none did for 1 s; --move-settle-ms 1000\n",
              o.repair_mbps, o.repair_mbps == 0 ? " (unlimited)" : " MiB/s", o.move_mbps,
              o.move_mbps == 0 ? " (no own cap)" : " MiB/s");
  std::printf("  load          %d threads delivering through a spoolfs mount: %.0f s idle, then during add and drain of brick 0\n",
              o.load_threads, o.load_seconds);
  std::printf("  baseline      %s\n\n", o.skip_rsync ? "skipped" : "rsync -a of the same messages, one file each");
  std::fflush(stdout);

  if (!cluster.Start()) return fail("cluster did not start; see " + cluster.dir() + "/*.log");
  auto key = ClusterKey::Load(cluster.key_path());
  if (!key.ok()) return fail(key.status().message());
  rpc::IoRuntime runtime(2);
  auto meta = rpc::RpcClient::Create(runtime.io(), cluster.meta_address(), *key);
  proto::ClusterMap map;
  if (auto s = meta->CallSync(rpc::Method::kGetMap, proto::GetMapRequest(), &map); !s.ok())
    return fail("GetMap: " + s.ToString());
  for (size_t i = 0; i < messages.size();) {
    proto::AllocChunkIdsRequest req;
    req.set_count(static_cast<uint32_t>(std::min<size_t>(65536, messages.size() - i)));
    proto::AllocChunkIdsReply reply;
    if (auto s = meta->CallSync(rpc::Method::kAllocChunkIds, req, &reply); !s.ok())
      return fail("AllocChunkIds: " + s.ToString());
    for (uint32_t k = 0; k < reply.count() && i < messages.size(); ++k) messages[i++].chunk_id = reply.first() + k;
  }
  const auto fill_start = Clock::now();
  {
    Filler filler(runtime, *key, map);
    if (auto s = filler.Put(messages); !s.ok()) return fail("fill: " + s.ToString());
  }
  std::printf("fill           %.1f s\n", Seconds(Clock::now() - fill_start));

  const std::string mount = cluster.Mount();
  if (mount.empty()) return fail("mount failed; see " + cluster.dir());
  auto load = std::make_unique<DeliveryLoad>(mount + "/load", o.load_threads, o.seed);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto idle_from = Clock::now();
  for (double t = 0; t < o.load_seconds && !g_interrupted; t += 0.1)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto idle_to = Clock::now();
  load->Stop();
  const auto idle = load->Latencies(idle_from, idle_to);
  if (load->errors() > 0) return fail("delivery errors while idle: " + load->first_error());

  auto settled = [](const proto::StatusReply& s) {
    return s.pgs_moving() == 0 && s.repair().pgs_pending() == 0 && s.pgs_healthy() == s.map().pg_count();
  };
  auto held = [](const proto::StatusReply& s, uint32_t id) {
    uint32_t n = 0;
    for (const auto& pg : s.map().pgs())
      n += static_cast<uint32_t>(std::count(pg.bricks().begin(), pg.bricks().end(), id) +
                                 std::count(pg.leaving().begin(), pg.leaving().end(), id));
    return n;
  };
  // Runs one phase, under the delivery load or on a quiet cluster; returns
  // (seconds, chunks copied, bytes copied, latencies).
  struct Phase {
    double seconds = -1;
    uint64_t chunks = 0, bytes = 0;
    std::vector<double> latencies;
  };
  auto run_phase = [&](const std::function<bool()>& start, const std::function<bool(const proto::StatusReply&)>& done,
                       uint64_t seed, bool under_load = true) {
    Phase p;
    proto::StatusReply st;
    if (!cluster.Status(&st)) return p;
    const uint64_t chunks0 = st.repair().chunks_copied(), bytes0 = st.repair().bytes_copied();
    auto l = under_load ? std::make_unique<DeliveryLoad>(mount + "/load", o.load_threads, seed) : nullptr;
    const auto t0 = Clock::now();
    if (!start()) return p;
    const auto deadline = t0 + std::chrono::minutes(60);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    while (Clock::now() < deadline && !g_interrupted) {
      if (cluster.Status(&st) && done(st)) {
        p.seconds = Seconds(Clock::now() - t0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const auto t1 = Clock::now();
    if (l) {
      l->Stop();
      p.latencies = l->Latencies(t0, t1);
      if (o.timeline) std::printf("  timeline of the phase's deliveries:\n%s", l->Timeline(t0, t1).c_str());
      if (l->errors() > 0)
        std::printf("  delivery errors: %llu (first: %s)\n", static_cast<unsigned long long>(l->errors()),
                    l->first_error().c_str());
    }
    p.chunks = st.repair().chunks_copied() - chunks0;
    p.bytes = st.repair().bytes_copied() - bytes0;
    return p;
  };

  Phase add = run_phase(
      [&] { return cluster.AddBrick() >= 0 && cluster.AddBrick() >= 0; },
      [&](const proto::StatusReply& s) {
        int up = 0;
        for (const auto& b : s.map().bricks()) up += b.state() == proto::BRICK_UP;
        return up == 5 && settled(s);
      },
      o.seed + 1);
  if (add.seconds < 0) return fail("not balanced after adding two bricks");
  auto drain_brick = [&](uint32_t id) {
    proto::BrickAdminRequest req;
    req.set_brick_id(id);
    req.set_action(proto::BRICK_ACTION_DRAIN);
    proto::BrickAdminReply reply;
    return meta->CallSync(rpc::Method::kBrickAdmin, req, &reply).ok();
  };
  const uint32_t drained = cluster.BrickId(0);
  Phase drain = run_phase([&] { return drain_brick(drained); },
                          [&](const proto::StatusReply& s) { return held(s, drained) == 0 && settled(s); }, o.seed + 2);
  if (drain.seconds < 0) return fail("brick 0 not drained");
  // The same on a quiet cluster (a maintenance window): moves run at
  // --repair-quiet-mbps once no delivery has reached a brick for a second.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const uint32_t drained_quiet = cluster.BrickId(1);
  Phase quiet_drain = run_phase(
      [&] { return drain_brick(drained_quiet); },
      [&](const proto::StatusReply& s) { return held(s, drained_quiet) == 0 && settled(s); }, o.seed + 3, false);
  if (quiet_drain.seconds < 0) return fail("brick 1 not drained");
  auto report = [&](const char* name, const Phase& p) {
    std::printf("%-14s %.1f s; %llu chunks (%.1f MB) copied: %.0f messages/s, %.1f MB/s\n", name, p.seconds,
                static_cast<unsigned long long>(p.chunks), static_cast<double>(p.bytes) / 1e6,
                static_cast<double>(p.chunks) / p.seconds, static_cast<double>(p.bytes) / 1e6 / p.seconds);
  };
  report("add 2 bricks", add);
  report("drain brick 0", drain);
  report("drain brick 1", quiet_drain);
  std::printf("               (brick 1 on a quiet cluster: no deliveries)\n");
  std::printf("latency        deliveries through the mount, %d threads:\n", o.load_threads);
  PrintLatency("idle", idle, Seconds(idle_to - idle_from));
  PrintLatency("during add", add.latencies, add.seconds);
  PrintLatency("during drain", drain.latencies, drain.seconds);
  meta->Close();
  runtime.Stop();
  cleanup.StopCluster();

  double plain_s = 0;
  if (!o.skip_rsync) {
    const std::string src = work_dir + "/rsync-src", dst = work_dir + "/rsync-plain";
    constexpr int kMailboxes = 100;
    for (int b = 0; b < kMailboxes; ++b) fs::create_directories(src + "/u" + std::to_string(b) + "/cur", ec);
    std::string body;
    for (size_t i = 0; i < messages.size() && !g_interrupted; ++i) {
      FillBody(&body, messages[i].size, messages[i].seed);
      const std::string path = src + "/u" + std::to_string(i % kMailboxes) + "/cur/" + std::to_string(i) + ":2,S";
      int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
      if (fd < 0 || ::write(fd, body.data(), body.size()) != static_cast<ssize_t>(body.size()))
        return fail("writing " + path + ": " + std::strerror(errno));
      ::close(fd);
    }
    DropCaches();
    const auto t0 = Clock::now();
    if (RunCommand("rsync -a '" + src + "/' '" + dst + "/'") != 0) return fail("rsync -a failed");
    plain_s = Seconds(Clock::now() - t0);
    std::printf("rsync -a       %.1f s: %.0f messages/s, %.1f MB/s\n", plain_s, o.messages / plain_s,
                static_cast<double>(total_bytes) / 1e6 / plain_s);
  }
  std::printf("\nratios\n");
  if (!o.skip_rsync) {
    const double rsync_rate = o.messages / plain_s;
    const double quiet_r = static_cast<double>(quiet_drain.chunks) / quiet_drain.seconds / rsync_rate;
    const double loaded_r = static_cast<double>(drain.chunks) / drain.seconds / rsync_rate;
    std::printf("  quiet drain / rsync -a messages/s  %6.1fx  (goal >= 10x: %s)\n", quiet_r,
                quiet_r >= 10 ? "MET" : "NOT MET");
    std::printf("  drain under load / rsync -a        %6.1fx  (held to --move-mbps)\n", loaded_r);
  }
  const double p99_idle = Percentile(idle, 0.99);
  for (const auto* p : {&add, &drain}) {
    const double r = p99_idle > 0 ? Percentile(p->latencies, 0.99) / p99_idle : 0;
    std::printf("  p99 during %-5s / idle      %6.2fx  (goal <= 2x: %s)\n", p == &add ? "add" : "drain", r,
                r <= 2 ? "MET" : "NOT MET");
  }
  return 0;
}

}  // namespace spool::bench
