// Namespace: meta's state machine over RocksDB.
//
// Every mutation is a proto::MetaOp. Apply() applies one op on top of the
// pending group: its state changes, its op-log entry (its own sequence
// number) and the counters. An op sees every op applied before it, also
// those of the pending group; an op that fails changes nothing and is not
// logged. CommitGroup() writes the whole pending group as one RocksDB
// WriteBatch without syncing (only the last value of a key rewritten by
// several ops of the group is written); the caller (OpApplier) then syncs the
// WAL once before answering anyone. Apply is deterministic given the state
// and the op: timestamps come from op.now_ns, ino and chunk ids from counters
// in the database, and the one decision that depends on memory (is a file
// whose last link goes still open?) is recorded in op.reclaimed.
//
// Threading: Apply/CommitGroup/SyncWal REQUIRE a single caller thread (the
// applier). Every read method may be called from any thread at any time; it
// sees the database, so a committed group entirely and a pending one not at
// all.
#pragma once

#include <rocksdb/db.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "spool.pb.h"

namespace spool::meta {

// What an applied op produced, beyond "ok".
struct OpOutcome {
  proto::Attr attr;                   // create/link/setattr/commit: the inode after the op
  uint64_t first_chunk_id = 0;        // alloc_chunk_ids
  uint32_t chunk_id_count = 0;        // alloc_chunk_ids: how many from first_chunk_id
  std::vector<uint64_t> new_orphans;  // inodes whose nlink reached 0 by this op, kept as orphans (open)
  bool created = false;               // create: a new inode (false: existing returned)
  // What other mounts must stop caching: inodes whose record changed, and
  // names (parent, name) added, removed or repointed.
  std::vector<uint64_t> changed_inodes;
  std::vector<std::pair<uint64_t, std::string>> changed_entries;
  std::vector<proto::Attr> changed_dirs;  // the directories among changed_inodes, as they are after the op
  uint64_t seq = 0;                       // the op's number in the op log
};

struct NamespaceStats {
  uint64_t inodes = 0;
  uint64_t op_seq = 0;
  uint64_t deletion_queue = 0;
  uint64_t repair_queue = 0;
};

class Namespace {
 public:
  // Opens (and formats, if empty) the database in `dir` for `cluster_id`.
  // pg_count/replicas are recorded at format time; an existing database keeps
  // its own (see pg_count()).
  static Result<std::unique_ptr<Namespace>> Open(const std::string& dir, const std::string& cluster_id,
                                                 uint32_t pg_count, uint32_t replicas, uint64_t op_log_tail);
  ~Namespace();
  Namespace(const Namespace&) = delete;
  Namespace& operator=(const Namespace&) = delete;

  uint32_t pg_count() const { return pg_count_; }
  uint32_t replicas() const { return replicas_; }
  rocksdb::DB* db() { return db_.get(); }

  // ---- mutations (applier thread only)

  // Tells whether a regular file whose last link an op removes is still
  // open (then it is kept as an orphan; otherwise it is deleted by that op).
  using IsOpen = std::function<bool(uint64_t ino)>;

  // Applies `op` to the pending group (its seq is assigned here). With
  // `is_open`, the files the op deletes at once are recorded in
  // op.reclaimed; without it (a replay), op.reclaimed is followed as logged.
  // A failing op changes nothing and is not logged.
  Result<OpOutcome> Apply(proto::MetaOp& op, const IsOpen& is_open = nullptr);
  // Writes the pending group as one unsynced WriteBatch. On failure every op
  // of the group is dropped (none of it is in the database).
  Status CommitGroup();
  size_t pending_ops() const { return pending_ops_; }
  // Makes every committed group durable.
  Status SyncWal();

  // ---- reads (any thread)

  Result<proto::Attr> Lookup(uint64_t parent, const std::string& name) const;
  Result<proto::Attr> GetAttr(uint64_t ino) const;
  Result<std::string> Readlink(uint64_t ino) const;
  Status Readdir(const proto::ReaddirRequest& req, proto::ReaddirReply* reply) const;
  // Attr and all extents sorted by file_offset.
  // The extents of the slots [offset, offset + length) touches (length 0: all).
  Status GetExtents(uint64_t ino, proto::Attr* attr, google::protobuf::RepeatedPtrField<proto::Extent>* extents,
                    uint64_t offset = 0, uint64_t length = 0) const;
  Result<std::string> GetXattr(uint64_t ino, const std::string& name) const;
  Result<std::vector<std::string>> ListXattr(uint64_t ino) const;
  bool IsOrphan(uint64_t ino) const;
  // Up to `max` logged ops from sequence number `from_seq` on, in order
  // (only the last op_log_tail are kept).
  std::vector<proto::MetaOp> ReadOpLog(uint64_t from_seq, size_t max) const;
  // Records a chunk copy to repair (a bad copy reported by a reader). Not a
  // namespace mutation: written directly, synced, outside the op log.
  Status RecordRepair(uint64_t chunk_id, const std::string& reason);
  std::vector<uint64_t> Orphans() const;
  // Chunk id blocks held by sessions (committed state), in block order.
  struct HeldChunkIdBlock {
    uint64_t block;
    uint64_t session;
  };
  std::vector<HeldChunkIdBlock> HeldChunkIdBlocks() const;
  // Up to `max` chunk ids waiting in the deletion queue, in id order.
  std::vector<uint64_t> DeletionQueue(size_t max) const;
  std::vector<uint64_t> RepairQueue(size_t max) const;
  NamespaceStats Stats() const;

  // Name rules shared by every operation: 1..255 bytes, no '/', no NUL,
  // not "." or "..".
  static Status ValidateName(const std::string& name);

 private:
  class Txn;
  Namespace() = default;
  Status Format(const std::string& cluster_id, uint32_t pg_count, uint32_t replicas);
  Status LoadCounters();
  Status MoveOldOpLog();

  Status ApplyCreate(Txn& t, const proto::CreateRequest& r, OpOutcome* out);
  Status ApplyUnlink(Txn& t, const proto::UnlinkRequest& r, OpOutcome* out);
  Status ApplyRename(Txn& t, const proto::RenameRequest& r, OpOutcome* out);
  Status ApplyLink(Txn& t, const proto::LinkRequest& r, OpOutcome* out);
  Status ApplySetAttr(Txn& t, const proto::SetAttrRequest& r, OpOutcome* out);
  Status ApplyCommitWrite(Txn& t, const proto::CommitWriteRequest& r, OpOutcome* out);
  Status ApplyAllocChunkIds(Txn& t, const proto::AllocChunkIdsRequest& r, OpOutcome* out);
  Status ApplySetXattr(Txn& t, const proto::XattrRequest& r, OpOutcome* out);
  Status ApplyRemoveXattr(Txn& t, const proto::XattrRequest& r, OpOutcome* out);
  Status ApplyReclaimOrphan(Txn& t, const proto::ReleaseRequest& r, OpOutcome* out);
  Status ApplyChunksDeleted(Txn& t, const proto::DeleteChunksRequest& r, OpOutcome* out);
  Status ApplyReclaimChunkIds(Txn& t, const proto::ReclaimChunkIdsRequest& r, OpOutcome* out);
  // Records which ids of a session's blocks the commit references; ESTALE
  // if one of them belongs to a block reclaimed when its session ended.
  Status MarkChunkIdsCommitted(Txn& t, const proto::CommitWriteRequest& r);

  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_cf_ = nullptr;  // as opened (db_->DefaultColumnFamily() is the same)
  rocksdb::ColumnFamilyHandle* log_cf_ = nullptr;      // the operation log (keys::OpLog)
  uint32_t pg_count_ = 0;
  uint32_t replicas_ = 0;
  uint64_t op_log_tail_ = 0;

  // Durable counters, stored together under key "C". Written only by the
  // applier thread; the atomics let readers report them.
  struct Counters {
    uint64_t next_ino = 2;
    uint64_t next_chunk_id = 1;
    uint64_t op_seq = 0;
    uint64_t inodes = 1;
    uint64_t deletion_queue = 0;
    uint64_t reserved = 0;
  };
  Counters counters_;            // applier thread only: after the pending group
  Counters committed_counters_;  // applier thread only: in the database

  // The pending group: every key its ops wrote, with its last value
  // (nullopt: deleted). Applier thread only.
  std::map<std::string, std::optional<std::string>, std::less<>> pending_;
  std::vector<std::pair<std::string, std::string>> pending_log_;  // op-log key, MetaOp
  size_t pending_ops_ = 0;

  std::atomic<uint64_t> inodes_{0}, op_seq_{0}, deletion_queue_{0};
};

}  // namespace spool::meta
