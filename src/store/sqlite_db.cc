#include "src/store/sqlite_db.h"

#include <sqlite3.h>

namespace iptkit::store {

Status SqliteStatus(sqlite3* db, int rc, std::string_view purpose) {
  std::string message(purpose);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  message += " (";
  message += sqlite3_errstr(rc);
  message += ")";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    // The disk or the file, not the request: full, read-only (also a database file removed underneath), failing.
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return Status::Unavailable(std::move(message));
    case SQLITE_NOTADB:
      return Status::FailedPrecondition(std::move(message));
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Status::AlreadyExists(std::move(message));
      }
      return Status::Internal(std::move(message));
    default:
      return Status::Internal(std::move(message));
  }
}

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      purpose_(std::move(other.purpose_)),
      cache_(std::move(other.cache_)),
      sql_(std::move(other.sql_)),
      bind_status_(std::move(other.bind_status_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    Release();
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    purpose_ = std::move(other.purpose_);
    cache_ = std::move(other.cache_);
    sql_ = std::move(other.sql_);
    bind_status_ = std::move(other.bind_status_);
  }
  return *this;
}

Statement::~Statement() noexcept { Release(); }

void Statement::Release() noexcept {
  sqlite3_stmt* stmt = std::exchange(stmt_, nullptr);
  if (stmt == nullptr) return;
  std::shared_ptr<StatementCache> cache = std::move(cache_);
  cache_ = nullptr;
  if (cache != nullptr) {
    // Reset ends the statement's implicit read transaction (as finalizing would), so the connection does not keep
    // an old snapshot; the bindings go too (a text parameter may be large).
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    try {
      std::lock_guard<std::mutex> lock(cache->mu);
      if (!cache->closed) {
        auto it = cache->free.find(sql_);
        if (it == cache->free.end()) it = cache->free.emplace(std::move(sql_), std::vector<sqlite3_stmt*>{}).first;
        it->second.push_back(stmt);
        return;
      }
    } catch (...) {
      // Out of memory for the cache entry: finalized below instead.
    }
  }
  sqlite3_finalize(stmt);
}

void Statement::NoteBind(int rc, int index) {
  if (rc != SQLITE_OK && bind_status_.ok()) {
    bind_status_ = SqliteStatus(db_, rc, purpose_ + " (bind ?" + std::to_string(index) + ")");
  }
}

Statement& Statement::Bind(int index, int64_t value) {
  NoteBind(sqlite3_bind_int64(stmt_, index, value), index);
  return *this;
}

Statement& Statement::Bind(int index, std::string_view value) {
  // A null data pointer would bind SQL NULL instead of the empty string.
  const char* data = value.data() != nullptr ? value.data() : "";
  NoteBind(sqlite3_bind_text64(stmt_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8), index);
  return *this;
}

Statement& Statement::Bind(int index, const std::optional<int64_t>& value) {
  return value.has_value() ? Bind(index, *value) : BindNull(index);
}

Statement& Statement::Bind(int index, const std::optional<std::string>& value) {
  return value.has_value() ? Bind(index, std::string_view(*value)) : BindNull(index);
}

Statement& Statement::BindNull(int index) {
  NoteBind(sqlite3_bind_null(stmt_, index), index);
  return *this;
}

Result<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status status = SqliteStatus(db_, rc, purpose_);
  // Ends the statement's implicit read transaction so the connection does not keep an old snapshot.
  sqlite3_reset(stmt_);
  return status;
}

Status Statement::Run() {
  while (true) {
    IPTKIT_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Status::Ok();
  }
}

int64_t Statement::ColumnInt64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::ColumnText(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

bool Statement::ColumnIsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

std::optional<int64_t> Statement::ColumnOptionalInt64(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnInt64(column);
}

std::optional<std::string> Statement::ColumnOptionalText(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnText(column);
}

// ---- SqliteDb ----

Result<SqliteDb> SqliteDb::Open(const std::string& path, int flags, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  // Owned from here on, also when opening failed (sqlite3_open_v2 may still allocate the handle).
  SqliteDb db(raw);
  if (rc != SQLITE_OK) return SqliteStatus(raw, rc, "open " + path);
  sqlite3_extended_result_codes(raw, 1);
  rc = sqlite3_busy_timeout(raw, busy_timeout_ms);
  if (rc != SQLITE_OK) return SqliteStatus(raw, rc, "set busy timeout on " + path);
  return db;
}

SqliteDb& SqliteDb::operator=(SqliteDb&& other) noexcept {
  if (this != &other) {
    Close();
    db_ = std::exchange(other.db_, nullptr);
    cache_ = std::exchange(other.cache_, nullptr);
  }
  return *this;
}

SqliteDb::~SqliteDb() noexcept { Close(); }

void SqliteDb::Close() noexcept {
  if (cache_ != nullptr) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    cache_->closed = true;
    for (auto& [sql, stmts] : cache_->free) {
      for (sqlite3_stmt* stmt : stmts) sqlite3_finalize(stmt);
    }
    cache_->free.clear();
  }
  cache_ = nullptr;
  sqlite3_close_v2(db_);
  db_ = nullptr;
}

Result<Statement> SqliteDb::Prepare(std::string_view sql, std::string_view purpose) {
  if (cache_ != nullptr) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->free.find(sql);
    if (it != cache_->free.end() && !it->second.empty()) {
      sqlite3_stmt* reused = it->second.back();
      it->second.pop_back();
      return Statement(db_, reused, std::string(purpose), cache_, std::string(sql));
    }
  }
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &raw, &tail);
  const bool one = rc == SQLITE_OK && raw != nullptr && tail == sql.data() + sql.size();
  // Only a statement that is exactly the SQL text goes back to the cache.
  Statement statement(db_, raw, std::string(purpose), one ? cache_ : nullptr, one ? std::string(sql) : std::string());
  if (rc != SQLITE_OK) return SqliteStatus(db_, rc, std::string(purpose) + " (prepare)");
  if (raw == nullptr || tail != sql.data() + sql.size()) {
    return Status::Internal(std::string(purpose) + ": not exactly one SQL statement");
  }
  return statement;
}

Status SqliteDb::Exec(const char* sql, std::string_view purpose) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(db_, rc, purpose);
  return Status::Ok();
}

int64_t SqliteDb::Changes() const { return sqlite3_changes64(db_); }

bool SqliteDb::InAutocommit() const { return sqlite3_get_autocommit(db_) != 0; }

// ---- SqliteTransaction ----

Result<SqliteTransaction> SqliteTransaction::BeginImmediate(SqliteDb& db, std::string_view purpose) {
  IPTKIT_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE", std::string(purpose) + " (begin)"));
  return SqliteTransaction(&db, std::string(purpose));
}

Status SqliteTransaction::Commit() {
  if (db_ == nullptr) return Status::Internal(purpose_ + ": transaction already ended");
  if (db_->InAutocommit()) {
    // SQLite rolled the transaction back itself (SQLITE_FULL, SQLITE_IOERR, ... during a statement).
    db_ = nullptr;
    return Status::Internal(purpose_ + ": the transaction was rolled back by SQLite after an error");
  }
  Status status = db_->Exec("COMMIT", purpose_ + " (commit)");
  if (!status.ok()) {
    Rollback();
    return status;
  }
  db_ = nullptr;
  return Status::Ok();
}

void SqliteTransaction::Rollback() noexcept {
  if (db_ == nullptr) return;
  if (!db_->InAutocommit()) sqlite3_exec(db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
  db_ = nullptr;
}

}  // namespace iptkit::store
