// Failures during mail delivery, on real processes: a brick or meta is
// SIGKILLed while deliveries run; the mount rides through, and every
// acknowledged message is present and intact afterwards.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/mount/delivery_load.h"
#include "tests/mount/mount_env.h"

using namespace spool::testing;

namespace {

ClusterConfig WithBrickDownAfter(const char* ms) {
  ClusterConfig config;
  config.meta_args = {"--brick-down-after-ms", ms};
  return config;
}

}  // namespace

TEST(Failure, BrickKilledDuringDeliveries) {
  LocalCluster cluster(WithBrickDownAfter("2000"));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  DeliveryLoad load(root, 8);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  cluster.KillBrick(1);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  load.Stop();
  EXPECT_EQ(load.errors(), 0) << load.first_error();
  EXPECT_LT(load.slowest_s(), 10.0) << "a delivery paused too long while the brick died";
  auto acknowledged = load.acknowledged();
  EXPECT_GT(acknowledged.size(), 50u);
  ExpectAllPresent(root, acknowledged);
  std::fprintf(stderr, "brick kill: %zu delivered, slowest %.2f s\n", acknowledged.size(), load.slowest_s());
  cluster.Unmount(mount);
}

TEST(Failure, MetaKilledAndRestartedDuringDeliveries) {
  LocalCluster cluster;
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  DeliveryLoad load(root, 8);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  size_t before = load.acknowledged().size();
  cluster.KillMeta();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_TRUE(cluster.StartMeta());
  ASSERT_TRUE(cluster.WaitBricksUp(3));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  load.Stop();
  EXPECT_EQ(load.errors(), 0) << load.first_error();
  auto acknowledged = load.acknowledged();
  EXPECT_GT(acknowledged.size(), before) << "deliveries resumed after meta came back";
  ExpectAllPresent(root, acknowledged);
  std::fprintf(stderr, "meta restart: %zu delivered, slowest %.2f s\n", acknowledged.size(), load.slowest_s());
  cluster.Unmount(mount);
}

TEST(Failure, FewerLiveCopiesThanQuorumFailsWithEio) {
  LocalCluster cluster(WithBrickDownAfter("1000"));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount({"--hard-timeout-ms", "3000"});
  ASSERT_FALSE(mount.empty());
  WriteAll(mount + "/before", "stored while healthy");
  cluster.KillBrick(0);
  cluster.KillBrick(1);
  int fd = ::open((mount + "/after").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "x", 1), 1);
  auto start = std::chrono::steady_clock::now();
  errno = 0;
  EXPECT_EQ(::fsync(fd), -1) << "a write must never be acknowledged with fewer copies than the quorum";
  EXPECT_EQ(errno, EIO);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited, 2.0) << "the write blocks up to the bound first";
  EXPECT_LT(waited, 20.0);
  ::close(fd);
  // What was stored before is still readable from the surviving copy.
  EXPECT_EQ(ReadAll(mount + "/before"), "stored while healthy");
  ASSERT_TRUE(cluster.StartBrick(0));
  ASSERT_TRUE(cluster.WaitBricksUp(2));
  WriteAll(mount + "/again", "quorum is back");
  EXPECT_EQ(ReadAll(mount + "/again"), "quorum is back");
  cluster.Unmount(mount);
}

TEST(Failure, UnlinkedOpenFileSurvivesMetaRestart) {
  ClusterConfig config;
  config.meta_args = {"--session-timeout-ms", "2000"};
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto data = RandomBytes(200000, 9);
  WriteAll(mount + "/open-and-unlinked", data);
  int fd = ::open((mount + "/open-and-unlinked").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::unlink((mount + "/open-and-unlinked").c_str()), 0);
  // Meta forgets who has what open when it restarts; it reclaims orphans
  // nobody claims within a session timeout. The mount must claim its own.
  cluster.KillMeta();
  ASSERT_TRUE(cluster.StartMeta());
  ASSERT_TRUE(cluster.WaitBricksUp(3));
  WriteAll(mount + "/after-restart", "x");  // the mount has reconnected
  std::this_thread::sleep_for(std::chrono::seconds(6));  // > the orphan sweep after start
  std::string back(data.size(), '\0');
  EXPECT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(data.size())) << std::strerror(errno);
  EXPECT_TRUE(back == data) << "an unlinked file still open on a mount was reclaimed";
  ::close(fd);
  cluster.Unmount(mount);
}
