// Test infrastructure for the end-to-end tests of iptkitd: the real daemon binary (IPTKITD_BIN) serving a private
// network namespace of the integration fixture (tests/integration/netns_fixture.h), and a real HTTP client.
//
// A Daemon owns a temporary directory (mkdtemp under /tmp, removed by the destructor) holding the state directory,
// the daemon's log and its ready file. Launch() starts `iptkitd --netns NS --state-dir DIR --ready-file F
// --listen 127.0.0.1:0 ...` and waits for F ({pid, backend, netns, endpoints}); Stop() sends SIGTERM, Kill()
// SIGKILL; Launch() again restarts on the same state directory. Every daemon always gets --netns: nothing here
// touches the host's firewall, and all HTTP traffic stays on loopback. The daemon is started with
// PR_SET_PDEATHSIG=SIGKILL, so a crashing test binary takes it down; launch daemons from the test's main thread
// (the death signal follows the thread that forked).
// Thread-safety: a Daemon is used from one thread (Kill() may be called while other threads hold HttpClients of
// it); an HttpClient from one thread at a time (one keep-alive connection).
//
//   IPTKIT_NEW_NETNS(ns);
//   ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--drift-interval", "1s"}}));
//   HttpClient http = daemon->Admin();
//   Reply r = http.Post("/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec": "-s 192.0.2.1 -j DROP"})");
//   EXPECT_EQ(r.status, 200) << r.Describe();
#ifndef IPTKIT_TESTS_DAEMON_DAEMON_FIXTURE_H_
#define IPTKIT_TESTS_DAEMON_DAEMON_FIXTURE_H_

#include <httplib.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/status.h"
#include "tests/integration/netns_fixture.h"

namespace iptkit::daemontest {

using Json = nlohmann::json;
using integration::CommandResult;
using integration::TestNetns;

// One HTTP answer. status 0: no answer (connection refused or reset, timeout); `error` says which.
struct Reply {
  int status = 0;
  std::string error;
  std::string body;
  Json json = Json::value_t::discarded;  // the parsed body; discarded when it is not JSON
  httplib::Headers headers;
  std::string request;  // "POST /v1/...", for messages

  bool is_json() const { return !json.is_discarded(); }
  std::string Header(const std::string& name) const;
  // "POST /v1/transactions -> 400 {...}" (the body cut at 2,000 bytes).
  std::string Describe() const;
};

struct Request {
  Request(std::string method, std::string path, std::string body = "", std::string content_type = "application/json",
          httplib::Headers headers = {}, std::optional<std::string> token = std::nullopt)
      : method(std::move(method)),
        path(std::move(path)),
        body(std::move(body)),
        content_type(std::move(content_type)),
        headers(std::move(headers)),
        token(std::move(token)) {}
  std::string method;
  std::string path;  // with the query string, sent as is
  std::string body;
  std::string content_type;  // sent when the body is not empty ("" = an empty Content-Type header)
  httplib::Headers headers;
  std::optional<std::string> token;  // overrides the client's token ("" = no Authorization header)
};

// An HTTP client of one endpoint as the ready file names it: "http://127.0.0.1:PORT", "https://127.0.0.1:PORT"
// or "unix:/path/to/sock". Keep-alive on; timeouts 30 s.
class HttpClient {
 public:
  explicit HttpClient(const std::string& endpoint, std::string token = "");
  HttpClient(HttpClient&&) = default;
  HttpClient& operator=(HttpClient&&) = default;

  // TLS endpoints: verify the server against this CA file (default: no verification).
  void VerifyWith(const std::string& ca_file);
  void set_token(std::string token) { token_ = std::move(token); }
  const std::string& endpoint() const { return endpoint_; }

  Reply Send(const Request& request);
  Reply Get(const std::string& path) { return Send(Request("GET", path)); }
  Reply Post(const std::string& path, const std::string& body) { return Send(Request("POST", path, body)); }
  Reply Put(const std::string& path, const std::string& body) { return Send(Request("PUT", path, body)); }
  Reply Delete(const std::string& path, const std::string& body = "") { return Send(Request("DELETE", path, body)); }

  // GET of an event stream: `on_chunk` gets the bytes as they arrive and returns false to hang up. The Reply has
  // the status and headers (and no body).
  Reply Stream(const std::string& path, const std::function<bool(std::string_view)>& on_chunk);
  // Closes the connection, also from another thread (ends a Stream that waits for data); the next request opens a
  // new one. iptkitd's SIGTERM waits for idle keep-alive connections (up to its 5 s keep-alive timeout), so tests
  // disconnect before Stop().
  void Disconnect();

 private:
  std::string endpoint_;
  std::string token_;
  std::unique_ptr<httplib::Client> client_;
};

// The backend the daemon tests run on by default: "nft", or IPTKIT_TEST_DAEMON_BACKEND ("native": the same tests
// on the native backend, which writes what iptables-nft writes, so the nft checks hold unchanged).
std::string DefaultDaemonBackend();

struct DaemonOptions {
  std::string backend = DefaultDaemonBackend();       // --backend
  std::vector<std::string> listen = {"127.0.0.1:0"};  // --listen, each
  // More flags. --rate-limit 0 is added unless args give --rate-limit (tests send bursts).
  std::vector<std::string> args;
  // Runs the daemon through this command (absolute path first), which gets the daemon's argv after its own and
  // must exec it (same pid), e.g. {"/usr/bin/unshare", "--mount", "--", "/bin/sh", "-c", "...; exec \"$@\"", "sh"}.
  std::vector<std::string> command_prefix = {};
};

class Daemon {
 public:
  // Create() and Launch(): the temporary directory, an admin token (scopes read, write) and a running daemon.
  static Result<std::unique_ptr<Daemon>> Start(const TestNetns& ns, DaemonOptions options = {});
  // The temporary directory and the admin token only.
  static Result<std::unique_ptr<Daemon>> Create(const TestNetns& ns, DaemonOptions options = {});
  // Kills a running daemon (SIGKILL), prints the log's tail when the current test failed, removes the directory.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts iptkitd on the state directory and waits (up to 30 s) for its ready file. FailedPrecondition when it
  // is running; Internal with the log's tail when it exits or is not ready in time.
  Status Launch();
  // SIGTERM; waits for the exit. Internal when it did not exit 0 within `timeout` (then it is killed).
  Status Stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // SIGKILL; waits for the exit.
  void Kill();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // The options of the next Launch() (change flags between runs).
  DaemonOptions& options() { return options_; }
  // The ready file of the current (or last) run and its first endpoint.
  const Json& ready() const { return ready_; }
  std::string endpoint() const;
  const std::string& dir() const { return dir_; }  // the temporary directory
  std::string state_dir() const { return dir_ + "/state"; }
  std::string Log() const;  // the daemon's stdout and stderr, all runs
  const std::string& admin_token() const { return admin_token_; }
  const std::string& netns() const { return netns_; }

  // A client of endpoint() with `token`, or with the admin token.
  HttpClient Client(const std::string& token) const { return HttpClient(endpoint(), token); }
  HttpClient Admin() const { return Client(admin_token_); }

  // `iptkitd token create --name NAME --scope S... [--ttl-max N] --state-dir DIR`: the secret it prints.
  Result<std::string> CreateToken(const std::string& name, const std::vector<std::string>& scopes,
                                  std::optional<int64_t> ttl_max = std::nullopt) const;
  // `iptkitd token revoke NAME --state-dir DIR`.
  Status RevokeToken(const std::string& name) const;

  // Runs the binary with `args` (no defaults added) to completion.
  static CommandResult RunBinary(const std::vector<std::string>& args,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  Daemon() = default;
  std::vector<std::string> Argv() const;
  // Waits for the child; true when it exited (status in *status).
  bool WaitExit(std::chrono::milliseconds timeout, int* status);

  std::string netns_;
  DaemonOptions options_;
  std::string dir_;
  std::string admin_token_;
  pid_t pid_ = -1;
  Json ready_;
};

// ---- Small helpers ----

// Polls `done` every 50 ms until it returns true or `timeout` passed; returns its last value.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// The value of the first sample of `name` whose labels include `labels` in Prometheus text; nullopt when none.
std::optional<double> MetricValue(std::string_view metrics_text, std::string_view name,
                                  const std::map<std::string, std::string>& labels = {});

// The "-A CHAIN ..." lines of `save_text` (any table) that carry an owner tag of `owner`.
std::vector<std::string> TaggedLines(std::string_view save_text, std::string_view owner);

// The lines of `text`.
std::vector<std::string> Lines(std::string_view text);

// iptables-save of the namespace (no comment lines, no rule counters). A failure fails the current test and
// yields "".
std::string SaveText(const TestNetns& ns, Family family = Family::kIPv4,
                     integration::Variant variant = integration::Variant::kNft, const std::string& table = "");

// Route of a chain's rules: "/v1/ipv4/tables/filter/chains/INPUT/rules".
std::string RulesPath(const std::string& chain, Family family = Family::kIPv4, const std::string& table = "filter");

// Expects an error answer: the status (0 = any 4xx) and a JSON body {"error":{"code","message","details"}}
// whose code is `code` (unless empty).
void ExpectError(const Reply& reply, int status, const std::string& code = "");

}  // namespace iptkit::daemontest

#endif  // IPTKIT_TESTS_DAEMON_DAEMON_FIXTURE_H_
