// Store: the daemon's persistent state in one SQLite database (WAL): owners' declarative documents, managed rules
// (rules added through the daemon with an owner, optionally with a TTL deadline), pending commit-confirm
// transactions with what undoes them, the audit log, and API tokens (hashed). docs/daemon.md.
//
// Durability: journal_mode=WAL, synchronous=FULL: a Write that returned OK survives a crash of the daemon and a
// power loss. Every Write is one SQLite transaction: all of it or nothing.
// Times are milliseconds since the Unix epoch, given by the caller (so tests control the clock).
// Thread-safety: all methods are safe to call concurrently (one connection behind a mutex). Another process (the
// `iptkitd token` command) may open the same file at the same time; SQLite's locking serializes writers and a busy
// database is waited for up to 5 s, then Unavailable.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto store, store::Store::Open("/var/lib/iptkitd/iptkitd.db"));
//   IPTKIT_RETURN_IF_ERROR(store->Write([&](store::Store::Tx& tx) -> Status {
//     IPTKIT_RETURN_IF_ERROR(tx.PutOwner("myapp", document_json, now_ms));
//     return tx.AppendAudit(entry).status();
//   }));
//   IPTKIT_ASSIGN_OR_RETURN(std::vector<store::OwnerRecord> owners, store->ListOwners());
#ifndef IPTKIT_SRC_STORE_STORE_H_
#define IPTKIT_SRC_STORE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::store {

// ---- Records ----

// An owner known to the daemon. `document` is the owner's declarative desired state as JSON text
// (DesiredStateToJson of what PUT /v1/owners/OWNER accepted); nullopt when the owner has only managed rules.
struct OwnerRecord {
  std::string owner;
  std::optional<std::string> document;
  int64_t updated_ms = 0;
  friend bool operator==(const OwnerRecord&, const OwnerRecord&) = default;
};

// Where a managed rule sits among the owner's rules of its chain (docs/daemon.md): kFirst rules come before the
// owner's other rules of the chain (newest first, like repeated `-I CHAIN 1`), kLast ones after them (oldest first,
// like repeated `-A`).
enum class Position { kFirst, kLast };
std::string_view PositionName(Position position);  // "first" / "last"

// A rule added through the daemon with an owner. Identity (the "same add") is (owner, family, table, chain,
// spec): adding it again updates position/deadline instead of creating a second row.
struct ManagedRule {
  int64_t seq = 0;  // assigned by the store on first insert, increasing; kept when the same add is repeated
  std::string owner;
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
  std::string spec;     // canonical spec WITHOUT the owner tag
  std::string rule_id;  // the id of the tag "iptkit:<owner>:<rule_id>"
  Position position = Position::kLast;
  std::optional<int64_t> deadline_ms;  // nullopt: permanent
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  friend bool operator==(const ManagedRule&, const ManagedRule&) = default;
};

// The identity of a managed rule.
struct ManagedRuleKey {
  std::string owner;
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
  std::string spec;
  friend auto operator<=>(const ManagedRuleKey&, const ManagedRuleKey&) = default;
};
ManagedRuleKey KeyOf(const ManagedRule& rule);

// A transaction applied with confirm_within. `rollback` is opaque JSON text written by the service (what undoes
// the transaction); the store only keeps it.
struct ConfirmRecord {
  enum class State { kPending, kConfirmed, kRolledBack, kRollbackFailed };
  std::string id;
  State state = State::kPending;
  int64_t deadline_ms = 0;
  std::string principal;
  std::string request_id;
  std::string rollback;  // JSON text
  int64_t created_ms = 0;
  std::optional<int64_t> resolved_ms;  // set with any state but kPending
  std::string message;                 // why/how it was resolved ("" while pending)
  friend bool operator==(const ConfirmRecord&, const ConfirmRecord&) = default;
};
std::string_view ConfirmStateName(ConfirmRecord::State state);  // "pending", "confirmed", "rolled_back", ...

// One audited change (or attempted change). The store keeps at most StoreOptions::audit_body_bytes of `request`,
// `message` and `diff` each: a longer text is cut (at a UTF-8 character boundary) and ends with the marker
// "\n[truncated by iptkitd: N bytes in all]", and its original size is in *_original_bytes.
struct AuditEntry {
  int64_t id = 0;  // assigned by the store, increasing
  int64_t time_ms = 0;
  std::string principal;  // "token:ci", "uid:0", "iptkitd" (the daemon itself: TTL expiry, drift repair, ...)
  std::string request_id;
  std::string action;   // "append", "transaction", "put_owner", "ttl_expire", "drift_repair", ...
  std::string request;  // JSON text of the request (ops, rule, document)
  std::string result;   // "ok", or a status code name such as "INVALID_ARGUMENT"
  std::string message;  // error message ("" when ok)
  std::string diff;     // the restore lines committed for this request ("" when nothing changed)
  // Set only when the text was truncated: its size in bytes as given to AppendAudit. Ignored by AppendAudit.
  std::optional<int64_t> request_original_bytes;
  std::optional<int64_t> message_original_bytes;
  std::optional<int64_t> diff_original_bytes;
  friend bool operator==(const AuditEntry&, const AuditEntry&) = default;
};

struct AuditQuery {
  // Filters (empty/nullopt = any). `result` "ok" matches successes, "error" every failure, else a code name.
  std::string principal;
  std::string action;
  std::string result;
  std::string request_id;
  std::optional<int64_t> since_ms;  // time_ms >= since_ms
  std::optional<int64_t> until_ms;  // time_ms < until_ms
  // Paging: newest first; entries with id < before_id (nullopt: from the newest). 1..1000.
  std::optional<int64_t> before_id;
  int limit = 100;
};
struct AuditPage {
  std::vector<AuditEntry> entries;     // newest first
  std::optional<int64_t> next_before;  // pass as before_id for the next page; nullopt when this is the last page
};
// What ScanAudit's visitor says about the entry it was given.
enum class ScanStep {
  kTake,  // the entry is part of the page; go on
  kStop,  // the page is full without this entry: stop (the next page starts with it)
};

// Retention of the audit log (PruneAudit).
struct AuditRetention {
  int64_t max_age_ms = int64_t{90} * 24 * 3600 * 1000;  // entries with time_ms < now - max_age_ms go
  int64_t max_bytes = int64_t{256} << 20;               // then the oldest entries go while the log is larger
};
struct PruneResult {
  int64_t removed_by_age = 0;
  int64_t removed_by_size = 0;
  int64_t remaining_entries = 0;
  int64_t remaining_bytes = 0;  // the log's size as retention counts it (see PruneAudit)
};

// Store-level health facts (Health()), for /healthz and the daemon's log.
struct StoreHealth {
  // "" when the store can write. Otherwise what stops it, for people: the state directory or the database file was
  // removed or replaced since Open (checked on every call), or the last write failed (disk full, I/O error; until
  // a write succeeds again).
  std::string problem;
  bool files_ok = true;          // false: the directory or the database file was removed or replaced
  std::string last_write_error;  // "" after a successful write (or before any)
  size_t audit_backlog = 0;      // entries QueueAudit holds that are not stored yet
  uint64_t audit_dropped = 0;    // entries dropped from a full backlog since Open
  bool ok() const { return problem.empty(); }
};

// Options of Store::Open.
struct StoreOptions {
  // Most bytes kept of an audit entry's request, message and diff each (see AuditEntry); >= 256.
  size_t audit_body_bytes = 64 << 10;
  // Most entries QueueAudit keeps in memory; when full the oldest is dropped (StoreHealth::audit_dropped).
  size_t audit_backlog_limit = 10000;
};

// What a token may do. Empty lists mean "any".
struct Scopes {
  bool read = false;                       // GET of rules, owners, audit, events, metrics
  bool write = false;                      // any change
  std::vector<std::string> tables;         // tables it may change
  std::vector<std::string> chains;         // chains it may change (any table)
  std::vector<std::string> owners;         // owners whose state it may change; when set, unowned changes are refused
  std::vector<std::string> sets;           // IP sets it may change; when set (alone), rule changes are refused
  std::optional<int64_t> max_ttl_seconds;  // longest TTL it may give; when set, adds without a TTL are refused
  friend bool operator==(const Scopes&, const Scopes&) = default;
};
// Parses the command-line scope words: "read", "write", "table:NAME", "chain:NAME", "owner:NAME", "set:NAME".
// InvalidArgument naming the bad word. NAME is checked: a table iptables knows (KnownTables), a valid chain name
// (ValidateChainName), an owner of [a-z0-9-]{1,32}, a set name of 1..31 printable characters without spaces.
// Repeated words count once.
Result<Scopes> ParseScopes(const std::vector<std::string>& words);
// The words again, in the order read, write, tables, chains, owners, sets (max_ttl is not a word).
std::vector<std::string> ScopeWords(const Scopes& scopes);

struct TokenRecord {
  std::string name;  // [A-Za-z0-9._-]{1,64}, unique
  Scopes scopes;
  int64_t created_ms = 0;
  std::optional<int64_t> revoked_ms;
  friend bool operator==(const TokenRecord&, const TokenRecord&) = default;
};

// ---- The store ----

class Store {
 public:
  // Opens (creating when missing) the database file; the directory must exist. Creates or migrates the schema
  // (PRAGMA user_version). The file is created with mode 0600 (it holds token hashes and the audit log).
  // A file that is not an iptkitd database, or one with a newer schema version, is FailedPrecondition.
  // The identities (device, inode) of the file and of its directory are remembered for CheckFiles.
  static Result<std::unique_ptr<Store>> Open(const std::string& path, StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // One unit of work inside Write. Only valid during the Write call that passed it.
  class Tx {
   public:
    virtual ~Tx() = default;
    // Creates or replaces the owner row (document nullopt: no document, the owner has only managed rules); its
    // managed rules stay. InvalidArgument for an owner name that is not [a-z0-9-]{1,32}.
    virtual Status PutOwner(const std::string& owner, const std::optional<std::string>& document, int64_t now_ms) = 0;
    // Deletes the owner row and all its managed rules. NotFound when there is no such owner.
    virtual Status DeleteOwner(const std::string& owner) = 0;
    // Inserts the rule, or for an existing key updates rule_id, position, deadline_ms and updated_ms (created_ms
    // and seq stay). Creates the owner row (without document) when it does not exist. Returns the stored record.
    // rule.created_ms is used on the first insert only; rule.seq is ignored. InvalidArgument for a bad owner name
    // or an empty table or chain.
    virtual Result<ManagedRule> UpsertManagedRule(const ManagedRule& rule) = 0;
    // Puts back a managed rule exactly as recorded (seq and times included), replacing a row with the same key;
    // used to undo a change (commit-confirm rollback). Creates the owner row when it does not exist. AlreadyExists
    // when rule.seq belongs to a rule with another key.
    virtual Status RestoreManagedRule(const ManagedRule& rule) = 0;
    // NotFound when absent.
    virtual Status DeleteManagedRule(const ManagedRuleKey& key) = 0;
    // Inserts a pending confirm record. AlreadyExists for a used id; InvalidArgument for an empty id or a record
    // that is not pending.
    virtual Status PutConfirm(const ConfirmRecord& record) = 0;
    // Moves a pending record to `state` (not kPending) with resolved_ms and message. NotFound for an unknown id,
    // FailedPrecondition when it is no longer pending.
    virtual Status ResolveConfirm(const std::string& id, ConfirmRecord::State state, int64_t now_ms,
                                  const std::string& message) = 0;
    // Appends; returns the assigned id.
    virtual Result<int64_t> AppendAudit(const AuditEntry& entry) = 0;
    // Sets a meta key (see PutMeta) inside the transaction: state that must change together with the audit record,
    // such as the etcd revision the fleet agent applied. DeleteMeta of an absent key is OK.
    virtual Status PutMeta(const std::string& key, const std::string& value) = 0;
    virtual Status DeleteMeta(const std::string& key) = 0;
  };
  // Runs `fn` in one SQLite transaction (BEGIN IMMEDIATE): commits when it returns OK, rolls back otherwise (and
  // returns its Status). A failing COMMIT is returned too, with nothing written. `fn` must use only `tx`: another
  // Store method called from inside fn returns FailedPrecondition (it would wait for the lock fn holds).
  // Before anything: CheckFiles (Unavailable when the files were removed or replaced: a write would go to a file
  // nobody reads again), then the audit backlog is stored in a transaction of its own (kept queued if that fails).
  // A disk that is full, read-only or failing is Unavailable naming SQLite's error.
  Status Write(const std::function<Status(Tx&)>& fn);

  // ---- Health ----
  // Unavailable naming the path and what happened when the state directory (the database's directory) or the
  // database file no longer is the one Open opened: removed, or replaced by another (a restored backup, a
  // `rm -rf` and `mkdir`). OK otherwise. Two stat(2) calls; safe to call often.
  Status CheckFiles() const;
  // CheckFiles, the last write's error and the audit backlog. Never blocks on a writer.
  StoreHealth Health() const;

  // ---- Audit backlog ----
  // For callers that must go on when their own Write failed (a full disk must not stop TTL expiry or a
  // commit-confirm rollback): keeps `entry` in memory and stores it with the next successful Write or
  // FlushAuditBacklog, in order, with the time it carries. At most audit_backlog_limit entries; when full the
  // oldest one is dropped (counted in StoreHealth::audit_dropped).
  void QueueAudit(AuditEntry entry);
  // Stores the backlog now (one transaction); the entries stay queued when it fails. One flush at a time: a flush
  // that starts after an entry was queued has stored it (or failed) when it returns. FailedPrecondition from inside
  // Write's fn.
  Status FlushAuditBacklog();
  // Group commit: queues `entry` (as QueueAudit) and returns once it is stored, together with whatever other
  // threads queued meanwhile: while one caller's transaction (and its fsync) runs, the entries of concurrent callers
  // gather and the next flush stores them all in one transaction. When the flush that carried the entry fails, its
  // error; the entry stays queued then (stored with the next successful write, as with QueueAudit).
  Status StoreAudit(AuditEntry entry);

  // ---- Audit retention ----
  // Removes entries older than max_age_ms (time_ms < now_ms - max_age_ms), then the oldest entries while the log
  // is larger than max_bytes, where an entry's size is the bytes of its stored texts plus 64. Deletes in chunks
  // of a few thousand rows, each its own transaction, so writers are never held up for long. The file does not
  // shrink (SQLite reuses the freed pages).
  Result<PruneResult> PruneAudit(const AuditRetention& retention, int64_t now_ms);

  // ---- Reads ----
  Result<std::vector<OwnerRecord>> ListOwners();  // by owner name
  Result<std::optional<OwnerRecord>> GetOwner(const std::string& owner);
  Result<std::vector<ManagedRule>> ListManagedRules();  // by seq
  // Pending records only when pending_only, else all; by created_ms, then id.
  Result<std::vector<ConfirmRecord>> ListConfirms(bool pending_only);
  Result<std::optional<ConfirmRecord>> GetConfirm(const std::string& id);
  // InvalidArgument for a limit outside 1..1000 or a result filter that is not "ok", "error" or a code name.
  Result<AuditPage> QueryAudit(const AuditQuery& query);
  // The same selection, streamed: `visit` gets each entry (newest first, at most query.limit) and the entry is
  // dropped after it returns, so a page is never held whole here. Reads through a read-only connection of its own
  // (a small pool), so a long scan holds up neither writes nor token lookups. Returns the next page's before_id:
  // the id of the last entry taken when more entries match after it (the visitor stopped, or the limit was
  // reached and another entry exists), nullopt otherwise. Same errors as QueryAudit.
  Result<std::optional<int64_t>> ScanAudit(const AuditQuery& query,
                                           const std::function<ScanStep(const AuditEntry&)>& visit);

  // ---- Tokens ----
  // Creates a token and returns its secret: "iptk_" followed by 40 characters of RFC 4648 base32 (lower case,
  // 200 bits from getrandom(2)). Only the SHA-256 of the secret is stored. AlreadyExists for a name in use (also
  // a revoked one), InvalidArgument for a bad name or scopes ParseScopes would refuse (or max_ttl_seconds <= 0).
  Result<std::string> CreateToken(const std::string& name, const Scopes& scopes, int64_t now_ms);
  Result<std::vector<TokenRecord>> ListTokens();  // by name, revoked ones included
  // NotFound for an unknown name; revoking twice is OK (keeps the first time).
  Status RevokeToken(const std::string& name, int64_t now_ms);
  // The live (not revoked) token whose secret this is, or nullopt. Compares hashes only.
  Result<std::optional<TokenRecord>> LookupToken(std::string_view secret);

  // ---- Small key/value settings (e.g. the netns the state belongs to) ----
  Result<std::optional<std::string>> GetMeta(const std::string& key);
  Status PutMeta(const std::string& key, const std::string& value);
  // Every meta key that starts with `prefix`, by key.
  Result<std::vector<std::pair<std::string, std::string>>> ListMeta(const std::string& prefix);

  // Implementation (store.cc).
  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  Status WriteNow(const std::function<Status(Tx&)>& fn);
  std::unique_ptr<Impl> impl_;
};

// Lower-case hex SHA-256 of `data` (OpenSSL libcrypto).
std::string Sha256Hex(std::string_view data);

}  // namespace iptkit::store

#endif  // IPTKIT_SRC_STORE_STORE_H_
