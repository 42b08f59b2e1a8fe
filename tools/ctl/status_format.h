// Renders meta's replies (status, heal) for people (text) or programs (JSON).
#pragma once

#include <string>

#include "spool.pb.h"

namespace spool::ctl {

std::string StatusText(const proto::StatusReply& status);
std::string StatusJson(const proto::StatusReply& status);
std::string HealText(const proto::HealReply& heal);
std::string HealJson(const proto::HealReply& heal);
// "[#########.........]  45%": `width` cells.
std::string ProgressBar(double fraction, int width);
// "1h02m", "3m05s", "42s"; "unknown" for a negative value.
std::string Duration(int64_t ms);

}  // namespace spool::ctl
