#include "common/rpc/frame.h"

#include <algorithm>

#include "common/bytes.h"

namespace spool::rpc {

Result<Frame> Frame::Decode(std::string_view body) {
  auto buffer = std::make_shared_for_overwrite<char[]>(body.size());
  std::copy(body.begin(), body.end(), buffer.get());
  return Decode(std::move(buffer), body.size());
}

Result<Frame> Frame::Decode(std::shared_ptr<char[]> body, size_t size) {
  if (size < kFixedBytes) return Status::Error(EPROTO, "frame shorter than its fixed part");
  if (size > kMaxFrameBytes) return Status::Error(EMSGSIZE, "frame larger than the maximum");
  const char* p = body.get();
  Frame f;
  f.method = static_cast<uint16_t>(GetLE(p, 2));
  f.flags = static_cast<uint16_t>(GetLE(p + 2, 2));
  f.status = static_cast<int32_t>(GetLE(p + 4, 4));
  f.request_id = GetLE(p + 8, 8);
  uint64_t header_length = GetLE(p + 16, 4);
  if (header_length > size - kFixedBytes)
    return Status::Error(EPROTO, "frame header length exceeds the frame");
  f.header_offset_ = kFixedBytes;
  f.header_length_ = header_length;
  f.body_ = std::move(body);
  f.body_size_ = size;
  return f;
}

std::string EncodeFramePrefix(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id,
                              std::string_view header, size_t payload_length) {
  std::string out;
  out.reserve(kLengthFieldBytes + kFixedBytes + header.size());
  PutLE(out, kFixedBytes + header.size() + payload_length, 4);
  PutLE(out, method, 2);
  PutLE(out, flags, 2);
  PutLE(out, static_cast<uint32_t>(status), 4);
  PutLE(out, request_id, 8);
  PutLE(out, header.size(), 4);
  out.append(header);
  return out;
}

}  // namespace spool::rpc
