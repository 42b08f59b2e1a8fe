#include "fusemount/client/file_store.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/crc32c.h"
#include "common/extents.h"
#include "common/log.h"

namespace spool::client {

namespace {
// A small piece of a large chunk (random reads of a VM image) is read
// alone; anything else whole, through the cache, as mail is read.
bool ReadAsRange(const proto::Extent& e, uint64_t bytes) {
  return e.chunk_length() > kWholeChunkReadBytes && bytes * 8 <= e.chunk_length();
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

FileStore::FileStore(const MountOptions& options, MetaClient& meta, ChunkClient& chunks)
    : options_(options), meta_(meta), chunks_(chunks) {}

std::shared_ptr<FileStore::Inode> FileStore::Find(uint64_t ino) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second;
}

std::shared_ptr<FileStore::Inode> FileStore::FindOrAdd(uint64_t ino) {
  std::lock_guard lock(mu_);
  auto& inode = inodes_[ino];
  if (!inode) inode = std::make_shared<Inode>();
  return inode;
}

Result<proto::Attr> FileStore::Open(uint64_t ino, bool* keep_page_cache) {
  auto reply = meta_.Open(ino, false);
  if (!reply.ok()) return reply.status();
  auto inode = FindOrAdd(ino);
  std::lock_guard lock(inode->mu);
  return OpenedLocked(ino, *inode, *reply, keep_page_cache);
}

proto::Attr FileStore::OpenedLocked(uint64_t ino, Inode& inode, const proto::OpenReply& reply, bool* keep_page_cache) {
  {
    std::lock_guard lock(cached_versions_mu_);
    auto [it, added] = cached_versions_.try_emplace(ino, reply.attr().version());
    *keep_page_cache = !added && it->second == reply.attr().version();
    it->second = reply.attr().version();
  }
  ++inode.opens;
  // Close-to-open: what meta has now replaces what we knew, except bytes we
  // have not flushed yet (another descriptor of ours is still writing).
  inode.extents.Assign(reply.extents());
  inode.extents_valid = true;
  inode.version = reply.attr().version();
  inode.size = inode.dirty.empty() ? reply.attr().size() : std::max<uint64_t>(reply.attr().size(), inode.size);
  proto::Attr attr = reply.attr();
  attr.set_size(inode.size);
  return attr;
}

void FileStore::OpenAsync(uint64_t ino, OpenDone done) {
  BeginAsync();
  auto finish = [this, ino, done = std::move(done)](Result<proto::Attr> attr, bool keep_page_cache) {
    const bool opened = attr.ok();
    if (!done(std::move(attr), keep_page_cache) && opened) {
      // Release may flush, which waits for replies: not on an io thread.
      RunWaiting([this, ino] {
        (void)Release(ino);
        meta_.Release(ino);
      });
    }
    EndAsync();
  };
  meta_.OpenAsync(ino, [this, ino, finish = std::move(finish)](Result<proto::OpenReply> reply) mutable {
    if (!reply.ok() && !rpc::IsTransportError(reply.status().code())) return finish(reply.status(), false);
    auto inode = reply.ok() ? FindOrAdd(ino) : nullptr;
    // The inode's lock may be held by a flush waiting for a reply that this
    // io thread has to receive: never wait for it here.
    std::unique_lock lock = inode ? std::unique_lock(inode->mu, std::try_to_lock) : std::unique_lock<std::mutex>();
    if (lock.owns_lock()) {
      bool keep = false;
      auto attr = OpenedLocked(ino, *inode, *reply, &keep);
      lock.unlock();
      return finish(std::move(attr), keep);
    }
    // Meta away (Open waits it out) or the inode busy: on a thread that may block.
    RunWaiting([this, ino, inode, reply = std::move(reply), finish = std::move(finish)]() mutable {
      bool keep = false;
      if (!reply.ok()) {
        auto attr = Open(ino, &keep);
        return finish(std::move(attr), keep);
      }
      std::lock_guard lock(inode->mu);
      auto attr = OpenedLocked(ino, *inode, *reply, &keep);
      finish(std::move(attr), keep);
    });
  });
}

void FileStore::Created(const proto::Attr& attr) {
  auto inode = FindOrAdd(attr.ino());
  std::lock_guard lock(inode->mu);
  CreatedLocked(attr, *inode);
}

bool FileStore::TryCreated(const proto::Attr& attr) {
  auto inode = FindOrAdd(attr.ino());
  std::unique_lock lock(inode->mu, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  CreatedLocked(attr, *inode);
  return true;
}

void FileStore::CreatedLocked(const proto::Attr& attr, Inode& inode) {
  {
    std::lock_guard lock(cached_versions_mu_);
    cached_versions_[attr.ino()] = attr.version();
  }
  ++inode.opens;
  inode.size = attr.size();
  inode.extents_valid = false;  // an existing file may have been returned
}

Status FileStore::Release(uint64_t ino) {
  auto inode = Find(ino);
  if (!inode) return Status::Ok();
  Status s;
  {
    std::lock_guard lock(inode->mu);
    s = FlushLocked(ino, *inode);
    if (--inode->opens > 0) return s;
    if (inode->Buffered()) {
      // The last descriptor is gone and its bytes could not be stored; close()
      // reports the error. Keeping them would hold the memory forever and
      // retry a write nobody waits for (as the kernel drops pages after a
      // writeback error it has reported).
      SPOOL_LOG_WARN("mount dropped unwritten bytes on close ino={} bytes={} error=\"{}\"", ino,
                     inode->dirty_bytes + inode->appended.size(), s.ToString());
      inode->dirty.clear();
      inode->dirty_bytes = 0;
      inode->appended.clear();
      inode->extents_valid = false;
    }
  }
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  if (it != inodes_.end() && it->second == inode) {
    // Never wait for an inode's lock while holding mu_: a flush holds it
    // across RPCs. A busy inode is simply kept; the next release drops it.
    std::unique_lock inode_lock(inode->mu, std::try_to_lock);
    if (inode_lock && inode->opens <= 0 && !inode->Buffered()) inodes_.erase(it);
  }
  return s;
}

void FileStore::AddDirty(Inode& inode, uint64_t offset, std::string_view data) {
  uint64_t end = offset + data.size();
  // Fast path: appending right after the last buffered range.
  if (!inode.dirty.empty()) {
    auto& [last_off, last] = *inode.dirty.rbegin();
    if (last_off + last.size() == offset) {
      last.append(data);
      inode.dirty_bytes += data.size();
      return;
    }
  }
  // Merge with every range that overlaps or touches [offset, end).
  auto it = inode.dirty.upper_bound(offset);
  if (it != inode.dirty.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.size() >= offset) it = prev;
  }
  uint64_t new_start = offset, new_end = end;
  auto first = it;
  while (it != inode.dirty.end() && it->first <= end) {
    new_start = std::min(new_start, it->first);
    new_end = std::max<uint64_t>(new_end, it->first + it->second.size());
    ++it;
  }
  std::string merged(new_end - new_start, '\0');
  for (auto m = first; m != it; ++m) {
    std::memcpy(merged.data() + (m->first - new_start), m->second.data(), m->second.size());
    inode.dirty_bytes -= m->second.size();
  }
  std::memcpy(merged.data() + (offset - new_start), data.data(), data.size());
  inode.dirty.erase(first, it);
  inode.dirty_bytes += merged.size();
  inode.dirty.emplace(new_start, std::move(merged));
}

Status FileStore::Write(uint64_t ino, uint64_t offset, std::string_view data) {
  auto inode = FindOrAdd(ino);
  std::lock_guard lock(inode->mu);
  // Appends buffered before this write go first, as they were written.
  if (!inode->appended.empty())
    if (auto s = FlushLocked(ino, *inode); !s.ok()) return s;
  AddDirty(*inode, offset, data);
  inode->size = std::max<uint64_t>(inode->size, offset + data.size());
  if (inode->dirty_bytes >= options_.inode_buffer_bytes) return FlushLocked(ino, *inode);
  return Status::Ok();
}

Status FileStore::Flush(uint64_t ino) {
  auto inode = Find(ino);
  if (!inode) return Status::Ok();
  std::lock_guard lock(inode->mu);
  return FlushLocked(ino, *inode);
}

Status FileStore::FlushLocked(uint64_t ino, Inode& inode) {
  if (!inode.dirty.empty()) {
    std::vector<proto::Extent> committed;
    auto attr = WriteRanges(ino, inode.dirty, /*append=*/false, &committed);
    if (!attr.ok()) return attr.status();
    NoteOwnChange(ino, attr->version());
    ApplyOwnCommitLocked(inode, committed, *attr);
    CountPieces(ino, inode, inode.dirty);
    ++inode.flushes;
    inode.dirty.clear();
    inode.dirty_bytes = 0;
    inode.size = attr->size();
  }
  if (!inode.appended.empty()) {
    // Meta places them after the file's end as it is now, which another
    // mount's appends may have moved: the whole run lands there intact.
    std::map<uint64_t, std::string> ranges;
    ranges.emplace(0, inode.appended);
    auto attr = WriteRanges(ino, ranges, /*append=*/true);
    ForgetCachedVersion(ino);  // direct I/O: the kernel's pages did not see these bytes
    if (!attr.ok()) return attr.status();
    ++inode.flushes;
    inode.appended.clear();
    inode.size = attr->size();
    inode.extents_valid = false;
  }
  return Status::Ok();
}

Result<uint64_t> FileStore::Append(uint64_t ino, std::string_view data) {
  auto inode = FindOrAdd(ino);
  std::lock_guard lock(inode->mu);
  // Positional writes buffered before this one go first, as they were written.
  if (!inode->dirty.empty())
    if (auto s = FlushLocked(ino, *inode); !s.ok()) return s;
  inode->appended.append(data);
  const uint64_t end = inode->size + inode->appended.size();
  if (inode->appended.size() >= options_.inode_buffer_bytes)
    if (auto s = FlushLocked(ino, *inode); !s.ok()) return s;
  return end;
}

void FileStore::ApplyOwnCommitLocked(Inode& inode, const std::vector<proto::Extent>& committed,
                                     const proto::Attr& attr) {
  // Our extents are still meta's if nobody else committed in between: lay
  // ours over them as meta did, rather than fetch the whole list again (a
  // VM image's list is long, and its guest flushes all the time).
  if (inode.extents_valid && !inode.changed_elsewhere && inode.version + 1 == attr.version()) {
    for (const auto& e : committed) inode.extents.Overlay(e);
    inode.version = attr.version();
    inode.mtime_ns = attr.mtime_ns();
  } else {
    inode.extents_valid = false;
  }
}

Result<proto::Attr> FileStore::WriteRanges(uint64_t ino, const std::map<uint64_t, std::string>& ranges, bool append,
                                           std::vector<proto::Extent>* committed) {
  auto attr = PutAndCommit(ino, ranges, append, nullptr, committed);
  if (attr.status().code() == ESTALE) {
    // Our session ended at meta while we were cut off, and the chunk ids of
    // this write were reclaimed with it: write the chunks again under new ids.
    SPOOL_LOG_WARN("mount chunk ids reclaimed by meta, writing again ino={} error=\"{}\"", ino,
                   attr.status().message());
    meta_.ForgetChunkIds();
    attr = PutAndCommit(ino, ranges, append, nullptr, committed);
  }
  return attr;
}

Result<proto::Attr> FileStore::PutAndCommit(uint64_t ino, const std::map<uint64_t, std::string>& ranges,
                                            bool append, const std::vector<proto::Extent>* rewrite_of,
                                            std::vector<proto::Extent>* committed) {
  std::vector<ChunkToWrite> chunks;
  proto::CommitWriteRequest commit;
  commit.set_ino(ino);
  commit.set_append(append);
  if (rewrite_of) {
    commit.set_slot_rewrite(true);
    for (const auto& e : *rewrite_of) *commit.add_slot_extents_before() = e;
  }
  uint64_t max_end = 0, bytes_total = 0;
  for (const auto& [offset, bytes] : ranges) {
    uint64_t pos = offset, end = offset + bytes.size();
    max_end = std::max(max_end, end);
    bytes_total += bytes.size();
    while (pos < end) {
      uint64_t slot_end = (pos / kSlotBytes + 1) * kSlotBytes;
      uint64_t piece_end = std::min(end, slot_end);
      auto id = meta_.NextChunkId();
      if (!id.ok()) return id.status();
      ChunkToWrite chunk;
      chunk.chunk_id = *id;
      chunk.bytes = std::make_shared<const std::string>(bytes, pos - offset, piece_end - pos);
      chunk.crc32c = Crc32c(*chunk.bytes);
      const auto length = static_cast<uint32_t>(chunk.bytes->size());
      auto* extent = commit.add_extents();
      extent->set_file_offset(pos);
      extent->set_length(length);
      extent->set_chunk_id(chunk.chunk_id);
      extent->set_chunk_offset(0);
      extent->set_chunk_length(length);
      extent->set_chunk_crc32c(chunk.crc32c);
      chunks.push_back(std::move(chunk));
      pos = piece_end;
    }
  }
  std::vector<uint64_t> under_replicated;
  auto s = chunks_.PutChunks(chunks, &under_replicated);
  if (!s.ok()) {
    SPOOL_LOG_ERROR("mount flush failed ino={} bytes={} error=\"{}\"", ino, bytes_total, s.ToString());
    return s;
  }
  for (uint64_t id : under_replicated) commit.add_under_replicated_chunks(id);
  commit.set_min_size(max_end);
  if (!rewrite_of) commit.set_mtime_ns(NowNs());
  auto attr = meta_.CommitWrite(commit);
  if (!attr.ok() && attr.status().code() != ESTALE)
    SPOOL_LOG_ERROR("mount commit failed ino={} error=\"{}\"", ino, attr.status().ToString());
  if (attr.ok() && committed) committed->assign(commit.extents().begin(), commit.extents().end());
  return attr;
}

void FileStore::Invalidate(uint64_t ino) {
  ForgetCachedVersion(ino);
  if (auto inode = Find(ino)) inode->changed_elsewhere = true;
}

bool FileStore::RevalidateForLock(uint64_t ino, uint64_t meta_version) {
  {
    std::lock_guard lock(cached_versions_mu_);
    auto it = cached_versions_.find(ino);
    // Pages at meta's version were filled with extents of that version too
    // (both move together: open, own commits, invalidations).
    if (meta_version != 0 && it != cached_versions_.end() && it->second == meta_version) return false;
  }
  Invalidate(ino);
  return true;
}

void FileStore::Forget(uint64_t ino) { ForgetCachedVersion(ino); }

void FileStore::NoteOwnChange(uint64_t ino, uint64_t new_version) {
  std::lock_guard lock(cached_versions_mu_);
  auto it = cached_versions_.find(ino);
  if (it == cached_versions_.end()) return;
  // Anything between the version the pages hold and ours was another
  // mount's change, which the pages may not have.
  if (it->second + 1 == new_version)
    it->second = new_version;
  else
    cached_versions_.erase(it);
}

void FileStore::ForgetCachedVersion(uint64_t ino) {
  std::lock_guard lock(cached_versions_mu_);
  cached_versions_.erase(ino);
}

Status FileStore::LoadExtentsLocked(uint64_t ino, Inode& inode) {
  if (inode.changed_elsewhere.exchange(false)) inode.extents_valid = false;
  if (inode.extents_valid) return Status::Ok();
  auto reply = meta_.GetExtents(ino);
  if (!reply.ok()) return reply.status();
  inode.extents.Assign(reply->extents());
  inode.extents_valid = true;
  inode.version = reply->attr().version();
  inode.mtime_ns = reply->attr().mtime_ns();
  if (inode.dirty.empty())
    inode.size = reply->attr().size();
  else
    inode.size = std::max<uint64_t>(inode.size, reply->attr().size());
  return Status::Ok();
}

Result<FileStore::ReadPlan> FileStore::PlanReadLocked(uint64_t ino, Inode& inode, uint64_t offset, size_t size) {
  // Where buffered appends will land is meta's to say: committed first.
  if (!inode.appended.empty())
    if (auto s = FlushLocked(ino, inode); !s.ok()) return s;
  auto s = LoadExtentsLocked(ino, inode);
  if (!s.ok()) return s;
  ReadPlan plan;
  plan.generation = inode.flushes;
  if (offset >= inode.size) return plan;
  plan.want = static_cast<size_t>(std::min<uint64_t>(size, inode.size - offset));
  const uint64_t end = offset + plan.want;
  plan.extents = inode.extents.In(offset, plan.want);
  for (const auto& [doff, bytes] : inode.dirty) plan.buffered_in_range |= doff < end && doff + bytes.size() > offset;
  return plan;
}

Result<std::string> FileStore::Read(uint64_t ino, uint64_t offset, size_t size) {
  auto inode = FindOrAdd(ino);
  auto plan = [&] {
    std::lock_guard lock(inode->mu);
    return PlanReadLocked(ino, *inode, offset, size);
  }();
  if (!plan.ok()) return plan.status();
  return ReadPlanned(ino, *inode, offset, size, std::move(*plan));
}

Result<std::string> FileStore::ReadPlanned(uint64_t ino, Inode& inode, uint64_t offset, size_t size, ReadPlan plan) {
  // Chunks are read without the inode lock; if a flush (ours, or the
  // compactor's) moved buffered bytes of this range into chunks meanwhile,
  // the extents we used are older than those bytes and the buffer no longer
  // has them: read again. Only then: a busy compactor must not starve the
  // reads of a VM image, whose bytes it moves but never changes.
  bool retried_stale = false;
  for (;;) {
    if (plan.want == 0) return std::string();
    std::string out(plan.want, '\0');
    const uint64_t end = offset + plan.want;
    auto filled = FillFromExtents(ino, plan.extents, offset, out);
    std::lock_guard lock(inode.mu);
    const bool buffer_moved = plan.buffered_in_range && inode.flushes != plan.generation;
    if (!buffer_moved && !filled.ok()) {
      if (retried_stale) return filled.code() == ENOENT ? Status::Error(EIO, filled.message()) : filled;
      // A chunk we were pointed at may be gone because another mount (or
      // our compactor) replaced it after we loaded the extents: once more
      // with fresh ones.
      retried_stale = true;
      inode.extents_valid = false;
    }
    if (buffer_moved || !filled.ok()) {
      auto next = PlanReadLocked(ino, inode, offset, size);
      if (!next.ok()) return next.status();
      plan = std::move(*next);
      continue;
    }
    for (const auto& [doff, bytes] : inode.dirty) {
      uint64_t dend = doff + bytes.size();
      if (dend <= offset || doff >= end) continue;
      uint64_t from = std::max(offset, doff), to = std::min(end, dend);
      std::memcpy(out.data() + (from - offset), bytes.data() + (from - doff), to - from);
    }
    return out;
  }
}

void FileStore::ReadAsync(uint64_t ino, uint64_t offset, size_t size, ReadDone done) {
  auto inode = FindOrAdd(ino);
  auto plan = [&] {
    std::lock_guard lock(inode->mu);
    return PlanReadLocked(ino, *inode, offset, size);
  }();
  if (!plan.ok()) return done(plan.status());
  if (plan->want == 0) return done(std::string());
  // One extent covering the whole range and nothing buffered over it: read
  // as FillFromExtents would, a range or the whole chunk.
  const proto::Extent* only = plan->extents.size() == 1 ? &plan->extents[0] : nullptr;
  const bool one_piece = only && !plan->buffered_in_range && only->file_offset() <= offset &&
                         only->file_offset() + only->length() >= offset + plan->want;
  if (!one_piece) return done(ReadPlanned(ino, *inode, offset, size, std::move(*plan)));
  BeginAsync();
  auto finish = [this, done = std::move(done)](Result<std::string> result) {
    done(std::move(result));
    EndAsync();
  };
  const uint64_t in_chunk = only->chunk_offset() + (offset - only->file_offset());
  chunks_.ReadAsync(
      only->chunk_id(), only->chunk_crc32c(), only->chunk_length(), !ReadAsRange(*only, plan->want),
      static_cast<uint32_t>(in_chunk), static_cast<uint32_t>(plan->want),
      [this, ino, offset, size, finish = std::move(finish)](Result<std::string> range) mutable {
        if (range.ok()) return finish(std::move(range));
        // Every copy in turn, outages waited out, stale extents reloaded:
        // Read's path, on a thread that may block.
        RunWaiting([this, ino, offset, size, finish = std::move(finish)]() mutable {
          finish(Read(ino, offset, size));
        });
      });
}

void FileStore::BeginAsync() { async_calls_.Begin(); }

void FileStore::EndAsync() { async_calls_.End(); }

void FileStore::RunWaiting(std::function<void()> work) {
  BeginAsync();
  asio::post(waiting_pool_, [this, work = std::move(work)] {
    work();
    EndAsync();
  });
}

void FileStore::WaitForAsyncCalls() { async_calls_.WaitNone(); }

Status FileStore::FillFromExtents(uint64_t ino, const std::vector<proto::Extent>& extents, uint64_t offset,
                                  std::string& out) {
  const uint64_t end = offset + out.size();
  auto failed = [ino](const proto::Extent& e, const Status& s) {
    // A chunk on none of its bricks was replaced: the caller reloads the extents.
    if (s.code() != ENOENT)
      SPOOL_LOG_ERROR("mount read failed ino={} chunk={} error=\"{}\"", ino, e.chunk_id(), s.ToString());
    return s;
  };
  for (const auto& e : extents) {
    uint64_t from = std::max<uint64_t>(offset, e.file_offset());
    uint64_t to = std::min<uint64_t>(end, e.file_offset() + e.length());
    if (from >= to) continue;
    uint64_t in_chunk = e.chunk_offset() + (from - e.file_offset());
    if (in_chunk + (to - from) > e.chunk_length()) return Status::Error(EIO, "extent beyond its chunk");
    if (ReadAsRange(e, to - from)) {
      auto range = chunks_.ReadRange(e.chunk_id(), e.chunk_crc32c(), e.chunk_length(),
                                     static_cast<uint32_t>(in_chunk), static_cast<uint32_t>(to - from));
      if (!range.ok()) {
        return failed(e, range.status());
      }
      std::memcpy(out.data() + (from - offset), range->data(), to - from);
      continue;
    }
    auto chunk = chunks_.ReadChunk(e.chunk_id(), e.chunk_crc32c(), e.chunk_length());
    if (!chunk.ok()) {
      return failed(e, chunk.status());
    }
    if (in_chunk + (to - from) > (*chunk)->size()) return Status::Error(EIO, "extent beyond its chunk");
    std::memcpy(out.data() + (from - offset), (*chunk)->data() + in_chunk, to - from);
  }
  return Status::Ok();
}

void FileStore::CountPieces(uint64_t ino, Inode& inode, const std::map<uint64_t, std::string>& ranges) {
  if (options_.compact_after_pieces == 0) return;  // compaction off
  for (const auto& [offset, bytes] : ranges) {
    for (uint64_t slot = offset / kSlotBytes; slot <= (offset + bytes.size() - 1) / kSlotBytes; ++slot) {
      // A whole slot written at once is one chunk already.
      const uint64_t slot_start = slot * kSlotBytes;
      if (offset <= slot_start && offset + bytes.size() >= slot_start + kSlotBytes) continue;
      auto& writes = inode.writes_since_compaction[slot];
      ++writes.pieces;
      writes.bytes += std::min(offset + bytes.size(), slot_start + kSlotBytes) - std::max(offset, slot_start);
      // What this mount counted is what it wrote since it opened the file;
      // the slot may hold pieces of earlier sessions and of other mounts too.
      // Each piece can split the extent it lands in: 2 extents per piece.
      if (inode.extents_valid && inode.extents.CountInSlot(slot) > 2 * size_t{options_.compact_after_pieces})
        writes.pieces = std::max(writes.pieces, options_.compact_after_pieces);
    }
  }
  QueueFragmentedSlotsLocked(ino, inode);
}

Result<bool> FileStore::CompactSlot(uint64_t ino, uint64_t slot) {
  // Read, put and commit without the inode lock: the guest's reads and
  // writes of the image go on meanwhile. The commit is refused if the slot
  // changed since these extents (a flush of ours included), and then
  // nothing is lost: the slot is tried again a little later.
  const uint64_t slot_start = slot * kSlotBytes, slot_end = slot_start + kSlotBytes;
  auto current = meta_.GetExtents(ino, slot_start, kSlotBytes);
  if (current.status().code() == ENOENT) return true;  // deleted meanwhile
  if (!current.ok()) return current.status();
  // Contiguous runs of extents in the slot; holes stay holes.
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // [start, end)
  std::vector<proto::Extent> in_slot;
  size_t pieces = 0;
  for (const auto& e : current->extents()) {
    if (e.file_offset() >= slot_end || e.file_offset() + e.length() <= slot_start) continue;
    in_slot.push_back(e);
    ++pieces;
    if (!runs.empty() && runs.back().second == e.file_offset())
      runs.back().second += e.length();
    else
      runs.emplace_back(e.file_offset(), e.file_offset() + e.length());
  }
  if (pieces <= runs.size()) return true;  // one extent per run already
  // Each chunk is read once, the span of it that the slot uses (an old
  // chunk shows through between the pieces written over it many times).
  struct Span {
    const proto::Extent* any;  // an extent on the chunk (id, crc, length)
    uint32_t from, to;
    std::string bytes;
  };
  std::map<uint64_t, Span> spans;  // chunk id -> span
  for (const auto& e : in_slot) {
    auto [it, fresh] = spans.try_emplace(e.chunk_id(), Span{&e, e.chunk_offset(), e.chunk_offset() + e.length(), {}});
    if (fresh) continue;
    it->second.from = std::min(it->second.from, e.chunk_offset());
    it->second.to = std::max(it->second.to, e.chunk_offset() + e.length());
  }
  for (auto& [id, span] : spans) {
    auto bytes = chunks_.ReadRange(id, span.any->chunk_crc32c(), span.any->chunk_length(), span.from,
                                   span.to - span.from);
    if (bytes.status().code() == ENOENT) return false;  // a piece was replaced (and deleted) since: the slot changed
    if (!bytes.ok()) return bytes.status();
    span.bytes = std::move(*bytes);
  }
  std::map<uint64_t, std::string> ranges;
  for (const auto& [start, end] : runs) ranges.emplace(start, std::string(end - start, '\0'));
  for (const auto& e : in_slot) {
    auto run = std::prev(ranges.upper_bound(e.file_offset()));
    const Span& span = spans.at(e.chunk_id());
    std::memcpy(run->second.data() + (e.file_offset() - run->first), span.bytes.data() + (e.chunk_offset() - span.from),
                e.length());
  }
  // The chunks of a refused attempt are reclaimed with our session's unused
  // ids. The bytes do not change, so neither does the modification time.
  std::vector<proto::Extent> committed;
  auto attr = PutAndCommit(ino, ranges, /*append=*/false, &in_slot, &committed);
  if (attr.status().code() == ESTALE) return false;
  if (!attr.ok()) return attr.status();
  if (auto inode = Find(ino)) {
    // Readers holding the old extents may find their chunks deleted, and
    // then read again with fresh ones.
    std::lock_guard lock(inode->mu);
    ApplyOwnCommitLocked(*inode, committed, *attr);
  }
  slots_compacted_++;
  return true;
}

void FileStore::StartCompactor() {
  compactor_ = std::thread([this] { CompactorLoop(); });
}

void FileStore::StopCompactor() {
  {
    std::lock_guard lock(compact_mu_);
    compactor_stopping_ = true;
  }
  compact_cv_.notify_all();
  if (compactor_.joinable()) compactor_.join();
}

FileStore::~FileStore() {
  StopCompactor();
  WaitForAsyncCalls();
  waiting_pool_.join();
}

void FileStore::QueueFragmentedSlotsLocked(uint64_t ino, Inode& inode) {
  std::vector<uint64_t> due;
  for (auto it = inode.writes_since_compaction.begin(); it != inode.writes_since_compaction.end();) {
    if (it->second.pieces >= options_.compact_after_pieces || it->second.bytes >= kSlotBytes) {
      due.push_back(it->first);
      it = inode.writes_since_compaction.erase(it);
    } else {
      ++it;
    }
  }
  if (due.empty()) return;
  std::lock_guard lock(compact_mu_);
  for (uint64_t slot : due) compact_queue_.try_emplace({ino, slot});
  compact_cv_.notify_one();
}

void FileStore::CompactorLoop() {
  using Clock = std::chrono::steady_clock;
  for (;;) {
    std::pair<uint64_t, uint64_t> job;
    CompactJob retry;
    {
      std::unique_lock lock(compact_mu_);
      for (;;) {
        if (compactor_stopping_) return;
        auto due = compact_queue_.end();
        for (auto it = compact_queue_.begin(); it != compact_queue_.end(); ++it)
          if (due == compact_queue_.end() || it->second.not_before < due->second.not_before) due = it;
        if (due == compact_queue_.end()) {
          compact_cv_.wait(lock);
        } else if (due->second.not_before > Clock::now()) {
          compact_cv_.wait_until(lock, due->second.not_before);
        } else {
          job = due->first;
          retry = due->second;
          compact_queue_.erase(due);
          break;
        }
      }
    }
    auto done = CompactSlot(job.first, job.second);
    if (!done.ok())
      SPOOL_LOG_WARN("mount compaction failed ino={} slot={} error=\"{}\"", job.first, job.second,
                     done.status().ToString());
    const bool refused = done.ok() && !*done && Find(job.first) != nullptr;
    if (!refused) continue;  // done (or queued again by new pieces meanwhile)
    std::lock_guard lock(compact_mu_);
    const auto pause = std::min<std::chrono::milliseconds>(kCompactRetryPause * (1 << std::min(retry.refusals, 5)),
                                                           kCompactRetryPauseMax);
    ++retry.refusals;
    retry.not_before = Clock::now() + pause;
    compact_queue_.insert_or_assign(job, retry);
  }
}

Result<proto::Attr> FileStore::SetAttr(const proto::SetAttrRequest& request) {
  auto inode = Find(request.ino());
  if (!inode) {
    auto attr = meta_.SetAttr(request);
    ForgetCachedVersion(request.ino());
    return attr;
  }
  std::lock_guard lock(inode->mu);
  // Buffered bytes were written before this change: they go first.
  auto s = FlushLocked(request.ino(), *inode);
  if (!s.ok()) return s;
  auto attr = meta_.SetAttr(request);
  ForgetCachedVersion(request.ino());
  if (!attr.ok()) return attr;
  inode->size = attr->size();
  inode->extents_valid = false;
  return attr;
}

std::vector<uint64_t> FileStore::OpenDescriptors() {
  std::vector<std::pair<uint64_t, std::shared_ptr<Inode>>> inodes;
  {
    std::lock_guard lock(mu_);
    inodes.assign(inodes_.begin(), inodes_.end());
  }
  std::vector<uint64_t> out;
  for (auto& [ino, inode] : inodes)
    for (int i = 0, n = inode->opens.load(); i < n; ++i) out.push_back(ino);
  return out;
}

void FileStore::Overlay(proto::Attr& attr) {
  auto inode = Find(attr.ino());
  if (!inode) return;
  std::lock_guard lock(inode->mu);
  OverlayLocked(*inode, attr);
}

bool FileStore::TryOverlay(proto::Attr& attr) {
  auto inode = Find(attr.ino());
  if (!inode) return true;
  std::unique_lock lock(inode->mu, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  OverlayLocked(*inode, attr);
  return true;
}

void FileStore::OverlayLocked(const Inode& inode, proto::Attr& attr) {
  if (!inode.dirty.empty()) attr.set_size(std::max<uint64_t>(attr.size(), inode.size));
  if (!inode.appended.empty()) attr.set_size(std::max<uint64_t>(attr.size(), inode.size) + inode.appended.size());
}

}  // namespace spool::client
