#include "src/fleet/etcd_test_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "src/base/subprocess.h"
#include "src/fleet/etcd_client.h"

namespace iptkit::fleet {
namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

EtcdTestServer::EtcdTestServer(Options options) : options_(options) {
  char tmpl[] = "/tmp/iptkit-etcd-XXXXXX";
  if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
  client_port_ = FreePort();
  peer_port_ = FreePort();
  while (peer_port_ == client_port_) peer_port_ = FreePort();
}

EtcdTestServer::~EtcdTestServer() {
  Stop(/*hard=*/true);
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

bool EtcdTestServer::Available() { return access("/usr/bin/etcd", X_OK) == 0; }

std::string EtcdTestServer::url() const {
  return std::string(options_.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(client_port_);
}

Status EtcdTestServer::MakeCerts() {
  if (std::filesystem::exists(dir_ + "/ca.pem")) return Status::Ok();
  {
    std::ofstream ext(dir_ + "/server.ext");
    ext << "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n";
    std::ofstream cext(dir_ + "/client.ext");
    cext << "extendedKeyUsage=clientAuth\n";
  }
  auto run = [&](std::vector<std::string> args) -> Status {
    args.insert(args.begin(), "openssl");
    IPTKIT_ASSIGN_OR_RETURN(base::SubprocessResult r, base::RunSubprocess(base::Cmd("/usr/bin/openssl", args)));
    if (r.exit_code != 0) return Status::Internal("openssl failed: " + r.stderr_text);
    return Status::Ok();
  };
  const std::vector<std::string> key = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
  auto with = [&](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  IPTKIT_RETURN_IF_ERROR(run(with({"req", "-x509", "-days", "2", "-subj", "/CN=iptkit-test-ca", "-keyout",
                                   dir_ + "/ca-key.pem", "-out", dir_ + "/ca.pem"},
                                  key)));
  for (const std::string name : {"server", "client"}) {
    IPTKIT_RETURN_IF_ERROR(run(with(
        {"req", "-subj", "/CN=" + name, "-keyout", dir_ + "/" + name + "-key.pem", "-out", dir_ + "/" + name + ".csr"},
        key)));
    IPTKIT_RETURN_IF_ERROR(run({"x509", "-req", "-days", "2", "-in", dir_ + "/" + name + ".csr", "-CA",
                                dir_ + "/ca.pem", "-CAkey", dir_ + "/ca-key.pem", "-CAcreateserial", "-out",
                                dir_ + "/" + name + ".pem", "-extfile", dir_ + "/" + name + ".ext"}));
  }
  return Status::Ok();
}

Status EtcdTestServer::Start() {
  if (dir_.empty() || client_port_ == 0 || peer_port_ == 0) return Status::Internal("no temp dir or ports");
  if (pid_ > 0) return Status::Ok();
  if (options_.tls) IPTKIT_RETURN_IF_ERROR(MakeCerts());
  std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::vector<std::string> args = {"etcd",
                                   "--name=test",
                                   "--data-dir=" + dir_ + "/data",
                                   "--listen-client-urls=" + url(),
                                   "--advertise-client-urls=" + url(),
                                   "--listen-peer-urls=" + peer,
                                   "--initial-advertise-peer-urls=" + peer,
                                   "--initial-cluster=test=" + peer,
                                   "--log-outputs=stderr",
                                   "--logger=zap"};
  if (options_.tls) {
    args.push_back("--cert-file=" + dir_ + "/server.pem");
    args.push_back("--key-file=" + dir_ + "/server-key.pem");
    args.push_back("--trusted-ca-file=" + dir_ + "/ca.pem");
    args.push_back("--client-cert-auth");
  }
  if (options_.auth_token_ttl_s > 0) args.push_back("--auth-token-ttl=" + std::to_string(options_.auth_token_ttl_s));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string log = dir_ + "/etcd.log";
  pid_t pid = fork();
  if (pid < 0) return Status::Internal("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    execv("/usr/bin/etcd", argv.data());
    _exit(127);
  }
  pid_ = pid;
  EtcdOptions o;
  o.endpoints = {url()};
  o.request_timeout = std::chrono::seconds(1);
  if (options_.tls) o.tls = {ca_file(), client_cert(), client_key()};
  IPTKIT_ASSIGN_OR_RETURN(auto client, EtcdClient::Create(o));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  Status last;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<RangeResult> r = client->Range("health");
    if (r.ok() || r.status().code() == StatusCode::kPermissionDenied) return Status::Ok();
    last = r.status();
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Status::Internal("etcd exited at start; see " + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Unavailable("etcd did not answer within 20 s: " + last.ToString() + "; see " + log);
}

void EtcdTestServer::Stop(bool hard) {
  if (pid_ <= 0) return;
  kill(pid_, hard ? SIGKILL : SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

Result<std::string> EtcdTestServer::Etcdctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"etcdctl", "--endpoints=" + url()};
  if (options_.tls) {
    argv.push_back("--cacert=" + ca_file());
    argv.push_back("--cert=" + client_cert());
    argv.push_back("--key=" + client_key());
  }
  argv.insert(argv.end(), args.begin(), args.end());
  IPTKIT_ASSIGN_OR_RETURN(
      base::SubprocessResult r,
      base::RunSubprocess(
          base::Cmd("/usr/bin/etcdctl", argv).Env({{"ETCDCTL_API", "3"}}).Timeout(std::chrono::seconds(20))));
  if (r.exit_code != 0) return Status::Internal("etcdctl failed: " + r.stderr_text);
  return r.stdout_text;
}

Status EtcdTestServer::EnableAuth(const std::string& user, const std::string& password,
                                  const std::string& prefix) const {
  for (const std::vector<std::string>& a : std::vector<std::vector<std::string>>{
           {"user", "add", "root:rootpw"},
           {"role", "add", "fleet"},
           {"role", "grant-permission", "fleet", "--prefix=true", "readwrite", prefix},
           {"user", "add", user + ":" + password},
           {"user", "grant-role", user, "fleet"},
           {"auth", "enable"}}) {
    IPTKIT_RETURN_IF_ERROR(Etcdctl(a).status());
  }
  return Status::Ok();
}

}  // namespace iptkit::fleet
