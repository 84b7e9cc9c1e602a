#include "src/backend/restore/restore_backend.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "iptkit/dialect.h"
#include "src/backend/legacy/xt_rules.h"
#include "src/backend/ops/table_sim.h"
#include "src/backend/restore/local_canonical.h"
#include "src/backend/restore/restore_internal.h"
#include "src/backend/restore/tool_errors.h"
#include "src/base/errno_status.h"
#include "src/base/file_lock.h"

namespace iptkit::backend {

using base::Cmd;
using base::SubprocessResult;
using restore_internal::RunFailure;
using restore_internal::SplitLines;
using restore_internal::Trim;

namespace {
constexpr std::string_view kLockBusy = "Another app is currently holding the xtables lock";
}  // namespace

namespace restore_internal {

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\n' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> SplitLines(std::string_view text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

Status RunFailure(const std::string& what, const SubprocessResult& r) {
  const std::string err = Trim(r.stderr_text);
  if (err.find("Permission denied (you must be root)") != std::string::npos) {
    return Status::PermissionDenied(what + ": " + err);
  }
  if (err.find(kLockBusy) != std::string::npos) return Status::Unavailable("xtables lock busy: " + what + ": " + err);
  return Status::Internal(what + " exited " + std::to_string(r.exit_code) + ": " + err);
}

}  // namespace restore_internal

namespace {

constexpr const char* kNft = "/usr/sbin/nft";
constexpr const char* kIpset = "/usr/sbin/ipset";
constexpr const char* kNfacct = "/usr/sbin/nfacct";
constexpr std::chrono::seconds kToolSlack(60);  // on top of the lock wait: big tables take a while

// The save tool's ways of saying "this output is not the whole truth" (iptables 1.8.9 xtables-save.c,
// nft-shared.c). A line starting with one of these, on stdout or stderr.
constexpr std::string_view kLegacyWarning = "# Warning: iptables-legacy tables present";
constexpr std::string_view kParseFailed = "Parsing nftables rule failed";
constexpr std::string_view kIncompatible = "incompatible";
std::string NftFamily(Family family) { return family == Family::kIPv4 ? "ip" : "ip6"; }

std::chrono::milliseconds ToolTimeout(std::chrono::milliseconds wait) { return wait + kToolSlack; }

// iptables' --wait takes whole seconds; round up so the child never gives up before our own bound.
std::string WaitSeconds(std::chrono::milliseconds wait) {
  long long s = (wait.count() + 999) / 1000;
  return std::to_string(std::max(1LL, s));
}

// "# Table `filter' is incompatible, use 'nft' tool." → "filter".
std::string IncompatibleTableName(std::string_view line) {
  size_t open = line.find('`');
  size_t close = line.find('\'', open == std::string_view::npos ? 0 : open + 1);
  if (open == std::string_view::npos || close == std::string_view::npos) return "";
  return std::string(line.substr(open + 1, close - open - 1));
}

// The save text parsed table by table, so that one table iptables-save cannot print faithfully does not take the
// others with it. A foreign rule whose text does not read back (a comment with a line break: iptables-save prints
// the break raw, and a later line of the comment could even pose as another table) makes its table come back with
// its chain declarations, no rules, and unrepresentable_reason naming the line; a table printed twice is marked
// the same way. Lines outside any *table block mark the table before them. Writes to such a table are refused
// (planner); reads of it say why. The caller's rule-count cross-check against the kernel catches what still parses.
// `suspect` receives the names of the tables marked here.
Ruleset ParseSavePerTable(std::string_view text, Family family, const std::string& tool,
                          std::set<std::string>* suspect) {
  struct Block {
    std::string name;
    int first_line = 0;  // of the "*name" line
    std::string text;
    bool closed = false;
    std::string problem;  // set when the block is known to be broken before parsing
  };
  std::vector<Block> blocks;
  int line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    const bool open = !blocks.empty() && !blocks.back().closed;
    if (!line.empty() && line[0] == '*') {
      if (open) blocks.back().problem = "no COMMIT before line " + std::to_string(line_no);
      blocks.push_back({std::string(line.substr(1)), line_no, std::string(line) + "\n", false, ""});
      continue;
    }
    if (open) {
      blocks.back().text += std::string(line) + "\n";
      if (line == "COMMIT") blocks.back().closed = true;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    if (!blocks.empty() && blocks.back().problem.empty()) {
      blocks.back().problem = "line " + std::to_string(line_no) + " follows its COMMIT";
    }
  }
  Ruleset out;
  out.family = family;
  std::set<std::string> seen, twice;
  for (const Block& b : blocks) {
    if (!seen.insert(b.name).second) twice.insert(b.name);
  }
  for (const Block& b : blocks) {
    if (out.FindTable(b.name) != nullptr) continue;  // the first block of a name stands for it
    std::string problem = b.problem;
    if (problem.empty() && !b.closed) problem = "no COMMIT";
    if (problem.empty() && twice.count(b.name)) problem = "the table is printed twice";
    Result<Ruleset> parsed = problem.empty() ? ParseSave(b.text, family, {.first_line = b.first_line})
                                             : Result<Ruleset>(Status::Internal(problem));
    if (parsed.ok() && parsed->tables.size() == 1) {
      out.tables.push_back(std::move(parsed->tables.front()));
      continue;
    }
    if (problem.empty()) {
      problem = parsed.status().message();
    }
    // The chain declarations alone, so the table's chains and policies still show.
    std::string skeleton = "*" + b.name + "\n";
    for (const std::string& l : SplitLines(b.text)) {
      if (!l.empty() && l[0] == ':') skeleton += l + "\n";
    }
    skeleton += "COMMIT\n";
    Result<Ruleset> chains = ParseSave(skeleton, family);
    Table table;
    if (chains.ok() && chains->tables.size() == 1) {
      table = std::move(chains->tables.front());
    } else if (Result<Table> fresh = NewTable(b.name); fresh.ok()) {
      table = *std::move(fresh);
    } else {
      table.name = b.name;
    }
    table.unrepresentable_reason = tool + " prints this table in a form that does not read back (" + problem +
                                   "), e.g. a rule whose comment holds a line break";
    if (suspect != nullptr) suspect->insert(b.name);
    out.tables.push_back(std::move(table));
  }
  return out;
}

// ---- nft cross-check (docs/architecture.md §3: iptables-nft-save can be lossy without an error) ----

// Read takes the kernel's view from netlink (src/backend/nft/); Info from `nft -j list ruleset`, which also shows
// the other families' tables.
using nft::KernelChain;
using nft::KernelTable;
using nft::KernelView;

// Why iptables-nft-save would print this rule lossily, or "" when every expression is one iptables-nft 1.8.9
// creates and prints back (the JSON twin of nft::LossyExpressionsReason) (the expression kinds seen when loading the
// whole corpus with iptables-nft: payload / meta / bitwise matches — with ==, !=, <=, >=, ! and "in" for flag tests —
// against literal values, prefixes and ranges; counter; xt match/target; verdicts; limit, log, mangle). Anything else —
// set lookups ({ a, b } or @set), ct/fib/socket/numgen/... native expressions, statements such as nat/reject/notrack
// written by nft — is what iptables-nft-save drops or misprints.
std::string LossyRuleReason(const nlohmann::json& expr) {
  static const std::set<std::string> kStatements = {"match", "counter", "xt",    "accept", "drop",   "return",
                                                    "jump",  "goto",    "limit", "log",    "mangle", "queue"};
  if (!expr.is_array()) return "rule without expressions";
  for (const auto& e : expr) {
    if (!e.is_object() || e.size() != 1) return "unexpected expression";
    const std::string& kind = e.begin().key();
    if (!kStatements.count(kind)) return "native nft expression '" + kind + "'";
    if (kind != "match") continue;
    const auto& m = e.begin().value();
    if (!m.is_object()) return "unexpected match";
    const auto& right = m.contains("right") ? m["right"] : nlohmann::json();
    if (right.is_object() && (right.contains("set") || right.contains("map"))) return "anonymous set lookup";
    if (right.is_string() && right.get<std::string>().starts_with("@")) return "named set lookup";
    const auto& left = m.contains("left") ? m["left"] : nlohmann::json();
    const nlohmann::json* l = &left;
    if (l->is_object() && l->contains("&") && (*l)["&"].is_array() && !(*l)["&"].empty()) l = &(*l)["&"][0];
    if (!l->is_object() || l->empty()) return "unexpected match operand";
    const std::string& lkind = l->begin().key();
    if (lkind != "payload" && lkind != "meta") return "native nft match on '" + lkind + "'";
  }
  return "";
}

Result<KernelView> ParseNftJson(const std::string& text) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nftables") || !doc["nftables"].is_array()) {
    return Status::Internal("nft -j printed something that is not its JSON schema: " + text.substr(0, 200));
  }
  KernelView view;
  try {
    for (const auto& item : doc["nftables"]) {
      if (!item.is_object()) continue;
      if (item.contains("table")) {
        const auto& t = item["table"];
        view[{t.value("family", ""), t.value("name", "")}];
      } else if (item.contains("chain")) {
        const auto& c = item["chain"];
        KernelChain& chain = view[{c.value("family", ""), c.value("table", "")}].chains[c.value("name", "")];
        if (c.contains("hook")) {
          chain.base = true;
          chain.hook = c.value("hook", "");
          chain.priority = c.contains("prio") && c["prio"].is_number_integer() ? c["prio"].get<int>() : 0;
        }
      } else if (item.contains("rule")) {
        const auto& r = item["rule"];
        KernelChain& chain = view[{r.value("family", ""), r.value("table", "")}].chains[r.value("chain", "")];
        ++chain.rules;
        if (chain.lossy.empty()) {
          std::string why = LossyRuleReason(r.contains("expr") ? r["expr"] : nlohmann::json());
          if (!why.empty()) {
            chain.lossy = "rule " + std::to_string(chain.rules) + " (nft handle " +
                          std::to_string(r.value("handle", 0)) + ") uses " + why;
          }
        }
      } else if (item.contains("set") || item.contains("map")) {
        const auto& s = item.contains("set") ? item["set"] : item["map"];
        view[{s.value("family", ""), s.value("table", "")}].sets.push_back(s.value("name", ""));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("unexpected nft JSON: ") + e.what());
  }
  return view;
}

// "" when `table` as saved matches the kernel's view of it, else why not.
std::string CrossCheck(const Table& table, const KernelTable* kernel) {
  if (kernel == nullptr) {
    // iptables-nft-save -t TABLE prints the builtin chains of a table that does not exist; nothing to lose.
    for (const Chain& c : table.chains) {
      if (!c.rules.empty()) return "iptables-nft-save shows rules of a table the kernel does not have";
    }
    return "";
  }
  for (const auto& [name, kc] : kernel->chains) {
    const Chain* saved = table.FindChain(name);
    if (saved == nullptr) {
      return "chain " + name + " exists in the kernel but iptables-nft-save does not show it";
    }
    if (saved->rules.size() != kc.rules) {
      return "chain " + name + ": iptables-nft-save shows " + std::to_string(saved->rules.size()) +
             " rules, the kernel holds " + std::to_string(kc.rules);
    }
    if (!kc.lossy.empty()) return "chain " + name + ": " + kc.lossy + ", which iptables-nft-save cannot show";
    if (kc.base && !IsBuiltinChain(table.name, name)) {
      return "chain " + name + " is an nft base chain (hook " + kc.hook + ") iptables does not manage";
    }
  }
  for (const Chain& c : table.chains) {
    if (!kernel->chains.count(c.name) && !c.rules.empty()) {
      return "chain " + c.name + " is shown by iptables-nft-save but does not exist in the kernel";
    }
  }
  if (!kernel->sets.empty()) return "table holds nft sets (" + kernel->sets.front() + ") iptables cannot show";
  return "";
}

// ---- restore error mapping ----

// The restore line a failure names: "line N failed", "Error occurred at line: N", "line N: ...".
std::optional<int> FailedLine(const std::string& err) {
  static const std::regex kPatterns[] = {std::regex(R"(line (\d+) failed)"),
                                         std::regex(R"(Error occurred at line: (\d+))"),
                                         std::regex(R"((?:^|\n)line (\d+): )")};
  for (const auto& re : kPatterns) {
    std::smatch m;
    if (std::regex_search(err, m, re)) return std::stoi(m[1].str());
  }
  return std::nullopt;
}

// The command of a restore line ("-A", "-C", ...), after an optional "[p:b]" prefix.
std::string LineCommand(std::string_view line) {
  if (!line.empty() && line[0] == '[') {
    size_t close = line.find("] ");
    if (close != std::string_view::npos) line.remove_prefix(close + 2);
  }
  return std::string(line.substr(0, line.find(' ')));
}

bool HasIndexArgument(std::string_view line) {
  // "-I CHAIN 3 ..." / "-R CHAIN 3 ..." / "-D CHAIN 3"
  std::istringstream in{std::string(line)};
  std::string cmd, chain, third;
  in >> cmd >> chain >> third;
  return !third.empty() && std::all_of(third.begin(), third.end(), ::isdigit);
}

StatusCode CodeForFailure(const std::string& err, const std::string& line, bool bare) {
  auto has = [&](std::string_view s) { return err.find(s) != std::string::npos; };
  const std::string cmd = LineCommand(line);
  if (has("Permission denied (you must be root)")) return StatusCode::kPermissionDenied;
  if (has("Bad rule (does a matching rule exist")) {
    return cmd == "-C" ? StatusCode::kFailedPrecondition : StatusCode::kNotFound;
  }
  if (has("Index of") && has("too big")) return StatusCode::kFailedPrecondition;
  if (has("No chain/target/match by that name") || has("(No such file or directory)")) {
    return StatusCode::kNotFound;
  }
  if (has("Chain already exists") || has("(File exists)")) return StatusCode::kAlreadyExists;
  if (has("Device or resource busy") || has("Directory not empty") || has("Too many links")) {
    return StatusCode::kFailedPrecondition;
  }
  if (!bare) return StatusCode::kInvalidArgument;
  // iptables-legacy-restore says only "line N failed" (libiptc's reason is dropped); infer from the command.
  std::string_view rest = line;
  if (!rest.empty() && rest[0] == '[') rest.remove_prefix(std::min(rest.size(), rest.find("] ") + 2));
  if (cmd == "-C") return StatusCode::kFailedPrecondition;
  if ((cmd == "-I" || cmd == "-R" || cmd == "-D") && HasIndexArgument(rest)) return StatusCode::kFailedPrecondition;
  if (cmd == "-N") return StatusCode::kAlreadyExists;
  if (cmd == "-X" || cmd == "-E") return StatusCode::kFailedPrecondition;
  if (cmd == "-D" || cmd == "-A" || cmd == "-I" || cmd == "-F" || cmd == "-Z" || cmd == "-P") {
    return StatusCode::kNotFound;
  }
  return StatusCode::kInvalidArgument;
}

// What a restore that failed on one of iptkit's own lines means, in words the user can act on: the op as an
// iptables command and iptables' own reason, never the number of a line of iptkit's batch or iptables' usage hint.
Status MapRestoreFailure(const std::string& tool, Family family, const std::string& table, const std::string& text,
                         const SubprocessResult& r) {
  const std::string err = Trim(r.stderr_text);
  if (err.find(kLockBusy) != std::string::npos) {
    return Status::Unavailable("xtables lock busy: " + tool + ": " + err);
  }
  std::vector<std::string> lines = SplitLines(text);
  std::optional<int> n = FailedLine(err);
  if (!n || *n < 1 || *n > static_cast<int>(lines.size())) {
    return Status::Internal(tool + " exited " + std::to_string(r.exit_code) + " for table " + table + ": " + err);
  }
  const std::string where = std::string(FamilyName(family)) + " " + table;
  std::string line = lines[*n - 1];
  if (!line.empty() && line[0] == '[') line.erase(0, std::min(line.size(), line.find("] ") + 2));
  // Just "iptables-restore: line N failed" and nothing else: no reason given.
  static const std::regex kBare(R"(^[\w.-]+: line \d+ failed$)");
  const bool bare = std::regex_match(err, kBare);
  const std::string reason = CleanToolMessage(err);
  if (lines[*n - 1] == "COMMIT") {
    // The batch is applied at COMMIT: legacy replaces the table blob there (the kernel's reason goes only to the
    // kernel log), iptables-nft resolves some references there (a chain renamed by -E earlier in the same block
    // is not known to later lines in 1.8.9: "Chain 'NEW' does not exist").
    if (bare || reason.empty()) {
      return Status::InvalidArgument("the kernel refused the new " + where +
                                     " table (iptables-legacy gives no reason: the kernel log has it, see dmesg)")
          .WithLocation(std::string(FamilyName(family)), table)
          .WithReason("kernel_rejected");
    }
    StatusCode code =
        err.find("does not exist") != std::string::npos ? StatusCode::kNotFound : CodeForFailure(err, line, false);
    return Status(code, "the kernel refused the new " + where + " table: " + reason)
        .WithLocation(std::string(FamilyName(family)), table);
  }
  const StatusCode code = CodeForFailure(err, line, bare);
  std::string why = reason;
  if (bare || why.empty()) {
    switch (code) {
      case StatusCode::kFailedPrecondition:
        why = LineCommand(line) == "-C" ? "the rule is not there any more (the chain changed meanwhile)"
                                        : "the chain is not empty, still referenced, or has fewer rules";
        break;
      case StatusCode::kNotFound:
        why = LineCommand(line) == "-D" ? "no such rule" : "no such chain";
        break;
      case StatusCode::kAlreadyExists:
        why = "the chain exists already";
        break;
      default:
        why = "the kernel refused it (iptables-legacy gives no reason: the kernel log has it, see dmesg)";
    }
  }
  std::istringstream words(line);
  std::string command, chain;
  words >> command >> chain;
  return Status(code, where + " '" + line + "': " + why).WithLocation(std::string(FamilyName(family)), table, chain);
}

class NoopGuard final : public LockGuard {};

class XtablesLockGuard final : public LockGuard {
 public:
  XtablesLockGuard(std::optional<base::FileLock> lock, std::shared_ptr<RestoreBackend::LockState> state)
      : lock_(std::move(lock)), state_(std::move(state)) {
    ++state_->depth;
  }
  ~XtablesLockGuard() override { --state_->depth; }

 private:
  std::optional<base::FileLock> lock_;  // empty for a nested guard (the outer one holds the flock)
  std::shared_ptr<RestoreBackend::LockState> state_;
};

Result<base::FileLock> AcquireXtablesLock(const std::string& path, std::chrono::milliseconds wait) {
  auto lock = base::FileLock::Acquire(path, wait);
  if (!lock.ok() && lock.status().code() == StatusCode::kUnavailable) {
    return Status::Unavailable("xtables lock busy: " + lock.status().message());
  }
  return lock;
}

}  // namespace

std::string_view VariantName(Variant variant) { return variant == Variant::kNft ? "nft" : "legacy"; }

std::string IptablesToolPath(Variant variant, Family family, std::string_view suffix) {
  return std::string("/usr/sbin/") + (family == Family::kIPv4 ? "iptables-" : "ip6tables-") +
         std::string(VariantName(variant)) + std::string(suffix);
}

RestoreBackend::RestoreBackend(Variant variant, BackendOptions options, base::UniqueFd netns)
    : variant_(variant),
      options_(std::move(options)),
      netns_(std::move(netns)),
      lock_state_(std::make_shared<LockState>()) {
  traits_.name = std::string(VariantName(variant));
  traits_.variant = traits_.name;
  traits_.needs_lock = variant == Variant::kLegacy;
  traits_.rename_then_use = variant == Variant::kLegacy;
}

RestoreBackend::~RestoreBackend() {
  if (!private_lock_path_.empty()) ::unlink(private_lock_path_.c_str());
}

Result<std::unique_ptr<RestoreBackend>> RestoreBackend::Create(Variant variant, const BackendOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd ns, base::OpenNetns(options.netns));
  return std::unique_ptr<RestoreBackend>(new RestoreBackend(variant, options, std::move(ns)));
}

Result<std::unique_ptr<Backend>> NewRestoreBackend(Variant variant, const BackendOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<RestoreBackend> backend, RestoreBackend::Create(variant, options));
  return std::unique_ptr<Backend>(std::move(backend));
}

Result<SubprocessResult> RestoreBackend::Run(base::SubprocessOptions options, int netns_fd) const {
  options.netns_fd = netns_fd;
  options.timeout = ToolTimeout(options_.wait);
  return base::RunSubprocess(options);
}

Result<std::string> RestoreBackend::PrivateLockFile() {
  if (!private_lock_path_.empty()) return private_lock_path_;
  // Next to the real lock (same trust as its directory); O_EXCL via mkstemp, so nothing can be planted there.
  std::string dir = options_.xtables_lock_path;
  size_t slash = dir.rfind('/');
  dir = slash == std::string::npos || slash == 0 ? "/run" : dir.substr(0, slash);
  std::string tmpl = dir + "/.iptkit-xtables-private-XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return base::ErrnoToStatus(errno, "mkstemp " + tmpl);
  ::close(fd);
  private_lock_path_ = tmpl;
  return private_lock_path_;
}

std::vector<std::pair<std::string, std::string>> RestoreBackend::ChildEnv() const {
  if (private_lock_path_.empty()) return {};
  return {{"XTABLES_LOCKFILE", private_lock_path_}};
}

Result<RestoreBackend::SaveOutput> RestoreBackend::RunSave(Variant variant, Family family,
                                                           const std::optional<std::string>& table, int netns_fd,
                                                           bool strict) const {
  const std::string tool = IptablesToolPath(variant, family, "-save");
  std::vector<std::string> argv = {tool, "-c"};
  // iptables-legacy-save -t TABLE instantiates that table in the kernel (the module's table is created on first
  // use), after which iptables-nft-save in the same netns warns about legacy tables. A read must change
  // nothing, so legacy always saves everything and the wanted table is picked from the parsed result.
  if (table && variant == Variant::kNft) {
    argv.push_back("-t");
    argv.push_back(*table);
  }
  base::SubprocessOptions cmd = Cmd(tool, argv).Env(ChildEnv());
  const std::string what = base::DescribeCommand(cmd);
  IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r, Run(std::move(cmd), netns_fd));
  if (r.exit_code != 0) return RunFailure(what, r);

  SaveOutput out;
  for (const std::string* stream : {&r.stdout_text, &r.stderr_text}) {
    for (const std::string& line : SplitLines(*stream)) {
      bool legacy_warning = line.starts_with(kLegacyWarning);
      bool parse_failed = line.find(kParseFailed) != std::string::npos;
      bool incompatible = line.starts_with("#") && line.find(kIncompatible) != std::string::npos;
      if (!legacy_warning && !parse_failed && !incompatible) continue;
      // "iptables-legacy tables present" says the OTHER variant holds tables too; the nft view itself is
      // complete, so it is a warning (Info() and declarative apply report it: those rules judge packets as
      // well), not a partial snapshot. A failed rule parse or an incompatible table is.
      if (strict && !legacy_warning) {
        return Status::FailedPrecondition(what + " did not print a complete snapshot (" + Trim(line) +
                                          "); refusing to use partial output");
      }
      if (incompatible) out.incompatible_tables.push_back(IncompatibleTableName(line));
      out.warnings.push_back(Trim(line));
    }
  }
  std::set<std::string> suspect;
  out.ruleset = ParseSavePerTable(r.stdout_text, family, tool, &suspect);
  // A table's broken text can pose as other tables. On nft each suspect table is saved again alone (-t never
  // creates a table there): that text holds only the table's own rules, so a table another one's comment imitated
  // comes back clean, and the broken one stays marked. (Legacy -t would instantiate a missing table; there every
  // suspect table stays marked.)
  if (!table && variant == Variant::kNft) {
    for (const std::string& name : suspect) {
      base::SubprocessOptions one = Cmd(tool, {tool, "-c", "-t", name}).Env(ChildEnv());
      const std::string what_one = base::DescribeCommand(one);
      IPTKIT_ASSIGN_OR_RETURN(SubprocessResult again, Run(std::move(one), netns_fd));
      if (again.exit_code != 0) return RunFailure(what_one, again);
      Ruleset alone = ParseSavePerTable(again.stdout_text, family, tool, nullptr);
      const Table* fixed = alone.FindTable(name);
      auto it = std::find_if(out.ruleset.tables.begin(), out.ruleset.tables.end(),
                             [&](const Table& t) { return t.name == name; });
      if (fixed != nullptr && it != out.ruleset.tables.end()) *it = *fixed;
    }
  }
  if (table) std::erase_if(out.ruleset.tables, [&](const Table& t) { return t.name != *table; });
  out.text = std::move(r.stdout_text);
  return out;
}

std::optional<Ruleset> RestoreBackend::CachedView(const Ruleset& cached, const std::optional<std::string>& table) {
  if (!table) {
    ++read_stats_.cache_hits;
    return cached;
  }
  // A table the kernel does not have is not in the cache: the save path prints it as freshly created.
  const Table* t = cached.FindTable(*table);
  if (t == nullptr) return std::nullopt;
  ++read_stats_.cache_hits;
  return Ruleset{.family = cached.family, .tables = {*t}};
}

Result<Ruleset> RestoreBackend::Read(Family family, const std::optional<std::string>& table, bool fresh_counters) {
  if (variant_ == Variant::kNft) return ReadNft(family, table, fresh_counters);
  return ReadLegacy(family, table, fresh_counters);
}

namespace {

// Whether `tables` are exactly the tables of `fp`, in its order (iptables-legacy-save's order).
// Marks tables whose rule count differs from the kernel's blob (a rule iptables-legacy-save printed in a form that
// parsed as something else). Only tables whose fingerprint did not change during the save are judged: for the
// others the save's own atomic read of the table stands.
void CrossCheckLegacy(Ruleset& rs, const legacy::Fingerprint& before, const legacy::Fingerprint& after) {
  auto find = [](const legacy::Fingerprint& fp, const std::string& name) -> const legacy::TableFingerprint* {
    for (const legacy::TableFingerprint& t : fp) {
      if (t.name == name) return &t;
    }
    return nullptr;
  };
  for (Table& t : rs.tables) {
    if (!t.unrepresentable_reason.empty()) continue;
    const legacy::TableFingerprint* b = find(before, t.name);
    const legacy::TableFingerprint* a = find(after, t.name);
    if (b == nullptr || a == nullptr || !(*a == *b)) continue;
    size_t saved = 0;
    for (const Chain& c : t.chains) saved += c.rules.size();
    if (saved != b->rules) {
      t.unrepresentable_reason = "iptables-legacy-save shows " + std::to_string(saved) + " rules, the kernel holds " +
                                 std::to_string(b->rules);
    }
  }
}

bool SameTables(const std::vector<Table>& tables, const legacy::Fingerprint& fp) {
  if (tables.size() != fp.size()) return false;
  for (size_t i = 0; i < fp.size(); ++i) {
    if (tables[i].name != fp[i].name) return false;
  }
  return true;
}

// Puts `tables` in the order of `fp`; false when the two do not hold the same tables.
bool OrderLike(std::vector<Table>& tables, const legacy::Fingerprint& fp) {
  if (tables.size() != fp.size()) return false;
  std::vector<Table> ordered;
  ordered.reserve(fp.size());
  for (const legacy::TableFingerprint& t : fp) {
    auto it = std::find_if(tables.begin(), tables.end(), [&](const Table& x) { return x.name == t.name; });
    if (it == tables.end()) return false;
    ordered.push_back(std::move(*it));
  }
  tables = std::move(ordered);
  return true;
}

}  // namespace

Result<legacy::XtablesProbe*> RestoreBackend::XtProbe() {
  if (!xt_probe_) {
    auto probe = legacy::XtablesProbe::Open(netns_.get());
    if (!probe.ok()) return probe.status().WithContext("opening the x_tables probe");
    xt_probe_ = std::move(probe).value();
  }
  return xt_probe_.get();
}

Result<Ruleset> RestoreBackend::ReadLegacy(Family family, const std::optional<std::string>& table,
                                           bool fresh_counters) {
  constexpr int kAttempts = 3;
  // iptables-legacy-save always prints the whole family here (RunSave), so every save can fill the cache.
  auto save_all = [&]() -> Result<SaveOutput> {
    ++read_stats_.saves;
    return RunSave(variant_, family, std::nullopt, netns_.get(), /*strict=*/true);
  };
  auto pick = [&](Ruleset rs) {
    if (table) std::erase_if(rs.tables, [&](const Table& t) { return t.name != *table; });
    return rs;
  };
  // Cached only when read under our xtables lock: then no lock-respecting writer ran during the save, so an
  // unchanged fingerprint cannot hide a change made and undone while save was reading (A→B→A).
  const bool cacheable = lock_state_->depth > 0;
  auto probe = XtProbe();
  for (int attempt = 1;; ++attempt) {
    Result<legacy::Fingerprint> before =
        probe.ok() ? (*probe)->Read(family) : Result<legacy::Fingerprint>(probe.status());
    if (!before.ok()) {
      // No change detector: an uncached read, and no cached answer either.
      snapshot_cache_.erase(family);
      IPTKIT_ASSIGN_OR_RETURN(SaveOutput save, save_all());
      return pick(std::move(save.ruleset));
    }
    auto it = snapshot_cache_.find(family);
    if (it != snapshot_cache_.end() && it->second.fingerprint != *before) {
      snapshot_cache_.erase(it);
      it = snapshot_cache_.end();
    }
    if (it != snapshot_cache_.end() && cacheable) it->second.verified_epoch = lock_state_->epoch;
    if (!fresh_counters && it != snapshot_cache_.end()) {
      if (auto hit = CachedView(it->second.ruleset, table)) return *std::move(hit);
    }
    IPTKIT_ASSIGN_OR_RETURN(SaveOutput save, save_all());
    auto after = (*probe)->Read(family);
    if (after.ok()) CrossCheckLegacy(save.ruleset, *before, *after);
    const bool consistent = after.ok() && *after == *before && SameTables(save.ruleset.tables, *before);
    // The rules' kernel forms come from the blobs: a table that changed during the save cannot be judged.
    if (!consistent && attempt < kAttempts) continue;
    MarkLossyLegacy(family, save.ruleset, *before, after);
    if (!cacheable) return pick(std::move(save.ruleset));
    if (consistent) {
      CachedSnapshot entry;
      entry.ruleset = save.ruleset;
      entry.fingerprint = std::move(*before);
      entry.verified_epoch = lock_state_->epoch;
      snapshot_cache_[family] = std::move(entry);
    }
    return pick(std::move(save.ruleset));
  }
}

void RestoreBackend::MarkLossyLegacy(Family family, Ruleset& rs, const legacy::Fingerprint& before,
                                     const Result<legacy::Fingerprint>& after) {
  auto find = [](const legacy::Fingerprint& fp, const std::string& name) -> const legacy::TableFingerprint* {
    for (const legacy::TableFingerprint& t : fp) {
      if (t.name == name) return &t;
    }
    return nullptr;
  };
  for (Table& t : rs.tables) {
    if (!t.unrepresentable_reason.empty()) continue;
    const legacy::TableFingerprint* b = find(before, t.name);
    const legacy::TableFingerprint* a = after.ok() ? find(*after, t.name) : nullptr;
    if (b == nullptr || a == nullptr || !(*a == *b)) {
      bool empty = true;
      for (const Chain& c : t.chains) empty = empty && c.rules.empty();
      if (!empty) t.unrepresentable_reason = "the table changed during each of 3 reads; read it again";
      continue;
    }
    Result<legacy::ChainRuleForms> forms = legacy::RuleForms(family, *b);
    if (!forms.ok()) {
      t.unrepresentable_reason = "cannot read the kernel's rules: " + forms.status().message();
      continue;
    }
    KernelRuleForms kernel;
    for (auto& [chain, list] : *forms) {
      for (std::string& form : list) kernel[chain].push_back({std::move(form), ""});
    }
    Status marked = MarkLossyRules(family, t, kernel);
    if (!marked.ok()) t.unrepresentable_reason = marked.message();
  }
}

void RestoreBackend::UpdateLegacyCache(const TableBatch& batch) {
  auto it = snapshot_cache_.find(batch.family);
  if (it == snapshot_cache_.end()) return;
  auto after = xt_probe_->Read(batch.family);
  if (!after.ok()) {
    snapshot_cache_.erase(it);
    return;
  }
  std::vector<Table>& tables = it->second.ruleset.tables;
  auto same = std::find_if(tables.begin(), tables.end(), [&](const Table& t) { return t.name == batch.table; });
  if (same == tables.end()) {
    auto fresh = NewTable(batch.table);
    if (fresh.ok()) {
      tables.push_back(*std::move(fresh));
      same = tables.end() - 1;
    }
  }
  // A failed simulation leaves the table half changed: the entry goes.
  if (same == tables.end() || !SimulateOnCache(*same, batch)) {
    snapshot_cache_.erase(it);
    return;
  }
  // A table the restore created takes its place in /proc/net/ip_tables_names, which is save's order.
  if (!OrderLike(tables, *after)) {
    snapshot_cache_.erase(it);
    return;
  }
  it->second.fingerprint = std::move(*after);
  it->second.verified_epoch = lock_state_->depth > 0 ? lock_state_->epoch : 0;
}

Result<nft::NetlinkClient*> RestoreBackend::Netlink() {
  if (!netlink_) {
    auto client = nft::NetlinkClient::Open(netns_.get());
    if (!client.ok()) return client.status().WithContext("opening the nf_tables netlink socket");
    netlink_ = std::move(client).value();
  }
  return netlink_.get();
}

bool RestoreBackend::Unchanged(Family family) {
  auto it = snapshot_cache_.find(family);
  if (it == snapshot_cache_.end()) return false;
  if (variant_ == Variant::kNft) {
    Result<nft::NetlinkClient*> nl = Netlink();
    if (!nl.ok()) return false;
    Result<uint32_t> generation = (*nl)->GenerationId();
    return generation.ok() && *generation == it->second.generation;
  }
  // Legacy: as ReadLegacy's cache hit — byte-equal rule blobs are equal rulesets.
  Result<legacy::XtablesProbe*> probe = XtProbe();
  if (!probe.ok()) return false;
  Result<legacy::Fingerprint> now = (*probe)->Read(family);
  if (!now.ok() || *now != it->second.fingerprint) return false;
  if (lock_state_->depth > 0) it->second.verified_epoch = lock_state_->epoch;
  return true;
}

Result<Ruleset> RestoreBackend::ReadNft(Family family, const std::optional<std::string>& table, bool fresh_counters) {
  // A save and a dump of different generations cannot be compared: a count that differs only because a foreign
  // writer committed in between must not mark a table unrepresentable (that was a permanent 412 for a transient
  // race). Re-read, with a short growing pause so that a busy writer's next commit can pass, then give up with
  // Aborted, which callers retry.
  constexpr int kAttempts = 5;
  IPTKIT_ASSIGN_OR_RETURN(nft::NetlinkClient * nl, Netlink());
  for (int attempt = 1;; ++attempt) {
    IPTKIT_ASSIGN_OR_RETURN(uint32_t before, nl->GenerationId());
    if (!fresh_counters) {
      auto it = snapshot_cache_.find(family);
      if (it != snapshot_cache_.end() && it->second.generation == before) {
        if (auto hit = CachedView(it->second.ruleset, table)) return *std::move(hit);
      }
    }
    ++read_stats_.saves;
    IPTKIT_ASSIGN_OR_RETURN(SaveOutput save, RunSave(variant_, family, table, netns_.get(), /*strict=*/true));
    Result<KernelView> view = nl->Dump(family, table, /*rule_forms=*/true);
    if (!view.ok() && view.status().code() != StatusCode::kAborted) {
      return view.status().WithContext("cross-checking iptables-nft-save with the kernel");
    }
    IPTKIT_ASSIGN_OR_RETURN(uint32_t after, nl->GenerationId());
    const bool consistent = view.ok() && after == before;
    if (!consistent) {
      if (attempt < kAttempts) {
        std::this_thread::sleep_for(std::chrono::microseconds(200 * attempt + (before % 7) * 50));
        continue;
      }
      // A writer that commits faster than a save runs (a loop of iptables-nft calls) changes the generation during
      // every read. The last read is still usable when the save and the dump agree on every chain's rule count
      // and nothing in the dump is lossy: the save is then some generation's whole table, as good a snapshot as
      // any for planning (commits are guarded by -C preconditions). It is not cached: its generation is unknown.
      bool agree = view.ok();
      for (const Table& t : save.ruleset.tables) {
        if (!agree) break;
        auto it = view->find({NftFamily(family), t.name});
        agree = t.unrepresentable_reason.empty() && CrossCheck(t, it == view->end() ? nullptr : &it->second).empty();
      }
      if (!agree) {
        return Status::Aborted("the nf_tables ruleset changed during each of " + std::to_string(kAttempts) +
                               " reads (a busy writer); retry");
      }
    }
    for (Table& t : save.ruleset.tables) {
      auto it = view->find({NftFamily(family), t.name});
      if (t.unrepresentable_reason.empty()) {
        t.unrepresentable_reason = CrossCheck(t, it == view->end() ? nullptr : &it->second);
      }
      if (it == view->end()) continue;
      KernelRuleForms kernel;
      for (auto& [chain, kc] : it->second.chains) {
        for (nft::KernelRule& r : kc.rule_list) {
          kernel[chain].push_back(
              {std::move(r.form), r.lossy.empty() ? "" : r.lossy + " (nft handle " + std::to_string(r.handle) + ")"});
        }
      }
      Status marked = MarkLossyRules(family, t, kernel);
      if (!marked.ok() && t.unrepresentable_reason.empty()) t.unrepresentable_reason = marked.message();
    }
    if (!consistent) {
      // The kernel forms of a read across generations may belong to other rules than the save shows at the same
      // place: a rule judged lossy (or a table judged unrepresentable) there is not known to be so. Retry later.
      for (const Table& t : save.ruleset.tables) {
        bool doubtful = !t.unrepresentable_reason.empty();
        for (const Chain& c : t.chains) {
          for (const Rule& r : c.rules) doubtful = doubtful || !r.lossy.empty();
        }
        if (doubtful) {
          return Status::Aborted("the nf_tables ruleset changed during each of " + std::to_string(kAttempts) +
                                 " reads (a busy writer); retry");
        }
      }
    }
    if (!table && consistent) snapshot_cache_[family] = CachedSnapshot{before, save.ruleset, {}};
    return std::move(save.ruleset);
  }
}

bool RestoreBackend::SimulateOnCache(Table& table, const TableBatch& batch) const {
  if (batch.flush_table || batch.with_counters) return false;
  if (!table.unrepresentable_reason.empty()) return false;
  // Rules the cache would hold must be exactly what the save tool prints: outputs of Canonicalize, or rules
  // the snapshot already holds (e.g. re-inserted by a rollback). Checked for every op before the table changes.
  std::optional<std::set<std::string>> snapshot_specs;
  auto canonical = [&](const Rule& rule) {
    const std::string spec = FormatRuleSpec(rule);
    if (canonical_outputs_.count({batch.family, batch.table, spec})) return true;
    if (!snapshot_specs) {
      snapshot_specs.emplace();
      for (const Chain& c : table.chains) {
        for (const Rule& r : c.rules) snapshot_specs->insert(FormatRuleSpec(r));
      }
    }
    return snapshot_specs->count(spec) != 0;
  };
  for (const TableOp& op : batch.ops) {
    const bool adds =
        op.kind == TableOp::Kind::kAppend || op.kind == TableOp::Kind::kInsert || op.kind == TableOp::Kind::kReplace;
    if (adds && !canonical(op.rule)) return false;
  }
  // In place: copying a 20,000-rule table per commit cost more than the commit's planning (daemon benchmark).
  for (const TableOp& op : batch.ops) {
    if (!ApplyTableOp(batch.family, table, op, /*with_counters=*/false).ok()) return false;
  }
  // Both save tools list user chains sorted by name (iptables 1.8.9 nft-cache.c keeps them sorted; libiptc
  // inserts new chains in name order, libiptc.c iptcc_chain_index / iptc_insert_chain).
  auto user = std::stable_partition(table.chains.begin(), table.chains.end(),
                                    [&](const Chain& c) { return IsBuiltinChain(table.name, c.name); });
  std::sort(user, table.chains.end(), [](const Chain& a, const Chain& b) { return a.name < b.name; });
  return true;
}

void RestoreBackend::UpdateSnapshotCache(const TableBatch& batch, uint32_t generation_before) {
  auto after = netlink_->GenerationId();
  if (!after.ok()) {
    snapshot_cache_.clear();
    return;
  }
  // Entries of another generation were stale before this commit already.
  std::erase_if(snapshot_cache_, [&](const auto& e) { return e.second.generation != generation_before; });
  // -A -I -D -R -N -X -E always make iptables-nft-restore send a kernel message; -C never does (answered from
  // its cache); -F -Z -P may or may not (nothing to flush or zero, policy unchanged).
  bool surely_commits = batch.flush_table;
  for (const TableOp& op : batch.ops) {
    if (op.kind != TableOp::Kind::kCheck && op.kind != TableOp::Kind::kFlush && op.kind != TableOp::Kind::kZero &&
        op.kind != TableOp::Kind::kPolicy) {
      surely_commits = true;
    }
  }
  // Unchanged id: nothing was committed (a batch that surely commits cannot have succeeded so: distrust it).
  // One more: exactly one transaction ran, ours when the batch surely committed. Else: foreign or unknown.
  const bool nothing_committed = *after == generation_before && !surely_commits;
  const bool only_ours = *after == generation_before + 1 && surely_commits;
  if (nothing_committed) return;  // the kernel is as cached (counters aside)
  if (!only_ours) {
    snapshot_cache_.clear();
    return;
  }
  auto it = snapshot_cache_.find(batch.family);
  if (it != snapshot_cache_.end()) {
    std::vector<Table>& tables = it->second.ruleset.tables;
    auto same = std::find_if(tables.begin(), tables.end(), [&](const Table& t) { return t.name == batch.table; });
    if (same == tables.end()) {
      // A new table takes its place in iptables-nft-save's order.
      auto fresh = NewTable(batch.table);
      if (fresh.ok()) {
        const auto& order = KnownTables();
        auto rank = [&](const std::string& name) {
          return std::find(order.begin(), order.end(), name) - order.begin();
        };
        auto pos = std::find_if(tables.begin(), tables.end(),
                                [&](const Table& t) { return rank(t.name) > rank(batch.table); });
        same = tables.insert(pos, *std::move(fresh));
      }
    }
    // A failed simulation leaves the table half changed: the entry goes.
    if (same == tables.end() || !SimulateOnCache(*same, batch)) snapshot_cache_.erase(it);
  }
  for (auto& [family, entry] : snapshot_cache_) entry.generation = *after;
}

Status RestoreBackend::RunRestore(Family family, const std::string& table, const std::string& text, bool noflush,
                                  bool counters, int netns_fd, std::string* stderr_text) const {
  const std::string tool = IptablesToolPath(variant_, family, "-restore");
  std::vector<std::string> argv = {tool};
  if (noflush) argv.push_back("--noflush");
  argv.push_back("--wait");
  argv.push_back(WaitSeconds(options_.wait));
  if (counters) argv.push_back("-c");
  base::SubprocessOptions cmd = Cmd(tool, argv).Stdin(text).Env(ChildEnv());
  const std::string what = base::DescribeCommand(cmd);
  IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r, Run(std::move(cmd), netns_fd));
  if (r.exit_code == 0) return Status::Ok();  // stderr may carry harmless noise (connlabel.conf warnings)
  if (stderr_text != nullptr) *stderr_text = r.stderr_text;
  return MapRestoreFailure(what, family, table, text, r);
}

Result<CommitReport> RestoreBackend::Commit(const std::vector<CommitTable>& tables) {
  return CommitTableByTable(tables, traits_.name, [this](const TableBatch& batch) { return CommitOneTable(batch); });
}

Status RestoreBackend::CommitOneTable(const TableBatch& batch) {
  if (batch.table.empty() || batch.table.find_first_of(" \t\n\r") != std::string::npos) {
    return Status::InvalidArgument("invalid table name '" + batch.table + "'");
  }
  const std::string text = RenderRestoreBlock(batch);
  std::optional<base::FileLock> lock;
  if (variant_ == Variant::kLegacy) {
    IPTKIT_RETURN_IF_ERROR(PrivateLockFile().status());
    if (lock_state_->depth == 0) {
      IPTKIT_ASSIGN_OR_RETURN(base::FileLock held, AcquireXtablesLock(options_.xtables_lock_path, options_.wait));
      lock.emplace(std::move(held));
    }
  }
  if (variant_ == Variant::kLegacy) {
    // The xtables lock is held from here to the end (ours or the LockGuard's). A cached family is kept only when
    // the kernel still matches it now, so the simulation below starts from the true table.
    bool track = false;
    if (auto it = snapshot_cache_.find(batch.family); it != snapshot_cache_.end()) {
      if (lock_state_->depth > 0 && it->second.verified_epoch == lock_state_->epoch) {
        track = true;  // matched the kernel during this very hold of the lock
      } else {
        auto now = xt_probe_->Read(batch.family);
        track = now.ok() && *now == it->second.fingerprint;
        if (!track) snapshot_cache_.erase(it);
      }
    }
    Status status =
        RunRestore(batch.family, batch.table, text, /*noflush=*/!batch.flush_table, batch.with_counters, netns_.get());
    // A failed run replaced nothing (libiptc replaces the table once, at COMMIT); the next Read checks anyway.
    if (status.ok() && track) UpdateLegacyCache(batch);
    return status;
  }
  if (snapshot_cache_.empty()) {
    return RunRestore(batch.family, batch.table, text, /*noflush=*/!batch.flush_table, batch.with_counters,
                      netns_.get());
  }
  auto before = netlink_->GenerationId();
  if (!before.ok()) snapshot_cache_.clear();
  Status status =
      RunRestore(batch.family, batch.table, text, /*noflush=*/!batch.flush_table, batch.with_counters, netns_.get());
  // A failed run committed nothing (iptables-nft-restore aborts the whole batch); the next Read checks the id.
  if (status.ok() && before.ok()) UpdateSnapshotCache(batch, *before);
  return status;
}

Result<std::unique_ptr<LockGuard>> RestoreBackend::Lock(std::chrono::milliseconds wait) {
  if (variant_ == Variant::kNft) return std::unique_ptr<LockGuard>(std::make_unique<NoopGuard>());
  IPTKIT_RETURN_IF_ERROR(PrivateLockFile().status());
  std::optional<base::FileLock> lock;
  if (lock_state_->depth == 0) {
    IPTKIT_ASSIGN_OR_RETURN(base::FileLock held, AcquireXtablesLock(options_.xtables_lock_path, wait));
    lock.emplace(std::move(held));
    ++lock_state_->epoch;
  }
  return std::unique_ptr<LockGuard>(std::make_unique<XtablesLockGuard>(std::move(lock), lock_state_));
}

// ---- Info and detection ----

Result<FirewallInfo> RestoreBackend::Info() {
  FirewallInfo info;
  info.backend = traits_.name;
  info.netns = options_.netns;

  // One `nft -j list ruleset` serves the cross-check of both families and the foreign base chains.
  KernelView view;
  bool have_view = false;
  {
    base::SubprocessOptions cmd = Cmd(kNft, {"nft", "-j", "list", "ruleset"});
    const std::string what = base::DescribeCommand(cmd);
    auto r = Run(std::move(cmd), netns_.get());
    if (!r.ok()) {
      info.warnings.push_back(what + ": " + r.status().message());
    } else if (r->exit_code != 0) {
      info.warnings.push_back(what + " exited " + std::to_string(r->exit_code) + ": " + Trim(r->stderr_text));
    } else {
      auto parsed = ParseNftJson(r->stdout_text);
      if (parsed.ok()) {
        view = std::move(parsed).value();
        have_view = true;
      } else {
        info.warnings.push_back(parsed.status().message());
      }
    }
  }

  for (Variant v : {Variant::kNft, Variant::kLegacy}) {
    VariantTables vt;
    vt.variant = std::string(VariantName(v));
    base::SubprocessOptions cmd = Cmd(IptablesToolPath(v, Family::kIPv4, ""), {"iptables", "-V"});
    auto version = Run(std::move(cmd), -1);
    if (version.ok() && version->exit_code == 0)
      vt.version = Trim(version->stdout_text);
    else
      vt.version = "unavailable";
    size_t rules_total = 0;
    for (Family family : {Family::kIPv4, Family::kIPv6}) {
      // Never "-t TABLE" here: legacy would load (create) the table, and an nft save would then warn forever.
      auto save = RunSave(v, family, std::nullopt, netns_.get(), /*strict=*/false);
      if (!save.ok()) {
        info.warnings.push_back(std::string(VariantName(v)) + " " + std::string(FamilyName(family)) + ": " +
                                save.status().message());
        continue;
      }
      for (const Table& t : save->ruleset.tables) {
        VariantTables::TableRules tr;
        tr.family = family;
        tr.table = t.name;
        for (const Chain& c : t.chains) tr.rules += c.rules.size();
        if (v == Variant::kNft && have_view) {
          auto it = view.find({NftFamily(family), t.name});
          tr.representable = CrossCheck(t, it == view.end() ? nullptr : &it->second).empty();
        }
        rules_total += tr.rules;
        vt.tables.push_back(tr);
      }
      for (const std::string& name : save->incompatible_tables) {
        VariantTables::TableRules tr;
        tr.family = family;
        tr.table = name;
        tr.representable = false;
        auto it = view.find({NftFamily(family), name});
        if (it != view.end()) {
          for (const auto& [chain, kc] : it->second.chains) tr.rules += kc.rules;
        }
        auto same = std::find_if(vt.tables.begin(), vt.tables.end(),
                                 [&](const auto& x) { return x.family == family && x.table == name; });
        if (same != vt.tables.end()) {
          same->representable = false;
          rules_total += tr.rules - std::min(tr.rules, same->rules);
          same->rules = std::max(same->rules, tr.rules);
        } else {
          rules_total += tr.rules;
          vt.tables.push_back(tr);
        }
      }
    }
    if (v != variant_ && rules_total > 0) {
      info.warnings.push_back("iptables-" + vt.variant + " also holds " + std::to_string(rules_total) +
                              " rule(s); they judge packets too (an ACCEPT here does not override a DROP there)");
    }
    info.variants.push_back(std::move(vt));
  }

  for (const auto& [key, table] : view) {
    const auto& [family, table_name] = key;
    bool iptables_table = (family == "ip" || family == "ip6") && !BuiltinChains(table_name).empty();
    for (const auto& [chain, kc] : table.chains) {
      if (!kc.base) continue;
      if (iptables_table && IsBuiltinChain(table_name, chain)) continue;
      info.foreign_nft.push_back(ForeignNftChain{family, table_name, chain, kc.hook, kc.priority});
    }
  }
  if (!info.foreign_nft.empty()) {
    info.warnings.push_back(std::to_string(info.foreign_nft.size()) +
                            " nft base chain(s) of other tools also judge packets (see foreign_nft)");
  }
  return info;
}

Result<VariantRuleCounts> CountRulesPerVariant(const BackendOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd ns, base::OpenNetns(options.netns));
  VariantRuleCounts counts;
  // nft: the rules of iptables-nft's tables (ip/ip6 filter, nat, ...) from one netlink dump per family.
  Result<std::unique_ptr<nft::NetlinkClient>> netlink = nft::NetlinkClient::Open(ns.get());
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    if (!netlink.ok()) {
      counts.errors.push_back("nf_tables: " + netlink.status().message());
      break;
    }
    Result<nft::KernelView> view = (*netlink)->Dump(family, std::nullopt);
    if (!view.ok()) {
      counts.errors.push_back("nf_tables dump of " + std::string(FamilyName(family)) + ": " + view.status().message());
      continue;
    }
    for (const auto& [where, table] : *view) {
      const std::vector<std::string>& known = KnownTables();
      if (std::find(known.begin(), known.end(), where.second) == known.end()) continue;
      for (const auto& [name, chain] : table.chains) counts.nft += chain.rules;
    }
  }
  // legacy: the x_tables rule blobs of the tables that exist (never instantiating one).
  Result<std::unique_ptr<legacy::XtablesProbe>> probe = legacy::XtablesProbe::Open(ns.get());
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    if (!probe.ok()) {
      counts.errors.push_back("x_tables: " + probe.status().message());
      break;
    }
    Result<legacy::Fingerprint> fp = (*probe)->Read(family);
    if (!fp.ok()) {
      counts.errors.push_back("x_tables of " + std::string(FamilyName(family)) + ": " + fp.status().message());
      continue;
    }
    for (const legacy::TableFingerprint& t : *fp) counts.legacy += t.rules;
  }
  return counts;
}

Variant PickVariant(const VariantRuleCounts& counts) {
  return counts.legacy > 0 && counts.nft == 0 ? Variant::kLegacy : Variant::kNft;
}

}  // namespace iptkit::backend
