// The RPC layer end to end over real sockets: handshake in both directions,
// pipelining, deadlines, reconnection, and hostile input.
#include <gtest/gtest.h>

#include <stdexcept>

#include <atomic>
#include <random>
#include <chrono>
#include <thread>

#include "common/bytes.h"
#include "common/rpc/client.h"
#include "common/rpc/handshake.h"
#include "common/rpc/runtime.h"
#include "common/rpc/server.h"
#include "spool.pb.h"
#include "tests/common/raw_peer.h"
#include "tests/support/process.h"

namespace spool::rpc {
namespace {

using namespace std::chrono_literals;
using spool::testing::RawListener;
using spool::testing::RawPeer;

constexpr auto kEcho = Method::kStatChunk;        // replies with the request's chunk_id and payload
constexpr auto kDelayedEcho = Method::kGetChunk;  // same, after a random delay, from a timer
constexpr auto kNeverAnswers = Method::kListChunks;
constexpr auto kInlineEcho = Method::kPutChunk;   // as kEcho, run where the frame was read; throws for id 13
constexpr auto kKeptEcho = Method::kDeleteChunks;  // as kInlineEcho, and keeps the request frame in kept_

class RpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = ClusterKey::Load(spool::testing::MakeClusterKey(dir_));
    ASSERT_TRUE(key.ok());
    key_ = *key;
    client_runtime_ = std::make_unique<IoRuntime>(2);
    StartServer(0);
  }

  void TearDown() override {
    for (auto& c : clients_) c->Close();
    StopServer();
    client_runtime_->Stop();
    clients_.clear();
  }

  void StartServer(int port) {
    server_runtime_ = std::make_unique<IoRuntime>(2);
    server_ = std::make_unique<RpcServer>(server_runtime_->io(), key_, "test-server");
    server_->Handle(kEcho, [](const Frame& f, const Responder& r) {
      proto::StatChunkRequest request;
      if (!ParseRequest(f, request, r)) return;
      proto::StatChunkReply reply;
      reply.mutable_chunk()->set_chunk_id(request.chunk_id());
      r.Reply(reply, std::string(f.payload()));
    });
    server_->Handle(kDelayedEcho, [this](const Frame& f, const Responder& r) {
      proto::GetChunkRequest request;
      if (!ParseRequest(f, request, r)) return;
      auto timer = std::make_shared<asio::steady_timer>(server_runtime_->io());
      timer->expires_after(std::chrono::microseconds(request.chunk_id() * 7919 % 3000));
      timer->async_wait([timer, r, id = request.chunk_id(), payload = std::string(f.payload())](auto) {
        proto::GetChunkReply reply;
        reply.mutable_chunk()->set_chunk_id(id);
        r.Reply(reply, payload);
      });
    });
    server_->Handle(
        kInlineEcho,
        [](const Frame& f, const Responder& r) {
          proto::PutChunkRequest request;
          if (!ParseRequest(f, request, r)) return;
          if (request.chunk().chunk_id() == 13) throw std::runtime_error("unlucky");
          proto::StatChunkReply reply;
          reply.mutable_chunk()->set_chunk_id(request.chunk().chunk_id());
          r.Reply(reply, std::string(f.payload()));
        },
        RpcServer::Dispatch::kInline);
    server_->Handle(
        kKeptEcho,
        [this](const Frame& f, const Responder& r) {
          {
            std::lock_guard lock(mu_);
            kept_.push_back(f);
          }
          r.Reply(proto::Empty(), std::string(f.payload()));
        },
        RpcServer::Dispatch::kInline);
    server_->Handle(kNeverAnswers, [this](const Frame&, const Responder& r) {
      std::lock_guard lock(mu_);
      parked_.push_back(r);
    });
    ASSERT_TRUE(server_->Listen("127.0.0.1:" + std::to_string(port)).ok());
    port_ = server_->port();
  }

  void StopServer() {
    if (!server_) return;
    server_->Stop();
    server_runtime_->Stop();
    {
      std::lock_guard lock(mu_);
      parked_.clear();
      kept_.clear();
    }
    server_.reset();
    server_runtime_.reset();
  }

  std::shared_ptr<RpcClient> Client(ClusterKey key, int port = 0) {
    RpcClientOptions options;
    options.default_timeout = 5s;
    options.min_backoff = 20ms;
    options.max_backoff = 200ms;
    auto c = RpcClient::Create(client_runtime_->io(), "127.0.0.1:" + std::to_string(port ? port : port_),
                               std::move(key), options);
    clients_.push_back(c);
    return c;
  }
  std::shared_ptr<RpcClient> Client() { return Client(key_); }

  static Status Echo(RpcClient& client, uint64_t id, const std::string& payload = "x") {
    proto::StatChunkRequest request;
    request.set_chunk_id(id);
    proto::StatChunkReply reply;
    std::string reply_payload;
    auto s = client.CallSync(kEcho, request, &reply, payload, &reply_payload);
    if (!s.ok()) return s;
    if (reply.chunk().chunk_id() != id || reply_payload != payload) return Status::Error(EPROTO, "echo mismatch");
    return Status::Ok();
  }

  spool::testing::TempDir dir_;
  ClusterKey key_;
  std::unique_ptr<IoRuntime> client_runtime_;
  std::unique_ptr<IoRuntime> server_runtime_;
  std::unique_ptr<RpcServer> server_;
  int port_ = 0;
  std::vector<std::shared_ptr<RpcClient>> clients_;
  std::mutex mu_;  // guards parked_ and kept_
  std::vector<Responder> parked_;
  std::vector<Frame> kept_;
};

ClusterKey OtherKey(const ClusterKey& key, const std::string& cluster_id = "") {
  ClusterKey other = key;
  other.key[0] ^= 1;
  if (!cluster_id.empty()) {
    other = key;
    other.cluster_id = cluster_id;
  }
  return other;
}

TEST_F(RpcTest, RightKeyConnectsAndCalls) {
  auto client = Client();
  EXPECT_TRUE(Echo(*client, 42, std::string(100000, 'z')).ok());
  EXPECT_TRUE(client->connected());
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(RpcTest, WrongKeyIsRefusedByServer) {
  auto client = Client(OtherKey(key_));
  auto s = Echo(*client, 1);
  EXPECT_EQ(s.code(), EACCES) << s.ToString();
  // The server drops the connection right after sending the refusal, which
  // the client may read first.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server_->connection_count() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_TRUE(Echo(*Client(), 2).ok()) << "server keeps serving others";
}

TEST_F(RpcTest, WrongClusterIdIsRefusedByServer) {
  // A peer that knows the key but claims another cluster.
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ok());
  EXPECT_FALSE(peer.ClientHandshake(key_, "other-cluster"));
  EXPECT_TRUE(peer.WaitClosed());
  EXPECT_TRUE(Echo(*Client(), 3).ok());
}

TEST_F(RpcTest, WrongClusterIdIsRefusedByClient) {
  auto client = Client(OtherKey(key_, "other-cluster"));
  auto s = Echo(*client, 1);
  EXPECT_EQ(s.code(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("cluster"), std::string::npos) << s.message();
}

TEST_F(RpcTest, ServerWithoutTheKeyIsRefusedByClient) {
  // A fake server that names the right cluster but cannot prove the key.
  RawListener listener;
  std::thread fake([&] {
    auto peer = listener.Accept();
    if (!peer.ok()) return;
    proto::HelloChallenge challenge;
    challenge.set_cluster_id(key_.cluster_id);
    challenge.set_server_nonce(RandomNonce());
    peer.SendFrame(static_cast<uint16_t>(Method::kHello), 0, 0, 0, challenge.SerializeAsString());
    auto response = peer.ReadFrame();
    proto::HelloAccept accept;
    accept.set_server_proof(std::string(32, 'f'));
    peer.SendFrame(static_cast<uint16_t>(Method::kHello), kFlagReply, 0, 0, accept.SerializeAsString());
    peer.WaitClosed(2s);
  });
  auto client = Client(key_, listener.port());
  auto s = Echo(*client, 1);
  EXPECT_EQ(s.code(), EACCES) << s.ToString();
  fake.join();
}

TEST_F(RpcTest, PipelinedCallsOnOneConnectionAreMatchedById) {
  auto client = Client();
  constexpr int kCalls = 2000;
  std::vector<std::future<Result<Frame>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    proto::GetChunkRequest request;
    request.set_chunk_id(static_cast<uint64_t>(i));
    futures.push_back(client->Call(kDelayedEcho, request, "payload-" + std::to_string(i)));
  }
  for (int i = 0; i < kCalls; ++i) {
    auto result = futures[i].get();
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    proto::GetChunkReply reply;
    ASSERT_TRUE(result->ParseHeader(reply));
    EXPECT_EQ(reply.chunk().chunk_id(), static_cast<uint64_t>(i));
    EXPECT_EQ(result->payload(), "payload-" + std::to_string(i));
  }
  EXPECT_EQ(server_->connection_count(), 1u);
}

// Inline handlers (RpcServer::Dispatch::kInline) mixed with posted ones on
// one connection: every reply matches its request, and a handler that
// throws answers EIO without hurting the connection.
TEST_F(RpcTest, InlineAndPostedHandlersShareAConnection) {
  auto client = Client();
  constexpr int kCalls = 600;
  std::vector<std::future<Result<Frame>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    if (i % 2 == 0) {
      proto::PutChunkRequest request;
      request.mutable_chunk()->set_chunk_id(static_cast<uint64_t>(i + 1000));
      futures.push_back(client->Call(kInlineEcho, request, "inline-" + std::to_string(i)));
    } else {
      proto::GetChunkRequest request;
      request.set_chunk_id(static_cast<uint64_t>(i + 1000));
      futures.push_back(client->Call(kDelayedEcho, request, "posted-" + std::to_string(i)));
    }
  }
  for (int i = 0; i < kCalls; ++i) {
    auto result = futures[i].get();
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->payload(), (i % 2 == 0 ? "inline-" : "posted-") + std::to_string(i));
  }
  proto::PutChunkRequest unlucky;
  unlucky.mutable_chunk()->set_chunk_id(13);
  auto failed = client->Call(kInlineEcho, unlucky).get();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), EIO);
  EXPECT_TRUE(Echo(*client, 14).ok()) << "the connection survives a handler's exception";
  EXPECT_EQ(server_->connection_count(), 1u);
}

// A connection reads as much as the socket holds and cuts frames out of it:
// frames that arrive together, frames split anywhere (even inside the
// length field), frames larger than its buffer. A frame a handler keeps
// must stay intact while later frames are read.
TEST_F(RpcTest, FramesArrivingTogetherOrInPiecesAreEachReadWhole) {
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ClientHandshake(key_));
  const size_t sizes[] = {0, 1, 100, 3000, 5000, 65536, 70000, 200000, 7};
  constexpr int kFrames = 120;
  auto payload_of = [&](int i) {
    std::string p(sizes[i % std::size(sizes)], '\0');
    for (size_t k = 0; k < p.size(); ++k) p[k] = static_cast<char>('a' + (i * 7 + k) % 26);
    return p;
  };
  std::string stream;
  for (int i = 0; i < kFrames; ++i) {
    std::string payload = payload_of(i);
    stream += EncodeFramePrefix(static_cast<uint16_t>(kKeptEcho), 0, 0, static_cast<uint64_t>(i + 1), "",
                                payload.size());
    stream += payload;
  }
  // The first 200 bytes a byte at a time, then pieces of random sizes.
  std::mt19937 rng(7);
  size_t at = 0;
  while (at < stream.size()) {
    size_t piece = at < 200 ? 1 : 1 + rng() % 9000;
    piece = std::min(piece, stream.size() - at);
    ASSERT_TRUE(peer.WriteAll(std::string_view(stream).substr(at, piece)));
    at += piece;
    if (at < 200) std::this_thread::sleep_for(200us);
  }
  for (int i = 0; i < kFrames; ++i) {
    auto reply = peer.ReadFrame();
    ASSERT_TRUE(reply.has_value()) << "reply " << i;
    EXPECT_EQ(reply->request_id, static_cast<uint64_t>(i + 1));
    EXPECT_EQ(reply->status, 0);
    EXPECT_TRUE(reply->payload() == payload_of(i)) << "reply " << i;
  }
  std::lock_guard lock(mu_);
  ASSERT_EQ(kept_.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(kept_[i].request_id, static_cast<uint64_t>(i + 1));
    EXPECT_TRUE(kept_[i].payload() == payload_of(i)) << "kept frame " << i << " was overwritten";
  }
}

// A payload shared by several calls (a chunk put to each brick of its
// group) goes out whole in each, including when the socket takes it in parts.
TEST_F(RpcTest, OnePayloadSharedByManyCalls) {
  auto client = Client();
  std::string bytes(700000, '\0');
  std::mt19937_64 rng(5);
  for (auto& c : bytes) c = static_cast<char>(rng());
  auto shared = std::make_shared<const std::string>(std::move(bytes));
  std::vector<std::future<Result<Frame>>> futures;
  for (int i = 0; i < 40; ++i) {
    proto::StatChunkRequest request;
    request.set_chunk_id(static_cast<uint64_t>(i));
    futures.push_back(client->Call(kEcho, request, Payload(shared)));
  }
  for (auto& f : futures) {
    auto result = f.get();
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_TRUE(result->payload() == *shared);
  }
  // A sending thread may still be returning from its send when the reply is in.
  for (int i = 0; i < 100 && shared.use_count() > 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(shared.use_count(), 1) << "sent frames let go of the payload";
}

TEST_F(RpcTest, ManyClientsAtOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    auto client = Client();
    threads.emplace_back([&, client, t] {
      for (int i = 0; i < 100; ++i)
        if (!Echo(*client, static_cast<uint64_t>(t * 1000 + i), std::string(static_cast<size_t>(i * 37), 'a')).ok())
          ++failures;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
}

TEST_F(RpcTest, DeadlineExpiresWhenHandlerNeverAnswers) {
  auto client = Client();
  ASSERT_TRUE(Echo(*client, 1).ok());
  auto start = Clock::now();
  auto result = client->Call(kNeverAnswers, proto::ListChunksRequest(), {}, 200ms).get();
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ETIMEDOUT);
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 2s);
  EXPECT_TRUE(Echo(*client, 2).ok()) << "the connection survives a timed-out request";
}

TEST_F(RpcTest, UnknownMethodGetsEnosys) {
  auto client = Client();
  auto result = client->Call(static_cast<Method>(999), proto::Empty()).get();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ENOSYS);
  EXPECT_TRUE(Echo(*client, 1).ok());
}

TEST_F(RpcTest, MalformedHeaderGetsEinvalAndServerKeepsServing) {
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ClientHandshake(key_));
  ASSERT_TRUE(peer.SendFrame(static_cast<uint16_t>(kEcho), 0, 0, 77, "\xff\xff\xff\xff"));
  auto reply = peer.ReadFrame();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->request_id, 77u);
  EXPECT_TRUE(reply->is_reply());
  EXPECT_EQ(reply->status, EINVAL);
  // Same connection, a good request.
  proto::StatChunkRequest good;
  good.set_chunk_id(5);
  ASSERT_TRUE(peer.SendFrame(static_cast<uint16_t>(kEcho), 0, 0, 78, good.SerializeAsString(), "ok"));
  reply = peer.ReadFrame();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->request_id, 78u);
  EXPECT_EQ(reply->status, 0);
  EXPECT_EQ(reply->payload(), "ok");
}

TEST_F(RpcTest, OversizedLengthIsRejectedAtOnce) {
  for (bool handshake : {false, true}) {
    auto peer = RawPeer::Connect(port_);
    if (handshake) {
      ASSERT_TRUE(peer.ClientHandshake(key_));
    }
    // 4 GiB - 1 announced: the server must close without waiting for (or
    // allocating) the body.
    ASSERT_TRUE(peer.WriteAll(std::string("\xff\xff\xff\xff", 4)));
    EXPECT_TRUE(peer.WaitClosed(2s)) << "handshake=" << handshake;
  }
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ClientHandshake(key_));
  std::string just_over;
  PutLE(just_over, kMaxFrameBytes + 1, 4);
  ASSERT_TRUE(peer.WriteAll(just_over));
  EXPECT_TRUE(peer.WaitClosed(2s));
  EXPECT_TRUE(Echo(*Client(), 1).ok());
}

TEST_F(RpcTest, TruncatedAndShortFramesDoNotHurtTheServer) {
  {
    auto peer = RawPeer::Connect(port_);
    ASSERT_TRUE(peer.ClientHandshake(key_));
    std::string partial;
    PutLE(partial, 100, 4);
    partial += "0123456789";
    ASSERT_TRUE(peer.WriteAll(partial));
  }  // closed mid-frame
  {
    auto peer = RawPeer::Connect(port_);
    ASSERT_TRUE(peer.ClientHandshake(key_));
    std::string tiny;
    PutLE(tiny, 3, 4);  // shorter than the fixed part
    tiny += "abc";
    ASSERT_TRUE(peer.WriteAll(tiny));
    EXPECT_TRUE(peer.WaitClosed(2s));
  }
  {
    auto peer = RawPeer::Connect(port_);
    ASSERT_TRUE(peer.WriteAll(std::string("\x08\x00\x00\x00garbage!", 12)));  // before the handshake
    EXPECT_TRUE(peer.WaitClosed(2s));
  }
  EXPECT_TRUE(Echo(*Client(), 1).ok());
}

TEST_F(RpcTest, ReplyFrameFromClientClosesThatConnectionOnly) {
  auto peer = RawPeer::Connect(port_);
  ASSERT_TRUE(peer.ClientHandshake(key_));
  ASSERT_TRUE(peer.SendFrame(static_cast<uint16_t>(kEcho), kFlagReply, 0, 1, ""));
  EXPECT_TRUE(peer.WaitClosed(2s));
  EXPECT_TRUE(Echo(*Client(), 1).ok());
}

TEST_F(RpcTest, ReconnectsAfterServerRestart) {
  auto client = Client();
  ASSERT_TRUE(Echo(*client, 1).ok());
  int port = port_;
  StopServer();
  auto down = Echo(*client, 2);
  EXPECT_FALSE(down.ok());
  StartServer(port);
  ASSERT_EQ(port_, port);
  Status s;
  auto deadline = Clock::now() + 5s;
  do {
    s = Echo(*client, 3);
    if (!s.ok()) std::this_thread::sleep_for(20ms);
  } while (!s.ok() && Clock::now() < deadline);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(RpcTest, RequestsInFlightWhenServerDiesFailWithConnReset) {
  auto client = Client();
  ASSERT_TRUE(Echo(*client, 1).ok());
  auto pending = client->Call(kNeverAnswers, proto::ListChunksRequest(), {}, 5s);
  std::this_thread::sleep_for(100ms);  // let it be sent
  StopServer();
  auto result = pending.get();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ECONNRESET) << result.status().ToString();
}

}  // namespace
}  // namespace spool::rpc
