// POSIX semantics mail software relies on, checked through a real FUSE mount
// of a real cluster (meta + 3 bricks as processes).
#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "tests/mount/mount_env.h"

using namespace spool::testing;

namespace {

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  EXPECT_NE(d, nullptr) << dir;
  if (!d) return names;
  while (auto* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") {
      EXPECT_TRUE(names.insert(n).second) << "duplicate entry " << n;
    }
  }
  closedir(d);
  return names;
}

struct stat Stat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

// The thread ids of a running process.
std::vector<pid_t> Threads(pid_t pid) {
  std::vector<pid_t> tids;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  EXPECT_NE(d, nullptr) << "process " << pid;
  if (!d) return tids;
  while (auto* e = readdir(d))
    if (e->d_name[0] != '.') tids.push_back(static_cast<pid_t>(std::stoi(e->d_name)));
  closedir(d);
  return tids;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

TEST(Posix, WriteReadBackSmallFile) {
  auto dir = MountEnvironment::TestDir();
  WriteAll(dir + "/msg", "Subject: hello\r\n\r\nbody\r\n");
  EXPECT_EQ(ReadAll(dir + "/msg"), "Subject: hello\r\n\r\nbody\r\n");
  EXPECT_EQ(Stat(dir + "/msg").st_size, 24);
}

TEST(Posix, RenameReplacesExistingFileAtomically) {
  auto dir = MountEnvironment::TestDir();
  WriteAll(dir + "/a", "new contents");
  WriteAll(dir + "/b", "old");
  ino_t a_ino = Stat(dir + "/a").st_ino;
  ASSERT_EQ(::rename((dir + "/a").c_str(), (dir + "/b").c_str()), 0);
  EXPECT_FALSE(Exists(dir + "/a"));
  EXPECT_EQ(ReadAll(dir + "/b"), "new contents");
  EXPECT_EQ(Stat(dir + "/b").st_ino, a_ino) << "inode numbers stay stable across rename";
}

TEST(Posix, RenameAcrossDirectoriesAndOfDirectories) {
  auto dir = MountEnvironment::TestDir();
  ASSERT_EQ(::mkdir((dir + "/tmp").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((dir + "/new").c_str(), 0700), 0);
  WriteAll(dir + "/tmp/1.host", "message");
  ASSERT_EQ(::rename((dir + "/tmp/1.host").c_str(), (dir + "/new/1.host").c_str()), 0);
  EXPECT_EQ(ReadAll(dir + "/new/1.host"), "message");
  EXPECT_TRUE(List(dir + "/tmp").empty());
  ASSERT_EQ(::mkdir((dir + "/sub").c_str(), 0755), 0);
  ASSERT_EQ(::rename((dir + "/new").c_str(), (dir + "/sub/moved").c_str()), 0);
  EXPECT_EQ(ReadAll(dir + "/sub/moved/1.host"), "message");
  EXPECT_EQ(Stat(dir + "/sub").st_nlink, 3u);
  // A directory into its own subtree.
  errno = 0;
  EXPECT_EQ(::rename((dir + "/sub").c_str(), (dir + "/sub/moved/inside").c_str()), -1);
  EXPECT_EQ(errno, EINVAL);
  // Over a non-empty directory.
  ASSERT_EQ(::mkdir((dir + "/other").c_str(), 0755), 0);
  errno = 0;
  EXPECT_EQ(::rename((dir + "/other").c_str(), (dir + "/sub").c_str()), -1);
  EXPECT_TRUE(errno == ENOTEMPTY || errno == EEXIST) << std::strerror(errno);
}

TEST(Posix, HardLinksCountAndShareData) {
  auto dir = MountEnvironment::TestDir();
  WriteAll(dir + "/tmp_msg", "linked");
  ASSERT_EQ(::link((dir + "/tmp_msg").c_str(), (dir + "/new_msg").c_str()), 0);
  EXPECT_EQ(Stat(dir + "/new_msg").st_nlink, 2u);
  EXPECT_EQ(Stat(dir + "/tmp_msg").st_ino, Stat(dir + "/new_msg").st_ino);
  ASSERT_EQ(::unlink((dir + "/tmp_msg").c_str()), 0);
  EXPECT_EQ(Stat(dir + "/new_msg").st_nlink, 1u);
  EXPECT_EQ(ReadAll(dir + "/new_msg"), "linked");
  errno = 0;
  EXPECT_EQ(::link((dir + "/new_msg").c_str(), (dir + "/new_msg").c_str()), -1);
  EXPECT_EQ(errno, EEXIST);
}

TEST(Posix, UnlinkedOpenFileStaysReadable) {
  auto dir = MountEnvironment::TestDir();
  auto data = RandomBytes(300000, 1);
  WriteAll(dir + "/f", data);
  int fd = ::open((dir + "/f").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::unlink((dir + "/f").c_str()), 0);
  EXPECT_FALSE(Exists(dir + "/f"));
  std::string back(data.size(), '\0');
  EXPECT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(data.size()));
  EXPECT_EQ(back, data);
  ::close(fd);
}

// Unlinked files stay while open and are removed once their last close
// reaches meta; closes made together go to meta together, and none is lost.
TEST(Posix, ClosingUnlinkedFilesRemovesThem) {
  auto dir = MountEnvironment::TestDir();
  auto inodes = [] {
    struct statvfs st {};
    EXPECT_EQ(::statvfs(MountEnvironment::mount().c_str(), &st), 0);
    return st.f_files - st.f_ffree;
  };
  const auto before = inodes();
  constexpr int kFiles = 1000;
  std::vector<int> fds;
  for (int i = 0; i < kFiles; ++i) {
    const std::string path = dir + "/gone" + std::to_string(i);
    WriteAll(path, "body " + std::to_string(i), false);
    int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::unlink(path.c_str()), 0);
    fds.push_back(fd);
  }
  EXPECT_EQ(inodes(), before + kFiles) << "an unlinked file that is open must stay";
  std::vector<std::thread> closers;
  constexpr int kClosers = 16;
  for (int t = 0; t < kClosers; ++t)
    closers.emplace_back([&fds, t] {
      for (size_t i = static_cast<size_t>(t); i < fds.size(); i += kClosers) {
        char c;
        (void)::pread(fds[i], &c, 1, 0);
        ::close(fds[i]);
      }
    });
  for (auto& c : closers) c.join();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (inodes() != before && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(inodes(), before) << "closed unlinked files were not all removed";
}

TEST(Posix, ExclusiveCreateCollides) {
  auto dir = MountEnvironment::TestDir();
  int fd = ::open((dir + "/lock").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  errno = 0;
  EXPECT_EQ(::open((dir + "/lock").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600), -1);
  EXPECT_EQ(errno, EEXIST);
  fd = ::open((dir + "/lock").c_str(), O_CREAT | O_WRONLY, 0600);
  EXPECT_GE(fd, 0) << "O_CREAT without O_EXCL opens the existing file";
  ::close(fd);
}

TEST(Posix, AppendFromTwoDescriptors) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/log";
  int a = ::open(path.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
  int b = ::open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    std::string line = (i % 2 ? "b" : "a") + std::to_string(i) + "\n";
    ASSERT_EQ(::write(i % 2 ? b : a, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    expected += line;
  }
  ASSERT_EQ(::fsync(a), 0);
  ::close(a);
  ::close(b);
  EXPECT_EQ(ReadAll(path), expected);
}

// Appends are buffered until close; meanwhile every reader on this mount
// sees them, and positional writes and appends land in the order written.
TEST(Posix, BufferedAppendsAreReadableBeforeCloseAndKeepWriteOrder) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/index.log";
  int positional = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(positional, 0);
  ASSERT_EQ(::write(positional, "0123", 4), 4);
  int appender = ::open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(appender, 0);
  ASSERT_EQ(::write(appender, "abc", 3), 3);
  {
    int reader = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(reader, 0);
    char buf[16] = {};
    EXPECT_EQ(::pread(reader, buf, sizeof buf, 0), 7);
    EXPECT_EQ(std::string(buf, 7), "0123abc");
    struct stat st {};
    ASSERT_EQ(::fstat(reader, &st), 0);
    EXPECT_EQ(st.st_size, 7);
    ::close(reader);
  }
  ASSERT_EQ(::pwrite(positional, "X", 1, 0), 1);  // after the appends above
  ASSERT_EQ(::write(appender, "de", 2), 2);        // after the pwrite
  ASSERT_EQ(::write(appender, "fg", 2), 2);
  EXPECT_EQ(Stat(path).st_size, 11);
  ASSERT_EQ(::close(appender), 0);
  ASSERT_EQ(::close(positional), 0);
  EXPECT_EQ(ReadAll(path), "X123abcdefg");
}

TEST(Posix, TruncateDownAndUp) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/t";
  auto data = RandomBytes(3 << 20, 2);
  WriteAll(path, data);
  ASSERT_EQ(::truncate(path.c_str(), 1500000), 0);
  EXPECT_EQ(Stat(path).st_size, 1500000);
  ASSERT_EQ(::truncate(path.c_str(), 2000000), 0);
  auto back = ReadAll(path);
  ASSERT_EQ(back.size(), 2000000u);
  EXPECT_EQ(back.substr(0, 1500000), data.substr(0, 1500000));
  EXPECT_EQ(back.substr(1500000), std::string(500000, '\0')) << "the grown range reads as zeros";
  // ftruncate on an open descriptor with unflushed writes.
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "xyz", 3, 10), 3);
  ASSERT_EQ(::ftruncate(fd, 12), 0);
  ::close(fd);
  EXPECT_EQ(ReadAll(path), data.substr(0, 10) + "xy");
}

TEST(Posix, SparseFileHolesReadAsZeros) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/sparse";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "end", 3, 10 << 20), 3);
  ASSERT_EQ(::pwrite(fd, "start", 5, 0), 5);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  auto back = ReadAll(path);
  ASSERT_EQ(back.size(), (10u << 20) + 3);
  EXPECT_EQ(back.substr(0, 5), "start");
  EXPECT_EQ(back.substr(5, (10 << 20) - 5), std::string((10 << 20) - 5, '\0'));
  EXPECT_EQ(back.substr(10 << 20), "end");
}

TEST(Posix, LargeFileChecksum) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/big";
  constexpr size_t kSize = 64u << 20;
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  uint32_t crc_written = 0;
  std::string all;
  all.reserve(kSize);
  for (size_t off = 0; off < kSize; off += 1 << 20) {
    auto block = RandomBytes(1 << 20, 100 + off);
    ASSERT_EQ(::write(fd, block.data(), block.size()), static_cast<ssize_t>(block.size()));
    all += block;
  }
  crc_written = spool::Crc32c(all);
  ASSERT_EQ(::close(fd), 0);
  EXPECT_EQ(Stat(path).st_size, static_cast<off_t>(kSize));
  EXPECT_EQ(spool::Crc32c(ReadAll(path)), crc_written);
}

TEST(Posix, RandomOffsetOverwritesMatchAModel) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/img";
  std::string model = RandomBytes(4 << 20, 3);
  WriteAll(path, model);
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(4);
  for (int i = 0; i < 300; ++i) {
    size_t len = 1 + rng() % 20000;
    size_t off = rng() % (model.size() + 100000);
    auto bytes = RandomBytes(len, rng());
    ASSERT_EQ(::pwrite(fd, bytes.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    if (off + len > model.size()) model.resize(off + len, '\0');
    model.replace(off, len, bytes);
    if (i % 50 == 49) {
      ASSERT_EQ(::fsync(fd), 0);
    }
    if (i % 37 == 0) {  // read back through the same descriptor before any flush
      std::string back(len, '\0');
      ASSERT_EQ(::pread(fd, back.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
      ASSERT_EQ(back, bytes);
    }
  }
  ::close(fd);
  EXPECT_TRUE(ReadAll(path) == model) << "file differs from the model";
}

TEST(Posix, MmapReadAndSharedWrite) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/mapped";
  auto data = RandomBytes(200000, 5);
  WriteAll(path, data);
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(std::memcmp(p, data.data(), data.size()), 0);
  std::memcpy(static_cast<char*>(p) + 5000, "MAPPED", 6);
  ASSERT_EQ(::msync(p, data.size(), MS_SYNC), 0);
  ::munmap(p, data.size());
  ::close(fd);
  data.replace(5000, 6, "MAPPED");
  EXPECT_TRUE(ReadAll(path) == data);
}

TEST(Posix, ReaddirLargeDirectoryEachEntryOnce) {
  auto dir = MountEnvironment::TestDir();
  constexpr int kFiles = 20000;
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open((dir + "/m" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0) << i << ": " << std::strerror(errno);
    ::close(fd);
  }
  auto names = List(dir);  // List fails the test on any duplicate
  EXPECT_EQ(names.size(), static_cast<size_t>(kFiles));

  // While another thread adds and removes other entries, every entry that
  // exists throughout is listed exactly once.
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int i = 0; !stop; ++i) {
      std::string p = dir + "/zz_churn" + std::to_string(i % 300);
      if (i % 600 < 300) {
        int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0600);
        if (fd >= 0) ::close(fd);
      } else {
        ::unlink(p.c_str());
      }
    }
  });
  std::map<std::string, int> seen;
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  while (auto* e = readdir(d)) seen[e->d_name]++;
  closedir(d);
  stop = true;
  churn.join();
  for (int i = 0; i < kFiles; ++i) ASSERT_EQ(seen["m" + std::to_string(i)], 1) << "m" << i;
  for (auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;
}

TEST(Posix, NameLengthsAndUtf8) {
  auto dir = MountEnvironment::TestDir();
  std::string name255(255, 'n');
  WriteAll(dir + "/" + name255, "x", false);
  EXPECT_EQ(ReadAll(dir + "/" + name255), "x");
  std::string name256(256, 'n');
  errno = 0;
  EXPECT_EQ(::open((dir + "/" + name256).c_str(), O_CREAT | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  std::string utf8 = "Grüße-日本語-📬:2,S";
  WriteAll(dir + "/" + utf8, "utf8", false);
  EXPECT_TRUE(List(dir).count(utf8));
  EXPECT_EQ(ReadAll(dir + "/" + utf8), "utf8");
}

TEST(Posix, ChmodChownUtimes) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/f";
  WriteAll(path, "x", false);
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_EQ(Stat(path).st_mode & 07777, 0640u);
  ASSERT_EQ(::chown(path.c_str(), 1234, 5678), 0);
  EXPECT_EQ(Stat(path).st_uid, 1234u);
  EXPECT_EQ(Stat(path).st_gid, 5678u);
  timespec times[2] = {{1000000, 5}, {2000000, 7}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  auto st = Stat(path);
  EXPECT_EQ(st.st_atim.tv_sec, 1000000);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
}

TEST(Posix, Symlinks) {
  auto dir = MountEnvironment::TestDir();
  WriteAll(dir + "/target", "pointed", false);
  ASSERT_EQ(::symlink("target", (dir + "/link").c_str()), 0);
  char buf[64] = {};
  EXPECT_EQ(::readlink((dir + "/link").c_str(), buf, sizeof buf), 6);
  EXPECT_STREQ(buf, "target");
  EXPECT_EQ(ReadAll(dir + "/link"), "pointed");
  struct stat st;
  ASSERT_EQ(::lstat((dir + "/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
}

TEST(Posix, StatfsReportsCapacity) {
  struct statvfs st {};
  ASSERT_EQ(::statvfs(MountEnvironment::mount().c_str(), &st), 0);
  EXPECT_GT(st.f_blocks, 0u);
  EXPECT_LE(st.f_bfree, st.f_blocks);
  EXPECT_EQ(st.f_namemax, 255u);
}

TEST(Posix, FcntlLocksConflictBetweenProcesses) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/dovecot.index";
  WriteAll(path, std::string(100, 'i'), false);
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 50;
  ASSERT_EQ(::fcntl(fd, F_SETLK, &lock), 0);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = fork();
  if (child == 0) {
    int cfd = ::open(path.c_str(), O_RDWR);
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_start = 10;
    l.l_len = 5;
    char result[3];
    result[0] = ::fcntl(cfd, F_SETLK, &l) == -1 && (errno == EAGAIN || errno == EACCES) ? 'C' : 'x';
    struct flock q = l;
    result[1] = ::fcntl(cfd, F_GETLK, &q) == 0 && q.l_type == F_WRLCK && q.l_pid == getppid() ? 'G' : 'x';
    l.l_start = 60;  // outside the parent's range
    result[2] = ::fcntl(cfd, F_SETLK, &l) == 0 ? 'F' : 'x';
    (void)!::write(pipefd[1], result, 3);
    // Blocks until the parent unlocks.
    l.l_start = 0;
    l.l_len = 0;
    char waited = ::fcntl(cfd, F_SETLKW, &l) == 0 ? 'W' : 'x';
    (void)!::write(pipefd[1], &waited, 1);
    _exit(0);
  }
  char result[4] = {};
  ASSERT_EQ(::read(pipefd[0], result, 3), 3);
  EXPECT_EQ(std::string(result, 3), "CGF") << "conflict, getlk, free range";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  lock.l_type = F_UNLCK;
  ASSERT_EQ(::fcntl(fd, F_SETLK, &lock), 0);
  char waited = 0;
  ASSERT_EQ(::read(pipefd[0], &waited, 1), 1);
  EXPECT_EQ(waited, 'W') << "F_SETLKW was granted after the unlock";
  int status = 0;
  waitpid(child, &status, 0);
  ::close(fd);
}

TEST(Posix, FlockConflictsBetweenProcesses) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/lockfile";
  WriteAll(path, "", false);
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  pid_t child = fork();
  if (child == 0) {
    int cfd = ::open(path.c_str(), O_RDWR);
    bool conflict = ::flock(cfd, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK;
    _exit(conflict ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "second LOCK_EX must fail with EWOULDBLOCK";
  ASSERT_EQ(::flock(fd, LOCK_UN), 0);
  child = fork();
  if (child == 0) {
    int cfd = ::open(path.c_str(), O_RDWR);
    _exit(::flock(cfd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1);
  }
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "LOCK_EX after unlock must succeed";
  ::close(fd);
}

TEST(Posix, ExtendedAttributes) {
  auto dir = MountEnvironment::TestDir();
  std::string path = dir + "/x";
  WriteAll(path, "", false);
  ASSERT_EQ(::setxattr(path.c_str(), "user.flags", "seen", 4, 0), 0) << std::strerror(errno);
  char buf[32] = {};
  EXPECT_EQ(::getxattr(path.c_str(), "user.flags", buf, sizeof buf), 4);
  EXPECT_STREQ(buf, "seen");
  EXPECT_EQ(::getxattr(path.c_str(), "user.flags", nullptr, 0), 4);
  char names[64] = {};
  ssize_t n = ::listxattr(path.c_str(), names, sizeof names);
  EXPECT_EQ(std::string(names, static_cast<size_t>(std::max<ssize_t>(n, 0))), std::string("user.flags\0", 11));
  errno = 0;
  EXPECT_EQ(::setxattr(path.c_str(), "user.flags", "x", 1, XATTR_CREATE), -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_EQ(::removexattr(path.c_str(), "user.flags"), 0);
  errno = 0;
  EXPECT_EQ(::getxattr(path.c_str(), "user.flags", buf, sizeof buf), -1);
  EXPECT_EQ(errno, ENODATA);
}

TEST(Posix, MtimeAndCtimeFollowChanges) {
  auto dir = MountEnvironment::TestDir();
  ASSERT_EQ(::mkdir((dir + "/new").c_str(), 0700), 0);
  auto before = Stat(dir + "/new");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  WriteAll(dir + "/new/msg", "m", false);
  auto after = Stat(dir + "/new");
  EXPECT_GT(after.st_mtim.tv_sec * 1000000000L + after.st_mtim.tv_nsec,
            before.st_mtim.tv_sec * 1000000000L + before.st_mtim.tv_nsec)
      << "a directory's mtime moves when an entry is added (Dovecot relies on it)";
  auto file_before = Stat(dir + "/new/msg");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  WriteAll(dir + "/new/msg", "changed");
  auto file_after = Stat(dir + "/new/msg");
  EXPECT_GT(file_after.st_mtim.tv_sec * 1000000000L + file_after.st_mtim.tv_nsec,
            file_before.st_mtim.tv_sec * 1000000000L + file_before.st_mtim.tv_nsec);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(::chmod((dir + "/new/msg").c_str(), 0600), 0);
  auto file_chmod = Stat(dir + "/new/msg");
  EXPECT_GT(file_chmod.st_ctim.tv_sec * 1000000000L + file_chmod.st_ctim.tv_nsec,
            file_after.st_ctim.tv_sec * 1000000000L + file_after.st_ctim.tv_nsec);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new MountEnvironment);
  return RUN_ALL_TESTS();
}

namespace {

// Chunks held by a brick that is up (the degraded run stops brick 0).
int64_t ChunksOnALiveBrick() {
  for (int b = 0; b < 3; ++b) {
    int64_t n = MountEnvironment::cluster().BrickChunkCount(b);
    if (n >= 0) return n;
  }
  return -1;
}

}  // namespace

TEST(Posix, VmImageRandomDirectOverwritesStayCorrectAndCompact) {
  auto dir = MountEnvironment::TestDir();
  const std::string path = dir + "/disk.raw";
  constexpr size_t kImage = 32u << 20, kBlock = 4096;
  const int64_t chunks_before = ChunksOnALiveBrick();
  ASSERT_GE(chunks_before, 0);

  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::fallocate(fd, 0, 0, kImage), 0) << std::strerror(errno);
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), kImage);
  void* raw = nullptr;
  ASSERT_EQ(::posix_memalign(&raw, kBlock, 1u << 20), 0);
  std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(raw), &std::free);
  // A freshly allocated image reads as zeros (holes).
  ASSERT_EQ(::pread(fd, buf.get(), 1u << 20, 7u << 20), 1 << 20);
  EXPECT_EQ(std::string(buf.get(), 1u << 20), std::string(1u << 20, '\0'));

  // Installed sequentially, then overwritten at random in 4 KiB blocks with
  // an fsync now and then, as a guest does.
  std::string model = RandomBytes(kImage, 7);
  for (size_t off = 0; off < kImage; off += 1u << 20) {
    std::memcpy(buf.get(), model.data() + off, 1u << 20);
    ASSERT_EQ(::pwrite(fd, buf.get(), 1u << 20, static_cast<off_t>(off)), 1 << 20);
  }
  ASSERT_EQ(::fsync(fd), 0);
  std::mt19937_64 rng(11);
  constexpr int kWrites = 4000;
  for (int i = 0; i < kWrites; ++i) {
    const size_t off = (rng() % (kImage / kBlock)) * kBlock;
    for (size_t j = 0; j < kBlock; ++j) model[off + j] = static_cast<char>(rng());
    std::memcpy(buf.get(), model.data() + off, kBlock);
    ASSERT_EQ(::pwrite(fd, buf.get(), kBlock, static_cast<off_t>(off)), static_cast<ssize_t>(kBlock));
    if (i % 100 == 99) {
      ASSERT_EQ(::fsync(fd), 0);
    }
  }
  ASSERT_EQ(::fsync(fd), 0);
  for (size_t off = 0; off < kImage; off += 1u << 20) {
    ASSERT_EQ(::pread(fd, buf.get(), 1u << 20, static_cast<off_t>(off)), 1 << 20);
    ASSERT_TRUE(std::memcmp(buf.get(), model.data() + off, 1u << 20) == 0) << "image differs in MiB " << (off >> 20);
  }
  ::close(fd);

  // Overwritten chunks are freed and a slot is rewritten whole each time it
  // collects 16 pieces (the mount's default compact_after_pieces): each of
  // the 32 slots took about 4,000 / 32 flushes, and ends up with at most its
  // compacted chunk and 15 pieces, where it would hold ~125 without.
  constexpr int64_t kSettled = 32 * 16;
  int64_t added = -1;
  for (int i = 0; i < 200; ++i) {  // compaction and the deletion drainer run in the background
    added = ChunksOnALiveBrick() - chunks_before;
    if (added <= kSettled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr, "vm image: %d random 4 KiB writes over 32 slots; chunks on a brick: %lld\n", kWrites,
               static_cast<long long>(added));
  EXPECT_LE(added, kSettled);
  EXPECT_EQ(ReadAll(path), model);
}

// Every thread of meta, the bricks and the mount runs SCHED_BATCH (see
// common/cpu_policy.h); a mount told -o cpu_policy=normal runs the kernel's
// default policy, and an unknown policy is refused before mounting.
TEST(Posix, DaemonThreadsAreBatchScheduledUnlessToldOtherwise) {
  auto& cluster = MountEnvironment::cluster();
  auto policies = [](pid_t pid) {
    std::map<int, int> threads_per_policy;
    for (pid_t tid : Threads(pid)) {
      int policy = sched_getscheduler(tid);
      if (policy >= 0) ++threads_per_policy[policy];  // else the thread just ended
    }
    return threads_per_policy;
  };
  std::vector<pid_t> pids = {cluster.meta_pid(), cluster.mount_pid(MountEnvironment::mount())};
  for (int i = 0; i < 3; ++i)
    if (cluster.brick_pid(i) > 0) pids.push_back(cluster.brick_pid(i));
  for (pid_t pid : pids) {
    ASSERT_GT(pid, 0);
    auto seen = policies(pid);
    EXPECT_EQ(seen.size(), 1u) << "process " << pid << " runs threads under several policies";
    EXPECT_GT(seen[SCHED_BATCH], 2) << "process " << pid;
  }
  auto normal = cluster.Mount({"-o", "cpu_policy=normal"});
  ASSERT_FALSE(normal.empty());
  const std::string dir = MountEnvironment::TestDir();
  const std::string file = dir.substr(MountEnvironment::mount().size()) + "/cpu-policy-check";
  WriteAll(normal + file, "x");
  auto seen = policies(cluster.mount_pid(normal));
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_GT(seen[SCHED_OTHER], 2);
  EXPECT_EQ(ReadAll(MountEnvironment::mount() + file), "x");
  cluster.Unmount(normal);
  EXPECT_TRUE(cluster.Mount({"--cpu-policy", "fast"}).empty()) << "an unknown policy must be refused";
}
