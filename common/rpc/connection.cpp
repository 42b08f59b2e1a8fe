#include "common/rpc/connection.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/bytes.h"
#include "common/log.h"
#include "common/rpc/handshake.h"
#include "common/rpc/methods.h"
#include "spool.pb.h"

namespace spool::rpc {

using asio::use_awaitable;

namespace {

uint64_t NextConnectionId() {
  static std::atomic<uint64_t> next{1};
  return next++;
}

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);

std::string PeerName(const asio::ip::tcp::socket& s) {
  asio::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}
}  // namespace

Connection::Connection(asio::ip::tcp::socket socket, ClusterKey key, std::string component)
    : socket_(std::move(socket)),
      strand_(asio::make_strand(socket_.get_executor())),
      handshake_timer_(strand_),
      key_(std::move(key)),
      component_(std::move(component)),
      peer_(PeerName(socket_)),
      id_(NextConnectionId()) {
  asio::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
}

Connection::~Connection() = default;

void Connection::ArmHandshakeTimer() {
  handshake_timer_.expires_after(kHandshakeTimeout);
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec && !self->handshaken_) self->CloseOnStrand(Status::Error(ETIMEDOUT, "handshake timed out"));
  });
}

void Connection::StartServer(FrameHandler on_frame, CloseHandler on_close) {
  on_frame_ = std::move(on_frame);
  on_close_ = std::move(on_close);
  asio::co_spawn(strand_, [self = shared_from_this()]() { return self->RunServer(self); }, asio::detached);
}

void Connection::StartClient(ReadyHandler on_ready, FrameHandler on_frame, CloseHandler on_close) {
  on_frame_ = std::move(on_frame);
  on_close_ = std::move(on_close);
  asio::co_spawn(
      strand_,
      [self = shared_from_this(), on_ready = std::move(on_ready)]() { return self->RunClient(self, on_ready); },
      asio::detached);
}

asio::awaitable<Result<Frame>> Connection::ReadFrame() {
  for (;;) {
    const size_t buffered = in_end_ - in_begin_;
    size_t need = kLengthFieldBytes;
    if (buffered >= kLengthFieldBytes) {
      const uint64_t length = GetLE(in_.get() + in_begin_, 4);
      if (length > kMaxFrameBytes)
        co_return Status::Error(EMSGSIZE, "frame of " + std::to_string(length) + " bytes exceeds the maximum");
      if (length < kFixedBytes) co_return Status::Error(EPROTO, "frame shorter than its fixed part");
      need = kLengthFieldBytes + length;
      if (buffered >= need) {
        // Shares the buffer's ownership, points at this frame's body.
        std::shared_ptr<char[]> body(in_, in_.get() + in_begin_ + kLengthFieldBytes);
        in_begin_ += need;
        co_return Frame::Decode(std::move(body), length);
      }
    }
    ReserveInput(need);
    auto s = co_await ReadMore(buffered);
    if (!s.ok()) co_return s;
  }
}

void Connection::ReserveInput(size_t need) {
  // Small frames share buffers of this size; a larger one gets its own.
  constexpr size_t kInputBuffer = 64 << 10;
  // Below this much free space a read would return a fraction of a frame.
  constexpr size_t kMinRead = 4 << 10;
  const size_t buffered = in_end_ - in_begin_;
  if (in_ && in_capacity_ - in_begin_ >= need && in_capacity_ - in_end_ >= std::min(kMinRead, need - buffered)) return;
  const size_t capacity = std::max(kInputBuffer, need);
  if (in_ && in_.use_count() == 1 && in_capacity_ >= capacity) {
    std::memmove(in_.get(), in_.get() + in_begin_, buffered);
  } else {
    auto fresh = std::make_shared_for_overwrite<char[]>(capacity);
    if (buffered > 0) std::memcpy(fresh.get(), in_.get() + in_begin_, buffered);
    in_ = std::move(fresh);
    in_capacity_ = capacity;
  }
  in_begin_ = 0;
  in_end_ = buffered;
}

asio::awaitable<Status> Connection::ReadMore(size_t frame_bytes_buffered) {
  for (;;) {
    const ssize_t n = ::recv(socket_.native_handle(), in_.get() + in_end_, in_capacity_ - in_end_, MSG_DONTWAIT);
    if (n > 0) {
      in_end_ += static_cast<size_t>(n);
      co_return Status::Ok();
    }
    if (n == 0)
      co_return Status::Error(ECONNRESET, frame_bytes_buffered == 0 ? "peer closed" : "truncated frame: peer closed");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      co_return Status::Error(ECONNRESET, std::string(frame_bytes_buffered == 0 ? "" : "truncated frame: ") +
                                              std::strerror(errno));
    asio::error_code ec;
    co_await socket_.async_wait(asio::ip::tcp::socket::wait_read, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return Status::Error(ECONNRESET, ec.message());
  }
}

asio::awaitable<void> Connection::RunServer([[maybe_unused]] std::shared_ptr<Connection> keep_alive) {
  ArmHandshakeTimer();
  proto::HelloChallenge challenge;
  challenge.set_cluster_id(key_.cluster_id);
  challenge.set_server_nonce(RandomNonce());
  Send(static_cast<uint16_t>(Method::kHello), 0, 0, 0, challenge);

  auto frame = co_await ReadFrame();
  if (!frame.ok()) {
    CloseOnStrand(frame.status());
    co_return;
  }
  proto::HelloResponse response;
  if (frame->method != static_cast<uint16_t>(Method::kHello) || !frame->ParseHeader(response)) {
    CloseOnStrand(Status::Error(EPROTO, "handshake refused: malformed hello"));
    co_return;
  }
  if (response.cluster_id() != key_.cluster_id) {
    CloseOnStrand(Status::Error(EACCES, "handshake refused: cluster id '" + response.cluster_id() + "' is not ours"));
    co_return;
  }
  auto expected = ClientProof(key_.key, challenge.server_nonce(), response.client_nonce(), key_.cluster_id);
  if (response.client_nonce().size() != kNonceBytes || !ProofsEqual(expected, response.client_proof())) {
    CloseOnStrand(Status::Error(EACCES, "handshake refused: wrong cluster key"));
    co_return;
  }
  proto::HelloAccept accept;
  accept.set_server_proof(ServerProof(key_.key, challenge.server_nonce(), response.client_nonce(), key_.cluster_id));
  Send(static_cast<uint16_t>(Method::kHello), kFlagReply, 0, 0, accept);
  handshaken_ = true;
  handshake_timer_.cancel();
  co_await ReadLoop();
}

asio::awaitable<void> Connection::RunClient([[maybe_unused]] std::shared_ptr<Connection> keep_alive,
                                            ReadyHandler on_ready) {
  ArmHandshakeTimer();
  auto fail = [&](const Status& s) {
    on_ready(s);
    CloseOnStrand(s);
  };
  auto frame = co_await ReadFrame();
  if (!frame.ok()) {
    fail(frame.status());
    co_return;
  }
  proto::HelloChallenge challenge;
  if (frame->method != static_cast<uint16_t>(Method::kHello) || !frame->ParseHeader(challenge) ||
      challenge.server_nonce().size() != kNonceBytes) {
    fail(Status::Error(EPROTO, "handshake: malformed challenge"));
    co_return;
  }
  if (challenge.cluster_id() != key_.cluster_id) {
    fail(Status::Error(EACCES, "handshake: server belongs to cluster '" + challenge.cluster_id() + "'"));
    co_return;
  }
  proto::HelloResponse response;
  response.set_cluster_id(key_.cluster_id);
  response.set_client_nonce(RandomNonce());
  response.set_client_proof(
      ClientProof(key_.key, challenge.server_nonce(), response.client_nonce(), key_.cluster_id));
  Send(static_cast<uint16_t>(Method::kHello), 0, 0, 0, response);

  frame = co_await ReadFrame();
  if (!frame.ok()) {
    fail(Status::Error(EACCES, "handshake refused by server (wrong cluster key?): " + frame.status().message()));
    co_return;
  }
  proto::HelloAccept accept;
  auto expected = ServerProof(key_.key, challenge.server_nonce(), response.client_nonce(), key_.cluster_id);
  if (!frame->ParseHeader(accept) || !ProofsEqual(expected, accept.server_proof())) {
    fail(Status::Error(EACCES, "handshake: server does not know the cluster key"));
    co_return;
  }
  handshaken_ = true;
  handshake_timer_.cancel();
  on_ready(Status::Ok());
  co_await ReadLoop();
}

asio::awaitable<void> Connection::ReadLoop() {
  for (;;) {
    auto frame = co_await ReadFrame();
    if (!frame.ok()) {
      CloseOnStrand(frame.status());
      co_return;
    }
    if (closed_) co_return;
    on_frame_(std::move(frame).value());
  }
}

void Connection::Send(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id,
                      const google::protobuf::MessageLite& header, Payload payload) {
  SendRaw(method, flags, status, request_id, header.SerializeAsString(), std::move(payload));
}

void Connection::SendRaw(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id, std::string header,
                         Payload payload) {
  OutFrame out;
  out.prefix = EncodeFramePrefix(method, flags, status, request_id, header, payload.size());
  out.payload = std::move(payload);
  std::lock_guard lock(send_mu_);
  if (closed_ || closing_) return;
  if (!writing_ && TrySendNowLocked(out)) return;
  out_.push_back(std::move(out));
  if (writing_) return;
  writing_ = true;
  asio::post(strand_, [self = shared_from_this()] { self->StartWrite(); });
}

bool Connection::TrySendNowLocked(OutFrame& out) {
  const std::string_view payload = out.unsent_payload();
  std::array<iovec, 2> iov{iovec{out.prefix.data(), out.prefix.size()},
                           iovec{const_cast<char*>(payload.data()), payload.size()}};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = iov.size();
  const ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) return false;  // EAGAIN, EINTR or an error: the strand's write retries or reports it
  const size_t sent = static_cast<size_t>(n);
  if (sent == out.prefix.size() + payload.size()) return true;
  // A partial send: the rest goes out from the strand, in order.
  if (sent < out.prefix.size()) {
    out.prefix.erase(0, sent);
  } else {
    out.payload_sent += sent - out.prefix.size();
    out.prefix.clear();
  }
  return false;
}

void Connection::StartWrite() {
  std::lock_guard lock(send_mu_);
  if (out_.empty() || closed_ || closing_) {
    out_.clear();
    writing_ = false;
    return;
  }
  // References to the front frame stay valid while other threads append.
  auto& front = out_.front();
  const std::string_view payload = front.unsent_payload();
  std::array<asio::const_buffer, 2> buffers{asio::buffer(front.prefix), asio::buffer(payload.data(), payload.size())};
  asio::async_write(socket_, buffers,
                    asio::bind_executor(strand_, [self = shared_from_this()](const asio::error_code& ec, size_t) {
                      if (ec) self->CloseOnStrand(Status::Error(ECONNRESET, "write failed: " + ec.message()));
                      {
                        std::lock_guard lock(self->send_mu_);
                        self->out_.pop_front();
                      }
                      self->StartWrite();
                    }));
}

void Connection::Close(const Status& why) {
  {
    // Nothing is sent after Close returns, even before the strand closes
    // the socket (a stopping server's dropped requests get no reply).
    std::lock_guard lock(send_mu_);
    closing_ = true;
  }
  asio::post(strand_, [self = shared_from_this(), why] { self->CloseOnStrand(why); });
}

void Connection::CloseOnStrand(const Status& why) {
  {
    std::lock_guard lock(send_mu_);
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    handshake_timer_.cancel();
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    // A write in flight still refers to the front frame's buffers; its
    // completion handler releases it (StartWrite clears the rest).
    if (!writing_) out_.clear();
  }
  // A peer going away normally is not news; anything else is one log line.
  if (why.code() != ECONNRESET || !handshaken_)
    SPOOL_LOG_INFO("{} connection closed peer={} reason=\"{}\"", component_, peer_, why.ToString());
  if (on_close_) {
    auto cb = std::move(on_close_);
    on_close_ = nullptr;
    cb(why);
  }
  on_frame_ = nullptr;
}

Result<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) return Status::Error(EINVAL, "address '" + host_port + "' has no :port");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return Status::Error(EINVAL, "address '" + host_port + "': host is not an IP address");
  char* end = nullptr;
  long port = std::strtol(host_port.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) return Status::Error(EINVAL, "address '" + host_port + "': bad port");
  return asio::ip::tcp::endpoint(address, static_cast<uint16_t>(port));
}

}  // namespace spool::rpc
