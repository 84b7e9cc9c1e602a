// iptkit: the command-line interface (docs/cli.md). Everything but the process boundary lives in cli_runner.
#include <unistd.h>

#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "tools/iptkit/cli_runner.h"

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    iptkit::cli::Environment env;
    env.stderr_is_terminal = isatty(STDERR_FILENO) == 1;
    return iptkit::cli::Main(args, std::cin, std::cout, std::cerr, nullptr, env);
  } catch (const std::exception& e) {
    // main() is the last catch site (STYLE.md): whatever escaped is a bug.
    std::cerr << "iptkit: internal error: " << e.what() << "\n";
    return iptkit::cli::kExitInternal;
  }
}
