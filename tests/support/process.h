// Test support: real child processes (daemons under test) and temporary
// directories. Tests start the real binaries, kill them with SIGKILL and
// restart them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace spool::testing {

// Path of a built binary, e.g. BinaryPath("brickd/spool-brickd").
std::string BinaryPath(const std::string& relative);

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // SIGKILLs a process still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] with its output appended to log_path.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path);
  void Kill(int signal = 9);
  // Waits for exit; returns the exit status as from waitpid, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

class TempDir {
 public:
  TempDir();   // under $TMPDIR (or /tmp), removed when destroyed
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Picks a TCP port that is free on 127.0.0.1 right now and was not picked
// before by this process.
int FreePort();
// Waits until something accepts connections on 127.0.0.1:port.
bool WaitForPort(int port, std::chrono::milliseconds timeout = std::chrono::seconds(20));
// Writes a fresh cluster key file and returns its path.
std::string MakeClusterKey(const TempDir& dir, const std::string& cluster_id = "test-cluster");
std::string ReadFile(const std::string& path);

}  // namespace spool::testing
