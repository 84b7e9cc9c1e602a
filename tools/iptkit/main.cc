// iptkit: the command-line interface (docs/cli.md). Everything but the process boundary lives in cli_runner;
// `iptkit fleet ...` is the program iptkit-fleet beside this one (fleet_main.cc), executed here.
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <ext/stdio_sync_filebuf.h>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "tools/iptkit/cli_runner.h"

namespace {

// The process's three streams, as std::cin / std::cout / std::cerr are (through C stdio, so that what libraries
// print with printf keeps its place), without <iostream>: its initializer constructs eight stream objects, the
// wide ones included, each with its locale, at the start of every process (libstdc++ ios_init.cc), which showed
// in the profile of a one-rule command.
struct Streams {
  __gnu_cxx::stdio_sync_filebuf<char> in_buf{stdin};
  __gnu_cxx::stdio_sync_filebuf<char> out_buf{stdout};
  __gnu_cxx::stdio_sync_filebuf<char> err_buf{stderr};
  std::istream in{&in_buf};
  std::ostream out{&out_buf};
  std::ostream err{&err_buf};
  Streams() {
    // As std::cin and std::cerr are: tied to the output (which is flushed before a read or an error message), and
    // the error stream unit-buffered.
    in.tie(&out);
    err.tie(&out);
    err.setf(std::ios_base::unitbuf);
  }
};

// Replaces the process with iptkit-fleet from the directory of this executable; returns only on failure.
int ExecFleet(char** argv) {
  std::string self(4096, '\0');
  const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) {
    std::fprintf(stderr, "iptkit: fleet: cannot find the iptkit executable: %s\n", std::strerror(errno));
    return iptkit::cli::kExitInternal;
  }
  self.resize(static_cast<size_t>(n));
  const std::string helper = self.substr(0, self.rfind('/') + 1) + "iptkit-fleet";
  argv[0] = const_cast<char*>(helper.c_str());
  ::execv(helper.c_str(), argv);
  std::fprintf(stderr, "iptkit: fleet: cannot run %s: %s\n", helper.c_str(), std::strerror(errno));
  return iptkit::cli::kExitInternal;
}

}  // namespace

int main(int argc, char** argv) {
  // One short process: memory comes from the heap's break and stays there until exit. glibc would map each block of
  // 128 KiB or more by itself (the netlink batch, a dump's buffers) and unmap it when freed, and give the top of the
  // heap back when it shrinks: each of those is a system call plus a TLB flush, which on a virtual machine costs
  // more than the page faults the memory brings (docs/benchmarks.md, "Whole processes").
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  try {
    if (argc > 1 && std::string_view(argv[1]) == "fleet") return ExecFleet(argv);
    std::vector<std::string> args(argv + 1, argv + argc);
    iptkit::cli::Environment env;
    env.stderr_is_terminal = isatty(STDERR_FILENO) == 1;
    Streams streams;
    return iptkit::cli::Main(args, streams.in, streams.out, streams.err, nullptr, env);
  } catch (const std::exception& e) {
    // main() is the last catch site (STYLE.md): whatever escaped is a bug.
    std::fprintf(stderr, "iptkit: internal error: %s\n", e.what());
    return iptkit::cli::kExitInternal;
  }
}
