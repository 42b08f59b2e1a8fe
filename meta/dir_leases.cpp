#include "meta/dir_leases.h"

#include "common/log.h"

namespace spool::meta {

uint64_t DirLeases::Grant(uint64_t dir, uint64_t conn) {
  std::lock_guard lock(mu_);
  if (auto recalled = recalled_at_.find(dir); recalled != recalled_at_.end()) {
    if (Clock::now() - recalled->second < kContendedFor) return 0;
    recalled_at_.erase(recalled);
  }
  auto [it, added] = leases_.try_emplace(dir);
  Lease& lease = it->second;
  if (added) {
    lease.conn = conn;
    lease.id = next_id_++;
    return lease.id;
  }
  return lease.conn == conn && !lease.recalling ? lease.id : 0;
}

bool DirLeases::BeforeAdd(uint64_t dir, uint64_t conn, std::function<void()> proceed, uint64_t* recall) {
  *recall = 0;
  std::lock_guard lock(mu_);
  auto it = leases_.find(dir);
  if (it == leases_.end() || (it->second.conn == conn && !it->second.recalling)) return true;
  Lease& lease = it->second;
  if (!lease.recalling) {
    lease.recalling = true;
    lease.recalled_at = Clock::now();
    *recall = lease.id;
  }
  lease.waiting.push_back(std::move(proceed));
  return false;
}

void DirLeases::Release(uint64_t dir, uint64_t conn, uint64_t lease_id) {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(mu_);
    auto it = leases_.find(dir);
    if (it == leases_.end() || it->second.conn != conn || it->second.id != lease_id) return;
    work = EndLocked(it);
  }
  Run(work);
}

void DirLeases::ReleaseAllOf(uint64_t conn) {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(mu_);
    for (auto it = leases_.begin(); it != leases_.end();) {
      auto next = std::next(it);
      if (it->second.conn == conn) {
        auto w = EndLocked(it);
        for (auto& f : w) work.push_back(std::move(f));
      }
      it = next;
    }
  }
  Run(work);
}

void DirLeases::Expire(Clock::time_point now) {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(mu_);
    std::erase_if(recalled_at_, [&](const auto& r) { return now - r.second >= kContendedFor; });
    for (auto it = leases_.begin(); it != leases_.end();) {
      auto next = std::next(it);
      if (it->second.recalling && now - it->second.recalled_at >= recall_timeout_) {
        SPOOL_LOG_WARN("meta dir_lease recall timed out dir={} conn={} waiting={}", it->first, it->second.conn,
                       it->second.waiting.size());
        auto w = EndLocked(it);
        for (auto& f : w) work.push_back(std::move(f));
      }
      it = next;
    }
  }
  Run(work);
}

size_t DirLeases::held() const {
  std::lock_guard lock(mu_);
  return leases_.size();
}

std::vector<std::function<void()>> DirLeases::EndLocked(std::unordered_map<uint64_t, Lease>::iterator it) {
  auto work = std::move(it->second.waiting);
  if (it->second.recalling) recalled_at_[it->first] = Clock::now();
  leases_.erase(it);
  return work;
}

void DirLeases::Run(std::vector<std::function<void()>>& work) {
  for (auto& f : work) f();
}

}  // namespace spool::meta
