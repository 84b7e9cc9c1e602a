// IP sets: /v1/sets[/SET[/flush|rename|swap|entries|test|load|sync]] (docs/rest.md "Sets"). Decodes the request,
// checks the token's set scopes (AuthorizeSetChange), calls the SetService (src/service/sets.h) and encodes.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "iptkit/dialect.h"
#include "src/ipset/set_json.h"
#include "src/json/set_options_json.h"
#include "src/rest/handlers.h"
#include "src/service/sets.h"

namespace iptkit::rest {
namespace {

using nlohmann::json;

HttpResponse Json(const json& j) {
  HttpResponse r;
  r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

// The body as a JSON object; InvalidArgument naming what is wrong.
Result<json> ObjectBody(std::string_view body) {
  if (body.empty()) return Status::InvalidArgument("(body): a JSON object is required");
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument("(body): not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("(body): expected a JSON object");
  return j;
}

// Refuses members of `j` not in `allowed`.
Status OnlyMembers(const json& j, std::initializer_list<std::string_view> allowed) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      return Status::InvalidArgument("/" + it.key() + ": unknown member").WithField("/" + it.key());
    }
  }
  return Status::Ok();
}

Result<std::string> StringMember(const json& j, const std::string& name, bool required) {
  auto it = j.find(name);
  if (it == j.end()) {
    if (required) return Status::InvalidArgument("/" + name + ": required").WithField("/" + name);
    return std::string();
  }
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return Status::InvalidArgument("/" + name + ": expected a non-empty string").WithField("/" + name);
  }
  return it->get<std::string>();
}

Result<std::optional<uint32_t>> UintMember(const json& j, const std::string& pointer, const std::string& name,
                                           uint64_t max) {
  auto it = j.find(name);
  if (it == j.end()) return std::optional<uint32_t>();
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return Status::InvalidArgument(pointer + "/" + name + ": expected an integer 0.." + std::to_string(max))
        .WithField(pointer + "/" + name);
  }
  return std::optional<uint32_t>(static_cast<uint32_t>(it->get<uint64_t>()));
}

Result<bool> BoolMember(const json& j, const std::string& pointer, const std::string& name) {
  auto it = j.find(name);
  if (it == j.end()) return false;
  if (!it->is_boolean()) {
    return Status::InvalidArgument(pointer + "/" + name + ": expected true or false").WithField(pointer + "/" + name);
  }
  return it->get<bool>();
}

// POST /v1/sets: {"name", "type", "options": {...}}.
Result<SetOptions> DecodeOptions(const json& body) {
  auto it = body.find("options");
  if (it == body.end()) return SetOptions{};
  return iptkit::json::SetOptionsFromJson(*it, "/options");
}

// One entry of a JSON bulk body: "ELEM" or {"entry", "timeout", "comment"}.
Result<SetEntrySpec> DecodeEntry(const json& j, const std::string& pointer) {
  SetEntrySpec e;
  if (j.is_string()) {
    e.elem = j.get<std::string>();
  } else if (j.is_object()) {
    for (auto m = j.begin(); m != j.end(); ++m) {
      if (m.key() != "entry" && m.key() != "timeout" && m.key() != "comment") {
        return Status::InvalidArgument(pointer + "/" + m.key() + ": unknown member (entry, timeout, comment)")
            .WithField(pointer + "/" + m.key());
      }
    }
    auto it = j.find("entry");
    if (it == j.end() || !it->is_string()) {
      return Status::InvalidArgument(pointer + "/entry: expected a string").WithField(pointer + "/entry");
    }
    e.elem = it->get<std::string>();
    IPTKIT_ASSIGN_OR_RETURN(e.timeout, UintMember(j, pointer, "timeout", kMaxSetTimeout));
    if (auto c = j.find("comment"); c != j.end()) {
      if (!c->is_string()) {
        return Status::InvalidArgument(pointer + "/comment: expected a string").WithField(pointer + "/comment");
      }
      e.comment = c->get<std::string>();
    }
  } else {
    return Status::InvalidArgument(pointer + ": expected an entry string or {\"entry\", \"timeout\", \"comment\"}")
        .WithField(pointer);
  }
  if (e.elem.empty()) return Status::InvalidArgument(pointer + ": empty entry").WithField(pointer);
  return e;
}

// The body of load and sync: restore-format text (Content-Type text/plain: one entry per line, or ipset's
// `add SET ELEM ...` lines), a JSON array of entries, or {"entries": [...]}.
Result<std::vector<SetEntrySpec>> DecodeEntries(const Call& call, const std::string& set) {
  std::string type;
  if (auto it = call.req.headers.find("content-type"); it != call.req.headers.end()) type = it->second;
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
  if (type == "text/plain") return ParseSetEntries(call.req.body, set);
  json j = json::parse(call.req.body, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument("(body): not valid JSON");
  std::string pointer;
  if (j.is_object()) {
    IPTKIT_RETURN_IF_ERROR(OnlyMembers(j, {"entries"}));
    if (!j.contains("entries")) return Status::InvalidArgument("/entries: required").WithField("/entries");
    j = j["entries"];
    pointer = "/entries";
  }
  if (!j.is_array()) {
    return Status::InvalidArgument((pointer.empty() ? "(body)" : pointer) + ": expected an array of entries");
  }
  std::vector<SetEntrySpec> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    IPTKIT_ASSIGN_OR_RETURN(SetEntrySpec e, DecodeEntry(j[i], pointer + "/" + std::to_string(i)));
    e.line = static_cast<int>(i) + 1;
    out.push_back(std::move(e));
  }
  return out;
}

service::SetCaller Caller(const Call& call) {
  return {call.principal.name, call.request_id, call.req.body.size() <= (64 << 10) ? call.req.body : ""};
}

// Scope check of a change; a refusal is counted as an auth failure.
Status Authorize(const HandlerEnv& env, const Call& call, SetTouch touch) {
  Status s = AuthorizeSetChange(call.principal, touch);
  if (!s.ok()) {
    env.auth_failures->Inc({"scope"});
    return s;
  }
  // An owner's document owns the set: only the document changes it (drift repair would undo anything else).
  for (const std::string& name : touch.sets) {
    std::optional<std::string> owner = env.service->SetOwner(name);
    if (!owner) continue;
    return Status::FailedPrecondition("set '" + name + "' belongs to owner '" + *owner +
                                      "''s document; change it with PUT /v1/owners/" + *owner)
        .WithReason("owned_set")
        .WithOwner(*owner)
        .WithToken(name);
  }
  return s;
}

HttpResponse Fail(const Call& call, const Status& s) { return StatusResponse(call, s); }

// Whether `s` is printable ASCII without '"' and '\\': written into JSON as it is, no escaping.
bool PlainJson(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

// The answer to an entry add, {"dry_run", "entry", "set", "timeout"} as Json writes it, without building a JSON
// object when the set name and entry are plain (every add of a busy daemon).
HttpResponse AddAnswer(std::string_view set, std::string_view entry, bool dry_run, std::optional<uint32_t> timeout) {
  if (!PlainJson(set) || !PlainJson(entry)) {
    json out = {{"set", set}, {"entry", entry}, {"dry_run", dry_run}};
    if (timeout) out["timeout"] = *timeout;
    return Json(out);
  }
  HttpResponse r;
  r.body.reserve(64 + set.size() + entry.size());
  r.body.append(dry_run ? R"({"dry_run":true,"entry":")" : R"({"dry_run":false,"entry":")").append(entry);
  r.body.append(R"(","set":")").append(set).append("\"");
  if (timeout) r.body.append(R"(,"timeout":)").append(std::to_string(*timeout));
  r.body.push_back('}');
  return r;
}

// ---- Routes ----

// GET /v1/sets (?entries=1 adds the entries), POST /v1/sets (create).
HttpResponse SetsCollection(const HandlerEnv& env, Call& call) {
  if (call.method == "GET") {
    if (Status s = CheckQuery(env, call, {"entries"}); !s.ok()) return Fail(call, s);
    Result<bool> entries = QueryBool(call.req.query, "entries");
    if (!entries.ok()) return Fail(call, entries.status());
    Result<std::vector<SetInfo>> list = env.sets->List(*entries);
    if (!list.ok()) return Fail(call, list.status());
    json arr = json::array();
    for (const SetInfo& s : *list) {
      if (s.name.rfind(kTempSetPrefix, 0) == 0) continue;  // a Load or Sync in progress
      arr.push_back(SetInfoToJson(s, *entries));
    }
    return Json({{"sets", arr}});
  }
  if (Status s = CheckQuery(env, call, {"dry_run"}); !s.ok()) return Fail(call, s);
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return Fail(call, dry.status());
  Result<json> body = ObjectBody(call.req.body);
  if (!body.ok()) return Fail(call, body.status());
  if (Status s = OnlyMembers(*body, {"name", "type", "options"}); !s.ok()) return Fail(call, s);
  Result<std::string> name = StringMember(*body, "name", true);
  if (!name.ok()) return Fail(call, name.status());
  Result<std::string> type = StringMember(*body, "type", true);
  if (!type.ok()) return Fail(call, type.status());
  Result<SetOptions> options = DecodeOptions(*body);
  if (!options.ok()) return Fail(call, options.status());
  if (Status s = Authorize(env, call, {SetTouch::Kind::kOther, {*name}, {}, "create"}); !s.ok()) return Fail(call, s);
  if (Status s = env.sets->Create(Caller(call), *name, *type, *options, *dry); !s.ok()) {
    // The library names the type or the option (details.field "type", "timeout"): as JSON pointers of the body.
    if (const std::optional<std::string>& f = s.details().field; f && !f->empty() && (*f)[0] != '/') {
      StatusDetails details = s.details();
      details.field = *f == "type" || *f == "name" ? "/" + *f : "/options/" + *f;
      s = s.WithDetails(std::move(details));
    }
    return Fail(call, s);
  }
  if (*dry) return Json({{"dry_run", true}, {"set", *name}, {"type", *type}});
  Result<SetInfo> info = env.sets->Get(*name, false);
  if (!info.ok()) return Fail(call, info.status());
  HttpResponse r = Json(SetInfoToJson(*info, false));
  r.status = 201;
  return r;
}

// GET /v1/sets/SET (?entries=0 leaves the entries out), DELETE /v1/sets/SET (?cascade=1).
HttpResponse OneSet(const HandlerEnv& env, Call& call) {
  const std::string name = call.Param("set");
  if (call.method == "GET") {
    if (Status s = CheckQuery(env, call, {"entries"}); !s.ok()) return Fail(call, s);
    Result<std::optional<std::string>> entries = QueryValue(call.req.query, "entries");
    if (!entries.ok()) return Fail(call, entries.status());
    Result<bool> with = *entries ? QueryBool(call.req.query, "entries") : Result<bool>(true);
    if (!with.ok()) return Fail(call, with.status());
    Result<SetInfo> info = env.sets->Get(name, *with);
    if (!info.ok()) return Fail(call, info.status());
    return Json(SetInfoToJson(*info, *with));
  }
  if (Status s = CheckQuery(env, call, {"cascade", "dry_run"}); !s.ok()) return Fail(call, s);
  if (Status s = NoBody(call); !s.ok()) return Fail(call, s);
  Result<bool> cascade = QueryBool(call.req.query, "cascade");
  if (!cascade.ok()) return Fail(call, cascade.status());
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return Fail(call, dry.status());
  if (Status s = Authorize(env, call, {SetTouch::Kind::kOther, {name}, {}, "destroy"}); !s.ok()) return Fail(call, s);
  auto submit = [&](service::ChangeRequest change) {
    change.request_json = json({{"destroy_set", name}, {"cascade", true}}).dump();
    service::ChangeRequest req = std::move(change);
    Call& c = call;
    return SubmitChange(env, c, std::move(req));
  };
  Result<service::SetDestroyReport> report = env.sets->Destroy(Caller(call), name, *cascade, *dry, submit);
  if (!report.ok()) return Fail(call, report.status());
  json rules = json::array();
  for (const service::SetRuleRef& r : report->rules_deleted) {
    rules.push_back({{"family", std::string(FamilyName(r.family))},
                     {"table", r.table},
                     {"chain", r.chain},
                     {"spec", FormatRuleSpec(r.rule)}});
  }
  return Json({{"set", name}, {"destroyed", !*dry}, {"dry_run", *dry}, {"rules_deleted", rules}});
}

// POST /v1/sets/SET/flush | rename {"to"} | swap {"with"}.
HttpResponse SetAction(const HandlerEnv& env, Call& call, const std::string& action) {
  const std::string name = call.Param("set");
  if (Status s = CheckQuery(env, call, {"dry_run"}); !s.ok()) return Fail(call, s);
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return Fail(call, dry.status());
  if (action == "flush") {
    if (Status s = NoBody(call); !s.ok()) return Fail(call, s);
    if (Status s = Authorize(env, call, {SetTouch::Kind::kOther, {name}, {}, "flush"}); !s.ok()) return Fail(call, s);
    Result<size_t> removed = env.sets->Flush(Caller(call), name, *dry);
    if (!removed.ok()) return Fail(call, removed.status());
    return Json({{"set", name}, {"dry_run", *dry}, {"entries_removed", *removed}});
  }
  const std::string member = action == "rename" ? "to" : "with";
  Result<json> body = ObjectBody(call.req.body);
  if (!body.ok()) return Fail(call, body.status());
  if (Status s = OnlyMembers(*body, {member}); !s.ok()) return Fail(call, s);
  Result<std::string> other = StringMember(*body, member, true);
  if (!other.ok()) return Fail(call, other.status());
  if (Status s = Authorize(env, call, {SetTouch::Kind::kOther, {name, *other}, {}, action}); !s.ok()) {
    return Fail(call, s);
  }
  Status s = action == "rename" ? env.sets->Rename(Caller(call), name, *other, *dry)
                                : env.sets->Swap(Caller(call), name, *other, *dry);
  if (!s.ok()) return Fail(call, s);
  return Json({{"set", name}, {member, *other}, {"dry_run", *dry}});
}

// POST (add) and DELETE (delete) /v1/sets/SET/entries with {"entry", "timeout", "comment", "no_refresh"}.
HttpResponse Entries(const HandlerEnv& env, Call& call) {
  const std::string name = call.Param("set");
  const bool add = call.method == "POST";
  if (Status s = CheckQuery(env, call, {"dry_run"}); !s.ok()) return Fail(call, s);
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return Fail(call, dry.status());
  Result<json> body = ObjectBody(call.req.body);
  if (!body.ok()) return Fail(call, body.status());
  Status members =
      add ? OnlyMembers(*body, {"entry", "timeout", "comment", "no_refresh"}) : OnlyMembers(*body, {"entry"});
  if (!members.ok()) return Fail(call, members);
  Result<std::string> entry = StringMember(*body, "entry", true);
  if (!entry.ok()) return Fail(call, entry.status());
  if (!add) {
    // A --ttl-max token may delete an entry that has a timeout: look it up (as the set lists it).
    std::optional<int64_t> left;
    if (call.principal.scopes.max_ttl_seconds && call.principal.scopes.write) {
      Result<SetInfo> set = env.sets->Get(name, true);
      if (!set.ok()) return Fail(call, set.status());
      for (const SetEntry& e : set->entries) {
        if (e.elem == *entry && e.timeout) left = *e.timeout;
      }
    }
    if (Status s = Authorize(env, call, {SetTouch::Kind::kEntryDelete, {name}, left, "an entry delete"}); !s.ok()) {
      return Fail(call, s);
    }
    if (Status s = env.sets->Delete(Caller(call), name, *entry, *dry); !s.ok()) return Fail(call, s);
    return Json({{"set", name}, {"entry", *entry}, {"dry_run", *dry}, {"deleted", !*dry}});
  }
  SetAddOptions options;
  Result<std::optional<uint32_t>> timeout = UintMember(*body, "", "timeout", kMaxSetTimeout);
  if (!timeout.ok()) return Fail(call, timeout.status());
  options.timeout = *timeout;
  if (auto c = body->find("comment"); c != body->end()) {
    if (!c->is_string())
      return Fail(call, Status::InvalidArgument("/comment: expected a string").WithField("/comment"));
    options.comment = c->get<std::string>();
  }
  Result<bool> no_refresh = BoolMember(*body, "", "no_refresh");
  if (!no_refresh.ok()) return Fail(call, no_refresh.status());
  options.no_refresh = *no_refresh;
  std::optional<int64_t> ttl;
  if (options.timeout) ttl = *options.timeout;
  if (Status s = Authorize(env, call, {SetTouch::Kind::kEntryAdd, {name}, ttl, "an entry add"}); !s.ok()) {
    return Fail(call, s);
  }
  if (Status s = env.sets->Add(Caller(call), name, *entry, options, *dry); !s.ok()) return Fail(call, s);
  return AddAnswer(name, *entry, *dry, options.timeout);
}

// GET /v1/sets/SET/test?entry=E.
HttpResponse TestEntry(const HandlerEnv& env, Call& call) {
  const std::string name = call.Param("set");
  if (Status s = CheckQuery(env, call, {"entry"}); !s.ok()) return Fail(call, s);
  Result<std::optional<std::string>> entry = QueryValue(call.req.query, "entry");
  if (!entry.ok()) return Fail(call, entry.status());
  if (!*entry || (*entry)->empty()) {
    return Fail(call, Status::InvalidArgument("query parameter 'entry' is required"));
  }
  Result<bool> in = env.sets->Test(name, **entry);
  if (!in.ok()) return Fail(call, in.status());
  return Json({{"set", name}, {"entry", **entry}, {"present", *in}});
}

// POST /v1/sets/SET/load (?grow=1) and /sync (?mode=swap|minimal).
HttpResponse Bulk(const HandlerEnv& env, Call& call, bool load) {
  const std::string name = call.Param("set");
  if (Status s = CheckQuery(
          env, call, load ? std::vector<std::string>{"grow", "dry_run"} : std::vector<std::string>{"mode", "dry_run"});
      !s.ok()) {
    return Fail(call, s);
  }
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return Fail(call, dry.status());
  Result<std::vector<SetEntrySpec>> entries = DecodeEntries(call, name);
  if (!entries.ok()) return Fail(call, entries.status());
  if (Status s = Authorize(env, call, {SetTouch::Kind::kOther, {name}, {}, load ? "a load" : "a sync"}); !s.ok()) {
    return Fail(call, s);
  }
  Result<SetChangeReport> report = Status::Internal("not run");
  if (load) {
    Result<bool> grow = QueryBool(call.req.query, "grow");
    if (!grow.ok()) return Fail(call, grow.status());
    report = env.sets->Load(Caller(call), name, *entries, {.grow = *grow, .dry_run = *dry, .progress = {}});
  } else {
    Result<std::optional<std::string>> mode = QueryValue(call.req.query, "mode");
    if (!mode.ok()) return Fail(call, mode.status());
    if (*mode && **mode != "swap" && **mode != "minimal") {
      return Fail(call,
                  Status::InvalidArgument("query parameter 'mode': expected swap or minimal, got '" + **mode + "'"));
    }
    const bool minimal = *mode && **mode == "minimal";
    report = env.sets->Sync(Caller(call), name, *entries, {.minimal_diff = minimal, .dry_run = *dry, .progress = {}});
  }
  if (!report.ok()) return Fail(call, report.status());
  return Json(
      {{"set", name}, {"dry_run", *dry}, {"entries", entries->size()}, {"report", SetChangeReportToJson(*report)}});
}

}  // namespace

HttpResponse SetsHandler(const HandlerEnv& env, Call& call) {
  if (env.sets == nullptr) {
    return Fail(call, Status::Unavailable("IP sets are not served by a daemon on the fake backend (they are always "
                                          "the kernel's)"));
  }
  const std::string& path = call.req.path;
  if (!call.params.count("set")) return SetsCollection(env, call);
  const std::string tail = path.substr(path.rfind('/') + 1);
  const size_t segments = std::count(path.begin(), path.end(), '/');
  if (segments == 3) return OneSet(env, call);  // /v1/sets/SET
  if (tail == "entries") return Entries(env, call);
  if (tail == "test") return TestEntry(env, call);
  if (tail == "load") return Bulk(env, call, true);
  if (tail == "sync") return Bulk(env, call, false);
  return SetAction(env, call, tail);  // flush, rename, swap
}

}  // namespace iptkit::rest
