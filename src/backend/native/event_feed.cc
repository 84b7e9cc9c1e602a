#include "src/backend/native/event_feed.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "src/base/errno_status.h"
#include "src/base/netns.h"

namespace iptkit::backend::native {
namespace {

constexpr size_t kRecvBuffer = 64 * 1024;

std::optional<Family> FamilyOf(uint8_t nfproto) {
  if (nfproto == NFPROTO_IPV4) return Family::kIPv4;
  if (nfproto == NFPROTO_IPV6) return Family::kIPv6;
  return std::nullopt;  // inet, arp, bridge, netdev: never iptables-nft's tables
}

// The attribute of `type` at the top level of an nfnetlink message, or nullptr.
const nlattr* TopAttr(const nlmsghdr* nlh, uint16_t type) {
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  int remaining = static_cast<int>(end - start);
  for (const nlattr* a = reinterpret_cast<const nlattr*>(start); mnl_attr_ok(a, remaining);
       remaining -= static_cast<int>(MNL_ALIGN(a->nla_len)), a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == type) return a;
  }
  return nullptr;
}

// Generation ids wrap (nf_tables_commit skips 0); "a after b" within half the range.
bool After(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

}  // namespace

EventFeed::EventFeed(mnl_socket* socket, uint32_t own_portid)
    : socket_(socket), own_portid_(own_portid), seen_(0), buf_(kRecvBuffer) {}

EventFeed::~EventFeed() { mnl_socket_close(socket_); }

int EventFeed::fd() const { return mnl_socket_get_fd(socket_); }

Result<std::unique_ptr<EventFeed>> EventFeed::Open(int netns_fd, int rcvbuf, nft::NetlinkClient& netlink) {
  mnl_socket* socket = nullptr;
  Status status = base::RunInNetnsThread(
      netns_fd,
      [&]() -> Status {
        socket = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (socket == nullptr) return base::ErrnoToStatus(errno, "socket(AF_NETLINK, NETLINK_NETFILTER)");
        Status s = Status::Ok();
        const int fd = mnl_socket_get_fd(socket);
        if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
          s = base::ErrnoToStatus(errno, "setsockopt SO_RCVBUFFORCE on the nf_tables event socket");
        } else if (rcvbuf <= 0) {
          const int queue = kDefaultReceiveQueue;
          if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &queue, sizeof(queue)) != 0 &&
              setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &queue, sizeof(queue)) != 0) {
            s = base::ErrnoToStatus(errno, "setsockopt SO_RCVBUF on the nf_tables event socket");
          }
        }
        if (s.ok() && mnl_socket_bind(socket, 1u << (NFNLGRP_NFTABLES - 1), MNL_SOCKET_AUTOPID) < 0) {
          s = base::ErrnoToStatus(errno, "bind the nf_tables event socket to NFNLGRP_NFTABLES");
        }
        if (!s.ok()) {
          mnl_socket_close(socket);
          socket = nullptr;
        }
        return s;
      },
      "opening the nf_tables event socket");
  if (!status.ok()) return status;
  std::unique_ptr<EventFeed> feed(new EventFeed(socket, netlink.portid()));
  // Subscribed first, then the id: every transaction after it is seen.
  IPTKIT_ASSIGN_OR_RETURN(feed->seen_, netlink.GenerationId());
  return feed;
}

void EventFeed::LoseAll() {
  for (auto& [family, st] : families_) st.changes.lost = true;
  open_.clear();
  open_lost_ = false;
  open_rules_.clear();
  open_other_.clear();
}

void EventFeed::OnMessage(const nlmsghdr* nlh) {
  if (nlh->nlmsg_type == NLMSG_ERROR || nlh->nlmsg_type == NLMSG_DONE) return;
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) return;
  if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return;
  ++notifications_;
  const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  const uint16_t type = NFNL_MSG_TYPE(nlh->nlmsg_type);
  if (type == NFT_MSG_NEWGEN) {
    const nlattr* id = TopAttr(nlh, NFTA_GEN_ID);
    if (id == nullptr || mnl_attr_get_payload_len(id) != 4) {
      ++gaps_;
      LoseAll();
      return;
    }
    const uint32_t gen = ntohl(mnl_attr_get_u32(id));
    uint32_t expected = seen_ + 1;
    if (expected == 0) expected = 1;
    if (gen != expected && After(gen, seen_)) {
      ++gaps_;  // a transaction whose notifications never came
      LoseAll();
    }
    // nf_tables_gen_notify addresses NEWGEN to the committing socket's port id (nlmsg_pid).
    const bool own = own_portid_ != 0 && nlh->nlmsg_pid == own_portid_;
    std::set<std::pair<Family, std::string>> done;  // a table the transaction came back to is listed again
    for (const auto& [family, table] : open_) {
      if (own) break;
      auto it = families_.find(family);
      if (it == families_.end() || !done.insert({family, table}).second) continue;
      FamilyState& st = it->second;
      uint32_t valid = st.valid;
      if (auto t = st.table_valid.find(table); t != st.table_valid.end() && After(t->second, valid)) valid = t->second;
      if (!After(gen, valid) || st.changes.dirty.count(table)) continue;
      auto rules = open_rules_.find({family, table});
      if (open_other_.count({family, table}) || rules == open_rules_.end() ||
          st.changes.pending_messages + rules->second.size() > kMaxPendingMessages) {
        st.changes.dirty.insert(table);
        std::erase_if(st.changes.pending, [&](const RuleChanges& c) {
          if (c.table != table) return false;
          st.changes.pending_messages -= c.messages.size();
          return true;
        });
      } else {
        st.changes.pending_messages += rules->second.size();
        st.changes.pending.push_back(RuleChanges{gen, table, std::move(rules->second)});
        open_rules_.erase(rules);
      }
    }
    if (open_lost_) {
      for (auto& [family, st] : families_) {
        if (After(gen, st.valid)) st.changes.lost = true;
      }
    }
    open_.clear();
    open_lost_ = false;
    open_rules_.clear();
    open_other_.clear();
    if (After(gen, seen_)) seen_ = gen;
    return;
  }
  std::optional<Family> family = FamilyOf(nfg->nfgen_family);
  if (!family) return;
  // Attribute 1 names the table in every nf_tables object message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
  // NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
  const nlattr* table = TopAttr(nlh, 1);
  if (table == nullptr || mnl_attr_validate(table, MNL_TYPE_NUL_STRING) < 0) {
    open_lost_ = true;
    return;
  }
  std::string name = mnl_attr_get_str(table);
  if (families_.count(*family)) {
    std::pair<Family, std::string> key{*family, name};
    if (open_other_.count(key) == 0) {
      std::vector<std::string>& rules = open_rules_[key];
      if ((type == NFT_MSG_NEWRULE || type == NFT_MSG_DELRULE) && rules.size() < kMaxRuleMessages) {
        rules.emplace_back(reinterpret_cast<const char*>(nlh), nlh->nlmsg_len);
      } else {
        open_rules_.erase(key);
        open_other_.insert(std::move(key));
      }
    }
  }
  if (open_.empty() || open_.back().first != *family || open_.back().second != name) {
    open_.emplace_back(*family, std::move(name));
  }
}

Status EventFeed::Drain() {
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(socket_, buf_.data(), buf_.size());
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::Ok();
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // notifications were dropped: nothing after the last NEWGEN can be trusted
        ++overflows_;
        LoseAll();
        continue;
      }
      return base::ErrnoToStatus(errno, "reading nf_tables notifications");
    }
    int remaining = static_cast<int>(n);
    for (const nlmsghdr* nlh = reinterpret_cast<const nlmsghdr*>(buf_.data()); mnl_nlmsg_ok(nlh, remaining);
         nlh = mnl_nlmsg_next(nlh, &remaining)) {
      OnMessage(nlh);
    }
  }
}

bool EventFeed::CaughtUp(uint32_t gen) const { return open_.empty() && !open_lost_ && !After(gen, seen_); }

bool EventFeed::WaitFor(uint32_t gen, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (!Drain().ok()) return false;
    if (CaughtUp(gen)) return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{mnl_socket_get_fd(socket_), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 50)));
  }
}

void EventFeed::Rebase(uint32_t gen) {
  LoseAll();
  seen_ = gen;
}

void EventFeed::Track(Family family, uint32_t valid) { families_[family] = FamilyState{valid, {}, {}}; }

void EventFeed::Advance(Family family, uint32_t valid) {
  FamilyState& st = families_[family];
  st.valid = valid;
  st.table_valid.clear();
}

void EventFeed::TableRead(Family family, const std::string& table, uint32_t gen) {
  families_[family].table_valid[table] = gen;
}

uint32_t EventFeed::NewestTableRead(Family family) const {
  auto it = families_.find(family);
  if (it == families_.end()) return 0;
  uint32_t newest = 0;
  for (const auto& [table, gen] : it->second.table_valid) {
    if (newest == 0 || After(gen, newest)) newest = gen;
  }
  return newest;
}

EventFeed::Changes EventFeed::Take(Family family) {
  auto it = families_.find(family);
  if (it == families_.end()) return Changes{true, {}, {}, 0};
  Changes out = std::move(it->second.changes);
  it->second.changes = Changes{};
  return out;
}

}  // namespace iptkit::backend::native
