// What iptables says, cut to its own reason and the argument it is about.
#include "src/backend/restore/tool_errors.h"

#include <gtest/gtest.h>

namespace iptkit::backend {
namespace {

TEST(ToolErrorsTest, KeepsIptablesReasonOnly) {
  EXPECT_EQ(CleanToolMessage("iptables-restore v1.8.9 (nf_tables): invalid port/service `65536' specified\n"
                             "Error occurred at line: 2\n"
                             "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n"),
            "invalid port/service `65536' specified");
  EXPECT_EQ(CleanToolMessage("ip6tables-restore v1.8.9 (legacy): line 3: unknown option \"--bogus\"\n"),
            "unknown option \"--bogus\"");
  // iptables-nft's kernel errors name the (scratch) chain: gone.
  EXPECT_EQ(CleanToolMessage("iptables-restore v1.8.9 (nf_tables): RULE_APPEND failed (Invalid argument): rule in "
                             "chain IPTKIT-H\n"),
            "RULE_APPEND failed (Invalid argument)");
  EXPECT_EQ(CleanToolMessage("iptables-nft-restore: line 3 failed: Bad rule (does a matching rule exist in that "
                             "chain?).\n"),
            "Bad rule (does a matching rule exist in that chain?).");
  // Legacy's bare failure has no reason left (only the kernel log has it).
  EXPECT_EQ(CleanToolMessage("iptables-restore: line 4 failed\n"), "");
  // Several lines of reason stay, joined.
  EXPECT_EQ(CleanToolMessage("Warning: x\nBad argument `y'\n"), "Warning: x; Bad argument `y'");
}

TEST(ToolErrorsTest, NamesTheQuotedArgument) {
  const std::vector<std::string> args = {"-p", "tcp", "--dport", "65536", "-j", "ACCEPT"};
  EXPECT_EQ(QuotedArgument("invalid port/service `65536' specified", args), 3u);
  EXPECT_EQ(QuotedArgument("unknown option \"--dport\"", args), 2u);
  EXPECT_EQ(QuotedArgument("Couldn't load target `NOPE'", args), std::nullopt);
  // The earliest quoted argument; on a tie the longest ("--dport" before "-p"-like prefixes).
  EXPECT_EQ(QuotedArgument("`tcp' and `ACCEPT'", args), 1u);
  EXPECT_EQ(QuotedArgument("", args), std::nullopt);
}

}  // namespace
}  // namespace iptkit::backend
