// spool-bench meta: durable metadata mutations per second over RPC, and the
// time to list a 100,000-entry directory.
//
// Starts a real spool-meta in a temp dir (or uses --meta ADDR --cluster-key F),
// then for 1, 8 and 32 concurrent clients (each its own RpcClient and thread)
// runs creates, renames, lookups and unlinks, each acknowledged only when
// durable. Prints parameters, figures, and ratios to the goal.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "common/cluster_key.h"
#include "common/log.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tools/bench/bench.h"

namespace spool::bench {
namespace {

using Clock = std::chrono::steady_clock;
using rpc::Method;

constexpr double kGoalMutationsPerSec = 10000;
constexpr double kGoalReaddirSeconds = 1.0;

// A spool-meta child process in a scratch directory.
class LocalMeta {
 public:
  ~LocalMeta() { Stop(); }
  Status Start(const std::string& binary, int port) {
    char tmpl[] = "/tmp/spool-bench-meta.XXXXXX";
    if (!mkdtemp(tmpl)) return Status::Error(errno, "mkdtemp");
    dir_ = tmpl;
    key_file_ = dir_ + "/cluster.key";
    if (auto k = ClusterKey::Generate(key_file_, "bench"); !k.ok()) return k.status();
    address_ = "127.0.0.1:" + std::to_string(port);
    pid_ = fork();
    if (pid_ < 0) return Status::Error(errno, "fork");
    if (pid_ == 0) {
      std::string data = dir_ + "/data";
      execl(binary.c_str(), binary.c_str(), "--data", data.c_str(), "--listen", address_.c_str(), "--cluster-key",
            key_file_.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
      _exit(127);
    }
    return Status::Ok();
  }
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }
  const std::string& address() const { return address_; }
  const std::string& key_file() const { return key_file_; }

 private:
  pid_t pid_ = -1;
  std::string dir_, key_file_, address_;
};

// Runs fn(client_index, op_index) for `total` ops spread over `clients`
// threads; returns ops per second, or a negative number on the first error.
double RunPhase(std::vector<std::shared_ptr<rpc::RpcClient>>& clients, size_t total,
                const std::function<Status(rpc::RpcClient&, size_t, size_t)>& fn, std::string* error) {
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  const size_t per = total / clients.size();
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < clients.size(); ++c) {
    threads.emplace_back([&, c] {
      for (size_t i = 0; i < per && !failed; ++i) {
        auto s = fn(*clients[c], c, i);
        if (!s.ok()) {
          std::lock_guard lock(error_mu);
          if (!failed.exchange(true)) *error = s.ToString();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  return failed ? -1 : static_cast<double>(per * clients.size()) / secs;
}

std::string Name(const char* prefix, size_t c, size_t i) {
  return std::string(prefix) + std::to_string(c) + "." + std::to_string(i);
}

std::string SelfDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

}  // namespace

int RunMeta(int argc, char** argv) {
  CLI::App app{"spool-bench meta: metadata mutations/s and large readdir"};
  std::string meta, key_file, binary = SelfDir() + "/../../meta/spool-meta", clients_list = "1,8,32";
  size_t ops_per_client = 1000, max_ops = 32000, readdir_entries = 100000;
  uint32_t readdir_page = 1000;
  app.add_option("--meta", meta, "use a running spool-meta at host:port (default: start one)");
  app.add_option("--cluster-key", key_file, "cluster key file (with --meta)");
  app.add_option("--meta-binary", binary, "spool-meta to start")->capture_default_str();
  app.add_option("--clients", clients_list, "concurrency levels, comma separated")->capture_default_str();
  app.add_option("--ops-per-client", ops_per_client, "ops per client per phase")->capture_default_str();
  app.add_option("--max-ops", max_ops, "cap on ops per phase")->capture_default_str();
  app.add_option("--readdir-entries", readdir_entries, "entries in the big directory")->capture_default_str();
  app.add_option("--readdir-page", readdir_page, "entries per readdir request")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  InitLogging("warn");

  LocalMeta local;
  if (meta.empty()) {
    int port = 20000 + static_cast<int>(getpid() % 20000);
    if (auto s = local.Start(binary, port); !s.ok()) {
      std::fprintf(stderr, "spool-bench meta: %s\n", s.ToString().c_str());
      return 1;
    }
    meta = local.address();
    key_file = local.key_file();
  }
  auto key = ClusterKey::Load(key_file);
  if (!key.ok()) {
    std::fprintf(stderr, "spool-bench meta: %s\n", key.status().ToString().c_str());
    return 1;
  }
  std::vector<size_t> levels;
  {
    std::stringstream ss(clients_list);
    std::string item;
    while (std::getline(ss, item, ',')) levels.push_back(std::stoul(item));
  }
  const unsigned cores = std::thread::hardware_concurrency();
  std::printf("spool-bench meta\n");
  std::printf("parameters: meta=%s%s clients=%s ops/client=%zu (max %zu/phase) readdir_entries=%zu page=%u cores=%u\n",
              meta.c_str(), local.address().empty() ? "" : " (started here)", clients_list.c_str(), ops_per_client,
              max_ops, readdir_entries, readdir_page, cores);
  std::printf("every mutation is acknowledged only after the WAL sync (durable)\n\n");

  rpc::IoRuntime io(2);
  rpc::RpcClientOptions copt;
  copt.default_timeout = std::chrono::milliseconds(30000);
  // Wait for the server.
  {
    auto probe = rpc::RpcClient::Create(io.io(), meta, *key, copt);
    auto deadline = Clock::now() + std::chrono::seconds(20);
    proto::StatfsReply st;
    while (!probe->CallSync(Method::kStatfs, proto::Empty(), &st).ok()) {
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "spool-bench meta: no meta at %s\n", meta.c_str());
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    probe->Close();
  }

  auto mkdir = [&](rpc::RpcClient& c, const std::string& name) -> Result<uint64_t> {
    proto::CreateRequest req;
    req.set_parent(1);
    req.set_name(name);
    req.set_mode(S_IFDIR | 0755);
    proto::EntryReply reply;
    if (auto s = c.CallSync(Method::kCreate, req, &reply); !s.ok()) return s;
    return reply.attr().ino();
  };

  std::printf("%8s %12s %12s %12s %12s %14s %10s\n", "clients", "create/s", "rename/s", "lookup/s", "unlink/s",
              "mutations/s", "vs goal");
  double best_mutations = 0;
  const std::string run_tag = std::to_string(getpid());
  for (size_t level : levels) {
    std::vector<std::shared_ptr<rpc::RpcClient>> clients;
    for (size_t i = 0; i < level; ++i) clients.push_back(rpc::RpcClient::Create(io.io(), meta, *key, copt));
    auto dir = mkdir(*clients[0], "bench-" + run_tag + "-c" + std::to_string(level));
    if (!dir.ok()) {
      std::fprintf(stderr, "mkdir: %s\n", dir.status().ToString().c_str());
      return 1;
    }
    const uint64_t d = *dir;
    const size_t total = std::min(max_ops, ops_per_client * level);
    std::string error;
    const double creates = RunPhase(clients, total, [&](rpc::RpcClient& c, size_t ci, size_t i) {
      proto::CreateRequest req;
      req.set_parent(d);
      req.set_name(Name("tmp.", ci, i));
      req.set_mode(S_IFREG | 0600);
      req.set_exclusive(true);
      proto::EntryReply reply;
      return c.CallSync(Method::kCreate, req, &reply);
    }, &error);
    const double renames = RunPhase(clients, total, [&](rpc::RpcClient& c, size_t ci, size_t i) {
      proto::RenameRequest req;
      req.set_old_parent(d);
      req.set_old_name(Name("tmp.", ci, i));
      req.set_new_parent(d);
      req.set_new_name(Name("new.", ci, i));
      return c.CallSync(Method::kRename, req);
    }, &error);
    const double lookups = RunPhase(clients, total, [&](rpc::RpcClient& c, size_t ci, size_t i) {
      proto::LookupRequest req;
      req.set_parent(d);
      req.set_name(Name("new.", ci, i));
      proto::EntryReply reply;
      return c.CallSync(Method::kLookup, req, &reply);
    }, &error);
    const double unlinks = RunPhase(clients, total, [&](rpc::RpcClient& c, size_t ci, size_t i) {
      proto::UnlinkRequest req;
      req.set_parent(d);
      req.set_name(Name("new.", ci, i));
      return c.CallSync(Method::kUnlink, req);
    }, &error);
    if (creates < 0 || renames < 0 || lookups < 0 || unlinks < 0) {
      std::fprintf(stderr, "error: %s\n", error.c_str());
      return 1;
    }
    const double mutations = 3.0 / (1.0 / creates + 1.0 / renames + 1.0 / unlinks);  // per-op harmonic mean
    best_mutations = std::max(best_mutations, mutations);
    std::printf("%8zu %12.0f %12.0f %12.0f %12.0f %14.0f %9.2fx\n", level, creates, renames, lookups, unlinks,
                mutations, mutations / kGoalMutationsPerSec);
    std::fflush(stdout);
    for (auto& c : clients) c->Close();
  }

  // The big directory: filled by 32 clients, then listed by one.
  std::vector<std::shared_ptr<rpc::RpcClient>> clients;
  for (int i = 0; i < 32; ++i) clients.push_back(rpc::RpcClient::Create(io.io(), meta, *key, copt));
  auto big = mkdir(*clients[0], "bench-" + run_tag + "-big");
  if (!big.ok()) return 1;
  std::string error;
  const auto fill_start = Clock::now();
  const double fill = RunPhase(clients, readdir_entries, [&](rpc::RpcClient& c, size_t ci, size_t i) {
    proto::CreateRequest req;
    req.set_parent(*big);
    req.set_name(Name("1700000000.M", ci, i) + ".host,S=4096:2,S");
    req.set_mode(S_IFREG | 0600);
    proto::EntryReply reply;
    return c.CallSync(Method::kCreate, req, &reply);
  }, &error);
  if (fill < 0) {
    std::fprintf(stderr, "fill: %s\n", error.c_str());
    return 1;
  }
  std::printf("\nfilled %zu entries in %.1f s (%.0f creates/s)\n", readdir_entries,
              std::chrono::duration<double>(Clock::now() - fill_start).count(), fill);
  for (bool plus : {false, true}) {
    const auto start = Clock::now();
    size_t seen = 0, requests = 0;
    std::string after;
    for (;;) {
      proto::ReaddirRequest req;
      req.set_ino(*big);
      req.set_after_name(after);
      req.set_max_entries(readdir_page);
      req.set_plus(plus);
      proto::ReaddirReply reply;
      if (auto s = clients[0]->CallSync(Method::kReaddir, req, &reply); !s.ok()) {
        std::fprintf(stderr, "readdir: %s\n", s.ToString().c_str());
        return 1;
      }
      ++requests;
      seen += static_cast<size_t>(reply.entries_size());
      if (reply.entries_size() > 0) after = reply.entries(reply.entries_size() - 1).name();
      if (reply.complete()) break;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("readdir%s of %zu entries: %.3f s in %zu requests (%.0f entries/s) vs goal %.1f s: %.2fx\n",
                plus ? "plus" : "", seen, secs, requests, static_cast<double>(seen) / secs, kGoalReaddirSeconds,
                kGoalReaddirSeconds / secs);
  }
  for (auto& c : clients) c->Close();
  std::printf("\nbest durable mutations/s: %.0f = %.2fx the goal of %.0f\n", best_mutations,
              best_mutations / kGoalMutationsPerSec, kGoalMutationsPerSec);
  io.Stop();
  return 0;
}

}  // namespace spool::bench
