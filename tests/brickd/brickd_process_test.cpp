// The real spool-brickd process over real sockets: concurrent clients,
// SIGKILL, bytes flipped on disk, hostile traffic, foreign data directories,
// registration with meta.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "common/crc32c.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "common/rpc/server.h"
#include "spool.pb.h"
#include "tests/brickd/test_util.h"
#include "tests/common/raw_peer.h"
#include "tests/support/process.h"

namespace spool::brick {
namespace {

using namespace std::chrono_literals;
using rpc::Method;
using spool::testing::RandomBytes;

Status PutChunk(rpc::RpcClient& client, uint32_t pg, uint64_t id, const std::string& bytes,
                uint32_t crc_xor = 0) {
  proto::PutChunkRequest request;
  auto* ref = request.mutable_chunk();
  ref->set_pg(pg);
  ref->set_chunk_id(id);
  ref->set_length(static_cast<uint32_t>(bytes.size()));
  ref->set_crc32c(Crc32c(bytes) ^ crc_xor);
  return client.CallSync(Method::kPutChunk, request, nullptr, bytes);
}

Result<std::string> GetChunk(rpc::RpcClient& client, uint32_t pg, uint64_t id, uint32_t offset = 0,
                             uint32_t length = 0) {
  proto::GetChunkRequest request;
  request.set_pg(pg);
  request.set_chunk_id(id);
  request.set_offset(offset);
  request.set_length(length);
  proto::GetChunkReply reply;
  std::string payload;
  auto s = client.CallSync(Method::kGetChunk, request, &reply, {}, &payload);
  if (!s.ok()) return s;
  return payload;
}

Status DeleteChunk(rpc::RpcClient& client, uint32_t pg, uint64_t id) {
  proto::DeleteChunksRequest request;
  auto* ref = request.add_chunks();
  ref->set_pg(pg);
  ref->set_chunk_id(id);
  return client.CallSync(Method::kDeleteChunks, request);
}

class BrickdTest : public ::testing::Test {
 public:
  void SetUp() override {
    key_path_ = spool::testing::MakeClusterKey(dir_);
    auto key = ClusterKey::Load(key_path_);
    ASSERT_TRUE(key.ok());
    key_ = *key;
    port_ = spool::testing::FreePort();
  }
  void TearDown() override {
    for (auto& c : clients_) c->Close();
    runtime_.Stop();
    if (HasFailure()) std::cerr << "---- brick log ----\n" << spool::testing::ReadFile(log_path()) << "\n";
  }

  std::string data_dir() const { return dir_.Sub("brick"); }
  std::string log_path() const { return dir_.Sub("brick.log"); }
  std::vector<std::string> Args(const std::string& key_path) const {
    return {spool::testing::BinaryPath("brickd/spool-brickd"),
            "--data", data_dir(), "--listen", "127.0.0.1:" + std::to_string(port_),
            "--cluster-key", key_path, "--threads", "4", "--reserve-bytes", "1048576"};
  }
  void StartBrick(std::vector<std::string> extra = {}) {
    auto args = Args(key_path_);
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_TRUE(brick_.Start(args, log_path()));
    ASSERT_TRUE(spool::testing::WaitForPort(port_)) << spool::testing::ReadFile(log_path());
  }
  std::shared_ptr<rpc::RpcClient> Client() {
    rpc::RpcClientOptions options;
    options.default_timeout = 10s;
    options.min_backoff = 20ms;
    options.max_backoff = 200ms;
    auto c = rpc::RpcClient::Create(runtime_.io(), "127.0.0.1:" + std::to_string(port_), key_, options);
    clients_.push_back(c);
    return c;
  }

  spool::testing::TempDir dir_;
  std::string key_path_;
  ClusterKey key_;
  int port_ = 0;
  spool::testing::ChildProcess brick_;
  rpc::IoRuntime runtime_{2};
  std::vector<std::shared_ptr<rpc::RpcClient>> clients_;
};

TEST_F(BrickdTest, ConcurrentClientsPutGetStatDelete) {
  StartBrick();
  constexpr int kClients = 16, kChunks = 40;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::mutex mu;
  std::string first_failure;
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(mu);
    if (failures++ == 0) first_failure = what;
  };
  for (int c = 0; c < kClients; ++c) {
    auto client = Client();
    threads.emplace_back([&, client, c] {
      for (int i = 0; i < kChunks; ++i) {
        uint64_t id = static_cast<uint64_t>(c) << 32 | static_cast<uint64_t>(i);
        uint32_t pg = static_cast<uint32_t>(id % 64);
        auto bytes = RandomBytes(static_cast<size_t>((id * 2654435761u) % 70000), id);
        if (auto s = PutChunk(*client, pg, id, bytes); !s.ok()) fail("put " + s.ToString());
      }
      for (int i = 0; i < kChunks; ++i) {
        uint64_t id = static_cast<uint64_t>(c) << 32 | static_cast<uint64_t>(i);
        uint32_t pg = static_cast<uint32_t>(id % 64);
        auto bytes = RandomBytes(static_cast<size_t>((id * 2654435761u) % 70000), id);
        auto got = GetChunk(*client, pg, id);
        if (!got.ok() || *got != bytes) fail("get " + got.status().ToString());
        proto::StatChunkRequest stat;
        stat.set_pg(pg);
        stat.set_chunk_id(id);
        proto::StatChunkReply reply;
        if (!client->CallSync(Method::kStatChunk, stat, &reply).ok() || reply.chunk().length() != bytes.size() ||
            reply.chunk().crc32c() != Crc32c(bytes))
          fail("stat");
        if (i % 2 == 0) {
          if (!DeleteChunk(*client, pg, id).ok()) fail("delete");
          if (GetChunk(*client, pg, id).status().code() != ENOENT) fail("get after delete");
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0) << first_failure;

  auto client = Client();
  proto::BrickInfoReply info;
  ASSERT_TRUE(client->CallSync(Method::kBrickInfo, proto::Empty(), &info).ok());
  EXPECT_EQ(info.cluster_id(), key_.cluster_id);
  EXPECT_FALSE(info.brick_uuid().empty());
  EXPECT_GT(info.capacity_bytes(), 0u);
}

TEST_F(BrickdTest, BulkReadListAndPut) {
  StartBrick();
  auto client = Client();
  proto::PutChunksRequest put;
  std::string payload;
  for (uint64_t id = 1; id <= 20; ++id) {
    auto bytes = RandomBytes(id * 100, id);
    auto* ref = put.add_chunks();
    ref->set_pg(3);
    ref->set_chunk_id(id);
    ref->set_length(static_cast<uint32_t>(bytes.size()));
    ref->set_crc32c(Crc32c(bytes));
    payload += bytes;
  }
  ASSERT_TRUE(client->CallSync(Method::kPutChunks, put, nullptr, payload).ok());

  proto::ListChunksRequest list;
  list.set_pg(3);
  list.set_max_entries(15);
  proto::ListChunksReply listed;
  ASSERT_TRUE(client->CallSync(Method::kListChunks, list, &listed).ok());
  ASSERT_EQ(listed.chunks_size(), 15);
  EXPECT_FALSE(listed.complete());
  list.set_has_after(true);
  list.set_after_chunk_id(15);
  ASSERT_TRUE(client->CallSync(Method::kListChunks, list, &listed).ok());
  EXPECT_EQ(listed.chunks_size(), 5);
  EXPECT_TRUE(listed.complete());

  proto::ReadChunksRequest read;
  read.set_pg(3);
  for (uint64_t id : {5, 500, 7}) read.add_chunk_ids(id);
  proto::ReadChunksReply reply;
  std::string bytes;
  ASSERT_TRUE(client->CallSync(Method::kReadChunks, read, &reply, {}, &bytes).ok());
  ASSERT_EQ(reply.chunks_size(), 2);
  EXPECT_EQ(bytes, RandomBytes(500, 5) + RandomBytes(700, 7));
  ASSERT_EQ(reply.missing_size(), 1);
  EXPECT_EQ(reply.missing(0), 500u);
}

TEST_F(BrickdTest, InvalidRequestsGetErrorReplies) {
  StartBrick();
  auto client = Client();
  EXPECT_EQ(PutChunk(*client, 1, 1, "payload", 1).code(), EBADMSG) << "crc mismatch";
  EXPECT_EQ(GetChunk(*client, 1, 1).status().code(), ENOENT) << "nothing stored";
  EXPECT_EQ(PutChunk(*client, 1u << 20, 1, "payload").code(), EINVAL) << "pg out of range";
  {
    proto::PutChunkRequest request;  // length says 10, payload has 7
    request.mutable_chunk()->set_length(10);
    EXPECT_EQ(client->CallSync(Method::kPutChunk, request, nullptr, "payload").code(), EINVAL);
    request.mutable_chunk()->set_length(2u << 20);  // larger than a chunk may be
    EXPECT_EQ(client->CallSync(Method::kPutChunk, request, nullptr, std::string(2u << 20, 'x')).code(), EINVAL);
    EXPECT_EQ(client->CallSync(Method::kPutChunk, proto::PutChunkRequest()).code(), EINVAL) << "no chunk";
  }
  ASSERT_TRUE(PutChunk(*client, 1, 1, "0123456789").ok());
  EXPECT_EQ(*GetChunk(*client, 1, 1, 2, 3), "234");
  EXPECT_EQ(GetChunk(*client, 1, 1, 8, 5).status().code(), EINVAL) << "range beyond the chunk";
  EXPECT_EQ(GetChunk(*client, 1, 1, UINT32_MAX, UINT32_MAX).status().code(), EINVAL);
  EXPECT_EQ(PutChunk(*client, 1, 1, "different!").code(), EEXIST);
  {
    proto::PutChunksRequest request;  // refs total 100, payload 10
    auto* ref = request.add_chunks();
    ref->set_length(100);
    EXPECT_EQ(client->CallSync(Method::kPutChunks, request, nullptr, "0123456789").code(), EINVAL);
  }
  {
    proto::ReadChunksRequest request;
    for (int i = 0; i < 5000; ++i) request.add_chunk_ids(static_cast<uint64_t>(i));
    EXPECT_EQ(client->CallSync(Method::kReadChunks, request).code(), EINVAL) << "too many ids";
  }
  EXPECT_EQ(*GetChunk(*client, 1, 1), "0123456789");
}

// Kills (or stops) the brick during a stream of puts from 8 clients, restarts
// it, and checks every acknowledged chunk.
void StopDuringPutsAndVerify(BrickdTest& test, int signal_number);

TEST_F(BrickdTest, SigkillLosesNothingAcknowledged) { StopDuringPutsAndVerify(*this, SIGKILL); }

TEST_F(BrickdTest, SigtermDuringPutsExitsCleanlyAndLosesNothingAcknowledged) {
  StopDuringPutsAndVerify(*this, SIGTERM);
}

void StopDuringPutsAndVerify(BrickdTest& test, int signal_number) {
  test.StartBrick();
  std::mutex mu;                            // guards acknowledged
  std::map<uint64_t, size_t> acknowledged;  // id -> size
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 8; ++w) {
    auto client = test.Client();
    writers.emplace_back([&, client, w] {
      for (uint64_t i = 0; !stop; ++i) {
        uint64_t id = static_cast<uint64_t>(w) << 40 | i;
        size_t size = 1000 + (id * 7919) % 20000;
        if (PutChunk(*client, static_cast<uint32_t>(id % 32), id, RandomBytes(size, id)).ok()) {
          std::lock_guard lock(mu);
          acknowledged[id] = size;
        }
      }
    });
  }
  std::this_thread::sleep_for(1500ms);
  test.brick_.Kill(signal_number);
  int status = test.brick_.Wait();
  if (signal_number == SIGTERM) {
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  stop = true;
  for (auto& t : writers) t.join();
  ASSERT_GT(acknowledged.size(), 50u);

  test.StartBrick();
  auto client = test.Client();
  size_t bad = 0;
  for (auto& [id, size] : acknowledged) {
    auto got = GetChunk(*client, static_cast<uint32_t>(id % 32), id);
    if (!got.ok() || *got != RandomBytes(size, id)) ++bad;
  }
  EXPECT_EQ(bad, 0u) << "of " << acknowledged.size() << " acknowledged chunks";
}

TEST_F(BrickdTest, FlippedBytesOnDiskAreReportedCorrupt) {
  StartBrick();
  auto victim = RandomBytes(100000, 1);
  auto bystander = RandomBytes(100000, 2);
  {
    auto client = Client();
    ASSERT_TRUE(PutChunk(*client, 9, 1, victim).ok());
    ASSERT_TRUE(PutChunk(*client, 9, 2, bystander).ok());
  }
  brick_.Kill(SIGTERM);
  int status = brick_.Wait();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "SIGTERM is a clean exit, status " << status;

  auto changed = spool::testing::FlipPatternOnDisk(data_dir(), victim.substr(50000, 64), {".blob", ".sst"});
  ASSERT_FALSE(changed.empty()) << "chunk bytes not found in any blob or sst file";

  StartBrick();
  auto client = Client();
  auto got = GetChunk(*client, 9, 1);
  ASSERT_FALSE(got.ok()) << "corrupt bytes were served";
  EXPECT_EQ(got.status().code(), EBADMSG);
  EXPECT_NE(got.status().message().find("corrupt"), std::string::npos) << got.status().message();
  EXPECT_EQ(*GetChunk(*client, 9, 2), bystander);
  proto::ReadChunksRequest read;
  read.set_pg(9);
  read.add_chunk_ids(1);
  read.add_chunk_ids(2);
  proto::ReadChunksReply reply;
  std::string payload;
  ASSERT_TRUE(client->CallSync(Method::kReadChunks, read, &reply, {}, &payload).ok());
  ASSERT_EQ(reply.corrupt_size(), 1);
  EXPECT_EQ(reply.corrupt(0), 1u);
  EXPECT_EQ(payload, bystander);
}

TEST_F(BrickdTest, HostileTrafficLeavesTheDaemonServing) {
  StartBrick();
  auto good = Client();
  ASSERT_TRUE(PutChunk(*good, 1, 1, "steady").ok());
  std::mt19937_64 rng(7);
  using spool::testing::RawPeer;
  // Garbage instead of a handshake.
  for (int i = 0; i < 30; ++i) {
    auto peer = RawPeer::Connect(port_);
    ASSERT_TRUE(peer.ok());
    peer.WriteAll(RandomBytes(1 + rng() % 5000, rng()));
  }
  // Huge and truncated frames, before and after a valid handshake.
  for (bool handshake : {false, true}) {
    auto huge = RawPeer::Connect(port_);
    if (handshake) {
      ASSERT_TRUE(huge.ClientHandshake(key_));
    }
    huge.WriteAll(std::string("\xff\xff\xff\x7f", 4));
    EXPECT_TRUE(huge.WaitClosed(2s));
    auto truncated = RawPeer::Connect(port_);
    if (handshake) {
      ASSERT_TRUE(truncated.ClientHandshake(key_));
    }
    truncated.WriteAll(std::string("\x00\x10\x00\x00partial", 11));
  }
  // Valid handshake, then malformed headers and hostile values for every method.
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ClientHandshake(key_));
  uint64_t request_id = 1;
  for (uint16_t method = 100; method <= 107; ++method) {
    for (int i = 0; i < 20; ++i) {
      auto header = RandomBytes(rng() % 64, rng());
      auto payload = RandomBytes(rng() % 2000, rng());
      ASSERT_TRUE(peer.SendFrame(method, 0, 0, request_id++, header, payload));
    }
  }
  {
    proto::PutChunkRequest put;  // claims 4 GiB - 1
    put.mutable_chunk()->set_length(UINT32_MAX);
    peer.SendFrame(100, 0, 0, request_id++, put.SerializeAsString(), "tiny");
    proto::PutChunksRequest many;  // lengths that overflow 32 bits when summed
    for (int i = 0; i < 8; ++i) many.add_chunks()->set_length(1u << 30);
    peer.SendFrame(106, 0, 0, request_id++, many.SerializeAsString(), "tiny");
    proto::ListChunksRequest list;
    list.set_pg(UINT32_MAX);
    list.set_max_entries(UINT32_MAX);
    peer.SendFrame(104, 0, 0, request_id++, list.SerializeAsString());
    proto::DeleteChunksRequest del;
    del.add_chunks()->set_pg(UINT32_MAX);
    peer.SendFrame(102, 0, 0, request_id++, del.SerializeAsString());
  }
  // Every request is answered (with an error or a result), in some order.
  size_t answered = 0;
  while (answered < request_id - 1) {
    auto reply = peer.ReadFrame(5s);
    if (!reply) break;
    ++answered;
  }
  EXPECT_EQ(answered, request_id - 1);
  EXPECT_TRUE(brick_.running());
  EXPECT_EQ(*GetChunk(*good, 1, 1), "steady");
  auto fresh = Client();
  EXPECT_TRUE(PutChunk(*fresh, 1, 2, "still serving").ok());
}

TEST_F(BrickdTest, DirectoryOfAnotherClusterIsRefused) {
  StartBrick();
  brick_.Kill(SIGTERM);
  ASSERT_EQ(brick_.Wait(), 0);
  auto other_key = spool::testing::MakeClusterKey(dir_, "other-cluster");
  spool::testing::ChildProcess other;
  ASSERT_TRUE(other.Start(Args(other_key), dir_.Sub("other.log")));
  int status = other.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_NE(spool::testing::ReadFile(dir_.Sub("other.log")).find("belongs to cluster 'test-cluster'"),
            std::string::npos);
}

TEST_F(BrickdTest, NonEmptyDirectoryWithoutIdentityIsRefused) {
  std::filesystem::create_directories(data_dir());
  { std::ofstream(data_dir() + "/somebody-elses-file") << "data"; }
  spool::testing::ChildProcess brick;
  ASSERT_TRUE(brick.Start(Args(key_path_), log_path()));
  int status = brick.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_NE(spool::testing::ReadFile(log_path()).find("not empty"), std::string::npos);
}

// A stand-in for spool-meta that records registrations and heartbeats.
class FakeMeta {
 public:
  FakeMeta(const ClusterKey& key, int port) : runtime_(2), server_(runtime_.io(), key, "fake-meta") {
    server_.Handle(Method::kRegisterBrick, [this](const rpc::Frame& f, const rpc::Responder& r) {
      proto::RegisterBrickRequest request;
      if (!rpc::ParseRequest(f, request, r)) return;
      std::lock_guard lock(mu_);
      registrations_.push_back(request);
      proto::RegisterBrickReply reply;
      reply.set_brick_id(static_cast<uint32_t>(registrations_.size()) + 10);
      r.Reply(reply);
    });
    server_.Handle(Method::kBrickHeartbeat, [this](const rpc::Frame& f, const rpc::Responder& r) {
      proto::HeartbeatRequest request;
      if (!rpc::ParseRequest(f, request, r)) return;
      std::lock_guard lock(mu_);
      heartbeats_.push_back(request);
      if (forget_) {
        forget_ = false;
        return r.Fail(Status::Error(ENOENT, "unknown brick"));
      }
      r.Reply(proto::HeartbeatReply());
    });
    listen_status_ = server_.Listen("127.0.0.1:" + std::to_string(port));
  }
  ~FakeMeta() {
    server_.Stop();
    runtime_.Stop();
  }
  bool listening() const { return listen_status_.ok(); }
  void ForgetBrick() {
    std::lock_guard lock(mu_);
    forget_ = true;
  }
  template <typename Pred>
  bool WaitFor(Pred pred, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        if (pred(registrations_, heartbeats_)) return true;
      }
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

 private:
  rpc::IoRuntime runtime_;
  rpc::RpcServer server_;
  Status listen_status_;
  std::mutex mu_;  // guards everything below
  std::vector<proto::RegisterBrickRequest> registrations_;
  std::vector<proto::HeartbeatRequest> heartbeats_;
  bool forget_ = false;
};

TEST_F(BrickdTest, RegistersWithMetaWhenItAppearsAndHeartbeats) {
  int meta_port = spool::testing::FreePort();
  StartBrick({"--meta", "127.0.0.1:" + std::to_string(meta_port), "--failure-domain", "rack-7", "--advertise",
              "10.1.2.3:7100"});
  // Meta is not there yet: chunks are served meanwhile.
  auto client = Client();
  ASSERT_TRUE(PutChunk(*client, 1, 1, "no meta needed").ok());
  std::this_thread::sleep_for(500ms);

  FakeMeta meta(key_, meta_port);
  ASSERT_TRUE(meta.listening());
  using Regs = std::vector<proto::RegisterBrickRequest>;
  using Beats = std::vector<proto::HeartbeatRequest>;
  ASSERT_TRUE(meta.WaitFor([](const Regs& r, const Beats& b) { return r.size() == 1 && b.size() >= 2; }));
  meta.WaitFor([&](const Regs& r, const Beats& b) {
    EXPECT_EQ(r[0].address(), "10.1.2.3:7100");
    EXPECT_EQ(r[0].failure_domain(), "rack-7");
    EXPECT_FALSE(r[0].uuid().empty());
    EXPECT_GT(r[0].capacity_bytes(), 0u);
    EXPECT_EQ(b[0].brick_id(), 11u);
    return true;
  });
  meta.ForgetBrick();
  EXPECT_TRUE(meta.WaitFor([](const Regs& r, const Beats& b) { return r.size() == 2 && b.back().brick_id() == 12u; }))
      << "an ENOENT heartbeat reply makes the brick register again";
}

}  // namespace
}  // namespace spool::brick
