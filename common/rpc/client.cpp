#include "common/rpc/client.h"

#include "common/log.h"
#include "spool.pb.h"

namespace spool::rpc {
namespace {

Status ReplyStatus(const Frame& frame) {
  if (frame.status == 0) return Status::Ok();
  proto::ErrorReply error;
  frame.ParseHeader(error);
  return Status::Error(frame.status, error.message());
}

}  // namespace

std::shared_ptr<RpcClient> RpcClient::Create(asio::io_context& io, std::string address, ClusterKey key,
                                             RpcClientOptions options) {
  auto client = std::shared_ptr<RpcClient>(new RpcClient(io, std::move(address), std::move(key), options));
  client->ArmSweep();
  return client;
}

RpcClient::RpcClient(asio::io_context& io, std::string address, ClusterKey key, RpcClientOptions options)
    : io_(io),
      address_(std::move(address)),
      key_(std::move(key)),
      options_(options),
      sweep_timer_(io),
      reconnect_timer_(io) {}

RpcClient::~RpcClient() = default;

std::future<Result<Frame>> RpcClient::Call(Method method, const google::protobuf::MessageLite& header,
                                           Payload payload, std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<Result<Frame>>>();
  auto future = promise->get_future();
  CallAsync(method, header, std::move(payload), timeout,
            [promise](Result<Frame> result) { promise->set_value(std::move(result)); });
  return future;
}

void RpcClient::CallAsync(Method method, const google::protobuf::MessageLite& header, Payload payload,
                          std::chrono::milliseconds timeout, Done done) {
  if (timeout.count() == 0) timeout = options_.default_timeout;
  std::unique_lock lock(mu_);
  if (closed_) {
    lock.unlock();
    done(Status::Error(ESHUTDOWN, "client closed"));
    return;
  }
  if (!connection_ && !connecting_ && Clock::now() < next_attempt_ && !last_error_.ok()) {
    // The last connect failed and the backoff has not passed: fail now rather
    // than make the caller wait for the next attempt (it may have another
    // replica to try, or its own retry policy).
    Status error = last_error_;
    lock.unlock();
    done(error);
    return;
  }
  uint64_t id = next_request_id_++;
  Pending& p = pending_[id];
  p.done = std::move(done);
  p.deadline = Clock::now() + timeout;
  p.method = static_cast<uint16_t>(method);
  p.header = header.SerializeAsString();
  p.payload = std::move(payload);
  if (connection_) {
    SendUnsentLocked();
  } else {
    ConnectLocked();
  }
}

Status RpcClient::CallSync(Method method, const google::protobuf::MessageLite& header,
                           google::protobuf::MessageLite* reply, Payload payload, std::string* reply_payload,
                           std::chrono::milliseconds timeout) {
  auto result = Call(method, header, std::move(payload), timeout).get();
  if (!result.ok()) return result.status();
  if (reply && !result->ParseHeader(*reply))
    return Status::Error(EPROTO, "malformed reply from " + address_);
  if (reply_payload) reply_payload->assign(result->payload());
  return Status::Ok();
}

void RpcClient::SendUnsentLocked() {
  for (auto& [id, p] : pending_) {
    if (p.sent) continue;
    p.sent = true;
    connection_->SendRaw(p.method, 0, 0, id, std::move(p.header), std::move(p.payload));
    p.header.clear();
    p.payload.clear();
  }
}

void RpcClient::ConnectLocked() {
  if (connecting_ || connection_ || closed_) return;
  auto now = Clock::now();
  if (now < next_attempt_) {
    reconnect_timer_.expires_at(next_attempt_);
    reconnect_timer_.async_wait([weak = weak_from_this()](const asio::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        std::lock_guard lock(self->mu_);
        bool has_unsent = false;
        for (auto& [id, p] : self->pending_) has_unsent |= !p.sent;
        if (has_unsent) self->ConnectLocked();
      }
    });
    return;
  }
  auto endpoint = ParseEndpoint(address_);
  if (!endpoint.ok()) {
    last_error_ = endpoint.status();
    return;
  }
  connecting_ = true;
  auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
  socket->async_connect(*endpoint, [weak = weak_from_this(), socket](const asio::error_code& ec) {
    auto self = weak.lock();
    if (!self) return;
    if (ec) {
      self->OnConnected(nullptr, Status::Error(ECONNREFUSED, "connect to " + self->address_ + ": " + ec.message()));
      return;
    }
    auto connection = std::make_shared<Connection>(std::move(*socket), self->key_, self->options_.component);
    std::weak_ptr<Connection> weak_connection = connection;
    connection->StartClient(
        [weak, connection](const Status& s) {
          if (auto self = weak.lock()) self->OnConnected(connection, s);
        },
        [weak](Frame frame) {
          if (auto self = weak.lock()) self->OnFrame(std::move(frame));
        },
        [weak, weak_connection](const Status& why) {
          auto self = weak.lock();
          auto c = weak_connection.lock();
          if (self) self->OnClosed(c, why);
        });
  });
}

void RpcClient::OnConnected(const std::shared_ptr<Connection>& c, const Status& s) {
  std::unique_lock lock(mu_);
  connecting_ = false;
  if (!s.ok() || closed_) {
    last_error_ = s;
    backoff_ = std::min(options_.max_backoff, std::max(options_.min_backoff, backoff_ * 2));
    next_attempt_ = Clock::now() + backoff_;
    if (closed_ && c) c->Close(Status::Error(ESHUTDOWN, "client closed"));
    // Fail fast: a caller with other copies to try (a dead brick) should not
    // wait out its deadline; a caller that must wait (meta) retries itself.
    std::vector<Done> failed;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (!it->second.sent) {
        failed.push_back(std::move(it->second.done));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& done : failed) done(s.ok() ? Status::Error(ESHUTDOWN, "client closed") : s);
    return;
  }
  backoff_ = std::chrono::milliseconds(0);
  connection_ = c;
  ++generation_;
  SendUnsentLocked();
}

void RpcClient::OnFrame(Frame frame) {
  Done done;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(frame.request_id);
    if (it == pending_.end()) return;  // late reply to a request that timed out
    done = std::move(it->second.done);
    pending_.erase(it);
  }
  Status status = ReplyStatus(frame);
  if (status.ok())
    done(std::move(frame));
  else
    done(status);
}

void RpcClient::OnClosed(const std::shared_ptr<Connection>& c, const Status& why) {
  std::vector<Done> failed;
  {
    std::lock_guard lock(mu_);
    if (c && connection_ != c) return;  // a handshake that failed; OnConnected handled it
    connection_.reset();
    last_error_ = why;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.sent) {
        failed.push_back(std::move(it->second.done));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    bool has_unsent = !pending_.empty();
    if (has_unsent && !closed_) ConnectLocked();
  }
  for (auto& done : failed) done(Status::Error(ECONNRESET, "connection to " + address_ + " lost: " + why.message()));
}

void RpcClient::ArmSweep() {
  sweep_timer_.expires_after(std::chrono::milliseconds(20));
  sweep_timer_.async_wait([weak = weak_from_this()](const asio::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) {
      self->Sweep();
      self->ArmSweep();
    }
  });
}

void RpcClient::Sweep() {
  std::vector<std::pair<Done, Status>> expired;
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        std::string why = "request to " + address_ + " timed out";
        if (!it->second.sent && !last_error_.ok()) why += " (" + last_error_.message() + ")";
        expired.emplace_back(std::move(it->second.done), Status::Error(ETIMEDOUT, why));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [done, s] : expired) done(s);
}

void RpcClient::Close() {
  std::shared_ptr<Connection> c;
  std::vector<Done> failed;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    c = std::move(connection_);
    for (auto& [id, p] : pending_) failed.push_back(std::move(p.done));
    pending_.clear();
  }
  asio::post(io_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->sweep_timer_.cancel();
      self->reconnect_timer_.cancel();
    }
  });
  if (c) c->Close(Status::Error(ESHUTDOWN, "client closed"));
  for (auto& done : failed) done(Status::Error(ESHUTDOWN, "client closed"));
}

bool RpcClient::connected() const {
  std::lock_guard lock(mu_);
  return connection_ != nullptr;
}

}  // namespace spool::rpc
