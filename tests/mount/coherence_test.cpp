// Two mounts of one cluster stand for two hosts. Both cache entries and
// attributes in their kernels for a minute; what one changes must reach the
// other at once through meta's invalidations, not after the cache lifetime.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "tests/mount/mount_env.h"
#include "tests/support/cluster.h"

using namespace spool::testing;
using Clock = std::chrono::steady_clock;

namespace {

// Far longer than any test waits: a stale cache would show.
const std::vector<std::string> kLongCaching = {"--attr-timeout", "60", "--entry-timeout", "60"};

class Coherence : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterConfig config;
    // A killed mount's locks go when its session expires: seconds here.
    config.meta_args = {"--session-timeout-ms", "3000"};
    cluster_ = new LocalCluster(config);
    ASSERT_TRUE(cluster_->Start());
    a_ = cluster_->Mount(kLongCaching);
    b_ = cluster_->Mount(kLongCaching);
    auto deaf = kLongCaching;
    deaf.push_back("--no-invalidations");
    c_ = cluster_->Mount(deaf);
    auto late = kLongCaching;
    late.insert(late.end(), {"--invalidation-delay-ms", "300"});
    d_ = cluster_->Mount(late);
    ASSERT_FALSE(d_.empty());
    ASSERT_FALSE(a_.empty());
    ASSERT_FALSE(b_.empty());
    ASSERT_FALSE(c_.empty());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  // A fresh directory, by its path on mount A and on mount B.
  std::pair<std::string, std::string> Dir() {
    static int n = 0;
    std::string name = "/t" + std::to_string(++n);
    EXPECT_EQ(::mkdir((a_ + name).c_str(), 0755), 0);
    return {a_ + name, b_ + name};
  }

  static inline LocalCluster* cluster_ = nullptr;
  static inline std::string a_, b_;
  static inline std::string c_;  // a mount that follows no invalidations
  static inline std::string d_;  // a mount that applies them 300 ms late
};

// Milliseconds until `seen` holds (polling), or -1 after `limit`.
double MillisUntil(const std::function<bool()>& seen, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto start = Clock::now();
  while (Clock::now() - start < limit) {
    if (seen()) return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return -1;
}

off_t SizeOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

ino_t InoOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

struct flock Range(short type, off_t start, off_t len) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = start;
  l.l_len = len;
  return l;
}

// Runs `body` in a child process; what it writes to the pipe comes back
// one character per step.
struct Child {
  pid_t pid = -1;
  int out = -1;
  char Next() {
    char c = 0;
    return ::read(out, &c, 1) == 1 ? c : '?';
  }
  void Reap() {
    int status = 0;
    if (pid > 0) ::waitpid(pid, &status, 0);
    if (out >= 0) ::close(out);
    pid = -1;
    out = -1;
  }
};
Child Spawn(const std::function<void(int report_fd)>& body) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    body(fds[1]);
    _exit(0);
  }
  ::close(fds[1]);
  return Child{pid, fds[0]};
}
void Report(int fd, bool ok, char yes) {
  char c = ok ? yes : 'x';
  (void)!::write(fd, &c, 1);
}

int64_t MtimeNs(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec : -1;
}

}  // namespace

TEST_F(Coherence, ChangesOnOneMountAreVisibleOnTheOtherWellBeforeTheCacheLifetime) {
  auto [a, b] = Dir();
  std::vector<double> delays;
  for (int i = 0; i < 20; ++i) {
    const std::string name = "/f" + std::to_string(i);
    WriteAll(a + name, std::string(10, 'x'));
    ASSERT_EQ(SizeOf(b + name), 10);  // B caches the attributes now
    const auto written = Clock::now();
    WriteAll(a + name, std::string(1000 + i, 'y'));  // rewritten: size and data change
    double ms = MillisUntil([&] { return SizeOf(b + name) == 1000 + i; });
    ASSERT_GE(ms, 0) << "mount B still shows the old size of " << name;
    delays.push_back(std::chrono::duration<double, std::milli>(Clock::now() - written).count());
    EXPECT_EQ(ReadAll(b + name), std::string(1000 + i, 'y'));
  }
  std::sort(delays.begin(), delays.end());
  std::fprintf(stderr, "visibility delay (write+close on A -> new size on B): median %.2f ms, max %.2f ms over %zu\n",
               delays[delays.size() / 2], delays.back(), delays.size());
  // Loopback goal: well under 100 ms; the cache lifetime is 60 s.
  EXPECT_LT(delays[delays.size() / 2], 100.0);
  EXPECT_LT(delays.back(), 1000.0);
}

// Rewrites `path` in place (same size, no truncate), as a database or an
// index file is updated.
void OverwriteInPlace(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::close(fd), 0);
}

// An open keeps the kernel's cached pages of a file (a reread costs no round
// trip to the bricks) only while meta's version is the one they hold.
TEST_F(Coherence, ReopenKeepsCachedPagesOnlyWhileTheyHoldTheCurrentVersion) {
  auto [a, b] = Dir();
  const std::string name = "/index";
  WriteAll(a + name, std::string(20000, '1'));
  ASSERT_EQ(ReadAll(a + name), std::string(20000, '1'));  // A's pages hold version "1"
  ASSERT_EQ(ReadAll(b + name), std::string(20000, '1'));  // and B's too

  // Same size, rewritten in place on B: only the version tells A.
  OverwriteInPlace(b + name, std::string(20000, '2'));
  EXPECT_EQ(ReadAll(a + name), std::string(20000, '2'));
  // A's own rewrite: its pages hold it, B rereads it.
  OverwriteInPlace(a + name, std::string(20000, '3'));
  EXPECT_EQ(ReadAll(a + name), std::string(20000, '3'));
  EXPECT_EQ(ReadAll(b + name), std::string(20000, '3'));
  // Several rounds, alternating, each read through a fresh open; mount C
  // hears of no change (as after a missed invalidation): its reopen must
  // still drop its pages, on the version check alone.
  const std::string c = c_ + a.substr(a_.size());
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(ReadAll(c + name).size(), 20000u);  // C's pages hold the version before this round
    const std::string& writer = (i % 2 == 0) ? b : a;
    const std::string data(20000, static_cast<char>('a' + i));
    OverwriteInPlace(writer + name, data);
    // Compared as a bool: a failure prints which bytes were seen, not 20000 of them.
    for (const std::string& via : {a, b, c}) {
      const std::string seen = ReadAll(via + name);
      EXPECT_TRUE(seen == data) << "round " << i << ": " << via << " read " << seen.size() << " bytes starting '"
                                << seen.substr(0, 1) << "', expected '" << data[0] << "'";
    }
  }
}

TEST_F(Coherence, NamesAndDirectoryTimesFollowRenamesAndUnlinks) {
  auto [a, b] = Dir();
  ASSERT_EQ(::mkdir((a + "/new").c_str(), 0700), 0);
  WriteAll(a + "/uidlist", "version 1\n");
  WriteAll(a + "/gone", "soon unlinked");
  // B looks everything up (and caches it).
  ASSERT_EQ(ReadAll(b + "/uidlist"), "version 1\n");
  ASSERT_NE(InoOf(b + "/gone"), 0u);
  const int64_t new_mtime = MtimeNs(b + "/new");
  ASSERT_GT(new_mtime, 0);
  ASSERT_EQ(InoOf(b + "/later"), 0u);

  // Dovecot rewrites dovecot-uidlist by writing a temp file and renaming it
  // over the old one: B must open the new inode, with the new bytes.
  WriteAll(a + "/uidlist.tmp", "version 2, longer\n");
  ASSERT_EQ(::rename((a + "/uidlist.tmp").c_str(), (a + "/uidlist").c_str()), 0);
  EXPECT_GE(MillisUntil([&] { return InoOf(b + "/uidlist") == InoOf(a + "/uidlist"); }), 0);
  EXPECT_EQ(ReadAll(b + "/uidlist"), "version 2, longer\n");
  EXPECT_EQ(InoOf(b + "/uidlist.tmp"), 0u);

  ASSERT_EQ(::unlink((a + "/gone").c_str()), 0);
  EXPECT_GE(MillisUntil([&] { return InoOf(b + "/gone") == 0; }), 0) << "B still sees an unlinked name";
  WriteAll(a + "/later", "created after B looked");
  EXPECT_EQ(ReadAll(b + "/later"), "created after B looked");

  // A delivery into new/ changes the directory's mtime, which Dovecot uses
  // to notice new mail.
  WriteAll(a + "/new/1.msg", "mail");
  EXPECT_GE(MillisUntil([&] { return MtimeNs(b + "/new") != new_mtime; }), 0) << "B keeps the old mtime of new/";
  std::vector<std::string> listed;
  for (auto& e : std::filesystem::directory_iterator(b + "/new")) listed.push_back(e.path().filename().string());
  EXPECT_EQ(listed, std::vector<std::string>{"1.msg"});
}

// A mount answers the kernel's GETATTR of a directory it has just changed
// from meta's reply to that change (client::DirAttrs), not from meta. Its
// own change shows at once; another mount's change to the same directory
// must replace that copy; and after both mounts changed the directory at
// once, in whatever order the replies and invalidations crossed, both show
// what meta has (a mount started afterwards asks meta).
TEST_F(Coherence, DirectoryAttributesFollowChangesFromBothMounts) {
  auto [a, b] = Dir();
  struct DirStat {
    int64_t mtime_ns = -1, ctime_ns = -1;
    nlink_t nlink = 0;
    bool operator==(const DirStat&) const = default;
  };
  auto stat_of = [](const std::string& path) {
    struct stat st;
    DirStat d;
    if (::stat(path.c_str(), &st) != 0) return d;
    d.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    d.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
    d.nlink = st.st_nlink;
    return d;
  };
  for (int round = 0; round < 10; ++round) {
    const std::string n = std::to_string(round);
    const DirStat before = stat_of(a);
    WriteAll(a + "/f" + n, "x");
    const DirStat after_a = stat_of(a);
    EXPECT_GT(after_a.mtime_ns, before.mtime_ns) << "A does not see its own create at once";
    EXPECT_GE(MillisUntil([&] { return stat_of(b) == after_a; }, std::chrono::seconds(2)), 0) << "round " << round;
    ASSERT_EQ(::mkdir((b + "/d" + n).c_str(), 0755), 0);
    const DirStat after_b = stat_of(b);
    EXPECT_EQ(after_b.nlink, before.nlink + 1);
    EXPECT_GE(MillisUntil([&] { return stat_of(a) == after_b; }, std::chrono::seconds(2)), 0)
        << "A keeps its own copy of the directory after B changed it, round " << round;
    ASSERT_EQ(::rename((a + "/f" + n).c_str(), (a + "/d" + n + "/f").c_str()), 0);
    const DirStat after_rename = stat_of(a);
    EXPECT_GT(after_rename.mtime_ns, after_b.mtime_ns);
    EXPECT_GE(MillisUntil([&] { return stat_of(b) == after_rename; }, std::chrono::seconds(2)), 0);
  }

  // Both mounts at once, two threads each: create, rename within, unlink, mkdir.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string dir = t % 2 == 0 ? a : b;
      for (int i = 0; i < 60; ++i) {
        const std::string n = dir + "/c" + std::to_string(t) + "_" + std::to_string(i);
        int fd = ::open(n.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0 || ::close(fd) != 0) failures++;
        if (::rename(n.c_str(), (n + ":2,S").c_str()) != 0) failures++;
        if (i % 3 == 0 && ::unlink((n + ":2,S").c_str()) != 0) failures++;
        if (i % 10 == 0 && ::mkdir((n + ".d").c_str(), 0755) != 0) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  const std::string fresh = cluster_->Mount(kLongCaching);
  ASSERT_FALSE(fresh.empty());
  const DirStat truth = stat_of(fresh + a.substr(a_.size()));
  EXPECT_GT(truth.mtime_ns, 0);
  EXPECT_GE(MillisUntil([&] { return stat_of(a) == truth; }, std::chrono::seconds(2)), 0)
      << "A: mtime " << stat_of(a).mtime_ns << " nlink " << stat_of(a).nlink << ", meta: mtime " << truth.mtime_ns
      << " nlink " << truth.nlink;
  EXPECT_GE(MillisUntil([&] { return stat_of(b) == truth; }, std::chrono::seconds(2)), 0)
      << "B: mtime " << stat_of(b).mtime_ns << " nlink " << stat_of(b).nlink << ", meta: mtime " << truth.mtime_ns
      << " nlink " << truth.nlink;
}

TEST_F(Coherence, ReaddirOnOneMountWhileAnotherChurnsReturnsEveryStableEntryOnce) {
  auto [a, b] = Dir();
  constexpr int kStable = 3000;
  for (int i = 0; i < kStable; ++i) {
    int fd = ::open((a + "/s" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> churned{0};
  std::thread churn([&, a = a] {
    for (int i = 0; !stop; ++i) {
      std::string p = a + "/c" + std::to_string(i % 500);
      if (i % 2 == 0) {
        int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0600);
        if (fd >= 0) ::close(fd);
      } else {
        ::unlink(p.c_str());
      }
      churned++;
    }
  });
  while (churned < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int churned_before = churned;
  const auto listing_started = Clock::now();
  for (int pass = 0; pass < 4; ++pass) {
    std::map<std::string, int> seen;
    for (auto& e : std::filesystem::directory_iterator(b)) seen[e.path().filename().string()]++;
    int stable = 0;
    for (auto& [name, count] : seen) {
      EXPECT_EQ(count, 1) << name << " listed " << count << " times";
      if (name[0] == 's') ++stable;
    }
    EXPECT_EQ(stable, kStable) << "pass " << pass;
  }
  const int churned_during = churned - churned_before;
  const double listing_ms = std::chrono::duration<double, std::milli>(Clock::now() - listing_started).count();
  stop = true;
  churn.join();
  std::fprintf(stderr, "4 listings of %d entries on B took %.0f ms while A made %d creates/unlinks\n", kStable,
               listing_ms, churned_during);
  EXPECT_GT(churned_during, 4) << "the listings did not overlap the changes";
}

TEST_F(Coherence, FcntlOfdAndFlockLocksHoldAcrossMounts) {
  auto [a, b] = Dir();
  WriteAll(a + "/disk.img", std::string(4096, 'd'));
  int fd = ::open((a + "/disk.img").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto posix = Range(F_WRLCK, 0, 100);
  ASSERT_EQ(::fcntl(fd, F_SETLK, &posix), 0);
  auto ofd = Range(F_WRLCK, 1000, 10);  // qemu locks its images with OFD locks
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &ofd), 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);

  // Another "host" (a process on mount B) sees every lock.
  auto child = Spawn([b = b](int report) {
    int cfd = ::open((b + "/disk.img").c_str(), O_RDWR);
    auto l = Range(F_WRLCK, 50, 10);
    Report(report, ::fcntl(cfd, F_SETLK, &l) == -1 && (errno == EAGAIN || errno == EACCES), 'P');
    auto q = Range(F_WRLCK, 0, 1);
    Report(report, ::fcntl(cfd, F_GETLK, &q) == 0 && q.l_type == F_WRLCK, 'G');
    auto o = Range(F_RDLCK, 1005, 1);
    Report(report, ::fcntl(cfd, F_OFD_SETLK, &o) == -1 && (errno == EAGAIN || errno == EACCES), 'O');
    Report(report, ::flock(cfd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK, 'F');
    auto free_range = Range(F_WRLCK, 200, 10);
    Report(report, ::fcntl(cfd, F_SETLK, &free_range) == 0, 'R');
    // Blocks until mount A's process lets go.
    auto all = Range(F_WRLCK, 0, 100);
    Report(report, ::fcntl(cfd, F_SETLKW, &all) == 0, 'W');
    Report(report, ::fcntl(cfd, F_OFD_SETLKW, &o) == 0, 'V');
    ::close(cfd);
  });
  std::string steps;
  for (int i = 0; i < 5; ++i) steps += child.Next();
  EXPECT_EQ(steps, "PGOFR") << "posix conflict, getlk, ofd conflict, flock conflict, free range";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  posix.l_type = F_UNLCK;
  const auto unlocked = Clock::now();
  ASSERT_EQ(::fcntl(fd, F_SETLK, &posix), 0);
  EXPECT_EQ(child.Next(), 'W') << "F_SETLKW on B granted once A unlocked";
  const double woken_ms = std::chrono::duration<double, std::milli>(Clock::now() - unlocked).count();
  ofd.l_type = F_UNLCK;
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &ofd), 0);
  EXPECT_EQ(child.Next(), 'V') << "F_OFD_SETLKW on B granted once A unlocked";
  child.Reap();
  std::fprintf(stderr, "blocked F_SETLKW on mount B woken %.1f ms after the unlock on mount A\n", woken_ms);
  ::close(fd);
}

// Dovecot's index log on two hosts: each keeps the log open, takes turns
// under an fcntl lock, and appends after the size fstat shows it. Mount C
// hears of no change from meta, so only the lock can tell it that mount A
// appended: its size and pages must be right from the moment it holds the
// lock, or it writes over A's records.
TEST_F(Coherence, ALockHolderSeesEverythingThePreviousHolderWrote) {
  auto [a, b] = Dir();
  const std::string c = c_ + a.substr(a_.size());
  WriteAll(a + "/index.log", "header\n");
  int fds[2] = {::open((a + "/index.log").c_str(), O_RDWR), ::open((c + "/index.log").c_str(), O_RDWR)};
  ASSERT_GE(fds[0], 0);
  ASSERT_GE(fds[1], 0);
  std::string expected = "header\n";
  for (int round = 0; round < 16; ++round) {
    const int fd = fds[round % 2];
    const char* via = round % 2 == 0 ? "A" : "C";
    auto lock = Range(F_WRLCK, 0, 0);
    ASSERT_EQ(::fcntl(fd, F_SETLKW, &lock), 0);
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(expected.size())) << "round " << round << " on mount " << via;
    std::string seen(expected.size(), '\0');
    ASSERT_EQ(::pread(fd, seen.data(), seen.size(), 0), static_cast<ssize_t>(seen.size()));
    EXPECT_TRUE(seen == expected) << "round " << round << " on mount " << via << " read stale bytes";
    // Records of uneven length, so that appends end inside pages either mount holds.
    const std::string record = "round " + std::to_string(round) + " " + std::string(100 + round * 37, via[0]) + "\n";
    ASSERT_EQ(::pwrite(fd, record.data(), record.size(), st.st_size), static_cast<ssize_t>(record.size()));
    expected.resize(static_cast<size_t>(st.st_size));
    expected += record;
    lock.l_type = F_UNLCK;
    ASSERT_EQ(::fcntl(fd, F_SETLK, &lock), 0);
  }
  // flock() takes turns the same way.
  for (int round = 0; round < 4; ++round) {
    const int fd = fds[round % 2];
    ASSERT_EQ(::flock(fd, LOCK_EX), 0);
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(expected.size())) << "flock round " << round;
    const std::string record = "flock " + std::to_string(round) + "\n";
    ASSERT_EQ(::pwrite(fd, record.data(), record.size(), st.st_size), static_cast<ssize_t>(record.size()));
    expected.resize(static_cast<size_t>(st.st_size));
    expected += record;
    ASSERT_EQ(::flock(fd, LOCK_UN), 0);
  }
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_TRUE(ReadAll(b + "/index.log") == expected);
}

// Dovecot rotates its index log and replaces dovecot.index by renames made
// under the log's lock; the next holder finds the files by name. A lock
// granted on mount B is returned only after B applied every invalidation
// of what others changed before the grant: the name never leads to the
// replaced file (B caches entries for a minute). B is mount D, which
// applies invalidations 300 ms late, as a loaded host might.
TEST_F(Coherence, ALockHolderFindsTheFilesThePreviousHolderRenamed) {
  auto [a, unused] = Dir();
  const std::string b = d_ + a.substr(a_.size());
  WriteAll(a + "/lock", "");
  WriteAll(a + "/log", "round -1");
  const int fd_a = ::open((a + "/lock").c_str(), O_RDWR);
  const int fd_b = ::open((b + "/lock").c_str(), O_RDWR);
  ASSERT_GE(fd_a, 0);
  ASSERT_GE(fd_b, 0);
  ASSERT_EQ(ReadAll(b + "/log"), "round -1");  // B caches the name and the inode
  int stale = 0;
  for (int round = 0; round < 8; ++round) {
    auto lock = Range(F_WRLCK, 0, 0);
    ASSERT_EQ(::fcntl(fd_a, F_SETLKW, &lock), 0);
    const std::string data = "round " + std::to_string(round);
    WriteAll(a + "/log.tmp", data);
    ASSERT_EQ(::rename((a + "/log.tmp").c_str(), (a + "/log").c_str()), 0);
    const ino_t fresh = InoOf(a + "/log");
    lock.l_type = F_UNLCK;
    ASSERT_EQ(::fcntl(fd_a, F_SETLK, &lock), 0);

    lock.l_type = F_WRLCK;
    ASSERT_EQ(::fcntl(fd_b, F_SETLKW, &lock), 0);
    const ino_t seen = InoOf(b + "/log");
    const std::string read = ReadAll(b + "/log");
    if (seen != fresh || read != data) {
      ++stale;
      ADD_FAILURE() << "round " << round << ": B found inode " << seen << " reading '" << read << "', A made inode "
                    << fresh << " with '" << data << "'";
    }
    lock.l_type = F_UNLCK;
    ASSERT_EQ(::fcntl(fd_b, F_SETLK, &lock), 0);
  }
  EXPECT_EQ(stale, 0);
  ::close(fd_a);
  ::close(fd_b);
}

TEST_F(Coherence, LocksOfAKilledMountAreReleasedWhenItsSessionExpires) {
  auto [a, b] = Dir();
  WriteAll(a + "/index", "index");
  const std::string c = cluster_->Mount(kLongCaching);
  ASSERT_FALSE(c.empty());
  const std::string on_c = c + a.substr(a_.size()) + "/index";
  auto holder = Spawn([on_c](int report) {
    int cfd = ::open(on_c.c_str(), O_RDWR);
    auto l = Range(F_WRLCK, 0, 0);
    Report(report, cfd >= 0 && ::fcntl(cfd, F_SETLK, &l) == 0, 'L');
    ::pause();
  });
  ASSERT_EQ(holder.Next(), 'L');
  int fd = ::open((b + "/index").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto l = Range(F_WRLCK, 0, 0);
  EXPECT_EQ(::fcntl(fd, F_SETLK, &l), -1) << "the lock of mount C's process must hold";
  const auto killed = Clock::now();
  cluster_->KillMount(c);  // its host vanished: nobody unlocks
  ::kill(holder.pid, SIGKILL);
  holder.Reap();
  double granted_ms = MillisUntil([&] { return ::fcntl(fd, F_SETLK, &l) == 0; }, std::chrono::seconds(20));
  ASSERT_GE(granted_ms, 0) << "the dead mount's lock was never released";
  std::fprintf(stderr, "lock of a SIGKILLed mount released %.0f ms after the kill (session timeout 3000 ms)\n",
               std::chrono::duration<double, std::milli>(Clock::now() - killed).count());
  ::close(fd);
}

TEST_F(Coherence, AppendersOnTwoMountsLoseNoWrite) {
  auto [a, b] = Dir();
  WriteAll(a + "/mbox", "");
  constexpr int kRecords = 150;
  auto appender = [](const std::string& path, char who) {
    return Spawn([path, who](int report) {
      int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
      bool ok = fd >= 0;
      for (int i = 0; ok && i < kRecords; ++i) {
        char line[64];
        int n = std::snprintf(line, sizeof line, "From %c %05d %s\n", who, i, std::string(i % 40, who).c_str());
        ok = ::write(fd, line, static_cast<size_t>(n)) == n;
      }
      ok = ok && ::close(fd) == 0;
      Report(report, ok, 'D');
    });
  };
  auto first = appender(a + "/mbox", 'A');
  auto second = appender(b + "/mbox", 'B');
  EXPECT_EQ(first.Next(), 'D');
  EXPECT_EQ(second.Next(), 'D');
  first.Reap();
  second.Reap();
  for (const std::string& via : {a, b}) {
    std::map<std::string, int> lines;
    std::string all = ReadAll(via + "/mbox");
    size_t count = 0;
    for (size_t pos = 0; pos < all.size();) {
      size_t nl = all.find('\n', pos);
      if (nl == std::string::npos) nl = all.size();
      lines[all.substr(pos, nl - pos)]++;
      ++count;
      pos = nl + 1;
    }
    EXPECT_EQ(count, 2u * kRecords) << "lines in the file read through " << via;
    for (const auto& [line, n] : lines)
      if (line.size() < 13 || line.compare(0, 5, "From ") != 0) ADD_FAILURE() << "damaged line '" << line << "'";
    for (char who : {'A', 'B'})
      for (int i = 0; i < kRecords; ++i) {
        char line[64];
        std::snprintf(line, sizeof line, "From %c %05d %s", who, i, std::string(i % 40, who).c_str());
        EXPECT_EQ(lines[line], 1) << "record '" << line << "' via " << via;
      }
  }
}

std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

// A mount that listed a directory answers lookups of names that are not
// there from its copy of the names (under meta's lease on them); a name
// another mount adds, by any of create, rename or link, is there for it
// the moment that add returns (meta recalls the lease first).
TEST_F(Coherence, NamesAnotherMountAddsAreFoundAtOnceWhereThisOneListedTheDirectory) {
  auto [a, b] = Dir();
  ASSERT_EQ(::mkdir((a + "/tmp").c_str(), 0700), 0);
  WriteAll(a + "/source", "linked");
  // A directory each round: meta leases a directory where names were just
  // recalled only after a while (DirLeases::kContendedFor).
  for (int round = 0; round < 30; ++round) {
    const std::string dir = "/new" + std::to_string(round);
    const std::string name = dir + "/" + std::to_string(round) + ".host";
    ASSERT_EQ(::mkdir((a + dir).c_str(), 0700), 0);
    ListNames(a + dir);  // copied under a lease
    ASSERT_EQ(InoOf(a + name), 0u);
    ASSERT_EQ(InoOf(a + name), 0u);  // a miss again: from the copy, if nowhere else
    switch (round % 3) {
      case 0:
        WriteAll(b + name, "delivered");
        break;
      case 1:
        WriteAll(b + "/tmp/x", "renamed in");
        ASSERT_EQ(::rename((b + "/tmp/x").c_str(), (b + name).c_str()), 0);
        break;
      case 2:
        ASSERT_EQ(::link((b + "/source").c_str(), (b + name).c_str()), 0);
        break;
    }
    EXPECT_NE(InoOf(a + name), 0u) << "mount A does not find " << name << " that mount B just made";
    EXPECT_EQ(ListNames(a + dir).size(), 1u);
  }
}

// A mount that dies holding a lease holds nobody up for long: the recall
// times out and the add goes through.
TEST_F(Coherence, ALeaseOfAKilledMountDoesNotBlockOthers) {
  auto [a, b] = Dir();
  const std::string e = cluster_->Mount(kLongCaching);
  ASSERT_FALSE(e.empty());
  const std::string dir_on_e = e + a.substr(a_.size());
  ASSERT_EQ(::mkdir((a + "/cur").c_str(), 0700), 0);
  WriteAll(a + "/cur/1", "one");
  EXPECT_EQ(ListNames(dir_on_e + "/cur").size(), 1u);  // E holds the lease now
  EXPECT_EQ(InoOf(dir_on_e + "/cur/2"), 0u);
  cluster_->KillMount(e);
  WriteAll(b + "/cur/2", "two");  // waits for the recall to time out
  EXPECT_EQ(ReadAll(a + "/cur/2"), "two");
}

// A slot written in pieces by several mounts (a VM image after a live
// migration) is compacted once it holds too many extents, though no one
// mount wrote enough pieces to count up to its own bound.
TEST_F(Coherence, ASlotWrittenInPiecesFromTwoMountsIsCompacted) {
  auto [a, b] = Dir();
  constexpr size_t kBlock = 4096, kSlot = 1u << 20;
  std::string model(kSlot, '\0');
  for (size_t i = 0; i < kSlot; ++i) model[i] = static_cast<char>('a' + i % 23);
  WriteAll(a + "/img", model);  // one chunk
  // Chunks of earlier tests may still be on their way out: start from a
  // count that holds still.
  auto chunks = [] { return cluster_->BrickChunkCount(0); };
  int64_t before = chunks();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int64_t now = chunks();
    if (now == before) break;
    before = now;
  }
  ASSERT_GE(before, 0);
  void* raw = nullptr;
  ASSERT_EQ(::posix_memalign(&raw, kBlock, kBlock), 0);
  std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(raw), &std::free);
  // 12 pieces from each mount, each one flushed: fewer than the 16 that
  // either mount counts up to, 24 pieces (~49 extents) together.
  int piece = 0;
  for (const std::string& via : {a, b}) {
    const int fd = ::open((via + "/img").c_str(), O_RDWR | O_DIRECT);
    ASSERT_GE(fd, 0) << via;
    for (int i = 0; i < 12; ++i, ++piece) {
      const size_t off = static_cast<size_t>(piece) * 40960 + kBlock;
      std::memset(buf.get(), 'A' + piece % 26, kBlock);
      std::memcpy(model.data() + off, buf.get(), kBlock);
      ASSERT_EQ(::pwrite(fd, buf.get(), kBlock, static_cast<off_t>(off)), static_cast<ssize_t>(kBlock));
      ASSERT_EQ(::fsync(fd), 0);
    }
    ASSERT_EQ(::close(fd), 0);
  }
  // Compacted: one chunk for the slot and the pieces written after the
  // compaction began; without it, 24 pieces beside the first chunk.
  int64_t added = -1;
  for (int i = 0; i < 150; ++i) {
    added = chunks() - before;
    if (added <= 16) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr, "24 pieces from two mounts in one slot: %lld chunks added on a brick\n",
               static_cast<long long>(added));
  EXPECT_LE(added, 16);
  EXPECT_TRUE(ReadAll(a + "/img") == model);
  EXPECT_TRUE(ReadAll(b + "/img") == model);
}

TEST_F(Coherence, AnOfdLockEndsWithTheLastCloseOfItsOpenFile) {
  auto [a, b] = Dir();
  WriteAll(a + "/img", std::string(100, 'i'));
  int fd = ::open((a + "/img").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  int dup_fd = ::dup(fd);  // same open file: the lock stays until both are closed
  auto l = Range(F_WRLCK, 0, 0);
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &l), 0);
  int other = ::open((b + "/img").c_str(), O_RDWR);
  ASSERT_GE(other, 0);
  EXPECT_EQ(::fcntl(other, F_OFD_SETLK, &l), -1);
  ::close(fd);
  EXPECT_EQ(::fcntl(other, F_OFD_SETLK, &l), -1) << "a descriptor of the open file still holds the lock";
  ::close(dup_fd);
  EXPECT_GE(MillisUntil([&] { return ::fcntl(other, F_OFD_SETLK, &l) == 0; }, std::chrono::seconds(2)), 0)
      << "the OFD lock outlived its open file";
  ::close(other);
}
