#include "fusemount/fuse_adapter.h"

#include <sys/file.h>
#include <sys/xattr.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "common/log.h"

namespace spool::client {

namespace {

FuseAdapter& Self(fuse_req_t req) { return *static_cast<FuseAdapter*>(fuse_req_userdata(req)); }

int64_t ToNs(const timespec& ts) { return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec; }
timespec FromNs(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}
int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void ReplyStatus(fuse_req_t req, const Status& s) { fuse_reply_err(req, s.ok() ? 0 : s.code()); }

// What a descriptor remembers between requests.
struct OpenFile {
  explicit OpenFile(uint64_t i) : ino(i) {}
  const uint64_t ino;
  std::atomic<bool> posix_locked{false};  // took an fcntl lock: release them on flush
  std::atomic<bool> flocked{false};
  // Every lock owner that locked through this open file. An OFD lock's
  // owner is the open file itself; the kernel keeps no local record of locks
  // a FUSE server holds, so on the last close nobody unlocks them but us.
  std::mutex owners_mu;  // guards lock_owners
  std::set<uint64_t> lock_owners;
};

constexpr uint32_t kReaddirBatch = 1024;

// O_APPEND descriptors bypass the page cache: through it the kernel cuts a
// write that crosses a page boundary into two requests, and another mount's
// append could land between the halves. Direct, each write() of up to
// max_write bytes arrives whole and meta places it whole.
unsigned AppendsDirectly(const fuse_file_info* fi) { return (fi->flags & O_APPEND) ? 1 : 0; }

// How long a granted lock waits for meta's invalidations before it is
// returned anyway (they normally arrive within milliseconds).
constexpr std::chrono::milliseconds kLockWatchLimit{2000};

}  // namespace

FuseAdapter::FuseAdapter(const MountOptions& options, MetaClient& meta, FileStore& files, ClusterView& view,
                         fuse_session* session, Invalidator& watch, DirNames& names)
    : options_(options), meta_(meta), files_(files), view_(view), session_(session), watch_(watch), names_(names) {}

namespace {

// Errors after which a name was certainly not added.
bool NothingAdded(int code) {
  switch (code) {
    case EEXIST: case ENOENT: case ENOTDIR: case EISDIR: case ENOTEMPTY: case EINVAL: case ENAMETOOLONG:
    case EACCES: case EPERM: case EXDEV: case ENOSPC: case EDQUOT: case EMLINK: case ELOOP: case EBUSY:
      return true;
    default:
      return false;
  }
}

}  // namespace

void FuseAdapter::NoteAdded(uint64_t dir, const std::string& name, const Status& s) {
  if (s.ok() || s.code() == EEXIST) return names_.Added(dir, name);
  // An add that may have happened (meta unreachable, its answer lost):
  // the copy can no longer say what is not there.
  if (!NothingAdded(s.code())) meta_.ReleaseDirLease(dir, names_.Drop(dir));
}

uint64_t FuseAdapter::StartCopy(uint64_t dir, const proto::ReaddirReply& first_page) {
  const uint64_t lease = first_page.lease_id();
  if (lease == 0) return 0;
  if (names_.BeginListing(dir, lease, meta_.connection_generation())) return CopyPage(dir, lease, first_page);
  meta_.ReleaseDirLease(dir, lease);
  return 0;
}

uint64_t FuseAdapter::CopyPage(uint64_t dir, uint64_t lease, const proto::ReaddirReply& page) {
  if (lease == 0) return 0;
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(page.entries_size()));
  for (const auto& entry : page.entries()) names.push_back(entry.name());
  if (!names_.AddListed(dir, lease, names)) {
    meta_.ReleaseDirLease(dir, lease);  // recalled meanwhile, or too large
    return 0;
  }
  if (page.complete() || page.entries_size() == 0) names_.CompleteListing(dir, lease);
  return lease;
}

void FuseAdapter::ListForLease(uint64_t dir) {
  uint64_t lease = 0;
  std::string after;
  for (bool first = true;; first = false) {
    auto page = meta_.Readdir(dir, after, kReaddirBatch, /*plus=*/false, /*want_lease=*/first);
    if (!page.ok()) {
      if (!first) meta_.ReleaseDirLease(dir, names_.Drop(dir));
      return;
    }
    lease = first ? StartCopy(dir, *page) : CopyPage(dir, lease, *page);
    if (lease == 0 || page->complete() || page->entries_size() == 0) return;
    after = page->entries(page->entries_size() - 1).name();
  }
}

struct stat FuseAdapter::StatOf(const proto::Attr& attr) const {
  struct stat st {};
  st.st_ino = attr.ino();
  st.st_mode = attr.mode();
  st.st_nlink = attr.nlink();
  st.st_uid = attr.uid();
  st.st_gid = attr.gid();
  st.st_size = static_cast<off_t>(attr.size());
  st.st_rdev = attr.rdev();
  st.st_blksize = 65536;
  st.st_blocks = static_cast<blkcnt_t>((attr.size() + 511) / 512);
  st.st_atim = FromNs(attr.atime_ns());
  st.st_mtim = FromNs(attr.mtime_ns());
  st.st_ctim = FromNs(attr.ctime_ns());
  return st;
}

fuse_entry_param FuseAdapter::EntryParam(const proto::Attr& attr) const {
  fuse_entry_param e{};
  e.ino = attr.ino();
  e.generation = attr.generation();
  e.attr = StatOf(attr);
  e.attr_timeout = options_.attr_timeout_s;
  e.entry_timeout = options_.entry_timeout_s;
  return e;
}

void FuseAdapter::ReplyEntry(fuse_req_t req, const Result<proto::Attr>& attr) {
  if (!attr.ok()) return ReplyStatus(req, attr.status());
  auto e = EntryParam(*attr);
  fuse_reply_entry(req, &e);
}

void FuseAdapter::Init(fuse_conn_info* conn) {
  conn->max_write = kMaxChunkBytes;
  conn->max_readahead = kMaxChunkBytes;
  // The kernel sends direct I/O (a VM image opened O_DIRECT) as background
  // requests, and with more than max_background of them (libfuse's default
  // 12) in flight a further reader sleeps before its request is even
  // queued: a second sleep for each read of a VM's 16 in flight.
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_POSIX_LOCKS) conn->want |= FUSE_CAP_POSIX_LOCKS;
  if (conn->capable & FUSE_CAP_FLOCK_LOCKS) conn->want |= FUSE_CAP_FLOCK_LOCKS;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // Data written by another mount must not be served from our page cache
  // after a close-to-open reopen: writes go through to us, and an open
  // keeps the pages only if they hold meta's current version (FileStore).
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // Left on, the kernel would drop a file's pages whenever fresh attributes
  // show a new mtime, which is after every write of our own (the kernel
  // does not advance mtime itself). Other mounts' changes drop the pages
  // through invalidations and the version check at open instead.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

void FuseAdapter::AttrFromIoThread(std::function<void(AttrDone)> start, std::function<Result<proto::Attr>(bool)> wait,
                                   AttrDone reply) {
  files_.BeginAsync();
  start([this, wait = std::move(wait), reply = std::move(reply)](Result<proto::Attr> attr) mutable {
    if (!attr.ok() && rpc::IsTransportError(attr.status().code())) {
      // Meta away: the waiting call rides out the outage, off the io thread.
      const bool maybe_applied = rpc::MayHaveArrived(attr.status().code());
      files_.RunWaiting([this, wait = std::move(wait), reply = std::move(reply), maybe_applied] {
        auto again = wait(maybe_applied);
        if (again.ok()) files_.Overlay(*again);
        reply(std::move(again));
      });
    } else if (attr.ok() && !files_.TryOverlay(*attr)) {
      files_.RunWaiting([this, attr = std::move(attr), reply = std::move(reply)]() mutable {
        files_.Overlay(*attr);
        reply(std::move(attr));
      });
    } else {
      reply(std::move(attr));
    }
    files_.EndAsync();
  });
}

void FuseAdapter::StatusFromIoThread(std::function<void(StatusDone)> start, std::function<Status(bool)> wait,
                                     StatusDone reply) {
  files_.BeginAsync();
  start([this, wait = std::move(wait), reply = std::move(reply)](Status status) mutable {
    if (rpc::IsTransportError(status.code())) {
      const bool maybe_applied = rpc::MayHaveArrived(status.code());
      files_.RunWaiting([wait = std::move(wait), reply = std::move(reply), maybe_applied] {
        reply(wait(maybe_applied));
      });
    } else {
      reply(std::move(status));
    }
    files_.EndAsync();
  });
}

void FuseAdapter::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (names_.KnownAbsent(parent, name, meta_.connection_generation(), DirNames::Clock::now())) {
    fuse_entry_param e{};  // as below: no lifetime
    fuse_reply_entry(req, &e);
    return;
  }
  AttrFromIoThread([this, parent, name = std::string(name)](AttrDone done) { meta_.LookupAsync(parent, name, done); },
                   [this, parent, name = std::string(name)](bool) { return meta_.Lookup(parent, name); },
                   [this, req, parent](Result<proto::Attr> attr) {
                     if (!attr.ok() && attr.status().code() == ENOENT) {
                       // A negative entry with no lifetime: another mount may create it any time.
                       fuse_entry_param e{};
                       fuse_reply_entry(req, &e);
                       // Names are being made here: list it under a lease,
                       // and answer the next misses from that copy.
                       if (leases_ && names_.WorthListing(parent))
                         files_.RunWaiting([this, parent] { ListForLease(parent); });
                       return;
                     }
                     ReplyEntry(req, attr);
                   });
}

void FuseAdapter::GetAttr(fuse_req_t req, fuse_ino_t ino) {
  if (auto dir = meta_.dir_attrs().Find(ino, DirAttrs::Clock::now())) {
    auto st = StatOf(*dir);
    fuse_reply_attr(req, &st, options_.attr_timeout_s);
    return;
  }
  AttrFromIoThread([this, ino](AttrDone done) { meta_.GetAttrAsync(ino, done); },
                   [this, ino](bool) { return meta_.GetAttr(ino); },
                   [this, req](Result<proto::Attr> attr) {
                     if (!attr.ok()) return ReplyStatus(req, attr.status());
                     auto st = StatOf(*attr);
                     fuse_reply_attr(req, &st, options_.attr_timeout_s);
                   });
}

void FuseAdapter::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set) {
  proto::SetAttrRequest request;
  request.set_ino(ino);
  if (to_set & FUSE_SET_ATTR_MODE) {
    request.set_set_mode(true);
    request.set_mode(attr->st_mode);
  }
  if (to_set & FUSE_SET_ATTR_UID) {
    request.set_set_uid(true);
    request.set_uid(attr->st_uid);
  }
  if (to_set & FUSE_SET_ATTR_GID) {
    request.set_set_gid(true);
    request.set_gid(attr->st_gid);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    request.set_set_size(true);
    request.set_size(static_cast<uint64_t>(attr->st_size));
  }
  int64_t now = NowNs();
  if (to_set & FUSE_SET_ATTR_ATIME) {
    request.set_set_atime(true);
    request.set_atime_ns((to_set & FUSE_SET_ATTR_ATIME_NOW) ? now : ToNs(attr->st_atim));
  }
  if (to_set & FUSE_SET_ATTR_MTIME) {
    request.set_set_mtime(true);
    request.set_mtime_ns((to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : ToNs(attr->st_mtim));
  }
  if (to_set & FUSE_SET_ATTR_CTIME) {
    request.set_set_ctime(true);
    request.set_ctime_ns(ToNs(attr->st_ctim));
  }
  auto result = files_.SetAttr(request);
  if (!result.ok()) return ReplyStatus(req, result.status());
  auto st = StatOf(*result);
  fuse_reply_attr(req, &st, options_.attr_timeout_s);
}

void FuseAdapter::Readlink(fuse_req_t req, fuse_ino_t ino) {
  auto target = meta_.Readlink(ino);
  if (!target.ok()) return ReplyStatus(req, target.status());
  fuse_reply_readlink(req, target->c_str());
}

void FuseAdapter::MakeNode(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
                           const std::string& symlink_target) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  proto::CreateRequest request;
  request.set_parent(parent);
  request.set_name(name);
  request.set_mode(mode);
  request.set_uid(ctx->uid);
  request.set_gid(ctx->gid);
  request.set_rdev(rdev);
  request.set_exclusive(true);
  request.set_symlink_target(symlink_target);
  // Nodes made here are not opened: a regular file from mknod(2) must not
  // register an open with meta.
  AttrFromIoThread([this, request](AttrDone done) { meta_.CreateAsync(request, /*open_for_session=*/false, done); },
                   [this, request](bool maybe_applied) {
                     return meta_.Create(request, /*open_for_session=*/false, maybe_applied);
                   },
                   [this, req, parent, name = std::string(name)](Result<proto::Attr> attr) {
                     NoteAdded(parent, name, attr.status());
                     ReplyEntry(req, attr);
                   });
}

void FuseAdapter::Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  MakeNode(req, parent, name, mode, rdev, "");
}

void FuseAdapter::Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  MakeNode(req, parent, name, (mode & 07777) | S_IFDIR, 0, "");
}

void FuseAdapter::Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  MakeNode(req, parent, name, S_IFLNK | 0777, 0, link);
}

void FuseAdapter::RemoveName(fuse_req_t req, fuse_ino_t parent, const char* name, bool directory) {
  StatusFromIoThread(
      [this, parent, name = std::string(name), directory](StatusDone done) {
        meta_.UnlinkAsync(parent, name, directory, done);
      },
      [this, parent, name = std::string(name), directory](bool maybe_applied) {
        return meta_.Unlink(parent, name, directory, maybe_applied);
      },
      [this, req, parent, name = std::string(name)](Status s) {
        if (s.ok()) names_.Removed(parent, name);
        ReplyStatus(req, s);
      });
}

void FuseAdapter::Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) { RemoveName(req, parent, name, false); }

void FuseAdapter::Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) { RemoveName(req, parent, name, true); }

void FuseAdapter::Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                         const char* newname, unsigned int flags) {
  StatusFromIoThread(
      [this, parent, name = std::string(name), newparent, newname = std::string(newname), flags](StatusDone done) {
        meta_.RenameAsync(parent, name, newparent, newname, flags, done);
      },
      [this, parent, name = std::string(name), newparent, newname = std::string(newname), flags](bool maybe_applied) {
        return meta_.Rename(parent, name, newparent, newname, flags, maybe_applied);
      },
      [this, req, parent, name = std::string(name), newparent, newname = std::string(newname), flags](Status s) {
        if (s.ok() && !(flags & RENAME_EXCHANGE)) names_.Removed(parent, name);
        NoteAdded(newparent, newname, s);
        ReplyStatus(req, s);
      });
}

void FuseAdapter::Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  auto attr = meta_.Link(ino, newparent, newname);
  NoteAdded(newparent, newname, attr.status());
  ReplyEntry(req, attr);
}

void FuseAdapter::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // `fi` lives only until we return; the reply may come later.
  files_.OpenAsync(ino, [req, ino, info = *fi](Result<proto::Attr> attr, bool keep_cache) mutable {
    if (!attr.ok()) {
      ReplyStatus(req, attr.status());
      return true;
    }
    auto* file = new OpenFile{ino};
    info.fh = reinterpret_cast<uint64_t>(file);
    // Close-to-open: pages are kept only if they hold meta's current version.
    info.keep_cache = keep_cache;
    info.direct_io = AppendsDirectly(&info);
    if (fuse_reply_open(req, &info) == 0) return true;
    delete file;
    return false;  // the opener is gone (interrupted): FileStore undoes the open
  });
}

void FuseAdapter::Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  proto::CreateRequest request;
  request.set_parent(parent);
  request.set_name(name);
  request.set_mode((mode & 07777) | S_IFREG);
  request.set_uid(ctx->uid);
  request.set_gid(ctx->gid);
  request.set_exclusive(fi->flags & O_EXCL);
  // Answered from the io thread like an open; `fi` lives only until we return.
  files_.BeginAsync();
  meta_.CreateAsync(request, /*open_for_session=*/true,
                    [this, req, request, info = *fi](Result<proto::Attr> attr) mutable {
                      if (!attr.ok() && rpc::IsTransportError(attr.status().code())) {
                        const bool maybe_applied = rpc::MayHaveArrived(attr.status().code());
                        files_.RunWaiting([this, req, request, info, maybe_applied]() mutable {
                          auto again = meta_.Create(request, /*open_for_session=*/true, maybe_applied);
                          NoteAdded(request.parent(), request.name(), again.status());
                          if (again.ok()) files_.Created(*again);
                          if (!ReplyCreated(req, again, info)) UndoCreate(*again);
                        });
                        return files_.EndAsync();
                      }
                      NoteAdded(request.parent(), request.name(), attr.status());
                      if (attr.ok() && !files_.TryCreated(*attr)) {
                        files_.RunWaiting([this, req, attr = std::move(attr), info]() mutable {
                          files_.Created(*attr);
                          if (!ReplyCreated(req, attr, info)) UndoCreate(*attr);
                        });
                      } else if (!ReplyCreated(req, attr, info)) {
                        // Release may flush, which waits for replies: not on an io thread.
                        files_.RunWaiting([this, attr = std::move(attr)] { UndoCreate(*attr); });
                      }
                      files_.EndAsync();
                    });
}

bool FuseAdapter::ReplyCreated(fuse_req_t req, const Result<proto::Attr>& attr, fuse_file_info info) {
  if (!attr.ok()) {
    ReplyStatus(req, attr.status());
    return true;
  }
  auto* file = new OpenFile{attr->ino()};
  info.fh = reinterpret_cast<uint64_t>(file);
  info.keep_cache = 0;  // a new file (or an existing one O_CREAT opened): nothing worth keeping
  info.direct_io = AppendsDirectly(&info);
  auto e = EntryParam(*attr);
  if (fuse_reply_create(req, &e, &info) == 0) return true;
  delete file;
  return false;  // the creator is gone (interrupted)
}

void FuseAdapter::UndoCreate(const proto::Attr& attr) {
  (void)files_.Release(attr.ino());
  meta_.Release(attr.ino());
}

void FuseAdapter::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  files_.ReadAsync(ino, static_cast<uint64_t>(off), size, [req](Result<std::string> data) {
    if (!data.ok()) return ReplyStatus(req, data.status());
    fuse_reply_buf(req, data->data(), data->size());
  });
}

void FuseAdapter::Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  if (fi->flags & O_APPEND) {
    // The kernel's offset is its idea of the end, which another mount may
    // have moved: meta decides where the bytes go.
    auto end = files_.Append(ino, std::string_view(buf, size));
    if (!end.ok()) return ReplyStatus(req, end.status());
    fuse_reply_write(req, size);
    return;
  }
  auto s = files_.Write(ino, static_cast<uint64_t>(off), std::string_view(buf, size));
  if (!s.ok()) return ReplyStatus(req, s);
  fuse_reply_write(req, size);
}

void FuseAdapter::Flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  auto s = files_.Flush(ino);
  // close() drops the process's fcntl locks on the file.
  if (file && file->posix_locked)
    (void)Lock(req, ino, fi->lock_owner, false, F_UNLCK, 0, UINT64_MAX, false, 0);
  ReplyStatus(req, s);
}

void FuseAdapter::Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  if (fi->flock_release || (file && file->flocked))
    (void)Lock(req, ino, fi->lock_owner, true, F_UNLCK, 0, UINT64_MAX, false, 0);
  if (file) {
    // POSIX owners lost their locks at the flush of their close already;
    // unlocking them again is harmless. OFD locks end here.
    std::set<uint64_t> owners;
    {
      std::lock_guard lock(file->owners_mu);
      owners.swap(file->lock_owners);
    }
    for (uint64_t owner : owners) (void)Lock(req, ino, owner, false, F_UNLCK, 0, UINT64_MAX, false, 0);
  }
  auto s = files_.Release(ino);
  meta_.Release(ino);
  delete file;
  ReplyStatus(req, s);
}

void FuseAdapter::Fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  ReplyStatus(req, files_.Flush(ino));
}

void FuseAdapter::OpenDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // No round trip: the kernel sends OPENDIR only for an inode it knows is a
  // directory, and a directory removed meanwhile fails the READDIR.
  fi->fh = reinterpret_cast<uint64_t>(new DirListing);
  fuse_reply_open(req, fi);
}

void FuseAdapter::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  auto* listing = reinterpret_cast<DirListing*>(fi->fh);
  std::string buf(size, '\0');
  size_t used = 0;
  Status error;
  // The reply goes out only after the listing's lock is released: once the
  // kernel has the reply, the application may closedir() and RELEASEDIR may
  // free the listing on another thread.
  {
    std::lock_guard lock(listing->mu);
    error = FillDirBuffer(req, ino, off, plus, *listing, buf, used);
  }
  if (!error.ok() && used == 0) return ReplyStatus(req, error);
  fuse_reply_buf(req, buf.data(), used);
}

Status FuseAdapter::FillDirBuffer(fuse_req_t req, fuse_ino_t ino, off_t off, bool plus, DirListing& listing,
                                  std::string& buf, size_t& used) {
  if (off == 0) {  // a new pass (or rewinddir): start from the beginning
    listing.entries.clear();
    listing.complete = false;
  }
  const size_t size = buf.size();
  auto add = [&](const char* name, const proto::Attr* attr, fuse_ino_t entry_ino, uint32_t type, off_t next) {
    size_t room = size - used;
    size_t n;
    if (plus) {
      fuse_entry_param e{};
      if (attr) {
        e = EntryParam(*attr);
      } else {
        e.attr.st_ino = entry_ino;
        e.attr.st_mode = type;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, room, name, &e, next);
    } else {
      struct stat st {};
      st.st_ino = entry_ino;
      st.st_mode = type;
      n = fuse_add_direntry(req, buf.data() + used, room, name, &st, next);
    }
    if (n > room) return false;
    used += n;
    return true;
  };
  // Offsets: 1 after ".", 2 after "..", 3+i after entries[i]. glibc hides
  // entries whose inode number is 0, so ".." carries the root's.
  if (off < 1 && !add(".", nullptr, ino, S_IFDIR, 1)) return Status::Ok();
  if (off < 2 && !add("..", nullptr, FUSE_ROOT_ID, S_IFDIR, 2)) return Status::Ok();
  size_t index = off < 2 ? 0 : static_cast<size_t>(off - 2);
  for (;;) {
    while (index >= listing.entries.size() && !listing.complete) {
      const bool first = listing.entries.empty();
      std::string after = first ? "" : listing.entries.back().name();
      // A whole pass copies the names too (under a lease), so that lookups
      // of names that are not there need not ask meta.
      const bool want_lease = first && leases_ && names_.WantLease(ino);
      auto batch = meta_.Readdir(ino, after, kReaddirBatch, plus, want_lease);
      if (!batch.ok()) {
        if (listing.lease != 0) meta_.ReleaseDirLease(ino, names_.Drop(ino));
        listing.lease = 0;
        return batch.status();
      }
      listing.lease = first ? StartCopy(ino, *batch) : CopyPage(ino, listing.lease, *batch);
      for (auto& entry : *batch->mutable_entries()) listing.entries.push_back(std::move(entry));
      listing.complete = batch->complete() || batch->entries_size() == 0;
    }
    if (index >= listing.entries.size()) return Status::Ok();
    auto& entry = listing.entries[index];
    proto::Attr attr = entry.attr();
    bool have_attr = plus && entry.has_attr() && entry.attr().ino() != 0;
    if (have_attr) files_.Overlay(attr);
    if (!add(entry.name().c_str(), have_attr ? &attr : nullptr, entry.ino(), entry.type(),
             static_cast<off_t>(index + 3)))
      return Status::Ok();
    ++index;
  }
}

void FuseAdapter::ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirListing*>(fi->fh);
  fuse_reply_err(req, 0);
}

void FuseAdapter::Statfs(fuse_req_t req, fuse_ino_t) {
  auto reply = meta_.Statfs();
  if (!reply.ok()) return ReplyStatus(req, reply.status());
  struct statvfs st {};
  constexpr uint64_t kBlock = 4096;
  st.f_bsize = kBlock;
  st.f_frsize = kBlock;
  // Space as a writer sees it: what the live bricks can still take with the
  // write quorum (the bricks' usage is at most a heartbeat old).
  auto map = view_.map();
  auto space = map ? WritableSpace(*map, options_.write_quorum) : ClusterSpace{};
  st.f_blocks = space.capacity_bytes / kBlock;
  st.f_bfree = space.free_bytes / kBlock;
  st.f_bavail = st.f_bfree;
  st.f_files = reply->inodes() + (1ull << 32);
  st.f_ffree = 1ull << 32;
  st.f_favail = st.f_ffree;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

void FuseAdapter::SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                           int flags) {
  proto::XattrRequest request;
  request.set_ino(ino);
  request.set_name(name);
  request.set_value(std::string(value, size));
  request.set_flags(static_cast<uint32_t>(flags));
  ReplyStatus(req, meta_.CallChange(rpc::Method::kSetXattr, request));
}

void FuseAdapter::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  // The kernel asks for security.capability before every write; spoolfs
  // stores no security.* or system.* attributes, so answer without a round trip.
  if (std::strncmp(name, "security.", 9) == 0 || std::strncmp(name, "system.", 7) == 0) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  proto::XattrRequest request;
  request.set_ino(ino);
  request.set_name(name);
  proto::XattrReply reply;
  auto s = meta_.Call(rpc::Method::kGetXattr, request, &reply);
  if (!s.ok()) return ReplyStatus(req, s);
  if (size == 0) return (void)fuse_reply_xattr(req, reply.value().size());
  if (reply.value().size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, reply.value().data(), reply.value().size());
}

void FuseAdapter::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  proto::XattrRequest request;
  request.set_ino(ino);
  proto::XattrReply reply;
  auto s = meta_.Call(rpc::Method::kListXattr, request, &reply);
  if (!s.ok()) return ReplyStatus(req, s);
  std::string names;
  for (const auto& n : reply.names()) names.append(n).push_back('\0');
  if (size == 0) return (void)fuse_reply_xattr(req, names.size());
  if (names.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, names.data(), names.size());
}

void FuseAdapter::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  proto::XattrRequest request;
  request.set_ino(ino);
  request.set_name(name);
  ReplyStatus(req, meta_.CallChange(rpc::Method::kRemoveXattr, request));
}

Status FuseAdapter::Lock(fuse_req_t req, uint64_t ino, uint64_t owner, bool flock, uint32_t type, uint64_t start,
                         uint64_t end, bool wait, uint32_t pid, proto::LockReply* granted) {
  proto::LockRequest request;
  request.set_ino(ino);
  request.set_session_id(meta_.session_id());
  request.set_owner(owner);
  request.set_start(start);
  request.set_end(end);
  request.set_type(type);
  request.set_flock(flock);
  request.set_pid(pid);
  // A blocking lock polls: meta holds no request open for us, so a mount
  // that dies while waiting leaves nothing behind.
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    request.set_session_id(meta_.session_id());
    proto::LockReply reply;
    auto s = meta_.Call(rpc::Method::kSetLock, request, &reply);
    if (s.ok() && granted) *granted = std::move(reply);
    if (s.ok() || !wait || s.code() != EAGAIN) return s;
    if (fuse_req_interrupted(req)) return Status::Error(EINTR, "lock wait interrupted");
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

Status FuseAdapter::LockCoherently(fuse_req_t req, uint64_t ino, uint64_t owner, bool flock, uint32_t type,
                                   uint64_t start, uint64_t end, bool wait, uint32_t pid) {
  if (type == F_UNLCK) {
    // The next holder, maybe on another host, must find our writes at meta.
    // Unlocked even if that fails: the bytes stay buffered and the writer
    // hears of the error at fsync or close, while a lock kept would block
    // every other host.
    (void)files_.Flush(ino);
    return Lock(req, ino, owner, flock, type, start, end, wait, pid);
  }
  proto::LockReply granted;
  auto s = Lock(req, ino, owner, flock, type, start, end, wait, pid, &granted);
  if (!s.ok()) return s;
  // First every name and file the previous holder changed (a log rotated by
  // renames, an index replaced)...
  if (granted.watch_seq() != 0 &&
      !watch_.WaitApplied(granted.watch_stream_id(), granted.watch_seq(), kLockWatchLimit))
    SPOOL_LOG_WARN("mount lock granted before meta's invalidations up to seq={} arrived ino={}",
                   granted.watch_seq(), ino);
  // ...then this file itself, also when an invalidation was missed: its
  // version at the grant came with the reply.
  const bool stale = files_.RevalidateForLock(ino, granted.version());
  // Attributes always (size and times may come from before the lock);
  // pages only if they do not hold meta's current version.
  int rc = fuse_lowlevel_notify_inval_inode(session_, ino, stale ? 0 : -1, 0);
  if (rc != 0 && rc != -ENOENT)
    SPOOL_LOG_WARN("mount cannot drop caches of a locked file ino={} error={}", ino, std::strerror(-rc));
  return Status::Ok();
}

void FuseAdapter::GetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  proto::LockRequest request;
  request.set_ino(ino);
  request.set_session_id(meta_.session_id());
  request.set_owner(fi->lock_owner);
  request.set_start(static_cast<uint64_t>(lock->l_start));
  request.set_end(lock->l_len == 0 ? UINT64_MAX : static_cast<uint64_t>(lock->l_start + lock->l_len - 1));
  request.set_type(static_cast<uint32_t>(lock->l_type));
  proto::LockReply reply;
  auto s = meta_.Call(rpc::Method::kGetLock, request, &reply);
  if (!s.ok()) return ReplyStatus(req, s);
  lock->l_type = static_cast<short>(reply.type());
  if (reply.type() != F_UNLCK) {
    lock->l_whence = SEEK_SET;
    lock->l_start = static_cast<off_t>(reply.start());
    lock->l_len = reply.end() == UINT64_MAX ? 0 : static_cast<off_t>(reply.end() - reply.start() + 1);
    lock->l_pid = static_cast<pid_t>(reply.pid());
  }
  fuse_reply_lock(req, lock);
}

void FuseAdapter::SetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  uint64_t start = static_cast<uint64_t>(lock->l_start);
  uint64_t end = lock->l_len == 0 ? UINT64_MAX : static_cast<uint64_t>(lock->l_start + lock->l_len - 1);
  auto s = LockCoherently(req, ino, fi->lock_owner, false, static_cast<uint32_t>(lock->l_type), start, end,
                          sleep != 0, static_cast<uint32_t>(lock->l_pid));
  if (s.ok() && lock->l_type != F_UNLCK)
    if (auto* file = reinterpret_cast<OpenFile*>(fi->fh)) {
      file->posix_locked = true;
      std::lock_guard lock_owners(file->owners_mu);
      file->lock_owners.insert(fi->lock_owner);
    }
  ReplyStatus(req, s);
}

void FuseAdapter::Flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  uint32_t type = (op & LOCK_UN) ? F_UNLCK : (op & LOCK_EX) ? F_WRLCK : F_RDLCK;
  auto s = LockCoherently(req, ino, fi->lock_owner, true, type, 0, UINT64_MAX, !(op & LOCK_NB), 0);
  if (s.ok())
    if (auto* file = reinterpret_cast<OpenFile*>(fi->fh)) file->flocked = type != F_UNLCK;
  ReplyStatus(req, s.code() == EAGAIN ? Status::Error(EWOULDBLOCK, s.message()) : s);
}

void FuseAdapter::Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info*) {
  // Space is not reserved ahead on bricks; plain fallocate grows the file
  // (the new range reads as zeros), which is what callers observe.
  if (mode & ~FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, EOPNOTSUPP);
  if (mode & FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, 0);
  auto attr = meta_.GetAttr(ino);
  if (!attr.ok()) return ReplyStatus(req, attr.status());
  files_.Overlay(*attr);
  uint64_t want = static_cast<uint64_t>(offset + length);
  if (want <= attr->size()) return (void)fuse_reply_err(req, 0);
  proto::SetAttrRequest request;
  request.set_ino(ino);
  request.set_set_size(true);
  request.set_size(want);
  ReplyStatus(req, files_.SetAttr(request).status());
}

const fuse_lowlevel_ops& FuseAdapter::Operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<FuseAdapter*>(userdata)->Init(conn); };
    o.lookup = [](fuse_req_t r, fuse_ino_t p, const char* n) { Self(r).Lookup(r, p, n); };
    // The kernel forgets an inode only when it evicts it (with every lookup
    // it counted), so its pages are gone then.
    o.forget = [](fuse_req_t r, fuse_ino_t i, uint64_t) {
      Self(r).files_.Forget(i);
      fuse_reply_none(r);
    };
    o.forget_multi = [](fuse_req_t r, size_t n, fuse_forget_data* f) {
      for (size_t k = 0; k < n; ++k) Self(r).files_.Forget(f[k].ino);
      fuse_reply_none(r);
    };
    o.getattr = [](fuse_req_t r, fuse_ino_t i, fuse_file_info*) { Self(r).GetAttr(r, i); };
    o.setattr = [](fuse_req_t r, fuse_ino_t i, struct stat* a, int s, fuse_file_info*) { Self(r).SetAttr(r, i, a, s); };
    o.readlink = [](fuse_req_t r, fuse_ino_t i) { Self(r).Readlink(r, i); };
    o.mknod = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, dev_t d) { Self(r).Mknod(r, p, n, m, d); };
    o.mkdir = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m) { Self(r).Mkdir(r, p, n, m); };
    o.unlink = [](fuse_req_t r, fuse_ino_t p, const char* n) { Self(r).Unlink(r, p, n); };
    o.rmdir = [](fuse_req_t r, fuse_ino_t p, const char* n) { Self(r).Rmdir(r, p, n); };
    o.symlink = [](fuse_req_t r, const char* l, fuse_ino_t p, const char* n) { Self(r).Symlink(r, l, p, n); };
    o.rename = [](fuse_req_t r, fuse_ino_t p, const char* n, fuse_ino_t np, const char* nn, unsigned int f) {
      Self(r).Rename(r, p, n, np, nn, f);
    };
    o.link = [](fuse_req_t r, fuse_ino_t i, fuse_ino_t np, const char* nn) { Self(r).Link(r, i, np, nn); };
    o.open = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { Self(r).Open(r, i, fi); };
    o.read = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) { Self(r).Read(r, i, s, o, fi); };
    o.write = [](fuse_req_t r, fuse_ino_t i, const char* b, size_t s, off_t o, fuse_file_info* fi) {
      Self(r).Write(r, i, b, s, o, fi);
    };
    o.flush = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { Self(r).Flush(r, i, fi); };
    o.release = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { Self(r).Release(r, i, fi); };
    o.fsync = [](fuse_req_t r, fuse_ino_t i, int d, fuse_file_info* fi) { Self(r).Fsync(r, i, d, fi); };
    o.opendir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { Self(r).OpenDir(r, i, fi); };
    o.readdir = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
      Self(r).ReadDir(r, i, s, o, fi, false);
    };
    o.readdirplus = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
      Self(r).ReadDir(r, i, s, o, fi, true);
    };
    o.releasedir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { Self(r).ReleaseDir(r, i, fi); };
    // Namespace changes are durable at meta before they are answered.
    o.fsyncdir = [](fuse_req_t r, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(r, 0); };
    o.statfs = [](fuse_req_t r, fuse_ino_t i) { Self(r).Statfs(r, i); };
    o.setxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, const char* v, size_t s, int f) {
      Self(r).SetXattr(r, i, n, v, s, f);
    };
    o.getxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, size_t s) { Self(r).GetXattr(r, i, n, s); };
    o.listxattr = [](fuse_req_t r, fuse_ino_t i, size_t s) { Self(r).ListXattr(r, i, s); };
    o.removexattr = [](fuse_req_t r, fuse_ino_t i, const char* n) { Self(r).RemoveXattr(r, i, n); };
    o.create = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, fuse_file_info* fi) {
      Self(r).Create(r, p, n, m, fi);
    };
    o.getlk = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l) { Self(r).GetLk(r, i, fi, l); };
    o.setlk = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l, int s) {
      Self(r).SetLk(r, i, fi, l, s);
    };
    o.flock = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, int op) { Self(r).Flock(r, i, fi, op); };
    o.fallocate = [](fuse_req_t r, fuse_ino_t i, int m, off_t o, off_t l, fuse_file_info* fi) {
      Self(r).Fallocate(r, i, m, o, l, fi);
    };
    return o;
  }();
  return ops;
}

}  // namespace spool::client
