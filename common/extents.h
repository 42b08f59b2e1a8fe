// A file's extent list: proto::Extent records sorted by file_offset and
// never overlapping. Meta keeps one list per 1 MiB slot; a mount keeps the
// whole file's list of what it has open, and updates it with its own commits
// the way meta does, instead of asking meta for all of it again.
#pragma once

#include <cstdint>
#include <vector>

#include "spool.pb.h"

namespace spool {

// Lays `fresh` over `extents`: the parts of older extents that it covers are
// cut away (an extent split in two keeps both pieces on the same chunk).
// Touches only the extents around it (binary search).
void OverlayExtent(std::vector<proto::Extent>& extents, const proto::Extent& fresh);

// The extents that overlap [offset, offset + length), in order.
std::vector<proto::Extent> ExtentsIn(const std::vector<proto::Extent>& extents, uint64_t offset, uint64_t length);

}  // namespace spool
