// A real spool-meta process for tests: started on a free port in a temp dir,
// killable with SIGKILL and restartable on the same data dir, plus a helper
// to make RPC clients to it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tests/support/process.h"

namespace spool::testing {

class MetaProcess {
 public:
  explicit MetaProcess(std::vector<std::string> extra_args = {}) : extra_args_(std::move(extra_args)) {
    key_file_ = MakeClusterKey(dir_);
    key_ = ClusterKey::Load(key_file_).value();
    port_ = FreePort();
  }

  bool Start() {
    std::vector<std::string> argv = {BinaryPath("meta/spool-meta"), "--data", dir_.Sub("data"), "--listen",
                                     address(), "--cluster-key", key_file_, "--log-level", "warn"};
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    if (!process_.Start(argv, dir_.Sub("meta.log"))) return false;
    return WaitForPort(port_);
  }
  void Kill(int signal = 9) {
    process_.Kill(signal);
    process_.Wait();
  }
  int Stop() {
    process_.Kill(15);
    return process_.Wait();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const ClusterKey& key() const { return key_; }
  const std::string& key_file() const { return key_file_; }
  const TempDir& dir() const { return dir_; }
  std::string log() const { return ReadFile(dir_.Sub("meta.log")); }

  std::shared_ptr<rpc::RpcClient> Connect(rpc::IoRuntime& io) const {
    return rpc::RpcClient::Create(io.io(), address(), key_);
  }

 private:
  TempDir dir_;
  std::vector<std::string> extra_args_;
  std::string key_file_;
  ClusterKey key_;
  int port_ = 0;
  ChildProcess process_;
};

}  // namespace spool::testing
