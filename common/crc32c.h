// CRC32C (Castagnoli), the checksum every chunk carries. Uses the CPU's
// crc32 instruction through ISA-L when available.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace spool {

uint32_t Crc32c(const void* data, size_t length);
// The CRC32C of data continuing from crc, the finished CRC32C of what came
// before: Crc32cExtend(Crc32c(a), b) == Crc32c(a + b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t length);
inline uint32_t Crc32c(std::string_view bytes) { return Crc32c(bytes.data(), bytes.size()); }

}  // namespace spool
