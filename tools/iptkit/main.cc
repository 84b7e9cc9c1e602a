// iptkit: the command-line interface (docs/cli.md). Everything but the process boundary lives in cli_runner;
// `iptkit fleet ...` is the program iptkit-fleet beside this one (fleet_main.cc), executed here.
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "tools/iptkit/cli_runner.h"

namespace {

// Replaces the process with iptkit-fleet from the directory of this executable; returns only on failure.
int ExecFleet(char** argv) {
  std::string self(4096, '\0');
  const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) {
    std::cerr << "iptkit: fleet: cannot find the iptkit executable: " << std::strerror(errno) << "\n";
    return iptkit::cli::kExitInternal;
  }
  self.resize(static_cast<size_t>(n));
  const std::string helper = self.substr(0, self.rfind('/') + 1) + "iptkit-fleet";
  argv[0] = const_cast<char*>(helper.c_str());
  ::execv(helper.c_str(), argv);
  std::cerr << "iptkit: fleet: cannot run " << helper << ": " << std::strerror(errno) << "\n";
  return iptkit::cli::kExitInternal;
}

}  // namespace

int main(int argc, char** argv) {
  // One short process: memory comes from the heap's break and stays there until exit. glibc would map each block of
  // 128 KiB or more by itself (the netlink batch, a dump's buffers) and unmap it when freed, and give the top of the
  // heap back when it shrinks: each of those is a system call plus a TLB flush, which on a virtual machine costs
  // more than the page faults the memory brings (README, "Whole processes").
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  try {
    if (argc > 1 && std::string_view(argv[1]) == "fleet") return ExecFleet(argv);
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
