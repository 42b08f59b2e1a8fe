// The wire frame. Little-endian:
//
//   u32 length        bytes that follow this field
//   u16 method
//   u16 flags         bit 0: reply
//   i32 status        replies: 0 or an errno
//   u64 request_id
//   u32 header_length
//   header            a protobuf message
//   payload           raw bytes (chunk data), the rest of the frame
//
// A reader checks `length` against kMaxFrameBytes before allocating.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace spool::rpc {

constexpr size_t kLengthFieldBytes = 4;
constexpr size_t kFixedBytes = 2 + 2 + 4 + 8 + 4;  // after the length field
constexpr uint32_t kMaxFrameBytes = 16u << 20;      // 16 MiB: a bulk stream's batch fits
constexpr uint16_t kFlagReply = 1;

// A decoded frame. Owns its bytes; header and payload are views into them.
class Frame {
 public:
  Frame() = default;
  uint16_t method = 0;
  uint16_t flags = 0;
  int32_t status = 0;
  uint64_t request_id = 0;

  bool is_reply() const { return flags & kFlagReply; }
  std::string_view header() const { return body().substr(header_offset_, header_length_); }
  std::string_view payload() const { return body().substr(header_offset_ + header_length_); }
  // Parses the header as `msg`; false if it is not a valid encoding.
  bool ParseHeader(google::protobuf::MessageLite& msg) const {
    auto h = header();
    return msg.ParseFromArray(h.data(), static_cast<int>(h.size()));
  }

  // Decodes a frame body (everything after the length field). The buffer
  // may be shared: a connection reads several frames into one buffer.
  static Result<Frame> Decode(std::shared_ptr<char[]> body, size_t size);
  static Result<Frame> Decode(std::string_view body);  // copies

 private:
  std::string_view body() const { return std::string_view(body_.get(), body_size_); }

  std::shared_ptr<char[]> body_;  // copies of a Frame share it; never written after Decode
  size_t body_size_ = 0;
  size_t header_offset_ = 0;
  size_t header_length_ = 0;
};

// The bytes sent after a frame's header: owned, or shared by several frames
// (a chunk sent to each of its bricks, and kept in the mount's cache) so
// that each does not copy it.
class Payload {
 public:
  Payload() = default;
  Payload(std::string bytes) : owned_(std::move(bytes)) {}  // NOLINT: implicit by design
  Payload(const char* bytes) : owned_(bytes) {}              // NOLINT: implicit by design
  Payload(std::shared_ptr<const std::string> shared) : shared_(std::move(shared)) {}  // NOLINT: implicit by design
  std::string_view view() const { return shared_ ? std::string_view(*shared_) : std::string_view(owned_); }
  size_t size() const { return view().size(); }
  void clear() {
    owned_.clear();
    shared_.reset();
  }

 private:
  std::string owned_;
  std::shared_ptr<const std::string> shared_;
};

// Encodes the length field, fixed part and header; the payload is sent
// after it as a separate buffer so that it is never copied.
std::string EncodeFramePrefix(uint16_t method, uint16_t flags, int32_t status, uint64_t request_id,
                              std::string_view header, size_t payload_length);

}  // namespace spool::rpc
