// spoolctl: the operator's view of a cluster. Thin: each subcommand is one
// RPC to meta and a printout.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/cluster_key.h"
#include "common/log.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tools/ctl/status_format.h"

int main(int argc, char** argv) {
  CLI::App app{"spoolctl: administer a spoolfs cluster"};
  std::string meta = "127.0.0.1:7000", key_file;
  bool json = false;
  app.add_option("--meta", meta, "metadata service host:port")->capture_default_str();
  app.add_option("--cluster-key", key_file, "cluster key file")->required();
  app.add_flag("--json", json, "print JSON instead of text");
  auto* status = app.add_subcommand("status", "bricks, placement groups, namespace size, queues, sessions");
  // Also after the subcommand, as in `spoolctl status --json`.
  status->add_flag("--json", json, "print JSON instead of text");
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  spool::InitLogging("warn");  // connection chatter is not output
  auto key = spool::ClusterKey::Load(key_file);
  if (!key.ok()) {
    std::fprintf(stderr, "spoolctl: %s\n", key.status().ToString().c_str());
    return 1;
  }
  spool::rpc::IoRuntime io(1);
  auto client = spool::rpc::RpcClient::Create(io.io(), meta, *key);
  if (status->parsed()) {
    spool::proto::StatusReply reply;
    auto s = client->CallSync(spool::rpc::Method::kStatus, spool::proto::Empty(), &reply, {}, nullptr,
                              std::chrono::milliseconds(5000));
    client->Close();
    if (!s.ok()) {
      std::fprintf(stderr, "spoolctl: status from %s: %s\n", meta.c_str(), s.ToString().c_str());
      return 1;
    }
    std::fputs((json ? spool::ctl::StatusJson(reply) : spool::ctl::StatusText(reply)).c_str(), stdout);
  }
  return 0;
}
