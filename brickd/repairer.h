// Repairer: brings this brick's copies in line with its peers', and scrubs.
//
// Catch-up and rebuild. Meta hands out tasks ("PG p, generation g") in
// heartbeat replies (meta/repair_table.h). For a task the repairer lists the
// PG on this brick and on every peer of the PG (sorted listings, thousands of
// chunks per request), takes the chunks some peer has and this brick lacks,
// and pulls them in bulk: many chunks per ReadChunks request, alternating
// between the peers that hold them, written locally as one background put
// per batch (no WAL: durable at the store's next memtable flush). A chunk
// deleted meanwhile is simply absent from every peer; meta's deletion
// drainer removes it from this brick too. Once every put of the task is
// durable the generation is reported done (the worker has moved on to the
// next task by then). Tasks run most degraded first, on a few workers.
//
// Pace. Pulls take at most repair_bytes_per_sec while clients use this
// brick and repair_quiet_bytes_per_sec once none has for a second. Pulls of
// a PG that is moving (a leaving brick that is up still has its copy: no
// chunk is short of copies) take at most move_bytes_per_sec of that while
// clients use the brick.
//
// Bad copies. A chunk that fails verification here (found by a read or by the
// scrubber) is fetched from a peer and rewritten.
//
// Scrub. A background pass reads and verifies every chunk at a bounded rate,
// every `scrub_interval`, and whenever meta's scrub generation moves past the
// last one started (`spoolctl scrub`).
//
// All background traffic shares one RateLimiter per kind, so repair and
// scrub never take more than their configured bandwidth.
//
// Thread-safe.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "brickd/chunk_store.h"
#include "brickd/options.h"
#include "common/cluster_key.h"
#include "common/outstanding.h"
#include "common/rate_limiter.h"
#include "common/rpc/client_pool.h"
#include "spool.pb.h"

namespace spool::brick {

class Repairer {
 public:
  Repairer(ChunkStore& store, asio::io_context& io, ClusterKey key, RepairOptions options);
  ~Repairer();  // Stop()
  Repairer(const Repairer&) = delete;
  Repairer& operator=(const Repairer&) = delete;

  void Start();
  void Stop();

  // The current cluster map and this brick's id in it.
  void SetMap(std::shared_ptr<const proto::ClusterMap> map, uint32_t self_id);
  // Tasks from a heartbeat reply; repeats of queued or finished ones are fine.
  void AddTasks(const google::protobuf::RepeatedPtrField<proto::RepairTask>& tasks);
  // A chunk of this brick failed verification: fetch a good copy, rewrite.
  void ReportCorrupt(uint32_t pg, uint64_t chunk_id);
  // Meta's scrub generation: starts a pass if it is newer than the last one.
  void RequestScrub(uint64_t generation);
  // When a client last used this brick; repair pulls at the quiet rate once
  // that is `clients_quiet_after` ago. Without it, always the busy rate.
  // REQUIRES: before Start().
  void SetClientActivity(std::function<std::chrono::steady_clock::time_point()> last_client_request) {
    last_client_request_ = std::move(last_client_request);
  }
  // Called when the last queued task is done, so that its report goes to
  // meta at once. REQUIRES: before Start().
  void SetReportSoon(std::function<void()> report_soon) { report_soon_ = std::move(report_soon); }

  // Moves finished passes into the heartbeat, with progress counters.
  void FillHeartbeat(proto::HeartbeatRequest* request);

  proto::RepairProgress repair_progress() const;
  proto::ScrubProgress scrub_progress() const;

 private:
  struct Task {
    uint64_t generation = 0;
    uint32_t severity = 0;
    std::chrono::steady_clock::time_point not_before{};
    int failures = 0;  // in a row: the retry delay doubles with each
    bool running = false;
  };
  struct Peer {
    uint32_t id = 0;
    std::string address;
  };
  // A chunk to pull, with its length from the peer's listing.
  struct Wanted {
    uint64_t chunk_id = 0;
    uint32_t length = 0;
  };
  class PutTracker;
  // Where one task's time went (summed over its concurrent pulls), for the log.
  struct TaskTimes {
    std::atomic<int64_t> list_us{0}, read_us{0}, wait_us{0}, put_us{0};
  };

  void WorkerLoop();
  void ScrubLoop();
  // One pass over a PG: list, diff, pull. OK only if every peer was listed
  // and every missing chunk was copied (written; durable once `puts` says so).
  Status RunTask(uint32_t pg, const std::shared_ptr<PutTracker>& puts);
  // Reports a task done (once its puts are durable) or schedules its retry.
  void FinishTask(uint32_t pg, uint64_t generation, const Status& s, const PutTracker& puts);
  Status RewriteCorrupt(uint32_t pg, const std::vector<uint64_t>& chunk_ids);
  Status ScrubPass(uint64_t generation);
  // The PG's other members, with addresses, from the current map.
  Result<std::vector<Peer>> PeersOf(uint32_t pg);
  Result<std::vector<proto::ChunkRef>> ListPeer(const Peer& peer, uint32_t pg);
  Result<std::vector<ChunkInfo>> ListLocal(uint32_t pg);
  // Reads `wanted` from `peer` and writes them here through `puts` (written,
  // not yet durable, when it returns): several bulk reads in flight, each
  // batch's local put overlapping the next reads. Ids the peer lacks go to `left`.
  Status Pull(const Peer& peer, uint32_t pg, bool moving, std::vector<Wanted> wanted, std::vector<uint64_t>* left,
              const std::shared_ptr<PutTracker>& puts);
  void SaveScrubGeneration(uint64_t generation);
  // Whether the PG is moving in the current map: a leaving brick that is up
  // still holds its old copy, so every chunk has all its copies.
  bool IsMoving(uint32_t pg);
  // Waits until `bytes` of pulls may go at the pace for now (busy or quiet,
  // move or repair). False once stopping.
  bool AcquirePullBandwidth(uint64_t bytes, bool moving);
  bool Stopping();

  ChunkStore& store_;
  const RepairOptions options_;
  rpc::ClientPool peers_;
  RateLimiter repair_limiter_;        // while clients use this brick
  RateLimiter repair_quiet_limiter_;  // while they do not
  RateLimiter move_limiter_;          // moves while clients use this brick, within repair_limiter_
  RateLimiter scrub_limiter_;
  std::function<std::chrono::steady_clock::time_point()> last_client_request_;
  std::function<void()> report_soon_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;  // tasks, corrupt chunks, scrub requests, stopping_
  bool stopping_ = false;
  std::shared_ptr<const proto::ClusterMap> map_;
  uint32_t self_id_ = 0;
  std::map<uint32_t, Task> tasks_;                 // by pg
  std::map<uint32_t, uint64_t> finished_;          // pg -> last generation finished
  std::vector<proto::RepairDone> done_;            // not yet sent to meta
  std::map<uint32_t, std::set<uint64_t>> corrupt_;  // pg -> chunk ids to rewrite
  uint64_t scrub_requested_ = 0;                   // newest generation meta asked for
  proto::ScrubProgress scrub_;

  Outstanding puts_in_progress_;  // store puts whose `done` has not finished (Stop waits for them)
  std::atomic<uint64_t> chunks_copied_{0};
  std::atomic<uint64_t> bytes_copied_{0};
  std::atomic<uint64_t> chunks_pending_{0};
  std::atomic<uint64_t> corrupt_rewritten_{0};

  std::vector<std::thread> workers_;
  std::thread scrubber_;
};

}  // namespace spool::brick
