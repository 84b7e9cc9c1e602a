#include "tools/iptkitd/fleet_agent.h"

#include <unistd.h>

#include <fstream>

namespace iptkit::daemon {

Result<fleet::AgentOptions> AgentOptionsFromConfig(const DaemonConfig& config, const std::string& backend,
                                                   const std::string& version) {
  fleet::AgentOptions o;
  o.etcd.endpoints = config.etcd;
  o.etcd.user = config.etcd_user;
  if (!config.etcd_password_file.empty()) {
    std::ifstream in(config.etcd_password_file);
    if (!in) return Status::InvalidArgument("etcd_password_file " + config.etcd_password_file + ": cannot be read");
    std::getline(in, o.etcd.password);
  }
  o.etcd.tls = {config.etcd_ca, config.etcd_cert, config.etcd_key};
  o.prefix = config.prefix;
  o.group = config.group;
  o.host_id = config.host_id;
  if (o.host_id.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') {
      return Status::InvalidArgument("host_id: not set and the host name is unknown");
    }
    o.host_id = name;
  }
  for (const std::string& l : config.label) {
    size_t eq = l.find('=');
    o.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  o.owners = config.agent_owners;
  o.tables = config.agent_tables;
  if (config.agent_max_ttl.count() > 0) {
    o.max_ttl_seconds = std::chrono::duration_cast<std::chrono::seconds>(config.agent_max_ttl).count();
  }
  o.max_removals = config.max_removals;
  o.report_ttl = std::chrono::duration_cast<std::chrono::seconds>(config.report_ttl);
  o.backend = backend;
  o.version = version;
  if (Status s = fleet::ValidateAgentOptions(o); !s.ok()) return Status::InvalidArgument("agent: " + s.message());
  return o;
}

}  // namespace iptkit::daemon
