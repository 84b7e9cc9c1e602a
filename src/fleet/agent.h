// Agent: fleet mode of iptkitd (docs/fleet.md). Watches `PREFIX/groups/GROUP/` in etcd and feeds what it finds into
// the service core, the same one the REST API uses: owner documents (`owners/OWNER`, the JSON of
// PUT /v1/owners/OWNER), TTL rules (`rules/ID`, a rule with an absolute `expires_at`) and set documents
// (`sets/NAME`, with chunks `sets/NAME/chunk/N` for large sets, applied through the SetService). It reports its
// state at `PREFIX/hosts/HOST_ID` under a lease.
//
// Level-triggered: each pass compares every key's mod_revision with the revision this host applied (kept in the
// store, written in the same SQLite transaction as the change's audit record) and applies what differs; skipped
// intermediate revisions do not matter, re-applying is idempotent. The keys of one etcd transaction (one
// mod_revision) are one request to the writer (one commit, one audit record), its sets applied first: all or none;
// a failed transaction (a bad document, a scope violation, a kernel refusal, a missing set) is reported for each of
// its keys and retried every retry_interval, while the previously applied state stays. Different transactions of a
// pass are submitted together (one group commit) and fail alone.
// Canary rollout: a document naming a label this host lacks waits until every canary reported it applied; a
// canary's failure or the gate's timeout stops it (reported).
// Safety: nothing is done while `GROUP/.group` is missing; removing more than max_removals owners in one pass is
// refused unless `GROUP/.force` was written since the last pass; the scopes (owners, tables, max TTL) refuse a key
// outside them. etcd unreachable: nothing changes (the service keeps the applied state, also across restarts).
// Only keys this agent applied are ever removed by it: owners and sets created through the REST API are left alone.
// Thread-safety: Start spawns its threads; Stop joins them. GetStatus may be called from any thread.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto agent, Agent::Start(options, service.get(), store.get()));
//   ...
//   agent->Stop();
#ifndef IPTKIT_SRC_FLEET_AGENT_H_
#define IPTKIT_SRC_FLEET_AGENT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "iptkit/status.h"
#include "src/fleet/etcd_client.h"
#include "src/service/service.h"
#include "src/service/sets.h"
#include "src/store/store.h"

namespace iptkit::fleet {

struct AgentOptions {
  EtcdOptions etcd;
  std::string prefix;   // "/fleet" (no trailing "/")
  std::string group;    // [A-Za-z0-9._-]{1,64}
  std::string host_id;  // [A-Za-z0-9._-]{1,64}
  std::map<std::string, std::string> labels;
  size_t max_removals = 5;  // owners one pass may remove without GROUP/.force
  // Scopes: empty = any.
  std::vector<std::string> owners;
  std::vector<std::string> tables;
  std::optional<int64_t> max_ttl_seconds;
  std::chrono::seconds report_ttl = std::chrono::seconds(10);  // the lease of PREFIX/hosts/HOST_ID
  std::chrono::milliseconds retry_interval = std::chrono::seconds(5);
  std::string backend;  // for the report
  std::string version;
};

// Checks names and values (InvalidArgument naming the option).
Status ValidateAgentOptions(const AgentOptions& options);

struct AgentStatus {
  bool connected = false;
  int64_t revision = 0;                    // of the last pass
  std::map<std::string, int64_t> applied;  // etcd key -> applied mod_revision
  struct KeyError {
    int64_t revision = 0;
    std::string error;
  };
  std::map<std::string, KeyError> errors;  // keys whose latest revision could not be applied
  std::string last_error;                  // of the group as a whole (marker missing, mass removal refused)
};

class Agent {
 public:
  // `sets` (may be nullptr: set documents are then reported as errors) applies set documents; all must outlive
  // the agent.
  static Result<std::unique_ptr<Agent>> Start(AgentOptions options, service::Service* service, store::Store* store,
                                              service::SetService* sets = nullptr);
  ~Agent();
  void Stop();
  AgentStatus GetStatus() const;

  struct Impl;

 private:
  Agent() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_AGENT_H_
