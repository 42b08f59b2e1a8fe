#include "common/rpc/handshake.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace spool::rpc {
namespace {

std::string Hmac(std::string_view key, std::string_view label, std::string_view a, std::string_view b,
                 std::string_view cluster_id) {
  std::string msg;
  msg.append(label).push_back('\0');
  msg.append(a).append(b).append(cluster_id);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), out, &out_len);
  return std::string(reinterpret_cast<char*>(out), out_len);
}

}  // namespace

std::string RandomNonce() {
  std::string nonce(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kNonceBytes) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return nonce;
}

std::string ClientProof(std::string_view key, std::string_view server_nonce, std::string_view client_nonce,
                        std::string_view cluster_id) {
  return Hmac(key, "spool-client", server_nonce, client_nonce, cluster_id);
}

std::string ServerProof(std::string_view key, std::string_view server_nonce, std::string_view client_nonce,
                        std::string_view cluster_id) {
  return Hmac(key, "spool-server", client_nonce, server_nonce, cluster_id);
}

bool ProofsEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace spool::rpc
