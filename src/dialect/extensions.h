// Extension knowledge for the rule parser: which matches and targets exist for a family and which options they
// take (and whether an option takes a value). The system catalog reads it in-process from libxtables, the same
// option tables iptables 1.8.9 merges into its getopt table (x6_options, or extra_opts for old-style extensions).
//
// An extension whose shared object exists but cannot be loaded in-process (or every extension, when libxtables
// cannot be used at all, e.g. in a setuid process where xtables_init() would _exit(111)) is reported as
// `generic`: the parser then accepts any `--option` with the values that follow, as iptables itself might.
//
// Thread-safety: catalogs are safe to use concurrently. Extension pointers stay valid for the process lifetime.
//
//   const Extension* tcp = SystemExtensions().FindMatch(Family::kIPv4, "tcp");
//   const ExtensionOption* dport = tcp ? tcp->FindOption("dport") : nullptr;  // dport->arg == kRequired
#ifndef IPTKIT_SRC_DIALECT_EXTENSIONS_H_
#define IPTKIT_SRC_DIALECT_EXTENSIONS_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"

namespace iptkit::dialect {

struct ExtensionOption {
  enum class Arg { kNone, kRequired, kOptional };
  std::string name;  // without the leading "--"
  Arg arg = Arg::kNone;
  // From x6_options only (old-style extensions leave these unknown and decide in their own parse function).
  bool flags_known = false;
  bool invertible = false;  // XTOPT_INVERT: may be preceded by "!"
  bool multi = false;       // XTOPT_MULTI: may be given more than once
  int id = -1;              // options sharing an id are aliases (--dport / --destination-port)
};

struct Extension {
  std::string name;  // as iptables prints it: "icmp6" for "-m icmpv6"
  bool target = false;
  // The option table is unknown (the extension could not be loaded in-process): every "--option" is accepted.
  bool generic = false;
  std::vector<ExtensionOption> options;

  // Exact name lookup; nullptr when absent (always nullptr for generic extensions).
  const ExtensionOption* FindOption(std::string_view option) const;
};

class ExtensionCatalog {
 public:
  virtual ~ExtensionCatalog() = default;
  // The match `-m name`; nullptr when no such match exists for the family.
  virtual const Extension* FindMatch(Family family, std::string_view name) const = 0;
  // The target `-j name` (ACCEPT/DROP/RETURN/QUEUE are the option-less standard target); nullptr when `name`
  // is not a target extension, i.e. it names a user chain.
  virtual const Extension* FindTarget(Family family, std::string_view name) const = 0;
};

// Backed by libxtables (the system's iptables extensions), cached per family and name.
const ExtensionCatalog& SystemExtensions();

// Knows nothing: every match and every non-standard target is generic. What the parser falls back to when
// libxtables is unusable; also used by tests.
const ExtensionCatalog& GenericExtensions();

// The option tables of the commonest matches, tcp, udp and comment, exactly as libxtables reads them from the
// extensions of iptables 1.8.9 (libxt_tcp's extra_opts, libxt_udp's and libxt_comment's x6_options). The system
// catalog answers these three from here without initializing libxtables or loading the extension's shared
// object, which a one-rule command would otherwise do for a `-p tcp --dport 22` only to learn the option names
// (the native backend encodes their common forms without libxtables too: xt_direct.h). nullptr for other names.
const Extension* BuiltinMatch(std::string_view name);

// The match `name` as libxtables describes it, read through libxtables whatever BuiltinMatch knows (nullopt when
// no such match exists or libxtables cannot be used). For tests, which compare the two.
std::optional<Extension> XtablesMatch(Family family, std::string_view name);

// libxtables keeps process-global state (xt_params, the current family, loaded extensions) and is not
// thread-safe: any code in the process that calls into libxtables must hold this mutex and re-set its own
// xt_params / nfproto while holding it.
std::mutex& XtablesMutex();

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_EXTENSIONS_H_
