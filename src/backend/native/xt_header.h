// The header of an x_tables rule as the kernel holds it (struct ipt_ip in an ipt_entry, struct ip6t_ip6 in an
// ip6t_entry) and back: what the native backend's compat expressions and the native-legacy backend's table blobs
// both carry. Addresses and masks are 4 bytes for IPv4 and 16 for IPv6 (in XtHeader, IPv4 uses the first 4).
// Flags are copied as they are: a caller that keeps a goto bit there (IPT_F_GOTO) handles it itself.
// Thread-safety: pure functions.
#ifndef IPTKIT_SRC_BACKEND_NATIVE_XT_HEADER_H_
#define IPTKIT_SRC_BACKEND_NATIVE_XT_HEADER_H_

#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

#include <cstring>

#include "src/backend/native/xt_rule.h"

namespace iptkit::backend::native {

// Ip: ipt_ip or ip6t_ip6.
template <class Ip>
XtHeader HeaderOf(const Ip& ip) {
  XtHeader h;
  std::memcpy(h.src.data(), &ip.src, sizeof(ip.src));
  std::memcpy(h.smsk.data(), &ip.smsk, sizeof(ip.smsk));
  std::memcpy(h.dst.data(), &ip.dst, sizeof(ip.dst));
  std::memcpy(h.dmsk.data(), &ip.dmsk, sizeof(ip.dmsk));
  std::memcpy(h.iniface.data(), ip.iniface, sizeof(ip.iniface));
  std::memcpy(h.outiface.data(), ip.outiface, sizeof(ip.outiface));
  std::memcpy(h.iniface_mask.data(), ip.iniface_mask, sizeof(ip.iniface_mask));
  std::memcpy(h.outiface_mask.data(), ip.outiface_mask, sizeof(ip.outiface_mask));
  h.proto = ip.proto;
  h.flags = ip.flags;
  h.invflags = ip.invflags;
  return h;
}

template <class Ip>
void SetHeader(Ip& ip, const XtHeader& h) {
  std::memcpy(&ip.src, h.src.data(), sizeof(ip.src));
  std::memcpy(&ip.smsk, h.smsk.data(), sizeof(ip.smsk));
  std::memcpy(&ip.dst, h.dst.data(), sizeof(ip.dst));
  std::memcpy(&ip.dmsk, h.dmsk.data(), sizeof(ip.dmsk));
  std::memcpy(ip.iniface, h.iniface.data(), sizeof(ip.iniface));
  std::memcpy(ip.outiface, h.outiface.data(), sizeof(ip.outiface));
  std::memcpy(ip.iniface_mask, h.iniface_mask.data(), sizeof(ip.iniface_mask));
  std::memcpy(ip.outiface_mask, h.outiface_mask.data(), sizeof(ip.outiface_mask));
  ip.proto = h.proto;
  ip.flags = h.flags;
  ip.invflags = h.invflags;
}

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_XT_HEADER_H_
