// spool-bench vmimage --root DIR: a VM disk image's I/O on any directory.
//
// fio-style: an image of --size-mib is laid out with sequential writes, then
// --depth threads each keep one 4 KiB O_DIRECT request in flight (16 in all
// by default) at random aligned offsets: first writes for --seconds, ended
// by an fdatasync (a guest's flush: the writes count only once durable),
// then reads for --seconds. Run it on a spoolfs mount and on a local disk
// side by side; tools/spool bench-compare does, beside GlusterFS.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tools/bench/bench.h"

namespace spool::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Params {
  std::string root;
  uint64_t size_mib = 1024;
  int depth = 16;
  double seconds = 20;
  uint64_t seed = 42;
};

struct PhaseResult {
  uint64_t ops = 0;
  uint64_t errors = 0;
  double seconds = 0;
  std::vector<double> latencies_us;  // sorted
};

struct AlignedFree {
  void operator()(char* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<char, AlignedFree>;

AlignedBuffer Aligned(size_t bytes) {
  void* p = nullptr;
  if (::posix_memalign(&p, 4096, bytes) != 0) return nullptr;
  return AlignedBuffer(static_cast<char*>(p));
}

// `depth` threads issue 4 KiB requests at random aligned offsets until the
// deadline; `write` chooses pwrite or pread.
PhaseResult RunRandom(int fd, const Params& p, bool write) {
  constexpr size_t kBlock = 4096;
  const uint64_t blocks = p.size_mib * (1u << 20) / kBlock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(p.seconds));
  PhaseResult r;
  std::mutex mu;  // guards r
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < p.depth; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(p.seed * 1000 + static_cast<uint64_t>(t) + (write ? 0 : 500));
      auto buf = Aligned(kBlock);
      std::vector<double> lat;
      uint64_t errors = 0;
      while (Clock::now() < deadline) {
        const off_t off = static_cast<off_t>((rng() % blocks) * kBlock);
        if (write) {
          uint64_t v = rng();
          for (size_t i = 0; i < kBlock; i += 8) std::memcpy(buf.get() + i, &v, 8);
        }
        const auto t0 = Clock::now();
        ssize_t n = write ? ::pwrite(fd, buf.get(), kBlock, off) : ::pread(fd, buf.get(), kBlock, off);
        lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        if (n != static_cast<ssize_t>(kBlock)) ++errors;
      }
      std::lock_guard lock(mu);
      r.ops += lat.size();
      r.errors += errors;
      r.latencies_us.insert(r.latencies_us.end(), lat.begin(), lat.end());
    });
  }
  for (auto& t : pool) t.join();
  if (write && ::fdatasync(fd) != 0) {
    std::perror("fdatasync");
    ++r.errors;
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  return r;
}

void Print(const char* name, const PhaseResult& r) {
  std::printf("%-10s %9llu ops %9.0f IOPS %7.2f MB/s  p50 %7.0f us  p99 %8.0f us  errors %llu\n", name,
              static_cast<unsigned long long>(r.ops), r.ops / r.seconds, r.ops * 4096.0 / r.seconds / 1e6,
              Percentile(r.latencies_us, 0.5), Percentile(r.latencies_us, 0.99),
              static_cast<unsigned long long>(r.errors));
}

}  // namespace

int RunVmImage(int argc, char** argv) {
  Params p;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    try {
      if (a == "--root") p.root = next();
      else if (a == "--size-mib") p.size_mib = std::stoull(next());
      else if (a == "--depth") p.depth = std::stoi(next());
      else if (a == "--seconds") p.seconds = std::stod(next());
      else if (a == "--seed") p.seed = std::stoull(next());
      else throw std::invalid_argument(a);
    } catch (const std::exception&) {
      std::fprintf(stderr,
                   "usage: spool-bench vmimage --root DIR [--size-mib 1024] [--depth 16] [--seconds 20] [--seed 42]\n");
      return 2;
    }
  }
  if (p.root.empty() || p.size_mib == 0 || p.depth <= 0 || p.seconds <= 0) {
    std::fprintf(stderr, "spool-bench vmimage: --root DIR is required; sizes and counts must be positive\n");
    return 2;
  }
  const std::string path = p.root + "/spool-bench-vmimage." + std::to_string(::getpid()) + ".img";
  std::printf("vmimage: root=%s image=%llu MiB depth=%d (threads, one 4 KiB request each) seconds=%.0f per phase\n",
              p.root.c_str(), static_cast<unsigned long long>(p.size_mib), p.depth, p.seconds);

  // Lay the image out as fio does, so that reads find data, not holes.
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    return 1;
  }
  {
    std::mt19937_64 rng(p.seed);
    std::string block(1u << 20, '\0');
    const auto t0 = Clock::now();
    for (uint64_t m = 0; m < p.size_mib; ++m) {
      for (size_t i = 0; i < block.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(block.data() + i, &v, 8);
      }
      if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
        std::perror("layout write");
        ::close(fd);
        ::unlink(path.c_str());
        return 1;
      }
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      std::perror("layout fsync");
      ::unlink(path.c_str());
      return 1;
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("layout     %llu MiB in %.1f s (%.1f MB/s, fsynced)\n", static_cast<unsigned long long>(p.size_mib), s,
                p.size_mib * 1048576.0 / s / 1e6);
  }

  fd = ::open(path.c_str(), O_RDWR | O_DIRECT);
  bool direct = fd >= 0;
  if (!direct) {
    std::printf("note: O_DIRECT refused (%s); buffered I/O instead\n", std::strerror(errno));
    fd = ::open(path.c_str(), O_RDWR);
  }
  if (fd < 0) {
    std::perror(path.c_str());
    ::unlink(path.c_str());
    return 1;
  }
  auto writes = RunRandom(fd, p, /*write=*/true);
  Print("randwrite", writes);
  auto reads = RunRandom(fd, p, /*write=*/false);
  Print("randread", reads);
  ::close(fd);
  ::unlink(path.c_str());
  std::printf("(randwrite ends with an fdatasync, inside its time; direct I/O %s)\n", direct ? "on" : "off");
  std::printf("RESULT vm_randwrite=%.1f vm_randread=%.1f\n", writes.ops / writes.seconds, reads.ops / reads.seconds);
  return writes.errors + reads.errors == 0 ? 0 : 1;
}

}  // namespace spool::bench
