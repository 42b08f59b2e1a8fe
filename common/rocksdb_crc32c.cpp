#include "common/rocksdb_crc32c.h"

#include <dlfcn.h>

#include <mutex>

#include "common/crc32c.h"
#include "common/log.h"

namespace rocksdb::crc32c {

uint32_t Extend(uint32_t init_crc, const char* data, size_t n) {
  return spool::Crc32cExtend(init_crc, data, n);
}

}  // namespace rocksdb::crc32c

namespace spool {

bool RocksDbUsesFastCrc32c() {
  // The dynamic linker resolves librocksdb's PLT entries through the global
  // scope, which is what dlsym(RTLD_DEFAULT) searches.
  void* bound = ::dlsym(RTLD_DEFAULT, "_ZN7rocksdb6crc32c6ExtendEjPKcm");
  const bool fast = bound == reinterpret_cast<void*>(&rocksdb::crc32c::Extend);
  static std::once_flag warned;
  if (!fast) std::call_once(warned, [] { SPOOL_LOG_WARN("rocksdb crc32c=library (slow table-driven CRC32C)"); });
  return fast;
}

}  // namespace spool
