// InvalidationLog: the recent changes of the namespace, for mounts that cache
// entries and attributes in their kernels. Each applied mutation publishes
// the inodes and names it changed, tagged with the connection it came on; a
// mount long-polls for the changes after the last one it saw that other
// connections made, and turns them into FUSE invalidations.
//
// In memory only, bounded: a mount that asks for changes older than the
// oldest kept, or of another meta process (stream id), is told to reset.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "spool.pb.h"

namespace spool::meta {

class InvalidationLog {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(const proto::WatchReply&)>;

  explicit InvalidationLog(size_t capacity);

  uint64_t stream_id() const { return stream_id_; }

  // Records the changes of one applied op (number `op_seq` in the op log)
  // made through connection `origin`,
  // and answers the watchers that now have something to see.
  void Publish(uint64_t origin, uint64_t op_seq, const std::vector<uint64_t>& inodes,
               const std::vector<std::pair<uint64_t, std::string>>& entries);
  // Tells every other connection's watcher that name lease `lease_id` on
  // `dir` is recalled (see DirLeases): its holder gives it back on seeing it.
  void Recall(uint64_t origin, uint64_t dir, uint64_t lease_id);

  // Answers `done` with the changes after request.after_seq that connection
  // `origin` did not make: at once if there are any (or a reset is due),
  // else when some are published or once request.wait_ms has passed
  // (see ExpireWatchers).
  void Watch(const proto::WatchRequest& request, uint64_t origin, Done done);
  // The seq of the newest change still held that connection `origin` did
  // not make (0 if none): once a watcher of `origin` has applied it, it has
  // seen everything others changed up to now.
  uint64_t LastChangeNotBy(uint64_t origin) const;
  // Answers (empty) the watchers whose wait is over.
  void ExpireWatchers(Clock::time_point now);
  // Answers every watcher (meta is stopping).
  void Shutdown();

 private:
  struct Change {
    uint64_t seq;
    uint64_t origin;
    proto::Invalidation what;
  };
  struct Watcher {
    uint64_t after;
    uint64_t origin;
    Clock::time_point deadline;
    Done done;
  };
  void Append(uint64_t origin, std::vector<proto::Invalidation> changes);
  // Fills `reply` with what `after`/`origin` has to see; false if nothing.
  bool CollectLocked(uint64_t stream, uint64_t after, uint64_t origin, proto::WatchReply* reply) const;  // REQUIRES: mu_

  const size_t capacity_;
  const uint64_t stream_id_;
  mutable std::mutex mu_;  // guards everything below
  std::deque<Change> changes_;  // seq order, at most capacity_
  uint64_t last_seq_ = 0;
  // Who made the newest changes, and the seq of the last change before
  // their run (by someone else): LastChangeNotBy in constant time.
  uint64_t newest_origin_ = 0;
  uint64_t last_seq_before_newest_origin_ = 0;
  std::list<Watcher> watchers_;
};

}  // namespace spool::meta
