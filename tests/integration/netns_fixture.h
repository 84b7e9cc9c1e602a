// Test infrastructure for the integration tests: private network namespaces, commands run inside them, veth
// links between them, and readers for the real kernel state (iptables-save of either variant, nft list ruleset).
//
// Every namespace is named "iptkit-it-<pid>-<n>" and deleted by its owner's destructor (also when an assertion
// failed). A crashed test binary leaves its namespaces behind; the next Create() deletes namespaces whose pid is
// no longer alive. Nothing here touches the caller's (the host's) namespace except `ip netns add/del`.
// Thread-safety: RunCommand() and the const members of TestNetns may be called from any thread.
//
//   ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
//   ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-j", "ACCEPT"}).ok());
//   auto text = ns->Save(Variant::kNft, Family::kIPv4);   // "*filter\n:INPUT ACCEPT [0:0]\n...COMMIT\n"
#ifndef IPTKIT_TESTS_INTEGRATION_NETNS_FIXTURE_H_
#define IPTKIT_TESTS_INTEGRATION_NETNS_FIXTURE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::integration {

// The two iptables variants; the library's BackendKind::kNft / kLegacy drive the same tools.
enum class Variant { kNft, kLegacy };
std::string_view VariantName(Variant variant);

struct CommandResult {
  int exit_code = -1;  // exit status; 128 + signal when killed; -1 when it could not be started
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
  // "'iptables -A ...' exited 2; stderr: ..." for assertion messages.
  std::string Describe() const;
  std::string command;  // argv joined by blanks, for messages
};

// Runs argv (argv[0] looked up in /usr/sbin:/usr/bin:/sbin:/bin) with a minimal fixed environment, no shell,
// stdin fed from `input`, all other fds closed, inside `netns_path` (a /run/netns/NAME path; "" = the caller's
// namespace). The child is killed after `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& netns_path = "",
                         std::string_view input = "", std::chrono::milliseconds timeout = std::chrono::seconds(120));

bool IsRoot();

// The tool names of a variant: "iptables-nft", "ip6tables-legacy-save", ...
std::string IptablesTool(Variant variant, Family family, std::string_view suffix = "");

// Drops the "# Generated ..." / "# Completed ..." comment lines of iptables-save output.
std::string StripSaveComments(std::string_view text);

// "*filter" block (from "*filter" through "COMMIT\n") per table name.
std::map<std::string, std::string> SplitTables(std::string_view save_text);
// Per chain of one table block: its declaration line followed by its "-A CHAIN" lines, in order.
std::map<std::string, std::string> ChainTexts(std::string_view table_block);

class TestNetns;
// OK when the variant's tables work in `ns` (legacy needs the ip_tables/ip6_tables modules); otherwise
// Unavailable with iptables' message, for GTEST_SKIP.
Status VariantUsable(const TestNetns& ns, Variant variant, Family family);

class TestNetns {
 public:
  // Creates a fresh namespace with lo up.
  static Result<std::unique_ptr<TestNetns>> Create();
  ~TestNetns();
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const std::string& name() const { return name_; }
  std::string path() const { return "/run/netns/" + name_; }

  CommandResult Exec(const std::vector<std::string>& argv, std::string_view input = "") const;
  // `iptables-nft ARGS...` (or the variant/family's tool) inside the namespace.
  CommandResult Iptables(Variant variant, Family family, const std::vector<std::string>& args) const;
  // `iptables-*-restore [--noflush]` with `text` on stdin.
  CommandResult Restore(Variant variant, Family family, std::string_view text, bool noflush = false) const;
  // iptables-save text without comment lines. Fails when the tool fails or warns that its output is
  // incomplete (the "legacy tables present" / "incompatible" warnings).
  Result<std::string> Save(Variant variant, Family family, const std::string& table = "", bool counters = false) const;
  Result<std::string> NftListRuleset() const;
  // A counter of `nstat -az` (absolute, history untouched), e.g. "UdpRcvbufErrors".
  Result<uint64_t> NstatCounter(std::string_view name) const;

 private:
  explicit TestNetns(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// A veth pair between two namespaces, with addresses and static neighbour entries both ways (no ARP/ND needed
// before the first packet). Subnets 10.200.<n>.0/24 and fd00:200:<n>::/64, only ever inside test namespaces.
struct VethLink {
  std::string a_dev, b_dev;
  std::string a_ipv4, b_ipv4;  // without prefix length
  std::string a_ipv6, b_ipv6;
};
Result<VethLink> ConnectVeth(const TestNetns& a, const TestNetns& b);

// Runs `fn` on a thread that has entered `netns_path`; used to create sockets that belong to a test namespace
// (a socket stays in the namespace it was created in).
Status RunInNetns(const std::string& netns_path, const std::function<Status()>& fn);

}  // namespace iptkit::integration

#endif  // IPTKIT_TESTS_INTEGRATION_NETNS_FIXTURE_H_
