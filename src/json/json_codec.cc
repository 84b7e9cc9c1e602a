#include "src/json/json_codec.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "src/json/set_options_json.h"

namespace iptkit::json {
namespace {

// ---- Errors and small readers ----

std::string Where(const std::string& pointer) { return pointer.empty() ? "(document)" : pointer; }

Status Err(const std::string& pointer, std::string message) {
  Status s = Status::InvalidArgument(Where(pointer) + ": " + std::move(message));
  return pointer.empty() ? s : s.WithField(pointer);
}

std::string_view TypeName(const Json& j) { return JsonTypeName(j); }

Status Expect(const Json& j, const std::string& pointer, bool ok, std::string_view expected) {
  if (ok) return Status::Ok();
  return Err(pointer, "expected " + std::string(expected) + ", got " + std::string(TypeName(j)));
}

Status ExpectObject(const Json& j, const std::string& pointer) { return Expect(j, pointer, j.is_object(), "object"); }

// Every member must be one of `allowed`; the error names the first unknown member in document order.
Status CheckKeys(const Json& obj, const std::string& pointer, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return Err(PointerJoin(pointer, key), "unknown field (expected one of: " + list + ")");
  }
  return Status::Ok();
}

const Json* Member(const Json& obj, std::string_view key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// `read(value, value_pointer)` (returning a Result) applied to member `key` of `obj`, which must be present.
template <typename Read>
auto ReadRequired(const Json& obj, std::string_view key, const std::string& pointer, Read read)
    -> decltype(read(obj, pointer)) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return Err(PointerJoin(pointer, key), "required field is missing");
  return read(*m, PointerJoin(pointer, key));
}

// When `obj` has member `key`, stores `read(value, value_pointer)` in *out; otherwise leaves *out alone.
template <typename T, typename Read>
Status ReadOptional(const Json& obj, std::string_view key, const std::string& pointer, Read read, T* out) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return Status::Ok();
  IPTKIT_ASSIGN_OR_RETURN(*out, read(*m, PointerJoin(pointer, key)));
  return Status::Ok();
}

// An array (`expected` names it in the error, e.g. "array of options") whose elements are objects, each read by
// `read(element, element_pointer)`.
template <typename T, typename Read>
Result<std::vector<T>> ReadObjectArray(const Json& j, const std::string& pointer, std::string_view expected,
                                       Read read) {
  IPTKIT_RETURN_IF_ERROR(Expect(j, pointer, j.is_array(), expected));
  std::vector<T> out;
  for (size_t i = 0; i < j.size(); ++i) {
    std::string p = PointerJoin(pointer, std::to_string(i));
    IPTKIT_RETURN_IF_ERROR(ExpectObject(j[i], p));
    IPTKIT_ASSIGN_OR_RETURN(T item, read(j[i], p));
    out.push_back(std::move(item));
  }
  return out;
}

Result<std::string> GetString(const Json& j, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(Expect(j, pointer, j.is_string(), "string"));
  return j.get<std::string>();
}

Result<std::string> RequiredString(const Json& obj, std::string_view key, const std::string& pointer) {
  return ReadRequired(obj, key, pointer, GetString);
}

Result<std::optional<std::string>> OptionalString(const Json& obj, std::string_view key, const std::string& pointer) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return std::optional<std::string>();
  IPTKIT_ASSIGN_OR_RETURN(std::string s, GetString(*m, PointerJoin(pointer, key)));
  return std::optional<std::string>(std::move(s));
}

Result<bool> OptionalBool(const Json& obj, std::string_view key, const std::string& pointer) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return false;
  IPTKIT_RETURN_IF_ERROR(Expect(*m, PointerJoin(pointer, key), m->is_boolean(), "boolean"));
  return m->get<bool>();
}

Result<uint64_t> GetUnsigned(const Json& j, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(Expect(j, pointer, j.is_number_unsigned(), "non-negative integer"));
  return j.get<uint64_t>();
}

// A 1-based position.
Result<int> GetIndex(const Json& j, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(Expect(j, pointer, j.is_number_integer(), "integer >= 1"));
  int64_t v = j.get<int64_t>();
  if (v < 1 || v > std::numeric_limits<int>::max()) {
    return Err(pointer, "expected integer >= 1, got " + std::to_string(v));
  }
  return static_cast<int>(v);
}

Result<std::vector<std::string>> GetStringArray(const Json& j, const std::string& pointer) {
  bool ok = j.is_array() && std::all_of(j.begin(), j.end(), [](const Json& e) { return e.is_string(); });
  if (!ok) return Err(pointer, "expected array of strings");
  std::vector<std::string> out;
  for (const Json& e : j) out.push_back(e.get<std::string>());
  return out;
}

Result<Family> GetFamily(const Json& j, const std::string& pointer) {
  IPTKIT_ASSIGN_OR_RETURN(std::string s, GetString(j, pointer));
  if (s == "ipv4") return Family::kIPv4;
  if (s == "ipv6") return Family::kIPv6;
  return Err(pointer, "unknown family '" + s + "' (expected ipv4 or ipv6)");
}

Result<std::string> GetTable(const Json& j, const std::string& pointer) {
  IPTKIT_ASSIGN_OR_RETURN(std::string s, GetString(j, pointer));
  if (BuiltinChains(s).empty()) {
    return Err(pointer, "unknown table '" + s + "' (expected filter, nat, mangle, raw or security)");
  }
  return s;
}

// ---- Rule pieces ----

Json FieldToJson(const Field& f, std::string_view key) {
  Json j = Json::object();
  if (!key.empty()) j[std::string(key)] = f.value;
  if (f.negated) j["not"] = true;
  return j;
}

Result<Field> FieldFromJson(const Json& j, std::string_view key, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, pointer));
  Field f;
  if (key.empty()) {  // fragment: {"not": bool}
    IPTKIT_RETURN_IF_ERROR(CheckKeys(j, pointer, {"not"}));
  } else {
    IPTKIT_RETURN_IF_ERROR(CheckKeys(j, pointer, {key, "not"}));
    IPTKIT_ASSIGN_OR_RETURN(f.value, RequiredString(j, key, pointer));
  }
  IPTKIT_ASSIGN_OR_RETURN(f.negated, OptionalBool(j, "not", pointer));
  return f;
}

Json OptionsToJson(const std::vector<Option>& options) {
  Json arr = Json::array();
  for (const Option& o : options) {
    Json j = Json::object();
    j["name"] = o.name;
    if (o.negated) j["not"] = true;
    if (!o.values.empty()) j["values"] = o.values;
    arr.push_back(std::move(j));
  }
  return arr;
}

// One element of an "options" array (an object).
Result<Option> OptionFromJson(const Json& o, const std::string& p) {
  IPTKIT_RETURN_IF_ERROR(CheckKeys(o, p, {"name", "not", "values"}));
  Option opt;
  IPTKIT_ASSIGN_OR_RETURN(opt.name, RequiredString(o, "name", p));
  if (opt.name.empty()) return Err(PointerJoin(p, "name"), "empty option name");
  IPTKIT_ASSIGN_OR_RETURN(opt.negated, OptionalBool(o, "not", p));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(o, "values", p, GetStringArray, &opt.values));
  return opt;
}

Result<std::vector<Option>> OptionsFromJson(const Json& j, const std::string& pointer) {
  return ReadObjectArray<Option>(j, pointer, "array of options", OptionFromJson);
}

// One element of a "matches" array (an object).
Result<Match> MatchFromJson(const Json& m, const std::string& p) {
  IPTKIT_RETURN_IF_ERROR(CheckKeys(m, p, {"name", "options"}));
  Match match;
  IPTKIT_ASSIGN_OR_RETURN(match.name, RequiredString(m, "name", p));
  if (match.name.empty()) return Err(PointerJoin(p, "name"), "empty match name");
  IPTKIT_RETURN_IF_ERROR(ReadOptional(m, "options", p, OptionsFromJson, &match.options));
  return match;
}

Result<std::vector<Match>> MatchesFromJson(const Json& j, const std::string& pointer) {
  return ReadObjectArray<Match>(j, pointer, "array of matches", MatchFromJson);
}

Result<Target> TargetFromJson(const Json& j, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, pointer));
  IPTKIT_RETURN_IF_ERROR(CheckKeys(j, pointer, {"name", "kind", "options"}));
  Target t;
  IPTKIT_ASSIGN_OR_RETURN(t.name, RequiredString(j, "name", pointer));
  if (t.name.empty()) return Err(PointerJoin(pointer, "name"), "empty target name");
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> kind, OptionalString(j, "kind", pointer));
  if (!kind || *kind == "jump") {
    t.kind = Target::Kind::kJump;
  } else if (*kind == "goto") {
    t.kind = Target::Kind::kGoto;
  } else {
    return Err(PointerJoin(pointer, "kind"), "unknown kind '" + *kind + "' (expected jump or goto)");
  }
  if (t.kind == Target::Kind::kGoto && j.contains("options")) {
    return Err(PointerJoin(pointer, "options"), "goto takes no options");
  }
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "options", pointer, OptionsFromJson, &t.options));
  return t;
}

Json CountersToJson(const Counters& c) {
  Json j = Json::object();
  j["packets"] = c.packets;
  j["bytes"] = c.bytes;
  return j;
}

Result<Counters> CountersFromJson(const Json& j, const std::string& pointer) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, pointer));
  IPTKIT_RETURN_IF_ERROR(CheckKeys(j, pointer, {"packets", "bytes"}));
  Counters c;
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "packets", pointer, GetUnsigned, &c.packets));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "bytes", pointer, GetUnsigned, &c.bytes));
  return c;
}

// Owner tag parts (docs/architecture.md §4): owner [a-z0-9-]{1,32}, id up to 26 characters without ':' or blanks.
Status CheckTagPart(const std::string& value, const std::string& pointer, bool owner) {
  size_t max = owner ? 32 : 26;
  bool ok = !value.empty() && value.size() <= max;
  for (char c : value) {
    bool lower_or_digit = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    bool id_char = lower_or_digit || (c >= 'A' && c <= 'Z') || c == '_' || c == '.';
    if (!(owner ? lower_or_digit : id_char)) ok = false;
  }
  if (ok) return Status::Ok();
  return Err(pointer, owner ? "owner must match [a-z0-9-]{1,32}, got '" + value + "'"
                            : "id must be 1..26 characters of [A-Za-z0-9._-], got '" + value + "'");
}

bool RuleHasStructuredFields(const Json& j) {
  for (std::string_view k : {"src", "dst", "in", "out", "protocol", "fragment", "matches", "target"}) {
    if (j.contains(k)) return true;
  }
  return false;
}

Result<Rule> StructuredRuleFromJson(const Json& j, const std::string& pointer) {
  Rule r;
  struct HeaderKey {
    std::string_view key;
    std::string_view value_key;
    std::optional<Field> Rule::*field;
  };
  static constexpr HeaderKey kHeader[] = {
      {"src", "addr", &Rule::source},         {"dst", "addr", &Rule::destination},
      {"in", "name", &Rule::in_interface},    {"out", "name", &Rule::out_interface},
      {"protocol", "value", &Rule::protocol}, {"fragment", "", &Rule::fragment},
  };
  for (const HeaderKey& h : kHeader) {
    if (const Json* f = Member(j, h.key)) {
      IPTKIT_ASSIGN_OR_RETURN(Field field, FieldFromJson(*f, h.value_key, PointerJoin(pointer, h.key)));
      r.*(h.field) = std::move(field);
    }
  }
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "matches", pointer, MatchesFromJson, &r.matches));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "target", pointer, TargetFromJson, &r.target));
  return r;
}

// ---- Ops ----

struct VerbName {
  Op::Kind kind;
  std::string_view name;
};
constexpr VerbName kVerbs[] = {
    {Op::Kind::kAppend, "append"},
    {Op::Kind::kInsert, "insert"},
    {Op::Kind::kDelete, "delete"},
    {Op::Kind::kDeleteAt, "delete"},
    {Op::Kind::kReplace, "replace"},
    {Op::Kind::kCreateChain, "create_chain"},
    {Op::Kind::kDeleteChain, "delete_chain"},
    {Op::Kind::kRenameChain, "rename_chain"},
    {Op::Kind::kFlush, "flush"},
    {Op::Kind::kZero, "zero"},
    {Op::Kind::kPolicy, "policy"},
};

std::string_view VerbOf(Op::Kind kind) {
  for (const VerbName& v : kVerbs) {
    if (v.kind == kind) return v.name;
  }
  return "?";
}

bool IsVerb(std::string_view name) {
  return std::any_of(std::begin(kVerbs), std::end(kVerbs), [name](const VerbName& v) { return v.name == name; });
}

// The ops that carry an "index" (1-based position) and those that carry a "rule".
bool TakesIndex(Op::Kind kind) {
  return kind == Op::Kind::kInsert || kind == Op::Kind::kDeleteAt || kind == Op::Kind::kReplace;
}
bool TakesRule(Op::Kind kind) {
  return kind == Op::Kind::kAppend || kind == Op::Kind::kInsert || kind == Op::Kind::kDelete ||
         kind == Op::Kind::kReplace;
}

// A rule inside an op: location members, when repeated (e.g. copied from a listing), must agree with the op's.
Result<Rule> OpRuleFromJson(const Json& j, const Op& op, const std::string& pointer, const SpecCodec& spec) {
  IPTKIT_ASSIGN_OR_RETURN(RuleInput in, RuleFromJson(j, op.family, pointer, spec));
  if (in.table && *in.table != op.table) {
    return Err(PointerJoin(pointer, "table"), "'" + *in.table + "' disagrees with the op's table '" + op.table + "'");
  }
  if (in.chain && *in.chain != op.chain) {
    return Err(PointerJoin(pointer, "chain"), "'" + *in.chain + "' disagrees with the op's chain '" + op.chain + "'");
  }
  return std::move(in.rule);
}

Result<Op> OpBodyFromJson(std::string_view verb, const Json& body, const std::string& p, const SpecCodec& spec) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(body, p));
  Op op;
  bool chain_optional = false;
  if (verb == "append") {
    op.kind = Op::Kind::kAppend;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "rule", "unique"}));
  } else if (verb == "insert") {
    op.kind = Op::Kind::kInsert;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "index", "rule", "unique"}));
  } else if (verb == "delete") {
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "rule", "index", "expect"}));
    bool by_rule = body.contains("rule");
    bool by_index = body.contains("index");
    if (by_rule == by_index) return Err(p, "give either \"rule\" or \"index\" (with optional \"expect\")");
    if (by_rule && body.contains("expect")) return Err(PointerJoin(p, "expect"), "only valid with \"index\"");
    op.kind = by_rule ? Op::Kind::kDelete : Op::Kind::kDeleteAt;
  } else if (verb == "replace") {
    op.kind = Op::Kind::kReplace;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "index", "rule", "expect"}));
  } else if (verb == "create_chain") {
    op.kind = Op::Kind::kCreateChain;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain"}));
  } else if (verb == "delete_chain") {
    op.kind = Op::Kind::kDeleteChain;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "cascade"}));
  } else if (verb == "rename_chain") {
    op.kind = Op::Kind::kRenameChain;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "new_name"}));
  } else if (verb == "flush" || verb == "zero") {
    op.kind = verb == "flush" ? Op::Kind::kFlush : Op::Kind::kZero;
    chain_optional = true;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain"}));
  } else if (verb == "policy") {
    op.kind = Op::Kind::kPolicy;
    IPTKIT_RETURN_IF_ERROR(CheckKeys(body, p, {"family", "table", "chain", "policy"}));
  }

  IPTKIT_RETURN_IF_ERROR(ReadOptional(body, "family", p, GetFamily, &op.family));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(body, "table", p, GetTable, &op.table));
  if (chain_optional) {
    IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> chain, OptionalString(body, "chain", p));
    op.chain = chain.value_or("");
  } else {
    IPTKIT_ASSIGN_OR_RETURN(op.chain, RequiredString(body, "chain", p));
  }
  if (!op.chain.empty() && !IsBuiltinChain(op.table, op.chain)) {
    if (Status s = ValidateChainName(op.chain); !s.ok()) return Err(PointerJoin(p, "chain"), s.message());
  }

  auto op_rule = [&op, &spec](const Json& rule, const std::string& pointer) {
    return OpRuleFromJson(rule, op, pointer, spec);
  };
  if (TakesIndex(op.kind)) {
    IPTKIT_ASSIGN_OR_RETURN(op.index, ReadRequired(body, "index", p, GetIndex));
  }
  if (TakesRule(op.kind)) {
    IPTKIT_ASSIGN_OR_RETURN(op.rule, ReadRequired(body, "rule", p, op_rule));
  }
  IPTKIT_RETURN_IF_ERROR(ReadOptional(body, "expect", p, op_rule, &op.expect));
  if (op.kind == Op::Kind::kDeleteChain) {
    IPTKIT_ASSIGN_OR_RETURN(op.cascade, OptionalBool(body, "cascade", p));
  }
  if (op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert) {
    IPTKIT_ASSIGN_OR_RETURN(op.unique, OptionalBool(body, "unique", p));
  }
  if (op.kind == Op::Kind::kRenameChain) {
    IPTKIT_ASSIGN_OR_RETURN(op.new_name, RequiredString(body, "new_name", p));
    if (Status s = ValidateChainName(op.new_name); !s.ok()) return Err(PointerJoin(p, "new_name"), s.message());
  }
  if (op.kind == Op::Kind::kCreateChain && IsBuiltinChain(op.table, op.chain)) {
    return Err(PointerJoin(p, "chain"), "'" + op.chain + "' is a builtin chain of table " + op.table);
  }
  if (op.kind == Op::Kind::kPolicy) {
    IPTKIT_ASSIGN_OR_RETURN(op.policy, RequiredString(body, "policy", p));
    if (op.policy != "ACCEPT" && op.policy != "DROP") {
      return Err(PointerJoin(p, "policy"), "expected ACCEPT or DROP, got '" + op.policy + "'");
    }
  }
  return op;
}

// ---- Owned sets (of a desired state) ----

namespace {

Result<std::optional<uint32_t>> OptionalUint(const Json& obj, std::string_view key, const std::string& pointer,
                                             uint64_t max) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return std::optional<uint32_t>();
  const std::string p = PointerJoin(pointer, key);
  IPTKIT_ASSIGN_OR_RETURN(uint64_t v, GetUnsigned(*m, p));
  if (v > max) return Err(p, "expected an integer 0.." + std::to_string(max) + ", got " + std::to_string(v));
  return std::optional<uint32_t>(static_cast<uint32_t>(v));
}

// An entry: "192.0.2.7" or {"entry": "192.0.2.7", "timeout": 600, "comment": "ids", "expires_at": MS}.
Result<OwnedSetEntry> OwnedSetEntryFromJson(const Json& j, const std::string& p) {
  OwnedSetEntry e;
  if (j.is_string()) {
    e.elem = j.get<std::string>();
  } else {
    IPTKIT_RETURN_IF_ERROR(Expect(j, p, j.is_object(), "string or object"));
    IPTKIT_RETURN_IF_ERROR(CheckKeys(j, p, {"entry", "timeout", "comment", "expires_at"}));
    IPTKIT_ASSIGN_OR_RETURN(e.elem, RequiredString(j, "entry", p));
    IPTKIT_ASSIGN_OR_RETURN(e.timeout, OptionalUint(j, "timeout", p, kMaxSetTimeout));
    IPTKIT_ASSIGN_OR_RETURN(e.comment, OptionalString(j, "comment", p));
    if (const Json* at = Member(j, "expires_at")) {
      IPTKIT_ASSIGN_OR_RETURN(uint64_t ms, GetUnsigned(*at, PointerJoin(p, "expires_at")));
      e.expires_ms = static_cast<int64_t>(ms);
    }
  }
  const std::string where = j.is_string() ? p : PointerJoin(p, "entry");
  if (e.elem.empty() || e.elem.find_first_of(" \t\r\n") != std::string::npos) {
    return Err(where, "expected one set entry without spaces, got '" + e.elem + "'");
  }
  if (e.comment && (e.comment->size() > kMaxSetCommentLength ||
                    std::any_of(e.comment->begin(), e.comment->end(),
                                [](char c) { return c == '"' || static_cast<unsigned char>(c) < 0x20; }))) {
    return Err(PointerJoin(p, "comment"), "expected at most " + std::to_string(kMaxSetCommentLength) +
                                              " bytes without '\"' or control characters");
  }
  return e;
}

Json OwnedSetEntryToJson(const OwnedSetEntry& e) {
  if (!e.timeout && !e.comment && !e.expires_ms) return e.elem;
  Json j = Json::object();
  j["entry"] = e.elem;
  if (e.timeout) j["timeout"] = *e.timeout;
  if (e.comment) j["comment"] = *e.comment;
  if (e.expires_ms) j["expires_at"] = *e.expires_ms;
  return j;
}

Result<OwnedSet> OwnedSetFromJson(const Json& j, const std::string& p) {
  IPTKIT_RETURN_IF_ERROR(CheckKeys(j, p, {"name", "type", "options", "entries"}));
  OwnedSet set;
  IPTKIT_ASSIGN_OR_RETURN(set.name, RequiredString(j, "name", p));
  const bool name_ok = !set.name.empty() && set.name.size() <= kMaxSetNameLength &&
                       std::all_of(set.name.begin(), set.name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
                       });
  if (!name_ok) {
    return Err(PointerJoin(p, "name"), "expected 1.." + std::to_string(kMaxSetNameLength) +
                                           " characters of [A-Za-z0-9._-], got '" + set.name + "'");
  }
  if (set.name.rfind(kTempSetPrefix, 0) == 0) {
    return Err(PointerJoin(p, "name"),
               "names starting with '" + std::string(kTempSetPrefix) + "' are iptkit's temporary sets");
  }
  IPTKIT_ASSIGN_OR_RETURN(set.type, RequiredString(j, "type", p));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(
      j, "options", p, [](const Json& o, const std::string& op) { return SetOptionsFromJson(o, op); }, &set.options));
  if (const Json* entries = Member(j, "entries")) {
    const std::string ep = PointerJoin(p, "entries");
    IPTKIT_RETURN_IF_ERROR(Expect(*entries, ep, entries->is_array(), "array of entries"));
    for (size_t i = 0; i < entries->size(); ++i) {
      IPTKIT_ASSIGN_OR_RETURN(OwnedSetEntry e,
                              OwnedSetEntryFromJson((*entries)[i], PointerJoin(ep, std::to_string(i))));
      set.entries.push_back(std::move(e));
    }
  }
  return set;
}

Json OwnedSetToJson(const OwnedSet& set) {
  Json entries = Json::array();
  for (const OwnedSetEntry& e : set.entries) entries.push_back(OwnedSetEntryToJson(e));
  Json j = Json::object();
  j["name"] = set.name;
  j["type"] = set.type;
  j["options"] = SetOptionsToOrderedJson(set.options);
  j["entries"] = std::move(entries);
  return j;
}

}  // namespace

// ---- Desired state ----

std::string_view PositionName(HookRule::Position p) { return p == HookRule::Position::kFirst ? "first" : "last"; }

std::string_view FamiliesName(DesiredState::Families f) {
  switch (f) {
    case DesiredState::Families::kIPv4:
      return "ipv4";
    case DesiredState::Families::kIPv6:
      return "ipv6";
    case DesiredState::Families::kBoth:
      return "both";
  }
  return "ipv4";
}

// One element of "chains" (an object); its rules are parsed as `family`.
Result<OwnedChain> OwnedChainFromJson(const Json& c, const std::string& p, Family family, const SpecCodec& spec) {
  IPTKIT_RETURN_IF_ERROR(CheckKeys(c, p, {"table", "name", "rules"}));
  OwnedChain chain;
  IPTKIT_RETURN_IF_ERROR(ReadOptional(c, "table", p, GetTable, &chain.table));
  IPTKIT_ASSIGN_OR_RETURN(chain.name, RequiredString(c, "name", p));
  if (Status s = ValidateChainName(chain.name); !s.ok()) return Err(PointerJoin(p, "name"), s.message());
  auto rule = [family, &spec](const Json& r, const std::string& rp) -> Result<Rule> {
    IPTKIT_ASSIGN_OR_RETURN(RuleInput in, RuleFromJson(r, family, rp, spec, RuleKeys::kBare));
    return std::move(in.rule);
  };
  auto rules = [&rule](const Json& r, const std::string& rp) {
    return ReadObjectArray<Rule>(r, rp, "array of rules", rule);
  };
  IPTKIT_ASSIGN_OR_RETURN(chain.rules, ReadRequired(c, "rules", p, rules));
  return chain;
}

// One element of "hooks" (an object): the hook's location members, the rest is the rule (parsed as `family`).
Result<HookRule> HookRuleFromJson(const Json& h, const std::string& p, Family family, const SpecCodec& spec) {
  HookRule hook;
  IPTKIT_RETURN_IF_ERROR(ReadOptional(h, "table", p, GetTable, &hook.table));
  IPTKIT_ASSIGN_OR_RETURN(hook.chain, RequiredString(h, "chain", p));
  if (!IsBuiltinChain(hook.table, hook.chain)) {
    return Err(PointerJoin(p, "chain"), "'" + hook.chain + "' is not a builtin chain of table " + hook.table);
  }
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> pos, OptionalString(h, "position", p));
  if (!pos || *pos == "first") {
    hook.position = HookRule::Position::kFirst;
  } else if (*pos == "last") {
    hook.position = HookRule::Position::kLast;
  } else {
    return Err(PointerJoin(p, "position"), "expected first or last, got '" + *pos + "'");
  }
  Json rule = h;
  for (std::string_view k : {"table", "chain", "position"}) rule.erase(std::string(k));
  IPTKIT_ASSIGN_OR_RETURN(RuleInput in, RuleFromJson(rule, family, p, spec, RuleKeys::kBare));
  hook.rule = std::move(in.rule);
  return hook;
}

Json TableCommitToJson(const TableCommit& t) {
  Json j = Json::object();
  j["family"] = FamilyName(t.family);
  j["table"] = t.table;
  j["restore_text"] = t.restore_text;
  return j;
}

}  // namespace

// ---- Text ----

Result<Json> Parse(std::string_view text) {
  // Duplicate keys: the parser callback sees every key; keep one set of keys per open object and the path to it.
  struct Frame {
    bool array = false;
    long index = -1;  // current element of an array
    std::string key;  // current member of an object
    std::set<std::string> keys;
  };
  std::vector<Frame> frames;
  std::string duplicate;  // pointer of the first repeated key
  auto path = [&frames]() {
    std::string p;
    for (size_t i = 0; i + 1 < frames.size(); ++i) {
      p = PointerJoin(p, frames[i].array ? std::to_string(frames[i].index) : frames[i].key);
    }
    return p;
  };
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        if (!frames.empty() && frames.back().array) ++frames.back().index;
        frames.push_back(Frame{event == E::array_start, -1, {}, {}});
        break;
      case E::object_end:
      case E::array_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case E::key: {
        std::string key = parsed.get<std::string>();
        if (!frames.empty()) {
          if (!frames.back().keys.insert(key).second && duplicate.empty()) {
            duplicate = PointerJoin(path(), key);
          }
          frames.back().key = key;
        }
        break;
      }
      case E::value:
        if (!frames.empty() && frames.back().array) ++frames.back().index;
        break;
    }
    return true;
  };
  try {
    Json j = Json::parse(text.begin(), text.end(), callback);
    if (!duplicate.empty()) return Err(duplicate, "duplicate key");
    return j;
  } catch (const Json::parse_error& e) {
    std::string what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (size_t close = what.find("] "); what.rfind("[json.exception", 0) == 0 && close != std::string::npos) {
      what = what.substr(close + 2);
    }
    return Status::InvalidArgument("malformed JSON at byte " + std::to_string(e.byte) + ": " + what);
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("malformed JSON: ") + e.what());
  }
}

std::string Dump(const Json& value, int indent) {
  return value.dump(indent, ' ', false, Json::error_handler_t::replace);
}

std::string PointerJoin(std::string_view pointer, std::string_view token) {
  std::string out(pointer);
  out += '/';
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// ---- Rules ----

Json RuleToJson(const Rule& rule, const RuleOutput& output, const SpecCodec& spec) {
  const RuleLocation& loc = output.location;
  Json j = Json::object();
  if (loc.family) j["family"] = FamilyName(*loc.family);
  if (!loc.table.empty()) j["table"] = loc.table;
  if (!loc.chain.empty()) j["chain"] = loc.chain;
  if (loc.index > 0) j["index"] = loc.index;
  if (spec.format) j["spec"] = spec.format(rule);
  if (rule.source) j["src"] = FieldToJson(*rule.source, "addr");
  if (rule.destination) j["dst"] = FieldToJson(*rule.destination, "addr");
  if (rule.in_interface) j["in"] = FieldToJson(*rule.in_interface, "name");
  if (rule.out_interface) j["out"] = FieldToJson(*rule.out_interface, "name");
  if (rule.protocol) j["protocol"] = FieldToJson(*rule.protocol, "value");
  if (rule.fragment) j["fragment"] = FieldToJson(*rule.fragment, "");
  if (!rule.matches.empty()) {
    Json arr = Json::array();
    for (const Match& m : rule.matches) {
      Json mj = Json::object();
      mj["name"] = m.name;
      if (!m.options.empty()) mj["options"] = OptionsToJson(m.options);
      arr.push_back(std::move(mj));
    }
    j["matches"] = std::move(arr);
  }
  if (!rule.target.empty()) {
    Json t = Json::object();
    t["name"] = rule.target.name;
    if (rule.target.kind == Target::Kind::kGoto) t["kind"] = "goto";
    if (!rule.target.options.empty()) t["options"] = OptionsToJson(rule.target.options);
    j["target"] = std::move(t);
  }
  if (output.counters) j["counters"] = CountersToJson(rule.counters);
  // Why its spec does not show the kernel's rule faithfully (output only; reads return such rules only on request).
  if (!rule.lossy.empty()) j["lossy"] = rule.lossy;
  if (std::optional<Rule::Tag> tag = rule.OwnerTag()) {
    j["owner"] = tag->owner;
    j["id"] = tag->id;
  }
  return j;
}

Result<RuleInput> RuleFromJson(const Json& j, Family family, const std::string& pointer, const SpecCodec& spec,
                               RuleKeys keys) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, pointer));
  if (keys == RuleKeys::kLocated) {
    IPTKIT_RETURN_IF_ERROR(CheckKeys(j, pointer,
                                     {"family", "table", "chain", "index", "spec", "src", "dst", "in", "out",
                                      "protocol", "fragment", "matches", "target", "counters", "owner", "id"}));
  } else {
    IPTKIT_RETURN_IF_ERROR(
        CheckKeys(j, pointer, {"spec", "src", "dst", "in", "out", "protocol", "fragment", "matches", "target"}));
  }
  RuleInput in;
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "family", pointer, GetFamily, &in.family));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "table", pointer, GetTable, &in.table));
  IPTKIT_ASSIGN_OR_RETURN(in.chain, OptionalString(j, "chain", pointer));
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "index", pointer, GetIndex, &in.index));
  if (in.family && *in.family != family) {
    return Err(PointerJoin(pointer, "family"), "'" + std::string(FamilyName(*in.family)) + "' disagrees with '" +
                                                   std::string(FamilyName(family)) + "' given by the context");
  }
  const Family rule_family = family;

  std::optional<Rule> from_spec;
  if (const Json* s = Member(j, "spec")) {
    std::string sp = PointerJoin(pointer, "spec");
    IPTKIT_ASSIGN_OR_RETURN(std::string text, GetString(*s, sp));
    if (!spec.parse) return Err(sp, "rule specs cannot be parsed here; give the structured fields");
    Result<Rule> parsed = spec.parse(text, rule_family);
    if (!parsed.ok()) return Err(sp, parsed.status().message()).WithDetails(parsed.status().details()).WithField(sp);
    from_spec = std::move(parsed).value();
  }
  if (RuleHasStructuredFields(j)) {
    IPTKIT_ASSIGN_OR_RETURN(Rule structured, StructuredRuleFromJson(j, pointer));
    if (from_spec && !(*from_spec == structured)) {
      std::string detail;
      if (spec.format) {
        detail =
            " (the spec reads '" + spec.format(*from_spec) + "', the fields give '" + spec.format(structured) + "')";
      }
      return Err(PointerJoin(pointer, "spec"), "does not agree with the structured fields" + detail);
    }
    in.rule = std::move(structured);
  } else if (from_spec) {
    in.rule = std::move(*from_spec);
  }

  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "counters", pointer, CountersFromJson, &in.rule.counters));
  const Json* owner = Member(j, "owner");
  const Json* id = Member(j, "id");
  if ((owner == nullptr) != (id == nullptr)) {
    return Err(PointerJoin(pointer, owner ? "id" : "owner"), "\"owner\" and \"id\" go together");
  }
  if (owner != nullptr) {
    Rule::Tag tag;
    IPTKIT_ASSIGN_OR_RETURN(tag.owner, GetString(*owner, PointerJoin(pointer, "owner")));
    IPTKIT_ASSIGN_OR_RETURN(tag.id, GetString(*id, PointerJoin(pointer, "id")));
    IPTKIT_RETURN_IF_ERROR(CheckTagPart(tag.owner, PointerJoin(pointer, "owner"), true));
    IPTKIT_RETURN_IF_ERROR(CheckTagPart(tag.id, PointerJoin(pointer, "id"), false));
    if (std::optional<Rule::Tag> existing = in.rule.OwnerTag()) {
      if (!(*existing == tag)) {
        return Err(PointerJoin(pointer, "owner"),
                   "disagrees with the rule's owner tag 'iptkit:" + existing->owner + ":" + existing->id + "'");
      }
    } else {
      in.rule.SetOwnerTag(tag);
    }
  }
  if (Status s = ValidateRule(in.rule, rule_family); !s.ok()) return Err(pointer, s.message());
  return in;
}

// ---- Rulesets ----

Json RulesetToJson(const Ruleset& ruleset, const SpecCodec& spec) {
  Json tables = Json::array();
  for (const Table& t : ruleset.tables) {
    Json tj = Json::object();
    tj["name"] = t.name;
    if (!t.unrepresentable_reason.empty()) tj["unrepresentable"] = t.unrepresentable_reason;
    Json chains = Json::array();
    for (const Chain& c : t.chains) {
      Json cj = Json::object();
      cj["name"] = c.name;
      if (c.policy) {
        cj["policy"] = *c.policy;
        cj["counters"] = CountersToJson(c.counters);
      }
      Json rules = Json::array();
      for (size_t i = 0; i < c.rules.size(); ++i) {
        RuleOutput out;
        out.location.index = static_cast<int>(i + 1);
        rules.push_back(RuleToJson(c.rules[i], out, spec));
      }
      cj["rules"] = std::move(rules);
      chains.push_back(std::move(cj));
    }
    tj["chains"] = std::move(chains);
    tables.push_back(std::move(tj));
  }
  Json j = Json::object();
  j["family"] = FamilyName(ruleset.family);
  j["tables"] = std::move(tables);
  return j;
}

// ---- Transactions ----

Json OpToJson(const Op& op, const SpecCodec& spec) {
  RuleOutput rule_out;
  rule_out.counters = false;
  Json b = Json::object();
  b["family"] = FamilyName(op.family);
  b["table"] = op.table;
  if (!op.chain.empty()) b["chain"] = op.chain;
  if (TakesIndex(op.kind)) b["index"] = op.index;
  if (TakesRule(op.kind)) b["rule"] = RuleToJson(op.rule, rule_out, spec);
  if (op.expect && (op.kind == Op::Kind::kDeleteAt || op.kind == Op::Kind::kReplace)) {
    b["expect"] = RuleToJson(*op.expect, rule_out, spec);
  }
  if (op.kind == Op::Kind::kDeleteChain && op.cascade) b["cascade"] = true;
  if ((op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert) && op.unique) b["unique"] = true;
  if (op.kind == Op::Kind::kRenameChain) b["new_name"] = op.new_name;
  if (op.kind == Op::Kind::kPolicy) b["policy"] = op.policy;
  Json j = Json::object();
  j[std::string(VerbOf(op.kind))] = std::move(b);
  return j;
}

Result<Op> OpFromJson(const Json& j, const std::string& pointer, const SpecCodec& spec) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, pointer));
  if (j.size() != 1) return Err(pointer, "an op is an object with exactly one verb member");
  // Not `*j.items().begin()`: that binds to a temporary iterator proxy (dangling).
  const auto member = j.begin();
  const std::string verb = member.key();
  const Json& body = member.value();
  if (!IsVerb(verb)) {
    return Err(PointerJoin(pointer, verb),
               "unknown op (expected append, insert, delete, replace, create_chain, delete_chain, rename_chain, "
               "flush, zero or policy)");
  }
  return OpBodyFromJson(verb, body, PointerJoin(pointer, verb), spec);
}

Json TransactionToJson(const Transaction& txn, const SpecCodec& spec) {
  Json ops = Json::array();
  for (const Op& op : txn.ops()) ops.push_back(OpToJson(op, spec));
  Json j = Json::object();
  j["ops"] = std::move(ops);
  return j;
}

// ---- Desired state ----

Json DesiredStateToJson(const DesiredState& d, const SpecCodec& spec) {
  RuleOutput rule_out;
  rule_out.counters = false;
  Json chains = Json::array();
  for (const OwnedChain& c : d.chains) {
    Json cj = Json::object();
    cj["table"] = c.table;
    cj["name"] = c.name;
    Json rules = Json::array();
    for (const Rule& r : c.rules) rules.push_back(RuleToJson(r, rule_out, spec));
    cj["rules"] = std::move(rules);
    chains.push_back(std::move(cj));
  }
  Json hooks = Json::array();
  for (const HookRule& h : d.hooks) {
    Json hj = Json::object();
    hj["table"] = h.table;
    hj["chain"] = h.chain;
    hj["position"] = PositionName(h.position);
    Json rule = RuleToJson(h.rule, rule_out, spec);
    for (auto& [key, value] : rule.items()) hj[key] = value;
    hooks.push_back(std::move(hj));
  }
  Json j = Json::object();
  j["owner"] = d.owner;
  j["family"] = FamiliesName(d.families);
  j["chains"] = std::move(chains);
  j["hooks"] = std::move(hooks);
  if (!d.sets.empty()) {
    Json sets = Json::array();
    for (const OwnedSet& set : d.sets) sets.push_back(OwnedSetToJson(set));
    j["sets"] = std::move(sets);
  }
  return j;
}

Result<DesiredState> DesiredStateFromJson(const Json& j, const SpecCodec& spec) {
  IPTKIT_RETURN_IF_ERROR(ExpectObject(j, ""));
  IPTKIT_RETURN_IF_ERROR(CheckKeys(j, "", {"owner", "family", "chains", "hooks", "sets"}));
  DesiredState d;
  IPTKIT_ASSIGN_OR_RETURN(d.owner, RequiredString(j, "owner", ""));
  IPTKIT_RETURN_IF_ERROR(CheckTagPart(d.owner, "/owner", true));
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> fam, OptionalString(j, "family", ""));
  if (!fam || *fam == "ipv4") {
    d.families = DesiredState::Families::kIPv4;
  } else if (*fam == "ipv6") {
    d.families = DesiredState::Families::kIPv6;
  } else if (*fam == "both") {
    d.families = DesiredState::Families::kBoth;
  } else {
    return Err("/family", "unknown family '" + *fam + "' (expected ipv4, ipv6 or both)");
  }
  // With "both" the rules are parsed as IPv4; applying them to IPv6 (and any per-family translation) is the
  // planner's job, which validates them again for each family.
  Family parse_family = d.families == DesiredState::Families::kIPv6 ? Family::kIPv6 : Family::kIPv4;

  // "chains" is required: an absent list would silently remove every owned chain.
  const Json* chains = Member(j, "chains");
  if (chains == nullptr) return Err("/chains", "required field is missing (an empty list removes all owned chains)");
  auto chain = [parse_family, &spec](const Json& c, const std::string& p) {
    return OwnedChainFromJson(c, p, parse_family, spec);
  };
  IPTKIT_ASSIGN_OR_RETURN(d.chains, ReadObjectArray<OwnedChain>(*chains, "/chains", "array of chains", chain));
  auto hook = [parse_family, &spec](const Json& h, const std::string& p) {
    return HookRuleFromJson(h, p, parse_family, spec);
  };
  auto hooks = [&hook](const Json& h, const std::string& p) {
    return ReadObjectArray<HookRule>(h, p, "array of hook rules", hook);
  };
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "hooks", "", hooks, &d.hooks));
  auto sets = [](const Json& s, const std::string& p) {
    return ReadObjectArray<OwnedSet>(s, p, "array of sets", OwnedSetFromJson);
  };
  IPTKIT_RETURN_IF_ERROR(ReadOptional(j, "sets", "", sets, &d.sets));
  for (size_t i = 0; i < d.sets.size(); ++i) {
    for (size_t k = 0; k < i; ++k) {
      if (d.sets[k].name == d.sets[i].name) {
        return Err("/sets/" + std::to_string(i) + "/name", "set '" + d.sets[i].name + "' is listed twice");
      }
    }
  }
  return d;
}

// ---- Results ----

Json CommitResultToJson(const CommitResult& result) {
  Json tables = Json::array();
  for (const TableCommit& t : result.tables) tables.push_back(TableCommitToJson(t));
  Json j = Json::object();
  j["dry_run"] = result.dry_run;
  j["tables"] = std::move(tables);
  return j;
}

Json ApplyPlanToJson(const ApplyPlan& plan) {
  Json steps = Json::array();
  for (const PlanStep& s : plan.steps) {
    Json sj = Json::object();
    sj["family"] = FamilyName(s.family);
    sj["table"] = s.table;
    sj["description"] = s.description;
    steps.push_back(std::move(sj));
  }
  Json tables = Json::array();
  for (const TableCommit& t : plan.tables) tables.push_back(TableCommitToJson(t));
  Json j = Json::object();
  j["changed"] = plan.changed();
  j["steps"] = std::move(steps);
  j["tables"] = std::move(tables);
  j["warnings"] = plan.warnings;
  return j;
}

Json FirewallInfoToJson(const FirewallInfo& info) {
  Json variants = Json::array();
  for (const VariantTables& v : info.variants) {
    Json tables = Json::array();
    for (const VariantTables::TableRules& t : v.tables) {
      Json tj = Json::object();
      tj["family"] = FamilyName(t.family);
      tj["table"] = t.table;
      tj["rules"] = t.rules;
      tj["representable"] = t.representable;
      tables.push_back(std::move(tj));
    }
    Json vj = Json::object();
    vj["variant"] = v.variant;
    vj["version"] = v.version;
    vj["tables"] = std::move(tables);
    variants.push_back(std::move(vj));
  }
  Json foreign = Json::array();
  for (const ForeignNftChain& c : info.foreign_nft) {
    Json cj = Json::object();
    cj["family"] = c.family;
    cj["table"] = c.table;
    cj["chain"] = c.chain;
    cj["hook"] = c.hook;
    cj["priority"] = c.priority;
    foreign.push_back(std::move(cj));
  }
  Json j = Json::object();
  j["backend"] = info.backend;
  j["backend_reason"] = info.backend_reason;
  j["netns"] = info.netns;
  j["variants"] = std::move(variants);
  j["foreign_nft"] = std::move(foreign);
  j["warnings"] = info.warnings;
  return j;
}

std::string_view JsonTypeName(const Json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "boolean";
  if (j.is_number()) return "number";
  if (j.is_string()) return "string";
  if (j.is_array()) return "array";
  return "object";
}

}  // namespace iptkit::json
