// spoolctl: the operator's view of a cluster. Thin: each subcommand is one
// RPC to meta and a printout (with --wait, repeated until the work is done).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/cluster_key.h"
#include "common/log.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tools/ctl/status_format.h"

namespace {

using spool::proto::StatusReply;

constexpr auto kCallTimeout = std::chrono::milliseconds(5000);

int Fail(const std::string& what, const spool::Status& s) {
  std::fprintf(stderr, "spoolctl: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

// Polls status every second until `done` says so or `timeout_s` passes,
// printing `line` each time. Returns the exit code.
int WaitUntil(spool::rpc::RpcClient& client, int timeout_s, const std::function<bool(const StatusReply&)>& done,
              const std::function<std::string(const StatusReply&)>& line) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    StatusReply st;
    if (auto s = client.CallSync(spool::rpc::Method::kStatus, spool::proto::Empty(), &st, {}, nullptr, kCallTimeout);
        !s.ok())
      return Fail("status", s);
    std::printf("%s\n", line(st).c_str());
    std::fflush(stdout);
    if (done(st)) return 0;
    if (timeout_s > 0 && std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "spoolctl: not done after %d s\n", timeout_s);
      return 2;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

std::string RepairLine(const StatusReply& st) {
  const auto& r = st.repair();
  const double fraction = r.pgs_pending() == 0 ? 1.0
                          : r.wave_marked()   ? static_cast<double>(r.wave_done()) / r.wave_marked()
                                              : 0.0;
  return spool::ctl::ProgressBar(fraction, 30) + "  " + std::to_string(r.pgs_pending()) + " groups pending, " +
         std::to_string(r.chunks_pending()) + " chunks to copy, " + std::to_string(st.pgs_degraded()) +
         " degraded, ETA " + spool::ctl::Duration(r.eta_ms());
}

bool ScrubDone(const StatusReply& st, uint64_t generation) {
  for (const auto& b : st.map().bricks()) {
    if (b.state() != spool::proto::BRICK_UP) continue;
    bool finished = false;
    for (const auto& w : st.brick_work())
      if (w.brick_id() == b.id())
        finished = w.scrub().generation() >= generation && !w.scrub().running() && w.scrub().passes_completed() > 0;
    if (!finished) return false;
  }
  return true;
}

std::string ScrubLine(const StatusReply& st) {
  uint64_t checked = 0, total = 0, corrupt = 0, rewritten = 0;
  for (const auto& w : st.brick_work()) {
    checked += w.scrub().chunks_checked();
    total += std::max(w.scrub().chunks_total(), w.scrub().chunks_checked());
    corrupt += w.scrub().corrupt_found();
    rewritten += w.repair().corrupt_rewritten();
  }
  return spool::ctl::ProgressBar(total ? static_cast<double>(checked) / static_cast<double>(total) : 0.0, 30) + "  " +
         std::to_string(checked) + "/" + std::to_string(total) + " chunks checked, " + std::to_string(corrupt) +
         " corrupt found, " + std::to_string(rewritten) + " rewritten";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spoolctl: administer a spoolfs cluster"};
  std::string meta = "127.0.0.1:7000", key_file;
  bool json = false;
  app.add_option("--meta", meta, "metadata service host:port")->capture_default_str();
  app.add_option("--cluster-key", key_file, "cluster key file")->required();
  app.add_flag("--json", json, "print JSON instead of text");
  auto* status = app.add_subcommand("status", "bricks, placement groups, repair and scrub progress, namespace, queues");
  auto* heal = app.add_subcommand("heal", "show placement groups waiting for repair; --all forces a full pass");
  bool heal_all = false, heal_wait = false, scrub_wait = false;
  int timeout_s = 0;
  heal->add_flag("--all", heal_all, "mark every placement group: each brick diffs it against its peers");
  heal->add_flag("--wait", heal_wait, "then show progress until nothing is pending");
  heal->add_option("--timeout", timeout_s, "give up waiting after this many seconds (0 = never)");
  auto* scrub = app.add_subcommand("scrub", "start a scrub pass on every brick now");
  scrub->add_flag("--wait", scrub_wait, "then show progress until every brick finished");
  scrub->add_option("--timeout", timeout_s, "give up waiting after this many seconds (0 = never)");
  // --json also after the subcommand, as in `spoolctl status --json`.
  for (auto* sub : {status, heal}) sub->add_flag("--json", json, "print JSON instead of text");
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
  int rc = 0;
  if (status->parsed()) {
    StatusReply reply;
    auto s = client->CallSync(spool::rpc::Method::kStatus, spool::proto::Empty(), &reply, {}, nullptr, kCallTimeout);
    if (!s.ok()) {
      rc = Fail("status from " + meta, s);
    } else {
      std::fputs((json ? spool::ctl::StatusJson(reply) : spool::ctl::StatusText(reply)).c_str(), stdout);
    }
  } else if (heal->parsed()) {
    spool::proto::HealRequest request;
    request.set_all(heal_all);
    spool::proto::HealReply reply;
    auto s = client->CallSync(spool::rpc::Method::kHeal, request, &reply, {}, nullptr, kCallTimeout);
    if (!s.ok()) {
      rc = Fail("heal", s);
    } else {
      std::fputs((json ? spool::ctl::HealJson(reply) : spool::ctl::HealText(reply)).c_str(), stdout);
      if (heal_wait)
        rc = WaitUntil(*client, timeout_s, [](const StatusReply& st) { return st.repair().pgs_pending() == 0; },
                       RepairLine);
    }
  } else if (scrub->parsed()) {
    spool::proto::ScrubReply reply;
    auto s = client->CallSync(spool::rpc::Method::kScrub, spool::proto::Empty(), &reply, {}, nullptr, kCallTimeout);
    if (!s.ok()) {
      rc = Fail("scrub", s);
    } else {
      std::printf("scrub: generation %llu requested; bricks start within a heartbeat\n",
                  static_cast<unsigned long long>(reply.scrub_generation()));
      if (scrub_wait)
        rc = WaitUntil(
            *client, timeout_s,
            [g = reply.scrub_generation()](const StatusReply& st) { return ScrubDone(st, g); }, ScrubLine);
    }
  }
  client->Close();
  return rc;
}
