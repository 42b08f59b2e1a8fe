// Full disks during mail delivery, on real processes and a real mount: the
// data directories of two of the three bricks sit on small tmpfs mounts.
// One brick filling up costs a copy, not a delivery; two bricks full leave
// no write quorum, and the writer gets ENOSPC quickly, with a log line that
// says why; nothing acknowledged is damaged; space freed by deletes is used
// again by the bricks that were full.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/mount/mount_env.h"

using namespace spool::testing;

namespace {

constexpr int64_t kMiB = 1ll << 20;
constexpr int64_t kReserve = 16 * kMiB;

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One maildir delivery: create tmp/NAME, write, fsync, close, rename into
// new/. Returns 0 once the rename returned, else the errno of the step that
// failed (the tmp file is then removed, as a delivery agent does).
int Deliver(const std::string& root, const std::string& name, const std::string& body) {
  std::string tmp = root + "/tmp/" + name;
  int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) return errno;
  int err = 0;
  size_t done = 0;
  while (done < body.size() && err == 0) {
    ssize_t n = ::write(fd, body.data() + done, body.size() - done);
    if (n <= 0) err = n < 0 ? errno : EIO;
    else done += static_cast<size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), (root + "/new/" + name).c_str()) != 0) err = errno;
  if (err != 0) ::unlink(tmp.c_str());
  return err;
}

// Several threads delivering messages of 32-256 KiB until told to stop or
// until every thread has seen a failed delivery.
class Deliverers {
 public:
  Deliverers(std::string root, std::string prefix, int threads) : root_(std::move(root)), prefix_(std::move(prefix)) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  ~Deliverers() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // Waits until every thread has stopped on its own.
  void Join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::map<std::string, std::string> acknowledged() {
    std::lock_guard lock(mu_);
    return acknowledged_;
  }
  std::map<int, int> errors() {
    std::lock_guard lock(mu_);
    return errors_;
  }
  double slowest_failure_s() {
    std::lock_guard lock(mu_);
    return slowest_failure_s_;
  }
  int failures() const { return failures_; }

 private:
  void Run(int t) {
    std::mt19937_64 rng(std::hash<std::string>()(prefix_) + t);
    for (int i = 0; !stop_; ++i) {
      std::string name = prefix_ + std::to_string(t) + "." + std::to_string(i);
      std::string body = RandomBytes(32 * 1024 + rng() % (224 * 1024), rng());
      auto start = std::chrono::steady_clock::now();
      int err = Deliver(root_, name, body);
      std::lock_guard lock(mu_);
      if (err == 0) {
        acknowledged_[name] = std::move(body);
        continue;
      }
      ++errors_[err];
      ++failures_;
      slowest_failure_s_ = std::max(slowest_failure_s_, Since(start));
      return;  // this writer saw the failure: done
    }
  }

  std::string root_;
  std::string prefix_;
  std::atomic<bool> stop_{false};
  std::atomic<int> failures_{0};
  std::mutex mu_;  // guards everything below
  std::map<std::string, std::string> acknowledged_;
  std::map<int, int> errors_;  // errno -> count
  double slowest_failure_s_ = 0;
  std::vector<std::thread> threads_;
};

size_t CountDamaged(const std::string& root, const std::map<std::string, std::string>& messages) {
  size_t bad = 0;
  for (const auto& [name, body] : messages) {
    if (ReadAll(root + "/new/" + name) != body) {
      if (++bad < 5) ADD_FAILURE() << "acknowledged message lost or damaged: " << name;
    }
  }
  return bad;
}

// Bytes a brick can still take before it refuses puts.
// What statfs on the mount says a writer can still store.
uint64_t Avail(const std::string& mount) {
  struct statvfs st {};
  EXPECT_EQ(::statvfs(mount.c_str(), &st), 0) << std::strerror(errno);
  return st.f_bavail * st.f_frsize;
}

int64_t Headroom(LocalCluster& cluster, int brick) {
  spool::proto::BrickInfoReply info;
  if (!cluster.BrickInfo(brick, &info)) return -1;
  return static_cast<int64_t>(info.capacity_bytes()) - static_cast<int64_t>(info.used_bytes()) -
         static_cast<int64_t>(kReserve);
}

bool BrickSaysFull(LocalCluster& cluster, int brick) {
  return ReadFile(cluster.dir() + "/brick" + std::to_string(brick) + ".log").find("chunkstore full: refusing puts") !=
         std::string::npos;
}

std::string ErrnoCounts(const std::map<int, int>& errors) {
  std::string out;
  for (auto [err, n] : errors) out += std::string(std::strerror(err)) + " x" + std::to_string(n) + "; ";
  return out;
}

}  // namespace

TEST(Capacity, FullBricksRefuseWithEnospcAndReuseFreedSpace) {
  auto test_start = std::chrono::steady_clock::now();
  ClusterConfig config;
  config.brick_args = {"--reserve-bytes", std::to_string(kReserve)};
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.PutBrickOnTmpfs(0, 48 * kMiB)) << "mount tmpfs: " << std::strerror(errno);
  ASSERT_TRUE(cluster.PutBrickOnTmpfs(1, 120 * kMiB)) << "mount tmpfs: " << std::strerror(errno);
  ASSERT_TRUE(cluster.Start()) << "logs in " << cluster.dir();
  auto mount = cluster.Mount({"--hard-timeout-ms", "5000"});
  ASSERT_FALSE(mount.empty());
  std::string root = mount + "/box";
  for (const char* sub : {"", "/tmp", "/new", "/cur"}) ASSERT_EQ(::mkdir((root + sub).c_str(), 0700), 0);
  const uint64_t avail_at_start = Avail(mount);
  std::fprintf(stderr, "start: statfs avail %llu MiB, headroom brick0 %lld MiB, brick1 %lld MiB\n",
               static_cast<unsigned long long>(avail_at_start / kMiB), static_cast<long long>(Headroom(cluster, 0) / kMiB), static_cast<long long>(Headroom(cluster, 1) / kMiB));

  // 1. Brick 0 fills up; deliveries go on with the two other copies.
  std::map<std::string, std::string> acknowledged;
  {
    Deliverers load(root, "a", 4);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    // The brick says so in its log when it first refuses a put for space.
    while (!BrickSaysFull(cluster, 0) && std::chrono::steady_clock::now() < deadline && load.failures() == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    int64_t full_chunks = cluster.BrickChunkCount(0);
    size_t at_full = load.acknowledged().size();
    // Deliveries go on with two copies: enough of them to show it, not so
    // many that brick 1 (2.5x brick 0) fills up too on a fast machine.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < until && load.acknowledged().size() < at_full + 60 &&
           load.failures() == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    load.Stop();
    EXPECT_EQ(load.failures(), 0) << "one full brick must cost a copy, not a delivery: "
                                  << ErrnoCounts(load.errors());
    acknowledged = load.acknowledged();
    int64_t later_chunks = cluster.BrickChunkCount(0);
    std::fprintf(stderr, "brick0 full after %zu messages (%.1f s); %zu more delivered; brick0 chunks %lld -> %lld\n",
                 at_full, Since(test_start), acknowledged.size() - at_full, static_cast<long long>(full_chunks),
                 static_cast<long long>(later_chunks));
    EXPECT_TRUE(BrickSaysFull(cluster, 0)) << "brick 0 did not fill up";
    EXPECT_LT(Headroom(cluster, 0), 4 * kMiB);
    size_t after_full = acknowledged.size() - at_full;
    EXPECT_GT(after_full, 10u) << "deliveries went on while brick 0 was full";
    // Only the odd small chunk still fits on brick 0 (a delivery or a repair
    // copy that lands when compaction freed a little): far fewer than the
    // deliveries made meanwhile, which a brick that ignored being full would take.
    EXPECT_LT(later_chunks - full_chunks, static_cast<int64_t>(after_full / 2 + 2)) << "brick 0 kept taking chunks";
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // statfs lags by a heartbeat and a map refresh
    uint64_t avail = Avail(mount);
    std::fprintf(stderr, "statfs with brick0 full: avail %llu MiB\n", static_cast<unsigned long long>(avail / kMiB));
    EXPECT_GT(avail, 8ull * kMiB) << "two bricks with room still take writes";
  }

  // 2. Brick 1 fills up too: no write quorum of 2 can be placed. Every
  // writer stops at its first failure, which must be a quick ENOSPC.
  {
    Deliverers load(root, "b", 4);
    auto start = std::chrono::steady_clock::now();
    load.Join();
    auto more = load.acknowledged();
    acknowledged.insert(more.begin(), more.end());
    auto errors = load.errors();
    std::fprintf(stderr, "brick1 full after %zu more messages (%.1f s); errors: %s slowest failure %.2f s\n",
                 more.size(), Since(start), ErrnoCounts(errors).c_str(), load.slowest_failure_s());
    EXPECT_EQ(errors[ENOSPC], 4) << "a write without room for a quorum fails with ENOSPC: " << ErrnoCounts(errors);
    EXPECT_LT(load.slowest_failure_s(), 3.0) << "ENOSPC is answered at once, not after the hard timeout";
    EXPECT_TRUE(BrickSaysFull(cluster, 1)) << "brick 1 did not fill up";
    EXPECT_FALSE(BrickSaysFull(cluster, 2));
    EXPECT_NE(ReadFile(mount + ".log").find("out of space"), std::string::npos)
        << "the mount log says why writes fail";
    // A message larger than brick 1 itself fails the same way. (Not just
    // larger than what is left: a brick's space grows back by tens of MiB
    // whenever RocksDB flushes its memtable and deletes the WAL behind it.)
    EXPECT_EQ(Deliver(root, "large", RandomBytes(128 * kMiB, 1)), ENOSPC);
    // statfs follows the bricks' heartbeats (1 s) and the mount's map refresh (1 s).
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    struct statvfs st {};
    ASSERT_EQ(::statvfs(mount.c_str(), &st), 0);
    std::fprintf(stderr, "statfs when full: blocks %llu MiB, avail %llu MiB\n",
                 static_cast<unsigned long long>(st.f_blocks * st.f_frsize / kMiB),
                 static_cast<unsigned long long>(st.f_bavail * st.f_frsize / kMiB));
    // What is left is the bricks' write buffers at most: a small fraction.
    EXPECT_LT(st.f_bavail * st.f_frsize, avail_at_start / 8) << "statfs shows room that no write can use";
  }

  // 3. Nothing acknowledged was damaged.
  EXPECT_EQ(CountDamaged(root, acknowledged), 0u) << "of " << acknowledged.size();
  size_t tmp_left = 0;
  for (auto it = std::filesystem::directory_iterator(root + "/tmp"); it != std::filesystem::directory_iterator(); ++it)
    ++tmp_left;
  EXPECT_EQ(tmp_left, 0u) << "failed deliveries removed their tmp files";

  // 4. Expunge most messages; the freed space is given back and used again,
  // by the bricks that were full.
  int64_t before_expunge = cluster.BrickChunkCount(0);
  size_t kept = 0;
  for (auto it = acknowledged.begin(); it != acknowledged.end();) {
    if (++kept % 4 == 0) {
      ++it;
      continue;
    }
    ASSERT_EQ(::unlink((root + "/new/" + it->first).c_str()), 0) << it->first << ": " << std::strerror(errno);
    it = acknowledged.erase(it);
  }
  auto expunge_start = std::chrono::steady_clock::now();
  int64_t room0 = 0, room1 = 0;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    room0 = Headroom(cluster, 0);
    room1 = Headroom(cluster, 1);
  } while ((room0 < 8 * kMiB || room1 < 8 * kMiB) && Since(expunge_start) < 20);
  int64_t after_expunge = cluster.BrickChunkCount(0);
  std::fprintf(stderr, "space back after %.1f s: headroom brick0 %lld MiB, brick1 %lld MiB; brick0 chunks %lld -> %lld\n",
               Since(expunge_start), static_cast<long long>(room0 / kMiB), static_cast<long long>(room1 / kMiB),
               static_cast<long long>(before_expunge), static_cast<long long>(after_expunge));
  ASSERT_GE(room0, 8 * kMiB) << "deletes did not give brick 0 its space back";
  ASSERT_GE(room1, 8 * kMiB) << "deletes did not give brick 1 its space back";

  std::mt19937_64 rng(7);
  int delivered = 0;
  for (int i = 0; i < 40; ++i) {
    std::string name = "c" + std::to_string(i);
    std::string body = RandomBytes(16 * 1024 + rng() % (48 * 1024), rng());
    int err = Deliver(root, name, body);
    EXPECT_EQ(err, 0) << name << ": " << std::strerror(err);
    if (err == 0) {
      acknowledged[name] = std::move(body);
      ++delivered;
    }
  }
  // The freed space is used again: by the new messages, and by repair, which
  // gives the messages stored with two copies while brick 0 was full their
  // third copy (so brick 0 may well fill up again; its count is what shows
  // the reuse, not an exact number).
  int64_t after_new = cluster.BrickChunkCount(0);
  for (int i = 0; i < 50 && after_new <= after_expunge; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    after_new = cluster.BrickChunkCount(0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // statfs lags by a heartbeat and a map refresh
  std::fprintf(stderr, "after %d new deliveries and repair: brick0 chunks %lld -> %lld\n", delivered,
               static_cast<long long>(after_expunge), static_cast<long long>(after_new));
  EXPECT_GT(after_new, after_expunge) << "the space freed on the brick that was full is written again";
  struct statvfs st {};
  ASSERT_EQ(::statvfs(mount.c_str(), &st), 0);
  EXPECT_GT(st.f_bavail * st.f_frsize, 4ull * kMiB) << "statfs shows the space freed by deletes";

  // 5. Every acknowledged message still there, byte for byte.
  EXPECT_EQ(CountDamaged(root, acknowledged), 0u) << "of " << acknowledged.size();
  std::fprintf(stderr, "capacity test: %zu messages checked, %.1f s\n", acknowledged.size(), Since(test_start));
  cluster.Unmount(mount);
}
