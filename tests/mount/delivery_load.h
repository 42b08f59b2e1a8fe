// DeliveryLoad: maildir deliverers on a mount that run until stopped and
// record every acknowledged message, for the failure and repair tests.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/mount/mount_env.h"

namespace spool::testing {

// Deliverers that run until stopped, recording every acknowledged message
// (fsync + rename returned success) and the slowest delivery.
class DeliveryLoad {
 public:
  DeliveryLoad(std::string root, int threads) : root_(std::move(root)) {
    for (const char* sub : {"/tmp", "/new"}) ::mkdir((root_ + sub).c_str(), 0700);
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  ~DeliveryLoad() { Stop(); }

  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::map<std::string, std::string> acknowledged() {
    std::lock_guard lock(mu_);
    return acknowledged_;
  }
  int errors() const { return errors_; }
  double slowest_s() const { return slowest_ms_ / 1000.0; }
  std::string first_error() {
    std::lock_guard lock(mu_);
    return first_error_;
  }

 private:
  void Fail(const std::string& what) {
    ++errors_;
    std::lock_guard lock(mu_);
    if (first_error_.empty()) first_error_ = what + ": " + std::strerror(errno);
  }
  void Run(int t) {
    std::mt19937_64 rng(t);
    for (int i = 0; !stop_; ++i) {
      auto start = std::chrono::steady_clock::now();
      // Appended, not `"m" + std::string`: a false -Wrestrict of GCC 12 at -O3.
      std::string name = "m";
      name += std::to_string(t) + ".";
      name += std::to_string(i);
      std::string body = RandomBytes(500 + rng() % 12000, rng());
      std::string tmp = root_ + "/tmp/" + name;
      int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      if (fd < 0) {
        Fail("create " + name);
        continue;
      }
      if (::write(fd, body.data(), body.size()) != static_cast<ssize_t>(body.size()) || ::fsync(fd) != 0) {
        Fail("write/fsync " + name);
        ::close(fd);
        continue;
      }
      if (::close(fd) != 0 || ::rename(tmp.c_str(), (root_ + "/new/" + name).c_str()) != 0) {
        Fail("close/rename " + name);
        continue;
      }
      int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)
                       .count();
      int64_t prev = slowest_ms_;
      while (ms > prev && !slowest_ms_.compare_exchange_weak(prev, ms)) {
      }
      std::lock_guard lock(mu_);
      acknowledged_[name] = std::move(body);
    }
  }

  std::string root_;
  std::atomic<bool> stop_{false};
  std::atomic<int> errors_{0};
  std::atomic<int64_t> slowest_ms_{0};
  std::mutex mu_;  // guards acknowledged_, first_error_
  std::map<std::string, std::string> acknowledged_;
  std::string first_error_;
  std::vector<std::thread> threads_;
};

inline void ExpectAllPresent(const std::string& root, const std::map<std::string, std::string>& acknowledged) {
  size_t bad = 0;
  for (const auto& [name, body] : acknowledged) {
    if (ReadAll(root + "/new/" + name) != body) {
      if (++bad < 5) ADD_FAILURE() << "acknowledged message lost or damaged: " << name;
    }
  }
  EXPECT_EQ(bad, 0u) << "of " << acknowledged.size() << " acknowledged messages";
}

inline std::string MakeRoot(const std::string& mount, const std::string& name) {
  std::string root = mount + "/" + name;
  EXPECT_EQ(::mkdir(root.c_str(), 0755), 0);
  return root;
}

}  // namespace spool::testing
