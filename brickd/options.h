// BrickOptions: everything a brick daemon is started with, defaults in one
// place. main.cpp fills it from flags; tests and the benchmark fill it directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace spool::brick {

// Largest chunk a brick stores. A file is cut into chunks of at most this size.
constexpr uint32_t kMaxChunkBytes = 1u << 20;
// Placement groups are numbered below this bound (2^20), whatever the cluster's pg_count.
constexpr uint32_t kMaxPgCount = 1u << 20;

// RocksDB compresses every chunk on its own, with a fresh context. LZ4 is the
// default: measured here, zstd (level 3, RocksDB's) compressed text about 4x
// slower (125 vs 500 MB/s) and cost a rebuild a fifth of its speed (6,923 vs
// 8,827 chunks/s unthrottled), for 1.4x less space on text (8 KiB pieces of
// licence texts: 2.74x vs 1.91x). `--compression zstd` trades the CPU for space.
inline constexpr const char* kDefaultCompression = "lz4";

struct ChunkStoreOptions {
  // Directory of the RocksDB database (created if missing).
  std::string db_dir;
  // Puts are refused with ENOSPC while the file system holding db_dir has
  // fewer free bytes than this (plus the put's own size), so that deletes,
  // compaction and RocksDB's own bookkeeping still have room on a full disk.
  uint64_t reserve_bytes = 64ull << 20;
  // Memtable size per column family; also bounds the WAL between flushes.
  uint64_t write_buffer_size = 64ull << 20;
  // Blob file size: chunks are packed into files of about this size.
  uint64_t blob_file_size = 256ull << 20;
  // How chunk bytes are compressed in blob files: "zstd", "lz4" or "none".
  // Only new blob files use it; each file records its own.
  std::string compression = kDefaultCompression;
  // Most bytes the committer writes in one synced WriteBatch.
  uint64_t max_batch_bytes = 32ull << 20;
  // Most bytes of background writes (repair puts) in one synced WriteBatch
  // while clients write: a foreground put waits for at most one such batch.
  // (spool-bench rebuild, unthrottled, under a delivery load: 4 MiB gave p99
  // 5.7x idle, 512 KiB 3.9x, for 11% less rebuild speed.)
  uint64_t max_background_batch_bytes = 512ull << 10;
  // The same once no client put came for a while.
  uint64_t idle_background_batch_bytes = 4ull << 20;
  // Blob GC resumes once no background write came for this long.
  std::chrono::milliseconds blob_gc_resume_after{30000};
  // Puts queued for the committer beyond this are refused with EAGAIN.
  uint64_t max_queued_bytes = 256ull << 20;
  // Whether RocksDB may fallocate WAL and blob files ahead of use. Good on a
  // real disk; tests on a tiny tmpfs turn it off.
  bool allow_fallocate = true;
};

struct RepairOptions {
  // Bandwidth for pulling chunks from peers (repair, rebuild) while clients
  // use this brick. 0 = unlimited.
  // 24 MiB/s keeps the p99 of deliveries during a rebuild within 2x of idle
  // on a small shared 2-core test box with all bricks on it (spool-bench
  // rebuild, 200k messages, 15 s idle: 48 MiB/s gave 2.1-2.5x once cheaper
  // CRCs had made idle deliveries faster, 32 gave 1.7-2.0x, 24 gave
  // 1.5-1.7x, 16 gave 1.7x).
  uint64_t repair_bytes_per_sec = 24ull << 20;
  // Moves (a placement group that is changing bricks while its old copies
  // still exist: add, drain) are not urgent, every chunk still has all its
  // copies, so while clients use this brick they take at most this, within
  // repair_bytes_per_sec. A drain gives every remaining brick such work at
  // once. spool-bench rebalance, 100k messages, p99 of deliveries during the
  // move / idle (add 2 bricks, drain 1): moves at 24 MiB/s (the repair rate)
  // 1.86x / 2.08x; 12: 1.50-1.65x / 2.02-2.42x (four runs); 8: 1.32x / 1.65x;
  // 6: 1.46x / 1.70x. Quiet: unlimited, as repairs. 0 = no cap of its own.
  uint64_t move_bytes_per_sec = 8ull << 20;
  // The same once no client has used this brick for `clients_quiet_after`:
  // a rebuild on a quiet cluster (a night, a spare brick) goes at full
  // speed and slows down as soon as mail flows again. 0 = unlimited.
  uint64_t repair_quiet_bytes_per_sec = 0;
  std::chrono::milliseconds clients_quiet_after{1000};
  // Placement groups repaired at once.
  int workers = 2;
  // Payload of one bulk read from a peer.
  uint64_t max_request_bytes = 4ull << 20;
  // Bulk reads outstanding to one peer per task, so that the peer reads the
  // next batch while this brick writes the last one.
  int reads_in_flight = 2;
  // Batches per task queued for writing here at once (flow control: a batch
  // counts until it is in the memtable; durability comes with the next flush).
  int puts_in_flight = 2;
  // Bandwidth of the scrubber's reads. 0 = unlimited.
  uint64_t scrub_bytes_per_sec = 16ull << 20;
  // Time between two scrub passes; 0 = only when requested.
  std::chrono::seconds scrub_interval{7 * 24 * 3600};
  // A failed task (a peer unreachable, a full disk) is retried after this.
  std::chrono::milliseconds retry_after{2000};
  std::chrono::milliseconds rpc_timeout{15000};
  // Where the generation of the last scrub started is kept across restarts
  // (the daemon uses its data directory).
  std::string state_dir;
};

// Deleting the copies of placement groups this brick no longer holds
// (brickd/pg_gc.h).
struct PgGcOptions {
  // How long a PG must have been gone from this brick (in every map it saw)
  // before its chunks are deleted.
  std::chrono::milliseconds delay{30000};
  // Emptied PGs are listed again this often (late writes from stale mounts).
  std::chrono::milliseconds recheck{600000};
  // Deletes per second. 0 = unlimited.
  uint64_t chunks_per_sec = 20000;
};

struct BrickOptions {
  std::string data_dir;                // --data: the brick's directory (identity file + db/)
  std::string listen = "127.0.0.1:7100";  // --listen HOST:PORT
  std::string cluster_key_file;        // --cluster-key FILE
  std::string meta_address;            // --meta HOST:PORT; empty = run without meta
  std::string failure_domain;          // --failure-domain; empty = this host's name
  std::string advertise;               // --advertise HOST:PORT; empty = listen
  uint64_t reserve_bytes = 64ull << 20;  // --reserve-bytes
  std::string compression = kDefaultCompression;  // --compression
  // --threads: RPC io threads. Two: one may wait on the disk for a read
  // while the other serves; each more adds a thread hand-off to requests
  // (on a 2-core box, 4 threads cost a third of the random-read rate).
  int threads = 2;
  uint64_t background_slice_kib = 512;  // --background-slice-kib: ChunkStoreOptions::max_background_batch_bytes
  RepairOptions repair;                // --repair-mbps, --repair-workers, --scrub-mbps, --scrub-interval-hours
  PgGcOptions gc;                      // --gc-delay-ms, --gc-chunks-per-sec
  std::string log_level = "info";      // --log-level
};

}  // namespace spool::brick
