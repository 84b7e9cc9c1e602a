#include "src/backend/nft/netlink_client.h"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/nfnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <string_view>
#include <system_error>

#include "src/base/errno_status.h"
#include "src/base/netns.h"

namespace iptkit::backend::nft {

namespace {

// Big enough for any one message batch the kernel sends per recvmsg (netlink dumps fill at most 32 KiB skbs;
// libmnl's MNL_SOCKET_DUMP_SIZE).
constexpr size_t kRecvBuffer = 64 * 1024;

std::string NftFamilyName(Family family) { return family == Family::kIPv4 ? "ip" : "ip6"; }
uint16_t NfProto(Family family) { return family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6; }

// Calls f on each attribute in [start, start + len). (libmnl's mnl_attr_for_each macros do void* arithmetic,
// which C++ does not allow.)
template <typename F>
void ForEachAttr(const void* start, size_t len, F&& f) {
  const nlattr* a = static_cast<const nlattr*>(start);
  int remaining = static_cast<int>(len);
  while (mnl_attr_ok(a, remaining)) {
    f(a);
    remaining -= static_cast<int>(MNL_ALIGN(a->nla_len));
    a = mnl_attr_next(a);
  }
}

template <typename F>
void ForEachNested(const nlattr* nest, F&& f) {
  ForEachAttr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), f);
}

// Attributes of one nested block (or of a message after its nfgenmsg), by type (the last one wins); no
// validation beyond bounds: attribute kinds newer than our headers must not make a dump fail.
template <size_t N>
void ParseNested(const nlattr* nest, const nlattr* (&tb)[N]) {
  for (auto& a : tb) a = nullptr;
  ForEachNested(nest, [&](const nlattr* attr) {
    uint16_t type = mnl_attr_get_type(attr);
    if (type < N) tb[type] = attr;
  });
}

template <size_t N>
void ParseMessage(const nlmsghdr* nlh, const nlattr* (&tb)[N]) {
  for (auto& a : tb) a = nullptr;
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  if (end <= start) return;
  ForEachAttr(start, static_cast<size_t>(end - start), [&](const nlattr* attr) {
    uint16_t type = mnl_attr_get_type(attr);
    if (type < N) tb[type] = attr;
  });
}

std::string Str(const char* s) { return s == nullptr ? "" : s; }

std::string AttrString(const nlattr* attr) {
  if (attr == nullptr) return "";
  const char* s = static_cast<const char*>(mnl_attr_get_payload(attr));
  size_t len = mnl_attr_get_payload_len(attr);
  std::string_view v(s, len);
  if (size_t nul = v.find('\0'); nul != std::string_view::npos) v = v.substr(0, nul);
  return std::string(v);
}

}  // namespace

std::string HookName(uint32_t hooknum) {
  switch (hooknum) {
    case NF_INET_PRE_ROUTING:
      return "prerouting";
    case NF_INET_LOCAL_IN:
      return "input";
    case NF_INET_FORWARD:
      return "forward";
    case NF_INET_LOCAL_OUT:
      return "output";
    case NF_INET_POST_ROUTING:
      return "postrouting";
    default:
      return "hook" + std::to_string(hooknum);
  }
}

std::string LossyExpressionsReason(const std::vector<RuleExpr>& exprs) {
  // The expression types iptables-nft 1.8.9 writes (nft-shared.c, nft-ruleparse*.c parse exactly these back).
  static const std::set<std::string_view> kIptablesNft = {"payload", "meta",   "bitwise",   "cmp",   "range", "counter",
                                                          "match",   "target", "immediate", "limit", "log",   "queue"};
  if (exprs.empty()) return "rule without expressions";
  for (const RuleExpr& e : exprs) {
    if (e.name == "lookup") {
      // nft names anonymous sets and maps "__set%d" / "__map%d" (nftables src/rule.c set_is_anonymous).
      if (e.set.starts_with("__")) return "anonymous set lookup";
      return "named set lookup (@" + e.set + ")";
    }
    if (!kIptablesNft.count(e.name)) return "native nft expression '" + e.name + "'";
  }
  return "";
}

NetlinkClient::NetlinkClient(mnl_socket* socket)
    : socket_(socket), portid_(mnl_socket_get_portid(socket)), seq_(static_cast<uint32_t>(::time(nullptr))) {}

NetlinkClient::~NetlinkClient() { mnl_socket_close(socket_); }

std::span<char> NetlinkClient::Buffer() {
  // Allocated once (zero-filling 64 KiB per request cost more than the request on small rulesets), and never
  // zero-filled: only what the kernel writes is read, and filling it made a one-command process fault in 16 pages.
  if (!buf_) buf_.reset(new char[kRecvBuffer]);
  return {buf_.get(), kRecvBuffer};
}

Result<std::unique_ptr<NetlinkClient>> NetlinkClient::Open(int netns_fd) {
  mnl_socket* socket = nullptr;
  Status status = base::RunInNetnsThread(
      netns_fd,
      [&]() -> Status {
        socket = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
        if (socket == nullptr) return base::ErrnoToStatus(errno, "socket(AF_NETLINK, NETLINK_NETFILTER)");
        if (mnl_socket_bind(socket, 0, MNL_SOCKET_AUTOPID) < 0) {
          Status bind_failed = base::ErrnoToStatus(errno, "bind NETLINK_NETFILTER socket");
          mnl_socket_close(socket);
          socket = nullptr;
          return bind_failed;
        }
        return Status::Ok();
      },
      "opening the nf_tables netlink socket");
  if (!status.ok()) return status;
  return std::unique_ptr<NetlinkClient>(new NetlinkClient(socket));
}

Status NetlinkClient::RunDump(uint16_t msg_type, uint16_t family, const std::optional<std::string>& table,
                              uint16_t table_attr, const std::function<Status(const nlmsghdr*)>& on_message) {
  // GETGEN is answered with one message (no dump, no ACK: see Exchange).
  const uint16_t flags = msg_type == NFT_MSG_GETGEN ? 0 : NLM_F_DUMP;
  return Exchange(
      msg_type, family, flags,
      [&](nlmsghdr* nlh) {
        if (table && table_attr != 0) mnl_attr_put_strz(nlh, table_attr, table->c_str());
      },
      on_message);
}

Status NetlinkClient::DumpMessages(uint16_t msg_type, uint16_t family, const std::function<void(nlmsghdr*)>& attrs,
                                   const std::function<Status(const nlmsghdr*)>& on_message) {
  return Exchange(msg_type, family, NLM_F_DUMP, attrs, on_message);
}

Status NetlinkClient::GetMessage(uint16_t msg_type, uint16_t family, const std::function<void(nlmsghdr*)>& attrs,
                                 const std::function<Status(const nlmsghdr*)>& on_message) {
  return Exchange(msg_type, family, 0, attrs, on_message);
}

uint64_t NetlinkClient::requests(uint16_t msg_type, bool dump) const {
  auto it = requests_by_type_.find({msg_type, dump});
  return it == requests_by_type_.end() ? 0 : it->second;
}

Status NetlinkClient::Exchange(uint16_t msg_type, uint16_t family, uint16_t flags,
                               const std::function<void(nlmsghdr*)>& attrs,
                               const std::function<Status(const nlmsghdr*)>& on_message) {
  std::span<char> buf = Buffer();
  const uint32_t seq = ++seq_;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), msg_type, family, flags, seq);
  if (attrs) attrs(nlh);
  ++requests_;
  ++requests_by_type_[{msg_type, (flags & NLM_F_DUMP) != 0}];
  if (mnl_socket_sendto(socket_, nlh, nlh->nlmsg_len) < 0) return base::ErrnoToStatus(errno, "netlink sendto");
  // A request for one object without NLM_F_ACK is answered by that object's message alone, or by an error
  // (netlink_rcv_skb acks only when asked to or on failure): one message, one recvmsg, where an ACK would be a
  // second one. iptables-nft asks for the generation id the same way (nft-cache.c mnl_genid_get).
  const bool single = (flags & (NLM_F_DUMP | NLM_F_ACK)) == 0;

  bool interrupted = false;
  Status failed;
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(socket_, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, "netlink recvfrom");
    }
    int len = static_cast<int>(n);
    for (const nlmsghdr* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len);
         m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_seq != seq || m->nlmsg_pid != portid_) continue;  // a stale answer of an abandoned request
      if (m->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      if (m->nlmsg_type == NLMSG_DONE) {
        // A dump's DONE may carry its error (netlink_dump_done).
        if (mnl_nlmsg_get_payload_len(m) >= sizeof(int)) {
          int err = *static_cast<const int*>(mnl_nlmsg_get_payload(m));
          if (err < 0 && failed.ok()) failed = base::ErrnoToStatus(-err, "nf_tables dump");
        }
        if (!failed.ok()) return failed;
        if (interrupted) return Status::Aborted("the nf_tables ruleset changed during the dump");
        return Status::Ok();
      }
      if (m->nlmsg_type == NLMSG_ERROR) {
        const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m));
        if (mnl_nlmsg_get_payload_len(m) < sizeof(nlmsgerr)) return Status::Internal("truncated netlink error");
        if (err->error != 0) return base::ErrnoToStatus(-err->error, "nf_tables request");
        // The ACK of a non-dump request: the answer came before it.
        if (!failed.ok()) return failed;
        return Status::Ok();
      }
      if (failed.ok()) failed = on_message(m);
      if (single) return failed;
    }
  }
}

Result<NetlinkClient::BatchReply> NetlinkClient::SendBatch(std::string_view batch, size_t messages) {
  const int fd = mnl_socket_get_fd(socket_);
  // Room for an echo (a whole rule) and an ack per message; only ever grown (nft.c mnl_set_rcvbuffer).
  const size_t want_rcv = std::max<size_t>(messages * 8192, 1 << 20);
  if (want_rcv > static_cast<size_t>(rcvbuf_) && want_rcv < (1u << 30)) {
    int v = static_cast<int>(want_rcv);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) == 0) rcvbuf_ = v;
  }
  if (batch.size() > static_cast<size_t>(sndbuf_) && batch.size() < (1u << 30)) {
    int v = static_cast<int>(batch.size());
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) == 0) sndbuf_ = v;
  }
  sockaddr_nl snl{};
  snl.nl_family = AF_NETLINK;
  iovec iov{const_cast<char*>(batch.data()), batch.size()};
  msghdr msg{};
  msg.msg_name = &snl;
  msg.msg_namelen = sizeof(snl);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ++requests_;
  for (;;) {
    if (sendmsg(fd, &msg, 0) >= 0) break;
    if (errno == EINTR) continue;
    return base::ErrnoToStatus(errno, "netlink sendmsg (nf_tables batch)");
  }
  BatchReply reply;
  std::span<char> buf = Buffer();
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == ENOBUFS) {
        reply.overrun = true;
        continue;
      }
      return base::ErrnoToStatus(errno, "netlink recv (nf_tables batch)");
    }
    int len = static_cast<int>(n);
    for (const nlmsghdr* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len);
         m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_pid != portid_) continue;
      if (m->nlmsg_type == NLMSG_ERROR) {
        if (mnl_nlmsg_get_payload_len(m) < sizeof(nlmsgerr)) continue;
        const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m));
        if (err->error != 0) reply.errors.emplace_back(m->nlmsg_seq, -err->error);
        continue;
      }
      // Only what a request with NLM_F_ECHO creates (a replace also echoes the deletion of the old rule), and the
      // commit's generation.
      const uint16_t type = m->nlmsg_type & 0xff;
      if ((m->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES) continue;
      if (type == NFT_MSG_NEWGEN) {
        const auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(m, sizeof(nfgenmsg)));
        const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(m));
        for (int left = static_cast<int>(end - reinterpret_cast<const char*>(a)); mnl_attr_ok(a, left);
             left -= static_cast<int>(MNL_ALIGN(a->nla_len)), a = mnl_attr_next(a)) {
          if (mnl_attr_get_type(a) == NFTA_GEN_ID && mnl_attr_get_payload_len(a) == sizeof(uint32_t)) {
            reply.generation = ntohl(mnl_attr_get_u32(a));
          }
        }
        continue;
      }
      if (type != NFT_MSG_NEWRULE && type != NFT_MSG_NEWCHAIN) continue;
      reply.echoes[m->nlmsg_seq] = std::string(reinterpret_cast<const char*>(m), m->nlmsg_len);
    }
  }
  return reply;
}

Result<uint32_t> NetlinkClient::GenerationId() {
  std::optional<uint32_t> id;
  Status s = RunDump(NFT_MSG_GETGEN, AF_UNSPEC, std::nullopt, 0, [&](const nlmsghdr* m) -> Status {
    if ((m->nlmsg_type & 0xff) != NFT_MSG_NEWGEN) return Status::Ok();
    nftnl_gen* gen = nftnl_gen_alloc();
    if (gen == nullptr) return Status::Internal("nftnl_gen_alloc failed");
    if (nftnl_gen_nlmsg_parse(m, gen) == 0 && nftnl_gen_is_set(gen, NFTNL_GEN_ID)) {
      id = nftnl_gen_get_u32(gen, NFTNL_GEN_ID);
    }
    nftnl_gen_free(gen);
    return Status::Ok();
  });
  IPTKIT_RETURN_IF_ERROR(s);
  if (!id) return Status::Internal("NFT_MSG_GETGEN: no NFTA_GEN_ID in the kernel's answer");
  return *id;
}

namespace {

// xt_set.h: the ip_set_id_t (u16) index fields of the set match (every revision: at 0) and of the SET target (as in
// legacy/xt_rules.cc).
std::vector<size_t> SetIndexOffsets(const std::string& name, uint32_t revision, bool target) {
  if (!target) return name == "set" ? std::vector<size_t>{0} : std::vector<size_t>{};
  if (name != "SET") return {};
  if (revision == 0) return {0, 32};
  if (revision <= 2) return {0, 4};
  return {0, 4, 8};
}

// One expression's part of a kernel form: its name and its data attribute, normalized (KernelRule::form).
void AppendExpressionForm(const nlattr* elem, std::string& form) {
  const nlattr* etb[NFTA_EXPR_MAX + 1];
  ParseNested(elem, etb);
  const std::string name = AttrString(etb[NFTA_EXPR_NAME]);
  form += name;
  form += '\0';
  const nlattr* data = etb[NFTA_EXPR_DATA];
  if (data == nullptr) return;
  const char* base = static_cast<const char*>(mnl_attr_get_payload(data));
  std::string bytes(base, mnl_attr_get_payload_len(data));
  auto patch = [&](const nlattr* attr, size_t at, size_t size) {
    const size_t start = static_cast<size_t>(static_cast<const char*>(mnl_attr_get_payload(attr)) - base) + at;
    if (at + size <= mnl_attr_get_payload_len(attr) && start + size <= bytes.size()) {
      std::memset(bytes.data() + start, 0, size);
    }
  };
  if (name == "counter") {
    ForEachNested(data, [&](const nlattr* a) {
      const uint16_t type = mnl_attr_get_type(a);
      if (type == NFTA_COUNTER_BYTES || type == NFTA_COUNTER_PACKETS) patch(a, 0, mnl_attr_get_payload_len(a));
    });
  } else if (name == "match" || name == "target") {
    // NFTA_MATCH_* and NFTA_TARGET_* number their attributes alike: NAME 1, REV 2, INFO 3.
    const nlattr* mtb[NFTA_MATCH_MAX + 1];
    ParseNested(data, mtb);
    const std::string xt_name = AttrString(mtb[NFTA_MATCH_NAME]);
    const uint32_t rev = mtb[NFTA_MATCH_REV] != nullptr ? ntohl(mnl_attr_get_u32(mtb[NFTA_MATCH_REV])) : 0;
    if (mtb[NFTA_MATCH_INFO] != nullptr) {
      for (size_t at : SetIndexOffsets(xt_name, rev, name == "target")) patch(mtb[NFTA_MATCH_INFO], at, 2);
    }
  }
  form += std::to_string(bytes.size());
  form += ':';
  form += bytes;
}

}  // namespace

Result<KernelView> NetlinkClient::Dump(Family family, const std::optional<std::string>& table, bool rule_forms) {
  const std::string fam = NftFamilyName(family);
  const uint16_t proto = NfProto(family);
  KernelView view;
  auto wanted = [&](const std::string& name) { return !table || name == *table; };

  // Tables (so that a table without chains still exists in the view).
  IPTKIT_RETURN_IF_ERROR(RunDump(NFT_MSG_GETTABLE, proto, std::nullopt, 0, [&](const nlmsghdr* m) -> Status {
    nftnl_table* t = nftnl_table_alloc();
    if (t == nullptr) return Status::Internal("nftnl_table_alloc failed");
    Status s = Status::Ok();
    if (nftnl_table_nlmsg_parse(m, t) < 0) {
      s = Status::Internal("cannot parse an nf_tables table message");
    } else {
      std::string name = Str(nftnl_table_get_str(t, NFTNL_TABLE_NAME));
      if (wanted(name)) view[{fam, name}];
    }
    nftnl_table_free(t);
    return s;
  }));

  // Chains, with hook and priority for base chains.
  IPTKIT_RETURN_IF_ERROR(RunDump(NFT_MSG_GETCHAIN, proto, std::nullopt, 0, [&](const nlmsghdr* m) -> Status {
    nftnl_chain* c = nftnl_chain_alloc();
    if (c == nullptr) return Status::Internal("nftnl_chain_alloc failed");
    Status s = Status::Ok();
    if (nftnl_chain_nlmsg_parse(m, c) < 0) {
      s = Status::Internal("cannot parse an nf_tables chain message");
    } else {
      std::string tname = Str(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE));
      if (wanted(tname)) {
        KernelChain& chain = view[{fam, tname}].chains[Str(nftnl_chain_get_str(c, NFTNL_CHAIN_NAME))];
        if (nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM)) {
          chain.base = true;
          chain.hook = HookName(nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM));
          chain.priority = nftnl_chain_is_set(c, NFTNL_CHAIN_PRIO) ? nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO) : 0;
        }
      }
    }
    nftnl_chain_free(c);
    return s;
  }));

  // Rules. Parsed by hand rather than with nftnl_rule_nlmsg_parse: libnftnl fails the whole rule when one
  // expression is of a type it does not know (expr.c nftnl_expr_parse), and such a rule is exactly one we must
  // classify as lossy, not fail on. The kernel filters the dump by NFTA_RULE_TABLE (nf_tables_dump_rules).
  IPTKIT_RETURN_IF_ERROR(RunDump(NFT_MSG_GETRULE, proto, table, NFTA_RULE_TABLE, [&](const nlmsghdr* m) -> Status {
    const nlattr* tb[NFTA_RULE_MAX + 1];
    ParseMessage(m, tb);
    std::string tname = AttrString(tb[NFTA_RULE_TABLE]);
    if (!wanted(tname)) return Status::Ok();
    KernelChain& chain = view[{fam, tname}].chains[AttrString(tb[NFTA_RULE_CHAIN])];
    ++chain.rules;
    if (!chain.lossy.empty() && !rule_forms) return Status::Ok();
    std::vector<RuleExpr> exprs;
    std::string form;
    if (tb[NFTA_RULE_EXPRESSIONS] != nullptr) {
      ForEachNested(tb[NFTA_RULE_EXPRESSIONS], [&](const nlattr* elem) {
        if (mnl_attr_get_type(elem) != NFTA_LIST_ELEM) return;
        const nlattr* etb[NFTA_EXPR_MAX + 1];
        ParseNested(elem, etb);
        RuleExpr e{.name = AttrString(etb[NFTA_EXPR_NAME]), .set = ""};
        if (e.name == "lookup" && etb[NFTA_EXPR_DATA] != nullptr) {
          const nlattr* ltb[NFTA_LOOKUP_MAX + 1];
          ParseNested(etb[NFTA_EXPR_DATA], ltb);
          e.set = AttrString(ltb[NFTA_LOOKUP_SET]);
        }
        exprs.push_back(std::move(e));
        if (rule_forms) AppendExpressionForm(elem, form);
      });
    }
    std::string why = LossyExpressionsReason(exprs);
    const uint64_t handle = tb[NFTA_RULE_HANDLE] ? be64toh(mnl_attr_get_u64(tb[NFTA_RULE_HANDLE])) : 0;
    if (!why.empty() && chain.lossy.empty()) {
      chain.lossy = "rule " + std::to_string(chain.rules) + " (nft handle " + std::to_string(handle) + ") uses " + why;
    }
    if (rule_forms) {
      form += std::string("\0userdata:", 10);
      if (tb[NFTA_RULE_USERDATA] != nullptr) {
        form.append(static_cast<const char*>(mnl_attr_get_payload(tb[NFTA_RULE_USERDATA])),
                    mnl_attr_get_payload_len(tb[NFTA_RULE_USERDATA]));
      }
      chain.rule_list.push_back(KernelRule{handle, std::move(form), std::move(why)});
    }
    return Status::Ok();
  }));

  // Named sets and maps (anonymous ones belong to a rule and are judged through its lookup). Not filtered by the
  // kernel: a set dump naming a table that does not exist fails with ENOENT.
  IPTKIT_RETURN_IF_ERROR(RunDump(NFT_MSG_GETSET, proto, std::nullopt, 0, [&](const nlmsghdr* m) -> Status {
    nftnl_set* set = nftnl_set_alloc();
    if (set == nullptr) return Status::Internal("nftnl_set_alloc failed");
    Status s = Status::Ok();
    if (nftnl_set_nlmsg_parse(m, set) < 0) {
      s = Status::Internal("cannot parse an nf_tables set message");
    } else {
      std::string tname = Str(nftnl_set_get_str(set, NFTNL_SET_TABLE));
      uint32_t flags = nftnl_set_is_set(set, NFTNL_SET_FLAGS) ? nftnl_set_get_u32(set, NFTNL_SET_FLAGS) : 0;
      if (wanted(tname) && !(flags & NFT_SET_ANONYMOUS)) {
        view[{fam, tname}].sets.push_back(Str(nftnl_set_get_str(set, NFTNL_SET_NAME)));
      }
    }
    nftnl_set_free(set);
    return s;
  }));
  return view;
}

}  // namespace iptkit::backend::nft
