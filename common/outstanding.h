// Outstanding: counts work started and not yet finished (callbacks still to
// run, replies still to send), so that whoever owns what that work touches
// can wait for it to drain before going away.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>

namespace spool {

class Outstanding {
 public:
  void Begin() {
    std::lock_guard lock(mu_);
    ++count_;
  }
  void End() {
    std::lock_guard lock(mu_);
    if (--count_ == 0) cv_.notify_all();
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  void WaitNone() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return count_ == 0; });
  }
  // False if some were still outstanding after `timeout`.
  bool WaitNoneFor(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return count_ == 0; });
  }

 private:
  mutable std::mutex mu_;  // guards count_
  std::condition_variable cv_;  // count_ reached 0
  size_t count_ = 0;
};

}  // namespace spool
