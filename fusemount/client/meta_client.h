// MetaClient: the mount's connection to spool-meta. Every call retries
// through connection loss (meta restart) until MountOptions::hard_timeout,
// then fails with EIO; errors from meta itself (ENOENT, EEXIST...) are
// returned as they are. Keeps the mount's session alive by heartbeat.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <vector>
#include <memory>
#include <string>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "fusemount/client/dir_attrs.h"
#include "fusemount/client/options.h"
#include "spool.pb.h"

namespace spool::client {

class MetaClient {
 public:
  MetaClient(asio::io_context& io, const MountOptions& options, ClusterKey key);
  ~MetaClient();

  // Opens the session and starts the heartbeat.
  Status Start();
  void Stop();
  uint64_t session_id() const { return session_id_.load(); }

  // One request/reply exchange with retries (see class comment).
  // `*ambiguous` is set (never cleared: an earlier attempt of the caller's
  // may have set it) when an attempt was sent but its answer was lost (meta
  // died or the connection broke): a mutation may then have been applied
  // already, and a retry's EEXIST/ENOENT may be our own doing.
  Status Call(rpc::Method method, const google::protobuf::MessageLite& request,
              google::protobuf::MessageLite* reply, std::string* reply_payload = nullptr, bool* ambiguous = nullptr);
  // Fire and forget (name lease returns): no retries, no waiting.
  void Post(rpc::Method method, const google::protobuf::MessageLite& request);
  // Call for a change: the directories its reply (ChangeReply, EntryReply
  // or AttrReply; `reply` may be null for a ChangeReply) returns go to dir_attrs().
  template <typename Reply = proto::ChangeReply>
  Status CallChange(rpc::Method method, const google::protobuf::MessageLite& request, Reply* reply = nullptr,
                    bool* ambiguous = nullptr);

  // Directories as this mount's own changes left them (replies of
  // create, unlink, rename, link, setattr, xattr changes).
  DirAttrs& dir_attrs() { return dir_attrs_; }

  Result<proto::Attr> Lookup(uint64_t parent, const std::string& name);
  Result<proto::Attr> GetAttr(uint64_t ino);
  Result<proto::Attr> SetAttr(const proto::SetAttrRequest& request);
  // With open_for_session, a regular file is created open by this mount's
  // session (create(2)); mknod/mkdir/symlink pass false.
  // The mutations take `maybe_applied`: an attempt the caller made (an
  // *Async one) may have reached meta, so EEXIST/ENOENT may be its doing.
  Result<proto::Attr> Create(proto::CreateRequest request, bool open_for_session = true, bool maybe_applied = false);
  Status Unlink(uint64_t parent, const std::string& name, bool directory, bool maybe_applied = false);
  Status Rename(uint64_t old_parent, const std::string& old_name, uint64_t new_parent, const std::string& new_name,
                uint32_t flags, bool maybe_applied = false);
  Result<proto::Attr> Link(uint64_t ino, uint64_t new_parent, const std::string& new_name);
  Result<std::string> Readlink(uint64_t ino);
  // want_lease (with after ""): ask for the directory's name lease
  // (ReaddirReply.lease_id; client::DirNames).
  Result<proto::ReaddirReply> Readdir(uint64_t ino, const std::string& after, uint32_t max_entries, bool plus,
                                      bool want_lease = false);
  // Gives a name lease back (fire and forget; 0 is no lease).
  void ReleaseDirLease(uint64_t dir, uint64_t lease_id);
  // Which connection to meta this is: leases belong to one.
  uint64_t connection_generation() const;
  Result<proto::StatfsReply> Statfs();
  Result<proto::OpenReply> Open(uint64_t ino, bool truncate);
  // The *Async calls: one try, no retries; `done` runs on an io thread and
  // must not block. On a transport error (see rpc::IsTransportError) the
  // caller falls back to the waiting call, which rides out meta's outages.
  void OpenAsync(uint64_t ino, std::function<void(Result<proto::OpenReply>)> done);  // not truncating
  void LookupAsync(uint64_t parent, const std::string& name, std::function<void(Result<proto::Attr>)> done);
  void GetAttrAsync(uint64_t ino, std::function<void(Result<proto::Attr>)> done);
  // Mutations, one try likewise; after a transport error the waiting call
  // gets maybe_applied = rpc::MayHaveArrived(code).
  void CreateAsync(proto::CreateRequest request, bool open_for_session,
                   std::function<void(Result<proto::Attr>)> done);
  void UnlinkAsync(uint64_t parent, const std::string& name, bool directory, std::function<void(Status)> done);
  void RenameAsync(uint64_t old_parent, const std::string& old_name, uint64_t new_parent, const std::string& new_name,
                   uint32_t flags, std::function<void(Status)> done);
  void Release(uint64_t ino);
  // length 0: the whole file; else the 1 MiB slots the range touches.
  Result<proto::GetExtentsReply> GetExtents(uint64_t ino, uint64_t offset = 0, uint64_t length = 0);
  Result<proto::Attr> CommitWrite(const proto::CommitWriteRequest& request);
  // A fresh chunk id from the block meta handed to this session (a new block
  // when it is used up or the session changed).
  Result<uint64_t> NextChunkId();
  // Stops using the current block: meta reclaimed it (a commit said ESTALE).
  void ForgetChunkIds();
  Result<proto::ClusterMap> GetMap(uint64_t known_epoch);
  // One long poll for what other mounts changed (see proto::WatchRequest);
  // `done` runs on an io thread. No retries: the caller polls again.
  void Watch(const proto::WatchRequest& request, std::function<void(Result<proto::WatchReply>)> done);
  Status ReportBadChunk(uint64_t chunk_id, uint32_t pg, uint32_t brick_id);

  // Meta keeps who has which file open in memory only. After it restarts (or
  // our session is replaced), the mount registers every open descriptor
  // again, so that files unlinked while open are not reclaimed under it.
  // `provider` lists one inode per open descriptor; it must not block long.
  void SetOpenFilesProvider(std::function<std::vector<uint64_t>()> provider);

  // Requests sent to meta since start, by method number: how many round
  // trips each kind of operation costs (logged at unmount).
  std::string CallCounts() const;

 private:
  void Heartbeat();  // on an io thread; never blocks
  void ReopenSessionAsync();
  void ReRegisterOpenFiles();  // never blocks
  Status OpenSession();
  proto::OpenRequest OpenRequestFor(uint64_t ino, bool truncate) const;
  proto::CreateRequest CreateRequestFor(proto::CreateRequest request, bool open_for_session) const;
  // REQUIRES: releases_mu_ held (by `lock`); unlocks it to send.
  void SendReleases(std::unique_lock<std::mutex>& lock);
  template <typename Reply>
  void CallOnceAsync(rpc::Method method, const google::protobuf::MessageLite& request,
                     std::function<void(Result<Reply>)> done);
  // `done`, after the directories of a change's reply went to dir_attrs_.
  // Call it before sending: the epoch is taken then.
  template <typename Reply>
  std::function<void(Result<Reply>)> OfferingDirs(std::function<void(Result<Reply>)> done);
  Result<proto::AllocChunkIdsReply> AllocChunkIds(uint32_t count);

  asio::io_context& io_;
  MountOptions options_;
  DirAttrs dir_attrs_;
  std::shared_ptr<rpc::RpcClient> rpc_;
  std::atomic<uint64_t> session_id_{0};
  asio::steady_timer heartbeat_timer_;
  std::atomic<bool> stopped_{false};
  // The connection generation open files were last registered under; a new
  // connection (meta may have restarted) re-registers them.
  std::atomic<uint64_t> registered_generation_{0};
  void ReRegisterIfReconnected();
  std::mutex provider_mu_;  // guards open_files_provider_
  std::function<std::vector<uint64_t>()> open_files_provider_;
  uint32_t lease_ms_ = 30000;
  std::mutex ids_mu_;  // guards the chunk id block below
  uint64_t ids_session_ = 0;  // the session that holds [next_id_, end_id_)
  uint64_t next_id_ = 0;
  uint64_t end_id_ = 0;
  // Closes go to meta one request at a time: those made while one is in
  // flight wait and go together in the next (a busy mount sends one request
  // for many closes; an idle one sends each at once).
  std::mutex releases_mu_;  // guards the three below
  std::vector<uint64_t> pending_releases_;
  uint64_t releases_session_ = 0;  // the session pending_releases_ belong to
  bool releases_in_flight_ = false;
  static constexpr size_t kMethodSlots = 512;
  std::array<std::atomic<uint64_t>, kMethodSlots> calls_{};
};

}  // namespace spool::client
