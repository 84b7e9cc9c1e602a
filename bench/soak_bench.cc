// iptkitd_soak: the daemon under mixed load next to a foreign writer (docs/daemon.md; the soak of issue 8 item 10).
//
// In a fresh network namespace (iptkit-bench-<pid>-soak) with lo up, one iptkitd (--drift-interval 1s, rate limit
// off) serves for --seconds while, all at once:
//   - --clients threads (one keep-alive connection each) add and delete unowned rules in filter INPUT (a fifth of
//     the adds at ?position=1), add and delete owned rules (owners app0..app3, a quarter of the adds `first`),
//     and add owned rules with a TTL of 1-3 s (owner ttl) that they leave to expire; every spec is new;
//   - a foreign writer runs `iptables-nft -I INPUT 1 ...`, `-A INPUT ...` and `-D` of them in a loop;
//   - every --flush-every seconds the foreign writer flushes GUARD-IN, the chain of owner guard (a document with a
//     `first` hook into it);
//   - a traffic thread sends UDP datagrams over lo that four owned rules of owner steady count (two `first` and two
//     `last` hooks nobody changes), and a monitor reads `iptables-nft-save -c` every 100 ms.
// A client that gets 409 sends the same request once more: a success there is a conflict the daemon should have
// retried itself. The report (Markdown on stdout, progress on stderr) gives changes/s, errors by status, those
// conflicts, 412s naming an unrepresentable table, TTL removal lateness (from the deadline the daemon answered,
// expires_at, to the first read that no longer shows the rule; resolution: the monitor's period and the time one
// iptables-nft-save takes), counter resets of steady's rules
// (packets fell below half of the last value seen), drift repair time after each flush, and after the load: added
// rules missing or doubled, deleted rules still there, audit entries of the daemon's own work that failed.
// Needs root; touches only the namespace it creates and deletes, and kills the daemon (also on SIGINT/SIGTERM).
//
//   sudo bench/daemon_run.sh build/release/bench/iptkitd_soak --seconds 60 --clients 16
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <set>
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

using Json = nlohmann::json;
constexpr const char* kRules = "/v1/ipv4/tables/filter/chains/INPUT/rules";

struct Config {
  int seconds = 60;
  int clients = 16;
  int flush_every_s = 5;
  bool foreign = true;  // the foreign writer and the flushes
  std::string iptkitd = IPTKITD_PATH;
  std::string backend = "nft";  // iptkitd --backend: nft (iptables-nft-restore) or native
  std::string daemon_log_level = "warn";
  std::string keep_log;  // copy the daemon's log here at the end
};

double Percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(samples.size())));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

// ---- The daemon process ----

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
  g_harness_handler = old.sa_handler;
  struct sigaction action {};
  action.sa_handler = KillDaemonHandler;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &action, nullptr);
}

// Starts `argv` (the daemon; dies with us: PR_SET_PDEATHSIG) with output to `log`, and waits for its ready file;
// returns its pid and port.
Result<std::pair<pid_t, int>> StartDaemon(const std::vector<std::string>& argv, const std::string& log,
                                          const std::string& ready) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  static char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  static char env_lang[] = "LC_ALL=C";
  char* envp[] = {env_path, env_lang, nullptr};
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) return Status::Internal("open " + log + ": " + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return Status::Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) _exit(126);
    close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) signal(sig, SIG_DFL);
    execve(args[0], args.data(), envp);
    _exit(127);
  }
  close(log_fd);
  g_daemon_pid = pid;
  const Clock::time_point start = Clock::now();
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      g_daemon_pid = 0;
      return Status::Internal("iptkitd exited during start-up (status " + std::to_string(status) + "); see " + log);
    }
    std::ifstream in(ready);
    if (in) {
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      Json doc = Json::parse(text, nullptr, false);
      if (doc.is_object() && doc.contains("endpoints")) {
        for (const Json& e : doc["endpoints"]) {
          const std::string endpoint = e.get<std::string>();
          if (endpoint.rfind("http://127.0.0.1:", 0) == 0) return std::make_pair(pid, std::stoi(endpoint.substr(17)));
        }
        return Status::Internal("no http://127.0.0.1 endpoint in " + text);
      }
    }
    if (MillisSince(start) > 120000) return Status::Internal("iptkitd not ready after 120 s; see " + log);
    usleep(20000);
  }
}

void StopDaemon(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int status = 0;
  const Clock::time_point start = Clock::now();
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (MillisSince(start) > 20000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(10000);
  }
  g_daemon_pid = 0;
}

// ---- HTTP ----

struct Answer {
  int status = 0;
  std::string body;
};

class Client {
 public:
  Client(int port, std::string token) : http_("127.0.0.1", port), token_(std::move(token)) {
    http_.set_keep_alive(true);
    http_.set_tcp_nodelay(true);
    http_.set_connection_timeout(10);
    http_.set_read_timeout(120);
    http_.set_write_timeout(60);
  }
  Answer Send(const std::string& method, const std::string& path, const std::string& body = "") {
    httplib::Request req;
    req.method = method;
    req.path = path;
    req.headers.emplace("Authorization", "Bearer " + token_);
    if (!body.empty()) {
      req.body = body;
      req.headers.emplace("Content-Type", "application/json");
    }
    httplib::Result res = http_.send(req);
    if (!res) return {0, httplib::to_string(res.error())};
    return {res->status, res->body};
  }

 private:
  httplib::Client http_;
  std::string token_;
};

// The sum of every sample of a metric family in Prometheus text (0 for a family without samples; nullopt: not
// exported).
std::optional<double> MetricSum(const std::string& text, const std::string& name) {
  std::optional<double> sum;
  if (text.find("# TYPE " + name + " ") != std::string::npos) sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    if (line[name.size()] != ' ' && line[name.size()] != '{') continue;
    sum = sum.value_or(0) + std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// ---- Shared results ----

// A TTL rule: its tag id, its deadline as the daemon answered it (expires_at), when the client had the answer, when
// the monitor first saw it gone, and its spec (named when it is seen gone before its deadline).
using WallClock = std::chrono::system_clock;
struct TtlRule {
  std::string id;
  WallClock::time_point deadline;
  WallClock::time_point answered;
  std::optional<WallClock::time_point> gone;
  std::string spec;
};

// "2026-12-07T01:16:59.289Z" (the REST API's times) as a time point; nullopt for anything else.
std::optional<WallClock::time_point> ParseTime(const std::string& text) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                  &tm.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return WallClock::from_time_t(timegm(&tm)) + std::chrono::milliseconds(ms);
}

struct Shared {
  std::mutex mu;
  std::vector<TtlRule> ttl;
  long changes = 0;
  long requests = 0;
  std::map<int, long> errors;  // HTTP status → count
  std::map<int, std::string> error_sample;
  long conflicts = 0;           // 409 answers
  long conflicts_resolved = 0;  // ... whose immediate repetition succeeded
  long unrepresentable_412 = 0;
  std::vector<double> latency_ms;
  // Specs the clients hold at the end: unowned, and owned (owner, spec); and what they deleted.
  std::vector<std::string> unowned;
  std::vector<std::pair<std::string, std::string>> owned;
  std::vector<std::string> deleted_unowned;
  std::vector<std::pair<std::string, std::string>> deleted_owned;
  // Monitor.
  long steady_resets = 0;
  long ttl_early = 0;
  std::vector<double> repair_ms;  // after each flush of GUARD-IN
  long monitor_reads = 0;
};

std::string Address(int a, int b, int seq) {
  return std::to_string(a) + "." + std::to_string(b) + "." + std::to_string((seq >> 8) & 255) + "." +
         std::to_string(seq & 255);
}

void RunClient(int c, int port, const std::string& token, Clock::time_point until, Shared& shared) {
  Client http(port, token);
  std::mt19937 rng(static_cast<unsigned>(c) * 7919u + 17u);
  std::vector<std::string> unowned;
  std::vector<std::pair<std::string, std::string>> owned;
  std::vector<std::string> deleted_unowned;
  std::vector<std::pair<std::string, std::string>> deleted_owned;
  std::vector<double> latency;
  std::map<int, long> errors;
  std::map<int, std::string> samples;
  long changes = 0, requests = 0, conflicts = 0, resolved = 0, unrepresentable = 0;
  int seq = 0;
  // One request; a 409 is sent once more.
  auto call = [&](const std::string& method, const std::string& path, const std::string& body) {
    const Clock::time_point t0 = Clock::now();
    Answer a = http.Send(method, path, body);
    ++requests;
    if (a.status == 409) {
      ++conflicts;
      Answer again = http.Send(method, path, body);
      ++requests;
      if (again.status == 200) ++resolved;
      a = again;
    }
    latency.push_back(MillisSince(t0));
    if (a.status == 412 && a.body.find("unrepresentable") != std::string::npos) ++unrepresentable;
    if (a.status == 200) {
      ++changes;
    } else {
      ++errors[a.status];
      samples.emplace(a.status, a.body.substr(0, 400));
    }
    return a;
  };
  while (Clock::now() < until) {
    const int r = static_cast<int>(rng() % 100);
    if ((r < 30 && unowned.size() < 30) || (r >= 30 && r < 50 && unowned.empty())) {
      const std::string spec = "-s " + Address(172, 16 + c, ++seq) + "/32 -j DROP";
      const bool top = rng() % 5 == 0;
      if (call("POST", std::string(kRules) + (top ? "?position=1" : ""), Json{{"spec", spec}}.dump()).status == 200) {
        unowned.push_back(spec);
      }
    } else if (r < 50 || unowned.size() >= 30) {
      const std::string spec = unowned.back();
      if (call("DELETE", kRules, Json{{"spec", spec}}.dump()).status == 200) {
        unowned.pop_back();
        deleted_unowned.push_back(spec);
      }
    } else if ((r < 70 && owned.size() < 30) || (r >= 70 && r < 85 && owned.empty())) {
      const std::string owner = "app" + std::to_string(c % 4);
      const std::string spec = "-s " + Address(100, 64 + c, ++seq) + "/32 -j DROP";
      const bool first = rng() % 4 == 0;
      if (call("POST", std::string(kRules) + (first ? "?position=first" : ""),
               Json{{"spec", spec}, {"owner", owner}}.dump())
              .status == 200) {
        owned.push_back({owner, spec});
      }
    } else if (r < 85 || owned.size() >= 30) {
      const auto [owner, spec] = owned.back();
      if (call("DELETE", kRules, Json{{"spec", spec}, {"owner", owner}}.dump()).status == 200) {
        owned.pop_back();
        deleted_owned.push_back({owner, spec});
      }
    } else {
      const int seconds = 1 + static_cast<int>(rng() % 3);
      const std::string spec = "-s " + Address(100, 96 + c, ++seq) + "/32 -j DROP";
      Answer a = call("POST", kRules, Json{{"spec", spec}, {"owner", "ttl"}, {"ttl", seconds}}.dump());
      if (a.status == 200) {
        Json j = Json::parse(a.body, nullptr, false);
        if (j.is_object() && j.contains("managed") && !j["managed"].empty()) {
          std::optional<WallClock::time_point> deadline = ParseTime(j["managed"][0].value("expires_at", ""));
          std::lock_guard<std::mutex> lock(shared.mu);  // the monitor watches it from now on
          if (deadline) {
            shared.ttl.push_back({j["managed"][0]["id"].get<std::string>(), *deadline, WallClock::now(), {}, spec});
          }
        }
      }
    }
  }
  std::lock_guard<std::mutex> lock(shared.mu);
  shared.changes += changes;
  shared.requests += requests;
  shared.conflicts += conflicts;
  shared.conflicts_resolved += resolved;
  shared.unrepresentable_412 += unrepresentable;
  for (const auto& [status, n] : errors) shared.errors[status] += n;
  for (const auto& [status, text] : samples) shared.error_sample.emplace(status, text);
  shared.latency_ms.insert(shared.latency_ms.end(), latency.begin(), latency.end());
  shared.unowned.insert(shared.unowned.end(), unowned.begin(), unowned.end());
  shared.owned.insert(shared.owned.end(), owned.begin(), owned.end());
  shared.deleted_unowned.insert(shared.deleted_unowned.end(), deleted_unowned.begin(), deleted_unowned.end());
  shared.deleted_owned.insert(shared.deleted_owned.end(), deleted_owned.begin(), deleted_owned.end());
}

// Owner tags with their packet counters in `iptables-save -c` text: id → packets, for one owner.
std::map<std::string, uint64_t> TaggedCounters(const std::string& save, const std::string& owner) {
  std::map<std::string, uint64_t> out;
  static const std::regex kLine(R"re(^\[(\d+):\d+\] -A \S+ .*"iptkit:([a-z0-9-]+):([A-Za-z0-9._-]+)")re");
  std::istringstream in(save);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, kLine) && m[2] == owner) out[m[3]] = std::stoull(m[1]);
  }
  return out;
}

std::set<std::string> TagIds(const std::string& save, const std::string& owner) {
  std::set<std::string> out;
  for (const auto& [id, packets] : TaggedCounters(save, owner)) out.insert(id);
  return out;
}

size_t CountLines(const std::string& save, const std::string& needle) {
  size_t n = 0;
  std::istringstream in(save);
  for (std::string line; std::getline(in, line);) {
    if (line.find(needle) != std::string::npos) ++n;
  }
  return n;
}

Result<std::string> Save(const Variant& v, int netns_fd, bool counters) {
  std::vector<std::string> argv = {v.save, "-t", "filter"};
  if (counters) argv.push_back("-c");
  return RunProcessOk(argv, {.netns_fd = netns_fd});
}

int Main(int argc, char** argv) {
  Config config;
  CLI::App app{"iptkitd under mixed load next to a foreign writer (Markdown on stdout)"};
  app.add_option("--seconds", config.seconds, "length of the load")->check(CLI::Range(5, 3600));
  app.add_option("--clients", config.clients, "client threads, one keep-alive connection each")
      ->check(CLI::Range(1, 256));
  app.add_option("--flush-every", config.flush_every_s, "seconds between foreign flushes of GUARD-IN")
      ->check(CLI::Range(1, 600));
  app.add_option("--foreign", config.foreign, "run the foreign writer and the flushes (1) or not (0)");
  app.add_option("--iptkitd", config.iptkitd, "path of the iptkitd binary")->check(CLI::ExistingFile);
  app.add_option("--backend", config.backend, "iptkitd --backend (nft or native)")
      ->check(CLI::IsMember({"nft", "native"}));
  app.add_option("--daemon-log-level", config.daemon_log_level, "iptkitd --log-level");
  app.add_option("--keep-log", config.keep_log, "copy the daemon's log to this file at the end");
  CLI11_PARSE(app, argc, argv);
  if (config.iptkitd.empty() || config.iptkitd[0] != '/') {
    std::cerr << "--iptkitd must be an absolute path\n";
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << "iptkitd_soak must run as root (it creates a network namespace)\n";
    return 2;
  }
  InstallCleanupHandlers();
  const Variant v = Variant::Nft();
  auto fail = [](const Status& s) {
    std::cerr << "iptkitd_soak: " << s.ToString() << "\n";
    return 1;
  };

  const std::string ns_name = "iptkit-bench-" + std::to_string(getpid()) + "-soak";
  Result<std::unique_ptr<Netns>> ns = Netns::Create(ns_name);
  if (!ns.ok()) return fail(ns.status());
  const int fd = (*ns)->fd();
  if (Result<std::string> up = RunProcessOk({"/usr/bin/ip", "-n", ns_name, "link", "set", "lo", "up"}); !up.ok()) {
    return fail(up.status());
  }
  std::string dir = "/tmp/iptkit-bench-" + std::to_string(getpid()) + "-soak-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return fail(Status::Internal("mkdtemp"));
  struct RemoveDir {
    std::string path;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } remove_dir{dir};
  const std::string state = dir + "/state";
  Result<std::string> token_out = RunProcessOk({config.iptkitd, "token", "create", "--name", "soak", "--scope", "read",
                                                "--scope", "write", "--state-dir", state});
  if (!token_out.ok()) return fail(token_out.status());
  std::string token = *token_out;
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();

  Result<std::pair<pid_t, int>> daemon = StartDaemon(
      {config.iptkitd, "--netns", ns_name, "--backend", config.backend, "--listen", "127.0.0.1:0", "--ready-file",
       dir + "/ready.json", "--state-dir", state, "--rate-limit", "0", "--max-connections",
       std::to_string(config.clients + 16), "--drift-interval", "1s", "--log-level", config.daemon_log_level},
      dir + "/iptkitd.log", dir + "/ready.json");
  if (!daemon.ok()) return fail(daemon.status());
  const pid_t pid = daemon->first;
  const int port = daemon->second;
  struct StopOnExit {
    pid_t pid;
    ~StopOnExit() { StopDaemon(pid); }
  } stop_daemon{pid};
  std::fprintf(stderr, "[soak] iptkitd on 127.0.0.1:%d in %s\n", port, ns_name.c_str());

  // The owners nobody changes: guard (a chain the foreign writer flushes) and steady (hooks that count traffic).
  Client admin(port, token);
  Answer guard = admin.Send("PUT", "/v1/owners/guard", R"({
      "chains": [{"name": "GUARD-IN", "rules": [{"spec": "-s 10.250.0.1 -j DROP"}, {"spec": "-s 10.250.0.2 -j DROP"},
                                                {"spec": "-s 10.250.0.3 -j DROP"}]}],
      "hooks": [{"chain": "INPUT", "position": "first", "spec": "-j GUARD-IN"}]})");
  if (guard.status != 200) return fail(Status::Internal("PUT /v1/owners/guard: " + guard.body));
  for (int port_no = 7001; port_no <= 7004; ++port_no) {
    const bool first = port_no <= 7002;
    Answer a = admin.Send(
        "POST", std::string(kRules) + (first ? "?position=first" : ""),
        Json{{"spec", "-i lo -p udp -m udp --dport " + std::to_string(port_no) + " -j ACCEPT"}, {"owner", "steady"}}
            .dump());
    if (a.status != 200) return fail(Status::Internal("steady rule: " + a.body));
  }
  Result<std::string> settled = Save(v, fd, true);
  if (!settled.ok()) return fail(settled.status());
  if (TaggedCounters(*settled, "steady").size() != 4) return fail(Status::Internal("steady rules: " + *settled));

  std::string load_before;  // 1-minute load average when the load starts
  {
    std::ifstream loadavg("/proc/loadavg");
    loadavg >> load_before;
  }
  Shared shared;
  std::atomic<bool> stop{false};
  const Clock::time_point start = Clock::now();
  const Clock::time_point until = start + std::chrono::seconds(config.seconds);
  std::vector<std::thread> threads;

  // Traffic for steady's rules: a datagram to each port every 20 ms over lo, from a thread inside the namespace.
  threads.emplace_back([&] {
    if (setns(fd, CLONE_NEWNET) != 0) return;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) return;
    while (!stop) {
      for (int p = 7001; p <= 7004; ++p) {
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(static_cast<uint16_t>(p));
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sendto(s, "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    close(s);
  });
  // The foreign writer: -I 1, -A and their deletes, one process after the other; and the flushes of GUARD-IN.
  std::atomic<long> foreign_ops{0};
  std::mutex flush_mu;
  std::vector<Clock::time_point> flushes;
  threads.emplace_back([&] {
    Clock::time_point next_flush = start + std::chrono::seconds(config.flush_every_s);
    for (int i = 0; config.foreign && Clock::now() < until; ++i) {
      if (Clock::now() >= next_flush) {
        if (RunProcess({v.iptables, "-w", "10", "-F", "GUARD-IN"}, {.netns_fd = fd}).ok()) {
          std::lock_guard<std::mutex> lock(flush_mu);
          flushes.push_back(Clock::now());
        }
        next_flush += std::chrono::seconds(config.flush_every_s);
        continue;
      }
      const std::string src = "198.18." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
      const bool top = i % 2 == 0;
      std::vector<std::string> add = {v.iptables, "-w", "10"};
      if (top) {
        add.insert(add.end(), {"-I", "INPUT", "1"});
      } else {
        add.insert(add.end(), {"-A", "INPUT"});
      }
      add.insert(add.end(), {"-s", src, "-j", "ACCEPT"});
      if (RunProcess(add, {.netns_fd = fd}).ok()) ++foreign_ops;
      if (RunProcess({v.iptables, "-w", "10", "-D", "INPUT", "-s", src, "-j", "ACCEPT"}, {.netns_fd = fd}).ok()) {
        ++foreign_ops;
      }
    }
  });
  // The monitor.
  threads.emplace_back([&] {
    std::map<std::string, uint64_t> last;
    size_t flush_seen = 0;
    bool waiting = false;  // for the repair of the flush at `flushed`
    Clock::time_point flushed{};
    while (!stop) {
      // A rule answered after the save started may have been committed after the save read its chain: the save
      // says nothing about it (judging it there counted rules added a few ms before as gone before their deadline).
      const WallClock::time_point read_start = WallClock::now();
      Result<std::string> save = Save(v, fd, true);
      const Clock::time_point now = Clock::now();
      const WallClock::time_point wall = WallClock::now();
      if (save.ok()) {
        std::lock_guard<std::mutex> lock(shared.mu);
        ++shared.monitor_reads;
        const std::set<std::string> ttl_ids = TagIds(*save, "ttl");
        for (TtlRule& t : shared.ttl) {
          if (t.gone || t.answered > read_start || ttl_ids.count(t.id)) continue;
          t.gone = wall;
          if (wall < t.deadline) {
            ++shared.ttl_early;
            std::fprintf(stderr, "[soak] TTL rule %s (%s) seen gone %.0f ms before its deadline\n", t.id.c_str(),
                         t.spec.c_str(), std::chrono::duration<double, std::milli>(t.deadline - wall).count());
          }
        }
        for (const auto& [id, packets] : TaggedCounters(*save, "steady")) {
          auto it = last.find(id);
          if (it != last.end() && it->second >= 10 && packets < it->second / 2) ++shared.steady_resets;
          last[id] = packets;
        }
        std::lock_guard<std::mutex> flush_lock(flush_mu);
        if (!waiting && flush_seen < flushes.size()) {
          flushed = flushes[flush_seen++];
          waiting = true;
        }
        if (waiting && CountLines(*save, "-A GUARD-IN ") == 3) {
          shared.repair_ms.push_back(std::chrono::duration<double, std::milli>(now - flushed).count());
          waiting = false;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::vector<std::thread> clients;
  std::fprintf(stderr, "[soak] %d clients for %d s\n", config.clients, config.seconds);
  for (int c = 0; c < config.clients; ++c) {
    clients.emplace_back([&, c] { RunClient(c, port, token, until, shared); });
  }
  for (std::thread& t : clients) t.join();
  const double wall_s = MillisSince(start) / 1000;
  std::fprintf(stderr, "[soak] load done after %.1f s; letting TTLs expire and drift settle\n", wall_s);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  stop = true;
  for (std::thread& t : threads) t.join();

  // After the load: what the kernel holds.
  Result<std::string> final_save = Save(v, fd, false);
  if (!final_save.ok()) return fail(final_save.status());
  long missing = 0, doubled = 0, stale = 0;
  for (const std::string& spec : shared.unowned) {
    const size_t n = CountLines(*final_save, "-A INPUT " + spec);
    if (n == 0) ++missing;
    if (n > 1) ++doubled;
  }
  auto owned_line = [](const std::string& owner, const std::string& spec) {
    return "-A INPUT " + spec.substr(0, spec.find(" -j")) + " -m comment --comment \"iptkit:" + owner + ":";
  };
  for (const auto& [owner, spec] : shared.owned) {
    const size_t n = CountLines(*final_save, owned_line(owner, spec));
    if (n == 0) ++missing;
    if (n > 1) ++doubled;
  }
  for (const std::string& spec : shared.deleted_unowned) {
    if (CountLines(*final_save, "-A INPUT " + spec) > 0) ++stale;
  }
  for (const auto& [owner, spec] : shared.deleted_owned) {
    if (CountLines(*final_save, owned_line(owner, spec)) > 0) ++stale;
  }
  std::vector<double> lateness_ms;
  long never_gone = 0;
  for (const TtlRule& t : shared.ttl) {
    if (!t.gone) {
      ++never_gone;
      continue;
    }
    lateness_ms.push_back(std::chrono::duration<double, std::milli>(*t.gone - t.deadline).count());
  }
  // The daemon's own failures in the audit log, and its counters.
  long internal_failures = 0, unanswered = 0;
  std::map<std::string, long> internal_by_action;
  std::optional<int64_t> before;
  for (int page = 0; page < 100; ++page) {
    std::string path = "/v1/audit?principal=iptkitd&result=error&limit=1000";
    if (before) path += "&before=" + std::to_string(*before);
    Answer a = admin.Send("GET", path);
    Json j = Json::parse(a.body, nullptr, false);
    if (a.status != 200 || !j.is_object()) break;
    for (const Json& e : j["entries"]) {
      ++internal_failures;
      ++internal_by_action[e.value("action", "?")];
      if (e.value("message", "").find("unanswered") != std::string::npos) ++unanswered;
    }
    if (!j.contains("next_before") || j["next_before"].is_null()) break;
    before = j["next_before"].get<int64_t>();
  }
  Answer metrics = admin.Send("GET", "/metrics");
  auto metric = [&](const std::string& name) {
    std::optional<double> v = MetricSum(metrics.body, name);
    return v ? Fixed(*v, 0) : std::string("n/a");
  };

  // Requests per commit: the group commit histogram's sum over its count.
  const std::optional<double> batch_sum = MetricSum(metrics.body, "iptkitd_group_commit_requests_sum");
  const std::optional<double> batch_count = MetricSum(metrics.body, "iptkitd_group_commit_requests_count");
  const std::string batch_mean =
      batch_sum && batch_count && *batch_count > 0 ? Fixed(*batch_sum / *batch_count, 1) : std::string("n/a");
  // The writer's time per drain attempt by phase (iptkitd_drain_phase_seconds): mean ms.
  std::string phases;
  for (const char* phase : {"read", "plan", "commit", "store", "store_wait"}) {
    const std::string labels = std::string("{phase=\"") + phase + "\"}";
    const std::optional<double> sum = MetricSum(metrics.body, "iptkitd_drain_phase_seconds_sum" + labels);
    const std::optional<double> count = MetricSum(metrics.body, "iptkitd_drain_phase_seconds_count" + labels);
    phases += (phases.empty() ? "" : " / ") +
              (sum && count && *count > 0 ? Fixed(*sum / *count * 1000, 1) : std::string("n/a"));
  }
  utsname host{};
  uname(&host);
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::ifstream loadavg("/proc/loadavg");
  std::string l1, l5, l15;
  loadavg >> l1 >> l5 >> l15;
  std::ostringstream md;
  md << "## iptkitd soak: mixed load next to a foreign writer (" << date << ")\n\n"
     << "Linux " << host.release << ", " << sysconf(_SC_NPROCESSORS_ONLN) << " CPUs, load average " << load_before
     << " at the start, at the end " << l1 << " " << l5 << " " << l15 << "; iptkitd " << config.iptkitd << " ("
     << config.backend << ", --drift-interval 1s); " << config.clients << " clients for " << config.seconds << " s; "
     << (config.foreign ? "foreign `iptables-nft` writer in a loop (" + std::to_string(foreign_ops.load()) +
                              " ops), GUARD-IN flushed every " + std::to_string(config.flush_every_s) + " s"
                        : std::string("no foreign writer"))
     << ".\n\n"
     << "| measure | value | target |\n|---|--:|--:|\n"
     << "| changes/s (answered 200) | " << Fixed(shared.changes / wall_s, 0) << " | >= 500 |\n"
     << "| requests | " << shared.requests << " | |\n"
     << "| latency p50 / p99 ms | " << Fixed(Percentile(shared.latency_ms, 0.5), 1) << " / "
     << Fixed(Percentile(shared.latency_ms, 0.99), 1) << " | |\n"
     << "| 409 answers | " << shared.conflicts << " | |\n"
     << "| ... resolved by one more retry | " << shared.conflicts_resolved << " | 0 |\n"
     << "| 412 \"unrepresentable\" | " << shared.unrepresentable_412 << " | 0 |\n"
     << "| TTL rules (removal observed) | " << lateness_ms.size() << " (never: " << never_gone
     << ", before the deadline: " << shared.ttl_early << ") | |\n"
     << "| TTL removal lateness p50 / p99 / max s | " << Fixed(Percentile(lateness_ms, 0.5) / 1000, 2) << " / "
     << Fixed(Percentile(lateness_ms, 0.99) / 1000, 2) << " / " << Fixed(Percentile(lateness_ms, 1.0) / 1000, 2)
     << " | max <= 1 |\n"
     << "| counter resets of unchanged owned rules | " << shared.steady_resets << " | 0 |\n"
     << "| drift repair after a flush, max s (" << shared.repair_ms.size() << " flushes) | "
     << Fixed(Percentile(shared.repair_ms, 1.0) / 1000, 2) << " | |\n"
     << "| added rules missing / doubled, deleted rules still there | " << missing << " / " << doubled << " / " << stale
     << " | 0 |\n"
     << "| failed work of the daemon itself (audit) | " << internal_failures << " (\"unanswered\": " << unanswered
     << ") | |\n"
     << "| commits / failed commits / retried on a fresh read | " << metric("iptkitd_commits_total") << " / "
     << Fixed(MetricSum(metrics.body, "iptkitd_commits_total{result=\"error\"}").value_or(0), 0) << " / "
     << metric("iptkitd_commit_retries_total") << " | |\n"
     << "| requests per commit (mean) | " << batch_mean << " | |\n"
     << "| writer per drain, mean ms: read / plan / commit / store (/ waited for the store) | " << phases << " | |\n"
     << "| drift repairs / owner failures | " << metric("iptkitd_drift_repairs_total") << " / "
     << metric("iptkitd_owner_failures_total") << " | |\n\n";
  for (const auto& [status, n] : shared.errors) {
    md << "- HTTP " << status << ": " << n << " answers, e.g. `" << shared.error_sample[status] << "`\n";
  }
  for (const auto& [action, n] : internal_by_action) md << "- daemon's own " << action << " failed " << n << " times\n";
  md << "- monitor reads (iptables-nft-save -c every 100 ms): " << shared.monitor_reads << "\n";
  std::cout << md.str() << std::flush;
  if (!config.keep_log.empty()) {
    std::error_code ec;
    std::filesystem::copy_file(dir + "/iptkitd.log", config.keep_log, std::filesystem::copy_options::overwrite_existing,
                               ec);
  }
  return 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
