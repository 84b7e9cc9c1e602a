#include "src/dialect/extensions.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <shared_mutex>
#include <utility>

#include "src/dialect/xtables_lib.h"

namespace iptkit::dialect {

const ExtensionOption* Extension::FindOption(std::string_view option) const {
  for (const ExtensionOption& o : options) {
    if (o.name == option) return &o;
  }
  return nullptr;
}

std::mutex& XtablesMutex() {
  static std::mutex mu;
  return mu;
}

namespace {

bool IsStandardTargetName(std::string_view name) {
  return name == "ACCEPT" || name == "DROP" || name == "RETURN" || name == "QUEUE";
}

// Extension names become file names (libxt_<name>.so) that libxtables dlopen()s: only plain names may reach
// it, so a rule spec can never make the process load code from another path.
bool IsSafeExtensionName(std::string_view name) {
  if (name.empty() || name.size() >= XT_EXTENSION_MAXNAMELEN) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ---- libxtables glue. Everything below that touches libxtables runs with XtablesMutex() held. ----

// libxtables reports errors through xt_params->exit_err, which must not return (the default one exits the
// process). Ours jumps back to the lookup that called into libxtables; only C frames of libxtables lie between.
std::jmp_buf g_jump;
char g_error[256];

__attribute__((noreturn, format(printf, 2, 3))) void ExitErr(enum xtables_exittype, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
  std::longjmp(g_jump, 1);
}

// Accept every revision: only option tables are read, never sent to the kernel, and the default check opens a
// raw socket (needs root) and may modprobe. libxtables then picks the preferred (highest) revision, which is
// what iptables uses on a current kernel.
int CompatRev(const char*, uint8_t, int) { return 1; }

struct option g_no_options[] = {{nullptr, 0, nullptr, 0}};

xtables_globals g_globals = {
    .option_offset = 0,
    .program_name = "iptkit",
    .program_version = XTABLES_VERSION,
    .orig_opts = g_no_options,
    .opts = nullptr,
    .exit_err = ExitErr,
    .compat_rev = CompatRev,
};

struct RawLookup {
  const char* name = nullptr;
  const xt_option_entry* x6 = nullptr;
  const struct option* extra = nullptr;
};

// 1: found, 0: no such extension, -1: libxtables reported an error (g_error). No C++ object with a destructor
// may live in this frame: ExitErr longjmp()s into it.
int FindRaw(const XtablesLib& xt, bool target, const char* name, RawLookup* out) {
  if (setjmp(g_jump) != 0) return -1;
  if (target) {
    xtables_target* t = xt.find_target(name, XTF_TRY_LOAD);
    if (t == nullptr) return 0;
    out->name = t->name;
    out->x6 = t->x6_options;
    out->extra = t->extra_opts;
  } else {
    xtables_match* m = xt.find_match(name, XTF_TRY_LOAD, nullptr);
    if (m == nullptr) return 0;
    out->name = m->name;
    out->x6 = m->x6_options;
    out->extra = m->extra_opts;
  }
  return 1;
}

std::vector<ExtensionOption> ReadOptions(const RawLookup& raw) {
  std::vector<ExtensionOption> options;
  if (raw.x6 != nullptr) {
    // x6 options are merged with has_arg = (type != XTTYPE_NONE) (xtoptions.c xtables_options_xfrm).
    for (const xt_option_entry* e = raw.x6; e->name != nullptr; ++e) {
      ExtensionOption o;
      o.name = e->name;
      o.arg = e->type == XTTYPE_NONE ? ExtensionOption::Arg::kNone : ExtensionOption::Arg::kRequired;
      o.flags_known = true;
      o.invertible = (e->flags & XTOPT_INVERT) != 0;
      o.multi = (e->flags & XTOPT_MULTI) != 0;
      o.id = static_cast<int>(e->id);
      options.push_back(std::move(o));
    }
  } else if (raw.extra != nullptr) {
    for (const struct option* e = raw.extra; e->name != nullptr; ++e) {
      ExtensionOption o;
      o.name = e->name;
      o.arg = e->has_arg == 0   ? ExtensionOption::Arg::kNone
              : e->has_arg == 1 ? ExtensionOption::Arg::kRequired
                                : ExtensionOption::Arg::kOptional;
      options.push_back(std::move(o));
    }
  }
  return options;
}

// The directory libxtables loads extensions from: always the compiled-in one (InitXtables hides XTABLES_LIBDIR and
// its deprecated spellings from xtables_init, so that no environment can make the process load code elsewhere).
std::string XtablesLibDir() { return IPTKIT_XTABLES_LIBDIR; }

// xtables_init_all with XTABLES_LIBDIR / IPTABLES_LIB_DIR / IP6TABLES_LIB_DIR hidden from its getenv() calls: it
// reads them through a filtered copy of `environ` (the process environment is not modified).
int InitXtables(const XtablesLib& xt) {
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("XTABLES_LIBDIR=") || v.starts_with("IPTABLES_LIB_DIR=") || v.starts_with("IP6TABLES_LIB_DIR=")) {
      continue;
    }
    env.push_back(*e);
  }
  env.push_back(nullptr);
  char** saved = environ;
  environ = env.data();
  const int rc = xt.init_all(&g_globals, NFPROTO_IPV4);
  environ = saved;
  return rc;
}

enum class FileState { kAbsent, kLoaded, kUnloadable };

struct FileProbe {
  FileState state = FileState::kAbsent;
  std::string shared_path;  // the loaded libxt_<name>.so, if any
};

// Whether a shared object for the extension exists and, if so, whether the loader holds it. Distinguishes "no
// such extension" from "exists but dlopen() failed in this process" (e.g. a missing dependency).
FileProbe ProbeExtensionFile(Family family, std::string_view name) {
  std::string dirs = XtablesLibDir();
  const char* af_prefix = family == Family::kIPv4 ? "libipt_" : "libip6t_";
  FileProbe probe;
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    for (const char* prefix : {af_prefix, "libxt_"}) {
      std::string path = dir + "/" + prefix + std::string(name) + ".so";
      struct stat st;
      if (stat(path.c_str(), &st) != 0) continue;
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
      if (handle == nullptr) return FileProbe{FileState::kUnloadable, ""};
      dlclose(handle);
      probe.state = FileState::kLoaded;
      if (std::string_view(prefix) == "libxt_" && probe.shared_path.empty()) probe.shared_path = path;
    }
    start = end + 1;
  }
  return probe;
}

// libxtables drops the registrations of targets for other families than the current one
// (xtables_register_target: "ignore not interested target"), and a shared object's constructor runs once per
// process. So after libxt_TPROXY.so was loaded for IPv4, its IPv6 targets are gone. Loading a private copy of the
// file (another inode, so the constructor runs again) while the other family is current registers them; they are
// read from the pending list directly (xtables_find_target would refuse the name: it is on the global
// "not a target" list by then).
const xtables_target* LoadTargetForFamily(const XtablesLib& xt, const std::string& path, const std::string& name,
                                          uint16_t nfproto) {
  static std::map<std::pair<std::string, uint16_t>, bool>* copied =
      new std::map<std::pair<std::string, uint16_t>, bool>();
  auto key = std::make_pair(path, nfproto);
  if (!(*copied)[key]) {
    (*copied)[key] = true;
    int src = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (src < 0) return nullptr;
    int copy = memfd_create(name.c_str(), MFD_CLOEXEC);
    bool ok = copy >= 0;
    char buf[65536];
    ssize_t n;
    while (ok && (n = read(src, buf, sizeof(buf))) != 0) {
      if (n < 0 || write(copy, buf, static_cast<size_t>(n)) != n) ok = false;
    }
    close(src);
    if (ok) {
      std::string fd_path = "/proc/self/fd/" + std::to_string(copy);
      // Never closed: libxtables keeps pointers into it. The descriptor stays open too: glibc recognizes an
      // already loaded object by its path name, so a reused fd number would return the previous copy.
      ok = dlopen(fd_path.c_str(), RTLD_NOW) != nullptr;
    }
    if (!ok) {
      if (copy >= 0) close(copy);
      return nullptr;
    }
  }
  // Pending entries are grouped by name and family, preferred (highest) revision first.
  for (const xtables_target* t = *xt.pending_targets; t != nullptr; t = t->next) {
    if (name == t->name && (t->family == nfproto || t->family == NFPROTO_UNSPEC)) return t;
  }
  return nullptr;
}

class CachedCatalog : public ExtensionCatalog {
 public:
  const Extension* FindMatch(Family family, std::string_view name) const override { return Find(family, false, name); }
  const Extension* FindTarget(Family family, std::string_view name) const override { return Find(family, true, name); }

 protected:
  struct Outcome {
    bool exists = false;
    Extension ext;
  };
  // Called with cache_mu_ held exclusively.
  virtual Outcome Load(Family family, bool target, const std::string& name) const = 0;

 private:
  const Extension* Find(Family family, bool target, std::string_view name) const {
    std::string key(name);
    Map& map = maps_[family == Family::kIPv6][target];
    {
      std::shared_lock lock(cache_mu_);
      auto it = map.find(key);
      if (it != map.end()) return it->second;
    }
    std::unique_lock lock(cache_mu_);
    auto it = map.find(key);
    if (it != map.end()) return it->second;
    Outcome outcome = Load(family, target, key);
    const Extension* ext = nullptr;
    if (outcome.exists) {
      storage_.push_back(std::move(outcome.ext));
      ext = &storage_.back();
    }
    map.emplace(std::move(key), ext);
    return ext;
  }

  using Map = std::map<std::string, const Extension*, std::less<>>;
  mutable std::shared_mutex cache_mu_;
  mutable Map maps_[2][2];                 // [ipv6][target]
  mutable std::deque<Extension> storage_;  // stable addresses
};

Extension GenericExtension(std::string_view name, bool target) {
  Extension ext;
  ext.name = std::string(name);
  ext.target = target;
  ext.generic = true;
  return ext;
}

Extension StandardTarget(std::string_view name) {
  Extension ext;
  ext.name = std::string(name);
  ext.target = true;
  return ext;
}

class GenericCatalog final : public CachedCatalog {
 protected:
  Outcome Load(Family, bool target, const std::string& name) const override {
    if (target && IsStandardTargetName(name)) return {true, StandardTarget(name)};
    return {true, GenericExtension(name, target)};
  }
};

// An option of an old-style extension (struct option: only the name and whether it takes an argument are known).
ExtensionOption OldStyleOption(const char* name, ExtensionOption::Arg arg) {
  ExtensionOption o;
  o.name = name;
  o.arg = arg;
  return o;
}

// An x6 option (struct xt_option_entry) that takes an argument.
ExtensionOption X6Option(const char* name, int id, bool invertible) {
  ExtensionOption o;
  o.name = name;
  o.arg = ExtensionOption::Arg::kRequired;
  o.flags_known = true;
  o.invertible = invertible;
  o.id = id;
  return o;
}

class XtablesCatalog final : public CachedCatalog {
 public:
  // Through libxtables, whatever BuiltinMatch knows.
  Outcome LoadThroughXtables(Family family, bool target, const std::string& name) const {
    std::lock_guard<std::mutex> lock(XtablesMutex());
    const XtablesLib* xt = Initialize();
    if (xt == nullptr) return {true, GenericExtension(name, target)};
    xt->set_params(&g_globals);
    xt->set_nfproto(family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
    RawLookup raw;
    int found = FindRaw(*xt, target, name.c_str(), &raw);
    if (found == 1) {
      Extension ext;
      // Matches keep libxtables' name ("icmpv6" and "ipv6-icmp" are "icmp6"); targets keep the name as given
      // (iptables prints the jump name, e.g. NOTRACK, not the real extension behind it).
      ext.name = target ? name : std::string(raw.name);
      ext.target = target;
      ext.options = ReadOptions(raw);
      return {true, std::move(ext)};
    }
    std::string file_name = name;
    if (!target && (name == "icmpv6" || name == "ipv6-icmp")) file_name = "icmp6";
    if (found < 0) return {true, GenericExtension(name, target)};
    FileProbe probe = ProbeExtensionFile(family, file_name);
    if (probe.state == FileState::kUnloadable) return {true, GenericExtension(name, target)};
    if (target && probe.state == FileState::kLoaded && !probe.shared_path.empty() && name[0] >= 'A' && name[0] <= 'Z') {
      const uint16_t nfproto = family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
      if (const xtables_target* t = LoadTargetForFamily(*xt, probe.shared_path, name, nfproto)) {
        Extension ext;
        ext.name = name;
        ext.target = true;
        ext.options = ReadOptions(RawLookup{t->name, t->x6_options, t->extra_opts});
        return {true, std::move(ext)};
      }
    }
    return {};
  }

 protected:
  Outcome Load(Family family, bool target, const std::string& name) const override {
    if (target && IsStandardTargetName(name)) return {true, StandardTarget(name)};
    if (!IsSafeExtensionName(name)) return {};  // unknown match; for -j a chain name
    if (!target) {
      if (const Extension* builtin = BuiltinMatch(name)) return {true, *builtin};
    }
    return LoadThroughXtables(family, target, name);
  }

 private:
  // The library, loaded and initialized on the first lookup that needs it, or nullptr when it cannot be used:
  // in a process whose real and effective uid differ (xtables_init() calls _exit(111) there, xtables.c), or when
  // it cannot be loaded (LoadXtables). Such callers get generic parsing. Called with XtablesMutex() held.
  static const XtablesLib* Initialize() {
    static int state = 0;  // 0 untried, 1 ok, -1 unusable
    static const XtablesLib* lib = nullptr;
    if (state == 0) {
      state = -1;
      if (getuid() == geteuid()) {
        Result<const XtablesLib*> loaded = LoadXtables();
        if (loaded.ok() && InitXtables(**loaded) == 0) {
          lib = *loaded;
          state = 1;
        }
      }
    }
    return lib;
  }
};

const XtablesCatalog& TheXtablesCatalog() {
  static const XtablesCatalog* catalog = new XtablesCatalog();
  return *catalog;
}

}  // namespace

const Extension* BuiltinMatch(std::string_view name) {
  using Arg = ExtensionOption::Arg;
  // libxt_tcp.c (old-style: tcp_opts), libxt_udp.c (udp_opts: XTTYPE_PORTRC, XTOPT_INVERT), libxt_comment.c
  // (comment_opts: XTTYPE_STRING, XTOPT_MAND), iptables 1.8.9; extensions_test.cc compares each with what
  // libxtables reads from the installed extension.
  static const Extension* const tcp = new Extension{
      .name = "tcp",
      .options = {OldStyleOption("source-port", Arg::kRequired), OldStyleOption("sport", Arg::kRequired),
                  OldStyleOption("destination-port", Arg::kRequired), OldStyleOption("dport", Arg::kRequired),
                  OldStyleOption("syn", Arg::kNone), OldStyleOption("tcp-flags", Arg::kRequired),
                  OldStyleOption("tcp-option", Arg::kRequired)}};
  static const Extension* const udp =
      new Extension{.name = "udp",
                    .options = {X6Option("source-port", 0, true), X6Option("sport", 0, true),
                                X6Option("destination-port", 1, true), X6Option("dport", 1, true)}};
  static const Extension* const comment = new Extension{.name = "comment", .options = {X6Option("comment", 0, false)}};
  if (name == "tcp") return tcp;
  if (name == "udp") return udp;
  if (name == "comment") return comment;
  return nullptr;
}

std::optional<Extension> XtablesMatch(Family family, std::string_view name) {
  if (!IsSafeExtensionName(name)) return std::nullopt;
  auto outcome = TheXtablesCatalog().LoadThroughXtables(family, false, std::string(name));
  if (!outcome.exists || outcome.ext.generic) return std::nullopt;
  return std::move(outcome.ext);
}

const ExtensionCatalog& SystemExtensions() { return TheXtablesCatalog(); }

const ExtensionCatalog& GenericExtensions() {
  static const GenericCatalog* catalog = new GenericCatalog();
  return *catalog;
}

}  // namespace iptkit::dialect
