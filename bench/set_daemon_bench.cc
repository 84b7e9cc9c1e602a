// iptkitd_set_bench: IP set entries through iptkitd's REST API (POST /v1/sets/SET/entries), the IDS-fed blocklist
// case of issue 11: --clients threads, each with its own keep-alive connection, add --adds distinct entries with a
// timeout into one hash:ip set (maxelem sized for them) of a fresh network namespace (iptkit-setbench-<pid>);
// every answer must be 200 and `ipset list -t` must count every entry afterwards. Prints entries/s, the latency
// percentiles and the CPU time iptkitd and the clients used during the phase (from /proc/PID/stat) as a Markdown
// table.
// Root only; writes netfilter state only in the namespace it creates and deletes; the daemon dies with the
// benchmark (PR_SET_PDEATHSIG).
//
//   sudo build/release/bench/iptkitd_set_bench --clients 64 --adds 20000
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <mutex>
#include <nlohmann/json.hpp>
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

struct Config {
  int clients = 64;
  int adds = 20000;
  int timeout = 600;
  int hashsize = 0;  // 0: the kernel's default (1024; the set grows its hash while the entries arrive)
  std::string backend = "nft";
  std::string iptkitd = IPTKITD_PATH;
};

volatile sig_atomic_t g_daemon_pid = 0;

std::string Tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

// Starts iptkitd; waits for its ready file; returns its pid and TCP port.
Result<std::pair<pid_t, int>> StartDaemon(const std::string& binary, const std::vector<std::string>& args,
                                          const std::string& log_path, const std::string& ready_path) {
  std::vector<std::string> argv = {binary};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> child_argv;
  for (const std::string& a : argv) child_argv.push_back(const_cast<char*>(a.c_str()));
  child_argv.push_back(nullptr);
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) return Status::Internal("open " + log_path + ": " + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return Status::Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    if (dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) _exit(126);
    close_range(3, ~0U, 0);
    char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    char* env[] = {path_env, nullptr};
    execve(child_argv[0], child_argv.data(), env);
    _exit(127);
  }
  close(log_fd);
  g_daemon_pid = pid;
  const Clock::time_point start = Clock::now();
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      g_daemon_pid = 0;
      return Status::Internal("iptkitd exited during start-up; its log:\n" + Tail(log_path));
    }
    std::ifstream ready(ready_path);
    if (ready) {
      std::string text((std::istreambuf_iterator<char>(ready)), std::istreambuf_iterator<char>());
      nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
      if (!doc.is_discarded()) {
        for (const auto& e : doc["endpoints"]) {
          const std::string endpoint = e.get<std::string>();
          const std::string prefix = "http://127.0.0.1:";
          if (endpoint.rfind(prefix, 0) == 0) return std::make_pair(pid, std::stoi(endpoint.substr(prefix.size())));
        }
      }
    }
    if (MillisSince(start) > 60000) return Status::Internal("iptkitd not ready after 60 s:\n" + Tail(log_path));
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

// utime + stime of a process in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close_paren = text.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(close_paren + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) {
      stime = std::stod(f);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::string Entry(int i) {
  return "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
}

int Run(const Config& config) {
  InstallNetnsCleanupHandlers();
  const std::string ns_name = "iptkit-setbench-" + std::to_string(getpid());
  Result<std::unique_ptr<Netns>> ns = Netns::Create(ns_name);
  if (!ns.ok()) {
    std::cerr << ns.status().ToString() << "\n";
    return 1;
  }
  char dir_template[] = "/tmp/iptkit-setbench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return 1;
  const std::string dir = dir_template;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string state = dir + "/state";
  Result<std::string> token_out = RunProcessOk({config.iptkitd, "token", "create", "--name", "bench", "--scope", "read",
                                                "--scope", "write", "--state-dir", state});
  if (!token_out.ok()) {
    std::cerr << token_out.status().ToString() << "\n";
    return 1;
  }
  std::istringstream words(*token_out);
  std::string token;
  words >> token;
  Result<std::pair<pid_t, int>> daemon =
      StartDaemon(config.iptkitd,
                  {"--netns", ns_name, "--backend", config.backend, "--listen", "127.0.0.1:0", "--ready-file",
                   dir + "/ready.json", "--state-dir", state, "--rate-limit", "0", "--log-level", "warn"},
                  dir + "/iptkitd.log", dir + "/ready.json");
  if (!daemon.ok()) {
    std::cerr << daemon.status().ToString() << "\n";
    return 1;
  }
  const auto [pid, port] = *daemon;
  const httplib::Headers auth = {{"Authorization", "Bearer " + token}};
  auto client = [&] {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
    c->set_keep_alive(true);
    c->set_tcp_nodelay(true);
    c->set_read_timeout(60);
    return c;
  };
  uint32_t maxelem = 65536;
  while (maxelem < static_cast<uint32_t>(config.adds)) maxelem <<= 1;
  {
    auto c = client();
    nlohmann::json create = {{"name", "ids"}, {"type", "hash:ip"}, {"options", {{"timeout", 0}, {"maxelem", maxelem}}}};
    if (config.hashsize > 0) create["options"]["hashsize"] = config.hashsize;
    auto r = c->Post("/v1/sets", auth, create.dump(), "application/json");
    if (!r || r->status != 201) {
      std::cerr << "create failed: " << (r ? r->body : "no answer") << "\n";
      StopDaemon(pid);
      return 1;
    }
  }

  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (int c = 0; c < config.clients; ++c) clients.push_back(client());
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::string first_error;
  std::latch go(config.clients + 1);
  std::vector<std::thread> threads;
  for (int c = 0; c < config.clients; ++c) {
    threads.emplace_back([&, c] {
      std::vector<double> mine;
      go.arrive_and_wait();
      for (int i = next++; i < config.adds; i = next++) {
        const std::string body = "{\"entry\":\"" + Entry(i) + "\",\"timeout\":" + std::to_string(config.timeout) + "}";
        const Clock::time_point t = Clock::now();
        auto r = clients[c]->Post("/v1/sets/ids/entries", auth, body, "application/json");
        mine.push_back(MillisSince(t));
        if (!r || r->status != 200) {
          ++failures;
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) first_error = r ? r->body : "no answer";
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  const double cpu_before = CpuSeconds(pid);
  const double own_cpu_before = CpuSeconds(getpid());
  const Clock::time_point start = Clock::now();
  go.arrive_and_wait();
  for (std::thread& t : threads) t.join();
  const double seconds = MillisSince(start) / 1000;
  const double cpu = CpuSeconds(pid) - cpu_before;
  // The clients share the machine's CPUs with the daemon: what they used bounds what the daemon could get.
  const double own_cpu = CpuSeconds(getpid()) - own_cpu_before;

  Result<RunResult> listed = RunProcess({"/usr/sbin/ipset", "list", "-t", "ids"}, {.netns_fd = (*ns)->fd()});
  long entries = -1;
  if (listed.ok()) {
    std::istringstream in(listed->out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Number of entries: ", 0) == 0) entries = std::stol(line.substr(19));
    }
  }
  StopDaemon(pid);

  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  std::printf(
      "| clients | entries | timeout | seconds | entries/s | p50 ms | p99 ms | iptkitd CPU s | clients' CPU s | cores "
      "| load (1 min) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %d | %d | %d s | %.2f | %.0f | %.2f | %.2f | %.2f | %.2f | %ld | %.1f |\n", config.clients,
              config.adds, config.timeout, seconds, config.adds / seconds, Percentile(latencies, 0.5),
              Percentile(latencies, 0.99), cpu, own_cpu, sysconf(_SC_NPROCESSORS_ONLN), load[0]);
  bool ok = true;
  if (failures > 0) {
    std::fprintf(stderr, "FAILED: %d requests failed; first: %s\n", failures.load(), first_error.c_str());
    ok = false;
  }
  if (entries != config.adds) {
    std::fprintf(stderr, "FAILED: the set holds %ld entries, expected %d\n", entries, config.adds);
    ok = false;
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) {
  iptkit::bench::Config config;
  CLI::App app{"iptkitd_set_bench: IP set entries with a timeout through iptkitd, many clients at once"};
  app.add_option("--clients", config.clients, "concurrent clients (keep-alive connections)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--adds", config.adds, "distinct entries added in all")->check(CLI::Range(1, 1 << 24));
  app.add_option("--timeout", config.timeout, "each entry's timeout in seconds")->check(CLI::Range(1, 2147483));
  app.add_option("--hashsize", config.hashsize, "the set's initial hash size (0: the kernel's default)");
  app.add_option("--backend", config.backend, "iptkitd's rule backend (sets do not depend on it)");
  app.add_option("--iptkitd", config.iptkitd, "the iptkitd binary");
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "iptkitd_set_bench needs root (network namespaces)\n");
    return 2;
  }
  return iptkit::bench::Run(config);
}
