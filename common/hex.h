// Hex encoding for keys and ids in files and logs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace spool {

std::string HexEncode(std::string_view bytes);
std::optional<std::string> HexDecode(std::string_view hex);

}  // namespace spool
