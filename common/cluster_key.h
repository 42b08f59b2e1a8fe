// The cluster identity every connection proves in its handshake: a cluster
// id and a shared secret key, read from a key file:
//
//   cluster-id <name>
//   key <64 hex digits>
#pragma once

#include <string>

#include "common/status.h"

namespace spool {

struct ClusterKey {
  std::string cluster_id;
  std::string key;  // raw secret bytes (32)

  static Result<ClusterKey> Load(const std::string& path);
  // Writes a new key file with a random key, mode 0600.
  static Result<ClusterKey> Generate(const std::string& path, const std::string& cluster_id);
};

}  // namespace spool
