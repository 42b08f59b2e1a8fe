// DirNames: copies of the names of directories this mount holds meta's name
// lease on (meta/dir_leases.h), so that a lookup of a name that is not there
// -- every delivery looks up its new name in tmp/ and again in new/, every
// flag its new name in cur/ -- is answered without asking meta.
//
// A copy starts with a listing read under the lease (the first page asks for
// it), is kept up to date with this mount's own changes, and is dropped when
// meta recalls the lease (another mount is about to add a name), when the
// invalidation stream resets, or on any doubt (an add of ours whose outcome
// is unknown). It answers only while the watch has heard from meta within
// kTrustFor on the connection the lease came on: meta gives up on a recall
// only after far longer, so a mount cut off from meta stops answering from
// its copies before another mount's name can appear.
//
// Thread-safe; never blocks.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace spool::client {

class DirNames {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kTrustFor{800};
  // A directory with more names is not copied (its lease is given back).
  static constexpr size_t kMaxNamesPerDir = 20000;
  // Nor are new ones once all copies hold this many names (~20 MiB).
  static constexpr size_t kMaxNames = 200000;

  // A listing of `dir` under lease `lease_id`, on meta connection
  // `generation`, begins (its first page came with the lease). False if
  // no copy should be made (too many names held); give the lease back.
  bool BeginListing(uint64_t dir, uint64_t lease_id, uint64_t generation);
  // Names of the listing's pages. False if the copy was dropped meanwhile
  // (or grew too large: then give the lease back).
  bool AddListed(uint64_t dir, uint64_t lease_id, const std::vector<std::string>& names);
  // The listing reached the end: the copy answers from now on.
  void CompleteListing(uint64_t dir, uint64_t lease_id);

  // This mount added or removed a name in `dir` (its own create, link,
  // rename, unlink), before telling the kernel.
  void Added(uint64_t dir, const std::string& name);
  void Removed(uint64_t dir, const std::string& name);
  // Drops the copy of `dir`; the lease to give back (0 if none). Used on a
  // recall, and when an add of ours may or may not have happened.
  uint64_t Drop(uint64_t dir);
  // Meta recalled lease `lease_id` on `dir`: drops its copy, and refuses a
  // listing under it that is still on its way (BeginListing).
  void Recalled(uint64_t dir, uint64_t lease_id);
  // Drops every copy (the stream reset); the leases to give back.
  std::vector<std::pair<uint64_t, uint64_t>> DropAll();

  // The watch heard from meta at `when`, on connection `generation`.
  void Heard(Clock::time_point when, uint64_t generation);
  // True if `name` is certainly not in `dir` now.
  bool KnownAbsent(uint64_t dir, std::string_view name, uint64_t generation, Clock::time_point now) const;
  // Whether a listing of `dir` should ask for its lease: not if it was
  // found too large to copy.
  bool WantLease(uint64_t dir) const;
  // Whether a listing of `dir` is worth starting (for its lease): no copy
  // of it, and a few lookups in it found nothing at meta.
  bool WorthListing(uint64_t dir);

 private:
  struct Copy {
    uint64_t lease_id = 0;
    uint64_t generation = 0;
    bool complete = false;
    std::unordered_set<std::string> names;
  };

  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<uint64_t, Copy> copies_;  // by directory
  size_t names_held_ = 0;
  // Lease ids meta recalled (ids are never reused), the last kRecalledKept
  // of them, oldest first in recalled_order_.
  std::unordered_set<uint64_t> recalled_;
  std::deque<uint64_t> recalled_order_;
  std::unordered_set<uint64_t> too_large_;  // directories with over kMaxNamesPerDir names
  Clock::time_point heard_{};
  uint64_t heard_generation_ = 0;
  // Lookups that meta answered "no such name", per directory without a
  // copy; a directory that collects a few is listed (under a lease).
  std::unordered_map<uint64_t, uint32_t> misses_;
};

}  // namespace spool::client
