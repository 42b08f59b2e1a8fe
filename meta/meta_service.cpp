#include "meta/meta_service.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <set>
#include <type_traits>

#include "common/bytes.h"
#include "common/log.h"

namespace spool::meta {
namespace {

using rpc::Frame;
using rpc::Method;
using rpc::Responder;

constexpr uint32_t kMaxHostBytes = 256;
constexpr size_t kMaxTasksPerHeartbeat = 1024;
constexpr size_t kMaxDoneReports = 4096;
constexpr size_t kMaxHealListing = 1000;
constexpr size_t kChunkReportsPerTick = 10000;
const char* const kScrubKey = "S";  // BE64 generation of the last `spoolctl scrub`

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// Parses the request as Req, then runs fn(req, responder).
template <typename Req, typename Fn>
rpc::RpcServer::Handler Typed(Fn fn) {
  return [fn = std::move(fn)](const Frame& frame, const Responder& responder) {
    Req req;
    if (!rpc::ParseRequest(frame, req, responder)) return;
    fn(req, responder);
  };
}

// A reply of type Reply (EntryReply, AttrReply, ChangeReply): `attr` if it
// has one, and for a change the directories it touched and its number.
template <typename Reply>
void ReplyWith(const proto::Attr* attr, const OpOutcome* change, const Responder& r) {
  Reply reply;
  if constexpr (!std::is_same_v<Reply, proto::ChangeReply>) *reply.mutable_attr() = *attr;
  if (change) {
    for (const auto& dir : change->changed_dirs) *reply.add_dirs() = dir;
    reply.set_op_seq(change->seq);
  }
  r.Reply(reply);
}

}  // namespace

Result<std::unique_ptr<MetaService>> MetaService::Start(const MetaOptions& options) {
  std::unique_ptr<MetaService> m(new MetaService(options));
  auto key = ClusterKey::Load(options.cluster_key_file);
  if (!key.ok()) return key.status();
  m->key_ = std::move(key.value());
  auto ns = Namespace::Open(options.data_dir, m->key_.cluster_id, options.pg_count, options.replicas,
                            options.op_log_tail);
  if (!ns.ok()) return ns.status();
  m->ns_ = std::move(ns.value());
  m->sessions_ = std::make_unique<SessionTable>(options.session_timeout);
  // Sessions that held chunk ids when meta stopped get one session timeout
  // to come back (their mounts keep their session ids across our restart).
  for (const auto& held : m->ns_->HeldChunkIdBlocks()) m->sessions_->Adopt(held.session);
  m->applier_ = std::make_unique<OpApplier>(*m->ns_, *m->sessions_);
  m->repair_ = std::make_unique<RepairTable>(m->ns_->db());
  if (auto s = m->repair_->Load(); !s.ok()) return s;
  m->registry_ = std::make_unique<ClusterRegistry>(m->ns_->db(), m->ns_->pg_count(), m->ns_->replicas(),
                                                   options.brick_down_after, options.brick_out_after);
  m->registry_->SetObserver(ClusterRegistry::Observer{
      [repair = m->repair_.get()](const proto::ClusterMap& before, const proto::ClusterMap& after) {
        repair->MarkMapChange(before, after);
      },
      [repair = m->repair_.get()](uint32_t brick_id, const proto::ClusterMap& map) {
        repair->MarkBrick(brick_id, map, "disk replaced");
      }});
  m->repair_->SetMoveSettle(options.move_settle);
  ClusterRegistry::Policy policy;
  policy.auto_join = options.auto_join;
  policy.maintenance_out_after = options.maintenance_out_after;
  m->registry_->SetPolicy(policy);
  // Requests only arrive once server_ exists (it is created below, before Listen).
  m->registry_->SetConnectionProbe(
      [service = m.get()](uint64_t connection_id) { return service->server_->IsConnectionOpen(connection_id); });
  if (auto s = m->registry_->Load(); !s.ok()) return s;
  {
    std::string v;
    if (m->ns_->db()->Get(rocksdb::ReadOptions(), kScrubKey, &v).ok() && v.size() == 8)
      m->scrub_generation_ = GetBE64(v);
  }
  m->drainer_ = std::make_unique<DeletionDrainer>(*m->ns_, *m->applier_, *m->registry_, m->key_, options.drain_interval);
  m->io_ = std::make_unique<rpc::IoRuntime>(std::max(1, options.threads));
  m->server_ = std::make_unique<rpc::RpcServer>(m->io_->io(), m->key_, "meta");
  m->RegisterHandlers();
  if (auto s = m->server_->Listen(options.listen); !s.ok()) return s;
  m->drainer_->Start();
  m->housekeeping_ = std::thread([p = m.get()] { p->Housekeeping(); });
  const auto stats = m->ns_->Stats();
  SPOOL_LOG_INFO("meta started listen={} port={} cluster={} inodes={} op_seq={} pg_count={} replicas={}", options.listen,
                 m->port(), m->key_.cluster_id, stats.inodes, stats.op_seq, m->ns_->pg_count(), m->ns_->replicas());
  return m;
}

MetaService::~MetaService() { Stop(); }

void MetaService::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (housekeeping_.joinable()) housekeeping_.join();
  invalidations_.Shutdown();
  if (server_) server_->Stop();
  if (drainer_) drainer_->Stop();
  if (applier_) applier_->Stop();  // applies (and answers) what is queued
  if (io_) io_->Stop();
  SPOOL_LOG_INFO("meta stopped");
}

void MetaService::SubmitAndReply(proto::MetaOp op, const Responder& responder,
                                 std::function<void(const OpOutcome&, const Responder&)> reply) {
  applier_->Submit(std::move(op), [this, responder, reply = std::move(reply)](Result<OpOutcome> r) {
    if (!r.ok()) return responder.Fail(r.status());
    invalidations_.Publish(responder.connection_id(), r->seq, r->changed_inodes, r->changed_entries);
    reply(*r, responder);
  });
}

void MetaService::SubmitAddingName(uint64_t dir, proto::MetaOp op, const Responder& responder,
                                   std::function<void(const OpOutcome&, const Responder&)> reply) {
  auto submit = [this, op = std::move(op), responder, reply = std::move(reply)] {
    SubmitAndReply(op, responder, reply);
  };
  uint64_t recall = 0;
  if (dir_leases_.BeforeAdd(dir, responder.connection_id(), submit, &recall)) return submit();
  if (recall != 0) invalidations_.Recall(responder.connection_id(), dir, recall);
}

void MetaService::ReclaimIfOrphan(uint64_t ino) {
  if (sessions_->IsOpen(ino) || !ns_->IsOrphan(ino)) return;
  proto::MetaOp op;
  op.mutable_reclaim_orphan()->set_ino(ino);
  applier_->Submit(std::move(op), [ino](Result<OpOutcome> r) {
    if (!r.ok()) SPOOL_LOG_WARN("meta reclaim ino={} error=\"{}\"", ino, r.status().message());
  });
}

void MetaService::ReclaimChunkIdsOf(uint64_t session, uint64_t unused_from) {
  proto::MetaOp op;
  auto* r = op.mutable_reclaim_chunk_ids();
  r->set_session_id(session);
  r->set_unused_from(unused_from);
  for (const auto& held : ns_->HeldChunkIdBlocks())
    if (held.session == session) r->add_blocks(held.block);
  if (r->blocks_size() == 0) return;
  const int blocks = r->blocks_size();
  applier_->Submit(std::move(op), [session, blocks](Result<OpOutcome> result) {
    if (!result.ok())
      SPOOL_LOG_WARN("meta reclaim of chunk ids failed session={} blocks={} error=\"{}\"", session, blocks,
                     result.status().message());
    else
      SPOOL_LOG_INFO("meta reclaimed uncommitted chunk ids session={} blocks={}", session, blocks);
  });
}

void MetaService::ReclaimChunkIdsOfEndedSessions() {
  std::set<uint64_t> ended;
  for (const auto& held : ns_->HeldChunkIdBlocks())
    if (!sessions_->Known(held.session)) ended.insert(held.session);
  for (uint64_t session : ended) ReclaimChunkIdsOf(session, 0);
}

void MetaService::Housekeeping() {
  const auto started = std::chrono::steady_clock::now();
  bool swept_startup_orphans = false;
  auto last_repair_tick = started;
  auto last_block_sweep = started;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_; })) return;
    }
    const auto now = std::chrono::steady_clock::now();
    registry_->CheckLiveness(now);
    // Moves whose new members have all caught up: the old copies may go.
    registry_->DropFinishedLeaving([this](uint32_t pg) { return !repair_->IsMarked(pg); });
    if (now - last_repair_tick >= std::chrono::seconds(1)) {
      last_repair_tick = now;
      repair_->ConsumeChunkReports(ns_->pg_count(), kChunkReportsPerTick);
      repair_->Reconcile(*registry_->Map());
      repair_->Tick(now);
    }
    invalidations_.ExpireWatchers(now);
    dir_leases_.Expire(now);
    for (auto& expired : sessions_->ExpireStale(now)) {
      SPOOL_LOG_INFO("meta session_expired id={} open_files={}", expired.session, expired.open_inodes.size());
      locks_.ReleaseSession(expired.session);
      for (uint64_t ino : expired.open_inodes) ReclaimIfOrphan(ino);
      ReclaimChunkIdsOf(expired.session, 0);
    }
    // A block handed to a session just as it ended escapes the reclaim above.
    if (now - last_block_sweep >= std::chrono::minutes(1)) {
      last_block_sweep = now;
      ReclaimChunkIdsOfEndedSessions();
    }
    // Orphans left by a previous run: their sessions died with it. Give
    // clients one session timeout to come back and re-open, then reclaim.
    if (!swept_startup_orphans && now - started > options_.session_timeout) {
      swept_startup_orphans = true;
      for (uint64_t ino : ns_->Orphans()) ReclaimIfOrphan(ino);
    }
    if (ns_->Stats().deletion_queue > 0) drainer_->Kick();
  }
}

void MetaService::RegisterHandlers() {
  auto& s = *server_;
  // Handlers that only check a request and queue it to the applier, or touch
  // in-memory tables, run where the frame was read (rpc::RpcServer::Dispatch).
  constexpr auto kInline = rpc::RpcServer::Dispatch::kInline;

  // ---- cluster
  s.Handle(Method::kRegisterBrick, Typed<proto::RegisterBrickRequest>([this](const auto& req, const Responder& r) {
             auto reply = registry_->Register(req, r.connection_id());
             if (!reply.ok()) return r.Fail(reply.status());
             r.Reply(*reply);
           }));
  s.Handle(Method::kBrickHeartbeat, Typed<proto::HeartbeatRequest>([this](const auto& req, const Responder& r) {
             if (static_cast<size_t>(req.repairs_done_size()) > kMaxDoneReports)
               return r.Fail(Status::Error(EINVAL, "too many repair reports in one heartbeat"));
             auto reply = registry_->Heartbeat(req, r.connection_id());
             if (!reply.ok()) return r.Fail(reply.status());
             const auto map = registry_->Map();
             for (const auto& done : req.repairs_done()) repair_->Done(req.brick_id(), done, *map);
             repair_->Report(req.brick_id(), req.repair(), req.scrub());
             for (auto& task : repair_->TasksFor(req.brick_id(), *map, kMaxTasksPerHeartbeat))
               *reply->add_repairs() = std::move(task);
             reply->set_scrub_generation(scrub_generation_.load());
             r.Reply(*reply);
           }));
  s.Handle(Method::kHeal, Typed<proto::HealRequest>([this](const auto& req, const Responder& r) {
             const auto map = registry_->Map();
             if (req.all()) {
               std::vector<uint32_t> all(map->pgs_size());
               for (size_t pg = 0; pg < all.size(); ++pg) all[pg] = static_cast<uint32_t>(pg);
               repair_->Mark(all, 1, "operator: heal --all");
             }
             r.Reply(repair_->Pending(*map, kMaxHealListing));
           }));
  s.Handle(Method::kScrub, Typed<proto::Empty>([this](const auto&, const Responder& r) {
             const uint64_t generation = std::max(WallMs(), scrub_generation_.load() + 1);
             std::string v;
             PutBE64(v, generation);
             rocksdb::WriteOptions wo;
             wo.sync = true;
             if (auto st = ns_->db()->Put(wo, kScrubKey, v); !st.ok())
               return r.Fail(Status::Error(EIO, "persist scrub request: " + st.ToString()));
             scrub_generation_ = generation;
             SPOOL_LOG_INFO("meta scrub_requested generation={}", generation);
             proto::ScrubReply reply;
             reply.set_scrub_generation(generation);
             r.Reply(reply);
           }));
  s.Handle(Method::kBrickAdmin, Typed<proto::BrickAdminRequest>([this](const auto& req, const Responder& r) {
             auto reply = registry_->Admin(req, [this](uint32_t pg) { return !repair_->IsMarked(pg); });
             if (!reply.ok()) return r.Fail(reply.status());
             r.Reply(*reply);
           }));
  s.Handle(Method::kGetMap, Typed<proto::GetMapRequest>([this](const auto&, const Responder& r) {
             r.Reply(*registry_->Map());
           }));
  s.Handle(Method::kStatus, Typed<proto::Empty>([this](const auto&, const Responder& r) {
             proto::StatusReply reply;
             auto map = registry_->Map();
             *reply.mutable_map() = *map;
             std::map<uint32_t, bool> up;
             for (const auto& b : map->bricks()) up[b.id()] = b.state() == proto::BRICK_UP;
             uint32_t healthy = 0, degraded = 0, moving = 0;
             for (int pg = 0; pg < map->pgs_size(); ++pg) {
               const auto& members = map->pgs(pg).bricks();
               bool members_up = members.size() == static_cast<int>(map->replicas());
               for (uint32_t b : members) members_up = members_up && up[b];
               // A moving PG keeps its old copies on the leaving bricks: not degraded.
               if (members_up && map->pgs(pg).leaving_size() > 0) {
                 ++moving;
                 continue;
               }
               bool ok = members_up && !repair_->IsMarked(static_cast<uint32_t>(pg));
               ++(ok ? healthy : degraded);
               if (!ok && reply.degraded_pgs_size() < 1024) reply.add_degraded_pgs(static_cast<uint32_t>(pg));
             }
             const auto stats = ns_->Stats();
             reply.set_inodes(stats.inodes);
             reply.set_op_seq(stats.op_seq);
             reply.set_pgs_healthy(healthy);
             reply.set_pgs_degraded(degraded);
             reply.set_pgs_moving(moving);
             reply.set_deletion_queue(stats.deletion_queue);
             reply.set_sessions(sessions_->size());
             *reply.mutable_repair() = repair_->Summary();
             reply.mutable_repair()->set_repair_queue(stats.repair_queue);
             for (auto& w : repair_->BrickWorks()) *reply.add_brick_work() = std::move(w);
             reply.set_scrub_generation(scrub_generation_.load());
             r.Reply(reply);
           }));
  s.Handle(Method::kReportBadChunk, Typed<proto::ReportBadChunkRequest>([this](const auto& req, const Responder& r) {
             SPOOL_LOG_WARN("meta bad_chunk chunk={} pg={} brick={}", req.chunk_id(), req.pg(), req.brick_id());
             r.Finish(ns_->RecordRepair(req.chunk_id(), "bad copy on brick " + std::to_string(req.brick_id())));
           }));

  // ---- namespace reads
  s.Handle(Method::kLookup, Typed<proto::LookupRequest>([this](const auto& req, const Responder& r) {
             auto attr = ns_->Lookup(req.parent(), req.name());
             if (!attr.ok()) return r.Fail(attr.status());
             ReplyWith<proto::EntryReply>(&*attr, nullptr, r);
           }));
  s.Handle(Method::kGetAttr, Typed<proto::GetAttrRequest>([this](const auto& req, const Responder& r) {
             auto attr = ns_->GetAttr(req.ino());
             if (!attr.ok()) return r.Fail(attr.status());
             ReplyWith<proto::AttrReply>(&*attr, nullptr, r);
           }));
  s.Handle(Method::kReadlink, Typed<proto::ReadlinkRequest>([this](const auto& req, const Responder& r) {
             auto target = ns_->Readlink(req.ino());
             if (!target.ok()) return r.Fail(target.status());
             proto::ReadlinkReply reply;
             reply.set_target(*target);
             r.Reply(reply);
           }));
  s.Handle(Method::kReaddir, Typed<proto::ReaddirRequest>([this](const auto& req, const Responder& r) {
             proto::ReaddirReply reply;
             // Granted before the page is read: a name another connection
             // adds from now on waits for the lease to be given back.
             const uint64_t lease =
                 req.want_lease() && req.after_name().empty() ? dir_leases_.Grant(req.ino(), r.connection_id()) : 0;
             if (auto st = ns_->Readdir(req, &reply); !st.ok()) {
               if (lease != 0) dir_leases_.Release(req.ino(), r.connection_id(), lease);
               return r.Fail(st);
             }
             reply.set_lease_id(lease);
             r.Reply(reply);
           }));
  s.Handle(Method::kStatfs, Typed<proto::Empty>([this](const auto&, const Responder& r) {
             auto cap = registry_->TotalCapacity();
             proto::StatfsReply reply;
             reply.set_capacity_bytes(cap.capacity);
             reply.set_used_bytes(cap.used);
             reply.set_free_bytes(cap.capacity - cap.used);
             reply.set_inodes(ns_->Stats().inodes);
             r.Reply(reply);
           }));
  s.Handle(Method::kGetExtents, Typed<proto::GetExtentsRequest>([this](const auto& req, const Responder& r) {
             proto::GetExtentsReply reply;
             if (auto st = ns_->GetExtents(req.ino(), reply.mutable_attr(), reply.mutable_extents(), req.offset(),
                                           req.length());
                 !st.ok())
               return r.Fail(st);
             r.Reply(reply);
           }));
  s.Handle(Method::kGetXattr, Typed<proto::XattrRequest>([this](const auto& req, const Responder& r) {
             auto value = ns_->GetXattr(req.ino(), req.name());
             if (!value.ok()) return r.Fail(value.status());
             proto::XattrReply reply;
             reply.set_value(std::move(*value));
             r.Reply(reply);
           }));
  s.Handle(Method::kListXattr, Typed<proto::XattrRequest>([this](const auto& req, const Responder& r) {
             auto names = ns_->ListXattr(req.ino());
             if (!names.ok()) return r.Fail(names.status());
             proto::XattrReply reply;
             for (auto& n : *names) reply.add_names(std::move(n));
             r.Reply(reply);
           }));

  // ---- namespace mutations
  auto reply_attr = [](const OpOutcome& o, const Responder& r) { ReplyWith<proto::AttrReply>(&o.attr, &o, r); };
  auto reply_entry = [](const OpOutcome& o, const Responder& r) { ReplyWith<proto::EntryReply>(&o.attr, &o, r); };
  auto reply_change = [](const OpOutcome& o, const Responder& r) { ReplyWith<proto::ChangeReply>(nullptr, &o, r); };

  s.Handle(Method::kCreate, Typed<proto::CreateRequest>([this, reply_entry](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_create() = req;
             SubmitAddingName(req.parent(), std::move(op), r, reply_entry);
           }), kInline);
  s.Handle(Method::kUnlink, Typed<proto::UnlinkRequest>([this, reply_change](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_unlink() = req;
             SubmitAndReply(std::move(op), r, reply_change);
           }), kInline);
  s.Handle(Method::kRename, Typed<proto::RenameRequest>([this, reply_change](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_rename() = req;
             SubmitAddingName(req.new_parent(), std::move(op), r, reply_change);
           }), kInline);
  s.Handle(Method::kLink, Typed<proto::LinkRequest>([this, reply_entry](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_link() = req;
             SubmitAddingName(req.new_parent(), std::move(op), r, reply_entry);
           }), kInline);
  s.Handle(Method::kSetAttr, Typed<proto::SetAttrRequest>([this, reply_attr](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_setattr() = req;
             SubmitAndReply(std::move(op), r, reply_attr);
           }), kInline);
  s.Handle(Method::kCommitWrite, Typed<proto::CommitWriteRequest>([this, reply_attr](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_commit_write() = req;
             SubmitAndReply(std::move(op), r, reply_attr);
           }), kInline);
  s.Handle(Method::kAllocChunkIds, Typed<proto::AllocChunkIdsRequest>([this](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_alloc_chunk_ids() = req;
             // A session that expired while its mount was cut off is taken
             // back: its old blocks are reclaimed, its new ones are tracked.
             sessions_->Adopt(req.session_id());
             SubmitAndReply(std::move(op), r, [](const OpOutcome& o, const Responder& r2) {
               proto::AllocChunkIdsReply reply;
               reply.set_first(o.first_chunk_id);
               reply.set_count(o.chunk_id_count);
               r2.Reply(reply);
             });
           }), kInline);
  s.Handle(Method::kSetXattr, Typed<proto::XattrRequest>([this, reply_change](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_set_xattr() = req;
             SubmitAndReply(std::move(op), r, reply_change);
           }), kInline);
  s.Handle(Method::kRemoveXattr, Typed<proto::XattrRequest>([this, reply_change](const auto& req, const Responder& r) {
             proto::MetaOp op;
             *op.mutable_remove_xattr() = req;
             SubmitAndReply(std::move(op), r, reply_change);
           }), kInline);

  // ---- open files
  s.Handle(Method::kOpen, Typed<proto::OpenRequest>([this](const auto& req, const Responder& r) {
             auto attr = ns_->GetAttr(req.ino());
             if (!attr.ok()) return r.Fail(attr.status());
             if (req.truncate() && !S_ISREG(attr->mode()))
               return r.Fail(Status::Error(S_ISDIR(attr->mode()) ? EISDIR : EINVAL, "truncate of a non-regular file"));
             // Registered before reading, so that an unlink racing with this
             // open keeps the inode as an orphan rather than deleting it.
             sessions_->AddOpen(req.session_id(), req.ino());
             auto reply_open = [this, ino = req.ino(), session = req.session_id()](const Responder& r2) {
               proto::OpenReply reply;
               if (auto st = ns_->GetExtents(ino, reply.mutable_attr(), reply.mutable_extents()); !st.ok()) {
                 if (session != 0 && sessions_->RemoveOpen(session, ino)) ReclaimIfOrphan(ino);
                 return r2.Fail(st);
               }
               r2.Reply(reply);
             };
             if (!req.truncate() || attr->size() == 0) return reply_open(r);
             proto::MetaOp op;
             op.mutable_setattr()->set_ino(req.ino());
             op.mutable_setattr()->set_set_size(true);
             op.mutable_setattr()->set_size(0);
             SubmitAndReply(std::move(op), r, [reply_open](const OpOutcome&, const Responder& r2) { reply_open(r2); });
           }));
  s.Handle(Method::kReleases, Typed<proto::ReleasesRequest>([this](const auto& req, const Responder& r) {
             if (req.inos_size() > static_cast<int>(rpc::kMaxReleasesPerRequest))
               return r.Fail(Status::Error(EINVAL, "more than " + std::to_string(rpc::kMaxReleasesPerRequest) +
                                                       " releases in one request"));
             for (uint64_t ino : req.inos())
               if (req.session_id() != 0 && sessions_->RemoveOpen(req.session_id(), ino)) ReclaimIfOrphan(ino);
             r.Reply(proto::Empty());
           }), kInline);
  s.Handle(Method::kRelease, Typed<proto::ReleaseRequest>([this](const auto& req, const Responder& r) {
             if (req.session_id() != 0 && sessions_->RemoveOpen(req.session_id(), req.ino()) &&
                 ns_->IsOrphan(req.ino())) {
               proto::MetaOp op;
               op.mutable_reclaim_orphan()->set_ino(req.ino());
               return applier_->Submit(std::move(op), [r](Result<OpOutcome> res) { r.Finish(res.status()); });
             }
             r.Reply(proto::Empty());
           }), kInline);

  // ---- sessions and locks
  s.Handle(Method::kOpenSession, Typed<proto::OpenSessionRequest>([this](const auto& req, const Responder& r) {
             if (req.host().size() > kMaxHostBytes) return r.Fail(Status::Error(EINVAL, "host name too long"));
             proto::OpenSessionReply reply;
             reply.set_session_id(sessions_->Open(req.host()));
             reply.set_lease_ms(static_cast<uint32_t>(options_.session_timeout.count()));
             SPOOL_LOG_INFO("meta session_open id={} host={}", reply.session_id(), req.host());
             r.Reply(reply);
           }));
  s.Handle(Method::kSessionHeartbeat, Typed<proto::SessionHeartbeatRequest>([this](const auto& req, const Responder& r) {
             if (!sessions_->Renew(req.session_id()))
               return r.Fail(Status::Error(ENOENT, "unknown session " + std::to_string(req.session_id())));
             r.Reply(proto::Empty());
           }), kInline);
  s.Handle(Method::kCloseSession, Typed<proto::SessionHeartbeatRequest>([this](const auto& req, const Responder& r) {
             auto inos = sessions_->Close(req.session_id());
             locks_.ReleaseSession(req.session_id());
             dir_leases_.ReleaseAllOf(r.connection_id());
             for (uint64_t ino : inos) ReclaimIfOrphan(ino);
             ReclaimChunkIdsOf(req.session_id(), req.unused_chunk_ids_from());
             r.Reply(proto::Empty());
           }));
  s.Handle(Method::kReleaseDirLease,
           Typed<proto::ReleaseDirLeaseRequest>([this](const auto& req, const Responder& r) {
             dir_leases_.Release(req.dir(), r.connection_id(), req.lease_id());
             r.Reply(proto::Empty());
           }), kInline);
  s.Handle(Method::kWatch, Typed<proto::WatchRequest>([this](const auto& req, const Responder& r) {
             invalidations_.Watch(req, r.connection_id(), [r](const proto::WatchReply& reply) { r.Reply(reply); });
           }));
  s.Handle(Method::kSetLock, Typed<proto::LockRequest>([this](const auto& req, const Responder& r) {
             // A waiting request is granted later, after `req` is gone.
             const bool unlock = req.type() == F_UNLCK;
             locks_.SetLock(req, [this, r, unlock, ino = req.ino()](const Status& st) {
               if (!st.ok() || unlock) return r.Finish(st);
               proto::LockReply reply;
               reply.set_watch_stream_id(invalidations_.stream_id());
               reply.set_watch_seq(invalidations_.LastChangeNotBy(r.connection_id()));
               if (auto attr = ns_->GetAttr(ino); attr.ok()) reply.set_version(attr->version());
               r.Reply(reply);
             });
           }));
  s.Handle(Method::kGetLock, Typed<proto::LockRequest>([this](const auto& req, const Responder& r) {
             auto reply = locks_.GetLock(req);
             if (!reply.ok()) return r.Fail(reply.status());
             r.Reply(*reply);
           }));
}

}  // namespace spool::meta
