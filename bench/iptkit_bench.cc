// iptkit_bench: iptkit vs the iptables CLI, iptables-restore --noflush and python-iptables, side by side.
//
// For each iptables variant (nft, legacy) and each size (default 100 and 10,000 rules) it creates a fresh
// network namespace (iptkit-bench-<pid>-<variant>-<size>), loads the rules into filter INPUT once through
// iptables-restore, and times per tool: (a) append one rule, (b) delete it by spec, (c) list the filter table.
// Each tool's first round is an untimed warm-up whose effect is checked against iptables-save; afterwards the
// ruleset must equal the loaded one again. Prints a Markdown report on stdout (progress on stderr).
// Needs root; touches nothing outside the namespaces it creates, and deletes them (also on SIGINT/SIGTERM).
//
//   sudo build/bench/iptkit_bench --python-script bench/pyiptc_bench.py            # or bench/run.sh
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "bench/harness.h"
#include "iptkit/dialect.h"
#include "iptkit/firewall.h"

namespace iptkit::bench {
namespace {

// iptkit through the public API: one Firewall per namespace (as a daemon or a long-lived tool keeps it), one
// single-op Transaction per change, List() for the structured listing.
class IptkitContender : public Contender {
 public:
  static Result<std::unique_ptr<Contender>> Open(const std::string& netns, BackendKind kind) {
    FirewallOptions options;
    options.netns = netns;
    options.backend = kind;
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Firewall> firewall, Firewall::Open(options));
    return std::unique_ptr<Contender>(new IptkitContender(std::move(firewall)));
  }
  std::string name() const override { return "iptkit"; }
  Status Append() override {
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseRuleSpec(kProbeRule, Family::kIPv4));
    Transaction txn;
    txn.Append(Family::kIPv4, "filter", kChain, std::move(rule));
    return firewall_->Commit(txn).status();
  }
  Status Delete() override {
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseRuleSpec(kProbeRule, Family::kIPv4));
    Transaction txn;
    txn.Delete(Family::kIPv4, "filter", kChain, std::move(rule));
    return firewall_->Commit(txn).status();
  }
  Result<size_t> List() override {
    IPTKIT_ASSIGN_OR_RETURN(Ruleset ruleset, firewall_->List(Family::kIPv4, "filter"));
    const Table* table = ruleset.FindTable("filter");
    const Chain* chain = table ? table->FindChain(kChain) : nullptr;
    if (chain == nullptr) return Status::Internal("List() returned no filter INPUT chain");
    return chain->rules.size();
  }

 private:
  explicit IptkitContender(std::unique_ptr<Firewall> firewall) : firewall_(std::move(firewall)) {}
  std::unique_ptr<Firewall> firewall_;
};

Result<std::unique_ptr<Contender>> MakeIptkit(const std::string& netns, const Variant& variant) {
  auto contender = IptkitContender::Open(netns, variant.name == "nft" ? BackendKind::kNft : BackendKind::kLegacy);
  if (!contender.ok()) return contender.status().WithContext("Firewall::Open");
  return contender;
}

int Main(int argc, char** argv) {
  BenchConfig config;
  CLI::App app{"iptkit vs iptables CLI / iptables-restore / python-iptables (Markdown report on stdout)"};
  app.add_option("--sizes", config.sizes, "rule counts loaded into filter INPUT")->delimiter(',');
  app.add_option("--variants", config.variants, "nft,legacy")->delimiter(',');
  app.add_option("--tools", config.tools, "iptkit,cli,restore,python")->delimiter(',');
  app.add_option("--reps", config.reps, "timed repetitions per op (at most)");
  app.add_option("--min-reps", config.min_reps, "repetitions kept even when over the time budget");
  app.add_option("--budget", config.budget_s, "seconds per scenario for iptkit/CLI/restore before stopping early");
  app.add_option("--python-budget", config.python_budget_s, "seconds per op kind in the python driver");
  app.add_option("--python", config.python, "python3 that has python-iptables (Debian: /usr/bin/python3)");
  app.add_option("--python-script", config.python_script, "path of bench/pyiptc_bench.py");
  CLI11_PARSE(app, argc, argv);

  if (Status valid = ValidateConfig(config); !valid.ok()) {
    std::cerr << valid.message() << "\n";
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << "iptkit_bench must run as root (it creates network namespaces)\n";
    return 2;
  }
  InstallNetnsCleanupHandlers();

  bool failed = false;
  std::cout << RunBenchmark(config, MakeIptkit, &failed);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
