// Daemon signal handling: SIGTERM/SIGINT are taken synchronously by the main
// thread, so the stop path runs in ordinary code, not in a signal handler.
#pragma once

#include <csignal>

namespace spool {

// Blocks SIGTERM and SIGINT and ignores SIGPIPE. REQUIRES: called before any
// other thread starts, so that every thread inherits the mask.
sigset_t BlockTerminationSignals();
// Waits for one of the blocked signals; returns its number.
int WaitForTerminationSignal(const sigset_t& signals);

}  // namespace spool
