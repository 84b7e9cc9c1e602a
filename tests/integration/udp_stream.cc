#include "tests/integration/udp_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

namespace iptkit::integration {
namespace {

constexpr uint32_t kMagic = 0x1b7c0de5;

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
};

Result<SockAddr> ParseAddr(const std::string& addr, uint16_t port) {
  SockAddr out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out.len = sizeof(*v4);
    out.family = AF_INET;
  } else if (inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out.len = sizeof(*v6);
    out.family = AF_INET6;
  } else {
    return Status::InvalidArgument("not an IP address: " + addr);
  }
  return out;
}

Status Errno(const std::string& what) { return Status::Internal(what + ": " + std::strerror(errno)); }

}  // namespace

std::string UdpStreamResult::Describe() const {
  std::ostringstream out;
  out << "sent " << sent << " (" << send_errors << " send errors) in " << seconds << " s, received " << received
      << ", missing " << missing << ", duplicates " << duplicates;
  if (!missing_sample.empty()) {
    out << "; first missing:";
    for (uint32_t seq : missing_sample) out << ' ' << seq;
  }
  return out.str();
}

Result<std::unique_ptr<UdpStream>> UdpStream::Create(const TestNetns& sender, const TestNetns& receiver,
                                                     const std::string& dst, uint16_t port,
                                                     const UdpStreamOptions& options) {
  if (options.payload_bytes < 8) return Status::InvalidArgument("payload_bytes < 8");
  IPTKIT_ASSIGN_OR_RETURN(SockAddr addr, ParseAddr(dst, port));
  int recv_fd = -1;
  int send_fd = -1;
  Status s = RunInNetns(receiver.path(), [&]() -> Status {
    recv_fd = socket(addr.family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (recv_fd < 0) return Errno("socket");
    int size = options.rcvbuf_bytes;
    if (setsockopt(recv_fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
      return Errno("SO_RCVBUFFORCE");
    }
    if (bind(recv_fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
      return Errno("bind " + dst);
    }
    return Status::Ok();
  });
  if (s.ok()) {
    s = RunInNetns(sender.path(), [&]() -> Status {
      send_fd = socket(addr.family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (send_fd < 0) return Errno("socket");
      if (connect(send_fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
        return Errno("connect " + dst);
      }
      return Status::Ok();
    });
  }
  if (!s.ok()) {
    if (recv_fd >= 0) close(recv_fd);
    if (send_fd >= 0) close(send_fd);
    return s;
  }
  return std::unique_ptr<UdpStream>(new UdpStream(send_fd, recv_fd, options));
}

UdpStream::UdpStream(int send_fd, int recv_fd, UdpStreamOptions options)
    : send_fd_(send_fd),
      recv_fd_(recv_fd),
      options_(options),
      seen_(std::max(options.count, options.max_count), 0),
      target_(options.count) {}

UdpStream::~UdpStream() {
  send_done_ = true;
  stop_receiving_ = true;
  if (sender_.joinable()) sender_.join();
  if (receiver_.joinable()) receiver_.join();
  close(send_fd_);
  close(recv_fd_);
}

void UdpStream::Start() {
  receiver_ = std::thread([this] { ReceiveLoop(); });
  sender_ = std::thread([this] { SendLoop(); });
}

void UdpStream::EndAt(size_t n) {
  n = std::min(std::max(n, sent()), seen_.size());
  target_.store(n);
}

void UdpStream::SendLoop() {
  std::vector<uint8_t> payload(options_.payload_bytes, 0xa5);
  const auto start = std::chrono::steady_clock::now();
  auto next_tick = start;
  size_t seq = 0;
  while (seq < target_.load() && !send_done_.load(std::memory_order_relaxed)) {
    // Evenly paced: by time t, rate * t datagrams are due (catch up after a late wake-up).
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    size_t due = std::min(target_.load(), static_cast<size_t>(elapsed * options_.rate_per_second) + 1);
    for (; seq < due; ++seq) {
      uint32_t words[2] = {htonl(kMagic), htonl(static_cast<uint32_t>(seq))};
      std::memcpy(payload.data(), words, sizeof(words));
      if (send(send_fd_, payload.data(), payload.size(), 0) < 0) {
        send_errors_.fetch_add(1, std::memory_order_relaxed);
      }
      sent_.store(seq + 1, std::memory_order_relaxed);
    }
    next_tick += std::chrono::milliseconds(1);
    std::this_thread::sleep_until(next_tick);
  }
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  send_done_ = true;
}

void UdpStream::ReceiveLoop() {
  constexpr int kBatch = 64;
  std::vector<std::vector<uint8_t>> buffers(kBatch, std::vector<uint8_t>(2048));
  mmsghdr msgs[kBatch];
  iovec iovs[kBatch];
  auto last_arrival = std::chrono::steady_clock::now();
  while (true) {
    if (stop_receiving_.load()) break;
    if (send_done_.load()) {
      if (received_.load() == target_.load()) break;
      if (std::chrono::steady_clock::now() - last_arrival > options_.drain) break;
    }
    pollfd pfd{recv_fd_, POLLIN, 0};
    if (poll(&pfd, 1, 20) <= 0) continue;
    for (int i = 0; i < kBatch; ++i) {
      iovs[i] = {buffers[i].data(), buffers[i].size()};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(recv_fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) continue;
    last_arrival = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (msgs[i].msg_len < 8) continue;
      uint32_t words[2];
      std::memcpy(words, buffers[i].data(), sizeof(words));
      if (ntohl(words[0]) != kMagic) continue;
      uint32_t seq = ntohl(words[1]);
      if (seq >= seen_.size()) continue;
      if (seen_[seq]) {
        ++duplicates_;
      } else {
        seen_[seq] = 1;
        received_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
}

UdpStreamResult UdpStream::Finish() {
  if (sender_.joinable()) sender_.join();
  if (receiver_.joinable()) receiver_.join();
  UdpStreamResult r;
  r.sent = sent_.load();
  r.send_errors = send_errors_.load();
  r.received = received_.load();
  r.duplicates = duplicates_;
  const size_t count = target_.load();
  // Counted, not subtracted: a sender that read the target before EndAt shortened it may have sent (and the
  // receiver seen) numbers at or past the final count, so `received` can exceed it.
  for (size_t i = 0; i < count; ++i) {
    if (seen_[i]) continue;
    ++r.missing;
    if (r.missing_sample.size() < 10) r.missing_sample.push_back(static_cast<uint32_t>(i));
  }
  r.seconds = seconds_;
  return r;
}

}  // namespace iptkit::integration
