// OpApplier: the one thread that applies namespace mutations, with group
// commit.
//
// Ops are queued by any thread. The applier takes everything queued, applies
// each op as its own unsynced WriteBatch (so later ops in the group see the
// earlier ones), syncs the WAL once, and only then runs every op's callback.
// Nothing is acknowledged before it is durable.
//
// It also keeps the open-file bookkeeping consistent with the namespace: a
// create with a session registers the open before the next op is applied,
// and a file whose last link goes while nobody has it open is reclaimed at
// once by a follow-up reclaim_orphan op in the same group.
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
  // op is durable (or failed). After Stop(), fails with ESHUTDOWN at once.
  void Submit(proto::MetaOp op, Done done);
  // Submit and wait.
  Result<OpOutcome> ApplySync(proto::MetaOp op);

  // Applies what is queued, then joins the thread.
  void Stop();

  struct Stats {
    uint64_t groups = 0;
    uint64_t ops = 0;
  };
  Stats stats() const;

 private:
  struct Pending {
    proto::MetaOp op;
    Done done;
  };
  void Run();
  Result<OpOutcome> ApplyOne(proto::MetaOp& op);

  Namespace& ns_;
  SessionTable& sessions_;

  mutable std::mutex mu_;  // guards queue_, stopping_, stats_
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  Stats stats_;
  std::thread thread_;  // last: started after everything above exists
};

}  // namespace spool::meta
