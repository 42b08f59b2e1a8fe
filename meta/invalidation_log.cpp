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

void InvalidationLog::Publish(uint64_t origin, const std::vector<uint64_t>& inodes,
                              const std::vector<std::pair<uint64_t, std::string>>& entries) {
  if (inodes.empty() && entries.empty()) return;
  std::vector<std::pair<Done, proto::WatchReply>> ready;
  {
    std::lock_guard lock(mu_);
    auto add = [&](proto::Invalidation what) {
      if (origin != newest_origin_) {
        last_seq_before_newest_origin_ = last_seq_;
        newest_origin_ = origin;
      }
      changes_.push_back(Change{++last_seq_, origin, std::move(what)});
      if (changes_.size() > capacity_) changes_.pop_front();
    };
    for (uint64_t ino : inodes) {
      proto::Invalidation what;
      what.set_ino(ino);
      add(std::move(what));
    }
    for (const auto& [parent, name] : entries) {
      proto::Invalidation what;
      what.set_parent(parent);
      what.set_name(name);
      add(std::move(what));
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
  std::set<std::pair<uint64_t, std::string>> seen;  // (ino, "") or (parent, name): names are never empty
  for (size_t i = after + 1 - oldest; i < changes_.size(); ++i) {
    const Change& c = changes_[i];
    reply->set_last_seq(c.seq);
    if (c.origin == origin) continue;
    auto key = c.what.ino() != 0 ? std::make_pair(c.what.ino(), std::string())
                                 : std::make_pair(c.what.parent(), c.what.name());
    if (!seen.insert(std::move(key)).second) continue;
    *reply->add_changes() = c.what;
    if (reply->changes_size() >= kMaxChangesPerReply) break;
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
