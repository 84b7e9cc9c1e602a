// Who is asking and what they may do (docs/rest.md "Authentication").
//
// Every TCP request carries `Authorization: Bearer <token>`; the token is looked up by its SHA-256 in the store on
// every request (Store::LookupToken keeps the tokens it found until any token changes, in any process: a
// revocation takes effect at the next request). A unix-socket peer is identified by SO_PEERCRED (uid, gid,
// and its supplementary groups from SO_PEERGROUPS) and authorized by the configured uid/gid list. Scopes are
// checked against everything a change touches before it is submitted: nothing is queued when one part is out of
// scope.
// Thread-safety: pure functions, except Authenticate (store access, itself thread-safe).
//
//   IPTKIT_ASSIGN_OR_RETURN(Principal who, PeerPrincipal(peer, allow));
//   IPTKIT_RETURN_IF_ERROR(AuthorizeChange(who, TouchesOf(request)));
#ifndef IPTKIT_SRC_REST_AUTH_H_
#define IPTKIT_SRC_REST_AUTH_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/service/service.h"
#include "src/store/store.h"

namespace iptkit::rest {

// The credentials of a unix socket peer.
struct PeerCred {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  std::vector<uint32_t> groups;  // supplementary groups
};

// One entry of the socket's allow list: a uid or a gid (primary or supplementary), read-only or read-write.
struct SocketRule {
  bool is_gid = false;
  uint32_t id = 0;
  bool read_only = false;
};

struct Principal {
  std::string name;  // "token:ci", "uid:1000"
  store::Scopes scopes;
};

// The principal of a socket peer: the first matching rule, uid rules before gid rules; read-write beats
// read-only when both match. PermissionDenied naming the uid and gid when none matches.
Result<Principal> PeerPrincipal(const PeerCred& peer, const std::vector<SocketRule>& allow);

// The principal of an Authorization header value. Unauthenticated (returned as PermissionDenied with
// `unauthenticated` set) when it is missing, not "Bearer <token>", or names no live token.
struct AuthResult {
  std::optional<Principal> principal;
  std::string problem;  // why not, when principal is nullopt
  Status lookup;        // not OK when the store could not be asked (then the answer is 503, not 401)
};
AuthResult Authenticate(store::Store& store, std::string_view authorization_header);

// Token buckets by key: `rate` per second refilled up to `burst`, one spent per Charge. At most `max_keys` keys are
// tracked (about 100 bytes each): when the table is full, keys whose bucket has refilled are forgotten (they are as
// good as new), and new keys beyond it share one overflow bucket, so that many keys cannot grow the table or reset
// their own buckets. Used for the rate limit per principal (Api) and the failed authentications per client address.
// Thread-safety: Charge may be called from any number of threads at once.
class TokenBuckets {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    double rate = 10;  // refilled per second; <= 0: no limit (Charge always succeeds)
    double burst = 100;
    size_t max_keys = 4096;
  };
  explicit TokenBuckets(Options options) : options_(options) {}

  // Spends one of `key` at `now`. False when its bucket is empty: then *retry_after_seconds (>= 1) says when the
  // next one is within it again.
  bool Charge(const std::string& key, Clock::time_point now, int* retry_after_seconds);
  // The keys tracked now (for tests and metrics).
  size_t keys() const;

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point last;
  };
  // Refills `b` to `now`; whether it was full.
  bool Refill(Bucket& b, Clock::time_point now) const;

  const Options options_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // GUARDED_BY(mu_)
  Bucket overflow_;                                  // GUARDED_BY(mu_): keys beyond max_keys
  bool overflow_used_ = false;                       // GUARDED_BY(mu_)
  Clock::time_point swept_;                          // GUARDED_BY(mu_): last sweep of refilled buckets
};

// The failed authentications each client address may cause (401s, and answers made without a live token before
// authentication: Api::ChargeRefusedHead): token buckets keyed by PeerKey (an IPv4 address, or the /64 of an IPv6
// one, which one host usually holds whole). It is charged only for a request that came without a live token, so a
// request with a valid token is never refused by it, whichever address it comes from; and one address's failures
// never spend another's budget.
//
//   AuthFailureBudget budget({.rate = 10, .burst = 100});
//   int retry_after = 0;
//   if (!budget.Charge(AuthFailureBudget::PeerKey(request.remote), Clock::now(), &retry_after)) { /* 429 */ }
class AuthFailureBudget : public TokenBuckets {
 public:
  using TokenBuckets::TokenBuckets;
  // The budget key of a connection's remote end as the HTTP layer writes it ("192.0.2.1:5555", "2001:db8::1:443"):
  // the IPv4 address, or the first 64 bits of the IPv6 one ("2001:db8::/64"); IPv4-mapped IPv6 as IPv4.
  // Anything else is its own key, without the port.
  static std::string PeerKey(std::string_view remote);
};

// What a change touches, part by part (for AuthorizeChange).
struct Touch {
  enum class Kind {
    kImperative,   // an op of the request's transaction (append, delete, policy, flush, ...): permanent
    kOwnedAdd,     // a managed rule added (or refreshed)
    kOwnedDelete,  // a managed rule removed
    kDocument,     // an owner's document replaced or the owner removed: permanent
    kConfirm,      // a pending commit-confirm transaction confirmed: makes it permanent
  };
  Kind kind = Kind::kImperative;
  Family family = Family::kIPv4;
  std::string table;                   // "" = no table (a document without chains, an owner removal, a confirm)
  std::string chain;                   // "" = the whole table (flush/zero of every chain)
  std::optional<std::string> owner;    // for owned parts
  std::optional<int64_t> ttl_seconds;  // of an owned add
  std::string what;                    // "append", "policy", "owned add", ... for messages
  std::vector<std::string> jumps;      // user chains the part's rules jump (-j) or go (-g) to
  bool sets = false;                   // a document's owned sets (refused to table: and chain: tokens)
};
std::vector<Touch> TouchesOf(const service::ChangeRequest& request);

// PermissionDenied naming the scope that is missing ("token:ci may not change table nat").
Status AuthorizeRead(const Principal& principal);
// Before queuing, against what the request names (docs/daemon.md "Scopes", the table of scope x operation):
//  - write is needed for any change;
//  - table:/chain: limit the tables and chains changed (a whole-table flush/zero needs no chain restriction);
//  - owner: allows owned parts of those owners only (no imperative ops), whose rules may jump only to verdicts,
//    target extensions and chains of those owners (OwnerChainPrefix), never into another owner's chains;
//  - --ttl-max S (max_ttl_seconds) allows only TTL-bounded changes: owned adds with a ttl of at most S and owned
//    deletes; no imperative op, no document, no confirm. What needs the current state (a permanent managed rule
//    refreshed with a ttl, or deleted) is refused by the writer (ChangeRequest::ttl_bounded).
Status AuthorizeChange(const Principal& principal, const std::vector<Touch>& touches);
// What a set change touches (for AuthorizeSetChange).
struct SetTouch {
  enum class Kind {
    kEntryAdd,     // an entry added (or refreshed)
    kEntryDelete,  // an entry deleted; timeout_seconds: the timeout it has left (nullopt: permanent or unknown)
    kOther,        // a flush, create, destroy, rename, swap, load, sync: permanent
  };
  Kind kind = Kind::kOther;
  std::vector<std::string> sets;           // every set named (both names of a rename or swap)
  std::optional<int64_t> timeout_seconds;  // of an entry add; left to the entry of a delete
  std::string what;                        // "destroy", "add", ... for messages
};
// Before a set change (docs/daemon.md "Scopes", the table of sets):
//  - write is needed;
//  - set:NAME limits set changes to those sets (and, without table:/chain:/owner:, refuses every rule change:
//    AuthorizeChange); a token limited by table:, chain: or owner: without set: scopes changes no set;
//  - --ttl-max S allows only entry adds with a timeout of 1..S (an entry deleted, a set flushed, created, destroyed,
//    renamed, swapped, loaded or synced does not undo itself).
Status AuthorizeSetChange(const Principal& principal, const SetTouch& touch);
// After planning (service::ChangeRequest::authorize): every chain the kernel change touches must be in the token's
// table and chain scopes; a whole-table flush/zero needs no chain restriction.
Status AuthorizeChains(const Principal& principal, const std::vector<service::ChangedChain>& chains);
// Whether the principal may make only TTL-bounded changes (a --ttl-max token).
inline bool TtlBounded(const Principal& principal) { return principal.scopes.max_ttl_seconds.has_value(); }
// Confirming makes another principal's change permanent: a pending transaction may be confirmed by the principal
// that made it, or by one without table, chain, owner or ttl restrictions. PermissionDenied otherwise.
Status AuthorizeConfirm(const Principal& principal, const store::ConfirmRecord& record);

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_AUTH_H_
