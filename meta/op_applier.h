// OpApplier: the one thread that applies namespace mutations, with group
// commit.
//
// Ops are queued by any thread. The applier thread takes what is queued (up
// to kMaxGroupOps at a time), applies each op on top of the ones before it
// (Namespace::Apply: each op its own numbered log entry, a failing op leaves
// no trace), writes the group as one unsynced WriteBatch, syncs the WAL once
// for the whole group, and only then runs the ops' callbacks: nothing is
// acknowledged before it is durable. Ops that arrive during a sync form the
// next group. One thread rather than an applier and a syncer overlapping:
// on a small machine the hand-off between them (a wake-up per group) cost
// more than the overlap gained, and an op's latency is what a rename held
// under the kernel's rename lock waits for.
//
// It also keeps the open-file bookkeeping consistent with the namespace: a
// create with a session registers the open before the next op is applied,
// and a file whose last link goes while nobody has it open is deleted by
// that same op (unlink, rename over it); one still open is kept as an orphan
// and reclaimed by a reclaim_orphan op on its last release.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "meta/namespace.h"
#include "meta/session_table.h"

namespace spool::meta {

class OpApplier {
 public:
  using Done = std::function<void(Result<OpOutcome>)>;

  OpApplier(Namespace& ns, SessionTable& sessions);
  ~OpApplier();  // Stop()
  OpApplier(const OpApplier&) = delete;
  OpApplier& operator=(const OpApplier&) = delete;

  // Queues `op`, stamping now_ns. `done` runs on the applier thread once the
  // op is durable (or failed), so it must not wait for another op (no
  // ApplySync). After Stop(), fails with ESHUTDOWN at once.
  void Submit(proto::MetaOp op, Done done);
  // Submit and wait.
  Result<OpOutcome> ApplySync(proto::MetaOp op);

  // Applies what is queued, then joins the thread.
  void Stop();

  struct Stats {
    uint64_t groups = 0;
    uint64_t ops = 0;
    uint64_t apply_ns = 0;  // time spent applying ops
    uint64_t sync_ns = 0;   // time spent syncing the WAL
  };
  Stats stats() const;

 private:
  struct Pending {
    proto::MetaOp op;
    Done done;
  };
  struct Applied {
    Done done;
    Result<OpOutcome> result;
  };
  // At most this many ops share one WriteBatch (and one WAL sync).
  static constexpr size_t kMaxGroupOps = 256;

  void RunApplier();
  // Syncs the WAL for `group` (written already) and runs its callbacks.
  void SyncAndAnswer(std::vector<Applied>& group);
  // Applies one op to the pending group. Records the opens it registered
  // (undone if the group cannot be written) and the orphans it kept.
  struct GroupState {
    std::vector<std::pair<uint64_t, uint64_t>> opened;  // session, ino
    std::vector<uint64_t> kept_orphans;
  };
  Result<OpOutcome> ApplyOne(proto::MetaOp& op, GroupState& group);

  Namespace& ns_;
  SessionTable& sessions_;

  mutable std::mutex mu_;  // guards everything below up to the thread
  std::condition_variable cv_;  // queue_ or stopping_ changed
  std::deque<Pending> queue_;   // submitted, not applied
  bool stopping_ = false;
  Stats stats_;
  // Last: started after everything above exists.
  std::thread applier_thread_;
};

}  // namespace spool::meta
