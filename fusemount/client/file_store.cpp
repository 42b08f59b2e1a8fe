#include "fusemount/client/file_store.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"

namespace spool::client {

namespace {
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

Result<proto::Attr> FileStore::Open(uint64_t ino) {
  auto reply = meta_.Open(ino, false);
  if (!reply.ok()) return reply.status();
  auto inode = FindOrAdd(ino);
  std::lock_guard lock(inode->mu);
  ++inode->opens;
  // Close-to-open: what meta has now replaces what we knew, except bytes we
  // have not flushed yet (another descriptor of ours is still writing).
  inode->extents.assign(reply->extents().begin(), reply->extents().end());
  inode->extents_valid = true;
  inode->size = inode->dirty.empty() ? reply->attr().size() : std::max<uint64_t>(reply->attr().size(), inode->size);
  proto::Attr attr = reply->attr();
  attr.set_size(inode->size);
  return attr;
}

void FileStore::Created(const proto::Attr& attr) {
  auto inode = FindOrAdd(attr.ino());
  std::lock_guard lock(inode->mu);
  ++inode->opens;
  inode->size = attr.size();
  inode->extents_valid = false;  // an existing file may have been returned
}

Status FileStore::Release(uint64_t ino) {
  auto inode = Find(ino);
  if (!inode) return Status::Ok();
  Status s;
  {
    std::lock_guard lock(inode->mu);
    s = FlushLocked(ino, *inode);
    if (--inode->opens > 0) return s;
    if (!inode->dirty.empty()) {
      // The last descriptor is gone and its bytes could not be stored; close()
      // reports the error. Keeping them would hold the memory forever and
      // retry a write nobody waits for (as the kernel drops pages after a
      // writeback error it has reported).
      SPOOL_LOG_WARN("mount dropped unwritten bytes on close ino={} bytes={} error=\"{}\"", ino, inode->dirty_bytes,
                     s.ToString());
      inode->dirty.clear();
      inode->dirty_bytes = 0;
      inode->extents_valid = false;
    }
  }
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  if (it != inodes_.end() && it->second == inode) {
    // Never wait for an inode's lock while holding mu_: a flush holds it
    // across RPCs. A busy inode is simply kept; the next release drops it.
    std::unique_lock inode_lock(inode->mu, std::try_to_lock);
    if (inode_lock && inode->opens <= 0 && inode->dirty.empty()) inodes_.erase(it);
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
  if (inode.dirty.empty()) return Status::Ok();
  std::vector<ChunkToWrite> chunks;
  proto::CommitWriteRequest commit;
  commit.set_ino(ino);
  uint64_t max_end = 0;
  for (const auto& [offset, bytes] : inode.dirty) {
    uint64_t pos = offset, end = offset + bytes.size();
    max_end = std::max(max_end, end);
    while (pos < end) {
      uint64_t slot_end = (pos / kSlotBytes + 1) * kSlotBytes;
      uint64_t piece_end = std::min(end, slot_end);
      auto id = chunks_.NextChunkId();
      if (!id.ok()) return id.status();
      ChunkToWrite chunk;
      chunk.chunk_id = *id;
      chunk.bytes.assign(bytes, pos - offset, piece_end - pos);
      chunk.crc32c = Crc32c(chunk.bytes);
      auto* extent = commit.add_extents();
      extent->set_file_offset(pos);
      extent->set_length(static_cast<uint32_t>(chunk.bytes.size()));
      extent->set_chunk_id(chunk.chunk_id);
      extent->set_chunk_offset(0);
      extent->set_chunk_length(static_cast<uint32_t>(chunk.bytes.size()));
      extent->set_chunk_crc32c(chunk.crc32c);
      chunks.push_back(std::move(chunk));
      pos = piece_end;
    }
  }
  std::vector<uint64_t> under_replicated;
  auto s = chunks_.PutChunks(chunks, &under_replicated);
  if (!s.ok()) {
    SPOOL_LOG_ERROR("mount flush failed ino={} bytes={} error=\"{}\"", ino, inode.dirty_bytes, s.ToString());
    return s;
  }
  for (uint64_t id : under_replicated) commit.add_under_replicated_chunks(id);
  commit.set_min_size(max_end);
  commit.set_mtime_ns(NowNs());
  auto attr = meta_.CommitWrite(commit);
  if (!attr.ok()) {
    SPOOL_LOG_ERROR("mount commit failed ino={} error=\"{}\"", ino, attr.status().ToString());
    return attr.status();
  }
  inode.dirty.clear();
  inode.dirty_bytes = 0;
  inode.size = attr->size();
  inode.extents_valid = false;
  return Status::Ok();
}

Status FileStore::LoadExtentsLocked(uint64_t ino, Inode& inode) {
  if (inode.extents_valid) return Status::Ok();
  auto reply = meta_.GetExtents(ino);
  if (!reply.ok()) return reply.status();
  inode.extents.assign(reply->extents().begin(), reply->extents().end());
  inode.extents_valid = true;
  if (inode.dirty.empty())
    inode.size = reply->attr().size();
  else
    inode.size = std::max<uint64_t>(inode.size, reply->attr().size());
  return Status::Ok();
}

Result<std::string> FileStore::Read(uint64_t ino, uint64_t offset, size_t size) {
  auto inode = FindOrAdd(ino);
  std::vector<proto::Extent> extents;
  uint64_t file_size;
  {
    std::lock_guard lock(inode->mu);
    auto s = LoadExtentsLocked(ino, *inode);
    if (!s.ok()) return s;
    file_size = inode->size;
    if (offset >= file_size) return std::string();
    size = static_cast<size_t>(std::min<uint64_t>(size, file_size - offset));
    uint64_t end = offset + size;
    for (const auto& e : inode->extents)
      if (e.file_offset() < end && e.file_offset() + e.length() > offset) extents.push_back(e);
  }
  std::string out(size, '\0');
  uint64_t end = offset + size;
  for (const auto& e : extents) {
    auto chunk = chunks_.ReadChunk(e.chunk_id(), e.chunk_crc32c(), e.chunk_length());
    if (!chunk.ok()) {
      SPOOL_LOG_ERROR("mount read failed ino={} chunk={} error=\"{}\"", ino, e.chunk_id(), chunk.status().ToString());
      return chunk.status();
    }
    uint64_t from = std::max<uint64_t>(offset, e.file_offset());
    uint64_t to = std::min<uint64_t>(end, e.file_offset() + e.length());
    uint64_t in_chunk = e.chunk_offset() + (from - e.file_offset());
    if (in_chunk + (to - from) > (*chunk)->size()) return Status::Error(EIO, "extent beyond its chunk");
    std::memcpy(out.data() + (from - offset), (*chunk)->data() + in_chunk, to - from);
  }
  std::lock_guard lock(inode->mu);
  for (const auto& [doff, bytes] : inode->dirty) {
    uint64_t dend = doff + bytes.size();
    if (dend <= offset || doff >= end) continue;
    uint64_t from = std::max(offset, doff), to = std::min(end, dend);
    std::memcpy(out.data() + (from - offset), bytes.data() + (from - doff), to - from);
  }
  return out;
}

Result<proto::Attr> FileStore::SetAttr(const proto::SetAttrRequest& request) {
  auto inode = Find(request.ino());
  if (!inode) {
    auto attr = meta_.SetAttr(request);
    return attr;
  }
  std::lock_guard lock(inode->mu);
  // Buffered bytes were written before this change: they go first.
  auto s = FlushLocked(request.ino(), *inode);
  if (!s.ok()) return s;
  auto attr = meta_.SetAttr(request);
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
  if (!inode->dirty.empty()) attr.set_size(std::max<uint64_t>(attr.size(), inode->size));
}

}  // namespace spool::client
