// CPU priority of background threads.
//
// A brick's repair, moves and scrub (and the bulk reads peers make for them)
// must yield to what clients wait for. A byte-rate throttle alone does not do
// that on a busy machine: at equal priority the kernel shares the CPU evenly
// between a rebuild and the deliveries. At a lower priority the background
// work takes the CPU the foreground leaves, and the throttle bounds the disk.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

namespace spool {

// Nice value of background threads (the foreground runs at 0): at 10, a
// busy background thread gets about a tenth of a CPU that a foreground
// thread also wants.
inline constexpr int kBackgroundNice = 10;

// Lowers the calling thread's CPU priority (Linux: nice is per thread).
// Threads it starts inherit it. Best effort: failing leaves it as it was.
inline void RunThisThreadInBackground() {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kBackgroundNice);
}

}  // namespace spool
