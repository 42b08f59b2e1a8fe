// The real spool-meta over RPC: every request kind once, errors as errnos,
// malformed requests answered, a restart keeps what was acknowledged.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/meta/meta_process.h"

namespace spool::testing {
namespace {

using rpc::Method;

class MetaRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(meta_.Start()) << meta_.log();
    client_ = meta_.Connect(io_);
  }
  void TearDown() override {
    client_->Close();
    io_.Stop();
  }

  Result<proto::Attr> Create(uint64_t parent, const std::string& name, uint32_t mode, bool exclusive = true) {
    proto::CreateRequest req;
    req.set_parent(parent);
    req.set_name(name);
    req.set_mode(mode);
    req.set_exclusive(exclusive);
    proto::EntryReply reply;
    auto s = client_->CallSync(Method::kCreate, req, &reply);
    if (!s.ok()) return s;
    return reply.attr();
  }
  int Errno(Method m, const google::protobuf::MessageLite& req, google::protobuf::MessageLite* reply = nullptr) {
    return client_->CallSync(m, req, reply).code();
  }

  MetaProcess meta_;
  rpc::IoRuntime io_{1};
  std::shared_ptr<rpc::RpcClient> client_;
};

TEST_F(MetaRpcTest, NamespaceRoundTrip) {
  auto dir = Create(1, "new", S_IFDIR | 0700);
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  auto file = Create(1, "tmp.1", S_IFREG | 0600);
  ASSERT_TRUE(file.ok());

  proto::RenameRequest rename;
  rename.set_old_parent(1);
  rename.set_old_name("tmp.1");
  rename.set_new_parent(dir->ino());
  rename.set_new_name("msg.1");
  EXPECT_EQ(0, Errno(Method::kRename, rename));

  proto::LookupRequest lookup;
  lookup.set_parent(dir->ino());
  lookup.set_name("msg.1");
  proto::EntryReply entry;
  ASSERT_EQ(0, Errno(Method::kLookup, lookup, &entry));
  EXPECT_EQ(entry.attr().ino(), file->ino());
  lookup.set_parent(1);
  lookup.set_name("tmp.1");
  EXPECT_EQ(ENOENT, Errno(Method::kLookup, lookup));
  lookup.set_name(std::string(256, 'x'));
  EXPECT_EQ(ENAMETOOLONG, Errno(Method::kLookup, lookup));

  proto::ReaddirRequest readdir;
  readdir.set_ino(dir->ino());
  readdir.set_plus(true);
  proto::ReaddirReply listing;
  ASSERT_EQ(0, Errno(Method::kReaddir, readdir, &listing));
  ASSERT_EQ(listing.entries_size(), 1);
  EXPECT_EQ(listing.entries(0).name(), "msg.1");
  EXPECT_EQ(listing.entries(0).attr().ino(), file->ino());
  EXPECT_TRUE(listing.complete());

  proto::AllocChunkIdsRequest alloc;
  alloc.set_count(10);
  proto::AllocChunkIdsReply ids;
  ASSERT_EQ(0, Errno(Method::kAllocChunkIds, alloc, &ids));
  EXPECT_GE(ids.first(), 1u);
  EXPECT_EQ(ids.count(), 10u);

  proto::CommitWriteRequest commit;
  commit.set_ino(file->ino());
  auto* e = commit.add_extents();
  e->set_file_offset(0);
  e->set_length(100);
  e->set_chunk_id(ids.first());
  e->set_chunk_length(100);
  commit.set_min_size(100);
  commit.set_expected_version(file->version());
  proto::AttrReply committed;
  ASSERT_EQ(0, Errno(Method::kCommitWrite, commit, &committed));
  EXPECT_EQ(committed.attr().size(), 100u);
  EXPECT_EQ(ESTALE, Errno(Method::kCommitWrite, commit));  // version moved on

  proto::OpenSessionRequest open_session;
  open_session.set_host("test");
  proto::OpenSessionReply session;
  ASSERT_EQ(0, Errno(Method::kOpenSession, open_session, &session));
  proto::OpenRequest open;
  open.set_ino(file->ino());
  open.set_session_id(session.session_id());
  proto::OpenReply opened;
  ASSERT_EQ(0, Errno(Method::kOpen, open, &opened));
  ASSERT_EQ(opened.extents_size(), 1);
  EXPECT_EQ(opened.extents(0).chunk_id(), ids.first());

  proto::StatfsReply statfs;
  EXPECT_EQ(0, Errno(Method::kStatfs, proto::Empty(), &statfs));
  EXPECT_EQ(statfs.inodes(), 3u);
}

TEST_F(MetaRpcTest, MalformedRequestGetsEinval) {
  auto f = client_->Call(Method::kCreate, proto::Empty(), {});
  // An empty header parses as an empty CreateRequest: parent 0 -> error, no crash.
  auto r = f.get();
  EXPECT_FALSE(r.ok());
  // Garbage bytes as a header.
  proto::ReadlinkReply garbage;
  garbage.set_target(std::string("\xff\xff\xff\xff\x0f", 5));
  EXPECT_NE(0, Errno(Method::kLookup, garbage));
  EXPECT_NE(0, Errno(Method::kRename, garbage));
  // Too many closes in one request; closes of files nobody opened.
  proto::ReleasesRequest releases;
  releases.set_session_id(12345);
  for (uint32_t i = 0; i <= rpc::kMaxReleasesPerRequest; ++i) releases.add_inos(1000 + i);
  EXPECT_EQ(EINVAL, Errno(Method::kReleases, releases));
  releases.mutable_inos()->Truncate(10);
  EXPECT_EQ(0, Errno(Method::kReleases, releases));
  proto::StatfsReply statfs;
  EXPECT_EQ(0, Errno(Method::kStatfs, proto::Empty(), &statfs));  // still serving
}

TEST_F(MetaRpcTest, RestartKeepsAcknowledged) {
  ASSERT_TRUE(Create(1, "kept", S_IFREG | 0644).ok());
  client_->Close();
  meta_.Kill(9);
  ASSERT_TRUE(meta_.Start()) << meta_.log();
  client_ = meta_.Connect(io_);
  proto::LookupRequest lookup;
  lookup.set_parent(1);
  lookup.set_name("kept");
  EXPECT_EQ(0, Errno(Method::kLookup, lookup));
}

}  // namespace
}  // namespace spool::testing
