// FileStore: the data of files this mount has open.
//
// Writes are buffered per inode (shared by every descriptor of the inode in
// this mount, so a read through one descriptor sees a write through another)
// and flushed on fsync, flush/close, a full buffer, or before a size change:
// the buffer is cut into chunks (never crossing a 1 MiB slot), the chunks go
// to the bricks, and then the new extents are committed to meta in one RPC.
// Reads assemble the range from the inode's extents (holes are zeros) and
// overlay the unflushed bytes.
#pragma once

#include <atomic>
#include <asio/thread_pool.hpp>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/outstanding.h"
#include "fusemount/client/chunk_client.h"
#include "fusemount/client/meta_client.h"
#include "fusemount/client/options.h"
#include "spool.pb.h"

namespace spool::client {

class FileStore {
 public:
  FileStore(const MountOptions& options, MetaClient& meta, ChunkClient& chunks);

  // A file was opened (or created, with its attributes from meta).
  // *keep_page_cache: the kernel's pages of the file hold exactly meta's
  // current version, so the open may keep them (see cached_versions_).
  Result<proto::Attr> Open(uint64_t ino, bool* keep_page_cache);
  // Open, with `done` called from the io thread that receives meta's reply
  // (a mail read is open, read, close: the FUSE worker does not wait for
  // meta). Meta away, or the inode busy, takes Open's path on a thread that
  // may block. `done` runs exactly once and must not block; it returns
  // false if the opener could not be told (then the open is undone here).
  using OpenDone = std::function<bool(Result<proto::Attr>, bool keep_page_cache)>;
  void OpenAsync(uint64_t ino, OpenDone done);
  // create(2) opened the file (new, or existing without O_EXCL).
  void Created(const proto::Attr& attr);
  // Created without waiting for the inode's lock (an io thread); false, and
  // nothing done, if it was busy.
  bool TryCreated(const proto::Attr& attr);
  // The kernel dropped the inode, and its pages with it.
  void Forget(uint64_t ino);
  // The last reference from this descriptor is gone; flushes what is left.
  Status Release(uint64_t ino);

  Status Write(uint64_t ino, uint64_t offset, std::string_view data);
  // An O_APPEND write: buffered like any write (durable at fsync or close),
  // then placed by meta after the end of the file as every mount sees it at
  // the flush, so that concurrent appenders on several hosts never overwrite
  // each other and each write() lands whole. Returns the end of the file as
  // this mount sees it.
  Result<uint64_t> Append(uint64_t ino, std::string_view data);
  Result<std::string> Read(uint64_t ino, uint64_t offset, size_t size);
  // Read, with the reply from the io thread that receives the bytes when
  // the range is one piece of one chunk (a VM image's random reads): the
  // calling FUSE worker goes back to the kernel at once, and no thread
  // wakes another to hand the bytes over. Anything else, and any error,
  // takes Read's path. `done` runs exactly once and must not block.
  using ReadDone = std::function<void(Result<std::string>)>;
  void ReadAsync(uint64_t ino, uint64_t offset, size_t size, ReadDone done);
  // Calls whose reply goes out from an io thread (ReadAsync, OpenAsync, the
  // adapter's own) are counted from Begin to End, so that unmounting can wait
  // for them: their replies need the session.
  void BeginAsync();
  void EndAsync();
  void WaitForAsyncCalls();
  // Runs `work` off the io threads, where it may block (a call riding out
  // an outage, a wait for an inode's lock); counted as above.
  void RunWaiting(std::function<void()> work);
  Status Flush(uint64_t ino);
  // Applies a setattr through meta; a size change flushes first.
  Result<proto::Attr> SetAttr(const proto::SetAttrRequest& request);
  // Corrects attributes from meta with what only this mount knows yet.
  void Overlay(proto::Attr& attr);
  // Overlay without waiting for the inode's lock (on an io thread, where a
  // flush holding it may wait for us); false if it was busy.
  bool TryOverlay(proto::Attr& attr);
  // One inode number per open descriptor (for MetaClient's re-registration).
  std::vector<uint64_t> OpenDescriptors();
  // Another mount changed the file: the next read asks meta for its extents.
  // Never waits for an inode lock (runs on the invalidation thread).
  void Invalidate(uint64_t ino);
  // This mount was just granted a lock on the file, which meta says is at
  // `meta_version` (0: unknown). The mount that held it before may have
  // changed the file up to its unlock, and an invalidation of that may have
  // been missed. True if the kernel's pages of the file may be stale and
  // must be dropped (the next read then reloads the extents too).
  bool RevalidateForLock(uint64_t ino, uint64_t meta_version);

  // Compaction: a 1 MiB slot that this mount overwrote piecemeal (a VM
  // image's random 4 KiB writes) is rewritten in the background as one
  // chunk per contiguous range once it holds compact_after_pieces pieces or
  // a slot's worth of overwritten bytes, or more than twice that many
  // extents (pieces of other mounts and earlier sessions included), so that
  // its extents and the space its overwritten chunks hold stay bounded. Starts/stops the background
  // thread.
  void StartCompactor();
  void StopCompactor();
  // Compacts the slot now (what the background thread does); false if the
  // slot changed meanwhile, on any mount (nothing is committed then). A file
  // closed meanwhile is compacted all the same; one deleted is left.
  Result<bool> CompactSlot(uint64_t ino, uint64_t slot);
  uint64_t slots_compacted() const { return slots_compacted_.load(); }
  ~FileStore();

 private:
  struct Inode {
    std::mutex mu;  // guards everything below; held across a flush
    // Atomic so that OpenDescriptors() reads it without `mu`: that runs on
    // RPC callback threads, and `mu` may be held by a thread waiting for an
    // RPC reply (a flush), which would then never arrive.
    std::atomic<int> opens{0};
    std::map<uint64_t, std::string> dirty;  // offset -> bytes, non-overlapping
    // O_APPEND writes not committed yet, in the order written: meta places
    // them after the file's end at the flush (fsync, close, unlock, a read).
    // At most one of `dirty` and `appended` holds bytes: each flushes the
    // other first, so that bytes land in the order they were written.
    std::string appended;
    bool Buffered() const { return !dirty.empty() || !appended.empty(); }
    uint64_t flushes = 0;  // bumped whenever `dirty` went into chunks
    size_t dirty_bytes = 0;
    uint64_t size = 0;  // meta's size, grown by buffered writes
    bool extents_valid = false;
    uint64_t version = 0;  // meta's inode version that `extents` are
    int64_t mtime_ns = 0;  // and its modification time
    // What flushes added to each slot since it was last compacted.
    struct SlotWrites {
      uint32_t pieces = 0;
      uint64_t bytes = 0;
    };
    std::map<uint64_t, SlotWrites> writes_since_compaction;  // slot -> writes
    std::atomic<bool> changed_elsewhere{false};  // set without `mu` by Invalidate
    ExtentMap extents;
  };

  // What a read of [offset, offset + size) needs, taken under the inode's
  // lock (extents loaded from meta if needed).
  struct ReadPlan {
    size_t want = 0;  // bytes before the end of the file
    uint64_t generation = 0;
    bool buffered_in_range = false;
    std::vector<proto::Extent> extents;
  };
  Result<ReadPlan> PlanReadLocked(uint64_t ino, Inode& inode, uint64_t offset, size_t size);
  // Read, from a plan already made (and again with fresh ones if it went stale).
  Result<std::string> ReadPlanned(uint64_t ino, Inode& inode, uint64_t offset, size_t size, ReadPlan plan);

  std::shared_ptr<Inode> Find(uint64_t ino);
  std::shared_ptr<Inode> FindOrAdd(uint64_t ino);
  Status FlushLocked(uint64_t ino, Inode& inode);
  // Puts `ranges` (offset -> bytes) as new chunks and commits them (with
  // `append`, after the file's end at meta); the inode after it. Writes
  // again under new ids if meta reclaimed the ids meanwhile.
  // *committed (if given): the extents the commit laid over the file.
  Result<proto::Attr> WriteRanges(uint64_t ino, const std::map<uint64_t, std::string>& ranges, bool append,
                                  std::vector<proto::Extent>* committed = nullptr);
  // rewrite_of (compaction): `ranges` are the bytes of one slot whose
  // extents were these; meta refuses (ESTALE) if the slot changed since.
  Result<proto::Attr> PutAndCommit(uint64_t ino, const std::map<uint64_t, std::string>& ranges, bool append,
                                   const std::vector<proto::Extent>* rewrite_of = nullptr,
                                   std::vector<proto::Extent>* committed = nullptr);
  static void OverlayLocked(const Inode& inode, proto::Attr& attr);  // REQUIRES: inode.mu
  void CreatedLocked(const proto::Attr& attr, Inode& inode);  // REQUIRES: inode.mu
  // Takes meta's answer to an open of ours. REQUIRES: inode.mu
  proto::Attr OpenedLocked(uint64_t ino, Inode& inode, const proto::OpenReply& reply, bool* keep_page_cache);
  // After this mount's commit of `committed` made `attr`: updates the
  // inode's extents in place, or marks them for reloading. REQUIRES: inode.mu
  void ApplyOwnCommitLocked(Inode& inode, const std::vector<proto::Extent>& committed, const proto::Attr& attr);
  Status LoadExtentsLocked(uint64_t ino, Inode& inode);
  // Copies the bytes of `extents` that fall in [offset, offset + out.size())
  // into `out` (the rest is left as it is).
  Status FillFromExtents(uint64_t ino, const std::vector<proto::Extent>& extents, uint64_t offset, std::string& out);
  void CountPieces(uint64_t ino, Inode& inode, const std::map<uint64_t, std::string>& ranges);  // REQUIRES: inode.mu
  void CompactorLoop();
  // Queues the inode's slots that reached a compaction bound.
  // REQUIRES: inode.mu
  void QueueFragmentedSlotsLocked(uint64_t ino, Inode& inode);
  static void AddDirty(Inode& inode, uint64_t offset, std::string_view data);

  MountOptions options_;
  MetaClient& meta_;
  ChunkClient& chunks_;
  std::mutex mu_;  // guards inodes_
  std::unordered_map<uint64_t, std::shared_ptr<Inode>> inodes_;

  // Close-to-open without rereading: meta bumps an inode's version by one
  // on every change of content or size, so pages the kernel filled at
  // version V (by reads, or by this mount's own writes that made V) are
  // still right at the next open if meta is still at V. An entry is dropped
  // whenever that chain is broken (another mount's change, a truncate, an
  // O_APPEND write that bypassed the pages); a missed invalidation then
  // costs a reread, never stale bytes.
  void NoteOwnChange(uint64_t ino, uint64_t new_version);
  void ForgetCachedVersion(uint64_t ino);
  std::mutex cached_versions_mu_;  // guards cached_versions_
  std::unordered_map<uint64_t, uint64_t> cached_versions_;  // ino -> version the kernel's pages hold

  std::mutex compact_mu_;  // guards the three below
  std::condition_variable compact_cv_;
  // A slot whose compaction was refused (the guest wrote into it meanwhile)
  // is tried again later, less often each time, for as long as the file is
  // open here.
  struct CompactJob {
    int refusals = 0;
    std::chrono::steady_clock::time_point not_before{};
  };
  std::map<std::pair<uint64_t, uint64_t>, CompactJob> compact_queue_;  // (ino, slot)
  static constexpr std::chrono::milliseconds kCompactRetryPause{100};
  static constexpr std::chrono::milliseconds kCompactRetryPauseMax{2000};
  bool compactor_stopping_ = false;
  std::thread compactor_;
  std::atomic<uint64_t> slots_compacted_{0};

  // RunWaiting's threads; one riding out an outage holds a thread.
  asio::thread_pool waiting_pool_{8};
  Outstanding async_calls_;  // BeginAsync calls not ended yet
};

}  // namespace spool::client
