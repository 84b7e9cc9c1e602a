#include "tools/iptkit/cli_daemon.h"

#include <cctype>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "tools/iptkit/cli_format.h"
#include "tools/iptkit/cli_support.h"
#include "tools/iptkit/unix_http.h"

namespace iptkit::cli {
namespace {

using Json = nlohmann::json;

// The REST error codes of docs/rest.md back to library codes.
StatusCode CodeFromRest(const std::string& code) {
  static const std::map<std::string, StatusCode, std::less<>> kCodes = {
      {"invalid_argument", StatusCode::kInvalidArgument},
      {"bad_request", StatusCode::kInvalidArgument},
      {"payload_too_large", StatusCode::kInvalidArgument},
      {"unsupported_media_type", StatusCode::kInvalidArgument},
      {"not_found", StatusCode::kNotFound},
      {"already_exists", StatusCode::kAlreadyExists},
      {"failed_precondition", StatusCode::kFailedPrecondition},
      {"aborted", StatusCode::kAborted},
      {"unavailable", StatusCode::kUnavailable},
      {"rate_limited", StatusCode::kUnavailable},
      {"permission_denied", StatusCode::kPermissionDenied},
      {"unauthenticated", StatusCode::kPermissionDenied},
  };
  auto it = kCodes.find(code);
  return it == kCodes.end() ? StatusCode::kInternal : it->second;
}

Json ParseOrNull(const std::string& text) { return Json::parse(text, nullptr, /*allow_exceptions=*/false); }

// "%XX" for every byte outside the unreserved characters of RFC 3986.
std::string UrlEncode(std::string_view text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

class DaemonClient {
 public:
  // `netns`: the namespace the user named (--netns); sent with every request, so that an iptkitd serving another
  // namespace refuses instead of answering about its own.
  DaemonClient(std::string socket, std::chrono::milliseconds wait, std::string netns)
      : socket_(std::move(socket)),
        netns_(std::move(netns)),
        // The daemon waits up to its own lock bound before it answers; allow for that and a queue of other requests.
        client_(socket_, std::chrono::duration_cast<std::chrono::milliseconds>(wait) + std::chrono::seconds(60)) {}

  Result<Json> Send(const std::string& method, const std::string& path, const std::optional<Json>& body = {}) {
    return SendRaw(method, path, body ? body->dump() : std::string());
  }
  // A body of any content type; a 2xx answer's JSON, else the daemon's error.
  Result<Json> SendRaw(const std::string& method, const std::string& path, const std::string& body,
                       std::string_view content_type = "application/json") {
    std::string target = path;
    if (!netns_.empty()) target += (path.find('?') == std::string::npos ? "?netns=" : "&netns=") + UrlEncode(netns_);
    Result<HttpAnswer> answer = client_.Send(method, target, body, size_t{1} << 30, content_type);
    if (!answer.ok()) {
      return Status::Unavailable("cannot reach iptkitd at " + socket_ + ": " + answer.status().message() +
                                 " (is iptkitd running with `socket = " + socket_ + "` in its configuration?)");
    }
    if (answer->status < 200 || answer->status > 299) return StatusFromDaemonError(answer->status, answer->body);
    Json j = ParseOrNull(answer->body);
    if (j.is_discarded()) return Status::Internal("iptkitd answered " + method + " " + path + " with invalid JSON");
    return j;
  }

 private:
  std::string socket_;
  std::string netns_;
  UnixHttpClient client_;
};

std::string FamilyPath(Family family) { return "/v1/" + std::string(FamilyName(family)); }

// Reads a string member, "" when absent or not a string.
std::string Str(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t U64(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// GET /v1/FAMILY as a Ruleset (rules parsed from their canonical spec), with the TTLs of managed rules as notes.
Result<Ruleset> RulesetFromListing(const Json& doc, Family family, RowNotes* notes) {
  Ruleset rs;
  rs.family = family;
  if (!doc.contains("tables") || !doc["tables"].is_array()) return Status::Internal("iptkitd listing has no tables");
  for (const Json& tj : doc["tables"]) {
    Table table;
    table.name = Str(tj, "name");
    if (tj.contains("unrepresentable") && tj["unrepresentable"].is_string()) {
      table.unrepresentable_reason = tj["unrepresentable"].get<std::string>();
    }
    for (const Json& cj : tj.value("chains", Json::array())) {
      Chain chain;
      chain.name = Str(cj, "name");
      if (cj.contains("policy") && cj["policy"].is_string()) chain.policy = cj["policy"].get<std::string>();
      if (cj.contains("counters")) chain.counters = {U64(cj["counters"], "packets"), U64(cj["counters"], "bytes")};
      int index = 0;
      for (const Json& rj : cj.value("rules", Json::array())) {
        ++index;
        Result<Rule> rule = ParseRuleSpec(Str(rj, "spec"), family);
        if (!rule.ok()) {
          return Status::Internal("iptkitd listed a rule iptkit cannot parse (" + table.name + " " + chain.name + " " +
                                  std::to_string(index) + "): " + rule.status().message());
        }
        if (rj.contains("counters")) rule->counters = {U64(rj["counters"], "packets"), U64(rj["counters"], "bytes")};
        rule->lossy = Str(rj, "lossy");
        if (notes != nullptr && rj.contains("ttl_remaining") && rj["ttl_remaining"].is_number()) {
          (*notes)[{table.name, chain.name, index}] =
              "[ttl " + std::to_string(rj["ttl_remaining"].get<int64_t>()) + "s]";
        }
        chain.rules.push_back(*std::move(rule));
      }
      table.chains.push_back(std::move(chain));
    }
    rs.tables.push_back(std::move(table));
  }
  return rs;
}

Result<FirewallInfo> InfoFromJson(const Json& j) {
  FirewallInfo info;
  info.backend = Str(j, "backend");
  info.netns = Str(j, "netns");
  for (const Json& v : j.value("variants", Json::array())) {
    VariantTables variant;
    variant.variant = Str(v, "variant");
    variant.version = Str(v, "version");
    for (const Json& t : v.value("tables", Json::array())) {
      VariantTables::TableRules tr;
      tr.family = Str(t, "family") == "ipv6" ? Family::kIPv6 : Family::kIPv4;
      tr.table = Str(t, "table");
      tr.rules = U64(t, "rules");
      tr.representable = t.value("representable", true);
      variant.tables.push_back(std::move(tr));
    }
    info.variants.push_back(std::move(variant));
  }
  for (const Json& c : j.value("foreign_nft", Json::array())) {
    info.foreign_nft.push_back(
        {Str(c, "family"), Str(c, "table"), Str(c, "chain"), Str(c, "hook"), c.value("priority", 0)});
  }
  for (const Json& w : j.value("warnings", Json::array())) {
    if (w.is_string()) info.warnings.push_back(w.get<std::string>());
  }
  return info;
}

// The restore text of a change result's tables ("# ipv4" / "# ipv6" lines when both families are in it).
std::string ResultText(const Json& result) {
  std::vector<TableCommit> tables;
  for (const Json& t : result.value("tables", Json::array())) {
    tables.push_back(
        {Str(t, "family") == "ipv6" ? Family::kIPv6 : Family::kIPv4, Str(t, "table"), Str(t, "restore_text")});
  }
  return FormatCommitText(tables);
}

void PrintChange(const Invocation& inv, const Json& result, std::ostream& out) {
  if (inv.global.json) {
    out << result.dump(2) << "\n";
    return;
  }
  if (inv.dry_run || inv.global.verbosity > 0) {
    out << ResultText(result);
    if (inv.unique && result.value("tables", Json::array()).empty()) {
      out << "an equal rule is in the chain already: nothing to add\n";
    }
  }
  if (inv.global.verbosity > 0) {
    for (const Json& m : result.value("managed", Json::array())) {
      std::string ttl = m.contains("ttl_remaining") && m["ttl_remaining"].is_number()
                            ? "ttl " + std::to_string(m["ttl_remaining"].get<int64_t>()) + " s"
                            : "permanent";
      out << "managed: owner " << Str(m, "owner") << ", id " << Str(m, "id") << ", " << Str(m, "table") << " "
          << Str(m, "chain") << " " << Str(m, "position") << ", " << ttl << ": " << Str(m, "spec") << "\n";
    }
  }
  if (!inv.global.quiet) {
    for (const Json& w : result.value("warnings", Json::array())) {
      if (w.is_string()) out << "warning: " << w.get<std::string>() << "\n";
    }
  }
}

// One op of POST /v1/transactions for a rule command.
Result<Json> RuleOp(const Invocation& inv) {
  const std::string table = inv.TableOrFilter();
  IPTKIT_RETURN_IF_ERROR(CheckTable(table));
  IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
  Json body = {{"family", FamilyName(inv.global.family)}, {"table", table}, {"chain", inv.chain}};
  const bool owned = !inv.owner.empty() || inv.ttl_seconds.has_value();
  auto rule_json = [&](const Rule& rule) {
    Json r = {{"spec", FormatRuleSpec(rule)}};
    if (!inv.owner.empty()) r["owner"] = inv.owner;
    if (inv.ttl_seconds) r["ttl"] = *inv.ttl_seconds;
    return r;
  };
  std::string verb;
  switch (inv.kind) {
    case CommandKind::kAppend:
    case CommandKind::kInsert:
    case CommandKind::kDelete:
    case CommandKind::kCheck: {
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv, /*expect=*/false));
      body["rule"] = rule_json(rule);
      verb = inv.kind == CommandKind::kAppend ? "append" : inv.kind == CommandKind::kInsert ? "insert" : "delete";
      if (inv.kind == CommandKind::kInsert) {
        if (owned && inv.index != 1) {
          return Status::InvalidArgument(
              "an owned rule goes first or last among its owner's rules: insert --owner "
              "takes N = 1 (first); use append for last");
        }
        body["index"] = inv.index;
      }
      // Owned adds are idempotent in iptkitd already ("the same add" refreshes the rule).
      if (inv.unique && !owned) body["unique"] = true;
      break;
    }
    case CommandKind::kDeleteAt:
    case CommandKind::kReplace: {
      verb = inv.kind == CommandKind::kReplace ? "replace" : "delete";
      body["index"] = inv.index;
      if (inv.kind == CommandKind::kReplace) {
        IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv, /*expect=*/false));
        body["rule"] = {{"spec", FormatRuleSpec(rule)}};
      }
      if (inv.expect) {
        IPTKIT_ASSIGN_OR_RETURN(Rule expect, ParseSpec(inv, /*expect=*/true));
        body["expect"] = {{"spec", FormatRuleSpec(expect)}};
      }
      break;
    }
    default:
      return Status::Internal("not a rule command");
  }
  return Json{{verb, std::move(body)}};
}

Result<Json> ChainOp(const Invocation& inv) {
  const std::string table = inv.TableOrFilter();
  IPTKIT_RETURN_IF_ERROR(CheckTable(table));
  Json body = {{"family", FamilyName(inv.global.family)}, {"table", table}};
  if (!inv.chain.empty()) body["chain"] = inv.chain;
  switch (inv.kind) {
    case CommandKind::kChainCreate:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      return Json{{"create_chain", body}};
    case CommandKind::kChainDelete:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      if (inv.cascade) body["cascade"] = true;
      return Json{{"delete_chain", body}};
    case CommandKind::kChainRename:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.arg).WithContext("new name"));
      body["new_name"] = inv.arg;
      return Json{{"rename_chain", body}};
    case CommandKind::kChainFlush:
    case CommandKind::kChainZero:
      if (!inv.chain.empty()) IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      return Json{{inv.kind == CommandKind::kChainFlush ? "flush" : "zero", body}};
    case CommandKind::kChainPolicy:
      IPTKIT_RETURN_IF_ERROR(CheckToken("chain", inv.chain));
      body["policy"] = inv.arg;
      return Json{{"policy", body}};
    default:
      return Status::Internal("not a chain command");
  }
}

// A delete by spec without owner found nothing: ask iptkitd for the canonical form of the spec (a dry-run append
// shows it) and look for an owned rule that equals it but for its owner tag.
Status ExplainMissedDelete(DaemonClient& client, const Invocation& inv, const Status& missed) {
  if (missed.code() != StatusCode::kNotFound || !inv.owner.empty()) return missed;
  if (missed.details().owner) {
    // iptkitd found the owned twin itself (details: owner, rule number); its tag names the id.
    if (!missed.details().rule) return missed;
    Result<Json> listing = client.Send("GET", FamilyPath(inv.global.family) + "?allow_lossy=true");
    if (!listing.ok()) return missed;
    Result<Ruleset> rs = RulesetFromListing(*listing, inv.global.family, nullptr);
    if (!rs.ok()) return missed;
    const Table* table = rs->FindTable(inv.TableOrFilter());
    const Chain* chain = table == nullptr ? nullptr : table->FindChain(inv.chain);
    const int index = *missed.details().rule;
    if (chain == nullptr || index < 1 || static_cast<size_t>(index) > chain->rules.size()) return missed;
    std::optional<Rule::Tag> tag = chain->rules[static_cast<size_t>(index) - 1].OwnerTag();
    if (!tag || tag->owner != *missed.details().owner) return missed;
    return OwnedRuleError(inv.TableOrFilter(), inv.chain, index, *tag, /*through_daemon=*/true);
  }
  Result<Json> op = RuleOp(inv);
  if (!op.ok()) return missed;
  Json append = (*op)["delete"];
  Result<Json> dry =
      client.Send("POST", "/v1/transactions", Json{{"ops", Json::array({{{"append", append}}})}, {"dry_run", true}});
  if (!dry.ok()) return missed;
  // "*filter\n-A CHAIN <canonical spec>\nCOMMIT\n", or "-I CHAIN N <canonical spec>" where iptkitd places an
  // unowned append above owned rules that go last (docs/daemon.md "Where unowned rules go").
  const std::string text = ResultText(*dry);
  size_t at = text.find("\n-A " + inv.chain + " ");
  size_t spec_at = at == std::string::npos ? at : at + 5 + inv.chain.size();
  if (at == std::string::npos && (at = text.find("\n-I " + inv.chain + " ")) != std::string::npos) {
    spec_at = text.find(' ', at + 5 + inv.chain.size());  // after the position
    if (spec_at != std::string::npos) ++spec_at;
  }
  if (spec_at == std::string::npos) return missed;
  size_t end = text.find('\n', spec_at);
  if (end == std::string::npos) return missed;
  Result<Rule> canonical = ParseRuleSpec(text.substr(spec_at, end - spec_at), inv.global.family);
  Result<Json> listing = client.Send("GET", FamilyPath(inv.global.family) + "?allow_lossy=true");
  if (!canonical.ok() || !listing.ok()) return missed;
  Result<Ruleset> rs = RulesetFromListing(*listing, inv.global.family, nullptr);
  if (!rs.ok()) return missed;
  const Table* table = rs->FindTable(inv.TableOrFilter());
  const Chain* chain = table == nullptr ? nullptr : table->FindChain(inv.chain);
  if (chain == nullptr) return missed;
  auto [index, tag] = FindOwnedTwin(*chain, *canonical);
  if (!tag) return missed;
  return OwnedRuleError(inv.TableOrFilter(), inv.chain, index, *tag, /*through_daemon=*/true);
}

Result<Json> ParseDocument(const std::string& text, const std::string& file) {
  Json doc = ParseOrNull(text);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::InvalidArgument(file + ": not a JSON object");
  }
  return doc;
}

}  // namespace

Result<nlohmann::json> DaemonRequest(const GlobalOptions& global, const std::string& method, const std::string& path,
                                     const std::string& body, std::string_view content_type) {
  DaemonClient client(global.daemon.value_or(std::string(kDefaultDaemonSocket)), global.wait, global.netns);
  return client.SendRaw(method, path, body, content_type);
}

std::string UrlQueryValue(std::string_view text) { return UrlEncode(text); }

Status StatusFromDaemonError(int http_status, const std::string& body) {
  Json j = ParseOrNull(body);
  if (j.is_discarded() || !j.is_object() || !j.contains("error") || !j["error"].is_object()) {
    return Status::Internal("iptkitd answered HTTP " + std::to_string(http_status) + ": " + body.substr(0, 200));
  }
  const Json& e = j["error"];
  Status s(CodeFromRest(Str(e, "code")), "iptkitd: " + Str(e, "message"));
  if (e.contains("details") && e["details"].is_object()) {
    const Json& d = e["details"];
    if (d.contains("token") && d["token"].is_string()) {
      std::optional<int> column;
      if (d.contains("column") && d["column"].is_number_integer()) column = d["column"].get<int>();
      s = s.WithToken(d["token"].get<std::string>(), column);
    }
    if (d.contains("field") && d["field"].is_string()) s = s.WithField(d["field"].get<std::string>());
    if (d.contains("owner") && d["owner"].is_string()) s = s.WithOwner(d["owner"].get<std::string>());
    if (d.contains("table") && d["table"].is_string() && d.contains("chain") && d["chain"].is_string()) {
      std::optional<int> rule;
      if (d.contains("rule") && d["rule"].is_number_integer()) rule = d["rule"].get<int>();
      s = s.WithLocation(Str(d, "family"), d["table"].get<std::string>(), d["chain"].get<std::string>(), rule);
    }
    if (d.contains("reason") && d["reason"].is_string()) s = s.WithReason(d["reason"].get<std::string>());
    if (d.contains("line") && d["line"].is_number_integer()) s = s.WithLine(d["line"].get<int>());
  }
  return s;
}

Result<int> ExecuteViaDaemon(const Invocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                             std::string* input) {
  DaemonClient client(*inv.global.daemon, inv.global.wait, inv.global.netns);
  const Family family = inv.global.family;
  auto transaction = [&](Json op) -> Result<Json> {
    Json body = {{"ops", Json::array({std::move(op)})}};
    if (inv.dry_run) body["dry_run"] = true;
    return client.Send("POST", "/v1/transactions", body);
  };

  switch (inv.kind) {
    case CommandKind::kInfo: {
      IPTKIT_ASSIGN_OR_RETURN(Json j, client.Send("GET", "/v1/info"));
      if (inv.global.json) {
        out << j.dump(2) << "\n";
      } else {
        IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, InfoFromJson(j));
        out << FormatInfo(info);
      }
      return 0;
    }

    case CommandKind::kList:
    case CommandKind::kSave: {
      if (!inv.table.empty()) IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
      IPTKIT_ASSIGN_OR_RETURN(Json doc,
                              client.Send("GET", FamilyPath(family) + (inv.allow_lossy ? "?allow_lossy=true" : "")));
      RowNotes notes;
      IPTKIT_ASSIGN_OR_RETURN(Ruleset all, RulesetFromListing(doc, family, &notes));
      if (inv.kind == CommandKind::kSave) {
        Ruleset selected;
        selected.family = family;
        for (const Table& t : all.tables) {
          if (inv.table.empty() || t.name == inv.table) selected.tables.push_back(t);
        }
        std::string text = FormatSave(selected, {.counters = inv.counters, .mark_lossy = true});
        if (inv.global.json) {
          Json j = {{"family", FamilyName(family)}, {"text", text}};
          if (!inv.table.empty()) j["table"] = inv.table;
          out << j.dump(2) << "\n";
        } else {
          out << text;
        }
        return 0;
      }
      if (inv.global.json) {
        // The daemon's own JSON (with owner, id, managed and ttl_remaining), narrowed like a local listing.
        IPTKIT_ASSIGN_OR_RETURN(Ruleset selected, SelectListing(all, inv));
        Json narrowed = {{"family", FamilyName(family)}, {"tables", Json::array()}};
        for (const Table& t : selected.tables) {
          Json tj = {{"name", t.name}, {"chains", Json::array()}};
          for (const Json& dt : doc["tables"]) {
            if (Str(dt, "name") == t.name) tj = dt;
          }
          narrowed["tables"].push_back(std::move(tj));
        }
        NarrowListJson(narrowed, inv);
        out << narrowed.dump(2) << "\n";
        return 0;
      }
      IPTKIT_ASSIGN_OR_RETURN(std::string text, RenderListing(std::move(all), inv, notes, err));
      out << text;
      return 0;
    }

    case CommandKind::kRestore:
      return Status::InvalidArgument(
          "restore is not available through iptkitd (its REST API has no whole-table restore): run iptkit restore "
          "without --daemon, or send the changes as a transaction (iptkit --daemon txn FILE.json)");

    case CommandKind::kCheck: {
      // The chain must exist (a missing chain is exit 3, not an absent rule); then a dry-run delete by spec: 200
      // when an equal rule is there, not_found when not.
      IPTKIT_ASSIGN_OR_RETURN(Json op, RuleOp(inv));
      IPTKIT_ASSIGN_OR_RETURN(Json doc, client.Send("GET", FamilyPath(family) + "?allow_lossy=true"));
      IPTKIT_ASSIGN_OR_RETURN(Ruleset all, RulesetFromListing(doc, family, nullptr));
      Invocation where = inv;
      where.table = inv.TableOrFilter();
      IPTKIT_RETURN_IF_ERROR(SelectListing(all, where).status());
      Json body = {{"ops", Json::array({std::move(op)})}, {"dry_run", true}};
      Result<Json> r = client.Send("POST", "/v1/transactions", body);
      const bool present = r.ok();
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) return r.status();
      if (inv.global.json) {
        out << Json({{"present", present}}).dump() << "\n";
      } else if (inv.global.verbosity > 0) {
        out << (present ? "present\n" : "absent\n");
      }
      return present ? 0 : 1;
    }

    case CommandKind::kAppend:
    case CommandKind::kInsert:
    case CommandKind::kDelete:
    case CommandKind::kDeleteAt:
    case CommandKind::kReplace: {
      IPTKIT_ASSIGN_OR_RETURN(Json op, RuleOp(inv));
      Result<Json> r = transaction(std::move(op));
      if (!r.ok()) {
        if (inv.kind == CommandKind::kDelete) return ExplainMissedDelete(client, inv, r.status());
        return r.status();
      }
      PrintChange(inv, *r, out);
      return 0;
    }

    case CommandKind::kChainCreate:
    case CommandKind::kChainDelete:
    case CommandKind::kChainRename:
    case CommandKind::kChainFlush:
    case CommandKind::kChainZero:
    case CommandKind::kChainPolicy: {
      IPTKIT_ASSIGN_OR_RETURN(Json op, ChainOp(inv));
      IPTKIT_ASSIGN_OR_RETURN(Json r, transaction(std::move(op)));
      PrintChange(inv, r, out);
      return 0;
    }

    case CommandKind::kTxn: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      *input = text;
      IPTKIT_ASSIGN_OR_RETURN(Json doc, ParseDocument(text, inv.arg));
      if (inv.dry_run) doc["dry_run"] = true;
      IPTKIT_ASSIGN_OR_RETURN(Json r, client.Send("POST", "/v1/transactions", doc));
      PrintChange(inv, r, out);
      return 0;
    }

    case CommandKind::kPlan:
    case CommandKind::kApply: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      *input = text;
      IPTKIT_ASSIGN_OR_RETURN(Json doc, ParseDocument(text, inv.arg));
      const std::string owner = Str(doc, "owner");
      if (owner.empty()) {
        return Status::InvalidArgument(inv.arg + ": /owner: required to apply through iptkitd (PUT /v1/owners/OWNER)")
            .WithField("/owner");
      }
      IPTKIT_RETURN_IF_ERROR(ValidateOwner(owner).WithContext(inv.arg + ": /owner"));
      const bool dry = inv.kind == CommandKind::kPlan || inv.dry_run;
      IPTKIT_ASSIGN_OR_RETURN(Json r, client.Send("PUT", "/v1/owners/" + owner + (dry ? "?dry_run=1" : ""), doc));
      if (inv.global.json) {
        out << r.dump(2) << "\n";
      } else if (inv.kind == CommandKind::kPlan || inv.global.verbosity > 0) {
        const Json steps = r.value("steps", Json::array());
        if (steps.empty()) out << "no changes\n";
        for (const Json& s : steps) {
          out << Str(s, "family") << " " << Str(s, "table") << ": " << Str(s, "description") << "\n";
        }
        for (const Json& w : r.value("warnings", Json::array())) {
          if (w.is_string()) out << "warning: " << w.get<std::string>() << "\n";
        }
        if (inv.global.verbosity > 0) out << ResultText(r);
      } else if (inv.dry_run) {
        out << ResultText(r);
      } else if (!inv.global.quiet) {
        for (const Json& w : r.value("warnings", Json::array())) {
          if (w.is_string()) out << "warning: " << w.get<std::string>() << "\n";
        }
      }
      return 0;
    }

    case CommandKind::kHelp:
      return 0;
  }
  return Status::Internal("unhandled command");
}

}  // namespace iptkit::cli
