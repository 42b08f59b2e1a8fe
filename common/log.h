// Logging: one line per event, "component key=value ...". Thin wrapper over
// spdlog so every binary logs the same way.
#pragma once

#include <spdlog/spdlog.h>

namespace spool {

// Sets the process-wide log level from a name (trace, debug, info, warn, error).
void InitLogging(const std::string& level);

}  // namespace spool

#define SPOOL_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define SPOOL_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define SPOOL_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
#define SPOOL_LOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
