// The cluster and mount shared by the tests of one mount-test binary.
// SPOOL_TEST_DEGRADED=1 stops one of the three bricks before the tests start,
// so the same tests prove the mount works degraded.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tests/support/cluster.h"

namespace spool::testing {

class MountEnvironment : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

  static LocalCluster& cluster() { return *cluster_; }
  static const std::string& mount() { return mount_; }
  // A fresh directory on the mount for one test.
  static std::string TestDir();

 private:
  static inline LocalCluster* cluster_ = nullptr;
  static inline std::string mount_;
};

// Whole-file helpers on real paths (errors fail the calling test).
std::string ReadAll(const std::string& path);
void WriteAll(const std::string& path, const std::string& data, bool fsync_it = true);
std::string RandomBytes(size_t n, uint64_t seed);
// `count` messages of 1 MiB, big0..big<count-1>, written and fsynced into
// dir/new (which must exist); returns name -> bytes.
std::map<std::string, std::string> WriteBigMessages(const std::string& dir, size_t count);

}  // namespace spool::testing
