// Invalidator: keeps this mount's kernel caches coherent with the other
// mounts. A thread long-polls meta for the inodes and names other mounts
// changed (proto::WatchRequest) and turns each into a FUSE notification
// (fuse_lowlevel_notify_inval_inode / _entry), so that entries and
// attributes can be cached in the kernel without serving stale ones.
#pragma once

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "fusemount/client/dir_names.h"
#include "fusemount/client/file_store.h"
#include "fusemount/client/meta_client.h"

namespace spool::client {

class Invalidator {
 public:
  // `delay`: each batch of changes is applied that late (diagnostics).
  // `names`: the directory copies to drop when meta recalls their lease or
  // the stream resets, told whenever the watch hears from meta.
  Invalidator(fuse_session* session, MetaClient& meta, FileStore& files, DirNames& names,
              std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  ~Invalidator();  // Stop()

  void Start();
  // Returns at once, even with a poll outstanding; no notification is sent
  // to the session afterwards.
  void Stop();

  uint64_t notifications() const { return notifications_.load(); }
  // Waits until the changes of meta's stream `stream_id` up to `seq` are
  // applied to the kernel's caches, at most `limit`. Returns at once if the
  // watch is not running or follows another stream (meta restarted: that
  // stream's changes arrive as a reset). False if `limit` passed.
  bool WaitApplied(uint64_t stream_id, uint64_t seq, std::chrono::milliseconds limit);

 private:
  struct Poll;
  void Run();
  void Apply(const proto::WatchReply& reply);
  // Drops the copies whose lease meta recalls, or all of them on a reset,
  // and gives the leases back; notes that meta was heard. On the io thread.
  void HandleLeases(const proto::WatchReply& reply);  // REQUIRES: poll_->mu

  fuse_session* const session_;
  const std::chrono::milliseconds delay_;
  MetaClient& meta_;
  FileStore& files_;
  DirNames& names_;
  std::shared_ptr<Poll> poll_;  // shared with outstanding RPC callbacks
  uint64_t heard_generation_ = 0;  // guarded by poll_->mu
  std::thread thread_;
  std::atomic<uint64_t> notifications_{0};
  std::mutex applied_mu_;  // guards the three below
  std::condition_variable applied_cv_;
  bool running_ = false;
  uint64_t applied_stream_id_ = 0;
  uint64_t applied_seq_ = 0;
};

}  // namespace spool::client
