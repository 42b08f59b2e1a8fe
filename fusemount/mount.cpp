#include "fusemount/mount.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include <spdlog/sinks/basic_file_sink.h>

#include "common/log.h"
#include "common/rpc/runtime.h"
#include "fusemount/client/chunk_client.h"
#include "fusemount/client/file_store.h"
#include "fusemount/client/meta_client.h"
#include "fusemount/fuse_adapter.h"
#include "fusemount/invalidator.h"

namespace spool::client {

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: spoolfs --meta HOST:PORT --cluster-key FILE [options] MOUNTPOINT\n"
               "       spoolfs HOST:PORT MOUNTPOINT -o cluster_key=FILE[,options]   (as mount.fuse3 runs it)\n"
               "  --meta HOST:PORT       metadata service (or -o meta=HOST:PORT)\n"
               "  --cluster-key FILE     cluster key file (or -o cluster_key=FILE)\n"
               "  -f                     stay in the foreground\n"
               "  -d                     foreground with FUSE debug output\n"
               "  --threads N            FUSE worker threads (default 16)\n"
               "  --io-threads N         RPC threads (default: one per four cores, at least one)\n"
               "  --write-quorum N       copies durable before a write is acknowledged (default 2)\n"
               "  --hard-timeout-ms N    how long calls retry through an outage (default 60000)\n"
               "  --attr-timeout S       kernel attribute cache lifetime in seconds (default 60)\n"
               "  --entry-timeout S      kernel entry cache lifetime in seconds (default 60)\n"
               "  --no-invalidations     do not follow other mounts' changes as they happen (diagnostics:\n"
               "                         caches then rely on their lifetimes and the version check at open)\n"
               "  --invalidation-delay-ms N  apply those changes N ms late (diagnostics: a mount far behind)\n"
               "  --compact-after-pieces N  rewrite a 1 MiB range whole once it was flushed in N\n"
               "                         pieces (random overwrites, VM images; default 16, 0 = never)\n"
               "  --cpu-policy P         batch (default): threads run until they wait, fewer switches on\n"
               "                         a busy host; normal: a woken thread takes the CPU at once\n"
               "                         (also -o cpu_policy=P)\n"
               "  --log-level L          trace|debug|info|warn|error (default info)\n"
               "  --log-file FILE        log here (also -o log_file=FILE); a detached mount has no stderr\n"
               "  -o OPT[,OPT...]        mount options: allow_other, default_permissions (always on),\n"
               "                         _netdev and other fstab-only options are ignored\n");
}

CpuPolicy CpuPolicyOrThrow(std::string_view name) {
  auto policy = ParseCpuPolicy(name);
  if (!policy.ok()) throw std::invalid_argument(policy.status().message());
  return *policy;
}

// Options fstab and mount(8) pass that are ours or only meant for mount(8).
bool TakeOwnOption(const std::string& opt, MountCommand* c) {
  auto value = [&](const char* prefix) { return opt.substr(std::strlen(prefix)); };
  if (opt.rfind("meta=", 0) == 0) {
    c->options.meta_address = value("meta=");
  } else if (opt.rfind("cluster_key=", 0) == 0) {
    c->options.cluster_key_path = value("cluster_key=");
  } else if (opt.rfind("log_file=", 0) == 0) {
    c->log_file = value("log_file=");
  } else if (opt.rfind("cpu_policy=", 0) == 0) {
    c->cpu_policy = CpuPolicyOrThrow(value("cpu_policy="));
  } else if (opt.rfind("write_quorum=", 0) == 0) {
    c->options.write_quorum = static_cast<uint32_t>(std::stoul(value("write_quorum=")));
  } else if (opt == "_netdev" || opt == "auto" || opt == "noauto" || opt == "nofail" || opt == "defaults" ||
             opt == "rw" || opt == "user" || opt == "nouser" || opt.rfind("x-", 0) == 0 ||
             opt.rfind("comment=", 0) == 0) {
  } else {
    return false;
  }
  return true;
}

}  // namespace

bool ParseMountCommand(int argc, char** argv, MountCommand* c) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  c->options.host_name = host;
  // "spoolfs MOUNTPOINT", or as mount.fuse3 runs us for an fstab line of
  // type fuse.spoolfs: "spoolfs META_HOST:PORT MOUNTPOINT -o options".
  std::vector<std::string> positional;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--meta") {
        c->options.meta_address = next();
      } else if (a == "--cluster-key") {
        c->options.cluster_key_path = next();
      } else if (a == "-f") {
        c->foreground = true;
      } else if (a == "-d") {
        c->foreground = c->debug = true;
      } else if (a == "--threads") {
        c->threads = std::stoi(next());
      } else if (a == "--io-threads") {
        c->io_threads = std::stoi(next());
        if (c->io_threads < 1 || c->io_threads > 64) throw std::invalid_argument("--io-threads must be 1..64");
      } else if (a == "--write-quorum") {
        c->options.write_quorum = static_cast<uint32_t>(std::stoul(next()));
      } else if (a == "--hard-timeout-ms") {
        c->options.hard_timeout = std::chrono::milliseconds(std::stol(next()));
      } else if (a == "--compact-after-pieces") {
        c->options.compact_after_pieces = static_cast<uint32_t>(std::stoul(next()));
      } else if (a == "--no-invalidations") {
        c->options.invalidations = false;
      } else if (a == "--invalidation-delay-ms") {
        c->options.invalidation_delay = std::chrono::milliseconds(std::stol(next()));
      } else if (a == "--attr-timeout") {
        c->options.attr_timeout_s = std::stod(next());
      } else if (a == "--entry-timeout") {
        c->options.entry_timeout_s = std::stod(next());
      } else if (a == "--cpu-policy") {
        c->cpu_policy = CpuPolicyOrThrow(next());
      } else if (a == "--log-level") {
        c->log_level = next();
      } else if (a == "--log-file") {
        c->log_file = next();
      } else if (a == "-o") {
        std::stringstream opts(next());
        std::string opt;
        while (std::getline(opts, opt, ','))
          if (!opt.empty() && !TakeOwnOption(opt, c)) c->fuse_options.push_back(opt);
      } else if (a == "-h" || a == "--help") {
        Usage();
        return false;
      } else if (!a.empty() && a[0] != '-') {
        positional.push_back(a);
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
    if (positional.size() == 1) {
      c->mountpoint = positional[0];
    } else if (positional.size() == 2) {
      std::string source = positional[0];
      if (source.rfind("spoolfs#", 0) == 0) source = source.substr(8);
      c->options.meta_address = source;
      c->mountpoint = positional[1];
    } else if (positional.size() > 2) {
      throw std::invalid_argument("too many arguments");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spoolfs: %s\n", e.what());
    Usage();
    return false;
  }
  if (c->options.meta_address.empty() || c->options.cluster_key_path.empty() || c->mountpoint.empty()) {
    std::fprintf(stderr, "spoolfs: --meta, --cluster-key and a mountpoint are required\n");
    Usage();
    return false;
  }
  return true;
}

int RunMount(const MountCommand& command) {
  // The mount moves file data in buffers of up to 1 MiB on many threads.
  // glibc would raise its mmap threshold after the first such buffer is
  // freed and then keep them in per-thread arenas, so that a VM image's
  // sequential write left the mount at over 250 MiB resident. A fixed
  // threshold returns large buffers to the system when they are freed.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_ARENA_MAX, 4);
  InitLogging(command.log_level);
  if (auto s = ApplyCpuPolicy(command.cpu_policy); !s.ok())
    SPOOL_LOG_WARN("mount keeps the default cpu policy error=\"{}\"", s.ToString());
  auto key = ClusterKey::Load(command.options.cluster_key_path);
  if (!key.ok()) {
    std::fprintf(stderr, "spoolfs: %s\n", key.status().ToString().c_str());
    return 1;
  }
  // Check that meta answers before mounting, so that a wrong address or key
  // is a clear error now instead of a hung mount. The threads of this check
  // end before we daemonize (fork keeps only the calling thread).
  {
    rpc::IoRuntime probe_runtime(1);
    rpc::RpcClientOptions probe_options;
    probe_options.default_timeout = std::chrono::milliseconds(5000);
    auto probe = rpc::RpcClient::Create(probe_runtime.io(), command.options.meta_address, *key, probe_options);
    proto::ClusterMap map;
    auto s = probe->CallSync(rpc::Method::kGetMap, proto::GetMapRequest(), &map);
    probe->Close();
    probe_runtime.Stop();
    if (!s.ok()) {
      std::fprintf(stderr, "spoolfs: cannot reach meta at %s: %s\n", command.options.meta_address.c_str(),
                   s.ToString().c_str());
      return 1;
    }
  }

  std::vector<std::string> args = {"spoolfs", "-o", "fsname=spoolfs,subtype=spoolfs,default_permissions"};
  if (getuid() == 0) args.back() += ",allow_other";
  for (const auto& o : command.fuse_options) args.back() += "," + o;
  if (command.debug) args.push_back("-d");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  // The adapter needs the client objects, which need threads; they are
  // created after daemonizing and bound through this indirection.
  struct Holder {
    FuseAdapter* adapter = nullptr;
  };
  MountOptions options = command.options;
  rpc::IoRuntime* runtime = nullptr;
  std::unique_ptr<rpc::IoRuntime> runtime_owner;
  std::unique_ptr<MetaClient> meta;
  std::unique_ptr<ClusterView> view;
  std::unique_ptr<rpc::ClientPool> bricks;
  std::unique_ptr<ChunkClient> chunks;
  std::unique_ptr<FileStore> files;
  std::unique_ptr<FuseAdapter> adapter;
  // FuseAdapter's address is the session's userdata; construct it in place
  // later by keeping a stable storage slot.
  alignas(FuseAdapter) static unsigned char adapter_storage[sizeof(FuseAdapter)];

  fuse_session* se = fuse_session_new(&fargs, &FuseAdapter::Operations(), sizeof(fuse_lowlevel_ops), adapter_storage);
  if (!se) {
    std::fprintf(stderr, "spoolfs: bad FUSE options\n");
    return 1;
  }
  if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, command.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "spoolfs: cannot mount at %s\n", command.mountpoint.c_str());
    fuse_session_destroy(se);
    return 1;
  }
  fuse_daemonize(command.foreground ? 1 : 0);
  if (!command.log_file.empty()) {
    try {
      spdlog::set_default_logger(spdlog::basic_logger_mt("spoolfs", command.log_file));
      InitLogging(command.log_level);
    } catch (const std::exception& e) {
      SPOOL_LOG_ERROR("mount cannot open log file path={} error=\"{}\"", command.log_file, e.what());
    }
  }

  const int io_threads = command.io_threads > 0
                             ? command.io_threads
                             : std::max(1, static_cast<int>(std::thread::hardware_concurrency() / 4));
  runtime_owner = std::make_unique<rpc::IoRuntime>(io_threads);
  runtime = runtime_owner.get();
  meta = std::make_unique<MetaClient>(runtime->io(), options, *key);
  auto started = meta->Start();
  if (!started.ok()) {
    SPOOL_LOG_ERROR("mount cannot open a session with meta error=\"{}\"", started.ToString());
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  }
  view = std::make_unique<ClusterView>(*meta);
  (void)view->Refresh();
  view->StartAutoRefresh(std::chrono::milliseconds(1000));
  rpc::RpcClientOptions brick_rpc;
  brick_rpc.default_timeout = options.rpc_timeout;
  brick_rpc.component = "mount";
  brick_rpc.max_backoff = std::chrono::milliseconds(500);
  bricks = std::make_unique<rpc::ClientPool>(runtime->io(), *key, brick_rpc);
  chunks = std::make_unique<ChunkClient>(options, *meta, *view, *bricks);
  files = std::make_unique<FileStore>(options, *meta, *chunks);
  files->StartCompactor();
  meta->SetOpenFilesProvider([store = files.get()] { return store->OpenDescriptors(); });
  DirNames names;
  Invalidator invalidator(se, *meta, *files, names, options.invalidation_delay);
  auto* adapter_ptr = new (adapter_storage) FuseAdapter(options, *meta, *files, *view, se, invalidator, names);
  if (options.invalidations) invalidator.Start();
  SPOOL_LOG_INFO("mount serving mountpoint={} meta={} session={}", command.mountpoint, options.meta_address,
                 meta->session_id());

  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(config, 0);
  fuse_loop_cfg_set_max_threads(config, static_cast<unsigned>(command.threads));
  int rc = fuse_session_loop_mt(se, config);
  fuse_loop_cfg_destroy(config);

  invalidator.Stop();
  files->WaitForAsyncCalls();  // their replies need the session
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  adapter_ptr->~FuseAdapter();
  meta->SetOpenFilesProvider(nullptr);
  view->Stop();
  files.reset();
  chunks.reset();
  meta->Stop();
  bricks->CloseAll();
  runtime->Stop();
  SPOOL_LOG_INFO("mount unmounted mountpoint={} meta_calls_by_method=\"{}\"", command.mountpoint, meta->CallCounts());
  return rc == 0 ? 0 : 1;
}

}  // namespace spool::client
