// The libiptc functions the in-process legacy backend (xtables_backend.cc) calls, loaded on first use.
//
// Every iptkit program used to have libip4tc.so.2 and libip6tc.so.2 as dynamic dependencies, so each `iptkit`
// process mapped and relocated both before main() although only the legacy backend (the x_tables variant) calls
// them. These definitions stand in for the libraries' at link time: the first call of one opens its library with
// dlopen (by the absolute path found when iptkit was configured, IPTKIT_LIBIP4TC / IPTKIT_LIBIP6TC, so neither
// LD_LIBRARY_PATH nor anything else in the environment decides which code is loaded) and calls the real function
// through the pointer dlsym gives. Thread-safety: as libiptc's own (callers serialize, xtables_backend.cc IptcMutex);
// the loading itself is thread-safe (function-local statics).
//
// When a library cannot be loaded, each function fails as libiptc's do (NULL or 0, errno ELIBACC), and
// iptc_strerror / ip6tc_strerror say which file could not be loaded and why.
//
// libiptkit.so exports only the C ABI (src/capi/libiptkit.map), so these names never interpose on another copy of
// libiptc in a process that has one.

// clang-format off
#include <net/if.h>
#include <netinet/in.h>
#include <libiptc/libiptc.h>
// libip6tc.h, unlike libiptc.h, declares its functions without extern "C".
extern "C" {
#include <libiptc/libip6tc.h>
}
// clang-format on
#include <dlfcn.h>

#include <cerrno>
#include <string>
#include <type_traits>

namespace {

struct Library {
  void* handle = nullptr;
  std::string error;  // why it could not be loaded
};

const Library& Load(const char* path) {
  Library* lib = new Library();  // never freed: the functions may run until exit
  lib->handle = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib->handle == nullptr) {
    const char* why = ::dlerror();
    lib->error = std::string("cannot load ") + path + ": " + (why != nullptr ? why : "unknown error");
  }
  return *lib;
}

const Library& Ip4tc() {
  static const Library& lib = Load(IPTKIT_LIBIP4TC);
  return lib;
}

const Library& Ip6tc() {
  static const Library& lib = Load(IPTKIT_LIBIP6TC);
  return lib;
}

// The library's definition of `name`, or nullptr (errno = ELIBACC) when the library or the symbol is missing.
template <typename Fn>
Fn Resolve(const Library& lib, const char* name) {
  void* sym = lib.handle != nullptr ? ::dlsym(lib.handle, name) : nullptr;
  return reinterpret_cast<Fn>(sym);
}

// Fails as a libiptc function does when its library could not be loaded.
template <typename R>
R Unavailable() {
  errno = ELIBACC;
  if constexpr (!std::is_void_v<R>) return R{};
}

}  // namespace

// One forwarding definition: LIB is the loader (Ip4tc or Ip6tc), NAME the function, ARGS PARAMS' names.
#define IPTKIT_IPTC_FORWARD(LIB, RET, NAME, PARAMS, ARGS)          \
  RET NAME PARAMS {                                                \
    static const auto real = Resolve<RET(*) PARAMS>(LIB(), #NAME); \
    if (real == nullptr) return Unavailable<RET>();                \
    return real ARGS;                                              \
  }

// The functions xtables_backend.cc calls, for one family: P is the prefix (iptc or ip6tc), ENTRY its rule type.
#define IPTKIT_IPTC_FUNCTIONS(LIB, P, ENTRY)                                                                          \
  IPTKIT_IPTC_FORWARD(LIB, struct xtc_handle*, P##_init, (const char* table), (table))                                \
  IPTKIT_IPTC_FORWARD(LIB, void, P##_free, (struct xtc_handle * h), (h))                                              \
  IPTKIT_IPTC_FORWARD(LIB, const char*, P##_first_chain, (struct xtc_handle * h), (h))                                \
  IPTKIT_IPTC_FORWARD(LIB, const char*, P##_next_chain, (struct xtc_handle * h), (h))                                 \
  IPTKIT_IPTC_FORWARD(LIB, const struct ENTRY*, P##_first_rule, (const char* c, struct xtc_handle* h), (c, h))        \
  IPTKIT_IPTC_FORWARD(LIB, const struct ENTRY*, P##_next_rule, (const struct ENTRY* e, struct xtc_handle* h), (e, h)) \
  IPTKIT_IPTC_FORWARD(LIB, const char*, P##_get_target, (const struct ENTRY* e, struct xtc_handle* h), (e, h))        \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_builtin, (const char* c, struct xtc_handle* const h), (c, h))                     \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_is_chain, (const char* c, struct xtc_handle* const h), (c, h))                    \
  IPTKIT_IPTC_FORWARD(LIB, const char*, P##_get_policy, (const char* c, struct xt_counters* n, struct xtc_handle* h), \
                      (c, n, h))                                                                                      \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_insert_entry,                                                                     \
                      (const xt_chainlabel c, const struct ENTRY* e, unsigned int n, struct xtc_handle* h),           \
                      (c, e, n, h))                                                                                   \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_replace_entry,                                                                    \
                      (const xt_chainlabel c, const struct ENTRY* e, unsigned int n, struct xtc_handle* h),           \
                      (c, e, n, h))                                                                                   \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_append_entry,                                                                     \
                      (const xt_chainlabel c, const struct ENTRY* e, struct xtc_handle* h), (c, e, h))                \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_check_entry,                                                                      \
                      (const xt_chainlabel c, const struct ENTRY* e, unsigned char* m, struct xtc_handle* h),         \
                      (c, e, m, h))                                                                                   \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_delete_entry,                                                                     \
                      (const xt_chainlabel c, const struct ENTRY* e, unsigned char* m, struct xtc_handle* h),         \
                      (c, e, m, h))                                                                                   \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_delete_num_entry, (const xt_chainlabel c, unsigned int n, struct xtc_handle* h),  \
                      (c, n, h))                                                                                      \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_flush_entries, (const xt_chainlabel c, struct xtc_handle* h), (c, h))             \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_zero_entries, (const xt_chainlabel c, struct xtc_handle* h), (c, h))              \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_create_chain, (const xt_chainlabel c, struct xtc_handle* h), (c, h))              \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_delete_chain, (const xt_chainlabel c, struct xtc_handle* h), (c, h))              \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_rename_chain,                                                                     \
                      (const xt_chainlabel a, const xt_chainlabel b, struct xtc_handle* h), (a, b, h))                \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_set_policy,                                                                       \
                      (const xt_chainlabel c, const xt_chainlabel p, struct xt_counters* n, struct xtc_handle* h),    \
                      (c, p, n, h))                                                                                   \
  IPTKIT_IPTC_FORWARD(LIB, int, P##_commit, (struct xtc_handle * h), (h))                                             \
  const char* P##_strerror(int err) {                                                                                 \
    static const auto real = Resolve<const char* (*)(int)>(LIB(), #P "_strerror");                                    \
    if (real == nullptr) return LIB().error.empty() ? "libiptc function missing" : LIB().error.c_str();               \
    return real(err);                                                                                                 \
  }

extern "C" {
IPTKIT_IPTC_FUNCTIONS(Ip4tc, iptc, ipt_entry)
IPTKIT_IPTC_FUNCTIONS(Ip6tc, ip6tc, ip6t_entry)
}
