// A file's extent list: proto::Extent records sorted by file_offset and
// never overlapping. Meta keeps one list per 1 MiB slot; a mount keeps the
// lists of the files it has open (ExtentMap), and updates them with its own
// commits the way meta does, instead of asking meta for all of it again.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "spool.pb.h"

namespace spool {

// Size of the file range whose extents meta keeps under one key; no chunk,
// and so no extent, ever crosses a slot boundary.
constexpr uint64_t kSlotBytes = 1ull << 20;

// Lays `fresh` over `extents`: the parts of older extents that it covers are
// cut away (an extent split in two keeps both pieces on the same chunk).
// Touches only the extents around it (binary search).
void OverlayExtent(std::vector<proto::Extent>& extents, const proto::Extent& fresh);

// A whole file's extents, one list per slot, so that laying a commit over
// them costs what its slot holds, not what the file holds (a VM image of a
// few GiB written at random has hundreds of thousands of extents).
class ExtentMap {
 public:
  // Replaces everything with `extents` (sorted, as meta sends them).
  template <typename Extents>
  void Assign(const Extents& extents) {
    slots_.clear();
    for (const auto& e : extents) slots_[e.file_offset() / kSlotBytes].push_back(e);
  }
  void Overlay(const proto::Extent& fresh) { OverlayExtent(slots_[fresh.file_offset() / kSlotBytes], fresh); }
  // The extents that overlap [offset, offset + length), in order.
  std::vector<proto::Extent> In(uint64_t offset, uint64_t length) const;
  // How many extents slot `slot` holds.
  size_t CountInSlot(uint64_t slot) const {
    auto it = slots_.find(slot);
    return it == slots_.end() ? 0 : it->second.size();
  }

 private:
  std::map<uint64_t, std::vector<proto::Extent>> slots_;  // slot -> its extents
};

}  // namespace spool
