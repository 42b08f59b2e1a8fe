#include "tests/support/cluster.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"

namespace spool::testing {

bool IsFuseMounted(const std::string& path) {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, target, type;
    fields >> source >> target >> type;
    if (target == path && type.rfind("fuse", 0) == 0) return true;
  }
  return false;
}

LocalCluster::LocalCluster(ClusterConfig config) : config_(std::move(config)) {
  key_path_ = MakeClusterKey(dir_);
  meta_port_ = FreePort();
  meta_address_ = "127.0.0.1:" + std::to_string(meta_port_);
  for (int i = 0; i < config_.bricks; ++i) {
    bricks_.push_back(std::make_unique<ChildProcess>());
    brick_ports_.push_back(FreePort());
  }
}

namespace {

// The last `lines` lines of a daemon's log, without the lines every client
// disconnect writes, which would bury everything else.
std::string LogTail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("client connection closed") != std::string::npos) continue;
    tail.push_back(std::move(line));
    if (tail.size() > lines) tail.pop_front();
  }
  std::string out;
  for (auto& l : tail) out += "  | " + l + "\n";
  return out;
}

}  // namespace

void LocalCluster::ReportOnFailure() {
  if (!::testing::Test::HasFailure()) return;
  // CI keeps no files of a failed run: what the daemons said goes to the test's output.
  std::string report = "=== the test failed; the daemons' last log lines (" + dir_.path() + ") ===\n";
  report += "meta (" + std::string(meta_.running() ? "running" : "not running") + "):\n" +
            LogTail(dir_.Sub("meta.log"), 20);
  for (size_t i = 0; i < bricks_.size(); ++i)
    report += "brick" + std::to_string(i) + " (" + (bricks_[i]->running() ? "running" : "not running") + "):\n" +
              LogTail(dir_.Sub("brick" + std::to_string(i) + ".log"), 30);
  for (const auto& m : mounts_)
    report += "mount " + m.path + ":\n" + LogTail(m.path + ".log", 20);
  std::fputs(report.c_str(), stderr);
}

LocalCluster::~LocalCluster() {
  ReportOnFailure();
  for (auto& m : mounts_) {
    if (m.process && m.process->running()) Unmount(m.path);
  }
  for (auto& b : bricks_) b->Kill(SIGKILL);
  meta_.Kill(SIGKILL);
  for (auto& b : bricks_) b->Wait();
  for (const auto& path : tmpfs_mounts_) {
    if (::umount2(path.c_str(), 0) != 0) ::umount2(path.c_str(), MNT_DETACH);
  }
}

bool LocalCluster::PutBrickOnTmpfs(int index, uint64_t bytes) {
  std::string path = brick_dir(index);
  ::mkdir(path.c_str(), 0755);
  std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
  if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) return false;
  tmpfs_mounts_.push_back(path);
  return true;
}

namespace {

// Calls one brick directly, as a tool would.
template <typename Request, typename Reply>
bool CallBrick(const std::string& key_path, const std::string& address, rpc::Method method, const Request& request,
               Reply* reply) {
  auto key = ClusterKey::Load(key_path);
  if (!key.ok()) return false;
  rpc::IoRuntime runtime(1);
  auto client = rpc::RpcClient::Create(runtime.io(), address, *key);
  auto s = client->CallSync(method, request, reply, {}, nullptr, std::chrono::seconds(5));
  client->Close();
  runtime.Stop();
  return s.ok();
}

}  // namespace

bool LocalCluster::BrickInfo(int index, proto::BrickInfoReply* reply) {
  return CallBrick(key_path_, brick_address(index), rpc::Method::kBrickInfo, proto::Empty(), reply);
}

int64_t LocalCluster::BrickChunkCount(int index) {
  proto::StatusReply status;
  if (!Status(&status)) return -1;
  auto key = ClusterKey::Load(key_path_);
  if (!key.ok()) return -1;
  rpc::IoRuntime runtime(1);
  auto client = rpc::RpcClient::Create(runtime.io(), brick_address(index), *key);
  int64_t count = 0;
  for (uint32_t pg = 0; pg < status.map().pg_count() && count >= 0; ++pg) {
    proto::ListChunksRequest request;
    request.set_pg(pg);
    request.set_max_entries(10000);
    for (;;) {
      proto::ListChunksReply reply;
      if (!client->CallSync(rpc::Method::kListChunks, request, &reply, {}, nullptr, std::chrono::seconds(5)).ok()) {
        count = -1;
        break;
      }
      count += reply.chunks_size();
      if (reply.complete() || reply.chunks_size() == 0) break;
      request.set_has_after(true);
      request.set_after_chunk_id(reply.chunks(reply.chunks_size() - 1).chunk_id());
    }
  }
  client->Close();
  runtime.Stop();
  return count;
}

bool LocalCluster::StartMeta() {
  std::vector<std::string> argv = {BinaryPath("meta/spool-meta"), "--data", dir_.Sub("meta"), "--listen",
                                   meta_address_, "--cluster-key", key_path_, "--replicas",
                                   std::to_string(config_.replicas)};
  argv.insert(argv.end(), config_.meta_args.begin(), config_.meta_args.end());
  if (!meta_.Start(argv, dir_.Sub("meta.log"))) return false;
  return WaitForPort(meta_port_);
}

void LocalCluster::KillMeta(int signal) {
  meta_.Kill(signal);
  meta_.Wait();
}

bool LocalCluster::StartBrick(int index) {
  std::string address = "127.0.0.1:" + std::to_string(brick_ports_[index]);
  std::vector<std::string> argv = {BinaryPath("brickd/spool-brickd"), "--data", brick_dir(index), "--listen",
                                   address, "--cluster-key", key_path_, "--meta", meta_address_,
                                   "--failure-domain", "brick" + std::to_string(index)};
  argv.insert(argv.end(), config_.brick_args.begin(), config_.brick_args.end());
  if (static_cast<size_t>(index) < brick_extra_args_.size())
    argv.insert(argv.end(), brick_extra_args_[index].begin(), brick_extra_args_[index].end());
  if (!bricks_[index]->Start(argv, dir_.Sub("brick" + std::to_string(index) + ".log"))) return false;
  return WaitForPort(brick_ports_[index]);
}

void LocalCluster::KillBrick(int index, int signal) {
  bricks_[index]->Kill(signal);
  bricks_[index]->Wait();
}

bool LocalCluster::Status(proto::StatusReply* reply) {
  auto key = ClusterKey::Load(key_path_);
  if (!key.ok()) return false;
  rpc::IoRuntime runtime(1);
  auto client = rpc::RpcClient::Create(runtime.io(), meta_address_, *key);
  auto s = client->CallSync(rpc::Method::kStatus, proto::Empty(), reply, {}, nullptr, std::chrono::seconds(5));
  client->Close();
  runtime.Stop();
  return s.ok();
}

bool LocalCluster::WaitBricksUp(int count, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    proto::StatusReply status;
    if (Status(&status)) {
      int up = 0;
      for (const auto& b : status.map().bricks()) up += b.state() == proto::BRICK_UP;
      if (up >= count) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

bool LocalCluster::Start() {
  if (!StartMeta()) return false;
  for (int i = 0; i < config_.bricks; ++i)
    if (!StartBrick(i)) return false;
  return WaitBricksUp(config_.bricks);
}

int LocalCluster::AddBrick(const std::vector<std::string>& extra_args, uint64_t tmpfs_bytes) {
  const int index = static_cast<int>(bricks_.size());
  bricks_.push_back(std::make_unique<ChildProcess>());
  brick_ports_.push_back(FreePort());
  brick_extra_args_.resize(bricks_.size());
  brick_extra_args_[index] = extra_args;
  if (tmpfs_bytes > 0 && !PutBrickOnTmpfs(index, tmpfs_bytes)) return -1;
  return StartBrick(index) ? index : -1;
}

uint32_t LocalCluster::BrickId(int index) {
  proto::StatusReply status;
  if (!Status(&status)) return 0;
  for (const auto& b : status.map().bricks())
    if (b.address() == brick_address(index)) return b.id();
  return 0;
}

int LocalCluster::Ctl(const std::vector<std::string>& args, std::string* output) {
  std::string cmd = BinaryPath("tools/ctl/spoolctl") + " --meta " + meta_address_ + " --cluster-key " + key_path_;
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string LocalCluster::Mount(const std::vector<std::string>& extra_args) {
  std::string path = dir_.Sub("mnt" + std::to_string(next_mount_++));
  ::mkdir(path.c_str(), 0755);
  std::vector<std::string> argv = {BinaryPath("fusemount/spoolfs"), "-f", "--meta", meta_address_, "--cluster-key",
                                   key_path_};
  argv.insert(argv.end(), config_.mount_args.begin(), config_.mount_args.end());
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.push_back(path);
  MountProcess m{path, std::make_unique<ChildProcess>()};
  if (!m.process->Start(argv, path + ".log")) return "";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!IsFuseMounted(path)) {
    if (std::chrono::steady_clock::now() > deadline || !m.process->running()) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  mounts_.push_back(std::move(m));
  return path;
}

pid_t LocalCluster::mount_pid(const std::string& mountpoint) const {
  for (const auto& m : mounts_)
    if (m.path == mountpoint && m.process->running()) return m.process->pid();
  return -1;
}

void LocalCluster::Unmount(const std::string& mountpoint) {
  for (auto& m : mounts_) {
    if (m.path != mountpoint) continue;
    std::string cmd = "fusermount3 -u " + mountpoint + " 2>/dev/null || umount -l " + mountpoint + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) m.process->Kill(SIGTERM);
    if (m.process->Wait(std::chrono::seconds(10)) == -1) m.process->Kill(SIGKILL);
    m.process->Wait();
  }
}

void LocalCluster::KillMount(const std::string& mountpoint) {
  for (auto& m : mounts_) {
    if (m.path != mountpoint) continue;
    m.process->Kill(SIGKILL);
    m.process->Wait();
    std::string cmd = "umount -l " + mountpoint + " 2>/dev/null";
    (void)std::system(cmd.c_str());
  }
}

}  // namespace spool::testing
