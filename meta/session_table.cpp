#include "meta/session_table.h"

namespace spool::meta {

SessionTable::SessionTable(std::chrono::milliseconds timeout) : timeout_(timeout) {
  // Ids start from the wall clock in microseconds, so an id handed out before
  // a restart is not handed out again to another mount after it.
  next_id_ = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

uint64_t SessionTable::Open(const std::string& host) {
  std::lock_guard lock(mu_);
  uint64_t id = ++next_id_;
  sessions_[id] = Session{host, Clock::now(), {}};
  return id;
}

bool SessionTable::Renew(uint64_t session) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return false;
  it->second.renewed = Clock::now();
  return true;
}

std::vector<uint64_t> SessionTable::DropLocked(uint64_t session) {
  std::vector<uint64_t> inos;
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return inos;
  for (auto& [ino, count] : it->second.opens) {
    auto oc = open_count_.find(ino);
    if (oc != open_count_.end()) {
      oc->second = oc->second > count ? oc->second - count : 0;
      if (oc->second == 0) open_count_.erase(oc);
    }
    inos.push_back(ino);
  }
  sessions_.erase(it);
  return inos;
}

std::vector<uint64_t> SessionTable::Close(uint64_t session) {
  std::lock_guard lock(mu_);
  return DropLocked(session);
}

SessionTable::Session& SessionTable::AdoptLocked(uint64_t session) {
  auto [it, inserted] = sessions_.try_emplace(session);
  if (inserted) {
    it->second.host = "(adopted)";
    it->second.renewed = Clock::now();
  }
  return it->second;
}

void SessionTable::Adopt(uint64_t session) {
  if (session == 0) return;
  std::lock_guard lock(mu_);
  AdoptLocked(session);
}

bool SessionTable::Known(uint64_t session) const {
  std::lock_guard lock(mu_);
  return sessions_.count(session) != 0;
}

void SessionTable::AddOpen(uint64_t session, uint64_t ino) {
  if (session == 0) return;
  std::lock_guard lock(mu_);
  ++AdoptLocked(session).opens[ino];
  ++open_count_[ino];
}

bool SessionTable::RemoveOpen(uint64_t session, uint64_t ino) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it != sessions_.end()) {
    auto o = it->second.opens.find(ino);
    if (o != it->second.opens.end()) {
      if (--o->second == 0) it->second.opens.erase(o);
      auto oc = open_count_.find(ino);
      if (oc != open_count_.end() && --oc->second == 0) open_count_.erase(oc);
    }
  }
  return open_count_.find(ino) == open_count_.end();
}

bool SessionTable::IsOpen(uint64_t ino) const {
  std::lock_guard lock(mu_);
  return open_count_.count(ino) != 0;
}

std::vector<SessionTable::Expired> SessionTable::ExpireStale(Clock::time_point now) {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> stale;
  for (auto& [id, s] : sessions_)
    if (now - s.renewed > timeout_) stale.push_back(id);
  std::vector<Expired> out;
  for (uint64_t id : stale) out.push_back(Expired{id, DropLocked(id)});
  return out;
}

size_t SessionTable::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

}  // namespace spool::meta
