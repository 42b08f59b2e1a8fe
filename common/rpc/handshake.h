// The proofs of the connection handshake. Both ends prove they know the
// cluster key without sending it, over fresh nonces from both sides, so a
// recorded handshake cannot be replayed.
#pragma once

#include <string>
#include <string_view>

namespace spool::rpc {

constexpr size_t kNonceBytes = 32;

std::string RandomNonce();
std::string ClientProof(std::string_view key, std::string_view server_nonce, std::string_view client_nonce,
                        std::string_view cluster_id);
std::string ServerProof(std::string_view key, std::string_view server_nonce, std::string_view client_nonce,
                        std::string_view cluster_id);
// Constant-time comparison of two proofs.
bool ProofsEqual(std::string_view a, std::string_view b);

}  // namespace spool::rpc
