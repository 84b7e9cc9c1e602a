#include "src/backend/native/rule_codec.h"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/x_tables.h>
#include <linux/netfilter/xt_NFLOG.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_limit.h>
#include <linux/netfilter/xt_mark.h>
#include <linux/netfilter/xt_pkttype.h>
#include <linux/netfilter/xt_tcpudp.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv4/ipt_ttl.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <linux/netfilter_ipv6/ip6t_hl.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iptkit::backend::native {
namespace {

// Network-header offsets (struct iphdr / struct ip6_hdr).
constexpr uint32_t kIp4FragOff = 6;
constexpr uint32_t kIp4Ttl = 8;
constexpr uint32_t kIp4Protocol = 9;
constexpr uint32_t kIp4Saddr = 12;
constexpr uint32_t kIp4Daddr = 16;
constexpr uint32_t kIp6Nexthdr = 6;
constexpr uint32_t kIp6Hlim = 7;
constexpr uint32_t kIp6Saddr = 8;
constexpr uint32_t kIp6Daddr = 24;

constexpr uint32_t kLimitScale = 10000;  // XT_LIMIT_SCALE

// A libnftnl expression that is added to the rule (which then owns it) unless released first.
nftnl_expr* NewExpr(const char* name) { return nftnl_expr_alloc(name); }

void AddMeta(nftnl_rule* r, uint32_t key) {
  nftnl_expr* e = NewExpr("meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  nftnl_rule_add_expr(r, e);
}

void AddPayload(nftnl_rule* r, uint32_t base, uint32_t offset, uint32_t len) {
  nftnl_expr* e = NewExpr("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_rule_add_expr(r, e);
}

void AddBitwise(nftnl_rule* r, const void* mask, uint32_t len) {
  std::array<uint8_t, 16> zero{};
  nftnl_expr* e = NewExpr("bitwise");
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero.data(), len);
  nftnl_rule_add_expr(r, e);
}

void AddCmp(nftnl_rule* r, uint32_t op, const void* data, uint32_t len) {
  nftnl_expr* e = NewExpr("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  nftnl_rule_add_expr(r, e);
}

uint32_t CmpOp(const XtHeader& h, uint8_t bit) { return (h.invflags & bit) ? NFT_CMP_NEQ : NFT_CMP_EQ; }

// nft-shared.c add_iniface / add_outiface.
void AddIface(nftnl_rule* r, uint32_t key, const std::array<char, 16>& iface, uint32_t op) {
  const size_t len = strnlen(iface.data(), iface.size());
  AddMeta(r, key);
  if (iface[len - 1] == '+') {
    if (len > 1) {
      AddCmp(r, op, iface.data(), static_cast<uint32_t>(len - 1));
    } else if (op != NFT_CMP_EQ) {
      static const char kInvalid[] = "INVAL/D";
      AddCmp(r, NFT_CMP_EQ, kInvalid, sizeof(kInvalid));
    }
  } else {
    AddCmp(r, op, iface.data(), static_cast<uint32_t>(len + 1));
  }
}

// nft-shared.c add_addr.
void AddAddr(nftnl_rule* r, uint32_t offset, const uint8_t* data, const uint8_t* mask, uint32_t len, uint32_t op) {
  bool bitwise = false;
  uint32_t i = 0;
  for (; i < len; ++i) {
    if (mask[i] != 0xff) {
      bitwise = mask[i] != 0;
      break;
    }
  }
  for (uint32_t j = i + 1; !bitwise && j < len; ++j) bitwise = mask[j] != 0;
  if (!bitwise) len = i;
  AddPayload(r, NFT_PAYLOAD_NETWORK_HEADER, offset, len);
  if (bitwise) AddBitwise(r, mask, len);
  AddCmp(r, op, data, len);
}

// libnftnl takes ownership of the payload of a match / target expression (it frees it with the expression).
void* OwnedCopy(const std::string& data) {
  void* p = std::calloc(1, data.size() + 1);
  std::memcpy(p, data.data(), data.size());
  return p;
}

void AddCompatMatch(nftnl_rule* r, const XtExtension& m) {
  nftnl_expr* e = NewExpr("match");
  nftnl_expr_set(e, NFTNL_EXPR_MT_NAME, m.name.c_str(), static_cast<uint32_t>(m.name.size()));
  nftnl_expr_set_u32(e, NFTNL_EXPR_MT_REV, m.revision);
  nftnl_expr_set(e, NFTNL_EXPR_MT_INFO, OwnedCopy(m.data), static_cast<uint32_t>(m.data.size()));
  nftnl_rule_add_expr(r, e);
}

// nft.c expr_gen_range_cmp16.
void AddRangeCmp16(nftnl_rule* r, uint16_t lo, uint16_t hi, bool invert) {
  if (lo == hi) {
    uint16_t v = htons(lo);
    AddCmp(r, invert ? NFT_CMP_NEQ : NFT_CMP_EQ, &v, 2);
    return;
  }
  if (lo == 0 && hi < 0xffff) {
    uint16_t v = htons(hi);
    AddCmp(r, invert ? NFT_CMP_GT : NFT_CMP_LTE, &v, 2);
    return;
  }
  nftnl_expr* e = NewExpr("range");
  nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_OP, invert ? NFT_RANGE_NEQ : NFT_RANGE_EQ);
  uint16_t from = htons(lo), to = htons(hi);
  nftnl_expr_set(e, NFTNL_EXPR_RANGE_FROM_DATA, &from, 2);
  nftnl_expr_set(e, NFTNL_EXPR_RANGE_TO_DATA, &to, 2);
  nftnl_rule_add_expr(r, e);
}

// nft.c add_nft_tcpudp.
void AddTcpUdp(nftnl_rule* r, const uint16_t src[2], bool invert_src, const uint16_t dst[2], bool invert_dst) {
  if (src[0] && src[0] == src[1] && dst[0] && dst[0] == dst[1] && invert_src == invert_dst) {
    const uint32_t combined = htonl(static_cast<uint32_t>(dst[0]) | (static_cast<uint32_t>(src[0]) << 16));
    AddPayload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4);
    AddCmp(r, invert_src ? NFT_CMP_NEQ : NFT_CMP_EQ, &combined, 4);
    return;
  }
  if (src[0] || src[1] < 0xffff) {
    AddPayload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2);
    AddRangeCmp16(r, src[0], src[1], invert_src);
  }
  if (dst[0] || dst[1] < 0xffff) {
    AddPayload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    AddRangeCmp16(r, dst[0], dst[1], invert_dst);
  }
}

template <typename T>
T Payload(const XtExtension& m) {
  T v{};
  std::memcpy(&v, m.data.data(), std::min(sizeof(T), m.data.size()));
  return v;
}

Status AddMatch(const XtRule& rule, nftnl_rule* r, const XtExtension& m) {
  if (m.name == "limit" && m.data.size() >= sizeof(uint32_t) * 2) {
    // nft.c add_nft_limit.
    const auto info = Payload<xt_rateinfo>(m);
    static const uint32_t kMult[] = {kLimitScale * 24 * 60 * 60, kLimitScale * 60 * 60, kLimitScale * 60, kLimitScale};
    if (info.avg == 0) return Status::InvalidArgument("-m limit: rate of 0");
    size_t i = 1;
    for (; i < std::size(kMult); ++i) {
      if (info.avg > kMult[i] || kMult[i] / info.avg < kMult[i] % info.avg) break;
    }
    nftnl_expr* e = NewExpr("limit");
    nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_FLAGS, 0);
    nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_RATE, kMult[i - 1] / info.avg);
    nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_UNIT, kMult[i - 1] / kLimitScale);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_BURST, info.burst);
    nftnl_rule_add_expr(r, e);
    return Status::Ok();
  }
  if (m.name == "udp" && m.data.size() >= sizeof(xt_udp)) {
    const auto udp = Payload<xt_udp>(m);
    // Static, as in nft.c udp_all_zero: the padding of the struct must be zero for the memcmp.
    static const xt_udp zero{.spts = {0, 0xffff}, .dpts = {0, 0xffff}, .invflags = 0};
    // Compared on the payload itself: a copy of the struct need not carry its padding bytes.
    if (udp.invflags > XT_UDP_INV_MASK || std::memcmp(m.data.data(), &zero, sizeof(xt_udp)) == 0) {
      AddCompatMatch(r, m);
      return Status::Ok();
    }
    if (rule.header.proto != IPPROTO_UDP) return Status::InvalidArgument("-m udp: UDP match requires '-p udp'");
    AddTcpUdp(r, udp.spts, udp.invflags & XT_UDP_INV_SRCPT, udp.dpts, udp.invflags & XT_UDP_INV_DSTPT);
    return Status::Ok();
  }
  if (m.name == "tcp" && m.data.size() >= sizeof(xt_tcp)) {
    const auto tcp = Payload<xt_tcp>(m);
    constexpr uint8_t kSupported = XT_TCP_INV_SRCPT | XT_TCP_INV_DSTPT | XT_TCP_INV_FLAGS;
    const xt_tcp zero{
        .spts = {0, 0xffff}, .dpts = {0, 0xffff}, .option = 0, .flg_mask = 0, .flg_cmp = 0, .invflags = 0};
    if ((tcp.invflags & ~kSupported) || tcp.option || std::memcmp(m.data.data(), &zero, sizeof(xt_tcp)) == 0) {
      AddCompatMatch(r, m);
      return Status::Ok();
    }
    if (rule.header.proto != IPPROTO_TCP) return Status::InvalidArgument("-m tcp: TCP match requires '-p tcp'");
    if (tcp.flg_mask) {
      AddPayload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1);
      AddBitwise(r, &tcp.flg_mask, 1);
      AddCmp(r, (tcp.invflags & XT_TCP_INV_FLAGS) ? NFT_CMP_NEQ : NFT_CMP_EQ, &tcp.flg_cmp, 1);
    }
    AddTcpUdp(r, tcp.spts, tcp.invflags & XT_TCP_INV_SRCPT, tcp.dpts, tcp.invflags & XT_TCP_INV_DSTPT);
    return Status::Ok();
  }
  if (m.name == "mark" && m.revision == 1 && m.data.size() >= sizeof(xt_mark_mtinfo1)) {
    const auto mark = Payload<xt_mark_mtinfo1>(m);
    AddMeta(r, NFT_META_MARK);
    if (mark.mask != 0xffffffffu) AddBitwise(r, &mark.mask, 4);
    AddCmp(r, mark.invert ? NFT_CMP_NEQ : NFT_CMP_EQ, &mark.mark, 4);
    return Status::Ok();
  }
  AddCompatMatch(r, m);
  return Status::Ok();
}

void AddVerdict(nftnl_rule* r, int verdict, const std::string* chain) {
  nftnl_expr* e = NewExpr("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(verdict));
  if (chain != nullptr) nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain->c_str());
  nftnl_rule_add_expr(r, e);
}

}  // namespace

namespace {

// An upper bound of the netlink size of a rule's expressions: a compat match or target is its payload and a few
// dozen bytes of headers; the largest native translation of a match (tcp: flags and two port ranges) is seven
// expressions of under 64 bytes each.
size_t ExpressionsBound(const XtRule& rule) {
  constexpr size_t kPerExtension = 512;
  size_t bound = 4 * kPerExtension;  // the header fields, the counter and the verdict
  for (const XtExtension& m : rule.matches) bound += kPerExtension + m.data.size();
  return bound + rule.target.data.size() + rule.target.nflog_prefix.size();
}

}  // namespace

Status EncodeRule(const XtRule& rule, nftnl_rule* r) {
  // The kernel takes a rule's expressions as one netlink attribute (NFTA_RULE_EXPRESSIONS), whose length has 16
  // bits: a longer list wraps it, and nf_tables then reads only the first expressions of the rule (iptables-nft
  // 1.8.9 adds a rule of a few hundred comment matches that way, without its verdict). Refused before anything is
  // built (which also keeps every message within the room NftBatch keeps for one).
  if (const size_t bound = ExpressionsBound(rule); bound > UINT16_MAX) {
    return Status::InvalidArgument("rule too long for nf_tables: its matches take up to " + std::to_string(bound) +
                                   " bytes, more than the 65535 of one netlink attribute");
  }
  const XtHeader& h = rule.header;
  const bool v4 = rule.family == Family::kIPv4;
  if (h.iniface[0] != '\0') AddIface(r, NFT_META_IIFNAME, h.iniface, CmpOp(h, kInvViaIn));
  if (h.outiface[0] != '\0') AddIface(r, NFT_META_OIFNAME, h.outiface, CmpOp(h, kInvViaOut));
  if (h.proto != 0) {
    AddMeta(r, NFT_META_L4PROTO);
    const uint8_t proto = static_cast<uint8_t>(h.proto);
    AddCmp(r, CmpOp(h, kInvProto), &proto, 1);
  }
  const uint32_t alen = v4 ? 4 : 16;
  auto nonzero = [&](const std::array<uint8_t, 16>& a) {
    return std::any_of(a.begin(), a.begin() + alen, [](uint8_t b) { return b != 0; });
  };
  if (nonzero(h.src) || nonzero(h.smsk) || (h.invflags & kInvSrcIp)) {
    AddAddr(r, v4 ? kIp4Saddr : kIp6Saddr, h.src.data(), h.smsk.data(), alen, CmpOp(h, kInvSrcIp));
  }
  if (nonzero(h.dst) || nonzero(h.dmsk) || (h.invflags & kInvDstIp)) {
    AddAddr(r, v4 ? kIp4Daddr : kIp6Daddr, h.dst.data(), h.dmsk.data(), alen, CmpOp(h, kInvDstIp));
  }
  if (v4 && (h.flags & kFlagFrag)) {
    AddPayload(r, NFT_PAYLOAD_NETWORK_HEADER, kIp4FragOff, 2);
    const uint16_t mask = htons(0x1fff);
    AddBitwise(r, &mask, 2);
    const uint16_t zero = 0;
    AddCmp(r, (h.invflags & kInvFrag) ? NFT_CMP_EQ : NFT_CMP_NEQ, &zero, 2);
  }
  nftnl_rule_set_u32(r, NFTNL_RULE_COMPAT_PROTO, h.proto);
  nftnl_rule_set_u32(r, NFTNL_RULE_COMPAT_FLAGS, (h.invflags & kInvProto) ? NFT_RULE_COMPAT_F_INV : 0);

  for (const XtExtension& m : rule.matches) IPTKIT_RETURN_IF_ERROR(AddMatch(rule, r, m));

  // Counters before the verdict (otherwise nf_tables would count each packet that reaches the rule).
  nftnl_expr* counter = NewExpr("counter");
  nftnl_expr_set_u64(counter, NFTNL_EXPR_CTR_PACKETS, rule.counters.packets);
  nftnl_expr_set_u64(counter, NFTNL_EXPR_CTR_BYTES, rule.counters.bytes);
  nftnl_rule_add_expr(r, counter);

  switch (rule.verdict) {
    case XtRule::Verdict::kNone:
      break;
    case XtRule::Verdict::kAccept:
      AddVerdict(r, NF_ACCEPT, nullptr);
      break;
    case XtRule::Verdict::kDrop:
      AddVerdict(r, NF_DROP, nullptr);
      break;
    case XtRule::Verdict::kReturn:
      AddVerdict(r, NFT_RETURN, nullptr);
      break;
    case XtRule::Verdict::kJump:
      AddVerdict(r, NFT_JUMP, &rule.chain);
      break;
    case XtRule::Verdict::kGoto:
      AddVerdict(r, NFT_GOTO, &rule.chain);
      break;
    case XtRule::Verdict::kTarget: {
      const XtExtension& t = rule.target;
      if (rule.jumpto == "NFLOG" && t.data.size() >= offsetof(xt_nflog_info, prefix)) {
        // nft.c add_log: the whole prefix comes from the extension's udata.
        xt_nflog_info info{};
        std::memcpy(&info, t.data.data(), std::min(sizeof(info), t.data.size()));
        nftnl_expr* e = NewExpr("log");
        if (info.prefix[0] != '\0') nftnl_expr_set_str(e, NFTNL_EXPR_LOG_PREFIX, t.nflog_prefix.c_str());
        nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_GROUP, info.group);
        if (info.flags & XT_NFLOG_F_COPY_LEN) nftnl_expr_set_u32(e, NFTNL_EXPR_LOG_SNAPLEN, info.len);
        if (info.threshold) nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_QTHRESHOLD, info.threshold);
        nftnl_rule_add_expr(r, e);
      } else if (t.name == "TRACE") {
        // nft.c add_meta_nftrace.
        nftnl_expr* imm = NewExpr("immediate");
        nftnl_expr_set_u32(imm, NFTNL_EXPR_IMM_DREG, NFT_REG32_01);
        nftnl_expr_set_u8(imm, NFTNL_EXPR_IMM_DATA, 1);
        nftnl_rule_add_expr(r, imm);
        nftnl_expr* meta = NewExpr("meta");
        nftnl_expr_set_u32(meta, NFTNL_EXPR_META_KEY, NFT_META_NFTRACE);
        nftnl_expr_set_u32(meta, NFTNL_EXPR_META_SREG, NFT_REG32_01);
        nftnl_rule_add_expr(r, meta);
      } else {
        nftnl_expr* e = NewExpr("target");
        nftnl_expr_set(e, NFTNL_EXPR_TG_NAME, t.name.c_str(), static_cast<uint32_t>(t.name.size()));
        nftnl_expr_set_u32(e, NFTNL_EXPR_TG_REV, t.revision);
        nftnl_expr_set(e, NFTNL_EXPR_TG_INFO, OwnedCopy(t.data), static_cast<uint32_t>(t.data.size()));
        nftnl_rule_add_expr(r, e);
      }
      break;
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding (nft-shared.c nft_rule_to_iptables_command_state, strict), straight from the netlink attributes of a
// rule message: no libnftnl objects (they cost an allocation per expression, which dominated reading 10,000 rules).

namespace {

// Calls f on each attribute in [start, start + len). (libmnl's mnl_attr_for_each macros do void* arithmetic.)
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

// Attributes of a nested attribute by type (the last one wins; types beyond N are ignored).
template <size_t N>
void Nested(const nlattr* nest, const nlattr* (&tb)[N]) {
  for (auto& a : tb) a = nullptr;
  if (nest == nullptr) return;
  ForEachAttr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), [&](const nlattr* a) {
    const uint16_t type = mnl_attr_get_type(a);
    if (type < N) tb[type] = a;
  });
}

// One expression of a rule: its name and its data attributes by type.
struct ExprView {
  std::string_view name;
  const nlattr* tb[16] = {};

  bool Has(int a) const { return tb[a] != nullptr; }
  uint32_t U32(int a) const {
    return tb[a] != nullptr && mnl_attr_get_payload_len(tb[a]) >= 4 ? ntohl(mnl_attr_get_u32(tb[a])) : 0;
  }
  uint16_t U16(int a) const {
    return tb[a] != nullptr && mnl_attr_get_payload_len(tb[a]) >= 2 ? ntohs(mnl_attr_get_u16(tb[a])) : 0;
  }
  uint64_t U64(int a) const {
    return tb[a] != nullptr && mnl_attr_get_payload_len(tb[a]) >= 8 ? be64toh(mnl_attr_get_u64(tb[a])) : 0;
  }
  // A NUL-terminated string attribute (without the NUL).
  std::string Str(int a) const {
    if (tb[a] == nullptr) return "";
    const char* s = static_cast<const char*>(mnl_attr_get_payload(tb[a]));
    return std::string(s, strnlen(s, mnl_attr_get_payload_len(tb[a])));
  }
  // A binary attribute.
  std::string Raw(int a) const {
    if (tb[a] == nullptr) return "";
    return std::string(static_cast<const char*>(mnl_attr_get_payload(tb[a])), mnl_attr_get_payload_len(tb[a]));
  }
  // The NFTA_DATA_VALUE inside a nested nft_data attribute.
  std::string Data(int a) const {
    const nlattr* d[NFTA_DATA_MAX + 1];
    Nested(tb[a], d);
    if (d[NFTA_DATA_VALUE] == nullptr) return "";
    return std::string(static_cast<const char*>(mnl_attr_get_payload(d[NFTA_DATA_VALUE])),
                       mnl_attr_get_payload_len(d[NFTA_DATA_VALUE]));
  }
};

struct Reg {
  enum class Type { kUndef, kMeta, kPayload, kImmediate };
  Type type = Type::kUndef;
  uint32_t meta_key = 0;
  uint32_t base = 0, offset = 0, len = 0;
  std::string immediate;
  bool bitwise = false;
  std::string mask, xor_;
};

// Fixed-size payloads of the matches iptables-nft creates from native expressions (nft_create_match: the
// extension's size, its init() defaults, then the decoded fields).
template <typename T>
XtExtension NativeMatch(const char* name, uint8_t revision, const T& info) {
  XtExtension m;
  m.name = name;
  m.revision = revision;
  m.data.assign(XT_ALIGN(sizeof(T)), '\0');
  std::memcpy(m.data.data(), &info, sizeof(T));
  return m;
}

class Decoder {
 public:
  explicit Decoder(Family family) : family_(family) { out_.family = family; }

  // `exprs`: NFTA_RULE_EXPRESSIONS; `userdata`: NFTA_RULE_USERDATA (may be null).
  Result<XtRule> Run(const nlattr* exprs, const nlattr* userdata) {
    int position = 0;
    if (exprs != nullptr) {
      ForEachAttr(mnl_attr_get_payload(exprs), mnl_attr_get_payload_len(exprs), [&](const nlattr* elem) {
        if (!error_.empty() || mnl_attr_get_type(elem) != NFTA_LIST_ELEM) return;
        ++position;
        const nlattr* etb[NFTA_EXPR_MAX + 1];
        Nested(elem, etb);
        ExprView e;
        if (etb[NFTA_EXPR_NAME] != nullptr) {
          const char* n = static_cast<const char*>(mnl_attr_get_payload(etb[NFTA_EXPR_NAME]));
          e.name = std::string_view(n, strnlen(n, mnl_attr_get_payload_len(etb[NFTA_EXPR_NAME])));
        }
        Nested(etb[NFTA_EXPR_DATA], e.tb);
        name_ = std::string(e.name);
        if (verdict_done_ && e.name != "counter") {
          error_ = "expression '" + name_ + "' after the verdict";
        } else {
          Expr(e);
        }
      });
    }
    if (!error_.empty()) {
      return Status::FailedPrecondition("expression " + std::to_string(position) + " (" + name_ + "): " + error_);
    }
    if (tcp_) out_.matches[*tcp_] = NativeMatch("tcp", 0, tcp_info_);
    if (udp_) out_.matches[*udp_] = NativeMatch("udp", 0, udp_info_);
    if (userdata != nullptr) {
      IPTKIT_RETURN_IF_ERROR(Userdata(mnl_attr_get_payload(userdata), mnl_attr_get_payload_len(userdata)));
    }
    return std::move(out_);
  }

 private:
  Reg* RegFor(uint32_t reg) {
    size_t i;
    switch (reg) {
      case NFT_REG_VERDICT:
        i = 0;
        break;
      case NFT_REG_1:
        i = 1;
        break;
      case NFT_REG_2:
        i = 5;
        break;
      case NFT_REG_3:
        i = 9;
        break;
      case NFT_REG_4:
        i = 13;
        break;
      default:
        if (reg >= NFT_REG32_00 && reg <= NFT_REG32_15) {
          i = reg - NFT_REG32_00;
          break;
        }
        error_ = "unknown register " + std::to_string(reg);
        return nullptr;
    }
    return &regs_[i];
  }
  Reg* Dreg(uint32_t reg) {
    Reg* r = RegFor(reg);
    if (r != nullptr) *r = Reg{};
    return r;
  }

  void Expr(const ExprView& e) {
    if (e.name == "counter") {
      out_.counters.packets = e.U64(NFTA_COUNTER_PACKETS);
      out_.counters.bytes = e.U64(NFTA_COUNTER_BYTES);
    } else if (e.name == "payload") {
      if (e.Has(NFTA_PAYLOAD_SREG)) {
        error_ = "payload write (packet mangling) iptables does not create";
        return;
      }
      Reg* r = Dreg(e.U32(NFTA_PAYLOAD_DREG));
      if (r == nullptr) return;
      r->type = Reg::Type::kPayload;
      r->base = e.U32(NFTA_PAYLOAD_BASE);
      r->offset = e.U32(NFTA_PAYLOAD_OFFSET);
      r->len = e.U32(NFTA_PAYLOAD_LEN);
    } else if (e.name == "meta") {
      if (e.Has(NFTA_META_SREG)) {
        MetaSet(e);
        return;
      }
      Reg* r = Dreg(e.U32(NFTA_META_DREG));
      if (r == nullptr) return;
      r->type = Reg::Type::kMeta;
      r->meta_key = e.U32(NFTA_META_KEY);
    } else if (e.name == "bitwise") {
      Bitwise(e);
    } else if (e.name == "cmp") {
      Cmp(e);
    } else if (e.name == "immediate") {
      Immediate(e);
    } else if (e.name == "match") {
      XtExtension m;
      m.name = e.Str(NFTA_MATCH_NAME);
      m.revision = static_cast<uint8_t>(e.U32(NFTA_MATCH_REV));
      m.data = e.Raw(NFTA_MATCH_INFO);
      out_.matches.push_back(std::move(m));
    } else if (e.name == "target") {
      if (!SetVerdict()) return;
      out_.verdict = XtRule::Verdict::kTarget;
      out_.target.name = e.Str(NFTA_TARGET_NAME);
      out_.target.revision = static_cast<uint8_t>(e.U32(NFTA_TARGET_REV));
      out_.target.data = e.Raw(NFTA_TARGET_INFO);
      out_.jumpto = out_.target.name;
    } else if (e.name == "limit") {
      Limit(e);
    } else if (e.name == "log") {
      Log(e);
    } else if (e.name == "range") {
      Range(e);
    } else if (e.name == "lookup") {
      const std::string set = e.Str(NFTA_LOOKUP_SET);
      error_ = set.starts_with("__") ? "anonymous set lookup" : "named set lookup (@" + set + ")";
    } else {
      error_ = "native nft expression iptables does not create";
    }
  }

  bool SetVerdict() {
    if (verdict_done_) {
      error_ = "second verdict";
      return false;
    }
    verdict_done_ = true;
    return true;
  }

  void MetaSet(const ExprView& e) {
    Reg* sreg = RegFor(e.U32(NFTA_META_SREG));
    if (sreg == nullptr) return;
    if (e.U32(NFTA_META_KEY) != NFT_META_NFTRACE || sreg->type != Reg::Type::kImmediate || sreg->immediate.empty() ||
        sreg->immediate[0] == 0) {
      error_ = "meta set statement iptables does not create";
      return;
    }
    if (!SetVerdict()) return;
    out_.verdict = XtRule::Verdict::kTarget;
    out_.jumpto = "TRACE";
    out_.target = XtExtension{.name = "TRACE", .revision = 0, .data = "", .nflog_prefix = ""};
  }

  void Bitwise(const ExprView& e) {
    if (e.Has(NFTA_BITWISE_OP) && e.U32(NFTA_BITWISE_OP) != NFT_BITWISE_BOOL) {
      error_ = "shift operation iptables does not create";
      return;
    }
    const uint32_t sregnum = e.U32(NFTA_BITWISE_SREG);
    const uint32_t dregnum = e.U32(NFTA_BITWISE_DREG);
    Reg* sreg = RegFor(sregnum);
    if (sreg == nullptr) return;
    Reg* dreg = sreg;
    if (sregnum != dregnum) {
      dreg = RegFor(dregnum);
      if (dreg == nullptr) return;
      *dreg = *sreg;
    }
    dreg->xor_ = e.Data(NFTA_BITWISE_XOR);
    dreg->mask = e.Data(NFTA_BITWISE_MASK);
    if (dreg->mask.size() > 16 || dreg->xor_.size() > 16) {
      error_ = "bitwise value too large";
      return;
    }
    if (std::any_of(dreg->xor_.begin(), dreg->xor_.end(), [](char c) { return c != 0; })) {
      error_ = "bitwise xor iptables does not create";
      return;
    }
    dreg->bitwise = true;
  }

  void Cmp(const ExprView& e) {
    Reg* sreg = RegFor(e.U32(NFTA_CMP_SREG));
    if (sreg == nullptr) return;
    const uint32_t op = e.U32(NFTA_CMP_OP);
    const std::string data = e.Data(NFTA_CMP_DATA);
    switch (sreg->type) {
      case Reg::Type::kUndef:
        error_ = "compare of an unset register";
        return;
      case Reg::Type::kMeta:
        CmpMeta(*sreg, op, data);
        return;
      case Reg::Type::kPayload:
        if (sreg->base == NFT_PAYLOAD_NETWORK_HEADER) {
          CmpNetwork(*sreg, op, data);
        } else if (sreg->base == NFT_PAYLOAD_TRANSPORT_HEADER) {
          CmpTransport(*sreg, op, data);
        } else {
          error_ = "compare of a link-layer header field iptables ignores";
        }
        return;
      case Reg::Type::kImmediate:
        error_ = "compare of an immediate value";
        return;
    }
  }

  bool EqOrNeq(uint32_t op) {
    if (op == NFT_CMP_EQ || op == NFT_CMP_NEQ) return true;
    error_ = "comparison operator " + std::to_string(op) + " iptables does not create here";
    return false;
  }

  void CmpMeta(const Reg& reg, uint32_t op, const std::string& data) {
    XtHeader& h = out_.header;
    switch (reg.meta_key) {
      case NFT_META_L4PROTO: {
        if (!EqOrNeq(op) || data.size() != 1 || reg.bitwise) {
          if (error_.empty()) error_ = "unexpected meta l4proto compare";
          return;
        }
        if (h.proto != 0 || (h.invflags & kInvProto)) {
          error_ = "second protocol compare";
          return;
        }
        h.proto = static_cast<uint8_t>(data[0]);
        if (family_ == Family::kIPv6) h.flags |= kFlagProto;
        if (op == NFT_CMP_NEQ) h.invflags |= kInvProto;
        return;
      }
      case NFT_META_IIFNAME:
      case NFT_META_OIFNAME: {
        if (!EqOrNeq(op) || reg.bitwise) {
          if (error_.empty()) error_ = "unexpected interface compare";
          return;
        }
        const bool in = reg.meta_key == NFT_META_IIFNAME;
        std::array<char, 16>& name = in ? h.iniface : h.outiface;
        std::array<uint8_t, 16>& mask = in ? h.iniface_mask : h.outiface_mask;
        const uint8_t bit = in ? kInvViaIn : kInvViaOut;
        if (name[0] != '\0' || (h.invflags & bit)) {
          error_ = "second interface compare";
          return;
        }
        if (op == NFT_CMP_NEQ) h.invflags |= bit;
        IfName(data, name, mask);
        // nft's "! -o +" excuse (nft-shared.c parse_invalid_iface).
        if (!(h.invflags & bit) && std::string(name.data(), strnlen(name.data(), name.size())) == "INVAL/D") {
          h.invflags |= bit;
          name.fill('\0');
          mask.fill(0);
          name[0] = '+';
          mask[0] = mask[1] = 0xff;
        }
        return;
      }
      case NFT_META_MARK: {
        if (!EqOrNeq(op) || data.size() != 4) {
          if (error_.empty()) error_ = "unexpected meta mark compare";
          return;
        }
        xt_mark_mtinfo1 mark{};
        if (op == NFT_CMP_NEQ) mark.invert = 1;
        std::memcpy(&mark.mark, data.data(), 4);
        mark.mask = 0xffffffffu;
        if (reg.bitwise) {
          if (reg.mask.size() != 4) {
            error_ = "unexpected meta mark mask";
            return;
          }
          std::memcpy(&mark.mask, reg.mask.data(), 4);
        }
        out_.matches.push_back(NativeMatch("mark", 1, mark));
        return;
      }
      case NFT_META_PKTTYPE: {
        if (!EqOrNeq(op) || data.size() != 1 || reg.bitwise) {
          if (error_.empty()) error_ = "unexpected meta pkttype compare";
          return;
        }
        xt_pkttype_info info{};
        info.pkttype = static_cast<uint8_t>(data[0]);
        info.invert = op == NFT_CMP_NEQ ? 1 : 0;
        out_.matches.push_back(NativeMatch("pkttype", 0, info));
        return;
      }
      default:
        error_ = "meta key " + std::to_string(reg.meta_key) + " iptables does not create";
        return;
    }
  }

  // nft-shared.c parse_ifname.
  static void IfName(const std::string& data, std::array<char, 16>& dst, std::array<uint8_t, 16>& mask) {
    size_t len = std::min(data.size(), dst.size());
    if (len == 0) return;
    std::memcpy(dst.data(), data.data(), len);
    if (data[len - 1] == '\0') {
      std::memset(mask.data(), 0xff, std::min(strnlen(data.data(), len) + 1, mask.size()));
      return;
    }
    if (len >= 16) return;
    dst[len++] = '+';
    if (len >= 16) return;
    dst[len++] = '\0';
    std::memset(mask.data(), 0xff, len - 2);
  }

  void CmpNetwork(const Reg& reg, uint32_t op, const std::string& data) {
    XtHeader& h = out_.header;
    const bool v4 = family_ == Family::kIPv4;
    const uint32_t alen = v4 ? 4 : 16;
    const uint32_t saddr = v4 ? kIp4Saddr : kIp6Saddr;
    const uint32_t daddr = v4 ? kIp4Daddr : kIp6Daddr;
    if (reg.offset == saddr || reg.offset == daddr) {
      const bool src = reg.offset == saddr;
      if (!EqOrNeq(op)) return;
      if (data.size() != reg.len || reg.len > alen || reg.len == 0) {
        error_ = "address compare of " + std::to_string(data.size()) + " bytes on a load of " + std::to_string(reg.len);
        return;
      }
      std::array<uint8_t, 16>& addr = src ? h.src : h.dst;
      std::array<uint8_t, 16>& mask = src ? h.smsk : h.dmsk;
      const uint8_t bit = src ? kInvSrcIp : kInvDstIp;
      if (std::any_of(mask.begin(), mask.end(), [](uint8_t b) { return b != 0; }) || (h.invflags & bit)) {
        error_ = "second address compare";
        return;
      }
      addr.fill(0);
      std::memcpy(addr.data(), data.data(), data.size());
      mask.fill(0);
      if (reg.bitwise) {
        if (reg.mask.size() != reg.len) {
          error_ = "address mask of another length";
          return;
        }
        std::memcpy(mask.data(), reg.mask.data(), reg.mask.size());
      } else {
        std::memset(mask.data(), 0xff, reg.len);
      }
      if (op == NFT_CMP_NEQ) h.invflags |= bit;
      return;
    }
    if (v4 && reg.offset == kIp4Protocol) {
      if (!EqOrNeq(op) || data.size() != 1 || reg.len != 1 || reg.bitwise) {
        if (error_.empty()) error_ = "unexpected protocol compare";
        return;
      }
      if (h.proto != 0 || (h.invflags & kInvProto)) {
        error_ = "second protocol compare";
        return;
      }
      h.proto = static_cast<uint8_t>(data[0]);
      if (op == NFT_CMP_NEQ) h.invflags |= kInvProto;
      return;
    }
    if (v4 && reg.offset == kIp4FragOff) {
      const uint16_t want = htons(0x1fff);
      if (!EqOrNeq(op) || reg.len != 2 || !reg.bitwise || reg.mask.size() != 2 ||
          std::memcmp(reg.mask.data(), &want, 2) != 0 || data != std::string(2, '\0')) {
        if (error_.empty()) error_ = "fragment-offset compare iptables does not create";
        return;
      }
      if (h.flags & kFlagFrag) {
        error_ = "second fragment compare";
        return;
      }
      h.flags |= kFlagFrag;
      if (op == NFT_CMP_EQ) h.invflags |= kInvFrag;
      return;
    }
    if ((v4 && reg.offset == kIp4Ttl) || (!v4 && reg.offset == kIp6Hlim)) {
      Hl(reg, op, data);
      return;
    }
    if (!v4 && reg.offset == kIp6Nexthdr) {
      // iptables 1.8.9 misreads this one (nft_ipv6_parse_payload falls through into the hop-limit case).
      error_ = "IPv6 next-header compare iptables-nft misreads";
      return;
    }
    error_ = "network header field at offset " + std::to_string(reg.offset) + " iptables does not create";
  }

  // nft-shared.c nft_parse_hl.
  void Hl(const Reg& reg, uint32_t op, const std::string& data) {
    if (reg.len != 1 || data.size() != 1 || reg.bitwise) {
      error_ = "unexpected ttl/hop-limit compare";
      return;
    }
    uint8_t hl = static_cast<uint8_t>(data[0]);
    uint8_t mode;
    switch (op) {
      case NFT_CMP_NEQ:
        mode = IP6T_HL_NE;
        break;
      case NFT_CMP_EQ:
        mode = IP6T_HL_EQ;
        break;
      case NFT_CMP_LT:
        mode = IP6T_HL_LT;
        break;
      case NFT_CMP_GT:
        mode = IP6T_HL_GT;
        break;
      case NFT_CMP_LTE:
        mode = IP6T_HL_LT;
        if (hl == 255) {
          error_ = "invalid ttl field match";
          return;
        }
        ++hl;
        break;
      case NFT_CMP_GTE:
        mode = IP6T_HL_GT;
        if (hl == 0) {
          error_ = "invalid ttl field match";
          return;
        }
        --hl;
        break;
      default:
        error_ = "invalid ttl field match";
        return;
    }
    ip6t_hl_info info{};
    info.mode = mode;
    info.hop_limit = hl;
    out_.matches.push_back(NativeMatch(family_ == Family::kIPv4 ? "ttl" : "hl", 0, info));
  }

  xt_tcp* Tcp() {
    if (!tcp_) {
      tcp_ = out_.matches.size();
      out_.matches.push_back(XtExtension{});  // filled in at the end
      tcp_info_ = xt_tcp{};
      tcp_info_.spts[1] = tcp_info_.dpts[1] = 0xffff;
    }
    return &tcp_info_;
  }
  xt_udp* Udp() {
    if (!udp_) {
      udp_ = out_.matches.size();
      out_.matches.push_back(XtExtension{});
      udp_info_ = xt_udp{};
      udp_info_.spts[1] = udp_info_.dpts[1] = 0xffff;
    }
    return &udp_info_;
  }

  // nft-shared.c port_match_single_to_range.
  static void SingleToRange(uint16_t ports[2], uint8_t* invflags, uint32_t op, int port, uint8_t invflag) {
    if (port < 0) return;
    switch (op) {
      case NFT_CMP_NEQ:
        *invflags |= invflag;
        [[fallthrough]];
      case NFT_CMP_EQ:
        ports[0] = ports[1] = static_cast<uint16_t>(port);
        break;
      case NFT_CMP_LT:
        ports[1] = static_cast<uint16_t>(std::max(port - 1, 1));
        break;
      case NFT_CMP_LTE:
        ports[1] = static_cast<uint16_t>(port);
        break;
      case NFT_CMP_GT:
        ports[0] = static_cast<uint16_t>(std::min(port + 1, 0xffff));
        break;
      case NFT_CMP_GTE:
        ports[0] = static_cast<uint16_t>(port);
        break;
    }
  }

  void Ports(uint8_t proto, int sport, int dport, uint32_t op) {
    if (op > NFT_CMP_GTE) {
      error_ = "unexpected port comparison";
      return;
    }
    if (proto == IPPROTO_TCP) {
      xt_tcp* t = Tcp();
      SingleToRange(t->spts, &t->invflags, op, sport, XT_TCP_INV_SRCPT);
      SingleToRange(t->dpts, &t->invflags, op, dport, XT_TCP_INV_DSTPT);
    } else {
      xt_udp* u = Udp();
      SingleToRange(u->spts, &u->invflags, op, sport, XT_UDP_INV_SRCPT);
      SingleToRange(u->dpts, &u->invflags, op, dport, XT_UDP_INV_DSTPT);
    }
  }

  void CmpTransport(const Reg& reg, uint32_t op, const std::string& data) {
    const uint8_t proto = static_cast<uint8_t>(out_.header.proto);
    if (out_.header.invflags & kInvProto) {
      error_ = "transport header compare under an inverted protocol";
      return;
    }
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
      Icmp(reg, op, data);
      return;
    }
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
      error_ = "transport header compare for protocol " + std::to_string(proto);
      return;
    }
    if (reg.offset == 0 && data.size() == 2 && reg.len == 2 && !reg.bitwise) {
      uint16_t port;
      std::memcpy(&port, data.data(), 2);
      Ports(proto, ntohs(port), -1, op);
      return;
    }
    if (reg.offset == 0 && data.size() == 4 && reg.len == 4 && !reg.bitwise) {
      uint32_t both;
      std::memcpy(&both, data.data(), 4);
      both = ntohl(both);
      Ports(proto, static_cast<int>(both >> 16), static_cast<int>(both & 0xffff), op);
      return;
    }
    if (reg.offset == 2 && data.size() == 2 && reg.len == 2 && !reg.bitwise) {
      uint16_t port;
      std::memcpy(&port, data.data(), 2);
      Ports(proto, -1, ntohs(port), op);
      return;
    }
    if (reg.offset == 13 && data.size() == 1 && reg.len == 1 && proto == IPPROTO_TCP) {
      if (!EqOrNeq(op)) return;
      uint8_t mask = 0xff;
      if (reg.bitwise) {
        if (reg.mask.size() != 1) {
          error_ = "unexpected tcp flags mask";
          return;
        }
        mask = static_cast<uint8_t>(reg.mask[0]);
      }
      xt_tcp* t = Tcp();
      if (op == NFT_CMP_NEQ) t->invflags |= XT_TCP_INV_FLAGS;
      t->flg_cmp = static_cast<uint8_t>(data[0]);
      t->flg_mask = mask;
      return;
    }
    error_ = "transport header field at offset " + std::to_string(reg.offset) + " iptables does not create";
  }

  // nft-shared.c nft_parse_icmp (iptables 1.8.9 reads it although it writes icmp as a compat match).
  void Icmp(const Reg& reg, uint32_t op, const std::string& data) {
    if (op != NFT_CMP_EQ || reg.bitwise || data.empty() || data.size() != reg.len) {
      error_ = "icmp compare iptables does not create";
      return;
    }
    ipt_icmp icmp{};
    icmp.type = 0xff;
    icmp.code[0] = 0;
    icmp.code[1] = 0xff;
    size_t at = 0;
    if (reg.offset == 0) {
      icmp.type = static_cast<uint8_t>(data[0]);
      at = 1;
    } else if (reg.offset != 1) {
      error_ = "unexpected icmp payload offset";
      return;
    }
    if (at < data.size()) {
      if (data.size() - at > 1) {
        error_ = "unexpected icmp compare length";
        return;
      }
      icmp.code[0] = icmp.code[1] = static_cast<uint8_t>(data[at]);
    }
    if (family_ == Family::kIPv6) {
      if (icmp.type == 0xff) {
        error_ = "icmp6 code with any type match not supported";
        return;
      }
      out_.matches.push_back(NativeMatch("icmp6", 0, icmp));
    } else {
      out_.matches.push_back(NativeMatch("icmp", 0, icmp));
    }
  }

  void Range(const ExprView& e) {
    Reg* sreg = RegFor(e.U32(NFTA_RANGE_SREG));
    if (sreg == nullptr) return;
    if (sreg->type != Reg::Type::kPayload || sreg->base != NFT_PAYLOAD_TRANSPORT_HEADER) {
      error_ = "range on something other than a transport header field";
      return;
    }
    const std::string from = e.Data(NFTA_RANGE_FROM_DATA);
    const std::string to = e.Data(NFTA_RANGE_TO_DATA);
    const uint32_t op = e.U32(NFTA_RANGE_OP);
    const uint8_t proto = static_cast<uint8_t>(out_.header.proto);
    if (from.size() != 2 || to.size() != 2 || sreg->len != 2 || sreg->bitwise || (op != 0 && op != 1) ||
        (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || (out_.header.invflags & kInvProto) ||
        (sreg->offset != 0 && sreg->offset != 2)) {
      error_ = "port range iptables does not create";
      return;
    }
    uint16_t lo, hi;
    std::memcpy(&lo, from.data(), 2);
    std::memcpy(&hi, to.data(), 2);
    lo = ntohs(lo);
    hi = ntohs(hi);
    const bool src = sreg->offset == 0;
    if (proto == IPPROTO_TCP) {
      xt_tcp* t = Tcp();
      uint16_t* ports = src ? t->spts : t->dpts;
      if (op == NFT_RANGE_NEQ) t->invflags |= src ? XT_TCP_INV_SRCPT : XT_TCP_INV_DSTPT;
      ports[0] = lo;
      ports[1] = hi;
    } else {
      xt_udp* u = Udp();
      uint16_t* ports = src ? u->spts : u->dpts;
      if (op == NFT_RANGE_NEQ) u->invflags |= src ? XT_UDP_INV_SRCPT : XT_UDP_INV_DSTPT;
      ports[0] = lo;
      ports[1] = hi;
    }
  }

  void Immediate(const ExprView& e) {
    const nlattr* d[NFTA_DATA_MAX + 1];
    Nested(e.tb[NFTA_IMMEDIATE_DATA], d);
    if (d[NFTA_DATA_VALUE] != nullptr) {
      Reg* dreg = Dreg(e.U32(NFTA_IMMEDIATE_DREG));
      if (dreg == nullptr) return;
      dreg->type = Reg::Type::kImmediate;
      dreg->immediate = e.Data(NFTA_IMMEDIATE_DATA);
      return;
    }
    const nlattr* v[NFTA_VERDICT_MAX + 1];
    Nested(d[NFTA_DATA_VERDICT], v);
    if (v[NFTA_VERDICT_CODE] == nullptr) {
      error_ = "immediate without data or verdict";
      return;
    }
    const int verdict = static_cast<int>(ntohl(mnl_attr_get_u32(v[NFTA_VERDICT_CODE])));
    if (!SetVerdict()) return;
    switch (verdict) {
      case NF_ACCEPT:
        out_.verdict = XtRule::Verdict::kAccept;
        return;
      case NF_DROP:
        out_.verdict = XtRule::Verdict::kDrop;
        return;
      case NFT_RETURN:
        out_.verdict = XtRule::Verdict::kReturn;
        return;
      case NFT_JUMP:
      case NFT_GOTO: {
        if (v[NFTA_VERDICT_CHAIN] == nullptr) {
          error_ = "jump without a chain name";
          return;
        }
        out_.verdict = verdict == NFT_JUMP ? XtRule::Verdict::kJump : XtRule::Verdict::kGoto;
        const char* chain = static_cast<const char*>(mnl_attr_get_payload(v[NFTA_VERDICT_CHAIN]));
        out_.chain = std::string(chain, strnlen(chain, mnl_attr_get_payload_len(v[NFTA_VERDICT_CHAIN])));
        return;
      }
      default:
        error_ = "verdict " + std::to_string(verdict) + " iptables does not create";
        return;
    }
  }

  void Limit(const ExprView& e) {
    if (e.U32(NFTA_LIMIT_TYPE) != NFT_LIMIT_PKTS || e.U32(NFTA_LIMIT_FLAGS) != 0) {
      error_ = "byte-based or inverted limit iptables does not create";
      return;
    }
    const uint64_t rate = e.U64(NFTA_LIMIT_RATE);
    const uint64_t unit = e.U64(NFTA_LIMIT_UNIT);
    if (rate == 0) {
      error_ = "limit of rate 0";
      return;
    }
    xt_rateinfo info{};
    info.avg = static_cast<uint32_t>(kLimitScale * unit / rate);
    info.burst = e.U32(NFTA_LIMIT_BURST);
    out_.matches.push_back(NativeMatch("limit", 0, info));
  }

  void Log(const ExprView& e) {
    if (!e.Has(NFTA_LOG_GROUP)) {
      error_ = "log statement without a group (nft's syslog logging) iptables does not create";
      return;
    }
    if (!SetVerdict()) return;
    // nft-shared.c nft_parse_log: xt_nflog_info with a 128-byte prefix.
    struct NflogNft {
      uint32_t len;
      uint16_t group;
      uint16_t threshold;
      uint16_t flags;
      uint16_t pad;
      char prefix[128];  // NF_LOG_PREFIXLEN
    } info{};
    info.group = e.U16(NFTA_LOG_GROUP);
    info.threshold = e.U16(NFTA_LOG_QTHRESHOLD);
    if (e.Has(NFTA_LOG_SNAPLEN)) {
      info.len = e.U32(NFTA_LOG_SNAPLEN);
      info.flags = XT_NFLOG_F_COPY_LEN;
    }
    std::string prefix;
    if (e.Has(NFTA_LOG_PREFIX)) {
      prefix = e.Str(NFTA_LOG_PREFIX);
      std::snprintf(info.prefix, sizeof(info.prefix), "%s", prefix.c_str());
    }
    out_.verdict = XtRule::Verdict::kTarget;
    out_.jumpto = "NFLOG";
    out_.target = NativeMatch("NFLOG", 0, info);
    out_.target.nflog_prefix = prefix;
  }

  // A comment kept as rule userdata (nft.c get_comment), appended as the last match.
  Status Userdata(const void* data, uint32_t len) {
    const nftnl_udata* comment = nullptr;
    struct Ctx {
      const nftnl_udata** comment;
      bool bad;
    } ctx{&comment, false};
    auto cb = [](const nftnl_udata* attr, void* p) -> int {
      auto* c = static_cast<Ctx*>(p);
      const unsigned char* value = static_cast<const unsigned char*>(nftnl_udata_get(attr));
      const uint8_t type = nftnl_udata_type(attr);
      const uint8_t l = nftnl_udata_len(attr);
      if (type == 0) {  // UDATA_TYPE_COMMENT
        if (l == 0 || value[l - 1] != '\0') {
          c->bad = true;
          return -1;
        }
        *c->comment = attr;
      }
      return 0;
    };
    if (nftnl_udata_parse(data, len, cb, &ctx) < 0 || ctx.bad) {
      return Status::FailedPrecondition("rule userdata iptables cannot parse");
    }
    if (comment == nullptr) return Status::Ok();
    xt_comment_info info{};
    std::strncpy(reinterpret_cast<char*>(info.comment), static_cast<const char*>(nftnl_udata_get(comment)),
                 sizeof(info.comment) - 1);
    out_.matches.push_back(NativeMatch("comment", 0, info));
    return Status::Ok();
  }

  Family family_;
  XtRule out_;
  std::array<Reg, 16> regs_;
  std::string error_;
  std::string name_;
  bool verdict_done_ = false;
  std::optional<size_t> tcp_, udp_;  // index of the tcp/udp match built from native expressions
  xt_tcp tcp_info_{};
  xt_udp udp_info_{};
};

}  // namespace

RuleLocation RuleMessageLocation(const nlmsghdr* nlh) {
  RuleLocation loc;
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  if (end <= start) return loc;
  ForEachAttr(start, static_cast<size_t>(end - start), [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case NFTA_RULE_TABLE:
      case NFTA_RULE_CHAIN: {
        const char* s = static_cast<const char*>(mnl_attr_get_payload(a));
        std::string_view v(s, strnlen(s, mnl_attr_get_payload_len(a)));
        (mnl_attr_get_type(a) == NFTA_RULE_TABLE ? loc.table : loc.chain) = v;
        break;
      }
      case NFTA_RULE_HANDLE:
        if (mnl_attr_get_payload_len(a) == 8) loc.handle = be64toh(mnl_attr_get_u64(a));
        break;
      case NFTA_RULE_EXPRESSIONS:
        loc.expressions = a;
        break;
      case NFTA_RULE_USERDATA:
        loc.userdata = a;
        break;
      default:
        break;
    }
  });
  return loc;
}

Result<XtRule> DecodeRuleMessage(Family family, const nlmsghdr* nlh) {
  RuleLocation loc = RuleMessageLocation(nlh);
  return Decoder(family).Run(loc.expressions, loc.userdata);
}

Result<XtRule> RoundTrip(const XtRule& rule) {
  struct RuleFree {
    void operator()(nftnl_rule* r) const { nftnl_rule_free(r); }
  };
  std::unique_ptr<nftnl_rule, RuleFree> r(nftnl_rule_alloc());
  if (!r) return Status::Internal("nftnl_rule_alloc failed");
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, rule.family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, "t");
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, "c");
  IPTKIT_RETURN_IF_ERROR(EncodeRule(rule, r.get()));
  // Room for the message, sized for this rule: each extension's payload and names twice over plus 512 bytes for
  // its native expressions (the largest is a few hundred bytes), instead of a fixed 64 KiB (16 pages to fault in and
  // clear for every rule). Zero-filled, as before.
  auto extension_room = [](const XtExtension& e) {
    return 512 + 2 * (e.name.size() + e.data.size() + e.nflog_prefix.size());
  };
  size_t room = 4096 + 2 * (rule.chain.size() + rule.jumpto.size()) + extension_room(rule.target);
  for (const XtExtension& e : rule.matches) room += extension_room(e);
  std::vector<char> buf(room);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWRULE,
                                        rule.family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6, 0, 0);
  nftnl_rule_nlmsg_build_payload(nlh, r.get());
  return DecodeRuleMessage(rule.family, nlh);
}

}  // namespace iptkit::backend::native
