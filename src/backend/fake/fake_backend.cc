#include "src/backend/fake/fake_backend.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "iptkit/dialect.h"
#include "src/backend/ops/table_sim.h"

namespace iptkit::backend {
namespace {

class FakeLockGuard : public LockGuard {
 public:
  explicit FakeLockGuard(std::shared_ptr<int> depth) : depth_(std::move(depth)) { ++*depth_; }
  ~FakeLockGuard() override { --*depth_; }

 private:
  std::shared_ptr<int> depth_;
};

// Parses a decimal prefix length 0..max.
std::optional<int> ParsePrefix(std::string_view s, int max) {
  if (s.empty() || s.size() > 3) return std::nullopt;
  int n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n > max) return std::nullopt;
  return n;
}

// "addr[/prefix|/dotted-mask]" → what iptables-save prints; nullopt when the value is malformed.
std::optional<std::string> CanonicalAddress(Family family, std::string_view value) {
  const size_t slash = value.find('/');
  const std::string addr(value.substr(0, slash));
  const std::string_view mask = slash == std::string_view::npos ? std::string_view() : value.substr(slash + 1);
  const int af = family == Family::kIPv4 ? AF_INET : AF_INET6;
  const int bits = family == Family::kIPv4 ? 32 : 128;
  std::array<uint8_t, 16> bytes{};
  if (inet_pton(af, addr.c_str(), bytes.data()) != 1) return std::nullopt;

  std::array<uint8_t, 16> maskbytes{};
  std::optional<int> prefix;
  if (slash == std::string_view::npos) {
    prefix = bits;
  } else if (auto p = ParsePrefix(mask, bits)) {
    prefix = *p;
  } else if (family == Family::kIPv4 && inet_pton(AF_INET, std::string(mask).c_str(), maskbytes.data()) == 1) {
    uint32_t m =
        (uint32_t{maskbytes[0]} << 24) | (uint32_t{maskbytes[1]} << 16) | (uint32_t{maskbytes[2]} << 8) | maskbytes[3];
    int ones = std::countl_one(m);
    if (ones == 32 || (m << ones) == 0) prefix = ones;  // contiguous: printed as a prefix
  } else {
    return std::nullopt;
  }
  if (prefix) {
    maskbytes.fill(0);
    for (int i = 0; i < *prefix; ++i) maskbytes[i / 8] |= static_cast<uint8_t>(0x80 >> (i % 8));
  }
  for (int i = 0; i < bits / 8; ++i) bytes[i] &= maskbytes[i];
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(af, bytes.data(), buf, sizeof(buf));
  if (prefix) return std::string(buf) + "/" + std::to_string(*prefix);
  char mbuf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, maskbytes.data(), mbuf, sizeof(mbuf));
  return std::string(buf) + "/" + mbuf;
}

Table* FindOrCreateTable(Ruleset& rs, const Table& fresh) {
  if (Table* t = rs.FindTable(fresh.name)) return t;
  // Keep iptables-nft-save's table order.
  const auto& order = KnownTables();
  auto rank = [&](const std::string& name) { return std::find(order.begin(), order.end(), name) - order.begin(); };
  auto pos =
      std::find_if(rs.tables.begin(), rs.tables.end(), [&](const Table& t) { return rank(t.name) > rank(fresh.name); });
  return &*rs.tables.insert(pos, fresh);
}

}  // namespace

Result<Rule> FakeCanonicalRule(Family family, const Rule& rule) {
  Rule out = rule;
  for (std::optional<Field>* field : {&out.source, &out.destination}) {
    if (!field->has_value()) continue;
    std::optional<std::string> canon = CanonicalAddress(family, (*field)->value);
    if (!canon) {
      return Status::InvalidArgument("bad address " + (*field)->value + " in rule '" + FormatRuleSpec(rule) + "'");
    }
    // iptables-save omits a match-all address (0.0.0.0/0, ::/0).
    if (!(*field)->negated && canon->ends_with("/0")) {
      field->reset();
    } else {
      (*field)->value = *canon;
    }
  }
  if (out.protocol) {
    std::string& p = out.protocol->value;
    std::transform(p.begin(), p.end(), p.begin(), [](unsigned char c) { return std::tolower(c); });
    if (p == "6") p = "tcp";
    if (p == "17") p = "udp";
    if (p == "1" && family == Family::kIPv4) p = "icmp";
    if ((p == "58" || p == "icmpv6") && family == Family::kIPv6) p = "ipv6-icmp";
  }
  return out;
}

Result<Ruleset> FakeBackend::Read(Family family, const std::optional<std::string>& table, bool fresh_counters) {
  Ruleset& rs = state_[family];
  rs.family = family;
  if (!table) return rs;
  if (BuiltinChains(*table).empty()) return Status::NotFound("table '" + *table + "' does not exist");
  Ruleset out;
  out.family = family;
  if (const Table* t = rs.FindTable(*table)) {
    out.tables.push_back(*t);
  } else {
    IPTKIT_ASSIGN_OR_RETURN(Table fresh, NewTable(*table));
    out.tables.push_back(std::move(fresh));
  }
  return out;
}

const BackendTraits& FakeBackend::traits() const {
  static const BackendTraits kTraits = [] {
    BackendTraits t;
    t.name = "fake";
    return t;
  }();
  return kTraits;
}

Result<CommitReport> FakeBackend::Commit(const std::vector<CommitTable>& tables) {
  return CommitTableByTable(tables, traits().name, [this](const TableBatch& batch) { return CommitOneTable(batch); });
}

Status FakeBackend::CommitOneTable(const TableBatch& batch) {
  ++commit_calls_;
  const std::string where = std::string(FamilyName(batch.family)) + " table " + batch.table;
  IPTKIT_ASSIGN_OR_RETURN(Table fresh, NewTable(batch.table));
  Ruleset copy = state_[batch.family];
  copy.family = batch.family;
  Table* table = FindOrCreateTable(copy, fresh);
  if (batch.flush_table) ResetTable(*table);
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    TableOp op = batch.ops[i];
    auto prefix = [&] { return where + ": line " + std::to_string(i + 1) + " (" + DescribeTableOp(op) + ") failed"; };
    switch (op.kind) {
      case TableOp::Kind::kAppend:
      case TableOp::Kind::kInsert:
      case TableOp::Kind::kCheck:
      case TableOp::Kind::kDelete:
      case TableOp::Kind::kReplace: {
        Result<Rule> canon = FakeCanonicalRule(batch.family, op.rule);
        if (!canon.ok()) return canon.status().WithContext(prefix());
        op.rule = *std::move(canon);
        break;
      }
      default:
        break;
    }
    Status s = ApplyTableOp(batch.family, *table, op, batch.with_counters);
    if (!s.ok()) return s.WithContext(prefix());
  }
  Status graph = CheckTableGraph(batch.family, *table);
  if (!graph.ok()) return graph.WithContext(where + ": COMMIT failed");
  state_[batch.family] = std::move(copy);
  committed_.push_back(batch);
  return Status::Ok();
}

Result<std::vector<Rule>> FakeBackend::Canonicalize(Family family, const std::string& table,
                                                    const std::vector<Rule>& rules) {
  IPTKIT_RETURN_IF_ERROR(NewTable(table).status());
  std::vector<Rule> out;
  out.reserve(rules.size());
  for (const auto& rule : rules) {
    IPTKIT_RETURN_IF_ERROR(ValidateRule(rule, family).WithContext("rule '" + FormatRuleSpec(rule) + "'"));
    IPTKIT_ASSIGN_OR_RETURN(Rule canon, FakeCanonicalRule(family, rule));
    out.push_back(std::move(canon));
  }
  return out;
}

Result<std::unique_ptr<LockGuard>> FakeBackend::Lock(std::chrono::milliseconds) {
  return std::unique_ptr<LockGuard>(std::make_unique<FakeLockGuard>(lock_depth_));
}

Result<FirewallInfo> FakeBackend::Info() {
  FirewallInfo info;
  info.backend = "fake";
  VariantTables variant;
  variant.variant = "fake";
  variant.version = "iptkit fake backend";
  for (const auto& [family, rs] : state_) {
    for (const auto& t : rs.tables) {
      size_t rules = 0;
      for (const auto& c : t.chains) rules += c.rules.size();
      variant.tables.push_back({family, t.name, rules, t.unrepresentable_reason.empty()});
    }
  }
  info.variants.push_back(std::move(variant));
  return info;
}

void FakeBackend::SetRuleset(Ruleset ruleset) {
  Family family = ruleset.family;
  state_[family] = std::move(ruleset);
}

Status FakeBackend::LoadSave(Family family, std::string_view save_text) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, ParseSave(save_text, family));
  rs.family = family;
  SetRuleset(std::move(rs));
  return Status::Ok();
}

Status FakeBackend::AddPacketCounts(Family family, std::string_view table, std::string_view chain, int index,
                                    uint64_t packets, uint64_t bytes) {
  Table* t = state_[family].FindTable(table);
  Chain* c = t == nullptr ? nullptr : t->FindChain(chain);
  if (c == nullptr) return Status::NotFound("no chain " + std::string(chain) + " in table " + std::string(table));
  if (index < 1 || static_cast<size_t>(index) > c->rules.size()) {
    return Status::NotFound("no rule " + std::to_string(index) + " in chain " + std::string(chain));
  }
  c->rules[index - 1].counters.packets += packets;
  c->rules[index - 1].counters.bytes += bytes;
  return Status::Ok();
}

Status FakeBackend::MarkUnrepresentable(Family family, std::string_view table, std::string reason) {
  IPTKIT_ASSIGN_OR_RETURN(Table fresh, NewTable(table));
  Ruleset& rs = state_[family];
  rs.family = family;
  FindOrCreateTable(rs, fresh)->unrepresentable_reason = std::move(reason);
  return Status::Ok();
}

std::unique_ptr<Backend> NewFakeBackend() { return std::make_unique<FakeBackend>(); }

}  // namespace iptkit::backend
