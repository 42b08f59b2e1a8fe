#include "brickd/chunk_store.h"

#include <rocksdb/convenience.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#include <linux/magic.h>

#include <algorithm>
#include <future>
#include <unordered_map>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/rocksdb_crc32c.h"

namespace spool::brick {
namespace {

constexpr char kMetaFamily[] = "meta";
constexpr char kDataFamily[] = "data";
// The bytes of a chunk are one value under its key...
constexpr uint8_t kFormatWhole = 1;
// ...or, for a chunk of more than one block, one value per block under
// key + BE32(block), with each block's CRC32C in the metadata record: a
// 4 KiB read of a VM image then reads, decompresses and verifies one block,
// not the whole 1 MiB chunk.
constexpr uint8_t kFormatBlocks = 2;
constexpr uint32_t kBlockBytes = 64u << 10;
constexpr size_t kKeyBytes = 12;
constexpr size_t kMetaValueBytes = 9;  // format, crc, length; then the block CRCs

uint32_t BlockCount(uint32_t length) { return (length + kBlockBytes - 1) / kBlockBytes; }
bool StoredInBlocks(uint32_t length) { return length > kBlockBytes; }
uint32_t BlockLength(uint32_t length, uint32_t block) {
  return std::min(kBlockBytes, length - block * kBlockBytes);
}

// What a put of one chunk adds to a WriteBatch: bytes, record, both keys.
uint64_t PutBytes(const ChunkWrite& c, const std::string& record) {
  return c.bytes.size() + kKeyBytes * 2 + record.size();
}

std::string EncodeMeta(uint32_t crc, uint32_t length, const std::vector<uint32_t>& block_crcs) {
  std::string v;
  v.reserve(kMetaValueBytes + 4 * block_crcs.size());
  v.push_back(static_cast<char>(block_crcs.empty() ? kFormatWhole : kFormatBlocks));
  PutBE32(v, crc);
  PutBE32(v, length);
  for (uint32_t c : block_crcs) PutBE32(v, c);
  return v;
}

std::optional<ChunkRecord> DecodeMeta(uint32_t pg, uint64_t chunk_id, std::string_view v) {
  if (v.size() < kMetaValueBytes) return std::nullopt;
  ChunkRecord r;
  r.info = ChunkInfo{chunk_id, pg, GetBE32(v.substr(1, 4)), GetBE32(v.substr(5, 4))};
  const auto format = static_cast<uint8_t>(v[0]);
  if (format == kFormatWhole) return v.size() == kMetaValueBytes ? std::optional(r) : std::nullopt;
  if (format != kFormatBlocks || !StoredInBlocks(r.info.length) ||
      v.size() != kMetaValueBytes + 4 * size_t{BlockCount(r.info.length)})
    return std::nullopt;
  for (size_t at = kMetaValueBytes; at < v.size(); at += 4) r.block_crcs.push_back(GetBE32(v.substr(at, 4)));
  return r;
}

std::string BlockKey(uint32_t pg, uint64_t chunk_id, uint32_t block) {
  std::string key = ChunkKey(pg, chunk_id);
  PutBE32(key, block);
  return key;
}

std::string ChunkName(uint32_t pg, uint64_t chunk_id) {
  return "chunk " + std::to_string(chunk_id) + " (pg " + std::to_string(pg) + ")";
}

Status CorruptCopy(uint32_t pg, uint64_t chunk_id, const std::string& why) {
  return Status::Error(EBADMSG, "copy of " + ChunkName(pg, chunk_id) + " on this brick is corrupt: " + why);
}

Status ValidateChunkAddress(uint32_t pg, uint64_t chunk_id) {
  if (pg >= kMaxPgCount)
    return Status::Error(EINVAL, ChunkName(pg, chunk_id) + ": pg out of range (max " +
                                     std::to_string(kMaxPgCount - 1) + ")");
  return Status::Ok();
}

std::optional<rocksdb::CompressionType> CompressionNamed(const std::string& name) {
  if (name == "zstd") return rocksdb::kZSTD;
  if (name == "lz4") return rocksdb::kLZ4Compression;
  if (name == "none") return rocksdb::kNoCompression;
  return std::nullopt;
}

}  // namespace

std::string ChunkKey(uint32_t pg, uint64_t chunk_id) {
  std::string key;
  key.reserve(kKeyBytes);
  PutBE32(key, pg);
  PutBE64(key, chunk_id);
  return key;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  int code = EIO;
  if (s.IsNoSpace())
    code = ENOSPC;
  else if (s.IsNotFound())
    code = ENOENT;
  else if (s.IsCorruption())
    code = EBADMSG;
  else if (s.IsBusy() || s.IsTryAgain())
    code = EAGAIN;
  else if (s.IsTimedOut())
    code = ETIMEDOUT;
  else if (s.IsShutdownInProgress())
    code = ESHUTDOWN;
  else if (s.IsInvalidArgument())
    code = EINVAL;
  return Status::Error(code, what + ": " + s.ToString());
}

Result<SpaceInfo> DiskSpace(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return Status::Error(errno, "statvfs " + path);
  SpaceInfo info;
  info.capacity_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
  info.free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  uint64_t free_all = static_cast<uint64_t>(st.f_bfree) * st.f_frsize;
  info.used_bytes = info.capacity_bytes > free_all ? info.capacity_bytes - free_all : 0;
  return info;
}

Result<SpaceInfo> ChunkSpace(const std::string& path, uint64_t reserve_bytes) {
  auto space = DiskSpace(path);
  if (!space.ok()) return space;
  space->free_bytes = space->free_bytes > reserve_bytes ? space->free_bytes - reserve_bytes : 0;
  space->used_bytes = space->capacity_bytes - std::min(space->free_bytes, space->capacity_bytes);
  return space;
}

ChunkStore::ChunkStore(ChunkStoreOptions options) : options_(std::move(options)) {}

// Tells the store how far the data family is flushed (durable).
class ChunkStore::FlushListener : public rocksdb::EventListener {
 public:
  explicit FlushListener(ChunkStore* store) : store_(store) {}
  void OnFlushCompleted(rocksdb::DB*, const rocksdb::FlushJobInfo& info) override {
    // Every background batch ends with a data-family entry, and with
    // atomic_flush the meta family is flushed up to the same point.
    if (info.cf_name == kDataFamily) store_->MarkDurable(info.largest_seqno);
  }

 private:
  ChunkStore* const store_;  // outlives the database
};

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(const ChunkStoreOptions& options) {
  std::unique_ptr<ChunkStore> store(new ChunkStore(options));
  RocksDbUsesFastCrc32c();

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  // On tmpfs, preallocating a WAL (about 1.1 x the write buffer) takes that
  // much memory at once and counts as used space: a small tmpfs brick would
  // look full after its first put. Preallocation only helps real disks.
  struct statfs fs {};
  bool on_tmpfs = ::statfs(options.db_dir.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
  if (!on_tmpfs) {
    std::string parent = options.db_dir.substr(0, options.db_dir.find_last_of('/'));
    on_tmpfs = !parent.empty() && ::statfs(parent.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
  }
  db_options.allow_fallocate = options.allow_fallocate && !on_tmpfs;
  db_options.max_background_jobs = 2;
  db_options.listeners.push_back(std::make_shared<FlushListener>(store.get()));
  // A memtable flush writes a 64 MiB blob file; synced only at its end, the
  // kernel then writes all of it at once and the WAL syncs of deliveries
  // queue behind it. Writing back every 1 MiB as it goes smooths that
  // (maildir deliver p99 with 8 threads: 48-50 ms -> 38-44 ms, two pairs).
  db_options.bytes_per_sync = 1 << 20;
  // A WAL file can only go once every family with data in it is flushed.
  // The small "meta" family would otherwise keep every WAL (about as many
  // bytes as the chunks themselves) until max_total_wal_size: the disk would
  // hold each chunk twice. Flushing the families together frees the WAL as
  // soon as the data memtable is flushed.
  db_options.atomic_flush = true;
  db_options.keep_log_file_num = 5;
  // A clean shutdown flushes memtables, so a restart need not replay a large WAL.
  db_options.avoid_flush_during_shutdown = false;
  // RocksDB advises the kernel that every table and blob file is read at
  // random, which turns off readahead. A PG's chunks lie in runs in each blob
  // file (a flush writes them in key order), so a bulk read of a PG in key
  // order (catch-up, rebuild, scrub) reads runs: with readahead a run is a few
  // large reads instead of one small random read per chunk.
  db_options.advise_random_on_open = false;

  rocksdb::ColumnFamilyOptions meta_options;
  meta_options.write_buffer_size = std::min<uint64_t>(options.write_buffer_size, 16ull << 20);
  // Every put first looks up the chunks it writes (ReadExisting), nearly
  // always new ids: a whole-key bloom filter on the memtable answers those
  // without a search of the skiplist.
  meta_options.memtable_whole_key_filtering = true;
  meta_options.memtable_prefix_bloom_size_ratio = 0.02;
  rocksdb::BlockBasedTableOptions table_options;
  table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  meta_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));

  rocksdb::ColumnFamilyOptions data_options;
  // A memtable flush writes up to two write buffers into a new blob file
  // before the WAL holding the same bytes can go: that must fit in the
  // reserve, or a full brick cannot flush (nor compact away its deletes)
  // and RocksDB stops with a background error.
  data_options.write_buffer_size =
      std::max<uint64_t>(1ull << 20, std::min<uint64_t>(options.write_buffer_size, options.reserve_bytes / 4));
  data_options.enable_blob_files = true;
  data_options.min_blob_size = 0;  // every chunk goes to a blob file, however small
  data_options.blob_file_size = options.blob_file_size;
  data_options.enable_blob_garbage_collection = true;
  data_options.blob_garbage_collection_age_cutoff = 0.25;
  const auto compression = CompressionNamed(options.compression);
  if (!compression)
    return Status::Error(EINVAL, "unknown compression \"" + options.compression + "\" (zstd, lz4 or none)");
  auto supported = rocksdb::GetSupportedCompressions();
  data_options.blob_compression_type = *compression;
  if (*compression != rocksdb::kNoCompression &&
      std::find(supported.begin(), supported.end(), *compression) == supported.end()) {
    SPOOL_LOG_WARN("chunkstore compression={} unsupported by this RocksDB; chunks stored uncompressed",
                   options.compression);
    data_options.blob_compression_type = rocksdb::kNoCompression;
  }
  data_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kMetaFamily, meta_options},
      {kDataFamily, data_options},
  };
  rocksdb::DB* db = nullptr;
  auto s = rocksdb::DB::Open(db_options, options.db_dir, families, &store->handles_, &db);
  if (!s.ok()) return FromRocks(s, "open chunk store " + options.db_dir);
  store->db_.reset(db);
  store->meta_cf_ = store->handles_[1];
  store->data_cf_ = store->handles_[2];
  store->committer_ = std::thread([s = store.get()] { s->CommitLoop(); });
  return store;
}

ChunkStore::~ChunkStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  if (db_) {
    // With a WAL, RocksDB does not flush on close; flushing here makes the
    // next start fast (no WAL replay) and leaves every chunk in blob files.
    const uint64_t written = db_->GetLatestSequenceNumber();
    auto flushed = db_->Flush(rocksdb::FlushOptions(), handles_);
    if (!flushed.ok()) SPOOL_LOG_WARN("chunkstore flush_on_close error=\"{}\"", flushed.ToString());
    if (flushed.ok()) MarkDurable(written);
    FailUnflushed(Status::Error(ESHUTDOWN, "chunk store closed before the write was flushed"));
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    auto s = db_->Close();
    if (!s.ok()) SPOOL_LOG_WARN("chunkstore close error=\"{}\"", s.ToString());
    db_.reset();
  }
}

void ChunkStore::Put(std::vector<ChunkWrite> chunks, Done done, Priority priority, Done written) {
  auto op = std::make_unique<WriteOp>();
  op->background = priority == Priority::kBackground;
  if (op->background) op->written = std::move(written);
  op->done = std::move(done);
  if (chunks.empty()) return Answer(*op, Status::Ok());
  for (auto& c : chunks) {
    const auto& info = c.info;
    if (auto s = ValidateChunkAddress(info.pg, info.chunk_id); !s.ok()) return Answer(*op, s);
    if (c.bytes.size() > kMaxChunkBytes)
      return Answer(*op, Status::Error(EINVAL, ChunkName(info.pg, info.chunk_id) + ": " + std::to_string(c.bytes.size()) +
                                            " bytes exceed the chunk limit of " + std::to_string(kMaxChunkBytes)));
    if (c.bytes.size() != info.length)
      return Answer(*op, Status::Error(EINVAL, ChunkName(info.pg, info.chunk_id) + ": length says " +
                                            std::to_string(info.length) + " but " + std::to_string(c.bytes.size()) +
                                            " bytes came"));
    uint32_t crc = Crc32c(c.bytes);
    if (crc != info.crc32c)
      return Answer(*op, Status::Error(EBADMSG, ChunkName(info.pg, info.chunk_id) + ": checksum mismatch (client says " +
                                             std::to_string(info.crc32c) + ", bytes have " + std::to_string(crc) +
                                             "); not stored"));
    // The record (with the block CRCs) is made here, on the caller's thread,
    // not on the one committer thread every put goes through.
    std::vector<uint32_t> block_crcs;
    if (StoredInBlocks(info.length))
      for (uint32_t b = 0; b < BlockCount(info.length); ++b)
        block_crcs.push_back(Crc32c(c.bytes.data() + size_t{b} * kBlockBytes, BlockLength(info.length, b)));
    op->put_records.push_back(EncodeMeta(info.crc32c, info.length, block_crcs));
    op->bytes += PutBytes(c, op->put_records.back());
  }
  auto space = DiskSpace(options_.db_dir);
  if (!space.ok()) return Answer(*op, space.status());
  // A repair or move copy keeps twice the reserve free: on a brick that was
  // full, the space deletes free comes back only once blob GC has copied the
  // live chunks out of partly dead blob files, which needs room; repair
  // filling it first would keep the brick full (and clients' mail comes first).
  if (op->background && space->free_bytes < 2 * options_.reserve_bytes + op->bytes)
    return Answer(*op, Status::Error(ENOSPC, "brick is nearly full: " + std::to_string(space->free_bytes) +
                                          " bytes free; repair copies keep twice the reserve (" +
                                          std::to_string(options_.reserve_bytes) + ") free"));
  if (space->free_bytes < options_.reserve_bytes + op->bytes) {
    space_low_ = true;
    if (!refusing_for_space_.exchange(true))  // logged once per episode
      SPOOL_LOG_WARN("chunkstore full: refusing puts free={} reserve={} put={} dir={}", space->free_bytes,
                     options_.reserve_bytes, op->bytes, options_.db_dir);
    return Answer(*op, Status::Error(ENOSPC, "brick is full: " + std::to_string(space->free_bytes) +
                                          " bytes free, reserve is " + std::to_string(options_.reserve_bytes)));
  }
  if (space->free_bytes >= options_.reserve_bytes + kMaxChunkBytes && refusing_for_space_.exchange(false))
    SPOOL_LOG_INFO("chunkstore accepting puts again free={} reserve={}", space->free_bytes, options_.reserve_bytes);
  op->puts = std::move(chunks);
  if (op->background && op->bytes > options_.max_background_batch_bytes)
    EnqueueAll(SplitBackgroundPut(std::move(op)));
  else
    Enqueue(std::move(op));
}

namespace {
// Answers a caller once, after `n` parts: with the first error, if any.
class JoinedAnswer {
 public:
  explicit JoinedAnswer(ChunkStore::Done done) : done_(std::move(done)) {}
  void Expect(size_t n) { left_ = n; }
  ChunkStore::Done Part(const std::shared_ptr<JoinedAnswer>& self) {
    return [self](const Status& s) {
      std::unique_lock lock(self->mu_);
      if (!s.ok() && self->first_error_.ok()) self->first_error_ = s;
      if (--self->left_ > 0) return;
      const Status result = self->first_error_;
      lock.unlock();
      if (self->done_) self->done_(result);
    };
  }

 private:
  std::mutex mu_;  // guards left_, first_error_
  size_t left_ = 0;
  Status first_error_;
  ChunkStore::Done done_;
};
}  // namespace

void ChunkStore::Answer(WriteOp& op, const Status& s) {
  if (op.written) op.written(s);
  op.done(s);
}

std::vector<std::unique_ptr<ChunkStore::WriteOp>> ChunkStore::SplitBackgroundPut(std::unique_ptr<WriteOp> op) {
  auto done = std::make_shared<JoinedAnswer>(std::move(op->done));
  auto written = std::make_shared<JoinedAnswer>(std::move(op->written));
  std::vector<std::unique_ptr<WriteOp>> pieces;
  for (size_t i = 0; i < op->puts.size(); ++i) {
    const uint64_t bytes = PutBytes(op->puts[i], op->put_records[i]);
    if (pieces.empty() || pieces.back()->bytes + bytes > options_.max_background_batch_bytes) {
      pieces.push_back(std::make_unique<WriteOp>());
      pieces.back()->background = true;
      pieces.back()->done = done->Part(done);
      pieces.back()->written = written->Part(written);
    }
    auto& piece = *pieces.back();
    piece.puts.push_back(std::move(op->puts[i]));
    piece.put_records.push_back(std::move(op->put_records[i]));
    piece.bytes += bytes;
  }
  done->Expect(pieces.size());
  written->Expect(pieces.size());
  return pieces;
}

void ChunkStore::Delete(std::vector<ChunkInfo> chunks, Done done) {
  for (auto& c : chunks)
    if (auto s = ValidateChunkAddress(c.pg, c.chunk_id); !s.ok()) return done(s);
  if (chunks.empty()) return done(Status::Ok());
  auto op = std::make_unique<WriteOp>();
  op->is_delete = true;
  op->background = true;
  op->bytes = chunks.size() * kKeyBytes * 2;
  op->deletes = std::move(chunks);
  op->done = std::move(done);
  Enqueue(std::move(op));
}

void ChunkStore::Enqueue(std::unique_ptr<WriteOp> op) {
  std::vector<std::unique_ptr<WriteOp>> ops;
  ops.push_back(std::move(op));
  EnqueueAll(std::move(ops));
}

void ChunkStore::EnqueueAll(std::vector<std::unique_ptr<WriteOp>> ops) {
  if (ops.empty()) return;
  Status refused;
  {
    std::lock_guard lock(mu_);
    uint64_t bytes = 0;
    for (const auto& op : ops) bytes += op->bytes;
    if (stopping_) {
      refused = Status::Error(ESHUTDOWN, "chunk store is closing");
    } else if (!ops.front()->is_delete && queued_bytes_ > 0 && queued_bytes_ + bytes > options_.max_queued_bytes) {
      // Deletes are always accepted: they are how a full brick gets room back.
      refused = Status::Error(EAGAIN, "brick write queue is full; retry");
    } else {
      queued_bytes_ += bytes;
      for (auto& op : ops) (op->background ? background_queue_ : queue_).push_back(std::move(op));
      ops.clear();
    }
  }
  // Answered outside the lock; the pieces of a split put answer its caller once.
  for (auto& op : ops) Answer(*op, refused);
  if (refused.ok()) queue_cv_.notify_one();
}

namespace {
// A compaction after deletes on a full disk that failed is tried again this
// often, this many times in a row.
constexpr int kCompactRetries = 12;
constexpr auto kCompactRetryDelay = std::chrono::seconds(5);
// Background batches stay small until no client put came for this long.
constexpr auto kForegroundQuietAfter = std::chrono::milliseconds(200);
// A background put is made durable (a memtable flush is asked for) at most
// this long after it was written, if the memtable has not filled by then.
constexpr auto kBackgroundDurableWithin = std::chrono::milliseconds(1000);
}  // namespace

void ChunkStore::CommitLoop() {
  PaceBlobGc(false);  // before RocksDB's first compaction on a disk that may be nearly full
  int failed_compactions = 0;  // in a row
  for (;;) {
    if (compact_pending_ && std::chrono::steady_clock::now() >= compact_at_) {
      compact_pending_ = false;
      auto s = Compact();
      last_compact_ = std::chrono::steady_clock::now();
      auto space = DiskSpace(options_.db_dir);
      SPOOL_LOG_INFO("chunkstore compacted after deletes on a full disk free={} status=\"{}\"",
                     space.ok() ? space->free_bytes : 0, s.ToString());
      failed_compactions = s.ok() ? 0 : failed_compactions + 1;
      if (!s.ok() && failed_compactions <= kCompactRetries) {
        // Most likely RocksDB stopped on a background error (out of space):
        // it refuses compactions until resumed. Try again in a while; the
        // deletes are in, only their space is not back yet.
        if (auto resumed = db_->Resume(); !resumed.ok())
          SPOOL_LOG_WARN("chunkstore resume error=\"{}\"", resumed.ToString());
        compact_pending_ = true;
        compact_at_ = compact_deadline_ = last_compact_ + kCompactRetryDelay;
      }
    }
    std::vector<std::unique_ptr<WriteOp>> ops;
    {
      std::unique_lock lock(mu_);
      auto ready = [&] { return stopping_ || !queue_.empty() || !background_queue_.empty(); };
      auto wake_at = std::chrono::steady_clock::time_point::max();
      if (compact_pending_) wake_at = compact_at_;
      if (auto due = FlushDueAt()) wake_at = std::min(wake_at, *due);
      if (blob_gc_paused_)
        wake_at = std::min(wake_at, gc_paused_for_space_ ? next_gc_space_check_
                                                         : last_background_ + options_.blob_gc_resume_after);
      if (wake_at != std::chrono::steady_clock::time_point::max()) {
        if (!queue_cv_.wait_until(lock, wake_at, ready)) {  // time to compact, flush or resume blob GC
          lock.unlock();
          PaceBlobGc(false);
          RequestFlushIfDue();
          continue;
        }
      } else {
        queue_cv_.wait(lock, ready);
      }
      if (queue_.empty() && background_queue_.empty()) return;  // stopping, and every write answered
      uint64_t bytes = 0;
      while (!queue_.empty() && (ops.empty() || bytes + queue_.front()->bytes <= options_.max_batch_bytes)) {
        bytes += queue_.front()->bytes;
        ops.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // Then background writes, in order: at least one (so that a busy
      // foreground never starves them), at most a slice; larger batches
      // (fewer syncs: a faster rebuild) while no client writes.
      const auto now = std::chrono::steady_clock::now();
      if (!ops.empty()) last_foreground_ = now;
      const uint64_t slice = now - last_foreground_ < kForegroundQuietAfter ? options_.max_background_batch_bytes
                                                                             : options_.idle_background_batch_bytes;
      uint64_t background_bytes = 0;
      while (!background_queue_.empty() &&
             (background_bytes == 0 || background_bytes + background_queue_.front()->bytes <= slice)) {
        background_bytes += background_queue_.front()->bytes;
        ops.push_back(std::move(background_queue_.front()));
        background_queue_.pop_front();
      }
      queued_bytes_ -= bytes + background_bytes;
    }
    PaceBlobGc(std::any_of(ops.begin(), ops.end(), [](const auto& op) { return op->background && !op->is_delete; }));
    CommitBatch(ops);
    RequestFlushIfDue();  // also while writes keep coming
  }
}

void ChunkStore::PaceBlobGc(bool background_in_batch) {
  const auto now = std::chrono::steady_clock::now();
  if (background_in_batch) last_background_ = now;
  const char* reason = nullptr;
  if (background_in_batch || (blob_gc_paused_ && now - last_background_ < options_.blob_gc_resume_after)) {
    reason = "background-writes";
  } else if (now >= next_gc_space_check_ || gc_paused_for_space_) {
    // RocksDB's own blob GC (in every compaction it runs) copies the live
    // chunks of the oldest quarter of the blob files before it deletes them.
    // On a nearly full disk that copy runs out of space, RocksDB stops with a
    // background error, and a compaction that would drop deleted chunks is
    // then refused too: the brick could never get its space back. So it runs
    // only while the copy fits (Compact() collects what it can when there is less).
    next_gc_space_check_ = now + std::chrono::seconds(1);
    uint64_t needed = options_.reserve_bytes + BlobUsage().live / 4;
    if (gc_paused_for_space_) needed += options_.reserve_bytes / 2;  // resume with a margin: no flapping
    auto space = DiskSpace(options_.db_dir);
    gc_paused_for_space_ = space.ok() && space->free_bytes < needed;
    if (gc_paused_for_space_) reason = "disk-space-low";
  }
  const bool pause = reason != nullptr;
  if (pause == blob_gc_paused_) return;
  auto s = db_->SetOptions(data_cf_, {{"enable_blob_garbage_collection", pause ? "false" : "true"}});
  if (!s.ok()) {
    SPOOL_LOG_WARN("chunkstore blob_gc_{} error=\"{}\"", pause ? "pause" : "resume", s.ToString());
    return;
  }
  blob_gc_paused_ = pause;
  SPOOL_LOG_INFO("chunkstore blob_gc={} reason={}", pause ? "paused" : "resumed", pause ? reason : "ended");
}

std::unordered_map<std::string, ChunkStore::Existing> ChunkStore::ReadExisting(
    const std::vector<std::unique_ptr<WriteOp>>& ops) {
  std::unordered_map<std::string, Existing> existing;
  for (const auto& op : ops) {
    for (const auto& c : op->puts) existing.try_emplace(ChunkKey(c.info.pg, c.info.chunk_id));
    for (const auto& c : op->deletes) existing.try_emplace(ChunkKey(c.pg, c.chunk_id));
  }
  if (existing.empty()) return existing;
  std::vector<rocksdb::Slice> keys;
  std::vector<Existing*> entries;
  keys.reserve(existing.size());
  entries.reserve(existing.size());
  for (auto& [key, e] : existing) {
    keys.emplace_back(key);
    entries.push_back(&e);
  }
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), meta_cf_, keys.size(), keys.data(), values.data(), statuses.data());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto& e = *entries[i];
    const auto& v = values[i];
    if (statuses[i].ok()) {
      // A malformed record counts as absent: the put rewrites it.
      if (auto record = DecodeMeta(0, 0, v.ToStringView())) {
        e.crc32c = record->info.crc32c;
        e.blocks = static_cast<uint32_t>(record->block_crcs.size());
      }
    } else if (!statuses[i].IsNotFound() && !statuses[i].IsCorruption()) {
      e.error = FromRocks(statuses[i], "read metadata of " + ChunkName(GetBE32(keys[i].ToStringView().substr(0, 4)),
                                                                        GetBE64(keys[i].ToStringView().substr(4, 8))));
    }
  }
  return existing;
}

void ChunkStore::CommitBatch(std::vector<std::unique_ptr<WriteOp>>& ops) {
  rocksdb::WriteBatch batch;     // synced through the WAL: clients' puts, deletes
  rocksdb::WriteBatch unlogged;  // background puts: durable at the next flush
  std::vector<Status> results(ops.size());
  // What the database holds for every chunk put in this batch (one batched
  // lookup), and what earlier ops of the batch did to it (a put's CRC, or
  // nullopt for a delete), so that a later op sees an earlier one's chunk.
  auto existing = ReadExisting(ops);
  std::unordered_map<std::string, std::optional<uint32_t>> in_batch;
  // Block keys a put of this batch wrote (chunk key -> blocks), for a later delete.
  std::unordered_map<std::string, uint32_t> blocks_in_batch;
  bool had_deletes = false;
  for (size_t i = 0; i < ops.size(); ++i) {
    auto& op = *ops[i];
    if (op.is_delete) {
      had_deletes = true;
      for (auto& c : op.deletes) {
        auto key = ChunkKey(c.pg, c.chunk_id);
        batch.Delete(meta_cf_, key);
        batch.Delete(data_cf_, key);
        uint32_t blocks = existing[key].blocks;
        if (auto b = blocks_in_batch.find(key); b != blocks_in_batch.end()) blocks = std::max(blocks, b->second);
        for (uint32_t b = 0; b < blocks; ++b) batch.Delete(data_cf_, BlockKey(c.pg, c.chunk_id, b));
        in_batch[key] = std::nullopt;
      }
      continue;
    }
    // All or nothing: check every chunk of the op before recording any.
    std::unordered_map<std::string, uint32_t> op_puts;
    for (auto& c : op.puts) {
      auto key = ChunkKey(c.info.pg, c.info.chunk_id);
      std::optional<uint32_t> existing_crc;
      if (auto p = op_puts.find(key); p != op_puts.end()) {
        existing_crc = p->second;
      } else if (auto b = in_batch.find(key); b != in_batch.end()) {
        existing_crc = b->second;
      } else {
        const auto& e = existing[key];
        if (!e.error.ok()) {
          results[i] = e.error;
          break;
        }
        existing_crc = e.crc32c;
      }
      // Same content again (a retried or repeated put) overwrites, which also
      // repairs a copy whose bytes went bad. Different content under the same
      // id would make replicas diverge: refused.
      if (existing_crc && *existing_crc != c.info.crc32c) {
        results[i] = Status::Error(EEXIST, ChunkName(c.info.pg, c.info.chunk_id) +
                                               " already exists with different content (chunks are immutable)");
        break;
      }
      op_puts[key] = c.info.crc32c;
    }
    if (!results[i].ok()) continue;
    // Background puts go in the unlogged batch; in each batch every chunk's
    // entries end with a data-family one (FlushListener relies on it).
    auto& target = op.background ? unlogged : batch;
    for (size_t j = 0; j < op.puts.size(); ++j) {
      const auto& c = op.puts[j];
      auto key = ChunkKey(c.info.pg, c.info.chunk_id);
      target.Put(meta_cf_, key, op.put_records[j]);
      if (!StoredInBlocks(c.info.length)) {
        target.Put(data_cf_, key, c.bytes);
      } else {
        const uint32_t blocks = BlockCount(c.info.length);
        // The same chunk may be here stored whole (by an older brickd).
        if (existing[key].crc32c) target.Delete(data_cf_, key);
        for (uint32_t b = 0; b < blocks; ++b)
          target.Put(data_cf_, BlockKey(c.info.pg, c.info.chunk_id, b),
                     rocksdb::Slice(c.bytes.data() + size_t{b} * kBlockBytes, BlockLength(c.info.length, b)));
        blocks_in_batch[key] = blocks;
      }
      in_batch[key] = c.info.crc32c;
    }
  }

  Status resume_status;
  if (needs_resume_ && (batch.Count() > 0 || unlogged.Count() > 0)) {
    // A previous write failed with a background error (a full disk): the
    // database refuses writes until resumed, which works once there is room.
    auto s = db_->Resume();
    if (s.ok()) {
      needs_resume_ = false;
      SPOOL_LOG_INFO("chunkstore resumed after error");
    } else {
      resume_status = FromRocks(s, "resume chunk store");
    }
  }
  auto write = [&](rocksdb::WriteBatch& b, bool sync) {
    if (b.Count() == 0 || !resume_status.ok()) return resume_status;
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    write_options.disableWAL = !sync;
    auto s = db_->Write(write_options, &b);
    if (s.ok()) return Status::Ok();
    needs_resume_ = true;
    SPOOL_LOG_ERROR("chunkstore write failed ops={} logged={} error=\"{}\"", ops.size(), sync, s.ToString());
    return FromRocks(s, "write chunks");
  };
  // Unlogged first: a delete in the same batch of a chunk put here wins.
  const Status unlogged_status = write(unlogged, false);
  const uint64_t unlogged_seq = db_->GetLatestSequenceNumber();
  const Status write_status = write(batch, true);
  if (write_status.ok() && batch.Count() > 0) ++synced_batches_;
  // Get's cached records of these chunks may no longer be what is stored.
  for (auto& op : ops) {
    for (const auto& c : op->deletes) records_.Forget(c.pg, c.chunk_id);
    for (const auto& c : op->puts) records_.Forget(c.info.pg, c.info.chunk_id);
  }
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ops.size(); ++i) {
    auto& op = *ops[i];
    const bool in_unlogged = op.background && !op.is_delete;
    Status s = results[i].ok() ? (in_unlogged ? unlogged_status : write_status) : results[i];
    if (s.code() == ENOSPC) space_low_ = true;
    if (!in_unlogged || !s.ok()) {
      Answer(op, s);
      continue;
    }
    if (op.written) op.written(s);
    bool flushed_already;  // a flush raced this loop
    {
      std::lock_guard lock(unflushed_mu_);
      flushed_already = unlogged_seq <= durable_seq_;
      if (!flushed_already) unflushed_.push_back(Unflushed{unlogged_seq, std::move(op.done), now});
    }
    if (flushed_already) op.done(s);
  }
  // On a full (or nearly full) disk, deletes only give space back once
  // compaction drops the deleted keys and blob GC removes their blob files.
  // Deletes come in bursts (meta drains its queue in batches): compact once
  // the burst has ended, at most a few seconds after its first batch.
  if (had_deletes && write_status.ok()) {
    bool low = space_low_.exchange(false);
    if (!low) {
      auto space = DiskSpace(options_.db_dir);
      low = space.ok() && space->free_bytes < 2 * options_.reserve_bytes;
    }
    if (low) {
      auto now = std::chrono::steady_clock::now();
      if (!compact_pending_) {
        // The first deletes after a quiet second compact at once (before the
        // next queued write); later ones of the same burst wait for its end.
        compact_deadline_ = now + std::chrono::seconds(5);
        compact_at_ = now - last_compact_ >= std::chrono::seconds(1) ? now : now + std::chrono::seconds(1);
      } else {
        compact_at_ = std::min(now + std::chrono::seconds(1), compact_deadline_);
      }
      compact_pending_ = true;
    }
  }
}

std::optional<std::chrono::steady_clock::time_point> ChunkStore::FlushDueAt() {
  std::lock_guard lock(unflushed_mu_);
  if (unflushed_.empty()) return std::nullopt;
  return std::max(unflushed_.front().written_at, last_flush_request_) + kBackgroundDurableWithin;
}

void ChunkStore::RequestFlushIfDue() {
  auto due = FlushDueAt();
  const auto now = std::chrono::steady_clock::now();
  if (!due || *due > now) return;
  last_flush_request_ = now;
  RequestFlush();
}

void ChunkStore::RequestFlush() {
  rocksdb::FlushOptions options;
  options.wait = false;  // FlushListener answers the puts when it is done
  if (auto s = db_->Flush(options, handles_); !s.ok()) {
    // RocksDB stopped on an error (a full disk, say): no flush will come.
    SPOOL_LOG_WARN("chunkstore flush_background_puts error=\"{}\"", s.ToString());
    FailUnflushed(FromRocks(s, "flush background puts"));
  }
}

void ChunkStore::FailUnflushed(const Status& error) {
  // Not durable, and no telling when they will be: their callers hear it
  // (repair pulls them again) rather than wait.
  std::deque<Unflushed> failed;
  {
    std::lock_guard lock(unflushed_mu_);
    failed.swap(unflushed_);
  }
  for (auto& u : failed) u.done(error);
}

void ChunkStore::MarkDurable(uint64_t flushed_seq) {
  std::vector<Done> durable;
  {
    std::lock_guard lock(unflushed_mu_);
    durable_seq_ = std::max(durable_seq_, flushed_seq);
    while (!unflushed_.empty() && unflushed_.front().seq <= durable_seq_) {
      durable.push_back(std::move(unflushed_.front().done));
      unflushed_.pop_front();
    }
  }
  for (auto& done : durable) done(Status::Ok());
}

Status ChunkStore::FlushBackground() {
  const uint64_t written = db_->GetLatestSequenceNumber();
  auto s = db_->Flush(rocksdb::FlushOptions(), handles_);
  if (s.ok()) {
    MarkDurable(written);
    return Status::Ok();
  }
  auto error = FromRocks(s, "flush background puts");
  FailUnflushed(error);
  return error;
}

ChunkStore::BlobBytes ChunkStore::BlobUsage() {
  uint64_t total = 0, garbage = 0;
  db_->GetIntProperty(data_cf_, rocksdb::DB::Properties::kLiveBlobFileSize, &total);
  db_->GetIntProperty(data_cf_, rocksdb::DB::Properties::kLiveBlobFileGarbageSize, &garbage);
  return {total > garbage ? total - garbage : 0, garbage};
}

Status ChunkStore::Compact() {
  // First drop deleted keys without moving any blob: blob files left with
  // no live chunk are removed, and this needs little space. Then collect
  // garbage in partly dead blob files, which copies their live chunks to new
  // files before removing them: all at once if the disk has room for every
  // live chunk, else the oldest quarter of the files at a time, so that a
  // nearly full disk never runs out in the middle (which would stop RocksDB).
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  options.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kDisable;
  for (auto* cf : {meta_cf_, data_cf_}) {
    auto s = db_->CompactRange(options, cf, nullptr, nullptr);
    if (!s.ok()) return FromRocks(s, "compact chunk store");
  }
  options.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
  for (int round = 0; round < 8; ++round) {
    const auto [live, garbage_bytes] = BlobUsage();
    if (garbage_bytes == 0) break;
    auto space = DiskSpace(options_.db_dir);
    if (!space.ok()) return space.status();
    uint64_t margin = options_.reserve_bytes / 4;
    if (space->free_bytes >= live + margin) {
      options.blob_garbage_collection_age_cutoff = 1.0;
    } else if (space->free_bytes >= live / 4 + margin) {
      options.blob_garbage_collection_age_cutoff = 0.25;
    } else {
      SPOOL_LOG_WARN("chunkstore blob_gc=skipped free={} live_blob_bytes={} garbage_bytes={}", space->free_bytes,
                     live, garbage_bytes);
      break;
    }
    auto s = db_->CompactRange(options, data_cf_, nullptr, nullptr);
    if (!s.ok()) return FromRocks(s, "compact chunk store (blob gc)");
    if (options.blob_garbage_collection_age_cutoff == 1.0) break;
  }
  return Status::Ok();
}

Status ChunkStore::PutSync(std::vector<ChunkWrite> chunks, Priority priority) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  Put(std::move(chunks), [&promise](const Status& s) { promise.set_value(s); }, priority);
  return future.get();
}

Status ChunkStore::PutSync(uint32_t pg, uint64_t chunk_id, std::string_view bytes) {
  ChunkWrite w;
  w.info = {chunk_id, pg, Crc32c(bytes), static_cast<uint32_t>(bytes.size())};
  w.bytes.assign(bytes);
  std::vector<ChunkWrite> chunks;
  chunks.push_back(std::move(w));
  return PutSync(std::move(chunks));
}

Status ChunkStore::DeleteSync(std::vector<ChunkInfo> chunks) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  Delete(std::move(chunks), [&promise](const Status& s) { promise.set_value(s); });
  return future.get();
}

namespace {
// Checks one stored value against its record: the whole chunk, or block `block`.
Status VerifyStored(const ChunkRecord& record, std::optional<uint32_t> block, std::string_view value) {
  const ChunkInfo& info = record.info;
  const uint32_t want_length = block ? BlockLength(info.length, *block) : info.length;
  const uint32_t want_crc = block ? record.block_crcs[*block] : info.crc32c;
  const std::string what = block ? "block " + std::to_string(*block) + " " : std::string();
  if (value.size() != want_length)
    return CorruptCopy(info.pg, info.chunk_id, what + "length " + std::to_string(value.size()) + " instead of " +
                                                   std::to_string(want_length));
  if (Crc32c(value.data(), value.size()) != want_crc) return CorruptCopy(info.pg, info.chunk_id, what + "checksum mismatch");
  return Status::Ok();
}
}  // namespace

Result<ChunkRecord> ChunkStore::ReadRecord(uint32_t pg, uint64_t chunk_id) {
  if (auto s = ValidateChunkAddress(pg, chunk_id); !s.ok()) return s;
  std::string value;
  auto s = db_->Get(rocksdb::ReadOptions(), meta_cf_, ChunkKey(pg, chunk_id), &value);
  if (s.IsNotFound()) return Status::Error(ENOENT, ChunkName(pg, chunk_id) + " is not on this brick");
  if (!s.ok()) return FromRocks(s, "read metadata of " + ChunkName(pg, chunk_id));
  auto record = DecodeMeta(pg, chunk_id, value);
  if (!record) return CorruptCopy(pg, chunk_id, "malformed metadata record");
  return std::move(*record);
}

Result<ChunkInfo> ChunkStore::Stat(uint32_t pg, uint64_t chunk_id) {
  auto record = ReadRecord(pg, chunk_id);
  if (!record.ok()) return record.status();
  return record->info;
}

Result<std::string> ChunkStore::Get(uint32_t pg, uint64_t chunk_id, uint32_t offset, uint32_t length,
                                    ChunkInfo* info_out) {
  if (auto cached = records_.Find(pg, chunk_id)) {
    auto bytes = ReadBytes(*cached, offset, length);
    if (bytes.ok() || bytes.status().code() == EINVAL) {
      if (bytes.ok() && info_out) *info_out = cached->info;
      return bytes;
    }
    // The record may be stale (the chunk was deleted, or put again since):
    // only the database's own may condemn the copy.
    records_.Forget(pg, chunk_id);
  }
  auto record = ReadRecord(pg, chunk_id);
  if (!record.ok()) return record.status();
  auto shared = std::make_shared<const ChunkRecord>(std::move(*record));
  auto bytes = ReadBytes(*shared, offset, length);
  if (bytes.ok()) {
    if (info_out) *info_out = shared->info;
    records_.Insert(pg, chunk_id, std::move(shared));
  }
  return bytes;
}

Result<std::string> ChunkStore::ReadBytes(const ChunkRecord& record, uint32_t offset, uint32_t length) {
  const ChunkInfo& info = record.info;
  const uint32_t pg = info.pg;
  const uint64_t chunk_id = info.chunk_id;
  if (offset > info.length || (length > 0 && uint64_t{offset} + length > info.length))
    return Status::Error(EINVAL, "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                     ") is outside " + ChunkName(pg, chunk_id) + " of " +
                                     std::to_string(info.length) + " bytes");
  const uint32_t n = length == 0 ? info.length - offset : length;
  // Every value served is checked against our own CRC32C (VerifyStored);
  // RocksDB's checksum of the blob record would verify the bytes twice.
  rocksdb::ReadOptions read_options;
  read_options.verify_checksums = false;
  auto read_failed = [&](const rocksdb::Status& s) {
    if (s.IsNotFound()) return CorruptCopy(pg, chunk_id, "bytes missing");
    if (s.IsCorruption()) return CorruptCopy(pg, chunk_id, s.ToString());
    return FromRocks(s, "read " + ChunkName(pg, chunk_id));
  };
  if (record.block_crcs.empty()) {
    rocksdb::PinnableSlice value;
    auto s = db_->Get(read_options, data_cf_, ChunkKey(pg, chunk_id), &value);
    if (!s.ok()) return read_failed(s);
    if (auto v = VerifyStored(record, std::nullopt, value.ToStringView()); !v.ok()) return v;
    return std::string(value.data() + offset, n);
  }
  // Only the blocks the range covers are read, and verified.
  const uint32_t first = offset / kBlockBytes;
  const uint32_t last = n == 0 ? first : (offset + n - 1) / kBlockBytes;
  const size_t count = last - first + 1;
  std::vector<std::string> keys(count);
  std::vector<rocksdb::Slice> key_slices(count);
  for (size_t i = 0; i < count; ++i) {
    keys[i] = BlockKey(pg, chunk_id, first + static_cast<uint32_t>(i));
    key_slices[i] = keys[i];
  }
  std::vector<rocksdb::PinnableSlice> values(count);
  std::vector<rocksdb::Status> statuses(count);
  db_->MultiGet(read_options, data_cf_, count, key_slices.data(), values.data(), statuses.data());
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < count; ++i) {
    if (!statuses[i].ok()) return read_failed(statuses[i]);
    const uint32_t block = first + static_cast<uint32_t>(i);
    if (auto v = VerifyStored(record, block, values[i].ToStringView()); !v.ok()) return v;
    const uint64_t block_start = uint64_t{block} * kBlockBytes;
    const uint64_t from = std::max<uint64_t>(offset, block_start) - block_start;
    const uint64_t to = std::min<uint64_t>(uint64_t{offset} + n, block_start + values[i].size()) - block_start;
    out.append(values[i].data() + from, to - from);
  }
  return out;
}

Result<ListResult> ChunkStore::List(uint32_t pg, std::optional<uint64_t> after, uint32_t max_entries) {
  if (auto s = ValidateChunkAddress(pg, 0); !s.ok()) return s;
  ListResult result;
  if (after && *after == UINT64_MAX) {
    result.complete = true;
    return result;
  }
  std::string start = ChunkKey(pg, after ? *after + 1 : 0);
  std::string end = ChunkKey(pg + 1, 0);  // pg < 2^20, so pg + 1 does not wrap
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, meta_cf_));
  for (it->Seek(start); it->Valid(); it->Next()) {
    if (result.chunks.size() >= max_entries) return result;
    auto key = it->key();
    if (key.size() != kKeyBytes) continue;
    auto record = DecodeMeta(pg, GetBE64(std::string_view(key.data() + 4, 8)), it->value().ToStringView());
    if (!record) continue;
    result.chunks.push_back(record->info);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "list pg " + std::to_string(pg));
  result.complete = true;
  return result;
}

Result<ReadManyResult> ChunkStore::ReadMany(uint32_t pg, const std::vector<uint64_t>& chunk_ids, uint64_t max_bytes) {
  if (auto s = ValidateChunkAddress(pg, 0); !s.ok()) return s;
  ReadManyResult result;
  const size_t n = chunk_ids.size();
  if (n == 0) return result;
  // One batched lookup per family (RocksDB sorts the keys and reads each
  // SST block and blob file once, in file order), instead of a metadata
  // lookup, a second one and a blob read per chunk.
  std::vector<std::string> keys(n);
  std::vector<rocksdb::Slice> key_slices(n);
  for (size_t i = 0; i < n; ++i) {
    keys[i] = ChunkKey(pg, chunk_ids[i]);
    key_slices[i] = keys[i];
  }
  std::vector<rocksdb::PinnableSlice> metas(n);
  std::vector<rocksdb::Status> meta_status(n);
  rocksdb::ReadOptions read_options;
  read_options.verify_checksums = true;
  db_->MultiGet(read_options, meta_cf_, n, key_slices.data(), metas.data(), meta_status.data());

  // Which chunks to read: found, and within max_bytes (the first that does
  // not fit and every found chunk after it are deferred).
  std::vector<ChunkRecord> records;
  std::vector<std::string> read_keys;
  records.reserve(n);
  read_keys.reserve(n);
  uint64_t bytes = 0;
  bool full = false;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t id = chunk_ids[i];
    if (meta_status[i].IsNotFound()) {
      result.missing.push_back(id);
      continue;
    }
    if (!meta_status[i].ok()) {
      if (meta_status[i].IsCorruption()) {
        result.corrupt.push_back(id);
        continue;
      }
      return FromRocks(meta_status[i], "read metadata of " + ChunkName(pg, id));
    }
    auto record = DecodeMeta(pg, id, metas[i].ToStringView());
    if (!record) {
      result.corrupt.push_back(id);
      continue;
    }
    if (full || bytes + record->info.length > max_bytes) {
      full = true;
      result.deferred.push_back(id);
      continue;
    }
    bytes += record->info.length;
    if (record->block_crcs.empty())
      read_keys.push_back(keys[i]);
    else
      for (uint32_t b = 0; b < record->block_crcs.size(); ++b) read_keys.push_back(BlockKey(pg, id, b));
    records.push_back(std::move(*record));
  }
  if (records.empty()) return result;

  // One value per chunk stored whole, one per block of the others.
  std::vector<rocksdb::Slice> read_slices(read_keys.begin(), read_keys.end());
  std::vector<rocksdb::PinnableSlice> values(read_keys.size());
  std::vector<rocksdb::Status> statuses(read_keys.size());
  // Every chunk is checked against our own CRC32C below (as in Get);
  // RocksDB's software CRC of each blob record would verify the bytes twice
  // (a third of the CPU a bulk read took on the sources of a rebuild).
  rocksdb::ReadOptions data_read_options;
  data_read_options.verify_checksums = false;
  db_->MultiGet(data_read_options, data_cf_, read_slices.size(), read_slices.data(), values.data(), statuses.data());
  result.payload.reserve(bytes);
  result.chunks.reserve(records.size());
  size_t next = 0;
  for (const auto& record : records) {
    const size_t parts = std::max<size_t>(1, record.block_crcs.size());
    const size_t first = next;
    next += parts;
    bool corrupt = false;
    for (size_t k = first; k < first + parts && !corrupt; ++k) {
      const auto& s = statuses[k];
      if (!s.ok() && !s.IsNotFound() && !s.IsCorruption())
        return FromRocks(s, "read " + ChunkName(pg, record.info.chunk_id));
      std::optional<uint32_t> block;
      if (!record.block_crcs.empty()) block = static_cast<uint32_t>(k - first);
      corrupt = !s.ok() || !VerifyStored(record, block, values[k].ToStringView()).ok();
    }
    if (corrupt) {
      result.corrupt.push_back(record.info.chunk_id);
      continue;
    }
    result.chunks.push_back(record.info);
    for (size_t k = first; k < first + parts; ++k) result.payload.append(values[k].data(), values[k].size());
  }
  return result;
}

uint64_t ChunkStore::ApproximateChunkCount() {
  uint64_t n = 0;
  db_->GetIntProperty(meta_cf_, "rocksdb.estimate-num-keys", &n);
  return n;
}

}  // namespace spool::brick
