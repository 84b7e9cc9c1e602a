// NetlinkClient: a small native nf_tables client (libmnl + libnftnl) for what the restore backend needs from the
// kernel on iptables-nft without spawning `nft`: the ruleset generation id, and per (table, chain) the rule count
// and whether a rule uses an expression iptables-nft does not create (docs/architecture.md §3: iptables-nft-save can be
// lossy without an error, e.g. `ip saddr { 1.1.1.1, 2.2.2.2 } accept` prints as `-A INPUT -j ACCEPT`).
//
// The socket is opened once, inside the backend's network namespace (by a short-lived thread that setns()'s
// first: a socket keeps the namespace it was created in), and kept for the client's lifetime (closing a
// netfilter socket can wait for an RCU grace period, docs/architecture.md §3).
// Thread-safety: one thread at a time (like every Backend).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto nl, nft::NetlinkClient::Open(netns_fd));
//   IPTKIT_ASSIGN_OR_RETURN(uint32_t gen, nl->GenerationId());
//   IPTKIT_ASSIGN_OR_RETURN(nft::KernelView view, nl->Dump(Family::kIPv4, std::string("filter")));
#ifndef IPTKIT_SRC_BACKEND_NFT_NETLINK_CLIENT_H_
#define IPTKIT_SRC_BACKEND_NFT_NETLINK_CLIENT_H_

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

struct mnl_socket;

namespace iptkit::backend::nft {

// One rule as the kernel holds it (Dump with rule_forms).
struct KernelRule {
  uint64_t handle = 0;
  // The rule's kernel form: its expressions (NFTA_RULE_EXPRESSIONS) and user data (NFTA_RULE_USERDATA: the comment
  // iptables-nft stores there), normalized so that equal forms are the same kernel rule wherever it sits: counter
  // values are zeroed, and so are the ipset indexes in the xt set match / SET target (an index names a set only
  // within one network namespace). What iptables-nft -C/-D compare, and what decides whether a printed rule is
  // lossy (restore_backend.h).
  std::string form;
  std::string lossy;  // LossyExpressionsReason of its expressions ("" = none)
};

// The kernel's view of one chain.
struct KernelChain {
  size_t rules = 0;
  bool base = false;  // has a hook
  std::string hook;   // "input", "prerouting", ... (base chains)
  int priority = 0;
  std::string lossy;                  // why a rule of this chain would not survive save → restore ("" = none seen)
  std::vector<KernelRule> rule_list;  // Dump with rule_forms only: every rule, in chain order
};
struct KernelTable {
  std::map<std::string, KernelChain> chains;
  std::vector<std::string>
      sets;  // named sets/maps (not anonymous ones): iptables-nft-save marks such tables incompatible
};
// (nft family "ip"/"ip6"/..., table) → chains.
using KernelView = std::map<std::pair<std::string, std::string>, KernelTable>;

// One expression of a rule as the kernel dumps it: its type name ("payload", "cmp", "lookup", ...) and, for a
// lookup, the set it looks up ("__set0" for an anonymous set, as nft names them).
struct RuleExpr {
  std::string name;
  std::string set;
};

// Why iptables-nft-save would print a rule made of these expressions lossily, or "" when every expression is one
// iptables-nft 1.8.9 creates and prints back: payload / meta loads with bitwise, cmp and range on them, counter,
// the xt compat match/target, immediate (verdicts), limit, log, queue. Anything else — a set lookup
// ("anonymous set lookup" for `{ a, b }`, "named set lookup" for `@name`), ct/fib/socket/numgen/... loads,
// nat/reject/notrack/... statements written by nft — is what iptables-nft-save drops or misprints. The same
// judgement the `nft -j` based check made on libnftables' JSON (restore_backend.cc, used by Info).
std::string LossyExpressionsReason(const std::vector<RuleExpr>& exprs);

// The nft name of a hook number of the ip/ip6 families (linux/netfilter.h enum nf_inet_hooks): "prerouting",
// "input", ...; "hookN" for others.
std::string HookName(uint32_t hooknum);

class NetlinkClient {
 public:
  // A NETLINK_NETFILTER socket in the namespace `netns_fd` (-1: the caller's). Needs CAP_SYS_ADMIN for another
  // namespace.
  static Result<std::unique_ptr<NetlinkClient>> Open(int netns_fd);
  ~NetlinkClient();
  NetlinkClient(const NetlinkClient&) = delete;
  NetlinkClient& operator=(const NetlinkClient&) = delete;

  // The ruleset generation id (NFT_MSG_GETGEN → NFTA_GEN_ID). The kernel bumps it once per committed
  // transaction that changed anything, in every family (nf_tables_api.c nf_tables_commit: an empty commit list
  // returns before the bump).
  Result<uint32_t> GenerationId();

  // Tables, chains, rules and named sets of the family (ip / ip6), or of `table` only. Aborted when the ruleset
  // changed during the dump (NLM_F_DUMP_INTR): read again. With rule_forms, every chain's rule_list is filled.
  Result<KernelView> Dump(Family family, const std::optional<std::string>& table, bool rule_forms = false);

  // Sends one NFT_MSG_GET* dump request for `family` (NFPROTO_*), lets `attrs` add request attributes (e.g.
  // NFTA_RULE_TABLE / NFTA_RULE_CHAIN, by which the kernel filters a rule dump; may be empty) and feeds every answer
  // message to `on_message` (the first error it returns wins; the rest of the dump is drained). Aborted when the
  // ruleset changed during the dump (NLM_F_DUMP_INTR): read again.
  Status DumpMessages(uint16_t msg_type, uint16_t family, const std::function<void(nlmsghdr*)>& attrs,
                      const std::function<Status(const nlmsghdr*)>& on_message);

  // Sends one NFT_MSG_GET* request for a single object (not a dump: e.g. NFT_MSG_GETCHAIN with NFTA_CHAIN_TABLE and
  // NFTA_CHAIN_NAME, as iptables-nft fetches the chains a command names; NFT_MSG_GETTABLE with NFTA_TABLE_NAME) and
  // feeds the answer to `on_message`; also a rule by NFTA_RULE_TABLE, NFTA_RULE_CHAIN and NFTA_RULE_HANDLE. Sent
  // without NLM_F_ACK: the answer is the object's one message (one recvmsg). NotFound when the kernel has no such
  // object (ENOENT).
  Status GetMessage(uint16_t msg_type, uint16_t family, const std::function<void(nlmsghdr*)>& attrs,
                    const std::function<Status(const nlmsghdr*)>& on_message);

  // The answer to one nfnetlink batch.
  struct BatchReply {
    // (seq, errno) of every message the kernel refused; the BATCH_BEGIN's seq for a failure of the batch as a
    // whole (ERESTART: the generation id it carried is stale, nothing was done).
    std::vector<std::pair<uint32_t, int>> errors;
    // seq → the NEWRULE / NEWCHAIN message the kernel echoed for a request sent with NLM_F_ECHO (the new rule or
    // chain with its handle).
    std::map<uint32_t, std::string> echoes;
    // The receive queue overflowed (ENOBUFS): some answers are missing; whether the batch committed must be found
    // out another way (the generation id).
    bool overrun = false;
    // The generation id of the commit, from the NEWGEN message the kernel sends the batch's sender after a commit
    // whose first message carried NLM_F_ECHO (nf_tables_gen_notify: report = that message's NLM_F_ECHO); absent
    // otherwise, and when the batch failed.
    std::optional<uint32_t> generation;
  };
  // Sends a batch built by the caller (BATCH_BEGIN ... BATCH_END, `messages` netlink messages in all) with one
  // sendmsg. nfnetlink processes a batch synchronously inside sendmsg, so every answer is queued when it returns;
  // they are drained without waiting. Grows the socket buffers as iptables-nft does for large batches.
  Result<BatchReply> SendBatch(std::string_view batch, size_t messages);

  // The socket's netlink port id: the nlmsg_pid of the notifications of the transactions it commits.
  uint32_t portid() const { return portid_; }

  // Netlink requests sent so far (tests), and those of one NFT_MSG_GET* type sent as a dump (`dump`) or for one
  // object: what a command asks the kernel.
  uint64_t requests() const { return requests_; }
  uint64_t requests(uint16_t msg_type, bool dump) const;

 private:
  explicit NetlinkClient(mnl_socket* socket);

  // Sends one request with `attrs` added, and passes each answer message to `on_message`: with NLM_F_DUMP until
  // DONE (Aborted when the kernel interrupted the dump), with NLM_F_ACK until the ACK, with neither the one answer.
  Status Exchange(uint16_t msg_type, uint16_t family, uint16_t flags, const std::function<void(nlmsghdr*)>& attrs,
                  const std::function<Status(const nlmsghdr*)>& on_message);
  Status RunDump(uint16_t msg_type, uint16_t family, const std::optional<std::string>& table, uint16_t table_attr,
                 const std::function<Status(const nlmsghdr*)>& on_message);

  mnl_socket* socket_;
  uint32_t portid_;
  uint32_t seq_;
  uint64_t requests_ = 0;
  std::map<std::pair<uint16_t, bool>, uint64_t> requests_by_type_;  // (msg type, dump) → requests
  std::span<char> Buffer();  // the receive buffer, reused by every request (one at a time)
  std::unique_ptr<char[]> buf_;
  int rcvbuf_ = 0;  // what SendBatch last forced (0: the default)
  int sndbuf_ = 0;

 public:
  // The next sequence number to use for a message the caller builds (batches).
  uint32_t NextSeq() { return ++seq_; }
  // Reserves `n` consecutive sequence numbers; returns the first.
  uint32_t ReserveSeqs(uint32_t n) {
    const uint32_t first = seq_ + 1;
    seq_ += n;
    return first;
  }
};

}  // namespace iptkit::backend::nft

#endif  // IPTKIT_SRC_BACKEND_NFT_NETLINK_CLIENT_H_
