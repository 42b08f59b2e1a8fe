// BrickService: the brick's RPC methods (100-107), translated to ChunkStore
// calls. Every request is validated here before use (sizes, counts, pg range,
// payload length against the declared chunk lengths); a bad request gets an
// error reply, never a crash.
//
// Bulk reads (ReadChunks, a peer's repair pulls) run on a few threads of
// their own, never on the RPC io threads: a bulk read of many chunks from a
// cold disk takes tens of milliseconds, and foreground puts and gets must not
// queue behind it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "brickd/chunk_store.h"
#include "brickd/identity.h"
#include "common/rpc/server.h"

namespace spool::brick {

// Bounds on one request, beyond the frame limit.
constexpr uint32_t kMaxChunksPerRequest = 4096;       // delete, read-many, put-many
constexpr uint32_t kDefaultListEntries = 1024;
constexpr uint32_t kMaxListEntries = 16384;

class BrickService {
 public:
  // REQUIRES: store outlives the service and every handler call.
  BrickService(ChunkStore* store, BrickIdentity identity, std::string data_dir, int bulk_threads = 2);
  ~BrickService();  // Stop()
  BrickService(const BrickService&) = delete;
  BrickService& operator=(const BrickService&) = delete;

  // Stops the bulk-read threads; reads still queued are dropped unanswered
  // (their connections are closing). REQUIRES: the server stopped first.
  void Stop();

  // Registers the handlers. REQUIRES: before server.Listen.
  void Register(rpc::RpcServer& server);

  // Called for every chunk a read found corrupt here (so it gets rewritten
  // from a good copy). REQUIRES: before server.Listen.
  void SetCorruptionObserver(std::function<void(uint32_t pg, uint64_t chunk_id)> observer) {
    on_corrupt_ = std::move(observer);
  }

  // When a mount last asked this brick to store or read a chunk (PutChunk,
  // GetChunk; not the bulk calls of repair): background work yields while
  // clients are active.
  std::chrono::steady_clock::time_point last_client_request() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_client_request_.load(std::memory_order_relaxed)));
  }

 private:
  void PutChunk(const rpc::Frame& frame, const rpc::Responder& responder);
  void GetChunk(const rpc::Frame& frame, const rpc::Responder& responder);
  void DeleteChunks(const rpc::Frame& frame, const rpc::Responder& responder);
  void StatChunk(const rpc::Frame& frame, const rpc::Responder& responder);
  void ListChunks(const rpc::Frame& frame, const rpc::Responder& responder);
  void ReadChunks(const rpc::Frame& frame, const rpc::Responder& responder);
  void PutChunks(const rpc::Frame& frame, const rpc::Responder& responder);
  void BrickInfo(const rpc::Frame& frame, const rpc::Responder& responder);

  void BulkLoop();
  void NoteClientRequest() {
    last_client_request_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }

  ChunkStore* store_;
  BrickIdentity identity_;
  std::string data_dir_;
  std::function<void(uint32_t pg, uint64_t chunk_id)> on_corrupt_;
  std::atomic<std::chrono::steady_clock::rep> last_client_request_{0};  // time_since_epoch of the last one

  std::mutex bulk_mu_;  // guards bulk_queue_, bulk_stopping_
  std::condition_variable bulk_cv_;
  std::deque<std::function<void()>> bulk_queue_;
  bool bulk_stopping_ = false;
  std::vector<std::thread> bulk_threads_;
};

}  // namespace spool::brick
