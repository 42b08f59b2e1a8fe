#include "fusemount/invalidator.h"

#include <condition_variable>
#include <mutex>
#include <optional>

#include "common/log.h"

namespace spool::client {
namespace {

// How long meta holds a poll with nothing to report: shorter than
// DirNames::kTrustFor, as a mount that may hold name leases must keep
// hearing from meta to answer from its copies (a lease may come while a
// poll waits). Short enough, too, that a silently dropped connection is
// noticed soon.
constexpr uint32_t kWaitMs = 200;

}  // namespace

struct Invalidator::Poll {
  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  bool stopping = false;
  uint64_t generation = 0;  // which poll `result` answers
  std::optional<Result<proto::WatchReply>> result;
};

Invalidator::Invalidator(fuse_session* session, MetaClient& meta, FileStore& files, DirNames& names,
                         std::chrono::milliseconds delay)
    : session_(session), delay_(delay), meta_(meta), files_(files), names_(names), poll_(std::make_shared<Poll>()) {}

Invalidator::~Invalidator() { Stop(); }

void Invalidator::Start() {
  {
    std::lock_guard lock(applied_mu_);
    running_ = true;
  }
  thread_ = std::thread([this] { Run(); });
}

void Invalidator::Stop() {
  {
    std::lock_guard lock(poll_->mu);
    poll_->stopping = true;
  }
  poll_->cv.notify_all();
  {
    std::lock_guard lock(applied_mu_);
    running_ = false;
  }
  applied_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Invalidator::WaitApplied(uint64_t stream_id, uint64_t seq, std::chrono::milliseconds limit) {
  std::unique_lock lock(applied_mu_);
  return applied_cv_.wait_for(lock, limit, [&] {
    return !running_ || applied_stream_id_ != stream_id || applied_seq_ >= seq;
  });
}

void Invalidator::Run() {
  proto::WatchRequest request;
  request.set_wait_ms(kWaitMs);
  for (uint64_t generation = 1;; ++generation) {
    {
      std::lock_guard lock(poll_->mu);
      if (poll_->stopping) return;
      poll_->result.reset();
      poll_->generation = generation;
    }
    meta_.Watch(request, [this, poll = poll_, generation](Result<proto::WatchReply> result) {
      std::lock_guard lock(poll->mu);
      // Recalls are answered here, on the io thread, before anything else:
      // another mount's create waits for them, and the thread below may be
      // held up by the kernel. (Not once stopping: `this` may be gone.)
      if (result.ok() && !poll->stopping) HandleLeases(*result);
      if (poll->generation != generation) return;
      poll->result = std::move(result);
      poll->cv.notify_all();
    });
    std::unique_lock lock(poll_->mu);
    poll_->cv.wait(lock, [&] { return poll_->stopping || poll_->result.has_value(); });
    if (poll_->stopping) return;
    auto result = std::move(*poll_->result);
    lock.unlock();
    if (!result.ok()) {
      // Meta is away (restarting): the calls of the mount wait for it; we
      // poll again a little later. Its next stream will say reset.
      std::unique_lock wait(poll_->mu);
      if (poll_->cv.wait_for(wait, std::chrono::milliseconds(500), [&] { return poll_->stopping; })) return;
      continue;
    }
    if (delay_.count() > 0 && result->changes_size() > 0) {
      std::unique_lock wait(poll_->mu);
      if (poll_->cv.wait_for(wait, delay_, [&] { return poll_->stopping; })) return;
    }
    if (result->reset() && request.stream_id() != 0)
      SPOOL_LOG_INFO("mount invalidation stream restarted stream={} last_seq={}: entries cached before rely on "
                     "their timeouts",
                     result->stream_id(), result->last_seq());
    Apply(*result);
    request.set_stream_id(result->stream_id());
    request.set_after_seq(result->last_seq());
    {
      std::lock_guard applied(applied_mu_);
      applied_stream_id_ = result->stream_id();
      applied_seq_ = result->last_seq();
    }
    applied_cv_.notify_all();
  }
}

void Invalidator::HandleLeases(const proto::WatchReply& reply) {
  const uint64_t generation = meta_.connection_generation();
  const bool new_connection = generation != heard_generation_;
  if (reply.reset()) {
    // Changes were missed, recalls among them maybe.
    for (auto [dir, lease] : names_.DropAll()) meta_.ReleaseDirLease(dir, lease);
  } else if (new_connection) {
    // A new connection: leases of the old one are not ours to give back
    // (meta lets their recalls time out).
    (void)names_.DropAll();
  }
  heard_generation_ = generation;
  auto& dir_attrs = meta_.dir_attrs();
  if (reply.reset() || new_connection) dir_attrs.DropAll();
  for (const auto& change : reply.changes()) {
    // Before the kernel hears of it (Apply): its next GETATTR must not get our copy.
    if (change.ino() != 0) dir_attrs.Changed(change.ino(), change.op_seq());
    if (!change.recall()) continue;
    // Given back even without a copy: a listing may still be on its way.
    names_.Recalled(change.parent(), change.lease_id());
    meta_.ReleaseDirLease(change.parent(), change.lease_id());
  }
  names_.Heard(DirNames::Clock::now(), generation);
  dir_attrs.Heard(DirAttrs::Clock::now());
}

void Invalidator::Apply(const proto::WatchReply& reply) {
  for (const auto& change : reply.changes()) {
    if (change.recall()) continue;  // handled on arrival (HandleLeases)
    if (change.ino() != 0) {
      files_.Invalidate(change.ino());
      // Attributes and every cached page: another mount rewrote the file.
      (void)fuse_lowlevel_notify_inval_inode(session_, change.ino(), 0, 0);
    } else {
      (void)fuse_lowlevel_notify_inval_entry(session_, change.parent(), change.name().data(), change.name().size());
    }
    notifications_++;
  }
}

}  // namespace spool::client
