// XtRule: one rule in the binary form iptables-nft 1.8.9 builds before it talks to the kernel (its
// iptables_command_state): the fixed header fields (struct ipt_ip / ip6t_ip6), the extension instances
// (xt_entry_match / xt_entry_target payloads) and the verdict. The native backend's two halves meet here: the
// libxtables wrapper (xtables.h) turns model rules into XtRules and XtRules into iptables-save text; the rule codec
// (rule_codec.h) turns XtRules into nf_tables expressions and back, exactly as iptables-nft does.
// Thread-safety: plain values.
#ifndef IPTKIT_SRC_BACKEND_NATIVE_XT_RULE_H_
#define IPTKIT_SRC_BACKEND_NATIVE_XT_RULE_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "iptkit/model.h"

namespace iptkit::backend::native {

// Header flag and inversion bits (linux/netfilter_ipv4/ip_tables.h; ip6_tables.h uses the same values for the
// bits both families have).
inline constexpr uint8_t kInvViaIn = 0x01;   // IPT_INV_VIA_IN
inline constexpr uint8_t kInvViaOut = 0x02;  // IPT_INV_VIA_OUT
inline constexpr uint8_t kInvSrcIp = 0x08;   // IPT_INV_SRCIP
inline constexpr uint8_t kInvDstIp = 0x10;   // IPT_INV_DSTIP
inline constexpr uint8_t kInvFrag = 0x20;    // IPT_INV_FRAG (IPv4 only)
inline constexpr uint8_t kInvProto = 0x40;   // XT_INV_PROTO
inline constexpr uint8_t kFlagFrag = 0x01;   // IPT_F_FRAG (IPv4)
inline constexpr uint8_t kFlagProto = 0x01;  // IP6T_F_PROTO (IPv6: set by ip6tables whenever -p is given)

// One extension instance: what iptables puts into an xt_entry_match / xt_entry_target.
struct XtExtension {
  std::string name;      // as the kernel knows it (an alias's real name: -j NOTRACK is "CT")
  uint8_t revision = 0;  // the revision libxtables picked (the highest the kernel supports)
  std::string data;      // the info payload (u.match_size - sizeof(struct xt_entry_match) bytes)
  // NFLOG only: the whole --nflog-prefix (the payload holds 63 bytes of it); iptables-nft writes a native log
  // expression from this.
  std::string nflog_prefix;
  friend bool operator==(const XtExtension&, const XtExtension&) = default;
};

struct XtHeader {
  std::array<uint8_t, 16> src{}, smsk{}, dst{}, dmsk{};  // IPv4 uses the first 4 bytes; network order
  std::array<char, 16> iniface{}, outiface{};            // IFNAMSIZ
  std::array<uint8_t, 16> iniface_mask{}, outiface_mask{};
  uint16_t proto = 0;
  uint8_t flags = 0;     // kFlagFrag / kFlagProto
  uint8_t invflags = 0;  // kInv*
  friend bool operator==(const XtHeader&, const XtHeader&) = default;
};

struct XtRule {
  Family family = Family::kIPv4;
  XtHeader header;
  std::vector<XtExtension> matches;  // in rule order; a comment kept as rule userdata comes last
  enum class Verdict {
    kNone,    // no -j/-g: continue
    kAccept,  // -j ACCEPT
    kDrop,    // -j DROP
    kReturn,  // -j RETURN
    kJump,    // -j CHAIN
    kGoto,    // -g CHAIN
    kTarget,  // -j EXTENSION (target set)
  };
  Verdict verdict = Verdict::kNone;
  std::string chain;   // kJump / kGoto
  std::string jumpto;  // kTarget: the name after -j as iptables prints it without an alias (the extension's name)
  XtExtension target;  // kTarget
  Counters counters;
  friend bool operator==(const XtRule&, const XtRule&) = default;
};

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_XT_RULE_H_
