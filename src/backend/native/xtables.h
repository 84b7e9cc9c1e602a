// Xtables: iptables' extension library (libxtables and the libxt_*.so extensions it loads) used in-process, the
// way iptables-nft 1.8.9 uses it, without running iptables: rule specs are parsed into the binary extension
// payloads the kernel gets (Parse), and payloads read from the kernel are printed exactly as iptables-save prints
// them (Format).
//
// libxtables is not reentrant (process-global parameters, getopt state, per-extension flags) and reports errors by
// calling an exit handler that must not return. So:
//  - every call into it runs on one dedicated thread, one job at a time, holding dialect::XtablesMutex() (the
//    dialect's option catalog is the only other user in the process);
//  - its exit handler longjmp()s back into the job (only C frames of libxtables and the extensions lie between),
//    and the error becomes an InvalidArgument Status that names the offending token;
//  - per-rule state is reset before each rule: each extension use works on a private copy of the extension's
//    descriptor (so flags, udata and payload of one rule never leak into the next), getopt is re-initialized;
//  - extensions are loaded from the compiled-in directory only (libipt_/libip6t_/libxt_NAME.so). libxtables'
//    own search path is never used, so XTABLES_LIBDIR / IPTABLES_LIB_DIR / IP6TABLES_LIB_DIR in the environment
//    cannot make the process load code from elsewhere; xtables_init() (which reads them) is never called;
//  - a process whose real and effective uid or gid differ is refused (libxtables would _exit(111) there):
//    FailedPrecondition asking the caller to call setresuid()/setresgid() first.
// Revisions are picked as iptables-nft does: the highest one the kernel's nft_compat supports (asked over netlink,
// NFNL_MSG_COMPAT_GET, cached per process).
// Extension save functions print to stdout; Format captures that by pointing fd 1 at a memory file for the
// duration of a batch while holding stdout's stdio lock, so other threads' stdio output waits and is not mixed in.
// A call whose target network namespace is the one the calling thread is in runs on the calling thread (under the
// same mutex and captures): a one-command process never starts a thread or hands a job over. Any other call runs on
// a worker thread, started on first need, that enters the namespace the call names (setns affects only that
// thread): extensions that ask the kernel (ipset names behind -m set / -j SET) then ask about the right one. What
// extensions print to stderr (warnings) is captured the same way as stdout and not passed on. Thread-safety: all
// members may be called from any thread; calls into libxtables are serialized by the mutex.
//
//   IPTKIT_ASSIGN_OR_RETURN(Xtables* xt, Xtables::Instance());
//   std::vector<Result<XtRule>> parsed = xt->Parse(Family::kIPv4, {&rule});
//   std::vector<Result<std::string>> text = xt->Format({&*parsed[0]});   // "-p tcp -m tcp --dport 22 -j ACCEPT"
#ifndef IPTKIT_SRC_BACKEND_NATIVE_XTABLES_H_
#define IPTKIT_SRC_BACKEND_NATIVE_XTABLES_H_

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/native/xt_rule.h"

namespace iptkit::backend::native {

class Xtables {
 public:
  // The process-wide instance (the worker thread starts on first use and lives until exit). FailedPrecondition
  // when libxtables cannot be used in this process (real and effective uid or gid differ).
  static Result<Xtables*> Instance();

  // Model rules → binary rules, one result per rule: header fields parsed as iptables does (addresses and masks,
  // interface wildcards, protocol names), each match and the target through its extension's own option parser
  // and final check. Errors are InvalidArgument naming the token (details.token) and the extension, with
  // libxtables' message; an extension that does not exist is InvalidArgument too. Rules are taken as validated by
  // ValidateRule (numeric addresses only: nothing here ever resolves a host name).
  // `netns_fd`: the network namespace the extensions talk to the kernel about (-1: the process's own); ipset names
  // are resolved there.
  std::vector<Result<XtRule>> Parse(Family family, const std::vector<const Rule*>& rules, int netns_fd = -1);

  // Binary rules → the rule spec iptables-nft-save 1.8.9 prints after "-A CHAIN" (without a leading blank, "" for
  // an empty rule). Extension payloads are printed by their extensions' save functions; results per distinct
  // payload are cached. An error (e.g. an extension revision libxtables does not have) fails that rule only.
  std::vector<Result<std::string>> Format(const std::vector<const XtRule*>& rules, int netns_fd = -1);

  // Binary rules → model rules: exactly what the text parser gives for Format's text (ParseRuleSpec), built
  // directly: header fields from the binary header, each extension's Match / Target parsed once from its save
  // function's text and cached per payload. An error (see Format) fails that rule only.
  std::vector<Result<Rule>> ToRules(const std::vector<const XtRule*>& rules, int netns_fd = -1);
  // The same built in place: *out[i] becomes the model of rules[i] (an empty Rule where it fails); the errors by
  // index in `rules`.
  std::map<size_t, Status> ToRules(const std::vector<const XtRule*>& rules, const std::vector<Rule*>& out,
                                   int netns_fd = -1);

  // How many jobs ran, and how many of them on the worker thread (tests, benchmarks).
  uint64_t jobs() const;
  uint64_t worker_jobs() const;

  Xtables(const Xtables&) = delete;
  Xtables& operator=(const Xtables&) = delete;

 private:
  Xtables();
  ~Xtables();
  // Hash of string keys that also finds them by std::string_view (no key copied for a lookup).
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  template <typename V>
  using KeyMap = std::unordered_map<std::string, V, KeyHash, std::equal_to<>>;
  // One extension of a rule to print, and the key its text is cached under (owned by the caller).
  struct ExtItem {
    const XtRule* rule;
    const XtExtension* ext;
    bool target;
    std::string_view key;
  };
  // The save text (" -m NAME OPTIONS" / " -j NAME OPTIONS") of each item, or (in `errors`, by item index) why it
  // cannot be printed. `cache_texts`: texts are looked up in and added to print_cache_.
  void PrintExtensions(const std::vector<ExtItem>& items, int netns_fd, bool cache_texts,
                       std::vector<std::string>& texts, std::map<size_t, Status>& errors);
  // An extension's parsed model form, or why there is none.
  struct Piece {
    std::unique_ptr<Status> error;  // (a Status is large; pieces are many and nearly always fine)
    Match match;
    Target target;
  };
  std::mutex pieces_mu_;
  KeyMap<Piece> pieces_;     // references stay valid while other keys are added
  size_t pieces_users_ = 0;  // ToRules calls holding pointers into pieces_ (it is emptied only when none does)

  // Runs `job` for namespace `netns_fd` (-1: the process's own): on the calling thread when that thread is in
  // that namespace, else on the worker thread (which EnterNetns() moves there), and waits for it.
  // `capture_stderr` false: the job runs no extension code (nothing of it can print), and a job on the calling
  // thread then leaves stderr alone (a job on the worker thread captures it anyway).
  void Run(int netns_fd, const std::function<void()>& job, bool capture_stderr = true);
  // One job with libxtables' parameters set and (unless told otherwise) its stderr captured; the caller holds no
  // lock.
  void RunJob(const std::function<void()>& job, bool capture_stderr = true);
  void WorkerLoop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>*> queue_;
  // The process the worker thread runs in (0: none started yet; a forked child starts its own).
  std::atomic<pid_t> worker_pid_{0};
  uint64_t jobs_ = 0;
  uint64_t worker_jobs_ = 0;

  // Worker-thread state (touched only by jobs).
  KeyMap<std::string> print_cache_;
  std::string last_warnings_;  // what extensions last printed to stderr
};

// The source or destination of a rule header as libxtables parses it (address and mask, the address masked).
struct DirectAddress {
  uint8_t addr[16];  // IPv4: the first 4 bytes
  uint8_t mask[16];
};
// The common forms of a header address, parsed as libxtables' xtables_ipparse_multiple /
// xtables_ip6parse_multiple parse them, without it: IPv4 "a.b.c.d" or "a.b.c.d/N" in plain decimal, an IPv6
// literal (inet_pton) with an optional "/N". nullopt for every other form (dotted masks, octal or shortened IPv4,
// lists), which Parse leaves to libxtables. Pure; exposed for tests (compared with libxtables').
std::optional<DirectAddress> DirectParseAddress(Family family, std::string_view spec);
// The protocol number libxtables' xtables_parse_protocol gives `name` (lower case): plain decimal, iptables' own
// names ("all" among them), then the system's (getprotobyname); nullopt for other numerals and unknown names (left
// to libxtables, which also words the error). Exposed for tests.
std::optional<uint16_t> DirectParseProtocol(std::string_view name);

// The header part of a save line (" -s 10.0.0.0/8 -i eth0 -p tcp", leading blank per field), as iptables-nft-save
// prints it (xshared.c save_ipv4_addr / save_ipv6_addr / save_rule_details). Pure; exposed for tests.
std::string FormatHeader(Family family, const XtHeader& header);

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_XTABLES_H_
