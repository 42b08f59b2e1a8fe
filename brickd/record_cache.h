// RecordCache: the metadata records of chunks read lately, for ChunkStore::Get.
//
// A VM image is read 4 KiB at a time from chunks of up to 1 MiB, and every
// read looked its chunk's record up in RocksDB again: 12% of a brick's CPU
// per read (perf, session 14). Chunks are immutable, so a record stays right
// until its chunk is deleted or put again (which may store it differently).
// The store forgets every chunk a batch writes once the batch is written;
// a record that a lookup read just before a write and cached just after it
// can still be stale, so a read that fails with a cached record asks the
// database again before it reports anything (ChunkStore::Get).
//
// Thread safety: every method may be called from any thread at once.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace spool::brick {

struct ChunkRecord;

class RecordCache {
 public:
  // At most `capacity` records (a record is ~200 bytes).
  explicit RecordCache(size_t capacity) : per_shard_(std::max<size_t>(1, capacity / kShards)) {}

  std::shared_ptr<const ChunkRecord> Find(uint32_t pg, uint64_t chunk_id) {
    auto& shard = ShardOf(pg, chunk_id);
    std::lock_guard lock(shard.mu);
    auto it = shard.records.find(Key{pg, chunk_id});
    return it == shard.records.end() ? nullptr : it->second;
  }

  void Insert(uint32_t pg, uint64_t chunk_id, std::shared_ptr<const ChunkRecord> record) {
    auto& shard = ShardOf(pg, chunk_id);
    std::lock_guard lock(shard.mu);
    // Full: drop whichever record the table lists first, an arbitrary one.
    if (shard.records.size() >= per_shard_) shard.records.erase(shard.records.begin());
    shard.records[Key{pg, chunk_id}] = std::move(record);
  }

  void Forget(uint32_t pg, uint64_t chunk_id) {
    auto& shard = ShardOf(pg, chunk_id);
    std::lock_guard lock(shard.mu);
    shard.records.erase(Key{pg, chunk_id});
  }

 private:
  static constexpr size_t kShards = 16;
  struct Key {
    uint32_t pg;
    uint64_t chunk_id;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return static_cast<size_t>((k.chunk_id ^ (uint64_t{k.pg} << 40)) * 0x9E3779B97F4A7C15ull);
    }
  };
  struct Shard {
    std::mutex mu;  // guards records
    std::unordered_map<Key, std::shared_ptr<const ChunkRecord>, KeyHash> records;
  };
  Shard& ShardOf(uint32_t pg, uint64_t chunk_id) { return shards_[KeyHash()(Key{pg, chunk_id}) >> 60]; }

  const size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace spool::brick
