#include "fusemount/client/dir_attrs.h"

#include <sys/stat.h>

#include "fusemount/client/dir_names.h"

namespace spool::client {

uint64_t DirAttrs::Epoch() const {
  std::lock_guard lock(mu_);
  return epoch_;
}

void DirAttrs::Offer(const google::protobuf::RepeatedPtrField<proto::Attr>& dirs, uint64_t op_seq, uint64_t epoch) {
  std::lock_guard lock(mu_);
  for (const auto& dir : dirs) {
    auto it = copies_.find(dir.ino());
    if (it != copies_.end() && op_seq != 0 && it->second.op_seq >= op_seq) continue;  // a later change of ours is known
    // Whatever is not kept is dropped: our change made any older copy stale.
    const bool keep = op_seq != 0 && epoch == epoch_ && dir.nlink() != 0 && S_ISDIR(dir.mode()) &&
                      changed_seq_[BucketOf(dir.ino())] < op_seq;
    if (!keep) {
      if (it != copies_.end()) copies_.erase(it);
      continue;
    }
    if (it == copies_.end()) {
      if (copies_.size() >= kMaxEntries) copies_.clear();
      it = copies_.emplace(dir.ino(), Copy{}).first;
    }
    it->second.attr = dir;
    it->second.op_seq = op_seq;
  }
}

std::optional<proto::Attr> DirAttrs::Find(uint64_t ino, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (now - heard_ > DirNames::kTrustFor) return std::nullopt;
  auto it = copies_.find(ino);
  if (it == copies_.end()) return std::nullopt;
  return it->second.attr;
}

void DirAttrs::Changed(uint64_t ino, uint64_t op_seq) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(ino);
  if (op_seq == 0) {
    // Unnumbered: no offer still on its way can be trusted.
    ++epoch_;
    if (it != copies_.end()) copies_.erase(it);
    return;
  }
  auto& seen = changed_seq_[BucketOf(ino)];
  if (op_seq > seen) seen = op_seq;
  if (it != copies_.end() && it->second.op_seq < op_seq) copies_.erase(it);
}

void DirAttrs::DropAll() {
  std::lock_guard lock(mu_);
  ++epoch_;
  copies_.clear();
}

void DirAttrs::Heard(Clock::time_point when) {
  std::lock_guard lock(mu_);
  heard_ = when;
}

size_t DirAttrs::size() const {
  std::lock_guard lock(mu_);
  return copies_.size();
}

}  // namespace spool::client
