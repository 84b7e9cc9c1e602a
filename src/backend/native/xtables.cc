#include "src/backend/native/xtables.h"

// <net/if.h> before any <linux/...> header (linux/libc-compat.h then leaves struct ifreq & co. to glibc).
// clang-format off
#include <net/if.h>
// clang-format on
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <getopt.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netdb.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "iptkit/dialect.h"
#include "src/backend/native/xt_direct.h"
#include "src/backend/native/xt_header.h"
#include "src/dialect/extensions.h"
#include "src/dialect/xtables_lib.h"

namespace iptkit::backend::native {
namespace {

constexpr char kLibDir[] = IPTKIT_XTABLES_LIBDIR;

// libxtables, loaded by the first call that needs it (LoadLib, before the job that calls it runs): a rule whose
// header and matches are all built without it (DirectParseAddress / DirectParseProtocol, xt_direct.h) and whose
// target is a verdict never loads it. Jobs call it through Xt().
std::atomic<const dialect::XtablesLib*> g_xt{nullptr};
const dialect::XtablesLib& Xt() { return *g_xt.load(std::memory_order_acquire); }

Status LoadLib() {
  if (g_xt.load(std::memory_order_acquire) != nullptr) return Status::Ok();
  IPTKIT_ASSIGN_OR_RETURN(const dialect::XtablesLib* xt, dialect::LoadXtables());
  g_xt.store(xt, std::memory_order_release);
  return Status::Ok();
}

// iptables' own protocol names, which it prints and parses before the system's (libxtables/xtables.c
// xtables_chain_protos, 1.8.9); XtablesHeaderTest compares the table with the library's.
struct ProtoNameNum {
  const char* name;
  uint8_t num;
};
constexpr ProtoNameNum kChainProtos[] = {{"tcp", IPPROTO_TCP},
                                         {"sctp", IPPROTO_SCTP},
                                         {"udp", IPPROTO_UDP},
                                         {"udplite", IPPROTO_UDPLITE},
                                         {"icmp", IPPROTO_ICMP},
                                         {"ipv6-icmp", IPPROTO_ICMPV6},
                                         {"icmpv6", IPPROTO_ICMPV6},
                                         {"esp", IPPROTO_ESP},
                                         {"ah", IPPROTO_AH},
                                         {"mobility-header", IPPROTO_MH},
                                         {"ipv6-mh", IPPROTO_MH},
                                         {"mh", IPPROTO_MH},
                                         {"all", 0}};

// A decimal number without sign or leading zero, at most `max`; -1 otherwise (libxtables' xtables_strtoui takes
// base 0, so "010" is 8 there: such forms are left to it).
int PlainDecimal(std::string_view s, int max) {
  if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0')) return -1;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v <= max ? v : -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Worker-thread globals. Only the worker thread touches them, always inside a job.

std::jmp_buf* g_jump = nullptr;  // the active job's escape point
char g_error[512];               // the message libxtables' exit handler was given
const char* g_token = nullptr;   // the argv element being parsed when the error happened
const char* g_option = nullptr;  // the option (--name) being parsed then
int g_part = -1;                 // -1 header, 0..n-1 match n, n target

__attribute__((noreturn, format(printf, 2, 3))) void ExitErr(enum xtables_exittype, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
  // Trailing newlines of libxtables' messages.
  size_t n = std::strlen(g_error);
  while (n > 0 && (g_error[n - 1] == '\n' || g_error[n - 1] == ' ')) g_error[--n] = '\0';
  if (g_jump == nullptr) {
    // Cannot happen: every call into libxtables runs inside a job. Never return into libxtables.
    std::fprintf(stderr, "iptkit: libxtables error outside a job: %s\n", g_error);
    std::abort();
  }
  std::longjmp(*g_jump, 1);
}

// ---- Kernel revision support (nft_compat, as iptables-nft's nft_compatible_revision asks it) ----

struct CompatKey {
  std::string name;
  uint8_t revision;
  bool target;
  uint8_t nfproto;
  friend auto operator<=>(const CompatKey&, const CompatKey&) = default;
};
std::map<CompatKey, bool>* g_compat_cache = nullptr;
mnl_socket* g_compat_socket = nullptr;
bool g_compat_socket_failed = false;

// Whether the kernel supports revision `rev` of the extension. Like iptables-nft: a permission error (not root)
// or a socket that cannot be opened means "assume yes"; revision 0 is always taken.
bool KernelSupports(const char* name, uint8_t rev, bool target, uint8_t nfproto) {
  if (rev == 0) return true;
  if (g_compat_cache == nullptr) g_compat_cache = new std::map<CompatKey, bool>();
  CompatKey key{name, rev, target, nfproto};
  auto it = g_compat_cache->find(key);
  if (it != g_compat_cache->end()) return it->second;
  bool supported = true;
  if (g_compat_socket == nullptr && !g_compat_socket_failed) {
    g_compat_socket = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (g_compat_socket != nullptr && mnl_socket_bind(g_compat_socket, 0, MNL_SOCKET_AUTOPID) < 0) {
      mnl_socket_close(g_compat_socket);
      g_compat_socket = nullptr;
    }
    g_compat_socket_failed = g_compat_socket == nullptr;
  }
  if (g_compat_socket != nullptr) {
    alignas(nlmsghdr) char buf[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_NFT_COMPAT << 8) | NFNL_MSG_COMPAT_GET;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    static uint32_t seq = static_cast<uint32_t>(::time(nullptr));
    nlh->nlmsg_seq = ++seq;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = nfproto;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    mnl_attr_put_strz(nlh, NFTA_COMPAT_NAME, name);
    mnl_attr_put_u32(nlh, NFTA_COMPAT_REV, htonl(rev));
    mnl_attr_put_u32(nlh, NFTA_COMPAT_TYPE, htonl(target ? 1 : 0));
    const uint32_t portid = mnl_socket_get_portid(g_compat_socket);
    if (mnl_socket_sendto(g_compat_socket, nlh, nlh->nlmsg_len) >= 0) {
      for (;;) {
        ssize_t n = mnl_socket_recvfrom(g_compat_socket, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        int r = mnl_cb_run(buf, static_cast<size_t>(n), nlh->nlmsg_seq, portid, nullptr, nullptr);
        if (r == -1) {
          if (errno == ESRCH) continue;  // an answer to an abandoned request
          supported = errno == EPERM;    // not root: assume it is (iptables does the same)
        }
        break;
      }
    }
  }
  g_compat_cache->emplace(std::move(key), supported);
  return supported;
}

// Never called (revisions are checked before any extension is used), but libxtables wants one.
int CompatRevUnused(const char*, uint8_t, int) { return 1; }

struct option g_no_options[] = {{nullptr, 0, nullptr, 0}};

xtables_globals g_globals = {
    .option_offset = 0,
    .program_name = "iptables",
    .program_version = XTABLES_VERSION,
    .orig_opts = g_no_options,
    .opts = g_no_options,
    .exit_err = ExitErr,
    .compat_rev = CompatRevUnused,
};

// ---- Finding and loading extensions ----
//
// libxtables' own lookup (xtables_find_match/target) is not used: it loads from the directory in XTABLES_LIBDIR,
// it caches "not a target" per name across families (a lookup that failed for IPv6 would hide the IPv4 target
// afterwards), and it hands out global descriptors whose per-rule state lives in them. Instead the registered and
// pending lists are searched here with the same rules (name, family of the current afinfo or NFPROTO_UNSPEC,
// registered ones first, then the preferred pending one the kernel supports), and the files are loaded from the
// compiled-in directory.

bool FamilyMatches(uint16_t ext_family, uint8_t nfproto) {
  return ext_family == nfproto || ext_family == NFPROTO_UNSPEC;
}

template <typename Desc>
const Desc* FindIn(Desc* registered, Desc* pending, const char* name, bool target, uint8_t nfproto) {
  for (Desc* d = registered; d != nullptr; d = d->next) {
    if (std::strcmp(d->name, name) == 0 && FamilyMatches(d->family, nfproto)) return d;
  }
  for (Desc* d = pending; d != nullptr; d = d->next) {
    if (std::strcmp(d->name, name) != 0 || !FamilyMatches(d->family, nfproto)) continue;
    const char* rn = d->real_name != nullptr ? d->real_name : d->name;
    if (KernelSupports(rn, d->revision, target, nfproto)) return d;
  }
  return nullptr;
}

const xtables_match* FindMatchDesc(const char* name, uint8_t nfproto) {
  return FindIn(*Xt().matches, *Xt().pending_matches, name, false, nfproto);
}
const xtables_target* FindTargetDesc(const char* name, uint8_t nfproto) {
  return FindIn(*Xt().targets, *Xt().pending_targets, name, true, nfproto);
}

bool SafeName(const char* name) {
  size_t n = std::strlen(name);
  if (n == 0 || n >= XT_EXTENSION_MAXNAMELEN) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::set<std::pair<std::string, uint8_t>>* g_copies = nullptr;  // (path, nfproto) private copies loaded

// Loads `path` once more from a private copy (another inode, so its constructor registers again) while `nfproto`
// is current: libxtables drops target registrations for other families than the current one
// (xtables_register_target, "ignore not interested target"), so a libxt_*.so first loaded for IPv4 never registers
// its IPv6 targets. The copy stays loaded (libxtables keeps pointers into it).
void LoadPrivateCopy(const std::string& path, uint8_t nfproto) {
  if (g_copies == nullptr) g_copies = new std::set<std::pair<std::string, uint8_t>>();
  if (!g_copies->insert({path, nfproto}).second) return;
  int src = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) return;
  int copy = ::memfd_create("iptkit-xt", MFD_CLOEXEC);
  bool ok = copy >= 0;
  char buf[65536];
  ssize_t n;
  while (ok && (n = ::read(src, buf, sizeof(buf))) != 0) {
    if (n < 0 || ::write(copy, buf, static_cast<size_t>(n)) != n) ok = false;
  }
  ::close(src);
  if (ok) {
    // The descriptor stays open: glibc recognizes a loaded object by its path name, so a reused fd number would
    // hand back the earlier copy.
    std::string fd_path = "/proc/self/fd/" + std::to_string(copy);
    ok = ::dlopen(fd_path.c_str(), RTLD_NOW) != nullptr;
  }
  if (!ok && copy >= 0) ::close(copy);
}

// Makes the shared objects of extension `name` known to libxtables for `nfproto` (the current family), loading
// them from the compiled-in directory (libipt_/libip6t_NAME.so before libxt_NAME.so, as load_extension does).
void EnsureLoaded(const char* name, bool target, uint8_t nfproto) {
  if (!SafeName(name)) return;
  const bool known = target ? FindTargetDesc(name, nfproto) != nullptr : FindMatchDesc(name, nfproto) != nullptr;
  if (known) return;
  const char* af_prefix = nfproto == NFPROTO_IPV6 ? "libip6t_" : "libipt_";
  for (const char* prefix : {af_prefix, "libxt_"}) {
    std::string path = std::string(kLibDir) + "/" + prefix + name + ".so";
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) continue;
    void* already = ::dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (already != nullptr) {
      ::dlclose(already);
      if (target) LoadPrivateCopy(path, nfproto);
    } else {
      ::dlopen(path.c_str(), RTLD_NOW);  // the constructor registers its extensions (pending)
    }
    if (target ? FindTargetDesc(name, nfproto) != nullptr : FindMatchDesc(name, nfproto) != nullptr) return;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing: the raw part. C-style on purpose: ExitErr longjmp()s into ParseRaw, so no frame between the setjmp
// and a libxtables call may hold an object with a destructor. Inputs and outputs are plain structures; memory is
// malloc'ed and released by the C++ caller.

struct RawExt {
  const char* name;  // null: built by the caller, skipped here
  int argc;
  char** argv;  // argv[0] is a program name, as getopt expects
};

struct RawIn {
  uint8_t nfproto;
  const char *src, *dst, *in, *out, *proto;
  // Set where the caller parsed the field itself (DirectParseAddress / DirectParseProtocol).
  const DirectAddress *src_direct, *dst_direct;
  int proto_direct;  // -1: parse `proto`
  bool inv_src, inv_dst, inv_in, inv_out, inv_proto, frag, inv_frag;
  int nmatches;
  const RawExt* matches;
  int target_kind;  // 0: none, 1: -j NAME, 2: -g CHAIN
  RawExt target;
};

struct RawExtOut {
  char name[XT_EXTENSION_MAXNAMELEN];
  uint8_t revision;
  unsigned char* data;  // malloc'ed
  unsigned int len;
  char* prefix;  // NFLOG udata, malloc'ed (or null)
};

enum RawVerdict { kRawNone, kRawAccept, kRawDrop, kRawReturn, kRawJump, kRawGoto, kRawTarget };

struct RawOut {
  RawExtOut* matches;  // nmatches entries, malloc'ed
  int verdict;
  RawExtOut target;
  char jumpto[XT_EXTENSION_MAXNAMELEN];
  // In use while parsing; released by ParseRaw on every path.
  xtables_match* mcopy;
  xtables_target* tcopy;
  struct option* opts;
  void* addrs;
  void* masks;
  union {
    ipt_entry v4;
    ip6t_entry v6;
  } fw;  // last: struct ipt_entry ends in a flexible array member
};

void FreeMatchCopy(RawOut* out) {
  if (out->mcopy == nullptr) return;
  std::free(out->mcopy->m);
  std::free(out->mcopy->udata);
  std::free(out->mcopy);
  out->mcopy = nullptr;
}
void FreeTargetCopy(RawOut* out) {
  if (out->tcopy == nullptr) return;
  std::free(out->tcopy->t);
  std::free(out->tcopy->udata);
  std::free(out->tcopy);
  out->tcopy = nullptr;
}
void FreeScratch(RawOut* out) {
  FreeMatchCopy(out);
  FreeTargetCopy(out);
  std::free(out->opts);
  out->opts = nullptr;
  std::free(out->addrs);
  out->addrs = nullptr;
  std::free(out->masks);
  out->masks = nullptr;
}

[[noreturn]] void Fail(const char* token, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void Fail(const char* token, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
  g_token = token;
  std::longjmp(*g_jump, 1);
}

// The merged getopt table of one extension (x6 options transformed as iptables does, or old-style extra options),
// with its option offset; null for an extension without options.
struct option* MergeOptions(const xt_option_entry* x6, const struct option* extra, unsigned int* offset) {
  g_globals.option_offset = 0;
  g_globals.opts = g_globals.orig_opts;
  if (x6 != nullptr) return Xt().options_xfrm(g_globals.orig_opts, nullptr, x6, offset);
  if (extra != nullptr) return Xt().merge_options(g_globals.orig_opts, nullptr, extra, offset);
  return nullptr;
}

// getopt over one extension's options, calling `call` for each, as iptables' do_parse does for the options that
// follow "-m NAME" / "-j NAME": "!" before an option inverts it.
template <typename Call>
void RunOptions(const RawExt& ext, struct option* opts, Call&& call) {
  if (ext.argc <= 1) return;
  if (opts == nullptr) Fail(ext.argv[1], "unknown option \"%s\"", ext.argv[1]);
  optind = 0;  // full re-initialization of glibc's getopt
  opterr = 0;
  bool invert = false;
  int c;
  while ((c = getopt_long(ext.argc, ext.argv, "-:", opts, nullptr)) != -1) {
    if (c == 1) {
      if (std::strcmp(optarg, "!") == 0) {
        if (invert) Fail(optarg, "multiple consecutive ! not allowed");
        invert = true;
        continue;
      }
      Fail(optarg, "Bad argument `%s'", optarg);
    }
    const char* current = ext.argv[optind - 1];
    if (c == ':') Fail(current, "option \"%s\" requires an argument", current);
    if (c == '?') Fail(current, "unknown option \"%s\"", current);
    g_token = current;
    // The option itself: the argv element that starts with "--" at or before `current`.
    g_option = current;
    for (int k = optind - 1; k > 0; --k) {
      if (ext.argv[k][0] == '-' && ext.argv[k][1] == '-') {
        g_option = ext.argv[k];
        break;
      }
    }
    call(c, invert);
    invert = false;
  }
  if (invert) Fail(ext.argv[ext.argc - 1], "nothing appropriate following !");
}

void CopyOut(RawExtOut* o, const char* name, uint8_t revision, const void* data, unsigned int len) {
  std::snprintf(o->name, sizeof(o->name), "%s", name);
  o->revision = revision;
  o->len = len;
  o->data = static_cast<unsigned char*>(std::malloc(len > 0 ? len : 1));
  if (len > 0) std::memcpy(o->data, data, len);
}

void ParseAddress(uint8_t nfproto, const char* spec, unsigned char* addr, unsigned char* mask, RawOut* out) {
  unsigned int n = 0;
  g_token = spec;
  if (nfproto == NFPROTO_IPV4) {
    in_addr* a = nullptr;
    in_addr* m = nullptr;
    Xt().ipparse_multiple(spec, &a, &m, &n);
    out->addrs = a;
    out->masks = m;
    if (n != 1) Fail(spec, "one address per rule (got %u)", n);
    std::memcpy(addr, a, 4);
    std::memcpy(mask, m, 4);
  } else {
    in6_addr* a = nullptr;
    in6_addr* m = nullptr;
    Xt().ip6parse_multiple(spec, &a, &m, &n);
    out->addrs = a;
    out->masks = m;
    if (n != 1) Fail(spec, "one address per rule (got %u)", n);
    std::memcpy(addr, a, 16);
    std::memcpy(mask, m, 16);
  }
  std::free(out->addrs);
  out->addrs = nullptr;
  std::free(out->masks);
  out->masks = nullptr;
}

void ParseInterface(const char* spec, char* name, unsigned char* mask) {
  g_token = spec;
  if (spec[0] == '\0') Fail(spec, "Empty interface is likely to be undesired");
  Xt().parse_interface(spec, name, mask);
}

// 0 on success; -1 with g_error / g_token / g_part set. `out` must be zeroed by the caller.
int ParseRaw(const RawIn* in, RawOut* out) {
  std::jmp_buf jump;
  g_token = nullptr;
  g_option = nullptr;
  g_part = -1;
  if (setjmp(jump) != 0) {
    g_jump = nullptr;
    FreeScratch(out);
    return -1;
  }
  g_jump = &jump;
  const bool v4 = in->nfproto == NFPROTO_IPV4;
  void* entry = v4 ? static_cast<void*>(&out->fw.v4) : static_cast<void*>(&out->fw.v6);
  uint8_t* invflags = v4 ? &out->fw.v4.ip.invflags : &out->fw.v6.ipv6.invflags;
  uint8_t* flags = v4 ? &out->fw.v4.ip.flags : &out->fw.v6.ipv6.flags;

  // The header, as iptables' do_parse and ipv{4,6}_post_parse fill struct ipt_ip / ip6t_ip6.
  if (in->src_direct != nullptr) {
    std::memcpy(v4 ? reinterpret_cast<unsigned char*>(&out->fw.v4.ip.src) : out->fw.v6.ipv6.src.s6_addr,
                in->src_direct->addr, v4 ? 4 : 16);
    std::memcpy(v4 ? reinterpret_cast<unsigned char*>(&out->fw.v4.ip.smsk) : out->fw.v6.ipv6.smsk.s6_addr,
                in->src_direct->mask, v4 ? 4 : 16);
    if (in->inv_src) *invflags |= IPT_INV_SRCIP;
  } else if (in->src != nullptr) {
    if (v4) {
      ParseAddress(in->nfproto, in->src, reinterpret_cast<unsigned char*>(&out->fw.v4.ip.src),
                   reinterpret_cast<unsigned char*>(&out->fw.v4.ip.smsk), out);
    } else {
      ParseAddress(in->nfproto, in->src, out->fw.v6.ipv6.src.s6_addr, out->fw.v6.ipv6.smsk.s6_addr, out);
    }
    if (in->inv_src) *invflags |= IPT_INV_SRCIP;
  }
  if (in->dst_direct != nullptr) {
    std::memcpy(v4 ? reinterpret_cast<unsigned char*>(&out->fw.v4.ip.dst) : out->fw.v6.ipv6.dst.s6_addr,
                in->dst_direct->addr, v4 ? 4 : 16);
    std::memcpy(v4 ? reinterpret_cast<unsigned char*>(&out->fw.v4.ip.dmsk) : out->fw.v6.ipv6.dmsk.s6_addr,
                in->dst_direct->mask, v4 ? 4 : 16);
    if (in->inv_dst) *invflags |= IPT_INV_DSTIP;
  } else if (in->dst != nullptr) {
    if (v4) {
      ParseAddress(in->nfproto, in->dst, reinterpret_cast<unsigned char*>(&out->fw.v4.ip.dst),
                   reinterpret_cast<unsigned char*>(&out->fw.v4.ip.dmsk), out);
    } else {
      ParseAddress(in->nfproto, in->dst, out->fw.v6.ipv6.dst.s6_addr, out->fw.v6.ipv6.dmsk.s6_addr, out);
    }
    if (in->inv_dst) *invflags |= IPT_INV_DSTIP;
  }
  if (in->in != nullptr) {
    if (v4) {
      ParseInterface(in->in, out->fw.v4.ip.iniface, out->fw.v4.ip.iniface_mask);
    } else {
      ParseInterface(in->in, out->fw.v6.ipv6.iniface, out->fw.v6.ipv6.iniface_mask);
    }
    if (in->inv_in) *invflags |= IPT_INV_VIA_IN;
  }
  if (in->out != nullptr) {
    if (v4) {
      ParseInterface(in->out, out->fw.v4.ip.outiface, out->fw.v4.ip.outiface_mask);
    } else {
      ParseInterface(in->out, out->fw.v6.ipv6.outiface, out->fw.v6.ipv6.outiface_mask);
    }
    if (in->inv_out) *invflags |= IPT_INV_VIA_OUT;
  }
  if (in->proto != nullptr) {
    g_token = in->proto;
    uint16_t proto = in->proto_direct >= 0 ? static_cast<uint16_t>(in->proto_direct) : Xt().parse_protocol(in->proto);
    if (proto == 0 && in->inv_proto) Fail(in->proto, "rule would never match protocol");
    if (v4) {
      out->fw.v4.ip.proto = proto;
    } else {
      out->fw.v6.ipv6.proto = proto;
      *flags |= IP6T_F_PROTO;  // ipv6_proto_parse
    }
    if (in->inv_proto) *invflags |= XT_INV_PROTO;
  }
  if (in->frag) {
    if (!v4) Fail("-f", "-f exists only for IPv4");
    *flags |= IPT_F_FRAG;
    if (in->inv_frag) *invflags |= IPT_INV_FRAG;
  }

  // Matches: each on a private copy of its descriptor (what libxtables' "clone" does for a second use).
  for (int i = 0; i < in->nmatches; ++i) {
    const RawExt& ext = in->matches[i];
    if (ext.name == nullptr) continue;  // built by the caller (DirectParseMatch)
    g_part = i;
    g_token = ext.name;
    const char* name = ext.name;
    if (std::strcmp(name, "icmpv6") == 0 || std::strcmp(name, "ipv6-icmp") == 0) name = "icmp6";
    EnsureLoaded(name, false, in->nfproto);
    const xtables_match* desc = FindMatchDesc(name, in->nfproto);
    if (desc == nullptr) Fail(ext.name, "Couldn't load match `%s': No such file or directory", ext.name);
    out->mcopy = static_cast<xtables_match*>(std::malloc(sizeof(xtables_match)));
    std::memcpy(out->mcopy, desc, sizeof(xtables_match));
    xtables_match* m = out->mcopy;
    m->next = m;
    m->udata = nullptr;
    m->m = nullptr;
    m->mflags = 0;
    const size_t size = XT_ALIGN(sizeof(xt_entry_match)) + desc->size;
    m->m = static_cast<xt_entry_match*>(std::calloc(1, size));
    m->m->u.match_size = static_cast<uint16_t>(size);
    std::snprintf(m->m->u.user.name, sizeof(m->m->u.user.name), "%s",
                  desc->real_name != nullptr ? desc->real_name : desc->name);
    m->m->u.user.revision = desc->revision;
    if (desc->udata_size != 0) m->udata = std::calloc(1, desc->udata_size);
    if (m->init != nullptr) m->init(m->m);
    out->opts = MergeOptions(m->x6_options, m->extra_opts, &m->option_offset);
    RunOptions(ext, out->opts,
               [&](int c, bool invert) { Xt().option_mpcall(static_cast<unsigned>(c), ext.argv, invert, m, entry); });
    std::free(out->opts);
    out->opts = nullptr;
    g_token = ext.name;
    Xt().option_mfcall(m);
    CopyOut(&out->matches[i], m->m->u.user.name, m->m->u.user.revision, m->m->data,
            m->m->u.match_size - static_cast<unsigned>(sizeof(xt_entry_match)));
    FreeMatchCopy(out);
  }

  // The target (xshared.c command_jump; nft.c add_action decides how it is sent).
  g_part = in->nmatches;
  if (in->target_kind == 2) {
    out->verdict = kRawGoto;
    std::snprintf(out->jumpto, sizeof(out->jumpto), "%s", in->target.name);
  } else if (in->target_kind == 1) {
    const RawExt& ext = in->target;
    const char* name = ext.name;
    g_token = name;
    std::snprintf(out->jumpto, sizeof(out->jumpto), "%s", name);
    const bool accept = std::strcmp(name, "ACCEPT") == 0;
    const bool drop = std::strcmp(name, "DROP") == 0;
    const bool ret = std::strcmp(name, "RETURN") == 0;
    if ((accept || drop || ret) && ext.argc > 1) Fail(ext.argv[1], "unknown option \"%s\"", ext.argv[1]);
    if (accept) {
      out->verdict = kRawAccept;
    } else if (drop) {
      out->verdict = kRawDrop;
    } else if (ret) {
      out->verdict = kRawReturn;
    } else {
      // QUEUE is the standard target under another name (libxtables' xtables_find_target).
      const char* lookup = std::strcmp(name, "QUEUE") == 0 ? "standard" : name;
      EnsureLoaded(lookup, true, in->nfproto);
      const xtables_target* desc = FindTargetDesc(lookup, in->nfproto);
      if (desc == nullptr) {
        // Not a target extension: a jump to a user chain.
        if (ext.argc > 1) Fail(ext.argv[1], "unknown option \"%s\" (the jump target is a chain)", ext.argv[1]);
        out->verdict = kRawJump;
      } else {
        out->tcopy = static_cast<xtables_target*>(std::malloc(sizeof(xtables_target)));
        std::memcpy(out->tcopy, desc, sizeof(xtables_target));
        xtables_target* t = out->tcopy;
        t->next = t;
        t->udata = nullptr;
        t->t = nullptr;
        t->tflags = 0;
        t->used = 1;
        const size_t size = XT_ALIGN(sizeof(xt_entry_target)) + desc->size;
        t->t = static_cast<xt_entry_target*>(std::calloc(1, size));
        t->t->u.target_size = static_cast<uint16_t>(size);
        std::snprintf(t->t->u.user.name, sizeof(t->t->u.user.name), "%s",
                      desc->real_name != nullptr ? desc->real_name : name);
        t->t->u.user.revision = desc->revision;
        if (desc->udata_size != 0) t->udata = std::calloc(1, desc->udata_size);
        if (t->init != nullptr) t->init(t->t);
        out->opts = MergeOptions(t->x6_options, t->extra_opts, &t->option_offset);
        RunOptions(ext, out->opts, [&](int c, bool invert) {
          Xt().option_tpcall(static_cast<unsigned>(c), ext.argv, invert, t, entry);
        });
        std::free(out->opts);
        out->opts = nullptr;
        g_token = name;
        Xt().option_tfcall(t);
        out->verdict = kRawTarget;
        CopyOut(&out->target, t->t->u.user.name, t->t->u.user.revision, t->t->data,
                t->t->u.target_size - static_cast<unsigned>(sizeof(xt_entry_target)));
        if (std::strcmp(name, "NFLOG") == 0 && t->udata != nullptr) {
          out->target.prefix = strndup(static_cast<const char*>(t->udata), desc->udata_size);
        }
        FreeTargetCopy(out);
      }
    }
  }
  g_jump = nullptr;
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Printing: extension save functions print to stdout.

// Points `fd` (1 or 2) at a memory file while alive, with the stdio lock of its FILE held (so other threads' stdio
// output to it waits instead of ending up here); Take() returns what was printed so far.
class FdCapture {
 public:
  FdCapture(FILE* stream, int fd) : stream_(stream), fd_(fd) {
    int& memfd = fd == 1 ? memfd_out_ : memfd_err_;
    if (memfd < 0) memfd = ::memfd_create("iptkit-xt-capture", MFD_CLOEXEC);
    memfd_ = memfd;
    flockfile(stream_);
    std::fflush(stream_);
    saved_ = ::dup(fd_);
    ok_ = memfd_ >= 0 && ::dup2(memfd_, fd_) == fd_;
  }
  ~FdCapture() {
    std::fflush(stream_);
    if (saved_ >= 0) {
      ::dup2(saved_, fd_);
      ::close(saved_);
    } else {
      ::close(fd_);  // it was closed before
    }
    funlockfile(stream_);
    if (memfd_ >= 0) {
      (void)::ftruncate(memfd_, 0);
      ::lseek(memfd_, 0, SEEK_SET);
    }
  }
  bool ok() const { return ok_; }
  // Bytes printed since the capture began.
  std::string Take() {
    std::fflush(stream_);
    std::string out;
    off_t end = ::lseek(memfd_, 0, SEEK_CUR);
    if (end <= 0) return out;
    out.resize(static_cast<size_t>(end));
    ssize_t n = ::pread(memfd_, out.data(), out.size(), 0);
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }

 private:
  static inline int memfd_out_ = -1;
  static inline int memfd_err_ = -1;
  FILE* stream_;
  int fd_;
  int memfd_ = -1;
  int saved_ = -1;
  bool ok_ = false;
};

// The worker thread's network namespace: extensions talk to the kernel about the target namespace (ipset names and
// indexes of -m set / -j SET are per namespace). Switched with setns(2), which affects only the worker thread.
int g_home_netns = -1;                   // the process's own namespace (its first thread's), what netns_fd -1 names
thread_local ino_t g_current_netns = 0;  // the namespace this thread is in (0: not looked at yet)
thread_local bool g_inline_job = false;  // this thread runs a job on itself: it is in the job's namespace already

Status EnterNetns(int netns_fd) {
  if (g_inline_job) return Status::Ok();
  if (g_home_netns < 0) g_home_netns = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (g_current_netns == 0) {
    struct stat st;  // a worker starts in the namespace of the thread that started it
    if (::stat("/proc/thread-self/ns/net", &st) == 0) g_current_netns = st.st_ino;
  }
  const int fd = netns_fd >= 0 ? netns_fd : g_home_netns;
  if (fd < 0) return Status::Ok();
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Internal("fstat of a network namespace descriptor failed");
  if (st.st_ino == g_current_netns) return Status::Ok();
  if (::setns(fd, CLONE_NEWNET) != 0) {
    return Status::Internal(std::string("setns for the libxtables thread failed: ") + std::strerror(errno));
  }
  g_current_netns = st.st_ino;
  return Status::Ok();
}

struct RawPrintItem {
  bool target;
  const char* name;  // as the kernel has it
  uint8_t revision;
  const unsigned char* data;
  unsigned int len;
  const char* jumpto;      // targets: the name printed without an alias
  const XtHeader* header;  // the rule's header (save functions get it as its struct ipt_entry / ip6t_entry)
  uint8_t nfproto;
  int status;           // out: 0 printed, 1 unknown extension, 2 revision mismatch, 3 libxtables error
  size_t end;           // out (not `delimited`): capture offset after this item
  std::string message;  // out: libxtables' message (status 3)
};

// Prints " -m NAME OPTIONS" / " -j NAME OPTIONS" per item, as save_matches_and_target does. `delimited`: each
// item's text is followed by a NUL byte (no save function prints one: they print C strings), so that the items are
// told apart without flushing stdout after each (two system calls per item); else `end` is taken after each.
void PrintRaw(RawPrintItem* items, size_t n, bool delimited) {
  std::jmp_buf jump;
  volatile size_t i = 0;
  auto finish = [&](RawPrintItem& it) {
    if (delimited) {
      putc_unlocked('\0', stdout);
    } else {
      std::fflush(stdout);
      it.end = static_cast<size_t>(::lseek(1, 0, SEEK_CUR));
    }
  };
  if (setjmp(jump) != 0) {
    items[i].status = 3;
    items[i].message = g_error;
    finish(items[i]);
    i = i + 1;
  }
  g_jump = &jump;
  union {
    ipt_entry v4;
    ip6t_entry v6;
  } entry;
  while (i < n) {
    RawPrintItem& it = items[i];
    it.status = 0;
    std::memset(&entry, 0, sizeof(entry));
    if (it.nfproto == NFPROTO_IPV4) {
      SetHeader(entry.v4.ip, *it.header);
    } else {
      SetHeader(entry.v6.ipv6, *it.header);
    }
    if (!it.target) {
      EnsureLoaded(it.name, false, it.nfproto);
      const xtables_match* desc = FindMatchDesc(it.name, it.nfproto);
      if (desc == nullptr) {
        it.status = 1;
      } else if (desc->revision != it.revision) {
        it.status = 2;
      } else {
        const size_t size = XT_ALIGN(sizeof(xt_entry_match)) + it.len;
        alignas(8) unsigned char buf[XT_ALIGN(sizeof(xt_entry_match)) + 4096];
        xt_entry_match* m = size <= sizeof(buf) ? reinterpret_cast<xt_entry_match*>(buf)
                                                : static_cast<xt_entry_match*>(std::calloc(1, size));
        std::memset(m, 0, std::min(size, sizeof(buf)));
        m->u.match_size = static_cast<uint16_t>(size);
        std::snprintf(m->u.user.name, sizeof(m->u.user.name), "%s", it.name);
        m->u.user.revision = it.revision;
        std::memcpy(m->data, it.data, it.len);
        std::printf(" -m %s", desc->alias != nullptr ? desc->alias(m) : desc->name);
        if (desc->save != nullptr) desc->save(&entry, m);
        if (reinterpret_cast<unsigned char*>(m) != buf) std::free(m);
      }
    } else {
      const char* lookup = std::strcmp(it.name, "QUEUE") == 0 ? "standard" : it.name;
      EnsureLoaded(lookup, true, it.nfproto);
      const xtables_target* desc = FindTargetDesc(lookup, it.nfproto);
      if (desc == nullptr) {
        it.status = 1;
      } else if (desc->revision != it.revision) {
        it.status = 2;
      } else {
        const size_t size = XT_ALIGN(sizeof(xt_entry_target)) + it.len;
        alignas(8) unsigned char buf[XT_ALIGN(sizeof(xt_entry_target)) + 4096];
        xt_entry_target* t = size <= sizeof(buf) ? reinterpret_cast<xt_entry_target*>(buf)
                                                 : static_cast<xt_entry_target*>(std::calloc(1, size));
        std::memset(t, 0, std::min(size, sizeof(buf)));
        t->u.target_size = static_cast<uint16_t>(size);
        std::snprintf(t->u.user.name, sizeof(t->u.user.name), "%s", it.name);
        t->u.user.revision = it.revision;
        std::memcpy(t->data, it.data, it.len);
        std::printf(" -j %s", desc->alias != nullptr ? desc->alias(t) : it.jumpto);
        if (desc->save != nullptr) desc->save(&entry, t);
        if (reinterpret_cast<unsigned char*>(t) != buf) std::free(t);
      }
    }
    finish(it);
    i = i + 1;
  }
  g_jump = nullptr;
}

// ---- Helpers on the C++ side ----

uint8_t NfProto(Family family) { return family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6; }

// Keeps the argv strings of one extension alive for ParseRaw.
struct ArgvStore {
  std::vector<std::string> strings;
  std::vector<char*> argv;
  void Build(const std::string& name, const std::vector<Option>& options) {
    strings.clear();
    strings.push_back("iptables");
    for (const Option& o : options) {
      if (o.negated) strings.push_back("!");
      strings.push_back("--" + o.name);
      for (const std::string& v : o.values) strings.push_back(v);
    }
    argv.clear();
    for (std::string& s : strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    (void)name;
  }
};

XtHeader HeaderFromEntry(Family family, const RawOut& out) {
  return family == Family::kIPv4 ? HeaderOf(out.fw.v4.ip) : HeaderOf(out.fw.v6.ipv6);
}

XtExtension ExtFromRaw(const RawExtOut& o) {
  XtExtension e;
  e.name = o.name;
  e.revision = o.revision;
  e.data.assign(reinterpret_cast<const char*>(o.data), o.len);
  if (o.prefix != nullptr) e.nflog_prefix = o.prefix;
  return e;
}

void FreeRawExt(RawExtOut& o) {
  std::free(o.data);
  std::free(o.prefix);
  o.data = nullptr;
  o.prefix = nullptr;
}

// Where a parse error happened, as the message prefix and the token the Status carries.
std::string Describe(const Rule& rule, int part) {
  if (part < 0) return "";
  if (static_cast<size_t>(part) < rule.matches.size()) return "-m " + rule.matches[part].name + ": ";
  return (rule.target.kind == Target::Kind::kGoto ? "-g " : "-j ") + rule.target.name + ": ";
}

// getprotobynumber's name, cached (iptables' proto_to_name after its own table).
std::string ProtoName(uint16_t proto) {
  for (const ProtoNameNum& p : kChainProtos) {
    if (p.num == proto) return p.name;
  }
  static std::mutex mu;
  static std::map<uint16_t, std::string>* cache = new std::map<uint16_t, std::string>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(proto);
  if (it != cache->end()) return it->second;
  std::string name;
  protoent pe;
  protoent* result = nullptr;
  char buf[1024];
  if (getprotobynumber_r(proto, &pe, buf, sizeof(buf), &result) == 0 && result != nullptr) name = result->p_name;
  cache->emplace(proto, name);
  return name;
}

std::string Ipv4MaskToStr(const uint8_t* mask) {
  uint32_t m;
  std::memcpy(&m, mask, 4);
  if (m == 0xFFFFFFFFu) return "32";
  const uint32_t hmask = ntohl(m);
  int i = 32;
  uint32_t bits = 0xFFFFFFFEu;
  while (--i >= 0 && hmask != bits) bits <<= 1;
  if (i >= 0) return std::to_string(i);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, mask, buf, sizeof(buf));
  return buf;
}

void SaveIpv4Addr(std::string& out, char letter, const uint8_t* addr, const uint8_t* mask, bool invert) {
  uint32_t a, m;
  std::memcpy(&a, addr, 4);
  std::memcpy(&m, mask, 4);
  if (m == 0 && !invert && a == 0) return;
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, addr, buf, sizeof(buf));
  out += invert ? " !" : "";
  out += std::string(" -") + letter + " " + buf + "/" + Ipv4MaskToStr(mask);
}

int Ipv6MaskToCidr(const uint8_t* mask) {
  int bits = 0;
  int i = 0;
  for (; i < 16 && mask[i] == 0xff; ++i) bits += 8;
  if (i < 16) {
    uint8_t b = mask[i];
    while (b & 0x80) {
      ++bits;
      b = static_cast<uint8_t>(b << 1);
    }
    if (b != 0) return -1;
    for (++i; i < 16; ++i) {
      if (mask[i] != 0) return -1;
    }
  }
  return bits;
}

void SaveIpv6Addr(std::string& out, char letter, const uint8_t* addr, const uint8_t* mask, bool invert) {
  const int l = Ipv6MaskToCidr(mask);
  if (!invert && l == 0) return;
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, addr, buf, sizeof(buf));
  out += invert ? " !" : "";
  out += std::string(" -") + letter + " " + buf;
  if (l == -1) {
    inet_ntop(AF_INET6, mask, buf, sizeof(buf));
    out += std::string("/") + buf;
  } else {
    out += "/" + std::to_string(l);
  }
}

void SaveIface(std::string& out, char letter, const char* iface, const uint8_t* mask, bool invert) {
  if (mask[0] == 0) return;
  out += invert ? " !" : "";
  out += std::string(" -") + letter + " ";
  for (int i = 0; i < IFNAMSIZ; ++i) {
    if (mask[i] != 0) {
      if (iface[i] != '\0') out += iface[i];
    } else {
      if (iface[i - 1] != '\0') out += '+';
      break;
    }
  }
}

}  // namespace

std::string FormatHeader(Family family, const XtHeader& h) {
  std::string out;
  if (family == Family::kIPv4) {
    SaveIpv4Addr(out, 's', h.src.data(), h.smsk.data(), h.invflags & kInvSrcIp);
    SaveIpv4Addr(out, 'd', h.dst.data(), h.dmsk.data(), h.invflags & kInvDstIp);
  } else {
    SaveIpv6Addr(out, 's', h.src.data(), h.smsk.data(), h.invflags & kInvSrcIp);
    SaveIpv6Addr(out, 'd', h.dst.data(), h.dmsk.data(), h.invflags & kInvDstIp);
  }
  SaveIface(out, 'i', h.iniface.data(), h.iniface_mask.data(), h.invflags & kInvViaIn);
  SaveIface(out, 'o', h.outiface.data(), h.outiface_mask.data(), h.invflags & kInvViaOut);
  if (h.proto > 0) {
    if (h.invflags & kInvProto) out += " !";
    std::string name = ProtoName(h.proto);
    out += " -p " + (name.empty() ? std::to_string(h.proto) : name);
  }
  if (family == Family::kIPv4 && (h.flags & kFlagFrag)) {
    if (h.invflags & kInvFrag) out += " !";
    out += " -f";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

Result<Xtables*> Xtables::Instance() {
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (getresuid(&ruid, &euid, &suid) != 0 || getresgid(&rgid, &egid, &sgid) != 0 || ruid != euid || rgid != egid) {
    return Status::FailedPrecondition(
        "libxtables cannot be used in a process whose real and effective user or group ids differ (it would "
        "_exit(111)); call setresuid(euid, euid, euid) and setresgid(egid, egid, egid) first, or use the restore "
        "backend");
  }
  static Xtables* instance = new Xtables();  // never destroyed: the worker lives until exit
  return instance;
}

Xtables::Xtables() = default;

Xtables::~Xtables() = default;

uint64_t Xtables::jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_;
}

uint64_t Xtables::worker_jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_jobs_;
}

void Xtables::RunJob(const std::function<void()>& job, bool capture_stderr) {
  std::lock_guard<std::mutex> xt(dialect::XtablesMutex());
  if (g_xt.load(std::memory_order_acquire) != nullptr) Xt().set_params(&g_globals);
  if (!capture_stderr) {
    job();
    return;
  }
  // Extensions print warnings to stderr (e.g. "cannot open /etc/xtables/connlabel.conf"), as iptables would;
  // they are not the library user's output.
  FdCapture err(stderr, 2);
  job();
  std::string warnings = err.Take();
  if (!warnings.empty()) last_warnings_ = std::move(warnings);
}

void Xtables::WorkerLoop() {
  for (;;) {
    std::function<void()>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      job = queue_.front();
      queue_.pop_front();
    }
    RunJob(*job);
  }
}

namespace {

// The inode of the network namespace a descriptor (or, for -1, the process: its first thread) refers to, or 0.
ino_t TargetNetnsInode(int netns_fd) {
  struct stat st;
  const int rc = netns_fd >= 0 ? ::fstat(netns_fd, &st) : ::stat("/proc/self/ns/net", &st);
  return rc == 0 ? st.st_ino : 0;
}

// Whether the calling thread is surely in the network namespace `netns_fd` names (-1: the process's, its first
// thread's). The process's first thread is in the process's namespace by definition, without the two look-ups
// under /proc: a new process's first walk of /proc/self and /proc/thread-self instantiates their entries, which
// showed in the profile of a one-command process.
bool CallerInNetns(int netns_fd) {
  if (netns_fd < 0 && ::gettid() == ::getpid()) return true;
  struct stat here;
  const ino_t target = TargetNetnsInode(netns_fd);
  return target != 0 && ::stat("/proc/thread-self/ns/net", &here) == 0 && here.st_ino == target;
}

}  // namespace

void Xtables::Run(int netns_fd, const std::function<void()>& job, bool capture_stderr) {
  if (CallerInNetns(netns_fd)) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++jobs_;
    }
    g_inline_job = true;
    RunJob(job, capture_stderr);
    g_inline_job = false;
    return;
  }
  std::promise<void> done;
  std::function<void()> wrapped = [&] {
    job();
    done.set_value();
  };
  const pid_t self = getpid();
  const pid_t worker = worker_pid_.load();
  if (worker != 0 && worker != self) {
    // A forked child (single-threaded at this point): the worker thread stayed in the parent, which may have held
    // these when it forked. Fresh ones, then a worker of the child's own below.
    new (&mu_) std::mutex();
    new (&cv_) std::condition_variable();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (worker_pid_.load() != self) {
      queue_.clear();
      worker_pid_ = self;
      std::thread(&Xtables::WorkerLoop, this).detach();
    }
    ++jobs_;
    ++worker_jobs_;
    queue_.push_back(&wrapped);
  }
  cv_.notify_one();
  done.get_future().wait();
}

std::vector<Result<XtRule>> Xtables::Parse(Family family, const std::vector<const Rule*>& rules, int netns_fd) {
  std::vector<Result<XtRule>> results(rules.size(), Result<XtRule>(Status::Internal("not parsed")));
  // The common forms of tcp, udp and comment are built here (xt_direct.h); ParseRaw skips them. When every match
  // is, and the target is a verdict (or none, or a goto), no extension code runs, and neither does libxtables'
  // interface parser, the one header parser that prints (a warning about a weird interface name): stderr needs
  // no capture.
  std::vector<std::vector<std::optional<XtExtension>>> direct(rules.size());
  bool extension_code = false;
  std::vector<char> rule_needs_lib(rules.size(), 0);  // the rule runs extension code or a header parser of libxtables
  for (size_t r = 0; r < rules.size(); ++r) {
    const Rule& rule = *rules[r];
    direct[r].reserve(rule.matches.size());
    for (const Match& m : rule.matches) {
      direct[r].push_back(DirectParseMatch(m));
      if (!direct[r].back()) rule_needs_lib[r] = 1;
    }
    const Target& t = rule.target;
    if (t.kind == Target::Kind::kJump && t.name != "ACCEPT" && t.name != "DROP" && t.name != "RETURN") {
      rule_needs_lib[r] = 1;
    }
    if (rule.in_interface || rule.out_interface) rule_needs_lib[r] = 1;
    if (rule_needs_lib[r]) extension_code = true;
  }
  // The header's addresses and protocol in their common forms, without libxtables (DirectParseAddress /
  // DirectParseProtocol); libxtables is loaded only when something is left to it.
  struct HeaderFields {
    std::optional<DirectAddress> src, dst;
    std::optional<uint16_t> proto;
  };
  std::vector<HeaderFields> header(rules.size());
  bool needs_lib = false;
  for (size_t r = 0; r < rules.size(); ++r) {
    const Rule& rule = *rules[r];
    if (rule.source) {
      header[r].src = DirectParseAddress(family, rule.source->value);
      if (!header[r].src) rule_needs_lib[r] = 1;
    }
    if (rule.destination) {
      header[r].dst = DirectParseAddress(family, rule.destination->value);
      if (!header[r].dst) rule_needs_lib[r] = 1;
    }
    if (rule.protocol) {
      std::string proto = rule.protocol->value;
      for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      header[r].proto = DirectParseProtocol(proto);
      if (!header[r].proto) rule_needs_lib[r] = 1;
    }
    if (rule_needs_lib[r]) needs_lib = true;
  }
  // Without the library the rules that need it fail (FailedPrecondition naming the file); the others are parsed.
  std::vector<char> skip(rules.size(), 0);
  if (needs_lib) {
    if (Status loaded = LoadLib(); !loaded.ok()) {
      needs_lib = false;
      for (size_t r = 0; r < rules.size(); ++r) {
        if (!rule_needs_lib[r]) continue;
        results[r] = loaded;
        skip[r] = 1;
      }
    }
  }
  Run(
      netns_fd,
      [&] {
        if (Status in = EnterNetns(netns_fd); !in.ok()) {
          for (auto& r : results) r = in;
          return;
        }
        const uint8_t nfproto = NfProto(family);
        if (needs_lib) Xt().set_nfproto(nfproto);
        for (size_t r = 0; r < rules.size(); ++r) {
          if (skip[r]) continue;
          const Rule& rule = *rules[r];
          std::vector<ArgvStore> stores(rule.matches.size() + 1);
          std::vector<RawExt> exts(rule.matches.size());
          std::vector<std::optional<XtExtension>>& built = direct[r];
          for (size_t i = 0; i < rule.matches.size(); ++i) {
            if (built[i]) {
              exts[i] = RawExt{nullptr, 0, nullptr};
              continue;
            }
            stores[i].Build(rule.matches[i].name, rule.matches[i].options);
            exts[i] = RawExt{rule.matches[i].name.c_str(), static_cast<int>(stores[i].argv.size() - 1),
                             stores[i].argv.data()};
          }
          RawIn in{};
          in.nfproto = nfproto;
          auto field = [](const std::optional<Field>& f, const char** value, bool* inv) {
            if (f) {
              *value = f->value.c_str();
              *inv = f->negated;
            }
          };
          field(rule.source, &in.src, &in.inv_src);
          field(rule.destination, &in.dst, &in.inv_dst);
          field(rule.in_interface, &in.in, &in.inv_in);
          field(rule.out_interface, &in.out, &in.inv_out);
          std::string proto;
          if (rule.protocol) {
            proto = rule.protocol->value;
            for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            in.proto = proto.c_str();
            in.inv_proto = rule.protocol->negated;
          }
          in.src_direct = header[r].src ? &*header[r].src : nullptr;
          in.dst_direct = header[r].dst ? &*header[r].dst : nullptr;
          in.proto_direct = header[r].proto ? static_cast<int>(*header[r].proto) : -1;
          in.frag = rule.fragment.has_value();
          in.inv_frag = rule.fragment && rule.fragment->negated;
          in.nmatches = static_cast<int>(exts.size());
          in.matches = exts.data();
          if (rule.target.kind != Target::Kind::kNone) {
            ArgvStore& ts = stores.back();
            ts.Build(rule.target.name, rule.target.options);
            in.target_kind = rule.target.kind == Target::Kind::kGoto ? 2 : 1;
            in.target = RawExt{rule.target.name.c_str(), static_cast<int>(ts.argv.size() - 1), ts.argv.data()};
          }
          RawOut out{};
          std::vector<RawExtOut> mouts(exts.size() + 1);
          out.matches = mouts.data();
          std::memset(mouts.data(), 0, mouts.size() * sizeof(RawExtOut));
          const int rc = ParseRaw(&in, &out);
          if (rc != 0) {
            std::string token = g_token != nullptr ? g_token : "";
            // The value being parsed, unless libxtables' message is about the option itself ("--comment" option may
            // only be specified once).
            if (!token.empty() && !token.starts_with("-") && g_option != nullptr && std::strstr(g_error, g_option)) {
              token = g_option;
            }
            Status s = Status::InvalidArgument(Describe(rule, g_part) + g_error);
            if (!token.empty()) s = s.WithToken(token);
            results[r] = s;
          } else {
            XtRule x;
            x.family = family;
            x.header = HeaderFromEntry(family, out);
            for (size_t i = 0; i < exts.size(); ++i) {
              x.matches.push_back(built[i] ? *std::move(built[i]) : ExtFromRaw(mouts[i]));
            }
            switch (out.verdict) {
              case kRawAccept:
                x.verdict = XtRule::Verdict::kAccept;
                break;
              case kRawDrop:
                x.verdict = XtRule::Verdict::kDrop;
                break;
              case kRawReturn:
                x.verdict = XtRule::Verdict::kReturn;
                break;
              case kRawJump:
                x.verdict = XtRule::Verdict::kJump;
                x.chain = out.jumpto;
                break;
              case kRawGoto:
                x.verdict = XtRule::Verdict::kGoto;
                x.chain = out.jumpto;
                break;
              case kRawTarget:
                x.verdict = XtRule::Verdict::kTarget;
                x.jumpto = out.jumpto;
                x.target = ExtFromRaw(out.target);
                break;
              default:
                break;
            }
            x.counters = rule.counters;
            results[r] = std::move(x);
          }
          for (RawExtOut& o : mouts) FreeRawExt(o);
          FreeRawExt(out.target);
        }
      },
      /*capture_stderr=*/extension_code);
  return results;
}

namespace {

// Extension save functions may look at the header (protocol, inversion flags), and set names are per namespace:
// all part of the key under which an extension's text (and its parsed form) is cached.
void AppendExtKey(std::string& key, ino_t netns, const XtRule& x, const XtExtension& ext, bool target) {
  key.reserve(key.size() + 48 + ext.name.size() + ext.data.size() + x.jumpto.size());
  key += target ? 't' : 'm';
  key += std::to_string(netns);
  key += x.family == Family::kIPv4 ? "/4/" : "/6/";
  key += std::to_string(x.header.proto);
  key += '/';
  key += std::to_string(x.header.invflags);
  key += '/';
  key += ext.name;
  key += '/';
  key += std::to_string(ext.revision);
  key += '/';
  if (target) {
    key += x.jumpto;
    key += '/';
  }
  key += ext.data;
}

std::string ExtKey(ino_t netns, const XtRule& x, const XtExtension& ext, bool target) {
  std::string key;
  AppendExtKey(key, netns, x, ext, target);
  return key;
}

ino_t NetnsInode(int netns_fd) {
  if (struct stat st; netns_fd >= 0 && ::fstat(netns_fd, &st) == 0) return st.st_ino;
  return 0;
}

Status ExtFailure(int code, const XtExtension& ext, bool target, const std::string& message) {
  const std::string what =
      std::string(target ? "target " : "match ") + ext.name + " revision " + std::to_string(ext.revision);
  switch (code) {
    case 1:
      return Status::FailedPrecondition(what + ": libxtables has no such extension");
    case 2:
      return Status::FailedPrecondition(what + ": libxtables has another revision of it");
    case 3:
      return Status::FailedPrecondition(what + ": libxtables cannot print it (" + message + ")");
    default:
      return Status::Internal("cannot capture the output of libxtables' save functions");
  }
}

// The model header fields of a rule, as the text parser gives them for iptables-nft-save's header.
void HeaderFields(Family family, const XtHeader& h, Rule& rule) {
  auto field = [](const std::string& text, char letter) -> std::optional<Field> {
    // FormatHeader's " [!] -X VALUE" piece for one field.
    if (text.empty()) return std::nullopt;
    Field f;
    f.negated = text.starts_with(" !");
    const std::string flag = std::string(" -") + letter;
    size_t at = text.find(flag);
    f.value = at == std::string::npos ? "" : text.substr(at + flag.size() + (text.size() > at + flag.size() ? 1 : 0));
    return f;
  };
  std::string piece;
  if (family == Family::kIPv4) {
    SaveIpv4Addr(piece, 's', h.src.data(), h.smsk.data(), h.invflags & kInvSrcIp);
    rule.source = field(piece, 's');
    piece.clear();
    SaveIpv4Addr(piece, 'd', h.dst.data(), h.dmsk.data(), h.invflags & kInvDstIp);
    rule.destination = field(piece, 'd');
  } else {
    SaveIpv6Addr(piece, 's', h.src.data(), h.smsk.data(), h.invflags & kInvSrcIp);
    rule.source = field(piece, 's');
    piece.clear();
    SaveIpv6Addr(piece, 'd', h.dst.data(), h.dmsk.data(), h.invflags & kInvDstIp);
    rule.destination = field(piece, 'd');
  }
  piece.clear();
  SaveIface(piece, 'i', h.iniface.data(), h.iniface_mask.data(), h.invflags & kInvViaIn);
  rule.in_interface = field(piece, 'i');
  piece.clear();
  SaveIface(piece, 'o', h.outiface.data(), h.outiface_mask.data(), h.invflags & kInvViaOut);
  rule.out_interface = field(piece, 'o');
  if (h.proto > 0) {
    std::string name = ProtoName(h.proto);
    rule.protocol = Field{name.empty() ? std::to_string(h.proto) : name, (h.invflags & kInvProto) != 0};
  }
  if (family == Family::kIPv4 && (h.flags & kFlagFrag)) rule.fragment = Field{"", (h.invflags & kInvFrag) != 0};
}

}  // namespace

void Xtables::PrintExtensions(const std::vector<ExtItem>& items, int netns_fd, bool cache_texts,
                              std::vector<std::string>& texts, std::map<size_t, Status>& errors) {
  texts.assign(items.size(), std::string());
  errors.clear();
  if (!items.empty()) {
    if (Status loaded = LoadLib(); !loaded.ok()) {
      for (size_t i = 0; i < items.size(); ++i) errors.emplace(i, loaded);
      return;
    }
  }
  Status entered;
  Run(netns_fd, [&] {
    entered = EnterNetns(netns_fd);
    if (!entered.ok()) return;
    if (print_cache_.size() > 100000) print_cache_.clear();
    constexpr size_t kCached = static_cast<size_t>(-1);
    std::vector<size_t> todo;
    std::vector<size_t> slot(items.size(), kCached);     // item → its index in todo (kCached: print_cache_ has it)
    std::unordered_map<std::string_view, size_t> first;  // key → index in todo (one print per distinct key)
    for (size_t i = 0; i < items.size(); ++i) {
      if (cache_texts && print_cache_.find(items[i].key) != print_cache_.end()) continue;
      auto [at, fresh] = first.emplace(items[i].key, todo.size());
      if (fresh) todo.push_back(i);
      slot[i] = at->second;
    }
    std::vector<RawPrintItem> raw(todo.size());
    for (size_t k = 0; k < todo.size(); ++k) {
      const ExtItem& it = items[todo[k]];
      raw[k].target = it.target;
      raw[k].name = it.ext->name.c_str();
      raw[k].revision = it.ext->revision;
      raw[k].data = reinterpret_cast<const unsigned char*>(it.ext->data.data());
      raw[k].len = static_cast<unsigned>(it.ext->data.size());
      raw[k].jumpto = it.rule->jumpto.c_str();
      raw[k].header = &it.rule->header;
      raw[k].nfproto = NfProto(it.rule->family);
    }
    // Each item's text, printed delimited (one capture, no system call per item); printed again one item at a time
    // should an extension ever print a NUL byte itself.
    std::vector<std::string_view> pieces;
    std::string printed;
    for (bool delimited : {true, false}) {
      if (raw.empty()) break;
      pieces.clear();
      FdCapture capture(stdout, 1);
      if (!capture.ok()) {
        for (RawPrintItem& r : raw) r.status = 4;
        pieces.assign(raw.size(), std::string_view());
        break;
      }
      // One family per PrintRaw call: libxtables' current family decides which descriptors are found.
      size_t k = 0;
      while (k < raw.size()) {
        size_t end = k;
        while (end < raw.size() && raw[end].nfproto == raw[k].nfproto) ++end;
        Xt().set_nfproto(raw[k].nfproto);
        PrintRaw(raw.data() + k, end - k, delimited);
        k = end;
      }
      printed = capture.Take();
      const std::string_view all(printed);
      size_t begin = 0;
      if (delimited) {
        for (size_t at = all.find('\0'); at != std::string_view::npos; at = all.find('\0', begin)) {
          pieces.push_back(all.substr(begin, at - begin));
          begin = at + 1;
        }
        if (pieces.size() == raw.size() && begin == all.size()) break;
        continue;
      }
      for (size_t n = 0; n < raw.size(); ++n) {
        const size_t end = std::max(begin, std::min(raw[n].end, all.size()));
        pieces.push_back(all.substr(begin, end - begin));
        begin = end;
      }
    }
    if (cache_texts) {
      for (size_t k = 0; k < raw.size(); ++k) {
        if (raw[k].status == 0) print_cache_.insert_or_assign(std::string(items[todo[k]].key), std::string(pieces[k]));
      }
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if (slot[i] == kCached) {
        texts[i] = print_cache_.find(items[i].key)->second;
        continue;
      }
      const RawPrintItem& r = raw[slot[i]];
      if (r.status == 0) {
        texts[i] = pieces[slot[i]];
      } else {
        errors[i] = ExtFailure(r.status, *items[i].ext, items[i].target, r.message);
      }
    }
  });
  if (!entered.ok()) {
    for (size_t i = 0; i < items.size(); ++i) errors[i] = entered;
  }
}

std::vector<Result<std::string>> Xtables::Format(const std::vector<const XtRule*>& rules, int netns_fd) {
  std::vector<Result<std::string>> results(rules.size(), Result<std::string>(std::string()));
  const ino_t netns = NetnsInode(netns_fd);
  size_t total = 0;
  for (const XtRule* x : rules) total += x->matches.size() + (x->verdict == XtRule::Verdict::kTarget ? 1 : 0);
  std::vector<std::string> keys;
  keys.reserve(total);  // the items' keys point into it
  std::vector<ExtItem> items;
  items.reserve(total);
  for (const XtRule* x : rules) {
    for (const XtExtension& m : x->matches) {
      if (DirectMatchCovered(m)) continue;  // printed below without libxtables (xt_direct.h)
      keys.push_back(ExtKey(netns, *x, m, false));
      items.push_back({x, &m, false, keys.back()});
    }
    if (x->verdict == XtRule::Verdict::kTarget) {
      keys.push_back(ExtKey(netns, *x, x->target, true));
      items.push_back({x, &x->target, true, keys.back()});
    }
  }
  std::vector<std::string> texts;
  std::map<size_t, Status> errors;
  if (!items.empty()) PrintExtensions(items, netns_fd, /*cache_texts=*/true, texts, errors);
  size_t next = 0;
  for (size_t r = 0; r < rules.size(); ++r) {
    const XtRule& x = *rules[r];
    std::string text = FormatHeader(x.family, x.header);
    Status status;
    auto take = [&]() {
      const size_t i = next++;
      if (auto e = errors.find(i); e != errors.end()) {
        if (status.ok()) status = e->second;
        return;
      }
      text += texts[i];
    };
    for (const XtExtension& m : x.matches) {
      if (DirectMatchCovered(m)) {
        AppendDirectMatchText(m, text);
      } else {
        take();
      }
    }
    switch (x.verdict) {
      case XtRule::Verdict::kNone:
        break;
      case XtRule::Verdict::kAccept:
        text += " -j ACCEPT";
        break;
      case XtRule::Verdict::kDrop:
        text += " -j DROP";
        break;
      case XtRule::Verdict::kReturn:
        text += " -j RETURN";
        break;
      case XtRule::Verdict::kJump:
        text += " -j " + x.chain;
        break;
      case XtRule::Verdict::kGoto:
        text += " -g " + x.chain;
        break;
      case XtRule::Verdict::kTarget:
        take();
        break;
    }
    if (!status.ok()) {
      results[r] = status;
    } else {
      results[r] = text.empty() ? text : text.substr(1);
    }
  }
  return results;
}

std::map<size_t, Status> Xtables::ToRules(const std::vector<const XtRule*>& rules, const std::vector<Rule*>& out,
                                          int netns_fd) {
  std::map<size_t, Status> errors;
  const ino_t netns = NetnsInode(netns_fd);
  // Every extension's model piece (a Match, or the Target with its options), from the cache or parsed from the text
  // its save function prints.
  // Each extension's piece; one not cached yet is found by its index in `missing` once parsed.
  struct Ref {
    const Piece* piece = nullptr;
    size_t missing = 0;
  };
  std::vector<Ref> refs;
  size_t total = 0;
  for (const XtRule* x : rules) total += x->matches.size() + (x->verdict == XtRule::Verdict::kTarget ? 1 : 0);
  refs.reserve(total);
  std::vector<ExtItem> missing;
  std::vector<std::string> missing_keys;
  missing_keys.reserve(total);  // the missing items' keys point into it
  {
    std::unordered_map<std::string_view, size_t> asked;  // key → index in missing
    std::string key;                                     // scratch: only the missing keys are kept
    std::lock_guard<std::mutex> lock(pieces_mu_);
    // Bounded, but never emptied while a call holds pointers into it.
    if (pieces_.size() > 100000 && pieces_users_ == 0) pieces_.clear();
    ++pieces_users_;
    auto add = [&](const XtRule* x, const XtExtension* ext, bool target) {
      key.clear();
      AppendExtKey(key, netns, *x, *ext, target);
      Ref& r = refs.emplace_back();
      if (auto it = pieces_.find(key); it != pieces_.end()) {
        r.piece = &it->second;
      } else if (auto a = asked.find(key); a != asked.end()) {
        r.missing = a->second;
      } else {
        r.missing = missing.size();
        const std::string& kept = missing_keys.emplace_back(key);
        asked.emplace(kept, missing.size());
        missing.push_back({x, ext, target, kept});
      }
    };
    for (const XtRule* x : rules) {
      for (const XtExtension& m : x->matches) {
        if (!DirectMatchCovered(m)) add(x, &m, false);  // built below without libxtables (xt_direct.h)
      }
      if (x->verdict == XtRule::Verdict::kTarget) add(x, &x->target, true);
    }
  }
  if (!missing.empty()) {
    std::vector<std::string> texts;
    std::map<size_t, Status> errors;
    PrintExtensions(missing, netns_fd, /*cache_texts=*/false, texts, errors);  // pieces_ is their cache
    std::vector<Piece> parsed(missing.size());
    for (size_t i = 0; i < missing.size(); ++i) {
      Piece& piece = parsed[i];
      if (auto e = errors.find(i); e != errors.end()) {
        piece.error = std::make_unique<Status>(std::move(e->second));
        continue;
      }
      // The extension's text alone parses as it does inside the whole line (its save function prints only its
      // own options).
      Result<Rule> part = ParseRuleSpec(texts[i], missing[i].rule->family);
      if (!part.ok()) {
        piece.error =
            std::make_unique<Status>(Status::FailedPrecondition("iptables-nft-save would print '" + texts[i].substr(1) +
                                                                "', which does not parse: " + part.status().message()));
      } else if (missing[i].target) {
        piece.target = std::move(part->target);
      } else if (part->matches.size() == 1) {
        piece.match = std::move(part->matches[0]);
      } else {
        piece.error = std::make_unique<Status>(Status::Internal("extension text '" + texts[i] + "' is not one match"));
      }
    }
    std::lock_guard<std::mutex> lock(pieces_mu_);
    std::vector<const Piece*> placed(missing.size());
    for (size_t i = 0; i < missing.size(); ++i) {
      placed[i] = &pieces_.insert_or_assign(std::move(missing_keys[i]), std::move(parsed[i])).first->second;
    }
    for (Ref& r : refs) {
      if (r.piece == nullptr) r.piece = placed[r.missing];
    }
  }
  // Assembled under the lock: the pieces stay where they are meanwhile.
  std::lock_guard<std::mutex> lock(pieces_mu_);
  --pieces_users_;
  size_t next = 0;
  for (size_t k = 0; k < rules.size(); ++k) {
    const XtRule& x = *rules[k];
    Rule& rule = *out[k];
    rule = Rule{};
    HeaderFields(x.family, x.header, rule);
    rule.matches.reserve(x.matches.size());
    const Status* failed = nullptr;
    for (const XtExtension& m : x.matches) {
      if (DirectMatchCovered(m)) {
        rule.matches.push_back(DirectMatch(m));
        continue;
      }
      const Piece& p = *refs[next++].piece;
      if (p.error != nullptr) {
        if (failed == nullptr) failed = p.error.get();
        continue;
      }
      rule.matches.push_back(p.match);
    }
    switch (x.verdict) {
      case XtRule::Verdict::kNone:
        break;
      case XtRule::Verdict::kAccept:
        rule.target = Target::Jump("ACCEPT");
        break;
      case XtRule::Verdict::kDrop:
        rule.target = Target::Jump("DROP");
        break;
      case XtRule::Verdict::kReturn:
        rule.target = Target::Jump("RETURN");
        break;
      case XtRule::Verdict::kJump:
        rule.target = Target::Jump(x.chain);
        break;
      case XtRule::Verdict::kGoto:
        rule.target = Target::Goto(x.chain);
        break;
      case XtRule::Verdict::kTarget: {
        const Piece& p = *refs[next++].piece;
        if (p.error != nullptr) {
          if (failed == nullptr) failed = p.error.get();
        } else {
          rule.target = p.target;
        }
        break;
      }
    }
    rule.counters = x.counters;
    if (failed != nullptr) {
      rule = Rule{};
      errors.emplace(k, *failed);
    }
  }
  return errors;
}

std::vector<Result<Rule>> Xtables::ToRules(const std::vector<const XtRule*>& rules, int netns_fd) {
  std::vector<Rule> built(rules.size());
  std::vector<Rule*> out;
  out.reserve(rules.size());
  for (Rule& r : built) out.push_back(&r);
  std::map<size_t, Status> errors = ToRules(rules, out, netns_fd);
  std::vector<Result<Rule>> results;
  results.reserve(rules.size());
  for (size_t k = 0; k < rules.size(); ++k) {
    if (auto e = errors.find(k); e != errors.end()) {
      results.emplace_back(std::move(e->second));
    } else {
      results.emplace_back(std::move(built[k]));
    }
  }
  return results;
}

std::optional<DirectAddress> DirectParseAddress(Family family, std::string_view spec) {
  DirectAddress out{};
  const size_t slash = spec.rfind('/');
  const std::string_view addr = spec.substr(0, slash);
  int bits = family == Family::kIPv4 ? 32 : 128;
  if (slash != std::string_view::npos && (bits = PlainDecimal(spec.substr(slash + 1), bits)) < 0) return std::nullopt;
  if (family == Family::kIPv4) {
    // Four plain decimal octets (xtables_numeric_to_ipaddr also completes "10.1" and reads octal and hex).
    size_t at = 0;
    for (int i = 0; i < 4; ++i) {
      const size_t dot = i < 3 ? addr.find('.', at) : addr.size();
      if (dot == std::string_view::npos) return std::nullopt;
      const int octet = PlainDecimal(addr.substr(at, dot - at), 255);
      if (octet < 0) return std::nullopt;
      out.addr[i] = static_cast<uint8_t>(octet);
      at = dot + 1;
    }
  } else {
    // As xtables_numeric_to_ip6addr reads it.
    if (addr.empty() || addr.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    char text[INET6_ADDRSTRLEN];
    std::memcpy(text, addr.data(), addr.size());
    text[addr.size()] = '\0';
    if (::inet_pton(AF_INET6, text, out.addr) != 1) return std::nullopt;
  }
  // A prefix length as xtables_ipmask / ip6mask make it, and the address masked with it (xtables_ipparse_multiple,
  // xtables_ip6parse_multiple).
  for (int i = 0; i < (family == Family::kIPv4 ? 4 : 16); ++i) {
    const int b = std::clamp(bits - 8 * i, 0, 8);
    out.mask[i] = static_cast<uint8_t>(0xFF00u >> b);
    out.addr[i] &= out.mask[i];
  }
  return out;
}

std::optional<uint16_t> DirectParseProtocol(std::string_view name) {
  // xtables_parse_protocol (1.8.9): a number, then iptables' own names ("all" among them), then the system's
  // (getprotobyname, which reads nsswitch.conf and may try to load NSS modules); anything else (another numeral,
  // an unknown name: its error) is left to it.
  if (name.empty()) return std::nullopt;
  if (name[0] >= '0' && name[0] <= '9') {
    const int v = PlainDecimal(name, UINT8_MAX);
    if (v < 0) return std::nullopt;
    return static_cast<uint16_t>(v);
  }
  for (const ProtoNameNum& p : kChainProtos) {
    if (name == p.name) return p.num;
  }
  const std::string text(name);
  protoent pe;
  protoent* found = nullptr;
  char buf[1024];
  if (getprotobyname_r(text.c_str(), &pe, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return static_cast<uint16_t>(found->p_proto);
  }
  return std::nullopt;
}

}  // namespace iptkit::backend::native
