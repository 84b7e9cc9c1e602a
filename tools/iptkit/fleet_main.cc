// iptkit-fleet: `iptkit fleet ...` (docs/cli.md "Fleet"), which iptkit executes (main.cc); also callable as
// `iptkit-fleet COMMAND ...`. A program of its own so that only it loads the etcd client and OpenSSL.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "tools/iptkit/cli_fleet.h"
#include "tools/iptkit/cli_runner.h"

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] != "fleet") args.insert(args.begin(), "fleet");
    return iptkit::cli::FleetMain(args, std::cin, std::cout, std::cerr);
  } catch (const std::exception& e) {
    // main() is the last catch site (STYLE.md): whatever escaped is a bug.
    std::cerr << "iptkit: fleet: internal error: " << e.what() << "\n";
    return iptkit::cli::kExitInternal;
  }
}
