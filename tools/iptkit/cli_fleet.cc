#include "tools/iptkit/cli_fleet.h"

#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "iptkit/ipset.h"
#include "src/base/duration.h"
#include "src/fleet/etcd_client.h"
#include "src/fleet/set_doc.h"
#include "tools/iptkit/cli_runner.h"

namespace iptkit::cli {
namespace {

using Json = nlohmann::ordered_json;
using fleet::EtcdClient;
using fleet::PrefixEnd;

constexpr char kUsage[] =
    "usage: iptkit fleet [--etcd URL[,URL...]] [--prefix P] [--etcd-user U --etcd-password-file F]\n"
    "                    [--etcd-ca F] [--etcd-cert F --etcd-key F] COMMAND\n"
    "  put GROUP KEY FILE|-          KEY: .group, owners/OWNER, rules/ID, sets/SET\n"
    "  put GROUP sets/SET --type TYPE [--set-options JSON] [--canary K=V] FILE|-\n"
    "                                a set from entries text (one per line), chunked when large\n"
    "  get GROUP [KEY]\n"
    "  delete GROUP KEY [--force]\n"
    "  status GROUP\n"
    "  wait GROUP [--revision R] [--timeout D] [--hosts N]\n";

struct Fail {
  int code;
  std::string message;
};

int CodeFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      return kExitInvalid;
    case StatusCode::kNotFound:
      return kExitNotFound;
    case StatusCode::kPermissionDenied:
      return kExitPermission;
    case StatusCode::kUnavailable:
      return kExitBusy;
    default:
      return kExitInternal;
  }
}

bool ValidGroup(const std::string& g) {
  return !g.empty() && g.size() <= 64 &&
         g.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == std::string::npos;
}

struct Options {
  std::string etcd = "http://127.0.0.1:2379";
  std::string prefix = "/iptkit";
  fleet::EtcdOptions etcd_options;
  std::string password_file;
  std::vector<std::string> positional;
  bool force = false;
  int64_t revision = 0;
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  int64_t hosts = 0;
  std::string set_type;     // put sets/SET from entries text
  std::string set_options;  // JSON object
  std::string canary;       // k=v
};

std::string GroupPrefix(const Options& o, const std::string& group) { return o.prefix + "/groups/" + group + "/"; }

// The hosts that report for `group`: id -> report.
Result<std::map<std::string, Json>> Reports(EtcdClient& etcd, const Options& o, const std::string& group) {
  const std::string hosts = o.prefix + "/hosts/";
  IPTKIT_ASSIGN_OR_RETURN(fleet::RangeResult r, etcd.Range(hosts, PrefixEnd(hosts)));
  std::map<std::string, Json> out;
  for (const fleet::KeyValue& kv : r.kvs) {
    Json j = Json::parse(kv.value, nullptr, false);
    if (!j.is_object() || j.value("group", "") != group) continue;
    out[kv.key.substr(hosts.size())] = std::move(j);
  }
  return out;
}

// The keys a host must have applied for revision R (owners/, rules/, sets/ at R).
Result<std::map<std::string, int64_t>> KeysAt(EtcdClient& etcd, const std::string& group_prefix, int64_t revision) {
  std::map<std::string, int64_t> out;
  for (const char* dir : {"owners/", "rules/", "sets/"}) {
    const std::string p = group_prefix + dir;
    IPTKIT_ASSIGN_OR_RETURN(fleet::RangeResult r, etcd.Range(p, PrefixEnd(p), revision));
    for (const fleet::KeyValue& kv : r.kvs) out[kv.key] = kv.mod_revision;
  }
  return out;
}

// "applied", "failed" (with the key) or "pending" for one host at R.
std::pair<std::string, std::string> HostState(const Json& report, const std::map<std::string, int64_t>& keys,
                                              const std::string& group_prefix, int64_t revision) {
  std::string pending;
  for (const auto& [key, rev] : keys) {
    const Json& applied = report.contains("applied") ? report["applied"] : Json::object();
    if (applied.is_object() && applied.contains(key) && applied[key].is_number_integer() &&
        applied[key].get<int64_t>() == rev) {
      continue;
    }
    const Json& errors = report.contains("errors") ? report["errors"] : Json::object();
    if (errors.is_object() && errors.contains(key) && errors[key].value("revision", int64_t{0}) == rev) {
      return {"failed", key + ": " + errors[key].value("error", "")};
    }
    if (pending.empty()) pending = key;
  }
  // A key deleted by R must be gone from the host too: it still reports a revision <= R of a key absent at R.
  if (pending.empty() && report.contains("applied") && report["applied"].is_object()) {
    for (const auto& [key, rev] : report["applied"].items()) {
      if (key.rfind(group_prefix, 0) != 0 || keys.contains(key)) continue;
      if (rev.is_number_integer() && rev.get<int64_t>() <= revision) {
        pending = key + " (deleted)";
        break;
      }
    }
  }
  if (!pending.empty()) return {"pending", pending};
  return {"applied", ""};
}

// A set from entries text: one document when it fits in one chunk, else chunks `KEY/chunk/N` written first, then
// the manifest in one txn that also deletes chunks of an earlier, longer version (docs/fleet.md).
Result<int64_t> PutSet(EtcdClient& etcd, const std::string& key, const std::string& name, const std::string& text,
                       const Options& o) {
  IPTKIT_ASSIGN_OR_RETURN(std::vector<SetEntrySpec> entries, ParseSetEntries(text, name));
  Json doc = {{"name", name}, {"type", o.set_type}};
  if (!o.set_options.empty()) doc["options"] = Json::parse(o.set_options);
  if (!o.canary.empty()) doc["canary"] = o.canary;
  Json list = Json::array();
  for (const SetEntrySpec& e : entries) {
    if (!e.timeout && !e.comment) {
      list.push_back(e.elem);
      continue;
    }
    Json j = {{"entry", e.elem}};
    if (e.timeout) j["timeout"] = *e.timeout;
    if (e.comment) j["comment"] = *e.comment;
    list.push_back(std::move(j));
  }
  const std::string chunk_dir = key + "/chunk/";
  IPTKIT_ASSIGN_OR_RETURN(fleet::RangeResult old, etcd.Range(chunk_dir, PrefixEnd(chunk_dir)));
  fleet::TxnRequest t;
  Json single = doc;
  single["entries"] = std::move(list);
  std::string value = single.dump();
  size_t count = 0;
  if (value.size() > fleet::kMaxChunkBytes) {
    // Chunks carry the text as ParseSetEntries reads it, one entry per line.
    std::string lines;
    for (const SetEntrySpec& e : entries) {
      lines += e.elem;
      if (e.timeout) lines += " timeout " + std::to_string(*e.timeout);
      if (e.comment) lines += " comment \"" + *e.comment + "\"";
      lines += "\n";
    }
    IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> chunks, fleet::SplitChunks(lines));
    count = chunks.size();
    for (size_t i = 0; i < chunks.size(); ++i) {
      IPTKIT_RETURN_IF_ERROR(etcd.Put(chunk_dir + std::to_string(i), chunks[i]).status());
    }
    doc["chunks"] = {{"count", count}, {"sha256", fleet::Sha256Hex(lines)}};
    value = doc.dump();
  }
  for (const fleet::KeyValue& kv : old.kvs) {
    const std::string n = kv.key.substr(chunk_dir.size());
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos ||
        std::stoull(n) >= count) {
      t.success.push_back(fleet::TxnOp::Delete(kv.key));
    }
  }
  t.success.push_back(fleet::TxnOp::Put(key, value));
  IPTKIT_ASSIGN_OR_RETURN(fleet::TxnResult r, etcd.Txn(t));
  return r.revision;
}

}  // namespace

bool IsFleetCommandLine(const std::vector<std::string>& args) { return !args.empty() && args[0] == "fleet"; }

int FleetMain(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err) {
  auto usage = [&](const std::string& why) {
    err << "iptkit: fleet: " << why << "\n" << kUsage;
    return kExitInvalid;
  };
  auto fail = [&](const Status& s) {
    err << "iptkit: fleet: " << s.message() << "\n";
    return CodeFor(s);
  };
  Options o;
  if (const char* env = std::getenv("IPTKIT_ETCD"); env != nullptr && *env != '\0') o.etcd = env;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= args.size()) return false;
      *v = args[++i];
      return true;
    };
    std::string v;
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return kExitOk;
    } else if (a == "--etcd") {
      if (!value(&o.etcd)) return usage("--etcd needs URL[,URL...]");
    } else if (a == "--prefix") {
      if (!value(&o.prefix) || o.prefix.empty() || o.prefix.front() != '/' || o.prefix.back() == '/') {
        return usage("--prefix needs a prefix that starts with '/' and does not end with '/'");
      }
    } else if (a == "--etcd-user") {
      if (!value(&o.etcd_options.user)) return usage("--etcd-user needs a name");
    } else if (a == "--etcd-password-file") {
      if (!value(&o.password_file)) return usage("--etcd-password-file needs a file");
    } else if (a == "--etcd-ca") {
      if (!value(&o.etcd_options.tls.ca_file)) return usage("--etcd-ca needs a file");
    } else if (a == "--etcd-cert") {
      if (!value(&o.etcd_options.tls.cert_file)) return usage("--etcd-cert needs a file");
    } else if (a == "--etcd-key") {
      if (!value(&o.etcd_options.tls.key_file)) return usage("--etcd-key needs a file");
    } else if (a == "--force") {
      o.force = true;
    } else if (a == "--revision") {
      if (!value(&v) || (o.revision = std::atoll(v.c_str())) <= 0) return usage("--revision needs a revision > 0");
    } else if (a == "--hosts") {
      if (!value(&v) || (o.hosts = std::atoll(v.c_str())) <= 0) return usage("--hosts needs a number > 0");
    } else if (a == "--type") {
      if (!value(&o.set_type)) return usage("--type needs a set type");
    } else if (a == "--set-options") {
      if (!value(&o.set_options) || !nlohmann::json::parse(o.set_options, nullptr, false).is_object()) {
        return usage("--set-options needs a JSON object");
      }
    } else if (a == "--canary") {
      if (!value(&o.canary) || o.canary.find('=') == std::string::npos) return usage("--canary needs K=V");
    } else if (a == "--timeout") {
      if (!value(&v)) return usage("--timeout needs a duration");
      Result<std::chrono::milliseconds> d = base::ParseDuration(v);
      if (!d.ok()) return usage("--timeout: " + d.status().message());
      o.timeout = *d;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      return usage("unknown option " + a);
    } else {
      o.positional.push_back(a);
    }
  }
  if (o.positional.size() < 2) return usage("expected a command and a group");
  const std::string command = o.positional[0];
  const std::string group = o.positional[1];
  if (!ValidGroup(group)) return usage("group '" + group + "': expected [A-Za-z0-9._-]{1,64}");
  for (size_t start = 0;;) {
    size_t comma = o.etcd.find(',', start);
    o.etcd_options.endpoints.push_back(o.etcd.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (!o.password_file.empty()) {
    std::ifstream f(o.password_file);
    if (!f) return usage("--etcd-password-file " + o.password_file + ": cannot be read");
    std::getline(f, o.etcd_options.password);
  }
  Result<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(o.etcd_options);
  if (!client.ok()) return fail(client.status());
  EtcdClient& etcd = **client;
  const std::string gp = GroupPrefix(o, group);

  if (command == "put") {
    if (o.positional.size() != 4 && !(o.positional.size() == 3 && o.positional[2] == ".group")) {
      return usage("put GROUP KEY FILE|-");
    }
    const std::string key = o.positional[2];
    std::string value = "1";
    if (o.positional.size() == 4) {
      const std::string& file = o.positional[3];
      if (file == "-") {
        value.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      } else {
        std::ifstream f(file, std::ios::binary);
        if (!f) return usage(file + ": cannot be read");
        value.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      }
    }
    if (!o.set_type.empty()) {
      if (!key.starts_with("sets/") || key.find('/', 5) != std::string::npos) return usage("--type is for sets/SET");
      Result<int64_t> rev = PutSet(etcd, gp + key, key.substr(5), value, o);
      if (!rev.ok()) return fail(rev.status());
      out << *rev << "\n";
      return kExitOk;
    }
    if (!o.canary.empty()) {
      Json doc = Json::parse(value, nullptr, false);
      if (!doc.is_object()) return usage(key + ": the value is not a JSON object");
      doc["canary"] = o.canary;
      value = doc.dump();
    }
    if (key.starts_with("owners/") || key.starts_with("rules/") || key.starts_with("sets/")) {
      if (!nlohmann::json::accept(value)) return usage(key + ": the value is not JSON");
    } else if (key != ".group") {
      return usage("KEY must be .group, owners/OWNER, rules/ID or sets/SET");
    }
    Result<int64_t> rev = etcd.Put(gp + key, value);
    if (!rev.ok()) return fail(rev.status());
    out << *rev << "\n";
    return kExitOk;
  }
  if (command == "get") {
    std::string key = o.positional.size() > 2 ? gp + o.positional[2] : gp;
    bool prefix = o.positional.size() == 2 || key.back() == '/';
    Result<fleet::RangeResult> r = etcd.Range(key, prefix ? PrefixEnd(key) : "");
    if (!r.ok()) return fail(r.status());
    if (!prefix) {
      if (r->kvs.empty()) return fail(Status::NotFound(key + " does not exist"));
      out << r->kvs[0].value << "\n";
      return kExitOk;
    }
    Json keys = Json::array();
    for (const fleet::KeyValue& kv : r->kvs) {
      Json value = Json::parse(kv.value, nullptr, false);
      keys.push_back({{"key", kv.key},
                      {"mod_revision", kv.mod_revision},
                      {"value", value.is_discarded() ? Json(kv.value) : value}});
    }
    out << Json{{"revision", r->revision}, {"keys", keys}}.dump(2) << "\n";
    return kExitOk;
  }
  if (command == "delete") {
    if (o.positional.size() != 3) return usage("delete GROUP KEY [--force]");
    const std::string key = gp + o.positional[2];
    fleet::TxnRequest t;
    t.success.push_back(fleet::TxnOp::Delete(key, key.back() == '/' ? PrefixEnd(key) : ""));
    if (o.force) t.success.push_back(fleet::TxnOp::Put(gp + ".force", "1"));
    Result<fleet::TxnResult> r = etcd.Txn(t);
    if (!r.ok()) return fail(r.status());
    out << r->revision << "\n";
    return kExitOk;
  }
  if (command == "status" || command == "wait") {
    const auto deadline = std::chrono::steady_clock::now() + o.timeout;
    int64_t revision = o.revision;
    if (revision == 0) {
      Result<fleet::RangeResult> now = etcd.Range(gp + ".group");
      if (!now.ok()) return fail(now.status());
      revision = now->revision;
    }
    for (;;) {
      Result<std::map<std::string, int64_t>> keys = KeysAt(etcd, gp, revision);
      if (!keys.ok()) return fail(keys.status());
      Result<std::map<std::string, Json>> reports = Reports(etcd, o, group);
      if (!reports.ok()) return fail(reports.status());
      Json hosts = Json::array();
      size_t applied = 0, failed = 0;
      for (const auto& [id, report] : *reports) {
        auto [state, detail] = HostState(report, *keys, gp, revision);
        applied += state == "applied";
        failed += state == "failed";
        Json h = {{"host_id", id}, {"state", state}};
        if (!detail.empty()) h[state == "failed" ? "error" : "waiting_for"] = detail;
        h["last_error"] = report.value("last_error", "");
        h["labels"] = report.value("labels", Json::object());
        if (report.contains("canary_gates")) h["canary_gates"] = report["canary_gates"];
        hosts.push_back(std::move(h));
      }
      Json doc = {{"group", group}, {"revision", revision}, {"keys", keys->size()}, {"hosts", hosts}};
      const bool enough = static_cast<int64_t>(reports->size()) >= std::max<int64_t>(o.hosts, 1);
      if (command == "status") {
        out << doc.dump(2) << "\n";
        return kExitOk;
      }
      if (failed > 0) {
        out << doc.dump(2) << "\n";
        err << "iptkit: fleet: " << failed << " host(s) failed to apply revision " << revision << "\n";
        return kExitCheckMiss;
      }
      if (enough && applied == reports->size()) {
        out << doc.dump(2) << "\n";
        return kExitOk;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        out << doc.dump(2) << "\n";
        err << "iptkit: fleet: timed out waiting for revision " << revision << "\n";
        return kExitBusy;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return usage("unknown command '" + command + "'");
}

}  // namespace iptkit::cli
