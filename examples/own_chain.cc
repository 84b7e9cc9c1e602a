// Declares an owned chain with two rules and a hook from INPUT, shows the plan, then applies it.
// Run it only in a namespace you own: own_chain NETNS
#include <iostream>

#include "iptkit/desired.h"
#include "iptkit/dialect.h"
#include "iptkit/firewall.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: own_chain NETNS\n";
    return 2;
  }
  auto firewall = iptkit::Firewall::Open({.netns = argv[1]});
  if (!firewall.ok()) {
    std::cerr << firewall.status().ToString() << "\n";
    return 1;
  }
  const auto v4 = iptkit::Family::kIPv4;
  iptkit::DesiredState desired;
  desired.owner = "example";
  desired.chains.push_back({"filter",
                            "EXAMPLE-IN",
                            {*iptkit::ParseRuleSpec("-p tcp --dport 22 -s 10.0.0.0/8 -j ACCEPT", v4),
                             *iptkit::ParseRuleSpec("-j RETURN", v4)}});
  desired.hooks.push_back(
      {"filter", "INPUT", iptkit::HookRule::Position::kFirst, *iptkit::ParseRuleSpec("-j EXAMPLE-IN", v4)});
  auto plan = (*firewall)->Apply(desired);
  if (!plan.ok()) {
    std::cerr << plan.status().ToString() << "\n";
    return 1;
  }
  for (const auto& step : plan->steps) std::cout << step.description << "\n";
  return 0;
}
