#include <cstdio>

#include "tools/bench/bench.h"

namespace spool::bench {

int RunChunks(int, char**) {
  std::fprintf(stderr, "spool-bench chunks: not implemented yet\n");
  return 2;
}

}  // namespace spool::bench
