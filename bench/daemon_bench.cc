// iptkitd_bench: the daemon's group commit under concurrent load, beside the same adds done one `iptables -A`
// process at a time (what rfw-style daemons do), in the same run (docs/benchmarks.md, "Daemon: group commit").
//
// For each iptables variant (nft, legacy):
//   1. a fresh network namespace (iptkit-bench-<pid>-<variant>-daemon) gets --preload rules in filter INPUT from
//      one iptables-restore; iptkitd is started on it (temporary state dir and token, --rate-limit 0, listening on
//      127.0.0.1 of the benchmark's own namespace); after one checked warm-up add + delete, --clients threads, each
//      with its own keep-alive connection (opened one after the other before the clock starts), POST --adds
//      distinct single-rule appends (`-s 172.16.x.y/32 -j DROP`); then, if --ttl-adds > 0, as many threads POST
//      that many owned adds with {"ttl": 3600} (the default owner: the declarative path) into the same daemon,
//      whose namespace then holds preload + adds rules. Every response must be 200 and iptables-save must
//      show preload + adds (+ ttl adds) INPUT rules afterwards. /metrics, read before and after each phase, gives
//      the number of commits, the mean group-commit batch size and the mean commit duration of that phase.
//   2. a second fresh namespace (…-loop) gets the same preload, then the first --loop-adds of the same specs as
//      one `iptables -w 10 -A INPUT <spec>` process each, one after the other, checked by a rule count.
//   3. after the first variant's plain adds, in the same daemon (--attack-requests N, 0 skips): N authenticated
//      GET /v1/version one at a time without attackers, then with --slowloris connections dribbling a header byte
//      per second and --stalled-streams event streams that never read (from other loopback addresses, reconnected
//      whenever the daemon drops them), and N/20 single-rule POSTs without and with the attack: p50/p90/p99 latency.
//      Then (--flood C, 0 skips) the same N GETs followed by --flood-adds adds by --clients clients (into a chain of
//      their own, FLOODROWS, jumped to from INPUT and flushed after each row), without a flood, with C keep-alive
//      connections from --flood-peers addresses (127.0.3.x) POSTing to the rules route with random unknown tokens,
//      no header or a malformed one as fast as they are answered, with C connections doing that with a new
//      connection per request, with C keep-alive connections GETting a nonexistent path without a token, with C
//      connections sending a malformed request line, and without a flood again: GET p50/p99, adds/s, iptkitd's
//      CPU and RSS, the flood's answers (every one must be its refusal, 401, 404 or 400, or 429).
// Prints the machine facts and one Markdown table per variant on stdout (progress on stderr); exits 1 when any
// check failed. Needs root; writes netfilter state only in the namespaces it creates and deletes them, and kills
// the daemon, also on SIGINT/SIGTERM/SIGHUP (and the daemon dies with the benchmark: PR_SET_PDEATHSIG).
//
//   sudo bench/daemon_run.sh build/release/bench/iptkitd_bench --variants nft --preload 1000 --adds 1000
//   sudo bench/daemon_run.sh build/release/bench/iptkitd_bench --variants nft --nft-backend native   (netlink)
//
// --nft-backend native,nft runs step 1 once per backend on the nft variant (each in a fresh namespace, one after
// the other in the same run). --chains 1,100 runs it per layout: 1 = the preload in INPUT and the adds appended to
// INPUT; N > 1 = the preload spread round-robin over N user chains c0..c{N-1} (each jumped to from INPUT) and the
// i-th add appended to chain c{i mod N} (the owned TTL adds and the attack run only in the 1-chain layout).
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "iptkit/status.h"

#ifndef IPTKITD_PATH
#define IPTKITD_PATH ""
#endif

namespace iptkit::bench {
namespace {

constexpr const char* kRulesPath = "/v1/ipv4/tables/filter/chains/INPUT/rules";

// Where the i-th add goes in a layout of `chains` chains (1: INPUT; else c{i mod chains}).
std::string SpreadChain(int i, int chains) {
  return chains <= 1 ? std::string(kChain) : "c" + std::to_string(i % chains);
}
std::string RulesPath(const std::string& chain) { return "/v1/ipv4/tables/filter/chains/" + chain + "/rules"; }
constexpr const char* kWarmUpSpec = "-s 198.51.100.1/32 -j DROP";

struct Config {
  std::vector<std::string> variants = {"nft", "legacy"};
  // iptkitd --backend for the nft variant, each in its own daemon: "nft" (iptables-nft-restore), "native" (netlink).
  std::vector<std::string> nft_backends = {"nft"};
  // Layouts of the preload and the adds: 1 = all in INPUT; N > 1 = spread over N user chains (see the top).
  std::vector<int> chains = {1, 100};
  int preload = 10000;
  int adds = 10000;
  int clients = 64;
  int loop_adds = -1;  // -1: = adds
  int ttl_adds = 2000;
  std::string iptkitd = IPTKITD_PATH;
  std::string daemon_log_level = "warn";
  std::vector<std::string> daemon_env;   // extra KEY=VALUE for iptkitd (e.g. GLIBC_TUNABLES=...)
  std::vector<std::string> daemon_args;  // extra iptkitd arguments (e.g. --max-batch 32), each word its own
  // HTTP under attack (first variant's daemon, after its plain adds): authenticated requests one at a time while
  // `slowloris` connections dribble a header byte per second and `stalled_streams` event streams never read.
  int attack_requests = 1000;  // 0: skip
  int slowloris = 300;
  int stalled_streams = 250;
  // A flood of requests with bad or missing tokens (after the attack above, same daemon): `flood` connections from
  // `flood_peers` addresses; legitimate load measured beside it and without it: the GETs of the attack, then
  // `flood_adds` adds by `clients` clients.
  int flood = 64;  // 0: skip
  int flood_peers = 1;
  int flood_adds = 2000;
};

// The i-th add of the plain phase (and of the iptables -A loop): distinct /32 sources in 172.16.0.0/12.
std::string AddSpec(int i) {
  return "-s 172." + std::to_string(16 + (i >> 16)) + "." + std::to_string((i >> 8) & 255) + "." +
         std::to_string(i & 255) + "/32 -j DROP";
}
// The i-th owned TTL add: distinct /32 sources in 100.64.0.0/10.
std::string TtlSpec(int i) {
  return "-s 100." + std::to_string(64 + (i >> 16)) + "." + std::to_string((i >> 8) & 255) + "." +
         std::to_string(i & 255) + "/32 -j DROP";
}

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Nearest-rank percentile (p in (0, 1]) of unsorted samples; 0 when empty.
double Percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(samples.size())));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

// ---- The daemon process ----

// The pid of the running daemon for the signal handler, which kills it and then runs the harness's handler
// (namespace cleanup, re-raise).
volatile sig_atomic_t g_daemon_pid = 0;
void (*g_harness_handler)(int) = nullptr;

void KillDaemonHandler(int sig) {
  const pid_t pid = g_daemon_pid;
  if (pid > 0) kill(pid, SIGKILL);
  if (g_harness_handler != nullptr && g_harness_handler != SIG_DFL && g_harness_handler != SIG_IGN) {
    g_harness_handler(sig);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void InstallCleanupHandlers() {
  InstallNetnsCleanupHandlers();
  struct sigaction old {};
  sigaction(SIGTERM, nullptr, &old);
  g_harness_handler = old.sa_handler;  // the same handler for SIGINT/SIGTERM/SIGHUP
  struct sigaction action {};
  action.sa_handler = KillDaemonHandler;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &action, nullptr);
}

std::string Tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// A running iptkitd. The destructor stops it (SIGTERM, then SIGKILL after 20 s) and reaps it.
class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> Start(const std::string& binary, const std::vector<std::string>& args,
                                               const std::vector<std::string>& extra_env, const std::string& log_path,
                                               const std::string& ready_path) {
    std::vector<std::string> argv = {binary};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> child_argv;
    for (const std::string& a : argv) child_argv.push_back(const_cast<char*>(a.c_str()));
    child_argv.push_back(nullptr);
    std::vector<std::string> env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> child_env;
    for (const std::string& e : env) child_env.push_back(const_cast<char*>(e.c_str()));
    child_env.push_back(nullptr);
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0) return Status::Internal("open " + log_path + ": " + std::strerror(errno));
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(log_fd);
      if (null_fd >= 0) close(null_fd);
      return Status::Internal(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      // The daemon must not outlive the benchmark, whatever kills it.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(125);
      if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) _exit(126);
      close_range(3, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) signal(sig, SIG_DFL);
      execve(child_argv[0], child_argv.data(), child_env.data());
      _exit(127);
    }
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    g_daemon_pid = pid;
    std::unique_ptr<Daemon> daemon(new Daemon(pid, log_path));

    // Serving once the ready file exists (the start-up reconcile has run by then).
    const Clock::time_point start = Clock::now();
    for (;;) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        daemon->pid_ = -1;
        g_daemon_pid = 0;
        return Status::Internal("iptkitd exited during start-up (status " + std::to_string(status) + "); its log:\n" +
                                Tail(log_path));
      }
      std::ifstream ready(ready_path);
      if (ready) {
        std::string text((std::istreambuf_iterator<char>(ready)), std::istreambuf_iterator<char>());
        try {
          nlohmann::json doc = nlohmann::json::parse(text);
          for (const auto& e : doc.at("endpoints")) {
            const std::string endpoint = e.get<std::string>();
            const std::string prefix = "http://127.0.0.1:";
            if (endpoint.rfind(prefix, 0) == 0) daemon->port_ = std::stoi(endpoint.substr(prefix.size()));
          }
          daemon->backend_ = doc.at("backend").get<std::string>();
        } catch (const std::exception& e) {
          return Status::Internal(std::string("unparsable ready file: ") + e.what() + ": " + text);
        }
        if (daemon->port_ <= 0) return Status::Internal("no http://127.0.0.1 endpoint in the ready file: " + text);
        return daemon;
      }
      if (MillisSince(start) > 120000)
        return Status::Internal("iptkitd not ready after 120 s; log:\n" + Tail(log_path));
      usleep(20000);
    }
  }

  // SIGTERM and wait; an exit code other than 0 is an error (with the log's tail).
  Status Stop() {
    if (pid_ <= 0) return Status::Ok();
    kill(pid_, SIGTERM);
    int status = 0;
    const Clock::time_point start = Clock::now();
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (MillisSince(start) > 20000) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      usleep(10000);
    }
    pid_ = -1;
    g_daemon_pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
    return Status::Internal("iptkitd did not stop cleanly (wait status " + std::to_string(status) + "); log:\n" +
                            Tail(log_path_));
  }
  ~Daemon() { (void)Stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& backend() const { return backend_; }
  const std::string& log_path() const { return log_path_; }

 private:
  Daemon(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  int port_ = 0;
  std::string backend_;
};

// A temporary directory (mode 0700) removed with its content by the destructor.
class TempDir {
 public:
  static Result<std::unique_ptr<TempDir>> Create(const std::string& prefix) {
    std::string pattern = "/tmp/" + prefix + "XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) return Status::Internal("mkdtemp: " + std::string(std::strerror(errno)));
    return std::unique_ptr<TempDir>(new TempDir(pattern));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// ---- HTTP ----

httplib::Headers AuthHeaders(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

std::unique_ptr<httplib::Client> NewClient(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_keep_alive(true);
  // httplib writes a POST's headers and body separately: without TCP_NODELAY, Nagle holds the body back until the
  // server's delayed ACK (~40 ms), which measured the client's TCP stack instead of the daemon (curl, Python's
  // http.client and most HTTP libraries set it too).
  client->set_tcp_nodelay(true);
  client->set_connection_timeout(10);
  client->set_read_timeout(300);
  client->set_write_timeout(60);
  return client;
}

std::string RuleBody(const std::string& spec, std::optional<int> ttl) {
  nlohmann::json body = {{"spec", spec}};
  if (ttl) body["ttl"] = *ttl;
  return body.dump();
}

// The sum and count of a histogram from a Prometheus text exposition.
struct HistogramTotals {
  double sum = 0;
  double count = 0;
};
std::optional<double> MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    if (line[name.size()] != ' ' && line[name.size()] != '{') continue;
    try {
      return std::stod(line.substr(line.rfind(' ') + 1));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}
Result<HistogramTotals> ReadHistogram(const std::string& text, const std::string& name) {
  std::optional<double> sum = MetricValue(text, name + "_sum"), count = MetricValue(text, name + "_count");
  if (!sum || !count) return Status::Internal("/metrics has no " + name + "_sum/_count");
  return HistogramTotals{*sum, *count};
}

// The phases of iptkitd_drain_phase_seconds{phase}: the writer's time per drain attempt.
constexpr const char* kDrainPhases[] = {"read", "plan", "commit", "store", "store_wait"};

struct MetricsSnapshot {
  HistogramTotals batch;                          // iptkitd_group_commit_requests
  HistogramTotals commit;                         // iptkitd_commit_duration_seconds
  std::map<std::string, HistogramTotals> phases;  // by phase; empty from a daemon without them
};
Result<MetricsSnapshot> ScrapeMetrics(int port, const std::string& token) {
  auto client = NewClient(port);
  httplib::Result res = client->Get("/metrics", AuthHeaders(token));
  if (!res) return Status::Internal("GET /metrics: " + httplib::to_string(res.error()));
  if (res->status != 200)
    return Status::Internal("GET /metrics: HTTP " + std::to_string(res->status) + ": " + res->body);
  MetricsSnapshot snap;
  IPTKIT_ASSIGN_OR_RETURN(snap.batch, ReadHistogram(res->body, "iptkitd_group_commit_requests"));
  IPTKIT_ASSIGN_OR_RETURN(snap.commit, ReadHistogram(res->body, "iptkitd_commit_duration_seconds"));
  for (const char* phase : kDrainPhases) {
    const std::string labels = std::string("{phase=\"") + phase + "\"}";
    std::optional<double> sum = MetricValue(res->body, "iptkitd_drain_phase_seconds_sum" + labels);
    std::optional<double> count = MetricValue(res->body, "iptkitd_drain_phase_seconds_count" + labels);
    if (sum && count) snap.phases[phase] = {*sum, *count};
  }
  return snap;
}

// One request outside the timed phase (to `path`, default INPUT's rules); must answer 200.
Status CheckedRequest(int port, const std::string& token, const std::string& method, const std::string& body,
                      const std::string& path = kRulesPath) {
  auto client = NewClient(port);
  httplib::Result res = method == "POST" ? client->Post(path, AuthHeaders(token), body, "application/json")
                                         : client->Delete(path, AuthHeaders(token), body, "application/json");
  if (!res) return Status::Internal(method + " " + path + ": " + httplib::to_string(res.error()));
  if (res->status != 200) {
    return Status::Internal(method + " " + path + " " + body + ": HTTP " + std::to_string(res->status) + ": " +
                            res->body);
  }
  return Status::Ok();
}

// A TcpExt counter of this process's network namespace (/proc/net/netstat: a line of names, then one of values).
std::optional<long long> TcpExtCounter(const std::string& name) {
  std::ifstream in("/proc/net/netstat");
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (names.rfind("TcpExt:", 0) != 0) continue;
    std::vector<std::string> n = Words(names), v = Words(values);
    for (size_t i = 1; i < n.size() && i < v.size(); ++i) {
      if (n[i] == name) return std::stoll(v[i]);
    }
  }
  return std::nullopt;
}

// ---- The timed phases ----

struct PhaseResult {
  std::string tool;
  int changes = 0;
  double wall_s = 0;
  std::vector<double> latency_ms;
  std::optional<double> mean_batch;      // per commit, from /metrics
  std::optional<double> commits;         // kernel commits in the phase, from /metrics
  std::optional<double> mean_commit_ms;  // from /metrics
  double mean_batch_seen = 0;            // mean of the responses' batch_requests (request-weighted)
  size_t max_batch_seen = 0;
  std::optional<long long> listen_overflows;  // TcpExtListenOverflows delta in the benchmark's netns (any listener)
  std::map<std::string, double> phase_ms;     // mean ms per drain attempt (store: per write), by phase
  // CPU time (user + system) while the clients ran: of the whole iptkitd process (every thread, from
  // /proc/PID/stat), and of this process (the client threads: nothing else runs here meanwhile). On a machine whose
  // 2 CPUs the clients and the daemon share, a rate is bounded by their sum per change; it also varies less with
  // the load of other processes than the rate does.
  std::optional<double> daemon_cpu_s;
  std::optional<double> daemon_http_cpu_s;  // of that, its HTTP threads
  double clients_cpu_s = 0;
  std::string error;  // non-empty: a check failed
};

// CPU seconds (user + system) of a /proc stat file ("/proc/PID/stat" or "/proc/PID/task/TID/stat"), and the
// command name in it; nullopt when it cannot be read.
std::optional<std::pair<std::string, double>> StatCpuSeconds(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces, in parentheses): state is field 3, utime 14, stime 15.
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  if (!fields) return std::nullopt;
  return std::make_pair(text.substr(open + 1, close - open - 1),
                        static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK)));
}

// CPU seconds of process `pid` so far: in all, and of its HTTP threads (named "http-..."; the rest is the writer,
// the store writer and the timers). Threads that ended are counted in neither part of a later reading.
struct DaemonCpu {
  double total = 0;
  double http = 0;
};
std::optional<DaemonCpu> ProcessCpuSeconds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::optional<std::pair<std::string, double>> all = StatCpuSeconds(dir + "/stat");
  if (!all) return std::nullopt;
  DaemonCpu cpu;
  cpu.total = all->second;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(dir + "/task", ec)) {
    std::optional<std::pair<std::string, double>> t = StatCpuSeconds(task.path().string() + "/stat");
    if (t && t->first.rfind("http", 0) == 0) cpu.http += t->second;
  }
  return cpu;
}

double OwnCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// `clients` threads, each with its own keep-alive connection (opened before the clock starts), POST `count`
// bodies made by `body(i)` to `path(i)`; every answer must be 200 with a JSON body.
PhaseResult RunClients(const std::string& tool, int port, pid_t daemon_pid, const std::string& token, int clients,
                       int count, const std::function<std::string(int)>& body,
                       const std::function<std::string(int)>& path) {
  PhaseResult result;
  result.tool = tool;
  result.changes = count;
  std::vector<std::vector<double>> latencies(clients);
  std::vector<double> batch_sum(clients, 0);
  std::vector<size_t> batch_max(clients, 0);
  std::mutex error_mu;
  std::vector<std::string> errors;
  size_t error_count = 0;
  auto record_error = [&](std::string e) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (++error_count <= 5) errors.push_back(std::move(e));
  };
  // The connections are opened one after the other before the clock starts: iptkitd's listener has httplib's
  // listen backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's libcpp-httplib), and 64 simultaneous
  // connects overflow it (TcpExtListenOverflows; SYNs retried after 1 s, some connections reset).
  std::vector<std::unique_ptr<httplib::Client>> connections;
  for (int c = 0; c < clients; ++c) {
    connections.push_back(NewClient(port));
    httplib::Result hello = connections.back()->Get("/healthz", AuthHeaders(token));
    if (!hello) {
      record_error("GET /healthz: " + httplib::to_string(hello.error()));
    } else if (hello->status != 200) {
      record_error("GET /healthz: HTTP " + std::to_string(hello->status) + ": " + hello->body);
    }
  }
  std::atomic<int> next{0};
  std::latch ready(clients + 1);
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client* client = connections[c].get();
      const httplib::Headers headers = AuthHeaders(token);
      ready.count_down();
      go.wait();
      latencies[c].reserve(static_cast<size_t>(count / clients + 1));
      for (int i = next++; i < count; i = next++) {
        const std::string text = body(i);
        const std::string where = path(i);
        const Clock::time_point t0 = Clock::now();
        httplib::Result res = client->Post(where, headers, text, "application/json");
        latencies[c].push_back(MillisSince(t0));
        if (!res) {
          record_error("POST " + text + ": " + httplib::to_string(res.error()));
          continue;
        }
        if (res->status != 200) {
          record_error("POST " + text + ": HTTP " + std::to_string(res->status) + ": " + res->body);
          continue;
        }
        try {
          const size_t batch = nlohmann::json::parse(res->body).at("batch_requests").get<size_t>();
          batch_sum[c] += static_cast<double>(batch);
          batch_max[c] = std::max(batch_max[c], batch);
        } catch (const std::exception& e) {
          record_error("POST " + text + ": unparsable answer (" + e.what() + "): " + res->body);
        }
      }
    });
  }
  ready.arrive_and_wait();
  const std::optional<DaemonCpu> daemon_cpu_before = ProcessCpuSeconds(daemon_pid);
  const double own_cpu_before = OwnCpuSeconds();
  const Clock::time_point start = Clock::now();
  go.count_down();
  for (std::thread& t : threads) t.join();
  result.wall_s = MillisSince(start) / 1000;
  result.clients_cpu_s = OwnCpuSeconds() - own_cpu_before;
  const std::optional<DaemonCpu> daemon_cpu_after = ProcessCpuSeconds(daemon_pid);
  if (daemon_cpu_before && daemon_cpu_after) {
    result.daemon_cpu_s = daemon_cpu_after->total - daemon_cpu_before->total;
    result.daemon_http_cpu_s = daemon_cpu_after->http - daemon_cpu_before->http;
  }
  double sum = 0;
  for (int c = 0; c < clients; ++c) {
    result.latency_ms.insert(result.latency_ms.end(), latencies[c].begin(), latencies[c].end());
    sum += batch_sum[c];
    result.max_batch_seen = std::max(result.max_batch_seen, batch_max[c]);
  }
  if (count > 0) result.mean_batch_seen = sum / count;
  if (error_count > 0) {
    result.error = std::to_string(error_count) + " of " + std::to_string(count) + " requests failed, e.g.:";
    for (const std::string& e : errors) result.error += "\n    " + e;
  }
  return result;
}

std::string Fixed(double v, int digits);

// ---- HTTP under attack ----

// A TCP connection to 127.0.0.1:port from `source` (another loopback address: the daemon caps connections per
// client address, and attackers come from many); rcvbuf > 0 shrinks the receive buffer. -1 on failure.
int ConnectFrom(int port, const std::string& source, int rcvbuf = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Keeps `slowloris` connections sending one header byte per second each and `streams` event streams that never
// read open, reconnecting whatever the daemon closes (a head deadline, a stream cut for falling behind), as an
// attacker would, until destroyed.
class Attackers {
 public:
  Attackers(int port, std::string token, int slowloris, int streams) : port_(port), token_(std::move(token)) {
    for (int i = 0; i < slowloris; ++i) slow_.push_back(OpenSlow(i));
    for (int i = 0; i < streams; ++i) streams_.push_back(OpenStream(i));
    thread_ = std::thread([this] { Run(); });
  }
  ~Attackers() {
    stop_ = true;
    thread_.join();
    for (int fd : slow_) {
      if (fd >= 0) close(fd);
    }
    for (int fd : streams_) {
      if (fd >= 0) close(fd);
    }
  }
  Attackers(const Attackers&) = delete;
  Attackers& operator=(const Attackers&) = delete;
  int reconnects() const { return reconnects_.load(); }

 private:
  int OpenSlow(int i) {
    const int fd = ConnectFrom(port_, "127.0.1." + std::to_string(1 + i / 30));
    if (fd >= 0) (void)send(fd, "GET /v1/version HTTP/1.1\r\nHost: x\r\nX-Slow: ", 43, MSG_NOSIGNAL);
    return fd;
  }
  int OpenStream(int i) {
    const int fd = ConnectFrom(port_, "127.0.2." + std::to_string(1 + i / 50), /*rcvbuf=*/4096);
    const std::string request = "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token_ + "\r\n\r\n";
    if (fd >= 0) (void)send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    return fd;
  }
  // Whether the daemon closed `fd` (a reset, or EOF after whatever it sent last).
  static bool Gone(int fd) {
    if (fd < 0) return true;
    pollfd p{fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
  }
  void Run() {
    while (!stop_) {
      for (int& fd : slow_) (void)send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      for (size_t i = 0; i < slow_.size(); ++i) {
        if (!Gone(slow_[i])) continue;
        if (slow_[i] >= 0) close(slow_[i]);
        slow_[i] = OpenSlow(static_cast<int>(i));
        ++reconnects_;
      }
      for (size_t i = 0; i < streams_.size(); ++i) {
        if (!Gone(streams_[i])) continue;
        if (streams_[i] >= 0) close(streams_[i]);
        streams_[i] = OpenStream(static_cast<int>(i));
        ++reconnects_;
      }
      for (int i = 0; i < 10 && !stop_; ++i) usleep(100000);
    }
  }

  const int port_;
  const std::string token_;
  std::vector<int> slow_, streams_;
  std::atomic<bool> stop_{false};
  std::atomic<int> reconnects_{0};
  std::thread thread_;
};

// `count` requests one after the other over one keep-alive connection: GET /v1/version, or POST of distinct
// single-rule adds (`-s 10.200.x.y/32 -j DROP`, numbered from `first`); every answer must be 200.
PhaseResult TimeRequests(const std::string& tool, int port, const std::string& token, int count, bool post,
                         int first = 0) {
  PhaseResult r;
  r.tool = tool;
  r.changes = count;
  auto client = NewClient(port);
  const httplib::Headers headers = AuthHeaders(token);
  int failures = 0;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < count; ++i) {
    const int n = first + i;
    const Clock::time_point t0 = Clock::now();
    httplib::Result res = post ? client->Post(kRulesPath, headers,
                                              RuleBody("-s 10.200." + std::to_string((n >> 8) & 255) + "." +
                                                           std::to_string(n & 255) + "/32 -j DROP",
                                                       std::nullopt),
                                              "application/json")
                               : client->Get("/v1/version", headers);
    r.latency_ms.push_back(MillisSince(t0));
    if (!res || res->status != 200) {
      if (++failures == 1) {
        r.error = (post ? "POST: " : "GET /v1/version: ") +
                  (res ? "HTTP " + std::to_string(res->status) + ": " + res->body : httplib::to_string(res.error()));
      }
    }
  }
  r.wall_s = MillisSince(start) / 1000;
  if (failures > 0) r.error = std::to_string(failures) + " of " + std::to_string(count) + " failed, e.g. " + r.error;
  return r;
}

// A line of /proc/PID/status in kB ("VmHWM"); -1 when unreadable.
long StatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

std::optional<double> ScrapeOne(int port, const std::string& token, const std::string& series) {
  auto client = NewClient(port);
  httplib::Result res = client->Get("/metrics", AuthHeaders(token));
  if (!res || res->status != 200) return std::nullopt;
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

// ---- A flood of requests with bad or missing tokens ----

// Keeps `connections` connections (from `peers` loopback addresses 127.0.3.1..) sending requests as fast as the
// daemon answers them. kBadTokens: single-rule adds POSTed to the rules route, each with a token nobody created (a
// new random one every time, so that no cache can know it), or no Authorization header, or a malformed one (in
// turn: 2 random tokens, then none, then "Basic ..."), answered 401. kWrongPath: GET of a path no route has, without
// a token, answered 404 (before authentication). kMalformed: a request line with a fourth word, answered 400 by the
// HTTP layer, which closes the connection after it. Past the address's budget of failed authentications, every kind
// is answered 429 after a hold. Keep-alive connections send the next request on the same connection (unless the daemon
// closed it); otherwise every request has a connection of its own (closed with a reset after the answer, as a
// flooding client does, so that no TIME_WAIT runs out the ports). Two threads drive all connections through epoll
// (non-blocking connects included), so the attacker takes at most two CPUs, as a remote one would take none.
class Flood {
 public:
  struct Counts {
    uint64_t answered = 0;  // complete answers
    uint64_t refused = 0;   // the kind's own refusal: 401, 404 or 400 (Flood::Payload)
    uint64_t too_many = 0;  // 429
    uint64_t capped = 0;    // 503: a connection cap (max_connections_per_peer: a reconnect before the close counted)
    uint64_t other = 0;     // any other status
    uint64_t closed = 0;    // connections the daemon closed or reset (after an answer or before one)
    uint64_t connects = 0;
  };

  enum class Payload { kBadTokens, kWrongPath, kMalformed };
  // The status a request of `payload` gets within its address's budget.
  static int Refusal(Payload payload) {
    return payload == Payload::kBadTokens ? 401 : payload == Payload::kWrongPath ? 404 : 400;
  }

  Flood(int port, int connections, int peers, bool keep_alive, Payload payload)
      : port_(port), keep_alive_(keep_alive), payload_(payload) {
    constexpr int kThreads = 2;
    for (int t = 0; t < kThreads; ++t) {
      std::vector<int> mine;
      for (int i = t; i < connections; i += kThreads) mine.push_back(i);
      if (mine.empty()) continue;
      threads_.emplace_back([this, mine, peers, t] { Run(mine, peers, t); });
    }
  }
  ~Flood() { Stop(); }
  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  Flood(const Flood&) = delete;
  Flood& operator=(const Flood&) = delete;

  Counts counts() {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_;
  }

 private:
  struct Conn {
    int fd = -1;
    int index = 0;
    bool connecting = false;
    std::string out;
    size_t sent = 0;
    std::string in;
  };

  static uint64_t Next(uint64_t& x) {  // xorshift64*
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545f4914f6cdd1dULL;
  }

  std::string Request(uint64_t& rng, uint64_t n) {
    const std::string connection = keep_alive_ ? "" : "Connection: close\r\n";
    if (payload_ == Payload::kWrongPath) {
      return "GET /v1/no-such-route HTTP/1.1\r\nHost: 127.0.0.1\r\n" + connection + "\r\n";
    }
    if (payload_ == Payload::kMalformed) {
      return "GET /v1/version HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n" + connection + "\r\n";
    }
    const std::string body = "{\"spec\":\"-s 10.250.0.1/32 -j DROP\"}";
    std::string auth;
    switch (n % 4) {
      case 0:
      case 1: {
        static constexpr char kBase32[] = "abcdefghijklmnopqrstuvwxyz234567";
        auth = "Authorization: Bearer iptk_";
        for (int i = 0; i < 40; ++i) auth += kBase32[Next(rng) & 31];
        auth += "\r\n";
        break;
      }
      case 2:
        break;  // no header
      default:
        auth = "Authorization: Basic YWRtaW46YWRtaW4=\r\n";
        break;
    }
    return std::string("POST ") + kRulesPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
           (keep_alive_ ? "" : "Connection: close\r\n") + "\r\n" + body;
  }

  void Run(const std::vector<int>& indexes, int peers, int thread) {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (static_cast<uint64_t>(getpid()) << 20) ^ static_cast<uint64_t>(thread);
    uint64_t n = static_cast<uint64_t>(thread);
    Counts local;
    std::vector<Conn> conns(indexes.size());
    auto open = [&](size_t k) {
      Conn& c = conns[k];
      c = Conn{};
      c.index = indexes[k];
      c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c.fd < 0) return;
      const int one = 1;
      setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      setsockopt(c.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      const linger abort{1, 0};  // close = reset: no TIME_WAIT on either side
      setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
      sockaddr_in from{};
      from.sin_family = AF_INET;
      const std::string source = "127.0.3." + std::to_string(1 + c.index % std::max(peers, 1));
      inet_pton(AF_INET, source.c_str(), &from.sin_addr);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<uint16_t>(port_));
      inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
      if (bind(c.fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
        close(c.fd);
        c.fd = -1;
        return;
      }
      ++local.connects;
      const int r = connect(c.fd, reinterpret_cast<sockaddr*>(&to), sizeof(to));
      c.connecting = r != 0 && errno == EINPROGRESS;
      if (r != 0 && !c.connecting) {
        close(c.fd);
        c.fd = -1;
        return;
      }
      c.out = Request(rng, n++);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT;
      ev.data.u64 = k;
      epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    };
    auto drop = [&](size_t k) {
      Conn& c = conns[k];
      if (c.fd >= 0) close(c.fd);  // (removes it from the epoll set)
      c.fd = -1;
    };
    auto want = [&](size_t k, bool out) {
      epoll_event ev{};
      ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
      ev.data.u64 = k;
      epoll_ctl(ep, EPOLL_CTL_MOD, conns[k].fd, &ev);
    };
    for (size_t k = 0; k < conns.size(); ++k) open(k);
    std::vector<epoll_event> events(256);
    Clock::time_point flushed = Clock::now();
    while (!stop_) {
      for (size_t k = 0; k < conns.size(); ++k) {
        if (conns[k].fd < 0) open(k);
      }
      const int got = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 20);
      for (int e = 0; e < got; ++e) {
        const size_t k = events[e].data.u64;
        Conn& c = conns[k];
        if (c.fd < 0) continue;
        if (c.connecting) {
          int error = 0;
          socklen_t len = sizeof(error);
          getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &len);
          if (error != 0) {
            ++local.closed;
            drop(k);
            continue;
          }
          if (!(events[e].events & EPOLLOUT)) continue;
          c.connecting = false;
        }
        if (c.sent < c.out.size()) {
          const ssize_t w = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
          if (w < 0 && errno != EAGAIN) {
            ++local.closed;
            drop(k);
            continue;
          }
          if (w > 0) c.sent += static_cast<size_t>(w);
          if (c.sent == c.out.size()) want(k, false);
        }
        if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
        char buf[16384];
        const ssize_t r = recv(c.fd, buf, sizeof(buf), 0);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0) {
          ++local.closed;
          drop(k);
          continue;
        }
        c.in.append(buf, static_cast<size_t>(r));
        const size_t head_end = c.in.find("\r\n\r\n");
        if (head_end == std::string::npos) continue;
        size_t length = 0;
        const size_t cl = c.in.find("Content-Length: ");
        if (cl != std::string::npos && cl < head_end) length = std::strtoul(c.in.c_str() + cl + 16, nullptr, 10);
        if (c.in.size() < head_end + 4 + length) continue;
        const int status = c.in.size() > 12 ? std::atoi(c.in.c_str() + 9) : 0;
        ++local.answered;
        if (status == Refusal(payload_)) {
          ++local.refused;
        } else if (status == 429) {
          ++local.too_many;
        } else if (status == 503) {
          ++local.capped;
        } else {
          ++local.other;
        }
        const bool close_now = !keep_alive_ || c.in.find("Connection: close") < head_end;
        if (close_now) {
          drop(k);
          continue;
        }
        c.in.erase(0, head_end + 4 + length);
        c.out = Request(rng, n++);
        c.sent = 0;
        want(k, true);
      }
      if (MillisSince(flushed) > 100) {
        std::lock_guard<std::mutex> lock(mu_);
        Add(counts_, local);
        local = Counts{};
        flushed = Clock::now();
      }
    }
    for (size_t k = 0; k < conns.size(); ++k) drop(k);
    close(ep);
    std::lock_guard<std::mutex> lock(mu_);
    Add(counts_, local);
  }
  static void Add(Counts& to, const Counts& from) {
    to.answered += from.answered;
    to.refused += from.refused;
    to.too_many += from.too_many;
    to.capped += from.capped;
    to.other += from.other;
    to.closed += from.closed;
    to.connects += from.connects;
  }

  const int port_;
  const bool keep_alive_;
  const Payload payload_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  Counts counts_;  // guarded by mu_
  std::vector<std::thread> threads_;
};

// One run of legitimate load (a GET series, then a 64-client add run), with or without a flood.
struct FloodRow {
  std::string what;
  PhaseResult get;   // the GETs: latency
  PhaseResult adds;  // the adds: wall, rate, and the daemon's CPU
  Flood::Counts flood;
  double flood_s = 0;           // how long the flood ran
  std::optional<double> cpu_s;  // iptkitd CPU over the whole row (GETs + adds)
  long start_rss_kb = -1;       // VmRSS when the row starts
  long peak_rss_kb = -1;        // VmHWM over the row (reset before it)
  long rss_kb = -1;             // VmRSS at its end
};

struct FloodReport {
  std::vector<FloodRow> rows;
  std::string notes;
};

constexpr const char* kFloodChain = "FLOODROWS";

// Rows: no flood; keep-alive flood; new connection per request; no flood again. Each: `attack_requests` GET
// /v1/version one at a time on a keep-alive connection, then `flood_adds` adds by `clients` clients.
Status RunFlood(const Config& config, const Daemon& daemon, const std::string& token, int* next_add, FloodReport& out) {
  const std::string clear_refs = "/proc/" + std::to_string(daemon.pid()) + "/clear_refs";
  struct Kind {
    std::string what;
    int connections;  // 0: no flood
    bool keep_alive;
    Flood::Payload payload = Flood::Payload::kBadTokens;
  };
  const std::string n = std::to_string(config.flood);
  const std::string from = config.flood_peers == 1 ? "1 address" : std::to_string(config.flood_peers) + " addresses";
  const std::vector<Kind> kinds = {
      {"no flood", 0, true},
      {"flood: " + n + " keep-alive connections from " + from, config.flood, true},
      {"flood: " + n + " connections, a new one per request, from " + from, config.flood, false},
      {"flood: " + n + " keep-alive connections from " + from + ", no token, a nonexistent path", config.flood, true,
       Flood::Payload::kWrongPath},
      {"flood: " + n + " connections from " + from + ", a malformed request line (closed after each)", config.flood,
       true, Flood::Payload::kMalformed},
      {"no flood (again)", 0, true},
  };
  // The rows' adds go to a chain of their own, jumped to from INPUT (so that every commit still validates the
  // preload), flushed after each row.
  IPTKIT_RETURN_IF_ERROR(CheckedRequest(daemon.port(), token, "POST",
                                        R"({"ops":[{"create_chain":{"chain":")" + std::string(kFloodChain) +
                                            R"("}},{"append":{"chain":"INPUT","rule":{"spec":"-j )" + kFloodChain +
                                            R"("}}}]})",
                                        "/v1/transactions"));
  for (const Kind& kind : kinds) {
    FloodRow row;
    row.what = kind.what;
    std::fprintf(stderr, "[flood] %s\n", kind.what.c_str());
    { std::ofstream(clear_refs) << "5\n"; }  // resets VmHWM (proc(5))
    row.start_rss_kb = StatusKb(daemon.pid(), "VmRSS");
    std::unique_ptr<Flood> flood;
    const Clock::time_point flood_start = Clock::now();
    if (kind.connections > 0) {
      flood =
          std::make_unique<Flood>(daemon.port(), kind.connections, config.flood_peers, kind.keep_alive, kind.payload);
      usleep(1000000);  // let it reach its pace
    }
    const std::optional<DaemonCpu> cpu_before = ProcessCpuSeconds(daemon.pid());
    row.get = TimeRequests("GET", daemon.port(), token, config.attack_requests, false);
    const int first = *next_add;
    *next_add += config.flood_adds;
    auto spec = [first](int i) {
      return "-s 10." + std::to_string(201 + ((first + i) >> 16)) + "." + std::to_string(((first + i) >> 8) & 255) +
             "." + std::to_string((first + i) & 255) + "/32 -j DROP";
    };
    row.adds = RunClients(
        "adds", daemon.port(), daemon.pid(), token, config.clients, config.flood_adds,
        [&spec](int i) { return RuleBody(spec(i), std::nullopt); }, [](int) { return RulesPath(kFloodChain); });
    const std::optional<DaemonCpu> cpu_after = ProcessCpuSeconds(daemon.pid());
    if (cpu_before && cpu_after) row.cpu_s = cpu_after->total - cpu_before->total;
    row.peak_rss_kb = StatusKb(daemon.pid(), "VmHWM");
    row.rss_kb = StatusKb(daemon.pid(), "VmRSS");
    if (flood) {
      flood->Stop();
      row.flood_s = MillisSince(flood_start) / 1000;
      row.flood = flood->counts();
    }
    // The row's rules go again, so that every row commits into a chain of the same size (a commit's cost grows
    // with it).
    if (row.adds.error.empty()) {
      IPTKIT_RETURN_IF_ERROR(CheckedRequest(daemon.port(), token, "POST",
                                            R"({"ops":[{"flush":{"chain":")" + std::string(kFloodChain) + R"("}}]})",
                                            "/v1/transactions"));
    }
    out.rows.push_back(std::move(row));
  }
  for (const FloodRow& r : out.rows) {
    // A request of the flood that was not refused would be a hole: every one of them must be its kind's refusal
    // (401, 404 or 400), 429, or a connection cap's 503.
    if (r.flood.other > 0) {
      return Status::Internal(r.what + ": " + std::to_string(r.flood.other) +
                              " flood requests answered neither their refusal (401, 404, 400) nor 429 nor 503");
    }
    if (!r.get.error.empty()) return Status::Internal(r.what + ": GET: " + r.get.error);
    if (!r.adds.error.empty()) return Status::Internal(r.what + ": adds: " + r.adds.error);
  }
  return Status::Ok();
}

std::string FormatFlood(const Config& config, const FloodReport& report) {
  std::ostringstream md;
  md << "#### Flood of requests with bad or missing tokens (legitimate load beside it)\n\n"
     << "| flood | GET p50 ms | GET p99 ms | GET max ms | adds/s (" << config.clients << " clients) | add p99 ms | "
     << "iptkitd CPU s (cores) | flood answers/s | 401, 404 or 400 | 429 | 503 | flood conns dropped unanswered | "
     << "RSS MB: start, peak, end |\n"
     << "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  for (const FloodRow& r : report.rows) {
    const double busy = r.get.wall_s + r.adds.wall_s;
    md << "| " << r.what << " | " << Fixed(Percentile(r.get.latency_ms, 0.5), 2) << " | "
       << Fixed(Percentile(r.get.latency_ms, 0.99), 2) << " | " << Fixed(Percentile(r.get.latency_ms, 1.0), 2) << " | "
       << Fixed(r.adds.wall_s > 0 ? r.adds.changes / r.adds.wall_s : 0, 0) << " | "
       << Fixed(Percentile(r.adds.latency_ms, 0.99), 1) << " | "
       << (r.cpu_s ? Fixed(*r.cpu_s, 2) + " (" + Fixed(busy > 0 ? *r.cpu_s / busy : 0, 2) + ")" : std::string("?"))
       << " | " << (r.flood_s > 0 ? Fixed(static_cast<double>(r.flood.answered) / r.flood_s, 0) : std::string("-"))
       << " | " << r.flood.refused << " | " << r.flood.too_many << " | " << r.flood.capped << " | " << r.flood.closed
       << " | " << Fixed(static_cast<double>(r.start_rss_kb) / 1024, 0) << ", "
       << Fixed(static_cast<double>(r.peak_rss_kb) / 1024, 0) << ", " << Fixed(static_cast<double>(r.rss_kb) / 1024, 0)
       << " |\n";
  }
  md << "\n- " << config.attack_requests
     << " authenticated `GET /v1/version` one at a time on a keep-alive connection, "
     << "then " << config.flood_adds << " single-rule adds by " << config.clients << " clients (keep-alive, "
     << "127.0.0.1) into chain " << kFloodChain
     << " (jumped to from INPUT; flushed after each row), per row; the flood (" << config.flood
     << " connections from 127.0.3.x, driven by 2 threads of "
     << "the benchmark through epoll) POSTs adds to `" << kRulesPath << "` with a new random `Bearer iptk_...` "
     << "token (half of the requests), no Authorization header (a quarter) or `Basic ...` (a quarter), as fast as "
     << "answers come (401); the nonexistent-path rows GET `/v1/no-such-route` without a token (404), the "
     << "malformed rows send `GET /v1/version HTTP/1.1 extra` (400; the daemon closes the connection after it); "
     << "429: past the address's budget of failed authentications (held); 503: a connection over "
     << "max_connections_per_peer (a reconnect before the daemon counted the closed one). Started 1 s before the "
     << "row. CPU: iptkitd's user + system time over the row (GETs + adds), in cores over its wall time. Peak RSS: "
     << "VmHWM, reset before each row (clear_refs 5).\n\n";
  return md.str();
}

struct AttackReport {
  std::vector<PhaseResult> rows;
  std::string notes;
  FloodReport flood;  // the flood rows, when --flood > 0
};

// The attack phase: latency of authenticated requests before and during the attack.
Status RunAttack(const Config& config, const Daemon& daemon, const std::string& token, AttackReport& out) {
  const int n = config.attack_requests;
  std::fprintf(stderr, "[attack] %d GET /v1/version without attackers\n", n);
  out.rows.push_back(TimeRequests("GET /v1/version, no attackers", daemon.port(), token, n, false));
  out.rows.push_back(TimeRequests("POST add (group commit), no attackers", daemon.port(), token, n / 20, true));
  std::fprintf(stderr, "[attack] opening %d slowloris connections and %d stalled event streams\n", config.slowloris,
               config.stalled_streams);
  Attackers attackers(daemon.port(), token, config.slowloris, config.stalled_streams);
  const std::string tcp = "iptkitd_http_connections{listener=\"tcp\"}";
  const Clock::time_point wait = Clock::now();
  std::optional<double> open;
  while (MillisSince(wait) < 10000) {
    open = ScrapeOne(daemon.port(), token, tcp);
    const std::optional<double> streams = ScrapeOne(daemon.port(), token, "iptkitd_event_streams");
    if (open && streams && *open >= config.slowloris + config.stalled_streams && *streams >= config.stalled_streams) {
      break;
    }
    usleep(100000);
  }
  std::fprintf(stderr, "[attack] %d GET /v1/version and %d POST adds under attack\n", n, n / 20);
  out.rows.push_back(TimeRequests("GET /v1/version, under attack", daemon.port(), token, n, false));
  out.rows.push_back(TimeRequests("POST add (group commit), under attack", daemon.port(), token, n / 20, true, n / 20));
  const std::optional<double> cut =
      ScrapeOne(daemon.port(), token, "iptkitd_http_limit_hits_total{limit=\"event_buffer_bytes\"}");
  const std::optional<double> timed_out =
      ScrapeOne(daemon.port(), token, "iptkitd_http_limit_hits_total{limit=\"header_timeout\"}");
  std::ostringstream notes;
  notes << "- attackers: " << config.slowloris << " slowloris connections (a header byte per second each) and "
        << config.stalled_streams << " event streams that never read (4 KiB receive buffers), from 127.0.1.x and "
        << "127.0.2.x, reconnected whenever the daemon closed them (" << attackers.reconnects() << " times); TCP "
        << "connections open when the timing started: " << (open ? Fixed(*open, 0) : std::string("?"))
        << "; streams cut for falling behind: " << (cut ? Fixed(*cut, 0) : std::string("0"))
        << "; heads timed out: " << (timed_out ? Fixed(*timed_out, 0) : std::string("0")) << "; iptkitd peak RSS "
        << StatusKb(daemon.pid(), "VmHWM") / 1024 << " MB.\n";
  out.notes = notes.str();
  for (const PhaseResult& r : out.rows) {
    if (!r.error.empty()) return Status::Internal(r.tool + ": " + r.error);
  }
  return Status::Ok();
}

std::string FormatAttack(const AttackReport& report) {
  std::ostringstream md;
  md << "#### HTTP under attack (one client, one request at a time, keep-alive)\n\n"
     << "| requests | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|--:|--:|--:|--:|--:|\n";
  for (const PhaseResult& r : report.rows) {
    md << "| " << r.tool << (r.error.empty() ? "" : " (FAILED)") << " | " << r.changes << " | "
       << Fixed(Percentile(r.latency_ms, 0.5), 2) << " | " << Fixed(Percentile(r.latency_ms, 0.9), 2) << " | "
       << Fixed(Percentile(r.latency_ms, 0.99), 2) << " | " << Fixed(Percentile(r.latency_ms, 1.0), 2) << " |\n";
  }
  md << "\n" << report.notes << "\n";
  return md.str();
}

// `preload` rules in INPUT (chains 1), or spread round-robin over user chains c0..c{chains-1}, each jumped to
// from INPUT.
Status LoadPreload(const Variant& variant, int netns_fd, int preload, int chains = 1) {
  std::string text = GenerateRules(preload);
  if (chains > 1) {
    std::string spread = "*filter\n";
    for (int c = 0; c < chains; ++c) spread += ":c" + std::to_string(c) + " - [0:0]\n";
    std::istringstream in(text);
    int i = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("-A INPUT ", 0) != 0) continue;
      spread += "-A " + SpreadChain(i++, chains) + line.substr(8) + "\n";
    }
    for (int c = 0; c < chains; ++c) spread += "-A INPUT -j c" + std::to_string(c) + "\n";
    text = spread + "COMMIT\n";
  }
  auto loaded = RunProcessOk({variant.restore, "--noflush", "-w", "10"}, {.netns_fd = netns_fd, .stdin_data = text});
  if (!loaded.ok()) return loaded.status().WithContext("loading the preload");
  return Status::Ok();
}

// Fails unless filter INPUT (chains 1) or the chains c0..c{chains-1} together hold exactly `expected` rules.
Status CheckRuleCount(const Variant& variant, int netns_fd, size_t expected, const std::string& when, int chains = 1) {
  IPTKIT_ASSIGN_OR_RETURN(std::string saved, SaveFilter(variant, netns_fd));
  size_t n = 0;
  for (int c = 0; c < std::max(chains, 1); ++c) n += CountRuleLines(saved, SpreadChain(c, chains));
  if (n != expected) {
    return Status::Internal(when + ": iptables-save shows " + std::to_string(n) + " rules in " +
                            (chains > 1 ? "c0..c" + std::to_string(chains - 1) : std::string("INPUT")) + ", expected " +
                            std::to_string(expected));
  }
  return Status::Ok();
}

// The tool column of a daemon phase.
std::string DaemonTool(const std::string& backend, const std::string& what, int chains) {
  return "iptkitd (" + backend + ")" + (what.empty() ? "" : " " + what) +
         (chains > 1 ? ", " + std::to_string(chains) + " chains" : std::string());
}

std::string NetnsName(const Variant& variant, const std::string& what) {
  return "iptkit-bench-" + std::to_string(getpid()) + "-" + variant.name + "-" + what;
}

void ApplyMetricsDelta(PhaseResult& r, const MetricsSnapshot& before, const MetricsSnapshot& after) {
  const double commits = after.batch.count - before.batch.count;
  r.commits = commits;
  if (commits > 0) r.mean_batch = (after.batch.sum - before.batch.sum) / commits;
  const double commit_n = after.commit.count - before.commit.count;
  if (commit_n > 0) r.mean_commit_ms = (after.commit.sum - before.commit.sum) / commit_n * 1000;
  for (const auto& [phase, totals] : after.phases) {
    auto was = before.phases.find(phase);
    const HistogramTotals zero;
    const HistogramTotals& b = was == before.phases.end() ? zero : was->second;
    if (totals.count > b.count) r.phase_ms[phase] = (totals.sum - b.sum) / (totals.count - b.count) * 1000;
  }
}

// The daemon phases; appends one PhaseResult per phase (the failing one carries the error).
// One daemon on `backend` in a fresh namespace with the preload in the layout of `chains`.
Status RunDaemon(const Config& config, const Variant& variant, const std::string& backend, int chains,
                 std::vector<PhaseResult>& out, AttackReport* attack) {
  const std::string ns_name = NetnsName(variant, "daemon-" + backend + "-" + std::to_string(chains));
  std::fprintf(stderr, "[%s daemon] netns %s, preloading %d rules in %d chain(s)\n", variant.name.c_str(),
               ns_name.c_str(), config.preload, chains);
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Netns> ns, Netns::Create(ns_name));
  IPTKIT_RETURN_IF_ERROR(LoadPreload(variant, ns->fd(), config.preload, chains));
  IPTKIT_RETURN_IF_ERROR(CheckRuleCount(variant, ns->fd(), config.preload, "after the preload", chains));

  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<TempDir> dir,
                          TempDir::Create("iptkit-bench-" + std::to_string(getpid()) + "-" + variant.name + "-"));
  const std::string state_dir = dir->path() + "/state";
  IPTKIT_ASSIGN_OR_RETURN(std::string token_out,
                          RunProcessOk({config.iptkitd, "token", "create", "--name", "bench", "--scope", "read",
                                        "--scope", "write", "--state-dir", state_dir}));
  const std::vector<std::string> token_words = Words(token_out);
  if (token_words.size() != 1) return Status::Internal("`iptkitd token create` printed '" + token_out + "'");
  const std::string token = token_words.front();

  std::vector<std::string> args = {"--netns",      ns_name,
                                   "--backend",    backend,
                                   "--listen",     "127.0.0.1:0",
                                   "--ready-file", dir->path() + "/ready.json",
                                   "--state-dir",  state_dir,
                                   "--rate-limit", "0",
                                   "--log-level",  config.daemon_log_level};
  args.insert(args.end(), config.daemon_args.begin(), config.daemon_args.end());
  const Clock::time_point started = Clock::now();
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Daemon> daemon,
                          Daemon::Start(config.iptkitd, args, config.daemon_env, dir->path() + "/iptkitd.log",
                                        dir->path() + "/ready.json"));
  std::fprintf(stderr, "[%s daemon] iptkitd (%s backend) serving on 127.0.0.1:%d after %.2f s\n", variant.name.c_str(),
               daemon->backend().c_str(), daemon->port(), MillisSince(started) / 1000);
  if (daemon->backend() != backend) {
    return Status::Internal("iptkitd reports backend '" + daemon->backend() + "', wanted " + backend);
  }

  // Checked warm-up: one add and its delete through the API (fills the daemon's snapshot and spec caches).
  const std::string warm_up_path = RulesPath(SpreadChain(0, chains));
  IPTKIT_RETURN_IF_ERROR(
      CheckedRequest(daemon->port(), token, "POST", RuleBody(kWarmUpSpec, std::nullopt), warm_up_path));
  IPTKIT_RETURN_IF_ERROR(CheckRuleCount(variant, ns->fd(), config.preload + 1, "after the warm-up add", chains));
  IPTKIT_RETURN_IF_ERROR(
      CheckedRequest(daemon->port(), token, "DELETE", RuleBody(kWarmUpSpec, std::nullopt), warm_up_path));
  IPTKIT_RETURN_IF_ERROR(CheckRuleCount(variant, ns->fd(), config.preload, "after the warm-up delete", chains));

  size_t expected = static_cast<size_t>(config.preload);
  auto phase = [&](const std::string& tool, int count, const std::function<std::string(int)>& body,
                   const std::function<std::string(int)>& path) -> Status {
    std::fprintf(stderr, "[%s daemon] %s: %d clients, %d adds\n", variant.name.c_str(), tool.c_str(), config.clients,
                 count);
    IPTKIT_ASSIGN_OR_RETURN(MetricsSnapshot before, ScrapeMetrics(daemon->port(), token));
    const std::optional<long long> overflows_before = TcpExtCounter("ListenOverflows");
    PhaseResult r = RunClients(tool, daemon->port(), daemon->pid(), token, config.clients, count, body, path);
    const std::optional<long long> overflows_after = TcpExtCounter("ListenOverflows");
    if (overflows_before && overflows_after) r.listen_overflows = *overflows_after - *overflows_before;
    expected += static_cast<size_t>(count);
    if (r.error.empty()) {
      Status counted = CheckRuleCount(variant, ns->fd(), expected, "after " + tool, chains);
      if (!counted.ok()) r.error = counted.message();
    }
    Result<MetricsSnapshot> after = ScrapeMetrics(daemon->port(), token);
    if (after.ok()) {
      ApplyMetricsDelta(r, before, *after);
    } else if (r.error.empty()) {
      r.error = after.status().ToString();
    }
    std::fprintf(stderr, "[%s daemon] %s: %.2f s, %.0f changes/s, %.0f commits%s\n", variant.name.c_str(), tool.c_str(),
                 r.wall_s, r.wall_s > 0 ? count / r.wall_s : 0, r.commits.value_or(-1),
                 r.error.empty() ? "" : " (FAILED)");
    const std::string error = r.error;
    out.push_back(std::move(r));
    if (!error.empty()) {
      return Status::Internal(tool + ": " + error + "\n  iptkitd log (tail):\n" + Tail(daemon->log_path()));
    }
    return Status::Ok();
  };
  IPTKIT_RETURN_IF_ERROR(phase(
      DaemonTool(backend, std::to_string(config.clients) + " clients", chains), config.adds,
      [](int i) { return RuleBody(AddSpec(i), std::nullopt); },
      [chains](int i) { return RulesPath(SpreadChain(i, chains)); }));
  if (attack != nullptr) {
    // Before the owned TTL adds: with thousands of owned rules the daemon's drift checks would commit meanwhile.
    IPTKIT_RETURN_IF_ERROR(RunAttack(config, *daemon, token, *attack));
    expected += static_cast<size_t>(2 * (config.attack_requests / 20));
    if (config.flood > 0) {
      int next_add = 0;
      IPTKIT_RETURN_IF_ERROR(RunFlood(config, *daemon, token, &next_add, attack->flood));
      ++expected;  // the jump to the rows' chain
      IPTKIT_RETURN_IF_ERROR(CheckRuleCount(variant, ns->fd(), expected, "after the flood rows"));
    }
  }
  if (config.ttl_adds > 0 && chains == 1) {
    IPTKIT_RETURN_IF_ERROR(phase(
        DaemonTool(backend, "owned TTL adds, " + std::to_string(config.clients) + " clients", chains), config.ttl_adds,
        [](int i) { return RuleBody(TtlSpec(i), 3600); }, [](int) { return std::string(kRulesPath); }));
  }
  const std::string log = Tail(daemon->log_path());
  IPTKIT_RETURN_IF_ERROR(daemon->Stop());
  if (!log.empty()) std::fprintf(stderr, "[%s daemon] iptkitd log (tail):\n%s\n", variant.name.c_str(), log.c_str());
  return Status::Ok();
}

// The same adds as `iptables -A` processes, one at a time, in a fresh namespace with the same preload.
Status RunLoop(const Config& config, const Variant& variant, std::vector<PhaseResult>& out) {
  const int count = config.loop_adds < 0 ? config.adds : config.loop_adds;
  const std::string ns_name = NetnsName(variant, "loop");
  std::fprintf(stderr, "[%s loop] netns %s, preloading %d rules, then %d x iptables -A\n", variant.name.c_str(),
               ns_name.c_str(), config.preload, count);
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Netns> ns, Netns::Create(ns_name));
  IPTKIT_RETURN_IF_ERROR(LoadPreload(variant, ns->fd(), config.preload));
  IPTKIT_RETURN_IF_ERROR(CheckRuleCount(variant, ns->fd(), config.preload, "after the preload"));
  PhaseResult r;
  r.tool = "`iptables -A` loop (1 process per add)";
  r.changes = count;
  r.latency_ms.reserve(static_cast<size_t>(count));
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> argv = {variant.iptables, "-w", "10", "-t", "filter", "-A", kChain};
    for (std::string& w : Words(AddSpec(i))) argv.push_back(std::move(w));
    const Clock::time_point t0 = Clock::now();
    Result<std::string> done = RunProcessOk(argv, {.netns_fd = ns->fd()});
    r.latency_ms.push_back(MillisSince(t0));
    if (!done.ok()) {
      r.error = "add " + std::to_string(i) + ": " + done.status().ToString();
      break;
    }
    if ((i + 1) % 1000 == 0) {
      std::fprintf(stderr, "[%s loop] %d adds, %.1f s\n", variant.name.c_str(), i + 1, MillisSince(start) / 1000);
    }
  }
  r.wall_s = MillisSince(start) / 1000;
  if (r.error.empty()) {
    Status counted =
        CheckRuleCount(variant, ns->fd(), static_cast<size_t>(config.preload + count), "after the iptables -A loop");
    if (!counted.ok()) r.error = counted.message();
  }
  const std::string error = r.error;
  out.push_back(std::move(r));
  if (!error.empty()) return Status::Internal(error);
  return Status::Ok();
}

// ---- Report ----

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string FirstLine(const Result<std::string>& text) {
  if (!text.ok()) return "?";
  return text->substr(0, text->find('\n'));
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string FormatVariant(const std::string& variant, const Config& config, const std::vector<PhaseResult>& rows,
                          const std::vector<std::string>& errors) {
  std::ostringstream md;
  std::string backends = variant;
  if (variant == "nft") {
    backends.clear();
    for (const std::string& b : config.nft_backends) backends += (backends.empty() ? "" : ", ") + b;
  }
  md << "#### " << variant << " (iptkitd --backend " << backends << "; " << config.preload
     << " rules preloaded in filter INPUT, or spread over user chains where the tool says so)\n\n"
     << "| tool | adds | wall s | changes/s | p50 ms | p99 ms | mean batch | commits | mean commit ms | "
        "÷ iptables -A loop |\n"
     << "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  std::optional<double> loop_rate;
  for (const PhaseResult& r : rows) {
    if (r.tool.rfind("`iptables -A`", 0) == 0 && r.error.empty() && r.wall_s > 0) loop_rate = r.changes / r.wall_s;
  }
  for (const PhaseResult& r : rows) {
    const double rate = r.wall_s > 0 ? r.changes / r.wall_s : 0;
    md << "| " << r.tool << (r.error.empty() ? "" : " (FAILED)") << " | " << r.changes << " | " << Fixed(r.wall_s, 2)
       << " | " << Fixed(rate, 0) << " | " << Fixed(Percentile(r.latency_ms, 0.5), 2) << " | "
       << Fixed(Percentile(r.latency_ms, 0.99), 2) << " | "
       << (r.mean_batch ? Fixed(*r.mean_batch, 1) : std::string(r.commits ? "-" : "1")) << " | "
       << (r.commits ? Fixed(*r.commits, 0) : std::to_string(r.changes)) << " | "
       << (r.mean_commit_ms ? Fixed(*r.mean_commit_ms, 1) : std::string("-")) << " | "
       << (loop_rate && r.error.empty() ? Fixed(rate / *loop_rate, 1) + "×" : std::string("n/a")) << " |\n";
  }
  md << "\n";
  for (const PhaseResult& r : rows) {
    if (r.commits) {
      md << "- " << r.tool << ": responses' batch_requests mean " << Fixed(r.mean_batch_seen, 1) << ", max "
         << r.max_batch_seen << " (request-weighted; the table's mean batch is per commit, from /metrics)";
      if (r.listen_overflows) md << "; TCP listen overflows meanwhile: " << *r.listen_overflows;
      if (r.daemon_cpu_s && r.changes > 0) {
        md << "; CPU per change: iptkitd " << Fixed(*r.daemon_cpu_s / r.changes * 1e6, 0) << " µs (HTTP threads "
           << Fixed(r.daemon_http_cpu_s.value_or(0) / r.changes * 1e6, 0) << " µs), clients "
           << Fixed(r.clients_cpu_s / r.changes * 1e6, 0) << " µs";
      }
      if (!r.phase_ms.empty()) {
        md << "; writer per drain, mean ms:";
        for (const char* phase : kDrainPhases) {
          auto it = r.phase_ms.find(phase);
          md << " " << phase << " " << (it == r.phase_ms.end() ? std::string("-") : Fixed(it->second, 1));
        }
      }
      md << ".\n";
    }
  }
  for (const std::string& e : errors) md << "- **error**: " << e << "\n";
  md << "\n";
  return md.str();
}

int Main(int argc, char** argv) {
  Config config;
  CLI::App app{"iptkitd group commit under concurrent clients vs an `iptables -A` loop (Markdown on stdout)"};
  app.add_option("--variants", config.variants, "nft,legacy")->delimiter(',');
  app.add_option("--nft-backend", config.nft_backends,
                 "iptkitd --backend for the nft variant: nft (restore) and/or native, each its own daemon")
      ->delimiter(',')
      ->check(CLI::IsMember({"nft", "native"}));
  app.add_option("--chains", config.chains,
                 "layouts: 1 = preload and adds in INPUT; N = spread over N user chains (default 1,100)")
      ->delimiter(',')
      ->check(CLI::Range(1, 10000));
  app.add_option("--preload", config.preload, "rules loaded into filter INPUT before the adds")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--adds", config.adds, "single-rule adds sent to the daemon")->check(CLI::Range(1, 1 << 20));
  app.add_option("--clients", config.clients, "concurrent client threads, one keep-alive connection each")
      ->check(CLI::Range(1, 1024));
  app.add_option("--loop-adds", config.loop_adds, "adds done as `iptables -A` processes (default: --adds)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--ttl-adds", config.ttl_adds, "owned adds with ttl 3600 after the plain ones (0: skip)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--iptkitd", config.iptkitd, "path of the iptkitd binary")->check(CLI::ExistingFile);
  app.add_option("--daemon-log-level", config.daemon_log_level, "iptkitd --log-level");
  app.add_option("--daemon-env", config.daemon_env, "KEY=VALUE added to iptkitd's environment (repeatable)");
  app.add_option("--daemon-arg", config.daemon_args,
                 "a word added to iptkitd's command line (repeatable, in order: --daemon-arg=--max-batch "
                 "--daemon-arg=32)");
  app.add_option("--attack-requests", config.attack_requests,
                 "GET /v1/version timed before and under attack, after the first variant's plain adds (0: skip)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--slowloris", config.slowloris, "attack: connections sending a header byte per second")
      ->check(CLI::Range(0, 10000));
  app.add_option("--stalled-streams", config.stalled_streams, "attack: event streams that never read")
      ->check(CLI::Range(0, 10000));
  app.add_option("--flood", config.flood,
                 "attack: connections flooding the rules route with bad or missing tokens, beside legitimate load "
                 "(0: skip)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--flood-peers", config.flood_peers, "attack: loopback addresses the flood comes from (127.0.3.x)")
      ->check(CLI::Range(1, 254));
  app.add_option("--flood-adds", config.flood_adds, "attack: legitimate adds timed per flood row")
      ->check(CLI::Range(1, 1 << 20));
  CLI11_PARSE(app, argc, argv);
  for (const std::string& v : config.variants) {
    if (v != "nft" && v != "legacy") {
      std::cerr << "--variants: unknown variant '" << v << "'\n";
      return 2;
    }
  }
  if (config.iptkitd.empty() || config.iptkitd[0] != '/') {
    std::cerr << "--iptkitd must be an absolute path\n";
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << "iptkitd_bench must run as root (it creates network namespaces)\n";
    return 2;
  }
  InstallCleanupHandlers();

  utsname host{};
  uname(&host);
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::ostringstream md;
  const int loop_adds = config.loop_adds < 0 ? config.adds : config.loop_adds;
  md << "## iptkitd group-commit benchmark (" << date << ")\n\n"
     << "Linux " << host.release << ", " << sysconf(_SC_NPROCESSORS_ONLN) << " CPUs (" << CpuModel() << "); "
     << FirstLine(RunProcessOk({Variant::Nft().iptables, "-V"})) << "; "
     << FirstLine(RunProcessOk({Variant::Legacy().iptables, "-V"})) << "; load average at start " << LoadAverage()
     << "; iptkitd " << config.iptkitd << ".\n\n"
     << "- iptkitd: " << config.clients << " client threads (one keep-alive HTTP/1.1 connection each, on 127.0.0.1) "
     << "POST " << config.adds << " single-rule appends `{\"spec\": \"-s 172.16.x.y/32 -j DROP\"}` to "
     << "`" << kRulesPath << "` (rate limit off); latency per request, wall clock from the first request to the "
     << "last answer. Every answer checked (200) and the rule count checked with iptables-save afterwards. "
     << "A tool named with \"N chains\": a fresh daemon whose namespace has the preload spread round-robin over N "
     << "user chains c0..c{N-1} (each jumped to from INPUT), and the i-th add goes to chain c{i mod N}.\n";
  if (config.ttl_adds > 0) {
    md << "- owned TTL adds: then " << config.ttl_adds << " adds `{\"spec\": \"-s 100.64.x.y/32 -j DROP\", "
       << "\"ttl\": 3600}` (managed rules of the default owner: the declarative path, stored in SQLite) by the "
       << "same clients, into the same daemon.\n";
  }
  if (!config.daemon_env.empty()) {
    md << "- iptkitd's environment also had:";
    for (const std::string& e : config.daemon_env) md << " `" << e << "`";
    md << ".\n";
  }
  if (!config.daemon_args.empty()) {
    md << "- iptkitd's command line also had:";
    for (const std::string& a : config.daemon_args) md << " `" << a << "`";
    md << ".\n";
  }
  md << "- mean batch = requests per kernel commit, commits and mean commit ms (iptkitd_commit_duration_seconds) "
     << "from /metrics deltas around the phase.\n"
     << "- `iptables -A` loop: the first " << loop_adds << " of the same specs as `iptables-{nft,legacy} -w 10 -t "
     << "filter -A INPUT <spec>`, one process after the other (fork + setns + execve), in a fresh namespace with "
     << "the same preload; p50/p99 per command.\n\n";

  if (config.attack_requests > 0) {
    md << "- HTTP under attack (after the first variant's plain adds, same daemon): " << config.attack_requests
       << " authenticated `GET /v1/version` one after the other on one keep-alive connection and "
       << config.attack_requests / 20 << " single-rule POSTs (each its own commit), without attackers, then the "
       << "same with " << config.slowloris << " slowloris connections and " << config.stalled_streams
       << " never-reading event streams open (the commits' events make the stalled streams fall behind).\n\n";
  }

  bool failed = false;
  AttackReport attack;
  bool attack_done = config.attack_requests <= 0;
  for (const std::string& name : config.variants) {
    const Variant variant = name == "nft" ? Variant::Nft() : Variant::Legacy();
    std::vector<PhaseResult> rows;
    std::vector<std::string> errors;
    const bool attack_here = !attack_done;
    attack_done = true;
    const std::vector<std::string> backends = name == "nft" ? config.nft_backends : std::vector<std::string>{name};
    bool first = true;
    for (int chains : config.chains) {
      for (const std::string& backend : backends) {
        // The attack runs once, in the first daemon of the 1-chain layout.
        AttackReport* here = attack_here && first && chains == 1 ? &attack : nullptr;
        if (here != nullptr) first = false;
        if (Status s = RunDaemon(config, variant, backend, chains, rows, here); !s.ok()) {
          errors.push_back("daemon (" + backend + ", " + std::to_string(chains) + " chains): " + s.ToString());
          failed = true;
        }
      }
    }
    if (loop_adds > 0) {
      if (Status s = RunLoop(config, variant, rows); !s.ok()) {
        errors.push_back("iptables -A loop: " + s.ToString());
        failed = true;
      }
    }
    md << FormatVariant(name, config, rows, errors);
    std::fprintf(stderr, "%s", FormatVariant(name, config, rows, errors).c_str());
    if (attack_here && !attack.rows.empty()) {
      md << FormatAttack(attack);
      std::fprintf(stderr, "%s", FormatAttack(attack).c_str());
    }
    if (attack_here && !attack.flood.rows.empty()) {
      md << FormatFlood(config, attack.flood);
      std::fprintf(stderr, "%s", FormatFlood(config, attack.flood).c_str());
    }
  }
  std::cout << md.str();
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
