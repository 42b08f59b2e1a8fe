#include "common/crc32c.h"

#include <isa-l/crc.h>

#include <algorithm>

namespace spool {

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t length) {
  // ISA-L's iSCSI CRC leaves the standard initial value and final inversion
  // to the caller, and takes an int length.
  auto* bytes = static_cast<unsigned char*>(const_cast<void*>(data));
  uint32_t state = ~crc;
  while (length > 0) {
    const size_t piece = std::min<size_t>(length, 1u << 30);
    state = crc32_iscsi(bytes, static_cast<int>(piece), state);
    bytes += piece;
    length -= piece;
  }
  return ~state;
}

uint32_t Crc32c(const void* data, size_t length) { return Crc32cExtend(0, data, length); }

}  // namespace spool
