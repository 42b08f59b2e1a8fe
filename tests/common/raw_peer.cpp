#include "tests/common/raw_peer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/bytes.h"
#include "common/rpc/handshake.h"
#include "common/rpc/methods.h"
#include "spool.pb.h"

namespace spool::testing {

RawPeer RawPeer::Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return RawPeer(-1);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return RawPeer(fd);
}

RawPeer::~RawPeer() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawPeer::WriteAll(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool RawPeer::SendFrame(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id,
                        std::string_view header, std::string_view payload) {
  auto prefix = rpc::EncodeFramePrefix(method, flags, status, request_id, header, payload.size());
  return WriteAll(prefix) && WriteAll(payload);
}

bool RawPeer::ReadExact(char* out, size_t n, std::chrono::steady_clock::time_point deadline) {
  while (n > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t r = ::recv(fd_, out, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

std::optional<rpc::Frame> RawPeer::ReadFrame(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char length_field[4];
  if (!ReadExact(length_field, 4, deadline)) return std::nullopt;
  uint64_t length = GetLE(length_field, 4);
  if (length > rpc::kMaxFrameBytes) return std::nullopt;
  std::string body(length, '\0');
  if (!ReadExact(body.data(), length, deadline)) return std::nullopt;
  auto frame = rpc::Frame::Decode(std::move(body));
  if (!frame.ok()) return std::nullopt;
  return std::move(frame).value();
}

bool RawPeer::ClientHandshake(const ClusterKey& key, const std::string& claimed_cluster_id) {
  std::string cluster_id = claimed_cluster_id.empty() ? key.cluster_id : claimed_cluster_id;
  auto challenge_frame = ReadFrame();
  proto::HelloChallenge challenge;
  if (!challenge_frame || !challenge_frame->ParseHeader(challenge)) return false;
  proto::HelloResponse response;
  response.set_cluster_id(cluster_id);
  response.set_client_nonce(rpc::RandomNonce());
  response.set_client_proof(rpc::ClientProof(key.key, challenge.server_nonce(), response.client_nonce(), cluster_id));
  if (!SendFrame(static_cast<uint16_t>(rpc::Method::kHello), 0, 0, 0, response.SerializeAsString())) return false;
  auto accept_frame = ReadFrame();
  proto::HelloAccept accept;
  return accept_frame && accept_frame->ParseHeader(accept) &&
         rpc::ProofsEqual(accept.server_proof(),
                          rpc::ServerProof(key.key, challenge.server_nonce(), response.client_nonce(), cluster_id));
}

bool RawPeer::WaitClosed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t r = ::recv(fd_, buffer, sizeof buffer, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return true;
  }
}

RawListener::RawListener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(fd_, 16);
  socklen_t len = sizeof addr;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
}

RawListener::~RawListener() {
  if (fd_ >= 0) ::close(fd_);
}

RawPeer RawListener::Accept(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return RawPeer(-1);
  return RawPeer(::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC));
}

}  // namespace spool::testing
