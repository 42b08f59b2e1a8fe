// SIGKILL the real spool-meta during a stream of creates, renames and
// unlinks from several clients; after a restart every acknowledged operation
// is there, nothing unacknowledged is half-done (a name is in tmp/ or new/,
// never both), and the inode count matches the tree.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "tests/meta/meta_process.h"

namespace spool::testing {
namespace {

using rpc::Method;

enum class Where { kNowhere, kTmp, kNew };

struct Expect {
  Where acked = Where::kNowhere;    // state after the last acknowledged op
  Where pending = Where::kNowhere;  // state the unacknowledged op would give
  bool has_pending = false;
};

uint64_t MkdirSync(rpc::RpcClient& c, uint64_t parent, const std::string& name) {
  proto::CreateRequest req;
  req.set_parent(parent);
  req.set_name(name);
  req.set_mode(S_IFDIR | 0755);
  proto::EntryReply reply;
  EXPECT_TRUE(c.CallSync(Method::kCreate, req, &reply).ok());
  return reply.attr().ino();
}

std::map<std::string, uint64_t> List(rpc::RpcClient& c, uint64_t dir) {
  std::map<std::string, uint64_t> out;
  std::string after;
  for (;;) {
    proto::ReaddirRequest req;
    req.set_ino(dir);
    req.set_after_name(after);
    req.set_max_entries(5000);
    proto::ReaddirReply reply;
    EXPECT_TRUE(c.CallSync(Method::kReaddir, req, &reply).ok());
    for (auto& e : reply.entries()) out[e.name()] = e.ino();
    if (reply.entries_size()) after = reply.entries(reply.entries_size() - 1).name();
    if (reply.complete() || reply.entries_size() == 0) break;
  }
  return out;
}

TEST(CrashTest, SigkillLosesNothingAcknowledged) {
  MetaProcess meta;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(meta.Start()) << meta.log();
    rpc::IoRuntime io(2);
    auto admin = meta.Connect(io);
    uint64_t tmp, fresh;
    if (round == 0) {
      tmp = MkdirSync(*admin, 1, "tmp");
      fresh = MkdirSync(*admin, 1, "new");
    } else {
      proto::LookupRequest l;
      l.set_parent(1);
      proto::EntryReply e;
      l.set_name("tmp");
      ASSERT_TRUE(admin->CallSync(Method::kLookup, l, &e).ok());
      tmp = e.attr().ino();
      l.set_name("new");
      ASSERT_TRUE(admin->CallSync(Method::kLookup, l, &e).ok());
      fresh = e.attr().ino();
    }

    constexpr int kClients = 6;
    std::mutex mu;
    std::map<std::string, Expect> expect;  // guarded by mu
    std::atomic<bool> stop{false};
    std::atomic<int> acked{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < kClients; ++c) {
      threads.emplace_back([&, c] {
        auto client = meta.Connect(io);
        for (int i = 0; !stop; ++i) {
          // Appended, not `"r" + std::string`: a false -Wrestrict of GCC 12 at -O3.
          std::string name = "r";
          name += std::to_string(round) + ".c";
          name += std::to_string(c) + ".";
          name += std::to_string(i);
          auto step = [&](Where to, auto&& call) {
            {
              std::lock_guard lock(mu);
              auto& e = expect[name];
              e.pending = to;
              e.has_pending = true;
            }
            Status s = call();
            std::lock_guard lock(mu);
            auto& e = expect[name];
            if (s.ok()) {
              e.acked = to;
              e.has_pending = false;
              ++acked;
            }
            return s.ok();
          };
          proto::CreateRequest create;
          create.set_parent(tmp);
          create.set_name(name);
          create.set_mode(S_IFREG | 0600);
          create.set_exclusive(true);
          if (!step(Where::kTmp, [&] { return client->CallSync(Method::kCreate, create); })) break;
          proto::RenameRequest rename;
          rename.set_old_parent(tmp);
          rename.set_old_name(name);
          rename.set_new_parent(fresh);
          rename.set_new_name(name);
          if (!step(Where::kNew, [&] { return client->CallSync(Method::kRename, rename); })) break;
          if (i % 3 == 0) {
            proto::UnlinkRequest unlink;
            unlink.set_parent(fresh);
            unlink.set_name(name);
            if (!step(Where::kNowhere, [&] { return client->CallSync(Method::kUnlink, unlink); })) break;
          }
        }
        client->Close();
      });
    }
    while (acked < 600 * (round + 1)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    meta.Kill(9);
    stop = true;
    for (auto& t : threads) t.join();
    admin->Close();

    ASSERT_TRUE(meta.Start()) << meta.log();
    auto check = meta.Connect(io);
    auto in_tmp = List(*check, tmp);
    auto in_new = List(*check, fresh);
    size_t files = 0;
    for (auto& [name, e] : expect) {
      const bool t = in_tmp.count(name), n = in_new.count(name);
      ASSERT_FALSE(t && n) << name << " is in both tmp/ and new/";
      const Where actual = t ? Where::kTmp : n ? Where::kNew : Where::kNowhere;
      if (e.has_pending)
        EXPECT_TRUE(actual == e.acked || actual == e.pending) << name;
      else
        EXPECT_EQ(actual, e.acked) << name << " (acknowledged)";
    }
    // Nothing unknown appeared, and no inode leaked or went missing.
    for (auto& [name, ino] : in_tmp) EXPECT_TRUE(expect.count(name) || name.rfind("r", 0) == 0) << name;
    auto all_tmp = List(*check, tmp).size(), all_new = List(*check, fresh).size();
    files = all_tmp + all_new;
    proto::StatfsReply statfs;
    ASSERT_TRUE(check->CallSync(Method::kStatfs, proto::Empty(), &statfs).ok());
    EXPECT_EQ(statfs.inodes(), files + 3) << "root, tmp, new and one inode per name";
    check->Close();
    ASSERT_EQ(meta.Stop(), 0) << "clean SIGTERM shutdown";
    std::printf("round %d: %d ops acknowledged before SIGKILL, %zu names checked\n", round, acked.load(), expect.size());
  }
}

}  // namespace
}  // namespace spool::testing
