#include "meta/cluster_registry.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/brick_names.h"
#include "common/log.h"
#include "meta/keys.h"
#include "meta/placement.h"

namespace spool::meta {
namespace {

constexpr size_t kMaxBricks = 65536;
constexpr size_t kMaxStringBytes = 256;
// A brick silent this long may be replaced by a new disk at its address.
constexpr auto kTakeoverSilence = std::chrono::milliseconds(2500);

// W <pg:BE32> -> PlacementGroup: the PG's members and leaving bricks.
std::string AssignKey(uint32_t pg) {
  std::string k(1, 'W');
  PutBE32(k, pg);
  return k;
}

bool Contains(const google::protobuf::RepeatedField<uint32_t>& ids, uint32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

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
  last_connection_.clear();
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
    last_connection_.push_back(0);
  }
  if (!it->status().ok()) return Status::Error(EIO, "scan bricks: " + it->status().ToString());
  assign_.assign(pg_count_, proto::PlacementGroup());
  std::unique_ptr<rocksdb::Iterator> ai(db_->NewIterator(rocksdb::ReadOptions()));
  for (ai->Seek("W"); ai->Valid() && ai->key().starts_with("W"); ai->Next()) {
    if (ai->key().size() != 5) continue;
    const uint32_t pg = GetBE32(std::string_view(ai->key().data() + 1, 4));
    if (pg >= pg_count_) continue;
    if (!assign_[pg].ParseFromArray(ai->value().data(), static_cast<int>(ai->value().size())))
      return Status::Error(EIO, "corrupt placement record of pg " + std::to_string(pg));
  }
  if (!ai->status().ok()) return Status::Error(EIO, "scan placement: " + ai->status().ToString());
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

proto::BrickEntry* ClusterRegistry::FindLocked(uint32_t id) {
  for (auto& b : bricks_)
    if (b.id() == id) return &b;
  return nullptr;
}

void ClusterRegistry::RebuildMapLocked() {
  ++epoch_;
  auto map = std::make_shared<proto::ClusterMap>();
  map->set_epoch(epoch_);
  map->set_pg_count(pg_count_);
  map->set_replicas(replicas_);
  if (assign_.size() != pg_count_) assign_.resize(pg_count_);
  std::vector<PlacementBrick> in;
  std::map<uint32_t, const proto::BrickEntry*> by_id;
  for (const auto& b : bricks_) {
    if (b.admin() == proto::ADMIN_REMOVED) continue;
    *map->add_bricks() = b;
    by_id[b.id()] = &b;
    const bool placeable = b.admin() == proto::ADMIN_NORMAL || b.admin() == proto::ADMIN_MAINTENANCE;
    if (b.state() != proto::BRICK_OUT && placeable)
      in.push_back(PlacementBrick{b.id(), b.failure_domain(),
                                  static_cast<double>(std::max<uint64_t>(b.capacity_bytes(), 1)), b.near_full()});
  }
  // Who holds each PG now: members and leaving bricks alike.
  std::vector<std::vector<uint32_t>> holders(pg_count_);
  for (uint32_t pg = 0; pg < pg_count_; ++pg) {
    for (uint32_t b : assign_[pg].bricks()) holders[pg].push_back(b);
    for (uint32_t b : assign_[pg].leaving()) holders[pg].push_back(b);
  }
  const auto placement = ComputePlacement(in, pg_count_, replicas_, &holders);
  rocksdb::WriteBatch batch;
  for (uint32_t pg = 0; pg < pg_count_; ++pg) {
    proto::PlacementGroup next;
    for (uint32_t id : placement[pg]) next.add_bricks(id);
    // A former holder keeps its copies (and serves them) until the new
    // members have caught up, unless it is gone for good.
    for (uint32_t id : holders[pg]) {
      if (Contains(next.bricks(), id) || Contains(next.leaving(), id)) continue;
      auto b = by_id.find(id);
      if (b == by_id.end() || b->second->state() == proto::BRICK_OUT) continue;
      next.add_leaving(id);
    }
    if (next.SerializeAsString() != assign_[pg].SerializeAsString()) {
      batch.Put(AssignKey(pg), next.SerializeAsString());
      assign_[pg] = next;
    }
    *map->add_pgs() = std::move(next);
  }
  if (batch.Count() > 0) {
    // Durable before any brick can see the map: a brick deletes the copies
    // of PGs it is no longer in, so meta must never forget a leaving brick.
    std::string e;
    PutBE64(e, epoch_);
    batch.Put(keys::Epoch(), e);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (auto st = db_->Write(wo, &batch); !st.ok())
      SPOOL_LOG_ERROR("meta persist_placement error=\"{}\"", st.ToString());
  }
  if (observer_.map_changed) observer_.map_changed(map_ ? *map_ : proto::ClusterMap(), *map);
  map_ = std::move(map);
}

bool ClusterRegistry::DropFinishedLeaving(const PgSettled& settled) {
  std::lock_guard lock(mu_);
  if (!map_) return false;
  std::map<uint32_t, bool> up;
  for (const auto& b : bricks_) up[b.id()] = b.state() == proto::BRICK_UP;
  std::vector<uint32_t> done;
  for (uint32_t pg = 0; pg < assign_.size(); ++pg) {
    const auto& a = assign_[pg];
    if (a.leaving_size() == 0 || a.bricks_size() == 0) continue;
    bool all_up = true;
    for (uint32_t b : a.bricks()) all_up = all_up && up[b];
    if (all_up && settled(pg)) done.push_back(pg);
  }
  if (done.empty()) return false;
  for (uint32_t pg : done) assign_[pg].clear_leaving();
  // RebuildMapLocked persists the assignments that differ from what is on
  // disk: write the dropped ones explicitly.
  rocksdb::WriteBatch batch;
  for (uint32_t pg : done) batch.Put(AssignKey(pg), assign_[pg].SerializeAsString());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto st = db_->Write(wo, &batch); !st.ok()) SPOOL_LOG_ERROR("meta persist_placement error=\"{}\"", st.ToString());
  RebuildMapLocked();
  (void)PersistLocked(nullptr);
  SPOOL_LOG_INFO("meta moves_finished pgs={} first_pg={} epoch={}", done.size(), done.front(), epoch_);
  return true;
}

Result<proto::BrickAdminReply> ClusterRegistry::Admin(const proto::BrickAdminRequest& req, const PgSettled& settled) {
  std::lock_guard lock(mu_);
  proto::BrickEntry* b = FindLocked(req.brick_id());
  const std::string name = "brick " + std::to_string(req.brick_id());
  if (!b || b->admin() == proto::ADMIN_REMOVED) return Status::Error(ENOENT, name + " is not in the cluster");
  const proto::BrickAdmin was = b->admin();
  std::string message;
  bool replace = false;  // the placement changes
  switch (req.action()) {
    case proto::BRICK_ACTION_ADD:
      if (was == proto::ADMIN_NORMAL) {
        message = name + " already holds placement groups";
        break;
      }
      if (was != proto::ADMIN_PENDING)
        return Status::Error(EINVAL, name + " is " + AdminName(was) + ": use undrain-brick or maintenance off");
      b->set_admin(proto::ADMIN_NORMAL);
      replace = true;
      message = name + " added: placement groups are moving onto it";
      break;
    case proto::BRICK_ACTION_DRAIN: {
      if (was == proto::ADMIN_DRAINING) {
        message = name + " is already draining";
        break;
      }
      if (was == proto::ADMIN_PENDING) return Status::Error(EINVAL, name + " is pending: it holds nothing to drain");
      // Placement needs R failure domains among the bricks that stay.
      std::set<std::string> domains;
      for (const auto& o : bricks_)
        if (o.id() != b->id() && o.state() != proto::BRICK_OUT &&
            (o.admin() == proto::ADMIN_NORMAL || o.admin() == proto::ADMIN_MAINTENANCE))
          domains.insert(o.failure_domain());
      if (domains.size() < replicas_)
        return Status::Error(EBUSY, "refusing to drain " + name + ": the other bricks span only " +
                                        std::to_string(domains.size()) + " failure domains, " +
                                        std::to_string(replicas_) + " copies need " + std::to_string(replicas_) +
                                        " (add a brick first)");
      b->set_admin(proto::ADMIN_DRAINING);
      replace = true;
      message = name + " draining: its placement groups are moving to other bricks; it serves reads until then";
      break;
    }
    case proto::BRICK_ACTION_UNDRAIN:
      if (was != proto::ADMIN_DRAINING) return Status::Error(EINVAL, name + " is not draining");
      b->set_admin(proto::ADMIN_NORMAL);
      replace = true;
      message = name + " undrained: it takes placement groups again";
      break;
    case proto::BRICK_ACTION_MAINTENANCE_ON:
      if (was == proto::ADMIN_MAINTENANCE) {
        message = name + " is already in maintenance";
        break;
      }
      if (was != proto::ADMIN_NORMAL) return Status::Error(EINVAL, name + " is " + AdminName(was));
      b->set_admin(proto::ADMIN_MAINTENANCE);
      message = name + " in maintenance: it may be away for " +
                std::to_string(policy_.maintenance_out_after.count() / 1000) +
                " s without its groups being rebuilt elsewhere";
      break;
    case proto::BRICK_ACTION_MAINTENANCE_OFF:
      if (was != proto::ADMIN_MAINTENANCE) return Status::Error(EINVAL, name + " is not in maintenance");
      b->set_admin(proto::ADMIN_NORMAL);
      message = name + " out of maintenance";
      break;
    case proto::BRICK_ACTION_REMOVE: {
      // Refused while any PG needs this brick's copies: it is a member, or
      // a leaving brick of a PG whose members have not all caught up.
      uint32_t member = 0, needed = 0;
      std::map<uint32_t, bool> up;
      for (const auto& o : bricks_) up[o.id()] = o.state() == proto::BRICK_UP;
      for (uint32_t pg = 0; pg < assign_.size(); ++pg) {
        const auto& a = assign_[pg];
        if (Contains(a.bricks(), b->id())) {
          ++member;
          continue;
        }
        if (!Contains(a.leaving(), b->id())) continue;
        uint32_t good = 0;
        for (uint32_t o : a.bricks()) good += up[o] ? 1 : 0;
        if (good < std::min<uint32_t>(replicas_, static_cast<uint32_t>(a.bricks_size())) || !settled(pg)) ++needed;
      }
      if (member > 0 || needed > 0)
        return Status::Error(EBUSY, "refusing to remove " + name + ": it holds " + std::to_string(member) +
                                        " placement groups as a member and " + std::to_string(needed) +
                                        " whose new members have not caught up, so it may hold the only good copy "
                                        "of some chunks; run `spoolctl drain-brick " +
                                        std::to_string(b->id()) + "` and wait until it holds none");
      b->set_admin(proto::ADMIN_REMOVED);
      b->set_state(proto::BRICK_OUT);
      for (auto& a : assign_) {
        auto* l = a.mutable_leaving();
        l->erase(std::remove(l->begin(), l->end(), b->id()), l->end());
      }
      replace = true;
      message = name + " removed; its data directory may be wiped";
      break;
    }
    default:
      return Status::Error(EINVAL, "unknown brick action " + std::to_string(req.action()));
  }
  if (b->admin() != was) {
    if (replace) RebuildMapLocked();
    if (auto st = PersistLocked(b); !st.ok()) return st;
    SPOOL_LOG_INFO("meta brick_admin id={} was={} now={} epoch={}", b->id(), AdminName(was), AdminName(b->admin()),
                   epoch_);
  }
  proto::BrickAdminReply reply;
  reply.set_message(message);
  reply.set_epoch(epoch_);
  return reply;
}

Result<proto::RegisterBrickReply> ClusterRegistry::Register(const proto::RegisterBrickRequest& req,
                                                           uint64_t connection_id) {
  if (req.uuid().empty() || req.uuid().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad brick uuid");
  if (req.address().empty() || req.address().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad brick address");
  if (req.failure_domain().size() > kMaxStringBytes) return Status::Error(EINVAL, "bad failure domain");
  std::lock_guard lock(mu_);
  auto it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) { return b.uuid() == req.uuid(); });
  if (it != bricks_.end() && it->admin() == proto::ADMIN_REMOVED)
    return Status::Error(EPERM, "brick " + std::to_string(it->id()) + " (uuid " + req.uuid() +
                                    ") was removed from the cluster; wipe its data directory to add it again");
  bool placement_changed = false;
  bool replaced = false;
  size_t index;
  if (it == bricks_.end()) {
    // A new disk at the address of a known brick replaces it: only one
    // process can listen there. While the old brick still heartbeats (two
    // bricks misconfigured with one address) the newcomer is refused and
    // retries; once the old one has been silent for a few heartbeats, or at
    // once if its connection to meta has closed (the process is gone), the
    // newcomer takes over its id, and every PG of it is rebuilt onto it.
    it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) {
      return b.address() == req.address() && b.admin() != proto::ADMIN_REMOVED;
    });
    if (it != bricks_.end()) {
      const size_t old = static_cast<size_t>(it - bricks_.begin());
      const auto silent = Clock::now() - last_heartbeat_[old];
      const bool gone = last_connection_[old] != 0 && connection_open_ && !connection_open_(last_connection_[old]);
      if (it->state() == proto::BRICK_UP && silent < kTakeoverSilence && !gone)
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
    // Without auto-join a new brick waits for `spoolctl add-brick`, except
    // while the cluster has fewer placeable bricks than copies: a new
    // cluster's first bricks are what it is built from.
    size_t placeable = 0;
    for (const auto& o : bricks_)
      placeable += (o.admin() == proto::ADMIN_NORMAL || o.admin() == proto::ADMIN_MAINTENANCE) ? 1 : 0;
    b.set_admin(policy_.auto_join || placeable < replicas_ ? proto::ADMIN_NORMAL : proto::ADMIN_PENDING);
    bricks_.push_back(b);
    last_heartbeat_.push_back(Clock::now());
    last_connection_.push_back(0);
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
  last_connection_[index] = connection_id;
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

Result<proto::HeartbeatReply> ClusterRegistry::Heartbeat(const proto::HeartbeatRequest& req, uint64_t connection_id) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(bricks_.begin(), bricks_.end(), [&](const auto& b) { return b.id() == req.brick_id(); });
  if (it == bricks_.end()) return Status::Error(ENOENT, "unknown brick id " + std::to_string(req.brick_id()));
  if (it->admin() == proto::ADMIN_REMOVED)
    return Status::Error(EPERM, "brick " + std::to_string(it->id()) + " was removed from the cluster");
  const size_t index = static_cast<size_t>(it - bricks_.begin());
  it->set_used_bytes(req.used_bytes());
  if (req.capacity_bytes() != 0) it->set_capacity_bytes(req.capacity_bytes());
  if (it->capacity_bytes() > 0) {
    // Hysteresis, so that a brick at the mark does not flap.
    const double used = static_cast<double>(it->used_bytes()) / static_cast<double>(it->capacity_bytes());
    const bool full = it->near_full() ? used >= policy_.near_full_clear : used >= policy_.near_full_ratio;
    if (full != it->near_full()) {
      it->set_near_full(full);
      SPOOL_LOG_WARN("meta brick_near_full id={} near_full={} used_pct={:.1f} action={}", it->id(), full, 100 * used,
                     full ? "no-new-placement-groups" : "takes-placement-groups-again");
      if (it->state() == proto::BRICK_UP) RebuildMapLocked();
      if (auto s = PersistLocked(&*it); !s.ok()) return s;
    }
  }
  it->set_last_heartbeat_ms(WallMs());
  last_heartbeat_[index] = Clock::now();
  last_connection_[index] = connection_id;
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
    // A brick in maintenance is expected back: its grace period is longer.
    const auto grace =
        bricks_[i].admin() == proto::ADMIN_MAINTENANCE ? policy_.maintenance_out_after : out_after_;
    if (bricks_[i].state() == proto::BRICK_DOWN && now - last_heartbeat_[i] > grace) {
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
  for (const auto& b : bricks_)
    if (b.admin() != proto::ADMIN_REMOVED) *map->add_bricks() = b;
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
    if (b.state() == proto::BRICK_OUT || b.admin() == proto::ADMIN_PENDING) continue;
    c.capacity += b.capacity_bytes();
    c.used += std::min(b.used_bytes(), b.capacity_bytes());
  }
  return c;
}

}  // namespace spool::meta
