// Failures during mail delivery, on real processes: a brick or meta is
// SIGKILLed while deliveries run; the mount rides through, and every
// acknowledged message is present and intact afterwards.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <filesystem>
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

// A VM image's 4 KiB reads are answered straight from the io thread that
// receives them; a copy that dies under them must cost a retry on another
// copy, never an error or wrong bytes.
TEST(Failure, BrickKilledDuringVmImageReads) {
  LocalCluster cluster(WithBrickDownAfter("2000"));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  constexpr size_t kImage = 16u << 20, kBlock = 4096;
  const std::string model = RandomBytes(kImage, 21);
  const std::string path = mount + "/disk.img";
  {
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    for (size_t off = 0; off < kImage; off += 1u << 20)
      ASSERT_EQ(::pwrite(fd, model.data() + off, 1u << 20, static_cast<off_t>(off)), 1 << 20);
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, errors{0}, mismatches{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&, t] {
      int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
      if (fd < 0) {
        ++errors;
        return;
      }
      void* raw = nullptr;
      if (::posix_memalign(&raw, kBlock, kBlock) != 0) {
        ++errors;
        ::close(fd);
        return;
      }
      std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(raw), &std::free);
      std::mt19937_64 rng(100 + t);
      while (!stop) {
        const size_t off = (rng() % (kImage / kBlock)) * kBlock;
        if (::pread(fd, buf.get(), kBlock, static_cast<off_t>(off)) != static_cast<ssize_t>(kBlock)) {
          ++errors;
        } else if (std::memcmp(buf.get(), model.data() + off, kBlock) != 0) {
          ++mismatches;
        }
        ++reads;
      }
      ::close(fd);
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const uint64_t before_kill = reads.load();
  cluster.KillBrick(1);
  std::this_thread::sleep_for(std::chrono::seconds(4));
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  EXPECT_GT(before_kill, 0u);
  EXPECT_GT(reads.load(), before_kill) << "reads stopped when the brick died";
  std::fprintf(stderr, "vm image reads: %llu before the kill, %llu in all\n",
               static_cast<unsigned long long>(before_kill), static_cast<unsigned long long>(reads.load()));
  EXPECT_EQ(ReadAll(path), model);
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

namespace {

// Chunks a file of `size` bytes written in one go takes: one per 1 MiB slot.
int64_t ChunksOf(uint64_t size) { return static_cast<int64_t>((size + (1u << 20) - 1) >> 20); }

// Every regular file under `dir` (recursively): chunks its size takes.
int64_t ReferencedChunks(const std::string& dir) {
  int64_t n = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += ChunksOf(e.file_size());
  return n;
}

}  // namespace

TEST(Failure, MountKilledMidWriteLeavesNoPartialMessageAndNoGarbage) {
  ClusterConfig config;
  config.meta_args = {"--session-timeout-ms", "3000"};
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  std::string box = "/box";
  for (const char* sub : {"", "/tmp", "/new", "/cur"}) ASSERT_EQ(::mkdir((mount + box + sub).c_str(), 0700), 0);

  // Writers deliver (tmp -> fsync -> rename into new/) and flag every third
  // message (rename new/X -> cur/X:2,S); a message counts as acknowledged
  // only once its rename returned. Half the writers send messages of
  // 2-6 MiB, so that the kill lands in the middle of a write.
  std::mutex mu;
  std::map<std::string, std::string> bodies;        // every message started
  std::map<std::string, std::string> acknowledged;  // final path under box -> body
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 6; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::string root = mount + box;
      for (int i = 0; !stop; ++i) {
        std::string name = "w" + std::to_string(t) + "." + std::to_string(i);
        size_t size = t % 2 ? (2u << 20) + rng() % (4u << 20) : 200 + rng() % 20000;
        std::string body = RandomBytes(size, rng());
        {
          std::lock_guard lock(mu);
          bodies[name] = body;
        }
        int fd = ::open((root + "/tmp/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd < 0) return;
        bool ok = true;
        for (size_t done = 0; ok && done < body.size();) {
          ssize_t n = ::write(fd, body.data() + done, std::min<size_t>(256 * 1024, body.size() - done));
          ok = n > 0;
          if (ok) done += static_cast<size_t>(n);
        }
        ok = ok && ::fsync(fd) == 0;
        ok = ::close(fd) == 0 && ok;
        if (!ok || ::rename((root + "/tmp/" + name).c_str(), (root + "/new/" + name).c_str()) != 0) return;
        std::string final_path = "/new/" + name;
        if (i % 3 == 0) {
          if (::rename((root + "/new/" + name).c_str(), (root + "/cur/" + name + ":2,S").c_str()) != 0) {
            // The delivery was acknowledged; the flag rename may or may not
            // have happened before the mount died.
            std::lock_guard lock(mu);
            acknowledged["/new/" + name + "|/cur/" + name + ":2,S"] = body;
            return;
          }
          final_path = "/cur/" + name + ":2,S";
        }
        std::lock_guard lock(mu);
        acknowledged[final_path] = std::move(body);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  cluster.KillMount(mount);
  stop = true;
  for (auto& w : writers) w.join();
  ASSERT_FALSE(IsFuseMounted(mount));

  auto again = cluster.Mount();
  ASSERT_FALSE(again.empty());
  std::string root = again + box;
  // Every file in new/ and cur/ is a complete message, byte for byte.
  size_t listed = 0, partial_in_tmp = 0;
  for (const char* sub : {"/new", "/cur"}) {
    for (auto& e : std::filesystem::directory_iterator(root + sub)) {
      ++listed;
      std::string file = e.path().filename().string();
      std::string name = file.substr(0, file.find(':'));
      auto it = bodies.find(name);
      if (it == bodies.end()) {
        ADD_FAILURE() << "unknown message " << file;
        continue;
      }
      EXPECT_TRUE(ReadAll(e.path().string()) == it->second)
          << std::string(sub) << "/" << file << " is not the complete message (" << e.file_size() << " of "
          << it->second.size() << " bytes)";
    }
  }
  for (auto& e : std::filesystem::directory_iterator(root + "/tmp")) {
    auto it = bodies.find(e.path().filename().string());
    if (it == bodies.end() || e.file_size() != it->second.size()) ++partial_in_tmp;
  }
  // Every acknowledged message is where its writer last put it.
  size_t lost = 0;
  std::map<std::string, std::string> resolved;
  for (const auto& [path, body] : acknowledged) {
    std::string where = path;
    if (auto bar = path.find('|'); bar != std::string::npos)
      where = std::filesystem::exists(root + path.substr(0, bar)) ? path.substr(0, bar) : path.substr(bar + 1);
    if (ReadAll(root + where) != body && ++lost < 5) ADD_FAILURE() << "acknowledged message lost or damaged: " << where;
    resolved[where] = body;
  }
  acknowledged = std::move(resolved);
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(acknowledged.size(), 20u);

  // The cluster keeps working: more deliveries on the new mount.
  for (int i = 0; i < 20; ++i) {
    std::string name = "after." + std::to_string(i);
    std::string body = RandomBytes(1000 + i * 5000, 100 + i);
    WriteAll(root + "/tmp/" + name, body);
    ASSERT_EQ(::rename((root + "/tmp/" + name).c_str(), (root + "/new/" + name).c_str()), 0) << std::strerror(errno);
    acknowledged["/new/" + name] = body;
  }
  for (const auto& [path, body] : acknowledged) EXPECT_TRUE(ReadAll(root + path) == body) << path;

  // Chunks the dead mount stored but never committed are deleted once its
  // session expired: after every file is removed, the bricks hold nothing.
  std::this_thread::sleep_for(std::chrono::seconds(4));  // session timeout
  const int64_t referenced = ReferencedChunks(again);
  int64_t before[3];
  for (int b = 0; b < 3; ++b) before[b] = cluster.BrickChunkCount(b);
  std::filesystem::remove_all(root);
  int64_t held[3] = {-1, -1, -1};
  for (int i = 0; i < 300; ++i) {
    for (int b = 0; b < 3; ++b) held[b] = cluster.BrickChunkCount(b);
    if (held[0] == 0 && held[1] == 0 && held[2] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr,
               "mount kill: %zu acknowledged, %zu files in new+cur all complete, %zu partial files in tmp; chunks "
               "referenced ~%lld, held by bricks %lld/%lld/%lld before removing every file, %lld/%lld/%lld after\n",
               acknowledged.size(), listed, partial_in_tmp, static_cast<long long>(referenced),
               static_cast<long long>(before[0]), static_cast<long long>(before[1]),
               static_cast<long long>(before[2]), static_cast<long long>(held[0]), static_cast<long long>(held[1]),
               static_cast<long long>(held[2]));
  for (int b = 0; b < 3; ++b) EXPECT_EQ(held[b], 0) << "brick " << b << " keeps chunks nothing references";
  cluster.Unmount(again);
}
