// One authenticated TCP connection, used by both ends of every RPC.
//
// A Connection runs the handshake (HMAC-SHA256 challenge-response over the
// cluster key, both directions), then delivers every frame it reads to a
// callback and sends frames queued from any thread. All socket work runs on
// the connection's strand.
#pragma once

#include <google/protobuf/message_lite.h>

#include <asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "common/cluster_key.h"
#include "common/rpc/frame.h"
#include "common/status.h"

namespace spool::rpc {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using FrameHandler = std::function<void(Frame)>;
  using CloseHandler = std::function<void(const Status&)>;
  using ReadyHandler = std::function<void(const Status&)>;

  Connection(asio::ip::tcp::socket socket, ClusterKey key, std::string component);
  ~Connection();

  // Accepting side: handshake, then frames to on_frame until closed.
  void StartServer(FrameHandler on_frame, CloseHandler on_close);
  // Connecting side: on_ready(ok) after the handshake, or on_ready(error).
  void StartClient(ReadyHandler on_ready, FrameHandler on_frame, CloseHandler on_close);

  // Thread-safe; frames go out in the order Send is called.
  void Send(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id,
            const google::protobuf::MessageLite& header, std::string payload = {});
  void SendRaw(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id, std::string header,
               std::string payload);
  // Thread-safe; on_close runs once with `why`.
  void Close(const Status& why);

  const std::string& peer() const { return peer_; }
  // Unique among the connections of this process, never reused.
  uint64_t id() const { return id_; }

 private:
  struct OutFrame {
    std::string prefix;
    std::string payload;
  };

  asio::awaitable<Result<Frame>> ReadFrame();
  // The coroutines hold `keep_alive` so that the connection outlives them
  // even when its owner drops it while closing.
  asio::awaitable<void> RunServer(std::shared_ptr<Connection> keep_alive);
  asio::awaitable<void> RunClient(std::shared_ptr<Connection> keep_alive, ReadyHandler on_ready);
  asio::awaitable<void> ReadLoop();
  void StartWrite();  // on strand
  void CloseOnStrand(const Status& why);
  void ArmHandshakeTimer();

  asio::ip::tcp::socket socket_;
  asio::strand<asio::any_io_executor> strand_;
  asio::steady_timer handshake_timer_;
  ClusterKey key_;
  std::string component_;
  std::string peer_;
  const uint64_t id_;
  FrameHandler on_frame_;
  CloseHandler on_close_;
  // Guarded by strand_.
  std::deque<OutFrame> out_;
  bool writing_ = false;
  bool closed_ = false;
  bool handshaken_ = false;
};

// Parses a host:port string ("127.0.0.1:7000", "[::1]:7000").
Result<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& host_port);

}  // namespace spool::rpc
