#include "meta/op_applier.h"

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
    : ns_(ns), sessions_(sessions), thread_([this] { Run(); }) {}

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
  if (thread_.joinable()) thread_.join();
}

OpApplier::Stats OpApplier::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

Result<OpOutcome> OpApplier::ApplyOne(proto::MetaOp& op) {
  if (op.op_case() == proto::MetaOp::kReclaimOrphan && sessions_.IsOpen(op.reclaim_orphan().ino()))
    return OpOutcome{};  // re-opened meanwhile: the last release reclaims it
  auto result = ns_.Apply(op);
  if (!result.ok()) return result;
  if (op.op_case() == proto::MetaOp::kCreate && op.create().session_id() != 0 && S_ISREG(result->attr.mode()))
    sessions_.AddOpen(op.create().session_id(), result->attr.ino());
  for (uint64_t ino : result->new_orphans) {
    if (sessions_.IsOpen(ino)) continue;
    proto::MetaOp reclaim;
    reclaim.set_now_ns(op.now_ns());
    reclaim.mutable_reclaim_orphan()->set_ino(ino);
    if (auto r = ns_.Apply(reclaim); !r.ok())
      SPOOL_LOG_ERROR("meta reclaim ino={} error=\"{}\"", ino, r.status().message());
  }
  return result;
}

void OpApplier::Run() {
  std::deque<Pending> group;
  std::vector<Result<OpOutcome>> results;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      group.swap(queue_);
    }
    results.clear();
    results.reserve(group.size());
    for (auto& p : group) results.push_back(ApplyOne(p.op));
    if (auto s = ns_.SyncWal(); !s.ok()) {
      SPOOL_LOG_ERROR("meta sync_wal error=\"{}\"", s.message());
      for (auto& r : results) r = s;
    }
    {
      std::lock_guard lock(mu_);
      stats_.groups++;
      stats_.ops += group.size();
    }
    for (size_t i = 0; i < group.size(); ++i) group[i].done(std::move(results[i]));
    group.clear();
  }
}

}  // namespace spool::meta
