// Locks (POSIX per-owner semantics, flock namespace, waiting), sessions
// (opens, expiry) and directory name leases (grant, recall, timeout).
#include <fcntl.h>
#include <gtest/gtest.h>

#include <limits>
#include <thread>

#include "meta/dir_leases.h"
#include "meta/lock_table.h"
#include "meta/session_table.h"

namespace spool::meta {
namespace {

constexpr uint64_t kEof = std::numeric_limits<uint64_t>::max();

proto::LockRequest Req(uint64_t session, uint64_t owner, uint64_t start, uint64_t end, uint32_t type,
                       bool flock = false, bool wait = false) {
  proto::LockRequest r;
  r.set_ino(7);
  r.set_session_id(session);
  r.set_owner(owner);
  r.set_start(start);
  r.set_end(end);
  r.set_type(type);
  r.set_flock(flock);
  r.set_wait(wait);
  return r;
}

int Set(LockTable& t, const proto::LockRequest& r) {
  int code = -1;
  t.SetLock(r, [&](const Status& s) { code = s.code(); });
  return code;
}

TEST(LockTableTest, PosixSemantics) {
  LockTable t;
  EXPECT_EQ(Set(t, Req(1, 1, 0, 99, F_WRLCK)), 0);
  EXPECT_EQ(Set(t, Req(2, 1, 50, 60, F_RDLCK)), EAGAIN);
  EXPECT_EQ(Set(t, Req(1, 2, 50, 60, F_RDLCK)), EAGAIN);  // another owner of the same session
  EXPECT_EQ(Set(t, Req(2, 1, 100, kEof, F_WRLCK)), 0);    // disjoint
  // Own lock: convert the middle to a read lock (splits in three).
  EXPECT_EQ(Set(t, Req(1, 1, 40, 59, F_RDLCK)), 0);
  EXPECT_EQ(Set(t, Req(3, 1, 45, 50, F_RDLCK)), 0);  // shares the read part
  EXPECT_EQ(Set(t, Req(3, 1, 30, 30, F_RDLCK)), EAGAIN);
  auto g = t.GetLock(Req(3, 1, 0, 10, F_RDLCK));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->type(), static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(g->start(), 0u);
  EXPECT_EQ(g->end(), 39u);
  // Unlock part of it, then the rest.
  EXPECT_EQ(Set(t, Req(1, 1, 0, 39, F_UNLCK)), 0);
  EXPECT_EQ(Set(t, Req(3, 1, 0, 10, F_WRLCK)), 0);
  EXPECT_EQ(Set(t, Req(1, 1, 0, 10, F_RDLCK)), EAGAIN);
  g = t.GetLock(Req(4, 1, 200, 300, F_RDLCK));
  EXPECT_EQ(g->type(), static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(g->end(), kEof);
  EXPECT_EQ(Set(t, Req(1, 1, 10, 5, F_RDLCK)), EINVAL);
  EXPECT_EQ(Set(t, Req(1, 1, 0, 5, 99)), EINVAL);
}

TEST(LockTableTest, FlockIsItsOwnNamespaceAndMerges) {
  LockTable t;
  EXPECT_EQ(Set(t, Req(1, 1, 0, kEof, F_WRLCK, /*flock=*/true)), 0);
  EXPECT_EQ(Set(t, Req(2, 1, 0, 10, F_WRLCK)), 0);  // fcntl ignores flock
  EXPECT_EQ(Set(t, Req(2, 1, 0, 0, F_RDLCK, true)), EAGAIN);
  // Adjacent own ranges of one type merge into one lock.
  EXPECT_EQ(Set(t, Req(2, 1, 11, 20, F_WRLCK)), 0);
  EXPECT_EQ(t.lock_count(), 2u);
}

TEST(LockTableTest, WaitersAreGrantedOnReleaseAndSessionEnd) {
  LockTable t;
  EXPECT_EQ(Set(t, Req(1, 1, 0, 10, F_WRLCK)), 0);
  int waited = -1;
  t.SetLock(Req(2, 1, 5, 5, F_WRLCK, false, /*wait=*/true), [&](const Status& s) { waited = s.code(); });
  EXPECT_EQ(waited, -1);
  EXPECT_EQ(Set(t, Req(1, 1, 0, 10, F_UNLCK)), 0);
  EXPECT_EQ(waited, 0);
  int second = -1;
  t.SetLock(Req(3, 1, 0, 100, F_RDLCK, false, true), [&](const Status& s) { second = s.code(); });
  EXPECT_EQ(second, -1);
  t.ReleaseSession(2);  // the holder's session expires
  EXPECT_EQ(second, 0);
  int dropped = -1;
  t.SetLock(Req(4, 1, 0, 0, F_WRLCK, false, true), [&](const Status& s) { dropped = s.code(); });
  t.ReleaseSession(4);
  EXPECT_EQ(dropped, EINTR);
}

TEST(SessionTableTest, OpensAndExpiry) {
  SessionTable s(std::chrono::milliseconds(50));
  const uint64_t a = s.Open("host-a"), b = s.Open("host-b");
  EXPECT_NE(a, b);
  s.AddOpen(a, 10);
  s.AddOpen(a, 10);
  s.AddOpen(b, 10);
  EXPECT_FALSE(s.RemoveOpen(a, 10));
  EXPECT_FALSE(s.RemoveOpen(a, 10));
  EXPECT_TRUE(s.IsOpen(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_TRUE(s.Renew(a));
  auto expired = s.ExpireStale(SessionTable::Clock::now());
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].session, b);
  EXPECT_EQ(expired[0].open_inodes, std::vector<uint64_t>{10});
  EXPECT_FALSE(s.IsOpen(10));
  EXPECT_FALSE(s.Renew(b));
  EXPECT_EQ(s.size(), 1u);
  s.AddOpen(777, 11);  // unknown session adopted (client riding through a restart)
  EXPECT_TRUE(s.IsOpen(11));
  EXPECT_EQ(s.Close(777), std::vector<uint64_t>{11});
}


TEST(DirLeases, AnAddByAnotherConnectionWaitsForTheHolderToGiveTheLeaseBack) {
  DirLeases leases(std::chrono::milliseconds(2000));
  const uint64_t lease = leases.Grant(/*dir=*/5, /*conn=*/1);
  ASSERT_NE(lease, 0u);
  EXPECT_EQ(leases.Grant(5, 1), lease);  // the holder again: the same lease
  EXPECT_EQ(leases.Grant(5, 2), 0u);     // one holder at a time

  uint64_t recall = 99;
  EXPECT_TRUE(leases.BeforeAdd(5, 1, [] {}, &recall));  // the holder's own add goes through
  EXPECT_EQ(recall, 0u);
  EXPECT_TRUE(leases.BeforeAdd(6, 2, [] {}, &recall));  // another directory: no lease
  int ran = 0;
  EXPECT_FALSE(leases.BeforeAdd(5, 2, [&] { ++ran; }, &recall));
  EXPECT_EQ(recall, lease);  // the first waiting add sends the recall
  EXPECT_FALSE(leases.BeforeAdd(5, 3, [&] { ++ran; }, &recall));
  EXPECT_EQ(recall, 0u);  // already being recalled
  EXPECT_EQ(leases.Grant(5, 1), 0u);  // not while recalled, not even to its holder
  EXPECT_EQ(ran, 0);

  leases.Release(5, 2, lease);  // not the holder: ignored
  leases.Release(5, 1, lease + 1);  // not this lease: ignored
  EXPECT_EQ(ran, 0);
  leases.Release(5, 1, lease);
  EXPECT_EQ(ran, 2);
  EXPECT_EQ(leases.held(), 0u);
  // Contended: no lease on it for a while (each add would pay a recall).
  EXPECT_EQ(leases.Grant(5, 2), 0u);
  EXPECT_NE(leases.Grant(6, 2), 0u);  // other directories as before
  leases.Expire(DirLeases::Clock::now() + DirLeases::kContendedFor + std::chrono::seconds(1));
  const uint64_t again = leases.Grant(5, 2);
  EXPECT_NE(again, 0u);
  EXPECT_NE(again, lease);  // a fresh lease, a fresh id
}

TEST(DirLeases, ARecallNobodyAnswersTimesOutAndLetsTheAddsGo) {
  DirLeases leases(std::chrono::milliseconds(2000));
  const uint64_t lease = leases.Grant(5, 1);
  int ran = 0;
  uint64_t recall = 0;
  ASSERT_FALSE(leases.BeforeAdd(5, 2, [&] { ++ran; }, &recall));
  const auto now = DirLeases::Clock::now();
  leases.Expire(now + std::chrono::milliseconds(1000));
  EXPECT_EQ(ran, 0);
  leases.Expire(now + std::chrono::milliseconds(2100));
  EXPECT_EQ(ran, 1);
  leases.Release(5, 1, lease);  // late: nothing left to release
  EXPECT_EQ(ran, 1);
}

TEST(DirLeases, AnEndedSessionGivesAllItsLeasesBack) {
  DirLeases leases(std::chrono::milliseconds(2000));
  leases.Grant(5, 1);
  leases.Grant(6, 1);
  leases.Grant(7, 2);
  int ran = 0;
  uint64_t recall = 0;
  ASSERT_FALSE(leases.BeforeAdd(6, 3, [&] { ++ran; }, &recall));
  leases.ReleaseAllOf(1);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(leases.held(), 1u);
}

}  // namespace
}  // namespace spool::meta
