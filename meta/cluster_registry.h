// ClusterRegistry: the bricks of the cluster, their liveness, and the
// placement map derived from them.
//
// A brick registers with a uuid and gets a brick id that stays the same for
// that uuid forever (persisted). A brick silent for `down_after` is marked
// DOWN; its next heartbeat brings it UP. Down bricks stay in their PGs (the
// PG is then degraded) until they have been silent for `out_after` (the grace
// period): then they are OUT, their PGs move to other bricks and are rebuilt
// there. An OUT brick that comes back is taken in again.
//
// A brick that registers with a new uuid at the address of a brick that is
// not up is that brick's replacement (its disk was wiped or swapped): it takes
// over the old brick id, so placement does not move, and every PG of it is
// rebuilt onto it. Every change of the map bumps the epoch, which is
// persisted so it only ever grows.
//
// Moves. The map keeps, for each PG, the bricks that held it before a change
// and no longer do as `leaving`: they keep serving their copies (to readers
// and to the new members catching up) until every member has caught up and
// the PG's repair mark is cleared (DropFinishedLeaving); only then do they
// leave the map and delete their copies (brickd/pg_gc.h). So a move never
// leaves a PG with fewer good copies than it had. A brick that is OUT (dead
// past the grace period) is not kept as leaving: it cannot serve.
//
// Operator states (BrickAdmin, persisted): a new brick joins placement at
// once (auto-join; always while fewer than R bricks are placeable) or waits
// as PENDING for `spoolctl add-brick`; DRAINING has
// weight 0 (every PG moves off it, it serves reads meanwhile); MAINTENANCE
// gets `maintenance_out_after` instead of `out_after` before it is taken out;
// REMOVED is forgotten by placement and may not register again. Placement
// weights are the bricks' capacities; a brick used above `near_full_ratio`
// keeps its PGs but takes no new ones until it is below `near_full_clear`.
//
// Registry records (bricks, each PG's members and leaving bricks, the epoch)
// are written directly to the database (synced), outside the namespace op
// log: they change rarely.
//
// Thread-safe.
#pragma once

#include <rocksdb/db.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "spool.pb.h"

namespace spool::meta {

class ClusterRegistry {
 public:
  using Clock = std::chrono::steady_clock;

  ClusterRegistry(rocksdb::DB* db, uint32_t pg_count, uint32_t replicas, std::chrono::milliseconds down_after,
                  std::chrono::milliseconds out_after);

  // Called (under the registry's lock: must not call back) with the map
  // before and after every change, and with the id of a brick whose disk was
  // replaced. Set before Load().
  struct Observer {
    std::function<void(const proto::ClusterMap& before, const proto::ClusterMap& after)> map_changed;
    std::function<void(uint32_t brick_id, const proto::ClusterMap& map)> brick_replaced;
  };
  void SetObserver(Observer observer) { observer_ = std::move(observer); }

  struct Policy {
    bool auto_join = true;
    std::chrono::milliseconds maintenance_out_after{4 * 3600 * 1000};
    double near_full_ratio = 0.90;
    double near_full_clear = 0.85;
  };
  void SetPolicy(Policy policy) { policy_ = policy; }  // before Load()

  // Tells whether the RPC connection with this id is still open. With it, a
  // new disk at the address of a brick whose connection has closed (its
  // process is gone) takes over at once instead of after some silence.
  // Set before Load().
  void SetConnectionProbe(std::function<bool(uint64_t connection_id)> open) { connection_open_ = std::move(open); }

  // True if a PG's members have all caught up (no repair pending).
  using PgSettled = std::function<bool(uint32_t pg)>;

  // Drops the leaving bricks of every PG that is settled and whose members
  // are all up. Returns true if the map changed.
  bool DropFinishedLeaving(const PgSettled& settled);

  // spoolctl add-brick / drain-brick / undrain-brick / remove-brick /
  // maintenance. Refusals are errors whose message tells the operator why.
  Result<proto::BrickAdminReply> Admin(const proto::BrickAdminRequest& req, const PgSettled& settled);

  // Loads the persisted bricks (all considered UP, as if they had just
  // heartbeaten) and bumps the epoch.
  Status Load();

  // `connection_id`: the RPC connection the request came on (0: unknown).
  Result<proto::RegisterBrickReply> Register(const proto::RegisterBrickRequest& req, uint64_t connection_id = 0);
  // ENOENT for an unknown brick id.
  Result<proto::HeartbeatReply> Heartbeat(const proto::HeartbeatRequest& req, uint64_t connection_id = 0);
  // Marks bricks silent for too long DOWN, and OUT after the grace period.
  // Returns true if the map changed.
  bool CheckLiveness(Clock::time_point now);

  std::shared_ptr<const proto::ClusterMap> Map() const;
  uint64_t epoch() const;

  struct Capacity {
    uint64_t capacity = 0, used = 0;
  };
  Capacity TotalCapacity() const;

 private:
  Status PersistLocked(const proto::BrickEntry* brick);  // REQUIRES: mu_ held
  void RebuildMapLocked();                               // REQUIRES: mu_ held; bumps the epoch
  proto::BrickEntry* FindLocked(uint32_t id);            // REQUIRES: mu_ held

  rocksdb::DB* const db_;
  const uint32_t pg_count_;
  const uint32_t replicas_;
  const std::chrono::milliseconds down_after_;
  const std::chrono::milliseconds out_after_;
  Observer observer_;
  Policy policy_;
  std::function<bool(uint64_t)> connection_open_;

  mutable std::mutex mu_;  // guards everything below
  std::vector<proto::BrickEntry> bricks_;  // by id order
  std::vector<Clock::time_point> last_heartbeat_;  // parallel to bricks_
  std::vector<uint64_t> last_connection_;          // parallel to bricks_: of the last register/heartbeat, 0 unknown
  uint64_t epoch_ = 0;
  std::shared_ptr<const proto::ClusterMap> map_;  // immutable snapshot, replaced on change
  // Each PG's members and leaving bricks as last computed (persisted, so that
  // a meta restart mid-move still knows who holds the old copies).
  std::vector<proto::PlacementGroup> assign_;
};

}  // namespace spool::meta
