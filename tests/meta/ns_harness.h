// A Namespace in a temp dir driven through a real OpApplier (so orphans,
// group commit and opens behave as in the daemon), with terse helpers that
// return errnos.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <string>

#include "meta/namespace.h"
#include "meta/op_applier.h"
#include "meta/session_table.h"
#include "tests/support/process.h"

namespace spool::testing {

class NsHarness {
 public:
  NsHarness() { Open(); }
  ~NsHarness() { Close(); }

  void Open() {
    ns = meta::Namespace::Open(dir.Sub("db"), "test", 64, 3, 1000).value();
    sessions = std::make_unique<meta::SessionTable>(std::chrono::seconds(30));
    applier = std::make_unique<meta::OpApplier>(*ns, *sessions);
  }
  void Close() {
    applier.reset();
    ns.reset();
  }
  void Reopen() {
    Close();
    Open();
  }

  Result<meta::OpOutcome> Apply(proto::MetaOp op) { return applier->ApplySync(std::move(op)); }

  Result<proto::Attr> Create(uint64_t parent, const std::string& name, uint32_t mode, bool exclusive = true,
                             const std::string& target = "", uint64_t session = 0) {
    proto::MetaOp op;
    auto* c = op.mutable_create();
    c->set_parent(parent);
    c->set_name(name);
    c->set_mode(mode);
    c->set_exclusive(exclusive);
    c->set_symlink_target(target);
    c->set_session_id(session);
    auto r = Apply(std::move(op));
    if (!r.ok()) return r.status();
    return r->attr;
  }
  uint64_t Mkdir(uint64_t parent, const std::string& name) { return Create(parent, name, S_IFDIR | 0755)->ino(); }
  uint64_t File(uint64_t parent, const std::string& name) { return Create(parent, name, S_IFREG | 0644)->ino(); }
  int Unlink(uint64_t parent, const std::string& name, bool directory = false) {
    proto::MetaOp op;
    op.mutable_unlink()->set_parent(parent);
    op.mutable_unlink()->set_name(name);
    op.mutable_unlink()->set_directory(directory);
    return Apply(std::move(op)).status().code();
  }
  int Rename(uint64_t op_, const std::string& on, uint64_t np, const std::string& nn, uint32_t flags = 0) {
    proto::MetaOp op;
    auto* r = op.mutable_rename();
    r->set_old_parent(op_);
    r->set_old_name(on);
    r->set_new_parent(np);
    r->set_new_name(nn);
    r->set_flags(flags);
    return Apply(std::move(op)).status().code();
  }
  int Link(uint64_t ino, uint64_t np, const std::string& nn) {
    proto::MetaOp op;
    op.mutable_link()->set_ino(ino);
    op.mutable_link()->set_new_parent(np);
    op.mutable_link()->set_new_name(nn);
    return Apply(std::move(op)).status().code();
  }
  int LookupErr(uint64_t parent, const std::string& name) { return ns->Lookup(parent, name).status().code(); }
  proto::Attr Attr(uint64_t ino) { return ns->GetAttr(ino).value(); }

  TempDir dir;
  std::unique_ptr<meta::Namespace> ns;
  std::unique_ptr<meta::SessionTable> sessions;
  std::unique_ptr<meta::OpApplier> applier;
};

}  // namespace spool::testing
