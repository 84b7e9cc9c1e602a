#include "src/rest/http/event_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/base/errno_status.h"
#include "src/rest/http/response.h"

namespace iptkit::rest::http {
namespace {

using std::chrono::milliseconds;

constexpr uint64_t kWakeTag = 0;
constexpr uint64_t kFirstConnection = 1 << 20;  // epoll tags below are listeners (index + 1)
constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kBodyBuffer = 64 * 1024;     // bytes buffered ahead of the body decoder
constexpr size_t kStreamRead = 64 * 1024;     // event bytes taken per write of a stream
constexpr int kStreamSendBuffer = 64 * 1024;  // SO_SNDBUF of an event stream: a stalled client holds no more
constexpr milliseconds kLingerTime{2000};     // a lingering close waits this long for the client's EOF
constexpr milliseconds kStopGrace{300};       // Stop waits this long for requests in a worker
constexpr milliseconds kTick{100};            // timer resolution
constexpr milliseconds kAcceptPause{100};     // after EMFILE from accept
// How long a worker that answered on a keep-alive connection waits for the client's next request before it hands the
// connection back to the loop. Clients that send one request after the other (and the writer's group commit, which
// waits group_wait for them) save two thread wake-ups per request; an idle client costs the worker this long.
constexpr milliseconds kReadAhead{5};

const Clock::time_point kNever = Clock::time_point::max();

bool Served(const std::string& method) {
  return method == "GET" || method == "HEAD" || method == "POST" || method == "PUT" || method == "DELETE" ||
         method == "PATCH" || method == "OPTIONS";
}

// The 16-byte key of a peer address (IPv4 as IPv4-mapped IPv6) and its text "192.0.2.1:5555".
void PeerOf(const sockaddr_storage& addr, std::string* key, std::string* text) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  unsigned char bytes[16] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    bytes[10] = bytes[11] = 0xff;
    std::memcpy(bytes + 12, &a->sin_addr, 4);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    std::memcpy(bytes, &a->sin6_addr, 16);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
  }
  key->assign(reinterpret_cast<const char*>(bytes), 16);
  *text = std::string(host) + ":" + std::to_string(port);
}

std::optional<PeerCred> CredentialsOf(int fd) {
  ucred uc{};
  socklen_t len = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) return std::nullopt;
  PeerCred cred;
  cred.uid = uc.uid;
  cred.gid = uc.gid;
  cred.pid = uc.pid;
  gid_t groups[256];
  socklen_t glen = sizeof(groups);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
    for (size_t i = 0; i < glen / sizeof(gid_t); ++i) cred.groups.push_back(groups[i]);
  }
  return cred;
}

// A 503 sent into a connection that is closed at once (it fits any fresh socket's send buffer).
void Refuse(int fd, const std::string& message) {
  const std::string bytes = SerializeResponse(ProblemResponse(503, message), {.keep_alive = false});
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(fd);
}

std::string Seconds(milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

}  // namespace

enum class ConnState {
  kHandshake,  // TLS handshake
  kIdle,       // no request: waiting for the first byte of the next one (keep-alive)
  kHead,       // reading the request line and header fields
  kBody,       // reading an admitted body
  kWorking,    // a worker owns the connection (see Connection::away)
  kWaiting,    // an inline request waits for its deferred answer (the loop's; nothing is read meanwhile)
  kHeld,       // an answer with a hold (HttpResponse::hold) waits it out in `out`: nothing is read or written
  kWriting,    // sending an answer
  kStreaming,  // sending an event stream
  kLinger,     // answered and write side shut: discarding what the client still sends until it closes
};

struct EventLoop::Connection {
  uint64_t id = 0;
  base::UniqueFd fd;  // declared before io: the TLS session goes first
  std::unique_ptr<Transport> io;
  bool unix_socket = false;
  std::string peer_key;          // TCP: the client's address (per-peer cap)
  std::optional<PeerCred> cred;  // unix: the peer
  std::string remote;            // for the access log
  ConnState state = ConnState::kIdle;
  Clock::time_point deadline = kNever;
  bool closed = false;
  // While a worker runs a request (kWorking), it owns the connection: the socket is out of the epoll set and the loop
  // touches nothing but this flag until the worker's Result comes back. The worker answers on the socket itself and
  // may take the next keep-alive request right away (RunAway), which saves the loop two wake-ups per request.
  bool away = false;
  bool registered = false;    // in the epoll set
  bool broken = false;        // a worker found the connection reset: close it
  bool inline_ready = false;  // a worker parsed an Api::Inline request (in `request`) and left it to the loop

  std::string in;        // received, not yet parsed
  size_t scan_from = 0;  // FindHeadEnd resumes here
  std::string out;       // to send
  size_t out_sent = 0;
  bool read_eof = false;          // the client shut its side
  bool read_needs_write = false;  // TLS: a read waits for writability
  bool write_needs_read = false;  // TLS: a write waits for readability
  uint32_t interest = 0;

  RequestHead head;  // the request in progress
  HttpRequest request;
  BodyDecoder body;
  Admission admission;
  std::string request_id;    // for answers of the HTTP layer
  bool body_unread = false;  // body bytes of this request may still be on the wire
  bool close_after = false;  // close (after a lingering phase if needed) once `out` is sent

  std::unique_ptr<service::EventBus::Subscription> stream;
  bool stream_chunked = true;
  bool stream_done = false;
  bool stream_cut_here = false;  // cut by send_timeout, not by the bus
  Clock::time_point next_keepalive = kNever;
  size_t lingered = 0;
};

uint64_t ServerShared::RefreshCaps() {
  rlimit limit{};
  uint64_t now = descriptor_limit.load();
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    now = limit.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : static_cast<uint64_t>(limit.rlim_cur);
  }
  const uint64_t before = descriptor_limit.exchange(now);
  if (before == now) return now;
  const uint64_t unix_room = options.unix_socket.empty() ? 0 : options.max_socket_connections;
  const uint64_t after_fixed = now > fixed_descriptors ? now - fixed_descriptors : 0;
  unix_cap.store(static_cast<size_t>(std::min(unix_room, after_fixed)));
  tcp_cap.store(static_cast<size_t>(std::min<uint64_t>(options.max_connections, after_fixed - unix_cap.load())));
  if (!options.tcp.empty() && tcp_cap.load() < options.max_connections) {
    spdlog::warn(
        "serving at most {} TCP connections, not max_connections {}: the file descriptor limit is {} and {} "
        "are kept for the unix socket and other uses",
        tcp_cap.load(), options.max_connections, now, fixed_descriptors + unix_cap.load());
  }
  return now;
}

EventLoop::EventLoop(ServerShared* shared, std::vector<const ListenSocket*> listeners)
    : s_(shared), listeners_(std::move(listeners)), mailbox_(std::make_shared<Mailbox>()), next_id_(kFirstConnection) {
  mailbox_->loop = this;
}

EventLoop::~EventLoop() {
  std::lock_guard<std::mutex> lock(mailbox_->mu);
  mailbox_->loop = nullptr;
}

Status EventLoop::Init() {
  epoll_ = base::UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return base::ErrnoToStatus(errno, "epoll_create1");
  wake_ = base::UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_.valid()) return base::ErrnoToStatus(errno, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) return base::ErrnoToStatus(errno, "epoll_ctl");
  for (size_t i = 0; i < listeners_.size(); ++i) {
    // EPOLLEXCLUSIVE: one loop is woken per new connection, not all of them.
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.u64 = i + 1;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listeners_[i]->fd.get(), &ev) != 0) {
      return base::ErrnoToStatus(errno, "epoll_ctl (listener)");
    }
  }
  return Status::Ok();
}

void EventLoop::Wake() {
  if (!woken_.exchange(true)) {
    const uint64_t one = 1;
    (void)::write(wake_.get(), &one, sizeof(one));
  }
}

void EventLoop::Deliver(Result result) { mailbox_->Post(std::move(result)); }

void EventLoop::Mailbox::Post(Result result) {
  std::lock_guard<std::mutex> lock(mu);
  if (loop == nullptr) return;
  results.push_back(std::move(result));
  loop->Wake();
}

void EventLoop::Run() {
  epoll_event events[256];
  Clock::time_point next_tick = Clock::now() + kTick;
  for (;;) {
    const auto now = Clock::now();
    const int timeout =
        now >= next_tick ? 0 : static_cast<int>(std::chrono::duration_cast<milliseconds>(next_tick - now).count() + 1);
    const int n = epoll_wait(epoll_.get(), events, 256, timeout);
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) {
        uint64_t count;
        (void)::read(wake_.get(), &count, sizeof(count));
        woken_.store(false);
      } else if (tag < kFirstConnection) {
        Accept(tag - 1);
      } else if (auto it = conns_.find(tag); it != conns_.end() && !it->second->closed && !it->second->away) {
        OnEvent(*it->second, events[i].events);
      }
    }
    std::vector<Result> results;
    std::vector<std::unique_ptr<Connection>> adopted;
    {
      std::lock_guard<std::mutex> lock(mailbox_->mu);
      results.swap(mailbox_->results);
      adopted.swap(mailbox_->adopted);
    }
    for (auto& c : adopted) Register(std::move(c));
    for (Result& r : results) OnResult(std::move(r));
    if (events_pending_.exchange(false)) {
      for (auto& [id, c] : conns_) {
        if (c->closed || c->state != ConnState::kStreaming) continue;
        PumpStream(*c);
        if (!c->closed) UpdateInterest(*c);
      }
    }
    if (Clock::now() >= next_tick) {
      CheckTimers();
      next_tick = Clock::now() + kTick;
    }
    bool only_away = false;
    if (s_->stopping.load()) {
      if (!stop_begun_) BeginStop();
      if (Clock::now() >= stop_deadline_) {
        only_away = true;
        for (auto& [id, c] : conns_) {
          if (c->closed) continue;
          // A worker still owns it: it is closed with the loop, after the workers stopped (HttpServer::Stop).
          if (c->away) continue;
          Close(*c);
        }
      }
    }
    for (uint64_t id : closed_) conns_.erase(id);
    closed_.clear();
    if (stop_begun_ && (conns_.empty() || only_away)) break;
  }
  // Results that arrive later (a worker finishing) are dropped with the loop.
}

// ---- Accepting ----

void EventLoop::PauseAccepting() {
  if (accepting_paused_) return;
  accepting_paused_ = true;
  accept_resume_ = Clock::now() + kAcceptPause;
  for (const ListenSocket* l : listeners_) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, l->fd.get(), nullptr);
}

void EventLoop::Accept(size_t index) {
  const ListenSocket& l = *listeners_[index];
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    const int fd = accept4(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("accept: {} (file descriptor limit?): not accepting for {} ms", base::ErrnoString(errno),
                     kAcceptPause.count());
        s_->Hit("descriptors");
        PauseAccepting();
      }
      return;
    }
    if (s_->stopping.load()) {
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->unix_socket = l.unix_socket;
    if (l.unix_socket) {
      if (s_->unix_open.fetch_add(1) >= s_->unix_cap.load()) {
        s_->unix_open.fetch_sub(1);
        s_->Hit("max_socket_connections");
        Refuse(fd,
               std::to_string(s_->unix_cap.load()) +
                   " connections are open on the unix socket, the most this daemon serves (max_socket_connections)");
        continue;
      }
      c->cred = CredentialsOf(fd);
      if (!c->cred) {
        s_->unix_open.fetch_sub(1);
        ::close(fd);
        continue;
      }
      c->remote = "unix:uid=" + std::to_string(c->cred->uid);
      if (s_->connections != nullptr) s_->connections->Add({"unix"}, 1);
    } else {
      PeerOf(addr, &c->peer_key, &c->remote);
      if (s_->tcp_open.fetch_add(1) >= s_->tcp_cap.load()) {
        s_->tcp_open.fetch_sub(1);
        s_->Hit("max_connections");
        Refuse(fd, std::to_string(s_->tcp_cap.load()) +
                       " TCP connections are open, the most this daemon serves "
                       "(max_connections); retry later");
        continue;
      }
      bool over = false;
      {
        std::lock_guard<std::mutex> lock(s_->peers_mu);
        size_t& n = s_->peers[c->peer_key];
        if (n >= s_->options.max_connections_per_peer) {
          over = true;
          if (n == 0) s_->peers.erase(c->peer_key);
        } else {
          ++n;
        }
      }
      if (over) {
        s_->tcp_open.fetch_sub(1);
        s_->Hit("max_connections_per_peer");
        Refuse(fd, std::to_string(s_->options.max_connections_per_peer) +
                       " connections from your address are open, the most this daemon serves one address "
                       "(max_connections_per_peer)");
        continue;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (s_->connections != nullptr) s_->connections->Add({"tcp"}, 1);
    }
    c->fd = base::UniqueFd(fd);
    c->io = std::make_unique<Transport>(fd, l.tls ? s_->tls.get() : nullptr);
    const auto now = Clock::now();
    if (l.tls) {
      c->state = ConnState::kHandshake;
      c->deadline = now + s_->options.header_timeout;
    } else {
      c->state = ConnState::kIdle;
      c->deadline = now + s_->options.idle_timeout;
    }
    // Connections go to the loops in turn: one listener wakes one loop per connection (EPOLLEXCLUSIVE), mostly the
    // same one, and the loops run changes of rules themselves (HandleInline), so a loop holding every connection
    // would do all of that work on one thread.
    const size_t n = s_->loops.size();
    EventLoop* to = n > 1 ? s_->loops[s_->next_loop.fetch_add(1, std::memory_order_relaxed) % n] : this;
    if (to == this) {
      Register(std::move(c));
    } else {
      to->mailbox_->Adopt(std::move(c));
    }
  }
}

void EventLoop::Register(std::unique_ptr<Connection> c) {
  c->id = next_id_++;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = c->id;
  c->interest = ev.events;
  c->registered = true;
  Connection& raw = *c;
  conns_.emplace(raw.id, std::move(c));
  if (s_->stopping.load() || epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, raw.fd.get(), &ev) != 0) {
    raw.registered = false;
    Close(raw);
  }
}

void EventLoop::Mailbox::Adopt(std::unique_ptr<Connection> c) {
  std::lock_guard<std::mutex> lock(mu);
  if (loop == nullptr) return;  // stopped: the connection is closed with the server
  adopted.push_back(std::move(c));
  loop->Wake();
}

// ---- Events ----

void EventLoop::OnEvent(Connection& c, uint32_t events) {
  if ((events & EPOLLERR) ||
      ((events & EPOLLHUP) && (!(events & EPOLLIN) || c.state == ConnState::kWaiting || c.state == ConnState::kHeld))) {
    Close(c);  // (waiting for an answer, nothing is read: a hang-up with data left would be reported again and again)
    return;
  }
  if (c.state == ConnState::kHandshake) {
    DoHandshake(c);
  } else {
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && (ReadWanted(c) || c.write_needs_read)) {
      if (c.write_needs_read) {
        c.write_needs_read = false;
        DoWrite(c);
      } else {
        DoRead(c);
      }
    }
    if (!c.closed && (events & EPOLLOUT)) {
      if (c.read_needs_write) {
        c.read_needs_write = false;
        DoRead(c);
      } else {
        DoWrite(c);
      }
    }
  }
  if (c.closed) return;
  Advance(c);
  // TLS: records already decrypted inside OpenSSL do not make the socket readable again.
  for (int i = 0; i < 64 && !c.closed && ReadWanted(c) && c.io->HasPending(); ++i) {
    DoRead(c);
    if (!c.closed) Advance(c);
  }
  if (!c.closed) UpdateInterest(c);
}

bool EventLoop::ReadWanted(const Connection& c) const {
  if (c.read_eof) return false;
  switch (c.state) {
    case ConnState::kIdle:
    case ConnState::kHead:
      return c.in.size() <= s_->limits.max_head_bytes;
    case ConnState::kBody:
      return c.in.size() < kBodyBuffer;
    case ConnState::kStreaming:
    case ConnState::kLinger:
      return true;
    default:
      return false;
  }
}

void EventLoop::UpdateInterest(Connection& c) {
  if (c.away || c.closed) return;  // a worker owns it: out of the epoll set until it comes back
  uint32_t want = 0;
  if (c.state == ConnState::kHandshake) {
    want = c.read_needs_write ? EPOLLOUT : EPOLLIN;
  } else {
    if (ReadWanted(c)) want |= c.read_needs_write ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP);
    if (c.out_sent < c.out.size() && c.state != ConnState::kHeld) want |= c.write_needs_read ? EPOLLIN : EPOLLOUT;
  }
  if (c.registered && want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.id;
  if (epoll_ctl(epoll_.get(), c.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd.get(), &ev) == 0) {
    c.interest = want;
    c.registered = true;
  }
}

void EventLoop::DoHandshake(Connection& c) {
  c.read_needs_write = false;
  const IoResult r = c.io->Handshake();
  switch (r.status) {
    case Io::kOk:
      c.state = ConnState::kIdle;
      c.deadline = Clock::now() + s_->options.idle_timeout;
      DoRead(c);  // the first request may be in the same flight as the handshake's end
      return;
    case Io::kWantRead:
      return;
    case Io::kWantWrite:
      c.read_needs_write = true;
      return;
    case Io::kEof:
    case Io::kError:
      Close(c);
      return;
  }
}

void EventLoop::DoRead(Connection& c) {
  char buf[kReadChunk];
  size_t this_round = 0;
  while (!c.closed && ReadWanted(c) && this_round < 4 * kReadChunk) {
    const bool discard = c.state == ConnState::kStreaming || c.state == ConnState::kLinger;
    size_t room = sizeof(buf);
    if (c.state == ConnState::kIdle || c.state == ConnState::kHead) {
      room = std::min(room, s_->limits.max_head_bytes + 1 - c.in.size());
    } else if (c.state == ConnState::kBody) {
      room = std::min(room, kBodyBuffer - c.in.size());
    }
    const IoResult r = c.io->Read(buf, room);
    switch (r.status) {
      case Io::kOk:
        this_round += r.bytes;
        if (discard) {
          c.lingered += r.bytes;
          if (c.state == ConnState::kLinger && c.lingered > s_->linger_bytes) {
            Close(c);
            return;
          }
        } else {
          c.in.append(buf, r.bytes);
        }
        break;
      case Io::kWantRead:
        return;
      case Io::kWantWrite:
        c.read_needs_write = true;
        return;
      case Io::kEof:
        c.read_eof = true;
        return;
      case Io::kError:
        Close(c);
        return;
    }
  }
}

void EventLoop::DoWrite(Connection& c) {
  bool progress = false;
  while (c.out_sent < c.out.size()) {
    const IoResult r = c.io->Write(c.out.data() + c.out_sent, c.out.size() - c.out_sent);
    if (r.status == Io::kOk) {
      c.out_sent += r.bytes;
      progress = true;
      continue;
    }
    if (r.status == Io::kWantWrite) break;
    if (r.status == Io::kWantRead) {
      c.write_needs_read = true;
      break;
    }
    Close(c);
    return;
  }
  const auto now = Clock::now();
  if (c.out_sent < c.out.size()) {
    if (progress || c.deadline == kNever) c.deadline = now + s_->options.send_timeout;
    return;
  }
  c.out.clear();
  c.out_sent = 0;
  // An idle connection keeps no large buffer (a listing can be megabytes).
  if (c.out.capacity() > 16 * 1024) std::string().swap(c.out);
  OnWritten(c);
}

void EventLoop::OnWritten(Connection& c) {
  const auto now = Clock::now();
  switch (c.state) {
    case ConnState::kWriting:
      if (c.close_after || s_->stopping.load()) {
        if (c.body_unread || !c.in.empty()) {
          StartLinger(c);
        } else {
          Close(c);
        }
        return;
      }
      c.state = ConnState::kIdle;
      c.deadline = now + s_->options.idle_timeout;
      c.request = HttpRequest{};
      c.head = RequestHead{};
      if (c.in.empty()) std::string().swap(c.in);
      // Pipelined requests and bytes buffered inside OpenSSL are taken now (Advance follows in OnEvent or here).
      DoRead(c);
      if (!c.closed) Advance(c);
      if (!c.closed) UpdateInterest(c);
      return;
    case ConnState::kStreaming:
      if (c.stream_done) {
        Close(c);
        return;
      }
      c.deadline = kNever;
      events_pending_.store(true);  // the loop pumps it next (no recursion through DoWrite)
      return;
    default:
      return;
  }
}

// ---- Requests ----

void EventLoop::Advance(Connection& c) {
  for (;;) {
    if (c.closed) return;
    switch (c.state) {
      case ConnState::kIdle:
      case ConnState::kHead: {
        if (s_->stopping.load()) {
          Close(c);
          return;
        }
        size_t skip = 0;  // blank lines before a request line are ignored (RFC 9112 2.2)
        while (c.state == ConnState::kIdle && skip < c.in.size() && (c.in[skip] == '\r' || c.in[skip] == '\n')) ++skip;
        c.in.erase(0, skip);
        if (c.in.empty()) {
          if (c.read_eof) Close(c);
          return;
        }
        if (c.state == ConnState::kIdle) {
          c.state = ConnState::kHead;
          c.deadline = Clock::now() + s_->options.header_timeout;
          c.scan_from = 0;
          c.request_id.clear();  // the previous request's ids are not this one's
          c.admission = Admission{};
        }
        StartRequest(c);
        return;
      }
      case ConnState::kBody: {
        std::optional<HttpProblem> problem;
        const size_t used = c.body.Feed(c.in, &c.request.body, c.admission.max_body_bytes, &problem);
        c.in.erase(0, used);
        if (problem) {
          RespondProblem(c, *problem, problem->status == 413 ? "max_body_bytes" : nullptr);
          return;
        }
        if (c.body.done()) {
          c.body_unread = false;
          Submit(c, Job::kHandle);
          return;
        }
        if (c.read_eof) Close(c);
        return;
      }
      case ConnState::kStreaming:
      case ConnState::kLinger:
        if (c.read_eof) Close(c);
        return;
      default:
        return;
    }
  }
}

// Parses a head from c.in when it is complete (touches nothing but `c`: a loop or the worker owning `c` calls it).
// kWhole: the request and its body (none, or all of it buffered) are ready; kPreflight: the head is, the body is
// not here yet; kProblem: answer *problem and close; kNeedMore: nothing yet.
EventLoop::Prepared EventLoop::Prepare(Connection& c, HttpProblem* problem, const char** limit) {
  *limit = nullptr;
  size_t skip = 0;  // blank lines before a request line are ignored (RFC 9112 2.2)
  while (c.state == ConnState::kIdle && skip < c.in.size() && (c.in[skip] == '\r' || c.in[skip] == '\n')) ++skip;
  c.in.erase(0, skip);
  if (c.in.empty()) return Prepared::kNeedMore;
  const size_t end = FindHeadEnd(c.in, c.scan_from);
  if (end == std::string::npos) {
    if (std::optional<HttpProblem> p = CheckPartialHead(c.in, s_->limits)) {
      *problem = *p;
      *limit = "max_header_bytes";
      return Prepared::kProblem;
    }
    c.scan_from = c.in.size();
    return Prepared::kNeedMore;
  }
  c.head = RequestHead{};
  c.admission = Admission{};
  std::optional<HttpProblem> p = ParseHead(std::string_view(c.in).substr(0, end), s_->limits, &c.head);
  c.request_id = Api::RequestId(c.head.Header("x-request-id"));
  c.in.erase(0, end);
  c.scan_from = 0;
  if (p) {
    *problem = *p;
    *limit = p->status == 431 || p->status == 414 ? "max_header_bytes" : nullptr;
    return Prepared::kProblem;
  }
  if (!Served(c.head.method)) {
    *problem = {400, "method " + c.head.method + " is not served (GET, HEAD, POST, PUT, DELETE, OPTIONS)"};
    return Prepared::kProblem;
  }
  c.request = HttpRequest{};
  c.request.method = c.head.method;
  c.request.path = c.head.path;
  c.request.query = c.head.query;
  c.request.headers = c.head.headers;
  c.request.peer = c.cred;
  c.request.remote = c.remote;
  c.body = BodyDecoder::For(c.head, s_->limits);
  c.body_unread = c.head.has_body();
  c.close_after = !c.head.keep_alive;
  if (!c.head.has_body()) return Prepared::kWhole;
  if (c.head.framing == RequestHead::Framing::kLength && c.in.size() >= c.head.content_length) {
    // The whole body came with the head: no round trip through Preflight first.
    c.request.body = c.in.substr(0, c.head.content_length);
    c.in.erase(0, c.head.content_length);
    c.body_unread = false;
    return Prepared::kWhole;
  }
  return Prepared::kPreflight;
}

// Hands a complete head (and body) on to a worker, or answers the problem.
void EventLoop::StartRequest(Connection& c) {
  HttpProblem problem;
  const char* limit = nullptr;
  switch (Prepare(c, &problem, &limit)) {
    case Prepared::kNeedMore:
      if (c.read_eof) Close(c);  // the client gave up in the middle of a head
      return;
    case Prepared::kProblem:
      c.body_unread = true;  // whatever follows is not trusted to be the next request
      RespondRefusedHead(c, problem, limit);
      return;
    case Prepared::kWhole:
      if (Api::Inline(c.request)) {
        HandleInline(c);
      } else {
        Submit(c, Job::kWhole);
      }
      return;
    case Prepared::kPreflight:
      Submit(c, Job::kPreflight);
      return;
  }
}

void EventLoop::HandleInline(Connection& c) {
  Api* api = s_->api;
  std::optional<HttpResponse> now;
  try {
    Api::Preflighted p = api->Preflight(c.request);
    if (p.response) {
      now = std::move(p.response);
    } else {
      c.admission = std::move(p.admission);
      now = api->HandleAsync(c.request, c.admission, [mailbox = mailbox_, id = c.id](Api::Answer answer) {
        Result r;
        r.conn = id;
        r.answer = std::move(answer);
        mailbox->Post(std::move(r));
      });
    }
  } catch (const std::exception& e) {
    spdlog::error("exception in a request handler: {}", e.what());
    now = ProblemResponse(500, std::string("internal error: ") + e.what(), c.admission.request_id);
    c.close_after = true;
  }
  if (now) {
    Respond(c, *std::move(now));
    return;
  }
  // Nothing more is read until the answer is sent (pipelined requests wait in the socket, in order); a reset is
  // still seen (EPOLLHUP, EPOLLERR) and closes the connection, and the answer is then dropped.
  c.state = ConnState::kWaiting;
  c.deadline = kNever;
}

void EventLoop::Submit(Connection& c, Job job) {
  c.state = ConnState::kWorking;
  c.deadline = kNever;
  // The worker owns the connection from here until its Result: out of the epoll set, so that no event of it reaches
  // the loop meanwhile (a hang-up is found by the worker's own reads and writes).
  if (c.registered) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  c.registered = false;
  c.interest = 0;
  c.away = true;
  WorkerPool& pool = c.unix_socket ? *s_->unix_workers : *s_->tcp_workers;
  Connection* owned = &c;
  if (!pool.Submit([this, owned, job] { Deliver(RunAway(*owned, job)); })) {
    c.away = false;
    Close(c);
  }
}

void EventLoop::OnResult(Result r) {
  auto it = conns_.find(r.conn);
  if (it == conns_.end() || it->second->closed) return;
  Connection& c = *it->second;
  c.away = false;
  const auto now = Clock::now();
  if (c.broken) {
    Close(c);
    return;
  }
  if (r.answer) {
    if (c.state != ConnState::kWaiting) {
      Close(c);  // not waiting for an answer: never happens
      return;
    }
    HttpResponse response;
    try {
      response = r.answer();
    } catch (const std::exception& e) {
      spdlog::error("exception making an answer: {}", e.what());
      response = ProblemResponse(500, std::string("internal error: ") + e.what(), c.admission.request_id);
      c.close_after = true;
    }
    Respond(c, std::move(response));
    if (!c.closed) UpdateInterest(c);
    return;
  }
  if (c.inline_ready) {
    // A worker answered a request and parsed the next one, which the loop runs itself.
    c.inline_ready = false;
    HandleInline(c);
    if (!c.closed) UpdateInterest(c);
    return;
  }
  if (r.stream || r.held) {
    Respond(c, std::move(r.response));
  } else {
    switch (c.state) {
      case ConnState::kBody:  // admitted; the rest of the body is to come
        c.deadline = now + s_->options.body_timeout;
        if (c.out_sent < c.out.size()) DoWrite(c);  // a 100 Continue
        if (!c.closed) Advance(c);
        if (!c.closed && ReadWanted(c)) DoRead(c);
        if (!c.closed) Advance(c);
        break;
      case ConnState::kWriting:
        if (c.out_sent < c.out.size()) {
          c.deadline = now + s_->options.send_timeout;
        } else {
          OnWritten(c);  // answered: close, linger, or wait for the next request
        }
        break;
      case ConnState::kIdle:  // answered, kept alive; maybe with bytes of the next request
        c.deadline = now + s_->options.idle_timeout;
        if (c.read_eof && c.in.empty()) {
          Close(c);
          break;
        }
        Advance(c);
        if (!c.closed && ReadWanted(c)) DoRead(c);
        if (!c.closed) Advance(c);
        break;
      default:
        Close(c);
        break;
    }
  }
  if (!c.closed) UpdateInterest(c);
}

void EventLoop::Serialize(Connection& c, HttpResponse response) {
  const bool head_only = c.head.method == "HEAD";
  const bool http10 = c.head.minor_version == 0;
  response.events.reset();
  const bool keep = !c.close_after && !c.body_unread && !c.read_eof && !s_->stopping.load();
  c.close_after = !keep;
  c.state = ConnState::kWriting;
  c.out += SerializeResponse(response, {.head_only = head_only, .keep_alive = keep, .http10 = http10});
}

void EventLoop::Respond(Connection& c, HttpResponse response) {
  const bool head_only = c.head.method == "HEAD";
  const bool http10 = c.head.minor_version == 0;
  if (response.events && !head_only && response.status == 200) {
    c.state = ConnState::kStreaming;
    c.stream = std::move(response.events);
    c.stream_chunked = !http10;
    c.out += SerializeStreamHead(response, http10);
    // A stalled client holds at most this much in the kernel; the rest waits in the bus, which cuts it.
    setsockopt(c.fd.get(), SOL_SOCKET, SO_SNDBUF, &kStreamSendBuffer, sizeof(kStreamSendBuffer));
    c.stream->SetWaker([this] {
      events_pending_.store(true);
      Wake();
    });
    if (s_->streams != nullptr) s_->streams->Add({}, 1);
    c.next_keepalive = Clock::now() + s_->options.sse_keepalive;
    c.deadline = Clock::now() + s_->options.send_timeout;
    PumpStream(c);
    return;
  }
  if (response.hold.count() > 0) {
    // Sent when the hold is over (CheckTimers), then the connection is closed; meanwhile the client's next
    // request is not read (nor what is left of this one's body).
    c.close_after = true;
    const auto hold = response.hold;
    Serialize(c, std::move(response));
    c.state = ConnState::kHeld;
    c.deadline = Clock::now() + hold;
    return;
  }
  Serialize(c, std::move(response));
  c.deadline = Clock::now() + s_->options.send_timeout;
  DoWrite(c);
}

// ---- The worker's side: it owns the connection (Connection::away) ----

EventLoop::Result EventLoop::RunAway(Connection& c, Job job) {
  Result r;
  r.conn = c.id;
  for (;;) {
    HttpResponse response;
    if (!Compute(c, job, &response)) return r;  // admitted; the body is still on its way (kBody)
    if (response.events && c.head.method != "HEAD" && response.status == 200) {
      r.stream = true;  // event streams are the loop's
      r.response = std::move(response);
      return r;
    }
    if (response.hold.count() > 0) {
      r.held = true;  // the loop waits out the hold, not a worker
      r.response = std::move(response);
      return r;
    }
    Serialize(c, std::move(response));
    WriteDirect(c);
    if (c.broken || c.out_sent < c.out.size() || c.close_after || s_->stopping.load()) return r;
    // Answered and kept alive: the next request, if the client sends it right away, is this worker's too.
    c.out.clear();
    c.out_sent = 0;
    if (c.out.capacity() > 16 * 1024) std::string().swap(c.out);
    c.state = ConnState::kIdle;
    c.request = HttpRequest{};
    c.head = RequestHead{};
    c.scan_from = 0;
    c.request_id.clear();
    c.admission = Admission{};
    if (!ReadAhead(c)) return r;
    HttpProblem problem;
    const char* limit = nullptr;
    switch (Prepare(c, &problem, &limit)) {
      case Prepared::kNeedMore:
        return r;  // the loop waits for the rest (and applies header_timeout)
      case Prepared::kProblem:
        if (limit != nullptr) s_->Hit(limit);
        c.body_unread = true;
        if (std::optional<HttpResponse> held = ChargeRefusedHead(c, problem)) {
          c.close_after = true;
          r.held = true;  // the loop waits out the hold
          r.response = *std::move(held);
          return r;
        }
        Serialize(c, ProblemResponse(problem.status, problem.message, c.request_id));
        WriteDirect(c);
        return r;
      case Prepared::kWhole:
        if (Api::Inline(c.request)) {
          // Not this worker's to wait for: the loop runs it (the request stays parsed in `c`).
          c.inline_ready = true;
          return r;
        }
        job = Job::kWhole;
        break;
      case Prepared::kPreflight:
        job = Job::kPreflight;
        break;
    }
  }
}

bool EventLoop::Compute(Connection& c, Job job, HttpResponse* response) {
  Api* api = s_->api;
  try {
    if (job == Job::kHandle) {
      *response = api->Handle(c.request, c.admission);
      return true;
    }
    Api::Preflighted p = api->Preflight(c.request);
    if (p.response) {
      *response = *std::move(p.response);
      return true;
    }
    c.admission = std::move(p.admission);
    if (job == Job::kWhole || c.admission.max_body_bytes == 0) {
      // kWhole: the body (if any) is here. max_body_bytes 0: a body the route does not take (GET) is not read; the
      // connection closes after the answer.
      *response = api->Handle(c.request, c.admission);
      return true;
    }
    if (c.head.expect_continue) c.out += "HTTP/1.1 100 Continue\r\n\r\n";
    c.state = ConnState::kBody;
    if (!c.out.empty()) {
      WriteDirect(c);
      if (c.broken) return false;
    }
    // Usually the body followed the head at once: take what is there without waiting.
    std::optional<HttpProblem> problem;
    char buf[kReadChunk];
    for (;;) {
      const size_t used = c.body.Feed(c.in, &c.request.body, c.admission.max_body_bytes, &problem);
      c.in.erase(0, used);
      if (problem) {
        if (problem->status == 413) s_->Hit("max_body_bytes");
        *response = ProblemResponse(problem->status, problem->message, c.admission.request_id);
        return true;  // body_unread stays: the connection closes after the answer
      }
      if (c.body.done()) {
        c.body_unread = false;
        *response = api->Handle(c.request, c.admission);
        return true;
      }
      if (c.read_eof || c.out_sent < c.out.size() || c.in.size() >= kBodyBuffer) return false;
      const IoResult got = c.io->Read(buf, std::min(sizeof(buf), kBodyBuffer - c.in.size()));
      if (got.status == Io::kOk) {
        c.in.append(buf, got.bytes);
        continue;
      }
      if (got.status == Io::kEof) c.read_eof = true;
      if (got.status == Io::kError) c.broken = true;
      if (got.status == Io::kWantWrite) c.read_needs_write = true;
      return false;
    }
  } catch (const std::exception& e) {
    spdlog::error("exception in a request handler: {}", e.what());
    *response = ProblemResponse(500, std::string("internal error: ") + e.what(), c.admission.request_id);
    c.close_after = true;
    return true;
  }
}

void EventLoop::WriteDirect(Connection& c) {
  while (c.out_sent < c.out.size()) {
    const IoResult w = c.io->Write(c.out.data() + c.out_sent, c.out.size() - c.out_sent);
    if (w.status == Io::kOk) {
      c.out_sent += w.bytes;
      continue;
    }
    if (w.status == Io::kWantRead) c.write_needs_read = true;
    if (w.status == Io::kError || w.status == Io::kEof) c.broken = true;
    return;
  }
}

bool EventLoop::ReadAhead(Connection& c) {
  if (!c.in.empty()) return true;  // pipelined
  if (s_->stopping.load() || c.read_eof) return false;
  if (!c.io->HasPending()) {
    pollfd p{c.fd.get(), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(kReadAhead.count())) <= 0) return false;
  }
  char buf[kReadChunk];
  while (c.in.size() <= s_->limits.max_head_bytes) {
    const IoResult got = c.io->Read(buf, std::min(sizeof(buf), s_->limits.max_head_bytes + 1 - c.in.size()));
    if (got.status == Io::kOk) {
      c.in.append(buf, got.bytes);
      continue;
    }
    if (got.status == Io::kEof) c.read_eof = true;
    if (got.status == Io::kError) c.broken = true;
    if (got.status == Io::kWantWrite) c.read_needs_write = true;
    break;
  }
  return !c.broken && !c.in.empty();
}

void EventLoop::RespondProblem(Connection& c, const HttpProblem& problem, const char* limit) {
  if (limit != nullptr) s_->Hit(limit);
  spdlog::debug("{} HTTP {}: {}", c.remote, problem.status, problem.message);
  c.close_after = true;
  c.body_unread = true;
  const std::string id = c.admission.request_id.empty() ? c.request_id : c.admission.request_id;
  Respond(c, ProblemResponse(problem.status, problem.message, id));
}

std::optional<HttpResponse> EventLoop::ChargeRefusedHead(const Connection& c, const HttpProblem& problem) {
  if (c.unix_socket) return std::nullopt;
  const std::string id = c.request_id.empty() ? Api::RequestId("") : c.request_id;
  try {
    return s_->api->ChargeRefusedHead(c.remote, "HTTP " + std::to_string(problem.status) + ": " + problem.message, id);
  } catch (const std::exception& e) {
    spdlog::error("exception charging a refused head: {}", e.what());
    return std::nullopt;
  }
}

void EventLoop::RespondRefusedHead(Connection& c, const HttpProblem& problem, const char* limit) {
  std::optional<HttpResponse> held = ChargeRefusedHead(c, problem);
  if (!held) {
    RespondProblem(c, problem, limit);
    return;
  }
  if (limit != nullptr) s_->Hit(limit);
  spdlog::debug("{} HTTP {}: {} (held: past its budget of failed authentications)", c.remote, problem.status,
                problem.message);
  c.close_after = true;
  c.body_unread = true;
  Respond(c, *std::move(held));
}

void EventLoop::PumpStream(Connection& c) {
  if (!c.stream || c.stream_done) return;
  if (c.out_sent < c.out.size() && !c.stream->cut()) return;  // the socket first
  std::string data;
  const auto state = c.stream->Read(kStreamRead, &data);
  const auto now = Clock::now();
  if (!data.empty()) {
    c.out += c.stream_chunked ? Chunk(data) : data;
    c.next_keepalive = now + s_->options.sse_keepalive;
  }
  if (state != service::EventBus::Subscription::kOpen) {
    if (state == service::EventBus::Subscription::kCut && !c.stream_cut_here) s_->Hit("event_buffer_bytes");
    if (c.stream_chunked) c.out += Chunk("");
    c.stream_done = true;
    c.stream.reset();
    if (s_->streams != nullptr) s_->streams->Add({}, -1);
  }
  if (c.out_sent < c.out.size()) {
    // The end of a stream (its notice) gets a send_timeout of its own; otherwise the clock runs from the last
    // progress.
    if (c.deadline == kNever || c.stream_done) c.deadline = now + s_->options.send_timeout;
    DoWrite(c);
  } else if (c.stream_done) {
    Close(c);
  }
}

void EventLoop::StartLinger(Connection& c) {
  c.io->ShutdownWrite();
  c.state = ConnState::kLinger;
  c.deadline = Clock::now() + kLingerTime;
  c.lingered = c.in.size();
  std::string().swap(c.in);
  c.request = HttpRequest{};
  if (c.read_eof) Close(c);
}

void EventLoop::CheckTimers() {
  s_->RefreshCaps();
  const auto now = Clock::now();
  if (accepting_paused_ && now >= accept_resume_ && !s_->stopping.load()) {
    accepting_paused_ = false;
    for (size_t i = 0; i < listeners_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      ev.data.u64 = i + 1;
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listeners_[i]->fd.get(), &ev);
    }
  }
  for (auto& [id, ptr] : conns_) {
    Connection& c = *ptr;
    if (c.closed || c.away) continue;
    if (c.state == ConnState::kStreaming && c.out_sent >= c.out.size() && now >= c.next_keepalive) {
      c.out += c.stream_chunked ? Chunk(": keep-alive\n\n") : std::string(": keep-alive\n\n");
      c.next_keepalive = now + s_->options.sse_keepalive;
      c.deadline = now + s_->options.send_timeout;
      DoWrite(c);
      if (!c.closed) UpdateInterest(c);
      continue;
    }
    if (now < c.deadline) continue;
    switch (c.state) {
      case ConnState::kHandshake:
        s_->Hit("header_timeout");
        Close(c);
        break;
      case ConnState::kIdle:
        Close(c);
        break;
      case ConnState::kHead:
        RespondRefusedHead(c, {408, "the request head did not arrive within " + Seconds(s_->options.header_timeout)},
                           "header_timeout");
        break;
      case ConnState::kBody:
        RespondProblem(c, {408, "the request body did not arrive within " + Seconds(s_->options.body_timeout)},
                       "body_timeout");
        break;
      case ConnState::kStreaming:
        if (!c.stream) {
          Close(c);  // the end of a stream (a notice) was not read either: counted when the stream was cut
          break;
        }
        s_->Hit("send_timeout");
        {
          // A live stream the client stopped reading: it is cut, and the notice gets its own send_timeout.
          c.stream_cut_here = true;
          c.stream->Cut("it accepted no data for " + Seconds(s_->options.send_timeout));
          c.deadline = now + s_->options.send_timeout;
          PumpStream(c);
        }
        break;
      case ConnState::kWriting:
        s_->Hit("send_timeout");
        Close(c);
        break;
      case ConnState::kHeld:
        c.state = ConnState::kWriting;
        c.deadline = now + s_->options.send_timeout;
        DoWrite(c);
        break;
      case ConnState::kLinger:
        Close(c);
        break;
      case ConnState::kWorking:
      case ConnState::kWaiting:
        break;
    }
    if (!c.closed && !c.away) UpdateInterest(c);
  }
}

void EventLoop::BeginStop() {
  stop_begun_ = true;
  stop_deadline_ = Clock::now() + kStopGrace;
  for (const ListenSocket* l : listeners_) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, l->fd.get(), nullptr);
  for (auto& [id, c] : conns_) {
    if (c->closed) continue;
    if (c->away) continue;  // its worker answers and hands it back (then it is closed)
    switch (c->state) {
      case ConnState::kWriting:
        c->close_after = true;  // answer, then close
        break;
      case ConnState::kWaiting:
        break;  // answered (and then closed) if the answer comes within the grace; closed with the rest if not
      default:
        Close(*c);
    }
  }
}

void EventLoop::Close(Connection& c) {
  if (c.closed) return;
  c.closed = true;
  closed_.push_back(c.id);
  if (c.stream) {
    c.stream.reset();
    if (s_->streams != nullptr) s_->streams->Add({}, -1);
  }
  c.io.reset();
  c.fd.reset();  // also leaves the epoll set
  c.registered = false;
  if (c.unix_socket) {
    s_->unix_open.fetch_sub(1);
    if (s_->connections != nullptr) s_->connections->Add({"unix"}, -1);
  } else {
    s_->tcp_open.fetch_sub(1);
    {
      std::lock_guard<std::mutex> lock(s_->peers_mu);
      auto it = s_->peers.find(c.peer_key);
      if (it != s_->peers.end() && --it->second == 0) s_->peers.erase(it);
    }
    if (s_->connections != nullptr) s_->connections->Add({"tcp"}, -1);
  }
  std::string().swap(c.in);
  std::string().swap(c.out);
}

}  // namespace iptkit::rest::http
