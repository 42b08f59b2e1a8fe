#include "meta/cluster_registry.h"

#include <algorithm>

#include "common/log.h"
#include "meta/keys.h"
#include "meta/placement.h"

namespace spool::meta {
namespace {

constexpr size_t kMaxBricks = 65536;
constexpr size_t kMaxStringBytes = 256;
// A brick silent this long may be replaced by a new disk at its address.
constexpr auto kTakeoverSilence = std::chrono::milliseconds(2500);

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

ClusterRegistry::ClusterRegistry(rocksdb::DB* db, uint32_t pg_count, uint32_t replicas,
                                 std::chrono::milliseconds down_after, std::chrono::milliseconds out_after)
    : db_(db), pg_count_(pg_count), replicas_(replicas), down_after_(down_after), out_after_(out_after) {}

Status ClusterRegistry::Load() {
  std::lock_guard lock(mu_);
  bricks_.clear();
  last_heartbeat_.clear();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("B"); it->Valid() && it->key().starts_with("B"); it->Next()) {
    proto::BrickEntry b;
    if (!b.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      return Status::Error(EIO, "corrupt brick record");
    // Bricks come back as they were: a down brick keeps its PGs (degraded)
    // and gets a fresh grace period from now.
    if (b.state() == proto::BRICK_DOWN) b.set_state(proto::BRICK_UP);
    bricks_.push_back(std::move(b));
    last_heartbeat_.push_back(Clock::now());
  }
  if (!it->status().ok()) return Status::Error(EIO, "scan bricks: " + it->status().ToString());
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), keys::Epoch(), &v);
  if (s.ok() && v.size() == 8) epoch_ = GetBE64(v);
  RebuildMapLocked();
  return PersistLocked(nullptr);
}

Status ClusterRegistry::PersistLocked(const proto::BrickEntry* brick) {
  rocksdb::WriteBatch batch;
  if (brick) batch.Put(keys::Brick(brick->id()), brick->SerializeAsString());
  std::string e;
  PutBE64(e, epoch_);
  batch.Put(keys::Epoch(), e);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Write(wo, &batch);
  if (!s.ok()) return Status::Error(EIO, "persist registry: " + s.ToString());
  return Status::Ok();
}

void ClusterRegistry::RebuildMapLocked() {
  ++epoch_;
  auto map = std::make_shared<proto::ClusterMap>();
  map->set_epoch(epoch_);
  map->set_pg_count(pg_count_);
  map->set_replicas(replicas_);
  std::vector<PlacementBrick> in;
  for (const auto& b : bricks_) {
    *map->add_bricks() = b;
    if (b.state() != proto::BRICK_OUT)
      in.push_back(PlacementBrick{b.id(), b.failure_domain(), static_cast<double>(std::max<uint64_t>(b.capacity_bytes(), 1))});
  }
  for (auto& pg : ComputePlacement(in, pg_count_, replicas_)) {
    auto* p = map->add_pgs();
    for (uint32_t id : pg) p->add_bricks(id);
  }
  if (observer_.map_changed) observer_.map_changed(map_ ? *map_ : proto::ClusterMap(), *map);
  map_ = std::move(map);
}

Result<proto::RegisterBrickReply> ClusterRegistry::Register(const proto::RegisterBrickRequest& req) {
  if (req.uuid().empty() || req.uuid().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad brick uuid");
  if (req.address().empty() || req.address().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad brick address");
  if (req.failure_domain().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad failure domain");
  std::lock_guard lock(mu_);
  auto it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) { return b.uuid() == req.uuid(); });
  bool placement_changed = false;
  bool replaced = false;
  size_t index;
  if (it == bricks_.end()) {
    // A new disk at the address of a known brick replaces it: only one
    // process can listen there. While the old brick still heartbeats (two
    // bricks misconfigured with one address) the newcomer is refused and
    // retries; once the old one has been silent for a few heartbeats, the
    // newcomer takes over its id, and every PG of it is rebuilt onto it.
    it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) { return b.address() == req.address(); });
    if (it != bricks_.end()) {
      const auto silent = Clock::now() - last_heartbeat_[static_cast<size_t>(it - bricks_.begin())];
      if (it->state() == proto::BRICK_UP && silent < kTakeoverSilence)
        return Status::Error(EADDRINUSE, "address " + req.address() + " belongs to brick " + std::to_string(it->id()) +
                                             " (uuid " + it->uuid() + "), which is still alive");
      SPOOL_LOG_WARN("meta brick_replaced id={} address={} old_uuid={} new_uuid={} action=rebuild-all-its-pgs", it->id(),
                     it->address(), it->uuid(), req.uuid());
      it->set_uuid(req.uuid());
      replaced = true;
    }
  }
  if (it == bricks_.end()) {
    if (bricks_.size() >= kMaxBricks) return Status::Error(ENOSPC, "too many bricks");
    proto::BrickEntry b;
    b.set_id(bricks_.empty() ? 1 : bricks_.back().id() + 1);
    b.set_uuid(req.uuid());
    bricks_.push_back(b);
    last_heartbeat_.push_back(Clock::now());
    index = bricks_.size() - 1;
    placement_changed = true;
  } else {
    index = static_cast<size_t>(it - bricks_.begin());
  }
  auto& b = bricks_[index];
  const std::string domain = req.failure_domain().empty() ? req.address() : req.failure_domain();
  if (b.address() != req.address() || b.failure_domain() != domain || b.capacity_bytes() != req.capacity_bytes() ||
      b.state() != proto::BRICK_UP)
    placement_changed = true;
  b.set_address(req.address());
  b.set_failure_domain(domain);
  b.set_capacity_bytes(req.capacity_bytes());
  b.set_used_bytes(req.used_bytes());
  b.set_state(proto::BRICK_UP);
  b.set_last_heartbeat_ms(WallMs());
  last_heartbeat_[index] = Clock::now();
  if (placement_changed) RebuildMapLocked();
  if (replaced && observer_.brick_replaced) observer_.brick_replaced(b.id(), *map_);
  if (auto s = PersistLocked(&b); !s.ok()) return s;
  SPOOL_LOG_INFO("meta brick_registered id={} uuid={} address={} domain={} epoch={}", b.id(), b.uuid(), b.address(),
                 b.failure_domain(), epoch_);
  proto::RegisterBrickReply reply;
  reply.set_brick_id(b.id());
  *reply.mutable_map() = *map_;
  return reply;
}

Result<proto::HeartbeatReply> ClusterRegistry::Heartbeat(const proto::HeartbeatRequest& req) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) { return b.id() == req.brick_id(); });
  if (it == bricks_.end()) return Status::Error(ENOENT, "unknown brick id " + std::to_string(req.brick_id()));
  const size_t index = static_cast<size_t>(it - bricks_.begin());
  it->set_used_bytes(req.used_bytes());
  if (req.capacity_bytes() != 0) it->set_capacity_bytes(req.capacity_bytes());
  it->set_last_heartbeat_ms(WallMs());
  last_heartbeat_[index] = Clock::now();
  if (it->state() != proto::BRICK_UP) {
    const bool was_out = it->state() == proto::BRICK_OUT;
    it->set_state(proto::BRICK_UP);
    RebuildMapLocked();
    SPOOL_LOG_INFO("meta brick_up id={} was={} epoch={}", it->id(), was_out ? "out" : "down", epoch_);
    if (auto s = PersistLocked(&*it); !s.ok()) return s;
  }
  proto::HeartbeatReply reply;
  reply.set_map_epoch(epoch_);
  return reply;
}

bool ClusterRegistry::CheckLiveness(Clock::time_point now) {
  std::lock_guard lock(mu_);
  bool changed = false;
  for (size_t i = 0; i < bricks_.size(); ++i) {
    if (bricks_[i].state() == proto::BRICK_UP && now - last_heartbeat_[i] > down_after_) {
      bricks_[i].set_state(proto::BRICK_DOWN);
      changed = true;
      SPOOL_LOG_WARN("meta brick_down id={} address={}", bricks_[i].id(), bricks_[i].address());
    }
    if (bricks_[i].state() == proto::BRICK_DOWN && now - last_heartbeat_[i] > out_after_) {
      bricks_[i].set_state(proto::BRICK_OUT);
      changed = true;
      SPOOL_LOG_WARN("meta brick_out id={} address={} silent_ms={} action=move-its-pgs-and-rebuild", bricks_[i].id(),
                     bricks_[i].address(),
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heartbeat_[i]).count());
    }
  }
  if (changed) {
    RebuildMapLocked();
    for (const auto& b : bricks_)
      if (auto s = PersistLocked(&b); !s.ok()) SPOOL_LOG_ERROR("meta persist_registry error=\"{}\"", s.message());
  }
  return changed;
}

std::shared_ptr<const proto::ClusterMap> ClusterRegistry::Map() const {
  std::lock_guard lock(mu_);
  // The placement is cached; the brick entries (usage, heartbeat times) are
  // current.
  auto map = std::make_shared<proto::ClusterMap>(*map_);
  map->clear_bricks();
  for (const auto& b : bricks_) *map->add_bricks() = b;
  return map;
}

uint64_t ClusterRegistry::epoch() const {
  std::lock_guard lock(mu_);
  return epoch_;
}

ClusterRegistry::Capacity ClusterRegistry::TotalCapacity() const {
  std::lock_guard lock(mu_);
  Capacity c;
  for (const auto& b : bricks_) {
    if (b.state() == proto::BRICK_OUT) continue;
    c.capacity += b.capacity_bytes();
    c.used += std::min(b.used_bytes(), b.capacity_bytes());
  }
  return c;
}

}  // namespace spool::meta
