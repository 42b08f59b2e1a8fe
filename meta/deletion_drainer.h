// DeletionDrainer: removes queued chunks from their bricks in the background.
//
// It reads a batch of the deletion queue, sends one DeleteChunksRequest per
// brick (every brick of each chunk's PG, in parallel), and removes a chunk
// from the queue (a chunks_deleted MetaOp) only once every brick of its PG
// answered OK. Anything else (a down brick, an error, a PG with no bricks)
// stays queued and is retried on the next pass.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "common/rpc/client_pool.h"
#include "common/rpc/runtime.h"
#include "meta/cluster_registry.h"
#include "meta/namespace.h"
#include "meta/op_applier.h"

namespace spool::meta {

class DeletionDrainer {
 public:
  DeletionDrainer(Namespace& ns, OpApplier& applier, ClusterRegistry& registry, ClusterKey key,
                  std::chrono::milliseconds interval);
  ~DeletionDrainer();  // Stop()
  DeletionDrainer(const DeletionDrainer&) = delete;
  DeletionDrainer& operator=(const DeletionDrainer&) = delete;

  void Start();
  // Wakes the drainer now (e.g. after chunks were queued).
  void Kick();
  void Stop();

  // One pass over (a batch of) the queue; returns how many chunks were
  // removed from it. Public for tests; REQUIRES: not running concurrently.
  size_t DrainOnce();

 private:
  void Run();

  Namespace& ns_;
  OpApplier& applier_;
  ClusterRegistry& registry_;
  const std::chrono::milliseconds interval_;
  rpc::IoRuntime io_{1};
  rpc::ClientPool clients_;

  std::mutex mu_;  // guards stopping_, kicked_
  std::condition_variable cv_;
  bool stopping_ = false;
  bool kicked_ = false;
  std::thread thread_;
};

}  // namespace spool::meta
