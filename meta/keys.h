// RocksDB key layout of meta. Integers are big-endian so that byte order is
// numeric order: a directory listing and a file's extents are prefix scans.
//
//   F                        FormatRecord (cluster id, pg count, replicas)
//   C                        Counters (next ino, next chunk id, op seq, ...)
//   I <ino>                  InodeRecord
//   D <parent> <name>        DirentValue (child ino + type)
//   E <ino> <slot>           ExtentList of file range [slot, slot+1) MiB
//   X <ino> <name>           xattr value
//   O <ino>                  orphan: nlink 0 but still open somewhere
//   Q <chunk_id>             chunk waiting to be deleted from its bricks
//   R <chunk_id>             chunk copy to repair (under-replicated or bad)
//   L <seq>                  MetaOp, the operation log (bounded tail), in its
//                            own column family "oplog"
//   B <brick_id:BE32>        BrickEntry (registry; not in the op log)
//   G                        map epoch (BE64)
//   A <block>                chunk id block held by a session: BE64 session,
//                            then a bitmap of the ids commits referenced
//   Z <block>                chunk id block reclaimed when its session ended
//
// The deletion queue is keyed by chunk id rather than by a sequence number:
// a chunk is queued at most once, and chunks_deleted removes exactly its keys.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/extents.h"

namespace spool::meta::keys {

constexpr uint64_t kRootIno = 1;
// Chunk ids handed to a session are tracked in aligned blocks of this many.
constexpr uint64_t kChunkIdsPerBlock = 1024;

inline std::string Format() { return "F"; }
inline std::string Counters() { return "C"; }
inline std::string Epoch() { return "G"; }

inline std::string WithIno(char tag, uint64_t ino) {
  std::string k(1, tag);
  PutBE64(k, ino);
  return k;
}
inline std::string Inode(uint64_t ino) { return WithIno('I', ino); }
inline std::string DirPrefix(uint64_t parent) { return WithIno('D', parent); }
inline std::string Dirent(uint64_t parent, std::string_view name) {
  std::string k = DirPrefix(parent);
  k.append(name);
  return k;
}
inline std::string ExtentPrefix(uint64_t ino) { return WithIno('E', ino); }
inline std::string Extents(uint64_t ino, uint64_t slot) {
  std::string k = ExtentPrefix(ino);
  PutBE64(k, slot);
  return k;
}
inline std::string XattrPrefix(uint64_t ino) { return WithIno('X', ino); }
inline std::string Xattr(uint64_t ino, std::string_view name) {
  std::string k = XattrPrefix(ino);
  k.append(name);
  return k;
}
inline std::string Orphan(uint64_t ino) { return WithIno('O', ino); }
inline std::string DeleteQueue(uint64_t chunk_id) { return WithIno('Q', chunk_id); }
inline std::string Repair(uint64_t chunk_id) { return WithIno('R', chunk_id); }
inline std::string OpLog(uint64_t seq) { return WithIno('L', seq); }
inline std::string AllocatedBlock(uint64_t block) { return WithIno('A', block); }
inline std::string ReclaimedBlock(uint64_t block) { return WithIno('Z', block); }
inline std::string Brick(uint32_t id) {
  std::string k(1, 'B');
  PutBE32(k, id);
  return k;
}

// Dirent value: BE64 child ino, BE32 type (S_IFMT bits).
inline std::string DirentValue(uint64_t ino, uint32_t type) {
  std::string v;
  PutBE64(v, ino);
  PutBE32(v, type);
  return v;
}

// The first key after every key that starts with `prefix`.
inline std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& c = prefix.back();
    if (static_cast<unsigned char>(c) != 0xff) {
      ++c;
      return prefix;
    }
    prefix.pop_back();
  }
  return prefix;
}

}  // namespace spool::meta::keys
