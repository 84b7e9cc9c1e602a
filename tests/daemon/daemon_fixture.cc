#include "tests/daemon/daemon_fixture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#ifndef IPTKITD_BIN
#error "IPTKITD_BIN must name the iptkitd binary"
#endif

namespace iptkit::daemontest {

std::string DefaultDaemonBackend() {
  const char* env = std::getenv("IPTKIT_TEST_DAEMON_BACKEND");
  return env != nullptr && *env != '\0' ? std::string(env) : "nft";
}

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

Reply FromResult(const httplib::Result& result, const std::string& what) {
  Reply reply;
  reply.request = what;
  if (!result) {
    reply.error = httplib::to_string(result.error());
    return reply;
  }
  reply.status = result->status;
  reply.body = result->body;
  reply.headers = result->headers;
  reply.json = Json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  return reply;
}

}  // namespace

// ---- Reply ----

std::string Reply::Header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  }
  return "";
}

std::string Reply::Describe() const {
  std::string out = request + " -> ";
  if (status == 0) return out + "no answer (" + error + ")";
  out += std::to_string(status) + " " + (body.size() > 2000 ? body.substr(0, 2000) + "..." : body);
  return out;
}

// ---- HttpClient ----

HttpClient::HttpClient(const std::string& endpoint, std::string token) : endpoint_(endpoint), token_(std::move(token)) {
  if (endpoint.starts_with("unix:")) {
    client_ = std::make_unique<httplib::Client>(endpoint.substr(5));
    client_->set_address_family(AF_UNIX);
  } else {
    client_ = std::make_unique<httplib::Client>(endpoint);
    client_->enable_server_certificate_verification(false);
  }
  client_->set_keep_alive(true);
  client_->set_tcp_nodelay(true);  // httplib sends headers and body apart: without it each request waits 40 ms
  client_->set_connection_timeout(std::chrono::seconds(10));
  client_->set_read_timeout(std::chrono::seconds(30));
  client_->set_write_timeout(std::chrono::seconds(30));
}

void HttpClient::VerifyWith(const std::string& ca_file) {
  client_->set_ca_cert_path(ca_file);
  client_->enable_server_certificate_verification(true);
}

Reply HttpClient::Send(const Request& request) {
  httplib::Request req;
  req.method = request.method;
  req.path = request.path;
  req.headers = request.headers;
  const std::string token = request.token ? *request.token : token_;
  if (!token.empty()) req.headers.emplace("Authorization", "Bearer " + token);
  if (!request.body.empty()) {
    req.body = request.body;
    // httplib adds text/plain to a body without a Content-Type; "" sends an empty one instead.
    req.headers.emplace("Content-Type", request.content_type);
  }
  return FromResult(client_->send(req), request.method + " " + request.path);
}

Reply HttpClient::Stream(const std::string& path, const std::function<bool(std::string_view)>& on_chunk) {
  httplib::Headers headers;
  if (!token_.empty()) headers.emplace("Authorization", "Bearer " + token_);
  httplib::Result result = client_->Get(
      path, headers, [&](const char* data, size_t length) { return on_chunk(std::string_view(data, length)); });
  if (!result && result.error() == httplib::Error::Canceled) {
    Reply reply;
    reply.request = "GET " + path;
    reply.status = 200;  // hung up by on_chunk after a successful start
    return reply;
  }
  return FromResult(result, "GET " + path);
}

void HttpClient::Disconnect() { client_->stop(); }

// ---- Daemon ----

Result<std::unique_ptr<Daemon>> Daemon::Create(const TestNetns& ns, DaemonOptions options) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->netns_ = ns.name();
  d->options_ = std::move(options);
  char pattern[] = "/tmp/iptkitd-test-XXXXXX";
  if (mkdtemp(pattern) == nullptr) return Status::Internal(std::string("mkdtemp: ") + std::strerror(errno));
  d->dir_ = pattern;
  IPTKIT_ASSIGN_OR_RETURN(d->admin_token_, d->CreateToken("admin", {"read", "write"}));
  return d;
}

Result<std::unique_ptr<Daemon>> Daemon::Start(const TestNetns& ns, DaemonOptions options) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Daemon> d, Create(ns, std::move(options)));
  IPTKIT_RETURN_IF_ERROR(d->Launch());
  return d;
}

Daemon::~Daemon() {
  if (running()) Kill();
  if (::testing::Test::HasFailure() && !dir_.empty()) {
    std::cerr << "---- iptkitd log (" << dir_ << ") ----\n" << Tail(Log(), 6000) << "---- end of log ----\n";
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::vector<std::string> Daemon::Argv() const {
  std::vector<std::string> argv = {IPTKITD_BIN,          "--netns",   netns_,
                                   "--state-dir",        state_dir(), "--ready-file",
                                   dir_ + "/ready.json", "--backend", options_.backend};
  for (const std::string& l : options_.listen) {
    argv.push_back("--listen");
    argv.push_back(l);
  }
  bool rate = false;
  for (const std::string& a : options_.args) rate = rate || a == "--rate-limit";
  if (!rate) {
    argv.push_back("--rate-limit");
    argv.push_back("0");
  }
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  argv.insert(argv.begin(), options_.command_prefix.begin(), options_.command_prefix.end());
  return argv;
}

Status Daemon::Launch() {
  if (running()) return Status::FailedPrecondition("iptkitd is running already (pid " + std::to_string(pid_) + ")");
  const std::string ready_file = dir_ + "/ready.json";
  std::remove(ready_file.c_str());
  ready_ = Json();
  const std::vector<std::string> args = Argv();
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  static char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  static char env_lang[] = "LC_ALL=C";
  char* envp[] = {env_path, env_lang, nullptr};
  const std::string log_path = dir_ + "/daemon.log";
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return Status::Internal("open " + log_path + ": " + std::strerror(errno));
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp);
    _exit(127);
  }
  close(log_fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) return Status::Internal(std::string("fork: ") + std::strerror(errno));
  pid_ = pid;

  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    int status = 0;
    if (WaitExit(std::chrono::milliseconds(0), &status)) {
      return Status::Internal("iptkitd exited (status " + std::to_string(status) + ") before it was ready; log:\n" +
                              Tail(Log(), 4000));
    }
    if (access(ready_file.c_str(), F_OK) == 0) {
      Json j = Json::parse(ReadFile(ready_file), nullptr, false);
      if (j.is_object() && j.contains("endpoints")) {
        ready_ = j;
        return Status::Ok();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Kill();
  return Status::Internal("iptkitd was not ready within 30 s; log:\n" + Tail(Log(), 4000));
}

bool Daemon::WaitExit(std::chrono::milliseconds timeout, int* status) {
  if (pid_ <= 0) return true;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid_, status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status Daemon::Stop(std::chrono::milliseconds timeout) {
  if (!running()) return Status::FailedPrecondition("iptkitd is not running");
  kill(pid_, SIGTERM);
  int status = 0;
  if (!WaitExit(timeout, &status)) {
    Kill();
    return Status::Internal("iptkitd did not exit within " + std::to_string(timeout.count()) + " ms of SIGTERM");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Internal("iptkitd ended with wait status " + std::to_string(status) + " after SIGTERM");
  }
  return Status::Ok();
}

void Daemon::Kill() {
  if (!running()) return;
  kill(pid_, SIGKILL);
  int status = 0;
  WaitExit(std::chrono::seconds(30), &status);
}

std::string Daemon::endpoint() const {
  if (!ready_.is_object() || !ready_["endpoints"].is_array() || ready_["endpoints"].empty()) return "";
  return ready_["endpoints"][0].get<std::string>();
}

std::string Daemon::Log() const { return ReadFile(dir_ + "/daemon.log"); }

Result<std::string> Daemon::CreateToken(const std::string& name, const std::vector<std::string>& scopes,
                                        std::optional<int64_t> ttl_max) const {
  std::vector<std::string> args = {"token", "create", "--name", name};
  for (const std::string& s : scopes) {
    args.push_back("--scope");
    args.push_back(s);
  }
  if (ttl_max) {
    args.push_back("--ttl-max");
    args.push_back(std::to_string(*ttl_max));
  }
  args.push_back("--state-dir");
  args.push_back(state_dir());
  CommandResult r = RunBinary(args);
  if (!r.ok()) return Status::Internal(r.Describe());
  std::string secret = Trim(r.out);
  if (!secret.starts_with("iptk_")) return Status::Internal("token create printed '" + r.out + "'");
  return secret;
}

Status Daemon::RevokeToken(const std::string& name) const {
  CommandResult r = RunBinary({"token", "revoke", name, "--state-dir", state_dir()});
  if (!r.ok()) return Status::Internal(r.Describe());
  return Status::Ok();
}

CommandResult Daemon::RunBinary(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {IPTKITD_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return integration::RunCommand(argv, "", "", timeout);
}

// ---- Helpers ----

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::optional<double> MetricValue(std::string_view text, std::string_view name,
                                  const std::map<std::string, std::string>& labels) {
  for (const std::string& line : Lines(text)) {
    if (line.empty() || line[0] == '#') continue;
    if (!line.starts_with(name)) continue;
    size_t pos = name.size();
    std::map<std::string, std::string> got;
    if (pos < line.size() && line[pos] == '{') {
      size_t end = line.find('}', pos);
      if (end == std::string::npos) continue;
      std::string inner = line.substr(pos + 1, end - pos - 1);
      size_t i = 0;
      while (i < inner.size()) {
        size_t eq = inner.find('=', i);
        if (eq == std::string::npos || eq + 1 >= inner.size() || inner[eq + 1] != '"') break;
        size_t close = inner.find('"', eq + 2);
        if (close == std::string::npos) break;
        got[inner.substr(i, eq - i)] = inner.substr(eq + 2, close - eq - 2);
        i = close + 1;
        if (i < inner.size() && inner[i] == ',') ++i;
      }
      pos = end + 1;
    }
    if (pos >= line.size() || line[pos] != ' ') continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = got.find(k);
      if (it == got.end() || it->second != v) match = false;
    }
    if (!match) continue;
    return std::strtod(line.c_str() + pos + 1, nullptr);
  }
  return std::nullopt;
}

std::vector<std::string> TaggedLines(std::string_view save_text, std::string_view owner) {
  std::vector<std::string> out;
  const std::string tag = "\"iptkit:" + std::string(owner) + ":";
  for (const std::string& line : Lines(save_text)) {
    if (line.starts_with("-A ") && line.find(tag) != std::string::npos) out.push_back(line);
  }
  return out;
}

std::vector<std::string> Lines(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    out.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::string SaveText(const TestNetns& ns, Family family, integration::Variant variant, const std::string& table) {
  Result<std::string> text = ns.Save(variant, family, table);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? *text : "";
}

std::string RulesPath(const std::string& chain, Family family, const std::string& table) {
  return std::string("/v1/") + (family == Family::kIPv4 ? "ipv4" : "ipv6") + "/tables/" + table + "/chains/" + chain +
         "/rules";
}

void ExpectError(const Reply& reply, int status, const std::string& code) {
  if (status == 0) {
    EXPECT_TRUE(reply.status >= 400 && reply.status < 500) << reply.Describe();
  } else {
    EXPECT_EQ(reply.status, status) << reply.Describe();
  }
  ASSERT_TRUE(reply.is_json()) << reply.Describe();
  ASSERT_TRUE(reply.json.is_object() && reply.json.contains("error") && reply.json["error"].is_object())
      << reply.Describe();
  const Json& e = reply.json["error"];
  EXPECT_TRUE(e.contains("code") && e["code"].is_string()) << reply.Describe();
  EXPECT_TRUE(e.contains("message") && e["message"].is_string() && !e["message"].get<std::string>().empty())
      << reply.Describe();
  EXPECT_TRUE(e.contains("details") && e["details"].is_object()) << reply.Describe();
  if (!code.empty() && e.contains("code")) {
    EXPECT_EQ(e["code"], code) << reply.Describe();
  }
}

}  // namespace iptkit::daemontest
