#include "bench/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

namespace iptkit::bench {
namespace {

std::string ErrnoMessage(std::string_view what) { return std::string(what) + ": " + std::strerror(errno); }

std::string JoinArgv(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& arg : argv) {
    if (!line.empty()) line += ' ';
    line += arg;
  }
  return line;
}

std::vector<std::string> SplitSpaces(std::string_view text) {
  std::vector<std::string> words;
  std::istringstream in{std::string(text)};
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

// `ip` from iproute2; Debian has it in /usr/sbin (usrmerge: also /sbin, /bin).
const std::string& IpTool() {
  static const std::string path = [] {
    for (const char* candidate : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
      if (access(candidate, X_OK) == 0) return std::string(candidate);
    }
    return std::string("/usr/sbin/ip");
  }();
  return path;
}

// Registry of live namespaces for the signal handler: fixed buffers, no allocation in the handler.
constexpr int kMaxNetns = 8;
char g_netns_paths[kMaxNetns][128];
volatile sig_atomic_t g_netns_used[kMaxNetns];

int RegisterNetns(const std::string& path) {
  if (path.size() >= sizeof(g_netns_paths[0])) return -1;
  for (int i = 0; i < kMaxNetns; ++i) {
    if (!g_netns_used[i]) {
      std::memcpy(g_netns_paths[i], path.c_str(), path.size() + 1);
      g_netns_used[i] = 1;
      return i;
    }
  }
  return -1;
}

void RemoveNetnsMount(const char* path) {
  // What `ip netns del` does (iproute2 ip/ipnetns.c netns_delete): lazy unmount of the bind mount, then unlink.
  umount2(path, MNT_DETACH);
  unlink(path);
}

void CleanupSignalHandler(int sig) {
  for (int i = 0; i < kMaxNetns; ++i) {
    if (g_netns_used[i]) RemoveNetnsMount(g_netns_paths[i]);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

// ---- Child processes ----

Result<RunResult> RunProcess(const std::vector<std::string>& argv, const RunOptions& options) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return Status::InvalidArgument("Run: argv[0] must be an absolute path: '" + JoinArgv(argv) + "'");
  }
  // Everything the child touches is prepared before fork: between fork and exec it only makes syscalls.
  std::vector<char*> child_argv;
  for (const std::string& arg : argv) child_argv.push_back(const_cast<char*>(arg.c_str()));
  child_argv.push_back(nullptr);
  static char kPath[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  static char kLang[] = "LC_ALL=C";
  char* child_env[] = {kPath, kLang, nullptr};

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return Status::Internal(ErrnoMessage("pipe2"));
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]), close(in_pipe[1]);
    return Status::Internal(ErrnoMessage("pipe2"));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]), close(in_pipe[1]), close(out_pipe[0]), close(out_pipe[1]);
    return Status::Internal(ErrnoMessage("pipe2"));
  }

  const int netns_fd = options.netns_fd;
  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return Status::Internal(ErrnoMessage("fork"));
  }
  if (pid == 0) {
    // dup2 clears O_CLOEXEC on the new descriptors.
    if (dup2(in_pipe[0], 0) < 0 || dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0) _exit(126);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      static const char kMsg[] = "bench: setns(CLONE_NEWNET) failed in the child\n";
      (void)!write(2, kMsg, sizeof(kMsg) - 1);
      _exit(126);
    }
    close_range(3, ~0U, 0);
    signal(SIGPIPE, SIG_DFL);  // an ignored signal would stay ignored across execve
    execve(child_argv[0], child_argv.data(), child_env);
    static const char kMsg[] = "bench: execve failed in the child\n";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);

  RunResult result;
  int in_fd = in_pipe[1];
  size_t written = 0;
  if (options.stdin_data.empty()) {
    close(in_fd);
    in_fd = -1;
  } else {
    fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
  }
  int out_fd = out_pipe[0], err_fd = err_pipe[0];
  std::string io_error;
  char buffer[65536];
  while (in_fd >= 0 || out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int nfds = 0;
    if (in_fd >= 0) fds[nfds++] = {in_fd, POLLOUT, 0};
    if (out_fd >= 0) fds[nfds++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[nfds++] = {err_fd, POLLIN, 0};
    if (poll(fds, nfds, -1) < 0) {
      if (errno == EINTR) continue;
      io_error = ErrnoMessage("poll");
      break;
    }
    for (int i = 0; i < nfds; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        ssize_t n = write(in_fd, options.stdin_data.data() + written, options.stdin_data.size() - written);
        if (n > 0) written += static_cast<size_t>(n);
        // EPIPE: the child exited without reading everything; its exit code tells why.
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == options.stdin_data.size()) {
          close(in_fd);
          in_fd = -1;
        }
      } else {
        int& fd = fds[i].fd == out_fd ? out_fd : err_fd;
        std::string& sink = fds[i].fd == out_fd ? result.out : result.err;
        ssize_t n = read(fd, buffer, sizeof(buffer));
        if (n > 0) {
          sink.append(buffer, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          close(fd);
          fd = -1;
        }
      }
    }
  }
  for (int fd : {in_fd, out_fd, err_fd}) {
    if (fd >= 0) close(fd);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Status::Internal(ErrnoMessage("waitpid " + argv[0]));
  }
  if (!io_error.empty()) return Status::Internal(io_error + " while running " + JoinArgv(argv));
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

Result<std::string> RunProcessOk(const std::vector<std::string>& argv, const RunOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(RunResult result, RunProcess(argv, options));
  if (result.exit_code != 0) {
    std::string err = result.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return Status::Internal("`" + JoinArgv(argv) + "` exited with " + std::to_string(result.exit_code) +
                            (err.empty() ? std::string() : ": " + err));
  }
  return std::move(result.out);
}

// ---- Network namespaces ----

Result<std::unique_ptr<Netns>> Netns::Create(std::string name) {
  IPTKIT_RETURN_IF_ERROR(RunProcessOk({IpTool(), "netns", "add", name}).status());
  const std::string path = "/run/netns/" + name;
  int slot = RegisterNetns(path);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || slot < 0) {
    Status error = fd < 0 ? Status::Internal(ErrnoMessage("open " + path))
                          : Status::Internal("too many live namespaces for the cleanup registry");
    if (fd >= 0) close(fd);
    std::unique_ptr<Netns> cleanup(new Netns(name, -1, slot));  // its destructor deletes the namespace
    return error;
  }
  return std::unique_ptr<Netns>(new Netns(std::move(name), fd, slot));
}

Netns::~Netns() {
  if (fd_ >= 0) close(fd_);
  const std::string path = "/run/netns/" + name_;
  auto deleted = RunProcessOk({IpTool(), "netns", "del", name_});
  struct stat st;
  if (!deleted.ok() || stat(path.c_str(), &st) == 0) {
    std::fprintf(stderr, "bench: `ip netns del %s` failed (%s); unmounting directly\n", name_.c_str(),
                 deleted.status().ToString().c_str());
    RemoveNetnsMount(path.c_str());
  }
  if (slot_ >= 0) g_netns_used[slot_] = 0;
}

void InstallNetnsCleanupHandlers() {
  struct sigaction action {};
  action.sa_handler = CleanupSignalHandler;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill us while we feed its stdin
}

// ---- Variants and the ruleset ----

Variant Variant::Nft() {
  return {"nft", "/usr/sbin/iptables-nft", "/usr/sbin/iptables-nft-restore", "/usr/sbin/iptables-nft-save"};
}
Variant Variant::Legacy() {
  return {"legacy", "/usr/sbin/iptables-legacy", "/usr/sbin/iptables-legacy-restore", "/usr/sbin/iptables-legacy-save"};
}

std::string GenerateRules(int count) {
  std::string text = "*filter\n";
  char line[256];
  for (int i = 0; i < count; ++i) {
    const int a = (i >> 16) & 255, b = (i >> 8) & 255, c = i & 255;
    const int port = 1024 + i % 60000;
    switch (i % 4) {
      case 0:
        std::snprintf(line, sizeof(line), "-A INPUT -s 10.%d.%d.%d/32 -p tcp -m tcp --dport %d -j ACCEPT\n", a, b, c,
                      port);
        break;
      case 1:
        std::snprintf(line, sizeof(line),
                      "-A INPUT -s 10.%d.%d.%d/32 -p udp -m udp --dport %d -m comment --comment \"bench rule %d\" "
                      "-j DROP\n",
                      a, b, c, port, i);
        break;
      case 2:
        std::snprintf(line, sizeof(line),
                      "-A INPUT -s 10.%d.%d.%d/32 -i eth+ -p tcp -m conntrack --ctstate NEW -m multiport --dports "
                      "80,443 -j ACCEPT\n",
                      a, b, c);
        break;
      default:
        std::snprintf(line, sizeof(line), "-A INPUT -d 10.%d.%d.%d/32 -p tcp -m tcp --sport %d -j RETURN\n", a, b, c,
                      port);
        break;
    }
    text += line;
  }
  text += "COMMIT\n";
  return text;
}

Result<std::string> SaveFilter(const Variant& variant, int netns_fd) {
  IPTKIT_ASSIGN_OR_RETURN(std::string text, RunProcessOk({variant.save, "-t", "filter"}, {.netns_fd = netns_fd}));
  std::string kept;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '#') continue;
    kept += line;
    kept += '\n';
  }
  return kept;
}

size_t CountRuleLines(const std::string& text, const std::string& chain) {
  const std::string prefix = "-A " + chain + " ";
  size_t count = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    // iptables-save -c prefixes each rule with "[p:b] ".
    size_t start = pos;
    if (text[start] == '[') {
      size_t close = text.find("] ", start);
      if (close != std::string::npos && close < end) start = close + 2;
    }
    if (text.compare(start, prefix.size(), prefix) == 0) ++count;
    pos = end + 1;
  }
  return count;
}

// ---- Contenders ----

namespace {

class CliContender : public Contender {
 public:
  CliContender(Variant variant, int netns_fd) : variant_(std::move(variant)), netns_fd_(netns_fd) {}
  std::string name() const override { return "iptables CLI"; }
  Status Append() override { return Rule("-A"); }
  Status Delete() override { return Rule("-D"); }
  Result<size_t> List() override {
    IPTKIT_ASSIGN_OR_RETURN(
        std::string out, RunProcessOk({variant_.iptables, "-w", "10", "-t", "filter", "-S"}, {.netns_fd = netns_fd_}));
    return CountRuleLines(out, kChain);
  }

 private:
  Status Rule(const char* command) {
    std::vector<std::string> argv = {variant_.iptables, "-w", "10", "-t", "filter", command, kChain};
    for (std::string& word : SplitSpaces(kProbeRule)) argv.push_back(std::move(word));
    return RunProcessOk(argv, {.netns_fd = netns_fd_}).status();
  }
  Variant variant_;
  int netns_fd_;
};

class RestoreContender : public Contender {
 public:
  RestoreContender(Variant variant, int netns_fd) : variant_(std::move(variant)), netns_fd_(netns_fd) {}
  std::string name() const override { return "iptables-restore"; }
  Status Append() override { return Batch("-A"); }
  Status Delete() override { return Batch("-D"); }
  Result<size_t> List() override {
    IPTKIT_ASSIGN_OR_RETURN(std::string out,
                            RunProcessOk({variant_.save, "-c", "-t", "filter"}, {.netns_fd = netns_fd_}));
    return CountRuleLines(out, kChain);
  }

 private:
  Status Batch(const char* command) {
    std::string text = std::string("*filter\n") + command + " " + kChain + " " + kProbeRule + "\nCOMMIT\n";
    return RunProcessOk({variant_.restore, "--noflush", "-w", "10"}, {.netns_fd = netns_fd_, .stdin_data = text})
        .status();
  }
  Variant variant_;
  int netns_fd_;
};

}  // namespace

std::unique_ptr<Contender> MakeCliContender(const Variant& variant, int netns_fd) {
  return std::make_unique<CliContender>(variant, netns_fd);
}
std::unique_ptr<Contender> MakeRestoreContender(const Variant& variant, int netns_fd) {
  return std::make_unique<RestoreContender>(variant, netns_fd);
}

Result<PythonTimings> RunPythonIptables(const std::string& netns_name, const PythonOptions& options) {
  // The script checks that it runs in this namespace (nsfs inode of the bind mount) before touching iptables.
  struct stat ns_stat;
  const std::string ns_path = "/run/netns/" + netns_name;
  if (stat(ns_path.c_str(), &ns_stat) != 0) return Status::Internal(ErrnoMessage("stat " + ns_path));
  std::vector<std::string> argv = {IpTool(),         "netns",
                                   "exec",           netns_name,
                                   options.python,   options.script,
                                   "--reps",         std::to_string(options.max_reps),
                                   "--min-reps",     std::to_string(options.min_reps),
                                   "--budget",       std::to_string(options.budget_s),
                                   "--chain",        kChain,
                                   "--expect-rules", std::to_string(options.expect_rules),
                                   "--netns-inode",  std::to_string(ns_stat.st_ino)};
  IPTKIT_ASSIGN_OR_RETURN(RunResult run, RunProcess(argv));
  // The script prints one JSON object on stdout, also on failure ({"error": "..."}).
  PythonTimings timings;
  std::string error;
  try {
    nlohmann::json doc = nlohmann::json::parse(run.out);
    if (doc.contains("error") && !doc["error"].is_null()) {
      error = doc["error"].get<std::string>();
    } else {
      timings.append_ms = doc.at("append_ms").get<std::vector<double>>();
      timings.delete_ms = doc.at("delete_ms").get<std::vector<double>>();
      timings.list_ms = doc.at("list_ms").get<std::vector<double>>();
    }
  } catch (const nlohmann::json::exception& e) {
    error = std::string("unparsable output (") + e.what() + ")";
  }
  if (error.empty() && run.exit_code != 0) error = "exited with " + std::to_string(run.exit_code);
  if (!error.empty()) {
    std::string err = run.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return Status::Internal("python-iptables driver: " + error + (err.empty() ? "" : "; stderr: " + err));
  }
  return timings;
}

// ---- Statistics and report ----

Summary Summarize(std::vector<double> samples_ms) {
  Summary summary;
  summary.n = samples_ms.size();
  if (samples_ms.empty()) return summary;
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  summary.median_ms = n % 2 ? samples_ms[n / 2] : (samples_ms[n / 2 - 1] + samples_ms[n / 2]) / 2;
  const size_t rank = static_cast<size_t>(std::ceil(0.9 * static_cast<double>(n)));
  summary.p90_ms = samples_ms[std::max<size_t>(rank, 1) - 1];
  return summary;
}

namespace {

std::string Fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", digits, value);
  return text;
}

}  // namespace

std::string FormatReport(const Results& results, const ReportLayout& layout) {
  std::string md;
  std::vector<std::string> errors;
  const std::string& reference = layout.tools.front();
  for (int size : layout.sizes) {
    md += "\n### " + std::to_string(size) + " existing rules in filter INPUT\n\n| op | tool |";
    std::string rule = "|---|---|";
    for (const std::string& variant : layout.variants) {
      md += " " + variant + " median ms | " + variant + " p90 ms | " + variant + " ÷ " + reference + " | " + variant +
            " n |";
      rule += "--:|--:|--:|--:|";
    }
    md += "\n" + rule + "\n";
    for (const std::string& op : layout.ops) {
      for (const std::string& tool : layout.tools) {
        md += "| " + op + " | " + tool + " |";
        for (const std::string& variant : layout.variants) {
          auto it = results.find({size, op, tool, variant});
          if (it == results.end()) {
            md += " — | — | — | — |";
            continue;
          }
          const Measurement& m = it->second;
          if (m.not_applicable) {
            md += " n/a | n/a | n/a | n/a |";
            continue;
          }
          if (!m.error.empty()) {
            errors.push_back(std::to_string(size) + " rules, " + variant + ", " + tool + ", " + op + ": " + m.error);
            md += " error | — | — | " + std::to_string(m.samples_ms.size()) + " |";
            continue;
          }
          Summary s = Summarize(m.samples_ms);
          std::string ratio = "—";
          auto ref = results.find({size, op, reference, variant});
          if (ref != results.end() && ref->second.error.empty() && !ref->second.samples_ms.empty()) {
            Summary r = Summarize(ref->second.samples_ms);
            if (r.median_ms > 0) ratio = Fixed(s.median_ms / r.median_ms, 2);
          }
          for (const std::string& cell : {Fixed(s.median_ms, 2), Fixed(s.p90_ms, 2), ratio, std::to_string(s.n)}) {
            md.append(" ").append(cell).append(" |");
          }
        }
        md += "\n";
      }
    }
  }
  if (!errors.empty()) {
    md += "\nErrors:\n";
    for (const std::string& e : errors) md += "- " + e + "\n";
  }
  return md;
}

// ---- The whole run ----

namespace {

constexpr const char* kIptkit = "iptkit";
constexpr const char* kCli = "iptables CLI";
constexpr const char* kRestore = "iptables-restore";
constexpr const char* kPython = "python-iptables";

bool Enabled(const BenchConfig& config, const std::string& tool) {
  return std::find(config.tools.begin(), config.tools.end(), tool) != config.tools.end();
}

// The untimed first round: append must add exactly the probe as the last rule, delete must restore the
// loaded ruleset byte for byte, list must see every rule.
Status WarmUpAndCheck(Contender& contender, const Variant& variant, int netns_fd, const std::string& baseline,
                      size_t size) {
  IPTKIT_RETURN_IF_ERROR(contender.Append().WithContext("warm-up append"));
  IPTKIT_ASSIGN_OR_RETURN(std::string after_append, SaveFilter(variant, netns_fd));
  const std::string probe_line = std::string("-A ") + kChain + " " + kProbeRule + "\n";
  if (CountRuleLines(after_append, kChain) != size + 1 ||
      after_append.find(probe_line + "COMMIT\n") == std::string::npos) {
    return Status::Internal("warm-up append did not add exactly '" + probe_line.substr(0, probe_line.size() - 1) +
                            "' at the end of INPUT");
  }
  IPTKIT_RETURN_IF_ERROR(contender.Delete().WithContext("warm-up delete"));
  IPTKIT_ASSIGN_OR_RETURN(std::string after_delete, SaveFilter(variant, netns_fd));
  if (after_delete != baseline) return Status::Internal("warm-up delete did not restore the loaded ruleset");
  IPTKIT_ASSIGN_OR_RETURN(size_t listed, contender.List());
  if (listed != size) {
    return Status::Internal("warm-up list saw " + std::to_string(listed) + " INPUT rules, expected " +
                            std::to_string(size));
  }
  return Status::Ok();
}

void RecordError(Results& results, int size, const std::string& variant, const std::string& tool,
                 const std::string& error) {
  for (const char* op : {"append", "delete", "list"}) {
    Measurement& m = results[{size, op, tool, variant}];
    if (m.error.empty()) m.error = error;
  }
}

void RunScenario(const BenchConfig& config, const Variant& variant, int size, const ContenderFactory& make_iptkit,
                 Results& results) {
  const std::string ns_name =
      "iptkit-bench-" + std::to_string(getpid()) + "-" + variant.name + "-" + std::to_string(size);
  std::vector<std::string> tools;
  if (Enabled(config, "iptkit")) tools.push_back(kIptkit);
  if (Enabled(config, "cli")) tools.push_back(kCli);
  if (Enabled(config, "restore")) tools.push_back(kRestore);
  if (Enabled(config, "python")) tools.push_back(kPython);
  auto fail_all = [&](const std::string& error) {
    for (const std::string& tool : tools) RecordError(results, size, variant.name, tool, error);
  };

  std::fprintf(stderr, "[%s %d] creating netns %s, loading %d rules\n", variant.name.c_str(), size, ns_name.c_str(),
               size);
  auto ns = Netns::Create(ns_name);
  if (!ns.ok()) return fail_all(ns.status().ToString());
  const int fd = (*ns)->fd();
  auto loaded =
      RunProcessOk({variant.restore, "--noflush", "-w", "10"}, {.netns_fd = fd, .stdin_data = GenerateRules(size)});
  if (!loaded.ok()) return fail_all("loading the rules: " + loaded.status().ToString());
  auto baseline = SaveFilter(variant, fd);
  if (!baseline.ok()) return fail_all(baseline.status().ToString());
  if (CountRuleLines(*baseline, kChain) != static_cast<size_t>(size)) {
    return fail_all("after loading, iptables-save shows " + std::to_string(CountRuleLines(*baseline, kChain)) +
                    " INPUT rules");
  }

  struct Live {
    std::unique_ptr<Contender> contender;
    std::string tool;
  };
  std::vector<Live> live;
  if (Enabled(config, "iptkit")) {
    auto contender = make_iptkit(ns_name, variant);
    if (contender.ok()) {
      live.push_back({std::move(*contender), kIptkit});
    } else {
      RecordError(results, size, variant.name, kIptkit, contender.status().ToString());
    }
  }
  if (Enabled(config, "cli")) live.push_back({MakeCliContender(variant, fd), kCli});
  if (Enabled(config, "restore")) live.push_back({MakeRestoreContender(variant, fd), kRestore});

  for (auto it = live.begin(); it != live.end();) {
    Status checked = WarmUpAndCheck(*it->contender, variant, fd, *baseline, size);
    if (!checked.ok()) {
      RecordError(results, size, variant.name, it->tool, checked.ToString());
      it = live.erase(it);
    } else {
      ++it;
    }
  }

  // Interleaved rounds, so that load from other processes on the machine hits every tool alike.
  const Clock::time_point start = Clock::now();
  for (int rep = 0; rep < config.reps && !live.empty(); ++rep) {
    if (rep >= config.min_reps && MillisSince(start) > config.budget_s * 1000) break;
    for (auto it = live.begin(); it != live.end();) {
      auto time_op = [&](const char* op, auto&& call) -> Status {
        Clock::time_point t0 = Clock::now();
        Status status = call();
        double ms = MillisSince(t0);
        if (status.ok()) results[{size, op, it->tool, variant.name}].samples_ms.push_back(ms);
        return status.WithContext(op);
      };
      Status status = time_op("append", [&] { return it->contender->Append(); });
      if (status.ok()) status = time_op("delete", [&] { return it->contender->Delete(); });
      if (status.ok()) {
        status = time_op("list", [&]() -> Status {
          IPTKIT_ASSIGN_OR_RETURN(size_t listed, it->contender->List());
          if (listed != static_cast<size_t>(size)) {
            return Status::Internal("saw " + std::to_string(listed) + " INPUT rules, expected " + std::to_string(size));
          }
          return Status::Ok();
        });
      }
      if (!status.ok()) {
        RecordError(results, size, variant.name, it->tool, status.ToString());
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }
  auto final_state = SaveFilter(variant, fd);
  if (!final_state.ok() || *final_state != *baseline) {
    for (const Live& l : live) {
      RecordError(results, size, variant.name, l.tool,
                  final_state.ok() ? "ruleset differs from the loaded one after the timed rounds"
                                   : final_state.status().ToString());
    }
  }

  if (Enabled(config, "python")) {
    if (variant.name != "legacy") {
      for (const char* op : {"append", "delete", "list"}) {
        results[{size, op, kPython, variant.name}].not_applicable = true;
      }
    } else {
      std::fprintf(stderr, "[%s %d] python-iptables\n", variant.name.c_str(), size);
      PythonOptions options{.python = config.python,
                            .script = config.python_script,
                            .max_reps = config.reps,
                            .min_reps = config.min_reps,
                            .budget_s = config.python_budget_s,
                            .expect_rules = static_cast<size_t>(size)};
      auto timings = RunPythonIptables(ns_name, options);
      if (!timings.ok()) {
        RecordError(results, size, variant.name, kPython, timings.status().ToString());
      } else {
        results[{size, "append", kPython, variant.name}].samples_ms = timings->append_ms;
        results[{size, "delete", kPython, variant.name}].samples_ms = timings->delete_ms;
        results[{size, "list", kPython, variant.name}].samples_ms = timings->list_ms;
        auto after = SaveFilter(variant, fd);
        if (!after.ok() || *after != *baseline) {
          RecordError(results, size, variant.name, kPython, "ruleset differs from the loaded one after the run");
        }
      }
    }
  }
  std::fprintf(stderr, "[%s %d] done in %.1f s; deleting netns\n", variant.name.c_str(), size,
               MillisSince(start) / 1000);
}

std::string FirstLine(const Result<std::string>& text) {
  if (!text.ok()) return "?";
  return text->substr(0, text->find('\n'));
}

}  // namespace

Status ValidateConfig(const BenchConfig& config) {
  for (const std::string& v : config.variants) {
    if (v != "nft" && v != "legacy") return Status::InvalidArgument("--variants: unknown variant '" + v + "'");
  }
  for (const std::string& t : config.tools) {
    if (t != "iptkit" && t != "cli" && t != "restore" && t != "python") {
      return Status::InvalidArgument("--tools: unknown tool '" + t + "'");
    }
  }
  if (config.tools.empty()) return Status::InvalidArgument("--tools: empty");
  if (config.sizes.empty()) return Status::InvalidArgument("--sizes: empty");
  for (int size : config.sizes) {
    if (size < 0 || size > (1 << 24)) return Status::InvalidArgument("--sizes: " + std::to_string(size));
  }
  if (config.reps < 1 || config.min_reps < 1) return Status::InvalidArgument("--reps/--min-reps must be >= 1");
  if (Enabled(config, "python") && config.python_script.empty()) {
    return Status::InvalidArgument("--python-script is required with the python tool");
  }
  return Status::Ok();
}

std::string RunBenchmark(const BenchConfig& config, const ContenderFactory& make_iptkit, bool* failed) {
  Results results;
  for (int size : config.sizes) {
    for (const std::string& name : config.variants) {
      RunScenario(config, name == "nft" ? Variant::Nft() : Variant::Legacy(), size, make_iptkit, results);
    }
  }

  ReportLayout layout;
  layout.sizes = config.sizes;
  layout.ops = {"append", "delete", "list"};
  layout.variants = config.variants;
  if (Enabled(config, "iptkit")) layout.tools.push_back(kIptkit);
  if (Enabled(config, "cli")) layout.tools.push_back(kCli);
  if (Enabled(config, "restore")) layout.tools.push_back(kRestore);
  if (Enabled(config, "python")) layout.tools.push_back(kPython);

  utsname host{};
  uname(&host);
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::ostringstream md;
  md << "## iptkit benchmark (" << date << ")\n\n"
     << "Linux " << host.release << ", " << sysconf(_SC_NPROCESSORS_ONLN) << " CPUs; "
     << FirstLine(RunProcessOk({Variant::Nft().iptables, "-V"})) << "; "
     << FirstLine(RunProcessOk({Variant::Legacy().iptables, "-V"})) << ". Up to " << config.reps
     << " timed repetitions per cell after one checked warm-up (n = how many; fewer when a scenario ran "
        "over its time budget). Times in milliseconds, wall clock per complete operation; "
        "÷ columns: the tool's median divided by "
     << layout.tools.front() << "'s (above 1: " << layout.tools.front() << " is faster).\n\n"
     << "- iptkit: `Firewall::Open({.netns, .backend = kNft|kLegacy})` once; append/delete = `Commit()` of a "
        "one-op Transaction; list = `List(kIPv4, \"filter\")` (structured, with counters).\n"
     << "- iptables CLI: one `iptables-{nft,legacy} -w 10 -A|-D INPUT <spec>` process per op; list = "
        "`iptables -t filter -S` (text, not parsed).\n"
     << "- iptables-restore: one `iptables-{nft,legacy}-restore --noflush -w 10` process per op fed "
        "`*filter / -A|-D INPUT <spec> / COMMIT`; list = `iptables-save -c -t filter` (text, not parsed).\n"
     << "- python-iptables (libiptc, legacy only): in-process timings of one python process (interpreter "
        "start-up excluded); each op = `Table.refresh()` + change + `commit()`; list = every filter rule "
        "decoded to dicts (`iptc.easy.decode_iptc_rule`).\n"
     << "- Processes are spawned with fork + setns + execve (python: `ip netns exec`). Rule: `" << kProbeRule
     << "`, appended after N rules and deleted by spec.\n";
  md << FormatReport(results, layout);
  *failed = false;
  for (const auto& [key, m] : results) *failed |= !m.error.empty();
  return md.str();
}

}  // namespace iptkit::bench
