// Firewall::Open: the only part of Firewall that needs the backend factory (backend_factory.cc).
#include "iptkit/firewall.h"
#include "src/backend/backend.h"

namespace iptkit {
namespace {

backend::BackendOptions MakeBackendOptions(const FirewallOptions& options) {
  backend::BackendOptions out;
  out.netns = options.netns;
  out.wait = options.wait;
  out.event_cache = options.event_cache;
  out.one_shot = options.one_shot;
  return out;
}

}  // namespace

Result<std::unique_ptr<Firewall>> Firewall::Open(const FirewallOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::Backend> backend,
                          backend::MakeBackend(options.backend, MakeBackendOptions(options)));
  return WithBackend(std::move(backend), options);
}

}  // namespace iptkit
