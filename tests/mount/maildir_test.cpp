// Maildir delivery the way Postfix and Dovecot's LDA do it, on a real mount:
// create tmp/UNIQUE, write, fsync, rename into new/; then read every message
// back, flag it (new/X -> cur/X:2,S), and expunge 30%.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "tests/mount/mount_env.h"

using namespace spool::testing;

namespace {

std::set<std::string> ListNames(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (auto* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  closedir(d);
  return names;
}

size_t MessageSize(std::mt19937_64& rng) {
  int bucket = static_cast<int>(rng() % 100);
  if (bucket < 60) return 1024 + rng() % 3072;
  if (bucket < 90) return 4096 + rng() % 61440;
  return 65536 + rng() % 200000;
}

}  // namespace

TEST(Maildir, ConcurrentDeliveryReadFlagExpunge) {
  auto root = MountEnvironment::TestDir();
  constexpr int kMailboxes = 50, kDeliverers = 16, kPerDeliverer = 40;
  for (int m = 0; m < kMailboxes; ++m) {
    std::string box = root + "/user" + std::to_string(m);
    ASSERT_EQ(::mkdir(box.c_str(), 0700), 0);
    for (const char* sub : {"/tmp", "/new", "/cur"}) ASSERT_EQ(::mkdir((box + sub).c_str(), 0700), 0);
  }

  std::mutex mu;  // guards delivered
  std::map<std::string, std::string> delivered;  // mailbox/name -> contents
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kDeliverers; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      for (int i = 0; i < kPerDeliverer; ++i) {
        std::string box = root + "/user" + std::to_string(rng() % kMailboxes);
        std::string unique = std::to_string(1700000000 + i) + ".M" + std::to_string(t) + "P" + std::to_string(i) +
                             ".testhost";
        std::string body = RandomBytes(MessageSize(rng), rng());
        std::string tmp = box + "/tmp/" + unique, dst = box + "/new/" + unique;
        int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd < 0) {
          ++errors;
          continue;
        }
        bool ok = ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()) && ::fsync(fd) == 0;
        ok = ::close(fd) == 0 && ok;
        ok = ok && ::rename(tmp.c_str(), dst.c_str()) == 0;
        if (!ok) {
          ++errors;
          continue;
        }
        std::lock_guard lock(mu);
        delivered[dst.substr(root.size())] = std::move(body);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(errors.load(), 0);
  ASSERT_EQ(delivered.size(), static_cast<size_t>(kDeliverers * kPerDeliverer));

  // Every message is in new/, nothing is left in tmp/, contents exact.
  size_t found = 0;
  for (int m = 0; m < kMailboxes; ++m) {
    std::string box = root + "/user" + std::to_string(m);
    EXPECT_TRUE(ListNames(box + "/tmp").empty());
    for (const auto& name : ListNames(box + "/new")) {
      std::string rel = "/user" + std::to_string(m) + "/new/" + name;
      auto it = delivered.find(rel);
      ASSERT_NE(it, delivered.end()) << "unexpected message " << rel;
      ASSERT_TRUE(ReadAll(root + rel) == it->second) << "contents differ: " << rel;
      ++found;
    }
  }
  EXPECT_EQ(found, delivered.size());

  // Flag: new/X -> cur/X:2,S; expunge every third message (about 30%).
  std::map<std::string, std::string> remaining;
  int index = 0;
  for (const auto& [rel, body] : delivered) {
    auto slash = rel.find("/new/");
    std::string cur = rel.substr(0, slash) + "/cur/" + rel.substr(slash + 5) + ":2,S";
    ASSERT_EQ(::rename((root + rel).c_str(), (root + cur).c_str()), 0) << rel;
    if (index++ % 10 < 3) {
      ASSERT_EQ(::unlink((root + cur).c_str()), 0) << cur;
    } else {
      remaining[cur] = body;
    }
  }
  size_t in_cur = 0;
  for (int m = 0; m < kMailboxes; ++m) {
    std::string box = root + "/user" + std::to_string(m);
    EXPECT_TRUE(ListNames(box + "/new").empty());
    for (const auto& name : ListNames(box + "/cur")) {
      std::string rel = "/user" + std::to_string(m) + "/cur/" + name;
      auto it = remaining.find(rel);
      ASSERT_NE(it, remaining.end()) << "expunged message still present: " << rel;
      ASSERT_TRUE(ReadAll(root + rel) == it->second) << rel;
      ++in_cur;
    }
  }
  EXPECT_EQ(in_cur, remaining.size());
}
