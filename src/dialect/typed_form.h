// A rule's typed form (Rule::typed: the arguments the user gave, include/iptkit/dialect.h HasTypedForm) as the
// in-process backends hand rules to libxtables. Shared by the native (nf_tables) and native-legacy (x_tables)
// backends, which must parse exactly what iptables would have been given.
// Thread-safety: pure functions.
#ifndef IPTKIT_SRC_DIALECT_TYPED_FORM_H_
#define IPTKIT_SRC_DIALECT_TYPED_FORM_H_

#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::dialect {

// The rule libxtables must parse for `rule`: the fields of what the user typed when the rule carries its typed form
// (its own fields may be the canonical print, which for a lossy print is another kernel rule), else its fields. A
// typed `-c PKTS BYTES` is left out (counters are not a field); the owner tag, never part of the typed form, is kept.
Result<Rule> SourceForm(const Rule& rule, Family family);

// The arguments of the rule's printed spec without its owner tag (the typed form of a rule that has none).
std::vector<std::string> PrintedArgs(const Rule& rule);

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_TYPED_FORM_H_
