#include "src/backend/legacy/xtables_backend.h"

// glibc's headers before the kernel's (as in xt_fingerprint.cc).
// clang-format off
#include <net/if.h>
#include <netinet/in.h>
#include <libiptc/libiptc.h>
// libip6tc.h, unlike libiptc.h, declares its functions without extern "C".
extern "C" {
#include <libiptc/libip6tc.h>
}
// clang-format on
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "iptkit/dialect.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/native/xt_header.h"
#include "src/backend/native/xt_rule.h"
#include "src/backend/native/xtables.h"
#include "src/backend/ops/table_sim.h"
#include "src/backend/restore/restore_backend.h"
#include "src/base/errno_status.h"
#include "src/base/file_lock.h"
#include "src/base/netns.h"
#include "src/dialect/typed_form.h"

namespace iptkit::backend::legacy {
namespace {

using native::Xtables;
using native::XtExtension;
using native::XtHeader;
using native::XtRule;

// libiptc keeps the function that failed last in a process-global (for iptc_strerror): one caller at a time.
std::mutex& IptcMutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}

// libip4tc and libip6tc are the same source compiled twice; these pick one by family.
struct V4 {
  using Entry = ipt_entry;
  static constexpr uint8_t kGotoFlag = IPT_F_GOTO;
  static xtc_handle* Init(const char* t) { return iptc_init(t); }
  static void Free(xtc_handle* h) { iptc_free(h); }
  static const char* FirstChain(xtc_handle* h) { return iptc_first_chain(h); }
  static const char* NextChain(xtc_handle* h) { return iptc_next_chain(h); }
  static const Entry* FirstRule(const char* c, xtc_handle* h) { return iptc_first_rule(c, h); }
  static const Entry* NextRule(const Entry* e, xtc_handle* h) { return iptc_next_rule(e, h); }
  static const char* GetTarget(const Entry* e, xtc_handle* h) { return iptc_get_target(e, h); }
  static int Builtin(const char* c, xtc_handle* h) { return iptc_builtin(c, h); }
  static int IsChain(const char* c, xtc_handle* h) { return iptc_is_chain(c, h); }
  static const char* GetPolicy(const char* c, xt_counters* n, xtc_handle* h) { return iptc_get_policy(c, n, h); }
  static int Append(const char* c, const Entry* e, xtc_handle* h) { return iptc_append_entry(c, e, h); }
  static int Insert(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return iptc_insert_entry(c, e, n, h); }
  static int Replace(const char* c, const Entry* e, unsigned n, xtc_handle* h) {
    return iptc_replace_entry(c, e, n, h);
  }
  static int Check(const char* c, const Entry* e, unsigned char* m, xtc_handle* h) {
    return iptc_check_entry(c, e, m, h);
  }
  static int Delete(const char* c, const Entry* e, unsigned char* m, xtc_handle* h) {
    return iptc_delete_entry(c, e, m, h);
  }
  static int DeleteNum(const char* c, unsigned n, xtc_handle* h) { return iptc_delete_num_entry(c, n, h); }
  static int Flush(const char* c, xtc_handle* h) { return iptc_flush_entries(c, h); }
  static int Zero(const char* c, xtc_handle* h) { return iptc_zero_entries(c, h); }
  static int CreateChain(const char* c, xtc_handle* h) { return iptc_create_chain(c, h); }
  static int DeleteChain(const char* c, xtc_handle* h) { return iptc_delete_chain(c, h); }
  static int RenameChain(const char* a, const char* b, xtc_handle* h) { return iptc_rename_chain(a, b, h); }
  static int SetPolicy(const char* c, const char* p, xt_counters* n, xtc_handle* h) {
    return iptc_set_policy(c, p, n, h);
  }
  static int Commit(xtc_handle* h) { return iptc_commit(h); }
  static const char* StrError(int err) { return iptc_strerror(err); }
  static const char* NamesPath() { return "/proc/thread-self/net/ip_tables_names"; }

  static XtHeader Header(const Entry& e) {
    XtHeader h = native::HeaderOf(e.ip);
    h.flags &= ~kGotoFlag;
    return h;
  }
  static void SetHeader(Entry& e, const XtHeader& h, bool go) {
    native::SetHeader(e.ip, h);
    if (go) e.ip.flags |= kGotoFlag;
  }
  static bool Goto(const Entry& e) { return (e.ip.flags & kGotoFlag) != 0; }
};

struct V6 {
  using Entry = ip6t_entry;
  static constexpr uint8_t kGotoFlag = IP6T_F_GOTO;
  static xtc_handle* Init(const char* t) { return ip6tc_init(t); }
  static void Free(xtc_handle* h) { ip6tc_free(h); }
  static const char* FirstChain(xtc_handle* h) { return ip6tc_first_chain(h); }
  static const char* NextChain(xtc_handle* h) { return ip6tc_next_chain(h); }
  static const Entry* FirstRule(const char* c, xtc_handle* h) { return ip6tc_first_rule(c, h); }
  static const Entry* NextRule(const Entry* e, xtc_handle* h) { return ip6tc_next_rule(e, h); }
  static const char* GetTarget(const Entry* e, xtc_handle* h) { return ip6tc_get_target(e, h); }
  static int Builtin(const char* c, xtc_handle* h) { return ip6tc_builtin(c, h); }
  static int IsChain(const char* c, xtc_handle* h) { return ip6tc_is_chain(c, h); }
  static const char* GetPolicy(const char* c, xt_counters* n, xtc_handle* h) { return ip6tc_get_policy(c, n, h); }
  static int Append(const char* c, const Entry* e, xtc_handle* h) { return ip6tc_append_entry(c, e, h); }
  static int Insert(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return ip6tc_insert_entry(c, e, n, h); }
  static int Replace(const char* c, const Entry* e, unsigned n, xtc_handle* h) {
    return ip6tc_replace_entry(c, e, n, h);
  }
  static int Check(const char* c, const Entry* e, unsigned char* m, xtc_handle* h) {
    return ip6tc_check_entry(c, e, m, h);
  }
  static int Delete(const char* c, const Entry* e, unsigned char* m, xtc_handle* h) {
    return ip6tc_delete_entry(c, e, m, h);
  }
  static int DeleteNum(const char* c, unsigned n, xtc_handle* h) { return ip6tc_delete_num_entry(c, n, h); }
  static int Flush(const char* c, xtc_handle* h) { return ip6tc_flush_entries(c, h); }
  static int Zero(const char* c, xtc_handle* h) { return ip6tc_zero_entries(c, h); }
  static int CreateChain(const char* c, xtc_handle* h) { return ip6tc_create_chain(c, h); }
  static int DeleteChain(const char* c, xtc_handle* h) { return ip6tc_delete_chain(c, h); }
  static int RenameChain(const char* a, const char* b, xtc_handle* h) { return ip6tc_rename_chain(a, b, h); }
  static int SetPolicy(const char* c, const char* p, xt_counters* n, xtc_handle* h) {
    return ip6tc_set_policy(c, p, n, h);
  }
  static int Commit(xtc_handle* h) { return ip6tc_commit(h); }
  static const char* StrError(int err) { return ip6tc_strerror(err); }
  static const char* NamesPath() { return "/proc/thread-self/net/ip6_tables_names"; }

  static XtHeader Header(const Entry& e) {
    XtHeader h = native::HeaderOf(e.ipv6);
    h.flags &= ~kGotoFlag;
    return h;
  }
  static void SetHeader(Entry& e, const XtHeader& h, bool go) {
    native::SetHeader(e.ipv6, h);
    if (go) e.ipv6.flags |= kGotoFlag;
  }
  static bool Goto(const Entry& e) { return (e.ipv6.flags & kGotoFlag) != 0; }
};

// An iptc handle, freed on every path.
template <typename T>
struct Handle {
  xtc_handle* h = nullptr;
  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (h != nullptr) T::Free(h);
  }
};

// The XtRule of one entry as libiptc holds it (the jump's chain from libiptc: the blob offset is resolved there).
template <typename T>
Result<XtRule> EntryToXt(Family family, const typename T::Entry* e, xtc_handle* h) {
  XtRule x;
  x.family = family;
  x.header = T::Header(*e);
  x.counters = {e->counters.pcnt, e->counters.bcnt};
  const auto* base = reinterpret_cast<const unsigned char*>(e);
  for (size_t at = sizeof(typename T::Entry); at < e->target_offset;) {
    const auto* m = reinterpret_cast<const xt_entry_match*>(base + at);
    if (m->u.match_size < sizeof(xt_entry_match) || at + m->u.match_size > e->target_offset) {
      return Status::Internal("bad match size in an x_tables entry");
    }
    XtExtension ext;
    ext.name.assign(m->u.user.name, strnlen(m->u.user.name, sizeof(m->u.user.name)));
    ext.revision = m->u.user.revision;
    ext.data.assign(reinterpret_cast<const char*>(m->data), m->u.match_size - sizeof(xt_entry_match));
    x.matches.push_back(std::move(ext));
    at += m->u.match_size;
  }
  const auto* t = reinterpret_cast<const xt_entry_target*>(base + e->target_offset);
  if (t->u.user.name[0] != '\0') {  // a target extension
    x.verdict = XtRule::Verdict::kTarget;
    x.target.name.assign(t->u.user.name, strnlen(t->u.user.name, sizeof(t->u.user.name)));
    x.target.revision = t->u.user.revision;
    x.target.data.assign(reinterpret_cast<const char*>(t->data), t->u.target_size - sizeof(xt_entry_target));
    x.jumpto = x.target.name;
    return x;
  }
  const std::string name = T::GetTarget(e, h);
  if (name.empty()) {
    x.verdict = XtRule::Verdict::kNone;
  } else if (name == "ACCEPT") {
    x.verdict = XtRule::Verdict::kAccept;
  } else if (name == "DROP") {
    x.verdict = XtRule::Verdict::kDrop;
  } else if (name == "RETURN") {
    x.verdict = XtRule::Verdict::kReturn;
  } else if (name == "QUEUE") {
    return Status::FailedPrecondition("the QUEUE verdict (iptables-save cannot show it as a rule)");
  } else {
    x.verdict = T::Goto(*e) ? XtRule::Verdict::kGoto : XtRule::Verdict::kJump;
    x.chain = name;
  }
  return x;
}

// The entry iptables-legacy builds for `x` (iptables.c generate_entry / command_jump): header, matches in order,
// the target; a standard target (verdict, chain, or "" for none) carries its name for libiptc to map.
template <typename T>
std::string XtToEntry(const XtRule& x, const Counters& counters) {
  const bool go = x.verdict == XtRule::Verdict::kGoto;
  size_t size = sizeof(typename T::Entry);
  for (const XtExtension& m : x.matches) size += XT_ALIGN(sizeof(xt_entry_match)) + m.data.size();
  const size_t target_offset = size;
  const size_t target_size = x.verdict == XtRule::Verdict::kTarget
                                 ? XT_ALIGN(sizeof(xt_entry_target)) + x.target.data.size()
                                 : XT_ALIGN(sizeof(xt_entry_target)) + XT_ALIGN(sizeof(int));
  size += target_size;
  std::string bytes(size, '\0');
  auto* e = reinterpret_cast<typename T::Entry*>(bytes.data());
  T::SetHeader(*e, x.header, go);
  e->target_offset = static_cast<uint16_t>(target_offset);
  e->next_offset = static_cast<uint16_t>(size);
  e->counters.pcnt = counters.packets;
  e->counters.bcnt = counters.bytes;
  size_t at = sizeof(typename T::Entry);
  for (const XtExtension& ext : x.matches) {
    auto* m = reinterpret_cast<xt_entry_match*>(bytes.data() + at);
    m->u.user.match_size = static_cast<uint16_t>(XT_ALIGN(sizeof(xt_entry_match)) + ext.data.size());
    std::snprintf(m->u.user.name, sizeof(m->u.user.name), "%s", ext.name.c_str());
    m->u.user.revision = ext.revision;
    std::memcpy(m->data, ext.data.data(), ext.data.size());
    at += m->u.user.match_size;
  }
  auto* t = reinterpret_cast<xt_entry_target*>(bytes.data() + at);
  t->u.user.target_size = static_cast<uint16_t>(target_size);
  const char* name = "";
  switch (x.verdict) {
    case XtRule::Verdict::kNone:
      break;
    case XtRule::Verdict::kAccept:
      name = "ACCEPT";
      break;
    case XtRule::Verdict::kDrop:
      name = "DROP";
      break;
    case XtRule::Verdict::kReturn:
      name = "RETURN";
      break;
    case XtRule::Verdict::kJump:
    case XtRule::Verdict::kGoto:
      name = x.chain.c_str();
      break;
    case XtRule::Verdict::kTarget:
      name = x.target.name.c_str();
      t->u.user.revision = x.target.revision;
      std::memcpy(t->data, x.target.data.data(), x.target.data.size());
      break;
  }
  std::snprintf(t->u.user.name, sizeof(t->u.user.name), "%s", name);
  return bytes;
}

// What identifies a decoded rule: the entry (header, matches, target) with counters and comefrom zeroed, a
// standard target's verdict (a blob offset for jumps) replaced by what libiptc resolves it to (verdict or chain).
// Rules of the set match / SET target are never cached (their set index names a set only as long as it exists).
// The bytes of each match's and the target's name past its NUL are zeroed: the kernel copies a name only up to its
// NUL into the entry it returns (xt_obj_to_user), so what follows is whatever the reader's buffer held before
// (libiptc's GET_ENTRIES buffer is not zeroed; after another handle's blob was freed there, it is that blob's
// bytes). Without this the key of an unchanged rule changed from read to read whenever the buffer came from reused
// memory (a caller on its process's main thread), and every read decoded every rule again.
template <typename T>
std::string EntryKey(const typename T::Entry* e, xtc_handle* h) {
  std::string key(reinterpret_cast<const char*>(e), e->next_offset);
  std::memset(key.data() + offsetof(typename T::Entry, counters), 0, sizeof(e->counters));
  std::memset(key.data() + offsetof(typename T::Entry, comefrom), 0, sizeof(e->comefrom));
  auto clear_name_tail = [&](size_t at) {  // at: the offset of an xt_entry_match / xt_entry_target in `key`
    char* name = key.data() + at + offsetof(xt_entry_match, u.user.name);
    const size_t len = strnlen(name, XT_EXTENSION_MAXNAMELEN);
    std::memset(name + len, 0, XT_EXTENSION_MAXNAMELEN - len);
  };
  const size_t to = e->target_offset;
  for (size_t at = sizeof(typename T::Entry); at + sizeof(xt_entry_match) <= to;) {
    const auto* m = reinterpret_cast<const xt_entry_match*>(reinterpret_cast<const char*>(e) + at);
    if (m->u.user.match_size < sizeof(xt_entry_match)) break;
    clear_name_tail(at);
    at += m->u.user.match_size;
  }
  const auto* t = reinterpret_cast<const xt_entry_target*>(reinterpret_cast<const char*>(e) + to);
  if (t->u.user.name[0] == '\0') {
    key.resize(to);
    key += std::string("\0target:", 8) + T::GetTarget(e, h);
  } else if (to + sizeof(xt_entry_target) <= key.size()) {
    clear_name_tail(to);
  }
  return key;
}

// Whether entry `e` has the EntryKey `key` (built from a rule iptkit encodes), without building e's key: a probe
// compared with every rule of a chain. Compared as libiptc's is_same does, but every byte of the extensions' data:
// the header byte for byte (counters and comefrom aside), then per match and the target its size, name, revision
// and data. The names are compared as strings, not as their 29 bytes: the kernel copies only a name's bytes up to
// its NUL into the entry it returns (xt_obj_to_user), so what follows the NUL is what libiptc's buffer held before
// (see EntryKey), never reliably zeros.
template <typename T>
bool EntryHasKey(const typename T::Entry* e, xtc_handle* h, std::string_view key) {
  using Entry = typename T::Entry;
  constexpr size_t kHead = offsetof(Entry, comefrom);  // the header, nfcache, target and next offsets
  const auto* got = reinterpret_cast<const unsigned char*>(e);
  const auto* want = reinterpret_cast<const unsigned char*>(key.data());
  const size_t to = e->target_offset;
  if (key.size() < to || to < sizeof(Entry) || std::memcmp(got, want, kHead) != 0) {
    return false;
  }
  // One extension (match or target) at `at`: size, name, revision, data; false when they differ.
  auto same = [&](size_t at, size_t size) {
    const auto* a = reinterpret_cast<const xt_entry_match*>(got + at);
    const auto* b = reinterpret_cast<const xt_entry_match*>(want + at);
    return a->u.user.revision == b->u.user.revision &&
           strncmp(a->u.user.name, b->u.user.name, sizeof(a->u.user.name)) == 0 &&
           std::memcmp(got + at + sizeof(xt_entry_match), want + at + sizeof(xt_entry_match),
                       size - sizeof(xt_entry_match)) == 0;
  };
  for (size_t at = sizeof(Entry); at < to;) {
    const auto* m = reinterpret_cast<const xt_entry_match*>(got + at);
    const uint16_t size = m->u.user.match_size;
    uint16_t want_size;
    if (at + sizeof(xt_entry_match) > key.size()) return false;
    std::memcpy(&want_size, want + at, sizeof(want_size));
    if (size < sizeof(xt_entry_match) || size != want_size || at + size > to || !same(at, size)) return false;
    at += size;
  }
  const auto* t = reinterpret_cast<const xt_entry_target*>(got + to);
  if (t->u.user.name[0] != '\0') {  // a target extension: the key is the whole entry
    const size_t size = t->u.user.target_size;
    uint16_t want_size;
    std::memcpy(&want_size, want + to, sizeof(want_size));
    if (key.size() != e->next_offset || key.size() < to + sizeof(xt_entry_target)) return false;
    return size == want_size && to + size == e->next_offset && size >= sizeof(xt_entry_target) && same(to, size);
  }
  constexpr std::string_view kTag("\0target:", 8);
  const std::string_view rest = key.substr(to);
  return rest.starts_with(kTag) && rest.substr(kTag.size()) == T::GetTarget(e, h);
}

bool UsesSetIndex(const XtRule& x) {
  if (x.verdict == XtRule::Verdict::kTarget && x.target.name == "SET") return true;
  for (const XtExtension& m : x.matches) {
    if (m.name == "set") return true;
  }
  return false;
}

// The kernel form of a lossy rule (Rule::kernel_form) is its EntryKey prefixed with kKernelFormTag. The same
// key, built from a parsed rule (no libiptc handle: a standard target's name is what libiptc resolves it to).
constexpr std::string_view kKernelFormTag = "x_tables-entry:";

template <typename T>
std::string KernelFormOf(const std::string& entry, bool standard_target) {
  const auto* e = reinterpret_cast<const typename T::Entry*>(entry.data());
  const auto* t = reinterpret_cast<const xt_entry_target*>(entry.data() + e->target_offset);
  std::string key = entry;
  std::memset(key.data() + offsetof(typename T::Entry, counters), 0, sizeof(e->counters));
  if (standard_target) {
    const std::string name(t->u.user.name, strnlen(t->u.user.name, sizeof(t->u.user.name)));
    key.resize(e->target_offset);
    key += std::string("\0target:", 8) + name;
  }
  return std::string(kKernelFormTag) + key;
}

// The entry a kernel form stands for (counters zero; a standard target named as iptables names it, for libiptc to
// map), or nullopt when `form` is not one of this backend's.
template <typename T>
std::optional<std::string> EntryOfKernelForm(const std::string& form) {
  if (!form.starts_with(kKernelFormTag)) return std::nullopt;
  std::string key = form.substr(kKernelFormTag.size());
  if (key.size() < sizeof(typename T::Entry)) return std::nullopt;
  typename T::Entry e;
  std::memcpy(&e, key.data(), sizeof(e));
  if (e.target_offset < sizeof(e) || e.target_offset > key.size()) return std::nullopt;
  if (key.size() == e.next_offset) return key;  // a target extension: the whole entry
  const std::string_view tag("\0target:", 8);
  if (std::string_view(key).substr(e.target_offset, tag.size()) != tag) return std::nullopt;
  const std::string name = key.substr(e.target_offset + tag.size());
  const size_t target_size = XT_ALIGN(sizeof(xt_entry_target)) + XT_ALIGN(sizeof(int));
  if (name.size() >= XT_EXTENSION_MAXNAMELEN || e.target_offset + target_size != e.next_offset) return std::nullopt;
  key.resize(e.next_offset);
  std::memset(key.data() + e.target_offset, 0, target_size);
  auto* t = reinterpret_cast<xt_entry_target*>(key.data() + e.target_offset);
  t->u.user.target_size = static_cast<uint16_t>(target_size);
  std::memcpy(t->u.user.name, name.data(), name.size());
  return key;
}

// iptables-legacy-save cannot print an inverted match-all interface (`! -i +`: an empty mask with the inversion
// bit): the printed rule loads as another one.
bool LossyHeader(const XtHeader& h) {
  return ((h.invflags & native::kInvViaIn) && h.iniface_mask[0] == 0) ||
         ((h.invflags & native::kInvViaOut) && h.outiface_mask[0] == 0);
}
constexpr const char* kLossyWhy =
    "iptables-legacy-save does not print an inverted match-all interface (! -i + / ! -o +), so its printed form "
    "loads as another rule";

struct KeyHash {
  size_t operator()(const std::tuple<Family, std::string>& k) const {
    return std::hash<std::string>()(std::get<1>(k)) ^ static_cast<size_t>(std::get<0>(k));
  }
};

// iptables refuses these in userspace (xshared.c do_parse) for the builtin chain names.
Status CheckDirection(const std::string& chain, const Rule& rule) {
  if ((chain == "PREROUTING" || chain == "INPUT") && rule.out_interface) {
    return Status::InvalidArgument("Can't use -o with " + chain).WithToken("-o");
  }
  if ((chain == "POSTROUTING" || chain == "OUTPUT") && rule.in_interface) {
    return Status::InvalidArgument("Can't use -i with " + chain).WithToken("-i");
  }
  return Status::Ok();
}

// Counters typed with the rule (`-c PKTS BYTES`, as `iptables -A -c` sets them), if any.
std::optional<Counters> TypedCounters(const Rule& rule) {
  if (!HasTypedForm(rule) || rule.typed.size() < 3 || rule.typed[0] != "-c") return std::nullopt;
  Counters c;
  const std::string& p = rule.typed[1];
  const std::string& b = rule.typed[2];
  if (std::from_chars(p.data(), p.data() + p.size(), c.packets).ec != std::errc() ||
      std::from_chars(b.data(), b.data() + b.size(), c.bytes).ec != std::errc()) {
    return std::nullopt;
  }
  return c;
}

bool UsesIpset(const Rule& rule) {
  if (rule.target.name == "SET") return true;
  for (const Match& m : rule.matches) {
    if (m.name == "set") return true;
  }
  return false;
}

// A libiptc error as a Status: the code by errno, iptables' own wording.
StatusCode CodeOf(int err, TableOp::Kind kind) {
  using K = TableOp::Kind;
  switch (err) {
    case ENOENT:
      return kind == K::kCheck ? StatusCode::kFailedPrecondition : StatusCode::kNotFound;
    case EEXIST:
      return StatusCode::kAlreadyExists;
    case E2BIG:
    case EBUSY:
    case ENOTEMPTY:
    case EMLINK:
      return StatusCode::kFailedPrecondition;
    case EPERM:
    case EACCES:
      return StatusCode::kPermissionDenied;
    case ENOMEM:
      return StatusCode::kUnavailable;
    default:
      return StatusCode::kInvalidArgument;
  }
}

class XtablesLockGuard final : public LockGuard {
 public:
  XtablesLockGuard(std::optional<base::FileLock> lock, std::shared_ptr<int> depth, std::function<void()> on_release)
      : lock_(std::move(lock)), depth_(std::move(depth)), on_release_(std::move(on_release)) {
    ++*depth_;
  }
  ~XtablesLockGuard() override {
    on_release_();
    --*depth_;
  }

 private:
  std::optional<base::FileLock> lock_;  // empty for a nested guard
  std::shared_ptr<int> depth_;
  std::function<void()> on_release_;  // runs before the flock goes
};

// The libiptc handles a plan read under the lock, kept for the commit that follows (Backend traits
// commits_plan_snapshot): (family, table) → handle, and the chains of that table whose probes the read found byte
// for byte (the plan's deletes by spec there mean the first entry that is the rule byte for byte). Freed with the
// family's own iptc_free.
class HeldHandles {
 public:
  struct Held {
    xtc_handle* h = nullptr;
    std::set<std::string> exact_chains;
  };
  HeldHandles() = default;
  HeldHandles(const HeldHandles&) = delete;
  HeldHandles& operator=(const HeldHandles&) = delete;
  ~HeldHandles() { Clear(); }
  void Put(Family family, const std::string& table, xtc_handle* h, std::set<std::string> exact_chains) {
    Drop(family, table);
    held_[{family, table}] = Held{h, std::move(exact_chains)};
  }
  // The handle of `table` (h nullptr if none), which the caller then owns.
  Held Take(Family family, const std::string& table) {
    auto it = held_.find({family, table});
    if (it == held_.end()) return {};
    Held held = std::move(it->second);
    held_.erase(it);
    return held;
  }
  void Drop(Family family, const std::string& table) { Free(family, Take(family, table).h); }
  void DropFamily(Family family) {
    for (auto it = held_.begin(); it != held_.end();) {
      if (std::get<0>(it->first) != family) {
        ++it;
        continue;
      }
      Free(family, it->second.h);
      it = held_.erase(it);
    }
  }
  void Clear() {
    for (const auto& [key, held] : held_) Free(std::get<0>(key), held.h);
    held_.clear();
  }

 private:
  static void Free(Family family, xtc_handle* h) {
    if (h == nullptr) return;
    std::lock_guard<std::mutex> iptc(IptcMutex());
    family == Family::kIPv4 ? V4::Free(h) : V6::Free(h);
  }
  std::map<std::tuple<Family, std::string>, Held> held_;
};

// Runs libiptc work in the backend's network namespace on one thread that entered it once, started on first need
// and joined with the backend (setns(2) affects only that thread; a socket keeps the namespace it was made in, so a
// handle read there commits from any thread). netns_fd -1: the thread stays in the namespace of the thread that
// started it (the caller's); a thread already in the target namespace does not call setns (which needs
// CAP_SYS_ADMIN). Why a thread of its own:
//  - a thread per call (base::RunInNetnsThread) cost a clone, a setns, a stack and a malloc arena each time;
//  - on the caller's thread libiptc's table copies (a few MB at 10,000 rules, allocated and freed per change) come
//    from the caller's malloc arena: in a Python process's main thread they were faulted in afresh on every change
//    (about 200 page faults per append or delete at 10,000 rules, against 25 here), which made a change inside the
//    namespace half again as expensive as one through a handle on it.
// A forked child, where the thread does not exist, falls back to a thread per call.
class NetnsThread {
 public:
  explicit NetnsThread(int netns_fd) : netns_fd_(netns_fd) {}
  NetnsThread(const NetnsThread&) = delete;
  NetnsThread& operator=(const NetnsThread&) = delete;
  ~NetnsThread() {
    if (!thread_) return;
    if (pid_ != ::getpid()) {
      (void)thread_.release();  // the parent's thread: nothing of it runs here
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_->join();
  }

  // fn's Status, or why the thread could not enter the namespace. One call at a time per object.
  Status Run(const std::function<Status()>& fn, std::string_view what) {
    if (thread_ && pid_ != ::getpid()) return base::RunInNetnsThread(netns_fd_, fn, what);
    std::unique_lock<std::mutex> lock(mu_);
    if (!thread_) {
      try {
        thread_ = std::make_unique<std::thread>([this] { Loop(); });
      } catch (const std::system_error& e) {
        return Status::Internal("starting the netns thread (" + std::string(what) + "): " + e.what());
      }
      pid_ = ::getpid();
    }
    job_ = &fn;
    done_ = false;
    wake_.notify_one();
    finished_.wait(lock, [&] { return done_; });
    if (!entered_.ok()) return Status(entered_.code(), "setns (" + std::string(what) + "): " + entered_.message());
    return std::move(result_);
  }

 private:
  void Loop() {
    Status entered;
    struct stat target, here;
    if (netns_fd_ >= 0 && (::fstat(netns_fd_, &target) != 0 || ::stat("/proc/thread-self/ns/net", &here) != 0 ||
                           target.st_ino != here.st_ino || target.st_dev != here.st_dev)) {
      if (::setns(netns_fd_, CLONE_NEWNET) != 0) entered = base::ErrnoToStatus(errno, "entering the netns");
    }
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = entered;
    for (;;) {
      wake_.wait(lock, [&] { return job_ != nullptr || stop_; });
      if (job_ == nullptr) return;  // stop_
      const std::function<Status()>* job = job_;
      job_ = nullptr;
      lock.unlock();
      Status status = entered.ok() ? (*job)() : Status::Ok();
      lock.lock();
      result_ = std::move(status);
      done_ = true;
      finished_.notify_one();
    }
  }

  const int netns_fd_;
  std::mutex mu_;
  std::condition_variable wake_;      // a job or stop_ for the thread
  std::condition_variable finished_;  // done_ for the caller
  const std::function<Status()>* job_ = nullptr;
  Status result_;
  Status entered_;
  bool done_ = false;
  bool stop_ = false;
  std::unique_ptr<std::thread> thread_;
  pid_t pid_ = 0;  // the process that started thread_
};

// A probe of ReadChainsForPlan: a rule the plan searches a chain for, as its canonical form and its EntryKey.
struct Probe {
  Rule canonical;
  std::string key;
};
using Probes = std::map<std::pair<std::string, std::string>, std::vector<Probe>>;

class XtablesBackend final : public Backend {
 public:
  XtablesBackend(BackendOptions options, base::UniqueFd netns)
      : options_(std::move(options)),
        netns_(std::move(netns)),
        netns_thread_(netns_.get()),
        depth_(std::make_shared<int>(0)) {
    traits_.name = "native-legacy";
    traits_.variant = "legacy";
    traits_.atomic_across_tables = false;
    traits_.handles = false;
    traits_.needs_lock = true;
    traits_.rename_then_use = true;
    traits_.commits_plan_snapshot = true;
  }

  const BackendTraits& traits() const override { return traits_; }

  Result<Ruleset> Read(Family family, const std::optional<std::string>& table, bool fresh_counters) override {
    (void)fresh_counters;      // counters come with the blob; unchanged rules come from the decode cache
    held_.DropFamily(family);  // a plan made on this read commits on a fresh handle
    return family == Family::kIPv4 ? ReadT<V4>(family, table, SnapshotDetail::kRules, ChainScope{}, {}, false)
                                   : ReadT<V6>(family, table, SnapshotDetail::kRules, ChainScope{}, {}, false);
  }

  Result<Ruleset> ReadForPlan(Family family, SnapshotDetail detail) override {
    return ReadChainsForPlan(family, detail, ChainScope{});
  }

  Result<Ruleset> ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& scope) override;

  Result<bool> HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                              const Rule& rule) override;

  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override {
    return CommitTableByTable(tables, traits_.name, [this](const TableBatch& batch) { return CommitOne(batch); });
  }
  using Backend::Commit;

  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override;

  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override {
    std::optional<base::FileLock> lock;
    if (*depth_ == 0) {
      IPTKIT_ASSIGN_OR_RETURN(base::FileLock held, AcquireLock(wait));
      lock.emplace(std::move(held));
    }
    // Handles read under this guard serve the commit made under it, never a later one.
    return std::unique_ptr<LockGuard>(
        std::make_unique<XtablesLockGuard>(std::move(lock), depth_, [this] { held_.Clear(); }));
  }

  Result<FirewallInfo> Info() override {
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> survey, NewRestoreBackend(Variant::kLegacy, options_));
    IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, survey->Info());
    info.backend = traits_.name;
    return info;
  }

 private:
  Result<base::FileLock> AcquireLock(std::chrono::milliseconds wait) {
    auto lock = base::FileLock::Acquire(options_.xtables_lock_path, wait);
    if (!lock.ok() && lock.status().code() == StatusCode::kUnavailable) {
      return Status::Unavailable("xtables lock busy: " + lock.status().message());
    }
    return lock;
  }

  // Runs `fn` (libiptc work) in the target netns: iptc_init opens its socket there, and the socket keeps it.
  Status InNetns(const std::function<Status()>& fn, std::string_view what) { return netns_thread_.Run(fn, what); }

  // Reads the family's tables (or `only`): every chain, and the rules of the chains `scope` asks for at `detail`
  // (ReadChainsForPlan; Read asks for every chain at kRules). A chain of `probes` shows the probes' canonical rules
  // where an entry is byte for byte one of them and placeholders elsewhere, or is decoded whole when a probe is not
  // found. With `retain`, the handles are kept in held_ for the commit under the current lock.
  template <typename T>
  Result<Ruleset> ReadT(Family family, const std::optional<std::string>& only, SnapshotDetail detail,
                        const ChainScope& scope, const Probes& probes, bool retain);
  // The EntryKey the rule `x` is written as (what EntryHasKey compares with).
  template <typename T>
  static std::string ProbeKey(const XtRule& x) {
    return KernelFormOf<T>(XtToEntry<T>(x, {}), x.verdict != XtRule::Verdict::kTarget).substr(kKernelFormTag.size());
  }
  // FailedPrecondition when the rule at 1-based `index` of `chain` cannot be decoded: a rule iptkit cannot show is
  // never deleted or replaced by position. OK when there is no such rule (libiptc then says so).
  template <typename T>
  Status CheckDecodable(Family family, xtc_handle* h, const std::string& chain, int index);
  template <typename T>
  Status CommitT(const TableBatch& batch);
  // CommitT's libiptc part, on the NetnsThread, under IptcMutex: `held` (or a fresh handle) edited and committed.
  template <typename T>
  Status EditAndCommitT(const TableBatch& batch, const HeldHandles::Held& held);
  Status CommitOne(const TableBatch& batch) {
    if (batch.table.empty() || batch.table.size() >= XT_TABLE_MAXNAMELEN ||
        batch.table.find_first_of(" \t\n\r/") != std::string::npos) {
      return Status::InvalidArgument("invalid table name '" + batch.table + "'");
    }
    std::optional<base::FileLock> lock;
    if (*depth_ == 0) {
      IPTKIT_ASSIGN_OR_RETURN(base::FileLock held, AcquireLock(options_.wait));
      lock.emplace(std::move(held));
    }
    return batch.family == Family::kIPv4 ? CommitT<V4>(batch) : CommitT<V6>(batch);
  }
  // Binary forms of every rule the ops add, check or delete (parsed once per distinct spec; ipset users always).
  Status EnsureXt(Family family, const std::vector<const Rule*>& rules);
  // A rule this backend read (or canonicalized) as lossy: it is committed from its kernel form.
  static bool IsOwnLossy(Family family, const Rule& rule) {
    if (rule.lossy.empty()) return false;
    return family == Family::kIPv4 ? EntryOfKernelForm<V4>(rule.kernel_form).has_value()
                                   : EntryOfKernelForm<V6>(rule.kernel_form).has_value();
  }
  const XtRule* XtOf(Family family, const Rule& rule) const {
    auto it = xt_.find({family, FormatRuleForRestore(rule, /*counters=*/false)});
    return it == xt_.end() ? nullptr : &it->second;
  }

  BackendOptions options_;
  base::UniqueFd netns_;
  NetnsThread netns_thread_;  // (after netns_: joined before the descriptor closes)
  BackendTraits traits_;
  std::shared_ptr<int> depth_;  // live lock guards
  std::map<std::tuple<Family, std::string>, XtRule> xt_;
  std::map<std::tuple<Family, std::string>, Rule> canonical_;
  // Rules decoded by Read, by EntryKey: an unchanged rule is decoded once per backend, not once per read.
  static constexpr size_t kDecodeCacheLimit = 200000;
  std::unordered_map<std::tuple<Family, std::string>, Rule, KeyHash> decoded_;
  HeldHandles held_;  // see commits_plan_snapshot; cleared when a lock guard goes
};

template <typename T>
Result<Ruleset> XtablesBackend::ReadT(Family family, const std::optional<std::string>& only, SnapshotDetail detail,
                                      const ChainScope& scope, const Probes& probes, bool retain) {
  Ruleset rs;
  rs.family = family;
  struct Pending {
    size_t table, chain, rule;
  };
  std::vector<XtRule> xts;
  std::vector<Pending> where;
  std::map<size_t, std::string> lossy;  // index in xts → kernel form
  std::vector<std::string> keys;        // per xts: its decode cache key ("": not cached)
  // What a chain shows: nothing, placeholders, the probes where they are (placeholders elsewhere), every rule.
  enum class Show { kNothing, kPlaceholders, kProbes, kRules };
  // (ReadChainsForPlan puts in `probes` only chains it does not want decoded whole.)
  auto show = [&](const std::string& table, const std::string& chain) {
    if (probes.count({table, chain})) return Show::kProbes;
    const bool in_scope = scope.every_chain || scope.chains.count({table, chain});
    if (!in_scope) return scope.probes.count({table, chain}) ? Show::kRules : Show::kNothing;
    return detail == SnapshotDetail::kRules       ? Show::kRules
           : detail == SnapshotDetail::kPositions ? Show::kPlaceholders
                                                  : Show::kNothing;
  };
  std::lock_guard<std::mutex> iptc(IptcMutex());
  Status read = InNetns(
      [&]() -> Status {
        // The tables that exist; asking libiptc for any other would instantiate it.
        std::vector<std::string> names;
        {
          int fd = ::open(T::NamesPath(), O_RDONLY | O_CLOEXEC);
          if (fd < 0 && errno != ENOENT) return base::ErrnoToStatus(errno, std::string("open ") + T::NamesPath());
          if (fd >= 0) {
            std::string text;
            char buf[4096];
            for (;;) {
              ssize_t n = ::read(fd, buf, sizeof(buf));
              if (n < 0 && errno == EINTR) continue;
              if (n <= 0) break;
              text.append(buf, static_cast<size_t>(n));
            }
            ::close(fd);
            size_t start = 0;
            while (start < text.size()) {
              size_t end = text.find('\n', start);
              if (end == std::string::npos) end = text.size();
              if (end > start) names.push_back(text.substr(start, end - start));
              start = end + 1;
            }
          }
        }
        for (const std::string& name : names) {
          if (only && name != *only) continue;
          // Only the tables the plan touches (ChainScope::tables): an iptc_init per table, as iptables-legacy.
          if (!scope.every_chain && !scope.tables.empty() && !scope.tables.count(name)) continue;
          Handle<T> h;
          h.h = T::Init(name.c_str());
          if (h.h == nullptr) {
            if (errno == ENOENT) continue;  // gone meanwhile (only with its module)
            return Status(CodeOf(errno, TableOp::Kind::kAppend),
                          "reading x_tables table " + name + ": " + T::StrError(errno));
          }
          Table t;
          t.name = name;
          std::set<std::string> exact_chains;  // chains whose probes were all found byte for byte
          for (const char* c = T::FirstChain(h.h); c != nullptr; c = T::NextChain(h.h)) {
            Chain chain;
            chain.name = c;
            if (T::Builtin(c, h.h)) {
              xt_counters n{};
              const char* policy = T::GetPolicy(c, &n, h.h);
              chain.policy = policy != nullptr ? policy : "ACCEPT";
              chain.counters = {n.pcnt, n.bcnt};
            }
            t.chains.push_back(std::move(chain));
          }
          const size_t ti = rs.tables.size();
          for (size_t ci = 0; ci < t.chains.size(); ++ci) {
            Chain& chain = t.chains[ci];
            Show what = show(name, chain.name);
            if (what == Show::kNothing) continue;
            if (what != Show::kRules) {
              // Placeholders keep every rule's place; a probe shows where an entry is byte for byte that rule (which
              // is how iptables-legacy -C/-D compare). A probe not found has the chain decoded whole below.
              const std::vector<Probe>* wanted = nullptr;
              if (auto p = probes.find({name, chain.name}); p != probes.end()) wanted = &p->second;
              std::vector<bool> found(wanted != nullptr ? wanted->size() : 0, false);
              // Without probe positions (ChainScope::probe_positions) the chain shows the probes where found and
              // nothing else: no placeholder per rule.
              const bool placeholders =
                  what != Show::kProbes || scope.probe_positions || scope.chains.count({name, chain.name}) != 0;
              if (placeholders) {
                size_t count = 0;
                for (const auto* e = T::FirstRule(chain.name.c_str(), h.h); e != nullptr; e = T::NextRule(e, h.h)) {
                  ++count;
                }
                chain.rules.reserve(count + 1);  // and room for one more (the append planned on it)
              }
              for (const auto* e = T::FirstRule(chain.name.c_str(), h.h); e != nullptr; e = T::NextRule(e, h.h)) {
                if (placeholders) chain.rules.emplace_back();
                for (size_t k = 0; wanted != nullptr && k < wanted->size(); ++k) {
                  if (!EntryHasKey<T>(e, h.h, (*wanted)[k].key)) continue;
                  if (!placeholders) chain.rules.emplace_back();
                  chain.rules.back() = (*wanted)[k].canonical;
                  chain.rules.back().counters = {e->counters.pcnt, e->counters.bcnt};
                  // (The same rule twice, e.g. deleted twice: both found.)
                  for (size_t j = k; j < wanted->size(); ++j)
                    found[j] = found[j] || (*wanted)[j].key == (*wanted)[k].key;
                  break;
                }
              }
              if (std::find(found.begin(), found.end(), false) == found.end()) {
                if (wanted != nullptr) exact_chains.insert(chain.name);
                continue;
              }
              chain.rules.clear();
            }
            for (const auto* e = T::FirstRule(chain.name.c_str(), h.h); e != nullptr; e = T::NextRule(e, h.h)) {
              // A rule decoded before (the same entry bytes, jump target and namespace) is taken from the cache.
              std::string key = EntryKey<T>(e, h.h);
              if (auto hit = decoded_.find({family, key}); hit != decoded_.end()) {
                chain.rules.push_back(hit->second);
                chain.rules.back().counters = {e->counters.pcnt, e->counters.bcnt};
                continue;
              }
              Result<XtRule> x = EntryToXt<T>(family, e, h.h);
              chain.rules.emplace_back();
              if (!x.ok()) {
                if (t.unrepresentable_reason.empty()) {
                  t.unrepresentable_reason = "chain " + chain.name + " rule " + std::to_string(chain.rules.size()) +
                                             ": " + x.status().message();
                }
                continue;
              }
              if (LossyHeader(x->header)) lossy.emplace(xts.size(), std::string(kKernelFormTag) + key);
              keys.push_back(UsesSetIndex(*x) ? std::string() : std::move(key));
              xts.push_back(*std::move(x));
              where.push_back(Pending{ti, ci, chain.rules.size() - 1});
            }
          }
          rs.tables.push_back(std::move(t));
          if (retain) {
            held_.Put(family, name, h.h, std::move(exact_chains));
            h.h = nullptr;
          }
        }
        return Status::Ok();
      },
      "reading x_tables");
  IPTKIT_RETURN_IF_ERROR(read);
  if (xts.empty()) return rs;
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  std::vector<const XtRule*> ptrs;
  ptrs.reserve(xts.size());
  for (const XtRule& x : xts) ptrs.push_back(&x);
  std::vector<Result<Rule>> decoded = xt->ToRules(ptrs, netns_.get());
  for (size_t i = 0; i < decoded.size(); ++i) {
    Table& t = rs.tables[where[i].table];
    Chain& chain = t.chains[where[i].chain];
    if (!decoded[i].ok()) {
      if (t.unrepresentable_reason.empty()) {
        t.unrepresentable_reason =
            "chain " + chain.name + " rule " + std::to_string(where[i].rule + 1) + ": " + decoded[i].status().message();
      }
      continue;
    }
    decoded[i]->counters = xts[i].counters;
    if (auto it = lossy.find(i); it != lossy.end()) {
      decoded[i]->lossy = kLossyWhy;
      decoded[i]->kernel_form = it->second;
    }
    if (!keys[i].empty()) {
      if (decoded_.size() >= kDecodeCacheLimit) decoded_.clear();
      Rule cached = *decoded[i];
      cached.counters = {};
      decoded_.emplace(std::make_tuple(family, std::move(keys[i])), std::move(cached));
    }
    chain.rules[where[i].rule] = *std::move(decoded[i]);
  }
  return rs;
}

Result<std::vector<Rule>> XtablesBackend::Canonicalize(Family family, const std::string& table,
                                                       const std::vector<Rule>& rules) {
  (void)table;  // iptables' canonical form of a rule does not depend on its table
  std::vector<Rule> out(rules.size());
  std::vector<std::string> keys(rules.size());
  std::vector<Rule> todo;
  std::vector<std::string> todo_keys;
  std::set<std::string> seen;
  for (size_t i = 0; i < rules.size(); ++i) {
    if (IsOwnLossy(family, rules[i])) continue;  // a lossy rule as read: it stands for its kernel form
    IPTKIT_RETURN_IF_ERROR(ValidateRule(rules[i], family));
    keys[i] = FormatRuleForRestore(rules[i], /*counters=*/false);
    if (canonical_.count({family, keys[i]}) || !seen.insert(keys[i]).second) continue;
    IPTKIT_ASSIGN_OR_RETURN(Rule source, dialect::SourceForm(rules[i], family));
    todo.push_back(std::move(source));
    todo_keys.push_back(keys[i]);
  }
  if (!todo.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
    std::vector<const Rule*> todo_ptrs;
    for (const Rule& r : todo) todo_ptrs.push_back(&r);
    std::vector<Result<XtRule>> parsed = xt->Parse(family, todo_ptrs, netns_.get());
    std::vector<const XtRule*> to_format;
    for (size_t k = 0; k < todo.size(); ++k) {
      if (!parsed[k].ok()) return parsed[k].status().WithContext("rule '" + todo_keys[k] + "'");
      parsed[k]->counters = {};
      to_format.push_back(&*parsed[k]);
    }
    std::vector<Result<Rule>> canon = xt->ToRules(to_format, netns_.get());
    for (size_t k = 0; k < todo.size(); ++k) {
      if (!canon[k].ok()) return canon[k].status().WithContext("rule '" + todo_keys[k] + "'");
      canon[k]->counters = {};
      if (LossyHeader(parsed[k]->header)) {
        const bool standard = parsed[k]->verdict != XtRule::Verdict::kTarget;
        canon[k]->lossy = kLossyWhy;
        canon[k]->kernel_form = family == Family::kIPv4 ? KernelFormOf<V4>(XtToEntry<V4>(*parsed[k], {}), standard)
                                                        : KernelFormOf<V6>(XtToEntry<V6>(*parsed[k], {}), standard);
      }
      xt_[{family, todo_keys[k]}] = *std::move(parsed[k]);
      canonical_[{family, todo_keys[k]}] = *std::move(canon[k]);
    }
  }
  // Each canonical rule carries what was asked for as its typed form, so that XtOf finds the binary form parsed
  // from it (as the other backends' Canonicalize do).
  for (size_t i = 0; i < rules.size(); ++i) {
    if (IsOwnLossy(family, rules[i])) {
      out[i] = rules[i];
      continue;
    }
    out[i] = canonical_.at({family, keys[i]});
    out[i].counters = rules[i].counters;
    out[i].typed = HasTypedForm(rules[i]) ? rules[i].typed : dialect::PrintedArgs(rules[i]);
    Rule untagged = out[i];
    untagged.ClearOwnerTag();
    out[i].typed_for = FormatRuleSpec(untagged);
  }
  return out;
}

Status XtablesBackend::EnsureXt(Family family, const std::vector<const Rule*>& rules) {
  std::vector<Rule> todo;
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const Rule* r : rules) {
    if (IsOwnLossy(family, *r)) continue;  // committed from its kernel form
    std::string key = FormatRuleForRestore(*r, /*counters=*/false);
    if (!seen.insert(key).second) continue;
    // The set match and target carry the kernel's index of the set, looked up by name when parsed: never reused.
    if (!UsesIpset(*r) && xt_.count({family, key})) continue;
    IPTKIT_ASSIGN_OR_RETURN(Rule source, dialect::SourceForm(*r, family));
    todo.push_back(std::move(source));
    keys.push_back(std::move(key));
  }
  if (todo.empty()) return Status::Ok();
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  std::vector<const Rule*> todo_ptrs;
  for (const Rule& r : todo) todo_ptrs.push_back(&r);
  std::vector<Result<XtRule>> parsed = xt->Parse(family, todo_ptrs, netns_.get());
  for (size_t k = 0; k < todo.size(); ++k) {
    if (!parsed[k].ok()) return parsed[k].status().WithContext("rule '" + keys[k] + "'");
    parsed[k]->counters = {};
    xt_[{family, keys[k]}] = *std::move(parsed[k]);
  }
  return Status::Ok();
}

Result<Ruleset> XtablesBackend::ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& scope) {
  // The probes' entries (canonicalized and parsed once per spec and backend). A probe that does not canonicalize,
  // prints as nothing (a placeholder would equal it) or is lossy has its chain decoded whole.
  Probes probes;
  if (!scope.every_chain) {
    for (const auto& [where, rules] : scope.probes) {
      if (detail == SnapshotDetail::kRules && scope.chains.count(where)) continue;  // decoded anyway
      Result<std::vector<Rule>> canon = Canonicalize(family, where.first, rules);
      if (!canon.ok()) continue;
      std::vector<Probe> forms;
      for (const Rule& c : *canon) {
        if (!c.lossy.empty() || FormatRuleSpec(c).empty() || !EnsureXt(family, {&c}).ok()) break;
        const XtRule* x = XtOf(family, c);
        if (x == nullptr) break;
        Probe probe;
        probe.canonical = c;
        probe.canonical.counters = {};
        probe.key = family == Family::kIPv4 ? ProbeKey<V4>(*x) : ProbeKey<V6>(*x);
        forms.push_back(std::move(probe));
      }
      if (forms.size() == rules.size()) probes[where] = std::move(forms);
    }
  }
  // Under the lock the handles stay for the commit: it edits what this read (one iptc_init per table, as
  // iptables-legacy does); the kernel refuses that commit if the table's size changed meanwhile (Aborted).
  const bool retain = *depth_ > 0;
  if (retain) held_.DropFamily(family);
  return family == Family::kIPv4 ? ReadT<V4>(family, std::nullopt, detail, scope, probes, retain)
                                 : ReadT<V6>(family, std::nullopt, detail, scope, probes, retain);
}

Result<bool> XtablesBackend::HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                                            const Rule& rule) {
  if (!rule.lossy.empty() || FormatRuleSpec(rule).empty()) return false;
  IPTKIT_RETURN_IF_ERROR(EnsureXt(family, {&rule}));
  const XtRule* x = XtOf(family, rule);
  if (x == nullptr) return false;
  // Only the chain's entries are compared with the rule's; nothing is decoded.
  const std::string key = family == Family::kIPv4 ? ProbeKey<V4>(*x) : ProbeKey<V6>(*x);
  bool found = false;
  Status s = [&]() -> Status {
    std::lock_guard<std::mutex> iptc(IptcMutex());
    return InNetns(
        [&]() -> Status {
          Handle<V4> h4;
          Handle<V6> h6;
          auto scan = [&]<typename T>(Handle<T>& h) {
            h.h = T::Init(table.c_str());
            if (h.h == nullptr || !T::IsChain(chain.c_str(), h.h)) return;
            for (const auto* e = T::FirstRule(chain.c_str(), h.h); e != nullptr && !found; e = T::NextRule(e, h.h)) {
              found = EntryHasKey<T>(e, h.h, key);
            }
          };
          if (family == Family::kIPv4) {
            scan(h4);
          } else {
            scan(h6);
          }
          return Status::Ok();
        },
        "reading x_tables");
  }();
  if (!s.ok()) return false;
  return found;
}

template <typename T>
Status XtablesBackend::CheckDecodable(Family family, xtc_handle* h, const std::string& chain, int index) {
  if (index < 1 || !T::IsChain(chain.c_str(), h)) return Status::Ok();
  const typename T::Entry* e = T::FirstRule(chain.c_str(), h);
  for (int i = 1; e != nullptr && i < index; ++i) e = T::NextRule(e, h);
  if (e == nullptr) return Status::Ok();
  if (decoded_.count({family, EntryKey<T>(e, h)})) return Status::Ok();
  Result<XtRule> x = EntryToXt<T>(family, e, h);
  Status s = x.status();
  if (s.ok()) {
    IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
    std::vector<Result<Rule>> decoded = xt->ToRules({&*x}, netns_.get());
    s = decoded.front().status();
  }
  if (s.ok()) return Status::Ok();
  return Status::FailedPrecondition("rule " + std::to_string(index) + " of chain " + chain + " cannot be decoded (" +
                                    s.message() + "); iptkit does not rewrite it")
      .WithReason("unrepresentable");
}

template <typename T>
Status XtablesBackend::CommitT(const TableBatch& batch) {
  using K = TableOp::Kind;
  const Family family = batch.family;
  const std::string where = std::string(FamilyName(family)) + " " + batch.table;
  std::vector<const Rule*> rules;
  for (const TableOp& op : batch.ops) {
    if (op.kind == K::kAppend || op.kind == K::kInsert || op.kind == K::kReplace || op.kind == K::kCheck ||
        op.kind == K::kDelete) {
      IPTKIT_RETURN_IF_ERROR(CheckDirection(op.chain, op.rule)
                                 .WithContext(where + " '" + RenderRestoreLine(op) + "'")
                                 .WithLocation(std::string(FamilyName(family)), batch.table, op.chain));
      rules.push_back(&op.rule);
    }
  }
  IPTKIT_RETURN_IF_ERROR(EnsureXt(family, rules));

  std::lock_guard<std::mutex> iptc(IptcMutex());
  // The handle the plan read under this lock (commits_plan_snapshot), else the table as it is now. The edit, the
  // commit and the free run where the handle was read (NetnsThread: libiptc's copies stay in that thread's arena).
  HeldHandles::Held held = held_.Take(family, batch.table);
  return InNetns([&] { return EditAndCommitT<T>(batch, held); }, "committing x_tables");
}

template <typename T>
Status XtablesBackend::EditAndCommitT(const TableBatch& batch, const HeldHandles::Held& held) {
  using K = TableOp::Kind;
  const Family family = batch.family;
  const std::string where = std::string(FamilyName(family)) + " " + batch.table;
  Handle<T> h;
  h.h = held.h;
  if (h.h == nullptr) {
    h.h = T::Init(batch.table.c_str());
    if (h.h == nullptr) {
      const int err = errno;
      return Status(err == ENOENT ? StatusCode::kNotFound : CodeOf(err, K::kAppend),
                    "x_tables table " + where + ": " + T::StrError(err))
          .WithLocation(std::string(FamilyName(family)), batch.table);
    }
  }

  auto fail = [&](const TableOp& op, int err) {
    const std::string line = RenderRestoreLine(op);
    std::string why = T::StrError(err);
    if (op.kind == K::kCheck && err == ENOENT) why = "the rule is not there any more (the chain changed meanwhile)";
    return Status(CodeOf(err, op.kind), where + " '" + line + "': " + why)
        .WithLocation(std::string(FamilyName(family)), batch.table, op.chain);
  };

  std::vector<std::string> chains;  // every chain of the table, for -F / -Z without a chain
  auto all_chains = [&] {
    chains.clear();
    for (const char* c = T::FirstChain(h.h); c != nullptr; c = T::NextChain(h.h)) chains.emplace_back(c);
  };

  if (batch.flush_table) {
    // iptables-legacy-restore without --noflush: every chain emptied, the user chains deleted; the builtin chains
    // are declared by the kPolicy ops (ACCEPT [0:0] when a builtin has none, render.cc).
    all_chains();
    for (const std::string& c : chains) {
      if (!T::Flush(c.c_str(), h.h)) return Status::Internal(where + ": flush " + c + ": " + T::StrError(errno));
    }
    for (const std::string& c : chains) {
      if (T::Builtin(c.c_str(), h.h)) {
        xt_counters zero{};
        if (!T::SetPolicy(c.c_str(), "ACCEPT", &zero, h.h)) {
          return Status::Internal(where + ": policy of " + c + ": " + T::StrError(errno));
        }
      } else if (!T::DeleteChain(c.c_str(), h.h)) {
        return Status::Internal(where + ": delete chain " + c + ": " + T::StrError(errno));
      }
    }
  }

  for (const TableOp& op : batch.ops) {
    const char* chain = op.chain.c_str();
    std::string entry;
    std::vector<unsigned char> mask;
    const XtRule* x = nullptr;
    if (op.kind == K::kAppend || op.kind == K::kInsert || op.kind == K::kReplace || op.kind == K::kCheck ||
        op.kind == K::kDelete) {
      std::optional<std::string> own = EntryOfKernelForm<T>(op.rule.lossy.empty() ? "" : op.rule.kernel_form);
      x = own ? nullptr : XtOf(family, op.rule);
      if (!own && x == nullptr) {
        return Status::Internal(where + ": no binary form for '" + RenderRestoreLine(op) + "'");
      }
      Counters counters;
      if (batch.with_counters) {
        counters = op.rule.counters;
      } else if (std::optional<Counters> typed = TypedCounters(op.rule)) {
        counters = *typed;
      }
      if (own) {
        entry = *std::move(own);
        auto* oe = reinterpret_cast<typename T::Entry*>(entry.data());
        oe->counters.pcnt = counters.packets;
        oe->counters.bcnt = counters.bytes;
      } else {
        entry = XtToEntry<T>(*x, counters);
      }
      mask.assign(entry.size(), 0xFF);
    }
    const auto* e = reinterpret_cast<const typename T::Entry*>(entry.data());
    const unsigned index = op.index > 0 ? static_cast<unsigned>(op.index - 1) : 0;
    int ok = 1;
    switch (op.kind) {
      case K::kAppend:
        ok = T::Append(chain, e, h.h);
        break;
      case K::kInsert:
        if (op.index < 1) return fail(op, E2BIG);
        ok = T::Insert(chain, e, index, h.h);
        break;
      case K::kReplace:
        if (op.index < 1) return fail(op, E2BIG);
        IPTKIT_RETURN_IF_ERROR(CheckDecodable<T>(family, h.h, op.chain, op.index)
                                   .WithContext(where + " '" + RenderRestoreLine(op) + "'")
                                   .WithLocation(std::string(FamilyName(family)), batch.table, op.chain, op.index));
        ok = T::Replace(chain, e, index, h.h);
        break;
      case K::kCheck:
        ok = T::Check(chain, e, mask.data(), h.h);
        break;
      case K::kDelete: {
        // In a chain whose probes the plan's read found byte for byte, the plan deletes the first entry that is the
        // rule byte for byte: that entry goes, by its position on this handle. libiptc's own compare (is_same, as
        // iptables-legacy -D) skips a few bytes (an extension's revision, interface bytes past the mask), so it
        // could pick an earlier entry the plan did not look at; it decides everywhere else.
        int at = -1;
        if (x != nullptr && held.exact_chains.count(op.chain) != 0) {
          const std::string key = ProbeKey<T>(*x);
          int i = 0;
          for (const auto* r = T::FirstRule(chain, h.h); r != nullptr; r = T::NextRule(r, h.h), ++i) {
            if (EntryHasKey<T>(r, h.h, key)) {
              at = i;
              break;
            }
          }
        }
        ok = at >= 0 ? T::DeleteNum(chain, static_cast<unsigned>(at), h.h) : T::Delete(chain, e, mask.data(), h.h);
        break;
      }
      case K::kDeleteAt:
        if (op.index < 1) return fail(op, E2BIG);
        IPTKIT_RETURN_IF_ERROR(CheckDecodable<T>(family, h.h, op.chain, op.index)
                                   .WithContext(where + " '" + RenderRestoreLine(op) + "'")
                                   .WithLocation(std::string(FamilyName(family)), batch.table, op.chain, op.index));
        ok = T::DeleteNum(chain, index, h.h);
        break;
      case K::kNewChain:
        if (Status valid = ValidateChainName(op.chain); !valid.ok()) {
          return valid.WithContext(where + " '" + RenderRestoreLine(op) + "'");
        }
        ok = T::CreateChain(chain, h.h);
        break;
      case K::kDeleteChain:
        ok = T::DeleteChain(chain, h.h);
        break;
      case K::kRenameChain:
        if (Status valid = ValidateChainName(op.arg); !valid.ok()) {
          return valid.WithContext(where + " '" + RenderRestoreLine(op) + "'");
        }
        ok = T::RenameChain(chain, op.arg.c_str(), h.h);
        break;
      case K::kFlush:
      case K::kZero: {
        if (op.chain.empty()) {
          all_chains();
        } else {
          chains = {op.chain};
        }
        for (const std::string& c : chains) {
          ok = op.kind == K::kFlush ? T::Flush(c.c_str(), h.h) : T::Zero(c.c_str(), h.h);
          if (!ok) break;
        }
        break;
      }
      case K::kPolicy: {
        if (op.arg != "ACCEPT" && op.arg != "DROP") {
          return Status::InvalidArgument(where + " '" + RenderRestoreLine(op) + "': a policy is ACCEPT or DROP")
              .WithToken(op.arg);
        }
        // -P keeps the chain's counters; a declaration (whole-table restore) sets them, to [0:0] without counters.
        xt_counters n{};
        if (batch.with_counters) n = {op.rule.counters.packets, op.rule.counters.bytes};
        ok = T::SetPolicy(chain, op.arg.c_str(), batch.with_counters || batch.flush_table ? &n : nullptr, h.h);
        break;
      }
    }
    if (!ok) return fail(op, errno);
  }

  // One IPT_SO_SET_REPLACE (then IPT_SO_SET_ADD_COUNTERS). A refused replace leaves the old table in place.
  if (!T::Commit(h.h)) {
    const int err = errno;
    if (err == EAGAIN) {
      // The kernel's table no longer has the entry count the handle read (xt_replace_table): a writer that does not
      // take the xtables lock changed it meanwhile. Nothing was replaced; read and plan again.
      return Status::Aborted("the " + where +
                             " table changed while it was being edited (a writer that does not take "
                             "the xtables lock); nothing was committed")
          .WithLocation(std::string(FamilyName(family)), batch.table);
    }
    return Status(err == EPERM ? StatusCode::kPermissionDenied : StatusCode::kInvalidArgument,
                  "the kernel refused the new " + where + " table: " + T::StrError(err) +
                      (err == EINVAL ? " (the kernel log has the reason, see dmesg)" : ""))
        .WithLocation(std::string(FamilyName(family)), batch.table)
        .WithReason("kernel_rejected");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Backend>> NewXtablesBackend(const BackendOptions& options) {
  IPTKIT_RETURN_IF_ERROR(Xtables::Instance().status());
  IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd ns, base::OpenNetns(options.netns));
  return std::unique_ptr<Backend>(std::make_unique<XtablesBackend>(options, std::move(ns)));
}

}  // namespace iptkit::backend::legacy
