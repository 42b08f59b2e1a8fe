// RawPeer: a blocking, hand-driven socket that speaks (or deliberately
// mis-speaks) the wire protocol, for tests that throw hostile or malformed
// traffic at a server, or play a fake server to an RpcClient.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/cluster_key.h"
#include "common/rpc/frame.h"

namespace spool::testing {

class RawPeer {
 public:
  // Connects to 127.0.0.1:port; check ok().
  static RawPeer Connect(int port);
  explicit RawPeer(int fd) : fd_(fd) {}
  RawPeer(RawPeer&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ~RawPeer();

  bool ok() const { return fd_ >= 0; }
  bool WriteAll(std::string_view bytes);
  bool SendFrame(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id, std::string_view header,
                 std::string_view payload = {});
  // Reads one whole frame; nullopt on EOF, error, oversize or timeout.
  std::optional<rpc::Frame> ReadFrame(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Client side of the handshake: claims `cluster_id` (default: the key's)
  // and proves knowledge of key.key. True if the server accepted.
  bool ClientHandshake(const ClusterKey& key, const std::string& claimed_cluster_id = "");
  // True if the peer closes the connection within `timeout` (bytes sent
  // before the close are skipped).
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  bool ReadExact(char* out, size_t n, std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
};

// A listening socket on 127.0.0.1, for a fake server.
class RawListener {
 public:
  RawListener();
  ~RawListener();
  int port() const { return port_; }
  // Accepts one connection (waits up to timeout).
  RawPeer Accept(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace spool::testing
