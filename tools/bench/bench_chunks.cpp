// spool-bench chunks: durable chunk puts and gets against a real spool-brickd,
// beside the way mail is stored today (one file per message, written and
// fsynced) on the same disk, at several chunk sizes and concurrencies.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "common/cluster_key.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tools/bench/bench.h"

namespace spool::bench {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct ChunkBenchOptions {
  std::string brick;             // empty: start our own brickd
  std::string cluster_key_file;  // required with --brick
  std::string dir = "/var/tmp";  // where our brickd and the baseline files live
  std::string brickd_binary;     // default: next to this binary in the build tree
  double seconds = 1.5;          // per measurement
  std::vector<size_t> sizes = {1024, 4096, 65536, 1048576};
  std::vector<int> clients = {1, 4, 16, 64};
};

struct Figure {
  double ops_per_s = 0;
  double mb_per_s = 0;
  uint64_t errors = 0;
};

std::string RandomPayload(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// Runs `op(thread, i)` in `threads` threads for `seconds`; op returns success.
template <typename Op>
Figure Measure(int threads, double seconds, size_t bytes_per_op, Op op) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, errors{0};
  std::vector<std::thread> workers;
  auto start = Clock::now();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        if (op(t, i))
          ops.fetch_add(1, std::memory_order_relaxed);
        else
          errors.fetch_add(1, std::memory_order_relaxed);
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  Figure f;
  f.ops_per_s = static_cast<double>(ops.load()) / elapsed;
  f.mb_per_s = f.ops_per_s * static_cast<double>(bytes_per_op) / 1e6;
  f.errors = errors.load();
  return f;
}

uint64_t ChunkId(int thread, uint64_t i) { return static_cast<uint64_t>(thread) << 40 | i; }
uint32_t PgOf(uint64_t id) { return static_cast<uint32_t>(id % 256); }

bool WaitForPort(int port, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int PickPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Our own brickd, started and stopped around the run.
class OwnBrick {
 public:
  ~OwnBrick() { Stop(); }
  bool Start(const ChunkBenchOptions& options, const std::string& work_dir, std::string* address,
             std::string* key_file) {
    *key_file = work_dir + "/cluster.key";
    if (!ClusterKey::Generate(*key_file, "bench").ok()) return false;
    int port = PickPort();
    *address = "127.0.0.1:" + std::to_string(port);
    std::vector<std::string> argv = {options.brickd_binary, "--data", work_dir + "/brick", "--listen", *address,
                                     "--cluster-key", *key_file, "--log-level", "warn"};
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    return pid_ > 0 && WaitForPort(port, std::chrono::seconds(20));
  }
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

std::string DefaultBrickdBinary() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "spool-brickd";
  return (self.parent_path().parent_path().parent_path() / "brickd" / "spool-brickd").string();
}

std::string Human(size_t bytes) {
  if (bytes >= (1u << 20)) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

}  // namespace

int RunChunks(int argc, char** argv) {
  ChunkBenchOptions options;
  options.brickd_binary = DefaultBrickdBinary();
  CLI::App app{"spool-bench chunks: durable brickd puts/gets vs one fsynced file per message"};
  app.add_option("--brick", options.brick, "HOST:PORT of a running brickd (default: start one under --dir)");
  app.add_option("--cluster-key", options.cluster_key_file, "cluster key file, with --brick");
  app.add_option("--dir", options.dir, "directory on the disk under test (own brickd + baseline files)")
      ->capture_default_str();
  app.add_option("--brickd", options.brickd_binary, "spool-brickd binary to start")->capture_default_str();
  app.add_option("--seconds", options.seconds, "duration of each measurement")->capture_default_str();
  app.add_option("--sizes", options.sizes, "chunk sizes in bytes")->capture_default_str();
  app.add_option("--clients", options.clients, "concurrent clients")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spool::InitLogging("warn");
  signal(SIGPIPE, SIG_IGN);

  std::string work_dir = options.dir + "/spool-bench-chunks." + std::to_string(getpid());
  std::error_code ec;
  fs::create_directories(work_dir + "/files", ec);
  if (ec) {
    std::fprintf(stderr, "spool-bench chunks: cannot create %s: %s\n", work_dir.c_str(), ec.message().c_str());
    return 1;
  }
  OwnBrick own;
  std::string address = options.brick, key_file = options.cluster_key_file;
  if (address.empty()) {
    if (!own.Start(options, work_dir, &address, &key_file)) {
      std::fprintf(stderr, "spool-bench chunks: could not start %s\n", options.brickd_binary.c_str());
      fs::remove_all(work_dir, ec);
      return 1;
    }
  }
  auto key = ClusterKey::Load(key_file);
  if (!key.ok()) {
    std::fprintf(stderr, "spool-bench chunks: %s\n", key.status().message().c_str());
    return 1;
  }

  std::printf("spool-bench chunks\n");
  std::printf("  brick        %s%s\n", address.c_str(), options.brick.empty() ? " (started by the benchmark)" : "");
  std::printf("  dir          %s (brick data and baseline files)\n", work_dir.c_str());
  std::printf("  seconds      %.1f per measurement\n", options.seconds);
  std::printf("  durability   brick: acknowledged after WAL fsync (group commit); baseline: write+fsync+close, one new file each\n");
  std::printf("  payload      random bytes; gets read back chunks put in the same cell\n\n");
  std::printf("%-8s %7s | %12s %9s | %12s %9s | %12s %9s | %7s\n", "size", "clients", "brick put/s", "MB/s",
              "brick get/s", "MB/s", "file put/s", "MB/s", "put x");
  std::fflush(stdout);

  rpc::IoRuntime runtime(2);
  int max_clients = *std::max_element(options.clients.begin(), options.clients.end());
  std::vector<std::shared_ptr<rpc::RpcClient>> clients;
  for (int i = 0; i < max_clients; ++i) clients.push_back(rpc::RpcClient::Create(runtime.io(), address, *key));

  struct Row {
    size_t size;
    int clients;
    Figure put, get, file;
  };
  std::vector<Row> rows;
  uint64_t cell = 0;
  for (size_t size : options.sizes) {
    std::string payload = RandomPayload(size, size);
    uint32_t crc = Crc32c(payload);
    for (int concurrency : options.clients) {
      ++cell;
      std::vector<std::atomic<uint64_t>> stored(static_cast<size_t>(concurrency));
      auto put = Measure(concurrency, options.seconds, size, [&](int t, uint64_t i) {
        uint64_t id = ChunkId(t, cell << 28 | i);
        proto::PutChunkRequest request;
        auto* ref = request.mutable_chunk();
        ref->set_chunk_id(id);
        ref->set_pg(PgOf(id));
        ref->set_crc32c(crc);
        ref->set_length(static_cast<uint32_t>(size));
        bool ok = clients[static_cast<size_t>(t)]->CallSync(rpc::Method::kPutChunk, request, nullptr, payload).ok();
        if (ok) stored[static_cast<size_t>(t)] = i + 1;
        return ok;
      });
      auto get = Measure(concurrency, options.seconds, size, [&](int t, uint64_t i) {
        uint64_t n = stored[static_cast<size_t>(t)];
        if (n == 0) return false;
        uint64_t id = ChunkId(t, cell << 28 | (i * 2654435761u) % n);
        proto::GetChunkRequest request;
        request.set_chunk_id(id);
        request.set_pg(PgOf(id));
        std::string bytes;
        proto::GetChunkReply reply;
        return clients[static_cast<size_t>(t)]->CallSync(rpc::Method::kGetChunk, request, &reply, {}, &bytes).ok() &&
               bytes.size() == size;
      });
      std::string files_dir = work_dir + "/files/" + std::to_string(cell);
      fs::create_directories(files_dir, ec);
      auto file = Measure(concurrency, options.seconds, size, [&](int t, uint64_t i) {
        std::string path = files_dir + "/" + std::to_string(t) + "." + std::to_string(i) + ".msg";
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) return false;
        bool ok = ::write(fd, payload.data(), payload.size()) == static_cast<ssize_t>(payload.size()) &&
                  ::fsync(fd) == 0;
        ::close(fd);
        return ok;
      });
      rows.push_back({size, concurrency, put, get, file});
      std::printf("%-8s %7d | %12.0f %9.1f | %12.0f %9.1f | %12.0f %9.1f | %6.1fx%s\n", Human(size).c_str(),
                  concurrency, put.ops_per_s, put.mb_per_s, get.ops_per_s, get.mb_per_s, file.ops_per_s,
                  file.mb_per_s, file.ops_per_s > 0 ? put.ops_per_s / file.ops_per_s : 0.0,
                  put.errors + get.errors + file.errors ? "  (errors!)" : "");
      std::fflush(stdout);

      // Clean up so that every cell starts from the same disk state.
      for (int t = 0; t < concurrency; ++t) {
        uint64_t n = stored[static_cast<size_t>(t)];
        for (uint64_t first = 0; first < n; first += 4096) {
          proto::DeleteChunksRequest request;
          for (uint64_t i = first; i < std::min(n, first + 4096); ++i) {
            auto* ref = request.add_chunks();
            ref->set_chunk_id(ChunkId(t, cell << 28 | i));
            ref->set_pg(PgOf(ref->chunk_id()));
          }
          (void)clients[0]->CallSync(rpc::Method::kDeleteChunks, request);
        }
      }
      fs::remove_all(files_dir, ec);
    }
  }

  std::printf("\nratios: brick durable puts / one fsynced file per message (same size, clients, disk)\n");
  for (auto& r : rows)
    std::printf("  %-8s x %2d clients: %6.1fx\n", Human(r.size).c_str(), r.clients,
                r.file.ops_per_s > 0 ? r.put.ops_per_s / r.file.ops_per_s : 0.0);
  for (auto& r : rows)
    if (r.size == 4096 && r.clients == 16) {
      double ratio = r.file.ops_per_s > 0 ? r.put.ops_per_s / r.file.ops_per_s : 0.0;
      std::printf("goal: 16 writers of 4 KiB >= 5x the file rate: %.1fx %s\n", ratio, ratio >= 5 ? "MET" : "NOT MET");
    }

  for (auto& c : clients) c->Close();
  runtime.Stop();
  own.Stop();
  fs::remove_all(work_dir, ec);
  return 0;
}

}  // namespace spool::bench
