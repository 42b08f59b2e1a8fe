#include <cstdio>

#include "tools/bench/bench.h"

namespace spool::bench {

int RunMeta(int, char**) {
  std::fprintf(stderr, "spool-bench meta: not implemented yet\n");
  return 2;
}

}  // namespace spool::bench
