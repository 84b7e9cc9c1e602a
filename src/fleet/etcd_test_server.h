// EtcdTestServer (tests only): a real etcd (Debian's /usr/bin/etcd) on 127.0.0.1, free ports, a temporary data
// directory; Stop/Start keep the ports and the data (an etcd outage), the destructor kills it and removes the
// directory. Optionally TLS with client certificates (a CA, a server and a client certificate made with openssl).
//
//   EtcdTestServer etcd;
//   ASSERT_TRUE(etcd.Start().ok());
//   auto client = EtcdClient::Create({.endpoints = {etcd.url()}});
#ifndef IPTKIT_SRC_FLEET_ETCD_TEST_SERVER_H_
#define IPTKIT_SRC_FLEET_ETCD_TEST_SERVER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "iptkit/status.h"

namespace iptkit::fleet {

class EtcdTestServer {
 public:
  struct Options {
    bool tls = false;          // client URL https://, client certificates required
    int auth_token_ttl_s = 0;  // > 0: etcd's --auth-token-ttl
  };
  EtcdTestServer() : EtcdTestServer(Options()) {}
  explicit EtcdTestServer(Options options);
  ~EtcdTestServer();
  EtcdTestServer(const EtcdTestServer&) = delete;
  EtcdTestServer& operator=(const EtcdTestServer&) = delete;

  static bool Available();  // /usr/bin/etcd exists

  // Starts etcd (again) and waits until it answers (up to 20 s).
  Status Start();
  // SIGKILL (hard = true) or SIGTERM, and waits for it. The data stays.
  void Stop(bool hard = false);
  bool running() const { return pid_ > 0; }

  std::string url() const;  // http(s)://127.0.0.1:PORT
  const std::string& dir() const { return dir_; }
  // With tls: the files a client needs.
  std::string ca_file() const { return dir_ + "/ca.pem"; }
  std::string client_cert() const { return dir_ + "/client.pem"; }
  std::string client_key() const { return dir_ + "/client-key.pem"; }

  // Runs /usr/bin/etcdctl against this server (ETCDCTL_API=3, with the TLS files when tls) and returns stdout;
  // Internal with stderr when it fails.
  Result<std::string> Etcdctl(const std::vector<std::string>& args) const;
  // Creates user root (password "rootpw") and user `user`/`password` with read/write on `prefix`, and enables
  // auth.
  Status EnableAuth(const std::string& user, const std::string& password, const std::string& prefix) const;

 private:
  Status MakeCerts();
  Options options_;
  std::string dir_;
  int client_port_ = 0;
  int peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_ETCD_TEST_SERVER_H_
