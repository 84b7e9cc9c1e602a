#include "tests/cli/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <sstream>

namespace iptkit::clitest {
namespace {

void CloseIfOpen(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_text, int timeout_seconds) {
  RunOptions options;
  options.timeout_seconds = timeout_seconds;
  return RunProcess(argv, stdin_text, options);
}

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_text,
                         const RunOptions& options) {
  const int timeout_seconds = options.timeout_seconds;
  ProcessResult result;
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.err = "pipe failed";
    return result;
  }
  if (options.stderr_terminal) {
    // err_pipe[0]: the master (read here), err_pipe[1]: the terminal the child writes to.
    termios raw{};
    cfmakeraw(&raw);
    if (openpty(&err_pipe[0], &err_pipe[1], nullptr, &raw, nullptr) != 0) {
      result.err = "openpty failed";
      return result;
    }
    fcntl(err_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(err_pipe[1], F_SETFD, FD_CLOEXEC);
  } else if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = "pipe failed";
    return result;
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  static char kPath[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  static char kLang[] = "LC_ALL=C";
  char* env[] = {kPath, kLang, nullptr};

  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (options.uid) {
      if (setgroups(0, nullptr) != 0 || setgid(*options.uid) != 0 || setuid(*options.uid) != 0) _exit(126);
    }
    execve(args[0], args.data(), env);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  int in_fd = in_pipe[1], out_fd = out_pipe[0], err_fd = err_pipe[0];
  if (pid < 0) {
    CloseIfOpen(in_fd);
    CloseIfOpen(out_fd);
    CloseIfOpen(err_fd);
    result.err = "fork failed";
    return result;
  }
  fcntl(in_fd, F_SETFL, O_NONBLOCK);
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  if (stdin_text.empty()) CloseIfOpen(in_fd);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  bool killed = false;
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    int ready = poll(fds, static_cast<nfds_t>(n), 200);
    if (std::chrono::steady_clock::now() > deadline && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    if (ready <= 0) continue;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        ssize_t w = write(in_fd, stdin_text.data() + written, stdin_text.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = stdin_text.size();
        if (written >= stdin_text.size()) CloseIfOpen(in_fd);
        continue;
      }
      char buf[65536];
      ssize_t r = read(fds[i].fd, buf, sizeof buf);
      std::string& sink = fds[i].fd == out_fd ? result.out : result.err;
      if (r > 0) {
        sink.append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {  // a terminal's master reads EIO once the child is gone
        CloseIfOpen(fds[i].fd == out_fd ? out_fd : err_fd);
      }
    }
  }
  CloseIfOpen(in_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string path = dir + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

TestNetns::TestNetns() {
  static std::atomic<int> counter{0};
  name_ = "iptkit-cli-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  std::string ip = FindTool("ip");
  if (ip.empty()) return;
  ok_ = RunProcess({ip, "netns", "add", name_}).code == 0;
}

TestNetns::~TestNetns() {
  if (ok_) (void)RunProcess({FindTool("ip"), "netns", "del", name_});
}

ProcessResult TestNetns::Exec(const std::vector<std::string>& tool_and_args, const std::string& stdin_text) const {
  std::vector<std::string> argv = {FindTool("ip"), "netns", "exec", name_};
  argv.insert(argv.end(), tool_and_args.begin(), tool_and_args.end());
  return RunProcess(argv, stdin_text);
}

std::string StripSaveComments(const std::string& text) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    out += line + "\n";
  }
  return out;
}

}  // namespace iptkit::clitest
