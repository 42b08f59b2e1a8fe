// ChunkClient: moves chunk bytes between the mount and the bricks.
//
// A write goes to every live brick of the chunk's placement group in
// parallel and succeeds once the write quorum has acknowledged it durably;
// copies that failed are reported so meta can repair them. A read tries the
// group's bricks in order, verifies the CRC32C, and falls back to the next
// copy on a mismatch or an error, reporting the bad copy.
#pragma once

#include <condition_variable>
#include <functional>
#include <list>
#include <thread>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/rpc/client.h"
#include "common/rpc/client_pool.h"
#include "fusemount/client/meta_client.h"
#include "fusemount/client/options.h"
#include "spool.pb.h"

namespace spool::client {

// The cluster map as this mount last saw it; refreshed from meta on errors
// and every `interval` by a background thread, so that a brick marked down
// stops being tried first within about a second.
class ClusterView {
 public:
  explicit ClusterView(MetaClient& meta) : meta_(meta) {}
  ~ClusterView();
  Status Refresh();
  std::shared_ptr<const proto::ClusterMap> map();
  void StartAutoRefresh(std::chrono::milliseconds interval);
  void Stop();

 private:
  MetaClient& meta_;
  std::mutex mu_;  // guards map_, stopping_
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::shared_ptr<const proto::ClusterMap> map_;
  std::thread refresher_;
};

// Immutable chunks recently read. Never stale: a chunk id is never reused.
class ChunkCache {
 public:
  explicit ChunkCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}
  std::shared_ptr<const std::string> Get(uint64_t chunk_id);
  void Put(uint64_t chunk_id, std::shared_ptr<const std::string> bytes);

 private:
  size_t capacity_;
  std::mutex mu_;  // guards everything below
  size_t bytes_ = 0;
  std::list<std::pair<uint64_t, std::shared_ptr<const std::string>>> lru_;
  std::unordered_map<uint64_t, decltype(lru_)::iterator> index_;
};

// Space for file data, as statfs shows it: what can still be written with
// the write quorum on the live bricks, from the usage bricks report to meta
// (each brick counts its put reserve as used).
struct ClusterSpace {
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;
};
ClusterSpace WritableSpace(const proto::ClusterMap& map, uint32_t write_quorum);

struct ChunkToWrite {
  uint64_t chunk_id = 0;
  // Shared by the puts to every brick of the chunk's group and the cache.
  std::shared_ptr<const std::string> bytes;
  uint32_t crc32c = 0;
};

class ChunkClient {
 public:
  ChunkClient(const MountOptions& options, MetaClient& meta, ClusterView& view, rpc::ClientPool& bricks);

  // Writes all chunks; each must reach the write quorum (retrying through
  // map changes until the hard timeout). Chunks stored on fewer than all of
  // their group's bricks are appended to `under_replicated`.
  Status PutChunks(const std::vector<ChunkToWrite>& chunks, std::vector<uint64_t>* under_replicated);

  // Reads and verifies a whole chunk (and keeps it in the cache).
  Result<std::shared_ptr<const std::string>> ReadChunk(uint64_t chunk_id, uint32_t crc32c, uint32_t length);
  // Bytes [offset, offset + length) of a chunk of `chunk_length` bytes:
  // from the cache, else only that range from a brick, which checks the
  // whole chunk's CRC as it reads it. For small reads of large chunks (a VM
  // image's 4 KiB reads), where fetching the whole chunk costs 256 times
  // the bytes.
  Result<std::string> ReadRange(uint64_t chunk_id, uint32_t crc32c, uint32_t chunk_length, uint32_t offset,
                                uint32_t length);
  // Bytes [offset, offset + length) of a chunk without waiting: one try of
  // the first live copy, reading only that range (`whole` false, as
  // ReadRange) or the whole chunk, checked and cached (as ReadChunk). `done`
  // runs once, on an io thread (or here), and must not block. On an error
  // the caller falls back to the waiting calls, which try every copy
  // through outages.
  using RangeDone = std::function<void(Result<std::string>)>;
  void ReadAsync(uint64_t chunk_id, uint32_t crc32c, uint32_t chunk_length, bool whole, uint32_t offset,
                 uint32_t length, RangeDone done);

 private:
  // The copies of chunk_id's group in the order reads try them: live
  // members, then leaving members (the old copies during a move), then
  // members marked down or suspect, in case the map is stale.
  std::vector<const proto::BrickEntry*> CopiesInReadOrder(const proto::ClusterMap& map, uint32_t pg);
  // Tries the copies of the chunk in turn (and again through outages until
  // the hard timeout). range_length 0: the whole chunk, checked against
  // `crc32c` here; else that range, as checked by the brick.
  Result<std::string> FetchFromCopies(uint64_t chunk_id, uint32_t crc32c, uint32_t chunk_length,
                                      uint32_t range_offset, uint32_t range_length);

  MountOptions options_;
  MetaClient& meta_;
  ClusterView& view_;
  rpc::ClientPool& bricks_;
  ChunkCache cache_;
  // Bricks that just failed a call are tried last for a while, even before
  // meta marks them down.
  bool Suspect(uint32_t brick_id);
  void MarkSuspect(uint32_t brick_id);
  std::mutex suspect_mu_;  // guards suspect_until_
  std::unordered_map<uint32_t, std::chrono::steady_clock::time_point> suspect_until_;
};

}  // namespace spool::client
