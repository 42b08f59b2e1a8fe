// client::DirAttrs, the mount's copies of directory attributes from the
// replies of its own changes: the orders in which replies and other mounts'
// invalidations can arrive, and when a copy may no longer answer. (The
// mount tests drive it through the kernel: Coherence.DirectoryAttributes*.)
#include "fusemount/client/dir_attrs.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "fusemount/client/dir_names.h"

namespace spool::client {
namespace {

using Clock = DirAttrs::Clock;

google::protobuf::RepeatedPtrField<proto::Attr> Dirs(std::initializer_list<std::pair<uint64_t, int64_t>> ino_mtime,
                                                      uint32_t nlink = 2) {
  google::protobuf::RepeatedPtrField<proto::Attr> dirs;
  for (auto [ino, mtime] : ino_mtime) {
    auto* a = dirs.Add();
    a->set_ino(ino);
    a->set_mode(S_IFDIR | 0755);
    a->set_nlink(nlink);
    a->set_mtime_ns(mtime);
  }
  return dirs;
}

int64_t MtimeOf(const DirAttrs& attrs, uint64_t ino) {
  auto a = attrs.Find(ino, Clock::now());
  return a ? a->mtime_ns() : -1;
}

// Copies of a mount whose watch has just heard from meta.
class HeardDirAttrs : public ::testing::Test {
 protected:
  void SetUp() override { attrs.Heard(Clock::now()); }
  DirAttrs attrs;
};

TEST_F(HeardDirAttrs, AnOwnChangeAnswersUntilAnotherMountChangesTheDirectory) {
  attrs.Offer(Dirs({{10, 100}, {11, 100}}), 5, attrs.Epoch());
  EXPECT_EQ(MtimeOf(attrs, 10), 100);
  EXPECT_EQ(MtimeOf(attrs, 11), 100);
  EXPECT_EQ(MtimeOf(attrs, 12), -1);
  attrs.Changed(10, 6);  // another mount, after ours
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  EXPECT_EQ(MtimeOf(attrs, 11), 100);
  attrs.Changed(11, 4);  // before ours: our copy already shows it
  EXPECT_EQ(MtimeOf(attrs, 11), 100);
}

TEST_F(HeardDirAttrs, AReplyOlderThanAChangeAlreadySeenIsRefused) {
  const uint64_t epoch = attrs.Epoch();
  attrs.Changed(10, 8);  // the invalidation of change 8 overtook the reply of our change 7
  attrs.Offer(Dirs({{10, 70}}), 7, epoch);
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  attrs.Offer(Dirs({{10, 90}}), 9, epoch);
  EXPECT_EQ(MtimeOf(attrs, 10), 90);
}

TEST_F(HeardDirAttrs, RepliesOfConcurrentChangesKeepTheLatest) {
  const uint64_t epoch = attrs.Epoch();
  attrs.Offer(Dirs({{10, 200}}), 20, epoch);
  attrs.Offer(Dirs({{10, 190}}), 19, epoch);  // its reply came second
  EXPECT_EQ(MtimeOf(attrs, 10), 200);
  attrs.Offer(Dirs({{10, 210}}), 21, epoch);
  EXPECT_EQ(MtimeOf(attrs, 10), 210);
}

TEST_F(HeardDirAttrs, AResetDropsEverythingAndRefusesRepliesOfChangesSentBefore) {
  const uint64_t before = attrs.Epoch();
  attrs.Offer(Dirs({{10, 100}}), 5, before);
  attrs.DropAll();
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  attrs.Offer(Dirs({{10, 110}}), 6, before);  // sent before the reset: changes may have been missed
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  attrs.Offer(Dirs({{10, 120}}), 7, attrs.Epoch());
  EXPECT_EQ(MtimeOf(attrs, 10), 120);
  // A change from a meta that does not number them: the same.
  const uint64_t epoch = attrs.Epoch();
  attrs.Changed(10, 0);
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  attrs.Offer(Dirs({{10, 130}}), 8, epoch);
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
}

TEST_F(HeardDirAttrs, ARemovedDirectoryAndAFileAreNotKept) {
  attrs.Offer(Dirs({{10, 100}}), 5, attrs.Epoch());
  attrs.Offer(Dirs({{10, 110}}, 0), 6, attrs.Epoch());  // rmdir
  EXPECT_EQ(MtimeOf(attrs, 10), -1);
  auto file = Dirs({{11, 100}});
  file.Mutable(0)->set_mode(S_IFREG | 0644);
  attrs.Offer(file, 7, attrs.Epoch());
  EXPECT_EQ(MtimeOf(attrs, 11), -1);
  attrs.Offer(Dirs({{12, 100}}), 0, attrs.Epoch());  // an older meta: no op number
  EXPECT_EQ(MtimeOf(attrs, 12), -1);
}

TEST(DirAttrs, CopiesAnswerOnlyWhileTheWatchHearsFromMeta) {
  DirAttrs attrs;
  attrs.Offer(Dirs({{10, 100}}), 5, attrs.Epoch());
  EXPECT_EQ(MtimeOf(attrs, 10), -1);  // never heard
  const auto now = Clock::now();
  attrs.Heard(now);
  EXPECT_TRUE(attrs.Find(10, now + DirNames::kTrustFor).has_value());
  EXPECT_FALSE(attrs.Find(10, now + DirNames::kTrustFor + std::chrono::milliseconds(1)).has_value());
}

TEST_F(HeardDirAttrs, HoldsAtMostMaxEntries) {
  for (uint64_t ino = 1; ino <= DirAttrs::kMaxEntries * 2 + 1; ++ino)
    attrs.Offer(Dirs({{ino, 1}}), ino, attrs.Epoch());
  EXPECT_LE(attrs.size(), DirAttrs::kMaxEntries);
  EXPECT_EQ(MtimeOf(attrs, DirAttrs::kMaxEntries * 2 + 1), 1);  // the newest is kept
}

}  // namespace
}  // namespace spool::client
