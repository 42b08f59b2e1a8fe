// Damage on disk, the way a failing disk or a stray write does it.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace spool::testing {

// Finds `pattern` in the files under `dir` whose names end in one of `suffixes`
// and flips bytes in the middle of each occurrence. Returns the files changed.
inline std::vector<std::string> FlipPatternOnDisk(const std::string& dir, const std::string& pattern,
                                                  const std::vector<std::string>& suffixes) {
  std::vector<std::string> changed;
  for (auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    auto name = entry.path().string();
    bool wanted = false;
    for (auto& s : suffixes) wanted |= name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    if (!wanted) continue;
    std::string content;
    {
      std::ifstream in(name, std::ios::binary);
      content.assign(std::istreambuf_iterator<char>(in), {});
    }
    bool hit = false;
    for (size_t pos = content.find(pattern); pos != std::string::npos; pos = content.find(pattern, pos + 1)) {
      for (size_t k = 0; k < 16; ++k) content[pos + pattern.size() / 2 + k] ^= 0x5a;
      hit = true;
    }
    if (!hit) continue;
    std::ofstream out(name, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    changed.push_back(name);
  }
  return changed;
}

}  // namespace spool::testing
