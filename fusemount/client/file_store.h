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
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fusemount/client/chunk_client.h"
#include "fusemount/client/meta_client.h"
#include "fusemount/client/options.h"
#include "spool.pb.h"

namespace spool::client {

class FileStore {
 public:
  FileStore(const MountOptions& options, MetaClient& meta, ChunkClient& chunks);

  // A file was opened (or created, with its attributes from meta).
  Result<proto::Attr> Open(uint64_t ino);
  void Created(const proto::Attr& attr);
  // The last reference from this descriptor is gone; flushes what is left.
  Status Release(uint64_t ino);

  Status Write(uint64_t ino, uint64_t offset, std::string_view data);
  Result<std::string> Read(uint64_t ino, uint64_t offset, size_t size);
  Status Flush(uint64_t ino);
  // Applies a setattr through meta; a size change flushes first.
  Result<proto::Attr> SetAttr(const proto::SetAttrRequest& request);
  // Corrects attributes from meta with what only this mount knows yet.
  void Overlay(proto::Attr& attr);
  // One inode number per open descriptor (for MetaClient's re-registration).
  std::vector<uint64_t> OpenDescriptors();

 private:
  struct Inode {
    std::mutex mu;  // guards everything below; held across a flush
    // Atomic so that OpenDescriptors() reads it without `mu`: that runs on
    // RPC callback threads, and `mu` may be held by a thread waiting for an
    // RPC reply (a flush), which would then never arrive.
    std::atomic<int> opens{0};
    std::map<uint64_t, std::string> dirty;  // offset -> bytes, non-overlapping
    size_t dirty_bytes = 0;
    uint64_t size = 0;  // meta's size, grown by buffered writes
    bool extents_valid = false;
    std::vector<proto::Extent> extents;  // sorted by file_offset
  };

  std::shared_ptr<Inode> Find(uint64_t ino);
  std::shared_ptr<Inode> FindOrAdd(uint64_t ino);
  Status FlushLocked(uint64_t ino, Inode& inode);
  Status LoadExtentsLocked(uint64_t ino, Inode& inode);
  static void AddDirty(Inode& inode, uint64_t offset, std::string_view data);

  MountOptions options_;
  MetaClient& meta_;
  ChunkClient& chunks_;
  std::mutex mu_;  // guards inodes_
  std::unordered_map<uint64_t, std::shared_ptr<Inode>> inodes_;
};

}  // namespace spool::client
