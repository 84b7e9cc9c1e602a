#include "tests/integration/netns_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

namespace iptkit::integration {
namespace {

constexpr const char* kSearchPath[] = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};
constexpr std::string_view kNetnsPrefix = "iptkit-it-";

std::string ErrnoText(int err) { return std::strerror(err); }

std::string ResolveTool(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : kSearchPath) {
    std::string candidate = std::string(dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string Join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

// Namespaces of test binaries that died without running their destructors.
void DeleteStaleNamespaces() {
  static std::once_flag once;
  std::call_once(once, [] {
    DIR* dir = opendir("/run/netns");
    if (dir == nullptr) return;
    std::vector<std::string> stale;
    while (dirent* entry = readdir(dir)) {
      std::string_view name = entry->d_name;
      if (!name.starts_with(kNetnsPrefix)) continue;
      std::string_view rest = name.substr(kNetnsPrefix.size());
      pid_t pid = static_cast<pid_t>(std::atol(std::string(rest.substr(0, rest.find('-'))).c_str()));
      if (pid <= 0 || pid == getpid()) continue;
      if (kill(pid, 0) != 0 && errno == ESRCH) stale.emplace_back(name);
    }
    closedir(dir);
    for (const auto& name : stale) RunCommand({"ip", "netns", "del", name});
  });
}

}  // namespace

std::string_view VariantName(Variant variant) { return variant == Variant::kNft ? "nft" : "legacy"; }

std::string CommandResult::Describe() const {
  std::ostringstream out;
  out << "'" << command << "' exited " << exit_code;
  if (!err.empty()) out << "; stderr: " << err;
  if (!out.str().empty() && !this->out.empty() && this->out.size() < 2000) out << "; stdout: " << this->out;
  return out.str();
}

bool IsRoot() { return geteuid() == 0; }

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& netns_path, std::string_view input,
                         std::chrono::milliseconds timeout) {
  CommandResult result;
  result.command = Join(argv);
  if (argv.empty()) return result;
  // A child that exits without reading all of its stdin must not kill the test binary with SIGPIPE.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { signal(SIGPIPE, SIG_IGN); });
  std::string path = ResolveTool(argv[0]);
  if (path.empty()) {
    result.err = "tool not found: " + argv[0];
    return result;
  }
  int ns_fd = -1;
  if (!netns_path.empty()) {
    ns_fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
      result.err = "open " + netns_path + ": " + ErrnoText(errno);
      return result;
    }
  }
  // Everything the child needs is built before fork: only async-signal-safe calls happen in the child.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  static char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  static char env_lang[] = "LC_ALL=C";
  char* envp[] = {env_path, env_lang, nullptr};

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return result;
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return result;
  pid_t pid = fork();
  if (pid == 0) {
    if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) _exit(126);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close_range(3, ~0U, 0);
    execve(path.c_str(), cargv.data(), envp);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (ns_fd >= 0) close(ns_fd);
  if (pid < 0) {
    result.err = "fork: " + ErrnoText(errno);
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }
  int in_fd = in_pipe[1];
  fcntl(in_fd, F_SETFL, O_NONBLOCK);
  size_t written = 0;
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  }
  int out_fd = out_pipe[0], err_fd = err_pipe[0];
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool killed = false;
  char buf[65536];
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    int rc = poll(fds, n, killed ? 1000 : static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (rc < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        ssize_t w = write(in_fd, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = input.size();
        if (written == input.size()) {
          close(in_fd);
          in_fd = -1;
        }
        continue;
      }
      ssize_t r = read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        (fds[i].fd == out_fd ? result.out : result.err).append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        close(fds[i].fd);
        (fds[i].fd == out_fd ? out_fd : err_fd) = -1;
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.exit_code = 128 + WTERMSIG(status);
  if (killed) result.err += "\n(killed after timeout)";
  return result;
}

std::string IptablesTool(Variant variant, Family family, std::string_view suffix) {
  std::string tool = family == Family::kIPv4 ? "iptables" : "ip6tables";
  tool += variant == Variant::kNft ? "-nft" : "-legacy";
  tool += suffix;
  return tool;
}

std::string StripSaveComments(std::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    size_t next = end == std::string_view::npos ? text.size() : end + 1;
    std::string_view line = text.substr(pos, next - pos);
    if (!line.starts_with("#")) out.append(line);
    pos = next;
  }
  return out;
}

std::map<std::string, std::string> SplitTables(std::string_view text) {
  std::map<std::string, std::string> tables;
  std::string current;
  std::string block;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("#")) continue;
    if (line.starts_with("*")) {
      current = line.substr(1);
      block.clear();
    }
    if (current.empty()) continue;
    block += line + "\n";
    if (line == "COMMIT") {
      tables[current] = block;
      current.clear();
    }
  }
  return tables;
}

std::map<std::string, std::string> ChainTexts(std::string_view table_block) {
  std::map<std::string, std::string> chains;
  std::istringstream in{std::string(table_block)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(":")) {
      std::string name = line.substr(1, line.find(' ') - 1);
      chains[name] = line + "\n" + chains[name];
    } else if (line.starts_with("-A ")) {
      size_t end = line.find(' ', 3);
      chains[line.substr(3, end - 3)] += line + "\n";
    }
  }
  return chains;
}

Status VariantUsable(const TestNetns& ns, Variant variant, Family family) {
  CommandResult r = ns.Iptables(variant, family, {"-w", "5", "-t", "filter", "-S"});
  if (!r.ok()) return Status::Unavailable(std::string(VariantName(variant)) + " unusable: " + r.Describe());
  return Status::Ok();
}

Result<std::unique_ptr<TestNetns>> TestNetns::Create() {
  if (!IsRoot()) return Status::PermissionDenied("integration tests need root");
  DeleteStaleNamespaces();
  static std::atomic<int> counter{0};
  std::string name = std::string(kNetnsPrefix) + std::to_string(getpid()) + "-" + std::to_string(counter++);
  CommandResult add = RunCommand({"ip", "netns", "add", name});
  if (!add.ok()) return Status::Unavailable("cannot create netns: " + add.Describe());
  std::unique_ptr<TestNetns> ns(new TestNetns(name));  // deletes it again if the next step fails
  CommandResult lo = ns->Exec({"ip", "link", "set", "lo", "up"});
  if (!lo.ok()) return Status::Internal(lo.Describe());
  return ns;
}

TestNetns::~TestNetns() {
  CommandResult del = RunCommand({"ip", "netns", "del", name_});
  if (!del.ok()) std::fprintf(stderr, "warning: %s\n", del.Describe().c_str());
}

CommandResult TestNetns::Exec(const std::vector<std::string>& argv, std::string_view input) const {
  return RunCommand(argv, path(), input);
}

CommandResult TestNetns::Iptables(Variant variant, Family family, const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {IptablesTool(variant, family)};
  argv.insert(argv.end(), args.begin(), args.end());
  return Exec(argv);
}

CommandResult TestNetns::Restore(Variant variant, Family family, std::string_view text, bool noflush) const {
  std::vector<std::string> argv = {IptablesTool(variant, family, "-restore")};
  if (noflush) argv.push_back("--noflush");
  return Exec(argv, text);
}

Result<std::string> TestNetns::Save(Variant variant, Family family, const std::string& table, bool counters) const {
  std::vector<std::string> argv = {IptablesTool(variant, family, "-save")};
  if (!table.empty()) argv.insert(argv.end(), {"-t", table});
  if (counters) argv.push_back("-c");
  CommandResult r = Exec(argv);
  if (!r.ok()) return Status::Internal(r.Describe());
  // The warnings go to stderr or into "#" lines of stdout; rule text (comments!) may contain anything.
  std::string notes = r.err;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) {
    if (line.starts_with("#")) notes += line + "\n";
  }
  for (std::string_view bad : {"Parsing nftables rule failed", "incompatible", "tables present"}) {
    if (notes.find(bad) != std::string::npos) {
      return Status::Internal("incomplete save output: " + r.Describe());
    }
  }
  return StripSaveComments(r.out);
}

Result<std::string> TestNetns::NftListRuleset() const {
  CommandResult r = Exec({"nft", "list", "ruleset"});
  if (!r.ok()) return Status::Internal(r.Describe());
  return r.out;
}

Result<uint64_t> TestNetns::NstatCounter(std::string_view name) const {
  CommandResult r = Exec({"nstat", "-a", "-s", "-z", std::string(name)});
  if (!r.ok()) return Status::Internal(r.Describe());
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t value = 0;
    if (fields >> key >> value && key == name) return value;
  }
  return Status::NotFound("nstat printed no " + std::string(name) + ": " + r.out);
}

Result<VethLink> ConnectVeth(const TestNetns& a, const TestNetns& b) {
  static std::atomic<int> counter{0};
  int n = counter++ % 250 + 1;
  VethLink link;
  link.a_dev = "veth-a" + std::to_string(n);
  link.b_dev = "veth-b" + std::to_string(n);
  link.a_ipv4 = "10.200." + std::to_string(n) + ".1";
  link.b_ipv4 = "10.200." + std::to_string(n) + ".2";
  link.a_ipv6 = "fd00:200:" + std::to_string(n) + "::1";
  link.b_ipv6 = "fd00:200:" + std::to_string(n) + "::2";
  // Created inside a and moved to b directly: no interface ever exists in the caller's namespace.
  std::vector<std::vector<std::string>> steps_a = {
      {"ip", "link", "add", "name", link.a_dev, "type", "veth", "peer", "name", link.b_dev, "netns", b.name()},
      {"ip", "addr", "add", link.a_ipv4 + "/24", "dev", link.a_dev},
      {"ip", "addr", "add", link.a_ipv6 + "/64", "dev", link.a_dev, "nodad"},
      {"ip", "link", "set", link.a_dev, "up"},
  };
  for (const auto& step : steps_a) {
    CommandResult r = a.Exec(step);
    if (!r.ok()) return Status::Internal(r.Describe());
  }
  std::vector<std::vector<std::string>> steps_b = {
      {"ip", "addr", "add", link.b_ipv4 + "/24", "dev", link.b_dev},
      {"ip", "addr", "add", link.b_ipv6 + "/64", "dev", link.b_dev, "nodad"},
      {"ip", "link", "set", link.b_dev, "up"},
  };
  for (const auto& step : steps_b) {
    CommandResult r = b.Exec(step);
    if (!r.ok()) return Status::Internal(r.Describe());
  }
  auto mac_of = [](const TestNetns& ns, const std::string& dev) -> Result<std::string> {
    CommandResult r = ns.Exec({"ip", "-o", "link", "show", "dev", dev});
    if (!r.ok()) return Status::Internal(r.Describe());
    size_t at = r.out.find("link/ether ");
    if (at == std::string::npos) return Status::Internal("no MAC in: " + r.out);
    return r.out.substr(at + 11, 17);
  };
  IPTKIT_ASSIGN_OR_RETURN(std::string a_mac, mac_of(a, link.a_dev));
  IPTKIT_ASSIGN_OR_RETURN(std::string b_mac, mac_of(b, link.b_dev));
  // Static neighbours: the first datagram of a stream must not wait for (or be dropped by) resolution.
  for (const auto& [ns, addr, mac, dev] :
       {std::tuple{&a, link.b_ipv4, b_mac, link.a_dev}, std::tuple{&a, link.b_ipv6, b_mac, link.a_dev},
        std::tuple{&b, link.a_ipv4, a_mac, link.b_dev}, std::tuple{&b, link.a_ipv6, a_mac, link.b_dev}}) {
    CommandResult r = ns->Exec({"ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"});
    if (!r.ok()) return Status::Internal(r.Describe());
  }
  return link;
}

Status RunInNetns(const std::string& netns_path, const std::function<Status()>& fn) {
  Status status;
  std::thread worker([&] {
    int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      status = Status::Internal("open " + netns_path + ": " + ErrnoText(errno));
      return;
    }
    // setns affects only this thread, which ends right after fn.
    int rc = setns(fd, CLONE_NEWNET);
    int err = errno;
    close(fd);
    if (rc != 0) {
      status = Status::Internal("setns " + netns_path + ": " + ErrnoText(err));
      return;
    }
    status = fn();
  });
  worker.join();
  return status;
}

}  // namespace iptkit::integration
