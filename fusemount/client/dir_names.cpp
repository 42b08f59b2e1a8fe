#include "fusemount/client/dir_names.h"

namespace spool::client {
namespace {

// Lookups that find nothing at meta before a directory is listed: one is
// any directory's first miss, a second one means names are being made
// there (a maildir's tmp/, new/, cur/).
constexpr uint32_t kMissesBeforeListing = 2;
// Directories with misses counted; the counts start over past this.
constexpr size_t kMissesTracked = 4096;
// Recalled lease ids remembered: a listing's first page arrives within an
// RPC's time of its recall, and thousands of recalls do not come that fast.
constexpr size_t kRecalledKept = 4096;

}  // namespace

bool DirNames::BeginListing(uint64_t dir, uint64_t lease_id, uint64_t generation) {
  std::lock_guard lock(mu_);
  if (names_held_ >= kMaxNames || recalled_.contains(lease_id)) return false;
  auto& copy = copies_[dir];
  if (copy.lease_id == lease_id && copy.generation == generation) return true;  // a second listing under it
  names_held_ -= copy.names.size();
  copy = Copy{lease_id, generation, false, {}};
  misses_.erase(dir);
  return true;
}

bool DirNames::AddListed(uint64_t dir, uint64_t lease_id, const std::vector<std::string>& names) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(dir);
  if (it == copies_.end() || it->second.lease_id != lease_id) return false;
  auto& copy = it->second;
  for (const auto& name : names)
    if (copy.names.insert(name).second) ++names_held_;
  if (copy.names.size() > kMaxNamesPerDir) {
    names_held_ -= copy.names.size();
    copies_.erase(it);
    if (too_large_.size() >= kMissesTracked) too_large_.clear();
    too_large_.insert(dir);
    return false;
  }
  return true;
}

void DirNames::CompleteListing(uint64_t dir, uint64_t lease_id) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(dir);
  if (it != copies_.end() && it->second.lease_id == lease_id) it->second.complete = true;
}

void DirNames::Added(uint64_t dir, const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(dir);
  if (it != copies_.end() && it->second.names.insert(name).second) ++names_held_;
}

void DirNames::Removed(uint64_t dir, const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(dir);
  if (it != copies_.end() && it->second.names.erase(name) > 0) --names_held_;
}

uint64_t DirNames::Drop(uint64_t dir) {
  std::lock_guard lock(mu_);
  auto it = copies_.find(dir);
  if (it == copies_.end()) return 0;
  const uint64_t lease = it->second.lease_id;
  names_held_ -= it->second.names.size();
  copies_.erase(it);
  return lease;
}

void DirNames::Recalled(uint64_t dir, uint64_t lease_id) {
  std::lock_guard lock(mu_);
  if (recalled_.insert(lease_id).second) {
    recalled_order_.push_back(lease_id);
    if (recalled_order_.size() > kRecalledKept) {
      recalled_.erase(recalled_order_.front());
      recalled_order_.pop_front();
    }
  }
  auto it = copies_.find(dir);
  if (it == copies_.end() || it->second.lease_id != lease_id) return;
  names_held_ -= it->second.names.size();
  copies_.erase(it);
}

std::vector<std::pair<uint64_t, uint64_t>> DirNames::DropAll() {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> leases;
  for (const auto& [dir, copy] : copies_) leases.emplace_back(dir, copy.lease_id);
  copies_.clear();
  names_held_ = 0;
  return leases;
}

void DirNames::Heard(Clock::time_point when, uint64_t generation) {
  std::lock_guard lock(mu_);
  heard_ = when;
  heard_generation_ = generation;
}

bool DirNames::KnownAbsent(uint64_t dir, std::string_view name, uint64_t generation, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (heard_generation_ != generation || now - heard_ > kTrustFor) return false;
  auto it = copies_.find(dir);
  if (it == copies_.end() || !it->second.complete || it->second.generation != generation) return false;
  return !it->second.names.contains(std::string(name));
}

bool DirNames::WantLease(uint64_t dir) const {
  std::lock_guard lock(mu_);
  return !too_large_.contains(dir) && names_held_ < kMaxNames;
}

bool DirNames::WorthListing(uint64_t dir) {
  std::lock_guard lock(mu_);
  if (copies_.contains(dir) || too_large_.contains(dir) || names_held_ >= kMaxNames) return false;
  if (misses_.size() >= kMissesTracked) misses_.clear();
  if (++misses_[dir] < kMissesBeforeListing) return false;
  misses_.erase(dir);
  return true;
}

}  // namespace spool::client
