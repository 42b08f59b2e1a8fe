#include "meta/placement.h"

#include <algorithm>
#include <cmath>

#include "common/placement.h"

namespace spool::meta {

std::vector<std::vector<uint32_t>> ComputePlacement(const std::vector<PlacementBrick>& bricks, uint32_t pg_count,
                                                    uint32_t replicas) {
  std::vector<std::vector<uint32_t>> pgs(pg_count);
  if (bricks.empty()) return pgs;
  struct Scored {
    double score;
    size_t index;
  };
  std::vector<Scored> scored(bricks.size());
  std::vector<const std::string*> used;
  for (uint32_t pg = 0; pg < pg_count; ++pg) {
    for (size_t i = 0; i < bricks.size(); ++i) {
      const uint64_t h = Mix64(Mix64(pg) ^ (uint64_t{bricks[i].id} * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull));
      // 53 random bits, mapped into the open interval (0, 1).
      const double u = (static_cast<double>(h >> 11) + 0.5) / 9007199254740992.0;
      const double w = bricks[i].weight > 0 ? bricks[i].weight : 1.0;
      scored[i] = Scored{-w / std::log(u), i};
    }
    std::sort(scored.begin(), scored.end(), [&](const Scored& a, const Scored& b) {
      if (a.score != b.score) return a.score > b.score;
      return bricks[a.index].id < bricks[b.index].id;
    });
    used.clear();
    for (const auto& s : scored) {
      if (pgs[pg].size() == replicas) break;
      const auto& b = bricks[s.index];
      if (std::any_of(used.begin(), used.end(), [&](const std::string* d) { return *d == b.failure_domain; }))
        continue;
      used.push_back(&b.failure_domain);
      pgs[pg].push_back(b.id);
    }
  }
  return pgs;
}

}  // namespace spool::meta
