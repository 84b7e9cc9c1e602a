// iptkit_cli_bench: whole processes, as a user types them. `iptkit` (default backend: native on nf_tables) vs
// `iptables-nft` vs `iptkit --backend nft` (iptables-nft-restore), for append, insert at 1, delete by spec, delete
// by number, replace, check, list and save.
//
// For each size (default 100, 1,000 and 10,000 rules in filter INPUT, and 10,000 spread over 100 user chains with the
// ops on one of them) it creates a fresh network namespace (iptkit-clibench-<pid>-<size>-<chains>), loads the rules
// through iptables-nft-restore, then runs rounds:
// in each round every op is done once by every tool in turn (so every command follows another tool's write and no
// tool has anything warm but the page cache); the tools' order rotates from round to round, so that no tool always
// follows the same one (a write of 10,000 rules through iptables-nft-restore leaves the kernel freeing the old rules
// in its work queue while the next command runs). Set-up and undo steps around an op (e.g. adding the rule a delete
// removes) are done with iptables-nft and not timed. The first round is a checked warm-up: exit codes, and the
// rule count after each op and after its undo, against iptables-nft-save. Prints a Markdown report on stdout
// (medians; ratios to iptables-nft, so below 1 means the iptkit command is faster) and progress on stderr.
// Needs root; touches nothing outside the namespaces it creates, and deletes them (also on SIGINT/SIGTERM).
//
//   sudo build/release/bench/iptkit_cli_bench [--sizes 100,1000,10000] [--spread 10000] [--reps 7] [--iptkit PATH]
//                                             [--ops list,save] [--iptkit-b PATH]
//
// --iptkit-b PATH times a second iptkit binary (e.g. the build before a change) in the same rounds, in place of
// `iptkit --backend nft`: a before/after comparison under the same load.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/harness.h"

namespace iptkit::bench {
namespace {

constexpr const char* kIptablesNft = "/usr/sbin/iptables-nft";
constexpr const char* kIptablesNftSave = "/usr/sbin/iptables-nft-save";
constexpr const char* kProbe2 = "-s 192.168.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT";

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::vector<std::string> Cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct Tool {
  std::string name;
  std::vector<std::string> prefix;  // argv before the command
  bool iptables = false;            // speaks iptables' options (else iptkit's commands)
};

// One op: what each kind of tool runs, the iptables-nft set-up before it and undo after it, and the rule
// count of its chain expected right after it (warm-up check).
struct Op {
  std::string name;
  std::vector<std::string> iptables;  // after the iptables-nft binary (save: the iptables-nft-save binary)
  std::vector<std::string> iptkit;    // after the iptkit binary and its options
  std::vector<std::vector<std::string>> setup, undo;
  int delta = 0;  // rules after the op relative to the loaded count
};

std::vector<Op> Ops(int size, const std::string& chain) {
  const std::vector<std::string> probe = Words(kProbeRule);
  const std::vector<std::string> probe2 = Words(kProbe2);
  const std::string last = std::to_string(size + 1);
  std::vector<Op> ops;
  ops.push_back(
      {"append", Cat({"-A", chain}, probe), Cat({"append", chain}, probe), {}, {Cat({"-D", chain}, probe)}, 1});
  ops.push_back(
      {"insert at 1", Cat({"-I", chain, "1"}, probe), Cat({"insert", chain, "1"}, probe), {}, {{"-D", chain, "1"}}, 1});
  ops.push_back(
      {"delete by spec", Cat({"-D", chain}, probe), Cat({"delete", chain}, probe), {Cat({"-A", chain}, probe)}, {}, 0});
  ops.push_back({"delete by number", {"-D", chain, last}, {"delete", chain, last}, {Cat({"-A", chain}, probe)}, {}, 0});
  ops.push_back({"replace",
                 Cat({"-R", chain, "1"}, probe2),
                 Cat({"replace", chain, "1"}, probe2),
                 {Cat({"-I", chain, "1"}, probe)},
                 {{"-D", chain, "1"}},
                 1});
  ops.push_back({"check",
                 Cat({"-C", chain}, probe),
                 Cat({"check", chain}, probe),
                 {Cat({"-A", chain}, probe)},
                 {Cat({"-D", chain}, probe)},
                 1});
  ops.push_back({"list", {"-L", "-n"}, {"list", "-n"}, {}, {}, 0});
  ops.push_back({"list-S", {"-S"}, {"list", "-S"}, {}, {}, 0});
  ops.push_back({"save", {}, {"save"}, {}, {}, 0});
  return ops;
}

// `size` rules spread round-robin over `chains` user chains c0..c{chains-1} (each jumped to from INPUT), as
// iptables-nft-restore input; with one chain, GenerateRules' INPUT rules.
std::string SpreadRules(int size, int chains) {
  std::string text = GenerateRules(size);
  if (chains <= 1) return text;
  std::string out = "*filter\n";
  for (int c = 0; c < chains; ++c) out += ":c" + std::to_string(c) + " - [0:0]\n";
  std::istringstream in(text);
  int i = 0;
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("-A INPUT ")) continue;
    out += "-A c" + std::to_string(i++ % chains) + line.substr(8) + "\n";
  }
  for (int c = 0; c < chains; ++c) out += "-A INPUT -j c" + std::to_string(c) + "\n";
  return out + "COMMIT\n";
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

Result<size_t> ChainRules(int fd, const std::string& chain) {
  IPTKIT_ASSIGN_OR_RETURN(std::string save, RunProcessOk({kIptablesNftSave, "-t", "filter"}, {.netns_fd = fd}));
  return CountRuleLines(save, chain);
}

struct Cell {
  std::vector<double> ms;
  std::string error;
};

int Main(int argc, char** argv) {
  std::vector<int> sizes = {100, 1000, 10000};
  std::vector<int> spread = {10000};  // sizes also run spread over 100 chains
  int reps = 7;
  std::string iptkit = IPTKIT_CLI_PATH;
  CLI::App app{"iptkit (native) vs iptables-nft vs iptkit --backend nft, whole processes (Markdown on stdout)"};
  app.add_option("--sizes", sizes, "rule counts loaded into filter INPUT")->delimiter(',');
  app.add_option("--spread", spread, "rule counts also loaded spread over 100 user chains (ops on chain c50)")
      ->delimiter(',');
  app.add_option("--reps", reps, "timed rounds (after one checked warm-up round)")->check(CLI::Range(1, 1000));
  app.add_option("--iptkit", iptkit, "the iptkit binary")->check(CLI::ExistingFile);
  std::string iptkit_b;
  app.add_option("--iptkit-b", iptkit_b,
                 "a second iptkit binary timed in the same rounds instead of iptkit --backend nft (e.g. the build "
                 "before a change)")
      ->check(CLI::ExistingFile);
  std::vector<std::string> only;
  app.add_option("--ops", only, "only these ops (by name, e.g. list,save; default: all)")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  // Processes are started by absolute path (inside `ip netns exec` a relative one would name another file).
  iptkit = std::filesystem::absolute(iptkit).string();
  if (!iptkit_b.empty()) iptkit_b = std::filesystem::absolute(iptkit_b).string();
  if (geteuid() != 0) {
    std::cerr << "iptkit_cli_bench: must run as root (creates network namespaces)\n";
    return 2;
  }
  InstallNetnsCleanupHandlers();
  const std::vector<Tool> tools = {{"iptkit", {iptkit}, false},
                                   {"iptables-nft", {kIptablesNft}, true},
                                   iptkit_b.empty() ? Tool{"iptkit --backend nft", {iptkit, "--backend", "nft"}, false}
                                                    : Tool{"iptkit-b", {iptkit_b}, false}};
  const std::string load_before = LoadAverage();
  std::ostringstream report;
  struct Scenario {
    int size;    // rules loaded
    int chains;  // spread over this many chains (1: all in INPUT)
  };
  std::vector<Scenario> scenarios;
  for (int size : sizes) scenarios.push_back({size, 1});
  for (int size : spread) scenarios.push_back({size, 100});
  for (const auto [size, chains] : scenarios) {
    const std::string chain = chains == 1 ? std::string(kChain) : "c50";
    const int in_chain = chains == 1 ? size : size / chains + (50 < size % chains ? 1 : 0);
    auto ns = Netns::Create("iptkit-clibench-" + std::to_string(getpid()) + "-" + std::to_string(size) + "-" +
                            std::to_string(chains));
    if (!ns.ok()) {
      std::cerr << ns.status().ToString() << "\n";
      return 1;
    }
    const int fd = (*ns)->fd();
    auto loaded = RunProcessOk({"/usr/sbin/iptables-nft-restore", "--noflush"},
                               {.netns_fd = fd, .stdin_data = SpreadRules(size, chains)});
    if (!loaded.ok()) {
      std::cerr << "loading: " << loaded.status().ToString() << "\n";
      return 1;
    }
    std::vector<Op> ops = Ops(in_chain, chain);
    if (!only.empty()) {
      std::erase_if(ops, [&](const Op& op) { return std::find(only.begin(), only.end(), op.name) == only.end(); });
    }
    std::map<std::pair<std::string, std::string>, Cell> cells;  // (op, tool)
    for (int round = 0; round <= reps; ++round) {
      std::cerr << "size " << size << "/" << chains << ": round " << round << (round == 0 ? " (warm-up, checked)" : "")
                << "\n";
      for (const Op& op : ops) {
        for (size_t turn = 0; turn < tools.size(); ++turn) {
          const Tool& tool = tools[(turn + static_cast<size_t>(round)) % tools.size()];
          Cell& cell = cells[{op.name, tool.name}];
          if (!cell.error.empty()) continue;
          auto fail = [&](const std::string& why) { cell.error = why; };
          for (const auto& step : op.setup) {
            if (auto r = RunProcessOk(Cat({kIptablesNft}, step), {.netns_fd = fd}); !r.ok()) {
              fail("set-up: " + r.status().ToString());
            }
          }
          if (!cell.error.empty()) continue;
          std::vector<std::string> argv;
          if (tool.iptables) {
            argv = op.name == "save" ? std::vector<std::string>{kIptablesNftSave} : Cat(tool.prefix, op.iptables);
          } else {
            argv = Cat(tool.prefix, op.iptkit);
          }
          const auto start = std::chrono::steady_clock::now();
          Result<RunResult> r = RunProcess(argv, {.netns_fd = fd});
          const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
          if (!r.ok() || r->exit_code != 0) {
            std::string cmd;
            for (const auto& a : argv) cmd += a + " ";
            fail(cmd + ": " +
                 (r.ok() ? "exit " + std::to_string(r->exit_code) + ": " + r->err : r.status().ToString()));
            continue;
          }
          if (round == 0) {
            Result<size_t> n = ChainRules(fd, chain);
            if (!n.ok() || *n != static_cast<size_t>(in_chain + op.delta)) {
              fail("after the op " + chain + " holds " + (n.ok() ? std::to_string(*n) : n.status().ToString()) +
                   " rules, expected " + std::to_string(in_chain + op.delta));
            }
          } else {
            cell.ms.push_back(ms);
          }
          for (const auto& step : op.undo) {
            if (auto u = RunProcessOk(Cat({kIptablesNft}, step), {.netns_fd = fd}); !u.ok()) {
              fail("undo: " + u.status().ToString());
            }
          }
          if (round == 0 && cell.error.empty()) {
            Result<size_t> n = ChainRules(fd, chain);
            if (!n.ok() || *n != static_cast<size_t>(in_chain)) fail("after the undo " + chain + " lost its rules");
          }
        }
      }
    }
    report << "\n#### " << size
           << (chains == 1 ? " rules in filter INPUT"
                           : " rules over " + std::to_string(chains) + " chains of filter, ops on " + chain + " (" +
                                 std::to_string(in_chain) + " rules)")
           << " (whole processes; medians of " << reps << ")\n\n"
           << "| op | iptkit ms | iptables-nft ms | " << tools[2].name << " ms | iptkit ÷ iptables-nft | "
           << tools[2].name << " ÷ iptables-nft |\n|---|--:|--:|--:|--:|--:|\n";
    std::vector<std::string> errors;
    for (const Op& op : ops) {
      double med[3] = {0, 0, 0};
      bool ok[3] = {false, false, false};
      for (size_t t = 0; t < tools.size(); ++t) {
        const Cell& cell = cells[{op.name, tools[t].name}];
        if (!cell.error.empty()) {
          errors.push_back(op.name + " / " + tools[t].name + ": " + cell.error);
        } else if (!cell.ms.empty()) {
          med[t] = Summarize(cell.ms).median_ms;
          ok[t] = true;
        }
      }
      auto num = [](bool good, double v, int digits) {
        if (!good) return std::string("error");
        std::ostringstream o;
        o.setf(std::ios::fixed);
        o.precision(digits);
        o << v;
        return o.str();
      };
      report << "| " << op.name << " | " << num(ok[0], med[0], 1) << " | " << num(ok[1], med[1], 1) << " | "
             << num(ok[2], med[2], 1) << " | " << num(ok[0] && ok[1], med[0] / med[1], 2) << " | "
             << num(ok[2] && ok[1], med[2] / med[1], 2) << " |\n";
    }
    for (const std::string& e : errors) report << "\n- error: " << e << "\n";
  }
  std::cout << "Load average (1/5/15 min) before: " << load_before << "; after: " << LoadAverage() << "\n"
            << report.str();
  return 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
