#include "meta/deletion_drainer.h"

#include <set>

#include "common/log.h"
#include "common/placement.h"

namespace spool::meta {
namespace {

rpc::RpcClientOptions DrainerRpcOptions() {
  rpc::RpcClientOptions options;
  options.component = "meta-drainer";
  return options;
}

constexpr size_t kBatchChunks = 4096;
constexpr std::chrono::milliseconds kBrickTimeout{5000};
}  // namespace

DeletionDrainer::DeletionDrainer(Namespace& ns, OpApplier& applier, ClusterRegistry& registry, ClusterKey key,
                                 std::chrono::milliseconds interval)
    : ns_(ns),
      applier_(applier),
      registry_(registry),
      interval_(interval),
      clients_(io_.io(), std::move(key), DrainerRpcOptions()) {}

DeletionDrainer::~DeletionDrainer() { Stop(); }

void DeletionDrainer::Start() { thread_ = std::thread([this] { Run(); }); }

void DeletionDrainer::Kick() {
  std::lock_guard lock(mu_);
  kicked_ = true;
  cv_.notify_one();
}

void DeletionDrainer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  clients_.CloseAll();
  io_.Stop();
}

size_t DeletionDrainer::DrainOnce() {
  const auto queued = ns_.DeletionQueue(kBatchChunks);
  if (queued.empty()) return 0;
  const auto map = registry_.Map();
  if (map->pgs_size() == 0) return 0;
  std::map<uint32_t, const proto::BrickEntry*> bricks;
  for (const auto& b : map->bricks()) bricks[b.id()] = &b;

  std::map<uint32_t, proto::DeleteChunksRequest> per_brick;
  std::vector<std::pair<uint64_t, uint32_t>> chunks;  // chunk id, pg
  for (uint64_t id : queued) {
    const uint32_t pg = PgOfChunk(id, map->pg_count());
    if (pg >= static_cast<uint32_t>(map->pgs_size()) || map->pgs(static_cast<int>(pg)).bricks_size() == 0) continue;
    chunks.emplace_back(id, pg);
    for (uint32_t b : map->pgs(static_cast<int>(pg)).bricks()) {
      auto* c = per_brick[b].add_chunks();
      c->set_chunk_id(id);
      c->set_pg(pg);
    }
    // Leaving bricks too (best effort): a new member still catching up
    // must not copy a deleted chunk back from them.
    for (uint32_t b : map->pgs(static_cast<int>(pg)).leaving()) {
      auto* c = per_brick[b].add_chunks();
      c->set_chunk_id(id);
      c->set_pg(pg);
    }
  }
  std::map<uint32_t, std::future<Result<rpc::Frame>>> calls;
  for (auto& [brick, req] : per_brick) {
    auto it = bricks.find(brick);
    if (it == bricks.end() || it->second->state() != proto::BRICK_UP) continue;
    calls[brick] = clients_.Get(it->second->address())->Call(rpc::Method::kDeleteChunks, req, {}, kBrickTimeout);
  }
  std::set<uint32_t> ok;
  for (auto& [brick, f] : calls) {
    auto r = f.get();
    if (r.ok())
      ok.insert(brick);
    else
      SPOOL_LOG_DEBUG("meta drain brick={} error=\"{}\"", brick, r.status().message());
  }
  proto::MetaOp op;
  auto* done = op.mutable_chunks_deleted();
  for (auto& [id, pg] : chunks) {
    bool all = true;
    for (uint32_t b : map->pgs(static_cast<int>(pg)).bricks()) all = all && ok.count(b);
    if (!all) continue;
    auto* c = done->add_chunks();
    c->set_chunk_id(id);
    c->set_pg(pg);
  }
  const size_t n = static_cast<size_t>(done->chunks_size());
  if (n == 0) return 0;
  auto r = applier_.ApplySync(std::move(op));
  if (!r.ok()) {
    SPOOL_LOG_WARN("meta drain commit error=\"{}\"", r.status().message());
    return 0;
  }
  SPOOL_LOG_DEBUG("meta drained chunks={}", n);
  return n;
}

void DeletionDrainer::Run() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, interval_, [&] { return stopping_ || kicked_; });
      if (stopping_) return;
      kicked_ = false;
    }
    // Keep going while whole batches are removed; back off on any failure.
    while (DrainOnce() == kBatchChunks) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
  }
}

}  // namespace spool::meta
