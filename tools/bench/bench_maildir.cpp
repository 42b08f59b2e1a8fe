#include <cstdio>

#include "tools/bench/bench.h"

namespace spool::bench {

int RunMaildir(int, char**) {
  std::fprintf(stderr, "spool-bench maildir: not implemented yet\n");
  return 2;
}

}  // namespace spool::bench
