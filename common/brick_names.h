// Names of a brick's liveness and admin states, as logs, errors and
// `spoolctl status` (text and JSON) show them.
#pragma once

#include "spool.pb.h"

namespace spool {

inline const char* AdminName(proto::BrickAdmin a) {
  switch (a) {
    case proto::ADMIN_NORMAL: return "normal";
    case proto::ADMIN_DRAINING: return "draining";
    case proto::ADMIN_MAINTENANCE: return "maintenance";
    case proto::ADMIN_PENDING: return "pending";
    case proto::ADMIN_REMOVED: return "removed";
    default: return "unknown";
  }
}

}  // namespace spool
