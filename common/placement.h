// Which placement group a chunk belongs to. Clients, bricks and meta all use
// this one function, so it must never change for an existing cluster.
#pragma once

#include <cstdint>

namespace spool {

// SplitMix64 finalizer: cheap, well mixed, stable across platforms.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint32_t PgOfChunk(uint64_t chunk_id, uint32_t pg_count) {
  return static_cast<uint32_t>(Mix64(chunk_id) % pg_count);
}

}  // namespace spool
