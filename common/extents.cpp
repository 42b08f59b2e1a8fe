#include "common/extents.h"

#include <algorithm>
#include <iterator>

namespace spool {
namespace {

uint64_t EndOf(const proto::Extent& e) { return e.file_offset() + e.length(); }

// The first extent that ends after `offset` (extents never overlap, so ends
// are sorted too).
std::vector<proto::Extent>::const_iterator FirstEndingAfter(const std::vector<proto::Extent>& extents,
                                                            uint64_t offset) {
  return std::partition_point(extents.begin(), extents.end(),
                              [offset](const proto::Extent& e) { return EndOf(e) <= offset; });
}

}  // namespace

void OverlayExtent(std::vector<proto::Extent>& extents, const proto::Extent& fresh) {
  const uint64_t start = fresh.file_offset(), end = EndOf(fresh);
  auto first = FirstEndingAfter(extents, start);
  auto last = first;
  while (last != extents.end() && last->file_offset() < end) ++last;
  // [first, last) overlap `fresh`: what sticks out on either side stays.
  std::vector<proto::Extent> middle;
  middle.reserve(3);
  if (first != last && first->file_offset() < start) {
    proto::Extent left = *first;
    left.set_length(static_cast<uint32_t>(start - first->file_offset()));
    middle.push_back(std::move(left));
  }
  middle.push_back(fresh);
  if (first != last && EndOf(*std::prev(last)) > end) {
    const proto::Extent& e = *std::prev(last);
    proto::Extent right = e;
    const uint64_t cut = end - e.file_offset();
    right.set_file_offset(end);
    right.set_chunk_offset(static_cast<uint32_t>(e.chunk_offset() + cut));
    right.set_length(static_cast<uint32_t>(EndOf(e) - end));
    middle.push_back(std::move(right));
  }
  const auto at = first - extents.cbegin();
  extents.erase(first, last);
  extents.insert(extents.begin() + at, std::make_move_iterator(middle.begin()), std::make_move_iterator(middle.end()));
}

std::vector<proto::Extent> ExtentMap::In(uint64_t offset, uint64_t length) const {
  std::vector<proto::Extent> in;
  if (length == 0) return in;
  const uint64_t end = offset + length;
  for (auto it = slots_.lower_bound(offset / kSlotBytes); it != slots_.end() && it->first * kSlotBytes < end; ++it) {
    const auto& extents = it->second;
    for (auto e = FirstEndingAfter(extents, offset); e != extents.end() && e->file_offset() < end; ++e)
      in.push_back(*e);
  }
  return in;
}

}  // namespace spool
