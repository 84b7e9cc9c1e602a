// The fleet agent's options from the daemon's configuration (docs/fleet.md, docs/daemon-config.md).
#ifndef IPTKIT_TOOLS_IPTKITD_FLEET_AGENT_H_
#define IPTKIT_TOOLS_IPTKITD_FLEET_AGENT_H_

#include <string>

#include "iptkit/status.h"
#include "src/fleet/agent.h"
#include "tools/iptkitd/config.h"

namespace iptkit::daemon {

// Reads etcd_password_file (its first line) and the host name (when host_id is not set). InvalidArgument naming
// the key whose value cannot be used.
Result<fleet::AgentOptions> AgentOptionsFromConfig(const DaemonConfig& config, const std::string& backend,
                                                   const std::string& version);

}  // namespace iptkit::daemon

#endif  // IPTKIT_TOOLS_IPTKITD_FLEET_AGENT_H_
