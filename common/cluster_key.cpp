#include "common/cluster_key.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/hex.h"

namespace spool {

Result<ClusterKey> ClusterKey::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(ENOENT, "cannot read cluster key file " + path);
  ClusterKey k;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name, value;
    fields >> name >> value;
    if (name == "cluster-id") {
      k.cluster_id = value;
    } else if (name == "key") {
      auto raw = HexDecode(value);
      if (!raw) return Status::Error(EINVAL, "cluster key file " + path + ": key is not hex");
      k.key = *raw;
    }
  }
  if (k.cluster_id.empty() || k.key.size() < 16)
    return Status::Error(EINVAL, "cluster key file " + path + ": needs 'cluster-id' and a key of >= 16 bytes");
  return k;
}

Result<ClusterKey> ClusterKey::Generate(const std::string& path, const std::string& cluster_id) {
  ClusterKey k;
  k.cluster_id = cluster_id;
  k.key.resize(32);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(k.key.data()), 32) != 1)
    return Status::Error(EIO, "RAND_bytes failed");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return Status::Error(errno, "create cluster key file " + path);
  std::string text = "cluster-id " + cluster_id + "\nkey " + HexEncode(k.key) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Status::Error(EIO, "write cluster key file " + path);
  return k;
}

}  // namespace spool
