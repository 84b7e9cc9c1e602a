// RunSubprocess: runs one program to completion, feeding stdin and collecting stdout/stderr, optionally inside
// another network namespace. This is how iptkit talks to iptables-*-save/-restore, nft, ipset and nfacct.
//
// Contract (docs/architecture.md §3):
//  - fork + execve of an absolute path with the given argv; never a shell, never a PATH lookup. posix_spawn is
//    not used because the child must setns(2) before exec.
//  - The child gets exactly PATH=/usr/sbin:/usr/bin:/sbin:/bin, LC_ALL=C and `extra_env`; nothing is inherited,
//    so XTABLES_LIBDIR, IPTABLES_LIB_DIR, LD_PRELOAD & co. of the caller never reach it.
//  - fds 0/1/2 are pipes to the parent; every other descriptor is closed before exec.
//  - With `netns_fd` >= 0 the child calls setns(netns_fd, CLONE_NEWNET) first.
//  - The child sets real ids := effective ids (setresgid/setresuid) when they differ: libxtables _exit(111)s
//    when getuid() != geteuid() (iptables libxtables/xtables.c, xtables_init), which is the case in a setuid
//    caller.
//  - The child runs in its own process group; on timeout the whole group gets SIGKILL and the call returns
//    Unavailable. The call never hangs past `timeout` (plus reaping).
//  - The child gets SIGKILL when the calling thread dies (PR_SET_PDEATHSIG; the caller waits for it, so only when
//    the process is killed): a killed daemon leaves no iptables-restore running that could commit later.
//  - SIGPIPE is not raised in the caller when the child stops reading stdin early.
// A non-zero exit code is not an error of RunSubprocess: it is reported in the result. Errors are only "could
// not run it" (fork/pipe/setns/exec failures: the errno of the failing step, e.g. NotFound for a missing
// program) and timeouts.
// Thread-safety: safe to call concurrently from several threads (all descriptors are O_CLOEXEC; the child only
// makes async-signal-safe calls).
//
//   IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r,
//       RunSubprocess(Cmd("/usr/sbin/iptables-nft-save", {"iptables-nft-save", "-c"}).Netns(ns.get())));
//   if (r.exit_code != 0) return Status::Internal("iptables-nft-save failed: " + r.stderr_text);
#ifndef IPTKIT_SRC_BASE_SUBPROCESS_H_
#define IPTKIT_SRC_BASE_SUBPROCESS_H_

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/status.h"

namespace iptkit::base {

struct SubprocessOptions {
  std::string path;               // absolute path of the program; relative paths are refused
  std::vector<std::string> argv;  // argv[0] included; empty → {path}
  std::string stdin_data;         // written to the child's stdin, which is then closed
  int netns_fd = -1;              // network namespace to enter in the child; -1 = the caller's
  // Added to the fixed environment (a name given here replaces PATH or LC_ALL).
  std::vector<std::pair<std::string, std::string>> extra_env;
  std::chrono::milliseconds timeout = std::chrono::seconds(60);

  // Fluent setters for temporaries: Cmd("/bin/cat").Stdin(text).Netns(fd). (Designated initializers that skip
  // members trip GCC 12's -Wmissing-field-initializers.)
  SubprocessOptions Stdin(std::string data) && {
    stdin_data = std::move(data);
    return std::move(*this);
  }
  SubprocessOptions Netns(int fd) && {
    netns_fd = fd;
    return std::move(*this);
  }
  SubprocessOptions Env(std::vector<std::pair<std::string, std::string>> vars) && {
    extra_env = std::move(vars);
    return std::move(*this);
  }
  SubprocessOptions Timeout(std::chrono::milliseconds t) && {
    timeout = t;
    return std::move(*this);
  }
};

// Options to run `path` with `argv` (argv[0] included; empty → {path}).
inline SubprocessOptions Cmd(std::string path, std::vector<std::string> argv = {}) {
  SubprocessOptions options;
  options.path = std::move(path);
  options.argv = std::move(argv);
  return options;
}

struct SubprocessResult {
  int exit_code = 0;    // exit status; 128 + N when killed by signal N
  int term_signal = 0;  // the signal that ended the child, 0 when it exited
  std::string stdout_text;
  std::string stderr_text;
};

Result<SubprocessResult> RunSubprocess(const SubprocessOptions& options);

// "path arg1 arg2" for messages (arguments with blanks or quotes are double-quoted).
std::string DescribeCommand(const SubprocessOptions& options);

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_SUBPROCESS_H_
