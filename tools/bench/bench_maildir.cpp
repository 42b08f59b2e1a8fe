// spool-bench maildir --root DIR: a mail server's work on any directory.
//
// T threads, U mailboxes (tmp/ new/ cur/), message sizes from a mail-like
// distribution (60% 1-4 KiB, 30% 4-64 KiB, 10% 64 KiB-1 MiB; fixed seed).
// Phases, each timed: deliver (create tmp/UNIQUE, write, fsync, rename into
// new/), scan (list new/ and cur/ of every mailbox and stat every entry),
// read (read every message and verify its checksum), flag (new/X ->
// cur/X:2,S), expunge (unlink 30%). Ends by verifying every message.
// --cpu-pids P,P,...: the CPU seconds (user+system) those processes (the
// filesystem's daemons and mount) spent during the deliver phase, so that
// tools/bench_compare.py can compare the cost of a delivery across systems.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "tools/bench/bench.h"

namespace spool::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Params {
  std::string root;
  int threads = 8;
  int mailboxes = 50;
  int messages = 5000;
  uint64_t seed = 42;
  bool fsync = true;
  std::vector<int> cpu_pids;
};

struct Message {
  int mailbox;
  std::string name;
  size_t size;
  uint64_t seed;
  uint32_t crc = 0;
  bool flagged = false;
  bool expunged = false;
};

std::string Body(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return out;
}

size_t MessageSize(std::mt19937_64& rng) {
  int bucket = static_cast<int>(rng() % 100);
  if (bucket < 60) return 1024 + rng() % (3 * 1024);
  if (bucket < 90) return 4096 + rng() % (60 * 1024);
  return 65536 + rng() % (960 * 1024);
}

struct PhaseResult {
  std::string name;
  size_t ops = 0;
  size_t bytes = 0;
  size_t errors = 0;
  double seconds = 0;
  std::vector<double> latencies_us;
};

// Runs `op(i)` for i in [0, n) on `threads` threads; op returns bytes moved
// or -1 on error.
template <typename Op>
PhaseResult RunPhase(const std::string& name, size_t n, int threads, Op op) {
  PhaseResult r;
  r.name = name;
  std::atomic<size_t> next{0}, bytes{0}, errors{0};
  std::mutex mu;  // guards r.latencies_us
  auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::vector<double> local;
      for (size_t i; (i = next++) < n;) {
        auto t0 = Clock::now();
        long moved = op(i);
        local.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        if (moved < 0)
          ++errors;
        else
          bytes += static_cast<size_t>(moved);
      }
      std::lock_guard lock(mu);
      r.latencies_us.insert(r.latencies_us.end(), local.begin(), local.end());
    });
  }
  for (auto& t : pool) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.ops = n;
  r.bytes = bytes;
  r.errors = errors;
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  return r;
}

void Print(const PhaseResult& r) {
  std::printf("%-8s %8zu ops %9.1f ops/s %8.2f MB/s  p50 %8.0f us  p99 %9.0f us  errors %zu\n", r.name.c_str(),
              r.ops, r.ops / r.seconds, r.bytes / r.seconds / 1e6, Percentile(r.latencies_us, 0.5),
              Percentile(r.latencies_us, 0.99), r.errors);
}

long WriteFile(const std::string& path, const std::string& body, bool do_fsync) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) return -1;
  bool ok = ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size());
  if (do_fsync) ok = ok && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  return ok ? static_cast<long>(body.size()) : -1;
}

long ReadCrc(const std::string& path, uint32_t* crc) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  std::string data;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (n < 0) return -1;
  *crc = Crc32c(data);
  return static_cast<long>(data.size());
}

// The CPU seconds of every pid in `pids`, index by index (-1: gone).
std::vector<double> CpuSecondsOf(const std::vector<int>& pids) {
  std::vector<double> out;
  for (int pid : pids) out.push_back(CpuSeconds(pid));
  return out;
}

std::vector<int> ParsePids(const std::string& list) {
  std::vector<int> pids;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) pids.push_back(std::stoi(item));
  return pids;
}

}  // namespace

int RunMaildir(int argc, char** argv) {
  Params p;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--root") p.root = next();
    else if (a == "--threads") p.threads = std::stoi(next());
    else if (a == "--mailboxes") p.mailboxes = std::stoi(next());
    else if (a == "--messages") p.messages = std::stoi(next());
    else if (a == "--seed") p.seed = std::stoull(next());
    else if (a == "--no-fsync") p.fsync = false;
    else if (a == "--cpu-pids") p.cpu_pids = ParsePids(next());
    else {
      std::fprintf(stderr,
                   "usage: spool-bench maildir --root DIR [--threads 8] [--mailboxes 50] [--messages 5000] "
                   "[--seed 42] [--no-fsync] [--cpu-pids PID,PID,...]\n");
      return 2;
    }
  }
  if (p.root.empty()) {
    std::fprintf(stderr, "spool-bench maildir: --root DIR is required\n");
    return 2;
  }
  std::string base = p.root + "/spool-bench-maildir." + std::to_string(::getpid());
  std::printf("maildir: root=%s threads=%d mailboxes=%d messages=%d seed=%llu fsync=%s\n", p.root.c_str(),
              p.threads, p.mailboxes, p.messages, static_cast<unsigned long long>(p.seed), p.fsync ? "on" : "off");
  if (::mkdir(base.c_str(), 0755) != 0) {
    std::perror(base.c_str());
    return 1;
  }
  for (int m = 0; m < p.mailboxes; ++m) {
    std::string box = base + "/u" + std::to_string(m);
    ::mkdir(box.c_str(), 0700);
    for (const char* sub : {"/tmp", "/new", "/cur"}) ::mkdir((box + sub).c_str(), 0700);
  }
  std::mt19937_64 rng(p.seed);
  std::vector<Message> messages(static_cast<size_t>(p.messages));
  size_t total_bytes = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    m.mailbox = static_cast<int>(rng() % static_cast<uint64_t>(p.mailboxes));
    m.name = std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P" + std::to_string(::getpid()) + ".bench";
    m.size = MessageSize(rng);
    m.seed = rng();
    total_bytes += m.size;
  }
  auto box = [&](const Message& m) { return base + "/u" + std::to_string(m.mailbox); };
  std::printf("maildir: %zu messages, %.1f MB, mean %.1f KiB\n", messages.size(), total_bytes / 1e6,
              total_bytes / 1024.0 / messages.size());

  std::vector<PhaseResult> results;
  std::vector<double> cpu_before = CpuSecondsOf(p.cpu_pids);
  results.push_back(RunPhase("deliver", messages.size(), p.threads, [&](size_t i) -> long {
    auto& m = messages[i];
    std::string body = Body(m.size, m.seed);
    m.crc = Crc32c(body);
    std::string tmp = box(m) + "/tmp/" + m.name;
    long n = WriteFile(tmp, body, p.fsync);
    if (n < 0 || ::rename(tmp.c_str(), (box(m) + "/new/" + m.name).c_str()) != 0) return -1;
    return n;
  }));
  std::vector<double> cpu_after = CpuSecondsOf(p.cpu_pids);
  Print(results.back());
  if (!p.cpu_pids.empty()) {
    // A process that exited during the phase is left out and counted.
    double cpu = 0;
    int gone = 0;
    for (size_t k = 0; k < p.cpu_pids.size(); ++k) {
      if (cpu_before[k] < 0 || cpu_after[k] < 0) ++gone;
      else cpu += cpu_after[k] - cpu_before[k];
    }
    std::printf("CPU deliver_s=%.2f pids=%zu gone=%d per_1000=%.3f\n", cpu, p.cpu_pids.size(), gone,
                cpu * 1000.0 / static_cast<double>(messages.size()));
  }
  results.push_back(RunPhase("scan", static_cast<size_t>(p.mailboxes), p.threads, [&](size_t i) -> long {
    long entries = 0;
    for (const char* sub : {"/new", "/cur"}) {
      std::string dir = base + "/u" + std::to_string(i) + sub;
      DIR* d = ::opendir(dir.c_str());
      if (!d) return -1;
      while (auto* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        if (::stat((dir + "/" + e->d_name).c_str(), &st) != 0) {
          ::closedir(d);
          return -1;
        }
        ++entries;
      }
      ::closedir(d);
    }
    return 0;
  }));
  // scan counts mailboxes as ops; report entries/s too.
  Print(results.back());
  std::printf("         (%zu entries listed and stat'ed: %.0f entries/s)\n", messages.size(),
              messages.size() / results.back().seconds);
  results.push_back(RunPhase("read", messages.size(), p.threads, [&](size_t i) -> long {
    auto& m = messages[i];
    uint32_t crc = 0;
    long n = ReadCrc(box(m) + "/new/" + m.name, &crc);
    return n >= 0 && crc == m.crc && static_cast<size_t>(n) == m.size ? n : -1;
  }));
  Print(results.back());
  results.push_back(RunPhase("flag", messages.size(), p.threads, [&](size_t i) -> long {
    auto& m = messages[i];
    if (::rename((box(m) + "/new/" + m.name).c_str(), (box(m) + "/cur/" + m.name + ":2,S").c_str()) != 0) return -1;
    m.flagged = true;
    return 0;
  }));
  Print(results.back());
  std::vector<size_t> doomed;
  for (size_t i = 0; i < messages.size(); ++i)
    if (i % 10 < 3) doomed.push_back(i);
  results.push_back(RunPhase("expunge", doomed.size(), p.threads, [&](size_t k) -> long {
    auto& m = messages[doomed[k]];
    if (::unlink((box(m) + "/cur/" + m.name + ":2,S").c_str()) != 0) return -1;
    m.expunged = true;
    return 0;
  }));
  Print(results.back());

  size_t bad = 0, checked = 0;
  for (auto& m : messages) {
    if (m.expunged) continue;
    uint32_t crc = 0;
    long n = ReadCrc(box(m) + "/cur/" + m.name + ":2,S", &crc);
    ++checked;
    if (n < 0 || crc != m.crc) ++bad;
  }
  size_t errors = bad;
  for (auto& r : results) errors += r.errors;
  std::printf("verify: %zu messages present and intact, %zu bad; total errors %zu\n", checked - bad, bad, errors);
  std::printf("RESULT deliver=%.1f scan_entries=%.1f read=%.1f flag=%.1f expunge=%.1f\n",
              results[0].ops / results[0].seconds, messages.size() / results[1].seconds,
              results[2].ops / results[2].seconds, results[3].ops / results[3].seconds,
              results[4].ops / results[4].seconds);
  std::string cleanup = "rm -rf '" + base + "'";
  (void)!std::system(cleanup.c_str());
  return errors == 0 ? 0 : 1;
}

}  // namespace spool::bench
