#include "meta/lock_table.h"

#include <fcntl.h>

#include <algorithm>
#include <limits>

namespace spool::meta {

Status LockTable::Validate(const proto::LockRequest& req) {
  if (req.ino() == 0) return Status::Error(EINVAL, "lock on inode 0");
  if (req.type() != F_RDLCK && req.type() != F_WRLCK && req.type() != F_UNLCK)
    return Status::Error(EINVAL, "bad lock type");
  if (req.start() > req.end()) return Status::Error(EINVAL, "lock range ends before it starts");
  return Status::Ok();
}

namespace {
bool SameOwner(uint64_t s1, uint64_t o1, const proto::LockRequest& r) { return s1 == r.session_id() && o1 == r.owner(); }
}  // namespace

const LockTable::Range* LockTable::Conflict(const File& f, const proto::LockRequest& req) {
  const uint64_t start = req.flock() ? 0 : req.start();
  const uint64_t end = req.flock() ? std::numeric_limits<uint64_t>::max() : req.end();
  for (const auto& r : f.locks) {
    if (SameOwner(r.session, r.owner, req)) continue;
    if (r.end < start || r.start > end) continue;
    if (r.type == F_WRLCK || req.type() == F_WRLCK) return &r;
  }
  return nullptr;
}

void LockTable::Replace(File& f, const proto::LockRequest& req) {
  const uint64_t start = req.flock() ? 0 : req.start();
  const uint64_t end = req.flock() ? std::numeric_limits<uint64_t>::max() : req.end();
  std::vector<Range> next;
  next.reserve(f.locks.size() + 2);
  for (const auto& r : f.locks) {
    if (!SameOwner(r.session, r.owner, req) || r.end < start || r.start > end) {
      next.push_back(r);
      continue;
    }
    if (r.start < start) {
      Range left = r;
      left.end = start - 1;
      next.push_back(left);
    }
    if (r.end > end) {
      Range right = r;
      right.start = end + 1;
      next.push_back(right);
    }
  }
  if (req.type() != F_UNLCK) {
    Range added{req.session_id(), req.owner(), start, end, req.type(), req.pid()};
    // Merge with the owner's adjacent or overlapping ranges of the same type.
    std::vector<Range> merged;
    for (const auto& r : next) {
      const bool touches = (r.end == std::numeric_limits<uint64_t>::max() || r.end + 1 >= added.start) &&
                           (added.end == std::numeric_limits<uint64_t>::max() || added.end + 1 >= r.start);
      if (SameOwner(r.session, r.owner, req) && r.type == added.type && touches) {
        added.start = std::min(added.start, r.start);
        added.end = std::max(added.end, r.end);
      } else {
        merged.push_back(r);
      }
    }
    merged.push_back(added);
    next.swap(merged);
  }
  f.locks.swap(next);
}

void LockTable::WakeLocked(File& f, std::vector<std::pair<Done, Status>>& ready) {
  for (bool progress = true; progress;) {
    progress = false;
    for (auto it = f.waiters.begin(); it != f.waiters.end(); ++it) {
      if (Conflict(f, it->req)) continue;
      Replace(f, it->req);
      ready.emplace_back(std::move(it->done), Status::Ok());
      f.waiters.erase(it);
      progress = true;
      break;
    }
  }
}

void LockTable::SetLock(const proto::LockRequest& req, Done done) {
  if (auto s = Validate(req); !s.ok()) return done(s);
  std::vector<std::pair<Done, Status>> ready;
  {
    std::lock_guard lock(mu_);
    Key key{req.ino(), req.flock()};
    File& f = files_[key];
    if (req.type() != F_UNLCK && Conflict(f, req)) {
      if (!req.wait()) {
        if (f.locks.empty() && f.waiters.empty()) files_.erase(key);
        ready.emplace_back(std::move(done), Status::Error(EAGAIN, "lock held by another owner"));
      } else {
        f.waiters.push_back(Waiter{req, std::move(done)});
      }
    } else {
      Replace(f, req);
      ready.emplace_back(std::move(done), Status::Ok());
      WakeLocked(f, ready);
      if (f.locks.empty() && f.waiters.empty()) files_.erase(key);
    }
  }
  for (auto& [d, s] : ready) d(s);
}

Result<proto::LockReply> LockTable::GetLock(const proto::LockRequest& req) const {
  if (auto s = Validate(req); !s.ok()) return s;
  proto::LockReply reply;
  reply.set_type(F_UNLCK);
  std::lock_guard lock(mu_);
  auto it = files_.find(Key{req.ino(), req.flock()});
  if (it == files_.end() || req.type() == F_UNLCK) return reply;
  if (const Range* r = Conflict(it->second, req)) {
    reply.set_type(r->type);
    reply.set_start(r->start);
    reply.set_end(r->end);
    reply.set_pid(r->pid);
  }
  return reply;
}

void LockTable::ReleaseSession(uint64_t session) {
  std::vector<std::pair<Done, Status>> ready;
  {
    std::lock_guard lock(mu_);
    for (auto it = files_.begin(); it != files_.end();) {
      File& f = it->second;
      std::erase_if(f.locks, [&](const Range& r) { return r.session == session; });
      for (auto w = f.waiters.begin(); w != f.waiters.end();) {
        if (w->req.session_id() == session) {
          ready.emplace_back(std::move(w->done), Status::Error(EINTR, "session ended"));
          w = f.waiters.erase(w);
        } else {
          ++w;
        }
      }
      WakeLocked(f, ready);
      if (f.locks.empty() && f.waiters.empty())
        it = files_.erase(it);
      else
        ++it;
    }
  }
  for (auto& [d, s] : ready) d(s);
}

size_t LockTable::lock_count() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [k, f] : files_) n += f.locks.size();
  return n;
}

}  // namespace spool::meta
