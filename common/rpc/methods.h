// Method numbers of every RPC. Each method's request and reply messages are
// named beside it; both ends use this one table.
#pragma once

#include <cstdint>

namespace spool::rpc {

enum class Method : uint16_t {
  kHello = 1,  // HelloChallenge / HelloResponse / HelloAccept

  // brick                         request             -> reply
  kPutChunk = 100,              // PutChunkRequest     -> Empty
  kGetChunk = 101,              // GetChunkRequest     -> GetChunkReply (+payload)
  kDeleteChunks = 102,          // DeleteChunksRequest -> Empty
  kStatChunk = 103,             // StatChunkRequest    -> StatChunkReply
  kListChunks = 104,            // ListChunksRequest   -> ListChunksReply
  kReadChunks = 105,            // ReadChunksRequest   -> ReadChunksReply (+payload)
  kPutChunks = 106,             // PutChunksRequest (+payload) -> Empty
  kBrickInfo = 107,             // Empty               -> BrickInfoReply

  // meta: cluster
  kRegisterBrick = 200,         // RegisterBrickRequest -> RegisterBrickReply
  kBrickHeartbeat = 201,        // HeartbeatRequest    -> HeartbeatReply
  kGetMap = 202,                // GetMapRequest       -> ClusterMap
  kStatus = 203,                // Empty               -> StatusReply
  kReportBadChunk = 204,        // ReportBadChunkRequest -> Empty
  kHeal = 205,                  // HealRequest         -> HealReply
  kScrub = 206,                 // Empty               -> ScrubReply
  kBrickAdmin = 220,            // BrickAdminRequest   -> BrickAdminReply

  // meta: namespace
  kLookup = 300,                // LookupRequest       -> EntryReply
  kGetAttr = 301,               // GetAttrRequest      -> AttrReply
  kSetAttr = 302,               // SetAttrRequest      -> AttrReply
  kCreate = 303,                // CreateRequest       -> EntryReply
  kUnlink = 304,                // UnlinkRequest       -> ChangeReply (Empty before)
  kRename = 305,                // RenameRequest       -> ChangeReply (Empty before)
  kLink = 306,                  // LinkRequest         -> EntryReply
  kReadlink = 307,              // ReadlinkRequest     -> ReadlinkReply
  kReaddir = 308,               // ReaddirRequest      -> ReaddirReply
  kStatfs = 309,                // Empty               -> StatfsReply
  kOpen = 310,                  // OpenRequest         -> OpenReply
  kRelease = 311,               // ReleaseRequest      -> Empty
  kGetExtents = 312,            // GetExtentsRequest   -> GetExtentsReply
  kCommitWrite = 313,           // CommitWriteRequest  -> AttrReply
  kAllocChunkIds = 314,         // AllocChunkIdsRequest -> AllocChunkIdsReply
  kGetXattr = 315,              // XattrRequest        -> XattrReply
  kSetXattr = 316,              // XattrRequest        -> ChangeReply (Empty before)
  kListXattr = 317,             // XattrRequest        -> XattrReply
  kRemoveXattr = 318,           // XattrRequest        -> ChangeReply (Empty before)
  kReleaseDirLease = 319,       // ReleaseDirLeaseRequest -> Empty
  kReleases = 320,              // ReleasesRequest     -> Empty

  // meta: sessions and locks
  kOpenSession = 400,           // OpenSessionRequest  -> OpenSessionReply
  kSessionHeartbeat = 401,      // SessionHeartbeatRequest -> Empty
  kCloseSession = 402,          // SessionHeartbeatRequest -> Empty
  kSetLock = 403,               // LockRequest         -> Empty
  kGetLock = 404,               // LockRequest         -> LockReply
  kWatch = 405,                 // WatchRequest        -> WatchReply (long poll)
};

// Most closes in one kReleases request.
inline constexpr uint32_t kMaxReleasesPerRequest = 4096;

}  // namespace spool::rpc
