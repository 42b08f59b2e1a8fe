// Renders a StatusReply for people (text) or programs (JSON).
#pragma once

#include <string>

#include "spool.pb.h"

namespace spool::ctl {

std::string StatusText(const proto::StatusReply& status);
std::string StatusJson(const proto::StatusReply& status);

}  // namespace spool::ctl
