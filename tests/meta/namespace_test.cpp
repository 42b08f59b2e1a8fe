// Namespace operations and their error cases, against the state machine
// directly (through the applier, as the daemon uses it).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <map>

#include "tests/meta/ns_harness.h"

namespace spool::testing {
namespace {

constexpr uint64_t kRoot = 1;

TEST(NamespaceTest, FormatsRootAndRefusesAnotherCluster) {
  NsHarness h;
  auto root = h.Attr(kRoot);
  EXPECT_EQ(root.mode(), static_cast<uint32_t>(S_IFDIR | 0755));
  EXPECT_EQ(root.uid(), 0u);
  EXPECT_EQ(root.nlink(), 2u);
  h.Close();
  auto other = meta::Namespace::Open(h.dir.Sub("db"), "another", 64, 3, 1000);
  EXPECT_EQ(other.status().code(), EINVAL);
  h.Open();
}

TEST(NamespaceTest, NameValidation) {
  NsHarness h;
  EXPECT_EQ(h.Create(kRoot, "", S_IFREG).status().code(), EINVAL);
  EXPECT_EQ(h.Create(kRoot, ".", S_IFREG).status().code(), EINVAL);
  EXPECT_EQ(h.Create(kRoot, "..", S_IFREG).status().code(), EINVAL);
  EXPECT_EQ(h.Create(kRoot, "a/b", S_IFREG).status().code(), EINVAL);
  EXPECT_EQ(h.Create(kRoot, std::string("a\0b", 3), S_IFREG).status().code(), EINVAL);
  EXPECT_EQ(h.Create(kRoot, std::string(256, 'x'), S_IFREG).status().code(), ENAMETOOLONG);
  EXPECT_TRUE(h.Create(kRoot, std::string(255, 'x'), S_IFREG).ok());
  EXPECT_EQ(h.LookupErr(kRoot, std::string(256, 'x')), ENAMETOOLONG);
  EXPECT_EQ(h.Unlink(kRoot, "a/b"), EINVAL);
  EXPECT_EQ(h.Rename(kRoot, std::string(255, 'x'), kRoot, ".."), EINVAL);
}

TEST(NamespaceTest, CreateKindsAndParentAttributes) {
  NsHarness h;
  const auto before = h.Attr(kRoot);
  auto dir = h.Create(kRoot, "d", S_IFDIR | 0700);
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(dir->nlink(), 2u);
  EXPECT_EQ(h.Attr(kRoot).nlink(), 3u);
  EXPECT_GE(h.Attr(kRoot).mtime_ns(), before.mtime_ns());
  auto file = h.Create(dir->ino(), "f", S_IFREG | 0600);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->nlink(), 1u);
  EXPECT_EQ(file->mode(), static_cast<uint32_t>(S_IFREG | 0600));
  auto link = h.Create(dir->ino(), "l", S_IFLNK | 0777, true, "target/path");
  ASSERT_TRUE(link.ok());
  EXPECT_EQ(h.ns->Readlink(link->ino()).value(), "target/path");
  EXPECT_EQ(link->size(), 11u);
  EXPECT_EQ(h.ns->Readlink(file->ino()).status().code(), EINVAL);
  EXPECT_EQ(h.Create(dir->ino(), "l2", S_IFLNK | 0777, true, "").status().code(), ENOENT);
  auto fifo = h.Create(dir->ino(), "p", S_IFIFO | 0644);
  ASSERT_TRUE(fifo.ok());
  EXPECT_TRUE(S_ISFIFO(fifo->mode()));
  EXPECT_EQ(h.Create(dir->ino(), "bad", 0170000 | 0644).status().code(), EINVAL);
  // exclusive vs open(O_CREAT) semantics
  EXPECT_EQ(h.Create(dir->ino(), "f", S_IFREG | 0600).status().code(), EEXIST);
  auto again = h.Create(dir->ino(), "f", S_IFREG | 0600, false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ino(), file->ino());
  EXPECT_EQ(h.Create(kRoot, "d", S_IFREG | 0600, false).status().code(), EEXIST);  // a dir is not reopened
  EXPECT_EQ(h.Create(file->ino(), "x", S_IFREG).status().code(), ENOTDIR);
  EXPECT_EQ(h.Create(999, "x", S_IFREG).status().code(), ENOENT);
  EXPECT_EQ(h.ns->Lookup(dir->ino(), "f")->ino(), file->ino());
  EXPECT_EQ(h.ns->Stats().inodes, 5u);
}

TEST(NamespaceTest, UnlinkAndRmdir) {
  NsHarness h;
  uint64_t d = h.Mkdir(kRoot, "d");
  uint64_t f = h.File(d, "f");
  EXPECT_EQ(h.Unlink(d, "missing"), ENOENT);
  EXPECT_EQ(h.Unlink(kRoot, "d"), EISDIR);
  EXPECT_EQ(h.Unlink(d, "f", true), ENOTDIR);
  EXPECT_EQ(h.Unlink(kRoot, "d", true), ENOTEMPTY);
  EXPECT_EQ(h.Unlink(d, "f"), 0);
  EXPECT_EQ(h.ns->GetAttr(f).status().code(), ENOENT);  // not open: deleted
  EXPECT_FALSE(h.ns->IsOrphan(f));
  EXPECT_EQ(h.Unlink(kRoot, "d", true), 0);
  EXPECT_EQ(h.Attr(kRoot).nlink(), 2u);
  EXPECT_EQ(h.ns->Stats().inodes, 1u);
}

TEST(NamespaceTest, OpenUnlinkedFileStaysUntilReleased) {
  NsHarness h;
  const uint64_t session = h.sessions->Open("host");
  auto f = h.Create(kRoot, "f", S_IFREG | 0644, true, "", session);  // create opens it
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(h.Unlink(kRoot, "f"), 0);
  EXPECT_TRUE(h.ns->IsOrphan(f->ino()));
  EXPECT_EQ(h.Attr(f->ino()).nlink(), 0u);
  EXPECT_EQ(h.LookupErr(kRoot, "f"), ENOENT);
  EXPECT_EQ(h.Link(f->ino(), kRoot, "g"), ENOENT);  // no resurrection
  ASSERT_TRUE(h.sessions->RemoveOpen(session, f->ino()));
  proto::MetaOp reclaim;
  reclaim.mutable_reclaim_orphan()->set_ino(f->ino());
  ASSERT_TRUE(h.Apply(reclaim).ok());
  EXPECT_EQ(h.ns->GetAttr(f->ino()).status().code(), ENOENT);
  EXPECT_TRUE(h.Apply(reclaim).ok());  // idempotent
}

TEST(NamespaceTest, RenameCases) {
  NsHarness h;
  uint64_t a = h.Mkdir(kRoot, "a");
  uint64_t b = h.Mkdir(kRoot, "b");
  uint64_t ab = h.Mkdir(a, "sub");
  uint64_t f = h.File(a, "f");
  uint64_t g = h.File(b, "g");
  EXPECT_EQ(h.Rename(a, "nope", b, "x"), ENOENT);
  EXPECT_EQ(h.Rename(kRoot, "a", ab, "x"), EINVAL);   // into its own subtree
  EXPECT_EQ(h.Rename(kRoot, "a", a, "x"), EINVAL);    // into itself
  EXPECT_EQ(h.Rename(a, "sub", kRoot, "a"), ENOTEMPTY);  // over its own ancestor
  EXPECT_EQ(h.Rename(a, "f", kRoot, "b"), EISDIR);
  EXPECT_EQ(h.Rename(kRoot, "b", a, "f"), ENOTDIR);
  EXPECT_EQ(h.Rename(a, "f", b, "g", RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(h.Rename(a, "f", b, "zz", RENAME_EXCHANGE), ENOENT);
  EXPECT_EQ(h.Rename(a, "f", b, "g", RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);
  EXPECT_EQ(h.Rename(a, "f", a, "f"), 0);  // onto itself
  // file over file: the target is dropped
  EXPECT_EQ(h.Rename(a, "f", b, "g"), 0);
  EXPECT_EQ(h.ns->Lookup(b, "g")->ino(), f);
  EXPECT_EQ(h.ns->GetAttr(g).status().code(), ENOENT);
  EXPECT_EQ(h.LookupErr(a, "f"), ENOENT);
  // directory across parents: nlink of both parents, parent pointer
  EXPECT_EQ(h.Attr(a).nlink(), 3u);
  EXPECT_EQ(h.Rename(a, "sub", b, "sub"), 0);
  EXPECT_EQ(h.Attr(a).nlink(), 2u);
  EXPECT_EQ(h.Attr(b).nlink(), 3u);
  EXPECT_EQ(h.Rename(kRoot, "b", ab, "x"), EINVAL);  // parent pointer was updated
  // dir over empty dir, dir over non-empty dir
  uint64_t e = h.Mkdir(kRoot, "empty");
  EXPECT_EQ(h.Rename(b, "sub", kRoot, "empty"), 0);
  EXPECT_EQ(h.ns->GetAttr(e).status().code(), ENOENT);
  EXPECT_EQ(h.ns->Lookup(kRoot, "empty")->ino(), ab);
  EXPECT_EQ(h.Rename(kRoot, "a", kRoot, "b"), ENOTEMPTY);
  // exchange a dir and a file across parents
  EXPECT_EQ(h.Rename(kRoot, "empty", b, "g", RENAME_EXCHANGE), 0);
  EXPECT_EQ(h.ns->Lookup(kRoot, "empty")->ino(), f);
  EXPECT_EQ(h.ns->Lookup(b, "g")->ino(), ab);
  EXPECT_EQ(h.Attr(b).nlink(), 3u);
  EXPECT_EQ(h.Attr(kRoot).nlink(), 4u);  // a, b, (empty is now a file) ... a, b + root's own 2
}

// What a mount answers the kernel's GETATTR of a directory with, after a
// change of its own (client::DirAttrs): every directory the op touched, as
// it is now, and removed ones with nlink 0; never a file.
TEST(NamespaceTest, ChangesReturnTheDirectoriesTheyTouchedAsTheyAreNow) {
  NsHarness h;
  uint64_t a = h.Mkdir(kRoot, "a");
  uint64_t b = h.Mkdir(kRoot, "b");
  auto dirs_of = [&](proto::MetaOp op) {
    auto r = h.Apply(std::move(op));
    EXPECT_TRUE(r.ok()) << r.status().message();
    std::map<uint64_t, proto::Attr> dirs;
    if (!r.ok()) return dirs;
    EXPECT_GT(r->seq, 0u);
    for (const auto& d : r->changed_dirs) dirs[d.ino()] = d;
    return dirs;
  };
  auto same = [&](const proto::Attr& got, uint64_t ino) {
    auto now = h.Attr(ino);
    EXPECT_EQ(got.mtime_ns(), now.mtime_ns());
    EXPECT_EQ(got.ctime_ns(), now.ctime_ns());
    EXPECT_EQ(got.nlink(), now.nlink());
    EXPECT_EQ(got.mode(), now.mode());
  };
  proto::MetaOp create;
  create.mutable_create()->set_parent(a);
  create.mutable_create()->set_name("f");
  create.mutable_create()->set_mode(S_IFREG | 0644);
  auto dirs = dirs_of(create);
  ASSERT_EQ(dirs.size(), 1u);  // a; the new file is not a directory
  same(dirs[a], a);

  proto::MetaOp rename;
  rename.mutable_rename()->set_old_parent(a);
  rename.mutable_rename()->set_old_name("f");
  rename.mutable_rename()->set_new_parent(b);
  rename.mutable_rename()->set_new_name("f:2,S");
  dirs = dirs_of(rename);
  ASSERT_EQ(dirs.size(), 2u);
  same(dirs[a], a);
  same(dirs[b], b);

  uint64_t sub = h.Mkdir(a, "sub");
  proto::MetaOp move_dir;
  move_dir.mutable_rename()->set_old_parent(a);
  move_dir.mutable_rename()->set_old_name("sub");
  move_dir.mutable_rename()->set_new_parent(b);
  move_dir.mutable_rename()->set_new_name("sub");
  dirs = dirs_of(move_dir);
  ASSERT_EQ(dirs.size(), 3u);  // both parents (nlink) and the moved directory (ctime)
  same(dirs[a], a);
  same(dirs[b], b);
  same(dirs[sub], sub);
  EXPECT_EQ(dirs[b].nlink(), 3u);

  proto::MetaOp rmdir;
  rmdir.mutable_unlink()->set_parent(b);
  rmdir.mutable_unlink()->set_name("sub");
  rmdir.mutable_unlink()->set_directory(true);
  dirs = dirs_of(rmdir);
  ASSERT_EQ(dirs.size(), 2u);
  same(dirs[b], b);
  EXPECT_EQ(dirs[sub].nlink(), 0u);  // gone
  EXPECT_TRUE(S_ISDIR(dirs[sub].mode()));

  proto::MetaOp unlink;
  unlink.mutable_unlink()->set_parent(b);
  unlink.mutable_unlink()->set_name("f:2,S");
  dirs = dirs_of(unlink);
  ASSERT_EQ(dirs.size(), 1u);
  same(dirs[b], b);
}

TEST(NamespaceTest, HardLinks) {
  NsHarness h;
  uint64_t d = h.Mkdir(kRoot, "d");
  uint64_t f = h.File(d, "tmp");
  EXPECT_EQ(h.Link(d, kRoot, "x"), EPERM);
  EXPECT_EQ(h.Link(f, d, "tmp"), EEXIST);
  EXPECT_EQ(h.Link(f, f, "x"), ENOTDIR);
  EXPECT_EQ(h.Link(f, d, "new"), 0);
  EXPECT_EQ(h.Attr(f).nlink(), 2u);
  EXPECT_EQ(h.Rename(d, "tmp", d, "new"), 0);  // same inode: no-op, both names stay
  EXPECT_EQ(h.LookupErr(d, "tmp"), 0);
  EXPECT_EQ(h.Unlink(d, "tmp"), 0);
  EXPECT_EQ(h.Attr(f).nlink(), 1u);
  EXPECT_EQ(h.ns->Lookup(d, "new")->ino(), f);
}

proto::Extent MakeExtent(uint64_t off, uint32_t len, uint64_t chunk, uint32_t chunk_off = 0, uint32_t chunk_len = 0) {
  proto::Extent e;
  e.set_file_offset(off);
  e.set_length(len);
  e.set_chunk_id(chunk);
  e.set_chunk_offset(chunk_off);
  e.set_chunk_length(chunk_len ? chunk_len : chunk_off + len);
  return e;
}

int Commit(NsHarness& h, uint64_t ino, std::vector<proto::Extent> extents, uint64_t min_size, uint64_t version = 0) {
  proto::MetaOp op;
  auto* c = op.mutable_commit_write();
  c->set_ino(ino);
  for (auto& e : extents) *c->add_extents() = e;
  c->set_min_size(min_size);
  c->set_expected_version(version);
  return h.Apply(std::move(op)).status().code();
}

TEST(NamespaceTest, ExtentsOfARangeAreThoseOfTheSlotsItTouches) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "image");
  constexpr uint64_t kMiB = 1 << 20;
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, 4096, 10), MakeExtent(kMiB + 4096, 4096, 11), MakeExtent(2 * kMiB, 100, 12),
                          MakeExtent(5 * kMiB, 100, 13)},
                   5 * kMiB + 100),
            0);
  auto chunks = [&](uint64_t offset, uint64_t length) {
    proto::Attr attr;
    google::protobuf::RepeatedPtrField<proto::Extent> ex;
    EXPECT_TRUE(h.ns->GetExtents(f, &attr, &ex, offset, length).ok());
    std::vector<uint64_t> ids;
    for (const auto& e : ex) ids.push_back(e.chunk_id());
    return ids;
  };
  EXPECT_EQ(chunks(kMiB, kMiB), (std::vector<uint64_t>{11}));
  EXPECT_EQ(chunks(kMiB - 1, 2), (std::vector<uint64_t>{10, 11}));  // whole slots, not just the bytes
  EXPECT_EQ(chunks(kMiB, kMiB + 1), (std::vector<uint64_t>{11, 12}));
  EXPECT_EQ(chunks(3 * kMiB, kMiB), (std::vector<uint64_t>{}));
  EXPECT_EQ(chunks(0, 0), (std::vector<uint64_t>{10, 11, 12, 13}));  // length 0: the whole file
  proto::Attr attr;
  google::protobuf::RepeatedPtrField<proto::Extent> ex;
  EXPECT_EQ(h.ns->GetExtents(f, &attr, &ex, UINT64_MAX - 10, 100).code(), EINVAL);
}

TEST(NamespaceTest, CommitWriteOverlaysExtents) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "f");
  const auto v0 = h.Attr(f).version();
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, 1000, 10)}, 1000, v0), 0);
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, 11)}, 10, v0), ESTALE);
  // Overwrite the middle: the old extent splits in two around the new one.
  ASSERT_EQ(Commit(h, f, {MakeExtent(100, 50, 11)}, 150), 0);
  proto::Attr attr;
  google::protobuf::RepeatedPtrField<proto::Extent> ex;
  ASSERT_TRUE(h.ns->GetExtents(f, &attr, &ex).ok());
  ASSERT_EQ(ex.size(), 3);
  EXPECT_EQ(ex[0].file_offset(), 0u);
  EXPECT_EQ(ex[0].length(), 100u);
  EXPECT_EQ(ex[1].chunk_id(), 11u);
  EXPECT_EQ(ex[2].file_offset(), 150u);
  EXPECT_EQ(ex[2].chunk_offset(), 150u);
  EXPECT_EQ(ex[2].length(), 850u);
  EXPECT_EQ(ex[2].chunk_id(), 10u);
  EXPECT_EQ(attr.size(), 1000u);
  EXPECT_EQ(attr.version(), v0 + 2);
  // Cover everything: chunks 10 and 11 become unreferenced and are queued.
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, 1000, 12)}, 1000), 0);
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{10, 11}));
  EXPECT_EQ(h.ns->Stats().deletion_queue, 2u);
  // A second slot, then truncate down into the first: slot 1 goes, slot 0 is trimmed.
  ASSERT_EQ(Commit(h, f, {MakeExtent(1 << 20, 100, 13)}, (1 << 20) + 100), 0);
  proto::MetaOp trunc;
  trunc.mutable_setattr()->set_ino(f);
  trunc.mutable_setattr()->set_set_size(true);
  trunc.mutable_setattr()->set_size(500);
  auto r = h.Apply(trunc);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->attr.size(), 500u);
  ex.Clear();
  ASSERT_TRUE(h.ns->GetExtents(f, &attr, &ex).ok());
  ASSERT_EQ(ex.size(), 1);
  EXPECT_EQ(ex[0].length(), 500u);
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{10, 11, 13}));
  // Unlinking queues the rest.
  EXPECT_EQ(h.Unlink(kRoot, "f"), 0);
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{10, 11, 12, 13}));
  proto::MetaOp deleted;
  for (uint64_t c : {10, 11}) deleted.mutable_chunks_deleted()->add_chunks()->set_chunk_id(c);
  ASSERT_TRUE(h.Apply(deleted).ok());
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{12, 13}));
  EXPECT_EQ(h.ns->Stats().deletion_queue, 2u);
}

// Compaction rewrites one slot into a new chunk: refused only when that
// slot changed since it was read, and the file's times stay as they were.
TEST(NamespaceTest, SlotRewriteChecksOnlyItsSlotAndKeepsTimes) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "image");
  constexpr uint32_t kMiB = 1 << 20;
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, kMiB, 10), MakeExtent(kMiB, kMiB, 11)}, 2 * kMiB), 0);
  ASSERT_EQ(Commit(h, f, {MakeExtent(4096, 4096, 12)}, 2 * kMiB), 0);  // a guest's overwrite: slot 0 in 3 pieces
  proto::Attr attr;
  google::protobuf::RepeatedPtrField<proto::Extent> slot0;
  ASSERT_TRUE(h.ns->GetExtents(f, &attr, &slot0, 0, kMiB).ok());
  ASSERT_EQ(slot0.size(), 3);
  auto rewrite = [&](uint64_t chunk, const google::protobuf::RepeatedPtrField<proto::Extent>& before) {
    proto::MetaOp op;
    auto* c = op.mutable_commit_write();
    c->set_ino(f);
    *c->add_extents() = MakeExtent(0, kMiB, chunk);
    c->set_min_size(kMiB);
    c->set_slot_rewrite(true);
    *c->mutable_slot_extents_before() = before;
    return h.Apply(std::move(op)).status().code();
  };
  // A write into another slot meanwhile does not matter.
  ASSERT_EQ(Commit(h, f, {MakeExtent(kMiB + 100, 100, 13)}, 2 * kMiB), 0);
  const auto times_before = h.Attr(f);
  EXPECT_EQ(rewrite(14, slot0), 0);
  const auto after = h.Attr(f);
  EXPECT_EQ(after.mtime_ns(), times_before.mtime_ns());
  EXPECT_EQ(after.ctime_ns(), times_before.ctime_ns());
  EXPECT_EQ(after.size(), 2u * kMiB);
  google::protobuf::RepeatedPtrField<proto::Extent> now;
  ASSERT_TRUE(h.ns->GetExtents(f, &attr, &now, 0, kMiB).ok());
  ASSERT_EQ(now.size(), 1);
  EXPECT_EQ(now[0].chunk_id(), 14u);
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{10, 12}));
  // The same rewrite again: slot 0 is no longer what it was read as.
  EXPECT_EQ(rewrite(15, slot0), ESTALE);
  // A rewrite must stay in one slot.
  proto::MetaOp two;
  auto* c = two.mutable_commit_write();
  c->set_ino(f);
  *c->add_extents() = MakeExtent(0, 100, 16);
  *c->add_extents() = MakeExtent(kMiB, 100, 17);
  c->set_slot_rewrite(true);
  EXPECT_EQ(h.Apply(std::move(two)).status().code(), EINVAL);
}

TEST(NamespaceTest, CommitWriteValidation) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "f");
  uint64_t d = h.Mkdir(kRoot, "d");
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 0, 1)}, 0), EINVAL);                  // empty
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, 0)}, 10), EINVAL);                // chunk 0
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, 1, 5, 10)}, 10), EINVAL);         // beyond chunk
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, 1, 0, (1 << 20) + 1)}, 10), EINVAL);  // chunk > 1 MiB
  EXPECT_EQ(Commit(h, f, {MakeExtent((1 << 20) - 5, 10, 1)}, 0), EINVAL);     // crosses a slot
  EXPECT_EQ(Commit(h, d, {MakeExtent(0, 10, 1)}, 10), EISDIR);
  EXPECT_EQ(Commit(h, 12345, {MakeExtent(0, 10, 1)}, 10), ENOENT);
  EXPECT_EQ(h.Attr(f).size(), 0u);
}

TEST(NamespaceTest, SetAttrRules) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "f");
  proto::MetaOp op;
  auto* s = op.mutable_setattr();
  s->set_ino(f);
  s->set_set_mode(true);
  s->set_mode(S_IFDIR | 0640);  // type bits are ignored
  s->set_set_uid(true);
  s->set_uid(42);
  s->set_set_mtime(true);
  s->set_mtime_ns(1234);
  auto r = h.Apply(op);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->attr.mode(), static_cast<uint32_t>(S_IFREG | 0640));
  EXPECT_EQ(r->attr.uid(), 42u);
  EXPECT_EQ(r->attr.mtime_ns(), 1234);
  EXPECT_GT(r->attr.ctime_ns(), 1234);
  proto::MetaOp grow;
  grow.mutable_setattr()->set_ino(f);
  grow.mutable_setattr()->set_set_size(true);
  grow.mutable_setattr()->set_size(1 << 30);
  r = h.Apply(grow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->attr.size(), 1u << 30);
  grow.mutable_setattr()->set_ino(kRoot);
  EXPECT_EQ(h.Apply(grow).status().code(), EISDIR);
}

TEST(NamespaceTest, ChunkIdsAreDurableAndNeverZero) {
  NsHarness h;
  proto::MetaOp op;
  op.mutable_alloc_chunk_ids()->set_count(100);
  auto a = h.Apply(op);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first_chunk_id, 1u);
  h.Reopen();
  auto b = h.Apply(op);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->first_chunk_id, 101u);
  op.mutable_alloc_chunk_ids()->set_count(0);
  EXPECT_EQ(h.Apply(op).status().code(), EINVAL);
  op.mutable_alloc_chunk_ids()->set_count(65537);
  EXPECT_EQ(h.Apply(op).status().code(), EINVAL);
}

TEST(NamespaceTest, ChunkIdsOfAnEndedSessionAreReclaimedUnlessCommitted) {
  NsHarness h;
  constexpr uint64_t kBlock = 1024;
  const uint64_t session = 77;
  proto::MetaOp alloc;
  alloc.mutable_alloc_chunk_ids()->set_count(1000);
  alloc.mutable_alloc_chunk_ids()->set_session_id(session);
  auto a = h.Apply(alloc);
  ASSERT_TRUE(a.ok());
  // A whole aligned block, recorded for the session.
  EXPECT_EQ(a->first_chunk_id % kBlock, 0u);
  EXPECT_EQ(a->chunk_id_count, kBlock);
  const uint64_t first = a->first_chunk_id;
  auto held = h.ns->HeldChunkIdBlocks();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].block, first / kBlock);
  EXPECT_EQ(held[0].session, session);

  uint64_t f = h.File(kRoot, "f");
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, 100, first), MakeExtent(100, 100, first + 1)}, 200), 0);
  // The session ends having handed out ids up to first+4 (first+2, first+3
  // were put but never committed); ids from first+4 on were never used.
  proto::MetaOp reclaim;
  reclaim.mutable_reclaim_chunk_ids()->set_session_id(session);
  reclaim.mutable_reclaim_chunk_ids()->add_blocks(first / kBlock);
  reclaim.mutable_reclaim_chunk_ids()->set_unused_from(first + 4);
  ASSERT_TRUE(h.Apply(reclaim).ok());
  EXPECT_EQ(h.ns->DeletionQueue(10), (std::vector<uint64_t>{first + 2, first + 3}));
  EXPECT_TRUE(h.ns->HeldChunkIdBlocks().empty());
  // A late commit of a reclaimed id is refused: its chunk may be gone.
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, first + 2)}, 10), ESTALE);
  EXPECT_EQ(h.Attr(f).size(), 200u);

  // Reclaiming names only the session's own blocks; other sessions keep theirs.
  alloc.mutable_alloc_chunk_ids()->set_session_id(session + 1);
  auto b = h.Apply(alloc);
  ASSERT_TRUE(b.ok());
  EXPECT_GT(b->first_chunk_id, first);
  reclaim.mutable_reclaim_chunk_ids()->set_blocks(0, b->first_chunk_id / kBlock);
  reclaim.mutable_reclaim_chunk_ids()->set_unused_from(0);
  ASSERT_TRUE(h.Apply(reclaim).ok());
  ASSERT_EQ(h.ns->HeldChunkIdBlocks().size(), 1u);
  // A block whose every id was committed is retired; committing its ids
  // again (a retried commit) is fine.
  std::vector<proto::Extent> all;
  for (uint64_t i = 0; i < kBlock; ++i) all.push_back(MakeExtent(i * 10, 10, b->first_chunk_id + i));
  uint64_t g = h.File(kRoot, "g");
  ASSERT_EQ(Commit(h, g, all, kBlock * 10), 0);
  EXPECT_TRUE(h.ns->HeldChunkIdBlocks().empty());
  EXPECT_EQ(Commit(h, g, {all[0]}, 10), 0);
  // Survives a restart; ids without a session are not tracked.
  h.Reopen();
  EXPECT_EQ(Commit(h, f, {MakeExtent(0, 10, first + 3)}, 10), ESTALE);
  alloc.mutable_alloc_chunk_ids()->set_session_id(0);
  ASSERT_TRUE(h.Apply(alloc).ok());
  EXPECT_TRUE(h.ns->HeldChunkIdBlocks().empty());
}

TEST(NamespaceTest, AppendPlacesExtentsAfterTheEndAndCutsThemAtSlots) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "mbox");
  const uint64_t end = (1u << 20) - 10;
  ASSERT_EQ(Commit(h, f, {MakeExtent(0, static_cast<uint32_t>(end), 10, 0, static_cast<uint32_t>(end))}, end), 0);
  proto::MetaOp op;
  auto* c = op.mutable_commit_write();
  c->set_ino(f);
  c->set_append(true);
  *c->add_extents() = MakeExtent(0, 30, 11);  // 30 bytes from the end: 10 in slot 0, 20 in slot 1
  c->set_min_size(30);
  auto r = h.Apply(op);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->attr.size(), end + 30);
  proto::Attr attr;
  google::protobuf::RepeatedPtrField<proto::Extent> ex;
  ASSERT_TRUE(h.ns->GetExtents(f, &attr, &ex).ok());
  ASSERT_EQ(ex.size(), 3);
  EXPECT_EQ(ex[1].file_offset(), end);
  EXPECT_EQ(ex[1].length(), 10u);
  EXPECT_EQ(ex[1].chunk_offset(), 0u);
  EXPECT_EQ(ex[2].file_offset(), 1u << 20);
  EXPECT_EQ(ex[2].length(), 20u);
  EXPECT_EQ(ex[2].chunk_offset(), 10u);
  EXPECT_EQ(ex[2].chunk_id(), 11u);
  // An extent beyond the declared end, or an offset that would wrap, is refused.
  c->mutable_extents(0)->set_file_offset(~0ull - 5);
  EXPECT_EQ(h.Apply(op).status().code(), EINVAL);
  c->mutable_extents(0)->set_file_offset(1);
  EXPECT_EQ(h.Apply(op).status().code(), EINVAL);
  EXPECT_EQ(h.Attr(f).size(), end + 30);
}

TEST(NamespaceTest, Xattrs) {
  NsHarness h;
  uint64_t f = h.File(kRoot, "f");
  auto set = [&](const std::string& name, const std::string& value, uint32_t flags) {
    proto::MetaOp op;
    auto* x = op.mutable_set_xattr();
    x->set_ino(f);
    x->set_name(name);
    x->set_value(value);
    x->set_flags(flags);
    return h.Apply(op).status().code();
  };
  EXPECT_EQ(set("user.a", "1", 2), ENODATA);
  EXPECT_EQ(set("user.a", "1", 1), 0);
  EXPECT_EQ(set("user.a", "2", 1), EEXIST);
  EXPECT_EQ(set("user.a", "3", 2), 0);
  EXPECT_EQ(set("security.selinux", "x", 0), EOPNOTSUPP);
  EXPECT_EQ(set("system.posix_acl_access", "x", 0), EOPNOTSUPP);
  EXPECT_EQ(set("user.big", std::string(65537, 'v'), 0), E2BIG);
  EXPECT_EQ(set("trusted.b", "", 0), 0);
  EXPECT_EQ(h.ns->GetXattr(f, "user.a").value(), "3");
  EXPECT_EQ(h.ns->GetXattr(f, "user.none").status().code(), ENODATA);
  EXPECT_EQ(h.ns->ListXattr(f).value(), (std::vector<std::string>{"trusted.b", "user.a"}));
  proto::MetaOp rm;
  rm.mutable_remove_xattr()->set_ino(f);
  rm.mutable_remove_xattr()->set_name("user.a");
  EXPECT_TRUE(h.Apply(rm).ok());
  EXPECT_EQ(h.Apply(rm).status().code(), ENODATA);
}

TEST(NamespaceTest, ReaddirResumesInNameOrder) {
  NsHarness h;
  uint64_t d = h.Mkdir(kRoot, "d");
  for (int i = 0; i < 250; ++i) h.File(d, std::string("m").append(std::to_string(1000 + i)));
  std::vector<std::string> names;
  std::string after;
  int pages = 0;
  for (;;) {
    proto::ReaddirRequest req;
    req.set_ino(d);
    req.set_after_name(after);
    req.set_max_entries(64);
    req.set_plus(true);
    proto::ReaddirReply reply;
    ASSERT_TRUE(h.ns->Readdir(req, &reply).ok());
    ++pages;
    for (const auto& e : reply.entries()) {
      names.push_back(e.name());
      EXPECT_EQ(e.attr().ino(), e.ino());
    }
    // Churn between pages: entries that exist throughout are still seen once.
    if (pages == 2) {
      EXPECT_EQ(h.Unlink(d, "m1001"), 0);  // already listed
      h.File(d, "a-new");                  // before the cookie: not seen
    }
    if (!reply.entries().empty()) after = names.back();
    if (reply.complete()) break;
  }
  EXPECT_EQ(names.size(), 250u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
  proto::ReaddirRequest bad;
  bad.set_ino(h.File(kRoot, "file"));
  proto::ReaddirReply reply;
  EXPECT_EQ(h.ns->Readdir(bad, &reply).code(), ENOTDIR);
}

TEST(NamespaceTest, StateSurvivesReopenAndOpLogIsKept) {
  NsHarness h;
  uint64_t d = h.Mkdir(kRoot, "d");
  h.File(d, "f");
  const auto seq = h.ns->Stats().op_seq;
  EXPECT_EQ(seq, 2u);
  h.Reopen();
  EXPECT_EQ(h.ns->Stats().op_seq, seq);
  EXPECT_EQ(h.ns->Stats().inodes, 3u);
  EXPECT_EQ(h.LookupErr(d, "f"), 0);
  uint64_t g = h.File(d, "g");
  EXPECT_GT(g, d);  // inode numbers are never reused
}

// The applier's group commit, driven by hand: ops of one group see each
// other, a failing op in the middle leaves no trace, readers see nothing
// until the group is written, and every op is its own numbered log entry.
TEST(NamespaceTest, GroupOfOpsAppliesInOrderAndFailedOpLeavesNoTrace) {
  TempDir dir;
  auto ns = meta::Namespace::Open(dir.Sub("db"), "test", 64, 3, 1000).value();
  auto create = [](uint64_t parent, const std::string& name, uint32_t mode) {
    proto::MetaOp op;
    op.set_now_ns(1000);
    op.mutable_create()->set_parent(parent);
    op.mutable_create()->set_name(name);
    op.mutable_create()->set_mode(mode);
    op.mutable_create()->set_exclusive(true);
    return op;
  };
  auto rename = [](uint64_t parent, const std::string& from, const std::string& to) {
    proto::MetaOp op;
    op.set_now_ns(2000);
    op.mutable_rename()->set_old_parent(parent);
    op.mutable_rename()->set_old_name(from);
    op.mutable_rename()->set_new_parent(parent);
    op.mutable_rename()->set_new_name(to);
    return op;
  };
  auto never_open = [](uint64_t) { return false; };

  auto mkdir = create(kRoot, "d", S_IFDIR | 0755);
  auto d = ns->Apply(mkdir, never_open);
  ASSERT_TRUE(d.ok());
  const uint64_t dir_ino = d->attr.ino();
  auto f = create(dir_ino, "f", S_IFREG | 0644);  // sees the directory made just before
  ASSERT_TRUE(ns->Apply(f, never_open).ok());
  auto dup = create(dir_ino, "f", S_IFREG | 0644);
  EXPECT_EQ(ns->Apply(dup, never_open).status().code(), EEXIST);
  auto mv = rename(dir_ino, "f", "g");
  ASSERT_TRUE(ns->Apply(mv, never_open).ok());
  // Fails half-way: the source is gone, after the target was looked at.
  auto bad = rename(dir_ino, "f", "h");
  EXPECT_EQ(ns->Apply(bad, never_open).status().code(), ENOENT);
  EXPECT_EQ(ns->pending_ops(), 3u);

  EXPECT_EQ(ns->Lookup(kRoot, "d").status().code(), ENOENT);  // nothing written yet
  EXPECT_EQ(ns->Stats().op_seq, 0u);
  ASSERT_TRUE(ns->CommitGroup().ok());
  ASSERT_TRUE(ns->SyncWal().ok());
  EXPECT_EQ(ns->pending_ops(), 0u);
  EXPECT_EQ(ns->Stats().op_seq, 3u);
  EXPECT_EQ(ns->Stats().inodes, 3u);
  EXPECT_EQ(ns->Lookup(dir_ino, "f").status().code(), ENOENT);
  EXPECT_EQ(ns->Lookup(dir_ino, "h").status().code(), ENOENT);
  EXPECT_TRUE(ns->Lookup(dir_ino, "g").ok());
  auto dir_attr = ns->GetAttr(dir_ino).value();
  EXPECT_EQ(dir_attr.mtime_ns(), 2000);  // the last successful op touched it

  auto log = ns->ReadOpLog(1, 100);
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].seq(), 1u);
  EXPECT_TRUE(log[0].has_create());
  EXPECT_EQ(log[1].seq(), 2u);
  EXPECT_EQ(log[1].create().name(), "f");
  EXPECT_EQ(log[2].seq(), 3u);
  EXPECT_EQ(log[2].rename().new_name(), "g");

  // A failing op alone in a group writes nothing at all.
  EXPECT_EQ(ns->Apply(bad, never_open).status().code(), ENOENT);
  EXPECT_EQ(ns->pending_ops(), 0u);
  ASSERT_TRUE(ns->CommitGroup().ok());
  EXPECT_EQ(ns->Stats().op_seq, 3u);

  // The state and the log survive a reopen; the next op continues the log.
  ns.reset();
  ns = meta::Namespace::Open(dir.Sub("db"), "test", 64, 3, 1000).value();
  EXPECT_TRUE(ns->Lookup(dir_ino, "g").ok());
  auto again = create(dir_ino, "h", S_IFREG | 0644);
  ASSERT_TRUE(ns->Apply(again, never_open).ok());
  ASSERT_TRUE(ns->CommitGroup().ok());
  EXPECT_EQ(ns->ReadOpLog(4, 10).at(0).create().name(), "h");
}

// Unlinking the last link of a file nobody has open deletes it in the same
// op, and the op records that decision so that a replay repeats it.
TEST(NamespaceTest, UnlinkOfLastLinkReclaimsInTheSameOp) {
  NsHarness h;
  const uint64_t f = h.File(kRoot, "f");
  const uint64_t g = h.File(kRoot, "g");
  EXPECT_EQ(h.Unlink(kRoot, "f"), 0);
  EXPECT_FALSE(h.ns->IsOrphan(f));
  EXPECT_EQ(h.ns->GetAttr(f).status().code(), ENOENT);
  EXPECT_EQ(h.ns->Stats().inodes, 2u);
  auto log = h.ns->ReadOpLog(1, 100);
  ASSERT_EQ(log.size(), 3u);  // two creates and one unlink, no separate reclaim
  ASSERT_TRUE(log[2].has_unlink());
  ASSERT_EQ(log[2].reclaimed_size(), 1);
  EXPECT_EQ(log[2].reclaimed(0), f);

  // Renaming over the last link of a file does the same.
  h.File(kRoot, "h");
  EXPECT_EQ(h.Rename(kRoot, "h", kRoot, "g"), 0);
  EXPECT_EQ(h.ns->GetAttr(g).status().code(), ENOENT);
  log = h.ns->ReadOpLog(5, 10);
  ASSERT_EQ(log.size(), 1u);
  ASSERT_EQ(log[0].reclaimed_size(), 1);
  EXPECT_EQ(log[0].reclaimed(0), g);

  // Open: kept as an orphan, and nothing recorded.
  const uint64_t session = h.sessions->Open("host");
  auto k = h.Create(kRoot, "k", S_IFREG | 0644, true, "", session);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(h.Unlink(kRoot, "k"), 0);
  EXPECT_TRUE(h.ns->IsOrphan(k->ino()));
  log = h.ns->ReadOpLog(7, 10);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].reclaimed_size(), 0);
}

// A replay (no sessions) follows the logged decision, not its own.
TEST(NamespaceTest, ReplayFollowsTheLoggedReclaimDecision) {
  TempDir dir;
  auto ns = meta::Namespace::Open(dir.Sub("db"), "test", 64, 3, 1000).value();
  for (const char* name : {"kept", "gone"}) {
    proto::MetaOp op;
    op.mutable_create()->set_parent(kRoot);
    op.mutable_create()->set_name(name);
    op.mutable_create()->set_mode(S_IFREG | 0644);
    ASSERT_TRUE(ns->Apply(op).ok());
  }
  proto::MetaOp kept, gone;
  kept.mutable_unlink()->set_parent(kRoot);
  kept.mutable_unlink()->set_name("kept");
  gone.mutable_unlink()->set_parent(kRoot);
  gone.mutable_unlink()->set_name("gone");
  gone.add_reclaimed(3);  // "gone" is inode 3
  ASSERT_TRUE(ns->Apply(kept).ok());
  ASSERT_TRUE(ns->Apply(gone).ok());
  ASSERT_TRUE(ns->CommitGroup().ok());
  EXPECT_TRUE(ns->IsOrphan(2));
  EXPECT_EQ(ns->GetAttr(2).value().nlink(), 0u);
  EXPECT_FALSE(ns->IsOrphan(3));
  EXPECT_EQ(ns->GetAttr(3).status().code(), ENOENT);
}

// The log keeps its last op_log_tail entries (1000 here).
TEST(NamespaceTest, OpLogKeepsItsTail) {
  TempDir dir;
  auto ns = meta::Namespace::Open(dir.Sub("db"), "test", 64, 3, 1000).value();
  for (int group = 0; group < 25; ++group) {
    for (int i = 0; i < 97; ++i) {
      proto::MetaOp op;
      op.mutable_alloc_chunk_ids()->set_count(1);
      ASSERT_TRUE(ns->Apply(op).ok());
    }
    ASSERT_TRUE(ns->CommitGroup().ok());
  }
  const uint64_t last = 25 * 97;
  auto log = ns->ReadOpLog(0, 100000);
  ASSERT_EQ(log.size(), 1000u);
  EXPECT_EQ(log.front().seq(), last - 999);
  EXPECT_EQ(log.back().seq(), last);
}

}  // namespace
}  // namespace spool::testing
