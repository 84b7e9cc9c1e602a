#include "src/store/store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "src/base/errno_status.h"
#include "src/base/unique_fd.h"
#include "src/store/sqlite_db.h"

namespace iptkit::store {
namespace {

constexpr int kSchemaVersion = 2;
constexpr int64_t kApplicationId = 0x6970746b;  // "iptk" in PRAGMA application_id (database header offset 68)
constexpr int kBusyTimeoutMs = 5000;
constexpr int kMaxAuditLimit = 1000;
constexpr size_t kSecretRandomBytes = 25;  // 200 bits = 40 base32 characters, no padding
constexpr std::string_view kSecretPrefix = "iptk_";

// kMigrations[i] takes the schema from user_version i to i + 1. Each runs inside the BEGIN IMMEDIATE transaction
// of Open and ends by setting user_version, so a crash leaves either the old or the new version.
constexpr const char* kMigrations[kSchemaVersion] = {
    R"sql(
CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) STRICT;

CREATE TABLE owners (
  owner TEXT PRIMARY KEY NOT NULL,
  document TEXT,  -- DesiredStateToJson text; NULL: the owner has only managed rules
  updated_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE managed_rules (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a deleted rule's seq is never handed out again
  owner TEXT NOT NULL REFERENCES owners (owner) ON DELETE CASCADE,
  family TEXT NOT NULL CHECK (family IN ('ipv4', 'ipv6')),
  table_name TEXT NOT NULL,
  chain TEXT NOT NULL,
  spec TEXT NOT NULL,
  rule_id TEXT NOT NULL,
  position TEXT NOT NULL CHECK (position IN ('first', 'last')),
  deadline_ms INTEGER,  -- NULL: permanent
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  UNIQUE (owner, family, table_name, chain, spec)
) STRICT;

CREATE TABLE confirms (
  id TEXT PRIMARY KEY NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'rolled_back', 'rollback_failed')),
  deadline_ms INTEGER NOT NULL,
  principal TEXT NOT NULL,
  request_id TEXT NOT NULL,
  rollback TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  resolved_ms INTEGER,
  message TEXT NOT NULL
) STRICT;
CREATE INDEX confirms_by_created ON confirms (created_ms, id);

CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  principal TEXT NOT NULL,
  request_id TEXT NOT NULL,
  action TEXT NOT NULL,
  request TEXT NOT NULL,
  result TEXT NOT NULL,
  message TEXT NOT NULL,
  diff TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_time ON audit (time_ms);

CREATE TABLE tokens (
  name TEXT PRIMARY KEY NOT NULL,
  hash TEXT NOT NULL UNIQUE,  -- lower-case hex SHA-256 of the secret; the secret itself is never stored
  scopes TEXT NOT NULL,       -- JSON object, see ScopesToJson
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER
) STRICT;

PRAGMA application_id = 1768977515;  -- kApplicationId
PRAGMA user_version = 1;
)sql",
    // 2: bounded audit texts (the original size of a truncated one) and each entry's size for retention.
    R"sql(
ALTER TABLE audit ADD COLUMN request_bytes INTEGER;  -- original size when truncated, else NULL
ALTER TABLE audit ADD COLUMN message_bytes INTEGER;
ALTER TABLE audit ADD COLUMN diff_bytes INTEGER;
ALTER TABLE audit ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;  -- the entry's size as retention counts it
UPDATE audit SET bytes = 64 + length(CAST(principal AS BLOB)) + length(CAST(request_id AS BLOB)) +
    length(CAST(action AS BLOB)) + length(CAST(request AS BLOB)) + length(CAST(result AS BLOB)) +
    length(CAST(message AS BLOB)) + length(CAST(diff AS BLOB));
-- Covers the retention queries (sum of sizes, oldest first) without reading the large texts.
CREATE INDEX audit_by_id_bytes ON audit (id, bytes);
PRAGMA user_version = 2;
)sql",
};

constexpr const char* kAuditColumns =
    "id, time_ms, principal, request_id, action, request, result, message, diff, request_bytes, message_bytes, "
    "diff_bytes";
constexpr int64_t kAuditEntryOverhead = 64;  // bytes counted per entry on top of its texts
constexpr int64_t kPruneChunk = 2000;        // rows deleted per transaction by PruneAudit

constexpr const char* kManagedRuleColumns =
    "seq, owner, family, table_name, chain, spec, rule_id, position, deadline_ms, created_ms, updated_ms";

// ---- Names and encodings ----

bool IsOwnerName(std::string_view name) {
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool IsTokenName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

Status ValidateOwner(std::string_view owner) {
  if (IsOwnerName(owner)) return Status::Ok();
  return Status::InvalidArgument("owner '" + std::string(owner) + "': must be 1..32 characters of [a-z0-9-]");
}

Status ValidateKey(const ManagedRuleKey& key) {
  IPTKIT_RETURN_IF_ERROR(ValidateOwner(key.owner));
  if (key.table.empty()) return Status::InvalidArgument("managed rule of owner '" + key.owner + "': empty table");
  if (key.chain.empty()) return Status::InvalidArgument("managed rule of owner '" + key.owner + "': empty chain");
  return Status::Ok();
}

Result<Position> ParsePosition(std::string_view name) {
  if (name == "first") return Position::kFirst;
  if (name == "last") return Position::kLast;
  return Status::Internal("unknown position '" + std::string(name) + "' in the database");
}

Result<ConfirmRecord::State> ParseConfirmState(std::string_view name) {
  for (auto state : {ConfirmRecord::State::kPending, ConfirmRecord::State::kConfirmed,
                     ConfirmRecord::State::kRolledBack, ConfirmRecord::State::kRollbackFailed}) {
    if (ConfirmStateName(state) == name) return state;
  }
  return Status::Internal("unknown confirm state '" + std::string(name) + "' in the database");
}

Status ValidateScopeName(std::string_view kind, std::string_view name) {
  std::string word = std::string(kind) + ":" + std::string(name);
  if (kind == "table") {
    const std::vector<std::string>& tables = KnownTables();
    if (std::find(tables.begin(), tables.end(), name) == tables.end()) {
      return Status::InvalidArgument("scope '" + word + "': unknown table (raw, mangle, filter, nat, security)");
    }
    return Status::Ok();
  }
  if (kind == "chain") return ValidateChainName(name).WithContext("scope '" + word + "'");
  if (kind == "set") {
    // The kernel's IPSET_MAXNAMELEN is 32 with the terminating NUL.
    bool printable = !name.empty() && name.size() <= 31;
    for (char c : name) printable = printable && c > ' ' && c < 0x7f;
    if (!printable) return Status::InvalidArgument("scope '" + word + "': a set name is 1..31 printable characters");
    return Status::Ok();
  }
  if (!IsOwnerName(name)) return Status::InvalidArgument("scope '" + word + "': owner must be 1..32 of [a-z0-9-]");
  return Status::Ok();
}

Status ValidateScopes(const Scopes& scopes) {
  for (const std::string& table : scopes.tables) IPTKIT_RETURN_IF_ERROR(ValidateScopeName("table", table));
  for (const std::string& chain : scopes.chains) IPTKIT_RETURN_IF_ERROR(ValidateScopeName("chain", chain));
  for (const std::string& owner : scopes.owners) IPTKIT_RETURN_IF_ERROR(ValidateScopeName("owner", owner));
  for (const std::string& set : scopes.sets) IPTKIT_RETURN_IF_ERROR(ValidateScopeName("set", set));
  if (scopes.max_ttl_seconds.has_value() && *scopes.max_ttl_seconds <= 0) {
    return Status::InvalidArgument("max_ttl_seconds must be positive, got " + std::to_string(*scopes.max_ttl_seconds));
  }
  return Status::Ok();
}

// {"read":bool,"write":bool,"tables":[...],"chains":[...],"owners":[...]} plus "sets":[...] and "max_ttl_seconds"
// when set (tokens stored before set scopes existed have no "sets").
std::string ScopesToJson(const Scopes& scopes) {
  nlohmann::json j = {{"read", scopes.read},
                      {"write", scopes.write},
                      {"tables", scopes.tables},
                      {"chains", scopes.chains},
                      {"owners", scopes.owners}};
  if (!scopes.sets.empty()) j["sets"] = scopes.sets;
  if (scopes.max_ttl_seconds.has_value()) j["max_ttl_seconds"] = *scopes.max_ttl_seconds;
  // Validated names are printable ASCII, so dump cannot meet invalid UTF-8; replace is only a backstop.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<Scopes> ScopesFromJson(const std::string& text) {
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    Scopes scopes;
    scopes.read = j.at("read").get<bool>();
    scopes.write = j.at("write").get<bool>();
    scopes.tables = j.at("tables").get<std::vector<std::string>>();
    scopes.chains = j.at("chains").get<std::vector<std::string>>();
    scopes.owners = j.at("owners").get<std::vector<std::string>>();
    if (j.contains("sets")) scopes.sets = j.at("sets").get<std::vector<std::string>>();
    if (j.contains("max_ttl_seconds")) scopes.max_ttl_seconds = j.at("max_ttl_seconds").get<int64_t>();
    return scopes;
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("stored token scopes are not valid: ") + e.what());
  }
}

// RFC 4648 base32, lower case, without padding (the input is a multiple of 5 bytes).
std::string Base32Lower(const uint8_t* data, size_t size) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  out.reserve((size * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (size_t i = 0; i < size; ++i) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      out += kAlphabet[(buffer >> (bits - 5)) & 0x1f];
      bits -= 5;
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 0x1f];
  return out;
}

Result<std::string> NewSecret() {
  std::array<uint8_t, kSecretRandomBytes> bytes{};
  size_t filled = 0;
  while (filled < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, "getrandom");
    }
    filled += static_cast<size_t>(n);
  }
  return std::string(kSecretPrefix) + Base32Lower(bytes.data(), bytes.size());
}

// ---- Rows ----

Result<ManagedRule> ReadManagedRule(const Statement& st) {
  ManagedRule rule;
  rule.seq = st.ColumnInt64(0);
  rule.owner = st.ColumnText(1);
  std::string family = st.ColumnText(2);
  Result<Family> parsed_family = ParseFamily(family);
  if (!parsed_family.ok()) {
    return Status::Internal("managed rule " + std::to_string(rule.seq) + ": unknown family '" + family + "'");
  }
  rule.family = *parsed_family;
  rule.table = st.ColumnText(3);
  rule.chain = st.ColumnText(4);
  rule.spec = st.ColumnText(5);
  rule.rule_id = st.ColumnText(6);
  IPTKIT_ASSIGN_OR_RETURN(rule.position, ParsePosition(st.ColumnText(7)));
  rule.deadline_ms = st.ColumnOptionalInt64(8);
  rule.created_ms = st.ColumnInt64(9);
  rule.updated_ms = st.ColumnInt64(10);
  return rule;
}

constexpr const char* kConfirmColumns =
    "id, state, deadline_ms, principal, request_id, rollback, created_ms, resolved_ms, message";

Result<ConfirmRecord> ReadConfirm(const Statement& st) {
  ConfirmRecord record;
  record.id = st.ColumnText(0);
  IPTKIT_ASSIGN_OR_RETURN(record.state, ParseConfirmState(st.ColumnText(1)));
  record.deadline_ms = st.ColumnInt64(2);
  record.principal = st.ColumnText(3);
  record.request_id = st.ColumnText(4);
  record.rollback = st.ColumnText(5);
  record.created_ms = st.ColumnInt64(6);
  record.resolved_ms = st.ColumnOptionalInt64(7);
  record.message = st.ColumnText(8);
  return record;
}

constexpr const char* kOwnerColumns = "owner, document, updated_ms";

OwnerRecord ReadOwner(const Statement& st) {
  return OwnerRecord{st.ColumnText(0), st.ColumnOptionalText(1), st.ColumnInt64(2)};
}

constexpr const char* kTokenColumns = "name, scopes, created_ms, revoked_ms";

Result<TokenRecord> ReadToken(const Statement& st) {
  TokenRecord record;
  record.name = st.ColumnText(0);
  Result<Scopes> scopes = ScopesFromJson(st.ColumnText(1));
  if (!scopes.ok()) return scopes.status().WithContext("token '" + record.name + "'");
  record.scopes = std::move(scopes).value();
  record.created_ms = st.ColumnInt64(2);
  record.revoked_ms = st.ColumnOptionalInt64(3);
  return record;
}

std::string Sql(std::initializer_list<std::string_view> parts) {
  std::string sql;
  for (std::string_view part : parts) sql += part;
  return sql;
}

// ---- Opening ----

struct SchemaIdentity {
  int64_t application_id = 0;
  int64_t user_version = 0;
  int64_t schema_objects = 0;
};

// One statement, so one snapshot: a concurrent creator is seen either not at all or complete.
Result<SchemaIdentity> ReadIdentity(SqliteDb& db) {
  IPTKIT_ASSIGN_OR_RETURN(Statement st, db.Prepare("SELECT (SELECT application_id FROM pragma_application_id), "
                                                   "(SELECT user_version FROM pragma_user_version), "
                                                   "(SELECT count(*) FROM sqlite_schema)",
                                                   "read the schema version"));
  IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::Internal("read the schema version: no row");
  return SchemaIdentity{st.ColumnInt64(0), st.ColumnInt64(1), st.ColumnInt64(2)};
}

// OK for a database this build can use (possibly after migrating), or a fresh empty file.
Status CheckIdentity(const SchemaIdentity& id, const std::string& path) {
  bool fresh = id.application_id == 0 && id.user_version == 0 && id.schema_objects == 0;
  if (!fresh && id.application_id != kApplicationId) {
    return Status::FailedPrecondition(
        path + " is not an iptkitd database (application_id " + std::to_string(id.application_id) + ", user_version " +
        std::to_string(id.user_version) + ", " + std::to_string(id.schema_objects) + " schema objects)");
  }
  if (id.user_version > kSchemaVersion) {
    return Status::FailedPrecondition(path + " has schema version " + std::to_string(id.user_version) +
                                      ", newer than this iptkitd supports (" + std::to_string(kSchemaVersion) + ")");
  }
  return Status::Ok();
}

// Creates `path` with mode 0600 when it does not exist, so SQLite (which gives its -wal and -shm files the
// database file's permissions, os_unix.c findCreateFileMode/unixOpenSharedMemory) never creates anything more
// open. A path that exists is never opened here: closing a descriptor of a database file that a connection of
// this process holds would drop that connection's POSIX locks (sqlite.org/howtocorrupt.html §2.2). The mutex
// orders creation before any other Open of this process can see the file.
Status CreateFileIfMissing(const std::string& path) {
  static std::mutex create_mu;
  std::lock_guard<std::mutex> lock(create_mu);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) return Status::FailedPrecondition(path + " is not a regular file");
    return Status::Ok();
  }
  if (errno != ENOENT) return base::ErrnoToStatus(errno, "stat " + path);
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid() && errno != EEXIST) return base::ErrnoToStatus(errno, "create " + path);
  return Status::Ok();
}

Status Pragma(SqliteDb& db, const char* sql) { return db.Exec(sql, sql); }

// `text` cut to at most `limit` bytes, marker included, at a UTF-8 character boundary; nullopt when it fits.
std::optional<std::string> Truncated(const std::string& text, size_t limit) {
  if (text.size() <= limit) return std::nullopt;
  const std::string marker = "\n[truncated by iptkitd: " + std::to_string(text.size()) + " bytes in all]";
  size_t keep = limit > marker.size() ? limit - marker.size() : 0;
  // Back off continuation bytes (10xxxxxx) so that no character is cut in half.
  while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xc0) == 0x80) --keep;
  return text.substr(0, keep) + marker;
}

AuditEntry ReadAudit(const Statement& st) {
  AuditEntry e{st.ColumnInt64(0),
               st.ColumnInt64(1),
               st.ColumnText(2),
               st.ColumnText(3),
               st.ColumnText(4),
               st.ColumnText(5),
               st.ColumnText(6),
               st.ColumnText(7),
               st.ColumnText(8),
               {},
               {},
               {}};
  e.request_original_bytes = st.ColumnOptionalInt64(9);
  e.message_original_bytes = st.ColumnOptionalInt64(10);
  e.diff_original_bytes = st.ColumnOptionalInt64(11);
  return e;
}

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
};

// What became of `path` since it was `id`: "" when it still is.
std::string FileFate(const std::string& path, const FileId& id, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::string(what) + " " + path + " was removed";
    return std::string(what) + " " + path + " cannot be checked: " + std::strerror(errno);
  }
  if (st.st_dev != id.dev || st.st_ino != id.ino) {
    return std::string(what) + " " + path + " was replaced (it is not the one iptkitd opened)";
  }
  return "";
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

// ---- Free functions ----

std::string_view PositionName(Position position) {
  switch (position) {
    case Position::kFirst:
      return "first";
    case Position::kLast:
      return "last";
  }
  return "last";
}

ManagedRuleKey KeyOf(const ManagedRule& rule) {
  return ManagedRuleKey{rule.owner, rule.family, rule.table, rule.chain, rule.spec};
}

std::string_view ConfirmStateName(ConfirmRecord::State state) {
  switch (state) {
    case ConfirmRecord::State::kPending:
      return "pending";
    case ConfirmRecord::State::kConfirmed:
      return "confirmed";
    case ConfirmRecord::State::kRolledBack:
      return "rolled_back";
    case ConfirmRecord::State::kRollbackFailed:
      return "rollback_failed";
  }
  return "pending";
}

Result<Scopes> ParseScopes(const std::vector<std::string>& words) {
  Scopes scopes;
  auto add = [](std::vector<std::string>& list, std::string name) {
    if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(std::move(name));
  };
  for (const std::string& word : words) {
    if (word == "read") {
      scopes.read = true;
      continue;
    }
    if (word == "write") {
      scopes.write = true;
      continue;
    }
    size_t colon = word.find(':');
    std::string kind = word.substr(0, colon);
    if (colon == std::string::npos || (kind != "table" && kind != "chain" && kind != "owner" && kind != "set")) {
      return Status::InvalidArgument("scope '" + word +
                                     "': expected read, write, table:NAME, chain:NAME, owner:NAME or set:NAME");
    }
    std::string name = word.substr(colon + 1);
    IPTKIT_RETURN_IF_ERROR(ValidateScopeName(kind, name));
    add(kind == "table"   ? scopes.tables
        : kind == "chain" ? scopes.chains
        : kind == "owner" ? scopes.owners
                          : scopes.sets,
        std::move(name));
  }
  return scopes;
}

std::vector<std::string> ScopeWords(const Scopes& scopes) {
  std::vector<std::string> words;
  if (scopes.read) words.push_back("read");
  if (scopes.write) words.push_back("write");
  for (const std::string& table : scopes.tables) words.push_back("table:" + table);
  for (const std::string& chain : scopes.chains) words.push_back("chain:" + chain);
  for (const std::string& owner : scopes.owners) words.push_back("owner:" + owner);
  for (const std::string& set : scopes.sets) words.push_back("set:" + set);
  return words;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

// ---- Token generation: the token cache's revocation check ----
//
// `<database>-tokens` holds one 64-bit counter (host byte order) that every token change (CreateToken,
// RevokeToken, in whichever process opened the store: the daemon or an `iptkitd token` command) moves, under
// flock(2): to an odd value before its commit and to the next even value after it. LookupToken keeps the records
// it read in memory, valid only while the counter holds the even value it read before reading them; an odd value
// (a change in progress, or one whose writer died between the two steps) or a file it cannot read or trust means every
// lookup reads the database. So a token revoked by a command that has returned is refused on the next request,
// while the lookups of the requests in between cost one pread(2) and one fstat(2) instead of a database read.

constexpr char kTokenGenerationSuffix[] = "-tokens";

// The counter file, opened (and created with mode 0600) read-write for the writers; invalid when it cannot be
// opened. `*trusted`: whether lookups may cache under it: a regular file of ours without group or other permission
// bits (anyone who could write it could keep a revoked token cached).
base::UniqueFd OpenTokenGeneration(const std::string& db_path, bool* trusted) {
  *trusted = false;
  const std::string path = db_path + kTokenGenerationSuffix;
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return fd;
  struct stat st {};
  *trusted = ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() && (st.st_mode & 077) == 0;
  return fd;
}

// The counter; nullopt when it cannot be read or the file was deleted or replaced since it was opened (the fd's
// inode has no name left). An empty file reads as 0.
std::optional<uint64_t> ReadTokenGeneration(int fd) {
  if (fd < 0) return std::nullopt;
  uint64_t value = 0;
  const ssize_t n = ::pread(fd, &value, sizeof(value), 0);
  if (n != 0 && n != static_cast<ssize_t>(sizeof(value))) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_nlink == 0) return std::nullopt;
  return n == 0 ? 0 : value;
}

// Holds the counter's lock for one token change: Begin makes it odd (before the change is committed), the
// destructor even (after). A change is made only once Begin succeeded; a failed end leaves it odd, which only
// turns the caches off until the next change.
class TokenChange {
 public:
  explicit TokenChange(int fd) : fd_(fd) {}
  ~TokenChange() {
    if (!begun_) return;
    const uint64_t even = odd_ + 1;
    (void)!::pwrite(fd_, &even, sizeof(even), 0);
    ::flock(fd_, LOCK_UN);
  }
  TokenChange(const TokenChange&) = delete;
  TokenChange& operator=(const TokenChange&) = delete;

  Status Begin(const std::string& what) {
    if (fd_ < 0) {
      return Status::Unavailable(what + ": the token generation file (the database's name + \"" +
                                 kTokenGenerationSuffix + "\") cannot be opened, so a running iptkitd would not see " +
                                 "the change");
    }
    if (::flock(fd_, LOCK_EX) != 0) return base::ErrnoToStatus(errno, what + ": lock the token generation file");
    std::optional<uint64_t> now = ReadTokenGeneration(fd_);
    odd_ = now ? (*now | 1) + ((*now & 1) ? 2 : 0) : 1;
    if (::pwrite(fd_, &odd_, sizeof(odd_), 0) != static_cast<ssize_t>(sizeof(odd_))) {
      const int saved = errno;
      ::flock(fd_, LOCK_UN);
      return base::ErrnoToStatus(saved != 0 ? saved : EIO, what + ": write the token generation file");
    }
    begun_ = true;
    return Status::Ok();
  }

 private:
  int fd_;
  bool begun_ = false;
  uint64_t odd_ = 1;
};

// ---- Store ----

struct Store::Impl {
  Impl(SqliteDb connection, SqliteDb read_connection) : db(std::move(connection)), reader(std::move(read_connection)) {}

  std::string path;
  std::string dir;
  StoreOptions options;
  FileId db_id, dir_id;

  // A read-only connection for ScanAudit: from the pool, or a new one.
  Result<SqliteDb> TakeScanner() {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!scanners.empty()) {
        SqliteDb db = std::move(scanners.back());
        scanners.pop_back();
        return db;
      }
    }
    return SqliteDb::Open(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, kBusyTimeoutMs);
  }
  void ReturnScanner(SqliteDb db) {
    std::lock_guard<std::mutex> lock(pool_mu);
    if (scanners.size() < 4) scanners.push_back(std::move(db));
  }

  // Drops the oldest backlog entries beyond the limit. Needs health_mu.
  void TrimBacklog() {
    while (backlog.size() > std::max<size_t>(options.audit_backlog_limit, 1)) {
      backlog.pop_front();
      ++dropped;
    }
  }

  std::mutex pool_mu;
  std::vector<SqliteDb> scanners;  // guarded by pool_mu

  mutable std::mutex health_mu;
  std::string last_write_error;    // guarded by health_mu
  std::deque<AuditEntry> backlog;  // guarded by health_mu
  uint64_t dropped = 0;            // guarded by health_mu
  // Group commit of audit entries (StoreAudit): every entry QueueAudit took has a number; FlushAuditBacklog runs
  // under flush_mu, so a flush that began after an entry was queued has stored it (or failed) when it ends.
  uint64_t queued_seq = 0;    // guarded by health_mu: entries queued so far
  uint64_t stored_seq = 0;    // guarded by health_mu: every entry up to this one is stored
  uint64_t failed_seq = 0;    // guarded by health_mu: the last failed flush carried the entries up to this one
  Status failed_status;       // guarded by health_mu: that flush's error
  bool audit_leader = false;  // guarded by health_mu: a StoreAudit caller is flushing for everyone
  std::condition_variable audit_stored;  // with health_mu: the leader's flush ended
  std::mutex flush_mu;

  // Locks mu. A call from inside Write's fn on the same thread would wait for itself: FailedPrecondition instead.
  Result<std::unique_lock<std::mutex>> Lock(std::string_view method) {
    if (writer.load() == std::this_thread::get_id()) {
      return Status::FailedPrecondition("Store::" + std::string(method) +
                                        " called from inside Store::Write; use the Tx passed to fn");
    }
    return std::unique_lock<std::mutex>(mu);
  }

  std::mutex mu;
  std::atomic<std::thread::id> writer{};  // the thread running Write's fn, if any
  SqliteDb db;                            // guarded by mu
  // A second, read-only connection for the lookups of every HTTP request (tokens): in WAL mode it reads while
  // `db` commits, so authentication never waits for a writer's fsync.
  std::mutex reader_mu;
  SqliteDb reader;  // guarded by reader_mu

  // LookupToken's cache (see "Token generation" above): live tokens by the SHA-256 of their secret, read while the
  // counter was token_cache_generation (even).
  static constexpr size_t kTokenCacheLimit = 1024;
  base::UniqueFd token_generation;   // invalid: token changes are refused
  bool token_cache_allowed = false;  // the file is trusted (OpenTokenGeneration)
  std::shared_mutex token_cache_mu;
  uint64_t token_cache_generation = 1;                       // guarded by token_cache_mu
  std::unordered_map<std::string, TokenRecord> token_cache;  // guarded by token_cache_mu
};

namespace {

class TxImpl final : public Store::Tx {
 public:
  TxImpl(SqliteDb& db, size_t body_limit) : db_(db), body_limit_(body_limit) {}

  Status PutOwner(const std::string& owner, const std::optional<std::string>& document, int64_t now_ms) override {
    IPTKIT_RETURN_IF_ERROR(ValidateOwner(owner));
    // An upsert, not INSERT OR REPLACE: replacing would delete the row and cascade to the owner's managed rules.
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("INSERT INTO owners (owner, document, updated_ms) "
                                                      "VALUES (?1, ?2, ?3) ON CONFLICT (owner) DO UPDATE "
                                                      "SET document = excluded.document, "
                                                      "updated_ms = excluded.updated_ms",
                                                      "put owner"));
    st.Bind(1, owner).Bind(2, document).Bind(3, now_ms);
    return st.Run();
  }

  Status DeleteOwner(const std::string& owner) override {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("DELETE FROM owners WHERE owner = ?1", "delete owner"));
    st.Bind(1, owner);
    IPTKIT_RETURN_IF_ERROR(st.Run());
    if (db_.Changes() == 0) return Status::NotFound("owner '" + owner + "' does not exist");
    return Status::Ok();
  }

  Result<ManagedRule> UpsertManagedRule(const ManagedRule& rule) override {
    IPTKIT_RETURN_IF_ERROR(ValidateKey(KeyOf(rule)));
    IPTKIT_RETURN_IF_ERROR(EnsureOwner(rule.owner, rule.updated_ms));
    IPTKIT_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare("INSERT INTO managed_rules (owner, family, table_name, chain, spec, rule_id, position, "
                    "deadline_ms, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                    "ON CONFLICT (owner, family, table_name, chain, spec) DO UPDATE SET "
                    "rule_id = excluded.rule_id, position = excluded.position, "
                    "deadline_ms = excluded.deadline_ms, updated_ms = excluded.updated_ms "
                    "RETURNING seq, created_ms",
                    "upsert managed rule"));
    BindRule(st, rule);
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Internal("upsert managed rule: no row returned");
    ManagedRule stored = rule;
    stored.seq = st.ColumnInt64(0);
    stored.created_ms = st.ColumnInt64(1);
    IPTKIT_RETURN_IF_ERROR(st.Run());
    return stored;
  }

  Status RestoreManagedRule(const ManagedRule& rule) override {
    IPTKIT_RETURN_IF_ERROR(ValidateKey(KeyOf(rule)));
    IPTKIT_RETURN_IF_ERROR(EnsureOwner(rule.owner, rule.updated_ms));
    IPTKIT_RETURN_IF_ERROR(DeleteByKey(KeyOf(rule)));
    IPTKIT_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare("INSERT INTO managed_rules (owner, family, table_name, chain, spec, rule_id, position, "
                    "deadline_ms, created_ms, updated_ms, seq) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    "restore managed rule"));
    BindRule(st, rule);
    st.Bind(11, rule.seq);
    Status status = st.Run();
    if (status.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("restore managed rule: seq " + std::to_string(rule.seq) +
                                   " belongs to another managed rule");
    }
    return status;
  }

  Status DeleteManagedRule(const ManagedRuleKey& key) override {
    IPTKIT_RETURN_IF_ERROR(DeleteByKey(key));
    if (db_.Changes() == 0) {
      return Status::NotFound("no managed rule of owner '" + key.owner + "' in " + std::string(FamilyName(key.family)) +
                              " " + key.table + "/" + key.chain + ": " + key.spec);
    }
    return Status::Ok();
  }

  Status PutConfirm(const ConfirmRecord& record) override {
    if (record.state != ConfirmRecord::State::kPending || record.resolved_ms.has_value()) {
      return Status::InvalidArgument("confirm '" + record.id + "': a new confirm record must be pending");
    }
    if (record.id.empty()) return Status::InvalidArgument("confirm record without id");
    IPTKIT_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare(Sql({"INSERT INTO confirms (", kConfirmColumns, ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)"}),
                    "put confirm"));
    st.Bind(1, record.id)
        .Bind(2, ConfirmStateName(record.state))
        .Bind(3, record.deadline_ms)
        .Bind(4, record.principal)
        .Bind(5, record.request_id)
        .Bind(6, record.rollback)
        .Bind(7, record.created_ms)
        .Bind(8, record.message);
    Status status = st.Run();
    if (status.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("confirm '" + record.id + "' already exists");
    }
    return status;
  }

  Status ResolveConfirm(const std::string& id, ConfirmRecord::State state, int64_t now_ms,
                        const std::string& message) override {
    if (state == ConfirmRecord::State::kPending) {
      return Status::InvalidArgument("confirm '" + id + "': cannot resolve to pending");
    }
    IPTKIT_ASSIGN_OR_RETURN(Statement update,
                            db_.Prepare("UPDATE confirms SET state = ?2, resolved_ms = ?3, message = ?4 "
                                        "WHERE id = ?1 AND state = 'pending'",
                                        "resolve confirm"));
    update.Bind(1, id).Bind(2, ConfirmStateName(state)).Bind(3, now_ms).Bind(4, message);
    IPTKIT_RETURN_IF_ERROR(update.Run());
    if (db_.Changes() == 1) return Status::Ok();
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("SELECT state FROM confirms WHERE id = ?1", "read confirm"));
    st.Bind(1, id);
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::NotFound("confirm '" + id + "' does not exist");
    return Status::FailedPrecondition("confirm '" + id + "' is no longer pending (" + st.ColumnText(0) + ")");
  }

  Status PutMeta(const std::string& key, const std::string& value) override {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                                      "put meta"));
    st.Bind(1, key).Bind(2, value);
    return st.Run();
  }

  Status DeleteMeta(const std::string& key) override {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("DELETE FROM meta WHERE key = ?1", "delete meta"));
    st.Bind(1, key);
    return st.Run();
  }

  Result<int64_t> AppendAudit(const AuditEntry& entry) override {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare(Sql({AuditInsertSql(1), " RETURNING id"}), "append audit entry"));
    BindAudit(st, 0, entry);
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Internal("append audit entry: no id returned");
    int64_t id = st.ColumnInt64(0);
    IPTKIT_RETURN_IF_ERROR(st.Run());
    return id;
  }

  // The entries of a group commit (FlushAuditBacklog), in order, up to 32 in one INSERT: each statement of a
  // transaction that changes a table with AUTOINCREMENT opens and releases a statement journal, and one statement
  // per entry was most of the CPU of storing them (64 clients adding set entries).
  Status AppendAudits(const std::deque<AuditEntry>& entries) {
    size_t i = 0;
    while (i < entries.size()) {
      const size_t left = entries.size() - i;
      const int rows = left >= 32 ? 32 : left >= 8 ? 8 : 1;
      IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare(AuditInsertSql(rows), "append audit entries"));
      for (int r = 0; r < rows; ++r) BindAudit(st, r * kAuditColumns, entries[i + static_cast<size_t>(r)]);
      IPTKIT_RETURN_IF_ERROR(st.Run());
      i += static_cast<size_t>(rows);
    }
    return Status::Ok();
  }

 private:
  static constexpr int kAuditColumns = 12;

  // INSERT INTO audit of `rows` rows (1, 8 or 32), without RETURNING.
  static const std::string& AuditInsertSql(int rows) {
    static const std::array<std::string, 3> sql = [] {
      std::array<std::string, 3> out;
      const int sizes[3] = {1, 8, 32};
      for (int k = 0; k < 3; ++k) {
        out[k] =
            "INSERT INTO audit (time_ms, principal, request_id, action, request, result, message, diff, "
            "request_bytes, message_bytes, diff_bytes, bytes) VALUES ";
        for (int r = 0; r < sizes[k]; ++r) {
          out[k] += r == 0 ? "(" : ", (";
          for (int c = 1; c <= kAuditColumns; ++c) {
            out[k] += "?" + std::to_string(r * kAuditColumns + c) + (c < kAuditColumns ? ", " : ")");
          }
        }
      }
      return out;
    }();
    return sql[rows == 1 ? 0 : rows == 8 ? 1 : 2];
  }

  // Binds one entry's 12 columns to parameters offset+1 .. offset+12; each long text cut, with its original size.
  void BindAudit(Statement& st, int offset, const AuditEntry& entry) const {
    std::string texts[3] = {entry.request, entry.message, entry.diff};
    std::optional<int64_t> original[3];
    for (int i = 0; i < 3; ++i) {
      if (std::optional<std::string> cut = Truncated(texts[i], body_limit_)) {
        original[i] = static_cast<int64_t>(texts[i].size());
        texts[i] = *std::move(cut);
      }
    }
    const int64_t bytes =
        kAuditEntryOverhead +
        static_cast<int64_t>(entry.principal.size() + entry.request_id.size() + entry.action.size() +
                             entry.result.size() + texts[0].size() + texts[1].size() + texts[2].size());
    st.Bind(offset + 1, entry.time_ms)
        .Bind(offset + 2, entry.principal)
        .Bind(offset + 3, entry.request_id)
        .Bind(offset + 4, entry.action)
        .Bind(offset + 5, texts[0])
        .Bind(offset + 6, entry.result)
        .Bind(offset + 7, texts[1])
        .Bind(offset + 8, texts[2])
        .Bind(offset + 9, original[0])
        .Bind(offset + 10, original[1])
        .Bind(offset + 11, original[2])
        .Bind(offset + 12, bytes);
  }

  Status EnsureOwner(const std::string& owner, int64_t now_ms) {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("INSERT INTO owners (owner, document, updated_ms) "
                                                      "VALUES (?1, NULL, ?2) ON CONFLICT (owner) DO NOTHING",
                                                      "create owner of managed rule"));
    st.Bind(1, owner).Bind(2, now_ms);
    return st.Run();
  }

  Status DeleteByKey(const ManagedRuleKey& key) {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db_.Prepare("DELETE FROM managed_rules WHERE owner = ?1 AND family = ?2 "
                                                      "AND table_name = ?3 AND chain = ?4 AND spec = ?5",
                                                      "delete managed rule"));
    st.Bind(1, key.owner).Bind(2, FamilyName(key.family)).Bind(3, key.table).Bind(4, key.chain).Bind(5, key.spec);
    return st.Run();
  }

  // ?1..?10 in the column order of the INSERTs above.
  static void BindRule(Statement& st, const ManagedRule& rule) {
    st.Bind(1, rule.owner)
        .Bind(2, FamilyName(rule.family))
        .Bind(3, rule.table)
        .Bind(4, rule.chain)
        .Bind(5, rule.spec)
        .Bind(6, rule.rule_id)
        .Bind(7, PositionName(rule.position))
        .Bind(8, rule.deadline_ms)
        .Bind(9, rule.created_ms)
        .Bind(10, rule.updated_ms);
  }

  SqliteDb& db_;
  size_t body_limit_;
};

// Marks the calling thread as the one inside Write for the lifetime of the scope.
class WriterScope {
 public:
  explicit WriterScope(std::atomic<std::thread::id>& writer) : writer_(writer) {
    writer_.store(std::this_thread::get_id());
  }
  ~WriterScope() { writer_.store(std::thread::id()); }
  WriterScope(const WriterScope&) = delete;
  WriterScope& operator=(const WriterScope&) = delete;

 private:
  std::atomic<std::thread::id>& writer_;
};

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const std::string& path, StoreOptions options) {
  if (options.audit_body_bytes < 256) {
    return Status::InvalidArgument("audit_body_bytes must be at least 256, got " +
                                   std::to_string(options.audit_body_bytes));
  }
  IPTKIT_RETURN_IF_ERROR(CreateFileIfMissing(path));
  // No SQLITE_OPEN_CREATE: the file exists now with the right mode. NOMUTEX: the Store's mutex serializes use.
  IPTKIT_ASSIGN_OR_RETURN(
      SqliteDb db,
      SqliteDb::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, kBusyTimeoutMs));
  // Checked before anything is written, so a foreign file is left exactly as it was (not even switched to WAL).
  Result<SchemaIdentity> identity = ReadIdentity(db);
  if (!identity.ok()) return identity.status().WithContext("open " + path);
  IPTKIT_RETURN_IF_ERROR(CheckIdentity(*identity, path));

  IPTKIT_ASSIGN_OR_RETURN(Statement wal, db.Prepare("PRAGMA journal_mode = WAL", "PRAGMA journal_mode = WAL"));
  IPTKIT_ASSIGN_OR_RETURN(bool row, wal.Step());
  std::string mode = row ? wal.ColumnText(0) : "";
  if (mode != "wal") {
    return Status::FailedPrecondition("open " + path + ": cannot use WAL journal mode (got '" + mode + "')");
  }
  wal = Statement();
  IPTKIT_RETURN_IF_ERROR(Pragma(db, "PRAGMA synchronous = FULL"));
  IPTKIT_RETURN_IF_ERROR(Pragma(db, "PRAGMA foreign_keys = ON"));

  {
    IPTKIT_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::BeginImmediate(db, "migrate schema"));
    // Again under the write lock: another process may have created or migrated the schema meanwhile.
    IPTKIT_ASSIGN_OR_RETURN(SchemaIdentity locked, ReadIdentity(db));
    IPTKIT_RETURN_IF_ERROR(CheckIdentity(locked, path));
    for (int64_t version = locked.user_version; version < kSchemaVersion; ++version) {
      IPTKIT_RETURN_IF_ERROR(db.Exec(kMigrations[version], "migrate schema to version " + std::to_string(version + 1)));
    }
    IPTKIT_RETURN_IF_ERROR(txn.Commit());
  }
  IPTKIT_ASSIGN_OR_RETURN(
      SqliteDb reader,
      SqliteDb::Open(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, kBusyTimeoutMs));
  auto impl = std::make_unique<Impl>(std::move(db), std::move(reader));
  impl->path = path;
  impl->dir = DirName(path);
  impl->options = options;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoToStatus(errno, "stat " + path);
  impl->db_id = {st.st_dev, st.st_ino};
  impl->token_generation = OpenTokenGeneration(path, &impl->token_cache_allowed);
  if (::stat(impl->dir.c_str(), &st) != 0) return base::ErrnoToStatus(errno, "stat " + impl->dir);
  impl->dir_id = {st.st_dev, st.st_ino};
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() = default;

Status Store::CheckFiles() const {
  std::string fate = FileFate(impl_->dir, impl_->dir_id, "the state directory");
  if (fate.empty()) fate = FileFate(impl_->path, impl_->db_id, "the database");
  if (fate.empty()) return Status::Ok();
  return Status::Unavailable(fate +
                             " while iptkitd runs: changes cannot be stored; restart iptkitd on a state directory "
                             "it can keep (the owned state and tokens it knew are in the old files only)");
}

StoreHealth Store::Health() const {
  StoreHealth h;
  Status files = CheckFiles();
  h.files_ok = files.ok();
  std::lock_guard<std::mutex> lock(impl_->health_mu);
  h.last_write_error = impl_->last_write_error;
  h.audit_backlog = impl_->backlog.size();
  h.audit_dropped = impl_->dropped;
  if (!files.ok()) {
    h.problem = files.message();
  } else if (!h.last_write_error.empty()) {
    h.problem = "the last write to " + impl_->path + " failed: " + h.last_write_error;
  }
  return h;
}

void Store::QueueAudit(AuditEntry entry) {
  std::lock_guard<std::mutex> lock(impl_->health_mu);
  impl_->backlog.push_back(std::move(entry));
  ++impl_->queued_seq;
  impl_->TrimBacklog();
}

Status Store::StoreAudit(AuditEntry entry) {
  std::unique_lock<std::mutex> lock(impl_->health_mu);
  impl_->backlog.push_back(std::move(entry));
  const uint64_t mine = ++impl_->queued_seq;
  impl_->TrimBacklog();
  for (;;) {
    if (impl_->stored_seq >= mine) return Status::Ok();
    if (impl_->failed_seq >= mine) return impl_->failed_status;
    if (impl_->audit_leader) {
      // The running flush may have taken this entry; if not, the next leader takes it.
      impl_->audit_stored.wait(lock);
      continue;
    }
    // Leader: stores every entry queued by now (this one included) in one transaction; the callers that queue
    // meanwhile wait and find theirs stored by this flush or the next.
    impl_->audit_leader = true;
    lock.unlock();
    Status flushed = FlushAuditBacklog();
    lock.lock();
    impl_->audit_leader = false;
    impl_->audit_stored.notify_all();
    if (!flushed.ok() && impl_->failed_seq < mine) return flushed;  // refused before writing (FailedPrecondition)
  }
}

Status Store::FlushAuditBacklog() {
  if (impl_->writer.load() == std::this_thread::get_id()) {
    return Status::FailedPrecondition("Store::FlushAuditBacklog called from inside Store::Write");
  }
  std::lock_guard<std::mutex> flushing(impl_->flush_mu);
  std::deque<AuditEntry> pending;
  uint64_t through = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->health_mu);
    pending.swap(impl_->backlog);
    through = impl_->queued_seq;
  }
  Status s = Status::Ok();
  if (!pending.empty()) {
    // WriteNow's Tx is a TxImpl (it makes it itself).
    s = WriteNow([&](Tx& tx) -> Status { return static_cast<TxImpl&>(tx).AppendAudits(pending); });
  }
  std::lock_guard<std::mutex> lock(impl_->health_mu);
  if (s.ok()) {
    impl_->stored_seq = through;
  } else {
    // Back in front of whatever was queued meanwhile, in order.
    for (auto it = pending.rbegin(); it != pending.rend(); ++it) impl_->backlog.push_front(std::move(*it));
    impl_->TrimBacklog();
    impl_->failed_seq = through;
    impl_->failed_status = s;
  }
  return s;
}

Status Store::Write(const std::function<Status(Tx&)>& fn) {
  bool backlog = false;
  {
    std::lock_guard<std::mutex> lock(impl_->health_mu);
    backlog = !impl_->backlog.empty();
  }
  // (From inside fn, WriteNow's Lock refuses below; the backlog waits for the next Write.)
  if (backlog && impl_->writer.load() != std::this_thread::get_id()) (void)FlushAuditBacklog();
  return WriteNow(fn);
}

Status Store::WriteNow(const std::function<Status(Tx&)>& fn) {
  IPTKIT_RETURN_IF_ERROR(CheckFiles());
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("Write"));
  // Errors of SQLite itself (not fn's own) are what Health reports as the last write error.
  auto note = [&](Status s) {
    std::lock_guard<std::mutex> health(impl_->health_mu);
    impl_->last_write_error = s.ok() ? "" : s.message();
    return s;
  };
  Result<SqliteTransaction> txn = SqliteTransaction::BeginImmediate(impl_->db, "write");
  if (!txn.ok()) return note(txn.status());
  WriterScope writer(impl_->writer);
  TxImpl tx(impl_->db, impl_->options.audit_body_bytes);
  Status status = fn(tx);
  if (!status.ok()) {
    txn->Rollback();
    // A statement that failed for the disk (full, read-only, I/O) is the store's problem, not the caller's.
    if (status.code() == StatusCode::kUnavailable) return note(status);
    return status;
  }
  return note(txn->Commit());
}

Result<std::vector<OwnerRecord>> Store::ListOwners() {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("ListOwners"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st, impl_->db.Prepare(Sql({"SELECT ", kOwnerColumns, " FROM owners ORDER BY owner"}), "list owners"));
  std::vector<OwnerRecord> owners;
  while (true) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return owners;
    owners.push_back(ReadOwner(st));
  }
}

Result<std::optional<OwnerRecord>> Store::GetOwner(const std::string& owner) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("GetOwner"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st, impl_->db.Prepare(Sql({"SELECT ", kOwnerColumns, " FROM owners WHERE owner = ?1"}), "get owner"));
  st.Bind(1, owner);
  IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<OwnerRecord>();
  return std::optional<OwnerRecord>(ReadOwner(st));
}

Result<std::vector<ManagedRule>> Store::ListManagedRules() {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("ListManagedRules"));
  IPTKIT_ASSIGN_OR_RETURN(Statement st,
                          impl_->db.Prepare(Sql({"SELECT ", kManagedRuleColumns, " FROM managed_rules ORDER BY seq"}),
                                            "list managed rules"));
  std::vector<ManagedRule> rules;
  while (true) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return rules;
    IPTKIT_ASSIGN_OR_RETURN(ManagedRule rule, ReadManagedRule(st));
    rules.push_back(std::move(rule));
  }
}

Result<std::vector<ConfirmRecord>> Store::ListConfirms(bool pending_only) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("ListConfirms"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st, impl_->db.Prepare(Sql({"SELECT ", kConfirmColumns,
                                           " FROM confirms WHERE ?1 = 0 OR state = 'pending' ORDER BY created_ms, id"}),
                                      "list confirms"));
  st.Bind(1, int64_t{pending_only ? 1 : 0});
  std::vector<ConfirmRecord> records;
  while (true) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return records;
    IPTKIT_ASSIGN_OR_RETURN(ConfirmRecord record, ReadConfirm(st));
    records.push_back(std::move(record));
  }
}

Result<std::optional<ConfirmRecord>> Store::GetConfirm(const std::string& id) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("GetConfirm"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st,
      impl_->db.Prepare(Sql({"SELECT ", kConfirmColumns, " FROM confirms WHERE id = ?1"}), "get confirm"));
  st.Bind(1, id);
  IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<ConfirmRecord>();
  IPTKIT_ASSIGN_OR_RETURN(ConfirmRecord record, ReadConfirm(st));
  return std::optional<ConfirmRecord>(std::move(record));
}

Result<AuditPage> Store::QueryAudit(const AuditQuery& query) {
  AuditPage page;
  IPTKIT_ASSIGN_OR_RETURN(page.next_before, ScanAudit(query, [&](const AuditEntry& e) {
                            page.entries.push_back(e);
                            return ScanStep::kTake;
                          }));
  return page;
}

Result<std::optional<int64_t>> Store::ScanAudit(const AuditQuery& query,
                                                const std::function<ScanStep(const AuditEntry&)>& visit) {
  if (query.limit < 1 || query.limit > kMaxAuditLimit) {
    return Status::InvalidArgument("audit limit must be 1.." + std::to_string(kMaxAuditLimit) + ", got " +
                                   std::to_string(query.limit));
  }
  // The SQL text is put together from constant fragments only; every value is a bound parameter.
  std::string sql = Sql({"SELECT ", kAuditColumns, " FROM audit WHERE 1"});
  if (!query.principal.empty()) sql += " AND principal = ?1";
  if (!query.action.empty()) sql += " AND action = ?2";
  if (query.result == "error") {
    sql += " AND result <> ?3";
  } else if (!query.result.empty()) {
    bool known = query.result == "ok";
    for (int code = static_cast<int>(StatusCode::kInvalidArgument); code <= static_cast<int>(StatusCode::kInternal);
         ++code) {
      known = known || StatusCodeName(static_cast<StatusCode>(code)) == query.result;
    }
    if (!known) {
      return Status::InvalidArgument("audit result filter '" + query.result +
                                     "': expected ok, error or a status code name such as INVALID_ARGUMENT");
    }
    sql += " AND result = ?3";
  }
  if (!query.request_id.empty()) sql += " AND request_id = ?4";
  if (query.since_ms.has_value()) sql += " AND time_ms >= ?5";
  if (query.until_ms.has_value()) sql += " AND time_ms < ?6";
  if (query.before_id.has_value()) sql += " AND id < ?7";
  sql += " ORDER BY id DESC LIMIT ?8";

  IPTKIT_ASSIGN_OR_RETURN(SqliteDb db, impl_->TakeScanner());
  std::optional<int64_t> next;
  {
    IPTKIT_ASSIGN_OR_RETURN(Statement st, db.Prepare(sql, "query audit log"));
    // ?8 is always present, so ?1..?7 exist as parameters even when their condition was left out.
    st.Bind(1, query.principal)
        .Bind(2, query.action)
        .Bind(3, query.result == "error" ? std::string("ok") : query.result)
        .Bind(4, query.request_id)
        .Bind(5, query.since_ms)
        .Bind(6, query.until_ms)
        .Bind(7, query.before_id)
        .Bind(8, int64_t{query.limit} + 1);  // one more row tells whether there is a next page
    int taken = 0;
    std::optional<int64_t> last;
    while (true) {
      IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      if (taken == query.limit) {
        next = last;
        break;
      }
      if (visit(ReadAudit(st)) == ScanStep::kStop) {
        next = last;
        // A visitor that takes nothing would page forever: the caller's problem, but never a cursor that repeats.
        if (!last && query.before_id) next = query.before_id;
        break;
      }
      last = st.ColumnInt64(0);
      ++taken;
    }
  }
  impl_->ReturnScanner(std::move(db));
  return next;
}

Result<PruneResult> Store::PruneAudit(const AuditRetention& retention, int64_t now_ms) {
  PruneResult out;
  // Deletes chunk by chunk (each its own transaction) the rows `select` names; returns how many went.
  auto delete_chunks = [&](const char* select, int64_t bound) -> Result<int64_t> {
    int64_t removed = 0;
    for (;;) {
      int64_t changes = 0;
      IPTKIT_RETURN_IF_ERROR(WriteNow([&](Tx&) -> Status {
        IPTKIT_ASSIGN_OR_RETURN(
            Statement st,
            impl_->db.Prepare(Sql({"DELETE FROM audit WHERE id IN (", select, " LIMIT ?2)"}), "prune audit"));
        st.Bind(1, bound).Bind(2, kPruneChunk);
        IPTKIT_RETURN_IF_ERROR(st.Run());
        changes = impl_->db.Changes();
        return Status::Ok();
      }));
      removed += changes;
      if (changes < kPruneChunk) return removed;
    }
  };
  const int64_t cutoff = now_ms - retention.max_age_ms;
  IPTKIT_ASSIGN_OR_RETURN(out.removed_by_age,
                          delete_chunks("SELECT id FROM audit WHERE time_ms < ?1 ORDER BY id", cutoff));

  // The size: the sum over the covering index, then the id up to which the oldest entries must go.
  auto totals = [&]() -> Result<std::pair<int64_t, int64_t>> {
    IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("PruneAudit"));
    IPTKIT_ASSIGN_OR_RETURN(
        Statement st,
        impl_->db.Prepare("SELECT count(*), coalesce(sum(bytes), 0) FROM audit INDEXED BY audit_by_id_bytes",
                          "size of the audit log"));
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Internal("size of the audit log: no row");
    return std::make_pair(st.ColumnInt64(0), st.ColumnInt64(1));
  };
  IPTKIT_ASSIGN_OR_RETURN(auto before, totals());
  if (before.second > retention.max_bytes) {
    int64_t excess = before.second - retention.max_bytes;
    int64_t upto = 0;
    {
      IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("PruneAudit"));
      IPTKIT_ASSIGN_OR_RETURN(Statement st,
                              impl_->db.Prepare("SELECT id, bytes FROM audit INDEXED BY audit_by_id_bytes ORDER BY id",
                                                "oldest audit entries"));
      while (excess > 0) {
        IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        upto = st.ColumnInt64(0);
        excess -= st.ColumnInt64(1);
      }
    }
    IPTKIT_ASSIGN_OR_RETURN(out.removed_by_size,
                            delete_chunks("SELECT id FROM audit WHERE id <= ?1 ORDER BY id", upto));
  }
  IPTKIT_ASSIGN_OR_RETURN(auto after, totals());
  out.remaining_entries = after.first;
  out.remaining_bytes = after.second;
  return out;
}

Result<std::string> Store::CreateToken(const std::string& name, const Scopes& scopes, int64_t now_ms) {
  if (!IsTokenName(name)) {
    return Status::InvalidArgument("token name '" + name + "': must be 1..64 characters of [A-Za-z0-9._-]");
  }
  IPTKIT_RETURN_IF_ERROR(ValidateScopes(scopes).WithContext("token '" + name + "'"));
  IPTKIT_ASSIGN_OR_RETURN(std::string secret, NewSecret());
  std::string hash = Sha256Hex(secret);
  if (hash.size() != 64) return Status::Internal("token '" + name + "': SHA-256 failed (OpenSSL)");

  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("CreateToken"));
  TokenChange change(impl_->token_generation.get());
  IPTKIT_RETURN_IF_ERROR(change.Begin("create token '" + name + "'"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st,
      impl_->db.Prepare("INSERT INTO tokens (name, hash, scopes, created_ms) VALUES (?1, ?2, ?3, ?4)", "create token"));
  st.Bind(1, name).Bind(2, hash).Bind(3, ScopesToJson(scopes)).Bind(4, now_ms);
  Status status = st.Run();
  // A hash collision of two 200-bit secrets is not a case to design for: a conflict is the name.
  if (status.code() == StatusCode::kAlreadyExists) return Status::AlreadyExists("token '" + name + "' already exists");
  IPTKIT_RETURN_IF_ERROR(status);
  return secret;
}

Result<std::vector<TokenRecord>> Store::ListTokens() {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("ListTokens"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st, impl_->db.Prepare(Sql({"SELECT ", kTokenColumns, " FROM tokens ORDER BY name"}), "list tokens"));
  std::vector<TokenRecord> tokens;
  while (true) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return tokens;
    IPTKIT_ASSIGN_OR_RETURN(TokenRecord token, ReadToken(st));
    tokens.push_back(std::move(token));
  }
}

Status Store::RevokeToken(const std::string& name, int64_t now_ms) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("RevokeToken"));
  TokenChange change(impl_->token_generation.get());
  IPTKIT_RETURN_IF_ERROR(change.Begin("revoke token '" + name + "'"));
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st,
      impl_->db.Prepare("UPDATE tokens SET revoked_ms = coalesce(revoked_ms, ?2) WHERE name = ?1", "revoke token"));
  st.Bind(1, name).Bind(2, now_ms);
  IPTKIT_RETURN_IF_ERROR(st.Run());
  if (impl_->db.Changes() == 0) return Status::NotFound("token '" + name + "' does not exist");
  return Status::Ok();
}

Result<std::optional<TokenRecord>> Store::LookupToken(std::string_view secret) {
  std::string hash = Sha256Hex(secret);
  // Read before the database: a change committed after this read moves the counter past it, so what the database
  // gives below is cached only under a counter value that no later change leaves in place.
  const std::optional<uint64_t> read =
      impl_->token_cache_allowed ? ReadTokenGeneration(impl_->token_generation.get()) : std::nullopt;
  const bool cacheable = read && (*read & 1) == 0;
  const uint64_t generation = read.value_or(1);
  if (cacheable) {
    std::shared_lock<std::shared_mutex> cache(impl_->token_cache_mu);
    if (impl_->token_cache_generation == generation) {
      if (auto it = impl_->token_cache.find(hash); it != impl_->token_cache.end()) {
        return std::optional<TokenRecord>(it->second);
      }
    }
  }
  std::optional<TokenRecord> found;
  {
    std::lock_guard<std::mutex> lock(impl_->reader_mu);
    IPTKIT_ASSIGN_OR_RETURN(
        Statement st,
        impl_->reader.Prepare(Sql({"SELECT ", kTokenColumns, " FROM tokens WHERE hash = ?1 AND revoked_ms IS NULL"}),
                              "look up token"));
    st.Bind(1, hash);
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return found;  // unknown secrets are not cached: a client could fill the cache with them
    IPTKIT_ASSIGN_OR_RETURN(TokenRecord token, ReadToken(st));
    found = std::move(token);
  }
  if (cacheable) {
    std::unique_lock<std::shared_mutex> cache(impl_->token_cache_mu);
    // The counter only grows (a smaller value is a replaced file, which ReadTokenGeneration refuses): a lookup that
    // read an older value than the cache's caches nothing.
    if (generation > impl_->token_cache_generation || impl_->token_cache_generation == 1) {
      impl_->token_cache.clear();
      impl_->token_cache_generation = generation;
    }
    if (impl_->token_cache_generation == generation) {
      if (impl_->token_cache.size() >= Impl::kTokenCacheLimit) impl_->token_cache.clear();
      impl_->token_cache.insert_or_assign(hash, *found);
    }
  }
  return found;
}

Result<std::optional<std::string>> Store::GetMeta(const std::string& key) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("GetMeta"));
  IPTKIT_ASSIGN_OR_RETURN(Statement st, impl_->db.Prepare("SELECT value FROM meta WHERE key = ?1", "get meta"));
  st.Bind(1, key);
  IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(st.ColumnText(0));
}

Status Store::PutMeta(const std::string& key, const std::string& value) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("PutMeta"));
  IPTKIT_ASSIGN_OR_RETURN(Statement st, impl_->db.Prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                                          "put meta"));
  st.Bind(1, key).Bind(2, value);
  return st.Run();
}

Result<std::vector<std::pair<std::string, std::string>>> Store::ListMeta(const std::string& prefix) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_lock<std::mutex> lock, impl_->Lock("ListMeta"));
  // Not LIKE: a prefix may hold "%" or "_". substr of a BLOB counts bytes.
  IPTKIT_ASSIGN_OR_RETURN(
      Statement st,
      impl_->db.Prepare("SELECT key, value FROM meta WHERE substr(CAST(key AS BLOB), 1, ?2) = CAST(?1 AS BLOB) "
                        "ORDER BY key",
                        "list meta"));
  st.Bind(1, prefix).Bind(2, static_cast<int64_t>(prefix.size()));
  std::vector<std::pair<std::string, std::string>> out;
  for (;;) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.emplace_back(st.ColumnText(0), st.ColumnText(1));
  }
  return out;
}

}  // namespace iptkit::store
