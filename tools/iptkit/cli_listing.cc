// The layouts follow iptables 1.8.9: iptables/xshared.c (print_header, print_rule_details, print_fragment,
// print_ifaces, print_ipv4_addresses), iptables/iptables.c (list_entries, print_firewall), libxtables
// (xtables_print_num, xtables_ipmask_to_numeric) and each extension's print function (extensions/libxt_*.c).
// `iptables -L` is always numeric here (-n): iptkit never resolves names.
#include "tools/iptkit/cli_listing.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <string_view>
#include <vector>

#include "iptkit/dialect.h"

namespace iptkit::cli {
namespace {

const Option* Find(const std::vector<Option>& options, std::string_view name) {
  for (const Option& o : options) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

std::string First(const Option* o) { return o == nullptr || o->values.empty() ? "" : o->values.front(); }

uint32_t ParseU32(const std::string& text) { return static_cast<uint32_t>(std::strtoul(text.c_str(), nullptr, 0)); }

// ---- Columns ----

// xtables_print_num: a counter column.
std::string Num(uint64_t n, bool exact) {
  if (exact) return fmt::format("{:>8} ", n);
  if (n <= 99999) return fmt::format("{:>5} ", n);
  const char* units = "KMGT";
  for (int u = 0;; ++u) {
    n = (n + 500) / 1000;
    if (n <= 9999 || u == 3) return fmt::format("{:>4}{} ", n, units[u]);
  }
}

// The same without padding (the policy counters of a chain header, FMT_NOTABLE).
std::string NumNoTable(uint64_t n, bool exact) {
  if (exact || n <= 99999) return fmt::format("{} ", n);
  const char* units = "KMGT";
  for (int u = 0;; ++u) {
    n = (n + 500) / 1000;
    if (n <= 9999 || u == 3) return fmt::format("{}{} ", n, units[u]);
  }
}

// iptables' protocol number for the name iptables-save prints (xtables_chain_protos, then /etc/protocols).
unsigned ProtocolNumber(const std::string& name) {
  if (name.empty()) return 0;
  if (std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) return ParseU32(name);
  static const std::map<std::string, unsigned, std::less<>> kProtos = {
      {"tcp", 6},        {"sctp", 132}, {"udp", 17}, {"udplite", 136}, {"icmp", 1},      {"icmpv6", 58},
      {"ipv6-icmp", 58}, {"esp", 50},   {"ah", 51},  {"mh", 135},      {"ipv6-mh", 135}, {"all", 0},
  };
  if (auto it = kProtos.find(name); it != kProtos.end()) return it->second;
  protoent entry{};
  protoent* result = nullptr;
  char buffer[1024];
  if (getprotobyname_r(name.c_str(), &entry, buffer, sizeof(buffer), &result) == 0 && result != nullptr) {
    return static_cast<unsigned>(result->p_proto);
  }
  return 0;
}

// "/N" for a prefix, "" for a host, "/a.b.c.d" for a mask that is not a prefix (xtables_ipmask_to_numeric).
std::string MaskSuffix(Family family, std::string_view mask) {
  const int host = family == Family::kIPv4 ? 32 : 128;
  if (mask.empty()) return "";
  if (std::all_of(mask.begin(), mask.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int bits = std::atoi(std::string(mask).c_str());
    return bits == host ? "" : "/" + std::string(mask);
  }
  if (family == Family::kIPv4) {
    in_addr a{};
    if (inet_pton(AF_INET, std::string(mask).c_str(), &a) == 1) {
      uint32_t m = ntohl(a.s_addr);
      int bits = 0;
      while (bits < 32 && (m & (0x80000000u >> bits)) != 0) ++bits;
      const uint32_t prefix = bits == 0 ? 0 : ~0u << (32 - bits);
      if (m == prefix) return bits == 32 ? "" : "/" + std::to_string(bits);
    }
  }
  return "/" + std::string(mask);
}

// `text` left-aligned in `width` columns, as fmt's "{:<W}" pads it (never cut). fmt counts columns, not bytes, in
// UTF-8: only ASCII is padded by hand (a row is a dozen of these; fmt's run-time format parsing was most of a row).
void AppendPadded(std::string& out, std::string_view text, size_t width) {
  if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
    fmt::format_to(std::back_inserter(out), "{:<{}}", text, width);
    return;
  }
  out += text;
  if (text.size() < width) out.append(width - text.size(), ' ');
}

void AppendPaddedNumber(std::string& out, uint64_t n, size_t width) {
  char buf[24];
  AppendPadded(out, std::string_view(buf, std::to_chars(buf, buf + sizeof(buf), n).ptr - buf), width);
}

// An address column: '!' or ' ', then the address padded to 19 (print_ipv4_addresses), appended to `out`.
void AppendAddressColumn(std::string& out, Family family, const std::optional<Field>& field) {
  if (!field) {
    out += ' ';
    AppendPadded(out, family == Family::kIPv4 ? "0.0.0.0/0" : "::/0", 19);
    out += ' ';
    return;
  }
  const std::string_view value = field->value;
  const size_t slash = value.find('/');
  out += field->negated ? '!' : ' ';
  if (slash == std::string_view::npos) {
    AppendPadded(out, value, 19);
  } else if (const std::string_view mask = value.substr(slash + 1); mask == (family == Family::kIPv4 ? "32" : "128")) {
    AppendPadded(out, value.substr(0, slash), 19);  // a host: MaskSuffix is ""
  } else {
    AppendPadded(out, std::string(value.substr(0, slash)) + MaskSuffix(family, mask), 19);
  }
  out += ' ';
}

std::string Interface(const std::optional<Field>& field) {
  if (!field) return "*";
  return (field->negated ? "!" : "") + field->value;
}

// ---- Extension printers (the "rest" column); each part starts with a blank ----

using MatchPrinter = std::function<void(const Match&, Family, std::string&)>;
using TargetPrinter = std::function<void(const Target&, Family, std::string&)>;

std::string Neg(const Option* o, std::string_view text) { return o != nullptr && o->negated ? std::string(text) : ""; }

// The options of a match or target exactly as iptables-save prints them (with each extension's quoting), for
// extensions iptkit has no printer for: " --hashlimit-upto 5/sec --hashlimit-name foo".
std::string OptionsText(const std::string& name, const std::vector<Option>& options, bool target = false) {
  Rule only;
  std::string prefix;
  if (target) {
    only.target = Target::Jump(name, options);
    prefix = "-j " + name;
  } else {
    only.matches.push_back(Match{name, options});
    prefix = "-m " + name;
  }
  std::string text = FormatRuleSpec(only);
  return text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : " " + text;
}

// The same without the dashes and with the values as they are: printers that print their save text without
// "--" (conntrack_dump, the state and set matches, CT). `quoted` lists options whose value is printed with
// xtables_save_string in both forms (NFLOG's prefix).
std::string PlainOptionsText(const std::vector<Option>& options, std::string_view quoted = {}) {
  std::string out;
  for (const Option& o : options) {
    if (o.negated) out += " !";
    out += " " + o.name;
    for (const std::string& v : o.values) out += " " + (o.name == quoted ? QuoteRestoreToken(v) : v);
  }
  return out;
}

void PrintPort(std::string_view label, const Option* o, std::string& out) {
  if (o == nullptr) return;
  static const std::string kNone;
  const std::string& v = o->values.empty() ? kNone : o->values.front();
  out += ' ';
  out += label;
  if (v.find(':') != std::string::npos) out += 's';
  out += ':';
  if (o->negated) out += '!';
  out += v;
}

unsigned TcpFlags(const std::string& names) {
  static const std::map<std::string, unsigned, std::less<>> kFlags = {
      {"FIN", 0x01}, {"SYN", 0x02}, {"RST", 0x04}, {"PSH", 0x08}, {"ACK", 0x10},
      {"URG", 0x20}, {"ECE", 0x40}, {"CWR", 0x80}, {"ALL", 0x3F}, {"NONE", 0},
  };
  unsigned bits = 0;
  size_t pos = 0;
  while (pos <= names.size()) {
    size_t end = names.find(',', pos);
    if (end == std::string::npos) end = names.size();
    auto it = kFlags.find(std::string_view(names).substr(pos, end - pos));
    if (it != kFlags.end()) bits |= it->second;
    pos = end + 1;
  }
  return bits;
}

void PrintTcpUdp(const Match& m, std::string_view name, std::string& out) {
  out += ' ';
  out += name;
  PrintPort("spt", Find(m.options, "sport"), out);
  PrintPort("dpt", Find(m.options, "dport"), out);
  if (const Option* o = Find(m.options, "tcp-option")) out += " option=" + Neg(o, "!") + First(o);
  if (const Option* o = Find(m.options, "tcp-flags"); o != nullptr && o->values.size() == 2) {
    out += fmt::format(" flags:{}0x{:02X}/0x{:02X}", Neg(o, "!"), TcpFlags(o->values[0]), TcpFlags(o->values[1]));
  }
}

// icmp and icmp6 (print_icmptype, numeric): "type T", " code C" or " codes A-B".
void PrintIcmp(const Option* o, std::string& out) {
  if (o == nullptr) return;
  const std::string v = First(o);
  unsigned type = 255, code_min = 0, code_max = 255;
  if (v != "any") {
    size_t slash = v.find('/');
    type = ParseU32(v.substr(0, slash));
    if (slash != std::string::npos) code_min = code_max = ParseU32(v.substr(slash + 1));
  }
  out += Neg(o, " !") + fmt::format("type {}", type);
  if (code_min == code_max) {
    out += fmt::format(" code {}", code_min);
  } else if (code_min != 0 || code_max != 255) {
    out += fmt::format(" codes {}-{}", code_min, code_max);
  }
}

// mark/mask of MARK and CONNMARK's --set-xmark "0xV/0xM".
std::pair<uint32_t, uint32_t> ValueMask(const std::string& v) {
  size_t slash = v.find('/');
  uint32_t value = ParseU32(v.substr(0, slash));
  uint32_t mask = slash == std::string::npos ? 0xffffffffu : ParseU32(v.substr(slash + 1));
  return {value, mask};
}

std::string XmarkText(std::string_view what, uint32_t mark, uint32_t mask) {
  if (mark == 0) return fmt::format(" {} and 0x{:x}", what, ~mask);
  if (mark == mask) return fmt::format(" {} or 0x{:x}", what, mark);
  if (mask == 0) return fmt::format(" {} xor 0x{:x}", what, mark);
  if (mask == 0xffffffffu) return fmt::format(" {} set 0x{:x}", what, mark);
  return fmt::format(" {} xset 0x{:x}/0x{:x}", what, mark, mask);
}

const std::map<std::string, MatchPrinter, std::less<>>& MatchPrinters() {
  static const std::map<std::string, MatchPrinter, std::less<>> kPrinters = {
      {"tcp", [](const Match& m, Family, std::string& out) { PrintTcpUdp(m, "tcp", out); }},
      {"udp", [](const Match& m, Family, std::string& out) { PrintTcpUdp(m, "udp", out); }},
      {"icmp",
       [](const Match& m, Family, std::string& out) {
         out += " icmp";
         PrintIcmp(Find(m.options, "icmp-type"), out);
       }},
      {"icmp6",
       [](const Match& m, Family, std::string& out) {
         out += " ipv6-icmp";
         PrintIcmp(Find(m.options, "icmpv6-type"), out);
       }},
      {"comment",
       [](const Match& m, Family, std::string& out) { out += " /* " + First(Find(m.options, "comment")) + " */"; }},
      // conntrack_dump() prints its options as its save function does, without the dashes.
      {"conntrack", [](const Match& m, Family, std::string& out) { out += PlainOptionsText(m.options); }},
      {"state", [](const Match& m, Family, std::string& out) { out += PlainOptionsText(m.options); }},
      {"multiport",
       [](const Match& m, Family, std::string& out) {
         for (std::string_view which : {"sports", "dports", "ports"}) {
           const Option* o = Find(m.options, which);
           if (o == nullptr) continue;
           out += " multiport " + std::string(which) + " " + Neg(o, " !") + First(o);
         }
       }},
      {"limit",
       [](const Match& m, Family, std::string& out) {
         const Option* rate = Find(m.options, "limit");
         const Option* burst = Find(m.options, "limit-burst");
         out += " limit: avg " + (rate ? First(rate) : "3/hour") + " burst " + (burst ? First(burst) : "5");
       }},
      {"mark",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "mark");
         out += " mark match" + Neg(o, " !") + " " + First(o);
       }},
      {"connmark",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "mark");
         out += " connmark match " + Neg(o, "!") + " " + First(o);
       }},
      {"mac",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "mac-source");
         std::string mac = First(o);
         std::transform(mac.begin(), mac.end(), mac.begin(), [](unsigned char c) { return std::tolower(c); });
         out += " MAC " + Neg(o, "! ") + mac;
       }},
      {"length",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "length");
         out += " length " + Neg(o, "!") + First(o);
       }},
      {"pkttype",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "pkt-type");
         out += " PKTTYPE " + Neg(o, "!") + "= " + First(o);
       }},
      {"addrtype",
       [](const Match& m, Family, std::string& out) {
         out += " ADDRTYPE match";
         if (const Option* o = Find(m.options, "src-type")) out += " src-type " + Neg(o, "!") + First(o);
         if (const Option* o = Find(m.options, "dst-type")) out += " dst-type " + Neg(o, "!") + First(o);
         if (Find(m.options, "limit-iface-in")) out += " limit-in";
         if (Find(m.options, "limit-iface-out")) out += " limit-out";
       }},
      {"iprange",
       [](const Match& m, Family, std::string& out) {
         if (const Option* o = Find(m.options, "src-range")) out += " source IP range" + Neg(o, " !") + " " + First(o);
         if (const Option* o = Find(m.options, "dst-range")) {
           out += " destination IP range" + Neg(o, " !") + " " + First(o);
         }
       }},
      {"set",
       [](const Match& m, Family, std::string& out) {
         std::vector<Option> rest;
         for (const Option& o : m.options) {
           if (o.name == "match-set" && o.values.size() == 2) {
             out += std::string(o.negated ? " !" : "") + " match-set " + o.values[0] + " " + o.values[1];
           } else {
             rest.push_back(o);
           }
         }
         out += PlainOptionsText(rest);
       }},
      {"ttl",
       [](const Match& m, Family, std::string& out) {
         for (const Option& o : m.options) {
           std::string op = o.name == "ttl-eq" ? (o.negated ? "!=" : "==") : o.name == "ttl-lt" ? "<" : ">";
           out += " TTL match TTL " + op + " " + First(&o);
         }
       }},
      {"hl",
       [](const Match& m, Family, std::string& out) {
         for (const Option& o : m.options) {
           std::string op = o.name == "hl-eq" ? (o.negated ? "!=" : "==") : o.name == "hl-lt" ? "<" : ">";
           out += " HL match HL " + op + " " + First(&o);
         }
       }},
      {"owner",
       [](const Match& m, Family, std::string& out) {
         struct Item {
           std::string_view option, label;
         };
         for (Item item : {Item{"socket-exists", "owner socket exists"}, Item{"uid-owner", "owner UID match"},
                           Item{"gid-owner", "owner GID match"}, Item{"suppl-groups", "incl. suppl. groups"}}) {
           const Option* o = Find(m.options, item.option);
           if (o == nullptr) continue;
           out += Neg(o, " !") + " " + std::string(item.label);
           if (!o->values.empty()) out += " " + First(o);
         }
       }},
      {"dscp",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "dscp");
         out += " DSCP match " + Neg(o, "!") + First(o);
       }},
      {"tcpmss",
       [](const Match& m, Family, std::string& out) {
         const Option* o = Find(m.options, "mss");
         out += " tcpmss match " + Neg(o, "!") + First(o);
       }},
      {"physdev",
       [](const Match& m, Family, std::string& out) { out += " PHYSDEV match" + OptionsText(m.name, m.options); }},
  };
  return kPrinters;
}

void PrintNatFlags(const Target& t, std::string& out) {
  for (std::string_view flag : {"random", "random-fully", "persistent"}) {
    if (Find(t.options, flag)) out += " " + std::string(flag);
  }
}

const std::map<std::string, TargetPrinter, std::less<>>& TargetPrinters() {
  static const std::map<std::string, TargetPrinter, std::less<>> kPrinters = {
      {"LOG",
       [](const Target& t, Family, std::string& out) {
         unsigned flags = 0;
         if (Find(t.options, "log-tcp-sequence")) flags |= 0x01;
         if (Find(t.options, "log-tcp-options")) flags |= 0x02;
         if (Find(t.options, "log-ip-options")) flags |= 0x04;
         if (Find(t.options, "log-uid")) flags |= 0x08;
         if (Find(t.options, "log-macdecode")) flags |= 0x20;
         const Option* level = Find(t.options, "log-level");
         out += fmt::format(" LOG flags {} level {}", flags, level ? First(level) : "4");
         if (const Option* prefix = Find(t.options, "log-prefix")) out += " prefix \"" + First(prefix) + "\"";
       }},
      {"REJECT",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "reject-with")) out += " reject-with " + First(o);
       }},
      {"DNAT",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "to-destination")) out += " to:" + First(o);
         PrintNatFlags(t, out);
       }},
      {"SNAT",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "to-source")) out += " to:" + First(o);
         PrintNatFlags(t, out);
       }},
      {"MASQUERADE",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "to-ports")) out += " masq ports: " + First(o);
         PrintNatFlags(t, out);
       }},
      {"REDIRECT",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "to-ports")) out += " redir ports " + First(o);
         PrintNatFlags(t, out);
       }},
      {"MARK",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "set-xmark")) {
           auto [mark, mask] = ValueMask(First(o));
           out += XmarkText("MARK", mark, mask);
         } else {
           out += OptionsText(t.name, t.options, /*target=*/true);
         }
       }},
      {"CONNMARK",
       [](const Target& t, Family, std::string& out) {
         const Option* nf = Find(t.options, "nfmask");
         const Option* ct = Find(t.options, "ctmask");
         const uint32_t nfmask = nf ? ParseU32(First(nf)) : 0xffffffffu;
         const uint32_t ctmask = ct ? ParseU32(First(ct)) : 0xffffffffu;
         if (const Option* o = Find(t.options, "set-xmark")) {
           auto [mark, mask] = ValueMask(First(o));
           out += XmarkText("CONNMARK", mark, mask);
         } else if (Find(t.options, "save-mark")) {
           if (nfmask == 0xffffffffu && ctmask == 0xffffffffu) {
             out += " CONNMARK save";
           } else if (nfmask == ctmask) {
             out += fmt::format(" CONNMARK save mask 0x{:x}", nfmask);
           } else {
             out += fmt::format(" CONNMARK save nfmask 0x{:x} ctmask ~0x{:x}", nfmask, ctmask);
           }
         } else if (Find(t.options, "restore-mark")) {
           if (nfmask == 0xffffffffu && ctmask == 0xffffffffu) {
             out += " CONNMARK restore";
           } else if (nfmask == ctmask) {
             out += fmt::format(" CONNMARK restore mask 0x{:x}", ctmask);
           } else {
             out += fmt::format(" CONNMARK restore ctmask 0x{:x} nfmask ~0x{:x}", ctmask, nfmask);
           }
         } else {
           out += OptionsText(t.name, t.options, /*target=*/true);
         }
       }},
      {"NFLOG", [](const Target& t, Family, std::string& out) { out += PlainOptionsText(t.options, "nflog-prefix"); }},
      {"NFQUEUE",
       [](const Target& t, Family, std::string& out) {
         if (const Option* o = Find(t.options, "queue-balance")) {
           out += " NFQUEUE balance " + First(o);
         } else {
           const Option* num = Find(t.options, "queue-num");
           out += " NFQUEUE num " + (num ? First(num) : "0");
         }
         if (Find(t.options, "queue-bypass")) out += " bypass";
         if (Find(t.options, "queue-cpu-fanout")) out += " cpu-fanout";
       }},
      {"CT", [](const Target& t, Family, std::string& out) { out += " CT" + PlainOptionsText(t.options); }},
      {"NOTRACK", [](const Target&, Family, std::string& out) { out += " NOTRACK"; }},
      {"TTL",
       [](const Target& t, Family, std::string& out) {
         for (const Option& o : t.options) {
           std::string mode = o.name == "ttl-set" ? "set to" : o.name == "ttl-dec" ? "decrement by" : "increment by";
           out += " TTL " + mode + " " + First(&o);
         }
       }},
      {"HL",
       [](const Target& t, Family, std::string& out) {
         for (const Option& o : t.options) {
           std::string mode = o.name == "hl-set" ? "set to" : o.name == "hl-dec" ? "decrement by" : "increment by";
           out += " HL " + mode + " " + First(&o);
         }
       }},
      {"TCPMSS",
       [](const Target& t, Family, std::string& out) {
         if (Find(t.options, "clamp-mss-to-pmtu")) {
           out += " TCPMSS clamp to PMTU";
         } else {
           out += " TCPMSS set " + First(Find(t.options, "set-mss"));
         }
       }},
  };
  return kPrinters;
}

// The last column of a row (FormatRuleDetails), appended to `out`.
void AppendRuleDetails(std::string& out, Family family, const Rule& rule) {
  for (const Match& m : rule.matches) {
    const auto& printers = MatchPrinters();
    if (auto it = printers.find(m.name); it != printers.end()) {
      it->second(m, family, out);
    } else {
      out += " " + m.name + OptionsText(m.name, m.options);
    }
  }
  if (rule.target.kind == Target::Kind::kJump) {
    const auto& printers = TargetPrinters();
    if (auto it = printers.find(rule.target.name); it != printers.end()) {
      it->second(rule.target, family, out);
    } else {
      out += OptionsText(rule.target.name, rule.target.options, /*target=*/true);
    }
  }
}

// "N references": how many rules of the table jump or go to each chain (counted once for every header).
std::map<std::string_view, size_t> References(const Table& table) {
  std::map<std::string_view, size_t> refs;
  for (const Chain& c : table.chains) {
    for (const Rule& r : c.rules) {
      if (!r.target.empty()) ++refs[r.target.name];
    }
  }
  return refs;
}

bool OwnedBy(const Rule& rule, const std::string& owner) {
  if (owner.empty()) return true;
  std::optional<Rule::Tag> tag = rule.OwnerTag();
  return tag && tag->owner == owner;
}

bool ChainShown(const Chain& chain, const ListingFormat& format) {
  if (!format.chain.empty() && chain.name != format.chain) return false;
  if (format.owner.empty()) return true;
  return std::any_of(chain.rules.begin(), chain.rules.end(), [&](const Rule& r) { return OwnedBy(r, format.owner); });
}

std::string Header(const Chain& chain, size_t references, const ListingFormat& format) {
  std::string out = "Chain " + chain.name;
  if (chain.builtin()) {
    out += " (policy " + *chain.policy;
    if (format.counters) {
      out += " " + NumNoTable(chain.counters.packets, format.exact) + "packets, " +
             NumNoTable(chain.counters.bytes, format.exact) + "bytes";
    }
    out += ")\n";
  } else {
    out += fmt::format(" ({} references)\n", references);
  }
  if (format.line_numbers) out += fmt::format("{:<4} ", "num");
  if (format.counters) {
    out += format.exact ? fmt::format("{:>8} {:>10} ", "pkts", "bytes") : fmt::format("{:>5} {:>5} ", "pkts", "bytes");
  }
  out += fmt::format("{:<9} ", "target");
  out += " prot opt";
  if (format.counters) out += fmt::format(" {:<6} {:<6} ", "in", "out");
  out += fmt::format(" {:<19} ", "source");
  out += fmt::format(" {:<19} ", "destination");
  return out + "\n";
}

// One rule's row, appended to `out` (one buffer for the whole listing: no string per column or row).
void AppendRow(std::string& out, Family family, std::string_view chain, const Rule& rule, int num,
               const ListingFormat& format) {
  if (format.line_numbers) {
    AppendPaddedNumber(out, static_cast<uint64_t>(num), 4);
    out += ' ';
  }
  if (format.counters) out += Num(rule.counters.packets, format.exact) + Num(rule.counters.bytes, format.exact);
  // The target as the kernel names it: NOTRACK is an alias of the CT target.
  const std::string_view target = rule.target.empty()             ? ""
                                  : rule.target.name == "NOTRACK" ? "CT"
                                                                  : std::string_view(rule.target.name);
  AppendPadded(out, target, 9);
  out += ' ';
  out += rule.protocol && rule.protocol->negated ? '!' : ' ';
  AppendPaddedNumber(out, rule.protocol ? ProtocolNumber(rule.protocol->value) : 0, 4);
  out += ' ';
  if (family == Family::kIPv4) {
    out += rule.fragment && rule.fragment->negated ? '!' : '-';
    out += rule.fragment ? 'f' : '-';
    out += ' ';
  } else {
    out += "-- ";
  }
  if (format.counters) {
    out += ' ';
    AppendPadded(out, Interface(rule.in_interface), 6);
    out += ' ';
    AppendPadded(out, Interface(rule.out_interface), 6);
    out += ' ';
  }
  AppendAddressColumn(out, family, rule.source);
  AppendAddressColumn(out, family, rule.destination);
  if (rule.target.kind == Target::Kind::kGoto) out += "[goto] ";
  AppendRuleDetails(out, family, rule);
  if (!format.notes.empty()) {
    if (auto it = format.notes.find({std::string(chain), num}); it != format.notes.end()) {
      out += ' ';
      out += it->second;
    }
  }
  out += '\n';
}

// "-A CHAIN spec" with "-c P B" before the target (iptables -S -v).
std::string RuleLineS(const std::string& chain, const Rule& rule, bool counters) {
  if (!counters) {
    // The target comes last in the printed spec anyway: no copy of the rule without it.
    std::string spec = FormatRuleSpec(rule);
    std::string out;
    out.reserve(chain.size() + spec.size() + 5);
    out += "-A ";
    out += chain;
    if (!spec.empty()) {
      out += ' ';
      out += spec;
    }
    out += '\n';
    return out;
  }
  Rule head = rule;
  head.target = Target{};
  std::string matches = FormatRuleSpec(head);
  std::string target;
  if (!rule.target.empty()) {
    Rule only;
    only.target = rule.target;
    target = FormatRuleSpec(only);
  }
  std::string out = "-A " + chain;
  if (!matches.empty()) out += " " + matches;
  if (counters) out += fmt::format(" -c {} {}", rule.counters.packets, rule.counters.bytes);
  if (!target.empty()) out += " " + target;
  return out + "\n";
}

// The "-P CHAIN POLICY" / "-N CHAIN" lines of the chains shown (iptables -S).
void AppendChainLinesS(std::string& out, const Table& table, const ListingFormat& format) {
  for (const Chain& chain : table.chains) {
    if (!ChainShown(chain, format)) continue;
    if (chain.builtin()) {
      out += "-P ";
      out += chain.name;
      out += ' ';
      out += *chain.policy;
      if (format.counters)
        fmt::format_to(std::back_inserter(out), " -c {} {}", chain.counters.packets, chain.counters.bytes);
      out += '\n';
    } else {
      out += "-N ";
      out += chain.name;
      out += '\n';
    }
  }
}

// The chain name of a "-A CHAIN ..." line.
std::string_view RuleLineChain(std::string_view line) {
  line.remove_prefix(3);
  return line.substr(0, line.find(' '));
}

// "[P:B]" → counters; false when `text` is not of that form.
bool ParseSaveCounters(std::string_view text, Counters& counters) {
  if (text.size() < 5 || text.front() != '[' || text.back() != ']') return false;
  text = text.substr(1, text.size() - 2);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  auto number = [](std::string_view digits, uint64_t& value) {
    if (digits.empty()) return false;
    value = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    return true;
  };
  return number(text.substr(0, colon), counters.packets) && number(text.substr(colon + 1), counters.bytes);
}

}  // namespace

Result<std::vector<SavedTable>> ParseSavedTables(std::string_view text) {
  std::vector<SavedTable> out;
  constexpr std::string_view kUnrepresentable = "# iptkit: unrepresentable table: ";
  constexpr std::string_view kLossy = "# iptkit: lossy rule ";
  size_t line_number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++line_number;
    auto bad = [&] {
      return Status::InvalidArgument("save text line " + std::to_string(line_number) +
                                     " is not of the save form: " + std::string(line.substr(0, 80)));
    };
    if (line.empty()) continue;
    if (line.front() == '*') {
      out.emplace_back().table.name = std::string(line.substr(1));
      continue;
    }
    if (line == "COMMIT") continue;
    if (out.empty()) {
      if (line.front() == '#') continue;  // a comment before the first table
      return bad();
    }
    SavedTable& t = out.back();
    if (line.starts_with("-A ")) {
      t.rule_lines.push_back(line);
    } else if (line.front() == ':') {
      // ":CHAIN POLICY [P:B]"; a user chain's policy is "-".
      const size_t first = line.find(' ');
      const size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
      if (second == std::string_view::npos) return bad();
      Chain& chain = t.table.chains.emplace_back();
      chain.name = std::string(line.substr(1, first - 1));
      const std::string_view policy = line.substr(first + 1, second - first - 1);
      if (policy != "-") chain.policy = std::string(policy);
      if (!ParseSaveCounters(line.substr(second + 1), chain.counters)) return bad();
    } else if (line.starts_with(kUnrepresentable)) {
      t.table.unrepresentable_reason = std::string(line.substr(kUnrepresentable.size()));
    } else if (line.starts_with(kLossy)) {
      // "# iptkit: lossy rule N of CHAIN: why"
      std::string_view rest = line.substr(kLossy.size());
      const size_t of = rest.find(" of ");
      const size_t colon = of == std::string_view::npos ? of : rest.find(": ", of + 4);
      if (colon == std::string_view::npos) return bad();
      t.lossy.push_back({std::string(rest.substr(of + 4, colon - of - 4)),
                         std::atoi(std::string(rest.substr(0, of)).c_str()), std::string(rest.substr(colon + 2))});
    } else if (line.front() != '#') {
      return bad();
    }
  }
  return out;
}

std::string FormatRulesSFromSave(const SavedTable& saved, const ListingFormat& format) {
  std::string out;
  AppendChainLinesS(out, saved.table, format);
  size_t size = out.size();
  for (std::string_view line : saved.rule_lines) size += line.size() + 1;
  out.reserve(size);
  // Chain by chain in the table's order (as FormatRulesS), each chain's lines in the text's order. The text holds
  // a chain's lines together: the runs of lines of one chain are found in one pass.
  struct Run {
    std::string_view chain;
    size_t begin, end;
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < saved.rule_lines.size(); ++i) {
    const std::string_view chain = RuleLineChain(saved.rule_lines[i]);
    if (runs.empty() || runs.back().chain != chain) runs.push_back({chain, i, i});
    runs.back().end = i + 1;
  }
  for (const Chain& chain : saved.table.chains) {
    if (!ChainShown(chain, format)) continue;
    for (const Run& run : runs) {
      if (run.chain != chain.name) continue;
      for (size_t i = run.begin; i < run.end; ++i) {
        out += saved.rule_lines[i];
        out += '\n';
      }
    }
  }
  return out;
}

Table WithBuiltinChains(Table table) {
  Table out;
  out.name = table.name;
  out.unrepresentable_reason = std::move(table.unrepresentable_reason);
  std::vector<bool> taken(table.chains.size(), false);
  for (const std::string& name : BuiltinChains(table.name)) {
    auto it = std::find_if(table.chains.begin(), table.chains.end(), [&](const Chain& c) { return c.name == name; });
    if (it != table.chains.end()) {
      taken[it - table.chains.begin()] = true;
      out.chains.push_back(std::move(*it));
    } else {
      Chain empty;
      empty.name = name;
      empty.policy = "ACCEPT";
      out.chains.push_back(std::move(empty));
    }
  }
  for (size_t i = 0; i < table.chains.size(); ++i) {
    if (!taken[i] && !IsBuiltinChain(table.name, table.chains[i].name))
      out.chains.push_back(std::move(table.chains[i]));
  }
  return out;
}

std::string FormatRuleDetails(Family family, const Rule& rule) {
  std::string out;
  AppendRuleDetails(out, family, rule);
  return out;
}

std::string FormatChains(Family family, const Table& table, const ListingFormat& format) {
  std::string out;
  bool found = false;
  std::optional<std::map<std::string_view, size_t>> references;  // counted at the first header
  for (const Chain& chain : table.chains) {
    if (!ChainShown(chain, format)) continue;
    if (found && format.rule == 0) out += "\n";
    found = true;
    if (format.rule == 0) {
      if (!references) references = References(table);
      auto refs = references->find(chain.name);
      out += Header(chain, refs == references->end() ? 0 : refs->second, format);
    }
    int num = 0;
    for (const Rule& rule : chain.rules) {
      ++num;
      if (format.rule != 0 && num != format.rule) continue;
      if (!OwnedBy(rule, format.owner)) continue;
      AppendRow(out, family, chain.name, rule, num, format);
    }
  }
  return out;
}

std::string FormatRulesS(const Table& table, const ListingFormat& format) {
  std::string out;
  if (format.rule == 0 && format.owner.empty()) AppendChainLinesS(out, table, format);
  for (const Chain& chain : table.chains) {
    if (!ChainShown(chain, format)) continue;
    int num = 0;
    for (const Rule& rule : chain.rules) {
      ++num;
      if (format.rule != 0 && num != format.rule) continue;
      if (!OwnedBy(rule, format.owner)) continue;
      out += RuleLineS(chain.name, rule, format.counters);
    }
  }
  return out;
}

// ---- The listing from rules handed over one at a time ----

ListingCollector::ListingCollector(Family family, std::vector<std::string> tables, ListingFormat format, bool rules_s)
    : family_(family), tables_(std::move(tables)), format_(std::move(format)), rules_s_(rules_s) {}

void ListingCollector::Reset() {
  chains_.clear();
  references_.clear();
  lossy_.clear();
  sets_.clear();
  set_index_.clear();
  run_ = nullptr;
  run_table_.clear();
  run_chain_.clear();
}

void ListingCollector::OnRule(const std::string& table, const std::string& chain, const Rule& rule) {
  if (run_ == nullptr || chain != run_chain_ || table != run_table_) {
    if (std::find(tables_.begin(), tables_.end(), table) == tables_.end()) {
      run_ = nullptr;
      return;
    }
    run_table_ = table;
    run_chain_ = chain;
    run_ = &chains_[table + '\0' + chain];
    run_references_ = &references_[table];
  }
  Rows& rows = *run_;
  const int num = ++rows.count;
  if (!rule.target.empty()) ++(*run_references_)[rule.target.name];
  if (!rule.lossy.empty()) lossy_.push_back({table, chain, num, rule.lossy});
  if (want_sets_) {
    for (const std::string& name : SetsUsedBy(rule)) {
      auto [it, fresh] = set_index_.emplace(name, sets_.size());
      if (fresh) sets_.push_back({name, std::nullopt, {}});
      sets_[it->second].used_by.push_back({family_, table, chain, num});
    }
  }
  const bool owned = OwnedBy(rule, format_.owner);
  if (owned) rows.owned = true;
  if (!format_.chain.empty() && chain != format_.chain) return;
  if (format_.rule != 0 && num != format_.rule) return;
  if (!owned) return;
  if (rules_s_) {
    rows.text += RuleLineS(chain, rule, format_.counters);
  } else {
    AppendRow(rows.text, family_, chain, rule, num, format_);
  }
}

size_t ListingCollector::RuleCount(const std::string& table, const std::string& chain) const {
  auto it = chains_.find(table + '\0' + chain);
  return it == chains_.end() ? 0 : static_cast<size_t>(it->second.count);
}

std::string ListingCollector::Format(const Table& table) const {
  static const Rows kNone;
  auto rows_of = [&](const Chain& chain) -> const Rows& {
    auto it = chains_.find(table.name + '\0' + chain.name);
    return it == chains_.end() ? kNone : it->second;
  };
  auto shown = [&](const Chain& chain) {
    if (!format_.chain.empty() && chain.name != format_.chain) return false;
    return format_.owner.empty() || rows_of(chain).owned;
  };
  std::string out;
  if (rules_s_) {
    if (format_.rule == 0 && format_.owner.empty()) AppendChainLinesS(out, table, format_);
    for (const Chain& chain : table.chains) {
      if (shown(chain)) out += rows_of(chain).text;
    }
    return out;
  }
  static const std::map<std::string, size_t, std::less<>> kNoReferences;
  auto refs = references_.find(table.name);
  const auto& references = refs == references_.end() ? kNoReferences : refs->second;
  bool found = false;
  for (const Chain& chain : table.chains) {
    if (!shown(chain)) continue;
    if (found && format_.rule == 0) out += "\n";
    found = true;
    if (format_.rule == 0) {
      auto it = references.find(chain.name);
      out += Header(chain, it == references.end() ? 0 : it->second, format_);
    }
    out += rows_of(chain).text;
  }
  return out;
}

std::vector<SetUse> ListingCollector::SetUses() const {
  std::vector<SetUse> out = sets_;
  std::sort(out.begin(), out.end(), [](const SetUse& a, const SetUse& b) { return a.name < b.name; });
  return out;
}

// ---- Sets ----

std::vector<SetUse> SetsReferenced(const std::vector<const Ruleset*>& rulesets) {
  std::vector<SetUse> out;
  std::map<std::string, size_t> index;
  for (const Ruleset* all : rulesets) {
    for (const Table& table : all->tables) {
      for (const Chain& chain : table.chains) {
        for (size_t i = 0; i < chain.rules.size(); ++i) {
          for (const std::string& name : SetsUsedBy(chain.rules[i])) {
            auto [it, fresh] = index.emplace(name, out.size());
            if (fresh) out.push_back({name, std::nullopt, {}});
            out[it->second].used_by.push_back({all->family, table.name, chain.name, static_cast<int>(i + 1)});
          }
        }
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const SetUse& a, const SetUse& b) { return a.name < b.name; });
  return out;
}

Status LookUpSets(const Ipsets& sets, std::vector<SetUse>& uses) {
  if (uses.empty()) return Status::Ok();
  IPTKIT_ASSIGN_OR_RETURN(std::vector<SetInfo> all, sets.List("", /*with_entries=*/false));
  for (SetUse& use : uses) {
    for (const SetInfo& info : all) {
      if (info.name == use.name) use.info = info;
    }
  }
  return Status::Ok();
}

std::string FormatSetUses(const std::vector<SetUse>& uses) {
  if (uses.empty()) return "";
  size_t name_width = 0;
  for (const SetUse& u : uses) name_width = std::max(name_width, u.name.size());
  std::string out = "\nSets used by these rules:\n";
  for (const SetUse& u : uses) {
    std::string what = u.info ? u.info->type + "  " + std::to_string(u.info->entry_count) + " entries"
                              : std::string("MISSING (no such set)");
    std::string where;
    for (const SetUse::Place& p : u.used_by) {
      where += (where.empty() ? "" : ", ") + std::string(FamilyName(p.family)) + " " + p.table + " " + p.chain + " " +
               std::to_string(p.rule);
    }
    out += "  " + u.name + std::string(name_width - u.name.size(), ' ') + "  " + what + "  (" + where + ")\n";
  }
  return out;
}

nlohmann::json SetUsesJson(const std::vector<SetUse>& uses) {
  nlohmann::json out = nlohmann::json::array();
  for (const SetUse& u : uses) {
    nlohmann::json j = {{"name", u.name}, {"missing", !u.info.has_value()}};
    if (u.info) {
      j["type"] = u.info->type;
      j["entry_count"] = u.info->entry_count;
      j["references"] = u.info->references;
    }
    nlohmann::json places = nlohmann::json::array();
    for (const SetUse::Place& p : u.used_by) {
      places.push_back({{"family", FamilyName(p.family)}, {"table", p.table}, {"chain", p.chain}, {"rule", p.rule}});
    }
    j["used_by"] = std::move(places);
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace iptkit::cli
