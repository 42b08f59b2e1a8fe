// An io_context with its own threads, for a daemon's server or a process's
// clients. Stop() (or the destructor) joins the threads: no detached threads.
#pragma once

#include <asio.hpp>
#include <thread>
#include <vector>

namespace spool::rpc {

class IoRuntime {
 public:
  explicit IoRuntime(int threads) : guard_(asio::make_work_guard(io_)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~IoRuntime() { Stop(); }
  IoRuntime(const IoRuntime&) = delete;
  IoRuntime& operator=(const IoRuntime&) = delete;

  asio::io_context& io() { return io_; }
  void Stop() {
    guard_.reset();
    io_.stop();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

}  // namespace spool::rpc
