#include "src/backend/legacy/xt_rules.h"

// glibc's netinet/in.h before the kernel headers (as in xt_fingerprint.cc).
// clang-format off
#include <netinet/in.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
// clang-format on

#include <cstddef>
#include <cstring>
#include <optional>

namespace iptkit::backend::legacy {
namespace {

struct V4 {
  using Info = ipt_getinfo;
  using Entries = ipt_get_entries;
  using Entry = ipt_entry;
  static constexpr uint8_t kGotoFlag = IPT_F_GOTO;
  static uint8_t Flags(const Entry& e) { return e.ip.flags; }
};
struct V6 {
  using Info = ip6t_getinfo;
  using Entries = ip6t_get_entries;
  using Entry = ip6t_entry;
  static constexpr uint8_t kGotoFlag = IP6T_F_GOTO;
  static uint8_t Flags(const Entry& e) { return e.ipv6.flags; }
};

constexpr const char* kHookChains[] = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"};

// xt_set.h: the ip_set_id_t (u16) index fields of the set match (every revision: at 0) and of the SET target
// (revision 0: add_set and del_set are xt_set_info_v0 of 32 bytes; 1 and 2: xt_set_info of 4 bytes; 3: add_set,
// del_set, map_set).
std::vector<size_t> SetIndexOffsets(const char* name, uint8_t revision, bool target) {
  if (!target) return std::strcmp(name, "set") == 0 ? std::vector<size_t>{0} : std::vector<size_t>{};
  if (std::strcmp(name, "SET") != 0) return {};
  if (revision == 0) return {0, 32};
  if (revision <= 2) return {0, 4};
  return {0, 4, 8};
}

void ZeroAt(std::string& bytes, size_t at, size_t size) {
  if (at + size <= bytes.size()) std::memset(bytes.data() + at, 0, size);
}

struct Parsed {
  size_t offset;
  std::string bytes;                      // the entry as in the blob
  std::optional<std::string> error_name;  // an ERROR target's name (chain head or end of table)
};

template <typename T>
Result<ChainRuleForms> Parse(const TableFingerprint& table) {
  typename T::Info info;
  const size_t header = offsetof(typename T::Entries, entrytable);
  if (table.bytes.size() < sizeof(info) + header) return Status::Internal("x_tables table " + table.name + ": short");
  std::memcpy(&info, table.bytes.data(), sizeof(info));
  const std::string_view blob = std::string_view(table.bytes).substr(sizeof(info) + header);
  if (blob.size() != info.size) return Status::Internal("x_tables table " + table.name + ": blob size mismatch");

  std::vector<Parsed> entries;
  for (size_t offset = 0; offset < blob.size();) {
    typename T::Entry e;
    if (blob.size() - offset < sizeof(e)) return Status::Internal("x_tables table " + table.name + ": truncated");
    std::memcpy(&e, blob.data() + offset, sizeof(e));
    if (e.next_offset < sizeof(e) || e.next_offset > blob.size() - offset || e.target_offset < sizeof(e) ||
        e.target_offset + sizeof(xt_entry_target) > e.next_offset) {
      return Status::Internal("x_tables table " + table.name + ": bad entry at offset " + std::to_string(offset));
    }
    Parsed p{offset, std::string(blob.substr(offset, e.next_offset)), std::nullopt};
    xt_entry_target target;
    std::memcpy(&target, p.bytes.data() + e.target_offset, sizeof(target));
    if (std::strncmp(target.u.user.name, XT_ERROR_TARGET, sizeof(target.u.user.name)) == 0) {
      const size_t at = e.target_offset + sizeof(xt_entry_target);
      const size_t len = e.next_offset > at ? std::min<size_t>(e.next_offset - at, XT_FUNCTION_MAXNAMELEN) : 0;
      std::string name(p.bytes.data() + at, len);
      name.resize(std::strlen(name.c_str()));
      p.error_name = name;
    }
    entries.push_back(std::move(p));
    offset += e.next_offset;
  }

  // Where each chain's rules start: user chains right after their ERROR head.
  std::map<size_t, std::string> starts;
  for (size_t i = 0; i + 1 < entries.size(); ++i) {
    if (entries[i].error_name) starts[entries[i + 1].offset] = *entries[i].error_name;
  }
  std::map<size_t, std::string> hook_at;    // hook_entry offset → builtin chain
  std::map<std::string, size_t> underflow;  // builtin chain → its policy entry
  for (int h = 0; h < 5; ++h) {
    if ((info.valid_hooks & (1u << h)) == 0) continue;
    hook_at[info.hook_entry[h]] = kHookChains[h];
    underflow[kHookChains[h]] = info.underflow[h];
  }

  ChainRuleForms out;
  std::string chain;
  bool builtin = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    Parsed& p = entries[i];
    if (p.error_name) {
      if (i + 1 == entries.size()) break;  // the end of the table
      chain = *p.error_name;
      builtin = false;
      out[chain];
      continue;
    }
    if (auto h = hook_at.find(p.offset); h != hook_at.end()) {
      chain = h->second;
      builtin = true;
      out[chain];
    }
    if (chain.empty()) return Status::Internal("x_tables table " + table.name + ": entry outside any chain");
    if (builtin && underflow[chain] == p.offset) {  // the policy
      chain.clear();
      continue;
    }
    if (!builtin && i + 1 < entries.size() && entries[i + 1].error_name) continue;  // the user chain's RETURN

    typename T::Entry e;
    std::memcpy(&e, p.bytes.data(), sizeof(e));
    std::string form = p.bytes;
    ZeroAt(form, offsetof(typename T::Entry, counters), sizeof(e.counters));
    ZeroAt(form, offsetof(typename T::Entry, comefrom), sizeof(e.comefrom));
    for (size_t m = sizeof(e); m + sizeof(xt_entry_match) <= e.target_offset;) {
      xt_entry_match match;
      std::memcpy(&match, form.data() + m, sizeof(match));
      if (match.u.match_size < sizeof(match) || m + match.u.match_size > e.target_offset) {
        return Status::Internal("x_tables table " + table.name + ": bad match in chain " + chain);
      }
      char name[sizeof(match.u.user.name) + 1] = {};
      std::memcpy(name, match.u.user.name, sizeof(match.u.user.name));
      for (size_t at : SetIndexOffsets(name, match.u.user.revision, false)) {
        ZeroAt(form, m + sizeof(match) + at, sizeof(uint16_t));
      }
      m += match.u.match_size;
    }
    xt_entry_target target;
    std::memcpy(&target, form.data() + e.target_offset, sizeof(target));
    char tname[sizeof(target.u.user.name) + 1] = {};
    std::memcpy(tname, target.u.user.name, sizeof(target.u.user.name));
    const size_t data = e.target_offset + sizeof(xt_entry_target);
    if (tname[0] == '\0' && data + sizeof(int) <= form.size()) {  // the standard target: a verdict
      int verdict = 0;
      std::memcpy(&verdict, form.data() + data, sizeof(verdict));
      if (verdict >= 0) {
        ZeroAt(form, data, sizeof(int));
        auto to = starts.find(static_cast<size_t>(verdict));
        if (to != starts.end()) {
          form += (T::Flags(e) & T::kGotoFlag) ? std::string("\0goto:", 6) : std::string("\0jump:", 6);
          form += to->second;
        } else if (static_cast<size_t>(verdict) == p.offset + e.next_offset) {
          form += std::string("\0next", 5);
        } else {
          form += std::string("\0offset:", 8) + std::to_string(verdict);
        }
      }
    } else {
      for (size_t at : SetIndexOffsets(tname, target.u.user.revision, true)) ZeroAt(form, data + at, sizeof(uint16_t));
    }
    out[chain].push_back(std::move(form));
  }
  return out;
}

}  // namespace

Result<ChainRuleForms> RuleForms(Family family, const TableFingerprint& table) {
  return family == Family::kIPv4 ? Parse<V4>(table) : Parse<V6>(table);
}

}  // namespace iptkit::backend::legacy
