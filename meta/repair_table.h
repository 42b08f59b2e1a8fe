// RepairTable: which placement groups must have their copies brought back in
// line, and which member bricks have done so.
//
// A PG is *marked* when one of its copies may lack chunks: a member went down
// (it misses what was written meanwhile), the member set changed (a new member
// starts empty), a disk was replaced, a write reported a copy it could not
// place, a reader reported a bad copy, or an operator asked for a full pass
// (`spoolctl heal --all`). Every mark carries a generation that grows each
// time the PG is marked again after its current generation was handed out, so
// a pass that started before a new mark never clears it. Generations never
// repeat, even after a mark is cleared and the PG marked again.
//
// Bricks receive tasks in their heartbeat replies once every member of the PG
// is up: each member diffs its sorted listing of the PG against its peers' and
// pulls what it lacks (brickd/repairer.h), then reports the generation done.
// When every member has reported the current generation the mark is cleared.
// Tasks go out most degraded first (severity: copies believed missing).
//
// Marks are written straight to the database (synced), outside the namespace
// op log, like the brick registry: they describe the physical copies, not the
// namespace. Chunk reports (R/<chunk> keys, written by commits that could not
// place every copy and by bad-copy reports) are an inbox turned into marks by
// ConsumeChunkReports.
//
// Thread-safe.
#pragma once

#include <rocksdb/db.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "spool.pb.h"

namespace spool::meta {

class RepairTable {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RepairTable(rocksdb::DB* db) : db_(db) {}

  // Loads the persisted marks.
  Status Load();

  // Marks PGs (again). `severity`: copies believed missing; the highest seen
  // since the PG was last healthy is kept.
  void Mark(const std::vector<uint32_t>& pgs, uint32_t severity, std::string_view reason);

  // Marks the PGs of the chunks reported in R/ keys and removes those keys.
  // Returns how many reports were consumed (at most `max`).
  size_t ConsumeChunkReports(uint32_t pg_count, size_t max);

  // Compares two placement maps (before and after a change) and marks:
  // every PG that gained a member (the newcomer starts empty), and every PG of
  // a brick that went down (it will miss what is written meanwhile).
  void MarkMapChange(const proto::ClusterMap& before, const proto::ClusterMap& after);

  // Marks every PG the brick is a member of (its disk was replaced).
  void MarkBrick(uint32_t brick_id, const proto::ClusterMap& map, std::string_view reason);

  // Tasks for one brick: marked PGs it is a member of, whose members are all
  // up, that it has not finished at the current generation. At most `max`.
  std::vector<proto::RepairTask> TasksFor(uint32_t brick_id, const proto::ClusterMap& map, size_t max);

  // A brick finished a pass. Clears the mark once every member is done.
  void Done(uint32_t brick_id, const proto::RepairDone& done, const proto::ClusterMap& map);

  // Clears marks whose every current member is done (after a map change
  // removed the one member that was not), and PGs beyond the map.
  void Reconcile(const proto::ClusterMap& map);

  // Records what a brick reported in its heartbeat (for status and rates).
  void Report(uint32_t brick_id, const proto::RepairProgress& repair, const proto::ScrubProgress& scrub);

  // Samples counters for the rates; call about once a second.
  void Tick(Clock::time_point now);

  proto::RepairStatus Summary() const;
  std::vector<proto::BrickWork> BrickWorks() const;
  proto::HealReply Pending(const proto::ClusterMap& map, size_t max) const;
  size_t pending() const;
  bool IsMarked(uint32_t pg) const;

 private:
  struct PgMark {
    uint64_t generation = 0;
    uint32_t severity = 0;
    uint64_t marked_ms = 0;   // wall clock, for the operator
    bool handed_out = false;  // the current generation went to some brick
    std::set<uint32_t> done;  // members finished at `generation`
  };
  struct Sample {
    Clock::time_point at;
    uint64_t pgs_cleared = 0, chunks = 0, bytes = 0;
  };

  void MarkLocked(uint32_t pg, uint32_t severity);           // REQUIRES: mu_ held
  void ClearLocked(uint32_t pg);                             // REQUIRES: mu_ held
  void PersistLocked(const std::vector<uint32_t>& changed);  // REQUIRES: mu_ held

  rocksdb::DB* const db_;

  mutable std::mutex mu_;  // guards everything below
  std::map<uint32_t, PgMark> marks_;  // by pg
  // Generations only grow, across marks, clears and restarts (a brick
  // remembers the newest it finished): seeded from the wall clock in ms.
  uint64_t last_generation_ = 0;
  uint32_t wave_marked_ = 0, wave_done_ = 0;
  uint64_t pgs_cleared_total_ = 0;
  std::map<uint32_t, proto::BrickWork> work_;  // last report of each brick
  // Totals across brick restarts (a restarted brick's counters start at 0).
  std::map<uint32_t, std::pair<uint64_t, uint64_t>> last_counters_;  // brick -> (chunks, bytes) last seen
  uint64_t chunks_copied_total_ = 0, bytes_copied_total_ = 0;
  std::deque<Sample> samples_;  // the last ~10 s
};

}  // namespace spool::meta
