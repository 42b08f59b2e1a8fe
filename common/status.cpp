#include "common/status.h"

#include <cstring>

namespace spool {

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s = std::strerror(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

}  // namespace spool
