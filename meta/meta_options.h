// MetaOptions: every tunable of the metadata service, with its default, in
// one place. spool-meta's flags map 1:1 onto these fields.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace spool::meta {

struct MetaOptions {
  // RocksDB directory. An empty directory is formatted for the cluster named
  // in the key file; a directory of another cluster is refused.
  std::string data_dir;
  // host:port to listen on (port 0 picks a free one).
  std::string listen = "127.0.0.1:7000";
  // Cluster key file (cluster id + secret) every connection must prove.
  std::string cluster_key_file;

  // Fixed at format time; ignored (with a warning) for an existing data dir.
  uint32_t pg_count = 256;  // placement groups
  uint32_t replicas = 3;    // copies of each chunk (R)

  // A brick that has not heartbeaten for this long is marked down.
  std::chrono::milliseconds brick_down_after{5000};
  // A brick down for this long (the grace period) is taken out: its PGs move
  // to other bricks and are rebuilt from the surviving copies.
  std::chrono::milliseconds brick_out_after{600000};
  // A brick in maintenance (`spoolctl maintenance ID on`) may be away this
  // long before it is taken out.
  std::chrono::milliseconds maintenance_out_after{4 * 3600 * 1000};
  // A new brick joins placement when it registers; false: it waits for
  // `spoolctl add-brick ID`.
  bool auto_join = true;
  // A placement group that moved is copied to its new member only this long
  // after the map changed, once every mount writes to the new members.
  std::chrono::milliseconds move_settle{3000};
  // A client session that has not been renewed for this long expires; its
  // opens and locks are dropped. Also the lease handed to clients.
  std::chrono::milliseconds session_timeout{30000};
  // How often the deletion drainer looks at the queue when it is idle.
  std::chrono::milliseconds drain_interval{500};

  // io threads serving RPCs (reads run on them; mutations go to the applier).
  int threads = 2;
  std::string log_level = "info";

  // Operation-log entries kept (the tail a follower or a debugger can read).
  uint64_t op_log_tail = 100000;
};

}  // namespace spool::meta
