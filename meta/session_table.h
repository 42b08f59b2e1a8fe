// SessionTable: client sessions (one per mount) and the files each has open.
// In memory only: sessions do not survive a meta restart; clients open a new
// one (SessionHeartbeat answers ENOENT for an unknown id).
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace spool::meta {

class SessionTable {
 public:
  using Clock = std::chrono::steady_clock;

  explicit SessionTable(std::chrono::milliseconds timeout);

  uint64_t Open(const std::string& host);
  // Extends the lease; false if the session is unknown (expired or never seen).
  bool Renew(uint64_t session);
  // Ends a session; returns the inodes it had open (empty if unknown).
  std::vector<uint64_t> Close(uint64_t session);

  // Registers one open of `ino` by `session`. An unknown non-zero session is
  // adopted (a client riding through a meta restart opens before its next
  // heartbeat); it expires like any other if never renewed.
  void AddOpen(uint64_t session, uint64_t ino);
  // Adopts `session` if unknown (as AddOpen does), so that it expires unless
  // its client renews it: a session that holds chunk ids after a restart.
  void Adopt(uint64_t session);
  bool Known(uint64_t session) const;
  // Drops one open; true if `ino` is now open by no session at all.
  bool RemoveOpen(uint64_t session, uint64_t ino);
  bool IsOpen(uint64_t ino) const;

  struct Expired {
    uint64_t session;
    std::vector<uint64_t> open_inodes;
  };
  // Removes sessions not renewed within the timeout.
  std::vector<Expired> ExpireStale(Clock::time_point now);

  size_t size() const;
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  struct Session {
    std::string host;
    Clock::time_point renewed;
    std::map<uint64_t, uint32_t> opens;  // ino -> open count
  };
  std::vector<uint64_t> DropLocked(uint64_t session);  // REQUIRES: mu_ held
  Session& AdoptLocked(uint64_t session);              // REQUIRES: mu_ held

  const std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;  // guards everything below
  uint64_t next_id_;
  std::unordered_map<uint64_t, Session> sessions_;
  std::unordered_map<uint64_t, uint32_t> open_count_;  // ino -> opens over all sessions
};

}  // namespace spool::meta
