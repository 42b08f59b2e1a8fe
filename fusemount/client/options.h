// MountOptions: every tunable of the client, defaults documented here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/extents.h"

namespace spool::client {

struct MountOptions {
  std::string meta_address;      // host:port of spool-meta
  std::string cluster_key_path;  // the cluster key file
  // How long a meta or brick call keeps retrying through an outage before it
  // fails with EIO (an NFS "hard" mount, bounded): mail programs see a pause.
  std::chrono::milliseconds hard_timeout{60000};
  // Deadline of one RPC attempt; a dead brick costs at most this on a read.
  std::chrono::milliseconds rpc_timeout{5000};
  // Copies that must be durable before a write is acknowledged (capped at
  // the placement group's size). All live copies are always attempted.
  uint32_t write_quorum = 2;
  // Per-inode write-back buffer; a full buffer is flushed to the bricks.
  size_t inode_buffer_bytes = 8u << 20;
  // A 1 MiB slot flushed in this many pieces (or with 1 MiB of bytes in
  // pieces) since its last compaction, or holding more than twice this many
  // extents whoever wrote them, is compacted in the background; 0 = never. Not sooner: each compaction rewrites the whole slot on every
  // copy, so a lower bound trades write and read capacity for fewer extents.
  uint32_t compact_after_pieces = 16;
  // Chunk ids fetched from meta per allocation.
  uint32_t chunk_id_batch = 1024;
  // Immutable chunks read recently, kept in memory (always valid).
  size_t chunk_cache_bytes = 32u << 20;
  // Kernel attribute / entry cache lifetimes. Long, because meta's
  // invalidations tell the kernel of every other mount's change at once;
  // the lifetime only bounds staleness after meta restarts (a new stream).
  double attr_timeout_s = 60.0;
  double entry_timeout_s = 60.0;
  // Follow other mounts' changes through meta's invalidation stream.
  bool invalidations = true;
  // Diagnostics: apply them this late, as a mount far behind would.
  std::chrono::milliseconds invalidation_delay{0};
  std::string host_name;  // reported to meta for the session
};

constexpr uint32_t kMaxChunkBytes = 1u << 20;
// Chunks up to this size are always read whole (and cached); from larger
// ones a read of an eighth or less fetches just its range.
constexpr uint32_t kWholeChunkReadBytes = 128u << 10;

}  // namespace spool::client
