// DirAttrs: the attributes of directories as this mount's own changes left
// them, so that the kernel's GETATTR of a directory right after a change in
// it is answered without a round trip to meta.
//
// Why: the kernel drops a directory's cached attributes after every create,
// unlink, link or rename in it, and (default_permissions) needs them again
// at the next path walk through it: every maildir delivery asked meta for
// tmp/ twice and new/ once, every flag for new/ and cur/, every expunge for
// cur/. Meta returns the directories a change touched, as they are after
// it, with the change's number in its op log (proto::ChangeReply).
//
// Coherence. Another connection's change of a directory reaches this mount
// through the watch (client::Invalidator), which calls Changed() before it
// tells the kernel: the copy goes unless it is from a later change. An offer
// from a change older than one already seen for that directory is refused
// (a reply can arrive after the invalidation of a later change), as is one
// older than the copy it would replace (replies of concurrent changes come
// in any order). A reset of the stream or a new connection drops every copy
// and refuses the offers of changes sent before it (Epoch()). Copies answer
// only while the watch keeps hearing from meta (DirNames::kTrustFor): cut
// off, GETATTR asks meta like any other call. So an answer is never staler
// than the kernel's own attribute cache would have been.
//
// Thread-safe; never blocks.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "spool.pb.h"

namespace spool::client {

class DirAttrs {
 public:
  using Clock = std::chrono::steady_clock;
  // Directories held; past it the copies start over (a mount changes a few
  // directories at a time: a mailbox's tmp/, new/, cur/).
  static constexpr size_t kMaxEntries = 4096;

  // Before a change is sent: what its Offer must name.
  uint64_t Epoch() const;
  // Meta's reply to a change numbered `op_seq`, sent at `epoch`: the
  // directories it touched as they are now (nlink 0: removed).
  void Offer(const google::protobuf::RepeatedPtrField<proto::Attr>& dirs, uint64_t op_seq, uint64_t epoch);
  // The copy of directory `ino`, if one may answer at `now`.
  std::optional<proto::Attr> Find(uint64_t ino, Clock::time_point now) const;

  // Another connection changed inode `ino` by change `op_seq` (0: from a
  // meta that does not number them).
  void Changed(uint64_t ino, uint64_t op_seq);
  // The watch missed changes (reset) or follows a new connection.
  void DropAll();
  // The watch heard from meta at `when`.
  void Heard(Clock::time_point when);

  size_t size() const;

 private:
  struct Copy {
    proto::Attr attr;
    uint64_t op_seq = 0;
  };
  // Highest change number seen from other connections, per bucket of inodes
  // (a shared bucket only refuses an offer that could have been kept).
  static constexpr size_t kBuckets = 4096;
  static size_t BucketOf(uint64_t ino) { return (ino * 0x9E3779B97F4A7C15ull) >> 52; }

  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<uint64_t, Copy> copies_;  // by directory inode
  std::array<uint64_t, kBuckets> changed_seq_{};
  uint64_t epoch_ = 0;
  Clock::time_point heard_{};
};

}  // namespace spool::client
