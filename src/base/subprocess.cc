#include "src/base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "src/base/errno_status.h"
#include "src/base/unique_fd.h"

namespace iptkit::base {
namespace {

using Clock = std::chrono::steady_clock;

// What the child reports through the status pipe when it cannot exec.
struct ChildFailure {
  int stage;
  int err;
};
enum ChildStage : int { kStageSetns = 1, kStageDup, kStageIds, kStageExec };

const char* StageName(int stage) {
  switch (stage) {
    case kStageSetns:
      return "setns(CLONE_NEWNET) in child for";
    case kStageDup:
      return "dup2 in child for";
    case kStageIds:
      return "setresuid/setresgid in child for";
    case kStageExec:
      return "execve";
  }
  return "child setup for";
}

[[noreturn]] void ChildFail(int status_fd, int stage, int err) noexcept {
  ChildFailure failure{stage, err};
  ssize_t ignored = ::write(status_fd, &failure, sizeof(failure));
  (void)ignored;
  ::_exit(127);
}

// Moves `fd` to a descriptor >= 3 (so dup2 onto 0/1/2 never aliases) with FD_CLOEXEC set.
int MoveHigh(int fd) noexcept { return ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

void CloseFrom(int first, int last, int max_fd) noexcept {
  if (first > last) return;
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last), 0u) == 0) return;
  int upper = last < max_fd ? last : max_fd;
  for (int fd = first; fd <= upper; ++fd) ::close(fd);
}

// Runs in the forked child: only async-signal-safe calls, no allocation.
[[noreturn]] void ChildMain(const char* path, char* const* argv, char* const* envp, int netns_fd, int stdin_fd,
                            int stdout_fd, int stderr_fd, int status_fd, int max_fd, pid_t parent) noexcept {
  ::setpgid(0, 0);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for KILL/STOP
  sigset_t empty;
  ::sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);

  if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) ChildFail(status_fd, kStageSetns, errno);

  int in = MoveHigh(stdin_fd), out = MoveHigh(stdout_fd), err = MoveHigh(stderr_fd), st = MoveHigh(status_fd);
  if (in < 0 || out < 0 || err < 0 || st < 0) ChildFail(status_fd, kStageDup, errno);
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ChildFail(st, kStageDup, errno);

  gid_t egid = ::getegid();
  if (::getgid() != egid && ::setresgid(egid, egid, egid) != 0) ChildFail(st, kStageIds, errno);
  uid_t euid = ::geteuid();
  if (::getuid() != euid && ::setresuid(euid, euid, euid) != 0) ChildFail(st, kStageIds, errno);
  // Dies with the caller (after the id changes, which clear the setting: prctl(2)). A daemon killed with -9 must
  // not leave an iptables-restore behind that commits after a new instance has started.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the caller died before prctl

  // Everything but 0/1/2 and the status pipe (close-on-exec) goes.
  CloseFrom(3, st - 1, max_fd);
  CloseFrom(st + 1, INT_MAX, max_fd);

  ::execve(path, argv, envp);
  ChildFail(st, kStageExec, errno);
}

Status MakePipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2");
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return Status::Ok();
}

// Blocks SIGPIPE in the calling thread for its lifetime and discards a SIGPIPE raised meanwhile (a child that
// stops reading stdin makes write() fail with EPIPE and raise SIGPIPE on the writing thread).
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() noexcept {
    sigset_t pipe_set;
    ::sigemptyset(&pipe_set);
    ::sigaddset(&pipe_set, SIGPIPE);
    sigset_t pending;
    ::sigpending(&pending);
    was_pending_ = ::sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old_);
  }
  ~ScopedSigpipeBlock() noexcept {
    if (!was_pending_) {
      sigset_t pipe_set;
      ::sigemptyset(&pipe_set);
      ::sigaddset(&pipe_set, SIGPIPE);
      struct timespec zero = {0, 0};
      while (::sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

void KillAndReap(pid_t pid) noexcept {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

bool ValidEnvName(const std::string& name) {
  return !name.empty() && name.find('=') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

std::string DescribeCommand(const SubprocessOptions& options) {
  std::string out = options.path;
  for (size_t i = 1; i < options.argv.size(); ++i) {
    const std::string& arg = options.argv[i];
    out += ' ';
    if (!arg.empty() && arg.find_first_of(" \t\"'\\") == std::string::npos) {
      out += arg;
      continue;
    }
    out += '"';
    for (char c : arg) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out;
}

Result<SubprocessResult> RunSubprocess(const SubprocessOptions& options) {
  if (options.path.empty() || options.path[0] != '/') {
    return Status::InvalidArgument("subprocess path must be absolute, got '" + options.path + "'");
  }
  const std::string command = DescribeCommand(options);

  // Everything the child needs is built before fork(): the child must not allocate.
  std::vector<std::string> args = options.argv.empty() ? std::vector<std::string>{options.path} : options.argv;
  std::vector<std::pair<std::string, std::string>> env = {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"LC_ALL", "C"}};
  for (const auto& [name, value] : options.extra_env) {
    if (!ValidEnvName(name) || value.find('\0') != std::string::npos) {
      return Status::InvalidArgument("invalid environment variable name '" + name + "' for " + command);
    }
    bool replaced = false;
    for (auto& entry : env) {
      if (entry.first == name) {
        entry.second = value;
        replaced = true;
      }
    }
    if (!replaced) env.emplace_back(name, value);
  }
  std::vector<std::string> env_strings;
  env_strings.reserve(env.size());
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> argv_ptrs, envp_ptrs;
  for (auto& a : args) argv_ptrs.push_back(a.data());
  argv_ptrs.push_back(nullptr);
  for (auto& e : env_strings) envp_ptrs.push_back(e.data());
  envp_ptrs.push_back(nullptr);
  struct rlimit nofile;
  int max_fd = (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
                nofile.rlim_cur < static_cast<rlim_t>(INT_MAX))
                   ? static_cast<int>(nofile.rlim_cur)
                   : 65536;

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w, st_r, st_w;
  IPTKIT_RETURN_IF_ERROR(MakePipe(in_r, in_w));
  IPTKIT_RETURN_IF_ERROR(MakePipe(out_r, out_w));
  IPTKIT_RETURN_IF_ERROR(MakePipe(err_r, err_w));
  IPTKIT_RETURN_IF_ERROR(MakePipe(st_r, st_w));

  ScopedSigpipeBlock sigpipe_block;
  const Clock::time_point deadline = Clock::now() + options.timeout;

  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork for " + command);
  if (pid == 0) {
    ChildMain(options.path.c_str(), argv_ptrs.data(), envp_ptrs.data(), options.netns_fd, in_r.get(), out_w.get(),
              err_w.get(), st_w.get(), max_fd, parent);
  }
  ::setpgid(pid, pid);  // also done by the child; whichever runs first wins, so kill(-pid) works at once
  in_r.reset();
  out_w.reset();
  err_w.reset();
  st_w.reset();

  // The status pipe closes on a successful exec (O_CLOEXEC) or carries the failing step.
  ChildFailure failure{};
  size_t got = 0;
  while (got < sizeof(failure)) {
    ssize_t n = ::read(st_r.get(), reinterpret_cast<char*>(&failure) + got, sizeof(failure) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == sizeof(failure)) {
    KillAndReap(pid);
    if (failure.stage == kStageExec &&
        (failure.err == ENOENT || failure.err == EACCES || failure.err == ENOEXEC || failure.err == ENOTDIR)) {
      // A program that is not there (or not runnable) is a broken installation, not a missing rule or chain.
      return Status::Unavailable("cannot run " + options.path + ": " + ErrnoString(failure.err) + " (is it installed?)")
          .WithReason("tool_missing");
    }
    return ErrnoToStatus(failure.err, std::string(StageName(failure.stage)) + " " + command);
  }

  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    Status s = ErrnoToStatus(errno, "pidfd_open for " + command);
    KillAndReap(pid);
    return s;
  }

  if (options.stdin_data.empty()) {
    in_w.reset();
  } else if (::fcntl(in_w.get(), F_SETFL, O_NONBLOCK) != 0) {
    Status s = ErrnoToStatus(errno, "fcntl O_NONBLOCK for " + command);
    KillAndReap(pid);
    return s;
  }

  SubprocessResult result;
  size_t written = 0;
  bool exited = false;
  int wait_status = 0;
  char buffer[65536];
  while (out_r.valid() || err_r.valid() || !exited) {
    pollfd fds[4];
    int nfds = 0;
    int in_idx = -1, out_idx = -1, err_idx = -1, pid_idx = -1;
    if (in_w.valid()) {
      in_idx = nfds;
      fds[nfds++] = {in_w.get(), POLLOUT, 0};
    }
    if (out_r.valid()) {
      out_idx = nfds;
      fds[nfds++] = {out_r.get(), POLLIN, 0};
    }
    if (err_r.valid()) {
      err_idx = nfds;
      fds[nfds++] = {err_r.get(), POLLIN, 0};
    }
    if (!exited) {
      pid_idx = nfds;
      fds[nfds++] = {pidfd.get(), POLLIN, 0};
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      if (!exited)
        KillAndReap(pid);
      else
        ::kill(-pid, SIGKILL);  // a leftover of the group still holds the pipes
      return Status::Unavailable(command + " timed out after " + std::to_string(options.timeout.count()) +
                                 " ms (killed); stderr so far: " + result.stderr_text);
    }
    int ready = ::poll(fds, static_cast<nfds_t>(nfds), static_cast<int>(left > INT_MAX ? INT_MAX : left));
    if (ready < 0) {
      if (errno == EINTR) continue;
      Status s = ErrnoToStatus(errno, "poll for " + command);
      if (!exited) KillAndReap(pid);
      return s;
    }
    if (in_idx >= 0 && fds[in_idx].revents != 0) {
      ssize_t n = ::write(in_w.get(), options.stdin_data.data() + written, options.stdin_data.size() - written);
      if (n > 0) {
        written += static_cast<size_t>(n);
        if (written == options.stdin_data.size()) in_w.reset();
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        in_w.reset();  // EPIPE: the child stopped reading; its exit status tells the rest
      }
    }
    auto drain = [&](int idx, UniqueFd& fd, std::string& sink) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
      if (n > 0) {
        sink.append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        fd.reset();
      }
    };
    drain(out_idx, out_r, result.stdout_text);
    drain(err_idx, err_r, result.stderr_text);
    if (pid_idx >= 0 && fds[pid_idx].revents != 0) {
      pid_t r;
      do {
        r = ::waitpid(pid, &wait_status, 0);
      } while (r < 0 && errno == EINTR);
      exited = true;
      in_w.reset();
    }
  }

  if (WIFSIGNALED(wait_status)) {
    result.term_signal = WTERMSIG(wait_status);
    result.exit_code = 128 + result.term_signal;
  } else {
    result.exit_code = WEXITSTATUS(wait_status);
  }
  return result;
}

}  // namespace iptkit::base
