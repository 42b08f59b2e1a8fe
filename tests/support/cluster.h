// LocalCluster: a real spoolfs cluster on 127.0.0.1 for integration tests:
// a spool-meta process, N spool-brickd processes and any number of FUSE
// mounts (spoolfs in the foreground), each a child process that a test can
// SIGKILL and restart.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "spool.pb.h"
#include "tests/support/process.h"

namespace spool::testing {

struct ClusterConfig {
  int bricks = 3;
  int replicas = 3;
  std::vector<std::string> meta_args;   // extra flags for spool-meta
  std::vector<std::string> brick_args;  // extra flags for every brick
  std::vector<std::string> mount_args;  // extra flags for every mount
};

class LocalCluster {
 public:
  explicit LocalCluster(ClusterConfig config = {});
  ~LocalCluster();

  // Starts meta and the bricks; returns once meta reports every brick up.
  bool Start();
  // Mounts the cluster at a new directory; returns its path ("" on failure).
  std::string Mount(const std::vector<std::string>& extra_args = {});
  void Unmount(const std::string& mountpoint);
  void KillMount(const std::string& mountpoint);  // SIGKILL, then clears the dead mount

  void KillBrick(int index, int signal = 9);
  bool StartBrick(int index);
  void KillMeta(int signal = 9);
  bool StartMeta();
  // Waits until meta reports `count` bricks up.
  bool WaitBricksUp(int count, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  bool Status(proto::StatusReply* reply);

  // Puts brick `index`'s data directory on a tmpfs of `bytes` (call before
  // Start); unmounted when the cluster is destroyed, after its bricks stop.
  bool PutBrickOnTmpfs(int index, uint64_t bytes);
  // Capacity, usage and approximate chunk count, from the brick itself.
  bool BrickInfo(int index, proto::BrickInfoReply* reply);
  // Exact number of chunks brick `index` holds (lists every placement
  // group); -1 if the brick cannot be asked.
  int64_t BrickChunkCount(int index);

  // Starts one more brick (new data directory and port, same flags as the
  // others plus `extra_args`); returns its index, or -1 if it did not start.
  // With `tmpfs_bytes` its data directory is a tmpfs of that size.
  int AddBrick(const std::vector<std::string>& extra_args = {}, uint64_t tmpfs_bytes = 0);
  int brick_count() const { return static_cast<int>(bricks_.size()); }
  // The id meta gave brick `index` (0 if it is not registered).
  uint32_t BrickId(int index);
  // Runs spoolctl against this cluster; returns its exit status (-1 if it
  // could not run) with stdout and stderr in *output.
  int Ctl(const std::vector<std::string>& args, std::string* output = nullptr);

  const std::string& meta_address() const { return meta_address_; }
  std::string brick_address(int index) const { return "127.0.0.1:" + std::to_string(brick_ports_[index]); }
  const std::string& key_path() const { return key_path_; }
  std::string dir() const { return dir_.path(); }
  std::string brick_dir(int index) const { return dir_.Sub("brick" + std::to_string(index)); }
  pid_t brick_pid(int index) const { return bricks_[index]->pid(); }  // -1 if not running
  pid_t meta_pid() const { return meta_.pid(); }
  pid_t mount_pid(const std::string& mountpoint) const;  // -1 if no such mount runs

 private:
  struct MountProcess {
    std::string path;
    std::unique_ptr<ChildProcess> process;
  };

  // If the running test failed, prints the tail of every daemon's log.
  void ReportOnFailure();

  ClusterConfig config_;
  TempDir dir_;
  std::string key_path_;
  std::string meta_address_;
  int meta_port_ = 0;
  ChildProcess meta_;
  std::vector<std::unique_ptr<ChildProcess>> bricks_;
  std::vector<int> brick_ports_;
  std::vector<std::vector<std::string>> brick_extra_args_;  // per brick, from AddBrick
  std::vector<std::string> tmpfs_mounts_;
  std::vector<MountProcess> mounts_;
  int next_mount_ = 0;
};

// True if `path` is a mountpoint of a FUSE filesystem right now.
bool IsFuseMounted(const std::string& path);

}  // namespace spool::testing
