// The wire frame: what goes out is what comes back, and malformed bodies are refused.
#include "common/rpc/frame.h"

#include <gtest/gtest.h>

#include "common/bytes.h"
#include "spool.pb.h"

namespace spool::rpc {
namespace {

Result<Frame> DecodeWire(const std::string& wire) {
  EXPECT_GE(wire.size(), kLengthFieldBytes);
  EXPECT_EQ(GetLE(wire.data(), 4), wire.size() - kLengthFieldBytes);
  return Frame::Decode(wire.substr(kLengthFieldBytes));
}

TEST(Frame, RoundTripsEveryField) {
  std::string header = "header-bytes";
  std::string payload(1000, 'p');
  std::string wire = EncodeFramePrefix(101, kFlagReply, -EBADMSG, 0x1122334455667788ull, header, payload.size());
  wire += payload;
  auto frame = DecodeWire(wire);
  ASSERT_TRUE(frame.ok()) << frame.status().ToString();
  EXPECT_EQ(frame->method, 101);
  EXPECT_TRUE(frame->is_reply());
  EXPECT_EQ(frame->status, -EBADMSG);
  EXPECT_EQ(frame->request_id, 0x1122334455667788ull);
  EXPECT_EQ(frame->header(), header);
  EXPECT_EQ(frame->payload(), payload);
}

TEST(Frame, EmptyHeaderAndPayload) {
  auto frame = DecodeWire(EncodeFramePrefix(7, 0, 0, 1, "", 0));
  ASSERT_TRUE(frame.ok());
  EXPECT_FALSE(frame->is_reply());
  EXPECT_TRUE(frame->header().empty());
  EXPECT_TRUE(frame->payload().empty());
}

TEST(Frame, RejectsBodyShorterThanFixedPart) {
  auto frame = Frame::Decode(std::string(kFixedBytes - 1, '\0'));
  ASSERT_FALSE(frame.ok());
  EXPECT_EQ(frame.status().code(), EPROTO);
}

TEST(Frame, RejectsHeaderLengthBeyondFrame) {
  std::string wire = EncodeFramePrefix(1, 0, 0, 1, "abc", 0);
  std::string body = wire.substr(kLengthFieldBytes);
  body[16] = 100;  // header_length field
  auto frame = Frame::Decode(body);
  ASSERT_FALSE(frame.ok());
  EXPECT_EQ(frame.status().code(), EPROTO);
}

TEST(Frame, RejectsOversizedBody) {
  auto frame = Frame::Decode(std::string(kMaxFrameBytes + 1, '\0'));
  ASSERT_FALSE(frame.ok());
  EXPECT_EQ(frame.status().code(), EMSGSIZE);
}

TEST(Frame, ParseHeaderRejectsGarbage) {
  std::string wire = EncodeFramePrefix(1, 0, 0, 1, "\xff\xff\xff\xff", 0);
  auto frame = DecodeWire(wire);
  ASSERT_TRUE(frame.ok());
  proto::GetChunkRequest request;
  EXPECT_FALSE(frame->ParseHeader(request));
}

}  // namespace
}  // namespace spool::rpc
