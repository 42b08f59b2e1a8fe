#include <cstdio>
#include <cstring>
#include <string>

#include "tools/bench/bench.h"

int main(int argc, char** argv) {
  struct Sub {
    const char* name;
    int (*run)(int, char**);
    const char* help;
  } subs[] = {
      {"chunks", spool::bench::RunChunks, "brickd puts/gets vs one fsynced file per message"},
      {"meta", spool::bench::RunMeta, "metadata mutations/s and large readdir"},
      {"maildir", spool::bench::RunMaildir, "maildir deliver/scan/read/flag/expunge on --root DIR"},
      {"rebuild", spool::bench::RunRebuild, "rebuild a wiped brick of a 3-brick cluster vs rsync"},
      {"rebalance", spool::bench::RunRebalance, "add two bricks, drain one, under load, vs rsync"},
      {"vmimage", spool::bench::RunVmImage, "random 4 KiB direct writes/reads on a VM image on --root DIR"},
  };
  if (argc >= 2) {
    for (auto& s : subs)
      if (std::strcmp(argv[1], s.name) == 0) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "usage: spool-bench <workload> [options]\n\nworkloads:\n");
  for (auto& s : subs) std::fprintf(stderr, "  %-10s %s\n", s.name, s.help);
  return 2;
}
