#include "src/backend/restore/local_canonical.h"

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace iptkit::backend {
namespace {

// "network/prefix" for an address field, or nullopt when iptables' own printing is needed.
std::optional<std::string> CanonicalAddress(Family family, std::string_view text) {
  const int af = family == Family::kIPv4 ? AF_INET : AF_INET6;
  const int bits = family == Family::kIPv4 ? 32 : 128;
  std::string addr(text);
  int prefix = bits;
  if (size_t slash = addr.find('/'); slash != std::string::npos) {
    std::string mask = addr.substr(slash + 1);
    addr.resize(slash);
    if (mask.empty()) return std::nullopt;
    if (mask.find('.') != std::string::npos) {
      if (af != AF_INET) return std::nullopt;
      in_addr m{};
      if (inet_pton(AF_INET, mask.c_str(), &m) != 1) return std::nullopt;
      const uint32_t v = ntohl(m.s_addr);
      prefix = 0;
      while (prefix < 32 && (v & (0x80000000u >> prefix)) != 0) ++prefix;
      if (prefix < 32 && (v << prefix) != 0) return std::nullopt;  // not contiguous: iptables prints the mask
    } else {
      if (mask.size() > 3) return std::nullopt;
      prefix = 0;
      for (char c : mask) {
        if (c < '0' || c > '9') return std::nullopt;
        prefix = prefix * 10 + (c - '0');
      }
      if (mask.size() > 1 && mask[0] == '0') return std::nullopt;
    }
  }
  if (prefix < 1 || prefix > bits) return std::nullopt;  // /0: iptables drops the field
  unsigned char bytes[16] = {};
  if (inet_pton(af, addr.c_str(), bytes) != 1) return std::nullopt;
  char printed[INET6_ADDRSTRLEN] = "";
  if (inet_ntop(af, bytes, printed, sizeof(printed)) == nullptr) return std::nullopt;
  // IPv4 input must already be in the one dotted-quad spelling (iptables and inet_pton disagree on others).
  if (af == AF_INET && addr != printed) return std::nullopt;
  const int nbytes = bits / 8;
  for (int i = 0; i < nbytes; ++i) {
    const int keep = prefix - i * 8;
    if (keep <= 0) {
      bytes[i] = 0;
    } else if (keep < 8) {
      bytes[i] &= static_cast<unsigned char>(0xff << (8 - keep));
    }
  }
  if (inet_ntop(af, bytes, printed, sizeof(printed)) == nullptr) return std::nullopt;
  return std::string(printed) + "/" + std::to_string(prefix);
}

// Letters, digits, "._@-", optionally one trailing "+" (a wildcard); not "+" alone.
bool PlainInterface(const std::string& name) {
  if (name.empty() || name == "+" || name.size() > 15) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '@' || c == '-' || (c == '+' && i + 1 == name.size());
    if (!ok) return false;
  }
  return true;
}

bool PlainComment(const Match& m) {
  if (m.name != "comment" || m.options.size() != 1) return false;
  const Option& o = m.options[0];
  if (o.name != "comment" || o.negated || o.values.size() != 1 || o.values[0].empty()) return false;
  for (char c : o.values[0]) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::optional<Rule> LocalCanonicalRule(Family family, const Rule& rule) {
  if (rule.protocol || rule.fragment) return std::nullopt;
  for (const Match& m : rule.matches) {
    if (!PlainComment(m)) return std::nullopt;
  }
  if (!rule.target.empty()) {
    const std::string& t = rule.target.name;
    if (rule.target.kind != Target::Kind::kJump || !rule.target.options.empty()) return std::nullopt;
    if (t != "ACCEPT" && t != "DROP" && t != "RETURN") return std::nullopt;
  }
  Rule out = rule;
  for (std::optional<Field>* f : {&out.source, &out.destination}) {
    if (!*f) continue;
    std::optional<std::string> a = CanonicalAddress(family, (*f)->value);
    if (!a) return std::nullopt;
    (*f)->value = *a;
  }
  for (const std::optional<Field>* f : {&out.in_interface, &out.out_interface}) {
    if (*f && !PlainInterface((*f)->value)) return std::nullopt;
  }
  out.counters = {};
  return out;
}

}  // namespace iptkit::backend
