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
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "src/backend/backend.h"
#include "src/backend/fake/shared_fake.h"
#include "src/rest/api.h"
#include "src/rest/http_server.h"
#include "src/service/events.h"
#include "src/service/metrics.h"
#include "src/service/service.h"
#include "src/store/store.h"
#include "tools/iptkitd/config.h"

#ifndef IPTKIT_VERSION
#define IPTKIT_VERSION "0.0.0"
#endif

namespace iptkit::daemon {
namespace {

constexpr const char* kDefaultConfig = "/etc/iptkit/iptkitd.conf";

std::string DbPath(const std::string& state_dir) { return state_dir + "/iptkitd.db"; }

// The state directory (mode 0700) and the store in it.
Result<std::unique_ptr<store::Store>> OpenStore(const std::string& state_dir, bool create) {
  std::error_code ec;
  if (!std::filesystem::exists(state_dir, ec)) {
    if (!create) return Status::NotFound("state directory '" + state_dir + "' does not exist");
    if (mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::Internal("mkdir " + state_dir + ": " + std::strerror(errno));
    }
  }
  return store::Store::Open(DbPath(state_dir));
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

// Writes `text` to `path` atomically (temporary file + rename).
Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return Status::Internal("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::Internal("rename " + tmp + " " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

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

  Result<std::unique_ptr<store::Store>> store = OpenStore(config.state_dir, /*create=*/true);
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
  // The writer's and the reader's backends must agree: auto is resolved once, and the fake is one shared kernel.
  auto shared_fake = std::make_shared<backend::SharedFake>();
  auto resolved = std::make_shared<std::optional<BackendKind>>();
  service::Service::Options options;
  options.make_backend = [kind, backend_options, shared_fake, resolved]() -> Result<std::unique_ptr<backend::Backend>> {
    if (kind == BackendKind::kFake) return backend::NewSharedFakeHandle(shared_fake);
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::Backend> b,
                            backend::MakeBackend(resolved->value_or(kind), backend_options));
    if (!*resolved) {
      *resolved = b->traits().name == "native"      ? BackendKind::kNative
                  : b->traits().variant == "legacy" ? BackendKind::kLegacy
                                                    : BackendKind::kNft;
    }
    return b;
  };
  options.firewall.netns = config.netns;
  options.firewall.wait = config.wait;
  options.drift_interval = config.drift_interval;
  options.max_batch = config.max_batch;
  options.group_wait = config.group_wait;

  service::Metrics metrics;
  service::EventBus events;
  service::Metrics::Gauge& build_info =
      metrics.AddGauge("iptkitd_build_info", "Always 1; the labels say which iptkitd this is.", {"version", "backend"});
  Result<std::unique_ptr<service::Service>> service =
      service::Service::Start(std::move(options), store->get(), &metrics, &events);
  if (!service.ok()) {
    spdlog::critical("start: {}", service.status().ToString());
    return kExitFailure;
  }
  build_info.Set({IPTKIT_VERSION, (*service)->backend_name()}, 1);
  if (!(*service)->startup_status().ok()) {
    spdlog::error("start-up reconcile: {} (serving anyway)", (*service)->startup_status().ToString());
  }

  rest::ApiOptions api_options;
  api_options.netns = config.netns;
  api_options.default_owner = config.default_owner;
  api_options.max_body_bytes = config.max_body_bytes;
  api_options.max_ops = config.max_ops;
  api_options.rate_limit = config.rate_limit;
  api_options.rate_burst = config.rate_burst;
  api_options.version = IPTKIT_VERSION;
  for (const SocketPeer& p : config.socket_allow) api_options.socket_allow.push_back({p.is_gid, p.id, p.read_only});
  rest::Api api(service->get(), store->get(), &events, &metrics, api_options);

  rest::HttpServerOptions http_options;
  for (const Listener& l : config.listen) http_options.tcp.push_back({l.address, l.port, UsesTls(l)});
  http_options.unix_socket = config.socket;
  http_options.socket_mode = config.socket_mode;
  http_options.tls_cert = config.tls_cert;
  http_options.tls_key = config.tls_key;
  http_options.max_connections = config.max_connections;
  http_options.max_body_bytes = config.max_body_bytes;
  Result<std::unique_ptr<rest::HttpServer>> http = rest::HttpServer::Start(&api, http_options);
  if (!http.ok()) {
    spdlog::critical("{}", http.status().ToString());
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
  (*service)->Stop();
  events.Close();
  (*http)->Stop();
  return kExitOk;
}

// ---- token subcommands ----

int TokenCreate(const std::string& state_dir, const std::string& name, const std::vector<std::string>& scope_words,
                std::optional<int64_t> ttl_max, std::ostream& out, std::ostream& err) {
  Result<store::Scopes> scopes = store::ParseScopes(scope_words);
  if (!scopes.ok()) {
    err << "iptkitd token create: " << scopes.status().message() << "\n";
    return kExitUsage;
  }
  scopes->max_ttl_seconds = ttl_max;
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
  // Flags override the file; each is applied only when given.
  std::optional<std::string> netns, backend, socket, socket_mode, state_dir, tls_cert, tls_key, drift, group_wait, wait,
      log_level, default_owner, max_connections, max_body, max_ops, rate_limit, rate_burst;
  std::vector<std::string> listen, socket_allow;
  std::string ready_file;
  app.add_option("--netns", netns, "network namespace to serve: NAME (/run/netns) or PATH");
  app.add_option("--backend", backend, "auto|nft|legacy|fake");
  app.add_option("--listen", listen, "[http://|https://]ADDR:PORT (repeatable)");
  app.add_option("--socket", socket, "unix socket path");
  app.add_option("--socket-mode", socket_mode, "unix socket permissions (octal)");
  app.add_option("--socket-allow", socket_allow, "uid:N or gid:N, optionally :ro (repeatable)");
  app.add_option("--state-dir", state_dir, "directory of the SQLite store");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain");
  app.add_option("--tls-key", tls_key, "PEM private key");
  app.add_option("--drift-interval", drift, "how often owned state is checked (e.g. 5s)");
  app.add_option("--wait", wait, "bound on waiting for the xtables lock (e.g. 10s)");
  app.add_option("--group-wait", group_wait, "group commit window under load (default 5ms; 0 = none)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off");
  app.add_option("--default-owner", default_owner, "owner of TTL rules added without one");
  app.add_option("--max-connections", max_connections, "connections served at once per listener");
  app.add_option("--max-body-bytes", max_body, "request body limit");
  app.add_option("--max-ops", max_ops, "ops / rules per request");
  app.add_option("--rate-limit", rate_limit, "requests per second per principal (0 = unlimited)");
  app.add_option("--rate-burst", rate_burst, "token bucket size");
  app.add_option("--ready-file", ready_file, "write {pid, endpoints} as JSON here once serving");

  CLI::App* token = app.add_subcommand("token", "manage API tokens (in the state directory's store)");
  token->require_subcommand(1);
  std::string token_state_dir = "/var/lib/iptkitd";
  CLI::App* create = token->add_subcommand("create", "create a token and print it (shown only once)");
  std::string token_name;
  std::vector<std::string> scopes;
  std::optional<int64_t> ttl_max;
  create->add_option("--name", token_name, "token name")->required();
  create->add_option("--scope", scopes, "read | write | table:NAME | chain:NAME | owner:NAME (repeatable)")->required();
  create->add_option("--ttl-max", ttl_max, "longest TTL (seconds) the token may give; adds need a TTL")
      ->check(CLI::Range(int64_t{1}, int64_t{315360000}));
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
  // Flags, with the same value syntax as the file.
  std::string problem;
  auto apply = [&](const char* flag, const std::optional<std::string>& value, auto&& set) {
    if (!value || !problem.empty()) return;
    Status s = set(*value);
    if (!s.ok()) problem = std::string(flag) + " '" + *value + "': " + s.message();
  };
  auto number = [](const std::string& v, auto* out_value) -> Status {
    try {
      size_t used = 0;
      double d = std::stod(v, &used);
      if (used != v.size() || d < 0) return Status::InvalidArgument("expected a non-negative number");
      *out_value = static_cast<std::remove_pointer_t<decltype(out_value)>>(d);
      return Status::Ok();
    } catch (const std::exception&) {
      return Status::InvalidArgument("expected a non-negative number");
    }
  };
  apply("--netns", netns, [&](const std::string& v) {
    config.netns = v;
    return Status::Ok();
  });
  apply("--backend", backend, [&](const std::string& v) {
    if (v != "auto" && v != "native" && v != "nft" && v != "legacy" && v != "fake") {
      return Status::InvalidArgument("expected auto, native, nft, legacy or fake");
    }
    config.backend = v;
    return Status::Ok();
  });
  if (!listen.empty()) {
    config.listen.clear();
    for (const std::string& l : listen) {
      Result<Listener> parsed = ParseListener(l);
      if (!parsed.ok() && problem.empty()) problem = "--listen '" + l + "': " + parsed.status().message();
      if (parsed.ok()) config.listen.push_back(*parsed);
    }
  }
  apply("--socket", socket, [&](const std::string& v) {
    config.socket = v;
    return Status::Ok();
  });
  apply("--socket-mode", socket_mode, [&](const std::string& v) {
    char* end = nullptr;
    unsigned long mode = std::strtoul(v.c_str(), &end, 8);
    if (end == v.c_str() || *end != '\0' || mode > 0777) return Status::InvalidArgument("expected an octal mode");
    config.socket_mode = static_cast<uint32_t>(mode);
    return Status::Ok();
  });
  if (!socket_allow.empty()) {
    config.socket_allow.clear();
    for (const std::string& p : socket_allow) {
      Result<SocketPeer> parsed = ParseSocketPeer(p);
      if (!parsed.ok() && problem.empty()) problem = "--socket-allow '" + p + "': " + parsed.status().message();
      if (parsed.ok()) config.socket_allow.push_back(*parsed);
    }
  }
  apply("--state-dir", state_dir, [&](const std::string& v) {
    config.state_dir = v;
    return Status::Ok();
  });
  apply("--tls-cert", tls_cert, [&](const std::string& v) {
    config.tls_cert = v;
    return Status::Ok();
  });
  apply("--tls-key", tls_key, [&](const std::string& v) {
    config.tls_key = v;
    return Status::Ok();
  });
  apply("--drift-interval", drift, [&](const std::string& v) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(config.drift_interval, ParseDuration(v));
    return Status::Ok();
  });
  apply("--group-wait", group_wait, [&](const std::string& v) -> Status {
    if (v == "0") {
      config.group_wait = std::chrono::milliseconds(0);
      return Status::Ok();
    }
    IPTKIT_ASSIGN_OR_RETURN(config.group_wait, ParseDuration(v));
    return Status::Ok();
  });
  apply("--wait", wait, [&](const std::string& v) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(config.wait, ParseDuration(v));
    return Status::Ok();
  });
  apply("--log-level", log_level, [&](const std::string& v) {
    config.log_level = v;
    return Status::Ok();
  });
  apply("--default-owner", default_owner, [&](const std::string& v) {
    config.default_owner = v;
    return Status::Ok();
  });
  apply("--max-connections", max_connections, [&](const std::string& v) { return number(v, &config.max_connections); });
  apply("--max-body-bytes", max_body, [&](const std::string& v) { return number(v, &config.max_body_bytes); });
  apply("--max-ops", max_ops, [&](const std::string& v) { return number(v, &config.max_ops); });
  apply("--rate-limit", rate_limit, [&](const std::string& v) { return number(v, &config.rate_limit); });
  apply("--rate-burst", rate_burst, [&](const std::string& v) { return number(v, &config.rate_burst); });
  if (!problem.empty()) {
    err << "iptkitd: " << problem << "\n";
    return kExitUsage;
  }
  return Run(config, ready_file, err);
}

}  // namespace iptkit::daemon
