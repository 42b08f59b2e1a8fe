// ChunkStore, one operation at a time, and the ways each one fails.
#include "brickd/chunk_store.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "common/crc32c.h"
#include "common/rocksdb_crc32c.h"
#include "tests/brickd/test_util.h"
#include "tests/support/process.h"

namespace spool::brick {
namespace {

using spool::testing::RandomBytes;

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open(const std::string& compression = kDefaultCompression) {
    ChunkStoreOptions options;
    options.db_dir = dir_.Sub("db");
    options.reserve_bytes = 0;
    options.compression = compression;
    auto store = ChunkStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void Reopen(const std::string& compression = kDefaultCompression) {
    store_.reset();
    Open(compression);
  }
  static ChunkWrite Write(uint32_t pg, uint64_t id, const std::string& bytes) {
    return ChunkWrite{ChunkInfo{id, pg, Crc32c(bytes), static_cast<uint32_t>(bytes.size())}, bytes};
  }
  Status Put(ChunkWrite w) {
    std::vector<ChunkWrite> v;
    v.push_back(std::move(w));
    return store_->PutSync(std::move(v));
  }

  spool::testing::TempDir dir_;
  std::unique_ptr<ChunkStore> store_;
};

// RocksDB checksums its files with our ISA-L CRC32C (common/rocksdb_crc32c.h);
// it must give exactly what RocksDB's own table-driven code gives, or stores
// written before (or by another build) would read back as corrupt.
TEST(RocksDbCrc32c, RocksDbCallsOursAndOursMatchesRocksDbsOwn) {
  EXPECT_TRUE(RocksDbUsesFastCrc32c());
  using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);
  auto library_extend = reinterpret_cast<ExtendFn>(::dlsym(RTLD_NEXT, "_ZN7rocksdb6crc32c6ExtendEjPKcm"));
  ASSERT_NE(library_extend, nullptr) << "librocksdb exports no crc32c::Extend";
  ASSERT_NE(reinterpret_cast<void*>(library_extend), reinterpret_cast<void*>(&rocksdb::crc32c::Extend));

  EXPECT_EQ(rocksdb::crc32c::Extend(0, "123456789", 9), 0xE3069283u);  // the CRC32C check value
  EXPECT_EQ(library_extend(0, "123456789", 9), 0xE3069283u);
  const std::string bytes = RandomBytes(70000, 5);
  const char* unaligned = bytes.data() + 3;
  for (size_t length : {0, 1, 3, 7, 8, 15, 16, 63, 64, 255, 256, 1000, 4096, 4097, 65536, 69997}) {
    for (uint32_t init : {0u, 1u, 0xFFFFFFFFu, 0x12345678u}) {
      EXPECT_EQ(rocksdb::crc32c::Extend(init, unaligned, length), library_extend(init, unaligned, length))
          << "length " << length << " init " << init;
    }
  }
  const uint32_t head = Crc32c(bytes.data(), 1000);
  EXPECT_EQ(Crc32cExtend(head, bytes.data() + 1000, bytes.size() - 1000), Crc32c(bytes));
}

TEST_F(ChunkStoreTest, PutThenGetReturnsTheBytesOfEverySize) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{1000}, size_t{4096}, size_t{65536}, size_t{kMaxChunkBytes}}) {
    auto bytes = RandomBytes(size, size);
    ASSERT_TRUE(store_->PutSync(7, size, bytes).ok()) << size;
    ChunkInfo info;
    auto got = store_->Get(7, size, 0, 0, &info);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, bytes);
    EXPECT_EQ(info.length, size);
    EXPECT_EQ(info.crc32c, Crc32c(bytes));
  }
}

TEST_F(ChunkStoreTest, GetRange) {
  auto bytes = RandomBytes(10000, 1);
  ASSERT_TRUE(store_->PutSync(1, 1, bytes).ok());
  EXPECT_EQ(*store_->Get(1, 1, 100, 200), bytes.substr(100, 200));
  EXPECT_EQ(*store_->Get(1, 1, 9000, 0), bytes.substr(9000)) << "length 0 reads to the end";
  EXPECT_EQ(*store_->Get(1, 1, 10000, 0), "") << "empty range at the end";
  EXPECT_EQ(store_->Get(1, 1, 9999, 2).status().code(), EINVAL);
  EXPECT_EQ(store_->Get(1, 1, 10001, 0).status().code(), EINVAL);
  EXPECT_EQ(store_->Get(1, 1, UINT32_MAX, UINT32_MAX).status().code(), EINVAL);
}

TEST_F(ChunkStoreTest, ChecksumMismatchIsRejectedAndNothingStored) {
  auto w = Write(1, 5, "hello world");
  w.info.crc32c ^= 1;
  auto s = Put(std::move(w));
  EXPECT_EQ(s.code(), EBADMSG) << s.ToString();
  EXPECT_EQ(store_->Stat(1, 5).status().code(), ENOENT);
}

TEST_F(ChunkStoreTest, MalformedPutsAreRejected) {
  auto w = Write(1, 5, "hello");
  w.info.length = 6;
  EXPECT_EQ(Put(w).code(), EINVAL) << "length mismatch";
  EXPECT_EQ(Put(Write(kMaxPgCount, 5, "hello")).code(), EINVAL) << "pg out of range";
  EXPECT_EQ(Put(Write(1, 5, std::string(kMaxChunkBytes + 1, 'x'))).code(), EINVAL) << "too large";
}

TEST_F(ChunkStoreTest, MissingChunk) {
  EXPECT_EQ(store_->Get(3, 99).status().code(), ENOENT);
  EXPECT_EQ(store_->Stat(3, 99).status().code(), ENOENT);
}

TEST_F(ChunkStoreTest, StatReadsMetadata) {
  ASSERT_TRUE(store_->PutSync(4, 8, "abcdef").ok());
  auto info = store_->Stat(4, 8);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->length, 6u);
  EXPECT_EQ(info->crc32c, Crc32c("abcdef"));
  EXPECT_EQ(info->pg, 4u);
  EXPECT_EQ(store_->Stat(5, 8).status().code(), ENOENT) << "the pg is part of the address";
}

TEST_F(ChunkStoreTest, DeleteRemovesAndIsIdempotent) {
  ASSERT_TRUE(store_->PutSync(1, 1, "a").ok());
  ASSERT_TRUE(store_->PutSync(1, 2, "b").ok());
  ASSERT_TRUE(store_->DeleteSync({ChunkInfo{1, 1, 0, 0}, ChunkInfo{3, 1, 0, 0}}).ok());
  EXPECT_EQ(store_->Get(1, 1).status().code(), ENOENT);
  EXPECT_EQ(*store_->Get(1, 2), "b");
  EXPECT_TRUE(store_->DeleteSync({ChunkInfo{1, 1, 0, 0}}).ok());
}

// Get keeps the records of chunks it read (RecordCache): a chunk deleted
// after a read is gone for the next read, not corrupt, and one put again is
// served whole, small and in blocks, from the middle of other reads.
TEST_F(ChunkStoreTest, ReadsAfterDeleteAndPutAgainSeeWhatIsStored) {
  const auto small = RandomBytes(3000, 1);
  const auto large = RandomBytes(300000, 2);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(store_->PutSync(4, 1, small).ok());
    ASSERT_TRUE(store_->PutSync(4, 2, large).ok());
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(*store_->Get(4, 1, 100, 50), small.substr(100, 50));
      EXPECT_EQ(*store_->Get(4, 2, 70000 + i * 4096, 4096), large.substr(70000 + i * 4096, 4096));
    }
    EXPECT_EQ(store_->Get(4, 2, 0, 300001).status().code(), EINVAL) << "a range outside the chunk";
    ASSERT_TRUE(store_->DeleteSync({ChunkInfo{1, 4, 0, 0}, ChunkInfo{2, 4, 0, 0}}).ok());
    auto gone = store_->Get(4, 1, 100, 50);
    EXPECT_EQ(gone.status().code(), ENOENT) << gone.status().ToString();
    gone = store_->Get(4, 2, 70000, 4096);
    EXPECT_EQ(gone.status().code(), ENOENT) << gone.status().ToString();
  }
}

TEST_F(ChunkStoreTest, PutIsIdempotentButChunksAreImmutable) {
  ASSERT_TRUE(store_->PutSync(1, 1, "same").ok());
  EXPECT_TRUE(store_->PutSync(1, 1, "same").ok());
  auto s = store_->PutSync(1, 1, "different");
  EXPECT_EQ(s.code(), EEXIST) << s.ToString();
  EXPECT_EQ(*store_->Get(1, 1), "same");
  // Within one bulk put too.
  std::vector<ChunkWrite> both;
  both.push_back(Write(2, 1, "one"));
  both.push_back(Write(2, 1, "two"));
  EXPECT_EQ(store_->PutSync(std::move(both)).code(), EEXIST);
  EXPECT_EQ(store_->Stat(2, 1).status().code(), ENOENT) << "a bulk put is all or nothing";
}

TEST_F(ChunkStoreTest, ListIsPerPgSortedAndPaged) {
  for (uint64_t id : {50, 10, 30, 20, 40}) ASSERT_TRUE(store_->PutSync(2, id, "x" + std::to_string(id)).ok());
  ASSERT_TRUE(store_->PutSync(1, 5, "other pg").ok());
  ASSERT_TRUE(store_->PutSync(3, 5, "other pg").ok());
  auto page = store_->List(2, std::nullopt, 3);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->chunks.size(), 3u);
  EXPECT_FALSE(page->complete);
  EXPECT_EQ(page->chunks[0].chunk_id, 10u);
  EXPECT_EQ(page->chunks[2].chunk_id, 30u);
  EXPECT_EQ(page->chunks[1].crc32c, Crc32c("x20"));
  auto rest = store_->List(2, 30, 3);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->chunks.size(), 2u);
  EXPECT_TRUE(rest->complete);
  EXPECT_EQ(rest->chunks[1].chunk_id, 50u);
  EXPECT_TRUE(store_->List(2, UINT64_MAX, 3)->complete);
  EXPECT_TRUE(store_->List(9, std::nullopt, 3)->chunks.empty());
  EXPECT_EQ(store_->List(kMaxPgCount, std::nullopt, 3).status().code(), EINVAL);
}

TEST_F(ChunkStoreTest, ReadManyStreamsFoundMissingAndDeferred) {
  std::string a = RandomBytes(1000, 1), b = RandomBytes(2000, 2), c = RandomBytes(3000, 3);
  ASSERT_TRUE(store_->PutSync(6, 1, a).ok());
  ASSERT_TRUE(store_->PutSync(6, 2, b).ok());
  ASSERT_TRUE(store_->PutSync(6, 3, c).ok());
  auto r = store_->ReadMany(6, {1, 99, 2, 3}, 3500);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->chunks.size(), 2u);
  EXPECT_EQ(r->payload, a + b);
  EXPECT_EQ(r->missing, std::vector<uint64_t>{99});
  EXPECT_EQ(r->deferred, std::vector<uint64_t>{3}) << "3000 more bytes would exceed 3500";
}

TEST_F(ChunkStoreTest, ForegroundPutsGoAheadOfQueuedBackgroundPuts) {
  // 24 background puts of 2 MiB (a rebuild's batches) queued, then one
  // small foreground put (a delivery): it must not wait for the whole backlog.
  constexpr int kBackground = 24;
  std::mutex mu;
  std::condition_variable cv;
  int background_done = 0, background_done_before_foreground = -1;
  bool foreground_done = false;
  // Made before anything is queued: under ASan making 48 MiB of random
  // bytes takes long enough for the writer to finish a good part of the
  // backlog while it is still being queued.
  std::vector<std::vector<ChunkWrite>> batches(kBackground);
  for (int i = 0; i < kBackground; ++i) {
    for (uint64_t k = 0; k < 2; ++k) {
      const uint64_t id = 1000 + 2 * static_cast<uint64_t>(i) + k;
      batches[static_cast<size_t>(i)].push_back(Write(3, id, RandomBytes(1 << 20, id)));
    }
  }
  std::vector<ChunkWrite> one;
  one.push_back(Write(3, 1, RandomBytes(4096, 1)));
  int background_durable = 0;
  for (int i = 0; i < kBackground; ++i) {
    store_->Put(
        std::move(batches[static_cast<size_t>(i)]),
        [&](const Status& s) {
          EXPECT_TRUE(s.ok()) << s.ToString();
          std::lock_guard lock(mu);
          ++background_durable;
          cv.notify_all();
        },
        ChunkStore::Priority::kBackground,
        [&](const Status& s) {  // written: what the committer did before the delivery
          EXPECT_TRUE(s.ok()) << s.ToString();
          std::lock_guard lock(mu);
          ++background_done;
          cv.notify_all();
        });
  }
  int background_done_at_submit;
  {
    std::lock_guard lock(mu);
    background_done_at_submit = background_done;
  }
  store_->Put(std::move(one), [&](const Status& s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::lock_guard lock(mu);
    foreground_done = true;
    background_done_before_foreground = background_done;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return foreground_done && background_durable == kBackground; });
  EXPECT_EQ(background_done, kBackground);
  EXPECT_LT(background_done_before_foreground - background_done_at_submit, kBackground / 2)
      << "the delivery waited behind most of the background backlog (" << background_done_at_submit
      << " were done when it was queued)";
  lock.unlock();
  EXPECT_EQ(*store_->Get(3, 1), RandomBytes(4096, 1));
  EXPECT_EQ(*store_->Get(3, 1000 + 2 * kBackground - 1), RandomBytes(1 << 20, 1000 + 2 * kBackground - 1));
}

TEST_F(ChunkStoreTest, LargeBackgroundPutIsWrittenInSlicesAndAnsweredOnce) {
  // 40 chunks of 100 KiB (4 MiB) in one background put: more than a
  // background slice (512 KiB), so it is queued as pieces of 5 chunks.
  std::vector<ChunkWrite> chunks;
  for (uint64_t id = 1; id <= 40; ++id) chunks.push_back(Write(5, id, RandomBytes(100 << 10, id)));
  // Chunk 30 exists with other content: that piece fails, the others are stored.
  ASSERT_TRUE(store_->PutSync(5, 30, RandomBytes(10, 99)).ok());
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Status> answers;
  store_->Put(std::move(chunks),
              [&](const Status& s) {
                std::lock_guard lock(mu);
                answers.push_back(s);
                cv.notify_all();
              },
              ChunkStore::Priority::kBackground);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return !answers.empty(); }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a second answer would come now
  std::lock_guard lock(mu);
  ASSERT_EQ(answers.size(), 1u) << "the put was answered once per piece";
  EXPECT_EQ(answers[0].code(), EEXIST) << answers[0].ToString();
  for (uint64_t id = 1; id <= 40; ++id) {
    if (id > 20 && id <= 35) continue;  // the piece with chunk 30 (26-30) is all or nothing
    auto got = store_->Get(5, id);
    ASSERT_TRUE(got.ok()) << "chunk " << id << ": " << got.status().ToString();
    EXPECT_EQ(*got, RandomBytes(100 << 10, id));
  }
  EXPECT_EQ(*store_->Get(5, 30), RandomBytes(10, 99)) << "the existing chunk was overwritten";
}

TEST_F(ChunkStoreTest, ReadManyReportsEachChunkOnceInRequestOrder) {
  for (uint64_t id = 1; id <= 50; ++id) ASSERT_TRUE(store_->PutSync(4, id, RandomBytes(100 + id, id)).ok());
  std::vector<uint64_t> ids;
  for (uint64_t id = 60; id >= 1; id -= 3) ids.push_back(id);  // descending, some absent
  auto r = store_->ReadMany(4, ids, 1 << 20);
  ASSERT_TRUE(r.ok());
  std::string expected;
  std::vector<uint64_t> missing;
  for (uint64_t id : ids) {
    if (id > 50) {
      missing.push_back(id);
      continue;
    }
    expected += RandomBytes(100 + id, id);
  }
  EXPECT_EQ(r->payload, expected);
  EXPECT_EQ(r->missing, missing);
  ASSERT_EQ(r->chunks.size(), ids.size() - missing.size());
  EXPECT_EQ(r->chunks.front().chunk_id, 48u);
  EXPECT_TRUE(r->corrupt.empty());
  EXPECT_TRUE(r->deferred.empty());
}

TEST_F(ChunkStoreTest, BulkPutStoresAll) {
  std::vector<ChunkWrite> chunks;
  for (uint64_t i = 0; i < 100; ++i) chunks.push_back(Write(8, i, RandomBytes(i * 10, i)));
  ASSERT_TRUE(store_->PutSync(std::move(chunks)).ok());
  for (uint64_t i = 0; i < 100; ++i) EXPECT_EQ(*store_->Get(8, i), RandomBytes(i * 10, i));
}

TEST_F(ChunkStoreTest, ConcurrentPutsShareSyncs) {
  constexpr int kThreads = 32, kPuts = 20;
  uint64_t batches_before = store_->synced_batches();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPuts; ++i) {
        uint64_t id = static_cast<uint64_t>(t) * 1000 + static_cast<uint64_t>(i);
        if (!store_->PutSync(static_cast<uint32_t>(id % 16), id, RandomBytes(4096, id)).ok()) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  uint64_t batches = store_->synced_batches() - batches_before;
  EXPECT_LT(batches, uint64_t{kThreads * kPuts}) << "concurrent puts should share fsyncs";
  for (uint64_t id : {0ull, 31019ull, 15007ull})
    EXPECT_EQ(*store_->Get(static_cast<uint32_t>(id % 16), id), RandomBytes(4096, id));
}

TEST_F(ChunkStoreTest, BackgroundPutIsReadableOnceWrittenAndAnsweredAfterAFlush) {
  std::promise<Status> written, done;
  std::vector<ChunkWrite> one;
  one.push_back(Write(6, 1, RandomBytes(5000, 6)));
  store_->Put(
      std::move(one), [&](const Status& s) { done.set_value(s); }, ChunkStore::Priority::kBackground,
      [&](const Status& s) { written.set_value(s); });
  auto written_future = written.get_future();
  auto done_future = done.get_future();
  ASSERT_EQ(written_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_TRUE(written_future.get().ok());
  EXPECT_EQ(*store_->Get(6, 1), RandomBytes(5000, 6)) << "written means readable";
  // Not in the WAL: durable only when the memtable is flushed, which nothing
  // else asks for here; the store does within a second.
  EXPECT_EQ(done_future.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  ASSERT_EQ(done_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(done_future.get().ok());
  Reopen();
  EXPECT_EQ(*store_->Get(6, 1), RandomBytes(5000, 6));
}

TEST_F(ChunkStoreTest, ChunksSurviveReopen) {
  ASSERT_TRUE(store_->PutSync(1, 1, RandomBytes(70000, 9)).ok());
  Reopen();
  EXPECT_EQ(*store_->Get(1, 1), RandomBytes(70000, 9));
}

TEST_F(ChunkStoreTest, ChunksStoredWithEachCompressionStayReadable) {
  // Mail-like text (compressible) and random bytes, small and in blocks;
  // a reopen flushes them into blob files of that compression.
  auto text = [](int seed) {
    std::string t;
    while (t.size() < 90000) t += "Received: from mx" + std::to_string(seed) + ".example.org by spool; line " + std::to_string(t.size()) + "\n";
    return t;
  };
  const std::vector<std::string> compressions = {"zstd", "lz4", "none"};
  for (size_t i = 0; i < compressions.size(); ++i) {
    Reopen(compressions[i]);
    ASSERT_TRUE(store_->PutSync(2, 10 + i, text(static_cast<int>(i)).substr(0, 3000)).ok());
    ASSERT_TRUE(store_->PutSync(2, 20 + i, text(static_cast<int>(i))).ok());
    ASSERT_TRUE(store_->PutSync(2, 30 + i, RandomBytes(5000, i)).ok());
  }
  Reopen("lz4");
  for (size_t i = 0; i < compressions.size(); ++i) {
    SCOPED_TRACE(compressions[i]);
    EXPECT_EQ(*store_->Get(2, 10 + i), text(static_cast<int>(i)).substr(0, 3000));
    EXPECT_EQ(*store_->Get(2, 20 + i), text(static_cast<int>(i)));
    EXPECT_EQ(*store_->Get(2, 30 + i), RandomBytes(5000, i));
  }
  store_.reset();
  ChunkStoreOptions options;
  options.db_dir = dir_.Sub("db");
  options.compression = "snappy";
  auto refused = ChunkStore::Open(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), EINVAL);
  Open();
}

TEST_F(ChunkStoreTest, CorruptBytesOnDiskAreNeverServed) {
  auto victim = RandomBytes(65536, 42);
  auto bystander = RandomBytes(65536, 43);
  ASSERT_TRUE(store_->PutSync(1, 1, victim).ok());
  ASSERT_TRUE(store_->PutSync(1, 2, bystander).ok());
  store_.reset();  // flushes memtables into blob files
  auto changed = spool::testing::FlipPatternOnDisk(dir_.Sub("db"), victim.substr(20000, 64), {".blob", ".sst"});
  ASSERT_FALSE(changed.empty()) << "the chunk's bytes were not found on disk";
  Open();
  auto got = store_->Get(1, 1);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), EBADMSG);
  EXPECT_NE(got.status().message().find("corrupt"), std::string::npos) << got.status().message();
  EXPECT_EQ(store_->Get(1, 1, 0, 10).status().code(), EBADMSG) << "a range read verifies the whole chunk";
  EXPECT_EQ(*store_->Get(1, 2), bystander);
  auto many = store_->ReadMany(1, {1, 2}, 1 << 20);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->corrupt, std::vector<uint64_t>{1});
  EXPECT_EQ(many->payload, bystander);
  // Repair: the good content put again replaces the bad copy.
  ASSERT_TRUE(store_->PutSync(1, 1, victim).ok());
  EXPECT_EQ(*store_->Get(1, 1), victim);
}

// A chunk of more than 64 KiB is kept in 64 KiB blocks: a range read reads
// and verifies the blocks it touches, whole reads and ReadMany all of them.
TEST_F(ChunkStoreTest, LargeChunksAreReadAndVerifiedByBlock) {
  constexpr uint32_t kBlock = 64 << 10;
  const auto image = RandomBytes(1 << 20, 7);          // 16 blocks, as a VM image's slot
  const auto ragged = RandomBytes(3 * kBlock + 5, 8);  // a short last block
  ASSERT_TRUE(store_->PutSync(2, 1, image).ok());
  ASSERT_TRUE(store_->PutSync(2, 2, ragged).ok());
  ASSERT_TRUE(store_->PutSync(2, 1, image).ok()) << "a put of the same content again is fine";
  for (int pass = 0; pass < 2; ++pass) {  // from the memtable, then from blob files
    EXPECT_TRUE(*store_->Get(2, 1) == image);
    EXPECT_TRUE(*store_->Get(2, 2) == ragged);
    for (auto [offset, length] : {std::pair<uint32_t, uint32_t>{0, 4096}, {kBlock - 100, 200}, {5 * kBlock, kBlock},
                                  {kBlock - 1, 3 * kBlock + 2}, {(1 << 20) - 4096, 4096}, {(1 << 20) - 1, 1}})
      EXPECT_TRUE(*store_->Get(2, 1, offset, length) == image.substr(offset, length)) << offset << "+" << length;
    EXPECT_TRUE(*store_->Get(2, 2, 3 * kBlock, 0) == ragged.substr(3 * kBlock));
    EXPECT_EQ(store_->Get(2, 2, 3 * kBlock, 6).status().code(), EINVAL);
    auto info = store_->Stat(2, 1);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->crc32c, spool::Crc32c(image));
    EXPECT_EQ(info->length, 1u << 20);
    auto many = store_->ReadMany(2, {2, 1}, 4 << 20);
    ASSERT_TRUE(many.ok());
    EXPECT_TRUE(many->payload == ragged + image);
    auto listed = store_->List(2, std::nullopt, 10);
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->chunks.size(), 2u);
    EXPECT_EQ(listed->chunks[1].length, 3 * kBlock + 5);
    Reopen();
  }
  // One bad block: every read that touches it fails, the others still serve.
  store_.reset();
  auto changed = spool::testing::FlipPatternOnDisk(dir_.Sub("db"), image.substr(5 * kBlock + 1000, 64), {".blob", ".sst"});
  ASSERT_FALSE(changed.empty());
  Open();
  EXPECT_EQ(store_->Get(2, 1).status().code(), EBADMSG);
  EXPECT_EQ(store_->Get(2, 1, 5 * kBlock + 4096, 4096).status().code(), EBADMSG);
  EXPECT_TRUE(*store_->Get(2, 1, 0, 4096) == image.substr(0, 4096));
  auto many = store_->ReadMany(2, {1, 2}, 4 << 20);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->corrupt, std::vector<uint64_t>{1});
  EXPECT_TRUE(many->payload == ragged);
  ASSERT_TRUE(store_->PutSync(2, 1, image).ok());  // repair
  EXPECT_TRUE(*store_->Get(2, 1) == image);
  // Deleted with every block: a new chunk under the id is not mixed with them.
  ASSERT_TRUE(store_->DeleteSync({ChunkInfo{1, 2, 0, 0}}).ok());
  EXPECT_EQ(store_->Get(2, 1).status().code(), ENOENT);
  const auto smaller = RandomBytes(2 * kBlock, 9);
  ASSERT_TRUE(store_->PutSync(2, 1, smaller).ok());
  EXPECT_TRUE(*store_->Get(2, 1) == smaller);
  ASSERT_TRUE(store_->Compact().ok());
  EXPECT_TRUE(*store_->Get(2, 1) == smaller);
}

// A full disk: a tiny tmpfs (needs root to mount).
class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_point_ = dir_.Sub("fs");
    std::filesystem::create_directories(mount_point_);
    if (::mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, "size=48m") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs (not root?): " << strerror(errno);
    mounted_ = true;
  }
  void TearDown() override {
    store_.reset();
    if (mounted_) ::umount2(mount_point_.c_str(), MNT_DETACH);
  }
  // A store on the tmpfs with small write buffers and blob files.
  void Open() {
    options_.db_dir = mount_point_ + "/db";
    options_.reserve_bytes = 8 << 20;
    options_.write_buffer_size = 4 << 20;
    options_.blob_file_size = 4 << 20;
    options_.allow_fallocate = false;
    auto store = ChunkStore::Open(options_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  spool::testing::TempDir dir_;
  std::string mount_point_;
  bool mounted_ = false;
  ChunkStoreOptions options_;
  std::unique_ptr<ChunkStore> store_;
};

TEST_F(FullDiskTest, EnospcThenReadableThenDeletesMakeRoom) {
  ASSERT_NO_FATAL_FAILURE(Open());

  constexpr size_t kChunk = 256 << 10;
  uint64_t stored = 0;
  Status s;
  for (; stored < 400; ++stored) {
    s = store_->PutSync(1, stored, RandomBytes(kChunk, stored));
    if (!s.ok()) break;
  }
  ASSERT_EQ(s.code(), ENOSPC) << s.ToString();
  ASSERT_GT(stored, 10u);
  // Still readable and consistent.
  for (uint64_t id = 0; id < stored; id += 7) EXPECT_EQ(*store_->Get(1, id), RandomBytes(kChunk, id)) << id;
  EXPECT_EQ(store_->List(1, std::nullopt, 1000)->chunks.size(), stored);

  std::vector<ChunkInfo> all;
  for (uint64_t id = 0; id < stored; ++id) all.push_back(ChunkInfo{id, 1, 0, 0});
  ASSERT_TRUE(store_->DeleteSync(std::move(all)).ok());
  // Deleted bytes come back once compaction and blob GC have run and RocksDB
  // has purged the obsolete files, which it does in the background.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    s = store_->PutSync(1, 1000, RandomBytes(kChunk, 1000));
    if (!s.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (!s.ok() && std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(s.ok()) << "deleting everything should make room: " << s.ToString();
  // And again nearly as much as before fits.
  uint64_t again = 0;
  for (; again < stored / 2; ++again)
    if (!store_->PutSync(1, 2000 + again, RandomBytes(kChunk, again)).ok()) break;
  EXPECT_EQ(again, stored / 2);
}

// A repair or move copy stops at twice the reserve, where a client's put
// still fits: on a brick that was full, repair must not take the room blob
// GC needs to give deleted space back.
TEST_F(FullDiskTest, RepairCopiesLeaveTwiceTheReserveFree) {
  ASSERT_NO_FATAL_FAILURE(Open());

  constexpr size_t kChunk = 256 << 10;
  auto free_bytes = [&] {
    struct statvfs st {};
    EXPECT_EQ(::statvfs(mount_point_.c_str(), &st), 0);
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  };
  // Filled with clients' puts to half a chunk short of what a copy needs: a
  // little space RocksDB frees meanwhile (a flushed memtable's WAL, purged
  // files) must not make the copy fit. Filled again once that has settled.
  const uint64_t full_below = 2 * options_.reserve_bytes + kChunk / 2;
  uint64_t id = 0;
  for (int round = 0; round < 5; ++round) {
    for (; free_bytes() >= full_below; ++id) {
      ASSERT_LT(id, 400u) << "the tmpfs never filled";
      ASSERT_TRUE(store_->PutSync(1, id, RandomBytes(kChunk, id)).ok()) << id;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (free_bytes() < full_below) break;
  }
  const std::string bytes = RandomBytes(kChunk, 99);
  std::vector<ChunkWrite> copy;
  copy.push_back(ChunkWrite{ChunkInfo{1, 2, Crc32c(bytes), static_cast<uint32_t>(bytes.size())}, bytes});
  Status s = store_->PutSync(std::move(copy), ChunkStore::Priority::kBackground);
  EXPECT_EQ(s.code(), ENOSPC) << s.ToString();
  EXPECT_FALSE(store_->Get(2, 1).ok());
  s = store_->PutSync(2, 1, bytes);
  EXPECT_TRUE(s.ok()) << "a client's put still fits above the reserve: " << s.ToString();
}

}  // namespace
}  // namespace spool::brick
