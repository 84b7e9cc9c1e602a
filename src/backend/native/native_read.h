// The two halves of a native read, shared by the model read (NativeBackend::Dump, native_backend.cc) and the save
// text printed straight from the kernel's form (NativeBackend::ReadSaveText, native_save.cc): the netlink messages
// of one generation, handed to a visitor, and how a table's chains are judged the way iptables-nft-save shows them.
// Thread-safety: as NativeBackend (one thread at a time).
#ifndef IPTKIT_SRC_BACKEND_NATIVE_NATIVE_READ_H_
#define IPTKIT_SRC_BACKEND_NATIVE_NATIVE_READ_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/native/native_backend.h"
#include "src/backend/native/rule_codec.h"

struct nlmsghdr;

namespace iptkit::backend::native {

// A chain as the kernel dumps it.
struct DumpedChain {
  std::string table, name;
  uint64_t handle = 0;
  bool base = false;
  uint32_t hook = 0;
  int32_t prio = 0;
  std::string type;
  std::optional<uint32_t> policy;
  Counters counters;
};

// What one read collects. NativeBackend::DumpAtOneGeneration fills tables, chains and sets and hands each rule
// message to OnRule as it arrives (after every chain message); Reset starts a new attempt when the generation moved
// during the previous one.
class DumpVisitor {
 public:
  virtual ~DumpVisitor() = default;
  virtual void Reset() {
    tables.clear();
    chains.clear();
    sets.clear();
  }
  // A rule of a wanted table (and of the chain dumped, for a dump of one chain), in the kernel's dump order. A
  // non-OK Status ends the read with it.
  virtual Status OnRule(const nlmsghdr* m, const RuleLocation& loc) = 0;

  std::set<std::string> tables;
  std::vector<DumpedChain> chains;                       // of the wanted tables, in dump order
  std::map<std::string, std::vector<std::string>> sets;  // table → its named nft sets (read at kRules only)
};

// The tables in iptables-nft-save's order (nft.h enum nft_table_type: mangle, security, raw, filter, nat).
const std::vector<std::string>& SaveOrder();

// Gives `t` (made by NewTable(t.name)) and `kt` the chains of `chains` that belong to t.name as iptables-nft-save
// shows them: base chains iptables-nft makes with their policy and counters, then the user chains sorted by name.
// Returns the first reason the table cannot be shown faithfully (a base chain iptables does not make, a policy it
// cannot show, a chain name it cannot take, nft sets in the table), "" when there is none. A rule of a chain left
// out here is not shown either.
std::string JudgeChains(const std::vector<DumpedChain>& chains,
                        const std::map<std::string, std::vector<std::string>>& sets, Table& t,
                        NativeBackend::KTable& kt);

// DecodeRuleMessage, with the rule's expression names added to the reason of a native nft expression.
Result<XtRule> DecodeDumpedRule(Family family, const nlmsghdr* m);

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_NATIVE_READ_H_
