#include "brickd/repairer.h"

#include <algorithm>
#include <fstream>
#include <unordered_set>

#include "brickd/brick_service.h"
#include "common/log.h"
#include "common/thread_priority.h"

namespace spool::brick {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kListPage = 16384;  // brick_service.h: kMaxListEntries
constexpr size_t kMaxChunksPerRead = 4096;  // brick_service.h: kMaxChunksPerRequest

int64_t UsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count();
}

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

rpc::RpcClientOptions PeerRpcOptions(std::chrono::milliseconds timeout) {
  rpc::RpcClientOptions o;
  o.component = "brickd-repair";
  o.default_timeout = timeout;
  o.max_backoff = std::chrono::milliseconds(1000);
  return o;
}

std::string ScrubStatePath(const std::string& dir) { return dir + "/scrub.state"; }

// Splits a ReadChunks reply from brick `from` into the chunks it carries.
Result<std::vector<ChunkWrite>> ChunksOfBulkRead(const proto::ReadChunksReply& reply, std::string_view payload,
                                                 uint32_t pg, uint32_t from) {
  std::vector<ChunkWrite> writes;
  size_t offset = 0;
  for (const auto& ref : reply.chunks()) {
    if (ref.length() > kMaxChunkBytes || offset + ref.length() > payload.size())
      return Status::Error(EPROTO, "brick " + std::to_string(from) + " sent a malformed bulk read");
    ChunkWrite w;
    w.info = ChunkInfo{ref.chunk_id(), pg, ref.crc32c(), ref.length()};
    w.bytes.assign(payload.substr(offset, ref.length()));
    offset += ref.length();
    writes.push_back(std::move(w));
  }
  return writes;
}

}  // namespace

// The local puts of one task: a few written at a time (flow control), all
// durable before the task is reported done. Shared by the task's pulls and
// the callbacks of its puts; the repairer waits for every callback in Stop().
class Repairer::PutTracker {
 public:
  explicit PutTracker(Repairer* repairer) : repairer_(repairer), started_(Clock::now()) {}
  PutTracker(const PutTracker&) = delete;
  PutTracker& operator=(const PutTracker&) = delete;

  // Queues `writes` once fewer than `limit` puts of this task are not yet written.
  void Put(const std::shared_ptr<PutTracker>& self, std::vector<ChunkWrite> writes, uint64_t bytes, size_t limit) {
    const auto t0 = Clock::now();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return unwritten_ < limit; });
      ++unwritten_;
      ++undurable_;
    }
    repairer_->puts_in_progress_.Begin();
    const size_t count = writes.size();
    repairer_->store_.Put(
        std::move(writes),
        [self, t0, count, bytes](const Status& s) {
          self->times_.put_us += UsSince(t0);
          Repairer* repairer = self->repairer_;
          if (s.ok()) {
            repairer->chunks_copied_ += count;
            repairer->bytes_copied_ += bytes;
            auto& pending = repairer->chunks_pending_;
            pending -= std::min<uint64_t>(pending.load(), count);
          }
          std::function<void(const Status&)> when_durable;
          Status result;
          {
            std::lock_guard lock(self->mu_);
            if (!s.ok() && self->error_.ok()) self->error_ = s;
            if (--self->undurable_ == 0 && self->when_durable_) {
              when_durable = std::move(self->when_durable_);
              result = self->error_;
            }
          }
          if (when_durable) when_durable(result);
          repairer->puts_in_progress_.End();  // last: Stop() may return after it
        },
        ChunkStore::Priority::kBackground,
        [self](const Status& s) {
          std::lock_guard lock(self->mu_);
          if (!s.ok() && self->error_.ok()) self->error_ = s;
          --self->unwritten_;
          self->cv_.notify_all();
        });
  }
  // Waits until every put is written (not yet durable); the first error, if any.
  Status WaitWritten() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return unwritten_ == 0; });
    return error_;
  }
  Status error() {
    std::lock_guard lock(mu_);
    return error_;
  }
  // Runs `then` once every put is durable (now, if they are), with the first
  // error. No more puts after this.
  void WhenDurable(std::function<void(const Status&)> then) {
    Status result;
    {
      std::lock_guard lock(mu_);
      if (undurable_ > 0) {
        when_durable_ = std::move(then);
        return;
      }
      result = error_;
    }
    then(result);
  }
  TaskTimes& times() { return times_; }
  const TaskTimes& times() const { return times_; }
  Clock::time_point started() const { return started_; }

 private:
  Repairer* const repairer_;
  const Clock::time_point started_;
  TaskTimes times_;
  std::mutex mu_;  // guards unwritten_, undurable_, error_, when_durable_
  std::condition_variable cv_;  // unwritten_ fell
  size_t unwritten_ = 0;
  size_t undurable_ = 0;
  Status error_;
  std::function<void(const Status&)> when_durable_;
};

Repairer::Repairer(ChunkStore& store, asio::io_context& io, ClusterKey key, RepairOptions options)
    : store_(store),
      options_(std::move(options)),
      peers_(io, std::move(key), PeerRpcOptions(options_.rpc_timeout)),
      repair_limiter_(options_.repair_bytes_per_sec),
      repair_quiet_limiter_(options_.repair_quiet_bytes_per_sec),
      move_limiter_(options_.move_bytes_per_sec),
      scrub_limiter_(options_.scrub_bytes_per_sec) {
  if (!options_.state_dir.empty()) {
    std::ifstream in(ScrubStatePath(options_.state_dir));
    uint64_t generation = 0, passes = 0, last_end = 0;
    if (in >> generation >> passes >> last_end) {
      scrub_.set_generation(generation);
      scrub_.set_passes_completed(passes);
      scrub_.set_last_pass_end_ms(last_end);
    }
  }
}

Repairer::~Repairer() { Stop(); }

void Repairer::Start() {
  // Their pulls (threads they start) inherit the background priority.
  for (int i = 0; i < std::max(1, options_.workers); ++i)
    workers_.emplace_back([this] {
      RunThisThreadInBackground();
      WorkerLoop();
    });
  scrubber_ = std::thread([this] {
    RunThisThreadInBackground();
    ScrubLoop();
  });
}

void Repairer::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  repair_limiter_.Cancel();
  repair_quiet_limiter_.Cancel();
  move_limiter_.Cancel();
  scrub_limiter_.Cancel();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (scrubber_.joinable()) scrubber_.join();
  peers_.CloseAll();
  // The callbacks of puts still waiting for a flush use this object: make
  // them durable now (a put still queued gets the store's timed flush).
  if (auto s = store_.FlushBackground(); !s.ok())
    SPOOL_LOG_WARN("brickd repair_flush_on_stop error=\"{}\"", s.ToString());
  if (!puts_in_progress_.WaitNoneFor(std::chrono::seconds(30)))
    SPOOL_LOG_WARN("brickd repair_stop puts_unanswered={}", puts_in_progress_.count());
}

bool Repairer::IsMoving(uint32_t pg) {
  std::lock_guard lock(mu_);
  if (!map_ || pg >= static_cast<uint32_t>(map_->pgs_size())) return false;
  // With its leaving brick down the group is short of a copy: a repair.
  for (uint32_t id : map_->pgs(static_cast<int>(pg)).leaving())
    for (const auto& b : map_->bricks())
      if (b.id() == id && b.state() == proto::BRICK_UP) return true;
  return false;
}

bool Repairer::AcquirePullBandwidth(uint64_t bytes, bool moving) {
  const bool quiet =
      last_client_request_ && Clock::now() - last_client_request_() >= options_.clients_quiet_after;
  if (quiet) return repair_quiet_limiter_.Acquire(bytes);
  // A move spends both budgets, so that repairs and moves together stay
  // within repair_bytes_per_sec.
  if (moving && !move_limiter_.Acquire(bytes)) return false;
  return repair_limiter_.Acquire(bytes);
}

bool Repairer::Stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

void Repairer::SetMap(std::shared_ptr<const proto::ClusterMap> map, uint32_t self_id) {
  {
    std::lock_guard lock(mu_);
    map_ = std::move(map);
    self_id_ = self_id;
  }
  cv_.notify_all();
}

void Repairer::AddTasks(const google::protobuf::RepeatedPtrField<proto::RepairTask>& tasks) {
  if (tasks.empty()) return;
  {
    std::lock_guard lock(mu_);
    for (const auto& t : tasks) {
      if (t.pg() >= kMaxPgCount) continue;
      auto f = finished_.find(t.pg());
      if (f != finished_.end() && f->second == t.generation()) {
        // Finished already; our report may have been lost with a heartbeat.
        proto::RepairDone d;
        d.set_pg(t.pg());
        d.set_generation(t.generation());
        if (std::none_of(done_.begin(), done_.end(),
                         [&](const auto& x) { return x.pg() == t.pg() && x.generation() == t.generation(); }))
          done_.push_back(d);
        continue;
      }
      auto& task = tasks_[t.pg()];
      task.generation = std::max(task.generation, t.generation());
      task.severity = std::max(task.severity, t.severity());
    }
  }
  cv_.notify_all();
}

void Repairer::ReportCorrupt(uint32_t pg, uint64_t chunk_id) {
  {
    std::lock_guard lock(mu_);
    corrupt_[pg].insert(chunk_id);
  }
  cv_.notify_all();
}

void Repairer::RequestScrub(uint64_t generation) {
  {
    std::lock_guard lock(mu_);
    if (generation <= scrub_requested_) return;
    scrub_requested_ = generation;
  }
  cv_.notify_all();
}

void Repairer::FillHeartbeat(proto::HeartbeatRequest* request) {
  std::lock_guard lock(mu_);
  for (auto& d : done_) *request->add_repairs_done() = std::move(d);
  done_.clear();
  auto* r = request->mutable_repair();
  r->set_chunks_copied(chunks_copied_.load());
  r->set_bytes_copied(bytes_copied_.load());
  r->set_chunks_pending(chunks_pending_.load());
  r->set_tasks_queued(static_cast<uint32_t>(tasks_.size()));
  r->set_corrupt_rewritten(corrupt_rewritten_.load());
  *request->mutable_scrub() = scrub_;
}

proto::RepairProgress Repairer::repair_progress() const {
  proto::RepairProgress r;
  std::lock_guard lock(mu_);
  r.set_chunks_copied(chunks_copied_.load());
  r.set_bytes_copied(bytes_copied_.load());
  r.set_chunks_pending(chunks_pending_.load());
  r.set_tasks_queued(static_cast<uint32_t>(tasks_.size()));
  r.set_corrupt_rewritten(corrupt_rewritten_.load());
  return r;
}

proto::ScrubProgress Repairer::scrub_progress() const {
  std::lock_guard lock(mu_);
  return scrub_;
}

void Repairer::WorkerLoop() {
  for (;;) {
    uint32_t pg = 0;
    uint64_t generation = 0;
    std::vector<uint64_t> corrupt;
    bool flush_asked = false;
    {
      std::unique_lock lock(mu_);
      for (;;) {
        if (stopping_) return;
        if (map_ && !corrupt_.empty()) {
          auto it = corrupt_.begin();
          pg = it->first;
          corrupt.assign(it->second.begin(), it->second.end());
          corrupt_.erase(it);
          break;
        }
        // The most degraded ready task that no other worker runs.
        const auto now = Clock::now();
        Task* best = nullptr;
        auto next_ready = Clock::time_point::max();
        if (map_) {
          for (auto& [p, t] : tasks_) {
            if (t.running) continue;
            if (t.not_before > now) {
              next_ready = std::min(next_ready, t.not_before);
              continue;
            }
            if (!best || t.severity > best->severity) {
              best = &t;
              pg = p;
            }
          }
        }
        if (best) {
          best->running = true;
          generation = best->generation;
          break;
        }
        if (puts_in_progress_.count() > 0 && !flush_asked) {
          // Nothing else to do: make the last tasks' puts durable now
          // rather than when the store's timer would.
          flush_asked = true;
          lock.unlock();
          store_.RequestFlush();
          lock.lock();
          continue;
        }
        if (next_ready == Clock::time_point::max())
          cv_.wait(lock);
        else
          cv_.wait_until(lock, next_ready);
      }
    }
    if (!corrupt.empty()) {
      if (auto s = RewriteCorrupt(pg, corrupt); !s.ok()) {
        // Reads keep being served from the good copies; the next read or
        // scrub pass that meets the bad copy reports it again.
        SPOOL_LOG_WARN("brickd rewrite_corrupt_failed pg={} chunks={} error=\"{}\"", pg, corrupt.size(), s.ToString());
      }
      continue;
    }
    // The task's puts are written when RunTask returns, and durable a
    // little later (background puts wait for a memtable flush): the task is
    // reported done then, while this worker goes on with the next one.
    auto puts = std::make_shared<PutTracker>(this);
    Status s = RunTask(pg, puts);
    if (!s.ok()) {
      FinishTask(pg, generation, s, *puts);
      continue;
    }
    puts->WhenDurable([this, pg, generation, puts = puts.get()](const Status& durable) {
      FinishTask(pg, generation, durable, *puts);
    });
  }
}

void Repairer::FinishTask(uint32_t pg, uint64_t generation, const Status& s, const PutTracker& puts) {
  std::unique_lock lock(mu_);
  auto it = tasks_.find(pg);
  if (it == tasks_.end()) return;
  it->second.running = false;
  if (!s.ok()) {
    // A peer that is unreachable or a full disk will not heal in seconds:
    // back off, up to a minute, and log the first failures only.
    const int failures = ++it->second.failures;
    const auto delay = std::min<std::chrono::milliseconds>(options_.retry_after * (1 << std::min(failures - 1, 5)),
                                                           std::chrono::minutes(1));
    it->second.not_before = Clock::now() + delay;
    if (failures <= 3 || failures % 20 == 0)
      SPOOL_LOG_WARN("brickd repair_failed pg={} generation={} failures={} error=\"{}\" action=retry-in-{}ms", pg,
                     generation, failures, s.ToString(), delay.count());
    cv_.notify_all();
    return;
  }
  finished_[pg] = std::max(finished_[pg], generation);
  proto::RepairDone d;
  d.set_pg(pg);
  d.set_generation(generation);
  done_.push_back(d);
  // Marked again while this pass ran: run again at the new generation.
  if (it->second.generation <= generation) tasks_.erase(it);
  const auto& times = puts.times();
  if (times.put_us > 0)
    SPOOL_LOG_INFO("brickd repair_done pg={} generation={} ms={} list_ms={} read_ms={} rate_wait_ms={} put_ms={}", pg,
                   generation,
                   std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - puts.started()).count(),
                   times.list_us / 1000, times.read_us / 1000, times.wait_us / 1000, times.put_us / 1000);
  cv_.notify_all();
  // The last task is done: tell meta now, not at the next heartbeat.
  const bool report = tasks_.empty() && report_soon_;
  lock.unlock();
  if (report) report_soon_();
}

Result<std::vector<Repairer::Peer>> Repairer::PeersOf(uint32_t pg) {
  std::shared_ptr<const proto::ClusterMap> map;
  uint32_t self = 0;
  {
    std::lock_guard lock(mu_);
    map = map_;
    self = self_id_;
  }
  if (!map) return Status::Error(EAGAIN, "no cluster map yet");
  if (pg >= static_cast<uint32_t>(map->pgs_size()))
    return Status::Error(EINVAL, "pg " + std::to_string(pg) + " not in the map");
  std::vector<Peer> peers;
  // Leaving bricks (a move in progress) hold the PG's older chunks: sources too.
  std::vector<uint32_t> holders(map->pgs(static_cast<int>(pg)).bricks().begin(),
                                map->pgs(static_cast<int>(pg)).bricks().end());
  holders.insert(holders.end(), map->pgs(static_cast<int>(pg)).leaving().begin(),
                 map->pgs(static_cast<int>(pg)).leaving().end());
  for (uint32_t id : holders) {
    if (id == self) continue;
    auto b = std::find_if(map->bricks().begin(), map->bricks().end(), [&](const auto& e) { return e.id() == id; });
    if (b == map->bricks().end()) return Status::Error(EINVAL, "brick " + std::to_string(id) + " not in the map");
    peers.push_back(Peer{id, b->address()});
  }
  return peers;
}

Result<std::vector<ChunkInfo>> Repairer::ListLocal(uint32_t pg) {
  std::vector<ChunkInfo> all;
  std::optional<uint64_t> after;
  for (;;) {
    auto page = store_.List(pg, after, kListPage);
    if (!page.ok()) return page.status();
    all.insert(all.end(), page->chunks.begin(), page->chunks.end());
    if (page->complete || page->chunks.empty()) return all;
    after = page->chunks.back().chunk_id;
  }
}

Result<std::vector<proto::ChunkRef>> Repairer::ListPeer(const Peer& peer, uint32_t pg) {
  std::vector<proto::ChunkRef> all;
  auto client = peers_.Get(peer.address);
  proto::ListChunksRequest req;
  req.set_pg(pg);
  req.set_max_entries(kListPage);
  for (;;) {
    proto::ListChunksReply reply;
    auto s = client->CallSync(rpc::Method::kListChunks, req, &reply);
    if (!s.ok())
      return Status::Error(s.code(), "list pg " + std::to_string(pg) + " on brick " + std::to_string(peer.id) + " (" +
                                         peer.address + "): " + s.message());
    for (auto& c : *reply.mutable_chunks()) all.push_back(std::move(c));
    if (reply.complete() || reply.chunks_size() == 0) return all;
    req.set_has_after(true);
    req.set_after_chunk_id(all.back().chunk_id());
  }
}

Status Repairer::Pull(const Peer& peer, uint32_t pg, bool moving, std::vector<Wanted> wanted,
                      std::vector<uint64_t>* left, const std::shared_ptr<PutTracker>& puts) {
  TaskTimes* times = &puts->times();
  auto client = peers_.Get(peer.address);
  std::unordered_map<uint64_t, uint32_t> length_of;
  length_of.reserve(wanted.size());
  for (const auto& w : wanted) length_of[w.chunk_id] = w.length;
  std::deque<Wanted> todo(wanted.begin(), wanted.end());
  struct Read {
    std::future<Result<rpc::Frame>> reply;
    size_t asked = 0;
  };
  std::deque<Read> reads;  // oldest first
  const size_t reads_in_flight = static_cast<size_t>(std::max(1, options_.reads_in_flight));
  const size_t puts_in_flight = static_cast<size_t>(std::max(1, options_.puts_in_flight));
  // The puts already queued go on (they hold `puts`); the task reports the error.
  auto failed = [](const Status& s) { return s; };

  for (;;) {
    // Up to `reads_in_flight` bulk reads outstanding: the peer reads the next
    // batches while this brick writes the previous one.
    while (reads.size() < reads_in_flight && !todo.empty()) {
      if (Stopping()) return failed(Status::Error(ESHUTDOWN, "stopping"));
      proto::ReadChunksRequest req;
      req.set_pg(pg);
      uint64_t bytes = 0;
      while (!todo.empty() && static_cast<size_t>(req.chunk_ids_size()) < kMaxChunksPerRead &&
             (req.chunk_ids_size() == 0 || bytes + todo.front().length <= options_.max_request_bytes)) {
        req.add_chunk_ids(todo.front().chunk_id);
        bytes += todo.front().length;
        todo.pop_front();
      }
      // Spend the bandwidth before asking, so that the throttle binds on
      // what is read from the peer and written here.
      const auto t0 = Clock::now();
      if (!AcquirePullBandwidth(bytes, moving)) return failed(Status::Error(ESHUTDOWN, "stopping"));
      times->wait_us += UsSince(t0);
      reads.push_back(Read{client->Call(rpc::Method::kReadChunks, req), static_cast<size_t>(req.chunk_ids_size())});
    }
    if (reads.empty()) break;

    const auto t0 = Clock::now();
    auto frame = reads.front().reply.get();
    const size_t asked = reads.front().asked;
    reads.pop_front();
    times->read_us += UsSince(t0);
    if (!frame.ok())
      return failed(Status::Error(frame.status().code(), "read pg " + std::to_string(pg) + " from brick " +
                                                             std::to_string(peer.id) + ": " +
                                                             frame.status().message()));
    proto::ReadChunksReply reply;
    if (!frame->ParseHeader(reply))
      return failed(Status::Error(EPROTO, "malformed bulk read reply from brick " + std::to_string(peer.id)));
    auto parsed = ChunksOfBulkRead(reply, frame->payload(), pg, peer.id);
    if (!parsed.ok()) return failed(parsed.status());
    std::vector<ChunkWrite> writes = std::move(parsed).value();
    uint64_t bytes = 0;
    for (const auto& w : writes) bytes += w.info.length;
    if (auto s = puts->error(); !s.ok()) return failed(s);
    // The put re-verifies every CRC32C against the bytes. The task is
    // reported done only once all its puts are durable (WhenDurable).
    if (!writes.empty()) puts->Put(puts, std::move(writes), bytes, puts_in_flight);
    for (uint64_t id : reply.missing()) left->push_back(id);
    for (uint64_t id : reply.corrupt()) left->push_back(id);
    if (reply.chunks_size() == 0 && static_cast<size_t>(reply.deferred_size()) == asked)
      return failed(Status::Error(EPROTO, "brick " + std::to_string(peer.id) + " made no progress on a bulk read"));
    // Deferred (the reply would have been too large): asked again first.
    for (auto it = reply.deferred().rbegin(); it != reply.deferred().rend(); ++it) {
      auto len = length_of.find(*it);
      todo.push_front(Wanted{*it, len == length_of.end() ? 0u : len->second});
    }
  }
  return puts->WaitWritten();
}

Status Repairer::RunTask(uint32_t pg, const std::shared_ptr<PutTracker>& puts) {
  TaskTimes* times = &puts->times();
  auto peers = PeersOf(pg);
  if (!peers.ok()) return peers.status();
  if (peers->empty()) return Status::Ok();
  const bool moving = IsMoving(pg);
  const auto list_start = Clock::now();
  auto local = ListLocal(pg);
  if (!local.ok()) return local.status();
  std::unordered_set<uint64_t> have;
  have.reserve(local->size());
  for (const auto& c : *local) have.insert(c.chunk_id);

  // Which peers hold each chunk this brick lacks, and its length.
  struct Missing {
    uint32_t length = 0;
    std::vector<size_t> holders;
  };
  std::map<uint64_t, Missing> missing;
  for (size_t p = 0; p < peers->size(); ++p) {
    auto listed = ListPeer((*peers)[p], pg);
    if (!listed.ok()) return listed.status();
    for (const auto& ref : *listed)
      if (!have.count(ref.chunk_id())) {
        auto& m = missing[ref.chunk_id()];
        m.length = ref.length();
        m.holders.push_back(p);
      }
  }
  times->list_us += UsSince(list_start);
  if (missing.empty()) return Status::Ok();
  chunks_pending_ += missing.size();

  // Spread the pulls over the peers that hold each chunk, then pull from all
  // of them at once. What a source lacks after all goes to the next holder.
  // Each peer gets a contiguous range of ids (chunks written together lie
  // together in a peer's blob files) rather than every other chunk.
  std::vector<std::vector<Wanted>> plan(peers->size());
  size_t position = 0;
  for (auto& [id, m] : missing) {
    const size_t share = position++ * m.holders.size() / missing.size();
    plan[m.holders[share]].push_back(Wanted{id, m.length});
  }
  Status result = Status::Ok();
  for (int round = 0; round < static_cast<int>(peers->size()) && !plan.empty(); ++round) {
    std::vector<std::vector<uint64_t>> left(peers->size());
    std::vector<std::thread> pulls;
    std::vector<Status> statuses(peers->size());
    for (size_t p = 0; p < peers->size(); ++p) {
      if (plan[p].empty()) continue;
      pulls.emplace_back([&, p] { statuses[p] = Pull((*peers)[p], pg, moving, std::move(plan[p]), &left[p], puts); });
    }
    for (auto& t : pulls) t.join();
    std::vector<std::vector<Wanted>> next(peers->size());
    bool any = false;
    for (size_t p = 0; p < peers->size(); ++p) {
      if (!statuses[p].ok()) result = statuses[p];
      for (uint64_t id : left[p]) {
        // The next holder of this chunk after p, if any.
        const auto& m = missing[id];
        const auto& holders = m.holders;
        auto at = std::find(holders.begin(), holders.end(), p);
        if (at != holders.end() && at + 1 != holders.end()) {
          next[*(at + 1)].push_back(Wanted{id, m.length});
          any = true;
        } else {
          // Every holder lacks it now: deleted meanwhile (or corrupt
          // everywhere, which scrub and reads report).
          chunks_pending_ -= std::min<uint64_t>(chunks_pending_.load(), 1);
        }
      }
    }
    if (!result.ok() || !any) break;
    plan = std::move(next);
  }
  return result;
}

Status Repairer::RewriteCorrupt(uint32_t pg, const std::vector<uint64_t>& chunk_ids) {
  auto peers = PeersOf(pg);
  if (!peers.ok()) return peers.status();
  std::vector<uint64_t> want = chunk_ids;
  for (const auto& peer : *peers) {
    if (want.empty()) break;
    proto::ReadChunksRequest req;
    req.set_pg(pg);
    for (uint64_t id : want) req.add_chunk_ids(id);
    proto::ReadChunksReply reply;
    std::string payload;
    if (auto s = peers_.Get(peer.address)->CallSync(rpc::Method::kReadChunks, req, &reply, {}, &payload); !s.ok())
      continue;
    auto parsed = ChunksOfBulkRead(reply, payload, pg, peer.id);
    if (!parsed.ok()) continue;  // try the next peer
    std::vector<uint64_t> got;
    for (auto& w : *parsed) {
      const uint64_t id = w.info.chunk_id;
      // The bad copy's own record may be what is damaged (its CRC, say), so
      // drop it before writing the good one.
      (void)store_.DeleteSync({w.info});
      std::vector<ChunkWrite> one;
      one.push_back(std::move(w));
      if (auto s = store_.PutSync(std::move(one)); !s.ok()) return s;
      ++corrupt_rewritten_;
      got.push_back(id);
      SPOOL_LOG_INFO("brickd corrupt_chunk_rewritten pg={} chunk={} from_brick={}", pg, id, peer.id);
    }
    std::erase_if(want, [&](uint64_t id) { return std::find(got.begin(), got.end(), id) != got.end(); });
  }
  if (!want.empty())
    return Status::Error(EIO, std::to_string(want.size()) + " corrupt chunks of pg " + std::to_string(pg) +
                                  " have no good copy on a reachable peer");
  return Status::Ok();
}

void Repairer::SaveScrubGeneration(uint64_t generation) {
  if (options_.state_dir.empty()) return;
  const std::string path = ScrubStatePath(options_.state_dir);
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << generation << " " << scrub_.passes_completed() << " " << scrub_.last_pass_end_ms() << "\n";
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
}

void Repairer::ScrubLoop() {
  for (;;) {
    uint64_t generation = 0;
    {
      std::unique_lock lock(mu_);
      for (;;) {
        if (stopping_) return;
        if (map_ && scrub_requested_ > scrub_.generation()) {
          generation = scrub_requested_;
          break;
        }
        const bool periodic = options_.scrub_interval.count() > 0;
        const uint64_t due_ms =
            scrub_.last_pass_end_ms() + static_cast<uint64_t>(options_.scrub_interval.count()) * 1000;
        if (map_ && periodic && scrub_.last_pass_end_ms() != 0 && WallMs() >= due_ms) {
          generation = scrub_.generation();  // a periodic pass keeps the generation
          break;
        }
        if (map_ && periodic && scrub_.last_pass_end_ms() == 0) {
          // Never scrubbed: the first periodic pass is one interval after the
          // first start (kept, so that restarts do not push it back).
          scrub_.set_last_pass_end_ms(WallMs());
          SaveScrubGeneration(scrub_.generation());
        }
        cv_.wait_for(lock, std::chrono::seconds(1));
      }
      scrub_.set_generation(generation);
      scrub_.set_running(true);
      scrub_.set_chunks_checked(0);
      scrub_.set_bytes_checked(0);
      scrub_.set_corrupt_found(0);
      scrub_.set_chunks_total(store_.ApproximateChunkCount());
      SaveScrubGeneration(generation);
    }
    SPOOL_LOG_INFO("brickd scrub_started generation={}", generation);
    Status s = ScrubPass(generation);
    std::lock_guard lock(mu_);
    scrub_.set_running(false);
    if (s.ok()) {
      scrub_.set_passes_completed(scrub_.passes_completed() + 1);
      scrub_.set_last_pass_end_ms(WallMs());
      SaveScrubGeneration(generation);
      SPOOL_LOG_INFO("brickd scrub_done generation={} chunks={} corrupt={}", generation, scrub_.chunks_checked(),
                     scrub_.corrupt_found());
    } else if (s.code() != ESHUTDOWN) {
      SPOOL_LOG_WARN("brickd scrub_failed generation={} error=\"{}\"", generation, s.ToString());
    }
  }
}

Status Repairer::ScrubPass(uint64_t generation) {
  (void)generation;
  uint32_t pg_count = 0;
  {
    std::lock_guard lock(mu_);
    pg_count = map_ ? map_->pg_count() : 0;
  }
  for (uint32_t pg = 0; pg < pg_count; ++pg) {
    auto chunks = ListLocal(pg);
    if (!chunks.ok()) return chunks.status();
    size_t i = 0;
    while (i < chunks->size()) {
      std::vector<uint64_t> ids;
      uint64_t bytes = 0;
      for (; i < chunks->size() && ids.size() < kMaxChunksPerRead && bytes < options_.max_request_bytes; ++i) {
        ids.push_back((*chunks)[i].chunk_id);
        bytes += (*chunks)[i].length;
      }
      if (!scrub_limiter_.Acquire(bytes)) return Status::Error(ESHUTDOWN, "stopping");
      auto read = store_.ReadMany(pg, ids, UINT64_MAX);
      if (!read.ok()) return read.status();
      for (uint64_t id : read->corrupt) {
        SPOOL_LOG_WARN("brickd scrub_found_corrupt pg={} chunk={} action=rewrite-from-peer", pg, id);
        ReportCorrupt(pg, id);
      }
      std::lock_guard lock(mu_);
      scrub_.set_chunks_checked(scrub_.chunks_checked() + ids.size());
      scrub_.set_bytes_checked(scrub_.bytes_checked() + read->payload.size());
      scrub_.set_corrupt_found(scrub_.corrupt_found() + read->corrupt.size());
    }
  }
  return Status::Ok();
}

}  // namespace spool::brick
