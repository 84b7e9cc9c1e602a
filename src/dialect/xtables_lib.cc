#include "src/dialect/xtables_lib.h"

#include <dlfcn.h>

#include <utility>

namespace iptkit::dialect {
namespace {

std::string& PathSetting() {
  static std::string* path = new std::string(IPTKIT_LIBXTABLES);
  return *path;
}

struct Loaded {
  XtablesLib lib{};
  Status status = Status::Ok();
};

Status Unavailable(const std::string& what) {
  return Status::FailedPrecondition("libxtables (iptables' extension library) cannot be used: " + what)
      .WithReason("libxtables_unavailable");
}

// dlsym of each name into the member of the matching type; false (with `missing` set) at the first name the
// library does not define.
template <typename T>
bool Bind(void* handle, const char* name, T& member, std::string& missing) {
  void* sym = ::dlsym(handle, name);
  if (sym == nullptr) {
    missing = name;
    return false;
  }
  member = reinterpret_cast<T>(sym);
  return true;
}

const Loaded& Load() {
  Loaded* out = new Loaded();  // never freed: the library stays loaded until exit
  const std::string& path = PathSetting();
  // RTLD_LOCAL: its names join no global scope (the extensions it loads find it as their own dependency, by its
  // soname). RTLD_NOW: a missing symbol shows here, not in the middle of a parse.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    out->status = Unavailable("cannot load " + path + ": " + (why != nullptr ? why : "unknown error"));
    return *out;
  }
  XtablesLib& l = out->lib;
  std::string missing;
  const bool ok = Bind(handle, "xtables_init_all", l.init_all, missing) &&
                  Bind(handle, "xtables_set_params", l.set_params, missing) &&
                  Bind(handle, "xtables_set_nfproto", l.set_nfproto, missing) &&
                  Bind(handle, "xtables_find_match", l.find_match, missing) &&
                  Bind(handle, "xtables_find_target", l.find_target, missing) &&
                  Bind(handle, "xtables_options_xfrm", l.options_xfrm, missing) &&
                  Bind(handle, "xtables_merge_options", l.merge_options, missing) &&
                  Bind(handle, "xtables_option_mpcall", l.option_mpcall, missing) &&
                  Bind(handle, "xtables_option_mfcall", l.option_mfcall, missing) &&
                  Bind(handle, "xtables_option_tpcall", l.option_tpcall, missing) &&
                  Bind(handle, "xtables_option_tfcall", l.option_tfcall, missing) &&
                  Bind(handle, "xtables_ipparse_multiple", l.ipparse_multiple, missing) &&
                  Bind(handle, "xtables_ip6parse_multiple", l.ip6parse_multiple, missing) &&
                  Bind(handle, "xtables_parse_interface", l.parse_interface, missing) &&
                  Bind(handle, "xtables_parse_protocol", l.parse_protocol, missing) &&
                  Bind(handle, "xtables_matches", l.matches, missing) &&
                  Bind(handle, "xtables_pending_matches", l.pending_matches, missing) &&
                  Bind(handle, "xtables_targets", l.targets, missing) &&
                  Bind(handle, "xtables_pending_targets", l.pending_targets, missing) &&
                  Bind(handle, "xtables_chain_protos", l.chain_protos, missing);
  if (!ok) out->status = Unavailable(path + " has no symbol " + missing);
  return *out;
}

}  // namespace

Result<const XtablesLib*> LoadXtables() {
  static const Loaded& loaded = Load();
  if (!loaded.status.ok()) return loaded.status;
  return &loaded.lib;
}

const std::string& XtablesLibPath() { return PathSetting(); }

void SetXtablesLibPathForTesting(std::string path) { PathSetting() = std::move(path); }

}  // namespace iptkit::dialect
