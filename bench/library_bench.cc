// iptkit_library_bench: a warm library handle (Firewall on the native backend, opened once per namespace, as a daemon
// keeps it) vs iptables-nft processes, side by side in one run, on nf_tables.
//
// For each size (default 100, 1,000 and 10,000 rules in filter INPUT) it creates a fresh network namespace
// (iptkit-libbench-<pid>-<size>), loads the rules through iptables-nft-restore and runs rounds; in each round:
//   append      Firewall::Commit of one append       vs  iptables-nft -A INPUT <rule>
//   delete      Firewall::Commit of one delete by spec  vs  iptables-nft -D INPUT <rule>
//   batch 100   one Transaction of 100 appends        vs  100 iptables-nft -A processes (sum)
//   read        Firewall::List(IPv4, "filter"): the structured model, counters read now  vs  iptables-nft-save -t
//   filter
// Two library handles are timed: the default one and one with FirewallOptions::event_cache (the daemon's). Each
// library op is undone through the same handle (not timed), so the handle stays warm; iptables-nft ops are undone
// with iptables-nft. The first round is a checked warm-up (rule counts against iptables-nft-save). Prints a Markdown
// report (medians; ratio iptables-nft ÷ iptkit, so above 1 means the library is that many times faster) and the
// machine's load. Needs root; touches nothing outside the namespaces it creates, and deletes them.
//
//   sudo build/release/bench/iptkit_library_bench [--sizes 100,1000,10000] [--reps 7]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "bench/harness.h"
#include "iptkit/dialect.h"
#include "iptkit/firewall.h"

namespace iptkit::bench {
namespace {

constexpr const char* kIptablesNft = "/usr/sbin/iptables-nft";
constexpr const char* kIptablesNftSave = "/usr/sbin/iptables-nft-save";
constexpr int kBatch = 100;

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The i-th rule of a batch (none equal to a loaded rule).
std::string BatchRule(int i) {
  return "-s 192.168." + std::to_string(1 + i / 250) + "." + std::to_string(1 + i % 250) +
         "/32 -p tcp -m tcp --dport 8080 -j ACCEPT";
}

double Ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

Result<size_t> InputRules(int fd) {
  IPTKIT_ASSIGN_OR_RETURN(std::string save, RunProcessOk({kIptablesNftSave, "-t", "filter"}, {.netns_fd = fd}));
  return CountRuleLines(save, kChain);
}

Status Commit(Firewall& fw, const std::function<void(Transaction&)>& build) {
  Transaction txn;
  build(txn);
  return fw.Commit(txn).status();
}

Status AppendAll(Firewall& fw, const std::vector<Rule>& rules) {
  return Commit(fw, [&](Transaction& t) {
    for (const Rule& r : rules) t.Append(Family::kIPv4, "filter", kChain, r);
  });
}
Status DeleteAll(Firewall& fw, const std::vector<Rule>& rules) {
  return Commit(fw, [&](Transaction& t) {
    for (const Rule& r : rules) t.Delete(Family::kIPv4, "filter", kChain, r);
  });
}

int Main(int argc, char** argv) {
  std::vector<int> sizes = {100, 1000, 10000};
  int reps = 7;
  CLI::App app{"a warm iptkit library handle (native backend) vs iptables-nft processes (Markdown on stdout)"};
  app.add_option("--sizes", sizes, "rule counts loaded into filter INPUT")->delimiter(',');
  app.add_option("--reps", reps, "timed rounds (after one checked warm-up round)")->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::cerr << "iptkit_library_bench: must run as root (creates network namespaces)\n";
    return 2;
  }
  InstallNetnsCleanupHandlers();
  const std::string load_before = LoadAverage();
  Result<Rule> probe = ParseRuleSpec(kProbeRule, Family::kIPv4);
  if (!probe.ok()) return 1;
  std::vector<Rule> batch;
  for (int i = 0; i < kBatch; ++i) batch.push_back(*ParseRuleSpec(BatchRule(i), Family::kIPv4));

  const std::vector<std::string> ops = {"append", "delete by spec", "batch of 100 appends", "structured read"};
  const std::vector<std::string> tools = {"iptkit library", "iptkit library + event_cache", "iptables-nft"};
  std::ostringstream report;
  bool failed = false;
  for (int size : sizes) {
    auto ns = Netns::Create("iptkit-libbench-" + std::to_string(getpid()) + "-" + std::to_string(size));
    if (!ns.ok()) {
      std::cerr << ns.status().ToString() << "\n";
      return 1;
    }
    const int fd = (*ns)->fd();
    if (auto loaded = RunProcessOk({"/usr/sbin/iptables-nft-restore", "--noflush"},
                                   {.netns_fd = fd, .stdin_data = GenerateRules(size)});
        !loaded.ok()) {
      std::cerr << "loading: " << loaded.status().ToString() << "\n";
      return 1;
    }
    std::map<std::string, std::unique_ptr<Firewall>> handles;
    for (bool events : {false, true}) {
      FirewallOptions options;
      options.netns = (*ns)->name();
      options.backend = BackendKind::kNative;
      options.event_cache = events;
      auto fw = Firewall::Open(options);
      if (!fw.ok()) {
        std::cerr << "Firewall::Open: " << fw.status().ToString() << "\n";
        return 1;
      }
      handles[events ? tools[1] : tools[0]] = std::move(fw).value();
    }
    std::map<std::pair<std::string, std::string>, std::vector<double>> samples;  // (op, tool)
    std::vector<std::string> errors;
    auto check = [&](const std::string& what, size_t expected) {
      Result<size_t> n = InputRules(fd);
      if (!n.ok() || *n != expected) {
        errors.push_back(what + ": INPUT holds " + (n.ok() ? std::to_string(*n) : n.status().ToString()) +
                         " rules, expected " + std::to_string(expected));
      }
    };
    const std::vector<std::string> probe_words = Words(kProbeRule);
    auto ipt = [&](std::vector<std::string> args) -> Status {
      args.insert(args.begin(), kIptablesNft);
      return RunProcessOk(args, {.netns_fd = fd}).status();
    };
    for (int round = 0; round <= reps && errors.empty(); ++round) {
      std::cerr << "size " << size << ": round " << round << (round == 0 ? " (warm-up, checked)" : "") << "\n";
      auto keep = [&](const std::string& op, const std::string& tool, double ms) {
        if (round > 0) samples[{op, tool}].push_back(ms);
      };
      for (const std::string& tool : {tools[0], tools[1]}) {
        Firewall& fw = *handles[tool];
        // Warm: the handle has read the table (as after any earlier call).
        if (auto r = fw.List(Family::kIPv4, "filter"); !r.ok())
          errors.push_back(tool + " list: " + r.status().ToString());
        auto start = std::chrono::steady_clock::now();
        Status s = AppendAll(fw, {*probe});
        keep("append", tool, Ms(start));
        if (!s.ok()) errors.push_back(tool + " append: " + s.ToString());
        if (round == 0) check(tool + " append", size + 1);
        start = std::chrono::steady_clock::now();
        s = DeleteAll(fw, {*probe});
        keep("delete by spec", tool, Ms(start));
        if (!s.ok()) errors.push_back(tool + " delete: " + s.ToString());
        if (round == 0) check(tool + " delete", size);
        start = std::chrono::steady_clock::now();
        s = AppendAll(fw, batch);
        keep("batch of 100 appends", tool, Ms(start));
        if (!s.ok()) errors.push_back(tool + " batch: " + s.ToString());
        if (round == 0) check(tool + " batch", size + kBatch);
        if (Status u = DeleteAll(fw, batch); !u.ok()) errors.push_back(tool + " undo batch: " + u.ToString());
        start = std::chrono::steady_clock::now();
        Result<Ruleset> rs = fw.List(Family::kIPv4, "filter");
        keep("structured read", tool, Ms(start));
        if (!rs.ok()) {
          errors.push_back(tool + " read: " + rs.status().ToString());
        } else if (round == 0) {
          const Table* t = rs->FindTable("filter");
          const Chain* c = t ? t->FindChain(kChain) : nullptr;
          if (c == nullptr || c->rules.size() != static_cast<size_t>(size))
            errors.push_back(tool + " read: wrong count");
        }
      }
      // iptables-nft processes.
      auto start = std::chrono::steady_clock::now();
      Status s = ipt({"-A", kChain, "-s", "192.168.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"});
      keep("append", tools[2], Ms(start));
      if (!s.ok()) errors.push_back("iptables-nft -A: " + s.ToString());
      start = std::chrono::steady_clock::now();
      std::vector<std::string> del = {"-D", kChain};
      del.insert(del.end(), probe_words.begin(), probe_words.end());
      s = ipt(del);
      keep("delete by spec", tools[2], Ms(start));
      if (!s.ok()) errors.push_back("iptables-nft -D: " + s.ToString());
      start = std::chrono::steady_clock::now();
      for (int i = 0; i < kBatch && s.ok(); ++i) {
        std::vector<std::string> args = {"-A", kChain};
        for (const std::string& w : Words(BatchRule(i))) args.push_back(w);
        s = ipt(args);
      }
      keep("batch of 100 appends", tools[2], Ms(start));
      if (!s.ok()) errors.push_back("iptables-nft batch: " + s.ToString());
      for (int i = 0; i < kBatch && s.ok(); ++i) {
        std::vector<std::string> args = {"-D", kChain};
        for (const std::string& w : Words(BatchRule(i))) args.push_back(w);
        s = ipt(args);
      }
      start = std::chrono::steady_clock::now();
      Result<std::string> saved = RunProcessOk({kIptablesNftSave, "-t", "filter"}, {.netns_fd = fd});
      keep("structured read", tools[2], Ms(start));
      if (!saved.ok()) errors.push_back("iptables-nft-save: " + saved.status().ToString());
      if (round == 0) check("iptables-nft round", size);
    }
    report << "\n#### " << size << " rules in filter INPUT (medians of " << reps
           << "; ratio = iptables-nft ÷ iptkit, above 1 = the library is faster)\n\n"
           << "| op | iptkit library ms | + event_cache ms | iptables-nft ms | ratio (library) | ratio (+ event_cache) "
              "|\n|---|--:|--:|--:|--:|--:|\n";
    auto fmt = [](double v, int digits) {
      std::ostringstream o;
      o.setf(std::ios::fixed);
      o.precision(digits);
      o << v;
      return o.str();
    };
    for (const std::string& op : ops) {
      double med[3];
      bool ok = true;
      for (size_t t = 0; t < tools.size(); ++t) {
        const auto& v = samples[{op, tools[t]}];
        ok = ok && !v.empty();
        med[t] = v.empty() ? 0 : Summarize(v).median_ms;
      }
      if (!ok) {
        report << "| " << op << " | error | error | error | | |\n";
        continue;
      }
      report << "| " << op << " | " << fmt(med[0], 2) << " | " << fmt(med[1], 2) << " | " << fmt(med[2], 1) << " | "
             << fmt(med[2] / med[0], 1) << "× | " << fmt(med[2] / med[1], 1) << "× |\n";
    }
    for (const std::string& e : errors) report << "\n- error: " << e << "\n";
    if (!errors.empty()) failed = true;
  }
  std::cout << "Load average (1/5/15 min) before: " << load_before << "; after: " << LoadAverage() << "\n"
            << report.str();
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
