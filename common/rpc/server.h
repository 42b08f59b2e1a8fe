// RpcServer: accepts connections, authenticates them, and dispatches each
// request frame to the handler registered for its method.
//
// Handlers run on the io_context's threads (not on the connection's strand),
// so several requests of one connection proceed at once; a handler that only
// checks a request and queues it (Dispatch::kInline) runs on the thread that
// read the frame instead, which saves a thread wake-up per request. A handler answers
// through its Responder exactly once, from any thread, now or later (group
// commit answers after the sync).
#pragma once

#include <google/protobuf/message_lite.h>

#include <asio.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "common/cluster_key.h"
#include "common/rpc/connection.h"
#include "common/rpc/methods.h"
#include "common/status.h"

namespace spool::rpc {

// Answers one request. Copyable; the first Reply/Fail wins, later ones are
// ignored. A request whose last Responder is dropped unanswered gets EIO.
class Responder {
 public:
  Responder(std::weak_ptr<Connection> connection, uint16_t method, uint64_t request_id);

  void Reply(const google::protobuf::MessageLite& header, std::string payload = {}) const;
  void Fail(const Status& status) const;
  // Reply(Empty) if ok, else Fail.
  void Finish(const Status& status) const;
  // The id of the connection the request came on (Connection::id), 0 if it
  // is gone: tells apart the requests of different clients.
  uint64_t connection_id() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

class RpcServer {
 public:
  using Handler = std::function<void(const Frame& request, const Responder& responder)>;

  RpcServer(asio::io_context& io, ClusterKey key, std::string component);
  ~RpcServer();

  // kPost: the handler is posted to the io_context (it may read a disk or
  // take long; the connection reads its next frame meanwhile). kInline: it
  // runs where the frame was read, and the connection reads on once it
  // returns. Only for handlers that never wait: on this 2-core VM a post
  // is a thread wake-up (~6% of a maildir delivery's CPU went to context
  // switches), but a read that waits inline holds up its connection's
  // other requests.
  enum class Dispatch { kPost, kInline };
  // REQUIRES: called before Listen.
  void Handle(Method method, Handler handler, Dispatch dispatch = Dispatch::kPost);
  // Binds and starts accepting. A port of 0 picks a free one; see port().
  Status Listen(const std::string& host_port);
  uint16_t port() const { return port_; }
  void Stop();

  // Connections that passed the handshake and are open.
  size_t connection_count() const;
  // False once the connection with this id (Responder::connection_id) has
  // closed: its peer went away (a killed process's socket closes at once).
  bool IsConnectionOpen(uint64_t connection_id) const;

 private:
  void Accept();
  void OnFrame(const std::shared_ptr<Connection>& connection, Frame frame);

  asio::io_context& io_;
  asio::ip::tcp::acceptor acceptor_;
  ClusterKey key_;
  std::string component_;
  uint16_t port_ = 0;
  struct Registered {
    Handler handler;
    Dispatch dispatch = Dispatch::kPost;
  };
  std::unordered_map<uint16_t, Registered> handlers_;  // immutable after Listen
  mutable std::mutex mu_;                           // guards connections_
  std::set<std::shared_ptr<Connection>> connections_;
};

// Parses a request header, or answers EINVAL and returns false.
template <typename Msg>
bool ParseRequest(const Frame& frame, Msg& msg, const Responder& responder) {
  if (frame.ParseHeader(msg)) return true;
  responder.Fail(Status::Error(EINVAL, "malformed request header"));
  return false;
}

}  // namespace spool::rpc
