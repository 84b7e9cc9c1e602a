#include "src/rest/decode.h"

#include <cctype>
#include <charconv>
#include <ctime>
#include <utility>

#include "src/base/duration.h"
#include "src/json/json_codec.h"
#include "src/txn/declarative.h"

namespace iptkit::rest {
namespace {

using json::Json;

Status Err(const std::string& pointer, const std::string& message) {
  Status s = Status::InvalidArgument((pointer.empty() ? std::string("(body)") : pointer) + ": " + message);
  return pointer.empty() ? s : s.WithField(pointer);
}

std::string TypeOf(const Json& j) { return std::string(json::JsonTypeName(j)); }

// Parses a non-empty body into an object.
Result<Json> ParseObject(std::string_view body) {
  if (body.empty()) return Err("", "expected a JSON object, got an empty body");
  IPTKIT_ASSIGN_OR_RETURN(Json j, json::Parse(body));
  if (!j.is_object()) return Err("", "expected a JSON object, got " + TypeOf(j));
  return j;
}

Result<std::optional<std::string>> TakeString(Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end()) return std::optional<std::string>();
  if (!it->is_string()) return Err(p + "/" + key, "expected a string, got " + TypeOf(*it));
  std::string v = it->get<std::string>();
  j.erase(key);
  return std::optional<std::string>(std::move(v));
}

// A number of seconds: a JSON integer, or a string such as "90", "10m", "2h", "1d" (src/base/duration.h).
Result<std::optional<int64_t>> TakeSeconds(Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end()) return std::optional<int64_t>();
  const std::string where = p + "/" + key;
  const std::string expected = "expected an integer 1.." + std::to_string(kMaxSeconds) +
                               " or a duration such as \"90\", \"10m\", \"2h\", \"1d\"";
  int64_t v = 0;
  if (it->is_string()) {
    Result<int64_t> parsed = base::ParseSeconds(it->get<std::string>(), kMaxSeconds);
    if (!parsed.ok()) return Err(where, parsed.status().message());
    v = *parsed;
  } else if (it->is_number_integer()) {
    v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(kMaxSeconds) ? kMaxSeconds + 1
                                                                                             : it->get<int64_t>();
    if (v < 1 || v > kMaxSeconds) return Err(where, expected + ", got " + it->dump());
  } else {
    return Err(where, expected + ", got " + TypeOf(*it));
  }
  j.erase(key);
  return std::optional<int64_t>(v);
}

// An owner tag in a rule the caller wrote would forge another owner's rule (or its own, bypassing the managed
// rule bookkeeping): refused wherever it sits among the matches, since iptables-nft prints a comment it keeps as
// rule userdata last, which is where tags are read.
Status RefuseOwnerTag(const Rule& rule, const std::string& pointer) {
  for (const Match& m : rule.matches) {
    if (m.name != "comment") continue;
    for (const Option& o : m.options) {
      for (const std::string& value : o.values) {
        if (!value.starts_with("iptkit:")) continue;
        return Err(pointer, "the rule carries an owner tag ('" + value +
                                "'); give \"owner\" and \"id\" instead (comments starting with 'iptkit:' are "
                                "reserved for owner tags)");
      }
    }
  }
  return Status::Ok();
}

Status CheckNetns(Json& j, const std::string& p, const DecodeOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> netns, TakeString(j, "netns", p));
  if (netns && *netns != options.netns) {
    return Err(p + "/netns", "this daemon serves network namespace '" +
                                 (options.netns.empty() ? std::string("(its own)") : options.netns) + "', not '" +
                                 *netns + "'");
  }
  return Status::Ok();
}

// The rule object at `p` (REST-only members already taken out), checked against the route.
Result<Rule> RuleAt(const Json& j, const Location& where, const std::string& p) {
  IPTKIT_ASSIGN_OR_RETURN(json::RuleInput in, json::RuleFromJson(j, where.family, p, json::DialectSpec()));
  if (in.table && *in.table != where.table) {
    return Err(p + "/table", "'" + *in.table + "' disagrees with the route's table '" + where.table + "'");
  }
  if (in.chain && *in.chain != where.chain) {
    return Err(p + "/chain", "'" + *in.chain + "' disagrees with the route's chain '" + where.chain + "'");
  }
  if (in.index) return Err(p + "/index", "give the position in the URL (?position=N or .../rules/N)");
  in.rule.counters = {};
  return std::move(in.rule);
}

// "expect": a spec string or a rule object.
Result<std::optional<Rule>> TakeExpect(Json& j, const Location& where, const std::string& p) {
  auto it = j.find("expect");
  if (it == j.end()) return std::optional<Rule>();
  Json expect = *it;
  j.erase("expect");
  if (expect.is_string()) expect = Json{{"spec", expect.get<std::string>()}};
  if (!expect.is_object()) return Err(p + "/expect", "expected a spec string or a rule object, got " + TypeOf(expect));
  IPTKIT_ASSIGN_OR_RETURN(Rule rule, RuleAt(expect, where, p + "/expect"));
  return std::optional<Rule>(std::move(rule));
}

// Takes "owner", "id", "ttl" out of a rule object.
struct Owned {
  std::optional<std::string> owner, id;
  std::optional<int64_t> ttl;
};
Result<Owned> TakeOwned(Json& j, const std::string& p, const DecodeOptions& options) {
  Owned o;
  IPTKIT_ASSIGN_OR_RETURN(o.owner, TakeString(j, "owner", p));
  IPTKIT_ASSIGN_OR_RETURN(o.id, TakeString(j, "id", p));
  IPTKIT_ASSIGN_OR_RETURN(o.ttl, TakeSeconds(j, "ttl", p));
  if (o.owner) {
    if (Status s = ValidateOwner(*o.owner); !s.ok()) return Err(p + "/owner", s.message());
  }
  if (o.id) {
    if (!o.owner && !o.ttl) return Err(p + "/id", "an id needs an \"owner\"");
    if (Status s = txn::ValidateRuleId(*o.id); !s.ok()) return Err(p + "/id", s.message());
  }
  if (o.ttl && !o.owner) o.owner = options.default_owner;
  return o;
}

size_t CountRules(const DesiredState& d) {
  size_t n = d.hooks.size();
  for (const OwnedChain& c : d.chains) n += c.rules.size();
  return n;
}

}  // namespace

Result<RuleBody> DecodeRuleBody(std::string_view body, const Location& where, const DecodeOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  IPTKIT_ASSIGN_OR_RETURN(Owned owned, TakeOwned(j, "", options));
  RuleBody out;
  IPTKIT_ASSIGN_OR_RETURN(out.rule, RuleAt(j, where, ""));
  IPTKIT_RETURN_IF_ERROR(RefuseOwnerTag(out.rule, "/spec"));
  out.owner = std::move(owned.owner);
  out.id = std::move(owned.id);
  out.ttl_seconds = owned.ttl;
  return out;
}

Result<ReplaceBody> DecodeReplaceBody(std::string_view body, const Location& where, const DecodeOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  for (const char* key : {"owner", "id", "ttl"}) {
    if (j.contains(key)) {
      return Err(std::string("/") + key, "owned rules are changed through their owner, not replaced by position");
    }
  }
  ReplaceBody out;
  IPTKIT_ASSIGN_OR_RETURN(out.expect, TakeExpect(j, where, ""));
  IPTKIT_ASSIGN_OR_RETURN(out.rule, RuleAt(j, where, ""));
  IPTKIT_RETURN_IF_ERROR(RefuseOwnerTag(out.rule, "/spec"));
  return out;
}

Result<std::optional<Rule>> DecodeExpectBody(std::string_view body, const Location& where,
                                             const DecodeOptions& options) {
  if (body.empty()) return std::optional<Rule>();
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  IPTKIT_ASSIGN_OR_RETURN(std::optional<Rule> expect, TakeExpect(j, where, ""));
  for (auto it = j.begin(); it != j.end(); ++it) return Err("/" + it.key(), "unknown field (expected: expect)");
  return expect;
}

Result<std::optional<std::string>> DecodeChainBody(std::string_view body, const DecodeOptions& options) {
  if (body.empty()) return std::optional<std::string>();
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> policy, TakeString(j, "policy", ""));
  for (auto it = j.begin(); it != j.end(); ++it) return Err("/" + it.key(), "unknown field (expected: policy)");
  if (policy && *policy != "ACCEPT" && *policy != "DROP") {
    return Err("/policy", "expected ACCEPT or DROP, got '" + *policy + "'");
  }
  return policy;
}

Result<TransactionBody> DecodeTransactionBody(std::string_view body, const DecodeOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  TransactionBody out;
  IPTKIT_ASSIGN_OR_RETURN(out.confirm_within_seconds, TakeSeconds(j, "confirm_within", ""));
  if (auto it = j.find("dry_run"); it != j.end()) {
    if (!it->is_boolean()) return Err("/dry_run", "expected a boolean, got " + TypeOf(*it));
    out.dry_run = it->get<bool>();
    j.erase("dry_run");
  }
  auto ops = j.find("ops");
  if (ops == j.end()) return Err("/ops", "required field is missing");
  if (!ops->is_array()) return Err("/ops", "expected an array, got " + TypeOf(*ops));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "ops") return Err("/" + it.key(), "unknown field (expected: ops, confirm_within, dry_run, netns)");
  }
  if (ops->empty()) return Err("/ops", "no ops given");
  if (ops->size() > options.max_ops) {
    return Err("/ops", std::to_string(ops->size()) + " ops exceed this daemon's limit of " +
                           std::to_string(options.max_ops) + " per request");
  }
  for (size_t i = 0; i < ops->size(); ++i) {
    Json op_json = (*ops)[i];
    const std::string p = "/ops/" + std::to_string(i);
    // An owned op carries "owner" (or a "ttl") in its rule; take those out before the codec sees the op.
    Owned owned;
    std::string verb;
    if (op_json.is_object() && op_json.size() == 1) {
      verb = op_json.begin().key();
      Json& op_body = op_json.begin().value();
      if (op_body.is_object()) {
        auto rule = op_body.find("rule");
        if (rule != op_body.end() && rule->is_object()) {
          IPTKIT_ASSIGN_OR_RETURN(owned, TakeOwned(*rule, p + "/" + verb + "/rule", options));
        }
      }
    }
    IPTKIT_ASSIGN_OR_RETURN(Op op, json::OpFromJson(op_json, p, json::DialectSpec()));
    const std::string rp = p + "/" + verb + "/rule";
    // A rule an op adds may not carry an owner tag, as in the single-rule POST (owned and imperative ops alike). A
    // delete of a tagged spec is the writer's to refuse (412, naming the owner).
    if (op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert || op.kind == Op::Kind::kReplace || owned.owner) {
      if (Status s = RefuseOwnerTag(op.rule, rp + "/spec"); !s.ok()) return s.WithOpIndex(static_cast<int>(i));
    }
    if (!owned.owner) {
      out.ops.Add(std::move(op));
      continue;
    }
    Rule rule = op.rule;
    if (owned.id) rule.SetOwnerTag({*owned.owner, *owned.id});
    if (op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert) {
      if (op.kind == Op::Kind::kInsert && op.index != 1) {
        return Err(p + "/insert/index",
                   "an owned rule is inserted at the front of its owner's rules (index 1) or "
                   "appended; index " +
                       std::to_string(op.index) + " has no meaning for it");
      }
      out.adds.push_back({*owned.owner, op.family, op.table, op.chain, std::move(rule),
                          op.kind == Op::Kind::kInsert ? store::Position::kFirst : store::Position::kLast, owned.ttl});
    } else if (op.kind == Op::Kind::kDelete) {
      if (owned.ttl) return Err(rp + "/ttl", "a delete has no ttl");
      out.deletes.push_back({*owned.owner, op.family, op.table, op.chain, std::move(rule)});
    } else {
      return Err(rp + "/owner", "owned rules support append, insert (index 1) and delete, not " + verb);
    }
  }
  return out;
}

Result<DesiredState> DecodeOwnerBody(std::string_view body, const std::string& owner, const DecodeOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseObject(body));
  IPTKIT_RETURN_IF_ERROR(CheckNetns(j, "", options));
  auto it = j.find("owner");
  if (it == j.end()) {
    j["owner"] = owner;
  } else if (!it->is_string() || it->get<std::string>() != owner) {
    return Err("/owner", "must equal the owner named in the URL ('" + owner + "')");
  }
  IPTKIT_ASSIGN_OR_RETURN(DesiredState d, json::DesiredStateFromJson(j, json::DialectSpec()));
  if (CountRules(d) > options.max_ops) {
    return Err("", std::to_string(CountRules(d)) + " rules exceed this daemon's limit of " +
                       std::to_string(options.max_ops) + " per request");
  }
  return d;
}

// ---- Query parameters ----

Result<std::optional<std::string>> QueryValue(const Query& query, const std::string& name) {
  auto [begin, end] = query.equal_range(name);
  if (begin == end) return std::optional<std::string>();
  if (std::next(begin) != end) return Status::InvalidArgument("query parameter '" + name + "' is given twice");
  return std::optional<std::string>(begin->second);
}

Result<bool> QueryBool(const Query& query, const std::string& name) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(query, name));
  if (!v) return false;
  if (*v == "1" || *v == "true" || *v == "yes" || v->empty()) return true;
  if (*v == "0" || *v == "false" || *v == "no") return false;
  return Status::InvalidArgument("query parameter '" + name + "': expected true or false, got '" + *v + "'");
}

Result<std::optional<int64_t>> QueryInt(const Query& query, const std::string& name, int64_t min, int64_t max) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(query, name));
  if (!v) return std::optional<int64_t>();
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || ptr != v->data() + v->size() || n < min || n > max) {
    return Status::InvalidArgument("query parameter '" + name + "': expected an integer " + std::to_string(min) + ".." +
                                   std::to_string(max) + ", got '" + *v + "'");
  }
  return std::optional<int64_t>(n);
}

Result<std::optional<int64_t>> QuerySeconds(const Query& query, const std::string& name, int64_t max) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(query, name));
  if (!v) return std::optional<int64_t>();
  Result<int64_t> seconds = base::ParseSeconds(*v, max);
  if (!seconds.ok()) return Status::InvalidArgument("query parameter '" + name + "': " + seconds.status().message());
  return std::optional<int64_t>(*seconds);
}

Result<std::optional<int64_t>> QueryTime(const Query& query, const std::string& name) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(query, name));
  if (!v) return std::optional<int64_t>();
  auto bad = [&] {
    return Status::InvalidArgument("query parameter '" + name +
                                   "': expected milliseconds since 1970 or an RFC 3339 UTC time such as "
                                   "2026-12-02T04:00:00Z, got '" +
                                   *v + "'");
  };
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec == std::errc() && ptr == v->data() + v->size()) return std::optional<int64_t>(n);
  // YYYY-MM-DDTHH:MM:SS[.mmm]Z
  const std::string& s = *v;
  if (s.size() < 20 || s.back() != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') {
    return bad();
  }
  auto num = [&](size_t pos, size_t len, int& out) {
    out = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int year, month, day, hour, minute, second, millis = 0;
  if (!num(0, 4, year) || !num(5, 2, month) || !num(8, 2, day) || !num(11, 2, hour) || !num(14, 2, minute) ||
      !num(17, 2, second)) {
    return bad();
  }
  if (s.size() == 24 && s[19] == '.') {
    if (!num(20, 3, millis)) return bad();
  } else if (s.size() != 20) {
    return bad();
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return bad();
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const time_t t = timegm(&tm);
  return std::optional<int64_t>(static_cast<int64_t>(t) * 1000 + millis);
}

Status CheckQuery(const Query& query, const std::vector<std::string>& allowed) {
  for (const auto& [name, value] : query) {
    if (name == "token" || name == "access_token" || name == "api_key") {
      return Status::InvalidArgument("query parameter '" + name +
                                     "': tokens go in the Authorization header only (URLs end up in logs)");
    }
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string list;
      for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return Status::InvalidArgument("unknown query parameter '" + name + "'" +
                                     (list.empty() ? " (this route takes none)" : " (expected: " + list + ")"));
    }
  }
  return Status::Ok();
}

std::string FormatTime(int64_t ms) {
  const time_t t = static_cast<time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace iptkit::rest
