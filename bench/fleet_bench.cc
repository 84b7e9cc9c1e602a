// Fleet convergence (docs/fleet.md): N iptkitd agents, each serving its own fresh namespace, follow one group in a
// real etcd (Debian's etcd-server on 127.0.0.1). For each of K changes of an owner document: the time from the etcd
// put until the last host reports the change applied (its report's applied mod_revision), beside pushing the same
// document to the N daemons one after the other through their REST APIs (PUT /v1/owners/OWNER). Run as root:
//   build/release/bench/iptkit_fleet_bench [--hosts 20] [--changes 20] [--backend nft]
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "src/fleet/etcd_client.h"
#include "src/fleet/etcd_test_server.h"

namespace iptkit::bench {
namespace {

using Json = nlohmann::json;

// One agent: its namespace, state directory, token and process.
struct Agent {
  std::string ns;  // created with `ip netns add` (the harness's Netns registry holds 8, not 20)
  std::string dir;
  std::string token;
  pid_t pid = -1;
  int port = 0;
  ~Agent() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int status = 0;
      waitpid(pid, &status, 0);
    }
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    if (!ns.empty()) (void)RunProcess({"/usr/bin/ip", "netns", "del", ns});
  }
};

Result<std::unique_ptr<Agent>> StartAgent(const std::string& iptkitd, const std::string& etcd_url, int index,
                                          const std::string& backend) {
  auto agent = std::make_unique<Agent>();
  const std::string ns = "iptkit-fleet-bench-" + std::to_string(getpid()) + "-" + std::to_string(index);
  IPTKIT_RETURN_IF_ERROR(RunProcessOk({"/usr/bin/ip", "netns", "add", ns}).status());
  agent->ns = ns;
  IPTKIT_RETURN_IF_ERROR(RunProcessOk({"/usr/bin/ip", "-n", ns, "link", "set", "lo", "up"}).status());
  char tmpl[] = "/tmp/iptkit-fleet-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Status::Internal("mkdtemp failed");
  agent->dir = tmpl;
  const std::string state = agent->dir + "/state";
  IPTKIT_ASSIGN_OR_RETURN(std::string out, RunProcessOk({iptkitd, "token", "create", "--name", "bench", "--scope",
                                                         "read", "--scope", "write", "--state-dir", state}));
  agent->token = out.substr(0, out.find_first_of(" \n"));
  std::vector<std::string> args = {iptkitd,
                                   "--netns",
                                   agent->ns,
                                   "--backend",
                                   backend,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--state-dir",
                                   state,
                                   "--ready-file",
                                   agent->dir + "/ready.json",
                                   "--rate-limit",
                                   "0",
                                   "--log-level",
                                   "warn",
                                   "--agent",
                                   "--etcd",
                                   etcd_url,
                                   "--prefix",
                                   "/bench",
                                   "--group",
                                   "g",
                                   "--host-id",
                                   "h" + std::to_string(index)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = agent->dir + "/iptkitd.log";
  pid_t pid = fork();
  if (pid < 0) return Status::Internal("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    char* env[] = {const_cast<char*>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), const_cast<char*>("LC_ALL=C"), nullptr};
    execve(argv[0], argv.data(), env);
    _exit(127);
  }
  agent->pid = pid;
  const auto start = Clock::now();
  while (MillisSince(start) < 120000) {
    std::ifstream ready(agent->dir + "/ready.json");
    if (ready) {
      Json doc = Json::parse(ready, nullptr, false);
      if (doc.is_object()) {
        for (const auto& e : doc["endpoints"]) {
          std::string ep = e.get<std::string>();
          if (ep.rfind("http://127.0.0.1:", 0) == 0) agent->port = std::stoi(ep.substr(17));
        }
        if (agent->port > 0) return agent;
      }
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      agent->pid = -1;
      return Status::Internal("iptkitd exited at start; see " + log);
    }
    usleep(20000);
  }
  return Status::Internal("iptkitd not ready after 120 s; see " + log);
}

std::string Doc(const std::string& owner, int change) {
  Json doc = {{"owner", owner},
              {"chains",
               {{{"table", "filter"},
                 {"name", owner == "fleet" ? "FLEET-IN" : "REST-IN"},
                 {"rules", {{{"spec", "-s 10.9." + std::to_string(change % 250) + ".1 -j ACCEPT"}}}}}}}};
  return doc.dump();
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1];
}

int Run(int hosts, int changes, const std::string& backend, const std::string& iptkitd) {
  fleet::EtcdTestServer etcd_server;
  if (Status s = etcd_server.Start(); !s.ok()) {
    std::fprintf(stderr, "etcd: %s\n", s.ToString().c_str());
    return 1;
  }
  fleet::EtcdOptions options;
  options.endpoints = {etcd_server.url()};
  auto etcd = std::move(fleet::EtcdClient::Create(options)).value();
  (void)etcd->Put("/bench/groups/g/.group", "1");
  std::vector<std::unique_ptr<Agent>> agents;
  for (int i = 0; i < hosts; ++i) {
    auto a = StartAgent(iptkitd, etcd_server.url(), i, backend);
    if (!a.ok()) {
      std::fprintf(stderr, "agent %d: %s\n", i, a.status().ToString().c_str());
      return 1;
    }
    agents.push_back(std::move(a).value());
  }
  std::fprintf(stderr, "%d agents up (%s backend)\n", hosts, backend.c_str());
  const std::string key = "/bench/groups/g/owners/fleet";
  // The hosts' reports are watched (not polled: a Range every few ms of 20 reports loads etcd and this process on
  // the same cores as the agents): for each revision of the key, when each host first reported it applied.
  std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, std::map<std::string, Clock::time_point>> seen;  // revision -> host -> when
  auto watch_client = std::move(fleet::EtcdClient::Create(options)).value();
  auto start = etcd->Range("/bench/hosts/");
  if (!start.ok()) return 1;
  auto watch = watch_client->Watch("/bench/hosts/", fleet::PrefixEnd("/bench/hosts/"), start->revision + 1);
  if (!watch.ok()) return 1;
  std::thread watcher([&] {
    for (;;) {
      auto m = (*watch)->Next();
      if (!m.ok() || m->canceled) return;
      const auto now = Clock::now();
      for (const fleet::WatchEvent& e : m->events) {
        Json j = Json::parse(e.kv.value, nullptr, false);
        if (!j.is_object() || !j.contains("applied")) continue;
        const int64_t rev = j["applied"].value(key, int64_t{0});
        std::lock_guard<std::mutex> lock(mu);
        seen[rev].emplace(j.value("host_id", ""), now);
      }
      cv.notify_all();
    }
  });
  auto load = [] {
    std::ifstream f("/proc/loadavg");
    double l1 = 0;
    f >> l1;
    return l1;
  };
  // CPU time (user + system) the agents' processes used, in ms: a change costs this on every host at once.
  auto agents_cpu_ms = [&] {
    double ticks = 0;
    for (const auto& a : agents) {
      std::ifstream f("/proc/" + std::to_string(a->pid) + "/stat");
      std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      size_t at = stat.rfind(')');
      if (at == std::string::npos) continue;
      std::istringstream rest(stat.substr(at + 2));
      std::string field;
      for (int i = 3; i <= 17 && rest >> field; ++i) {
        if (i >= 14) ticks += std::stod(field);  // utime, stime, and of waited-for children (iptables-restore)
      }
    }
    return ticks * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  };
  // What the agents use while nothing changes (drift checks, lease keep-alives), over 5 s.
  const double idle_before = agents_cpu_ms();
  std::this_thread::sleep_for(std::chrono::seconds(5));
  const double idle_rate = (agents_cpu_ms() - idle_before) / 5000.0;  // ms of CPU per ms
  const double load_before = load();
  const double cpu_before = agents_cpu_ms();
  const auto fleet_start = Clock::now();
  std::vector<double> fleet_ms, first_ms;
  bool failed = false;
  for (int c = 0; c <= changes && !failed; ++c) {  // change 0 warms up (creates the chain everywhere)
    const auto t0 = Clock::now();
    auto rev = etcd->Put(key, Doc("fleet", c));
    if (!rev.ok()) return 1;
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(60), [&] { return static_cast<int>(seen[*rev].size()) >= hosts; })) {
      std::fprintf(stderr, "change %d not applied everywhere within 60 s\n", c);
      failed = true;
      break;
    }
    Clock::time_point first = Clock::time_point::max(), last = Clock::time_point::min();
    for (const auto& [host, when] : seen[*rev]) {
      first = std::min(first, when);
      last = std::max(last, when);
    }
    if (c > 0) {
      fleet_ms.push_back(std::chrono::duration<double, std::milli>(last - t0).count());
      first_ms.push_back(std::chrono::duration<double, std::milli>(first - t0).count());
    }
  }
  const double load_after = load();
  const double cpu_used = agents_cpu_ms() - cpu_before;
  const double fleet_wall = MillisSince(fleet_start);
  watch_client->Interrupt();
  watcher.join();
  if (failed) return 1;
  std::vector<double> rest_ms;
  for (int c = 0; c <= changes; ++c) {
    const auto t0 = Clock::now();
    for (auto& a : agents) {
      httplib::Client http("127.0.0.1", a->port);
      auto r =
          http.Put("/v1/owners/rest", {{"Authorization", "Bearer " + a->token}}, Doc("rest", c), "application/json");
      if (!r || r->status != 200) {
        std::fprintf(stderr, "REST PUT failed: %s\n", r ? r->body.c_str() : "no answer");
        return 1;
      }
    }
    if (c > 0) rest_ms.push_back(MillisSince(t0));
  }
  std::printf("| path | hosts | changes | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
  std::printf("| etcd put -> last host applied (agents) | %d | %d | %.1f | %.1f | %.1f |\n", hosts, changes,
              Percentile(fleet_ms, 0.5), Percentile(fleet_ms, 0.99), Percentile(fleet_ms, 1.0));
  std::printf("| etcd put -> first host applied (agents) | %d | %d | %.1f | %.1f | %.1f |\n", hosts, changes,
              Percentile(first_ms, 0.5), Percentile(first_ms, 0.99), Percentile(first_ms, 1.0));
  std::printf("| REST PUT to each host, one after the other | %d | %d | %.1f | %.1f | %.1f |\n", hosts, changes,
              Percentile(rest_ms, 0.5), Percentile(rest_ms, 0.99), Percentile(rest_ms, 1.0));
  std::printf("load average (1 min) before the fleet changes %.2f, after %.2f; %u CPUs\n", load_before, load_after,
              std::thread::hardware_concurrency());
  std::printf(
      "agents' CPU (user+sys, the iptkitd processes and the commands they ran): "
      "%.0f ms per change (%.0f ms per host), %.2f cores busy on average over the fleet phase\n",
      cpu_used / (changes + 1), cpu_used / (changes + 1) / hosts, cpu_used / std::max(fleet_wall, 1.0));
  std::printf(
      "of which idle work (drift checks, keep-alives: %.0f ms of CPU per s, measured before): %.0f ms per "
      "change\n",
      idle_rate * 1000, idle_rate * fleet_wall / (changes + 1));
  agents.clear();
  return 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) {
  CLI::App app("fleet convergence: N agents on one etcd vs N REST pushes");
  int hosts = 20, changes = 20;
  std::string backend = "nft";
  std::string iptkitd = IPTKITD_PATH;
  app.add_option("--hosts", hosts, "agents (default 20)");
  app.add_option("--changes", changes, "changes measured (default 20)");
  app.add_option("--backend", backend, "iptkitd backend (default nft)");
  app.add_option("--iptkitd", iptkitd, "the iptkitd binary");
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "run as root\n");
    return 1;
  }
  return iptkit::bench::Run(hosts, changes, backend, iptkitd);
}
