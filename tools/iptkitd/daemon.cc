#include "tools/iptkitd/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "src/backend/backend.h"
#include "src/backend/fake/shared_fake.h"
#include "src/base/duration.h"
#include "src/base/errno_status.h"
#include "src/base/unique_fd.h"
#include "src/rest/api.h"
#include "src/rest/http_server.h"
#include "src/service/counter_sampler.h"
#include "src/service/events.h"
#include "src/service/metrics.h"
#include "src/service/service.h"
#include "src/service/sets.h"
#include "src/store/state_dir.h"
#include "src/store/store.h"
#include "tools/iptkitd/config.h"
#include "tools/iptkitd/fleet_agent.h"

#ifndef IPTKIT_VERSION
#define IPTKIT_VERSION "0.0.0"
#endif

namespace iptkit::daemon {
namespace {

constexpr const char* kDefaultConfig = "/etc/iptkit/iptkitd.conf";
constexpr int64_t kMaxTtlSeconds = 315360000;  // 10 years, as in the REST API

// The state directory (created 0700 when missing, its permissions checked) and the store in it.
Result<std::unique_ptr<store::Store>> OpenStore(const std::string& state_dir, bool create,
                                                store::StoreOptions options = {}) {
  IPTKIT_RETURN_IF_ERROR(store::PrepareStateDir(state_dir, create));
  return store::Store::Open(store::DatabasePath(state_dir), options);
}

// READY=1 to systemd when started as Type=notify (sd_notify(3) protocol, without libsystemd).
void NotifySystemd(const std::string& state) {
  const char* socket_path = std::getenv("NOTIFY_SOCKET");
  if (socket_path == nullptr || socket_path[0] == '\0') return;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = socket_path;
  if (path.size() >= sizeof(addr.sun_path)) {
    close(fd);
    return;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  (void)sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  close(fd);
}

// Writes `text` to `path` atomically: a new temporary file beside it (O_EXCL|O_NOFOLLOW: never through a symlink
// someone planted, never onto an existing file), then rename(2), which replaces `path` itself even when it is a
// symlink rather than writing where it points.
Status WriteFileAtomically(const std::string& path, const std::string& text) {
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".tmp.%d.%lx", static_cast<int>(getpid()),
                static_cast<unsigned long>(std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffff));
  const std::string tmp = path + suffix;
  base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid()) return base::ErrnoToStatus(errno, "create " + tmp);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = base::ErrnoToStatus(errno, "write " + tmp);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  fd.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = base::ErrnoToStatus(errno, "rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return s;
  }
  return Status::Ok();
}

// The store's housekeeping, on a thread of its own: every second it checks that the state directory and the
// database are still the ones opened (and says so loudly in the log when not: writes are refused then), stores
// queued audit entries, and every `prune_interval` enforces audit retention.
class StoreMaintenance {
 public:
  StoreMaintenance(store::Store* store, service::Metrics* metrics, store::AuditRetention retention,
                   std::chrono::milliseconds prune_interval)
      : store_(store), retention_(retention), prune_interval_(prune_interval) {
    healthy_ = &metrics->AddGauge("iptkitd_store_ok",
                                  "1 while the store can write; 0 when its files were removed or replaced, or the "
                                  "last write failed (see /healthz).",
                                  {});
    backlog_ = &metrics->AddGauge("iptkitd_audit_backlog", "Audit entries waiting in memory to be stored.", {});
    pruned_ = &metrics->AddCounter("iptkitd_audit_pruned_total", "Audit entries removed by retention, by reason.",
                                   {"reason"});
    healthy_->Set({}, 1);
    thread_ = std::thread([this] { Loop(); });
  }
  ~StoreMaintenance() { Stop(); }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    auto next_prune = std::chrono::steady_clock::now();
    auto last_loud = std::chrono::steady_clock::time_point::min();
    std::string problem;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      const store::StoreHealth h = store_->Health();
      const auto now = std::chrono::steady_clock::now();
      if (h.problem != problem || (!h.ok() && now - last_loud >= std::chrono::minutes(1))) {
        if (!h.ok()) {
          spdlog::critical("STORE PROBLEM: {}; changes are refused with 503 until this is fixed", h.problem);
          last_loud = now;
        } else if (!problem.empty()) {
          spdlog::info("store: writes work again");
        }
        problem = h.problem;
      }
      healthy_->Set({}, h.ok() ? 1 : 0);
      backlog_->Set({}, static_cast<double>(h.audit_backlog));
      if (h.audit_backlog > 0 && h.files_ok) (void)store_->FlushAuditBacklog();
      if (now >= next_prune && h.files_ok) {
        next_prune = now + prune_interval_;
        Result<store::PruneResult> r = store_->PruneAudit(retention_, service::NowMs());
        if (!r.ok()) {
          spdlog::error("audit retention: {}", r.status().ToString());
        } else if (r->removed_by_age + r->removed_by_size > 0) {
          pruned_->Inc({"age"}, static_cast<double>(r->removed_by_age));
          pruned_->Inc({"size"}, static_cast<double>(r->removed_by_size));
          spdlog::info(
              "audit retention removed {} entries older than the maximum age and {} for the size bound; {} "
              "entries ({} bytes) remain",
              r->removed_by_age, r->removed_by_size, r->remaining_entries, r->remaining_bytes);
        }
      }
      lock.lock();
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    }
  }

  store::Store* store_;
  store::AuditRetention retention_;
  std::chrono::milliseconds prune_interval_;
  service::Metrics::Gauge* healthy_ = nullptr;
  service::Metrics::Gauge* backlog_ = nullptr;
  service::Metrics::Counter* pruned_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

int64_t Now() { return service::NowMs(); }

// ---- The daemon ----

int Run(const DaemonConfig& config, const std::string& ready_file, std::ostream& err) {
  if (Status s = ValidateConfig(config); !s.ok()) {
    err << "iptkitd: " << s.message() << "\n";
    return kExitUsage;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");

  // Signals are taken by sigwait below; every thread started from here inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // One daemon per state directory: checked before anything in it is opened, and named when held.
  if (Status s = store::PrepareStateDir(config.state_dir, /*create=*/true); !s.ok()) {
    spdlog::critical("{}", s.message());
    return kExitFailure;
  }
  Result<store::StateDirLock> state_lock = store::StateDirLock::Acquire(config.state_dir);
  if (!state_lock.ok()) {
    spdlog::critical("{}", state_lock.status().message());
    return kExitFailure;
  }
  // Then the listeners: a second daemon on the same port or socket stops here, before the store is opened.
  // Both outlive the server (its event streams hold subscriptions of the bus).
  service::Metrics metrics;
  service::EventBus events(service::EventBusOptions{.max_subscribers = config.max_event_streams,
                                                    .max_backlog_bytes = config.event_buffer_bytes});
  rest::HttpServerOptions http_options;
  for (const Listener& l : config.listen) http_options.tcp.push_back({l.address, l.port, UsesTls(l)});
  http_options.unix_socket = config.socket;
  http_options.socket_mode = config.socket_mode;
  http_options.tls_cert = config.tls_cert;
  http_options.tls_key = config.tls_key;
  http_options.max_connections = config.max_connections;
  http_options.max_body_bytes = config.max_body_bytes;
  http_options.max_connections_per_peer = config.max_connections_per_peer;
  http_options.max_socket_connections = config.max_socket_connections;
  http_options.max_header_bytes = config.max_header_bytes;
  http_options.header_timeout = config.header_timeout;
  http_options.body_timeout = config.body_timeout;
  http_options.idle_timeout = config.idle_timeout;
  http_options.send_timeout = config.send_timeout;
  http_options.io_threads = config.io_threads;
  http_options.workers = config.workers;
  http_options.socket_workers = config.socket_workers;
  http_options.metrics = &metrics;
  Result<std::unique_ptr<rest::HttpServer>> http = rest::HttpServer::Bind(http_options);
  if (!http.ok()) {
    spdlog::critical("{}", http.status().ToString());
    return kExitFailure;
  }

  Result<std::unique_ptr<store::Store>> store =
      OpenStore(config.state_dir, /*create=*/true, store::StoreOptions{.audit_body_bytes = config.audit_body_bytes});
  if (!store.ok()) {
    spdlog::critical("store: {}", store.status().ToString());
    return kExitFailure;
  }
  // The owned state in a store belongs to one netns: refuse to apply it to another.
  const std::string netns_key = "netns";
  Result<std::optional<std::string>> recorded = (*store)->GetMeta(netns_key);
  if (!recorded.ok()) {
    spdlog::critical("store: {}", recorded.status().ToString());
    return kExitFailure;
  }
  if (!*recorded) {
    if (Status s = (*store)->PutMeta(netns_key, config.netns); !s.ok()) {
      spdlog::critical("store: {}", s.ToString());
      return kExitFailure;
    }
  } else if (**recorded != config.netns) {
    spdlog::critical("the state in {} belongs to network namespace '{}', not '{}': use another state_dir",
                     config.state_dir, **recorded, config.netns);
    return kExitUsage;
  }

  BackendKind kind = BackendKind::kAuto;
  if (config.backend == "nft") kind = BackendKind::kNft;
  if (config.backend == "legacy") kind = BackendKind::kLegacy;
  if (config.backend == "fake") kind = BackendKind::kFake;
  if (config.backend == "native") kind = BackendKind::kNative;
  backend::BackendOptions backend_options;
  backend_options.netns = config.netns;
  backend_options.wait = config.wait;
  backend_options.event_cache = true;  // the native backend follows nf_tables' notifications instead of re-reading
  // The writer's and the reader's backends must agree: auto is resolved once, and the fake is one shared kernel.
  auto shared_fake = std::make_shared<backend::SharedFake>();
  auto resolved = std::make_shared<std::optional<BackendKind>>();
  service::Service::Options options;
  options.make_backend = [kind, backend_options, shared_fake, resolved]() -> Result<std::unique_ptr<backend::Backend>> {
    if (kind == BackendKind::kFake) return backend::NewSharedFakeHandle(shared_fake);
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::Backend> b,
                            backend::MakeBackend(resolved->value_or(kind), backend_options));
    if (!*resolved) {
      *resolved = b->traits().name == "native"          ? BackendKind::kNative
                  : b->traits().name == "native-legacy" ? BackendKind::kNativeLegacy
                  : b->traits().variant == "legacy"     ? BackendKind::kLegacy
                                                        : BackendKind::kNft;
    }
    return b;
  };
  options.firewall.netns = config.netns;
  options.firewall.wait = config.wait;
  options.drift_interval = config.drift_interval;
  options.max_batch = config.max_batch;
  options.group_wait = config.group_wait;

  service::Metrics::Gauge& build_info =
      metrics.AddGauge("iptkitd_build_info", "Always 1; the labels say which iptkitd this is.", {"version", "backend"});
  Result<std::unique_ptr<service::Service>> service =
      service::Service::Start(std::move(options), store->get(), &metrics, &events);
  if (!service.ok()) {
    spdlog::critical("start: {}", service.status().ToString());
    return kExitFailure;
  }
  build_info.Set({IPTKIT_VERSION, (*service)->backend_name()}, 1);
  StoreMaintenance maintenance(
      store->get(), &metrics,
      store::AuditRetention{.max_age_ms = config.audit_max_age.count(),
                            .max_bytes = static_cast<int64_t>(std::min<size_t>(config.audit_max_bytes, INT64_MAX))},
      config.audit_prune_interval);
  if (!(*service)->startup_status().ok()) {
    spdlog::error("start-up reconcile: {} (serving anyway)", (*service)->startup_status().ToString());
  }

  // Rule counters sampled for rates (the dashboard's graphs): one read of each family per interval.
  std::unique_ptr<service::CounterSampler> counters;
  if (config.counter_interval.count() > 0) {
    service::Service* reader = service->get();
    counters = std::make_unique<service::CounterSampler>(
        service::CounterSamplerOptions{.interval = config.counter_interval},
        [reader](Family family) { return reader->List(family, std::nullopt, {.allow_lossy = true}); });
    counters->Start();
    // /metrics reports the sampled counters too: one feed, no kernel read per scrape.
    service::CounterSampler* feed = counters.get();
    (*service)->SetCounterFeed([feed](Family family) { return feed->Latest(family); });
  }
  // Fleet mode: desired state from etcd, into the same service (docs/fleet.md).
  std::unique_ptr<fleet::Agent> agent;
  // The IP sets of the served namespace, shared by the API and the agent (one set service orders their changes).
  // None on the fake backend: it never changes the sets of the namespace it runs in.
  std::unique_ptr<service::SetService> sets;
  if ((*service)->backend_name() != "fake") {
    sets = std::make_unique<service::SetService>(config.netns, service->get(), store->get(), &events, &metrics);
  }
  if (config.agent) {
    Result<fleet::AgentOptions> agent_options =
        AgentOptionsFromConfig(config, (*service)->backend_name(), IPTKIT_VERSION);
    Result<std::unique_ptr<fleet::Agent>> started =
        agent_options.ok() ? fleet::Agent::Start(*std::move(agent_options), service->get(), store->get(), sets.get())
                           : Result<std::unique_ptr<fleet::Agent>>(agent_options.status());
    if (!started.ok()) {
      spdlog::critical("{}", started.status().ToString());
      (*service)->Stop();
      return kExitUsage;
    }
    agent = *std::move(started);
  }

  rest::ApiOptions api_options;
  api_options.netns = config.netns;
  api_options.default_owner = config.default_owner;
  api_options.max_body_bytes = config.max_body_bytes;
  api_options.max_set_body_bytes = config.max_set_body_bytes;
  api_options.max_ops = config.max_ops;
  api_options.rate_limit = config.rate_limit;
  api_options.rate_burst = config.rate_burst;
  api_options.auth_failure_rate = config.auth_failure_rate;
  api_options.auth_failure_burst = config.auth_failure_burst;
  api_options.auth_failure_hold = config.auth_failure_hold;
  api_options.audit_page_bytes = config.audit_page_bytes;
  api_options.version = IPTKIT_VERSION;
  for (const SocketPeer& p : config.socket_allow) api_options.socket_allow.push_back({p.is_gid, p.id, p.read_only});
  api_options.counters = counters.get();
  api_options.sets = sets.get();
  if (config.ui) {
    api_options.ui_dir = config.ui_dir;
    api_options.ui_hosts = {"localhost", "127.0.0.1", "::1"};
    for (const Listener& l : config.listen) api_options.ui_hosts.push_back(l.address);
    for (const std::string& h : config.ui_allowed_hosts) api_options.ui_hosts.push_back(h);
    if (!std::filesystem::is_regular_file(config.ui_dir + "/index.html")) {
      spdlog::warn("dashboard: no index.html in {} (ui_dir); /ui/ answers 404", config.ui_dir);
    }
  }
  rest::Api api(service->get(), store->get(), &events, &metrics, api_options);

  if (Status s = (*http)->Serve(&api); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    events.Close();
    return kExitFailure;
  }
  nlohmann::ordered_json ready;
  ready["pid"] = getpid();
  ready["backend"] = (*service)->backend_name();
  ready["netns"] = config.netns;
  ready["endpoints"] = (*http)->endpoints();
  for (const std::string& e : (*http)->endpoints()) spdlog::info("listening on {}", e);
  spdlog::info("iptkitd {} serving netns '{}' with the {} backend", IPTKIT_VERSION,
               config.netns.empty() ? "(own)" : config.netns, (*service)->backend_name());
  if (!ready_file.empty()) {
    if (Status s = WriteFileAtomically(ready_file, ready.dump() + "\n"); !s.ok()) spdlog::error("{}", s.ToString());
  }
  NotifySystemd("READY=1\nSTATUS=serving\n");

  int sig = 0;
  for (;;) {
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: configuration reload is not supported; restart iptkitd to change it");
      continue;
    }
    break;
  }
  spdlog::info("signal {}: stopping", sig);
  NotifySystemd("STOPPING=1\n");
  // The writer first: queued requests are answered (503) and no timer fires once we said we stop; then event
  // streams end, so that their connections close, and the listeners.
  const auto stop_started = std::chrono::steady_clock::now();
  if (agent) agent->Stop();
  (*service)->SetCounterFeed(nullptr);
  if (counters) counters->Stop();
  (*service)->Stop();
  events.Close();
  (*http)->Stop();
  maintenance.Stop();
  spdlog::info(
      "stopped in {} ms",
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stop_started).count());
  return kExitOk;
}

// ---- token subcommands ----

int TokenCreate(const std::string& state_dir, const std::string& name, const std::vector<std::string>& scope_words,
                const std::optional<std::string>& ttl_max, std::ostream& out, std::ostream& err) {
  Result<store::Scopes> scopes = store::ParseScopes(scope_words);
  if (!scopes.ok()) {
    err << "iptkitd token create: " << scopes.status().message() << "\n";
    return kExitUsage;
  }
  if (ttl_max) {
    Result<int64_t> seconds = base::ParseSeconds(*ttl_max, kMaxTtlSeconds);
    if (!seconds.ok()) {
      err << "iptkitd token create: --ttl-max " << seconds.status().message() << "\n";
      return kExitUsage;
    }
    scopes->max_ttl_seconds = *seconds;
  }
  Result<std::unique_ptr<store::Store>> store = OpenStore(state_dir, /*create=*/true);
  if (!store.ok()) {
    err << "iptkitd token create: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  Result<std::string> secret = (*store)->CreateToken(name, *scopes, Now());
  if (!secret.ok()) {
    err << "iptkitd token create: " << secret.status().message() << "\n";
    return secret.status().code() == StatusCode::kInvalidArgument ||
                   secret.status().code() == StatusCode::kAlreadyExists
               ? kExitUsage
               : kExitFailure;
  }
  // Only the hash is kept: this is the one time the token is shown.
  out << *secret << "\n";
  return kExitOk;
}

int TokenList(const std::string& state_dir, bool as_json, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<store::Store>> store = OpenStore(state_dir, /*create=*/false);
  if (!store.ok()) {
    err << "iptkitd token list: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  Result<std::vector<store::TokenRecord>> tokens = (*store)->ListTokens();
  if (!tokens.ok()) {
    err << "iptkitd token list: " << tokens.status().ToString() << "\n";
    return kExitFailure;
  }
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const store::TokenRecord& t : *tokens) {
    std::string words;
    for (const std::string& w : store::ScopeWords(t.scopes)) words += (words.empty() ? "" : " ") + w;
    if (as_json) {
      nlohmann::ordered_json j;
      j["name"] = t.name;
      j["scopes"] = store::ScopeWords(t.scopes);
      j["ttl_max"] = t.scopes.max_ttl_seconds ? nlohmann::ordered_json(*t.scopes.max_ttl_seconds) : nullptr;
      j["created_ms"] = t.created_ms;
      j["revoked_ms"] = t.revoked_ms ? nlohmann::ordered_json(*t.revoked_ms) : nullptr;
      list.push_back(j);
    } else {
      out << t.name << "\t" << (t.revoked_ms ? "revoked" : "active") << "\t" << words
          << (t.scopes.max_ttl_seconds ? "\tttl-max=" + std::to_string(*t.scopes.max_ttl_seconds) : "") << "\n";
    }
  }
  if (as_json) out << list.dump(2) << "\n";
  return kExitOk;
}

int TokenRevoke(const std::string& state_dir, const std::string& name, std::ostream& err) {
  Result<std::unique_ptr<store::Store>> store = OpenStore(state_dir, /*create=*/false);
  if (!store.ok()) {
    err << "iptkitd token revoke: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  Status s = (*store)->RevokeToken(name, Now());
  if (!s.ok()) {
    err << "iptkitd token revoke: " << s.message() << "\n";
    return s.code() == StatusCode::kNotFound ? kExitUsage : kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app("iptkitd: the iptkit firewall daemon (REST API, unix socket, group commit, owned state)", "iptkitd");
  app.set_version_flag("--version", std::string("iptkitd ") + IPTKIT_VERSION);
  std::string config_path;
  app.add_option(
      "--config", config_path,
      std::string("configuration file (default ") + kDefaultConfig + " when it exists; docs/daemon-config.md)");
  // One flag per configuration key (config.h ConfigKeys), applied on top of the file only when given, through the
  // same parser and checks as the file's line.
  std::map<std::string, std::optional<std::string>> single;
  std::map<std::string, std::vector<std::string>> repeated;
  std::map<std::string, bool> flags;
  for (const ConfigKey& key : ConfigKeys()) {
    if (key.is_flag) {
      app.add_flag(key.flag, flags[key.name], key.help);
    } else if (key.repeatable) {
      app.add_option(key.flag, repeated[key.name], key.help);
    } else {
      app.add_option(key.flag, single[key.name], key.help);
    }
  }
  bool no_ui = false;
  app.add_flag("--no-ui", no_ui, "do not serve the dashboard (the same as --ui off)");
  std::string ready_file;
  app.add_option("--ready-file", ready_file,
                 "once serving, write {pid, backend, netns, endpoints} as JSON to this file (never through a symlink)");

  CLI::App* token = app.add_subcommand("token", "manage API tokens (in the state directory's store)");
  token->require_subcommand(1);
  std::string token_state_dir = "/var/lib/iptkitd";
  CLI::App* create = token->add_subcommand("create", "create a token and print it (shown only once)");
  std::string token_name;
  std::vector<std::string> scopes;
  std::optional<std::string> ttl_max;
  create->add_option("--name", token_name, "token name")->required();
  create->add_option("--scope", scopes, "read | write | table:NAME | chain:NAME | owner:NAME | set:NAME (repeatable)")
      ->required();
  create->add_option("--ttl-max", ttl_max,
                     "longest TTL the token may give (90, 10m, 2h, 1d); it may then only make TTL-bounded changes");
  CLI::App* list = token->add_subcommand("list", "list tokens (without secrets)");
  bool list_json = false;
  list->add_flag("--json", list_json, "JSON output");
  CLI::App* revoke = token->add_subcommand("revoke", "revoke a token");
  std::string revoke_name;
  revoke->add_option("name", revoke_name, "token name")->required();
  for (CLI::App* sub : {create, list, revoke}) {
    sub->add_option("--state-dir", token_state_dir, "directory of the SQLite store (default /var/lib/iptkitd)");
  }

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    out << "iptkitd " << IPTKIT_VERSION << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "iptkitd: " << e.what() << "\n";
    return kExitUsage;
  }

  if (*token) {
    if (*create) return TokenCreate(token_state_dir, token_name, scopes, ttl_max, out, err);
    if (*list) return TokenList(token_state_dir, list_json, out, err);
    if (*revoke) return TokenRevoke(token_state_dir, revoke_name, err);
    return kExitUsage;
  }

  DaemonConfig config;
  const bool explicit_config = !config_path.empty();
  if (!explicit_config && std::filesystem::exists(kDefaultConfig)) config_path = kDefaultConfig;
  if (!config_path.empty()) {
    Result<DaemonConfig> loaded = LoadConfigFile(config_path);
    if (!loaded.ok()) {
      err << "iptkitd: " << loaded.status().message() << "\n";
      return kExitUsage;
    }
    config = *std::move(loaded);
  }
  // Flags: a repeatable flag replaces the file's entries, any other replaces the file's value.
  for (const ConfigKey& key : ConfigKeys()) {
    std::vector<std::string> values;
    if (key.repeatable) {
      values = repeated[key.name];
      if (values.empty()) continue;
      if (key.name == "listen") config.listen.clear();
      if (key.name == "socket_allow") config.socket_allow.clear();
      if (key.name == "ui_allowed_host") config.ui_allowed_hosts.clear();
      if (key.name == "label") config.label.clear();
    } else if (key.is_flag) {
      if (!flags[key.name]) continue;
      values.push_back("true");
    } else {
      if (!single[key.name]) continue;
      values.push_back(*single[key.name]);
    }
    for (const std::string& v : values) {
      if (Status s = ApplyConfigValue(key.name, v, &config); !s.ok()) {
        err << "iptkitd: " << key.flag << " '" << v << "': " << s.message() << "\n";
        return kExitUsage;
      }
    }
  }
  if (no_ui) {
    if (single["ui"]) {
      err << "iptkitd: --no-ui and --ui are mutually exclusive\n";
      return kExitUsage;
    }
    config.ui = false;
  }
  return Run(config, ready_file, err);
}

}  // namespace iptkit::daemon
