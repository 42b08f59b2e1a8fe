#include "common/cpu_policy.h"

#include <sched.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace spool {

Result<CpuPolicy> ParseCpuPolicy(std::string_view name) {
  if (name == "batch") return CpuPolicy::kBatch;
  if (name == "normal") return CpuPolicy::kNormal;
  return Status::Error(EINVAL, "cpu policy '" + std::string(name) + "' is neither batch nor normal");
}

Status ApplyCpuPolicy(CpuPolicy policy) {
  sched_param param{};
  param.sched_priority = 0;
  // Linux: pid 0 is the calling thread; new threads inherit its policy.
  if (::sched_setscheduler(0, policy == CpuPolicy::kBatch ? SCHED_BATCH : SCHED_OTHER, &param) != 0) {
    const int error = errno;
    return Status::Error(error, std::string("set cpu policy ") + (policy == CpuPolicy::kBatch ? "batch" : "normal") + ": " + std::strerror(error));
  }
  return Status::Ok();
}

}  // namespace spool
