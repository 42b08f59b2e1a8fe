#include "meta/namespace.h"

#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "common/extents.h"
#include "common/log.h"
#include "common/placement.h"
#include "common/rocksdb_crc32c.h"
#include "meta/keys.h"
#include "meta_store.pb.h"

namespace spool::meta {
namespace {

using meta_store::ExtentList;
using meta_store::InodeRecord;

constexpr uint32_t kFormatVersion = 1;
const std::string kOpLogFamily = "oplog";
constexpr size_t kMaxNameBytes = 255;
constexpr size_t kMaxSymlinkBytes = 4095;
constexpr size_t kMaxXattrValueBytes = 64 * 1024;
constexpr uint32_t kMaxChunkBytes = 1u << 20;
constexpr uint32_t kMaxAllocChunkIds = 65536;
constexpr int kMaxExtentsPerCommit = 4096;
constexpr uint32_t kMaxReaddirEntries = 10000;
constexpr uint32_t kDefaultReaddirEntries = 1000;
constexpr int kMaxDirectoryDepth = 4096;
constexpr uint32_t kXattrCreate = 1;
constexpr uint32_t kXattrReplace = 2;
constexpr uint32_t kRenameNoReplace = 1;
constexpr uint32_t kRenameExchange = 2;

Status Err(int code, std::string message) { return Status::Error(code, std::move(message)); }

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  return Err(EIO, what + ": " + s.ToString());
}

std::string EncodeCounters(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f) {
  std::string v;
  for (uint64_t x : {a, b, c, d, e, f}) PutBE64(v, x);
  return v;
}

// The value of keys::AllocatedBlock: the session holding the block and a
// bitmap of the ids that a commit referenced.
struct ChunkIdBlock {
  uint64_t session = 0;
  std::string committed;  // keys::kChunkIdsPerBlock bits

  static std::optional<ChunkIdBlock> Parse(std::string_view v) {
    if (v.size() != 8 + keys::kChunkIdsPerBlock / 8) return std::nullopt;
    return ChunkIdBlock{GetBE64(v), std::string(v.substr(8))};
  }
  std::string Encode() const {
    std::string v;
    PutBE64(v, session);
    return v + committed;
  }
  bool AllCommitted() const {
    return std::all_of(committed.begin(), committed.end(), [](char c) { return static_cast<unsigned char>(c) == 0xff; });
  }
};

bool IsDir(const proto::Attr& a) { return S_ISDIR(a.mode()); }
uint32_t TypeOf(uint32_t mode) { return mode & S_IFMT; }

std::set<uint64_t> ChunksOf(const std::vector<proto::Extent>& v) {
  std::set<uint64_t> s;
  for (const auto& e : v) s.insert(e.chunk_id());
  return s;
}

Status ValidateXattrName(const std::string& name) {
  if (name.empty()) return Err(EINVAL, "empty xattr name");
  if (name.size() > kMaxNameBytes) return Err(ERANGE, "xattr name longer than 255 bytes");
  if (name.find('\0') != std::string::npos) return Err(EINVAL, "NUL in xattr name");
  auto has_prefix = [&](std::string_view p) { return name.size() > p.size() && name.compare(0, p.size(), p) == 0; };
  if (has_prefix("user.") || has_prefix("trusted.")) return Status::Ok();
  return Err(EOPNOTSUPP, "xattr namespace not supported: " + name);
}

}  // namespace

// ---------------------------------------------------------------- Txn

// One op being applied: every key it writes is kept here (last value wins,
// as in a WriteBatch) and every read sees, in order, this op's writes, the
// pending group's, then the database. Inodes are kept parsed, so the op sees
// its own changes (rename within one directory, an exchange) and serializes
// each inode it changed once. Nothing reaches the group unless the op
// succeeds.
class Namespace::Txn {
 public:
  using Writes = std::map<std::string, std::optional<std::string>, std::less<>>;

  Txn(Namespace& ns, proto::MetaOp& op, const IsOpen& is_open)
      : ns_(ns), op_(op), is_open_(is_open), now(op.now_ns()), c(ns.counters_) {}

  Namespace& ns_;
  proto::MetaOp& op_;
  const IsOpen& is_open_;
  const int64_t now;
  Counters c;

  // The value of `key` as this op sees it; false if there is none.
  Result<bool> Get(std::string_view key, std::string* value) {
    for (const Writes* w : {&writes_, &ns_.pending_}) {
      auto it = w->find(key);
      if (it == w->end()) continue;
      if (!it->second) return false;
      *value = *it->second;
      return true;
    }
    auto s = ns_.db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), value);
    if (s.IsNotFound()) return false;
    if (!s.ok()) return FromRocks(s, "read");
    return true;
  }
  void Put(std::string key, std::string value) { writes_.insert_or_assign(std::move(key), std::move(value)); }
  void Delete(std::string key) { writes_.insert_or_assign(std::move(key), std::nullopt); }

  // Calls fn(key, value) for every key in [from, end) as this op sees it, in
  // key order. Meant for the few keys of one inode (extents, xattrs).
  Status Scan(const std::string& from, const std::string& end,
              const std::function<Status(const std::string&, const std::string&)>& fn) {
    Writes merged;
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(ns_.db_->NewIterator(ro));
    for (it->Seek(from); it->Valid(); it->Next()) merged.emplace(it->key().ToString(), it->value().ToString());
    if (!it->status().ok()) return FromRocks(it->status(), "scan");
    for (const Writes* w : {&ns_.pending_, &writes_})
      for (auto i = w->lower_bound(from); i != w->end() && i->first < end; ++i) merged.insert_or_assign(i->first, i->second);
    for (const auto& [k, v] : merged)
      if (v)
        if (auto st = fn(k, *v); !st.ok()) return st;
    return Status::Ok();
  }

  // The inode, or ENOENT. The pointer stays valid for the op.
  Result<InodeRecord*> Inode(uint64_t ino) {
    if (ino == 0) return Err(EINVAL, "inode 0");
    auto it = inodes_.find(ino);
    if (it != inodes_.end()) {
      if (!it->second) return Err(ENOENT, "inode " + std::to_string(ino) + " not found");
      return &*it->second;
    }
    std::string v;
    auto found = Get(keys::Inode(ino), &v);
    if (!found.ok()) return found.status();
    if (!*found) return Err(ENOENT, "inode " + std::to_string(ino) + " not found");
    InodeRecord rec;
    if (!rec.ParseFromString(v)) return Err(EIO, "corrupt inode " + std::to_string(ino));
    auto& slot = inodes_[ino];
    slot = std::move(rec);
    return &*slot;
  }
  Result<InodeRecord*> Directory(uint64_t ino) {
    auto r = Inode(ino);
    if (r.ok() && !IsDir((*r)->attr())) return Err(ENOTDIR, "inode " + std::to_string(ino) + " is not a directory");
    return r;
  }
  void AddInode(uint64_t ino, InodeRecord rec) {
    inodes_[ino] = std::move(rec);
    dirty_.insert(ino);
  }
  void Dirty(uint64_t ino) { dirty_.insert(ino); }
  void RemoveInode(uint64_t ino) {
    auto& slot = inodes_[ino];
    if (slot && IsDir(slot->attr())) {
      // Reported as gone (nlink 0) with the directories the op changed.
      removed_dir_ = slot->attr();
      removed_dir_->set_nlink(0);
    }
    slot.reset();
    dirty_.insert(ino);
  }

  struct Dent {
    uint64_t ino;
    uint32_t type;
  };
  Result<std::optional<Dent>> Dirent(uint64_t parent, const std::string& name) {
    std::string v;
    auto found = Get(keys::Dirent(parent, name), &v);
    if (!found.ok()) return found.status();
    if (!*found) return std::optional<Dent>();
    if (v.size() != 12) return Err(EIO, "corrupt dirent");
    return std::optional<Dent>(Dent{GetBE64(v), GetBE32(std::string_view(v).substr(8))});
  }
  void PutDirent(uint64_t parent, const std::string& name, uint64_t ino, uint32_t type) {
    Put(keys::Dirent(parent, name), keys::DirentValue(ino, type));
    changed_entries_.emplace_back(parent, name);
  }
  void DeleteDirent(uint64_t parent, const std::string& name) {
    Delete(keys::Dirent(parent, name));
    changed_entries_.emplace_back(parent, name);
  }
  // True if the directory has any entry, as this op sees it.
  Result<bool> HasEntries(uint64_t dir) {
    const std::string prefix = keys::DirPrefix(dir);
    const std::string end = keys::PrefixEnd(prefix);
    auto deleted_here = [&](std::string_view key) -> std::optional<bool> {
      for (const Writes* w : {&writes_, &ns_.pending_}) {
        auto i = w->find(key);
        if (i != w->end()) return !i->second.has_value();
      }
      return std::nullopt;
    };
    for (const Writes* w : {&writes_, &ns_.pending_})
      for (auto i = w->lower_bound(prefix); i != w->end() && i->first < end; ++i)
        if (deleted_here(i->first) == false) return true;
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(ns_.db_->NewIterator(ro));
    for (it->Seek(prefix); it->Valid(); it->Next())
      if (!deleted_here(std::string_view(it->key().data(), it->key().size())).value_or(false)) return true;
    if (!it->status().ok()) return FromRocks(it->status(), "scan directory");
    return false;
  }

  void QueueChunkDeletion(uint64_t chunk_id) {
    Put(keys::DeleteQueue(chunk_id), std::string());
    ++c.deletion_queue;
  }

  // A regular file lost its last link: keep it as an orphan if it is open.
  // The decision is logged with the op (op.reclaimed), so a replay, which
  // has no sessions, makes the same one.
  bool KeepAsOrphan(uint64_t ino) {
    if (!is_open_) {
      const auto& r = op_.reclaimed();
      return std::find(r.begin(), r.end(), ino) == r.end();
    }
    if (is_open_(ino)) return true;
    op_.add_reclaimed(ino);
    return false;
  }

  // Serializes the changed inodes; then the op's writes are complete.
  // Tells `out` which inodes and names the op changed.
  void Flush(OpOutcome* out) {
    out->changed_inodes.assign(dirty_.begin(), dirty_.end());
    out->changed_entries = std::move(changed_entries_);
    for (uint64_t ino : dirty_) {
      auto& rec = inodes_[ino];
      if (rec) {
        Put(keys::Inode(ino), rec->SerializeAsString());
        if (IsDir(rec->attr())) out->changed_dirs.push_back(rec->attr());
      } else {
        Delete(keys::Inode(ino));
        if (removed_dir_ && removed_dir_->ino() == ino) out->changed_dirs.push_back(*removed_dir_);
      }
    }
    dirty_.clear();
  }
  Writes& writes() { return writes_; }

 private:
  Writes writes_;
  std::map<uint64_t, std::optional<InodeRecord>> inodes_;  // nullopt: deleted by this op
  std::set<uint64_t> dirty_;
  std::vector<std::pair<uint64_t, std::string>> changed_entries_;  // (parent, name)
  std::optional<proto::Attr> removed_dir_;  // the directory this op removed (rmdir, rename over one)
};

namespace {

void Touch(meta_store::InodeRecord* rec, int64_t now, bool mtime) {
  rec->mutable_attr()->set_ctime_ns(now);
  if (mtime) rec->mutable_attr()->set_mtime_ns(now);
}

}  // namespace

// ---------------------------------------------------------------- open / format

Namespace::~Namespace() {
  if (!db_) return;
  for (auto* h : {default_cf_, log_cf_})
    if (h) db_->DestroyColumnFamilyHandle(h);
}

Result<std::unique_ptr<Namespace>> Namespace::Open(const std::string& dir, const std::string& cluster_id,
                                                   uint32_t pg_count, uint32_t replicas, uint64_t op_log_tail) {
  if (pg_count == 0 || pg_count > (1u << 20)) return Err(EINVAL, "pg count out of range");
  if (replicas == 0 || replicas > 16) return Err(EINVAL, "replicas out of range");
  rocksdb::Options options;
  options.create_if_missing = true;
  options.IncreaseParallelism(2);
  options.max_background_jobs = 2;
  // Ops are written unsynced and made durable a group at a time by
  // SyncWal(); with a manual WAL flush a write does not even cost a write(2):
  // the WAL buffer goes to the file once per group, then is fsynced.
  options.manual_wal_flush = true;
  options.create_missing_column_families = true;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.block_cache = rocksdb::NewLRUCache(128 << 20);
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Most lookups of an op are for names that do not exist yet (create,
  // rename's target): a whole-key bloom filter on the memtable answers them
  // without searching it.
  options.memtable_whole_key_filtering = true;
  options.memtable_prefix_bloom_size_ratio = 0.02;
  // The operation log is append-only and only read back in order: its own
  // family keeps it out of the namespace's memtable (every op adds to it at
  // the end, a cheap insert), uncompressed since it lives briefly.
  rocksdb::ColumnFamilyOptions log_options;
  log_options.write_buffer_size = 16 << 20;
  log_options.compression = rocksdb::kNoCompression;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(options)},
      {kOpLogFamily, log_options},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  RocksDbUsesFastCrc32c();
  auto s = rocksdb::DB::Open(rocksdb::DBOptions(options), dir, families, &handles, &raw);
  if (!s.ok()) return Err(EIO, "open rocksdb " + dir + ": " + s.ToString());
  std::unique_ptr<Namespace> ns(new Namespace());
  ns->db_.reset(raw);
  ns->default_cf_ = handles[0];
  ns->log_cf_ = handles[1];
  ns->op_log_tail_ = std::max<uint64_t>(op_log_tail, 1);

  std::string v;
  s = raw->Get(rocksdb::ReadOptions(), keys::Format(), &v);
  if (s.IsNotFound()) {
    if (auto f = ns->Format(cluster_id, pg_count, replicas); !f.ok()) return f;
    v.clear();
    s = raw->Get(rocksdb::ReadOptions(), keys::Format(), &v);
  }
  if (!s.ok()) return FromRocks(s, "read format marker");
  meta_store::FormatRecord format;
  if (!format.ParseFromString(v)) return Err(EIO, "corrupt format marker in " + dir);
  if (format.cluster_id() != cluster_id)
    return Err(EINVAL, "data dir " + dir + " belongs to cluster '" + format.cluster_id() + "', not '" + cluster_id + "'");
  if (format.format_version() != kFormatVersion) return Err(EINVAL, "unknown format version in " + dir);
  if (format.pg_count() != pg_count || format.replicas() != replicas)
    SPOOL_LOG_WARN("meta format pg_count={} replicas={} (flags ignored: pg_count={} replicas={})", format.pg_count(),
                   format.replicas(), pg_count, replicas);
  ns->pg_count_ = format.pg_count();
  ns->replicas_ = format.replicas();
  if (auto l = ns->LoadCounters(); !l.ok()) return l;
  if (auto m = ns->MoveOldOpLog(); !m.ok()) return m;
  return ns;
}

Status Namespace::Format(const std::string& cluster_id, uint32_t pg_count, uint32_t replicas) {
  meta_store::FormatRecord format;
  format.set_cluster_id(cluster_id);
  format.set_pg_count(pg_count);
  format.set_replicas(replicas);
  format.set_format_version(kFormatVersion);
  InodeRecord root;
  auto* a = root.mutable_attr();
  a->set_ino(keys::kRootIno);
  a->set_mode(S_IFDIR | 0755);
  a->set_nlink(2);
  a->set_generation(1);
  a->set_version(1);
  root.set_parent(keys::kRootIno);
  rocksdb::WriteBatch batch;
  batch.Put(keys::Inode(keys::kRootIno), root.SerializeAsString());
  Counters c;
  batch.Put(keys::Counters(),
            EncodeCounters(c.next_ino, c.next_chunk_id, c.op_seq, c.inodes, c.deletion_queue, c.reserved));
  batch.Put(keys::Format(), format.SerializeAsString());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  SPOOL_LOG_INFO("meta format cluster={} pg_count={} replicas={}", cluster_id, pg_count, replicas);
  return FromRocks(db_->Write(wo, &batch), "format");
}

Status Namespace::LoadCounters() {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), keys::Counters(), &v);
  if (!s.ok()) return FromRocks(s, "read counters");
  if (v.size() != 48) return Err(EIO, "corrupt counters");
  std::string_view sv(v);
  counters_.next_ino = GetBE64(sv.substr(0));
  counters_.next_chunk_id = GetBE64(sv.substr(8));
  counters_.op_seq = GetBE64(sv.substr(16));
  counters_.inodes = GetBE64(sv.substr(24));
  counters_.deletion_queue = GetBE64(sv.substr(32));
  counters_.reserved = GetBE64(sv.substr(40));
  inodes_ = counters_.inodes;
  op_seq_ = counters_.op_seq;
  deletion_queue_ = counters_.deletion_queue;
  committed_counters_ = counters_;
  return Status::Ok();
}

// Databases written before the op log had its own family kept it under 'L'
// in the default one. It is only a tail for followers and debugging, so it
// is dropped rather than copied.
Status Namespace::MoveOldOpLog() {
  const std::string prefix(1, 'L'), end = keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  it->Seek(prefix);
  if (!it->status().ok()) return FromRocks(it->status(), "scan old op log");
  if (!it->Valid()) return Status::Ok();
  SPOOL_LOG_INFO("meta dropping op log tail kept in the default column family");
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->DeleteRange(wo, db_->DefaultColumnFamily(), prefix, end), "drop old op log");
}

Status Namespace::ValidateName(const std::string& name) {
  if (name.empty()) return Err(EINVAL, "empty name");
  if (name.size() > kMaxNameBytes) return Err(ENAMETOOLONG, "name longer than 255 bytes");
  if (name == "." || name == "..") return Err(EINVAL, "name is . or ..");
  if (name.find_first_of(std::string_view("/\0", 2)) != std::string::npos) return Err(EINVAL, "name contains / or NUL");
  return Status::Ok();
}

// ---------------------------------------------------------------- apply

Result<OpOutcome> Namespace::Apply(proto::MetaOp& op, const IsOpen& is_open) {
  if (is_open) op.clear_reclaimed();
  Txn t(*this, op, is_open);
  OpOutcome out;
  Status s;
  switch (op.op_case()) {
    case proto::MetaOp::kCreate: s = ApplyCreate(t, op.create(), &out); break;
    case proto::MetaOp::kUnlink: s = ApplyUnlink(t, op.unlink(), &out); break;
    case proto::MetaOp::kRename: s = ApplyRename(t, op.rename(), &out); break;
    case proto::MetaOp::kLink: s = ApplyLink(t, op.link(), &out); break;
    case proto::MetaOp::kSetattr: s = ApplySetAttr(t, op.setattr(), &out); break;
    case proto::MetaOp::kCommitWrite: s = ApplyCommitWrite(t, op.commit_write(), &out); break;
    case proto::MetaOp::kAllocChunkIds: s = ApplyAllocChunkIds(t, op.alloc_chunk_ids(), &out); break;
    case proto::MetaOp::kSetXattr: s = ApplySetXattr(t, op.set_xattr(), &out); break;
    case proto::MetaOp::kRemoveXattr: s = ApplyRemoveXattr(t, op.remove_xattr(), &out); break;
    case proto::MetaOp::kReclaimOrphan: s = ApplyReclaimOrphan(t, op.reclaim_orphan(), &out); break;
    case proto::MetaOp::kChunksDeleted: s = ApplyChunksDeleted(t, op.chunks_deleted(), &out); break;
    case proto::MetaOp::kReclaimChunkIds: s = ApplyReclaimChunkIds(t, op.reclaim_chunk_ids(), &out); break;
    default: s = Err(EINVAL, "empty meta op");
  }
  if (!s.ok()) {
    if (is_open) op.clear_reclaimed();
    return s;
  }
  t.Flush(&out);
  t.c.op_seq++;
  op.set_seq(t.c.op_seq);
  out.seq = op.seq();
  // The op succeeded: it joins the pending group.
  pending_log_.emplace_back(keys::OpLog(op.seq()), op.SerializeAsString());
  if (pending_.empty()) {
    pending_.swap(t.writes());
  } else {
    for (auto& [k, v] : t.writes()) pending_.insert_or_assign(k, std::move(v));
  }
  counters_ = t.c;
  ++pending_ops_;
  return out;
}

Status Namespace::CommitGroup() {
  if (pending_ops_ == 0) return Status::Ok();
  rocksdb::WriteBatch batch;
  for (const auto& [k, v] : pending_) {
    if (v)
      batch.Put(k, *v);
    else
      batch.Delete(k);
  }
  const Counters& c = counters_;
  batch.Put(keys::Counters(),
            EncodeCounters(c.next_ino, c.next_chunk_id, c.op_seq, c.inodes, c.deletion_queue, c.reserved));
  for (const auto& [k, v] : pending_log_) batch.Put(log_cf_, k, v);
  // Keep the last op_log_tail_ entries: drop the ones this group pushed out.
  if (c.op_seq > op_log_tail_) {
    const uint64_t drop_end = c.op_seq - op_log_tail_ + 1;
    const uint64_t drop_begin =
        committed_counters_.op_seq > op_log_tail_ ? committed_counters_.op_seq - op_log_tail_ + 1 : 1;
    batch.DeleteRange(log_cf_, keys::OpLog(drop_begin), keys::OpLog(drop_end));
  }
  pending_.clear();
  pending_log_.clear();
  pending_ops_ = 0;
  rocksdb::WriteOptions wo;
  wo.sync = false;  // the applier syncs the WAL once per group
  if (auto w = FromRocks(db_->Write(wo, &batch), "apply ops"); !w.ok()) {
    counters_ = committed_counters_;
    return w;
  }
  committed_counters_ = counters_;
  inodes_ = counters_.inodes;
  op_seq_ = counters_.op_seq;
  deletion_queue_ = counters_.deletion_queue;
  return Status::Ok();
}

Status Namespace::SyncWal() { return FromRocks(db_->FlushWAL(/*sync=*/true), "flush and sync wal"); }

namespace {

// Deletes everything of an inode (its record, extents, xattrs, orphan mark)
// and queues its chunks for deletion from the bricks.
template <typename TxnT>
Status DeleteInode(TxnT& t, uint64_t ino) {
  for (const std::string& prefix : {keys::ExtentPrefix(ino), keys::XattrPrefix(ino)}) {
    const bool extents = prefix[0] == 'E';
    auto st = t.Scan(prefix, keys::PrefixEnd(prefix), [&](const std::string& key, const std::string& value) {
      if (extents) {
        ExtentList list;
        if (!list.ParseFromString(value)) return Err(EIO, "corrupt extent list of inode " + std::to_string(ino));
        std::set<uint64_t> chunks;
        for (const auto& e : list.extents()) chunks.insert(e.chunk_id());
        for (uint64_t c : chunks) t.QueueChunkDeletion(c);
      }
      t.Delete(key);
      return Status::Ok();
    });
    if (!st.ok()) return st;
  }
  t.Delete(keys::Orphan(ino));
  t.RemoveInode(ino);
  --t.c.inodes;
  return Status::Ok();
}

}  // namespace

// Drops one link of a non-directory. At nlink 0 a regular file that is open
// somewhere becomes an orphan (reclaimed on its last release); anything else
// is deleted now.
template <typename TxnT>
Status DropLink(TxnT& t, uint64_t ino, meta_store::InodeRecord* rec, OpOutcome* out) {
  auto* a = rec->mutable_attr();
  a->set_nlink(a->nlink() > 0 ? a->nlink() - 1 : 0);
  a->set_ctime_ns(t.now);
  t.Dirty(ino);
  if (a->nlink() != 0) return Status::Ok();
  if (!S_ISREG(a->mode()) || !t.KeepAsOrphan(ino)) return DeleteInode(t, ino);
  t.Put(keys::Orphan(ino), std::string());
  out->new_orphans.push_back(ino);
  return Status::Ok();
}

Status Namespace::ApplyCreate(Txn& t, const proto::CreateRequest& r, OpOutcome* out) {
  if (auto v = ValidateName(r.name()); !v.ok()) return v;
  auto parent = t.Directory(r.parent());
  if (!parent.ok()) return parent.status();
  uint32_t type = TypeOf(r.mode());
  if (type == 0) type = S_IFREG;
  switch (type) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFIFO: case S_IFCHR: case S_IFBLK: case S_IFSOCK: break;
    default: return Err(EINVAL, "unknown file type in mode");
  }
  auto existing = t.Dirent(r.parent(), r.name());
  if (!existing.ok()) return existing.status();
  if (*existing) {
    if (!r.exclusive() && type == S_IFREG && (*existing)->type == S_IFREG) {
      auto rec = t.Inode((*existing)->ino);
      if (!rec.ok()) return rec.status();
      out->attr = (*rec)->attr();
      out->created = false;
      return Status::Ok();
    }
    return Err(EEXIST, r.name() + " exists");
  }
  if (type == S_IFLNK) {
    if (r.symlink_target().empty()) return Err(ENOENT, "empty symlink target");
    if (r.symlink_target().size() > kMaxSymlinkBytes) return Err(ENAMETOOLONG, "symlink target too long");
    if (r.symlink_target().find('\0') != std::string::npos) return Err(EINVAL, "NUL in symlink target");
  }
  const uint64_t ino = t.c.next_ino++;
  InodeRecord rec;
  auto* a = rec.mutable_attr();
  a->set_ino(ino);
  a->set_mode(type | (r.mode() & 07777));
  a->set_uid(r.uid());
  a->set_gid(r.gid());
  a->set_nlink(type == S_IFDIR ? 2 : 1);
  a->set_atime_ns(t.now);
  a->set_mtime_ns(t.now);
  a->set_ctime_ns(t.now);
  a->set_version(1);
  a->set_generation(1);
  if (type == S_IFCHR || type == S_IFBLK) a->set_rdev(r.rdev());
  if (type == S_IFLNK) {
    rec.set_symlink_target(r.symlink_target());
    a->set_size(r.symlink_target().size());
  }
  if (type == S_IFDIR) {
    rec.set_parent(r.parent());
    (*parent)->mutable_attr()->set_nlink((*parent)->attr().nlink() + 1);
  }
  Touch(*parent, t.now, true);
  t.Dirty(r.parent());
  out->attr = rec.attr();
  out->created = true;
  t.AddInode(ino, std::move(rec));
  t.PutDirent(r.parent(), r.name(), ino, type);
  ++t.c.inodes;
  return Status::Ok();
}

Status Namespace::ApplyUnlink(Txn& t, const proto::UnlinkRequest& r, OpOutcome* out) {
  if (auto v = ValidateName(r.name()); !v.ok()) return v;
  auto parent = t.Directory(r.parent());
  if (!parent.ok()) return parent.status();
  auto dent = t.Dirent(r.parent(), r.name());
  if (!dent.ok()) return dent.status();
  if (!*dent) return Err(ENOENT, r.name() + " not found");
  const uint64_t ino = (*dent)->ino;
  auto child = t.Inode(ino);
  if (!child.ok()) return child.status();
  const bool is_dir = IsDir((*child)->attr());
  if (r.directory()) {
    if (!is_dir) return Err(ENOTDIR, r.name() + " is not a directory");
    auto has = t.HasEntries(ino);
    if (!has.ok()) return has.status();
    if (*has) return Err(ENOTEMPTY, r.name() + " is not empty");
    t.DeleteDirent(r.parent(), r.name());
    (*parent)->mutable_attr()->set_nlink((*parent)->attr().nlink() - 1);
    if (auto d = DeleteInode(t, ino); !d.ok()) return d;
  } else {
    if (is_dir) return Err(EISDIR, r.name() + " is a directory");
    t.DeleteDirent(r.parent(), r.name());
    if (auto d = DropLink(t, ino, *child, out); !d.ok()) return d;
  }
  Touch(*parent, t.now, true);
  t.Dirty(r.parent());
  return Status::Ok();
}

Status Namespace::ApplyRename(Txn& t, const proto::RenameRequest& r, OpOutcome* out) {
  const uint32_t flags = r.flags();
  if ((flags & ~(kRenameNoReplace | kRenameExchange)) || flags == (kRenameNoReplace | kRenameExchange))
    return Err(EINVAL, "bad rename flags");
  if (auto v = ValidateName(r.old_name()); !v.ok()) return v;
  if (auto v = ValidateName(r.new_name()); !v.ok()) return v;
  auto old_parent = t.Directory(r.old_parent());
  if (!old_parent.ok()) return old_parent.status();
  auto new_parent = t.Directory(r.new_parent());
  if (!new_parent.ok()) return new_parent.status();
  auto src = t.Dirent(r.old_parent(), r.old_name());
  if (!src.ok()) return src.status();
  if (!*src) return Err(ENOENT, r.old_name() + " not found");
  auto dst = t.Dirent(r.new_parent(), r.new_name());
  if (!dst.ok()) return dst.status();
  if ((flags & kRenameExchange) && !*dst) return Err(ENOENT, r.new_name() + " not found");
  if ((flags & kRenameNoReplace) && *dst) return Err(EEXIST, r.new_name() + " exists");

  // Is `ancestor` the directory `dir` or above it? Walks parent pointers.
  auto is_ancestor_or_self = [&](uint64_t ancestor, uint64_t dir) -> Result<bool> {
    uint64_t cur = dir;
    for (int depth = 0; depth < kMaxDirectoryDepth; ++depth) {
      if (cur == ancestor) return true;
      if (cur == keys::kRootIno) return false;
      auto rec = t.Inode(cur);
      if (!rec.ok()) return rec.status();
      cur = (*rec)->parent();
    }
    return Err(EIO, "directory tree too deep or looped");
  };
  const uint64_t src_ino = (*src)->ino;
  const bool src_is_dir = (*src)->type == S_IFDIR;
  if (src_is_dir) {
    auto a = is_ancestor_or_self(src_ino, r.new_parent());
    if (!a.ok()) return a.status();
    if (*a) return Err(EINVAL, "cannot move a directory into itself");
  }
  const bool dst_is_dir = *dst && (*dst)->type == S_IFDIR;
  if (dst_is_dir) {
    auto a = is_ancestor_or_self((*dst)->ino, r.old_parent());
    if (!a.ok()) return a.status();
    if (*a) return (flags & kRenameExchange) ? Err(EINVAL, "cannot exchange with an ancestor")
                                             : Err(ENOTEMPTY, r.new_name() + " is not empty");
  }
  if (*dst && (*dst)->ino == src_ino) return Status::Ok();  // same inode: nothing to do

  auto src_rec = t.Inode(src_ino);
  if (!src_rec.ok()) return src_rec.status();
  const bool cross = r.old_parent() != r.new_parent();
  auto move_dir = [&](InodeRecord* dir, InodeRecord* from, InodeRecord* to, uint64_t to_ino) {
    dir->set_parent(to_ino);
    from->mutable_attr()->set_nlink(from->attr().nlink() - 1);
    to->mutable_attr()->set_nlink(to->attr().nlink() + 1);
  };

  if (flags & kRenameExchange) {
    const uint64_t dst_ino = (*dst)->ino;
    const uint32_t dst_type = (*dst)->type;
    auto dst_rec = t.Inode(dst_ino);
    if (!dst_rec.ok()) return dst_rec.status();
    t.PutDirent(r.old_parent(), r.old_name(), dst_ino, dst_type);
    t.PutDirent(r.new_parent(), r.new_name(), src_ino, (*src)->type);
    if (cross && src_is_dir) move_dir(*src_rec, *old_parent, *new_parent, r.new_parent());
    if (cross && dst_is_dir) move_dir(*dst_rec, *new_parent, *old_parent, r.old_parent());
    Touch(*dst_rec, t.now, false);
    t.Dirty(dst_ino);
  } else {
    if (*dst) {
      const uint64_t dst_ino = (*dst)->ino;
      auto dst_rec = t.Inode(dst_ino);
      if (!dst_rec.ok()) return dst_rec.status();
      if (dst_is_dir) {
        if (!src_is_dir) return Err(EISDIR, r.new_name() + " is a directory");
        auto has = t.HasEntries(dst_ino);
        if (!has.ok()) return has.status();
        if (*has) return Err(ENOTEMPTY, r.new_name() + " is not empty");
        (*new_parent)->mutable_attr()->set_nlink((*new_parent)->attr().nlink() - 1);
        if (auto d = DeleteInode(t, dst_ino); !d.ok()) return d;
      } else {
        if (src_is_dir) return Err(ENOTDIR, r.new_name() + " is not a directory");
        if (auto d = DropLink(t, dst_ino, *dst_rec, out); !d.ok()) return d;
      }
    }
    t.DeleteDirent(r.old_parent(), r.old_name());
    t.PutDirent(r.new_parent(), r.new_name(), src_ino, (*src)->type);
    if (cross && src_is_dir) move_dir(*src_rec, *old_parent, *new_parent, r.new_parent());
  }
  Touch(*src_rec, t.now, false);
  t.Dirty(src_ino);
  Touch(*old_parent, t.now, true);
  Touch(*new_parent, t.now, true);
  t.Dirty(r.old_parent());
  t.Dirty(r.new_parent());
  return Status::Ok();
}

Status Namespace::ApplyLink(Txn& t, const proto::LinkRequest& r, OpOutcome* out) {
  if (auto v = ValidateName(r.new_name()); !v.ok()) return v;
  auto rec = t.Inode(r.ino());
  if (!rec.ok()) return rec.status();
  if (IsDir((*rec)->attr())) return Err(EPERM, "cannot link a directory");
  if ((*rec)->attr().nlink() == 0) return Err(ENOENT, "inode is unlinked");
  auto parent = t.Directory(r.new_parent());
  if (!parent.ok()) return parent.status();
  auto dent = t.Dirent(r.new_parent(), r.new_name());
  if (!dent.ok()) return dent.status();
  if (*dent) return Err(EEXIST, r.new_name() + " exists");
  auto* a = (*rec)->mutable_attr();
  a->set_nlink(a->nlink() + 1);
  a->set_ctime_ns(t.now);
  t.Dirty(r.ino());
  t.PutDirent(r.new_parent(), r.new_name(), r.ino(), TypeOf(a->mode()));
  Touch(*parent, t.now, true);
  t.Dirty(r.new_parent());
  out->attr = *a;
  return Status::Ok();
}

// Cuts the file down to `size`: extents beyond it go, the boundary extent
// is trimmed, chunks no longer referenced are queued for deletion.
template <typename TxnT>
Status TruncateExtents(TxnT& t, uint64_t ino, uint64_t size) {
  const std::string end = keys::PrefixEnd(keys::ExtentPrefix(ino));
  return t.Scan(keys::Extents(ino, size / kSlotBytes), end, [&](const std::string& key, const std::string& value) {
    ExtentList list;
    if (!list.ParseFromString(value)) return Err(EIO, "corrupt extent list of inode " + std::to_string(ino));
    std::vector<proto::Extent> kept;
    std::set<uint64_t> before, after;
    for (const auto& e : list.extents()) {
      before.insert(e.chunk_id());
      if (e.file_offset() >= size) continue;
      proto::Extent k = e;
      if (e.file_offset() + e.length() > size) k.set_length(static_cast<uint32_t>(size - e.file_offset()));
      after.insert(k.chunk_id());
      kept.push_back(std::move(k));
    }
    for (uint64_t c : before)
      if (!after.count(c)) t.QueueChunkDeletion(c);
    if (kept.empty()) {
      t.Delete(key);
    } else {
      ExtentList out;
      for (auto& k : kept) *out.add_extents() = std::move(k);
      t.Put(key, out.SerializeAsString());
    }
    return Status::Ok();
  });
}

Status Namespace::ApplySetAttr(Txn& t, const proto::SetAttrRequest& r, OpOutcome* out) {
  auto rec = t.Inode(r.ino());
  if (!rec.ok()) return rec.status();
  auto* a = (*rec)->mutable_attr();
  if (r.set_size()) {
    if (IsDir(*a)) return Err(EISDIR, "cannot truncate a directory");
    if (!S_ISREG(a->mode())) return Err(EINVAL, "can only truncate regular files");
    if (r.size() > (1ull << 62)) return Err(EFBIG, "size too large");
  }
  if (r.set_mode()) a->set_mode((a->mode() & S_IFMT) | (r.mode() & 07777));
  if (r.set_uid()) a->set_uid(r.uid());
  if (r.set_gid()) a->set_gid(r.gid());
  if (r.set_size()) {
    if (r.size() < a->size()) {
      auto s = TruncateExtents(t, r.ino(), r.size());
      if (!s.ok()) return s;
    }
    if (r.size() != a->size()) {
      a->set_size(r.size());
      a->set_version(a->version() + 1);
      if (!r.set_mtime()) a->set_mtime_ns(t.now);
    }
  }
  if (r.set_atime()) a->set_atime_ns(r.atime_ns());
  if (r.set_mtime()) a->set_mtime_ns(r.mtime_ns());
  a->set_ctime_ns(r.set_ctime() ? r.ctime_ns() : t.now);
  t.Dirty(r.ino());
  out->attr = *a;
  return Status::Ok();
}

namespace {

// An O_APPEND write: its extents, given from offset 0, go after the current
// end of the file, cut again where they cross a 1 MiB slot.
proto::CommitWriteRequest PlaceAtEnd(const proto::CommitWriteRequest& r, uint64_t size) {
  proto::CommitWriteRequest placed = r;
  placed.clear_extents();
  placed.set_append(false);
  placed.set_min_size(size + r.min_size());
  for (const auto& e : r.extents()) {
    uint64_t offset = size + e.file_offset();
    uint32_t left = e.length(), chunk_offset = e.chunk_offset();
    while (left > 0) {
      const uint64_t slot_end = (offset / kSlotBytes + 1) * kSlotBytes;
      const uint32_t piece = static_cast<uint32_t>(std::min<uint64_t>(left, slot_end - offset));
      auto* p = placed.add_extents();
      *p = e;
      p->set_file_offset(offset);
      p->set_length(piece);
      p->set_chunk_offset(chunk_offset);
      offset += piece;
      chunk_offset += piece;
      left -= piece;
    }
  }
  return placed;
}

}  // namespace

namespace {

bool SameExtents(const google::protobuf::RepeatedPtrField<proto::Extent>& a,
                 const google::protobuf::RepeatedPtrField<proto::Extent>& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i)
    if (a[i].file_offset() != b[i].file_offset() || a[i].length() != b[i].length() ||
        a[i].chunk_id() != b[i].chunk_id() || a[i].chunk_offset() != b[i].chunk_offset())
      return false;
  return true;
}

}  // namespace

Status Namespace::ApplyCommitWrite(Txn& t, const proto::CommitWriteRequest& request, OpOutcome* out) {
  auto rec = t.Inode(request.ino());
  if (!rec.ok()) return rec.status();
  auto* a = (*rec)->mutable_attr();
  if (IsDir(*a)) return Err(EISDIR, "cannot write a directory");
  if (!S_ISREG(a->mode())) return Err(EINVAL, "can only write regular files");
  if (request.append()) {
    if (request.min_size() > (1ull << 40) || request.extents_size() > kMaxExtentsPerCommit / 2)
      return Err(EINVAL, "append too large");
    for (const auto& e : request.extents())
      if (e.file_offset() > request.min_size() || e.length() > request.min_size() - e.file_offset())
        return Err(EINVAL, "appended extent beyond its end");
  }
  const proto::CommitWriteRequest placed = request.append() ? PlaceAtEnd(request, a->size()) : proto::CommitWriteRequest();
  const proto::CommitWriteRequest& r = request.append() ? placed : request;
  if (r.expected_version() != 0 && r.expected_version() != a->version())
    return Err(ESTALE, "inode version is " + std::to_string(a->version()));
  if (r.extents_size() > kMaxExtentsPerCommit) return Err(EINVAL, "too many extents");
  if (r.min_size() > (1ull << 62)) return Err(EFBIG, "size too large");
  if (r.under_replicated_chunks_size() > kMaxExtentsPerCommit) return Err(EINVAL, "too many under-replicated chunks");
  std::map<uint64_t, std::vector<const proto::Extent*>> by_slot;
  for (const auto& e : r.extents()) {
    if (e.length() == 0) return Err(EINVAL, "empty extent");
    if (e.chunk_id() == 0) return Err(EINVAL, "chunk id 0");
    if (e.chunk_length() == 0 || e.chunk_length() > kMaxChunkBytes) return Err(EINVAL, "chunk length out of range");
    if (uint64_t{e.chunk_offset()} + e.length() > e.chunk_length()) return Err(EINVAL, "extent beyond its chunk");
    if (e.file_offset() > (1ull << 62)) return Err(EFBIG, "file offset too large");
    const uint64_t slot = e.file_offset() / kSlotBytes;
    if ((e.file_offset() + e.length() - 1) / kSlotBytes != slot) return Err(EINVAL, "extent crosses a 1 MiB slot");
    by_slot[slot].push_back(&e);
  }
  if (r.slot_rewrite()) {
    if (by_slot.size() != 1) return Err(EINVAL, "a slot rewrite covers exactly one slot");
    std::string v;
    auto found = t.Get(keys::Extents(r.ino(), by_slot.begin()->first), &v);
    if (!found.ok()) return found.status();
    ExtentList list;
    if (*found && !list.ParseFromString(v)) return Err(EIO, "corrupt extent list");
    if (!SameExtents(list.extents(), r.slot_extents_before()))
      return Err(ESTALE, "slot " + std::to_string(by_slot.begin()->first) + " changed since it was read");
  }
  if (auto marked = MarkChunkIdsCommitted(t, r); !marked.ok()) return marked;
  for (auto& [slot, news] : by_slot) {
    const std::string key = keys::Extents(r.ino(), slot);
    std::string v;
    auto found = t.Get(key, &v);
    if (!found.ok()) return found.status();
    ExtentList list;
    if (*found && !list.ParseFromString(v)) return Err(EIO, "corrupt extent list");
    std::vector<proto::Extent> cur(list.extents().begin(), list.extents().end());
    const auto before = ChunksOf(cur);
    for (const auto* n : news) OverlayExtent(cur, *n);
    const auto after = ChunksOf(cur);
    for (uint64_t c : before)
      if (!after.count(c)) t.QueueChunkDeletion(c);
    ExtentList next;
    for (auto& e : cur) *next.add_extents() = std::move(e);
    t.Put(key, next.SerializeAsString());
  }
  for (uint64_t c : r.under_replicated_chunks()) {
    if (c == 0) continue;
    t.Put(keys::Repair(c), "under-replicated");
  }
  a->set_size(std::max(a->size(), r.min_size()));
  if (!r.slot_rewrite()) {
    const int64_t mtime = r.mtime_ns() != 0 ? r.mtime_ns() : t.now;
    a->set_mtime_ns(mtime);
    a->set_ctime_ns(mtime);
  }
  a->set_version(a->version() + 1);
  t.Dirty(r.ino());
  out->attr = *a;
  return Status::Ok();
}

Status Namespace::ApplyAllocChunkIds(Txn& t, const proto::AllocChunkIdsRequest& r, OpOutcome* out) {
  if (r.count() == 0 || r.count() > kMaxAllocChunkIds) return Err(EINVAL, "chunk id count out of range");
  if (r.session_id() == 0) {
    out->first_chunk_id = t.c.next_chunk_id;
    out->chunk_id_count = r.count();
    t.c.next_chunk_id += r.count();
    return Status::Ok();
  }
  constexpr uint64_t kBlock = keys::kChunkIdsPerBlock;
  const uint64_t first_block = (t.c.next_chunk_id + kBlock - 1) / kBlock;
  const uint64_t blocks = (r.count() + kBlock - 1) / kBlock;
  const ChunkIdBlock held{r.session_id(), std::string(kBlock / 8, '\0')};
  for (uint64_t b = first_block; b < first_block + blocks; ++b) t.Put(keys::AllocatedBlock(b), held.Encode());
  out->first_chunk_id = first_block * kBlock;
  out->chunk_id_count = static_cast<uint32_t>(blocks * kBlock);
  t.c.next_chunk_id = (first_block + blocks) * kBlock;
  return Status::Ok();
}

Status Namespace::MarkChunkIdsCommitted(Txn& t, const proto::CommitWriteRequest& r) {
  constexpr uint64_t kBlock = keys::kChunkIdsPerBlock;
  std::map<uint64_t, std::vector<uint64_t>> by_block;
  for (const auto& e : r.extents()) by_block[e.chunk_id() / kBlock].push_back(e.chunk_id() % kBlock);
  for (const auto& [block, bits] : by_block) {
    std::string v;
    auto held = t.Get(keys::AllocatedBlock(block), &v);
    if (!held.ok()) return held.status();
    if (!*held) {
      auto reclaimed = t.Get(keys::ReclaimedBlock(block), &v);
      if (!reclaimed.ok()) return reclaimed.status();
      if (*reclaimed)
        return Err(ESTALE, "chunk ids " + std::to_string(block * kBlock) + ".. were reclaimed when their session ended");
      continue;  // every id of the block was committed already, or it was handed out without a session
    }
    auto parsed = ChunkIdBlock::Parse(v);
    if (!parsed) return Err(EIO, "corrupt chunk id block " + std::to_string(block));
    for (uint64_t bit : bits) parsed->committed[bit / 8] = static_cast<char>(parsed->committed[bit / 8] | (1 << (bit % 8)));
    if (parsed->AllCommitted())
      t.Delete(keys::AllocatedBlock(block));
    else
      t.Put(keys::AllocatedBlock(block), parsed->Encode());
  }
  return Status::Ok();
}

Status Namespace::ApplyReclaimChunkIds(Txn& t, const proto::ReclaimChunkIdsRequest& r, OpOutcome*) {
  constexpr uint64_t kBlock = keys::kChunkIdsPerBlock;
  if (r.blocks_size() > 65536) return Err(EINVAL, "too many chunk id blocks");
  for (uint64_t block : r.blocks()) {
    std::string v;
    auto held = t.Get(keys::AllocatedBlock(block), &v);
    if (!held.ok()) return held.status();
    if (!*held) continue;
    auto parsed = ChunkIdBlock::Parse(v);
    if (!parsed) return Err(EIO, "corrupt chunk id block " + std::to_string(block));
    if (parsed->session != r.session_id()) continue;
    for (uint64_t bit = 0; bit < kBlock; ++bit) {
      const uint64_t id = block * kBlock + bit;
      if (id == 0 || (r.unused_from() != 0 && id >= r.unused_from())) continue;
      if (!(parsed->committed[bit / 8] & (1 << (bit % 8)))) t.QueueChunkDeletion(id);
    }
    t.Delete(keys::AllocatedBlock(block));
    t.Put(keys::ReclaimedBlock(block), std::string());
  }
  return Status::Ok();
}

Status Namespace::ApplySetXattr(Txn& t, const proto::XattrRequest& r, OpOutcome* out) {
  if (auto v = ValidateXattrName(r.name()); !v.ok()) return v;
  if (r.value().size() > kMaxXattrValueBytes) return Err(E2BIG, "xattr value larger than 64 KiB");
  if (r.flags() & ~(kXattrCreate | kXattrReplace)) return Err(EINVAL, "bad xattr flags");
  auto rec = t.Inode(r.ino());
  if (!rec.ok()) return rec.status();
  const std::string key = keys::Xattr(r.ino(), r.name());
  std::string v;
  auto found = t.Get(key, &v);
  if (!found.ok()) return found.status();
  if ((r.flags() & kXattrCreate) && *found) return Err(EEXIST, "xattr " + r.name() + " exists");
  if ((r.flags() & kXattrReplace) && !*found) return Err(ENODATA, "no xattr " + r.name());
  t.Put(key, r.value());
  Touch(*rec, t.now, false);
  t.Dirty(r.ino());
  out->attr = (*rec)->attr();
  return Status::Ok();
}

Status Namespace::ApplyRemoveXattr(Txn& t, const proto::XattrRequest& r, OpOutcome* out) {
  if (auto v = ValidateXattrName(r.name()); !v.ok()) return v;
  auto rec = t.Inode(r.ino());
  if (!rec.ok()) return rec.status();
  const std::string key = keys::Xattr(r.ino(), r.name());
  std::string v;
  auto found = t.Get(key, &v);
  if (!found.ok()) return found.status();
  if (!*found) return Err(ENODATA, "no xattr " + r.name());
  t.Delete(key);
  Touch(*rec, t.now, false);
  t.Dirty(r.ino());
  out->attr = (*rec)->attr();
  return Status::Ok();
}

Status Namespace::ApplyReclaimOrphan(Txn& t, const proto::ReleaseRequest& r, OpOutcome*) {
  std::string v;
  auto found = t.Get(keys::Orphan(r.ino()), &v);
  if (!found.ok()) return found.status();
  if (!*found) return Status::Ok();  // already reclaimed: idempotent
  auto rec = t.Inode(r.ino());
  if (!rec.ok()) return rec.status();
  if ((*rec)->attr().nlink() != 0) return Err(EIO, "orphan with links");
  return DeleteInode(t, r.ino());
}

Status Namespace::ApplyChunksDeleted(Txn& t, const proto::DeleteChunksRequest& r, OpOutcome*) {
  for (const auto& c : r.chunks()) {
    std::string v;
    auto found = t.Get(keys::DeleteQueue(c.chunk_id()), &v);
    if (!found.ok()) return found.status();
    if (!*found) continue;
    t.Delete(keys::DeleteQueue(c.chunk_id()));
    --t.c.deletion_queue;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- reads

namespace {

Result<InodeRecord> ReadInode(rocksdb::DB* db, const rocksdb::ReadOptions& ro, uint64_t ino) {
  if (ino == 0) return Err(EINVAL, "inode 0");
  std::string v;
  auto s = db->Get(ro, keys::Inode(ino), &v);
  if (s.IsNotFound()) return Err(ENOENT, "inode " + std::to_string(ino) + " not found");
  if (!s.ok()) return FromRocks(s, "read inode");
  InodeRecord rec;
  if (!rec.ParseFromString(v)) return Err(EIO, "corrupt inode " + std::to_string(ino));
  return rec;
}

// A consistent view for reads that touch several keys.
class Snapshot {
 public:
  explicit Snapshot(rocksdb::DB* db) : db_(db), snap_(db->GetSnapshot()) { ro.snapshot = snap_; }
  ~Snapshot() { db_->ReleaseSnapshot(snap_); }
  rocksdb::ReadOptions ro;

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
};

std::vector<uint64_t> ScanIds(rocksdb::DB* db, char tag, size_t max) {
  std::vector<uint64_t> ids;
  std::string prefix(1, tag);
  std::string end = keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  for (it->Seek(prefix); it->Valid() && ids.size() < max; it->Next())
    if (it->key().size() == 9) ids.push_back(GetBE64(std::string_view(it->key().data() + 1, 8)));
  return ids;
}

}  // namespace

Result<proto::Attr> Namespace::Lookup(uint64_t parent, const std::string& name) const {
  if (auto v = ValidateName(name); !v.ok()) return v;
  Snapshot snap(db_.get());
  auto dir = ReadInode(db_.get(), snap.ro, parent);
  if (!dir.ok()) return dir.status();
  if (!IsDir(dir->attr())) return Err(ENOTDIR, "inode " + std::to_string(parent) + " is not a directory");
  std::string v;
  auto s = db_->Get(snap.ro, keys::Dirent(parent, name), &v);
  if (s.IsNotFound()) return Err(ENOENT, name + " not found");
  if (!s.ok()) return FromRocks(s, "read dirent");
  if (v.size() != 12) return Err(EIO, "corrupt dirent");
  auto rec = ReadInode(db_.get(), snap.ro, GetBE64(v));
  if (!rec.ok()) return rec.status();
  return rec->attr();
}

Result<proto::Attr> Namespace::GetAttr(uint64_t ino) const {
  auto rec = ReadInode(db_.get(), rocksdb::ReadOptions(), ino);
  if (!rec.ok()) return rec.status();
  return rec->attr();
}

Result<std::string> Namespace::Readlink(uint64_t ino) const {
  auto rec = ReadInode(db_.get(), rocksdb::ReadOptions(), ino);
  if (!rec.ok()) return rec.status();
  if (!S_ISLNK(rec->attr().mode())) return Err(EINVAL, "not a symlink");
  return rec->symlink_target();
}

Status Namespace::Readdir(const proto::ReaddirRequest& req, proto::ReaddirReply* reply) const {
  if (req.after_name().size() > kMaxNameBytes) return Err(ENAMETOOLONG, "cookie name too long");
  Snapshot snap(db_.get());
  auto dir = ReadInode(db_.get(), snap.ro, req.ino());
  if (!dir.ok()) return dir.status();
  if (!IsDir(dir->attr())) return Err(ENOTDIR, "inode " + std::to_string(req.ino()) + " is not a directory");
  uint32_t max = req.max_entries() == 0 ? kDefaultReaddirEntries : std::min(req.max_entries(), kMaxReaddirEntries);
  const std::string prefix = keys::DirPrefix(req.ino());
  const std::string end = keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro = snap.ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  const std::string start = prefix + req.after_name();
  it->Seek(start);
  if (it->Valid() && !req.after_name().empty() && it->key() == start) it->Next();
  uint32_t n = 0;
  bool more = false;
  for (; it->Valid(); it->Next()) {
    if (n == max) {
      more = true;
      break;
    }
    auto value = it->value();
    if (value.size() != 12) return Err(EIO, "corrupt dirent");
    auto* e = reply->add_entries();
    e->set_name(it->key().data() + prefix.size(), it->key().size() - prefix.size());
    e->set_ino(GetBE64(std::string_view(value.data(), 8)));
    e->set_type(GetBE32(std::string_view(value.data() + 8, 4)));
    ++n;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan directory");
  reply->set_complete(!more);
  if (!req.plus() || reply->entries_size() == 0) return Status::Ok();
  // readdirplus: every attribute in one batched lookup, from the same snapshot.
  std::vector<std::string> inode_keys;
  inode_keys.reserve(static_cast<size_t>(reply->entries_size()));
  for (const auto& e : reply->entries()) inode_keys.push_back(keys::Inode(e.ino()));
  std::vector<rocksdb::Slice> slices(inode_keys.begin(), inode_keys.end());
  std::vector<rocksdb::PinnableSlice> values(slices.size());
  std::vector<rocksdb::Status> statuses(slices.size());
  db_->MultiGet(snap.ro, db_->DefaultColumnFamily(), slices.size(), slices.data(), values.data(), statuses.data());
  for (size_t i = 0; i < slices.size(); ++i) {
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read inode of dirent");
    InodeRecord rec;
    if (!rec.ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) return Err(EIO, "corrupt inode");
    *reply->mutable_entries(static_cast<int>(i))->mutable_attr() = rec.attr();
  }
  return Status::Ok();
}

Status Namespace::GetExtents(uint64_t ino, proto::Attr* attr, google::protobuf::RepeatedPtrField<proto::Extent>* extents,
                             uint64_t offset, uint64_t length) const {
  if (offset > (1ull << 62) || length > (1ull << 62)) return Err(EINVAL, "extent range out of bounds");
  Snapshot snap(db_.get());
  auto rec = ReadInode(db_.get(), snap.ro, ino);
  if (!rec.ok()) return rec.status();
  *attr = rec->attr();
  const std::string prefix = keys::ExtentPrefix(ino);
  const bool ranged = length != 0;
  const std::string start = ranged ? keys::Extents(ino, offset / kSlotBytes) : prefix;
  const std::string end =
      ranged ? keys::Extents(ino, (offset + length - 1) / kSlotBytes + 1) : keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro = snap.ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->Seek(start); it->Valid(); it->Next()) {
    ExtentList list;
    if (!list.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      return Err(EIO, "corrupt extent list");
    for (auto& e : *list.mutable_extents()) *extents->Add() = std::move(e);
  }
  return FromRocks(it->status(), "scan extents");
}

Result<std::string> Namespace::GetXattr(uint64_t ino, const std::string& name) const {
  if (auto v = ValidateXattrName(name); !v.ok()) return v;
  Snapshot snap(db_.get());
  auto rec = ReadInode(db_.get(), snap.ro, ino);
  if (!rec.ok()) return rec.status();
  std::string v;
  auto s = db_->Get(snap.ro, keys::Xattr(ino, name), &v);
  if (s.IsNotFound()) return Err(ENODATA, "no xattr " + name);
  if (!s.ok()) return FromRocks(s, "read xattr");
  return v;
}

Result<std::vector<std::string>> Namespace::ListXattr(uint64_t ino) const {
  Snapshot snap(db_.get());
  auto rec = ReadInode(db_.get(), snap.ro, ino);
  if (!rec.ok()) return rec.status();
  std::vector<std::string> names;
  const std::string prefix = keys::XattrPrefix(ino);
  const std::string end = keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro = snap.ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->Seek(prefix); it->Valid(); it->Next()) names.emplace_back(it->key().ToString().substr(prefix.size()));
  if (!it->status().ok()) return FromRocks(it->status(), "scan xattrs");
  return names;
}

Status Namespace::RecordRepair(uint64_t chunk_id, const std::string& reason) {
  if (chunk_id == 0) return Err(EINVAL, "chunk id 0");
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, keys::Repair(chunk_id), reason), "record repair");
}

std::vector<proto::MetaOp> Namespace::ReadOpLog(uint64_t from_seq, size_t max) const {
  std::vector<proto::MetaOp> ops;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log_cf_));
  for (it->Seek(keys::OpLog(from_seq)); it->Valid() && ops.size() < max; it->Next()) {
    proto::MetaOp op;
    if (!op.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) break;
    ops.push_back(std::move(op));
  }
  return ops;
}

bool Namespace::IsOrphan(uint64_t ino) const {
  std::string v;
  return db_->Get(rocksdb::ReadOptions(), keys::Orphan(ino), &v).ok();
}

std::vector<uint64_t> Namespace::Orphans() const { return ScanIds(db_.get(), 'O', SIZE_MAX); }

std::vector<Namespace::HeldChunkIdBlock> Namespace::HeldChunkIdBlocks() const {
  std::vector<HeldChunkIdBlock> held;
  const std::string prefix(1, 'A'), end = keys::PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    if (it->key().size() != 9) continue;
    auto parsed = ChunkIdBlock::Parse(it->value().ToStringView());
    if (parsed) held.push_back({GetBE64(std::string_view(it->key().data() + 1, 8)), parsed->session});
  }
  return held;
}
std::vector<uint64_t> Namespace::DeletionQueue(size_t max) const { return ScanIds(db_.get(), 'Q', max); }
std::vector<uint64_t> Namespace::RepairQueue(size_t max) const { return ScanIds(db_.get(), 'R', max); }

NamespaceStats Namespace::Stats() const {
  // The repair queue is also written outside the op log (ReportBadChunk), so
  // it is counted, boundedly, rather than kept in the counters.
  return NamespaceStats{inodes_.load(), op_seq_.load(), deletion_queue_.load(),
                        ScanIds(db_.get(), 'R', 1000000).size()};
}

}  // namespace spool::meta
