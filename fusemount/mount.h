// RunMount: mounts the cluster at a mountpoint and serves FUSE requests
// until unmounted or signalled (SIGTERM/SIGINT/SIGHUP unmount cleanly).
#pragma once

#include <string>
#include <vector>

#include "common/cpu_policy.h"
#include "fusemount/client/options.h"

namespace spool::client {

struct MountCommand {
  MountOptions options;
  std::string mountpoint;
  bool foreground = false;
  bool debug = false;
  int threads = 16;
  // Threads that send requests and take replies; 0: one per four cores. On
  // a small host every extra one adds a thread hand-off to each reply.
  int io_threads = 0;
  std::vector<std::string> fuse_options;  // passed to the kernel as -o
  std::string log_level = "info";
  std::string log_file;  // where a daemonized mount logs (else stderr, lost once detached)
  CpuPolicy cpu_policy = CpuPolicy::kBatch;
};

// Parses `spoolfs` arguments; returns false and prints usage on error.
// Accepts both --meta/--cluster-key and the fstab forms -o meta=,cluster_key=.
bool ParseMountCommand(int argc, char** argv, MountCommand* command);
int RunMount(const MountCommand& command);

}  // namespace spool::client
