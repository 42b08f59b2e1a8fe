#include "brickd/meta_link.h"

#include "brickd/chunk_store.h"
#include "common/log.h"
#include "spool.pb.h"

namespace spool::brick {

namespace {
constexpr auto kRpcTimeout = std::chrono::milliseconds(3000);
}

MetaLink::MetaLink(asio::io_context& io, ClusterKey key, MetaLinkOptions options, MetaLinkHooks hooks)
    : options_(std::move(options)), hooks_(std::move(hooks)) {
  rpc::RpcClientOptions client_options;
  client_options.component = "brickd-meta";
  client_options.default_timeout = kRpcTimeout;
  client_ = rpc::RpcClient::Create(io, options_.meta_address, std::move(key), client_options);
}

MetaLink::~MetaLink() { Stop(); }

void MetaLink::Start() { thread_ = std::thread([this] { Run(); }); }

void MetaLink::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (client_) client_->Close();
}

bool MetaLink::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [&] { return stopping_ || heartbeat_now_; });
  heartbeat_now_ = false;
  return !stopping_;
}

void MetaLink::HeartbeatNow() {
  {
    std::lock_guard lock(mu_);
    heartbeat_now_ = true;
  }
  cv_.notify_all();
}

bool MetaLink::Register() {
  proto::RegisterBrickRequest request;
  request.set_uuid(options_.brick_uuid);
  request.set_address(options_.advertise);
  request.set_failure_domain(options_.failure_domain);
  if (auto space = ChunkSpace(options_.data_dir, options_.reserve_bytes); space.ok()) {
    request.set_capacity_bytes(space->capacity_bytes);
    request.set_used_bytes(space->used_bytes);
  }
  proto::RegisterBrickReply reply;
  auto s = client_->CallSync(rpc::Method::kRegisterBrick, request, &reply);
  if (!s.ok()) {
    SPOOL_LOG_WARN("brickd meta_register_failed meta={} error=\"{}\"", options_.meta_address, s.ToString());
    return false;
  }
  brick_id_ = reply.brick_id();
  map_epoch_ = reply.map().epoch();
  if (hooks_.on_map) hooks_.on_map(std::make_shared<const proto::ClusterMap>(reply.map()), reply.brick_id());
  SPOOL_LOG_INFO("brickd registered meta={} brick_id={} epoch={}", options_.meta_address, reply.brick_id(),
                 map_epoch_);
  return true;
}

int MetaLink::Heartbeat() {
  proto::HeartbeatRequest request;
  request.set_brick_id(brick_id_);
  request.set_map_epoch(map_epoch_);
  if (auto space = ChunkSpace(options_.data_dir, options_.reserve_bytes); space.ok()) {
    request.set_capacity_bytes(space->capacity_bytes);
    request.set_used_bytes(space->used_bytes);
  }
  if (hooks_.fill_heartbeat) hooks_.fill_heartbeat(&request);
  proto::HeartbeatReply reply;
  auto s = client_->CallSync(rpc::Method::kBrickHeartbeat, request, &reply);
  if (!s.ok()) return s.code();
  // Tasks refer to PGs of the newest map: take it first.
  if (reply.map_epoch() > map_epoch_) FetchMap();
  if (hooks_.on_heartbeat_reply) hooks_.on_heartbeat_reply(reply);
  return 0;
}

void MetaLink::FetchMap() {
  proto::GetMapRequest request;
  request.set_known_epoch(map_epoch_);
  auto map = std::make_shared<proto::ClusterMap>();
  if (auto s = client_->CallSync(rpc::Method::kGetMap, request, map.get()); !s.ok()) {
    SPOOL_LOG_WARN("brickd get_map_failed error=\"{}\"", s.ToString());
    return;
  }
  map_epoch_ = std::max(map_epoch_, map->epoch());
  if (hooks_.on_map) hooks_.on_map(std::move(map), brick_id_.load());
}

void MetaLink::Run() {
  auto backoff = options_.min_backoff;
  bool registered = false;
  bool just_registered = false;
  int failed_heartbeats = 0;
  for (;;) {
    if (!registered) {
      registered = Register();
      if (!registered) {
        if (!SleepFor(backoff)) return;
        backoff = std::min(options_.max_backoff, backoff * 2);
        continue;
      }
      backoff = options_.min_backoff;
      just_registered = true;
    }
    // The first heartbeat right after registering: it brings the repair
    // tasks of a new disk that took over a brick's id.
    if (!just_registered && !SleepFor(options_.heartbeat_interval)) return;
    just_registered = false;
    int error = Heartbeat();
    if (error == 0) {
      if (failed_heartbeats > 0) SPOOL_LOG_INFO("brickd meta_heartbeat_ok after_failures={}", failed_heartbeats);
      failed_heartbeats = 0;
    } else if (error == ENOENT) {
      SPOOL_LOG_WARN("brickd meta_forgot_brick brick_id={} action=re-register", brick_id_.load());
      registered = false;
    } else if (failed_heartbeats++ == 0) {
      // One line when meta goes away, one when it comes back.
      SPOOL_LOG_WARN("brickd meta_heartbeat_failed meta={} errno={}", options_.meta_address, error);
    }
  }
}

}  // namespace spool::brick
