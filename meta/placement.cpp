#include "meta/placement.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "common/placement.h"

namespace spool::meta {

std::vector<std::vector<uint32_t>> ComputePlacement(const std::vector<PlacementBrick>& bricks, uint32_t pg_count,
                                                    uint32_t replicas,
                                                    const std::vector<std::vector<uint32_t>>* current) {
  std::vector<std::vector<uint32_t>> pgs(pg_count);
  if (bricks.empty()) return pgs;
  struct Scored {
    double score;
    size_t index;
  };
  std::vector<Scored> scored(bricks.size());
  std::vector<const std::string*> used;
  // Bounded loads: a brick takes at most ~1% more than its weighted share of
  // the slots, so that the spread stays even with few PGs per brick (pure
  // rendezvous hashing is only even on average). PGs are filled in a fixed
  // order, so the result is still a pure function of the brick set.
  double total_weight = 0;
  for (const auto& b : bricks) total_weight += b.weight > 0 ? b.weight : 1.0;
  const double slots = static_cast<double>(pg_count) * std::min<size_t>(replicas, bricks.size());
  std::vector<uint32_t> load(bricks.size(), 0), cap(bricks.size());
  for (size_t i = 0; i < bricks.size(); ++i) {
    const double share = slots * (bricks[i].weight > 0 ? bricks[i].weight : 1.0) / total_weight;
    // No "+1" slack: with few PGs per brick the caps of the others are what
    // keeps a brick from falling far below its share (issue 11: every brick
    // within 10% of its fair share).
    cap[i] = std::max<uint32_t>(1, static_cast<uint32_t>(std::ceil(share * 1.01)));
  }
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
    // First pass respects the caps; the second fills what the caps left
    // empty (a cluster whose domains cannot be balanced).
    for (bool capped : {true, false}) {
      for (const auto& s : scored) {
        if (pgs[pg].size() == replicas) break;
        const auto& b = bricks[s.index];
        if (capped && load[s.index] >= cap[s.index]) continue;
        if (b.no_new_groups) {
          const bool holds = current && pg < current->size() &&
                             std::find((*current)[pg].begin(), (*current)[pg].end(), b.id) != (*current)[pg].end();
          if (!holds) continue;
        }
        if (std::any_of(used.begin(), used.end(), [&](const std::string* d) { return *d == b.failure_domain; }))
          continue;
        used.push_back(&b.failure_domain);
        pgs[pg].push_back(b.id);
        ++load[s.index];
      }
    }
  }
  // Floors: the caps bound every brick from above, but a brick the hashes
  // disfavour (a heavy brick among light ones, few PGs per brick) can still
  // end well below its share. Give such a brick slots from bricks above their
  // share, in PG order, never two copies in one failure domain: still a pure
  // function of the brick set, and it moves only those few slots.
  std::vector<double> share(bricks.size());
  for (size_t i = 0; i < bricks.size(); ++i) share[i] = slots * (bricks[i].weight > 0 ? bricks[i].weight : 1.0) / total_weight;
  std::unordered_map<uint32_t, size_t> index_of;
  for (size_t i = 0; i < bricks.size(); ++i) index_of[bricks[i].id] = i;
  for (size_t u = 0; u < bricks.size(); ++u) {
    if (bricks[u].no_new_groups) continue;
    const auto floor_u = static_cast<uint32_t>(std::floor(share[u] * 0.97));
    for (uint32_t pg = 0; pg < pg_count && load[u] < floor_u; ++pg) {
      auto& members = pgs[pg];
      if (std::find(members.begin(), members.end(), bricks[u].id) != members.end()) continue;
      // The most overloaded member whose slot u can take.
      size_t best = members.size();
      double best_excess = 0;
      for (size_t m = 0; m < members.size(); ++m) {
        const size_t o = index_of[members[m]];
        const double excess = static_cast<double>(load[o]) - share[o];
        if (excess < 1.0 || excess <= best_excess) continue;
        bool domain_clash = false;
        for (size_t k = 0; k < members.size(); ++k)
          if (k != m && bricks[index_of[members[k]]].failure_domain == bricks[u].failure_domain) domain_clash = true;
        if (domain_clash) continue;
        best = m;
        best_excess = excess;
      }
      if (best == members.size()) continue;
      --load[index_of[members[best]]];
      members[best] = bricks[u].id;
      ++load[u];
    }
  }
  return pgs;
}

}  // namespace spool::meta
