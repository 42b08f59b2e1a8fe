// Invalidator: keeps this mount's kernel caches coherent with the other
// mounts. A thread long-polls meta for the inodes and names other mounts
// changed (proto::WatchRequest) and turns each into a FUSE notification
// (fuse_lowlevel_notify_inval_inode / _entry), so that entries and
// attributes can be cached in the kernel without serving stale ones.
#pragma once

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>

#include <atomic>
#include <memory>
#include <thread>

#include "fusemount/client/file_store.h"
#include "fusemount/client/meta_client.h"

namespace spool::client {

class Invalidator {
 public:
  Invalidator(fuse_session* session, MetaClient& meta, FileStore& files);
  ~Invalidator();  // Stop()

  void Start();
  // Returns at once, even with a poll outstanding; no notification is sent
  // to the session afterwards.
  void Stop();

  uint64_t notifications() const { return notifications_.load(); }

 private:
  struct Poll;
  void Run();
  void Apply(const proto::WatchReply& reply);

  fuse_session* const session_;
  MetaClient& meta_;
  FileStore& files_;
  std::shared_ptr<Poll> poll_;  // shared with outstanding RPC callbacks
  std::thread thread_;
  std::atomic<uint64_t> notifications_{0};
};

}  // namespace spool::client
