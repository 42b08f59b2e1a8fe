// RpcClient: one logical connection to a server, with many requests in
// flight, replies matched by request id, a deadline on every request, and
// reconnection with exponential backoff.
//
// A request made while disconnected starts a connection attempt and fails
// with that attempt's error (ECONNREFUSED, EACCES for a refused handshake) if
// it fails; during the backoff after a failed attempt, requests fail at once
// with the last error. A request already sent when
// the connection breaks fails with ECONNRESET: the caller decides whether it
// is safe to retry.
#pragma once

#include <cerrno>

#include <google/protobuf/message_lite.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/cluster_key.h"
#include "common/rpc/connection.h"
#include "common/rpc/frame.h"
#include "common/rpc/methods.h"
#include "common/status.h"

namespace spool::rpc {

struct RpcClientOptions {
  std::chrono::milliseconds default_timeout{10000};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{2000};
  std::string component = "client";
};

using Clock = std::chrono::steady_clock;

// Errors that mean "the server was not reached or did not answer", as
// opposed to an answer from it: callers retry these (on another copy).
inline bool IsTransportError(int code) {
  return code == ECONNRESET || code == ECONNREFUSED || code == ETIMEDOUT || code == ENOTCONN || code == EPIPE;
}

// Transport errors after which the request may have reached the server and
// been carried out (sent, but the answer was lost), unlike a refused or
// absent connection: a retried mutation may find its own work done.
inline bool MayHaveArrived(int code) { return code == ECONNRESET || code == ETIMEDOUT; }

class RpcClient : public std::enable_shared_from_this<RpcClient> {
 public:
  static std::shared_ptr<RpcClient> Create(asio::io_context& io, std::string address, ClusterKey key,
                                           RpcClientOptions options = {});
  ~RpcClient();

  // Sends a request. The future yields the reply frame, or the reply's error
  // status, or ETIMEDOUT / ECONNRESET / ECONNREFUSED.
  std::future<Result<Frame>> Call(Method method, const google::protobuf::MessageLite& header,
                                  Payload payload = {}, std::chrono::milliseconds timeout = {});

  // Callback form: `done` runs exactly once, on an io thread (or inline if
  // the client is closed). It must not block.
  using Done = std::function<void(Result<Frame>)>;
  void CallAsync(Method method, const google::protobuf::MessageLite& header, Payload payload,
                 std::chrono::milliseconds timeout, Done done);

  // Call and wait; parses the reply header into `reply` when given.
  Status CallSync(Method method, const google::protobuf::MessageLite& header,
                  google::protobuf::MessageLite* reply = nullptr, Payload payload = {},
                  std::string* reply_payload = nullptr, std::chrono::milliseconds timeout = {});

  void Close();
  bool connected() const;
  // Counts connections that passed the handshake: a change means the peer
  // may have restarted and forgotten per-connection state.
  uint64_t connection_generation() const { return generation_.load(); }
  const std::string& address() const { return address_; }

 private:
  RpcClient(asio::io_context& io, std::string address, ClusterKey key, RpcClientOptions options);

  struct Pending {
    Done done;
    Clock::time_point deadline;
    uint16_t method = 0;
    std::string header;   // kept until sent
    Payload payload;      // kept until sent
    bool sent = false;
  };

  void ConnectLocked();                  // REQUIRES: mu_ held
  void OnConnected(const std::shared_ptr<Connection>& c, const Status& s);
  void OnFrame(Frame frame);
  void OnClosed(const std::shared_ptr<Connection>& c, const Status& why);
  void SendUnsentLocked();               // REQUIRES: mu_ held
  void ArmSweep();
  void Sweep();

  asio::io_context& io_;
  std::string address_;
  ClusterKey key_;
  RpcClientOptions options_;
  asio::steady_timer sweep_timer_;
  asio::steady_timer reconnect_timer_;

  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mu_;  // guards everything below
  std::map<uint64_t, Pending> pending_;
  uint64_t next_request_id_ = 1;
  std::shared_ptr<Connection> connection_;  // set once the handshake passed
  bool connecting_ = false;
  bool closed_ = false;
  std::chrono::milliseconds backoff_{0};
  Clock::time_point next_attempt_{};
  Status last_error_;
};

}  // namespace spool::rpc
