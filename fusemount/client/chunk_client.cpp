#include "fusemount/client/chunk_client.h"

#include <algorithm>
#include <condition_variable>
#include <optional>
#include <thread>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/placement.h"

namespace spool::client {

using rpc::IsTransportError;
using rpc::Method;

Status ClusterView::Refresh() {
  uint64_t known = 0;
  {
    std::lock_guard lock(mu_);
    if (map_) known = map_->epoch();
  }
  auto map = meta_.GetMap(known);
  if (!map.ok()) return map.status();
  std::lock_guard lock(mu_);
  if (!map_ || map->epoch() >= map_->epoch()) map_ = std::make_shared<proto::ClusterMap>(std::move(map).value());
  return Status::Ok();
}

ClusterView::~ClusterView() { Stop(); }

void ClusterView::StartAutoRefresh(std::chrono::milliseconds interval) {
  refresher_ = std::thread([this, interval] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      stop_cv_.wait_for(lock, interval, [this] { return stopping_; });
      if (stopping_) break;
      lock.unlock();
      (void)Refresh();
      lock.lock();
    }
  });
}

void ClusterView::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
}

std::shared_ptr<const proto::ClusterMap> ClusterView::map() {
  {
    std::lock_guard lock(mu_);
    if (map_) return map_;
  }
  (void)Refresh();
  std::lock_guard lock(mu_);
  return map_;
}

std::shared_ptr<const std::string> ChunkCache::Get(uint64_t chunk_id) {
  std::lock_guard lock(mu_);
  auto it = index_.find(chunk_id);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void ChunkCache::Put(uint64_t chunk_id, std::shared_ptr<const std::string> bytes) {
  std::lock_guard lock(mu_);
  if (index_.count(chunk_id) || bytes->size() > capacity_) return;
  bytes_ += bytes->size();
  lru_.emplace_front(chunk_id, std::move(bytes));
  index_[chunk_id] = lru_.begin();
  while (bytes_ > capacity_ && !lru_.empty()) {
    bytes_ -= lru_.back().second->size();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

ChunkClient::ChunkClient(const MountOptions& options, MetaClient& meta, ClusterView& view, rpc::ClientPool& bricks)
    : options_(options), meta_(meta), view_(view), bricks_(bricks), cache_(options.chunk_cache_bytes) {}

bool ChunkClient::Suspect(uint32_t brick_id) {
  std::lock_guard lock(suspect_mu_);
  auto it = suspect_until_.find(brick_id);
  return it != suspect_until_.end() && it->second > std::chrono::steady_clock::now();
}

void ChunkClient::MarkSuspect(uint32_t brick_id) {
  std::lock_guard lock(suspect_mu_);
  suspect_until_[brick_id] = std::chrono::steady_clock::now() + std::chrono::seconds(3);
}

namespace {

const proto::BrickEntry* FindBrick(const proto::ClusterMap& map, uint32_t id) {
  for (const auto& b : map.bricks())
    if (b.id() == id) return &b;
  return nullptr;
}

// Counts outstanding replies of one round of puts.
struct PutRound {
  std::mutex mu;  // guards everything below
  std::condition_variable done_cv;
  int outstanding = 0;
  std::vector<int> acks;                   // per chunk
  std::vector<std::vector<uint32_t>> failed_bricks;  // per chunk
  std::vector<int> last_error;             // per chunk
  std::vector<std::vector<uint32_t>> full_bricks;  // per chunk: refused for space (ENOSPC)
};

}  // namespace

Status ChunkClient::PutChunks(const std::vector<ChunkToWrite>& chunks, std::vector<uint64_t>* under_replicated) {
  if (chunks.empty()) return Status::Ok();
  auto deadline = std::chrono::steady_clock::now() + options_.hard_timeout;
  std::vector<size_t> todo(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) todo[i] = i;
  std::vector<bool> short_of_copies(chunks.size(), false);
  auto backoff = std::chrono::milliseconds(50);

  for (int attempt = 0;; ++attempt) {
    auto map = view_.map();
    if (!map || map->pg_count() == 0) return Status::Error(EIO, "no cluster map from meta");
    auto round = std::make_shared<PutRound>();
    round->acks.assign(chunks.size(), 0);
    round->failed_bricks.assign(chunks.size(), {});
    round->last_error.assign(chunks.size(), 0);
    round->full_bricks.assign(chunks.size(), {});
    std::vector<int> quorum(chunks.size(), 0);
    std::vector<int> group_size(chunks.size(), 0);

    for (size_t i : todo) {
      const auto& chunk = chunks[i];
      uint32_t pg = PgOfChunk(chunk.chunk_id, map->pg_count());
      if (pg >= static_cast<uint32_t>(map->pgs_size())) return Status::Error(EIO, "cluster map has too few groups");
      const auto& group = map->pgs(pg);
      quorum[i] = std::min<int>(options_.write_quorum, group.bricks_size());
      group_size[i] = group.bricks_size();
      if (group.bricks_size() == 0) continue;
      for (uint32_t brick_id : group.bricks()) {
        const auto* brick = FindBrick(*map, brick_id);
        if (!brick || brick->state() != proto::BRICK_UP) {
          short_of_copies[i] = true;
          continue;
        }
        proto::PutChunkRequest request;
        auto* ref = request.mutable_chunk();
        ref->set_chunk_id(chunk.chunk_id);
        ref->set_pg(pg);
        ref->set_crc32c(chunk.crc32c);
        ref->set_length(static_cast<uint32_t>(chunk.bytes->size()));
        {
          std::lock_guard lock(round->mu);
          ++round->outstanding;
        }
        bricks_.Get(brick->address())
            ->CallAsync(Method::kPutChunk, request, chunk.bytes, options_.rpc_timeout,
                        [round, i, brick_id](Result<rpc::Frame> result) {
                          std::lock_guard lock(round->mu);
                          if (result.ok()) {
                            ++round->acks[i];
                          } else {
                            round->failed_bricks[i].push_back(brick_id);
                            round->last_error[i] = result.status().code();
                            if (result.status().code() == ENOSPC) round->full_bricks[i].push_back(brick_id);
                          }
                          if (--round->outstanding == 0) round->done_cv.notify_all();
                        });
      }
    }
    {
      std::unique_lock lock(round->mu);
      round->done_cv.wait(lock, [&] { return round->outstanding == 0; });
    }

    std::vector<size_t> retry;
    std::optional<size_t> no_space;  // a chunk that cannot reach its quorum for lack of space
    for (size_t i : todo) {
      if (!round->failed_bricks[i].empty()) short_of_copies[i] = true;
      if (round->acks[i] >= quorum[i] && quorum[i] > 0) continue;
      // Bricks that refused for space will not take the chunk on a retry;
      // if the others cannot make the quorum, waiting does not help.
      int full = static_cast<int>(round->full_bricks[i].size());
      if (full > 0 && group_size[i] - full < quorum[i] && !no_space) no_space = i;
      retry.push_back(i);
    }
    if (retry.empty()) break;
    if (no_space) {
      size_t i = *no_space;
      std::string full;
      for (uint32_t b : round->full_bricks[i]) {
        if (!full.empty()) full += ',';  // not `"" + string`: a false -Wrestrict of GCC 12 at -O3
        full += std::to_string(b);
      }
      SPOOL_LOG_ERROR(
          "mount write failed: bricks are out of space, no write quorum chunk={} pg={} full_bricks={} acks={} "
          "quorum={} group={}",
          chunks[i].chunk_id, PgOfChunk(chunks[i].chunk_id, map->pg_count()), full, round->acks[i], quorum[i],
          group_size[i]);
      return Status::Error(ENOSPC, "no write quorum: bricks " + full + " are out of space");
    }
    if (std::chrono::steady_clock::now() + backoff > deadline) {
      SPOOL_LOG_ERROR("mount write failed: fewer live copies than the write quorum ({}) chunk={} after {} attempts",
                      options_.write_quorum, chunks[retry[0]].chunk_id, attempt + 1);
      return Status::Error(EIO, "fewer live copies than the write quorum");
    }
    if (attempt == 0)
      SPOOL_LOG_WARN("mount write waiting for quorum chunks={} first_chunk={}", retry.size(),
                     chunks[retry[0]].chunk_id);
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    (void)view_.Refresh();
    todo = std::move(retry);
  }
  if (under_replicated)
    for (size_t i = 0; i < chunks.size(); ++i)
      if (short_of_copies[i]) under_replicated->push_back(chunks[i].chunk_id);
  // What was just written is what is read next (a delivered message, an
  // index): the kernel keeps the whole pages it was given, but rereads a
  // file's partly written last page, which is then served from here.
  for (const auto& chunk : chunks) cache_.Put(chunk.chunk_id, chunk.bytes);
  return Status::Ok();
}

Result<std::shared_ptr<const std::string>> ChunkClient::ReadChunk(uint64_t chunk_id, uint32_t crc32c,
                                                                  uint32_t length) {
  if (auto cached = cache_.Get(chunk_id)) return cached;
  auto payload = FetchFromCopies(chunk_id, crc32c, length, 0, 0);
  if (!payload.ok()) return payload.status();
  auto bytes = std::make_shared<const std::string>(std::move(*payload));
  cache_.Put(chunk_id, bytes);
  return bytes;
}

Result<std::string> ChunkClient::ReadRange(uint64_t chunk_id, uint32_t crc32c, uint32_t chunk_length,
                                           uint32_t offset, uint32_t length) {
  if (offset > chunk_length || length > chunk_length - offset) return Status::Error(EIO, "extent beyond its chunk");
  if (auto cached = cache_.Get(chunk_id)) return cached->substr(offset, length);
  return FetchFromCopies(chunk_id, crc32c, chunk_length, offset, length);
}

namespace {

// What a brick sent for a GetChunk: a range is checked by the brick (its
// length here), a whole chunk against the CRC32C meta recorded.
bool Intact(std::string_view payload, uint32_t range_length, uint32_t chunk_length, uint32_t crc32c) {
  if (range_length != 0) return payload.size() == range_length;
  return payload.size() == chunk_length && Crc32c(payload) == crc32c;
}

// length 0: the whole chunk.
proto::GetChunkRequest GetChunkRequestFor(uint32_t pg, uint64_t chunk_id, uint32_t offset, uint32_t length) {
  proto::GetChunkRequest request;
  request.set_pg(pg);
  request.set_chunk_id(chunk_id);
  request.set_offset(offset);
  request.set_length(length);
  return request;
}

}  // namespace

std::vector<const proto::BrickEntry*> ChunkClient::CopiesInReadOrder(const proto::ClusterMap& map, uint32_t pg) {
  std::vector<const proto::BrickEntry*> order, later;
  for (uint32_t id : map.pgs(pg).bricks()) {
    auto* b = FindBrick(map, id);
    if (!b) continue;
    (b->state() == proto::BRICK_UP && !Suspect(id) ? order : later).push_back(b);
  }
  // A new member may not have this chunk yet during a move.
  for (uint32_t id : map.pgs(pg).leaving()) {
    auto* b = FindBrick(map, id);
    if (b && b->state() == proto::BRICK_UP && !Suspect(id)) order.push_back(b);
  }
  order.insert(order.end(), later.begin(), later.end());
  return order;
}

void ChunkClient::ReadAsync(uint64_t chunk_id, uint32_t crc32c, uint32_t chunk_length, bool whole, uint32_t offset,
                            uint32_t length, RangeDone done) {
  if (offset > chunk_length || length > chunk_length - offset)
    return done(Status::Error(EIO, "extent beyond its chunk"));
  if (auto cached = cache_.Get(chunk_id)) return done(cached->substr(offset, length));
  auto map = view_.map();
  if (!map || map->pg_count() == 0) return done(Status::Error(EIO, "no cluster map from meta"));
  const uint32_t pg = PgOfChunk(chunk_id, map->pg_count());
  if (pg >= static_cast<uint32_t>(map->pgs_size())) return done(Status::Error(EIO, "cluster map has too few groups"));
  const auto order = CopiesInReadOrder(*map, pg);
  if (order.empty()) return done(Status::Error(EIO, "no copy of chunk " + std::to_string(chunk_id)));
  const uint32_t brick_id = order.front()->id();
  const auto request = whole ? GetChunkRequestFor(pg, chunk_id, 0, 0) : GetChunkRequestFor(pg, chunk_id, offset, length);
  bricks_.Get(order.front()->address())
      ->CallAsync(Method::kGetChunk, request, {}, options_.rpc_timeout,
                  [this, brick_id, chunk_id, crc32c, chunk_length, whole, offset, length,
                   done = std::move(done)](Result<rpc::Frame> reply) {
                    if (!reply.ok()) {
                      if (IsTransportError(reply.status().code())) MarkSuspect(brick_id);
                      return done(reply.status());
                    }
                    // A bad copy is reported by the waiting path it falls back to.
                    if (!Intact(reply->payload(), whole ? 0 : length, chunk_length, crc32c))
                      return done(Status::Error(EBADMSG, "chunk " + std::to_string(chunk_id) + " failed its check"));
                    if (!whole) return done(std::string(reply->payload()));
                    auto bytes = std::make_shared<const std::string>(reply->payload());
                    cache_.Put(chunk_id, bytes);
                    done(bytes->substr(offset, length));
                  });
}

Result<std::string> ChunkClient::FetchFromCopies(uint64_t chunk_id, uint32_t crc32c, uint32_t length,
                                                 uint32_t range_offset, uint32_t range_length) {
  auto deadline = std::chrono::steady_clock::now() + options_.hard_timeout;
  auto backoff = std::chrono::milliseconds(50);
  Status last = Status::Error(EIO, "no copy of chunk " + std::to_string(chunk_id) + " could be read");
  for (int attempt = 0;; ++attempt) {
    auto map = view_.map();
    if (!map || map->pg_count() == 0) return Status::Error(EIO, "no cluster map from meta");
    uint32_t pg = PgOfChunk(chunk_id, map->pg_count());
    if (pg >= static_cast<uint32_t>(map->pgs_size())) return Status::Error(EIO, "cluster map has too few groups");
    const auto order = CopiesInReadOrder(*map, pg);
    size_t missing = 0;  // copies that answered: not on this brick
    for (const auto* brick : order) {
      std::string payload;
      proto::GetChunkReply reply;
      const auto request = GetChunkRequestFor(pg, chunk_id, range_offset, range_length);
      auto s = bricks_.Get(brick->address())
                   ->CallSync(Method::kGetChunk, request, &reply, {}, &payload, options_.rpc_timeout);
      if (s.ok() && Intact(payload, range_length, length, crc32c)) return payload;
      if (s.ok() || s.code() == EBADMSG) {
        SPOOL_LOG_WARN("mount bad chunk copy chunk={} brick={} pg={} reason=\"{}\"", chunk_id, brick->id(), pg,
                       s.ok() ? "checksum mismatch" : s.message());
        (void)meta_.ReportBadChunk(chunk_id, pg, brick->id());
        last = Status::Error(EIO, "chunk " + std::to_string(chunk_id) + ": bad copy on brick " +
                                      std::to_string(brick->id()));
      } else {
        last = s;
        if (s.code() == ENOENT) ++missing;
        if (IsTransportError(s.code())) MarkSuspect(brick->id());
      }
    }
    // Every copy says the chunk is gone, twice (the second time with a
    // fresh map): it was deleted, because the extents that pointed here were
    // replaced. The caller reloads them; waiting out the hard timeout for a
    // chunk that will never come back would stall it for a minute.
    if (!order.empty() && missing == order.size() && attempt >= 1)
      return Status::Error(ENOENT, "chunk " + std::to_string(chunk_id) + " is on none of its bricks");
    if (std::chrono::steady_clock::now() + backoff > deadline) {
      SPOOL_LOG_ERROR("mount read failed chunk={} pg={} error=\"{}\"", chunk_id, pg, last.ToString());
      return Status::Error(EIO, last.message());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    (void)view_.Refresh();
  }
}

ClusterSpace WritableSpace(const proto::ClusterMap& map, uint32_t write_quorum) {
  // Chunks spread evenly over the groups, so after X more bytes of files a
  // brick in k of the n groups has received X * k / n. Brick b is full at
  // X_b = free_b * n / k, and group p takes writes until fewer than its
  // quorum of live bricks have room: up to the quorum-th largest X_b of its
  // bricks. The cluster takes writes until its first group stops.
  ClusterSpace out;
  const int n = map.pgs_size();
  if (n == 0) return out;
  std::unordered_map<uint32_t, int> groups_of;
  for (const auto& pg : map.pgs())
    for (uint32_t b : pg.bricks()) ++groups_of[b];
  double free_min = -1, capacity_min = -1;
  for (const auto& pg : map.pgs()) {
    std::vector<double> free, capacity;
    for (uint32_t id : pg.bricks()) {
      const auto* b = FindBrick(map, id);
      if (!b || b->state() != proto::BRICK_UP) continue;
      double scale = static_cast<double>(n) / groups_of[id];
      uint64_t used = std::min(b->used_bytes(), b->capacity_bytes());
      free.push_back(static_cast<double>(b->capacity_bytes() - used) * scale);
      capacity.push_back(static_cast<double>(b->capacity_bytes()) * scale);
    }
    const size_t q = std::min<size_t>(std::max<uint32_t>(write_quorum, 1), pg.bricks_size());
    double pg_free = 0, pg_capacity = 0;
    if (q > 0 && free.size() >= q) {
      std::sort(free.begin(), free.end(), std::greater<>());
      std::sort(capacity.begin(), capacity.end(), std::greater<>());
      pg_free = free[q - 1];
      pg_capacity = capacity[q - 1];
    }
    free_min = free_min < 0 ? pg_free : std::min(free_min, pg_free);
    capacity_min = capacity_min < 0 ? pg_capacity : std::min(capacity_min, pg_capacity);
  }
  out.capacity_bytes = static_cast<uint64_t>(std::max(capacity_min, 0.0));
  out.free_bytes = std::min<uint64_t>(static_cast<uint64_t>(std::max(free_min, 0.0)), out.capacity_bytes);
  return out;
}

}  // namespace spool::client
