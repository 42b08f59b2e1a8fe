// DirLeases: which connection may answer "no such name" in a directory from
// its own copy of the directory's names.
//
// A mount that lists a directory may ask for its name lease (ReaddirRequest.
// want_lease). While it holds the lease, a name that another connection
// adds to the directory (create, mkdir, link, rename into it) is not applied
// until the holder gave the lease back -- recalled through its invalidation
// stream, it does so as soon as it sees the recall -- or until the recall
// timed out. The mount trusts its copy only while its watch hears from meta
// (well within the timeout), so a holder that died or got cut off stops
// answering from it before the name can appear. Adds by the holder itself
// go straight through: it keeps its copy up to date with them.
//
// One holder per directory; a directory being recalled is not granted
// again until the recall ends, nor for kContendedFor after: where two
// mounts take turns adding names (Postfix delivering on one host, Dovecot
// listing on another) a lease would only cost a recall per turn. In memory
// only: a new meta process starts a new invalidation stream, and mounts
// drop every lease on its reset.
//
// Thread-safe. The functions queued by BeforeAdd run on the thread that
// releases or expires the lease, without any lock held.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace spool::meta {

class DirLeases {
 public:
  using Clock = std::chrono::steady_clock;

  static constexpr std::chrono::seconds kContendedFor{10};

  explicit DirLeases(std::chrono::milliseconds recall_timeout) : recall_timeout_(recall_timeout) {}

  // The lease on `dir` for connection `conn` (its id; the same id again if
  // it holds it already), or 0 if another connection holds it.
  uint64_t Grant(uint64_t dir, uint64_t conn);

  // Before connection `conn` adds a name to `dir`. True: go ahead now.
  // False: `proceed` runs once the lease is given back or its recall timed
  // out; *recall is set to the lease's id if a recall has to be sent to
  // the holder (the first add to wait for it), else to 0.
  bool BeforeAdd(uint64_t dir, uint64_t conn, std::function<void()> proceed, uint64_t* recall);

  // The holder gives the lease back (after a recall, or unasked).
  void Release(uint64_t dir, uint64_t conn, uint64_t lease_id);
  // Every lease of a connection whose session ended.
  void ReleaseAllOf(uint64_t conn);
  // Ends recalls older than the timeout.
  void Expire(Clock::time_point now);

  size_t held() const;

 private:
  struct Lease {
    uint64_t conn = 0;
    uint64_t id = 0;
    bool recalling = false;
    Clock::time_point recalled_at;
    std::vector<std::function<void()>> waiting;  // adds held back by the recall
  };
  // Removes the lease at `it` (remembering a recall) and hands back what
  // waited for it.
  std::vector<std::function<void()>> EndLocked(std::unordered_map<uint64_t, Lease>::iterator it);  // REQUIRES: mu_
  static void Run(std::vector<std::function<void()>>& work);

  const std::chrono::milliseconds recall_timeout_;
  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<uint64_t, Lease> leases_;  // by directory
  std::unordered_map<uint64_t, Clock::time_point> recalled_at_;  // by directory, for kContendedFor
  uint64_t next_id_ = 1;
};

}  // namespace spool::meta
