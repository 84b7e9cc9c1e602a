// Lists the IPv4 filter table of a network namespace (or the caller's) through the public API.
// Usage: list_rules [NETNS]
#include <iostream>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"

int main(int argc, char** argv) {
  iptkit::FirewallOptions options;
  if (argc > 1) options.netns = argv[1];
  auto firewall = iptkit::Firewall::Open(options);
  if (!firewall.ok()) {
    std::cerr << firewall.status().ToString() << "\n";
    return 1;
  }
  auto ruleset = (*firewall)->List(iptkit::Family::kIPv4, "filter");
  if (!ruleset.ok()) {
    std::cerr << ruleset.status().ToString() << "\n";
    return 1;
  }
  for (const iptkit::Table& table : ruleset->tables) {
    for (const iptkit::Chain& chain : table.chains) {
      std::cout << table.name << "/" << chain.name << (chain.policy ? " policy " + *chain.policy : "") << "\n";
      int index = 1;
      for (const iptkit::Rule& rule : chain.rules) {
        std::cout << "  " << index++ << ": " << iptkit::FormatRuleSpec(rule) << "  [" << rule.counters.packets
                  << " packets]\n";
      }
    }
  }
  return 0;
}
