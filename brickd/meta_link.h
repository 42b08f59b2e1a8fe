// MetaLink: keeps a brick registered with the metadata service.
//
// A background thread registers the brick (uuid, advertised address, failure
// domain, capacity and used bytes of the data directory) and then heartbeats
// every second with the brick id meta handed out. While meta is unreachable it
// retries with exponential backoff; the brick keeps serving chunks meanwhile.
// A heartbeat answered with ENOENT (meta forgot the brick) re-registers.
// Heartbeats carry the repairer's reports; their replies carry its tasks.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "spool.pb.h"

namespace spool::brick {

struct MetaLinkOptions {
  std::string meta_address;    // host:port of spool-meta
  std::string brick_uuid;
  std::string advertise;       // host:port clients reach this brick at
  std::string failure_domain;  // usually the host name
  std::string data_dir;        // statvfs'd for capacity and used bytes
  uint64_t reserve_bytes = 0;  // the store's put reserve, reported as used
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
};

// What the rest of the brick does with the link: every hook runs on the
// link's thread and must not block for long.
struct MetaLinkHooks {
  // Adds this brick's reports (finished repairs, progress) to a heartbeat.
  std::function<void(proto::HeartbeatRequest*)> fill_heartbeat;
  // Meta's answer: repair tasks, scrub requests.
  std::function<void(const proto::HeartbeatReply&)> on_heartbeat_reply;
  // A new cluster map (fetched whenever meta's epoch moves), with this brick's id.
  std::function<void(std::shared_ptr<const proto::ClusterMap>, uint32_t brick_id)> on_map;
};

class MetaLink {
 public:
  // REQUIRES: io runs on threads of its own for the lifetime of the MetaLink.
  MetaLink(asio::io_context& io, ClusterKey key, MetaLinkOptions options, MetaLinkHooks hooks = {});
  ~MetaLink();  // Stop()

  void Start();
  // Stops the thread; waits at most one RPC timeout.
  void Stop();
  // Sends the next heartbeat (with its repair reports) now. Any thread.
  void HeartbeatNow();

  // 0 until registered.
  uint32_t brick_id() const { return brick_id_.load(); }

 private:
  void Run();
  bool Register();   // true once registered
  int Heartbeat();   // 0 or the errno of the failure
  void FetchMap();
  // Sleeps unless stopped first; false if stopped.
  bool SleepFor(std::chrono::milliseconds d);

  MetaLinkOptions options_;
  MetaLinkHooks hooks_;
  std::shared_ptr<rpc::RpcClient> client_;
  std::atomic<uint32_t> brick_id_{0};
  uint64_t map_epoch_ = 0;  // used by the link thread only

  std::mutex mu_;  // guards stopping_, heartbeat_now_
  std::condition_variable cv_;
  bool stopping_ = false;
  bool heartbeat_now_ = false;  // cuts the current wait short
  std::thread thread_;
};

}  // namespace spool::brick
