#include "meta/invalidation_log.h"

#include <set>

namespace spool::meta {
namespace {

constexpr int kMaxChangesPerReply = 4096;
constexpr uint32_t kMaxWaitMs = 60000;

uint64_t NewStreamId() {
  // Distinct per meta process: wall-clock nanoseconds at start.
  return static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) | 1;
}

}  // namespace

InvalidationLog::InvalidationLog(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)), stream_id_(NewStreamId()) {}

void InvalidationLog::Publish(uint64_t origin, uint64_t op_seq, const std::vector<uint64_t>& inodes,
                              const std::vector<std::pair<uint64_t, std::string>>& entries) {
  if (inodes.empty() && entries.empty()) return;
  std::vector<proto::Invalidation> changes;
  changes.reserve(inodes.size() + entries.size());
  for (uint64_t ino : inodes) {
    auto& what = changes.emplace_back();
    what.set_ino(ino);
    what.set_op_seq(op_seq);
  }
  for (const auto& [parent, name] : entries) {
    auto& what = changes.emplace_back();
    what.set_parent(parent);
    what.set_name(name);
  }
  Append(origin, std::move(changes));
}

void InvalidationLog::Recall(uint64_t origin, uint64_t dir, uint64_t lease_id) {
  std::vector<proto::Invalidation> changes(1);
  changes[0].set_parent(dir);
  changes[0].set_recall(true);
  changes[0].set_lease_id(lease_id);
  Append(origin, std::move(changes));
}

void InvalidationLog::Append(uint64_t origin, std::vector<proto::Invalidation> changes) {
  std::vector<std::pair<Done, proto::WatchReply>> ready;
  {
    std::lock_guard lock(mu_);
    for (auto& what : changes) {
      if (origin != newest_origin_) {
        last_seq_before_newest_origin_ = last_seq_;
        newest_origin_ = origin;
      }
      changes_.push_back(Change{++last_seq_, origin, std::move(what)});
      if (changes_.size() > capacity_) changes_.pop_front();
    }
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      proto::WatchReply reply;
      if (CollectLocked(stream_id_, it->after, it->origin, &reply)) {
        ready.emplace_back(std::move(it->done), std::move(reply));
        it = watchers_.erase(it);
      } else {
        it->after = last_seq_;  // nothing for it up to here
        ++it;
      }
    }
  }
  for (auto& [done, reply] : ready) done(reply);
}

bool InvalidationLog::CollectLocked(uint64_t stream, uint64_t after, uint64_t origin, proto::WatchReply* reply) const {
  reply->set_stream_id(stream_id_);
  reply->set_last_seq(last_seq_);
  if (stream == 0) return true;  // a new watcher learns where the stream is
  const uint64_t oldest = changes_.empty() ? last_seq_ + 1 : changes_.front().seq;
  if (stream != stream_id_ || after > last_seq_ || after + 1 < oldest) {
    reply->set_reset(true);
    return true;
  }
  // (ino, "") or (parent, name) -- names are never empty -- or, for a
  // recall, (parent, "/lease"): no name contains a slash.
  std::set<std::pair<uint64_t, std::string>> seen;
  for (size_t i = after + 1 - oldest; i < changes_.size(); ++i) {
    const Change& c = changes_[i];
    reply->set_last_seq(c.seq);
    if (c.origin == origin) continue;
    auto key = c.what.ino() != 0 ? std::make_pair(c.what.ino(), std::string())
               : c.what.recall() ? std::make_pair(c.what.parent(), "/" + std::to_string(c.what.lease_id()))
                                 : std::make_pair(c.what.parent(), c.what.name());
    if (!seen.insert(std::move(key)).second) continue;
    *reply->add_changes() = c.what;
    if (reply->changes_size() >= kMaxChangesPerReply) {
      // The rest waits for the next poll, except recalls: an add waits for
      // them, and the holder must see them now (it sees them again later).
      for (size_t j = i + 1; j < changes_.size(); ++j)
        if (changes_[j].what.recall() && changes_[j].origin != origin) *reply->add_changes() = changes_[j].what;
      break;
    }
  }
  return reply->changes_size() > 0;
}

void InvalidationLog::Watch(const proto::WatchRequest& request, uint64_t origin, Done done) {
  proto::WatchReply reply;
  {
    std::lock_guard lock(mu_);
    if (!CollectLocked(request.stream_id(), request.after_seq(), origin, &reply)) {
      const auto wait = std::chrono::milliseconds(std::min(request.wait_ms(), kMaxWaitMs));
      watchers_.push_back(Watcher{reply.last_seq(), origin, Clock::now() + wait, std::move(done)});
      return;
    }
  }
  done(reply);
}

uint64_t InvalidationLog::LastChangeNotBy(uint64_t origin) const {
  std::lock_guard lock(mu_);
  return newest_origin_ != origin ? last_seq_ : last_seq_before_newest_origin_;
}

void InvalidationLog::ExpireWatchers(Clock::time_point now) {
  std::vector<std::pair<Done, proto::WatchReply>> ready;
  {
    std::lock_guard lock(mu_);
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      proto::WatchReply reply;
      reply.set_stream_id(stream_id_);
      reply.set_last_seq(it->after);
      ready.emplace_back(std::move(it->done), std::move(reply));
      it = watchers_.erase(it);
    }
  }
  for (auto& [done, reply] : ready) done(reply);
}

void InvalidationLog::Shutdown() { ExpireWatchers(Clock::time_point::max()); }

}  // namespace spool::meta
