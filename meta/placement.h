// Placement: which bricks hold each placement group. A pure function of the
// brick set, so that every meta (and a test) computes the same map.
//
// Weighted rendezvous hashing: for each PG every brick gets a score
// -weight / ln(u), u = hash(pg, brick id) in (0,1); bricks are taken in score
// order, skipping a brick whose failure domain is already in the PG, until R
// are chosen (fewer if there are fewer than R domains). Adding or removing one
// brick of N changes only the PG slots where it wins or won: about 1/N.
// Each brick is capped at ~1% over its weighted share of slots, rounded up (bounded
// loads), which keeps the spread even when there are few PGs per brick.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spool::meta {

struct PlacementBrick {
  uint32_t id = 0;
  std::string failure_domain;
  double weight = 1.0;  // relative; capacity in bytes is fine
  // A nearly full brick keeps the groups it holds (in `current`) but is not
  // chosen for any other, so that it never runs into ENOSPC because of a move.
  bool no_new_groups = false;
};

// Returns pg_count lists of up to `replicas` brick ids, best first.
// `current` (optional, indexed by pg): the bricks holding each group now,
// consulted only for bricks with no_new_groups.
std::vector<std::vector<uint32_t>> ComputePlacement(const std::vector<PlacementBrick>& bricks, uint32_t pg_count,
                                                    uint32_t replicas,
                                                    const std::vector<std::vector<uint32_t>>* current = nullptr);

}  // namespace spool::meta
