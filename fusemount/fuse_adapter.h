// FuseAdapter: the libfuse low-level operations of a spoolfs mount. Each
// method translates one FUSE request into calls on the client library
// (MetaClient for names, FileStore for bytes) and the result into a reply;
// errors travel as errno values end to end.
//
// FUSE inode numbers are meta's inode numbers (root = 1), so the adapter
// keeps no inode table; `forget` only tells FileStore that the kernel's
// pages of the inode are gone.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "fusemount/client/file_store.h"
#include "fusemount/client/meta_client.h"
#include "fusemount/client/options.h"
#include "fusemount/invalidator.h"

namespace spool::client {

// A directory listing in progress. FUSE offsets are indexes into `entries`
// (after "." and ".."); the next batch resumes after the last name, so an
// entry that exists throughout the listing is returned exactly once.
struct DirListing {
  std::mutex mu;  // guards everything below
  std::vector<proto::DirEntry> entries;
  bool complete = false;
  uint64_t lease = 0;  // the name lease this pass copies the names under (DirNames)
};

class FuseAdapter {
 public:
  // `session` receives the invalidations a granted lock needs; `watch` is
  // how far meta's other invalidations have been applied.
  // `names`: copies of leased directories' names, which answer lookups of
  // names that are not there (used only with invalidations on: leases are
  // recalled through them).
  FuseAdapter(const MountOptions& options, MetaClient& meta, FileStore& files, ClusterView& view,
              fuse_session* session, Invalidator& watch, DirNames& names);

  // The operation table; its userdata must be this adapter.
  static const fuse_lowlevel_ops& Operations();

  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void GetAttr(fuse_req_t req, fuse_ino_t ino);
  void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set);
  void Readlink(fuse_req_t req, fuse_ino_t ino);
  void Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
  void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
              unsigned int flags);
  void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi);
  void Flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Statfs(fuse_req_t req, fuse_ino_t ino);
  void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void GetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock);
  void SetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep);
  void Flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op);
  void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi);

 private:
  void ReplyEntry(fuse_req_t req, const Result<proto::Attr>& attr);
  // A meta call answering with attributes, replied to the kernel from the io
  // thread that receives meta's answer (the FUSE worker does not wait):
  // `start` sends it once, `reply` answers the kernel with the attributes
  // corrected by FileStore::Overlay. Meta away takes `wait` (the waiting
  // call, told whether the first try may have been carried out), and a busy
  // inode the plain Overlay, off the io thread.
  using AttrDone = std::function<void(Result<proto::Attr>)>;
  void AttrFromIoThread(std::function<void(AttrDone)> start, std::function<Result<proto::Attr>(bool maybe_applied)> wait,
                        AttrDone reply);
  // The same for a call answering with a status alone (unlink, rename).
  using StatusDone = std::function<void(Status)>;
  void StatusFromIoThread(std::function<void(StatusDone)> start, std::function<Status(bool maybe_applied)> wait,
                          StatusDone reply);
  // Answers a create(2); false if the creator is gone (interrupted): the
  // caller then undoes the open with UndoCreate, on a thread that may wait.
  bool ReplyCreated(fuse_req_t req, const Result<proto::Attr>& attr, fuse_file_info info);
  void UndoCreate(const proto::Attr& attr);
  // This mount added a name to `dir` (`s`: how that went): the copy of its
  // names learns it, or is dropped if the add may or may not have happened.
  void NoteAdded(uint64_t dir, const std::string& name, const Status& s);
  // A listing's first page (which brought the lease, if any) starts a copy
  // of the directory's names, later pages add to it; each returns the lease
  // the copy is kept under, or 0 if none is kept (its lease given back).
  uint64_t StartCopy(uint64_t dir, const proto::ReaddirReply& first_page);
  uint64_t CopyPage(uint64_t dir, uint64_t lease, const proto::ReaddirReply& page);
  // Lists `dir` under a lease to copy its names (lookups there keep finding
  // nothing: names are being made). On a thread that may block.
  void ListForLease(uint64_t dir);
  void RemoveName(fuse_req_t req, fuse_ino_t parent, const char* name, bool directory);
  void MakeNode(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
                const std::string& symlink_target);
  fuse_entry_param EntryParam(const proto::Attr& attr) const;
  // Adds entries from `off` on to `buf`; REQUIRES: listing.mu held.
  Status FillDirBuffer(fuse_req_t req, fuse_ino_t ino, off_t off, bool plus, DirListing& listing, std::string& buf,
                       size_t& used);
  struct stat StatOf(const proto::Attr& attr) const;
  // *granted (if given): meta's reply to a granted lock.
  Status Lock(fuse_req_t req, uint64_t ino, uint64_t owner, bool flock, uint32_t type, uint64_t start, uint64_t end,
              bool wait, uint32_t pid, proto::LockReply* granted = nullptr);
  // Locks are how programs on several hosts take turns on one file (Dovecot's
  // index log): what one wrote before unlocking must be what the next one
  // reads after locking, without waiting for meta's invalidations.
  Status LockCoherently(fuse_req_t req, uint64_t ino, uint64_t owner, bool flock, uint32_t type, uint64_t start,
                        uint64_t end, bool wait, uint32_t pid);

  MountOptions options_;
  MetaClient& meta_;
  FileStore& files_;
  ClusterView& view_;
  fuse_session* const session_;
  Invalidator& watch_;
  DirNames& names_;
  const bool leases_ = options_.invalidations;  // recalls come through the invalidation stream
};

}  // namespace spool::client
