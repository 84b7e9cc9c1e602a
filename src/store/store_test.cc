#include "src/store/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <thread>

#include "src/store/sqlite_db.h"

namespace iptkit::store {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs SQL on `path` through a separate raw connection (another "process" as far as SQLite is concerned).
void ExecRaw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr), SQLITE_OK);
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

// ^iptk_[a-z2-7]{40}$ (std::regex trips GCC 12's -Wmaybe-uninitialized in sanitizer builds).
bool IsSecretFormat(const std::string& secret) {
  if (secret.size() != 45 || secret.rfind("iptk_", 0) != 0) return false;
  return std::all_of(secret.begin() + 5, secret.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'); });
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

ManagedRule MakeRule(std::string owner, std::string chain, std::string spec, int64_t now_ms = 1000) {
  ManagedRule rule;
  rule.owner = std::move(owner);
  rule.family = Family::kIPv4;
  rule.table = "filter";
  rule.chain = std::move(chain);
  rule.spec = std::move(spec);
  rule.rule_id = "r1";
  rule.position = Position::kLast;
  rule.created_ms = now_ms;
  rule.updated_ms = now_ms;
  return rule;
}

ConfirmRecord MakeConfirm(std::string id, int64_t created_ms) {
  ConfirmRecord record;
  record.id = std::move(id);
  record.deadline_ms = created_ms + 30000;
  record.principal = "token:ci";
  record.request_id = "req-" + record.id;
  record.rollback = R"({"ops":[]})";
  record.created_ms = created_ms;
  return record;
}

AuditEntry MakeAudit(int64_t time_ms, std::string principal, std::string action, std::string result) {
  AuditEntry entry;
  entry.time_ms = time_ms;
  entry.principal = std::move(principal);
  entry.request_id = "req-" + std::to_string(time_ms);
  entry.action = std::move(action);
  entry.request = R"({"op":"append"})";
  entry.result = std::move(result);
  entry.message = entry.result == "ok" ? "" : "it failed";
  entry.diff = entry.result == "ok" ? "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n" : "";
  return entry;
}

// Structs with some fields set (designated initializers that skip members trip GCC 12's
// -Wmissing-field-initializers).
template <typename T>
T Make(const std::function<void(T&)>& set) {
  T value{};
  set(value);
  return value;
}
AuditQuery Query(const std::function<void(AuditQuery&)>& set) { return Make<AuditQuery>(set); }
AuditQuery Limit(int limit) {
  return Query([&](AuditQuery& q) { q.limit = limit; });
}
Scopes ScopesOf(const std::vector<std::string>& words) {
  Result<Scopes> scopes = ParseScopes(words);
  EXPECT_TRUE(scopes.ok()) << scopes.status().ToString();
  return scopes.value_or(Scopes{});
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/iptkit-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/iptkitd.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> OpenStore() {
    Result<std::unique_ptr<Store>> store = Store::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // Runs one Write and expects it to succeed.
  static void MustWrite(Store& store, const std::function<Status(Store::Tx&)>& fn) {
    Status status = store.Write(fn);
    ASSERT_TRUE(status.ok()) << status.ToString();
  }

  std::string dir_, path_;
};

// ---- Opening ----

TEST_F(StoreTest, OpenCreatesTheFileAndItsWalFilesWithMode0600) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("app", std::nullopt, 1); });
  EXPECT_EQ(ModeOf(path_), 0600);
  // Open connection in WAL mode: both side files exist now.
  ASSERT_TRUE(std::filesystem::exists(path_ + "-wal"));
  ASSERT_TRUE(std::filesystem::exists(path_ + "-shm"));
  EXPECT_EQ(ModeOf(path_ + "-wal") & 077, 0u);
  EXPECT_EQ(ModeOf(path_ + "-shm") & 077, 0u);
}

TEST_F(StoreTest, OpenInAMissingDirectoryIsNotFound) {
  Result<std::unique_ptr<Store>> store = Store::Open(dir_ + "/missing/iptkitd.db");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr("missing/iptkitd.db"));
}

TEST_F(StoreTest, OpenRefusesADirectoryAndASymlink) {
  ASSERT_TRUE(std::filesystem::create_directory(path_));
  Result<std::unique_ptr<Store>> dir = Store::Open(path_);
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), StatusCode::kFailedPrecondition);

  std::string target = dir_ + "/real.db";
  std::string link = dir_ + "/link.db";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  Result<std::unique_ptr<Store>> symlinked = Store::Open(link);
  ASSERT_FALSE(symlinked.ok());
  EXPECT_EQ(symlinked.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(target));  // nothing was created through the link
}

TEST_F(StoreTest, OpenRefusesAFileThatIsNotSqliteAndLeavesItAlone) {
  std::string junk;
  for (int i = 0; i < 100; ++i) junk += "this is not a database, it is a text file\n";
  { std::ofstream(path_, std::ios::binary) << junk; }
  Result<std::unique_ptr<Store>> store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(path_));
  EXPECT_EQ(ReadBytes(path_), junk);
}

TEST_F(StoreTest, OpenRefusesAnotherApplicationsSqliteDatabase) {
  ExecRaw(path_, "CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');");
  std::string before = ReadBytes(path_);
  Result<std::unique_ptr<Store>> store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("not an iptkitd database"));
  EXPECT_EQ(ReadBytes(path_), before);  // not switched to WAL, not touched
  EXPECT_FALSE(std::filesystem::exists(path_ + "-wal"));
}

TEST_F(StoreTest, OpenRefusesANewerSchemaVersion) {
  ASSERT_NE(OpenStore(), nullptr);  // created and closed
  ExecRaw(path_, "PRAGMA user_version = 3");
  Result<std::unique_ptr<Store>> store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 3"));
}

TEST_F(StoreTest, OpenAcceptsAnEmptyExistingFile) {
  { std::ofstream touch(path_); }
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->ListOwners()->size(), 0u);
}

TEST_F(StoreTest, EverythingSurvivesCloseAndReopen) {
  std::string secret;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    MustWrite(*store, [](Store::Tx& tx) -> Status {
      IPTKIT_RETURN_IF_ERROR(tx.PutOwner("web", std::string(R"({"owner":"web"})"), 10));
      ManagedRule rule = MakeRule("ttl", "INPUT", "-p tcp -m tcp --dport 22 -j ACCEPT");
      rule.deadline_ms = 99999;
      IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(rule).status());
      IPTKIT_RETURN_IF_ERROR(tx.PutConfirm(MakeConfirm("c1", 20)));
      return tx.AppendAudit(MakeAudit(30, "uid:0", "append", "ok")).status();
    });
    Result<std::string> created = store->CreateToken("ci", ScopesOf({"read"}), 40);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    secret = *created;
    ASSERT_TRUE(store->PutMeta("netns", "blue").ok());
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(*store->ListOwners(),
              ElementsAre(OwnerRecord{"ttl", std::nullopt, 1000}, OwnerRecord{"web", R"({"owner":"web"})", 10}));
  Result<std::vector<ManagedRule>> rules = store->ListManagedRules();
  ASSERT_THAT(*rules, SizeIs(1));
  EXPECT_EQ((*rules)[0].spec, "-p tcp -m tcp --dport 22 -j ACCEPT");
  EXPECT_EQ((*rules)[0].deadline_ms, 99999);
  EXPECT_EQ(store->GetConfirm("c1")->value(), MakeConfirm("c1", 20));
  Result<AuditPage> audit = store->QueryAudit({});
  ASSERT_THAT(audit->entries, SizeIs(1));
  EXPECT_EQ(audit->entries[0].action, "append");
  Result<std::optional<TokenRecord>> token = store->LookupToken(secret);
  ASSERT_TRUE(token.ok() && token->has_value());
  EXPECT_EQ((*token)->name, "ci");
  EXPECT_EQ(store->GetMeta("netns")->value_or(""), "blue");
}

// ---- Owners ----

TEST_F(StoreTest, PutOwnerCreatesReplacesAndListsByName) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->GetOwner("web")->has_value(), false);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutOwner("web", std::string("{}"), 1));
    IPTKIT_RETURN_IF_ERROR(tx.PutOwner("api", std::nullopt, 2));
    return tx.PutOwner("empty-doc", std::string(""), 3);  // "" is a document, distinct from none
  });
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("web", std::string(R"({"v":2})"), 5); });
  EXPECT_THAT(*store->ListOwners(),
              ElementsAre(OwnerRecord{"api", std::nullopt, 2}, OwnerRecord{"empty-doc", std::string(""), 3},
                          OwnerRecord{"web", R"({"v":2})", 5}));
  EXPECT_EQ(store->GetOwner("web")->value(), (OwnerRecord{"web", R"({"v":2})", 5}));
}

TEST_F(StoreTest, PutOwnerRefusesBadNamesWithInvalidArgument) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  for (const std::string& bad : std::vector<std::string>{"", "MyApp", "a_b", "a:b", std::string(33, 'a')}) {
    Status s = store->Write([&](Store::Tx& tx) { return tx.PutOwner(bad, std::nullopt, 1); });
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(*store->ListOwners(), IsEmpty());
}

TEST_F(StoreTest, PutOwnerKeepsTheOwnersManagedRules) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) { return tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j ACCEPT")).status(); });
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("app", std::string("{}"), 7); });
  EXPECT_THAT(*store->ListManagedRules(), SizeIs(1));
}

TEST_F(StoreTest, DeleteOwnerCascadesToItsManagedRulesOnly) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(MakeRule("a", "INPUT", "-j ACCEPT")).status());
    IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(MakeRule("a", "OUTPUT", "-j ACCEPT")).status());
    return tx.UpsertManagedRule(MakeRule("b", "INPUT", "-j ACCEPT")).status();
  });
  MustWrite(*store, [](Store::Tx& tx) { return tx.DeleteOwner("a"); });
  Result<std::vector<ManagedRule>> rules = store->ListManagedRules();
  ASSERT_THAT(*rules, SizeIs(1));
  EXPECT_EQ((*rules)[0].owner, "b");
  EXPECT_FALSE(store->GetOwner("a")->has_value());
  Status again = store->Write([](Store::Tx& tx) { return tx.DeleteOwner("a"); });
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_THAT(again.message(), HasSubstr("'a'"));
}

// ---- Managed rules ----

TEST_F(StoreTest, UpsertAssignsIncreasingSeqAndCreatesTheOwner) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule first, second;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(first, tx.UpsertManagedRule(MakeRule("app", "INPUT", "-p tcp -j ACCEPT", 100)));
    IPTKIT_ASSIGN_OR_RETURN(second, tx.UpsertManagedRule(MakeRule("app", "INPUT", "-p udp -j ACCEPT", 200)));
    return Status::Ok();
  });
  EXPECT_GT(first.seq, 0);
  EXPECT_GT(second.seq, first.seq);
  EXPECT_EQ(first.created_ms, 100);
  EXPECT_EQ(store->GetOwner("app")->value(), (OwnerRecord{"app", std::nullopt, 100}));
  EXPECT_THAT(*store->ListManagedRules(), ElementsAre(first, second));
}

TEST_F(StoreTest, TheSameAddKeepsSeqAndCreatedAndUpdatesPositionDeadlineAndId) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule original = MakeRule("app", "INPUT", "-s 10.0.0.1/32 -j DROP", 100);
  original.deadline_ms = 5000;
  ManagedRule stored_first, stored_again;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(stored_first, tx.UpsertManagedRule(original));
    return tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j LOG", 150)).status();
  });
  ManagedRule again = original;
  again.rule_id = "r2";
  again.position = Position::kFirst;
  again.deadline_ms = 9000;
  again.created_ms = 777;  // ignored for an existing rule
  again.updated_ms = 300;
  again.seq = 12345;  // ignored
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(stored_again, tx.UpsertManagedRule(again));
    return Status::Ok();
  });
  EXPECT_EQ(stored_again.seq, stored_first.seq);
  EXPECT_EQ(stored_again.created_ms, 100);
  EXPECT_EQ(stored_again.updated_ms, 300);
  EXPECT_EQ(stored_again.position, Position::kFirst);
  EXPECT_EQ(stored_again.deadline_ms, 9000);
  EXPECT_EQ(stored_again.rule_id, "r2");
  Result<std::vector<ManagedRule>> rules = store->ListManagedRules();
  ASSERT_THAT(*rules, SizeIs(2));
  EXPECT_EQ((*rules)[0], stored_again);  // still first by seq

  // Making it permanent clears the deadline.
  again.deadline_ms = std::nullopt;
  MustWrite(*store, [&](Store::Tx& tx) { return tx.UpsertManagedRule(again).status(); });
  EXPECT_EQ((*store->ListManagedRules())[0].deadline_ms, std::nullopt);
}

TEST_F(StoreTest, EveryKeyPartMakesADifferentRule) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule base = MakeRule("app", "INPUT", "-j ACCEPT");
  std::vector<ManagedRule> variants(5, base);
  variants[1].owner = "other";
  variants[2].family = Family::kIPv6;
  variants[3].table = "raw";
  variants[4].chain = "OUTPUT";
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    for (const ManagedRule& rule : variants) IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(rule).status());
    ManagedRule other_spec = base;
    other_spec.spec = "-j DROP";
    return tx.UpsertManagedRule(other_spec).status();
  });
  Result<std::vector<ManagedRule>> rules = store->ListManagedRules();
  ASSERT_THAT(*rules, SizeIs(6));
  EXPECT_EQ((*rules)[2].family, Family::kIPv6);
}

TEST_F(StoreTest, UpsertRefusesABadKeyWithInvalidArgument) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule bad_owner = MakeRule("Bad Owner", "INPUT", "-j ACCEPT");
  ManagedRule no_table = MakeRule("app", "INPUT", "-j ACCEPT");
  no_table.table = "";
  ManagedRule no_chain = MakeRule("app", "", "-j ACCEPT");
  for (const ManagedRule& rule : {bad_owner, no_table, no_chain}) {
    Status s = store->Write([&](Store::Tx& tx) { return tx.UpsertManagedRule(rule).status(); });
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  }
  EXPECT_THAT(*store->ListManagedRules(), IsEmpty());
  EXPECT_THAT(*store->ListOwners(), IsEmpty());
}

TEST_F(StoreTest, DeleteManagedRuleByKey) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule rule = MakeRule("app", "INPUT", "-j ACCEPT");
  MustWrite(*store, [&](Store::Tx& tx) { return tx.UpsertManagedRule(rule).status(); });
  ManagedRuleKey other_family = KeyOf(rule);
  other_family.family = Family::kIPv6;
  Status missing = store->Write([&](Store::Tx& tx) { return tx.DeleteManagedRule(other_family); });
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  MustWrite(*store, [&](Store::Tx& tx) { return tx.DeleteManagedRule(KeyOf(rule)); });
  EXPECT_THAT(*store->ListManagedRules(), IsEmpty());
  EXPECT_TRUE(store->GetOwner("app")->has_value());  // the owner row stays
  Status twice = store->Write([&](Store::Tx& tx) { return tx.DeleteManagedRule(KeyOf(rule)); });
  EXPECT_EQ(twice.code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, SeqIsNeverReusedAfterTheNewestRuleIsDeleted) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule first;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(first, tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j ACCEPT")));
    return tx.DeleteManagedRule(KeyOf(first));
  });
  ManagedRule second;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(second, tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j DROP")));
    return Status::Ok();
  });
  EXPECT_GT(second.seq, first.seq);
}

TEST_F(StoreTest, RestoreManagedRulePutsBackTheExactRecord) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule before;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    ManagedRule rule = MakeRule("app", "INPUT", "-j ACCEPT", 100);
    rule.deadline_ms = 5000;
    IPTKIT_ASSIGN_OR_RETURN(before, tx.UpsertManagedRule(rule));
    return tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j DROP", 200)).status();
  });
  // Undo an update.
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    ManagedRule changed = before;
    changed.deadline_ms = 9000;
    changed.position = Position::kFirst;
    changed.updated_ms = 400;
    IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(changed).status());
    return tx.RestoreManagedRule(before);
  });
  EXPECT_EQ((*store->ListManagedRules())[0], before);
  // Undo a delete of the whole owner: the owner row comes back too.
  MustWrite(*store, [&](Store::Tx& tx) { return tx.DeleteOwner("app"); });
  MustWrite(*store, [&](Store::Tx& tx) { return tx.RestoreManagedRule(before); });
  EXPECT_THAT(*store->ListManagedRules(), ElementsAre(before));
  EXPECT_TRUE(store->GetOwner("app")->has_value());
}

TEST_F(StoreTest, RestoreManagedRuleWithAnotherRulesSeqIsAlreadyExists) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ManagedRule existing;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(existing, tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j ACCEPT")));
    return Status::Ok();
  });
  ManagedRule clash = MakeRule("app", "INPUT", "-j DROP");
  clash.seq = existing.seq;
  Status s = store->Write([&](Store::Tx& tx) { return tx.RestoreManagedRule(clash); });
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("seq " + std::to_string(existing.seq)));
  EXPECT_THAT(*store->ListManagedRules(), ElementsAre(existing));
}

// ---- Confirms ----

TEST_F(StoreTest, ConfirmLifecycle) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutConfirm(MakeConfirm("b", 10)));
    IPTKIT_RETURN_IF_ERROR(tx.PutConfirm(MakeConfirm("a", 10)));
    return tx.PutConfirm(MakeConfirm("c", 5));
  });
  auto ids = [](const std::vector<ConfirmRecord>& records) {
    std::vector<std::string> out;
    for (const ConfirmRecord& r : records) out.push_back(r.id);
    return out;
  };
  EXPECT_THAT(ids(*store->ListConfirms(true)), ElementsAre("c", "a", "b"));  // by created_ms, then id

  MustWrite(*store, [](Store::Tx& tx) {
    return tx.ResolveConfirm("a", ConfirmRecord::State::kConfirmed, 20, "confirmed by token:ci");
  });
  MustWrite(*store, [](Store::Tx& tx) {
    return tx.ResolveConfirm("c", ConfirmRecord::State::kRollbackFailed, 21, "restore failed");
  });
  EXPECT_THAT(ids(*store->ListConfirms(true)), ElementsAre("b"));
  EXPECT_THAT(ids(*store->ListConfirms(false)), ElementsAre("c", "a", "b"));
  ConfirmRecord expected = MakeConfirm("a", 10);
  expected.state = ConfirmRecord::State::kConfirmed;
  expected.resolved_ms = 20;
  expected.message = "confirmed by token:ci";
  EXPECT_EQ(store->GetConfirm("a")->value(), expected);
  EXPECT_FALSE(store->GetConfirm("zz")->has_value());
}

TEST_F(StoreTest, ConfirmErrors) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutConfirm(MakeConfirm("a", 10)); });
  Status dup = store->Write([](Store::Tx& tx) { return tx.PutConfirm(MakeConfirm("a", 11)); });
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(dup.message(), HasSubstr("'a'"));

  ConfirmRecord resolved = MakeConfirm("b", 10);
  resolved.state = ConfirmRecord::State::kConfirmed;
  EXPECT_EQ(store->Write([&](Store::Tx& tx) { return tx.PutConfirm(resolved); }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Write([&](Store::Tx& tx) { return tx.PutConfirm(MakeConfirm("", 1)); }).code(),
            StatusCode::kInvalidArgument);

  auto resolve = [&](const std::string& id, ConfirmRecord::State state) {
    return store->Write([&](Store::Tx& tx) { return tx.ResolveConfirm(id, state, 30, "m"); });
  };
  EXPECT_EQ(resolve("nope", ConfirmRecord::State::kConfirmed).code(), StatusCode::kNotFound);
  EXPECT_EQ(resolve("a", ConfirmRecord::State::kPending).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(resolve("a", ConfirmRecord::State::kRolledBack).ok());
  Status twice = resolve("a", ConfirmRecord::State::kConfirmed);
  EXPECT_EQ(twice.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(twice.message(), HasSubstr("rolled_back"));
  EXPECT_EQ(store->GetConfirm("a")->value().state, ConfirmRecord::State::kRolledBack);
}

// ---- Audit ----

TEST_F(StoreTest, AuditIdsIncreaseAndQueryReturnsNewestFirst) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> ids;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    for (int i = 0; i < 3; ++i) {
      IPTKIT_ASSIGN_OR_RETURN(int64_t id, tx.AppendAudit(MakeAudit(100 + i, "uid:0", "append", "ok")));
      ids.push_back(id);
    }
    return Status::Ok();
  });
  EXPECT_LT(ids[0], ids[1]);
  EXPECT_LT(ids[1], ids[2]);
  Result<AuditPage> page = store->QueryAudit({});
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_THAT(page->entries, SizeIs(3));
  EXPECT_EQ(page->entries[0].id, ids[2]);
  EXPECT_EQ(page->entries[2].id, ids[0]);
  AuditEntry expected = MakeAudit(102, "uid:0", "append", "ok");
  expected.id = ids[2];
  EXPECT_EQ(page->entries[0], expected);
  EXPECT_EQ(page->next_before, std::nullopt);
}

TEST_F(StoreTest, AuditFilters) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(100, "token:ci", "append", "ok")).status());
    IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(200, "token:ci", "delete", "NOT_FOUND")).status());
    IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(300, "uid:0", "append", "INVALID_ARGUMENT")).status());
    IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(400, "iptkitd", "ttl_expire", "ok")).status());
    return Status::Ok();
  });
  auto times = [&](const AuditQuery& q) {
    Result<AuditPage> page = store->QueryAudit(q);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    std::vector<int64_t> out;
    if (page.ok()) {
      for (const AuditEntry& e : page->entries) out.push_back(e.time_ms);
    }
    return out;
  };
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.principal = "token:ci"; })), ElementsAre(200, 100));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.action = "append"; })), ElementsAre(300, 100));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.result = "ok"; })), ElementsAre(400, 100));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.result = "error"; })), ElementsAre(300, 200));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.result = "NOT_FOUND"; })), ElementsAre(200));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.result = "ABORTED"; })), IsEmpty());
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.request_id = "req-300"; })), ElementsAre(300));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.since_ms = 200; })), ElementsAre(400, 300, 200));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.until_ms = 300; })), ElementsAre(200, 100));
  EXPECT_THAT(times(Query([&](AuditQuery& q) {
                q.since_ms = 200;
                q.until_ms = 400;
              })),
              ElementsAre(300, 200));
  EXPECT_THAT(times(Query([&](AuditQuery& q) {
                q.principal = "token:ci";
                q.action = "delete";
                q.result = "error";
              })),
              ElementsAre(200));
  EXPECT_THAT(times(Query([&](AuditQuery& q) { q.principal = "nobody"; })), IsEmpty());

  Result<AuditPage> bad = store->QueryAudit(Query([&](AuditQuery& q) { q.result = "failed"; }));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'failed'"));
}

TEST_F(StoreTest, AuditPagingAndLimitBounds) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    for (int i = 0; i < 25; ++i) IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(i, "uid:0", "append", "ok")).status());
    return Status::Ok();
  });
  std::vector<int64_t> seen;
  std::vector<size_t> page_sizes;
  AuditQuery query;
  query.limit = 10;
  while (true) {
    Result<AuditPage> page = store->QueryAudit(query);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    page_sizes.push_back(page->entries.size());
    for (const AuditEntry& e : page->entries) seen.push_back(e.time_ms);
    if (!page->next_before.has_value()) break;
    EXPECT_EQ(*page->next_before, page->entries.back().id);
    query.before_id = page->next_before;
  }
  EXPECT_THAT(page_sizes, ElementsAre(10, 10, 5));
  ASSERT_THAT(seen, SizeIs(25));
  for (int i = 0; i < 25; ++i) EXPECT_EQ(seen[i], 24 - i);

  // Exactly `limit` entries left: no next page.
  Result<AuditPage> exact = store->QueryAudit(Limit(25));
  EXPECT_THAT(exact->entries, SizeIs(25));
  EXPECT_EQ(exact->next_before, std::nullopt);

  EXPECT_EQ(store->QueryAudit(Limit(0)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->QueryAudit(Limit(-1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->QueryAudit(Limit(1001)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(store->QueryAudit(Limit(1))->entries, SizeIs(1));
  EXPECT_THAT(store->QueryAudit(Limit(1000))->entries, SizeIs(25));
}

// Regression (issue 8, item 3/4): stored request bodies and diffs were unbounded (a 1 MiB body per entry, so a page of
// 1,000 entries was a gigabyte). Long texts are cut at a character boundary with a marker and their original size.
TEST_F(StoreTest, AuditTextsAreBoundedWithAMarkerAndTheOriginalSize) {
  Result<std::unique_ptr<Store>> opened = Store::Open(path_, StoreOptions{.audit_body_bytes = 1000});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& store = **opened;
  AuditEntry big = MakeAudit(1, "uid:0", "transaction", "ok");
  big.request = std::string(400, 'x');
  for (int i = 0; i < 1000; ++i) big.request += "\xc3\xa9";  // é: 2 bytes each
  big.diff = std::string(5000, 'd');
  big.message = "short";
  MustWrite(store, [&](Store::Tx& tx) { return tx.AppendAudit(big).status(); });
  Result<AuditPage> page = store.QueryAudit({});
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_THAT(page->entries, SizeIs(1));
  const AuditEntry& e = page->entries[0];
  EXPECT_LE(e.request.size(), 1000u);
  EXPECT_EQ(e.request_original_bytes, 2400);
  EXPECT_THAT(e.request, ::testing::EndsWith("\n[truncated by iptkitd: 2400 bytes in all]"));
  const std::string kept = e.request.substr(0, e.request.find('\n'));
  EXPECT_EQ(kept.size() % 2, 0u) << "an é was cut in half";
  EXPECT_TRUE(big.request.starts_with(kept));
  EXPECT_LE(e.diff.size(), 1000u);
  EXPECT_EQ(e.diff_original_bytes, 5000);
  EXPECT_EQ(e.message, "short");
  EXPECT_EQ(e.message_original_bytes, std::nullopt);
  EXPECT_EQ(Store::Open(path_ + "2", StoreOptions{.audit_body_bytes = 10}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ScanAuditStreamsAndTheVisitorEndsThePage) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    for (int i = 0; i < 10; ++i) IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(i, "uid:0", "append", "ok")).status());
    return Status::Ok();
  });
  // A visitor that takes 3 and stops at the 4th: the next page starts with the 4th.
  std::vector<int64_t> times;
  Result<std::optional<int64_t>> next = store->ScanAudit(Limit(1000), [&](const AuditEntry& e) {
    if (times.size() == 3) return ScanStep::kStop;
    times.push_back(e.time_ms);
    return ScanStep::kTake;
  });
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_THAT(times, ElementsAre(9, 8, 7));
  ASSERT_TRUE(next->has_value());
  AuditQuery rest = Limit(1000);
  rest.before_id = **next;
  Result<AuditPage> page = store->QueryAudit(rest);
  ASSERT_TRUE(page.ok());
  ASSERT_THAT(page->entries, SizeIs(7));
  EXPECT_EQ(page->entries[0].time_ms, 6);
  EXPECT_EQ(page->next_before, std::nullopt);
  // Scans run on their own connections: one may go on while a writer holds the write lock.
  MustWrite(*store, [&](Store::Tx&) -> Status {
    Result<AuditPage> inside = store->QueryAudit(Limit(5));
    EXPECT_TRUE(inside.ok()) << inside.status().ToString();
    return Status::Ok();
  });
}

TEST_F(StoreTest, PruneAuditByAgeThenBySize) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) -> Status {
    for (int i = 0; i < 5000; ++i) {
      AuditEntry e = MakeAudit(1000 + i, "uid:0", "append", "ok");
      e.diff = std::string(1000, 'd');
      IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(e).status());
    }
    return Status::Ok();
  });
  // Age: entries before time 1000 + 2500 go (in chunks), the rest stays.
  Result<PruneResult> r = store->PruneAudit({.max_age_ms = 2500, .max_bytes = int64_t{1} << 40}, 1000 + 5000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed_by_age, 2500);
  EXPECT_EQ(r->removed_by_size, 0);
  EXPECT_EQ(r->remaining_entries, 2500);
  const int64_t per_entry = r->remaining_bytes / 2500;
  EXPECT_GT(per_entry, 1000);
  // Size: the oldest go until the log fits.
  r = store->PruneAudit({.max_age_ms = int64_t{1} << 40, .max_bytes = per_entry * 100}, 1000 + 5000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed_by_size, 2400);
  EXPECT_EQ(r->remaining_entries, 100);
  EXPECT_LE(r->remaining_bytes, per_entry * 100);
  Result<AuditPage> page = store->QueryAudit(Limit(1000));
  ASSERT_THAT(page->entries, SizeIs(100));
  EXPECT_EQ(page->entries.front().time_ms, 5999);
  EXPECT_EQ(page->entries.back().time_ms, 5900);
  // Nothing to do: nothing removed.
  r = store->PruneAudit({.max_age_ms = int64_t{1} << 40, .max_bytes = int64_t{1} << 40}, 6000);
  EXPECT_EQ(r->removed_by_age + r->removed_by_size, 0);
}

// Regression (issue 8, item 7): deleting the state directory while the daemon ran went unnoticed (writes
// answered 200, into an unlinked file). Writes are refused with Unavailable naming the problem.
TEST_F(StoreTest, RemovedOrReplacedFilesStopWritesAndShowInHealth) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->CheckFiles().ok());
  EXPECT_TRUE(store->Health().ok());
  // The database file replaced by another (a restored copy).
  ASSERT_EQ(::rename(path_.c_str(), (path_ + ".old").c_str()), 0);
  { std::ofstream(path_) << ""; }
  Status s = store->Write([](Store::Tx& tx) { return tx.PutOwner("a", std::nullopt, 1); });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("the database " + path_ + " was replaced"));
  EXPECT_FALSE(store->Health().ok());
  EXPECT_FALSE(store->Health().files_ok);
  // The whole directory removed.
  std::filesystem::remove_all(dir_);
  s = store->Write([](Store::Tx& tx) { return tx.PutOwner("a", std::nullopt, 1); });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("the state directory " + dir_ + " was removed"));
  EXPECT_THAT(store->Health().problem, HasSubstr("was removed"));
  // ... and made again, empty: replaced.
  std::filesystem::create_directory(dir_);
  EXPECT_THAT(store->CheckFiles().message(), HasSubstr("the state directory " + dir_ + " was replaced"));
}

TEST_F(StoreTest, QueuedAuditEntriesAreStoredWithTheNextWrite) {
  Result<std::unique_ptr<Store>> opened = Store::Open(path_, StoreOptions{.audit_backlog_limit = 3});
  ASSERT_TRUE(opened.ok());
  Store& store = **opened;
  for (int i = 1; i <= 5; ++i) store.QueueAudit(MakeAudit(i, "iptkitd", "ttl_expire", "ok"));
  StoreHealth h = store.Health();
  EXPECT_EQ(h.audit_backlog, 3u);
  EXPECT_EQ(h.audit_dropped, 2u);
  MustWrite(store, [](Store::Tx& tx) { return tx.AppendAudit(MakeAudit(10, "uid:0", "append", "ok")).status(); });
  EXPECT_EQ(store.Health().audit_backlog, 0u);
  Result<AuditPage> page = store.QueryAudit({});
  std::vector<int64_t> times;
  for (const AuditEntry& e : page->entries) times.push_back(e.time_ms);
  EXPECT_THAT(times, ElementsAre(10, 5, 4, 3));  // newest id first: the backlog went in before the write
}

// A group commit stores its entries 32, 8 or 1 to an INSERT: 51 entries (32 + 8 + 8 + 1 + 1 + 1 rows) come back in
// order with every column as one entry alone stores it (the long texts cut with their original sizes).
TEST_F(StoreTest, GroupCommitStoresEveryEntryInOrderWithItsColumns) {
  Result<std::unique_ptr<Store>> opened = Store::Open(path_, StoreOptions{.audit_body_bytes = 1000});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& store = **opened;
  std::vector<AuditEntry> sent;
  for (int i = 1; i <= 51; ++i) {
    AuditEntry e =
        MakeAudit(i, "token:" + std::to_string(i), i % 3 ? "set_add" : "append", i % 5 ? "ok" : "InvalidArgument");
    if (i % 7 == 0) e.diff = std::string(1500 + i, 'd');
    if (i % 11 == 0) e.request = std::string(2000 + i, 'r');
    sent.push_back(e);
    if (i < 51) store.QueueAudit(std::move(e));
  }
  ASSERT_TRUE(store.StoreAudit(sent.back()).ok());
  Result<AuditPage> page = store.QueryAudit(Limit(100));
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_THAT(page->entries, SizeIs(51));
  for (int i = 1; i <= 51; ++i) {
    const AuditEntry& want = sent[static_cast<size_t>(i - 1)];
    const AuditEntry& got = page->entries[static_cast<size_t>(51 - i)];  // newest first
    SCOPED_TRACE(i);
    EXPECT_EQ(got.time_ms, want.time_ms);
    EXPECT_EQ(got.principal, want.principal);
    EXPECT_EQ(got.request_id, want.request_id);
    EXPECT_EQ(got.action, want.action);
    EXPECT_EQ(got.result, want.result);
    EXPECT_EQ(got.message, want.message);
    if (want.diff.size() > 1000) {
      EXPECT_EQ(got.diff_original_bytes, static_cast<int64_t>(want.diff.size()));
      EXPECT_THAT(got.diff, ::testing::EndsWith(" bytes in all]"));
    } else {
      EXPECT_EQ(got.diff, want.diff);
      EXPECT_EQ(got.diff_original_bytes, std::nullopt);
    }
    if (want.request.size() > 1000) {
      EXPECT_EQ(got.request_original_bytes, static_cast<int64_t>(want.request.size()));
    } else {
      EXPECT_EQ(got.request, want.request);
    }
  }
}

// Group commit: an entry StoreAudit returned for is stored (readable), also when another thread's flush had taken
// it from the backlog and was still writing (a plain FlushAuditBacklog then found nothing to do and returned at once).
TEST_F(StoreTest, StoreAuditReturnsOnceTheEntryIsStoredUnderConcurrentCallers) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 16, kEach = 25;
  std::atomic<int> missing{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        AuditEntry e = MakeAudit(1000 + t * kEach + i, "token:ids", "set_add", "ok");
        const std::string id = e.request_id;
        if (!store->StoreAudit(std::move(e)).ok()) ++failed;
        AuditQuery query;
        query.request_id = id;
        Result<AuditPage> page = store->QueryAudit(query);
        if (!page.ok() || page->entries.size() != 1) ++missing;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(missing.load(), 0);
  AuditQuery query;
  query.action = "set_add";
  query.limit = 1000;
  Result<AuditPage> all = store->QueryAudit(query);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_THAT(all->entries, SizeIs(kThreads * kEach));
  EXPECT_EQ(store->Health().audit_backlog, 0u);
}

TEST_F(StoreTest, StoreAuditReportsTheFailedWriteAndKeepsTheEntryQueued) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(::rename(path_.c_str(), (path_ + ".old").c_str()), 0);
  Status s = store->StoreAudit(MakeAudit(7, "token:ids", "set_add", "ok"));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(store->Health().audit_backlog, 1u);
}

// A database of schema version 1 gets the audit columns of version 2; its entries count for retention.
TEST_F(StoreTest, MigratesAVersion1AuditLog) {
  ExecRaw(path_,
          "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL, principal TEXT NOT "
          "NULL, request_id TEXT NOT NULL, action TEXT NOT NULL, request TEXT NOT NULL, result TEXT NOT NULL, "
          "message TEXT NOT NULL, diff TEXT NOT NULL) STRICT; "
          "INSERT INTO audit (time_ms, principal, request_id, action, request, result, message, diff) "
          "VALUES (5, 'uid:0', 'r', 'append', '{}', 'ok', '', 'xyz'); "
          "PRAGMA application_id = 1768977515; PRAGMA user_version = 1;");
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Result<AuditPage> page = store->QueryAudit({});
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_THAT(page->entries, SizeIs(1));
  EXPECT_EQ(page->entries[0].diff, "xyz");
  Result<PruneResult> r = store->PruneAudit({.max_age_ms = 1000, .max_bytes = 1 << 20}, 100);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->remaining_entries, 1);
  EXPECT_EQ(r->remaining_bytes, 64 + 5 + 1 + 6 + 2 + 2 + 0 + 3);
}

// ---- Write ----

TEST_F(StoreTest, WriteRollsBackEverythingWhenFnFails) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Status s = store->Write([](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutOwner("web", std::string("{}"), 1));
    IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(MakeRule("app", "INPUT", "-j ACCEPT")).status());
    IPTKIT_RETURN_IF_ERROR(tx.PutConfirm(MakeConfirm("c", 1)));
    IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(MakeAudit(1, "uid:0", "append", "ok")).status());
    return Status::Aborted("changed my mind");
  });
  EXPECT_EQ(s, Status::Aborted("changed my mind"));
  EXPECT_THAT(*store->ListOwners(), IsEmpty());
  EXPECT_THAT(*store->ListManagedRules(), IsEmpty());
  EXPECT_THAT(*store->ListConfirms(false), IsEmpty());
  EXPECT_THAT(store->QueryAudit({})->entries, IsEmpty());

  // A failing Tx call returned by fn undoes the calls before it.
  Status failed = store->Write([](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutOwner("web", std::nullopt, 1));
    return tx.DeleteOwner("nobody");
  });
  EXPECT_EQ(failed.code(), StatusCode::kNotFound);
  EXPECT_THAT(*store->ListOwners(), IsEmpty());

  // Nothing was left open: the next Write works and the rolled-back ids are not visible.
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("web", std::nullopt, 2); });
  EXPECT_THAT(*store->ListOwners(), SizeIs(1));
}

TEST_F(StoreTest, WriteRollsBackWhenFnThrowsAndStaysUsable) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THROW((void)store->Write([](Store::Tx& tx) -> Status {
    (void)tx.PutOwner("web", std::nullopt, 1);
    throw std::runtime_error("boom");
  }),
               std::runtime_error);
  EXPECT_THAT(*store->ListOwners(), IsEmpty());
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("web", std::nullopt, 2); });
  EXPECT_THAT(*store->ListOwners(), SizeIs(1));
}

TEST_F(StoreTest, CallingTheStoreFromInsideWriteIsFailedPreconditionNotADeadlock) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Status inner_read, inner_write;
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    inner_read = store->ListOwners().status();
    inner_write = store->Write([](Store::Tx&) { return Status::Ok(); });
    return tx.PutOwner("web", std::nullopt, 1);
  });
  EXPECT_EQ(inner_read.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(inner_write.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(*store->ListOwners(), SizeIs(1));
}

TEST_F(StoreTest, ValuesAreBoundNotSpliced) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::string nasty = "x'); DROP TABLE owners; --\n\"é\t\\";
  MustWrite(*store, [&](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutOwner("web", nasty, 1));
    ManagedRule rule = MakeRule("web", "INPUT", "-m comment --comment \"" + nasty + "\" -j ACCEPT");
    IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(rule).status());
    AuditEntry entry = MakeAudit(1, nasty, nasty, "ok");
    return tx.AppendAudit(entry).status();
  });
  EXPECT_EQ(store->GetOwner("web")->value().document, nasty);
  EXPECT_THAT((*store->ListManagedRules())[0].spec, HasSubstr(nasty));
  EXPECT_THAT(store->QueryAudit(Query([&](AuditQuery& q) { q.principal = nasty; }))->entries, SizeIs(1));
}

// ---- Tokens ----

TEST_F(StoreTest, CreateTokenReturnsAWellFormedSecretAndLookupFindsIt) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Scopes scopes = ScopesOf({"read", "write", "table:filter", "owner:ci"});
  scopes.max_ttl_seconds = 3600;
  Result<std::string> secret = store->CreateToken("ci-deploy_1.x", scopes, 50);
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_TRUE(IsSecretFormat(*secret)) << *secret;

  Result<std::optional<TokenRecord>> found = store->LookupToken(*secret);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->value(), (TokenRecord{"ci-deploy_1.x", scopes, 50, std::nullopt}));

  EXPECT_FALSE(store->LookupToken(*secret + "x")->has_value());
  EXPECT_FALSE(store->LookupToken("")->has_value());
  std::string flipped = *secret;
  flipped.back() = flipped.back() == 'a' ? 'b' : 'a';
  EXPECT_FALSE(store->LookupToken(flipped)->has_value());
}

TEST_F(StoreTest, OnlyTheHashOfTheSecretIsStored) {
  std::string secret;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Result<std::string> created = store->CreateToken("ci", ScopesOf({"read"}), 1);
    ASSERT_TRUE(created.ok());
    secret = *created;
    // While open the row may live only in the WAL: check every file of the database.
    std::string bytes = ReadBytes(path_) + ReadBytes(path_ + "-wal") + ReadBytes(path_ + "-shm");
    EXPECT_EQ(bytes.find(secret), std::string::npos);
    EXPECT_EQ(bytes.find(secret.substr(5)), std::string::npos);
    EXPECT_NE(bytes.find(Sha256Hex(secret)), std::string::npos);
  }
  // Closed: checkpointed into the main file.
  std::string bytes = ReadBytes(path_);
  EXPECT_EQ(bytes.find(secret.substr(5)), std::string::npos);
  EXPECT_NE(bytes.find(Sha256Hex(secret)), std::string::npos);
}

TEST_F(StoreTest, SecretsAreDistinct) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::set<std::string> secrets;
  for (int i = 0; i < 50; ++i) {
    Result<std::string> secret = store->CreateToken("t" + std::to_string(i), Scopes{}, i);
    ASSERT_TRUE(secret.ok()) << secret.status().ToString();
    secrets.insert(*secret);
  }
  EXPECT_EQ(secrets.size(), 50u);
}

TEST_F(StoreTest, CreateTokenErrors) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateToken("ci", ScopesOf({"read"}), 1).ok());
  Result<std::string> dup = store->CreateToken("ci", ScopesOf({"write"}), 2);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(dup.status().message(), HasSubstr("'ci'"));
  ASSERT_TRUE(store->RevokeToken("ci", 3).ok());
  EXPECT_EQ(store->CreateToken("ci", Scopes{}, 4).status().code(), StatusCode::kAlreadyExists);  // also revoked

  for (const std::string& bad : std::vector<std::string>{"", "has space", "a/b", "a:b", "é", std::string(65, 'a')}) {
    EXPECT_EQ(store->CreateToken(bad, Scopes{}, 1).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(store->CreateToken(std::string(64, 'a'), Scopes{}, 1).ok());

  EXPECT_EQ(store->CreateToken("t1", Make<Scopes>([](Scopes& s) { s.tables = {"bogus"}; }), 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CreateToken("t2", Make<Scopes>([](Scopes& s) { s.chains = {"has space"}; }), 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CreateToken("t3", Make<Scopes>([](Scopes& s) { s.owners = {"Bad"}; }), 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CreateToken("t4", Make<Scopes>([](Scopes& s) { s.max_ttl_seconds = 0; }), 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_THAT(*store->ListTokens(), SizeIs(2));
}

// LookupToken caches the tokens it found; every token change, also by another process, invalidates the cache
// before it is committed (the <database>-tokens counter), so a revocation holds on the very next lookup.
TEST_F(StoreTest, TokenLookupsAreCachedUntilATokenChanges) {
  auto daemon = OpenStore();
  auto command = OpenStore();
  ASSERT_NE(daemon, nullptr);
  ASSERT_NE(command, nullptr);
  Result<std::string> ci = command->CreateToken("ci", ScopesOf({"read"}), 1);
  Result<std::string> ops = command->CreateToken("ops", ScopesOf({"write"}), 1);
  ASSERT_TRUE(ci.ok() && ops.ok());
  ASSERT_TRUE(daemon->LookupToken(*ci)->has_value());
  ASSERT_TRUE(daemon->LookupToken(*ops)->has_value());

  // Served from the cache: a change that bypasses the store (no counter move) is not seen...
  ExecRaw(
      path_,
      R"(UPDATE tokens SET scopes = '{"read":false,"write":true,"tables":[],"chains":[],"owners":[]}' WHERE name = 'ci')");
  Result<std::optional<TokenRecord>> cached = daemon->LookupToken(*ci);
  ASSERT_TRUE(cached.ok() && cached->has_value());
  EXPECT_TRUE((*cached)->scopes.read);
  // ...until any token changes: the revocation of another token re-reads this one too.
  ASSERT_TRUE(command->RevokeToken("ops", 2).ok());
  EXPECT_FALSE(daemon->LookupToken(*ops)->has_value());
  Result<std::optional<TokenRecord>> reread = daemon->LookupToken(*ci);
  ASSERT_TRUE(reread.ok() && reread->has_value());
  EXPECT_FALSE((*reread)->scopes.read);
  EXPECT_TRUE((*reread)->scopes.write);

  // Revoked through the daemon's own store as well, looked up right before and after.
  ASSERT_TRUE(daemon->LookupToken(*ci)->has_value());
  ASSERT_TRUE(daemon->RevokeToken("ci", 3).ok());
  EXPECT_FALSE(daemon->LookupToken(*ci)->has_value());
  EXPECT_FALSE(command->LookupToken(*ci)->has_value());
}

// A token change whose writer died between its two steps leaves the counter odd; a counter file that was deleted
// or replaced is not the one writers move. Either way every lookup reads the database.
TEST_F(StoreTest, TokenCacheIsOffWhileTheCounterIsOddOrItsFileIsGone) {
  auto daemon = OpenStore();
  ASSERT_NE(daemon, nullptr);
  Result<std::string> a = daemon->CreateToken("a", ScopesOf({"read"}), 1);
  Result<std::string> b = daemon->CreateToken("b", ScopesOf({"read"}), 1);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(daemon->LookupToken(*a)->has_value());

  const uint64_t odd = 7;
  {
    std::ofstream out(path_ + "-tokens", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&odd), sizeof(odd));
  }
  ASSERT_TRUE(daemon->LookupToken(*a)->has_value());
  ExecRaw(path_, "UPDATE tokens SET revoked_ms = 5 WHERE name = 'a'");  // not through the store: no counter move
  EXPECT_FALSE(daemon->LookupToken(*a)->has_value());

  // The next change goes on from the odd value (to 9, then 10) and caching resumes.
  auto command = OpenStore();
  ASSERT_NE(command, nullptr);
  ASSERT_TRUE(command->RevokeToken("a", 6).ok());
  ASSERT_TRUE(daemon->LookupToken(*b)->has_value());
  std::ifstream in(path_ + "-tokens", std::ios::binary);
  uint64_t now = 0;
  in.read(reinterpret_cast<char*>(&now), sizeof(now));
  EXPECT_EQ(now, 10u);

  ASSERT_TRUE(std::filesystem::remove(path_ + "-tokens"));
  ExecRaw(path_, "UPDATE tokens SET revoked_ms = 7 WHERE name = 'b'");
  EXPECT_FALSE(daemon->LookupToken(*b)->has_value());
}

TEST_F(StoreTest, ListAndRevokeTokens) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Result<std::string> b = store->CreateToken("b", ScopesOf({"write", "chain:INPUT"}), 10);
  Result<std::string> a = store->CreateToken("a", ScopesOf({"read"}), 20);
  ASSERT_TRUE(a.ok() && b.ok());

  EXPECT_EQ(store->RevokeToken("nope", 30).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store->RevokeToken("b", 30).ok());
  ASSERT_TRUE(store->RevokeToken("b", 40).ok());  // twice is OK and keeps the first time
  EXPECT_FALSE(store->LookupToken(*b)->has_value());
  EXPECT_TRUE(store->LookupToken(*a)->has_value());
  EXPECT_THAT(*store->ListTokens(), ElementsAre(TokenRecord{"a", ScopesOf({"read"}), 20, std::nullopt},
                                                TokenRecord{"b", ScopesOf({"write", "chain:INPUT"}), 10, 30}));
}

TEST(ScopesTest, ParseScopesReadsEveryWord) {
  Result<Scopes> scopes = ParseScopes({"read", "write", "table:filter", "table:nat", "chain:INPUT", "chain:MY-CHAIN",
                                       "owner:web-1", "read", "table:filter", "set:blocklist", "set:bl-6"});
  ASSERT_TRUE(scopes.ok()) << scopes.status().ToString();
  EXPECT_EQ(*scopes, (Make<Scopes>([](Scopes& s) {
    s.read = true;
    s.write = true;
    s.tables = {"filter", "nat"};
    s.chains = {"INPUT", "MY-CHAIN"};
    s.owners = {"web-1"};
    s.sets = {"blocklist", "bl-6"};
  })));
  EXPECT_THAT(ScopeWords(*scopes), ElementsAre("read", "write", "table:filter", "table:nat", "chain:INPUT",
                                               "chain:MY-CHAIN", "owner:web-1", "set:blocklist", "set:bl-6"));
  EXPECT_EQ(*ParseScopes(ScopeWords(*scopes)), *scopes);
  EXPECT_EQ(*ParseScopes({}), Scopes{});
  EXPECT_THAT(ScopeWords(Make<Scopes>([](Scopes& s) {
                s.read = true;
                s.max_ttl_seconds = 60;
              })),
              ElementsAre("read"));
}

TEST(ScopesTest, ParseScopesNamesTheBadWord) {
  for (const std::string& bad : std::vector<std::string>{
           "admin", "Read", "table:", "table:bogus", "chain:", "chain:has space", "chain:ACCEPT", "owner:", "owner:Web",
           "owner:a_b", "tables:filter", ":x", "", "set:", "set:has space", "set:this-name-is-longer-than-31-chars"}) {
    Result<Scopes> scopes = ParseScopes({"read", bad});
    ASSERT_FALSE(scopes.ok()) << bad;
    EXPECT_EQ(scopes.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(scopes.status().message(), HasSubstr("'" + bad + "'"));
  }
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(NamesTest, PositionAndConfirmStateNames) {
  EXPECT_EQ(PositionName(Position::kFirst), "first");
  EXPECT_EQ(PositionName(Position::kLast), "last");
  EXPECT_EQ(ConfirmStateName(ConfirmRecord::State::kPending), "pending");
  EXPECT_EQ(ConfirmStateName(ConfirmRecord::State::kConfirmed), "confirmed");
  EXPECT_EQ(ConfirmStateName(ConfirmRecord::State::kRolledBack), "rolled_back");
  EXPECT_EQ(ConfirmStateName(ConfirmRecord::State::kRollbackFailed), "rollback_failed");
  ManagedRule rule = MakeRule("app", "INPUT", "-j ACCEPT");
  rule.family = Family::kIPv6;
  EXPECT_EQ(KeyOf(rule), (ManagedRuleKey{"app", Family::kIPv6, "filter", "INPUT", "-j ACCEPT"}));
}

// ---- Meta ----

TEST_F(StoreTest, MetaGetAndPut) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(store->GetMeta("netns")->has_value());
  ASSERT_TRUE(store->PutMeta("netns", "blue").ok());
  ASSERT_TRUE(store->PutMeta("netns", "green").ok());
  ASSERT_TRUE(store->PutMeta("empty", "").ok());
  EXPECT_EQ(store->GetMeta("netns")->value_or(""), "green");
  EXPECT_EQ(store->GetMeta("empty")->value_or("unset"), "");
}

// Meta keys written inside a Write commit or roll back with the rest of it (the fleet agent's applied revisions
// are written with the change's audit record); ListMeta selects by a byte prefix, '%' and '_' included.
TEST_F(StoreTest, MetaInsideWriteIsTransactionalAndListedByPrefix) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store
                  ->Write([](Store::Tx& tx) -> Status {
                    IPTKIT_RETURN_IF_ERROR(tx.PutMeta("fleet:applied:/p/a", "1"));
                    IPTKIT_RETURN_IF_ERROR(tx.PutMeta("fleet:applied:/p/b", "2"));
                    IPTKIT_RETURN_IF_ERROR(tx.PutMeta("fleet%other", "x"));
                    AuditEntry entry;
                    entry.time_ms = 1;
                    entry.principal = "etcd:u@2";
                    return tx.AppendAudit(entry).status();
                  })
                  .ok());
  Status failed = store->Write([](Store::Tx& tx) -> Status {
    IPTKIT_RETURN_IF_ERROR(tx.PutMeta("fleet:applied:/p/a", "9"));
    IPTKIT_RETURN_IF_ERROR(tx.DeleteMeta("fleet:applied:/p/b"));
    return Status::Aborted("rolled back");
  });
  EXPECT_EQ(failed.code(), StatusCode::kAborted);
  auto listed = store->ListMeta("fleet:applied:");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(*listed, (std::vector<std::pair<std::string, std::string>>{{"fleet:applied:/p/a", "1"},
                                                                       {"fleet:applied:/p/b", "2"}}));
  ASSERT_TRUE(store->Write([](Store::Tx& tx) { return tx.DeleteMeta("fleet:applied:/p/b"); }).ok());
  ASSERT_TRUE(store->Write([](Store::Tx& tx) { return tx.DeleteMeta("fleet:applied:/absent"); }).ok());
  EXPECT_EQ(store->ListMeta("fleet:applied:")->size(), 1u);
  EXPECT_EQ(store->ListMeta("fleet%")->size(), 1u);
  EXPECT_EQ(store->ListMeta("fleet_")->size(), 0u);
}

// ---- Concurrency ----

TEST_F(StoreTest, ConcurrentWritersAndReadersOnOneStore) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 4;
  constexpr int kWritesPerThread = 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWritesPerThread; ++i) {
        std::string spec = "-p tcp -m tcp --dport " + std::to_string(1000 * t + i) + " -j ACCEPT";
        Status s = store->Write([&](Store::Tx& tx) -> Status {
          IPTKIT_RETURN_IF_ERROR(tx.UpsertManagedRule(MakeRule("owner-" + std::to_string(t), "INPUT", spec)).status());
          return tx.AppendAudit(MakeAudit(i, "thread:" + std::to_string(t), "append", "ok")).status();
        });
        if (!s.ok()) ++failures;
        if (!store->ListManagedRules().ok() || !store->QueryAudit(Limit(5)).ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  Result<std::vector<ManagedRule>> rules = store->ListManagedRules();
  ASSERT_THAT(*rules, SizeIs(kThreads * kWritesPerThread));
  std::set<int64_t> seqs;
  for (const ManagedRule& rule : *rules) seqs.insert(rule.seq);
  EXPECT_EQ(seqs.size(), rules->size());
  EXPECT_THAT(store->QueryAudit(Limit(1000))->entries, SizeIs(kThreads * kWritesPerThread));
}

// The `iptkitd token` command opens the database while the daemon runs.
TEST_F(StoreTest, TwoStoresOnTheSameFileSeeEachOthersWrites) {
  auto daemon = OpenStore();
  auto command = OpenStore();
  ASSERT_NE(daemon, nullptr);
  ASSERT_NE(command, nullptr);

  Result<std::string> secret = command->CreateToken("ci", ScopesOf({"read"}), 1);
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  Result<std::optional<TokenRecord>> seen = daemon->LookupToken(*secret);
  ASSERT_TRUE(seen.ok()) << seen.status().ToString();
  ASSERT_TRUE(seen->has_value());
  EXPECT_EQ((*seen)->name, "ci");
  ASSERT_TRUE(command->RevokeToken("ci", 2).ok());
  EXPECT_FALSE(daemon->LookupToken(*secret)->has_value());

  MustWrite(*daemon, [](Store::Tx& tx) { return tx.PutOwner("web", std::nullopt, 3); });
  EXPECT_THAT(*command->ListOwners(), SizeIs(1));

  // Both write at once: SQLite serializes them, nobody waits past the busy timeout.
  std::atomic<int> failures{0};
  auto writer = [&](Store* store, const std::string& prefix) {
    for (int i = 0; i < 30; ++i) {
      if (!store->CreateToken(prefix + std::to_string(i), Scopes{}, i).ok()) ++failures;
      Status s = store->Write([&](Store::Tx& tx) { return tx.AppendAudit(MakeAudit(i, prefix, "x", "ok")).status(); });
      if (!s.ok()) ++failures;
    }
  };
  std::thread a(writer, daemon.get(), "d");
  std::thread b(writer, command.get(), "c");
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_THAT(*daemon->ListTokens(), SizeIs(61));
  EXPECT_THAT(command->QueryAudit(Limit(1000))->entries, SizeIs(60));
}

TEST_F(StoreTest, AWriterHoldingTheLockPastTheBusyTimeoutIsUnavailable) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("web", std::nullopt, 1); });
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &other, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  // WAL: readers are not blocked by the writer.
  EXPECT_THAT(*store->ListOwners(), SizeIs(1));
  auto start = std::chrono::steady_clock::now();
  Status s = store->Write([](Store::Tx& tx) { return tx.PutOwner("api", std::nullopt, 2); });
  auto elapsed = std::chrono::steady_clock::now() - start;
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);

  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_GE(elapsed, std::chrono::milliseconds(4500));
  EXPECT_LT(elapsed, std::chrono::seconds(15));
  MustWrite(*store, [](Store::Tx& tx) { return tx.PutOwner("api", std::nullopt, 4); });
  EXPECT_THAT(*store->ListOwners(), SizeIs(2));
}

// ---- Prepared statements ----

int StatementsOf(sqlite3* db) {
  int n = 0;
  for (sqlite3_stmt* st = sqlite3_next_stmt(db, nullptr); st != nullptr; st = sqlite3_next_stmt(db, st)) ++n;
  return n;
}

// A statement that ends is kept for the next Prepare of the same SQL (no prepare per token lookup or audit row),
// and comes back reset, without the last bindings and without a read transaction holding an old snapshot.
TEST_F(StoreTest, PreparedStatementsAreReusedResetAndUnbound) {
  Result<SqliteDb> opened = SqliteDb::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, 1000);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  SqliteDb db = *std::move(opened);
  ASSERT_TRUE(db.Exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b')", "create").ok());
  {
    Result<Statement> st = db.Prepare("SELECT v, ?1 FROM t ORDER BY v", "select");
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    st->Bind(1, "bound");
    Result<bool> row = st->Step();  // one of two rows read: the statement is mid-way
    ASSERT_TRUE(row.ok() && *row);
    EXPECT_EQ(st->ColumnText(1), "bound");
  }
  EXPECT_EQ(StatementsOf(db.get()), 1);  // kept, not finalized
  // Another connection can write and checkpoint: the kept statement holds no read transaction.
  Result<SqliteDb> other = SqliteDb::Open(path_, SQLITE_OPEN_READWRITE, 1000);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other->Exec("INSERT INTO t VALUES ('0')", "insert").ok());
  {
    Result<Statement> again = db.Prepare("SELECT v, ?1 FROM t ORDER BY v", "select again");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(StatementsOf(db.get()), 1);  // the same one
    Result<bool> row = again->Step();
    ASSERT_TRUE(row.ok() && *row);
    EXPECT_EQ(again->ColumnText(0), "0");  // from the start, on a fresh snapshot
    EXPECT_TRUE(again->ColumnIsNull(1));   // the old binding is gone
    // The same SQL while the first is in use: a second statement.
    Result<Statement> twice = db.Prepare("SELECT v, ?1 FROM t ORDER BY v", "select twice");
    ASSERT_TRUE(twice.ok());
    EXPECT_EQ(StatementsOf(db.get()), 2);
  }
  // A statement that outlives its connection finalizes itself when it ends (the asan build checks the leak).
  Result<Statement> late = db.Prepare("SELECT v FROM t", "late");
  ASSERT_TRUE(late.ok());
  db = SqliteDb();
}

}  // namespace
}  // namespace iptkit::store
