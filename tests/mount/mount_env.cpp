#include "tests/mount/mount_env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

namespace spool::testing {

void MountEnvironment::SetUp() {
  ClusterConfig config;
  cluster_ = new LocalCluster(config);
  ASSERT_TRUE(cluster_->Start()) << "cluster did not start; logs in " << cluster_->dir();
  const char* degraded = std::getenv("SPOOL_TEST_DEGRADED");
  if (degraded && std::string(degraded) == "1") {
    cluster_->KillBrick(0);
    std::fprintf(stderr, "mount tests: brick 0 stopped, running degraded\n");
  }
  mount_ = cluster_->Mount();
  ASSERT_FALSE(mount_.empty()) << "mount failed; logs in " << cluster_->dir();
}

void MountEnvironment::TearDown() {
  if (cluster_) {
    cluster_->Unmount(mount_);
    delete cluster_;
    cluster_ = nullptr;
  }
}

std::string MountEnvironment::TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string path = mount_ + "/" + info->test_suite_name() + "." + info->name();
  EXPECT_EQ(::mkdir(path.c_str(), 0755), 0) << path << ": " << std::strerror(errno);
  return path;
}

std::string ReadAll(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
  if (fd < 0) return "";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    EXPECT_GE(n, 0) << path << ": " << std::strerror(errno);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void WriteAll(const std::string& path, const std::string& data, bool fsync_it) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    ASSERT_GT(n, 0) << path << ": " << std::strerror(errno);
    done += static_cast<size_t>(n);
  }
  if (fsync_it) {
    ASSERT_EQ(::fsync(fd), 0) << path << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::close(fd), 0) << path << ": " << std::strerror(errno);
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

std::map<std::string, std::string> WriteBigMessages(const std::string& dir, size_t count) {
  std::map<std::string, std::string> messages;
  for (size_t i = 0; i < count; ++i) {
    const std::string name = "big" + std::to_string(i);
    messages[name] = RandomBytes(1 << 20, i);
    WriteAll(dir + "/new/" + name, messages[name]);
  }
  return messages;
}

}  // namespace spool::testing
