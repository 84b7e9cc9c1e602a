#include "src/dialect/fields.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <map>
#include <mutex>

namespace iptkit::dialect {
namespace {

// libxtables/xtables.c xtables_chain_protos (v1.8.9), in its order (the first name of a number wins).
struct NamedProto {
  std::string_view name;
  int number;
};
constexpr NamedProto kChainProtos[] = {
    {"tcp", 6},        {"sctp", 132},  {"udp", 17}, {"udplite", 136}, {"icmp", 1},
    {"ipv6-icmp", 58}, {"icmpv6", 58}, {"esp", 50}, {"ah", 51},       {"mobility-header", 135},
    {"ipv6-mh", 135},  {"mh", 135},    {"all", 0},
};

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The protocols database, cached: getprotobyname_r reads /etc/protocols on every call.
struct ProtoDb {
  std::mutex mu;
  std::map<std::string, std::optional<int>, std::less<>> by_name;
  std::map<int, std::optional<std::string>> by_number;
};
ProtoDb& Db() {
  static ProtoDb* db = new ProtoDb();
  return *db;
}

std::optional<int> LookupProtoName(std::string_view name) {
  ProtoDb& db = Db();
  std::lock_guard<std::mutex> lock(db.mu);
  auto it = db.by_name.find(name);
  if (it != db.by_name.end()) return it->second;
  std::string key(name);
  struct protoent entry;
  struct protoent* result = nullptr;
  char buf[1024];
  std::optional<int> number;
  if (getprotobyname_r(key.c_str(), &entry, buf, sizeof(buf), &result) == 0 && result != nullptr) {
    number = result->p_proto;
  }
  db.by_name.emplace(std::move(key), number);
  return number;
}

std::optional<std::string> LookupProtoNumber(int number) {
  ProtoDb& db = Db();
  std::lock_guard<std::mutex> lock(db.mu);
  auto it = db.by_number.find(number);
  if (it != db.by_number.end()) return it->second;
  struct protoent entry;
  struct protoent* result = nullptr;
  char buf[1024];
  std::optional<std::string> name;
  if (getprotobynumber_r(number, &entry, buf, sizeof(buf), &result) == 0 && result != nullptr) {
    name = result->p_name;
  }
  db.by_number.emplace(number, name);
  return name;
}

std::optional<int> ParseNumber(std::string_view s) {
  // xtables_strtoui(s, NULL, &v, 0, UINT8_MAX): strtoul with base 0 (decimal, 0x hex, 0 octal).
  if (s.empty()) return std::nullopt;
  int base = 10;
  std::string_view digits = s;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    digits = s.substr(2);
  } else if (s.size() > 1 && s[0] == '0') {
    base = 8;
    digits = s.substr(1);
  }
  long v = 0;
  for (char c : digits) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return std::nullopt;
    if (d >= base) return std::nullopt;
    v = v * base + d;
    if (v > 255) return std::nullopt;
  }
  return static_cast<int>(v);
}

}  // namespace

std::string CheckAddressSpec(std::string_view value, Family family) {
  if (value.find(',') != std::string_view::npos) {
    return "comma lists of addresses are not supported: one spec must be one rule";
  }
  if (value.empty()) return "empty address";
  size_t slash = value.find('/');
  std::string addr(value.substr(0, slash));
  const bool v4 = family == Family::kIPv4;
  const int af = v4 ? AF_INET : AF_INET6;
  unsigned char buf[sizeof(struct in6_addr)];
  if (inet_pton(af, addr.c_str(), buf) != 1) {
    if (inet_pton(v4 ? AF_INET6 : AF_INET, addr.c_str(), buf) == 1) {
      return v4 ? "an IPv6 address in an IPv4 rule" : "an IPv4 address in an IPv6 rule";
    }
    return std::string("not an ") + (v4 ? "IPv4" : "IPv6") +
           " address literal (host names are not supported: iptkit never resolves DNS)";
  }
  if (slash == std::string_view::npos) return "";
  std::string_view mask = value.substr(slash + 1);
  const int max_prefix = v4 ? 32 : 128;
  if (AllDigits(mask)) {
    if (mask.size() > 3 || std::stoi(std::string(mask)) > max_prefix) {
      return "prefix length out of range 0-" + std::to_string(max_prefix);
    }
    return "";
  }
  std::string mask_str(mask);
  if (inet_pton(af, mask_str.c_str(), buf) == 1) return "";
  return std::string("bad network mask '") + mask_str + "' (want a prefix length or a " + (v4 ? "dotted" : "IPv6") +
         " mask)";
}

std::string CheckInterface(std::string_view value) {
  if (value.empty()) return "empty interface name";
  if (value.size() > 15) return "interface name longer than 15 bytes (IFNAMSIZ)";
  return "";
}

std::optional<int> ParseProtocol(std::string_view value) {
  if (auto n = ParseNumber(value)) return n;
  for (const NamedProto& p : kChainProtos) {
    if (p.name == value) return p.number;
  }
  if (value.empty() || value.find('\0') != std::string_view::npos) return std::nullopt;
  return LookupProtoName(value);
}

std::string ProtocolMatchName(std::string_view value) {
  auto n = ParseNumber(value);
  if (!n) return std::string(value);
  for (const NamedProto& p : kChainProtos) {
    if (p.number == *n) return std::string(p.name);
  }
  if (*n == 0) return "";
  return LookupProtoNumber(*n).value_or("");
}

}  // namespace iptkit::dialect
