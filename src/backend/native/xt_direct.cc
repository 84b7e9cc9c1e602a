#include "src/backend/native/xt_direct.h"

#include <linux/netfilter/x_tables.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_tcpudp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <string_view>

#include "src/dialect/text_util.h"

namespace iptkit::backend::native {
namespace {

std::atomic<bool> g_direct{true};

template <class T>
T Payload(const XtExtension& ext) {
  T out;
  std::memcpy(&out, ext.data.data(), sizeof(T));
  return out;
}

// The comment's text as comment_save prints it: up to the first NUL, at most XT_MAX_COMMENT_LEN - 1 bytes.
std::string_view CommentText(const XtExtension& ext) {
  const size_t limit = std::min(ext.data.size(), static_cast<size_t>(XT_MAX_COMMENT_LEN - 1));
  const char* p = ext.data.data();
  const void* nul = std::memchr(p, '\0', limit);
  return std::string_view(p, nul == nullptr ? limit : static_cast<const char*>(nul) - p);
}

bool IsTcp(const XtExtension& ext) { return ext.name == "tcp" && ext.data.size() >= sizeof(xt_tcp); }
bool IsUdp(const XtExtension& ext) { return ext.name == "udp" && ext.data.size() >= sizeof(xt_udp); }
bool IsComment(const XtExtension& ext) { return ext.name == "comment" && ext.data.size() >= sizeof(xt_comment_info); }

// "N" or "N:M" (tcp_save / udp_save print the range with "%u:%u").
std::string PortText(uint16_t min, uint16_t max) {
  char buf[16];
  char* end = std::to_chars(buf, buf + sizeof(buf), min).ptr;
  if (min != max) {
    *end++ = ':';
    end = std::to_chars(end, buf + sizeof(buf), max).ptr;
  }
  return std::string(buf, end);
}

bool PortsSet(const uint16_t ports[2]) { return ports[0] != 0 || ports[1] != 0xFFFF; }

// " [!] --NAME N[:M]" for a port range that is not the whole range, as tcp_save / udp_save print it.
void AppendPorts(std::string& out, std::string_view name, const uint16_t ports[2], bool invert) {
  if (!PortsSet(ports)) return;
  if (invert) out += " !";
  out += " --";
  out += name;
  out += ' ';
  out += PortText(ports[0], ports[1]);
}

void AddPorts(Match& m, const char* name, const uint16_t ports[2], bool invert) {
  if (!PortsSet(ports)) return;
  m.options.push_back(Option{name, invert, {PortText(ports[0], ports[1])}});
}

// A port as libxtables' xtables_parse_port reads a decimal number: digits only, no leading zero (base 0 would
// read it as octal), at most 65535. False for anything else (a service name, hex, a sign, blanks).
bool ParseDecimalPort(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text.front() == '0')) return false;
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 0xFFFF) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

// "N" (N..N) or "N:M" with N <= M: what tcp's parse_tcp_ports and udp's XTTYPE_PORTRC give alike for these forms.
bool ParsePortRange(std::string_view text, uint16_t ports[2]) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    if (!ParseDecimalPort(text, ports[0])) return false;
    ports[1] = ports[0];
    return true;
  }
  return ParseDecimalPort(text.substr(0, colon), ports[0]) && ParseDecimalPort(text.substr(colon + 1), ports[1]) &&
         ports[0] <= ports[1];
}

// The source and destination ports of a tcp or udp match: each option at most once, with one value.
bool ParsePortOptions(const Match& match, uint16_t spts[2], uint16_t dpts[2], bool& inv_src, bool& inv_dst) {
  bool have_src = false;
  bool have_dst = false;
  for (const Option& o : match.options) {
    const bool src = o.name == "sport" || o.name == "source-port";
    const bool dst = o.name == "dport" || o.name == "destination-port";
    if ((!src && !dst) || o.values.size() != 1 || (src && have_src) || (dst && have_dst)) return false;
    if (!ParsePortRange(o.values.front(), src ? spts : dpts)) return false;
    (src ? have_src : have_dst) = true;
    (src ? inv_src : inv_dst) = o.negated;
  }
  return true;
}

template <class T>
XtExtension PayloadOf(const char* name, const T& info) {
  XtExtension ext;
  ext.name = name;
  ext.data.assign(reinterpret_cast<const char*>(&info), sizeof(T));
  // The payload is XT_ALIGN(sizeof(T)) bytes, zero-filled past the structure (libxtables callocs it).
  ext.data.resize(XT_ALIGN(sizeof(T)), '\0');
  return ext;
}

}  // namespace

std::optional<XtExtension> DirectParseMatch(const Match& match) {
  if (!g_direct.load(std::memory_order_relaxed)) return std::nullopt;
  if (match.name == "tcp" || match.name == "udp") {
    // tcp_init / udp_init: both ranges all ports.
    uint16_t spts[2] = {0, 0xFFFF};
    uint16_t dpts[2] = {0, 0xFFFF};
    bool inv_src = false;
    bool inv_dst = false;
    if (!ParsePortOptions(match, spts, dpts, inv_src, inv_dst)) return std::nullopt;
    if (match.name == "tcp") {
      xt_tcp tcp;
      std::memset(&tcp, 0, sizeof(tcp));
      std::memcpy(tcp.spts, spts, sizeof(spts));
      std::memcpy(tcp.dpts, dpts, sizeof(dpts));
      tcp.invflags = static_cast<uint8_t>((inv_src ? XT_TCP_INV_SRCPT : 0) | (inv_dst ? XT_TCP_INV_DSTPT : 0));
      return PayloadOf("tcp", tcp);
    }
    xt_udp udp;
    std::memset(&udp, 0, sizeof(udp));  // with its padding byte
    std::memcpy(udp.spts, spts, sizeof(spts));
    std::memcpy(udp.dpts, dpts, sizeof(dpts));
    udp.invflags = static_cast<uint8_t>((inv_src ? XT_UDP_INV_SRCPT : 0) | (inv_dst ? XT_UDP_INV_DSTPT : 0));
    return PayloadOf("udp", udp);
  }
  if (match.name == "comment") {
    if (match.options.size() != 1) return std::nullopt;
    const Option& o = match.options.front();
    if (o.name != "comment" || o.negated || o.values.size() != 1) return std::nullopt;
    const std::string& text = o.values.front();
    if (text.size() >= XT_MAX_COMMENT_LEN || text.find('\0') != std::string::npos) return std::nullopt;
    xt_comment_info info;
    std::memset(&info, 0, sizeof(info));
    std::memcpy(info.comment, text.data(), text.size());
    return PayloadOf("comment", info);
  }
  return std::nullopt;
}

void SetDirectExtensions(bool on) { g_direct.store(on, std::memory_order_relaxed); }

bool DirectMatchCovered(const XtExtension& ext) {
  if (ext.revision != 0 || !g_direct.load(std::memory_order_relaxed)) return false;
  if (IsTcp(ext)) {
    // Ports only: a TCP option or flags (and their inversions) are printed by libxt_tcp.
    const auto tcp = Payload<xt_tcp>(ext);
    return tcp.option == 0 && tcp.flg_mask == 0 && (tcp.invflags & ~(XT_TCP_INV_SRCPT | XT_TCP_INV_DSTPT)) == 0;
  }
  if (IsUdp(ext)) return (Payload<xt_udp>(ext).invflags & ~XT_UDP_INV_MASK) == 0;
  if (IsComment(ext)) {
    // Printable ASCII that does not start like an option: such a text and its save form are each other's
    // (any other byte is left to libxtables and the parser, as before).
    const std::string_view text = CommentText(ext);
    if (text.empty() || text.front() == '-' || text.front() == '!') return false;
    for (char c : text) {
      if (c < 0x20 || c > 0x7e) return false;
    }
    return true;
  }
  return false;
}

void AppendDirectMatchText(const XtExtension& ext, std::string& out) {
  if (IsTcp(ext)) {
    const auto tcp = Payload<xt_tcp>(ext);
    out += " -m tcp";
    AppendPorts(out, "sport", tcp.spts, tcp.invflags & XT_TCP_INV_SRCPT);
    AppendPorts(out, "dport", tcp.dpts, tcp.invflags & XT_TCP_INV_DSTPT);
  } else if (IsUdp(ext)) {
    const auto udp = Payload<xt_udp>(ext);
    out += " -m udp";
    AppendPorts(out, "sport", udp.spts, udp.invflags & XT_UDP_INV_SRCPT);
    AppendPorts(out, "dport", udp.dpts, udp.invflags & XT_UDP_INV_DSTPT);
  } else if (IsComment(ext)) {
    out += " -m comment --comment ";
    dialect::AppendSaveString(out, CommentText(ext));
  }
}

Match DirectMatch(const XtExtension& ext) {
  Match m;
  m.name = ext.name;
  if (IsTcp(ext)) {
    const auto tcp = Payload<xt_tcp>(ext);
    AddPorts(m, "sport", tcp.spts, tcp.invflags & XT_TCP_INV_SRCPT);
    AddPorts(m, "dport", tcp.dpts, tcp.invflags & XT_TCP_INV_DSTPT);
  } else if (IsUdp(ext)) {
    const auto udp = Payload<xt_udp>(ext);
    AddPorts(m, "sport", udp.spts, udp.invflags & XT_UDP_INV_SRCPT);
    AddPorts(m, "dport", udp.dpts, udp.invflags & XT_UDP_INV_DSTPT);
  } else if (IsComment(ext)) {
    m.options.push_back(Option{"comment", false, {std::string(CommentText(ext))}});
  }
  return m;
}

}  // namespace iptkit::backend::native
