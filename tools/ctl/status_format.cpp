#include "tools/ctl/status_format.h"

#include <fmt/format.h>

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

}  // namespace

std::string StatusText(const proto::StatusReply& st) {
  const auto& map = st.map();
  std::string out = fmt::format("map epoch {}  pg_count {}  replicas {}\n", map.epoch(), map.pg_count(), map.replicas());
  out += fmt::format("bricks ({}):\n", map.bricks_size());
  out += fmt::format("  {:>4}  {:<22} {:<16} {:<5} {:>12} {:>12} {:>6}\n", "id", "address", "domain", "state",
                     "capacity", "used", "use%");
  for (const auto& b : map.bricks()) {
    const double pct = b.capacity_bytes() ? 100.0 * static_cast<double>(b.used_bytes()) / static_cast<double>(b.capacity_bytes()) : 0;
    out += fmt::format("  {:>4}  {:<22} {:<16} {:<5} {:>12} {:>12} {:>5.1f}%\n", b.id(), b.address(),
                       b.failure_domain(), StateName(b.state()), Bytes(b.capacity_bytes()), Bytes(b.used_bytes()), pct);
  }
  out += fmt::format("placement groups: {} healthy, {} degraded\n", st.pgs_healthy(), st.pgs_degraded());
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
        "\"used_bytes\":{},\"last_heartbeat_ms\":{}}}",
        b.id(), JsonString(b.uuid()), JsonString(b.address()), JsonString(b.failure_domain()), StateName(b.state()),
        b.capacity_bytes(), b.used_bytes(), b.last_heartbeat_ms());
  }
  return fmt::format(
      "{{\"epoch\":{},\"pg_count\":{},\"replicas\":{},\"bricks\":[{}],\"pgs_healthy\":{},\"pgs_degraded\":{},"
      "\"inodes\":{},\"op_seq\":{},\"deletion_queue\":{},\"sessions\":{}}}\n",
      map.epoch(), map.pg_count(), map.replicas(), bricks, st.pgs_healthy(), st.pgs_degraded(), st.inodes(),
      st.op_seq(), st.deletion_queue(), st.sessions());
}

}  // namespace spool::ctl
