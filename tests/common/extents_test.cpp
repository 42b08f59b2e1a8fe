// OverlayExtent against a model: every byte of a file as (chunk, offset in
// chunk), overwritten by random extents as writes and compactions would.
#include "common/extents.h"

#include <gtest/gtest.h>

#include <random>
#include <utility>

namespace spool {
namespace {

constexpr uint64_t kFileBytes = 4096;
using Byte = std::pair<uint64_t, uint64_t>;  // chunk id, offset in the chunk; (0, 0) = hole

std::vector<Byte> Bytes(const std::vector<proto::Extent>& extents) {
  std::vector<Byte> bytes(kFileBytes, Byte{0, 0});
  for (const auto& e : extents)
    for (uint64_t i = 0; i < e.length(); ++i) bytes[e.file_offset() + i] = {e.chunk_id(), e.chunk_offset() + i};
  return bytes;
}

proto::Extent Extent(uint64_t file_offset, uint32_t length, uint64_t chunk_id, uint32_t chunk_offset) {
  proto::Extent e;
  e.set_file_offset(file_offset);
  e.set_length(length);
  e.set_chunk_id(chunk_id);
  e.set_chunk_offset(chunk_offset);
  e.set_chunk_length(chunk_offset + length);
  return e;
}

TEST(Extents, OverlayMatchesAByteModelAndKeepsTheListSortedAndDisjoint) {
  std::mt19937_64 rng(7);
  std::vector<proto::Extent> extents;
  std::vector<Byte> model(kFileBytes, Byte{0, 0});
  for (uint64_t chunk = 1; chunk <= 3000; ++chunk) {
    const uint64_t offset = rng() % kFileBytes;
    const auto length = static_cast<uint32_t>(1 + rng() % std::min<uint64_t>(kFileBytes - offset, chunk % 10 == 0 ? 2000 : 64));
    const auto chunk_offset = static_cast<uint32_t>(rng() % 100);
    OverlayExtent(extents, Extent(offset, length, chunk, chunk_offset));
    for (uint32_t i = 0; i < length; ++i) model[offset + i] = {chunk, chunk_offset + i};
    ASSERT_TRUE(Bytes(extents) == model) << "after chunk " << chunk;
    for (size_t i = 1; i < extents.size(); ++i)
      ASSERT_LE(extents[i - 1].file_offset() + extents[i - 1].length(), extents[i].file_offset()) << "at " << i;
  }
}

TEST(Extents, ExtentMapReturnsExactlyTheOverlappingOnesAcrossSlots) {
  constexpr uint64_t S = kSlotBytes;
  const std::vector<proto::Extent> extents = {Extent(0, 10, 1, 0), Extent(10, 5, 2, 0), Extent(20, 10, 3, 0),
                                              Extent(S - 4, 4, 4, 0), Extent(S, 8, 5, 0), Extent(3 * S + 1, 1, 6, 0)};
  ExtentMap map;
  map.Assign(extents);
  auto ids = [&](uint64_t offset, uint64_t length) {
    std::vector<uint64_t> out;
    for (const auto& e : map.In(offset, length)) out.push_back(e.chunk_id());
    return out;
  };
  EXPECT_EQ(ids(0, 1), (std::vector<uint64_t>{1}));
  EXPECT_EQ(ids(9, 2), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(ids(15, 5), (std::vector<uint64_t>{}));  // the hole between 2 and 3
  EXPECT_EQ(ids(14, 7), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(ids(S - 1, 2), (std::vector<uint64_t>{4, 5}));  // across a slot boundary
  EXPECT_EQ(ids(S + 8, 2 * S - 8), (std::vector<uint64_t>{}));  // an empty slot between
  EXPECT_EQ(ids(0, 4 * S), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(ids(3 * S + 1, 1), (std::vector<uint64_t>{6}));
  EXPECT_EQ(ids(3 * S + 2, 100), (std::vector<uint64_t>{}));
  EXPECT_EQ(ids(5, 0), (std::vector<uint64_t>{}));

  // An overlay touches its own slot only.
  map.Overlay(Extent(S + 2, 2, 7, 0));
  EXPECT_EQ(ids(S - 4, 12), (std::vector<uint64_t>{4, 5, 7, 5}));
  EXPECT_EQ(ids(0, 30), (std::vector<uint64_t>{1, 2, 3}));
}

}  // namespace
}  // namespace spool
