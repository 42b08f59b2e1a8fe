#include "brickd/daemon.h"

#include <unistd.h>

#include "common/cluster_key.h"
#include "common/log.h"

namespace spool::brick {

Result<std::unique_ptr<BrickDaemon>> BrickDaemon::Start(const BrickOptions& options) {
  auto key = ClusterKey::Load(options.cluster_key_file);
  if (!key.ok()) return key.status();
  if (options.data_dir.empty()) return Status::Error(EINVAL, "--data is required");
  if (options.threads < 1 || options.threads > 256) return Status::Error(EINVAL, "--threads must be 1..256");

  std::unique_ptr<BrickDaemon> d(new BrickDaemon());
  d->options_ = options;
  auto identity = BrickIdentity::OpenOrFormat(options.data_dir, key->cluster_id);
  if (!identity.ok()) return identity.status();
  d->identity_ = *identity;

  ChunkStoreOptions store_options;
  store_options.db_dir = options.data_dir + "/db";
  store_options.reserve_bytes = options.reserve_bytes;
  store_options.compression = options.compression;
  store_options.max_background_batch_bytes = options.background_slice_kib << 10;
  store_options.idle_background_batch_bytes =
      std::max(store_options.idle_background_batch_bytes, store_options.max_background_batch_bytes);
  auto store = ChunkStore::Open(store_options);
  if (!store.ok()) return store.status();
  d->store_ = std::move(store).value();

  d->runtime_ = std::make_unique<rpc::IoRuntime>(options.threads);
  d->server_ = std::make_unique<rpc::RpcServer>(d->runtime_->io(), *key, "brickd");
  d->service_ = std::make_unique<BrickService>(d->store_.get(), d->identity_, options.data_dir);
  d->service_->Register(*d->server_);
  RepairOptions repair = options.repair;
  if (repair.state_dir.empty()) repair.state_dir = options.data_dir;
  d->repairer_ = std::make_unique<Repairer>(*d->store_, d->runtime_->io(), *key, repair);
  d->service_->SetCorruptionObserver(
      [r = d->repairer_.get()](uint32_t pg, uint64_t chunk_id) { r->ReportCorrupt(pg, chunk_id); });
  d->repairer_->SetClientActivity([service = d->service_.get()] { return service->last_client_request(); });
  if (auto s = d->server_->Listen(options.listen); !s.ok()) return s;

  if (!options.meta_address.empty()) {
    MetaLinkOptions link;
    link.meta_address = options.meta_address;
    link.brick_uuid = d->identity_.uuid;
    link.advertise = options.advertise.empty() ? options.listen : options.advertise;
    link.failure_domain = options.failure_domain;
    if (link.failure_domain.empty()) {
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      link.failure_domain = host;
    }
    link.data_dir = options.data_dir;
    link.reserve_bytes = options.reserve_bytes;
    Repairer* r = d->repairer_.get();
    d->gc_ = std::make_unique<PgGc>(*d->store_, options.gc);
    PgGc* gc = d->gc_.get();
    MetaLinkHooks hooks;
    hooks.fill_heartbeat = [r](proto::HeartbeatRequest* req) { r->FillHeartbeat(req); };
    hooks.on_heartbeat_reply = [r](const proto::HeartbeatReply& reply) {
      r->AddTasks(reply.repairs());
      r->RequestScrub(reply.scrub_generation());
    };
    hooks.on_map = [r, gc](std::shared_ptr<const proto::ClusterMap> map, uint32_t id) {
      gc->SetMap(map, id);
      r->SetMap(std::move(map), id);
    };
    d->meta_link_ = std::make_unique<MetaLink>(d->runtime_->io(), *key, link, std::move(hooks));
    d->repairer_->SetReportSoon([link = d->meta_link_.get()] { link->HeartbeatNow(); });
    d->repairer_->Start();
    d->gc_->Start();
    d->meta_link_->Start();
  }
  SPOOL_LOG_INFO("brickd started uuid={} cluster={} listen={} port={} data={}", d->identity_.uuid,
                 d->identity_.cluster_id, options.listen, d->server_->port(), options.data_dir);
  return d;
}

BrickDaemon::~BrickDaemon() { Stop(); }

void BrickDaemon::Stop() {
  if (stopped_) return;
  stopped_ = true;
  bool was_serving = server_ != nullptr;
  if (meta_link_) meta_link_->Stop();
  if (repairer_) repairer_->Stop();
  if (gc_) gc_->Stop();
  if (server_) server_->Stop();
  // No handler runs after this, so nothing calls the store any more; replies
  // still queued to the (stopped) io_context are dropped with it.
  if (runtime_) runtime_->Stop();
  // Bulk reads still running finish before the store closes.
  if (service_) service_->Stop();
  // Answers queued writes (their replies go nowhere: connections are closed),
  // flushes and closes the database.
  store_.reset();
  if (was_serving) SPOOL_LOG_INFO("brickd stopped uuid={}", identity_.uuid);
}

}  // namespace spool::brick
