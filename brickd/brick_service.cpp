#include "brickd/brick_service.h"

#include <algorithm>

#include "common/log.h"
#include "common/thread_priority.h"
#include "spool.pb.h"

namespace spool::brick {
namespace {

using rpc::Frame;
using rpc::Method;
using rpc::Responder;

// Header room kept free in a bulk read reply: ids and refs of up to
// kMaxChunksPerRequest chunks are far below it.
constexpr uint64_t kReplyHeaderRoom = 1u << 20;

void ToProto(const ChunkInfo& info, proto::ChunkRef* ref) {
  ref->set_chunk_id(info.chunk_id);
  ref->set_pg(info.pg);
  ref->set_crc32c(info.crc32c);
  ref->set_length(info.length);
}

ChunkInfo FromProto(const proto::ChunkRef& ref) {
  return ChunkInfo{ref.chunk_id(), ref.pg(), ref.crc32c(), ref.length()};
}

Status CheckRef(const proto::ChunkRef& ref) {
  if (ref.pg() >= kMaxPgCount) return Status::Error(EINVAL, "pg " + std::to_string(ref.pg()) + " out of range");
  if (ref.length() > kMaxChunkBytes)
    return Status::Error(EINVAL, "chunk " + std::to_string(ref.chunk_id()) + " length " +
                                     std::to_string(ref.length()) + " exceeds " + std::to_string(kMaxChunkBytes));
  return Status::Ok();
}

}  // namespace

BrickService::BrickService(ChunkStore* store, BrickIdentity identity, std::string data_dir, int bulk_threads)
    : store_(store), identity_(std::move(identity)), data_dir_(std::move(data_dir)) {
  for (int i = 0; i < std::max(1, bulk_threads); ++i) bulk_threads_.emplace_back([this] { BulkLoop(); });
}

BrickService::~BrickService() { Stop(); }

void BrickService::Stop() {
  {
    std::lock_guard lock(bulk_mu_);
    bulk_stopping_ = true;
    bulk_queue_.clear();
  }
  bulk_cv_.notify_all();
  for (auto& t : bulk_threads_)
    if (t.joinable()) t.join();
  bulk_threads_.clear();
}

void BrickService::BulkLoop() {
  RunThisThreadInBackground();  // bulk reads serve repair, moves and scrub
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock lock(bulk_mu_);
      bulk_cv_.wait(lock, [&] { return bulk_stopping_ || !bulk_queue_.empty(); });
      if (bulk_stopping_) return;
      work = std::move(bulk_queue_.front());
      bulk_queue_.pop_front();
    }
    work();
  }
}

void BrickService::Register(rpc::RpcServer& server) {
  auto bind = [this](void (BrickService::*method)(const Frame&, const Responder&)) {
    return [this, method](const Frame& f, const Responder& r) { (this->*method)(f, r); };
  };
  // A put is checked and queued to the store's committer: no waiting, so it
  // runs where its frame was read. Reads may wait on the disk: posted.
  server.Handle(Method::kPutChunk, bind(&BrickService::PutChunk), rpc::RpcServer::Dispatch::kInline);
  server.Handle(Method::kGetChunk, bind(&BrickService::GetChunk));
  server.Handle(Method::kDeleteChunks, bind(&BrickService::DeleteChunks));
  server.Handle(Method::kStatChunk, bind(&BrickService::StatChunk));
  server.Handle(Method::kListChunks, bind(&BrickService::ListChunks));
  server.Handle(Method::kReadChunks, bind(&BrickService::ReadChunks));
  server.Handle(Method::kPutChunks, bind(&BrickService::PutChunks));
  server.Handle(Method::kBrickInfo, bind(&BrickService::BrickInfo));
}

void BrickService::PutChunk(const Frame& frame, const Responder& responder) {
  NoteClientRequest();
  proto::PutChunkRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  if (!request.has_chunk()) return responder.Fail(Status::Error(EINVAL, "put without a chunk"));
  if (auto s = CheckRef(request.chunk()); !s.ok()) return responder.Fail(s);
  if (frame.payload().size() != request.chunk().length())
    return responder.Fail(Status::Error(EINVAL, "payload of " + std::to_string(frame.payload().size()) +
                                                    " bytes for a chunk of " +
                                                    std::to_string(request.chunk().length())));
  std::vector<ChunkWrite> chunks(1);
  chunks[0].info = FromProto(request.chunk());
  chunks[0].bytes.assign(frame.payload());
  store_->Put(std::move(chunks), [responder](const Status& s) { responder.Finish(s); });
}

void BrickService::GetChunk(const Frame& frame, const Responder& responder) {
  NoteClientRequest();
  proto::GetChunkRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  ChunkInfo info;
  auto bytes = store_->Get(request.pg(), request.chunk_id(), request.offset(), request.length(), &info);
  if (!bytes.ok()) {
    if (bytes.status().code() == EBADMSG) {
      SPOOL_LOG_WARN("brickd corrupt_chunk pg={} chunk={} error=\"{}\" action=rewrite-from-peer", request.pg(),
                     request.chunk_id(), bytes.status().message());
      if (on_corrupt_) on_corrupt_(request.pg(), request.chunk_id());
    }
    return responder.Fail(bytes.status());
  }
  proto::GetChunkReply reply;
  ToProto(info, reply.mutable_chunk());
  responder.Reply(reply, std::move(bytes).value());
}

void BrickService::DeleteChunks(const Frame& frame, const Responder& responder) {
  proto::DeleteChunksRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  if (static_cast<uint32_t>(request.chunks_size()) > kMaxChunksPerRequest)
    return responder.Fail(Status::Error(EINVAL, "too many chunks in one delete"));
  std::vector<ChunkInfo> chunks;
  for (auto& ref : request.chunks()) {
    if (ref.pg() >= kMaxPgCount) return responder.Fail(Status::Error(EINVAL, "pg out of range"));
    chunks.push_back(FromProto(ref));
  }
  store_->Delete(std::move(chunks), [responder](const Status& s) { responder.Finish(s); });
}

void BrickService::StatChunk(const Frame& frame, const Responder& responder) {
  proto::StatChunkRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  auto info = store_->Stat(request.pg(), request.chunk_id());
  if (!info.ok()) return responder.Fail(info.status());
  proto::StatChunkReply reply;
  ToProto(*info, reply.mutable_chunk());
  responder.Reply(reply);
}

void BrickService::ListChunks(const Frame& frame, const Responder& responder) {
  proto::ListChunksRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  uint32_t max = request.max_entries() == 0 ? kDefaultListEntries : std::min(request.max_entries(), kMaxListEntries);
  std::optional<uint64_t> after;
  if (request.has_after()) after = request.after_chunk_id();
  auto list = store_->List(request.pg(), after, max);
  if (!list.ok()) return responder.Fail(list.status());
  proto::ListChunksReply reply;
  for (auto& c : list->chunks) ToProto(c, reply.add_chunks());
  reply.set_complete(list->complete);
  responder.Reply(reply);
}

void BrickService::ReadChunks(const Frame& frame, const Responder& responder) {
  proto::ReadChunksRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  if (static_cast<uint32_t>(request.chunk_ids_size()) > kMaxChunksPerRequest)
    return responder.Fail(Status::Error(EINVAL, "too many chunks in one read"));
  std::vector<uint64_t> ids(request.chunk_ids().begin(), request.chunk_ids().end());
  auto work = [this, pg = request.pg(), ids = std::move(ids), responder] {
    auto result = store_->ReadMany(pg, ids, rpc::kMaxFrameBytes - kReplyHeaderRoom);
    if (!result.ok()) return responder.Fail(result.status());
    proto::ReadChunksReply reply;
    for (auto& c : result->chunks) ToProto(c, reply.add_chunks());
    for (auto id : result->missing) reply.add_missing(id);
    for (auto id : result->corrupt) {
      reply.add_corrupt(id);
      SPOOL_LOG_WARN("brickd corrupt_chunk pg={} chunk={} action=rewrite-from-peer", pg, id);
      if (on_corrupt_) on_corrupt_(pg, id);
    }
    for (auto id : result->deferred) reply.add_deferred(id);
    responder.Reply(reply, std::move(result->payload));
  };
  {
    std::lock_guard lock(bulk_mu_);
    if (bulk_stopping_) return responder.Fail(Status::Error(ESHUTDOWN, "brick is stopping"));
    bulk_queue_.push_back(std::move(work));
  }
  bulk_cv_.notify_one();
}

void BrickService::PutChunks(const Frame& frame, const Responder& responder) {
  proto::PutChunksRequest request;
  if (!rpc::ParseRequest(frame, request, responder)) return;
  if (static_cast<uint32_t>(request.chunks_size()) > kMaxChunksPerRequest)
    return responder.Fail(Status::Error(EINVAL, "too many chunks in one put"));
  auto payload = frame.payload();
  uint64_t total = 0;
  for (auto& ref : request.chunks()) {
    if (auto s = CheckRef(ref); !s.ok()) return responder.Fail(s);
    total += ref.length();
  }
  if (total != payload.size())
    return responder.Fail(Status::Error(EINVAL, "payload of " + std::to_string(payload.size()) +
                                                    " bytes for chunks totalling " + std::to_string(total)));
  std::vector<ChunkWrite> chunks(static_cast<size_t>(request.chunks_size()));
  size_t offset = 0;
  for (int i = 0; i < request.chunks_size(); ++i) {
    chunks[i].info = FromProto(request.chunks(i));
    chunks[i].bytes.assign(payload.substr(offset, request.chunks(i).length()));
    offset += request.chunks(i).length();
  }
  store_->Put(std::move(chunks), [responder](const Status& s) { responder.Finish(s); });
}

void BrickService::BrickInfo(const Frame&, const Responder& responder) {
  proto::BrickInfoReply reply;
  reply.set_brick_uuid(identity_.uuid);
  reply.set_cluster_id(identity_.cluster_id);
  if (auto space = DiskSpace(data_dir_); space.ok()) {
    reply.set_capacity_bytes(space->capacity_bytes);
    reply.set_used_bytes(space->used_bytes);
  }
  reply.set_chunk_count(store_->ApproximateChunkCount());
  responder.Reply(reply);
}

}  // namespace spool::brick
