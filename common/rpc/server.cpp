#include "common/rpc/server.h"

#include <algorithm>

#include "common/log.h"
#include "spool.pb.h"

namespace spool::rpc {

struct Responder::State {
  std::weak_ptr<Connection> connection;
  uint16_t method;
  uint64_t request_id;
  std::atomic<bool> answered{false};

  void Send(int32_t status, const google::protobuf::MessageLite& header, std::string payload) {
    if (answered.exchange(true)) return;
    if (auto c = connection.lock()) c->Send(method, kFlagReply, status, request_id, header, std::move(payload));
  }
  ~State() {
    if (!answered) {
      proto::ErrorReply e;
      e.set_message("request dropped without a reply");
      Send(EIO, e, {});
    }
  }
};

Responder::Responder(std::weak_ptr<Connection> connection, uint16_t method, uint64_t request_id)
    : state_(std::make_shared<State>()) {
  state_->connection = std::move(connection);
  state_->method = method;
  state_->request_id = request_id;
}

uint64_t Responder::connection_id() const {
  auto c = state_->connection.lock();
  return c ? c->id() : 0;
}

void Responder::Reply(const google::protobuf::MessageLite& header, std::string payload) const {
  state_->Send(0, header, std::move(payload));
}

void Responder::Fail(const Status& status) const {
  proto::ErrorReply e;
  e.set_message(status.message());
  state_->Send(status.ok() ? EIO : status.code(), e, {});
}

void Responder::Finish(const Status& status) const {
  if (status.ok())
    Reply(proto::Empty());
  else
    Fail(status);
}

RpcServer::RpcServer(asio::io_context& io, ClusterKey key, std::string component)
    : io_(io), acceptor_(io), key_(std::move(key)), component_(std::move(component)) {}

RpcServer::~RpcServer() { Stop(); }

void RpcServer::Handle(Method method, Handler handler, Dispatch dispatch) {
  handlers_[static_cast<uint16_t>(method)] = Registered{std::move(handler), dispatch};
}

Status RpcServer::Listen(const std::string& host_port) {
  auto endpoint = ParseEndpoint(host_port);
  if (!endpoint.ok()) return endpoint.status();
  asio::error_code ec;
  acceptor_.open(endpoint->protocol(), ec);
  if (!ec) acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(*endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::Error(EADDRINUSE, "listen on " + host_port + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
  Accept();
  return Status::Ok();
}

void RpcServer::Accept() {
  acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      auto connection = std::make_shared<Connection>(std::move(socket), key_, component_);
      {
        std::lock_guard lock(mu_);
        connections_.insert(connection);
      }
      std::weak_ptr<Connection> weak = connection;
      connection->StartServer(
          [this, weak](Frame frame) {
            if (auto c = weak.lock()) OnFrame(c, std::move(frame));
          },
          [this, weak](const Status&) {
            if (auto c = weak.lock()) {
              std::lock_guard lock(mu_);
              connections_.erase(c);
            }
          });
    }
    Accept();
  });
}

void RpcServer::OnFrame(const std::shared_ptr<Connection>& connection, Frame frame) {
  if (frame.is_reply()) {
    connection->Close(Status::Error(EPROTO, "client sent a reply frame"));
    return;
  }
  Responder responder(connection, frame.method, frame.request_id);
  auto it = handlers_.find(frame.method);
  if (it == handlers_.end()) {
    responder.Fail(Status::Error(ENOSYS, "unknown method " + std::to_string(frame.method)));
    return;
  }
  auto run = [handler = &it->second.handler, responder](const Frame& request) {
    try {
      (*handler)(request, responder);
    } catch (const std::exception& e) {
      SPOOL_LOG_ERROR("rpc handler failed method={} error=\"{}\"", request.method, e.what());
      responder.Fail(Status::Error(EIO, std::string("internal error: ") + e.what()));
    }
  };
  if (it->second.dispatch == Dispatch::kInline) return run(frame);
  auto request = std::make_shared<Frame>(std::move(frame));
  asio::post(io_, [run, request] { run(*request); });
}

void RpcServer::Stop() {
  asio::error_code ec;
  acceptor_.close(ec);
  std::set<std::shared_ptr<Connection>> connections;
  {
    std::lock_guard lock(mu_);
    connections.swap(connections_);
  }
  for (auto& c : connections) c->Close(Status::Error(ESHUTDOWN, "server stopping"));
}

size_t RpcServer::connection_count() const {
  std::lock_guard lock(mu_);
  return connections_.size();
}

bool RpcServer::IsConnectionOpen(uint64_t connection_id) const {
  std::lock_guard lock(mu_);
  return std::any_of(connections_.begin(), connections_.end(),
                     [&](const auto& c) { return c->id() == connection_id; });
}

}  // namespace spool::rpc
