#include "src/backend/native/xt_direct.h"

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

}  // namespace

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
