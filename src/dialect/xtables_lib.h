// libxtables (iptables' extension library, libxtables.so.12) as iptkit calls it: loaded on first use.
//
// No iptkit program has libxtables as a dynamic dependency: a process maps and relocates it (and the loader binds
// its ~120 symbols) only when the dialect's extension catalog or the in-process backends (native, native-legacy)
// first need it, not at the start of every `iptkit set add` or `iptkit --version`. The library is opened by the
// absolute path found when iptkit was configured (IPTKIT_LIBXTABLES), so nothing in the environment decides which
// code is loaded; the extensions (libxt_*.so) it or the native backend then load name it as their dependency and
// share this one copy. Every entry point iptkit uses is a member of XtablesLib, typed after its declaration in
// <xtables.h>; its lists of extensions are reached through the addresses of its variables.
//
// Thread-safety: LoadXtables may be called from any thread (the first call loads, the others wait for it). Calls
// through the table are libxtables' own and need dialect::XtablesMutex() (extensions.h).
//
//   IPTKIT_ASSIGN_OR_RETURN(const XtablesLib* xt, LoadXtables());
//   std::lock_guard<std::mutex> lock(XtablesMutex());
//   xt->set_nfproto(NFPROTO_IPV4);
//   const xtables_match* m = xt->find_match("conntrack", XTF_TRY_LOAD, nullptr);
#ifndef IPTKIT_SRC_DIALECT_XTABLES_LIB_H_
#define IPTKIT_SRC_DIALECT_XTABLES_LIB_H_

// <net/if.h> before any <linux/...> header that <xtables.h> includes (linux/libc-compat.h then leaves struct
// ifreq & co. to glibc).
#include <net/if.h>
#include <xtables.h>

#include <string>

#include "iptkit/status.h"

namespace iptkit::dialect {

struct XtablesLib {
  decltype(&::xtables_init_all) init_all;
  decltype(&::xtables_set_params) set_params;
  decltype(&::xtables_set_nfproto) set_nfproto;
  decltype(&::xtables_find_match) find_match;
  decltype(&::xtables_find_target) find_target;
  decltype(&::xtables_options_xfrm) options_xfrm;
  decltype(&::xtables_merge_options) merge_options;
  decltype(&::xtables_option_mpcall) option_mpcall;
  decltype(&::xtables_option_mfcall) option_mfcall;
  decltype(&::xtables_option_tpcall) option_tpcall;
  decltype(&::xtables_option_tfcall) option_tfcall;
  decltype(&::xtables_ipparse_multiple) ipparse_multiple;
  decltype(&::xtables_ip6parse_multiple) ip6parse_multiple;
  decltype(&::xtables_parse_interface) parse_interface;
  decltype(&::xtables_parse_protocol) parse_protocol;
  // The registered extensions, and those whose shared objects are loaded but whose registration (the revision
  // check) is still pending (libxtables/xtables.c; the pending lists are exported but not declared in <xtables.h>).
  xtables_match** matches;
  xtables_match** pending_matches;
  xtables_target** targets;
  xtables_target** pending_targets;
  // iptables' protocol names (xtables_chain_protos), ending with a null name.
  const xtables_pprot* chain_protos;
};

// The loaded library, or FailedPrecondition (reason "libxtables_unavailable") naming the file and what the loader
// said when it or one of the entry points above is missing. The outcome of the first call is kept for the process.
Result<const XtablesLib*> LoadXtables();

// The file LoadXtables opens (IPTKIT_LIBXTABLES unless a test changed it).
const std::string& XtablesLibPath();

// Tests only: the file the first LoadXtables of this process opens instead of IPTKIT_LIBXTABLES (no effect once it
// ran). Never read from the environment.
void SetXtablesLibPathForTesting(std::string path);

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_XTABLES_LIB_H_
