// ClientPool: one RpcClient per peer address, created on first use and kept
// (an RpcClient reconnects by itself). Used wherever a process talks to many
// bricks: the mount, meta's deletion drainer, a brick's repairer.
//
// Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/rpc/client.h"

namespace spool::rpc {

class ClientPool {
 public:
  ClientPool(asio::io_context& io, ClusterKey key, RpcClientOptions options)
      : io_(io), key_(std::move(key)), options_(std::move(options)) {}
  ~ClientPool() { CloseAll(); }
  ClientPool(const ClientPool&) = delete;
  ClientPool& operator=(const ClientPool&) = delete;

  std::shared_ptr<RpcClient> Get(const std::string& address) {
    std::lock_guard lock(mu_);
    auto& client = clients_[address];
    if (!client) client = RpcClient::Create(io_, address, key_, options_);
    return client;
  }

  void CloseAll() {
    std::lock_guard lock(mu_);
    for (auto& [address, client] : clients_) client->Close();
    clients_.clear();
  }

 private:
  asio::io_context& io_;
  const ClusterKey key_;
  const RpcClientOptions options_;
  std::mutex mu_;  // guards clients_
  std::unordered_map<std::string, std::shared_ptr<RpcClient>> clients_;
};

}  // namespace spool::rpc
