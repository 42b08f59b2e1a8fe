// LockTable: cluster-wide POSIX byte-range locks (fcntl) and whole-file
// locks (flock), in memory, owned by (session, owner).
//
// POSIX semantics per owner: setting a lock over a range replaces the
// owner's own locks there (splitting, merging, converting); it conflicts only
// with other owners' locks when either is a write lock. flock locks live in
// their own namespace (on Linux flock and fcntl locks ignore each other).
// A blocking request (wait=true) is answered when it can be granted, or
// dropped with EINTR when its session ends.
//
// Thread-safe. Callbacks run outside the table's mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "spool.pb.h"

namespace spool::meta {

class LockTable {
 public:
  using Done = std::function<void(const Status&)>;

  // Validates and applies a SetLock; `done` gets ok, EAGAIN (conflict and
  // !wait), EINVAL, or later ok/EINTR for a waiting request.
  void SetLock(const proto::LockRequest& req, Done done);
  // The first lock conflicting with `req`, or type F_UNLCK.
  Result<proto::LockReply> GetLock(const proto::LockRequest& req) const;
  // Drops every lock and waiter of a session (expired or closed).
  void ReleaseSession(uint64_t session);

  size_t lock_count() const;

 private:
  struct Range {
    uint64_t session, owner, start, end;  // end inclusive
    uint32_t type, pid;
  };
  struct Waiter {
    proto::LockRequest req;
    Done done;
  };
  struct Key {
    uint64_t ino;
    bool flock;
    auto operator<=>(const Key&) const = default;
  };
  struct File {
    std::vector<Range> locks;
    std::vector<Waiter> waiters;
  };
  static Status Validate(const proto::LockRequest& req);
  static const Range* Conflict(const File& f, const proto::LockRequest& req);
  static void Replace(File& f, const proto::LockRequest& req);  // own ranges in [start,end] := req.type
  // Grants waiters of `f` that no longer conflict; their callbacks go to `ready`.
  static void WakeLocked(File& f, std::vector<std::pair<Done, Status>>& ready);

  mutable std::mutex mu_;  // guards files_
  std::map<Key, File> files_;
};

}  // namespace spool::meta
