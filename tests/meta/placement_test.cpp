// Placement: even spread, failure domains respected, minimal movement when
// one brick of N is added or removed, deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "meta/placement.h"

namespace spool::meta {
namespace {

std::vector<PlacementBrick> Bricks(int n, int domains, double weight = 1e12) {
  std::vector<PlacementBrick> b;
  for (int i = 0; i < n; ++i)
    b.push_back(PlacementBrick{static_cast<uint32_t>(i + 1), "host" + std::to_string(i % domains), weight});
  return b;
}

// Fraction of PG slots whose brick is new.
double Moved(const std::vector<std::vector<uint32_t>>& a, const std::vector<std::vector<uint32_t>>& b) {
  size_t moved = 0, total = 0;
  for (size_t pg = 0; pg < a.size(); ++pg) {
    std::set<uint32_t> before(a[pg].begin(), a[pg].end());
    for (uint32_t id : b[pg]) moved += !before.count(id);
    total += b[pg].size();
  }
  return static_cast<double>(moved) / static_cast<double>(total);
}

TEST(PlacementTest, SpreadWithinTenPercentOfMean) {
  for (int n : {6, 12, 24}) {
    const uint32_t pgs = 64 * static_cast<uint32_t>(n);  // "64 per brick", as in the design
    auto map = ComputePlacement(Bricks(n, n), pgs, 3);
    std::map<uint32_t, int> load;
    for (const auto& pg : map) {
      ASSERT_EQ(pg.size(), 3u);
      for (uint32_t id : pg) ++load[id];
    }
    const double mean = 3.0 * pgs / n;
    for (auto& [id, count] : load) {
      EXPECT_NEAR(count, mean, mean * 0.10) << "brick " << id << " of " << n;
    }
  }
}

TEST(PlacementTest, NeverTwoCopiesInOneFailureDomain) {
  auto bricks = Bricks(12, 4);  // 3 bricks per host
  auto map = ComputePlacement(bricks, 1024, 3);
  for (const auto& pg : map) {
    ASSERT_EQ(pg.size(), 3u);
    std::set<std::string> domains;
    for (uint32_t id : pg) domains.insert(bricks[id - 1].failure_domain);
    EXPECT_EQ(domains.size(), 3u);
  }
  // Fewer domains than replicas: fewer copies, still one per domain.
  auto two = ComputePlacement(Bricks(6, 2), 256, 3);
  for (const auto& pg : two) EXPECT_EQ(pg.size(), 2u);
}

TEST(PlacementTest, AddingOrRemovingOneBrickMovesAboutOneNth) {
  const int n = 12;
  const uint32_t pgs = 2048;
  auto bricks = Bricks(n, n);
  auto base = ComputePlacement(bricks, pgs, 3);
  auto added_bricks = bricks;
  added_bricks.push_back(PlacementBrick{100, "host-new", 1e12});
  const double added = Moved(base, ComputePlacement(added_bricks, pgs, 3));
  EXPECT_GT(added, 0.5 / (n + 1));
  EXPECT_LT(added, 1.5 / (n + 1));
  auto removed_bricks = bricks;
  removed_bricks.erase(removed_bricks.begin() + 5);
  const double removed = Moved(base, ComputePlacement(removed_bricks, pgs, 3));
  std::printf("moved: add 1 to %d bricks %.3f (1/N=%.3f), remove 1 of %d %.3f (1/N=%.3f)\n", n, added,
              1.0 / (n + 1), n, removed, 1.0 / n);
  EXPECT_GT(removed, 0.5 / n);
  EXPECT_LT(removed, 1.5 / n);
}

TEST(PlacementTest, WeightsAndDeterminism) {
  auto bricks = Bricks(8, 8);
  bricks[0].weight *= 2;
  auto map = ComputePlacement(bricks, 4096, 1);
  std::map<uint32_t, int> load;
  for (const auto& pg : map) ++load[pg[0]];
  const double unit = 4096.0 / 9;  // brick 1 counts twice
  EXPECT_NEAR(load[1], 2 * unit, 2 * unit * 0.15);
  EXPECT_EQ(map, ComputePlacement(bricks, 4096, 1));
  EXPECT_TRUE(ComputePlacement({}, 16, 3)[0].empty());
}

}  // namespace
// Capacity weights: a brick twice the size holds twice the slots, within 10%.
TEST(PlacementTest, SlotsInProportionToWeight) {
  auto bricks = Bricks(5, 5);
  bricks[3].weight = bricks[4].weight = 2e12;
  auto map = ComputePlacement(bricks, 256, 3);
  std::map<uint32_t, int> slots;
  for (const auto& pg : map)
    for (uint32_t id : pg) ++slots[id];
  for (const auto& b : bricks) {
    const double fair = 256.0 * 3 * b.weight / 7e12;
    EXPECT_NEAR(slots[b.id], fair, 0.10 * fair) << "brick " << b.id;
  }
}

// A nearly full brick keeps the groups it holds and takes no other, so
// adding bricks elsewhere only takes groups away from it.
TEST(PlacementTest, NearlyFullBrickTakesNoNewGroups) {
  auto bricks = Bricks(4, 4);
  auto before = ComputePlacement(bricks, 256, 3);
  bricks[0].no_new_groups = true;
  bricks.push_back(PlacementBrick{5, "host4", 1e12});
  bricks[0].weight = 4e12;  // it would win many more groups if it could
  auto after = ComputePlacement(bricks, 256, 3, &before);
  for (size_t pg = 0; pg < after.size(); ++pg) {
    const bool now = std::count(after[pg].begin(), after[pg].end(), 1u) > 0;
    const bool was = std::count(before[pg].begin(), before[pg].end(), 1u) > 0;
    EXPECT_TRUE(!now || was) << "pg " << pg << " is new on the full brick";
    EXPECT_EQ(after[pg].size(), 3u);
  }
}

}  // namespace spool::meta
