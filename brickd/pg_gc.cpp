#include "brickd/pg_gc.h"

#include <algorithm>

#include "common/log.h"

namespace spool::brick {
namespace {
constexpr uint32_t kBatch = 1024;
}

PgGc::PgGc(ChunkStore& store, PgGcOptions options)
    : store_(store), options_(options), limiter_(options.chunks_per_sec) {}

PgGc::~PgGc() { Stop(); }

void PgGc::Start() { thread_ = std::thread([this] { Loop(); }); }

void PgGc::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  limiter_.Cancel();
  if (thread_.joinable()) thread_.join();
}

void PgGc::SetMap(std::shared_ptr<const proto::ClusterMap> map, uint32_t self_id) {
  if (!map || self_id == 0 || map->pg_count() == 0 || map->pg_count() > kMaxPgCount ||
      static_cast<uint32_t>(map->pgs_size()) != map->pg_count())
    return;  // not a map this brick can judge by
  const auto now = Clock::now();
  std::lock_guard lock(mu_);
  if (pgs_.size() != map->pg_count()) pgs_.assign(map->pg_count(), PgState{});
  for (uint32_t pg = 0; pg < map->pg_count(); ++pg) {
    const auto& g = map->pgs(static_cast<int>(pg));
    const bool ours = std::find(g.bricks().begin(), g.bricks().end(), self_id) != g.bricks().end() ||
                      std::find(g.leaving().begin(), g.leaving().end(), self_id) != g.leaving().end();
    auto& s = pgs_[pg];
    if (ours) {
      s.ours = true;
    } else if (s.ours || !have_map_) {
      s.ours = false;
      s.not_ours_since = now;
      s.cleaned_at = {};
    }
  }
  have_map_ = true;
}

bool PgGc::StillNotOurs(uint32_t pg) {
  std::lock_guard lock(mu_);
  return !stopping_ && pg < pgs_.size() && !pgs_[pg].ours;
}

Status PgGc::Collect(uint32_t pg) {
  uint64_t deleted = 0;
  for (;;) {
    auto page = store_.List(pg, std::nullopt, kBatch);
    if (!page.ok()) return page.status();
    if (page->chunks.empty()) break;
    if (!limiter_.Acquire(page->chunks.size())) return Status::Error(ESHUTDOWN, "stopping");
    // Re-checked before every batch: a map that gives the PG back stops it.
    if (!StillNotOurs(pg)) return Status::Error(EAGAIN, "pg " + std::to_string(pg) + " is ours again");
    const size_t n = page->chunks.size();
    if (auto s = store_.DeleteSync(std::move(page->chunks)); !s.ok()) return s;
    deleted += n;
    chunks_deleted_ += n;
    if (page->complete) break;
  }
  if (deleted > 0) SPOOL_LOG_INFO("brickd pg_gc pg={} chunks_deleted={} reason=no-longer-in-this-pg", pg, deleted);
  return Status::Ok();
}

void PgGc::Loop() {
  for (;;) {
    std::vector<uint32_t> due;
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_; })) return;
      const auto now = Clock::now();
      for (uint32_t pg = 0; pg < pgs_.size(); ++pg) {
        const auto& s = pgs_[pg];
        if (s.ours || now - s.not_ours_since < options_.delay) continue;
        if (s.cleaned_at != Clock::time_point{} && now - s.cleaned_at < options_.recheck) continue;
        due.push_back(pg);
      }
    }
    for (uint32_t pg : due) {
      Status s = Collect(pg);
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (s.ok() && pg < pgs_.size() && !pgs_[pg].ours) pgs_[pg].cleaned_at = Clock::now();
      if (!s.ok() && s.code() != EAGAIN)
        SPOOL_LOG_WARN("brickd pg_gc_failed pg={} error=\"{}\" action=retry-later", pg, s.ToString());
    }
  }
}

}  // namespace spool::brick
