#include "src/rest/auth.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "iptkit/desired.h"

namespace iptkit::rest {
namespace {

bool Allowed(const std::vector<std::string>& list, const std::string& value) {
  return list.empty() || std::find(list.begin(), list.end(), value) != list.end();
}

std::string Join(const std::vector<std::string>& list) {
  std::string out;
  for (const std::string& s : list) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The user chain `rule` jumps or goes to, if any: a goto always names a chain; a jump names one unless it is a
// verdict or a target extension (ValidateChainName refuses those names for chains).
void AddJump(const Rule& rule, std::vector<std::string>* out) {
  if (rule.target.empty()) return;
  if (rule.target.kind == Target::Kind::kJump &&
      (IsStandardVerdict(rule.target.name) || !ValidateChainName(rule.target.name).ok())) {
    return;
  }
  out->push_back(rule.target.name);
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
    out.lookup = token.status();
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
    t.kind = Touch::Kind::kImperative;
    t.family = op.family;
    t.table = op.table;
    t.chain = op.chain;
    t.what = std::string(OpKindName(op.kind));
    if (op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert || op.kind == Op::Kind::kReplace) {
      AddJump(op.rule, &t.jumps);
    }
    out.push_back(std::move(t));
  }
  for (const service::ManagedAdd& a : r.adds) {
    Touch t{Touch::Kind::kOwnedAdd, a.family, a.table, a.chain, a.owner, a.ttl_seconds, "owned add", {}};
    AddJump(a.rule, &t.jumps);
    out.push_back(std::move(t));
  }
  for (const service::ManagedDelete& d : r.deletes) {
    out.push_back({Touch::Kind::kOwnedDelete, d.family, d.table, d.chain, d.owner, {}, "owned delete", {}});
  }
  if (r.put_owner) {
    const DesiredState& d = *r.put_owner;
    bool any = false;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
      if (!service::DocumentCovers(d, f)) continue;
      for (const OwnedChain& c : d.chains) {
        Touch t{Touch::Kind::kDocument, f, c.table, c.name, d.owner, {}, "owner document", {}};
        for (const Rule& rule : c.rules) AddJump(rule, &t.jumps);
        out.push_back(std::move(t));
        any = true;
      }
      for (const HookRule& h : d.hooks) {
        Touch t{Touch::Kind::kDocument, f, h.table, h.chain, d.owner, {}, "owner document", {}};
        AddJump(h.rule, &t.jumps);
        out.push_back(std::move(t));
        any = true;
      }
    }
    if (!any) out.push_back({Touch::Kind::kDocument, Family::kIPv4, "", "", d.owner, {}, "owner document", {}});
    if (!d.sets.empty()) {
      Touch t{Touch::Kind::kDocument, Family::kIPv4, "", "", d.owner, {}, "the sets of an owner document", {}};
      t.sets = true;
      out.push_back(std::move(t));
    }
  }
  if (r.delete_owner) {
    out.push_back({Touch::Kind::kDocument, Family::kIPv4, "", "", *r.delete_owner, {}, "owner removal", {}});
  }
  if (r.confirm) out.push_back({Touch::Kind::kConfirm, Family::kIPv4, "", "", std::nullopt, {}, "confirm", {}});
  return out;
}

Status AuthorizeRead(const Principal& p) {
  if (!p.scopes.read) return Status::PermissionDenied(p.name + " has no read scope");
  return Status::Ok();
}

Status AuthorizeSetChange(const Principal& p, const SetTouch& touch) {
  const store::Scopes& s = p.scopes;
  if (!s.write) return Status::PermissionDenied(p.name + " has no write scope");
  if (s.sets.empty() && (!s.tables.empty() || !s.chains.empty() || !s.owners.empty())) {
    return Status::PermissionDenied(p.name + " is limited to tables, chains or owners; changing a set needs set:NAME");
  }
  for (const std::string& name : touch.sets) {
    if (!Allowed(s.sets, name)) return Status::PermissionDenied(p.name + " may not change set " + name);
  }
  if (s.max_ttl_seconds) {
    const std::string bound = std::to_string(*s.max_ttl_seconds) + " s";
    if (touch.kind == SetTouch::Kind::kEntryDelete) {
      // As an owned delete of a rule that has a ttl: the entry goes by itself anyway, the delete only makes it go
      // sooner. A permanent entry is not the token's to remove.
      if (touch.timeout_seconds && *touch.timeout_seconds > 0) return Status::Ok();
      return Status::PermissionDenied(p.name + " may only delete set entries that have a timeout (this one is " +
                                      "permanent or not listed as given)");
    }
    if (touch.kind != SetTouch::Kind::kEntryAdd) {
      return Status::PermissionDenied(p.name + " may only add set entries with a timeout of at most " + bound +
                                      ", not " + touch.what);
    }
    if (!touch.timeout_seconds || *touch.timeout_seconds <= 0) {
      return Status::PermissionDenied(p.name + " may only add set entries with a timeout of at most " + bound +
                                      " (give \"timeout\")");
    }
    if (*touch.timeout_seconds > *s.max_ttl_seconds) {
      return Status::PermissionDenied(p.name + " may give a timeout of at most " + bound + ", not " +
                                      std::to_string(*touch.timeout_seconds) + " s");
    }
  }
  return Status::Ok();
}

Status AuthorizeChange(const Principal& p, const std::vector<Touch>& touches) {
  const store::Scopes& s = p.scopes;
  if (!s.write) return Status::PermissionDenied(p.name + " has no write scope");
  const std::string ttl_bound =
      s.max_ttl_seconds ? std::to_string(*s.max_ttl_seconds) + " s" : std::string();  // "" without --ttl-max
  if (!s.sets.empty() && s.tables.empty() && s.chains.empty() && s.owners.empty() && !touches.empty()) {
    return Status::PermissionDenied(p.name + " may only change set(s) " + Join(s.sets) + ", not " +
                                    touches.front().what);
  }
  for (const Touch& t : touches) {
    // (A confirm is checked by AuthorizeConfirm: an owner-scoped token may confirm its own transactions.)
    const bool owned = t.kind == Touch::Kind::kOwnedAdd || t.kind == Touch::Kind::kOwnedDelete ||
                       t.kind == Touch::Kind::kDocument || t.kind == Touch::Kind::kConfirm;
    if (!owned && !s.owners.empty()) {
      return Status::PermissionDenied(p.name + " may only change the state of owner(s) " + Join(s.owners) +
                                      " (an owned change: give \"owner\"), not " + t.what);
    }
    if (t.owner && !Allowed(s.owners, *t.owner)) {
      return Status::PermissionDenied(p.name + " may not change the state of owner '" + *t.owner + "'");
    }
    if (t.sets && (!s.tables.empty() || !s.chains.empty())) {
      return Status::PermissionDenied(p.name + " is limited to tables or chains and may not declare sets (" + t.what +
                                      ")");
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
    if (!s.owners.empty()) {
      for (const std::string& jump : t.jumps) {
        const bool own = std::any_of(s.owners.begin(), s.owners.end(), [&](const std::string& o) {
          const std::string prefix = OwnerChainPrefix(o);
          return jump.size() > prefix.size() && jump.compare(0, prefix.size(), prefix) == 0;
        });
        if (!own) {
          return Status::PermissionDenied(p.name + " may only jump to chains of owner(s) " + Join(s.owners) +
                                          ", not to '" + jump + "' (another owner's or a foreign chain)");
        }
      }
    }
    if (!ttl_bound.empty()) {
      switch (t.kind) {
        case Touch::Kind::kImperative:
        case Touch::Kind::kDocument:
        case Touch::Kind::kConfirm:
          return Status::PermissionDenied(p.name + " may only make changes bounded by a ttl of at most " + ttl_bound +
                                          " (owned adds with a ttl, owned deletes), not " + t.what);
        case Touch::Kind::kOwnedAdd:
          if (!t.ttl_seconds) {
            return Status::PermissionDenied(p.name + " may only add rules with a ttl of at most " + ttl_bound);
          }
          if (*t.ttl_seconds > *s.max_ttl_seconds) {
            return Status::PermissionDenied(p.name + " may give a ttl of at most " + ttl_bound + ", not " +
                                            std::to_string(*t.ttl_seconds) + " s");
          }
          break;
        case Touch::Kind::kOwnedDelete:
          break;
      }
    }
  }
  return Status::Ok();
}

Status AuthorizeConfirm(const Principal& p, const store::ConfirmRecord& record) {
  if (record.principal == p.name) return Status::Ok();
  const store::Scopes& s = p.scopes;
  if (s.tables.empty() && s.chains.empty() && s.owners.empty() && !s.max_ttl_seconds) return Status::Ok();
  return Status::PermissionDenied(p.name + " may not confirm transaction " + record.id + " of " + record.principal +
                                  " (only its own, or a principal without table, chain, owner or ttl limits)");
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

bool TokenBuckets::Refill(Bucket& b, Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - b.last).count();
  if (elapsed > 0) {
    b.tokens = std::min(options_.burst, b.tokens + elapsed * options_.rate);
    b.last = now;
  }
  return b.tokens >= options_.burst;
}

bool TokenBuckets::Charge(const std::string& key, Clock::time_point now, int* retry_after_seconds) {
  if (options_.rate <= 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  Bucket* b = nullptr;
  if (auto it = buckets_.find(key); it != buckets_.end()) {
    b = &it->second;
  } else {
    if (buckets_.size() >= options_.max_keys && now - swept_ >= std::chrono::seconds(1)) {
      // A full bucket is what a new key gets: forgetting it changes nothing. At most once a second, so that a
      // table full of draining buckets costs no scan per request.
      swept_ = now;
      for (auto it = buckets_.begin(); it != buckets_.end();) {
        it = Refill(it->second, now) ? buckets_.erase(it) : std::next(it);
      }
    }
    if (buckets_.size() < options_.max_keys) {
      b = &buckets_.try_emplace(key, Bucket{options_.burst, now}).first->second;
    } else {
      if (!overflow_used_) overflow_ = Bucket{options_.burst, now};
      overflow_used_ = true;
      b = &overflow_;
    }
  }
  Refill(*b, now);
  if (b->tokens >= 1) {
    b->tokens -= 1;
    return true;
  }
  *retry_after_seconds = std::max(1, static_cast<int>(std::ceil((1 - b->tokens) / options_.rate)));
  return false;
}

size_t TokenBuckets::keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buckets_.size();
}

std::string AuthFailureBudget::PeerKey(std::string_view remote) {
  std::string_view host = remote;
  if (const size_t colon = host.rfind(':'); colon != std::string_view::npos) host = host.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string text(host);
  unsigned char bytes[16] = {};
  if (inet_pton(AF_INET, text.c_str(), bytes) == 1) return text;
  if (inet_pton(AF_INET6, text.c_str(), bytes) != 1) return text;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char out[INET6_ADDRSTRLEN] = "";
  if (std::memcmp(bytes, kMapped, sizeof(kMapped)) == 0) {
    inet_ntop(AF_INET, bytes + 12, out, sizeof(out));
    return out;
  }
  std::memset(bytes + 8, 0, 8);
  inet_ntop(AF_INET6, bytes, out, sizeof(out));
  return std::string(out) + "/64";
}

}  // namespace iptkit::rest
