// BrickIdentity: who a brick directory belongs to, kept in DIR/BRICK.
//
//   spool-brick 1
//   uuid <brick uuid>
//   cluster-id <cluster id>
//
// The first start on an empty (or missing) directory formats it: a fresh uuid
// and the cluster id of the key file, written to a temporary file, fsynced and
// renamed into place. A directory of another cluster, or a non-empty directory
// without an identity file, is refused: a brick never adopts data it cannot
// vouch for.
#pragma once

#include <string>

#include "common/status.h"

namespace spool::brick {

struct BrickIdentity {
  std::string uuid;
  std::string cluster_id;

  // Reads DIR/BRICK, or formats DIR if it is empty. Errors: EEXIST for a
  // directory of another cluster or a non-empty unformatted one; EIO/errno
  // for file system errors; EBADMSG for a malformed identity file.
  static Result<BrickIdentity> OpenOrFormat(const std::string& dir, const std::string& cluster_id);
};

// A random (version 4) UUID, as text.
std::string NewUuid();

}  // namespace spool::brick
