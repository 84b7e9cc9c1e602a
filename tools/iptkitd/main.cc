// iptkitd: the firewall daemon (docs/daemon.md). Everything but the process boundary lives in daemon.cc.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "tools/iptkitd/daemon.h"

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    return iptkit::daemon::Main(args, std::cout, std::cerr);
  } catch (const std::exception& e) {
    // main() is the last catch site (STYLE.md): whatever escaped is a bug.
    std::cerr << "iptkitd: internal error: " << e.what() << "\n";
    return 1;
  }
}
