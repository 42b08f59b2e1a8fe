// How the kernel schedules a daemon's threads.
//
// A request passes along a chain of threads in several processes
// (application -> mount -> brick or meta -> mount -> application). Under
// the kernel's default policy the thread a wake-up reaches preempts the one
// that woke it, although that one still has requests queued and would wait
// a moment later: a busy box then spends its time switching. Measured with
// everything on one 2-core box, a brick serving 4 KiB reads was preempted
// twice for each read it blocked once. SCHED_BATCH gives up wake-up
// preemption and nothing else (CPU shares and nice values stay as they
// are): each thread runs until it waits, and hands on several requests at
// once. Its cost is latency when the CPU is contended: a woken thread
// then waits for the running one's time slice (about a millisecond).
#pragma once

#include <string_view>

#include "common/status.h"

namespace spool {

enum class CpuPolicy { kBatch, kNormal };

// "batch" or "normal".
Result<CpuPolicy> ParseCpuPolicy(std::string_view name);

// Applies to the calling thread and to the threads it starts afterwards.
// REQUIRES: called before the process starts its other threads.
Status ApplyCpuPolicy(CpuPolicy policy);

// The help text of a daemon's --cpu-policy option.
inline constexpr const char* kCpuPolicyHelp =
    "batch: threads run until they wait, fewer switches on a busy machine (the default); normal: the "
    "kernel's default policy, a woken thread takes the CPU at once";

}  // namespace spool
