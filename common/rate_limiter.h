// RateLimiter: spreads background work (repair, scrub, moves) to at most
// `bytes_per_sec`, so that it never crowds out foreground traffic. Each
// Acquire reserves its bytes on a shared timeline and sleeps until its turn.
//
// Thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace spool {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // 0 = unlimited.
  explicit RateLimiter(uint64_t bytes_per_sec) : bytes_per_sec_(bytes_per_sec) {}

  // Waits until `bytes` may go. Returns false if Cancel() was called first.
  bool Acquire(uint64_t bytes) {
    std::unique_lock lock(mu_);
    if (bytes_per_sec_ == 0) return !cancelled_;
    const auto now = Clock::now();
    // Unused capacity is not saved up for more than a short burst.
    const auto start = std::max(next_free_, now - kMaxBurst);
    const auto cost = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(bytes_per_sec_)));
    next_free_ = start + cost;
    return !cv_.wait_until(lock, start, [&] { return cancelled_; });
  }

  void Cancel() {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  static constexpr auto kMaxBurst = std::chrono::milliseconds(100);
  const uint64_t bytes_per_sec_;
  std::mutex mu_;  // guards next_free_, cancelled_
  std::condition_variable cv_;
  Clock::time_point next_free_{};
  bool cancelled_ = false;
};

}  // namespace spool
