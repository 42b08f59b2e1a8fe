// Growing, draining and replacing bricks online (issue 11), on real
// processes and a real mount: placement groups move to a new brick in bulk
// while mail keeps flowing, old copies are deleted only after the new ones
// are complete, a brick drains and is removed, an unsafe remove is refused,
// bricks of different sizes fill in proportion, a move survives SIGKILLs, and
// a brick in maintenance is not rebuilt elsewhere. Every test ends by reading
// every acknowledged message byte for byte.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <thread>

#include "common/cluster_key.h"
#include "common/rpc/client.h"
#include "common/rpc/runtime.h"
#include "tests/mount/delivery_load.h"
#include "tests/mount/mount_env.h"

using namespace spool::testing;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;
using spool::proto::StatusReply;

constexpr uint32_t kPgCount = 64;

ClusterConfig BricksCluster(int bricks, std::vector<std::string> extra_meta_args = {}) {
  ClusterConfig config;
  config.bricks = bricks;
  config.meta_args = {"--brick-down-after-ms", "2000", "--pg-count", std::to_string(kPgCount), "--move-settle-ms",
                      "1500"};
  config.meta_args.insert(config.meta_args.end(), extra_meta_args.begin(), extra_meta_args.end());
  // Old copies are deleted one second after a brick stopped holding them.
  config.brick_args = {"--scrub-interval-hours", "0", "--gc-delay-ms", "1000", "--reserve-bytes", "8388608"};
  return config;
}

uint32_t Members(const StatusReply& st, uint32_t id) {
  uint32_t n = 0;
  for (const auto& pg : st.map().pgs()) n += std::count(pg.bricks().begin(), pg.bricks().end(), id);
  return n;
}

uint32_t Held(const StatusReply& st, uint32_t id) {
  uint32_t n = Members(st, id);
  for (const auto& pg : st.map().pgs()) n += std::count(pg.leaving().begin(), pg.leaving().end(), id);
  return n;
}

// Waits until no group is moving or pending repair and every group is
// healthy; returns the seconds it took, or -1 on timeout.
double WaitSettled(LocalCluster& cluster, std::chrono::seconds timeout, StatusReply* out = nullptr) {
  const auto start = Clock::now();
  StatusReply st;
  while (Clock::now() - start < timeout) {
    if (cluster.Status(&st) && st.pgs_moving() == 0 && st.repair().pgs_pending() == 0 &&
        st.pgs_healthy() == st.map().pg_count()) {
      if (out) *out = st;
      return std::chrono::duration<double>(Clock::now() - start).count();
    }
    std::this_thread::sleep_for(200ms);
  }
  ADD_FAILURE() << "not settled after " << timeout.count() << " s: " << st.pgs_moving() << " moving, "
                << st.pgs_degraded() << " degraded, " << st.repair().pgs_pending() << " pending";
  if (out) *out = st;
  return -1;
}

// The chunk ids brick `index` holds, per placement group (lists each PG).
std::vector<std::set<uint64_t>> Listing(LocalCluster& cluster, int index) {
  std::vector<std::set<uint64_t>> out(kPgCount);
  auto key = spool::ClusterKey::Load(cluster.key_path());
  EXPECT_TRUE(key.ok());
  spool::rpc::IoRuntime runtime(1);
  auto client = spool::rpc::RpcClient::Create(runtime.io(), cluster.brick_address(index), *key);
  for (uint32_t pg = 0; pg < kPgCount; ++pg) {
    spool::proto::ListChunksRequest req;
    req.set_pg(pg);
    req.set_max_entries(10000);
    for (;;) {
      spool::proto::ListChunksReply reply;
      auto s = client->CallSync(spool::rpc::Method::kListChunks, req, &reply, {}, nullptr, 5s);
      EXPECT_TRUE(s.ok()) << "list pg " << pg << " on brick " << index << ": " << s.ToString();
      if (!s.ok()) break;
      for (const auto& c : reply.chunks()) out[pg].insert(c.chunk_id());
      if (reply.complete() || reply.chunks_size() == 0) break;
      req.set_has_after(true);
      req.set_after_chunk_id(reply.chunks(reply.chunks_size() - 1).chunk_id());
    }
  }
  client->Close();
  runtime.Stop();
  return out;
}

// Every group has all its chunks on each of its R members, and no brick
// keeps chunks of a group it is not in (the old copies were collected).
// Waits up to `timeout` for the collection; returns the chunks per brick.
std::vector<size_t> ExpectCopiesWhereTheMapSays(LocalCluster& cluster, const std::vector<int>& bricks,
                                                std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    StatusReply st;
    EXPECT_TRUE(cluster.Status(&st));
    std::map<uint32_t, std::vector<std::set<uint64_t>>> listing;
    for (int i : bricks) listing[cluster.BrickId(i)] = Listing(cluster, i);
    size_t stray = 0, short_copies = 0;
    for (uint32_t pg = 0; pg < kPgCount; ++pg) {
      const auto& members = st.map().pgs(pg).bricks();
      EXPECT_EQ(members.size(), 3) << "pg " << pg;
      std::set<uint64_t> all;
      for (auto& [id, l] : listing) all.insert(l[pg].begin(), l[pg].end());
      for (auto& [id, l] : listing) {
        const bool member = std::find(members.begin(), members.end(), id) != members.end();
        if (!member) stray += l[pg].size();
        if (member && l[pg] != all) ++short_copies;
      }
    }
    EXPECT_EQ(short_copies, 0u) << "groups with a member lacking chunks another brick has";
    if (stray == 0 || Clock::now() > deadline) {
      EXPECT_EQ(stray, 0u) << "chunks left on bricks that no longer hold their group";
      std::vector<size_t> per_brick;
      for (int i : bricks) {
        size_t n = 0;
        for (const auto& s : listing[cluster.BrickId(i)]) n += s.size();
        per_brick.push_back(n);
      }
      return per_brick;
    }
    std::this_thread::sleep_for(500ms);
  }
}

std::map<std::string, std::string> WriteMessages(const std::string& root, int count, uint64_t seed) {
  ::mkdir((root + "/new").c_str(), 0700);
  std::map<std::string, std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string name = "s" + std::to_string(seed) + "." + std::to_string(i);
    std::string body = RandomBytes(500 + (seed * 7919 + i * 104729) % 12000, seed * 1000003 + i);
    WriteAll(root + "/new/" + name, body, i % 8 == 0);
    out[name] = std::move(body);
  }
  return out;
}

void ExpectAllReadableThroughFreshMount(LocalCluster& cluster, const std::map<std::string, std::string>& messages) {
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  ExpectAllPresent(mount + "/box", messages);
  cluster.Unmount(mount);
}

}  // namespace

// A pending brick (no auto-join) holds nothing until `spoolctl add-brick`;
// then about a quarter of the slots move to it while mail is delivered, the
// spread is even, every group ends with all its chunks on its 3 members and
// the old copies are gone.
TEST(Bricks, AddBrickToLoadedClusterMovesGroupsEvenly) {
  LocalCluster cluster(BricksCluster(3, {"--auto-join=false"}));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 400, 1);

  const int added = cluster.AddBrick();
  ASSERT_GE(added, 0);
  ASSERT_TRUE(cluster.WaitBricksUp(4));
  const uint32_t id = cluster.BrickId(added);
  ASSERT_NE(id, 0u);
  StatusReply st;
  ASSERT_TRUE(cluster.Status(&st));
  EXPECT_EQ(Members(st, id), 0u) << "a brick registered without auto-join must wait for add-brick";

  DeliveryLoad load(root, 2);
  std::string out;
  ASSERT_EQ(cluster.Ctl({"add-brick", std::to_string(id)}, &out), 0) << out;
  EXPECT_NE(out.find("added"), std::string::npos) << out;
  ASSERT_TRUE(cluster.Status(&st));
  EXPECT_GT(st.pgs_moving(), 0u) << "groups should be moving to the new brick";
  const double settled_s = WaitSettled(cluster, 60s, &st);
  load.Stop();
  EXPECT_GE(settled_s, 0);
  EXPECT_EQ(load.errors(), 0) << load.first_error();
  auto during = load.acknowledged();
  EXPECT_GT(during.size(), 10u);
  messages.insert(during.begin(), during.end());

  // Even spread: 64 groups x 3 copies over 4 equal bricks = 48 each, +-10%.
  for (int i = 0; i < 4; ++i) {
    const uint32_t m = Members(st, cluster.BrickId(i));
    EXPECT_GE(m, 43u) << "brick " << i;
    EXPECT_LE(m, 53u) << "brick " << i;
  }
  EXPECT_GT(st.repair().chunks_copied(), 0u);
  auto per_brick = ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3}, 30s);
  EXPECT_GT(per_brick[3], messages.size() / 2) << "the new brick should hold about 3/4 of the chunks";
  std::fprintf(stderr, "add-brick: %zu messages, settled after %.1f s, chunks per brick %zu %zu %zu %zu\n",
               messages.size(), settled_s, per_brick[0], per_brick[1], per_brick[2], per_brick[3]);
  ExpectAllPresent(root, messages);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Drain a brick while deliverers run: no error, no loss; removing a brick
// that still holds groups is refused with a reason; the drained brick ends
// empty and is removed; the messages read back without it.
TEST(Bricks, DrainWhileDeliveringThenRemove) {
  LocalCluster cluster(BricksCluster(4));
  ASSERT_TRUE(cluster.Start());
  ASSERT_GE(WaitSettled(cluster, 30s), 0);  // the bricks joined one by one
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 300, 2);
  const uint32_t drained = cluster.BrickId(3);
  const uint32_t member = cluster.BrickId(0);

  DeliveryLoad load(root, 3);
  std::this_thread::sleep_for(500ms);
  std::string out;
  ASSERT_EQ(cluster.Ctl({"drain-brick", std::to_string(drained)}, &out), 0) << out;
  // Refused while it holds groups, with a message that says why.
  EXPECT_NE(cluster.Ctl({"remove-brick", std::to_string(drained)}, &out), 0);
  EXPECT_NE(out.find("refusing to remove"), std::string::npos) << out;
  ASSERT_EQ(cluster.Ctl({"drain-brick", std::to_string(drained), "--wait", "--timeout", "60"}, &out), 0) << out;
  load.Stop();
  EXPECT_EQ(load.errors(), 0) << load.first_error();
  auto during = load.acknowledged();
  EXPECT_GT(during.size(), 10u);
  messages.insert(during.begin(), during.end());

  StatusReply st;
  ASSERT_GE(WaitSettled(cluster, 30s, &st), 0);
  EXPECT_EQ(Held(st, drained), 0u);
  auto per_brick = ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3}, 30s);
  EXPECT_EQ(per_brick[3], 0u) << "a drained brick must hold no live data";

  // A member brick may hold the only good copy of something: refused.
  EXPECT_NE(cluster.Ctl({"remove-brick", std::to_string(member)}, &out), 0);
  EXPECT_NE(out.find("refusing to remove"), std::string::npos) << out;
  ASSERT_EQ(cluster.Ctl({"remove-brick", std::to_string(drained)}, &out), 0) << out;
  ASSERT_TRUE(cluster.Status(&st));
  for (const auto& b : st.map().bricks()) EXPECT_NE(b.id(), drained) << "removed brick still in the map";
  EXPECT_EQ(Held(st, member), 64u) << "three bricks left: each holds every group";

  cluster.KillBrick(3);
  ExpectAllPresent(root, messages);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Undrain cancels a drain: the brick takes its groups back.
TEST(Bricks, UndrainCancelsADrain) {
  LocalCluster cluster(BricksCluster(4));
  ASSERT_TRUE(cluster.Start());
  ASSERT_GE(WaitSettled(cluster, 30s), 0);  // the bricks joined one by one
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 150, 3);
  const uint32_t id = cluster.BrickId(2);
  StatusReply st;
  ASSERT_TRUE(cluster.Status(&st));
  const uint32_t before = Members(st, id);
  std::string out;
  ASSERT_EQ(cluster.Ctl({"drain-brick", std::to_string(id)}, &out), 0) << out;
  ASSERT_TRUE(cluster.Status(&st));
  EXPECT_EQ(Members(st, id), 0u);
  EXPECT_EQ(Held(st, id), before) << "a draining brick keeps serving its groups until they have moved";
  ASSERT_EQ(cluster.Ctl({"undrain-brick", std::to_string(id)}, &out), 0) << out;
  ASSERT_GE(WaitSettled(cluster, 60s, &st), 0);
  EXPECT_EQ(Members(st, id), before) << "placement is a function of the bricks: the same groups come back";
  ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3}, 30s);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Five bricks of 1x, 1x, 1x, 2x and 2x the size: slots and chunks in
// proportion to capacity, each within 10% of its fair share.
TEST(Bricks, UnevenBricksFillInProportionToCapacity) {
  ClusterConfig config = BricksCluster(0);
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.StartMeta());
  const uint64_t mib = 1ull << 20;
  const uint64_t sizes[] = {256 * mib, 256 * mib, 256 * mib, 512 * mib, 512 * mib};
  for (uint64_t size : sizes) ASSERT_GE(cluster.AddBrick({}, size), 0) << "tmpfs needs root";
  ASSERT_TRUE(cluster.WaitBricksUp(5));
  StatusReply st;
  ASSERT_GE(WaitSettled(cluster, 30s, &st), 0);
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 2000, 4);
  ASSERT_TRUE(cluster.Status(&st));
  double total_capacity = 0;
  std::vector<double> capacity;
  for (int i = 0; i < 5; ++i) {
    for (const auto& b : st.map().bricks())
      if (b.id() == cluster.BrickId(i)) capacity.push_back(static_cast<double>(b.capacity_bytes()));
    total_capacity += capacity.back();
  }
  auto per_brick = ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3, 4}, 10s);
  size_t total_chunks = 0;
  for (size_t n : per_brick) total_chunks += n;
  for (int i = 0; i < 5; ++i) {
    const double fair = capacity[i] / total_capacity;
    const double slots = static_cast<double>(Members(st, cluster.BrickId(i))) / (3.0 * kPgCount);
    const double chunks = static_cast<double>(per_brick[i]) / static_cast<double>(total_chunks);
    std::fprintf(stderr, "brick %d: capacity share %.3f, slot share %.3f, chunk share %.3f\n", i, fair, slots, chunks);
    EXPECT_NEAR(slots, fair, 0.10 * fair) << "brick " << i;
    EXPECT_NEAR(chunks, fair, 0.10 * fair) << "brick " << i;
  }
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// SIGKILL the destination brick, then meta, in the middle of a move (the new
// brick pulls at 1 MiB/s): the move resumes and completes; nothing is lost.
TEST(Bricks, MoveSurvivesKillOfDestinationAndMeta) {
  LocalCluster cluster(BricksCluster(3));
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 700, 5);  // ~4 MiB: about 4 s of pulling for the new brick

  const int added = cluster.AddBrick({"--repair-mbps", "1", "--repair-quiet-mbps", "1"});
  ASSERT_GE(added, 0);
  std::this_thread::sleep_for(2500ms);  // past the settle time: copying has started
  StatusReply st;
  ASSERT_TRUE(cluster.Status(&st));
  EXPECT_GT(st.pgs_moving(), 0u) << "the move finished before the kill; make it slower";
  cluster.KillBrick(added);
  ASSERT_TRUE(cluster.StartBrick(added));
  std::this_thread::sleep_for(1500ms);
  cluster.KillMeta();
  ASSERT_TRUE(cluster.StartMeta());
  ASSERT_TRUE(cluster.WaitBricksUp(4));
  ASSERT_GE(WaitSettled(cluster, 60s, &st), 0);
  const uint32_t id = cluster.BrickId(added);
  EXPECT_GE(Members(st, id), 43u);
  auto per_brick = ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3}, 30s);
  EXPECT_GT(per_brick[3], 0u);
  ExpectAllPresent(root, messages);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// Moves yield more than repairs: with --repair-mbps unlimited and
// --move-mbps 1, a new brick pulls its groups at about 1 MiB/s while mail is
// delivered, at full speed once it stops; then a wiped brick, rebuilt under
// the same deliveries, is not held to the move cap (it has copies to restore).
TEST(Bricks, MovesTakeTheirOwnSmallerShareWhileClientsWrite) {
  auto config = BricksCluster(3);
  config.brick_args.insert(config.brick_args.end(),
                           {"--repair-mbps", "0", "--move-mbps", "1", "--repair-quiet-mbps", "0"});
  LocalCluster cluster(config);
  ASSERT_TRUE(cluster.Start());
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  ASSERT_EQ(::mkdir((root + "/new").c_str(), 0700), 0);
  auto messages = WriteBigMessages(root, 32);  // 32 MiB; a fourth brick takes about 3/4 of it
  StatusReply st;
  ASSERT_TRUE(cluster.Status(&st));
  const uint64_t copied_at_start = st.repair().bytes_copied();

  {
    DeliveryLoad load(root, 2);
    const int added = cluster.AddBrick();  // with the same flags
    ASSERT_GE(added, 0);
    std::this_thread::sleep_for(7s);  // 1.5 s settle, then about 5 s of moving
    ASSERT_TRUE(cluster.Status(&st));
    EXPECT_GT(st.pgs_moving(), 0u) << "the move finished under load: --move-mbps did not hold it back";
    load.Stop();
    EXPECT_EQ(load.errors(), 0) << load.first_error();
    messages.merge(load.acknowledged());
  }
  const uint64_t moved_busy = st.repair().bytes_copied() - copied_at_start;
  std::fprintf(stderr, "move while deliveries ran (7 s): %.1f MiB copied\n", moved_busy / 1048576.0);
  // What 1 MiB/s lets through in the time, with the bulk reads granted at
  // once (up to 4 MiB each); the move needs ~24 MiB, brick 0 holds >= 21 MiB.
  constexpr uint64_t kHeldBack = 16ull << 20;
  EXPECT_LT(moved_busy, kHeldBack) << "the move did not slow down for the deliveries";
  const double settled_s = WaitSettled(cluster, 30s, &st);
  EXPECT_GE(settled_s, 0) << "the move did not speed up once the deliveries stopped";
  std::fprintf(stderr, "then settled %.1f s after the deliveries stopped\n", settled_s);

  // A rebuild under the same load is a repair: --repair-mbps (unlimited) holds.
  const uint64_t copied_before_rebuild = st.repair().bytes_copied();
  cluster.KillBrick(0);
  std::filesystem::remove_all(cluster.brick_dir(0));
  const std::string root2 = MakeRoot(mount, "box2");
  std::map<std::string, std::string> messages2;
  {
    DeliveryLoad load(root2, 2);
    ASSERT_TRUE(cluster.StartBrick(0));
    std::this_thread::sleep_for(5s);
    ASSERT_TRUE(cluster.Status(&st));
    load.Stop();
    EXPECT_EQ(load.errors(), 0) << load.first_error();
    messages2 = load.acknowledged();
  }
  const uint64_t rebuilt_busy = st.repair().bytes_copied() - copied_before_rebuild;
  std::fprintf(stderr, "rebuild while deliveries ran (5 s): %.1f MiB copied\n", rebuilt_busy / 1048576.0);
  EXPECT_GE(rebuilt_busy, kHeldBack) << "a rebuild was held back like a move";
  ASSERT_GE(WaitSettled(cluster, 30s), 0);
  ExpectAllPresent(root2, messages2);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}

// A brick in maintenance may stay away past the grace period without its
// groups moving; it catches up when it returns.
TEST(Bricks, MaintenanceDoesNotRebuildAndCatchesUp) {
  LocalCluster cluster(BricksCluster(4, {"--brick-out-after-ms", "3000", "--maintenance-grace-ms", "60000"}));
  ASSERT_TRUE(cluster.Start());
  ASSERT_GE(WaitSettled(cluster, 30s), 0);  // the bricks joined one by one
  auto mount = cluster.Mount();
  ASSERT_FALSE(mount.empty());
  auto root = MakeRoot(mount, "box");
  auto messages = WriteMessages(root, 150, 6);
  const uint32_t id = cluster.BrickId(1);
  std::string out;
  ASSERT_EQ(cluster.Ctl({"maintenance", std::to_string(id), "on"}, &out), 0) << out;
  StatusReply before;
  ASSERT_TRUE(cluster.Status(&before));
  const uint32_t groups = Members(before, id);
  EXPECT_GT(groups, 0u);

  cluster.KillBrick(1);
  auto during = WriteMessages(root, 150, 7);
  std::this_thread::sleep_for(6s);  // twice the grace period of a brick not in maintenance
  StatusReply st;
  ASSERT_TRUE(cluster.Status(&st));
  for (const auto& b : st.map().bricks()) {
    if (b.id() == id) {
      EXPECT_EQ(b.state(), spool::proto::BRICK_DOWN) << "a brick in maintenance was taken out";
    }
  }
  EXPECT_EQ(Members(st, id), groups) << "groups moved off a brick in maintenance";

  ASSERT_TRUE(cluster.StartBrick(1));
  ASSERT_GE(WaitSettled(cluster, 60s, &st), 0);
  ASSERT_EQ(cluster.Ctl({"maintenance", std::to_string(id), "off"}, &out), 0) << out;
  messages.insert(during.begin(), during.end());
  ExpectCopiesWhereTheMapSays(cluster, {0, 1, 2, 3}, 10s);
  ExpectAllPresent(root, messages);
  cluster.Unmount(mount);
  ExpectAllReadableThroughFreshMount(cluster, messages);
}
