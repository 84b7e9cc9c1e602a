// A paced, sequence-numbered UDP stream between two test namespaces, for zero-loss tests (docs/testing.md):
// the sender sends `count` datagrams at `rate_per_second` (evenly paced in 1 ms steps), each carrying its
// sequence number; the receiver records which numbers arrived. Loss shows up as missing sequence numbers.
//
// Both sockets are created inside their namespaces (a socket stays in the namespace it was created in), so the
// send and receive loops run on ordinary threads of the test process. The receive buffer is forced large with
// SO_RCVBUFFORCE so a scheduling hiccup of the receiver thread does not drop datagrams (check that with the
// receiver namespace's UdpRcvbufErrors).
// Thread-safety: Start/Finish from one thread; sent() from any thread.
//
//   ASSERT_OK_AND_ASSIGN(auto stream, UdpStream::Create(*tx, *rx, link.b_ipv4, 5555, {}));
//   stream->Start();
//   while (stream->sending()) { ... change the receiver's ruleset ... }
//   UdpStreamResult r = stream->Finish();
//   EXPECT_EQ(r.missing, 0u) << r.Describe();
#ifndef IPTKIT_TESTS_INTEGRATION_UDP_STREAM_H_
#define IPTKIT_TESTS_INTEGRATION_UDP_STREAM_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "iptkit/status.h"
#include "tests/integration/netns_fixture.h"

namespace iptkit::integration {

struct UdpStreamOptions {
  size_t count = 100000;
  // The stream may be lengthened up to this many datagrams while it runs (EndAt); 0 = count.
  size_t max_count = 0;
  int rate_per_second = 20000;
  size_t payload_bytes = 64;    // >= 8: magic + sequence number
  int rcvbuf_bytes = 64 << 20;  // SO_RCVBUFFORCE
  // After the last datagram was sent, wait this long without a new arrival before declaring the rest lost.
  std::chrono::milliseconds drain = std::chrono::milliseconds(500);
};

struct UdpStreamResult {
  size_t sent = 0;         // datagrams handed to the kernel
  size_t send_errors = 0;  // sendto failures (counted, not retried)
  size_t received = 0;     // distinct sequence numbers that arrived
  size_t duplicates = 0;
  size_t missing = 0;                    // sequence numbers below the final count that never arrived
  std::vector<uint32_t> missing_sample;  // the first few missing sequence numbers
  double seconds = 0;                    // duration of the send loop
  std::string Describe() const;
};

class UdpStream {
 public:
  // `dst` is an IPv4 or IPv6 address of the receiver namespace.
  static Result<std::unique_ptr<UdpStream>> Create(const TestNetns& sender, const TestNetns& receiver,
                                                   const std::string& dst, uint16_t port,
                                                   const UdpStreamOptions& options = {});
  ~UdpStream();
  UdpStream(const UdpStream&) = delete;
  UdpStream& operator=(const UdpStream&) = delete;

  void Start();
  // Makes the stream end after `n` datagrams (clamped to what was sent and to max_count); without a call it
  // ends after `count`. Lets a test go on sending until a slow operation it watches has finished.
  void EndAt(size_t n);
  size_t sent() const { return sent_.load(std::memory_order_relaxed); }
  bool sending() const { return !send_done_.load(); }
  // Waits for the sender, drains the receiver, and reports. Call once.
  UdpStreamResult Finish();

 private:
  UdpStream(int send_fd, int recv_fd, UdpStreamOptions options);
  void SendLoop();
  void ReceiveLoop();

  int send_fd_;
  int recv_fd_;
  UdpStreamOptions options_;
  std::vector<uint8_t> seen_;
  std::atomic<size_t> sent_{0};
  std::atomic<size_t> target_{0};  // the stream ends after this many datagrams
  std::atomic<size_t> send_errors_{0};
  std::atomic<size_t> received_{0};
  std::atomic<bool> send_done_{false};
  std::atomic<bool> stop_receiving_{false};
  size_t duplicates_ = 0;
  double seconds_ = 0;
  std::thread sender_;
  std::thread receiver_;
};

}  // namespace iptkit::integration

#endif  // IPTKIT_TESTS_INTEGRATION_UDP_STREAM_H_
