// The benchmark harness: private network namespaces, child processes spawned into them, the contenders that
// are not iptkit (iptables CLI, iptables-restore, python-iptables) and the statistics/Markdown report.
//
// Everything here runs as root and writes netfilter state only inside namespaces it created itself
// (`ip netns add iptkit-bench-<pid>-...`); Netns deletes its namespace in its destructor and, through
// InstallNetnsCleanupHandlers(), when the process is stopped by SIGINT/SIGTERM/SIGHUP.
// Thread-safety: single-threaded use only.
//
//   auto ns = bench::Netns::Create("iptkit-bench-123-nft-100");
//   bench::Variant v = bench::Variant::Nft();
//   auto r = bench::RunProcess({v.restore, "--noflush"}, {.netns_fd = (*ns)->fd(), .stdin_data = text});
#ifndef IPTKIT_BENCH_HARNESS_H_
#define IPTKIT_BENCH_HARNESS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "iptkit/status.h"

namespace iptkit::bench {

// ---- Child processes ----

struct RunOptions {
  int netns_fd = -1;            // setns(CLONE_NEWNET) in the child before exec; -1 = stay in the caller's netns
  std::string stdin_data = {};  // written to the child's stdin, then closed
};
struct RunResult {
  int exit_code = 0;  // the exit status, or 128 + signal number
  std::string out;
  std::string err;
};
// fork + [setns] + execve of argv[0] (an absolute path) with a fixed minimal environment, no shell, all other
// fds closed; stdin fed from `stdin_data`, stdout/stderr captured. Fails only when the child could not be run;
// a non-zero exit is reported in RunResult.
Result<RunResult> RunProcess(const std::vector<std::string>& argv, const RunOptions& options = {});
// RunProcess() that also requires exit code 0; the error carries the command line, exit code and stderr.
Result<std::string> RunProcessOk(const std::vector<std::string>& argv, const RunOptions& options = {});

// ---- Network namespaces ----

// A named network namespace (/run/netns/NAME) that exists exactly as long as this object. Created and deleted
// with `ip netns add/del` (deletion falls back to umount2(MNT_DETACH) + unlink, which is what `ip` does).
class Netns {
 public:
  static Result<std::unique_ptr<Netns>> Create(std::string name);
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  const std::string& name() const { return name_; }
  int fd() const { return fd_; }  // O_RDONLY fd of /run/netns/NAME, for setns()

 private:
  Netns(std::string name, int fd, int slot) : name_(std::move(name)), fd_(fd), slot_(slot) {}
  std::string name_;
  int fd_ = -1;
  int slot_ = -1;  // index in the signal-handler registry
};

// On SIGINT/SIGTERM/SIGHUP: unmount and unlink every live Netns (async-signal-safe syscalls only), then die of
// the same signal. Call once at start.
void InstallNetnsCleanupHandlers();

// ---- iptables variants ----

struct Variant {
  std::string name;      // "nft" or "legacy"
  std::string iptables;  // absolute paths
  std::string restore;
  std::string save;
  static Variant Nft();
  static Variant Legacy();
};

// ---- The ruleset under test ----

// The filter-table restore text that loads `count` distinct rules into INPUT (a mix of tcp/udp/comment/
// conntrack/multiport rules with ACCEPT/DROP/RETURN; none equal to kProbeRule).
std::string GenerateRules(int count);
// The rule every contender appends and then deletes by spec, in iptables-save's canonical form.
inline constexpr const char* kProbeRule = "-s 192.168.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT";
inline constexpr const char* kChain = "INPUT";

// `*-save -t filter` without "#" comment lines, for before/after comparisons.
Result<std::string> SaveFilter(const Variant& variant, int netns_fd);
// Number of "-A <chain> " lines in save/-S text.
size_t CountRuleLines(const std::string& text, const std::string& chain);

// ---- Contenders ----

// One way of doing the three operations. Each call is one complete operation against the current kernel
// state, as a user of that tool would do it; the harness times the call.
class Contender {
 public:
  virtual ~Contender() = default;
  virtual std::string name() const = 0;
  virtual Status Append() = 0;  // append kProbeRule to filter INPUT
  virtual Status Delete() = 0;  // delete kProbeRule from filter INPUT by spec
  // List filter (all chains); returns how many rules INPUT has, so the harness can check the listing.
  virtual Result<size_t> List() = 0;
};

// `iptables -w 10 -A/-D INPUT <spec>` and `iptables -t filter -S`, one process per op, setns in the child.
std::unique_ptr<Contender> MakeCliContender(const Variant& variant, int netns_fd);
// `iptables-restore --noflush -w 10` fed "*filter\n-A|-D INPUT <spec>\nCOMMIT\n", and `iptables-save -c -t
// filter` for the listing; one process per op, setns in the child.
std::unique_ptr<Contender> MakeRestoreContender(const Variant& variant, int netns_fd);

// python-iptables (libiptc, legacy only): runs `ip netns exec NS PYTHON SCRIPT ...`, which does the three ops
// itself and reports its own in-process timings (interpreter start-up excluded).
struct PythonTimings {
  std::vector<double> append_ms, delete_ms, list_ms;
};
struct PythonOptions {
  std::string python = "/usr/bin/python3";
  std::string script;
  int max_reps = 30;
  int min_reps = 5;
  double budget_s = 30;  // per op kind: stop after min_reps once this much time was spent
  size_t expect_rules = 0;
};
Result<PythonTimings> RunPythonIptables(const std::string& netns_name, const PythonOptions& options);

// ---- Statistics and report ----

struct Summary {
  size_t n = 0;
  double median_ms = 0;
  double p90_ms = 0;
};
// Median (mean of the middle two for even n) and nearest-rank 90th percentile. n == 0 for no samples.
Summary Summarize(std::vector<double> samples_ms);

// One cell group of the report: a tool's result for one op in one variant.
struct Measurement {
  std::vector<double> samples_ms;
  std::string error;  // non-empty: the measurement failed (the message is printed below the table)
  bool not_applicable = false;
};
// results[size][op][tool][variant]
using ResultKey = std::tuple<int, std::string, std::string, std::string>;
using Results = std::map<ResultKey, Measurement>;

struct ReportLayout {
  std::vector<int> sizes;
  std::vector<std::string> ops;       // "append", "delete", "list"
  std::vector<std::string> tools;     // first one is the reference (iptkit)
  std::vector<std::string> variants;  // "nft", "legacy"
};
// Markdown: one table per size, rows op × tool, columns per variant (median, p90, ratio to the reference
// tool's median, n). Errors are listed after the tables.
std::string FormatReport(const Results& results, const ReportLayout& layout);

// ---- The whole run ----

struct BenchConfig {
  std::vector<int> sizes = {100, 10000};
  std::vector<std::string> variants = {"nft", "legacy"};
  std::vector<std::string> tools = {"iptkit", "cli", "restore", "python"};
  int reps = 30;                // timed repetitions per op (at most)
  int min_reps = 5;             // kept even when over the time budget
  double budget_s = 60;         // per scenario, for the interleaved iptkit/CLI/restore rounds
  double python_budget_s = 20;  // per op kind inside the python driver
  std::string python = "/usr/bin/python3";
  std::string python_script;  // bench/pyiptc_bench.py
};
// Checks names and values; the error says which option is wrong.
Status ValidateConfig(const BenchConfig& config);

// Makes the iptkit contender for a namespace (by name) and variant.
using ContenderFactory =
    std::function<Result<std::unique_ptr<Contender>>(const std::string& netns, const Variant& variant)>;

// Runs every size × variant scenario, each in its own fresh namespace, and returns the Markdown report
// (header, legend, tables, errors). `failed` is set when any measurement failed.
std::string RunBenchmark(const BenchConfig& config, const ContenderFactory& make_iptkit, bool* failed);

using Clock = std::chrono::steady_clock;
inline double MillisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace iptkit::bench

#endif  // IPTKIT_BENCH_HARNESS_H_
