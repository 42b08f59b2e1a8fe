// The deletion queue drains to real bricks: a real spool-meta and a real
// spool-brickd; a chunk written to the brick, referenced by a file, then the
// file unlinked: the chunk leaves the queue and the brick. Also brick
// registration, heartbeat liveness (down after silence, epoch bumps) and
// spoolctl status against the running cluster.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "common/crc32c.h"
#include "common/placement.h"
#include "tests/meta/meta_process.h"

namespace spool::testing {
namespace {

using rpc::Method;
using namespace std::chrono_literals;

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

TEST(DrainerTest, UnlinkedChunksLeaveTheBrick) {
  MetaProcess meta({"--pg-count", "16", "--brick-down-after-ms", "1500"});
  ASSERT_TRUE(meta.Start()) << meta.log();
  const int brick_port = FreePort();
  const std::string brick_address = "127.0.0.1:" + std::to_string(brick_port);
  ChildProcess brick;
  ASSERT_TRUE(brick.Start({BinaryPath("brickd/spool-brickd"), "--data", meta.dir().Sub("brick"), "--listen",
                           brick_address, "--cluster-key", meta.key_file(), "--meta", meta.address(),
                           "--failure-domain", "host-a", "--log-level", "warn"},
                          meta.dir().Sub("brick.log")));
  ASSERT_TRUE(WaitForPort(brick_port));
  rpc::IoRuntime io(1);
  auto client = meta.Connect(io);
  proto::StatusReply status;
  ASSERT_TRUE(WaitFor([&] {
    return client->CallSync(Method::kStatus, proto::Empty(), &status).ok() && status.map().bricks_size() == 1;
  })) << ReadFile(meta.dir().Sub("brick.log"));
  EXPECT_EQ(status.map().bricks(0).state(), proto::BRICK_UP);
  EXPECT_EQ(status.map().bricks(0).failure_domain(), "host-a");
  EXPECT_EQ(status.map().pgs(0).bricks_size(), 1);  // one brick: one copy per PG (degraded)

  // A chunk on the brick, referenced by a file.
  proto::AllocChunkIdsRequest alloc;
  alloc.set_count(1);
  proto::AllocChunkIdsReply ids;
  ASSERT_TRUE(client->CallSync(Method::kAllocChunkIds, alloc, &ids).ok());
  const std::string data = "Subject: hello\r\n\r\nbody\r\n";
  const uint32_t pg = PgOfChunk(ids.first(), 16);
  auto brick_client = rpc::RpcClient::Create(io.io(), brick_address, meta.key());
  proto::PutChunkRequest put;
  put.mutable_chunk()->set_chunk_id(ids.first());
  put.mutable_chunk()->set_pg(pg);
  put.mutable_chunk()->set_crc32c(Crc32c(data));
  put.mutable_chunk()->set_length(static_cast<uint32_t>(data.size()));
  ASSERT_TRUE(brick_client->CallSync(Method::kPutChunk, put, nullptr, data).ok());

  proto::CreateRequest create;
  create.set_parent(1);
  create.set_name("msg");
  create.set_mode(S_IFREG | 0600);
  proto::EntryReply entry;
  ASSERT_TRUE(client->CallSync(Method::kCreate, create, &entry).ok());
  proto::CommitWriteRequest commit;
  commit.set_ino(entry.attr().ino());
  auto* e = commit.add_extents();
  e->set_length(static_cast<uint32_t>(data.size()));
  e->set_chunk_id(ids.first());
  e->set_chunk_length(static_cast<uint32_t>(data.size()));
  commit.set_min_size(data.size());
  ASSERT_TRUE(client->CallSync(Method::kCommitWrite, commit).ok());

  proto::UnlinkRequest unlink;
  unlink.set_parent(1);
  unlink.set_name("msg");
  ASSERT_TRUE(client->CallSync(Method::kUnlink, unlink).ok());

  proto::StatChunkRequest stat;
  stat.set_pg(pg);
  stat.set_chunk_id(ids.first());
  EXPECT_TRUE(WaitFor([&] {
    return client->CallSync(Method::kStatus, proto::Empty(), &status).ok() && status.deletion_queue() == 0;
  })) << meta.log();
  EXPECT_EQ(brick_client->CallSync(Method::kStatChunk, stat).code(), ENOENT);

  // spoolctl shows the brick.
  const std::string out = meta.dir().Sub("ctl.out");
  const std::string cmd = BinaryPath("tools/ctl/spoolctl") + " --meta " + meta.address() + " --cluster-key " +
                          meta.key_file() + " status > " + out + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadFile(out);
  EXPECT_NE(ReadFile(out).find(brick_address), std::string::npos) << ReadFile(out);
  EXPECT_NE(ReadFile(out).find("up"), std::string::npos);

  // Silence: the brick goes down, the epoch moves; it comes back on restart.
  const uint64_t epoch = status.map().epoch();
  brick.Kill(9);
  brick.Wait();
  EXPECT_TRUE(WaitFor([&] {
    return client->CallSync(Method::kStatus, proto::Empty(), &status).ok() &&
           status.map().bricks(0).state() == proto::BRICK_DOWN;
  }));
  EXPECT_GT(status.map().epoch(), epoch);
  brick_client->Close();
  client->Close();
}

}  // namespace
}  // namespace spool::testing
