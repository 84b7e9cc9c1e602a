#include "src/rest/auth.h"

#include <algorithm>

namespace iptkit::rest {
namespace {

bool Allowed(const std::vector<std::string>& list, const std::string& value) {
  return list.empty() || std::find(list.begin(), list.end(), value) != list.end();
}

}  // namespace

Result<Principal> PeerPrincipal(const PeerCred& peer, const std::vector<SocketRule>& allow) {
  std::optional<bool> read_only;  // of the best match
  auto match = [&](const SocketRule& rule) {
    if (!rule.is_gid) return rule.id == peer.uid;
    return rule.id == peer.gid || std::find(peer.groups.begin(), peer.groups.end(), rule.id) != peer.groups.end();
  };
  for (const SocketRule& rule : allow) {
    if (!match(rule)) continue;
    read_only = read_only ? (*read_only && rule.read_only) : rule.read_only;
  }
  if (!read_only) {
    return Status::PermissionDenied("unix socket peer uid " + std::to_string(peer.uid) + " gid " +
                                    std::to_string(peer.gid) + " (pid " + std::to_string(peer.pid) +
                                    ") is not in the socket's allow list");
  }
  Principal p;
  p.name = "uid:" + std::to_string(peer.uid);
  p.scopes.read = true;
  p.scopes.write = !*read_only;
  return p;
}

AuthResult Authenticate(store::Store& store, std::string_view header) {
  AuthResult out;
  if (header.empty()) {
    out.problem = "missing Authorization header (expected 'Bearer <token>')";
    return out;
  }
  // RFC 7235 §2.1: the scheme is case-insensitive and is followed by one or more spaces.
  constexpr std::string_view kBearer = "bearer";
  const bool bearer = header.size() > kBearer.size() &&
                      std::equal(kBearer.begin(), kBearer.end(), header.begin(),
                                 [](char want, char got) { return want == (got | 0x20); }) &&
                      (header[kBearer.size()] == ' ' || header[kBearer.size()] == '\t');
  if (!bearer) {
    out.problem = "the Authorization header must be 'Bearer <token>'";
    return out;
  }
  std::string_view secret = header.substr(kBearer.size());
  while (!secret.empty() && (secret.front() == ' ' || secret.front() == '\t')) secret.remove_prefix(1);
  while (!secret.empty() && (secret.back() == ' ' || secret.back() == '\t')) secret.remove_suffix(1);
  if (secret.empty()) {
    out.problem = "the Authorization header must be 'Bearer <token>'";
    return out;
  }
  Result<std::optional<store::TokenRecord>> token = store.LookupToken(secret);
  if (!token.ok()) {
    out.problem = "token lookup failed: " + token.status().ToString();
    return out;
  }
  if (!*token) {
    out.problem = "unknown or revoked token";
    return out;
  }
  out.principal = Principal{"token:" + (*token)->name, (*token)->scopes};
  return out;
}

std::vector<Touch> TouchesOf(const service::ChangeRequest& r) {
  std::vector<Touch> out;
  for (const Op& op : r.ops.ops()) {
    Touch t;
    t.family = op.family;
    t.table = op.table;
    t.chain = op.chain;
    t.permanent_add = op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert || op.kind == Op::Kind::kReplace;
    out.push_back(std::move(t));
  }
  for (const service::ManagedAdd& a : r.adds) {
    out.push_back({a.family, a.table, a.chain, a.owner, true, a.ttl_seconds, false});
  }
  for (const service::ManagedDelete& d : r.deletes) {
    out.push_back({d.family, d.table, d.chain, d.owner, false, {}, false});
  }
  if (r.put_owner) {
    const DesiredState& d = *r.put_owner;
    bool any = false;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
      if (!service::DocumentCovers(d, f)) continue;
      for (const OwnedChain& c : d.chains) {
        out.push_back({f, c.table, c.name, d.owner, false, {}, false, true});
        any = true;
      }
      for (const HookRule& h : d.hooks) {
        out.push_back({f, h.table, h.chain, d.owner, false, {}, false, true});
        any = true;
      }
    }
    if (!any) out.push_back({Family::kIPv4, "", "", d.owner, false, {}, false, true});
  }
  if (r.delete_owner) out.push_back({Family::kIPv4, "", "", *r.delete_owner, false, {}, false, true});
  return out;
}

Status AuthorizeRead(const Principal& p) {
  if (!p.scopes.read) return Status::PermissionDenied(p.name + " has no read scope");
  return Status::Ok();
}

Status AuthorizeChange(const Principal& p, const std::vector<Touch>& touches) {
  const store::Scopes& s = p.scopes;
  if (!s.write) return Status::PermissionDenied(p.name + " has no write scope");
  for (const Touch& t : touches) {
    if (!t.owner && !s.owners.empty()) {
      return Status::PermissionDenied(p.name +
                                      " may only change the state of owner(s) it is scoped to; give \"owner\"");
    }
    if (t.owner && !Allowed(s.owners, *t.owner)) {
      return Status::PermissionDenied(p.name + " may not change the state of owner '" + *t.owner + "'");
    }
    if (!t.table.empty() && !Allowed(s.tables, t.table)) {
      return Status::PermissionDenied(p.name + " may not change table " + t.table);
    }
    if (!s.chains.empty() && t.chain.empty() && !t.table.empty()) {
      return Status::PermissionDenied(p.name + " is scoped to chains and may not change every chain of " + t.table);
    }
    if (!t.chain.empty() && !Allowed(s.chains, t.chain)) {
      return Status::PermissionDenied(p.name + " may not change chain " + t.chain);
    }
    if (t.document && s.max_ttl_seconds) {
      return Status::PermissionDenied(p.name + " may only add rules with a ttl (at most " +
                                      std::to_string(*s.max_ttl_seconds) + " s), not change an owner's document");
    }
    if (t.permanent_add && s.max_ttl_seconds) {
      return Status::PermissionDenied(p.name + " may only add rules with a ttl (at most " +
                                      std::to_string(*s.max_ttl_seconds) + " s)");
    }
    if (t.owned_add && s.max_ttl_seconds) {
      if (!t.ttl_seconds) {
        return Status::PermissionDenied(p.name + " may only add rules with a ttl of at most " +
                                        std::to_string(*s.max_ttl_seconds) + " s");
      }
      if (*t.ttl_seconds > *s.max_ttl_seconds) {
        return Status::PermissionDenied(p.name + " may give a ttl of at most " + std::to_string(*s.max_ttl_seconds) +
                                        " s, not " + std::to_string(*t.ttl_seconds));
      }
    }
  }
  return Status::Ok();
}

Status AuthorizeChains(const Principal& p, const std::vector<service::ChangedChain>& chains) {
  const store::Scopes& s = p.scopes;
  for (const service::ChangedChain& c : chains) {
    if (!Allowed(s.tables, c.table)) {
      return Status::PermissionDenied(p.name + " may not change table " + c.table + " (the change would touch " +
                                      std::string(FamilyName(c.family)) + " " + c.table +
                                      (c.chain.empty() ? "" : "/" + c.chain) + ")");
    }
    if (s.chains.empty()) continue;
    if (c.chain.empty()) {
      return Status::PermissionDenied(p.name + " is scoped to chains and may not change every chain of " + c.table);
    }
    if (!Allowed(s.chains, c.chain)) {
      return Status::PermissionDenied(p.name + " may not change chain " + c.chain + " (the change would touch " +
                                      std::string(FamilyName(c.family)) + " " + c.table + "/" + c.chain + ")");
    }
  }
  return Status::Ok();
}

}  // namespace iptkit::rest
