// RocksDB checksums every WAL record, table block and blob record with
// CRC32C. Debian builds RocksDB for any x86-64 CPU, so its CRC32C is a
// table-driven loop: 37% of the CPU of a memtable flush of mail chunks, and
// a tenth of a brick's CPU per delivery. Programs that link this library
// define rocksdb::crc32c::Extend themselves, using the CPU's crc32
// instruction through ISA-L; as the program's own symbol it takes the place
// of the library's (ELF symbol interposition: librocksdb calls Extend
// through its PLT). The checksum is the same, so files written either way
// read back either way.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rocksdb::crc32c {
// RocksDB's own declaration (util/crc32c.h, not installed): the CRC32C of
// data[0, n) continuing from init_crc, a finished CRC32C of what came before.
uint32_t Extend(uint32_t init_crc, const char* data, size_t n);
}  // namespace rocksdb::crc32c

namespace spool {

// Whether RocksDB's calls reach the Extend above: false (and a warning
// logged once) when librocksdb binds them to its own copy, as a static or
// -Bsymbolic build would, which is only slower. Opening a store calls this,
// which also makes the linker take this file in.
bool RocksDbUsesFastCrc32c();

}  // namespace spool
