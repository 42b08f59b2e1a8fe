#include "meta/op_applier.h"

#include <pthread.h>
#include <sys/stat.h>

#include <future>

#include "common/log.h"

namespace spool::meta {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

OpApplier::OpApplier(Namespace& ns, SessionTable& sessions)
    : ns_(ns),
      sessions_(sessions),
      applier_thread_([this] { RunApplier(); }) {}

OpApplier::~OpApplier() { Stop(); }

void OpApplier::Submit(proto::MetaOp op, Done done) {
  op.set_now_ns(NowNs());
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(Pending{std::move(op), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(Status::Error(ESHUTDOWN, "meta is shutting down"));
}

Result<OpOutcome> OpApplier::ApplySync(proto::MetaOp op) {
  std::promise<Result<OpOutcome>> promise;
  auto future = promise.get_future();
  Submit(std::move(op), [&promise](Result<OpOutcome> r) { promise.set_value(std::move(r)); });
  return future.get();
}

void OpApplier::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (applier_thread_.joinable()) {
    applier_thread_.join();
    const auto st = stats();
    SPOOL_LOG_INFO("meta applier groups={} ops={} apply_ms={} sync_ms={}", st.groups, st.ops, st.apply_ns / 1000000,
                   st.sync_ns / 1000000);
  }
}

OpApplier::Stats OpApplier::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

Result<OpOutcome> OpApplier::ApplyOne(proto::MetaOp& op, GroupState& group) {
  if (op.op_case() == proto::MetaOp::kReclaimOrphan && sessions_.IsOpen(op.reclaim_orphan().ino()))
    return OpOutcome{};  // re-opened meanwhile: the last release reclaims it
  auto result = ns_.Apply(op, [this](uint64_t ino) { return sessions_.IsOpen(ino); });
  if (!result.ok()) return result;
  if (op.op_case() == proto::MetaOp::kCreate && op.create().session_id() != 0 && S_ISREG(result->attr.mode())) {
    sessions_.AddOpen(op.create().session_id(), result->attr.ino());
    group.opened.emplace_back(op.create().session_id(), result->attr.ino());
  }
  for (uint64_t ino : result->new_orphans) group.kept_orphans.push_back(ino);
  return result;
}

void OpApplier::RunApplier() {
  pthread_setname_np(pthread_self(), "meta-apply");
  std::deque<Pending> queue;
  std::vector<Applied> done;
  GroupState group;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is answered
      if (queue.empty())
        queue.swap(queue_);
      else
        while (!queue_.empty()) queue.push_back(std::move(queue_.front())), queue_.pop_front();
    }
    while (!queue.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      done.clear();
      group.opened.clear();
      group.kept_orphans.clear();
      for (size_t n = 0; n < kMaxGroupOps && !queue.empty(); ++n) {
        auto& p = queue.front();
        auto r = ApplyOne(p.op, group);
        done.push_back(Applied{std::move(p.done), std::move(r)});
        queue.pop_front();
      }
      if (auto committed = ns_.CommitGroup(); !committed.ok()) {
        SPOOL_LOG_ERROR("meta apply_group ops={} error=\"{}\"", done.size(), committed.message());
        for (auto& d : done)
          if (d.result.ok()) d.result = committed;
        for (auto [session, ino] : group.opened) sessions_.RemoveOpen(session, ino);
      } else {
        // An orphan was kept because its file was open. A release that came
        // between that check and the write above found no orphan to reclaim:
        // look again now that the orphan is in the database.
        for (uint64_t ino : group.kept_orphans) {
          if (sessions_.IsOpen(ino)) continue;
          proto::MetaOp reclaim;
          reclaim.set_now_ns(NowNs());
          reclaim.mutable_reclaim_orphan()->set_ino(ino);
          queue.push_front(Pending{std::move(reclaim), [ino](Result<OpOutcome> r) {
                                     if (!r.ok())
                                       SPOOL_LOG_ERROR("meta reclaim ino={} error=\"{}\"", ino, r.status().message());
                                   }});
        }
      }
      const auto t1 = std::chrono::steady_clock::now();
      {
        std::lock_guard lock(mu_);
        stats_.apply_ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      }
      SyncAndAnswer(done);
    }
  }
}

void OpApplier::SyncAndAnswer(std::vector<Applied>& group) {
  // Every op in `group` was written before this sync started.
  const auto t0 = std::chrono::steady_clock::now();
  auto synced = ns_.SyncWal();
  const auto t1 = std::chrono::steady_clock::now();
  if (!synced.ok()) {
    SPOOL_LOG_ERROR("meta sync_wal error=\"{}\"", synced.message());
    for (auto& a : group) a.result = synced;
  }
  {
    std::lock_guard lock(mu_);
    stats_.groups++;
    stats_.ops += group.size();
    stats_.sync_ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  for (auto& a : group) a.done(std::move(a.result));
  group.clear();
}

}  // namespace spool::meta
