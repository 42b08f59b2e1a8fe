// spool-bench: one binary, one subcommand per workload. Each prints its
// parameters, then its figures, then ratios against its baseline.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
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

// User+system CPU seconds of `pid` so far, from /proc/PID/stat (fields 14 and
// 15, counted after the ')' that ends the command name, which may hold
// spaces); -1 if the process is gone.
inline double CpuSeconds(int pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return -1;
  char buf[4096];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* after_comm = std::strrchr(buf, ')');
  if (!after_comm) return -1;
  std::istringstream fields(after_comm + 2);  // field 3 (state) onwards
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace spool::bench
