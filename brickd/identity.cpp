#include "brickd/identity.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/hex.h"
#include "common/log.h"

namespace spool::brick {
namespace {

constexpr char kIdentityFile[] = "BRICK";
constexpr char kMagic[] = "spool-brick";

Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "open " + path);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::Error(err, "fsync " + path);
  return Status::Ok();
}

Status WriteIdentity(const std::string& dir, const BrickIdentity& id) {
  std::string tmp = dir + "/" + kIdentityFile + ".tmp";
  std::string final_path = dir + "/" + kIdentityFile;
  std::string text = std::string(kMagic) + " 1\nuuid " + id.uuid + "\ncluster-id " + id.cluster_id + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Error(errno, "create " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) return Status::Error(err ? err : EIO, "write " + tmp);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) return Status::Error(errno, "rename " + tmp);
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

Result<BrickIdentity> ReadIdentity(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(EIO, "cannot read " + path);
  BrickIdentity id;
  std::string line;
  bool magic = false;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name, value;
    fields >> name >> value;
    if (name == kMagic) magic = value == "1";
    if (name == "uuid") id.uuid = value;
    if (name == "cluster-id") id.cluster_id = value;
  }
  if (!magic || id.uuid.empty() || id.cluster_id.empty())
    return Status::Error(EBADMSG, "brick identity file " + path + " is malformed");
  return id;
}

}  // namespace

std::string NewUuid() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("RAND_bytes failed");
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string hex = HexEncode(std::string_view(reinterpret_cast<char*>(b), sizeof b));
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

Result<BrickIdentity> BrickIdentity::OpenOrFormat(const std::string& dir, const std::string& cluster_id) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Error(ec.value(), "create data directory " + dir + ": " + ec.message());
  std::string path = dir + "/" + kIdentityFile;
  if (fs::exists(path, ec)) {
    auto id = ReadIdentity(path);
    if (!id.ok()) return id;
    if (id->cluster_id != cluster_id)
      return Status::Error(EEXIST, "data directory " + dir + " belongs to cluster '" + id->cluster_id +
                                       "' (brick " + id->uuid + "), but the cluster key is for cluster '" +
                                       cluster_id + "'; refusing to use it");
    return id;
  }
  bool empty = true;
  for (auto& entry : fs::directory_iterator(dir, ec)) {
    // A leftover temporary identity from an interrupted format is not data.
    if (entry.path().filename() == std::string(kIdentityFile) + ".tmp") continue;
    empty = false;
    break;
  }
  if (ec) return Status::Error(ec.value(), "list data directory " + dir + ": " + ec.message());
  if (!empty)
    return Status::Error(EEXIST, "data directory " + dir +
                                     " is not empty and has no BRICK identity file; refusing to format it");
  BrickIdentity id;
  id.uuid = NewUuid();
  id.cluster_id = cluster_id;
  if (auto s = WriteIdentity(dir, id); !s.ok()) return s;
  SPOOL_LOG_INFO("brickd formatted dir={} uuid={} cluster={}", dir, id.uuid, cluster_id);
  return id;
}

}  // namespace spool::brick
