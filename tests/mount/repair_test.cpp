// Repair on real processes (issue 8): a brick that comes back catches up, a
// wiped brick is rebuilt, a brick gone for good is replaced, and bad copies
// on disk are rewritten. Each test ends by reading every acknowledged message
// through a fresh mount while only the repaired brick is alive, so the bytes
// can only have come from the copies that repair made.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "tests/mount/delivery_load.h"
#include "tests/mount/mount_env.h"
#include "tests/support/disk_faults.h"

using namespace spool::testing;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

ClusterConfig RepairCluster(int bricks, std::vector<std::string> extra_meta_args = {}) {
  ClusterConfig config;
  config.bricks = bricks;
  config.meta_args = {"--brick-down-after-ms", "2000"};
  config.meta_args.insert(config.meta_args.end(), extra_meta_args.begin(), extra_meta_args.end());
  // Scrub only when a test asks for it.
  config.brick_args = {"--scrub-interval-hours", "0"};
  return config;
}

// Waits until meta reports every placement group healthy and nothing
// pending; returns the seconds it took, or -1 (and the last status) on timeout.
double WaitHealthy(LocalCluster& cluster, std::chrono::seconds timeout, spool::proto::StatusReply* last = nullptr) {
  const auto start = Clock::now();
  spool::proto::StatusReply status;
  while (Clock::now() - start < timeout) {
    if (cluster.Status(&status) && status.pgs_degraded() == 0 && status.repair().pgs_pending() == 0 &&
        status.pgs_healthy() == status.map().pg_count())
      return std::chrono::duration<double>(Clock::now() - start).count();
    std::this_thread::sleep_for(200ms);
  }
  if (last) *last = status;
  ADD_FAILURE() << "not healthy after " << timeout.count() << " s: " << status.pgs_degraded() << " degraded, "
                << status.repair().pgs_pending() << " pending repair";
  return -1;
}

std::string UuidOf(const spool::proto::StatusReply& status, const std::string& failure_domain) {
  for (const auto& b : status.map().bricks())
    if (b.failure_domain() == failure_domain) return b.uuid();
  return "";
}

bool WaitDeletionQueueEmpty(LocalCluster& cluster, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  spool::proto::StatusReply status;
  while (Clock::now() < deadline) {
    if (cluster.Status(&status) && status.deletion_queue() == 0) return true;
    std::this_thread::sleep_for(200ms);
  }
  return false;
}

// Delivers for `seconds` with 4 writers; returns the acknowledged messages.
std::map<std::string, std::string> Deliver(const std::string& root, std::chrono::seconds seconds) {
  DeliveryLoad load(root, 4);
  std::this_thread::sleep_for(seconds);
  load.Stop();
  EXPECT_EQ(load.errors(), 0) << load.first_error();
  return load.acknowledged();
}

// Reads every message through a new mount (no cached chunk or page).
void ExpectAllReadableThroughFreshMount(LocalCluster& cluster, const std::map<std::string, std::string>& messages) {
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  ExpectAllPresent(mount + "/box", messages);
  cluster.Unmount(mount);
}

}  // namespace

TEST(Repair, RestartedBrickCatchesUpWithWritesAndDeletes) {
  LocalCluster cluster(RepairCluster(3));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = Deliver(root, 2s);

  cluster.KillBrick(0);
  auto during = Deliver(root, 4s);
  ASSERT_GT(during.size(), 20u);
  messages.insert(during.begin(), during.end());
  // Delete some of each period while brick 0 is away: it must drop them too.
  size_t deleted = 0;
  for (auto it = messages.begin(); it != messages.end();) {
    if (++deleted % 4 == 0) {
      ASSERT_EQ(::unlink((root + "/new/" + it->first).c_str()), 0) << it->first;
      it = messages.erase(it);
    } else {
      ++it;
    }
  }
  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  EXPECT_GT(status.pgs_degraded(), 0u) << "a down brick must show as degraded placement groups";

  ASSERT_TRUE(cluster.StartBrick(0));
  const double healthy_s = WaitHealthy(cluster, 60s);
  EXPECT_GE(healthy_s, 0);
  EXPECT_TRUE(WaitDeletionQueueEmpty(cluster, 30s)) << "deletes made while the brick was away never reached it";
  ASSERT_TRUE(cluster.Status(&status));
  EXPECT_GT(status.repair().chunks_copied(), 0u);
  std::fprintf(stderr, "catch-up: %zu messages, %llu chunks copied, healthy after %.1f s\n", messages.size(),
               static_cast<unsigned long long>(status.repair().chunks_copied()), healthy_s);
  cluster.Unmount(mount);

  // Only the brick that caught up is left to serve.
  cluster.KillBrick(1);
  cluster.KillBrick(2);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

TEST(Repair, WipedBrickIsRebuiltFromItsPeers) {
  LocalCluster cluster(RepairCluster(3));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = Deliver(root, 3s);
  ASSERT_GT(messages.size(), 50u);
  cluster.Unmount(mount);

  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  const std::string old_uuid = UuidOf(status, "brick0");
  cluster.KillBrick(0);
  std::filesystem::remove_all(cluster.brick_dir(0));  // a new, empty disk
  ASSERT_TRUE(cluster.StartBrick(0));
  // The old brick's connection to meta closed with its process: meta lets
  // the new disk take over at once.
  const auto deadline = Clock::now() + 30s;
  while (Clock::now() < deadline && (!cluster.Status(&status) || UuidOf(status, "brick0") == old_uuid))
    std::this_thread::sleep_for(100ms);
  ASSERT_NE(UuidOf(status, "brick0"), old_uuid) << "the new disk never registered";
  const double healthy_s = WaitHealthy(cluster, 90s);
  EXPECT_GE(healthy_s, 0);
  ASSERT_TRUE(cluster.Status(&status));
  EXPECT_EQ(status.map().bricks_size(), 3) << "the new disk takes over the old brick id";
  EXPECT_GE(status.repair().chunks_copied(), messages.size()) << "the new disk got a copy of every message";
  std::fprintf(stderr, "rebuild: %zu messages, %llu chunks copied, healthy after %.1f s\n", messages.size(),
               static_cast<unsigned long long>(status.repair().chunks_copied()), healthy_s);

  // Repair writes skip the WAL; a PG is reported repaired only once they are
  // flushed. A SIGKILL right after "healthy" must not lose any of them.
  cluster.KillBrick(0);
  ASSERT_TRUE(cluster.StartBrick(0));
  cluster.KillBrick(1);
  cluster.KillBrick(2);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Repair pulls at --repair-mbps while mounts use the brick and at
// --repair-quiet-mbps once they stop: 1 MiB/s under a delivery load, then
// unlimited. 48 MiB to rebuild: at 1 MiB/s that takes more than 40 s.
TEST(Repair, RebuildYieldsToDeliveriesAndRunsAtFullSpeedOnceTheyStop) {
  auto config = RepairCluster(3);
  config.brick_args.insert(config.brick_args.end(), {"--repair-mbps", "1", "--repair-quiet-mbps", "0"});
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  ASSERT_EQ(::mkdir((root + "/new").c_str(), 0700), 0);
  constexpr size_t kFiles = 48;
  auto messages = WriteBigMessages(root, kFiles);
  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  const uint64_t copied_before = status.repair().bytes_copied();

  cluster.KillBrick(0);
  std::filesystem::remove_all(cluster.brick_dir(0));
  {
    // Deliveries (through every brick, brick 0 included once it is back)
    // from before brick 0 restarts until 6 s after.
    DeliveryLoad load(MakeRoot(mount, "load"), 2);
    ASSERT_TRUE(cluster.StartBrick(0));
    std::this_thread::sleep_for(6s);
    ASSERT_TRUE(cluster.Status(&status));
    load.Stop();
    EXPECT_EQ(load.errors(), 0) << load.first_error();
  }
  const uint64_t copied_busy = status.repair().bytes_copied() - copied_before;
  std::fprintf(stderr, "rebuild while deliveries ran (6 s): %.1f MiB of %zu copied\n", copied_busy / 1048576.0, kFiles);
  // 1 MiB/s plus the bulk reads already granted (4 MiB each, two per worker).
  EXPECT_LT(copied_busy, (kFiles << 20) * 3 / 4) << "repair did not slow down for the deliveries";
  EXPECT_GT(status.pgs_degraded() + status.repair().pgs_pending(), 0u);

  // No client uses the bricks now: the rest goes at full speed.
  const double healthy_s = WaitHealthy(cluster, 20s);
  EXPECT_GE(healthy_s, 0) << "repair did not speed up once the deliveries stopped";
  std::fprintf(stderr, "then healthy %.1f s after the deliveries stopped\n", healthy_s);
  cluster.Unmount(mount);
  cluster.KillBrick(1);
  cluster.KillBrick(2);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Two bricks configured with one address (a copied config file): the second
// must not take over the id of the first while the first is alive.
TEST(Repair, NewDiskAtTheAddressOfALiveBrickIsRefused) {
  LocalCluster cluster(RepairCluster(3));
  ASSERT_TRUE(cluster.Start());
  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  const std::string uuid = UuidOf(status, "brick0");
  ASSERT_FALSE(uuid.empty());
  const int twin = cluster.AddBrick({"--advertise", cluster.brick_address(0)});
  ASSERT_GE(twin, 0);
  // Longer than meta's takeover silence (2.5 s): brick 0 heartbeats all along.
  std::this_thread::sleep_for(4s);
  ASSERT_TRUE(cluster.Status(&status));
  EXPECT_EQ(UuidOf(status, "brick0"), uuid) << "a live brick lost its id to a newcomer at its address";
  EXPECT_EQ(status.map().bricks_size(), 3);
  for (const auto& b : status.map().bricks()) {
    EXPECT_EQ(b.state(), spool::proto::BRICK_UP) << "brick " << b.id();
    EXPECT_NE(b.failure_domain(), "brick" + std::to_string(twin)) << "the newcomer registered";
  }
  cluster.KillBrick(twin);
}

TEST(Repair, BrickGoneForGoodIsReplacedAfterTheGracePeriod) {
  LocalCluster cluster(RepairCluster(4, {"--brick-out-after-ms", "4000"}));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = Deliver(root, 3s);
  ASSERT_GT(messages.size(), 50u);

  cluster.KillBrick(0);  // and it never comes back
  const auto killed = Clock::now();
  auto during = Deliver(root, 2s);
  messages.insert(during.begin(), during.end());
  const double healthy_s = WaitHealthy(cluster, 90s);
  EXPECT_GE(healthy_s, 0);
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - killed).count(), 4.0)
      << "healthy before the grace period ended: nothing was rebuilt";
  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  for (const auto& b : status.map().bricks())
    if (b.failure_domain() == "brick0") {
      EXPECT_EQ(b.state(), spool::proto::BRICK_OUT);
    }
  for (const auto& pg : status.map().pgs()) EXPECT_EQ(pg.bricks_size(), 3);
  cluster.Unmount(mount);

  // Three bricks are left and every group is on all three: any one of them
  // must now hold everything.
  cluster.KillBrick(1);
  cluster.KillBrick(2);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

TEST(Repair, BadCopiesOnDiskAreServedAroundAndRewritten) {
  LocalCluster cluster(RepairCluster(3));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = Deliver(root, 3s);
  ASSERT_GT(messages.size(), 50u);
  cluster.Unmount(mount);

  // Flip bytes of some messages in brick 0's files (a clean stop first, so
  // the bytes are in its blob files rather than its write-ahead log).
  cluster.KillBrick(0, SIGTERM);
  size_t damaged = 0;
  for (const auto& [name, body] : messages) {
    if (body.size() < 2000) continue;
    if (!FlipPatternOnDisk(cluster.brick_dir(0), body.substr(body.size() / 2, 64), {".blob", ".sst"}).empty())
      ++damaged;
    if (damaged == 20) break;
  }
  ASSERT_GT(damaged, 0u) << "message bytes not found in brick 0's files";
  ASSERT_TRUE(cluster.StartBrick(0));
  ASSERT_TRUE(cluster.WaitBricksUp(3));

  // Every read is still right (bad copies are skipped)...
  ExpectAllReadableThroughFreshMount(cluster, messages);
  // ...and a scrub finds and rewrites whatever reads did not meet.
  ChildProcess ctl;
  ASSERT_TRUE(ctl.Start({BinaryPath("tools/ctl/spoolctl"), "--meta", cluster.meta_address(), "--cluster-key",
                         cluster.key_path(), "scrub", "--wait", "--timeout", "60"},
                        cluster.dir() + "/spoolctl-scrub.log"));
  const int rc = ctl.Wait();
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << "spoolctl scrub --wait failed; see spoolctl-scrub.log";
  spool::proto::StatusReply status;
  ASSERT_TRUE(cluster.Status(&status));
  uint64_t rewritten = 0, checked = 0;
  for (const auto& w : status.brick_work()) {
    rewritten += w.repair().corrupt_rewritten();
    checked += w.scrub().chunks_checked();
  }
  EXPECT_GE(rewritten, damaged) << "every damaged copy is rewritten by a read or the scrub";
  EXPECT_GE(checked, messages.size()) << "the scrub read every chunk of every brick";
  std::fprintf(stderr, "corruption: %zu copies damaged, %llu rewritten, scrub checked %llu chunks\n", damaged,
               static_cast<unsigned long long>(rewritten), static_cast<unsigned long long>(checked));

  // Brick 0's copies are good again: read them with its peers gone.
  cluster.KillBrick(1);
  cluster.KillBrick(2);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}
