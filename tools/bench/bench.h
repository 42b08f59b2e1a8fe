// spool-bench: one binary, one subcommand per workload. Each prints its
// parameters, then its figures, then ratios against its baseline.
#pragma once

#include <algorithm>
#include <vector>

namespace spool::bench {

int RunChunks(int argc, char** argv);   // brick chunk store vs one file per message
int RunMeta(int argc, char** argv);     // metadata service mutations and readdir
int RunMaildir(int argc, char** argv);  // maildir workload on any directory
int RunRebuild(int argc, char** argv);  // rebuild of a wiped brick vs rsync
int RunRebalance(int argc, char** argv);  // add two bricks, drain one, vs rsync
int RunVmImage(int argc, char** argv);   // random 4 KiB direct I/O on a VM image

// The p-quantile (0..1) of sorted values; 0 for none.
inline double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())))];
}

}  // namespace spool::bench
