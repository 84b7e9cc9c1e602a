// SqliteDb, Statement, SqliteTransaction: move-only RAII owners of a SQLite connection, a prepared statement and
// an open transaction (SQLite C API), and the one place where a SQLite result code becomes a Status.
//
// Codes: SQLITE_BUSY/SQLITE_LOCKED (after the connection's busy timeout), and the disk's or file's failures
// (SQLITE_FULL, SQLITE_READONLY*, SQLITE_IOERR*, SQLITE_CANTOPEN) → Unavailable; a UNIQUE or PRIMARY KEY
// constraint → AlreadyExists; SQLITE_NOTADB → FailedPrecondition; anything else → Internal. Messages are
// "<purpose>: <sqlite3_errmsg> (<sqlite3_errstr>)", so they name what the statement was for.
// Only bound parameters carry values; SQL text is always a constant (or concatenated constants).
// Thread-safety: none. A SqliteDb and its statements are used by one thread at a time (the Store's mutex).
// Prepared statements are reused: a Statement that ends is reset and kept by its connection for the next Prepare
// of the same SQL text (preparing costs more than running the small statements of a request).
//
//   IPTKIT_ASSIGN_OR_RETURN(Statement st, db.Prepare("SELECT value FROM meta WHERE key = ?1", "read meta"));
//   st.Bind(1, key);
//   IPTKIT_ASSIGN_OR_RETURN(bool row, st.Step());
//   if (row) value = st.ColumnText(0);
#ifndef IPTKIT_SRC_STORE_SQLITE_DB_H_
#define IPTKIT_SRC_STORE_SQLITE_DB_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace iptkit::store {

// The Status for result code `rc` of an operation on `db` (which may be null when opening failed).
Status SqliteStatus(sqlite3* db, int rc, std::string_view purpose);

// The statements a connection keeps for reuse, by SQL text. Shared by the connection and its statements, so that a
// statement that outlives its connection finalizes itself.
struct StatementCache {
  std::mutex mu;
  bool closed = false;  // the connection is gone: statements finalize themselves
  std::map<std::string, std::vector<sqlite3_stmt*>, std::less<>> free;
};

// One prepared statement. Bind errors are remembered and returned by the next Step/Run.
class Statement {
 public:
  Statement() noexcept = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() noexcept;  // reset and returned to its connection's cache (or sqlite3_finalize)

  // Parameters are 1-based (?1, ?2, ...). Text is copied (SQLITE_TRANSIENT).
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::string_view value);
  Statement& Bind(int index, const std::string& value) { return Bind(index, std::string_view(value)); }
  Statement& Bind(int index, const char* value) { return Bind(index, std::string_view(value)); }
  Statement& Bind(int index, const std::optional<int64_t>& value);      // nullopt → NULL
  Statement& Bind(int index, const std::optional<std::string>& value);  // nullopt → NULL
  Statement& BindNull(int index);

  // true: a row is available through the Column* accessors; false: the statement is done.
  Result<bool> Step();
  // Steps until done, ignoring rows (INSERT/UPDATE/DELETE, pragmas that return a row).
  Status Run();

  int64_t ColumnInt64(int column) const;
  std::string ColumnText(int column) const;  // "" for NULL
  bool ColumnIsNull(int column) const;
  std::optional<int64_t> ColumnOptionalInt64(int column) const;
  std::optional<std::string> ColumnOptionalText(int column) const;

 private:
  friend class SqliteDb;
  Statement(sqlite3* db, sqlite3_stmt* stmt, std::string purpose, std::shared_ptr<StatementCache> cache,
            std::string sql) noexcept
      : db_(db), stmt_(stmt), purpose_(std::move(purpose)), cache_(std::move(cache)), sql_(std::move(sql)) {}
  void NoteBind(int rc, int index);
  void Release() noexcept;  // returns stmt_ to the cache (or finalizes it)

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  std::string purpose_;
  std::shared_ptr<StatementCache> cache_;  // null: finalized when done
  std::string sql_;                        // its key in the cache
  Status bind_status_;
};

// One connection.
class SqliteDb {
 public:
  // sqlite3_open_v2(path, flags). The connection gets extended result codes and `busy_timeout_ms`.
  static Result<SqliteDb> Open(const std::string& path, int flags, int busy_timeout_ms);

  SqliteDb() noexcept = default;
  SqliteDb(SqliteDb&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), cache_(std::exchange(other.cache_, nullptr)) {}
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb() noexcept;  // finalizes the cached statements, sqlite3_close_v2; statements in use keep the
                         // connection alive until they end

  sqlite3* get() const noexcept { return db_; }

  // Prepares exactly one statement; trailing SQL is refused (Internal).
  Result<Statement> Prepare(std::string_view sql, std::string_view purpose);
  // Runs constant SQL that takes no parameters (may be several statements: schema creation).
  Status Exec(const char* sql, std::string_view purpose);
  // Rows changed by the most recent INSERT/UPDATE/DELETE on this connection.
  int64_t Changes() const;
  // Whether the connection is outside any transaction (SQLite rolls back on its own after some errors).
  bool InAutocommit() const;

 private:
  explicit SqliteDb(sqlite3* db) : db_(db), cache_(std::make_shared<StatementCache>()) {}
  void Close() noexcept;
  sqlite3* db_ = nullptr;
  std::shared_ptr<StatementCache> cache_;
};

// BEGIN IMMEDIATE ... COMMIT; the destructor rolls back a transaction that was not committed (also when the
// code between throws).
class SqliteTransaction {
 public:
  // BEGIN IMMEDIATE takes the write lock at once, so a busy database is waited for here (busy timeout) and never
  // turns into SQLITE_BUSY_SNAPSHOT halfway through.
  static Result<SqliteTransaction> BeginImmediate(SqliteDb& db, std::string_view purpose);

  SqliteTransaction(SqliteTransaction&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), purpose_(std::move(other.purpose_)) {}
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction() noexcept { Rollback(); }

  // On failure the transaction is rolled back (nothing written) and the error returned.
  Status Commit();
  // Idempotent; a no-op after Commit.
  void Rollback() noexcept;

 private:
  SqliteTransaction(SqliteDb* db, std::string purpose) : db_(db), purpose_(std::move(purpose)) {}
  SqliteDb* db_;
  std::string purpose_;
};

}  // namespace iptkit::store

#endif  // IPTKIT_SRC_STORE_SQLITE_DB_H_
