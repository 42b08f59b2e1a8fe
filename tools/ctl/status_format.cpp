#include "tools/ctl/status_format.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/brick_names.h"

namespace spool::ctl {
namespace {

std::string Bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

const char* StateName(proto::BrickState s) {
  switch (s) {
    case proto::BRICK_UP: return "up";
    case proto::BRICK_DOWN: return "down";
    case proto::BRICK_OUT: return "out";
    default: return "unknown";
  }
}

// Placement groups a brick is a member of, and leaving (moving off it).
std::pair<uint32_t, uint32_t> GroupsOf(const proto::ClusterMap& map, uint32_t id) {
  uint32_t member = 0, leaving = 0;
  for (const auto& pg : map.pgs()) {
    member += static_cast<uint32_t>(std::count(pg.bricks().begin(), pg.bricks().end(), id));
    leaving += static_cast<uint32_t>(std::count(pg.leaving().begin(), pg.leaving().end(), id));
  }
  return {member, leaving};
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string Join(const google::protobuf::RepeatedField<uint32_t>& ids) {
  std::string out;
  for (uint32_t id : ids) {
    if (!out.empty()) out += ',';  // not `"" + string`: a false -Wrestrict of GCC 12 at -O3
    out += std::to_string(id);
  }
  return out;
}

// "0-5,9,12-13"
std::string Ranges(const google::protobuf::RepeatedField<uint32_t>& sorted) {
  std::string out;
  for (int i = 0; i < sorted.size();) {
    int j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j > i ? fmt::format("{}-{}", sorted[i], sorted[j]) : std::to_string(sorted[i]);
    i = j + 1;
  }
  return out;
}

std::string RepairJson(const proto::RepairStatus& r) {
  return fmt::format(
      "{{\"pgs_pending\":{},\"wave_marked\":{},\"wave_done\":{},\"bytes_copied\":{},\"chunks_copied\":{},"
      "\"chunks_pending\":{},\"bytes_per_sec\":{:.0f},\"pgs_per_sec\":{:.2f},\"eta_ms\":{},\"repair_queue\":{}}}",
      r.pgs_pending(), r.wave_marked(), r.wave_done(), r.bytes_copied(), r.chunks_copied(), r.chunks_pending(),
      r.bytes_per_sec(), r.pgs_per_sec(), r.eta_ms(), r.repair_queue());
}

std::string BrickWorkJson(const proto::BrickWork& w) {
  const auto& r = w.repair();
  const auto& s = w.scrub();
  return fmt::format(
      "{{\"brick_id\":{},\"repair\":{{\"chunks_copied\":{},\"bytes_copied\":{},\"chunks_pending\":{},"
      "\"tasks_queued\":{},\"corrupt_rewritten\":{}}},\"scrub\":{{\"generation\":{},\"running\":{},"
      "\"chunks_checked\":{},\"chunks_total\":{},\"bytes_checked\":{},\"corrupt_found\":{},"
      "\"passes_completed\":{},\"last_pass_end_ms\":{}}}}}",
      w.brick_id(), r.chunks_copied(), r.bytes_copied(), r.chunks_pending(), r.tasks_queued(), r.corrupt_rewritten(),
      s.generation(), s.running() ? "true" : "false", s.chunks_checked(), s.chunks_total(), s.bytes_checked(),
      s.corrupt_found(), s.passes_completed(), s.last_pass_end_ms());
}

}  // namespace

std::string ProgressBar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * width + 0.5);
  return fmt::format("[{}{}] {:3.0f}%", std::string(static_cast<size_t>(filled), '#'),
                     std::string(static_cast<size_t>(width - filled), '.'), fraction * 100);
}

std::string Duration(int64_t ms) {
  if (ms < 0) return "unknown";
  const int64_t s = (ms + 999) / 1000;
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string StatusText(const proto::StatusReply& st) {
  const auto& map = st.map();
  std::string out = fmt::format("map epoch {}  pg_count {}  replicas {}\n", map.epoch(), map.pg_count(), map.replicas());
  out += fmt::format("bricks ({}):\n", map.bricks_size());
  out += fmt::format("  {:>4}  {:<22} {:<16} {:<5} {:<12} {:>12} {:>12} {:>6} {:>5} {:>7}\n", "id", "address", "domain",
                     "state", "admin", "capacity", "used", "use%", "pgs", "leaving");
  for (const auto& b : map.bricks()) {
    const double pct = b.capacity_bytes() ? 100.0 * static_cast<double>(b.used_bytes()) / static_cast<double>(b.capacity_bytes()) : 0;
    const auto [member, leaving] = GroupsOf(map, b.id());
    out += fmt::format("  {:>4}  {:<22} {:<16} {:<5} {:<12} {:>12} {:>12} {:>5.1f}% {:>5} {:>7}\n", b.id(), b.address(),
                       b.failure_domain(), StateName(b.state()),
                       std::string(AdminName(b.admin())) + (b.near_full() ? ",full" : ""), Bytes(b.capacity_bytes()),
                       Bytes(b.used_bytes()), pct, member, leaving);
  }
  out += fmt::format("placement groups: {} healthy, {} moving, {} degraded\n", st.pgs_healthy(), st.pgs_moving(),
                     st.pgs_degraded());
  if (st.degraded_pgs_size() > 0) out += "degraded groups: " + Ranges(st.degraded_pgs()) + "\n";
  const auto& r = st.repair();
  if (r.pgs_pending() > 0) {
    const double fraction =
        r.wave_marked() ? static_cast<double>(r.wave_done()) / static_cast<double>(r.wave_marked()) : 0.0;
    // Moves are copied by the repair machinery: one progress line for both.
    out += fmt::format("{}: {}  {}/{} groups done, {} pending, {} chunks to copy, {}/s, ETA {}\n",
                       st.pgs_moving() > 0 ? "moves+repair" : "repair", ProgressBar(fraction, 30), r.wave_done(),
                       r.wave_marked(), r.pgs_pending(), r.chunks_pending(),
                       Bytes(static_cast<uint64_t>(r.bytes_per_sec())), Duration(r.eta_ms()));
  } else {
    out += "repair: none pending\n";
  }
  out += fmt::format("repair totals: {} chunks, {} copied since meta started; {} chunk reports queued\n",
                     r.chunks_copied(), Bytes(r.bytes_copied()), r.repair_queue());
  for (const auto& w : st.brick_work()) {
    const auto& s = w.scrub();
    if (s.running()) {
      const double fraction =
          s.chunks_total() ? static_cast<double>(s.chunks_checked()) / static_cast<double>(s.chunks_total()) : 0.0;
      out += fmt::format("scrub brick {}: {}  {} chunks checked, {} corrupt found\n", w.brick_id(),
                         ProgressBar(fraction, 30), s.chunks_checked(), s.corrupt_found());
    } else if (s.passes_completed() > 0) {
      out += fmt::format("scrub brick {}: {} passes, last checked {} chunks, {} corrupt found, {} rewritten\n",
                         w.brick_id(), s.passes_completed(), s.chunks_checked(), s.corrupt_found(),
                         w.repair().corrupt_rewritten());
    }
  }
  out += fmt::format("namespace: {} inodes, op seq {}\n", st.inodes(), st.op_seq());
  out += fmt::format("deletion queue: {} chunks\n", st.deletion_queue());
  out += fmt::format("sessions: {}\n", st.sessions());
  return out;
}

std::string StatusJson(const proto::StatusReply& st) {
  const auto& map = st.map();
  std::string bricks;
  for (const auto& b : map.bricks()) {
    if (!bricks.empty()) bricks += ",";
    bricks += fmt::format(
        "{{\"id\":{},\"uuid\":{},\"address\":{},\"failure_domain\":{},\"state\":\"{}\",\"capacity_bytes\":{},"
        "\"used_bytes\":{},\"last_heartbeat_ms\":{},\"admin\":\"{}\",\"near_full\":{},\"pgs\":{},\"leaving_pgs\":{}}}",
        b.id(), JsonString(b.uuid()), JsonString(b.address()), JsonString(b.failure_domain()), StateName(b.state()),
        b.capacity_bytes(), b.used_bytes(), b.last_heartbeat_ms(), AdminName(b.admin()),
        b.near_full() ? "true" : "false", GroupsOf(map, b.id()).first, GroupsOf(map, b.id()).second);
  }
  std::string work;
  for (const auto& w : st.brick_work()) {
    if (!work.empty()) work += ',';
    work += BrickWorkJson(w);
  }
  return fmt::format(
      "{{\"epoch\":{},\"pg_count\":{},\"replicas\":{},\"bricks\":[{}],\"pgs_healthy\":{},\"pgs_degraded\":{},"
      "\"inodes\":{},\"op_seq\":{},\"deletion_queue\":{},\"sessions\":{},\"repair\":{},\"brick_work\":[{}],"
      "\"scrub_generation\":{},\"degraded_pgs\":[{}],\"pgs_moving\":{}}}\n",
      map.epoch(), map.pg_count(), map.replicas(), bricks, st.pgs_healthy(), st.pgs_degraded(), st.inodes(),
      st.op_seq(), st.deletion_queue(), st.sessions(), RepairJson(st.repair()), work, st.scrub_generation(),
      Join(st.degraded_pgs()), st.pgs_moving());
}

std::string HealText(const proto::HealReply& heal) {
  if (heal.pending_total() == 0) return "heal: nothing pending; every placement group is in line\n";
  std::string out = fmt::format("heal: {} placement groups pending (most degraded first)\n", heal.pending_total());
  out += fmt::format("  {:>6} {:>8} {:>10} {:<12} {:<12} {}\n", "pg", "missing", "generation", "members", "done", "state");
  for (const auto& p : heal.pending())
    out += fmt::format("  {:>6} {:>8} {:>10} {:<12} {:<12} {}\n", p.pg(), p.severity(), p.generation(),
                       Join(p.members()), Join(p.done()), p.waiting_for_bricks() ? "waiting for a down brick" : "repairing");
  if (heal.pending_total() > static_cast<uint32_t>(heal.pending_size()))
    out += fmt::format("  ... and {} more\n", heal.pending_total() - static_cast<uint32_t>(heal.pending_size()));
  return out;
}

std::string HealJson(const proto::HealReply& heal) {
  std::string items;
  for (const auto& p : heal.pending()) {
    items += fmt::format("{}{{\"pg\":{},\"severity\":{},\"generation\":{},\"members\":[{}],\"done\":[{}],"
                         "\"waiting_for_bricks\":{},\"marked_ms\":{}}}",
                         items.empty() ? "" : ",", p.pg(), p.severity(), p.generation(), Join(p.members()),
                         Join(p.done()), p.waiting_for_bricks() ? "true" : "false", p.marked_ms());
  }
  return fmt::format("{{\"pending_total\":{},\"pending\":[{}]}}\n", heal.pending_total(), items);
}

}  // namespace spool::ctl
