// What spool-bench rebuild and rebalance share: a real cluster filled with
// mail-sized messages straight to the bricks (Filler), a maildir delivery
// load through a mount for latency (DeliveryLoad), and the small helpers
// around them.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/cluster_key.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/placement.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "spool.pb.h"
#include "tools/bench/bench.h"
#include "tests/support/cluster.h"
#include "tools/bench/bench.h"

namespace spool::bench {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

inline std::atomic<bool> g_interrupted{false};
inline void OnSignal(int) { g_interrupted = true; }

// Mostly 1-10 KiB, as in a mail spool: 10% 256 B-1 KiB, 80% 1-10 KiB,
// 9% 10-64 KiB, 1% 64-256 KiB.
inline size_t MessageSize(std::mt19937_64& rng) {
  const int bucket = static_cast<int>(rng() % 100);
  if (bucket < 10) return 256 + rng() % 768;
  if (bucket < 90) return 1024 + rng() % (9 * 1024);
  if (bucket < 99) return 10240 + rng() % (54 * 1024);
  return 65536 + rng() % (192 * 1024);
}

// Deterministic incompressible bytes (SplitMix64 stream).
inline void FillBody(std::string* out, size_t size, uint64_t seed) {
  out->resize(size);
  uint64_t x = seed;
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t v = Mix64(x++);
    std::memcpy(out->data() + i, &v, std::min<size_t>(8, size - i));
  }
}

struct Message {
  uint64_t chunk_id = 0;
  uint32_t size = 0;
  uint32_t crc = 0;
  uint64_t seed = 0;
};

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ------------------------------------------------------------- delivery load

// Maildir deliveries (create tmp/X, write, fsync, close, rename into new/) on
// a few threads until stopped; every delivery's start time and latency kept.
class DeliveryLoad {
 public:
  struct Sample {
    Clock::time_point start;
    double us;
  };

  DeliveryLoad(std::string root, int threads, uint64_t seed) : root_(std::move(root)) {
    for (const char* sub : {"", "/tmp", "/new"}) ::mkdir((root_ + sub).c_str(), 0700);
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t, seed] { Run(t, seed); });
  }
  ~DeliveryLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // Latencies (us, sorted) of deliveries started in [from, to).
  std::vector<double> Latencies(Clock::time_point from, Clock::time_point to) {
    std::lock_guard lock(mu_);
    std::vector<double> out;
    for (const auto& s : samples_)
      if (s.start >= from && s.start < to) out.push_back(s.us);
    std::sort(out.begin(), out.end());
    return out;
  }
  // One line per second of [from, to): deliveries started, their p99 and max
  // (ms), to see when in a phase the slow ones happen.
  std::string Timeline(Clock::time_point from, Clock::time_point to) {
    std::map<int64_t, std::vector<double>> per_second;
    {
      std::lock_guard lock(mu_);
      for (const auto& s : samples_)
        if (s.start >= from && s.start < to)
          per_second[std::chrono::duration_cast<std::chrono::seconds>(s.start - from).count()].push_back(s.us);
    }
    std::string out;
    char line[96];
    for (auto& [second, us] : per_second) {
      std::sort(us.begin(), us.end());
      std::snprintf(line, sizeof line, "    %4llds  %5zu deliveries  p99 %7.1f ms  max %7.1f ms\n",
                    static_cast<long long>(second), us.size(), Percentile(us, 0.99) / 1000.0,
                    us.back() / 1000.0);
      out += line;
    }
    return out;
  }
  uint64_t errors() const { return errors_; }
  std::string first_error() {
    std::lock_guard lock(mu_);
    return first_error_;
  }

 private:
  void Run(int t, uint64_t seed) {
    std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(t));
    std::string body;
    for (uint64_t i = 0; !stop_; ++i) {
      FillBody(&body, MessageSize(rng), rng());
      const std::string name = "d" + std::to_string(t) + "." + std::to_string(i);
      const std::string tmp = root_ + "/tmp/" + name;
      const auto start = Clock::now();
      int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      bool ok = fd >= 0;
      ok = ok && ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size());
      ok = ok && ::fsync(fd) == 0;
      if (fd >= 0) ok = ::close(fd) == 0 && ok;
      ok = ok && ::rename(tmp.c_str(), (root_ + "/new/" + name).c_str()) == 0;
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
      std::lock_guard lock(mu_);
      if (ok) {
        samples_.push_back({start, us});
      } else {
        ++errors_;
        if (first_error_.empty()) first_error_ = name + ": " + std::strerror(errno);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  const std::string root_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;  // guards everything below
  std::vector<Sample> samples_;
  uint64_t errors_ = 0;
  std::string first_error_;
};

// ------------------------------------------------------------- helpers

inline bool DropCaches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3\n";
  f.flush();
  return static_cast<bool>(f);
}

inline std::string DefaultBuildDir() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);  // BUILD/tools/bench/spool-bench
  if (ec) return ".";
  return self.parent_path().parent_path().parent_path().string();
}

inline int RunCommand(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Fills every brick of each message's PG with its chunk, in bulk.
class Filler {
 public:
  Filler(rpc::IoRuntime& runtime, const ClusterKey& key, const proto::ClusterMap& map) : map_(map) {
    for (const auto& b : map.bricks()) clients_[b.id()] = rpc::RpcClient::Create(runtime.io(), b.address(), key);
  }
  ~Filler() {
    for (auto& [id, c] : clients_) c->Close();
  }

  // Puts every message; the bodies are generated on the fly.
  Status Put(const std::vector<Message>& messages) {
    constexpr size_t kMaxChunks = 4096;         // brick_service.h: kMaxChunksPerRequest
    constexpr size_t kMaxBytes = 8u << 20;      // well below the 16 MiB frame limit
    constexpr size_t kInFlight = 6;             // requests outstanding across the bricks
    struct Batch {
      proto::PutChunksRequest request;
      std::string payload;
    };
    std::map<uint32_t, Batch> batches;  // by brick id
    std::deque<std::future<Result<rpc::Frame>>> in_flight;
    auto drain_to = [&](size_t n) -> Status {
      while (in_flight.size() > n) {
        auto r = in_flight.front().get();
        in_flight.pop_front();
        if (!r.ok()) return r.status();
      }
      return Status::Ok();
    };
    auto send = [&](uint32_t brick) -> Status {
      auto& b = batches[brick];
      if (b.request.chunks_size() == 0) return Status::Ok();
      in_flight.push_back(clients_[brick]->Call(rpc::Method::kPutChunks, b.request, std::move(b.payload),
                                                std::chrono::seconds(60)));
      b = Batch{};
      return drain_to(kInFlight);
    };
    std::string body;
    for (const auto& m : messages) {
      if (g_interrupted) return Status::Error(EINTR, "interrupted");
      FillBody(&body, m.size, m.seed);
      const uint32_t pg = PgOfChunk(m.chunk_id, map_.pg_count());
      for (uint32_t brick : map_.pgs(static_cast<int>(pg)).bricks()) {
        auto& b = batches[brick];
        auto* ref = b.request.add_chunks();
        ref->set_chunk_id(m.chunk_id);
        ref->set_pg(pg);
        ref->set_crc32c(m.crc);
        ref->set_length(m.size);
        b.payload += body;
        if (static_cast<size_t>(b.request.chunks_size()) >= kMaxChunks || b.payload.size() >= kMaxBytes)
          if (auto s = send(brick); !s.ok()) return s;
      }
    }
    for (auto& [brick, b] : batches)
      if (auto s = send(brick); !s.ok()) return s;
    return drain_to(0);
  }

 private:
  const proto::ClusterMap& map_;
  std::map<uint32_t, std::shared_ptr<rpc::RpcClient>> clients_;
};

inline void PrintLatency(const char* label, const std::vector<double>& us, double seconds) {
  std::printf("  %-22s %6zu deliveries %6.1f/s  p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n", label, us.size(),
              seconds > 0 ? static_cast<double>(us.size()) / seconds : 0.0, Percentile(us, 0.50) / 1000,
              Percentile(us, 0.99) / 1000, us.empty() ? 0.0 : us.back() / 1000);
}

// Everything the run created, removed whatever happens.
struct Cleanup {
  std::string work_dir;
  std::string keep_logs_to;  // non-empty: copy *.log there first
  std::unique_ptr<testing::LocalCluster> cluster;
  ~Cleanup() {
    StopCluster();
    std::error_code ec;
    if (!work_dir.empty()) fs::remove_all(work_dir, ec);
  }
  // Unmounts, kills meta and the bricks, removes the cluster's directory.
  void StopCluster() {
    if (!cluster) return;
    std::error_code ec;
    if (!keep_logs_to.empty()) {
      fs::create_directories(keep_logs_to, ec);
      for (const auto& e : fs::directory_iterator(cluster->dir(), ec))
        if (e.path().extension() == ".log")
          fs::copy_file(e.path(), keep_logs_to + "/" + e.path().filename().string(),
                        fs::copy_options::overwrite_existing, ec);
    }
    cluster.reset();
  }
};

}  // namespace spool::bench
