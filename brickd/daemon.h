// BrickDaemon: one brick, assembled: identity, chunk store, RPC server with
// the brick service, and (with a meta address) the link to meta. main.cpp
// parses flags and waits for a signal; everything else is here.
#pragma once

#include <memory>

#include "brickd/brick_service.h"
#include "brickd/chunk_store.h"
#include "brickd/identity.h"
#include "brickd/meta_link.h"
#include "brickd/pg_gc.h"
#include "brickd/repairer.h"
#include "brickd/options.h"
#include "common/rpc/runtime.h"
#include "common/rpc/server.h"

namespace spool::brick {

class BrickDaemon {
 public:
  // Checks the data directory (formatting an empty one), opens the store and
  // starts serving. Errors name what failed (a foreign data dir is EEXIST).
  static Result<std::unique_ptr<BrickDaemon>> Start(const BrickOptions& options);
  // Stop()
  ~BrickDaemon();

  // Clean shutdown: leaves meta, stops accepting, lets queued writes finish,
  // closes the database (flushed). Idempotent.
  void Stop();

  uint16_t port() const { return server_->port(); }
  const BrickIdentity& identity() const { return identity_; }

 private:
  BrickDaemon() = default;

  BrickOptions options_;
  BrickIdentity identity_;
  // Declaration order is destruction order in reverse: the store outlives the
  // io threads that call it; the server is destroyed before its io_context.
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<rpc::IoRuntime> runtime_;
  std::unique_ptr<rpc::RpcServer> server_;
  std::unique_ptr<BrickService> service_;
  std::unique_ptr<Repairer> repairer_;
  std::unique_ptr<PgGc> gc_;
  std::unique_ptr<MetaLink> meta_link_;
  bool stopped_ = false;
};

}  // namespace spool::brick
