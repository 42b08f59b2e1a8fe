// MetaService: the running metadata service. Owns the database (Namespace),
// the applier, the brick registry, sessions and locks, the deletion drainer,
// and the RPC server whose handlers translate requests into those.
//
// Reads run on the io threads; mutations become MetaOps for the applier and
// are answered after they are durable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "common/cluster_key.h"
#include "common/rpc/runtime.h"
#include "common/rpc/server.h"
#include "meta/cluster_registry.h"
#include "meta/deletion_drainer.h"
#include "meta/dir_leases.h"
#include "meta/invalidation_log.h"
#include "meta/lock_table.h"
#include "meta/meta_options.h"
#include "meta/namespace.h"
#include "meta/op_applier.h"
#include "meta/repair_table.h"
#include "meta/session_table.h"

namespace spool::meta {

class MetaService {
 public:
  // Opens the data dir, loads the cluster key, and starts serving.
  static Result<std::unique_ptr<MetaService>> Start(const MetaOptions& options);
  ~MetaService();  // Stop()

  uint16_t port() const { return server_->port(); }
  // Stops accepting, applies what is queued, joins every thread.
  void Stop();

  Namespace& ns() { return *ns_; }

 private:
  explicit MetaService(MetaOptions options) : options_(std::move(options)) {}
  void RegisterHandlers();
  void Housekeeping();
  void ReclaimIfOrphan(uint64_t ino);
  // Ends the chunk id blocks of a closed or expired session (see
  // proto::ReclaimChunkIdsRequest); `unused_from` as its mount reported it.
  void ReclaimChunkIdsOf(uint64_t session, uint64_t unused_from);
  void ReclaimChunkIdsOfEndedSessions();
  void SubmitAndReply(proto::MetaOp op, const rpc::Responder& responder,
                      std::function<void(const OpOutcome&, const rpc::Responder&)> reply);
  // SubmitAndReply of an op that adds a name to `dir`, once no other
  // connection's name lease on it stands in the way (DirLeases).
  void SubmitAddingName(uint64_t dir, proto::MetaOp op, const rpc::Responder& responder,
                        std::function<void(const OpOutcome&, const rpc::Responder&)> reply);

  // Changes kept for mounts' caches: a few seconds of a busy cluster.
  static constexpr size_t kInvalidationsKept = 1 << 17;
  // How long an add waits for a recalled name lease: well over the time a
  // mount keeps trusting its copy of a directory after its watch last heard
  // from meta (client::DirNames::kTrustFor).
  static constexpr std::chrono::milliseconds kDirLeaseRecallTimeout{2000};

  MetaOptions options_;
  ClusterKey key_;
  std::unique_ptr<Namespace> ns_;
  std::unique_ptr<SessionTable> sessions_;
  LockTable locks_;
  InvalidationLog invalidations_{kInvalidationsKept};
  DirLeases dir_leases_{kDirLeaseRecallTimeout};
  std::unique_ptr<OpApplier> applier_;
  std::unique_ptr<RepairTable> repair_;
  std::unique_ptr<ClusterRegistry> registry_;
  std::unique_ptr<DeletionDrainer> drainer_;
  std::unique_ptr<rpc::IoRuntime> io_;
  std::unique_ptr<rpc::RpcServer> server_;

  std::mutex mu_;  // guards stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<uint64_t> scrub_generation_{0};  // persisted under key "S"
  bool stopped_ = false;  // Stop() ran (only touched by the owner's thread)
  std::thread housekeeping_;
};

}  // namespace spool::meta
