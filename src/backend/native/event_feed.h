// EventFeed: what changed in nf_tables, from the kernel's own change notifications (the NFNLGRP_NFTABLES multicast
// group of NETLINK_NETFILTER, the stream `nft monitor` prints), so that a long-lived NativeBackend keeps its snapshot
// without asking the kernel per batch whether anything changed.
//
// Every nf_tables transaction that changes something ends with an NFT_MSG_NEWGEN notification carrying the new
// generation id (nf_tables_api.c nf_tables_commit → nf_tables_gen_notify); the notifications of its tables, chains,
// rules, sets and elements come before it, in one run (commits are serialized by the commit mutex). The feed groups
// them by that generation and, per tracked family (ip / ip6), records what a transaction of another writer (one not
// committed through the backend's own socket) newer than the family's snapshot did to each table it touched: when it
// only added and deleted rules there (NFT_MSG_NEWRULE / NFT_MSG_DELRULE, at most kMaxRuleMessages of them), the
// rule messages themselves, for the backend to apply to its snapshot ("pending", in commit order); otherwise
// (chains, policies, sets, the table itself) the table is "dirty" and the backend reads it again (only it). A
// snapshot then stays exact as long as every transaction after it was seen:
//  - the receive queue overflowed (ENOBUFS: notifications were dropped), or a generation id was skipped: the
//    family's snapshot is "lost" (the backend reads the whole family again);
//  - a notification without a table name (none is known to exist) makes the family lost too.
// The kernel bumps the generation id before it queues the transaction's notifications, so a snapshot read at
// generation G is only current once the NEWGEN of G was read here (CaughtUp / WaitFor).
// Thread-safety: one thread at a time (the backend's).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto feed, EventFeed::Open(netns_fd, /*rcvbuf=*/0));
//   feed->Track(Family::kIPv4, snapshot_generation);
//   IPTKIT_RETURN_IF_ERROR(feed->Drain());
//   EventFeed::Changes c = feed->Take(Family::kIPv4);   // c.lost, c.dirty = {"filter"}
#ifndef IPTKIT_SRC_BACKEND_NATIVE_EVENT_FEED_H_
#define IPTKIT_SRC_BACKEND_NATIVE_EVENT_FEED_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/nft/netlink_client.h"

struct mnl_socket;
struct nlmsghdr;

namespace iptkit::backend::native {

class EventFeed {
 public:
  // The receive queue a feed asks for by default: the kernel's default (about 208 KiB) overflows after a few hundred
  // one-rule transactions of another writer between two reads (each costs a rule notification and a NEWGEN, about
  // 600 bytes of queue with their skb overhead), and every overflow costs a read of the whole family. 16 MiB, what
  // `nft monitor` asks for (nftables' NFTABLES_NLEVENT_BUFSIZ), holds tens of thousands. It is a limit, not an
  // allocation: the queue holds only what is unread. SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it SO_RCVBUF
  // (capped by net.core.rmem_max) is used.
  static constexpr int kDefaultReceiveQueue = 16 << 20;
  // A NETLINK_NETFILTER socket in the namespace `netns_fd` (-1: the caller's), subscribed to NFNLGRP_NFTABLES,
  // non-blocking. `rcvbuf` > 0 sets its receive buffer (SO_RCVBUFFORCE; tests use a small one to force overflows),
  // 0 sets kDefaultReceiveQueue. Also reads the current generation id: transactions up to it are not expected.
  // `netlink` (the backend's request socket) reads that id after the subscription.
  static Result<std::unique_ptr<EventFeed>> Open(int netns_fd, int rcvbuf, nft::NetlinkClient& netlink);
  ~EventFeed();
  EventFeed(const EventFeed&) = delete;
  EventFeed& operator=(const EventFeed&) = delete;

  // Reads every queued notification without waiting. An error is the socket's own (not an overflow).
  Status Drain();
  // Whether the NEWGEN of generation `gen` (or a later one) was read, and no transaction is half read.
  bool CaughtUp(uint32_t gen) const;
  // Drains, waiting up to `timeout` for CaughtUp(gen). false on timeout or a socket error.
  bool WaitFor(uint32_t gen, std::chrono::milliseconds timeout);
  // The newest generation whose NEWGEN was read (or the id read at Open).
  uint32_t seen() const { return seen_; }

  // After notifications were lost: forget what was read of the transaction in progress, take `gen` (read from the
  // kernel after a Drain) as the newest generation, and mark every family lost (each is read whole before use).
  void Rebase(uint32_t gen);

  // Starts (or restarts) following `family` for a snapshot that holds every change through generation `valid`.
  void Track(Family family, uint32_t valid);
  void Forget(Family family) { families_.erase(family); }
  bool tracked(Family family) const { return families_.count(family) != 0; }
  // The generation the family's snapshot holds every change through (0 when not tracked).
  uint32_t valid(Family family) const {
    auto it = families_.find(family);
    return it == families_.end() ? 0 : it->second.valid;
  }
  // The snapshot moved to `valid` by the backend's own doing (its commit, or every change through `valid` applied):
  // transactions up to it are no longer news. Per-table generations are dropped.
  void Advance(Family family, uint32_t valid);
  // Table `table` of `family` was read again at generation `gen`: transactions up to `gen` are in it.
  void TableRead(Family family, const std::string& table, uint32_t gen);
  // The newest generation a table of `family` was read at (0: none since Track/Advance).
  uint32_t NewestTableRead(Family family) const;

  // A transaction's rule changes in one table, as the kernel notified them (whole netlink messages, in order).
  struct RuleChanges {
    uint32_t generation = 0;
    std::string table;
    std::vector<std::string> messages;  // NFT_MSG_NEWRULE / NFT_MSG_DELRULE
  };
  // More rule messages than this in one table of one transaction (a flush of a long chain) make the table dirty:
  // reading it again is then about as cheap as applying them one by one (applying a message is a rule decoded or
  // found by handle, tens of microseconds; reading 10,000 rules again is about 100 ms, and a table of a few hundred
  // rules is read in a few ms). A transaction of 100 deletions, which a program deleting its rules in one
  // transaction makes, is applied.
  static constexpr size_t kMaxRuleMessages = 512;
  // More rule messages than this waiting in one family (many transactions between two uses of the snapshot) make
  // the tables they are for dirty: what the feed keeps stays bounded (a message is a few hundred bytes).
  static constexpr size_t kMaxPendingMessages = 16384;
  struct Changes {
    bool lost = false;            // the family must be read whole (overflow, skipped generation)
    std::set<std::string> dirty;  // tables changed by transactions the snapshot does not hold, beyond rules
    // Rule-only changes of tables not in `dirty`, in commit order: the snapshot is current once they are applied.
    std::vector<RuleChanges> pending;
    size_t pending_messages = 0;  // in `pending`
  };
  // Whether notifications the family's snapshot depends on were lost (Take would say so).
  bool lost(Family family) const {
    auto it = families_.find(family);
    return it == families_.end() || it->second.changes.lost;
  }
  // What was recorded for `family` since the last Take (then cleared).
  Changes Take(Family family);

  // Counters (tests, benchmarks).
  uint64_t overflows() const { return overflows_; }
  uint64_t gaps() const { return gaps_; }
  uint64_t notifications() const { return notifications_; }
  // The notification socket (tests read its options).
  int fd() const;

 private:
  EventFeed(mnl_socket* socket, uint32_t own_portid);
  void OnMessage(const nlmsghdr* nlh);
  void LoseAll();

  struct FamilyState {
    uint32_t valid = 0;
    std::map<std::string, uint32_t> table_valid;
    Changes changes;
  };

  mnl_socket* socket_;
  // The backend's request socket: transactions it committed (their notifications carry its port id) are never
  // news, whatever the snapshot's generation (the backend applied them to it in place).
  uint32_t own_portid_;
  uint32_t seen_;
  std::map<Family, FamilyState> families_;
  // The transaction being read (notifications since the last NEWGEN): (family, table).
  std::vector<std::pair<Family, std::string>> open_;
  bool open_lost_ = false;  // a notification of it named no table
  // Its rule messages per (family, table) of tracked families, and the tables it changed beyond rules (or with
  // more than kMaxRuleMessages of them).
  std::map<std::pair<Family, std::string>, std::vector<std::string>> open_rules_;
  std::set<std::pair<Family, std::string>> open_other_;
  std::vector<char> buf_;
  uint64_t overflows_ = 0;
  uint64_t gaps_ = 0;
  uint64_t notifications_ = 0;
};

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_EVENT_FEED_H_
