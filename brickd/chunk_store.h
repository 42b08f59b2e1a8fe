// ChunkStore: the chunks of one brick, on one local disk, in RocksDB.
//
// Layout. Two column families in one database, keyed alike by
//   BE32(pg) + BE64(chunk_id)
// so that every placement group is one contiguous, sorted key range (catch-up
// after an outage is a diff of two sorted per-PG listings):
//   "meta": format(1) + BE32 crc32c + BE32 length, and for a chunk of more
//           than 64 KiB the BE32 crc32c of each 64 KiB block. Small; stat and
//           list read only this family and never touch a blob.
//   "data": the chunk bytes, stored in RocksDB blob files (LZ4 by default,
//           or zstd or none: --compression; blob GC), so
//           many small chunks are packed into large sequential files; up to
//           64 KiB as one value (format 1), larger ones one value per 64 KiB
//           block under key + BE32(block) (format 2), so that a small read
//           (a VM image's 4 KiB) reads and verifies one block, not 1 MiB.
// Both are written in one WriteBatch, so a chunk is either fully present or absent.
//
// Durability. Put/Delete are asynchronous: they queue the write and call
// `done` once it is synced to disk (WAL fsync). One committer thread drains the
// queue into a single WriteBatch written with sync=true and then answers every
// write in it: many concurrent puts share one fsync (group commit).
// Background puts (repair) skip the WAL, which would write every rebuilt
// byte twice on this one thread: they are in the memtable (readable) when
// their `written` runs, and durable when RocksDB has flushed that memtable to
// blob and table files (a full memtable, or kBackgroundDurableWithin after the
// write at the latest), when their `done` runs. A crash before that loses
// them, and the repair that has not been reported done pulls them again.
//
// Priority. Background puts (repair) and deletes wait in a queue of their own,
// in order; foreground puts (a client's) go ahead of them, and a batch takes
// at most options.max_background_batch_bytes of background writes (a larger
// background put is split into pieces that fit; it is not all or nothing), so
// that a delivery never waits behind more than one small slice of a rebuild.
// While no client writes, background batches grow to
// options.idle_background_batch_bytes: fewer syncs, a faster rebuild.
//
// Blob garbage collection relocates every live chunk of the oldest blob files
// that a compaction meets, garbage or not. While background writes flow (a
// rebuild: nothing to collect, and compactions every few hundred MB) that is
// pure rewriting, so it is paused until none came for a while.
//
// Errors (Status codes, the errno the client sees):
//   EBADMSG    the client's CRC32C does not match the bytes (put), or the copy
//              on this brick is corrupt (get/read: bytes never served)
//   ENOENT     no such chunk
//   EINVAL     malformed argument: length mismatch, chunk too large, pg out of
//              range, range outside the chunk
//   EEXIST     put of an existing chunk id with different content (chunks are
//              immutable; the same content again is fine: puts are idempotent)
//   ENOSPC     free space below the reserve, or the disk is full
//   EAGAIN     the write queue is full; retry later
//   ESHUTDOWN  the store is closing
//   EIO        any other storage error
//
// Thread safety: every method may be called from any thread at once.
#pragma once

#include <rocksdb/db.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "brickd/options.h"
#include "brickd/record_cache.h"
#include "common/status.h"

namespace spool::brick {

// What the store knows about one chunk.
struct ChunkInfo {
  uint64_t chunk_id = 0;
  uint32_t pg = 0;
  uint32_t crc32c = 0;  // of the whole chunk
  uint32_t length = 0;  // of the whole chunk
};

// A chunk's metadata record as stored.
struct ChunkRecord {
  ChunkInfo info;
  std::vector<uint32_t> block_crcs;  // CRC32C of each 64 KiB block; empty: stored whole
};

// One chunk to store: its identity and checksum as the client claims them, and its bytes.
struct ChunkWrite {
  ChunkInfo info;
  std::string bytes;
};

struct ListResult {
  std::vector<ChunkInfo> chunks;  // in chunk id order
  bool complete = false;          // true if the listing reached the end of the PG
};

struct ReadManyResult {
  std::vector<ChunkInfo> chunks;  // found and verified, in payload order
  std::string payload;            // their bytes back to back
  std::vector<uint64_t> missing;
  std::vector<uint64_t> corrupt;
  std::vector<uint64_t> deferred;  // not read: the reply would exceed max_bytes
};

struct SpaceInfo {
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;  // available to unprivileged writers
  uint64_t used_bytes = 0;
};

// statvfs of the file system holding `path`.
Result<SpaceInfo> DiskSpace(const std::string& path);
// Space as the cluster should count it on a brick that refuses puts below
// `reserve_bytes` free: the reserve (and room only root may use) is used.
Result<SpaceInfo> ChunkSpace(const std::string& path, uint64_t reserve_bytes);

class ChunkStore {
 public:
  using Done = std::function<void(const Status&)>;

  // Opens (creating if needed) the database in options.db_dir and starts the committer.
  static Result<std::unique_ptr<ChunkStore>> Open(const ChunkStoreOptions& options);
  // Answers every queued write, stops the committer and closes the database.
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // Validates and queues chunks to store; `done` runs once, on some thread,
  // after they are all durable (or with the error that kept all of them out:
  // a multi-chunk foreground put is all or nothing; a large background one
  // may be partly stored when it fails). `done` may run before Put returns.
  // A background put's `written` (optional) runs once, before `done`.
  enum class Priority { kForeground, kBackground };
  void Put(std::vector<ChunkWrite> chunks, Done done, Priority priority = Priority::kForeground, Done written = {});
  // Makes every background put written so far durable (a memtable flush)
  // and answers it.
  Status FlushBackground();
  // The same without waiting: their `done` runs when the flush is over.
  void RequestFlush();
  // Queues the removal of chunks (absent ones are fine); `done` after it is durable.
  void Delete(std::vector<ChunkInfo> chunks, Done done);

  // Blocking forms of Put/Delete, for tests and tools.
  Status PutSync(std::vector<ChunkWrite> chunks, Priority priority = Priority::kForeground);
  Status PutSync(uint32_t pg, uint64_t chunk_id, std::string_view bytes);
  Status DeleteSync(std::vector<ChunkInfo> chunks);

  // Reads bytes [offset, offset+length) of a chunk (length 0 = to the end),
  // after verifying the CRC32C of what was read: the whole chunk, or, for a
  // chunk stored in blocks, every block the range touches.
  Result<std::string> Get(uint32_t pg, uint64_t chunk_id, uint32_t offset = 0, uint32_t length = 0,
                          ChunkInfo* info = nullptr);
  // Checksum and length of a chunk, from the metadata only (bytes not read).
  Result<ChunkInfo> Stat(uint32_t pg, uint64_t chunk_id);
  // Chunks of one PG with id > after (or from the start if !after), at most max_entries.
  Result<ListResult> List(uint32_t pg, std::optional<uint64_t> after, uint32_t max_entries);
  // Reads and verifies many chunks of one PG, up to max_bytes of payload.
  Result<ReadManyResult> ReadMany(uint32_t pg, const std::vector<uint64_t>& chunk_ids, uint64_t max_bytes);

  // Flushes and compacts everything, dropping deleted chunks and collecting
  // garbage blob files, so deleted bytes go back to the file system.
  Status Compact();

  uint64_t ApproximateChunkCount();
  // Synced WriteBatches written so far: with concurrent writers this grows
  // slower than the number of writes (group commit).
  uint64_t synced_batches() const { return synced_batches_.load(); }
  const ChunkStoreOptions& options() const { return options_; }

 private:
  struct WriteOp {
    bool is_delete = false;
    bool background = false;  // a background put or a delete
    std::vector<ChunkWrite> puts;
    std::vector<std::string> put_records;  // the metadata record of each put
    std::vector<ChunkInfo> deletes;
    uint64_t bytes = 0;
    Done done;
    Done written;  // a background put: in the memtable, not yet durable
  };
  // Background puts in the memtable, waiting for a flush: answered once the
  // data family is flushed up to `seq` (the last sequence number of their batch).
  struct Unflushed {
    uint64_t seq = 0;
    Done done;
    std::chrono::steady_clock::time_point written_at;
  };
  class FlushListener;
  // Answers the background puts whose batch is flushed (seq <= flushed_seq).
  void MarkDurable(uint64_t flushed_seq);
  // When the oldest unflushed background put is due to be made durable.
  std::optional<std::chrono::steady_clock::time_point> FlushDueAt();
  // Asks RocksDB for a flush (not waiting for it) if one is due. Committer thread.
  void RequestFlushIfDue();
  // Answers every background put waiting for a flush with `error`.
  void FailUnflushed(const Status& error);

  explicit ChunkStore(ChunkStoreOptions options);
  void Enqueue(std::unique_ptr<WriteOp> op);
  // Queues all of `ops` or none (EAGAIN, ESHUTDOWN: each op is answered).
  void EnqueueAll(std::vector<std::unique_ptr<WriteOp>> ops);
  // A background put larger than one batch's background slice, as pieces
  // that each fit one: a foreground put then never waits for more than a
  // slice. The pieces answer the put's `done` once, after the last one.
  std::vector<std::unique_ptr<WriteOp>> SplitBackgroundPut(std::unique_ptr<WriteOp> op);
  // Answers an op that failed (or had nothing to do): `written`, then `done`.
  static void Answer(WriteOp& op, const Status& s);
  void CommitLoop();
  void CommitBatch(std::vector<std::unique_ptr<WriteOp>>& ops);
  // Pauses blob GC while background writes flow, and while the disk has no
  // room for it; resumes it after a quiet spell with room.
  void PaceBlobGc(bool background_in_batch);
  // Bytes of the blob files: still referenced (live), and dead but not yet collected.
  struct BlobBytes {
    uint64_t live = 0;
    uint64_t garbage = 0;
  };
  BlobBytes BlobUsage();
  // What the database holds under one key before a batch is written.
  struct Existing {
    std::optional<uint32_t> crc32c;  // absent (or unreadable metadata): none
    uint32_t blocks = 0;             // stored in blocks: how many
    Status error;                    // the lookup itself failed
  };
  // The metadata of every chunk the ops put or delete, in one batched lookup.
  std::unordered_map<std::string, Existing> ReadExisting(const std::vector<std::unique_ptr<WriteOp>>& ops);
  Result<ChunkRecord> ReadRecord(uint32_t pg, uint64_t chunk_id);
  // The bytes [offset, offset + length) of the chunk `record` describes
  // (length 0: to its end), verified.
  Result<std::string> ReadBytes(const ChunkRecord& record, uint32_t offset, uint32_t length);

  ChunkStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; destroyed before db_
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* data_cf_ = nullptr;

  std::mutex mu_;                    // guards the queues, queued_bytes_, stopping_
  std::condition_variable queue_cv_;  // signalled when a queue grows or stopping_ is set
  std::deque<std::unique_ptr<WriteOp>> queue_;             // foreground puts
  std::deque<std::unique_ptr<WriteOp>> background_queue_;  // background puts and deletes
  uint64_t queued_bytes_ = 0;
  bool stopping_ = false;

  // Owned by the committer thread.
  bool needs_resume_ = false;         // a write failed with a background error: Resume() first
  std::atomic<bool> space_low_{false};  // a put was refused for space: compact after deletes
  bool compact_pending_ = false;        // deletes on a full disk: Compact() at compact_at_
  std::chrono::steady_clock::time_point compact_at_;
  std::chrono::steady_clock::time_point compact_deadline_;  // latest compact_at_ of this burst
  std::chrono::steady_clock::time_point last_compact_;
  bool blob_gc_paused_ = false;                        // during background writes, or on a nearly full disk
  bool gc_paused_for_space_ = false;                   // the disk has no room for RocksDB's blob GC
  std::chrono::steady_clock::time_point next_gc_space_check_;
  std::chrono::steady_clock::time_point last_background_;  // last batch with a background write
  std::chrono::steady_clock::time_point last_foreground_;  // last batch with a client's put
  std::atomic<bool> refusing_for_space_{false};  // the last put was refused for space (logs transitions)
  std::atomic<uint64_t> synced_batches_{0};

  std::mutex unflushed_mu_;  // guards unflushed_, durable_seq_
  std::deque<Unflushed> unflushed_;  // in seq order
  uint64_t durable_seq_ = 0;
  std::chrono::steady_clock::time_point last_flush_request_;  // written by the committer thread only

  RecordCache records_{64 << 10};  // for Get; forgotten by CommitBatch

  std::thread committer_;
};

// The RocksDB key of a chunk: BE32(pg) + BE64(chunk_id).
std::string ChunkKey(uint32_t pg, uint64_t chunk_id);
// Maps a RocksDB status to an errno Status, naming `what`.
Status FromRocks(const rocksdb::Status& s, const std::string& what);

}  // namespace spool::brick
