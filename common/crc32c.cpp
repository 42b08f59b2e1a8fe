#include "common/crc32c.h"

#include <isa-l/crc.h>

namespace spool {

uint32_t Crc32c(const void* data, size_t length) {
  // ISA-L's iSCSI CRC leaves the standard initial value and final inversion
  // to the caller.
  return ~crc32_iscsi(static_cast<unsigned char*>(const_cast<void*>(data)), static_cast<int>(length),
                      0xFFFFFFFFu);
}

}  // namespace spool
