#include "meta/repair_table.h"

#include <algorithm>

#include "common/bytes.h"
#include "common/log.h"
#include "common/placement.h"
#include "meta/keys.h"

namespace spool::meta {
namespace {

// P <pg:BE32> -> BE64 generation, BE32 severity, BE64 marked_ms
// P           -> BE64 the last generation handed out
std::string MarkKey(uint32_t pg) {
  std::string k(1, 'P');
  PutBE32(k, pg);
  return k;
}

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

constexpr auto kRateWindow = std::chrono::seconds(10);

}  // namespace

Status RepairTable::Load() {
  std::lock_guard lock(mu_);
  marks_.clear();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("P"); it->Valid() && it->key().starts_with("P"); it->Next()) {
    if (it->key().size() == 1 && it->value().size() == 8) {  // the last generation handed out
      last_generation_ = std::max(last_generation_, GetBE64(std::string_view(it->value().data(), 8)));
      continue;
    }
    if (it->key().size() != 5 || it->value().size() != 20) return Status::Error(EIO, "corrupt repair mark");
    const std::string_view v(it->value().data(), it->value().size());
    PgMark m;
    m.generation = GetBE64(v.substr(0, 8));
    m.severity = GetBE32(v.substr(8, 4));
    m.marked_ms = GetBE64(v.substr(12, 8));
    marks_[GetBE32(std::string_view(it->key().data() + 1, 4))] = m;
    last_generation_ = std::max(last_generation_, m.generation);
  }
  last_generation_ = std::max(last_generation_, WallMs());
  if (!it->status().ok()) return Status::Error(EIO, "scan repair marks: " + it->status().ToString());
  wave_marked_ = static_cast<uint32_t>(marks_.size());
  if (!marks_.empty()) SPOOL_LOG_INFO("meta repair_loaded pending_pgs={}", marks_.size());
  return Status::Ok();
}

void RepairTable::PersistLocked(const std::vector<uint32_t>& changed) {
  if (changed.empty()) return;
  rocksdb::WriteBatch batch;
  for (uint32_t pg : changed) {
    auto it = marks_.find(pg);
    if (it == marks_.end()) {
      batch.Delete(MarkKey(pg));
      continue;
    }
    std::string v;
    PutBE64(v, it->second.generation);
    PutBE32(v, it->second.severity);
    PutBE64(v, it->second.marked_ms);
    batch.Put(MarkKey(pg), v);
  }
  std::string last;
  PutBE64(last, last_generation_);
  batch.Put("P", last);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  // A lost mark is found again by the next `heal --all` or scrub, so a failed
  // write is logged, not fatal.
  if (auto s = db_->Write(wo, &batch); !s.ok())
    SPOOL_LOG_ERROR("meta repair_persist_failed pgs={} error=\"{}\"", changed.size(), s.ToString());
}

void RepairTable::MarkLocked(uint32_t pg, uint32_t severity) {
  auto [it, inserted] = marks_.try_emplace(pg);
  auto& m = it->second;
  if (inserted) {
    if (marks_.size() == 1) wave_marked_ = wave_done_ = 0;  // a new wave starts
    ++wave_marked_;
    m.marked_ms = WallMs();
    m.generation = ++last_generation_;
  } else if (m.handed_out) {
    // Some member may already be past the point this mark is about.
    m.generation = ++last_generation_;
    m.handed_out = false;
    m.done.clear();
  }
  m.severity = std::max(m.severity, std::max<uint32_t>(severity, 1));
}

void RepairTable::ClearLocked(uint32_t pg) {
  if (marks_.erase(pg) == 0) return;
  ++wave_done_;
  ++pgs_cleared_total_;
}

void RepairTable::Mark(const std::vector<uint32_t>& pgs, uint32_t severity, std::string_view reason) {
  if (pgs.empty()) return;
  std::lock_guard lock(mu_);
  std::vector<uint32_t> changed;
  for (uint32_t pg : pgs) {
    auto before = marks_.find(pg);
    const bool was = before != marks_.end();
    const uint64_t gen = was ? before->second.generation : 0;
    const uint32_t sev = was ? before->second.severity : 0;
    MarkLocked(pg, severity);
    const auto& m = marks_[pg];
    if (!was || m.generation != gen || m.severity != sev) changed.push_back(pg);
  }
  PersistLocked(changed);
  if (!changed.empty())
    SPOOL_LOG_INFO("meta repair_marked pgs={} severity={} reason=\"{}\" pending={}", changed.size(), severity, reason,
                   marks_.size());
}

size_t RepairTable::ConsumeChunkReports(uint32_t pg_count, size_t max) {
  if (pg_count == 0) return 0;
  std::vector<std::string> keys_seen;
  std::set<uint32_t> pgs;
  {
    const std::string prefix = "R";
    const std::string end = keys::PrefixEnd(prefix);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    for (it->Seek(prefix); it->Valid() && keys_seen.size() < max; it->Next()) {
      keys_seen.emplace_back(it->key().data(), it->key().size());
      if (it->key().size() == 9) pgs.insert(PgOfChunk(GetBE64(std::string_view(it->key().data() + 1, 8)), pg_count));
    }
  }
  if (keys_seen.empty()) return 0;
  // Mark first (synced), then drop the reports: a crash in between only
  // repeats a mark.
  Mark(std::vector<uint32_t>(pgs.begin(), pgs.end()), 1, "chunk reports");
  rocksdb::WriteBatch batch;
  for (auto& k : keys_seen) batch.Delete(k);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto s = db_->Write(wo, &batch); !s.ok())
    SPOOL_LOG_ERROR("meta repair_reports_delete_failed error=\"{}\"", s.ToString());
  return keys_seen.size();
}

void RepairTable::MarkBrick(uint32_t brick_id, const proto::ClusterMap& map, std::string_view reason) {
  std::vector<uint32_t> pgs;
  for (int pg = 0; pg < map.pgs_size(); ++pg) {
    const auto& members = map.pgs(pg).bricks();
    if (std::find(members.begin(), members.end(), brick_id) != members.end()) pgs.push_back(static_cast<uint32_t>(pg));
  }
  Mark(pgs, 1, reason);
}

void RepairTable::MarkMapChange(const proto::ClusterMap& before, const proto::ClusterMap& after) {
  std::map<uint32_t, proto::BrickState> state_before, state_after;
  for (const auto& b : before.bricks()) state_before[b.id()] = b.state();
  for (const auto& b : after.bricks()) state_after[b.id()] = b.state();
  std::map<uint32_t, std::vector<uint32_t>> by_severity;
  for (int pg = 0; pg < after.pgs_size(); ++pg) {
    uint32_t changed = 0, lacking = 0;
    for (uint32_t b : after.pgs(pg).bricks()) {
      const auto& was = before.pgs_size() > pg ? before.pgs(pg).bricks() : after.pgs(pg).bricks();
      // The first map of a fresh meta has no "before": nothing is new then.
      const bool new_member = before.pgs_size() > 0 && std::find(was.begin(), was.end(), b) == was.end();
      const bool down = state_after[b] != proto::BRICK_UP;
      const bool went_down = down && state_before.count(b) > 0 && state_before[b] == proto::BRICK_UP;
      if (new_member || went_down) ++changed;
      if (new_member || down) ++lacking;
    }
    if (changed > 0) by_severity[lacking].push_back(static_cast<uint32_t>(pg));
  }
  for (auto& [severity, pgs] : by_severity) Mark(pgs, severity, "placement or brick state changed");
}

std::vector<proto::RepairTask> RepairTable::TasksFor(uint32_t brick_id, const proto::ClusterMap& map, size_t max) {
  std::map<uint32_t, bool> up;
  for (const auto& b : map.bricks()) up[b.id()] = b.state() == proto::BRICK_UP;
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint32_t, PgMark*>> eligible;
  for (auto& [pg, m] : marks_) {
    if (pg >= static_cast<uint32_t>(map.pgs_size())) continue;
    const auto& members = map.pgs(static_cast<int>(pg)).bricks();
    if (std::find(members.begin(), members.end(), brick_id) == members.end()) continue;
    if (m.done.count(brick_id)) continue;
    bool all_up = true;
    for (uint32_t b : members) all_up = all_up && up[b];
    if (all_up) eligible.emplace_back(pg, &m);
  }
  std::stable_sort(eligible.begin(), eligible.end(),
                   [](const auto& a, const auto& b) { return a.second->severity > b.second->severity; });
  std::vector<proto::RepairTask> tasks;
  for (auto& [pg, m] : eligible) {
    if (tasks.size() >= max) break;
    m->handed_out = true;
    proto::RepairTask t;
    t.set_pg(pg);
    t.set_generation(m->generation);
    t.set_severity(m->severity);
    tasks.push_back(std::move(t));
  }
  return tasks;
}

void RepairTable::Done(uint32_t brick_id, const proto::RepairDone& done, const proto::ClusterMap& map) {
  std::lock_guard lock(mu_);
  auto it = marks_.find(done.pg());
  if (it == marks_.end() || it->second.generation != done.generation()) return;  // stale report
  if (done.pg() >= static_cast<uint32_t>(map.pgs_size())) return;
  it->second.done.insert(brick_id);
  for (uint32_t b : map.pgs(static_cast<int>(done.pg())).bricks())
    if (!it->second.done.count(b)) return;
  ClearLocked(done.pg());
  PersistLocked({done.pg()});
}

void RepairTable::Reconcile(const proto::ClusterMap& map) {
  std::lock_guard lock(mu_);
  std::vector<uint32_t> cleared;
  for (auto& [pg, m] : marks_) {
    bool all_done = true;
    if (pg < static_cast<uint32_t>(map.pgs_size())) {
      const auto& members = map.pgs(static_cast<int>(pg)).bricks();
      all_done = !members.empty();
      for (uint32_t b : members) all_done = all_done && m.done.count(b) > 0;
    }
    if (all_done) cleared.push_back(pg);
  }
  for (uint32_t pg : cleared) ClearLocked(pg);
  PersistLocked(cleared);
}

void RepairTable::Report(uint32_t brick_id, const proto::RepairProgress& repair, const proto::ScrubProgress& scrub) {
  std::lock_guard lock(mu_);
  auto& w = work_[brick_id];
  w.set_brick_id(brick_id);
  *w.mutable_repair() = repair;
  *w.mutable_scrub() = scrub;
  auto& [chunks, bytes] = last_counters_[brick_id];
  // A brick's counters restart at zero with the brick.
  chunks_copied_total_ += repair.chunks_copied() >= chunks ? repair.chunks_copied() - chunks : repair.chunks_copied();
  bytes_copied_total_ += repair.bytes_copied() >= bytes ? repair.bytes_copied() - bytes : repair.bytes_copied();
  chunks = repair.chunks_copied();
  bytes = repair.bytes_copied();
}

void RepairTable::Tick(Clock::time_point now) {
  std::lock_guard lock(mu_);
  samples_.push_back(Sample{now, pgs_cleared_total_, chunks_copied_total_, bytes_copied_total_});
  while (samples_.size() > 2 && now - samples_.front().at > kRateWindow) samples_.pop_front();
}

proto::RepairStatus RepairTable::Summary() const {
  std::lock_guard lock(mu_);
  proto::RepairStatus s;
  s.set_pgs_pending(static_cast<uint32_t>(marks_.size()));
  s.set_wave_marked(wave_marked_);
  s.set_wave_done(wave_done_);
  s.set_bytes_copied(bytes_copied_total_);
  s.set_chunks_copied(chunks_copied_total_);
  uint64_t chunks_pending = 0;
  for (const auto& [id, w] : work_) chunks_pending += w.repair().chunks_pending();
  s.set_chunks_pending(chunks_pending);
  double pgs_rate = 0, bytes_rate = 0, chunks_rate = 0;
  if (samples_.size() >= 2) {
    const auto& a = samples_.front();
    const auto& b = samples_.back();
    const double secs = std::chrono::duration<double>(b.at - a.at).count();
    if (secs > 0) {
      pgs_rate = static_cast<double>(b.pgs_cleared - a.pgs_cleared) / secs;
      bytes_rate = static_cast<double>(b.bytes - a.bytes) / secs;
      chunks_rate = static_cast<double>(b.chunks - a.chunks) / secs;
    }
  }
  s.set_bytes_per_sec(bytes_rate);
  s.set_pgs_per_sec(pgs_rate);
  int64_t eta = -1;
  if (marks_.empty()) {
    eta = 0;
  } else if (chunks_pending > 0 && chunks_rate > 0) {
    eta = static_cast<int64_t>(1000.0 * static_cast<double>(chunks_pending) / chunks_rate);
  } else if (pgs_rate > 0) {
    eta = static_cast<int64_t>(1000.0 * static_cast<double>(marks_.size()) / pgs_rate);
  }
  s.set_eta_ms(eta);
  return s;
}

std::vector<proto::BrickWork> RepairTable::BrickWorks() const {
  std::lock_guard lock(mu_);
  std::vector<proto::BrickWork> out;
  for (const auto& [id, w] : work_) out.push_back(w);
  return out;
}

proto::HealReply RepairTable::Pending(const proto::ClusterMap& map, size_t max) const {
  std::map<uint32_t, bool> up;
  for (const auto& b : map.bricks()) up[b.id()] = b.state() == proto::BRICK_UP;
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint32_t, const PgMark*>> all;
  for (const auto& [pg, m] : marks_) all.emplace_back(pg, &m);
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.second->severity > b.second->severity; });
  proto::HealReply reply;
  reply.set_pending_total(static_cast<uint32_t>(marks_.size()));
  for (const auto& [pg, m] : all) {
    if (static_cast<size_t>(reply.pending_size()) >= max) break;
    auto* p = reply.add_pending();
    p->set_pg(pg);
    p->set_generation(m->generation);
    p->set_severity(m->severity);
    p->set_marked_ms(m->marked_ms);
    for (uint32_t b : m->done) p->add_done(b);
    if (pg < static_cast<uint32_t>(map.pgs_size())) {
      for (uint32_t b : map.pgs(static_cast<int>(pg)).bricks()) {
        p->add_members(b);
        if (!up[b]) p->set_waiting_for_bricks(true);
      }
    }
  }
  return reply;
}

size_t RepairTable::pending() const {
  std::lock_guard lock(mu_);
  return marks_.size();
}

bool RepairTable::IsMarked(uint32_t pg) const {
  std::lock_guard lock(mu_);
  return marks_.count(pg) > 0;
}

}  // namespace spool::meta
