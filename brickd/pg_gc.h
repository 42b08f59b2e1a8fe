// PgGc: deletes this brick's copies of placement groups it no longer holds.
//
// After a move (meta/cluster_registry.h) a brick that left a PG stays in the
// map as a *leaving* brick, serving its copies, until every new member has
// caught up; then meta drops it from the map. From then on the copies here
// are garbage. The collector deletes the chunks of every PG this brick is
// neither a member nor a leaving brick of, in the newest map it has seen,
// once that has been so for `delay` without a break (a map that gives the
// PG back resets the clock), so that a map that flips back and forth or a
// write still in flight from a mount with an older map costs nothing.
// Deletes run in batches at a bounded rate (chunks per second), so they never
// crowd out foreground traffic. PGs already emptied are listed again every
// `recheck`, in case a late write from a stale mount landed after all.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "brickd/chunk_store.h"
#include "brickd/options.h"
#include "common/rate_limiter.h"
#include "common/status.h"
#include "spool.pb.h"

namespace spool::brick {

class PgGc {
 public:
  PgGc(ChunkStore& store, PgGcOptions options);
  ~PgGc();  // Stop()
  PgGc(const PgGc&) = delete;
  PgGc& operator=(const PgGc&) = delete;

  void Start();
  void Stop();

  // The newest cluster map and this brick's id in it.
  void SetMap(std::shared_ptr<const proto::ClusterMap> map, uint32_t self_id);

  uint64_t chunks_deleted() const { return chunks_deleted_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct PgState {
    bool ours = true;
    Clock::time_point not_ours_since{};
    Clock::time_point cleaned_at{};  // time_point{} = not cleaned since it stopped being ours
  };

  void Loop();
  // Deletes every chunk of `pg` here, unless the PG becomes ours meanwhile.
  Status Collect(uint32_t pg);
  bool StillNotOurs(uint32_t pg);

  ChunkStore& store_;
  const PgGcOptions options_;
  RateLimiter limiter_;  // "bytes" are chunks here

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stopping_ = false;
  bool have_map_ = false;
  std::vector<PgState> pgs_;

  std::atomic<uint64_t> chunks_deleted_{0};
  std::thread thread_;
};

}  // namespace spool::brick
