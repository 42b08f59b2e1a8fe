// One authenticated TCP connection, used by both ends of every RPC.
//
// A Connection runs the handshake (HMAC-SHA256 challenge-response over the
// cluster key, both directions), then delivers every frame it reads to a
// callback and sends frames queued from any thread. Reading, closing and
// queued writes run on the connection's strand; a frame sent while nothing
// is queued goes out at once from the sending thread (one non-blocking
// send, no hand-off to an io thread: on a small machine each wake-up of
// another thread costs more than the send itself).
#pragma once

#include <google/protobuf/message_lite.h>

#include <asio.hpp>
#include <deque>
#include <functional>
#include <atomic>
#include <memory>
#include <mutex>
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
            const google::protobuf::MessageLite& header, Payload payload = {});
  void SendRaw(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id, std::string header,
               Payload payload);
  // Thread-safe; on_close runs once with `why`.
  void Close(const Status& why);

  const std::string& peer() const { return peer_; }
  // Unique among the connections of this process, never reused.
  uint64_t id() const { return id_; }

 private:
  struct OutFrame {
    std::string prefix;
    Payload payload;
    size_t payload_sent = 0;  // by a partial send
    std::string_view unsent_payload() const { return payload.view().substr(payload_sent); }
  };

  // The next frame, from bytes already read when they hold one. Frames
  // that arrive together (a mount's pipelined reads, a batch of replies)
  // cost one recv and no wake-up each.
  asio::awaitable<Result<Frame>> ReadFrame();
  // Reads what the socket has (at least one byte) after in_end_, waiting
  // for it if nothing is there. On strand.
  asio::awaitable<Status> ReadMore(size_t frame_bytes_buffered);
  // Makes room for `need` bytes from in_begin_ on. On strand.
  void ReserveInput(size_t need);
  // The coroutines hold `keep_alive` so that the connection outlives them
  // even when its owner drops it while closing.
  asio::awaitable<void> RunServer(std::shared_ptr<Connection> keep_alive);
  asio::awaitable<void> RunClient(std::shared_ptr<Connection> keep_alive, ReadyHandler on_ready);
  asio::awaitable<void> ReadLoop();
  // Sends what it can of `out` now; false if the socket would block (or
  // failed: the strand's write then reports it). REQUIRES: send_mu_ held.
  bool TrySendNowLocked(OutFrame& out);
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
  // Guards out_, writing_, and the socket's fd against a close while a
  // sending thread writes to it.
  std::mutex send_mu_;
  std::deque<OutFrame> out_;  // the front is being written while writing_
  bool writing_ = false;      // the strand owns the send side until out_ drains
  bool closing_ = false;      // Close() was called
  // Set under send_mu_ on the strand; read anywhere.
  std::atomic<bool> closed_{false};
  bool handshaken_ = false;  // guarded by strand_
  // Bytes read and not yet framed: [in_begin_, in_end_) of in_. Frames
  // handed out share in_ and point before in_begin_, which is never
  // written again: a full buffer is replaced, not reused, unless no frame
  // holds it any more. Guarded by strand_.
  std::shared_ptr<char[]> in_;
  size_t in_capacity_ = 0;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
};

// Parses a host:port string ("127.0.0.1:7000", "[::1]:7000").
Result<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& host_port);

}  // namespace spool::rpc
