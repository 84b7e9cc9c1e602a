// Ipsets (include/iptkit/ipset.h): each operation is one libipset session (session.h) on a thread inside the
// target network namespace.
#include "iptkit/ipset.h"

#include <linux/netlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "src/base/netns.h"
#include "src/ipset/session.h"
#include "src/ipset/set_text.h"

namespace iptkit {
namespace {

using ipset::Report;
using ipset::Session;

// Lines per ipset_parse_stream call of a bulk operation: large enough for libipset to batch, small enough for
// progress to move.
constexpr size_t kChunkLines = 8192;

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// libipset is not thread-safe beyond its sessions: concurrent sessions on several threads corrupt each other's
// parsed elements (seen with 64 concurrent adds through iptkitd: "Null-valued element, cannot be stored in a hash
// type of set" for valid addresses, and adds answered OK that stored nothing). One libipset operation at a time in
// the process.
std::mutex& LibipsetMutex() {
  static std::mutex mu;
  return mu;
}

// Runs fn(session-opener) on a thread in the namespace, holding LibipsetMutex.
Status InNetns(const std::string& netns, std::string_view what, const std::function<Status()>& fn) {
  base::UniqueFd fd;
  if (!netns.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(fd, base::OpenNetns(netns));
  }
  return base::RunInNetnsThread(
      fd.get(),
      [&fn] {
        std::lock_guard<std::mutex> lock(LibipsetMutex());
        return fn();
      },
      what);
}

// Runs `text` in a new session; the first failure as a Status (prefixed with `what`).
Result<std::unique_ptr<Session>> RunText(std::string_view text, bool exist, std::string_view what) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::Open(exist));
  session->Run(text);
  if (const Report* r = session->FirstFailure()) return ipset::ReportStatus(*r, what);
  return session;
}

Result<std::vector<SetInfo>> ListHere(std::string_view name, bool with_entries) {
  std::string text = "list";
  if (!name.empty()) {
    IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
    text += " " + std::string(name);
  }
  if (!with_entries) text += " -terse";
  text += "\n";
  IPTKIT_ASSIGN_OR_RETURN(auto session, RunText(text, false, name.empty() ? "list" : "set " + Quote(name)));
  return ipset::ParseListOutput(session->output());
}

Result<SetInfo> GetHere(std::string_view name, bool with_entries) {
  IPTKIT_ASSIGN_OR_RETURN(std::vector<SetInfo> sets, ListHere(name, with_entries));
  if (sets.size() != 1) return Status::NotFound("set " + Quote(name) + " does not exist");
  return std::move(sets[0]);
}

Status RunHere(std::string_view text, bool exist, std::string_view what) {
  auto session = RunText(text, exist, what);
  return session.ok() ? Status::Ok() : session.status();
}

// A session for entries of the existing set `name` (del, test): it registers only that set's type with libipset
// (Session::SetTypes), whose header it asks for once, as libipset would for the line.
Result<std::unique_ptr<Session>> OpenForSet(std::string_view name, bool exist) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::Open(exist, Session::SetTypes::kNamedSets));
  session->CacheSetType(name);
  return session;
}

// ---- Single adds, batched ----
//
// Single adds (Ipsets::Add) of one namespace go through one worker thread inside it, started on demand and gone
// after kAddWorkerIdle without work: while it runs a batch, concurrent adds queue up, and the next batch runs them
// all as one stream (libipset puts consecutive adds to the same set into one netlink message). No thread and setns
// per add, one turn of LibipsetMutex per batch, and one libipset session (one netlink socket, one protocol
// handshake) for as long as the worker runs, not one per batch. A failing add fails alone: the stream resumes after
// its line (RunRefreshing), so each caller gets its own result; adds without -exist (no_refresh) run one line at a
// time in the same session (a partly applied stream would make them fail on their own entries). The exception: a
// caller already inside the namespace ("" as Ipsets' netns) whose add comes after kAddWorkerIdle without adds runs
// it on its own thread in a session of its own (the worker would have to open a new one too), so that a one-add
// process starts no thread; the process's first such adds do so before any worker for "" exists (RunFirstInline).
constexpr auto kAddWorkerIdle = std::chrono::milliseconds(500);
constexpr size_t kMaxAddBatch = 4096;

struct PendingAdd {
  std::string set{};
  std::string elem{};
  std::string line{};
  bool exist = true;
  Status status{};
  bool done = false;
  // What an error message says the add was (made only for one).
  std::string what() const { return "add " + Quote(elem) + " to set " + Quote(set); }
};

class AddWorker : public std::enable_shared_from_this<AddWorker> {
 public:
  // `netns_fd`: the namespace to enter (-1: the creating thread's, which the worker inherits).
  explicit AddWorker(base::UniqueFd netns_fd) : netns_fd_(std::move(netns_fd)) {}

  // The worker of `netns` as Ipsets names it, keyed by the namespace itself (device and inode), not by its name:
  // "" is the calling thread's namespace, and a name may be given to another namespace later.
  static Result<std::shared_ptr<AddWorker>> For(const std::string& netns) {
    static std::mutex mu;
    // Never destroyed: detached workers may outlive main.
    static auto* workers = new std::map<std::pair<dev_t, ino_t>, std::shared_ptr<AddWorker>>();
    base::UniqueFd fd;
    struct stat st {};
    if (netns.empty()) {
      if (::stat("/proc/thread-self/ns/net", &st) != 0) {
        return Status::Internal("stat /proc/thread-self/ns/net: " + std::string(std::strerror(errno)));
      }
    } else {
      // The worker of a namespace seen before, by the device and inode its file names now (one stat per batch);
      // a namespace not seen yet is opened and checked first.
      if (::stat(base::NetnsPath(netns).c_str(), &st) == 0) {
        std::lock_guard<std::mutex> lock(mu);
        auto it = workers->find({st.st_dev, st.st_ino});
        if (it != workers->end()) return it->second;
      }
      IPTKIT_ASSIGN_OR_RETURN(fd, base::OpenNetns(netns));
      if (::fstat(fd.get(), &st) != 0) {
        return Status::Internal("fstat of netns " + Quote(netns) + ": " + std::string(std::strerror(errno)));
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    std::shared_ptr<AddWorker>& w = (*workers)[{st.st_dev, st.st_ino}];
    if (!w) {
      w = std::make_shared<AddWorker>(std::move(fd));
      if (netns.empty()) {
        // Takes over from RunFirstInline: adds soon after its last one (or beside one it still runs) start the
        // thread, as they would have in this worker.
        FirstAdds& first = First();
        std::lock_guard<std::mutex> first_lock(first.mu);
        first.worker_made = true;
        w->last_done_ = first.busy ? std::chrono::steady_clock::now() : first.last_done;
      }
    }
    return w;
  }

  // The adds of a caller in its own namespace ("" as Ipsets' netns) while no worker for "" exists yet (the process's
  // first adds: `iptkit set add`) run on the calling thread in a session of their own, as the new worker's AddAll
  // would run them, without For("") and its stat of /proc/thread-self/ns/net: a new process's first walk of /proc
  // instantiates those entries (about 20-40 us, the largest system call of a one-add process, which ipset does not
  // make). False (nothing done) when the caller must go through For(""): a worker for "" exists, another such add
  // runs, or the last one ended less than kAddWorkerIdle ago (the next add starts the worker thread, as before).
  static bool RunFirstInline(const std::vector<PendingAdd*>& adds) {
    FirstAdds& first = First();
    {
      std::lock_guard<std::mutex> lock(first.mu);
      if (first.worker_made || first.busy || std::chrono::steady_clock::now() - first.last_done < kAddWorkerIdle) {
        return false;
      }
      first.busy = true;
    }
    std::unique_ptr<Session> session;
    RunBatch(adds, session);
    {
      std::lock_guard<std::mutex> ipset_lock(LibipsetMutex());
      session.reset();
    }
    std::lock_guard<std::mutex> lock(first.mu);
    first.busy = false;
    first.last_done = std::chrono::steady_clock::now();
    for (PendingAdd* a : adds) a->done = true;
    return true;
  }

  // Queues every add and returns when all are done (each with its status).
  void AddAll(const std::vector<PendingAdd*>& adds) {
    if (adds.empty()) return;
    std::unique_lock<std::mutex> lock(mu_);
    queue_.insert(queue_.end(), adds.begin(), adds.end());
    if (!running_ && !inline_ && netns_fd_.get() < 0 &&
        std::chrono::steady_clock::now() - last_done_ >= kAddWorkerIdle) {
      // No add for a while (the worker would open a new session too), and the caller is in the namespace already:
      // it runs what is queued itself, in a session of its own, instead of starting the thread (a one-add process
      // such as `iptkit set add` starts no thread and no second malloc arena). Adds that arrive meanwhile or soon
      // after start the thread as usual, which keeps its session while they go on.
      inline_ = true;
      std::vector<PendingAdd*> batch;
      batch.swap(queue_);
      lock.unlock();
      std::unique_ptr<Session> session;
      RunBatch(batch, session);
      {
        std::lock_guard<std::mutex> ipset_lock(LibipsetMutex());
        session.reset();
      }
      lock.lock();
      inline_ = false;
      last_done_ = std::chrono::steady_clock::now();
      for (PendingAdd* a : batch) a->done = true;
      done_.notify_all();
      return;
    }
    if (!running_) {
      running_ = true;
      try {
        std::thread([self = shared_from_this()] { self->Work(); }).detach();
      } catch (const std::system_error& e) {
        running_ = false;
        queue_.resize(queue_.size() - adds.size());
        for (PendingAdd* a : adds)
          a->status = Status::Internal(std::string("starting the ipset worker thread: ") + e.what());
        return;
      }
    } else {
      work_.notify_one();
    }
    done_.wait(lock, [&] { return adds.back()->done; });
  }

 private:
  // RunFirstInline's state: whether For("") made a worker yet, whether an add runs inline, when the last one ended.
  struct FirstAdds {
    std::mutex mu;
    bool worker_made = false;
    bool busy = false;
    std::chrono::steady_clock::time_point last_done{};
  };
  static FirstAdds& First() {
    static auto* first = new FirstAdds();  // never destroyed, as the workers
    return *first;
  }

  void Work() {
    Status entered = Status::Ok();
    if (netns_fd_.get() >= 0 && ::setns(netns_fd_.get(), CLONE_NEWNET) != 0) {
      entered = Status::Internal("setns (ipset add): " + std::string(std::strerror(errno)));
    }
    // The long-lived session of this thread (opened by the first batch); closed when the worker goes idle.
    std::unique_ptr<Session> session;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (!work_.wait_for(lock, kAddWorkerIdle, [&] { return !queue_.empty(); })) {
        if (session) {
          lock.unlock();
          {
            std::lock_guard<std::mutex> ipset_lock(LibipsetMutex());
            session.reset();
          }
          lock.lock();
          if (!queue_.empty()) continue;
        }
        running_ = false;
        return;
      }
      std::vector<PendingAdd*> batch;
      if (queue_.size() <= kMaxAddBatch) {
        batch.swap(queue_);
      } else {
        batch.assign(queue_.begin(), queue_.begin() + kMaxAddBatch);
        queue_.erase(queue_.begin(), queue_.begin() + kMaxAddBatch);
      }
      lock.unlock();
      if (entered.ok()) {
        RunBatch(batch, session);
      } else {
        for (PendingAdd* a : batch) a->status = entered;
      }
      lock.lock();
      last_done_ = std::chrono::steady_clock::now();
      for (PendingAdd* a : batch) a->done = true;
      done_.notify_all();
    }
  }

  // `session`: the worker's long-lived -exist session (opened here when null; replaced after a failure libipset
  // names no line for, whose state it does not promise to clean up).
  static void RunBatch(const std::vector<PendingAdd*>& batch, std::unique_ptr<Session>& session) {
    std::lock_guard<std::mutex> lock(LibipsetMutex());
    if (!session) {
      // Registers the types of the sets added to only (Session::SetTypes): CacheSetType below, for every set, also
      // for one add, where it takes the place of libipset's own header query.
      auto opened = Session::Open(/*exist=*/true, Session::SetTypes::kNamedSets);
      if (!opened.ok()) {
        for (PendingAdd* a : batch) a->status = opened.status();
        return;
      }
      session = *std::move(opened);
    }
    std::vector<PendingAdd*> refresh, no_refresh;
    for (PendingAdd* a : batch) {
      session->CacheSetType(a->set);
      (a->exist ? refresh : no_refresh).push_back(a);
    }
    RunRefreshing(refresh, session);
    // Without -exist an add of an existing entry fails, and the kernel drops the rest of a multi-entry message after
    // it, while libipset goes on with the next message: a resumed stream could not tell the adds it stored from the
    // ones it dropped. One line per run: a netlink round trip each, in the same session.
    if (!no_refresh.empty() && session) {
      session->SetExist(false);
      for (PendingAdd* a : no_refresh) RunOne(*a, *session);
      session->SetExist(true);
    } else {
      for (PendingAdd* a : no_refresh) a->status = RunHere(a->line, a->exist, a->what());
    }
    // Only for this batch: the set may be re-created with another type before the next one.
    if (session) session->ForgetSetTypes();
  }

  // Runs -exist adds as one stream (libipset puts consecutive adds to the same set into one netlink message). A
  // failure names its line, and every add that failed says so: the adds before the first failing line are stored
  // (the kernel applies a message's entries in order and stops at the first it refuses; a line libipset refuses is
  // not sent), each failed add gets its own error, and the adds after the first failing line that did not fail are
  // written again (the kernel may have dropped them with the rest of a refused message; re-adding with -exist is
  // idempotent, so the ones it did store are only refreshed). A run per refused message, not a session per add.
  static void RunRefreshing(std::vector<PendingAdd*> adds, std::unique_ptr<Session>& session) {
    std::string text;
    std::vector<const Report*> failure;  // by position in `adds`
    while (!adds.empty()) {
      text.clear();
      for (const PendingAdd* a : adds) text += a->line;
      session->ClearReports();
      const int base = session->lines_run();
      session->Run(text);
      failure.assign(adds.size(), nullptr);
      size_t first = adds.size();
      bool unnamed = false;
      for (const Report& r : session->reports()) {
        if (r.kind == Report::Kind::kWarning) continue;
        if (!r.line || *r.line <= base || *r.line > base + static_cast<int>(adds.size())) {
          unnamed = true;
          break;
        }
        const size_t i = static_cast<size_t>(*r.line - base - 1);
        if (failure[i] == nullptr) failure[i] = &r;
        first = std::min(first, i);
      }
      if (unnamed) {
        // No line to resume after: each add alone, in a session of its own; the long-lived session is replaced.
        session.reset();
        for (PendingAdd* a : adds) a->status = RunHere(a->line, true, a->what());
        return;
      }
      std::vector<PendingAdd*> again;
      for (size_t i = 0; i < adds.size(); ++i) {
        if (failure[i] != nullptr) {
          adds[i]->status = ipset::ReportStatus(*failure[i], adds[i]->what());
        } else if (i < first) {
          adds[i]->status = Status::Ok();
        } else {
          again.push_back(adds[i]);
        }
      }
      adds.swap(again);
    }
  }

  // One add in a run of its own.
  static void RunOne(PendingAdd& add, Session& session) {
    session.ClearReports();
    session.Run(add.line);
    const Report* failure = session.FirstFailure();
    add.status = failure == nullptr ? Status::Ok() : ipset::ReportStatus(*failure, add.what());
  }

  const base::UniqueFd netns_fd_;
  std::mutex mu_;
  std::condition_variable work_, done_;
  std::vector<PendingAdd*> queue_;
  bool running_ = false;                               // the worker thread runs
  bool inline_ = false;                                // a caller runs a batch on its own thread (AddAll)
  std::chrono::steady_clock::time_point last_done_{};  // when the last batch ended
};

std::string TempName() {
  static const char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::mt19937 gen(rd());
  std::string name(kTempSetPrefix);
  for (int i = 0; i < 8; ++i) name += kHex[gen() % 16];
  return name;
}

// The create line of a copy of `live` named `name`: the same type and header options (maxelem/hashsize replaced
// when not 0).
std::string CopyCreateLine(const SetInfo& live, std::string_view name, uint32_t maxelem, uint32_t hashsize) {
  std::vector<std::string> t = ipset::SplitTokens(live.header);
  std::string line = "create " + std::string(name) + " " + live.type;
  bool maxelem_done = maxelem == 0, hashsize_done = hashsize == 0;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == "maxelem" && !maxelem_done && i + 1 < t.size()) {
      line += " maxelem " + std::to_string(maxelem);
      maxelem_done = true;
      ++i;
    } else if (t[i] == "hashsize" && !hashsize_done && i + 1 < t.size()) {
      line += " hashsize " + std::to_string(hashsize);
      hashsize_done = true;
      ++i;
    } else {
      line += " " + t[i];
    }
  }
  if (!maxelem_done) line += " maxelem " + std::to_string(maxelem);
  if (!hashsize_done) line += " hashsize " + std::to_string(hashsize);
  return line + "\n";
}

uint32_t NextPowerOfTwo(uint64_t n) {
  uint64_t p = 1;
  while (p < n && p < (uint64_t{1} << 31)) p <<= 1;
  return static_cast<uint32_t>(p);
}

// The kernel frees a set's reference from a deleted nf_tables rule later (after the transaction's RCU grace
// period, in a work queue of the rule's network namespace); closing a NETLINK_NETFILTER socket of that namespace
// flushes that deferred work (nf_tables' NETLINK_URELEASE notifier). The kernel sends NETLINK_URELEASE only for a
// socket that has a port id, so the socket is bound (port id chosen by the kernel) before it is closed: an unbound
// one is released silently and flushes nothing.
void FlushDeferredRelease() {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return;
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  (void)::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof(local));
  ::close(fd);
}

Status DestroyHere(std::string_view name) {
  IPTKIT_ASSIGN_OR_RETURN(SetInfo info, GetHere(name, false));
  // A reference of an nf_tables rule deleted a moment ago (over a long-lived socket) is dropped by deferred kernel
  // work: flush it and look again for up to 1 s before refusing.
  const auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (info.references > 0 && std::chrono::steady_clock::now() < settle) {
    FlushDeferredRelease();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    IPTKIT_ASSIGN_OR_RETURN(info, GetHere(name, false));
  }
  if (info.references > 0) {
    return Status::FailedPrecondition("set " + Quote(name) + " is in use (" + std::to_string(info.references) +
                                      " reference(s): rules with -m set --match-set, or list:set sets); remove "
                                      "them first")
        .WithReason("referenced")
        .WithToken(std::string(name));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (true) {
    Status s = RunHere("destroy " + std::string(name) + "\n", false, "destroy set " + Quote(name));
    if (s.ok() || s.details().reason != std::optional<std::string>("referenced") ||
        std::chrono::steady_clock::now() >= deadline) {
      return s;
    }
    FlushDeferredRelease();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Destroys a temporary set, best effort (used on failure paths, where the first error is what matters).
void DropTemp(std::string_view temp) { (void)RunHere("destroy " + std::string(temp) + "\n", true, "cleanup"); }

// The Status of a failed bulk write: the failing session line mapped to the caller's entry (lines 1..copied are
// the copy of the current entries).
Status BulkFailure(const Report& r, size_t copied, const std::vector<SetEntrySpec>& entries, std::string_view set) {
  if (r.line && *r.line > static_cast<int>(copied) && static_cast<size_t>(*r.line) - copied <= entries.size()) {
    const SetEntrySpec& e = entries[static_cast<size_t>(*r.line) - copied - 1];
    int line = e.line > 0 ? e.line : *r.line - static_cast<int>(copied);
    Status s = ipset::ReportStatus(r, "line " + std::to_string(line) + ": entry " + Quote(e.elem));
    return s.WithLine(line).WithToken(e.elem).WithContext("set " + Quote(set) + " unchanged");
  }
  if (r.line && *r.line <= static_cast<int>(copied)) {
    return ipset::ReportStatus(r, "copying the current entries of set " + Quote(set) + " (set unchanged)");
  }
  return ipset::ReportStatus(r, "set " + Quote(set) + " unchanged");
}

Status CheckEntries(const std::vector<SetEntrySpec>& entries) {
  for (const SetEntrySpec& e : entries) IPTKIT_RETURN_IF_ERROR(ipset::CheckEntrySpec(e));
  return Status::Ok();
}

void Notify(const std::function<void(const SetProgress&)>& progress, SetProgress::Stage stage, size_t done,
            size_t total) {
  if (progress) progress(SetProgress{stage, done, total});
}

// Destroys leftover temporary sets (of an interrupted Load/Sync) that nothing references.
void DropLeftoverTemps() {
  auto sets = ListHere("", false);
  if (!sets.ok()) return;
  for (const SetInfo& s : *sets) {
    if (s.name.rfind(kTempSetPrefix, 0) == 0 && s.references == 0) DropTemp(s.name);
  }
}

// Builds a temporary copy of `live` holding `copy` (current entries) then `entries`, checks it, and swaps it in
// (unless dry_run). The temporary set is gone afterwards in every case.
Result<SetChangeReport> RebuildAndSwap(const SetInfo& live, const std::vector<SetEntry>& copy,
                                       const std::vector<SetEntrySpec>& entries, uint32_t maxelem, uint32_t hashsize,
                                       bool dry_run, const std::function<void(const SetProgress&)>& progress,
                                       std::vector<SetEntry>* written = nullptr) {
  const std::string temp = TempName();
  IPTKIT_RETURN_IF_ERROR(
      RunHere(CopyCreateLine(live, temp, maxelem, hashsize), false, "creating the temporary set " + Quote(temp)));
  std::vector<std::string> lines;
  lines.reserve(copy.size() + entries.size());
  for (const SetEntry& e : copy) lines.push_back(ipset::CopyLine(temp, e));
  for (const SetEntrySpec& e : entries) lines.push_back(ipset::AddLine(temp, e));
  const size_t total = lines.size();
  auto session = Session::Open(/*exist=*/true);
  if (!session.ok()) {
    DropTemp(temp);
    return session.status();
  }
  (*session)->CacheSetType(temp);
  (*session)->RunChunks(lines, kChunkLines, [&](size_t done) {
    Notify(progress, done <= copy.size() ? SetProgress::Stage::kCopied : SetProgress::Stage::kLoading, done, total);
  });
  if (const Report* r = (*session)->FirstFailure()) {
    Status s = BulkFailure(*r, copy.size(), entries, live.name);
    session->reset();
    DropTemp(temp);
    return s;
  }
  session->reset();
  auto filled = GetHere(temp, written != nullptr);
  if (!filled.ok()) {
    DropTemp(temp);
    return filled.status();
  }
  if (written != nullptr) *written = std::move(filled->entries);
  SetChangeReport report;
  report.swapped = !dry_run;
  report.entries_after = filled->entry_count;
  if (dry_run) {
    DropTemp(temp);
    return report;
  }
  Status swapped = RunHere("swap " + temp + " " + live.name + "\n", false, "swapping in the new set");
  if (!swapped.ok()) {
    DropTemp(temp);
    return swapped.WithContext("set " + Quote(live.name) + " unchanged");
  }
  Notify(progress, SetProgress::Stage::kSwapped, total, total);
  // The temporary set now holds the old entries and no references (they move with the swap).
  Status dropped = RunHere("destroy " + temp + "\n", false, "destroying the old set (now " + Quote(temp) + ")");
  if (!dropped.ok()) {
    return dropped.WithContext("set " + Quote(live.name) + " was replaced, but its old content is left as " +
                               Quote(temp));
  }
  return report;
}

}  // namespace

const std::vector<std::string>& SetTypes() {
  static const std::vector<std::string> kTypes = {
      "hash:ip",        "hash:net",      "hash:ip,port", "hash:net,port",     "hash:ip,port,ip", "hash:ip,port,net",
      "hash:net,iface", "hash:ip,mark",  "hash:net,net", "hash:net,port,net", "hash:ip,mac",     "hash:mac",
      "bitmap:ip",      "bitmap:ip,mac", "bitmap:port",  "list:set"};
  return kTypes;
}

Result<std::vector<SetEntrySpec>> ParseSetEntries(std::string_view text, std::string_view set_name) {
  std::vector<SetEntrySpec> out;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    std::vector<std::string> t = ipset::SplitTokens(line);
    if (t.empty() || t[0][0] == '#') continue;
    auto bad = [&](const std::string& what, const std::string& token) {
      return Status::InvalidArgument("line " + std::to_string(line_no) + ": " + what)
          .WithLine(line_no)
          .WithToken(token);
    };
    size_t i = 0;
    if (t[0] == "add") {
      if (t.size() < 3) return bad("expected 'add SETNAME ENTRY'", t[0]);
      if (!set_name.empty() && t[1] != set_name) {
        return bad("the line adds to set '" + t[1] + "', not '" + std::string(set_name) + "'", t[1]);
      }
      i = 2;
    } else if (t[0] == "create" || t[0] == "-exist" || t[0] == "COMMIT") {
      return bad("'" + t[0] + "' lines are not entries (one ENTRY [timeout N] [comment TEXT] per line)", t[0]);
    }
    SetEntrySpec spec;
    spec.line = line_no;
    spec.elem = t[i++];
    for (; i < t.size(); ++i) {
      if (t[i] == "timeout" && i + 1 < t.size()) {
        const std::string& v = t[++i];
        int64_t n = -1;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc() || p != v.data() + v.size()) return bad("timeout '" + v + "' is not a number", v);
        if (n < 0 || n > kMaxSetTimeout) {
          return bad("timeout " + v + " is out of range (0.." + std::to_string(kMaxSetTimeout) + " seconds)", v);
        }
        spec.timeout = static_cast<uint32_t>(n);
      } else if (t[i] == "comment" && i + 1 < t.size()) {
        spec.comment = t[++i];
      } else {
        return bad("unexpected '" + t[i] + "' (an entry takes 'timeout N' and 'comment TEXT')", t[i]);
      }
    }
    IPTKIT_RETURN_IF_ERROR(ipset::CheckEntrySpec(spec));
    out.push_back(std::move(spec));
  }
  return out;
}

std::vector<std::string> SetsUsedBy(const Rule& rule) {
  std::vector<std::string> out;
  auto take = [&](const std::vector<Option>& options, std::initializer_list<std::string_view> keys) {
    for (const Option& o : options) {
      if (o.values.empty() || std::find(keys.begin(), keys.end(), o.name) == keys.end()) continue;
      if (std::find(out.begin(), out.end(), o.values[0]) == out.end()) out.push_back(o.values[0]);
    }
  };
  for (const Match& m : rule.matches) {
    if (m.name == "set") take(m.options, {"match-set", "set"});
  }
  if (rule.target.name == "SET") take(rule.target.options, {"add-set", "del-set", "map-set"});
  return out;
}

bool RuleUsesSet(const Rule& rule, std::string_view name) {
  std::vector<std::string> used = SetsUsedBy(rule);
  return std::find(used.begin(), used.end(), name) != used.end();
}

uint64_t SetInfo::Capacity() const { return ipset::CapacityOf(*this); }

Ipsets::Ipsets(std::string netns) : netns_(std::move(netns)) {}

Result<std::vector<SetInfo>> Ipsets::List(std::string_view name, bool with_entries) const {
  std::vector<SetInfo> out;
  IPTKIT_RETURN_IF_ERROR(InNetns(netns_, "ipset list", [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(out, ListHere(name, with_entries));
    return Status::Ok();
  }));
  return out;
}

Result<SetInfo> Ipsets::Get(std::string_view name, bool with_entries) const {
  SetInfo out;
  IPTKIT_RETURN_IF_ERROR(InNetns(netns_, "ipset list", [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(out, GetHere(name, with_entries));
    return Status::Ok();
  }));
  return out;
}

Status Ipsets::Create(std::string_view name, std::string_view type, const SetOptions& options) const {
  IPTKIT_ASSIGN_OR_RETURN(std::string line, ipset::CreateLine(name, type, options));
  return InNetns(netns_, "ipset create",
                 [&] { return RunHere(line, false, "create set " + Quote(name)).WithToken(std::string(name)); });
}

Status Ipsets::Destroy(std::string_view name) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  return InNetns(netns_, "ipset destroy", [&] { return DestroyHere(name); });
}

Status Ipsets::Flush(std::string_view name) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  return InNetns(netns_, "ipset flush",
                 [&] { return RunHere("flush " + std::string(name) + "\n", false, "flush set " + Quote(name)); });
}

Status Ipsets::Rename(std::string_view from, std::string_view to) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(from));
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(to));
  return InNetns(netns_, "ipset rename", [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(SetInfo info, GetHere(from, false));
    if (info.references > 0) {
      return Status::FailedPrecondition("set " + Quote(from) + " is in use (" + std::to_string(info.references) +
                                        " reference(s)); a referenced set cannot be renamed")
          .WithReason("referenced")
          .WithToken(std::string(from));
    }
    return RunHere("rename " + std::string(from) + " " + std::string(to) + "\n", false,
                   "rename set " + Quote(from) + " to " + Quote(to));
  });
}

Status Ipsets::Swap(std::string_view a, std::string_view b) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(a));
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(b));
  return InNetns(netns_, "ipset swap", [&] {
    return RunHere("swap " + std::string(a) + " " + std::string(b) + "\n", false,
                   "swap sets " + Quote(a) + " and " + Quote(b));
  });
}

Status Ipsets::Add(std::string_view name, std::string_view elem, const SetAddOptions& options) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  SetEntrySpec spec{std::string(elem), options.timeout, options.comment, 0};
  IPTKIT_RETURN_IF_ERROR(ipset::CheckEntrySpec(spec));
  PendingAdd add{std::string(name), spec.elem, ipset::AddLine(name, spec), !options.no_refresh};
  if (!netns_.empty() || !AddWorker::RunFirstInline({&add})) {
    IPTKIT_ASSIGN_OR_RETURN(std::shared_ptr<AddWorker> worker, AddWorker::For(netns_));
    worker->AddAll({&add});
  }
  return add.status.WithToken(std::string(elem));
}

std::vector<Status> Ipsets::AddEach(const std::vector<AddRequest>& adds) const {
  std::vector<Status> out(adds.size());
  std::vector<PendingAdd> pending(adds.size());
  std::vector<PendingAdd*> queued;
  for (size_t i = 0; i < adds.size(); ++i) {
    const AddRequest& a = adds[i];
    SetEntrySpec spec{a.elem, a.options.timeout, a.options.comment, 0};
    if (Status s = ipset::CheckSetName(a.set); !s.ok()) {
      out[i] = s;
    } else if (Status e = ipset::CheckEntrySpec(spec); !e.ok()) {
      out[i] = e;
    } else {
      pending[i] = PendingAdd{a.set, a.elem, ipset::AddLine(a.set, spec), !a.options.no_refresh};
      queued.push_back(&pending[i]);
    }
  }
  if (!queued.empty() && (!netns_.empty() || !AddWorker::RunFirstInline(queued))) {
    Result<std::shared_ptr<AddWorker>> worker = AddWorker::For(netns_);
    if (worker.ok()) {
      (*worker)->AddAll(queued);
    } else {
      for (PendingAdd* p : queued) p->status = worker.status();
    }
  }
  for (size_t i = 0; i < adds.size(); ++i) {
    if (pending[i].line.empty()) continue;
    out[i] = pending[i].status.WithToken(adds[i].elem);
  }
  return out;
}

Status Ipsets::Delete(std::string_view name, std::string_view elem) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  IPTKIT_RETURN_IF_ERROR(ipset::CheckElem(elem));
  std::string line = "del " + std::string(name) + " " + std::string(elem) + "\n";
  return InNetns(netns_, "ipset del", [&]() -> Status {
    auto session = OpenForSet(name, false);
    if (!session.ok()) return session.status().WithToken(std::string(elem));
    (*session)->Run(line);
    if (const Report* r = (*session)->FirstFailure()) {
      return ipset::ReportStatus(*r, "delete " + Quote(elem) + " from set " + Quote(name)).WithToken(std::string(elem));
    }
    return Status::Ok();
  });
}

Result<bool> Ipsets::Test(std::string_view name, std::string_view elem) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  IPTKIT_RETURN_IF_ERROR(ipset::CheckElem(elem));
  std::string line = "test " + std::string(name) + " " + std::string(elem) + "\n";
  bool in = false;
  IPTKIT_RETURN_IF_ERROR(InNetns(netns_, "ipset test", [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(auto session, OpenForSet(name, false));
    session->Run(line);
    // libipset reports "X is in set S." as a warning and "X is NOT in set S." as a notice.
    for (const Report& r : session->reports()) {
      if (r.kind == Report::Kind::kNotice && r.message.find("is NOT in set") != std::string::npos) return Status::Ok();
    }
    if (const Report* r = session->FirstFailure()) {
      return ipset::ReportStatus(*r, "test " + Quote(elem) + " in set " + Quote(name)).WithToken(std::string(elem));
    }
    in = session->HasWarning();
    return Status::Ok();
  }));
  return in;
}

Result<SetChangeReport> Ipsets::Load(std::string_view name, const std::vector<SetEntrySpec>& entries,
                                     const SetLoadOptions& options) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  IPTKIT_RETURN_IF_ERROR(CheckEntries(entries));
  SetChangeReport report;
  IPTKIT_RETURN_IF_ERROR(InNetns(netns_, "ipset load", [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(SetInfo live, GetHere(name, true));
    const uint64_t capacity = live.Capacity();
    const uint64_t needed = uint64_t{live.entry_count} + entries.size();
    uint32_t maxelem = 0, hashsize = 0;  // 0: as the live set
    if (needed > capacity) {
      if (!options.grow || !ipset::IsHashType(live.type)) {
        return Status::FailedPrecondition(
                   "set " + Quote(name) + " holds at most " + std::to_string(capacity) + " entries (" +
                   (ipset::IsHashType(live.type) ? "maxelem" : "its range/size") + "); it has " +
                   std::to_string(live.entry_count) + " and the load adds up to " + std::to_string(entries.size()) +
                   (ipset::IsHashType(live.type) ? ": create it with a larger maxelem, or load with grow"
                                                 : ": a larger set is needed"))
            .WithReason("set_full")
            .WithToken(std::string(name));
      }
      maxelem = NextPowerOfTwo(needed);
      hashsize = std::max(live.options.hashsize.value_or(1024), NextPowerOfTwo(needed / 4));
    }
    Notify(options.progress, SetProgress::Stage::kChecked, 0, live.entries.size() + entries.size());
    IPTKIT_ASSIGN_OR_RETURN(
        report, RebuildAndSwap(live, live.entries, entries, maxelem, hashsize, options.dry_run, options.progress));
    report.added = report.entries_after > live.entry_count ? report.entries_after - live.entry_count : 0;
    report.refreshed = entries.size() > report.added ? entries.size() - report.added : 0;
    if (maxelem != 0) report.grown_maxelem = maxelem;
    Notify(options.progress, SetProgress::Stage::kDone, entries.size(), entries.size());
    return Status::Ok();
  }));
  return report;
}

Result<SetChangeReport> Ipsets::Sync(std::string_view name, const std::vector<SetEntrySpec>& entries,
                                     const SetSyncOptions& options) const {
  IPTKIT_RETURN_IF_ERROR(ipset::CheckSetName(name));
  IPTKIT_RETURN_IF_ERROR(CheckEntries(entries));
  SetChangeReport report;
  IPTKIT_RETURN_IF_ERROR(InNetns(netns_, "ipset sync", [&]() -> Status {
    if (!options.dry_run) DropLeftoverTemps();
    IPTKIT_ASSIGN_OR_RETURN(SetInfo live, GetHere(name, true));
    if (entries.size() > live.Capacity()) {
      return Status::FailedPrecondition("set " + Quote(name) + " holds at most " + std::to_string(live.Capacity()) +
                                        " entries; " + std::to_string(entries.size()) + " were given")
          .WithReason("set_full")
          .WithToken(std::string(name));
    }
    Notify(options.progress, SetProgress::Stage::kChecked, 0, entries.size());
    if (!options.minimal_diff) {
      // The counts compare the kernel's spelling of the entries before and after (10.0.0.5/24 is 10.0.0.0/24).
      std::vector<SetEntry> written;
      IPTKIT_ASSIGN_OR_RETURN(report,
                              RebuildAndSwap(live, {}, entries, 0, 0, options.dry_run, options.progress, &written));
      std::unordered_set<std::string> before;
      for (const SetEntry& e : live.entries) before.insert(e.elem);
      size_t kept = 0;
      for (const SetEntry& e : written) kept += before.count(e.elem);
      report.added = written.size() - kept;
      report.removed = live.entries.size() - kept;
      report.refreshed = kept;
      Notify(options.progress, SetProgress::Stage::kDone, entries.size(), entries.size());
      return Status::Ok();
    }
    // Minimal diff: the entries are first written into a temporary copy (which checks them against the kernel and
    // gives them the kernel's spelling: 10.0.0.5/24 becomes 10.0.0.0/24), then only the difference is applied.
    const std::string temp = TempName();
    IPTKIT_RETURN_IF_ERROR(
        RunHere(CopyCreateLine(live, temp, 0, 0), false, "creating the temporary set " + Quote(temp)));
    std::vector<std::string> lines;
    lines.reserve(entries.size());
    for (const SetEntrySpec& e : entries) lines.push_back(ipset::AddLine(temp, e));
    {
      auto session = Session::Open(true);
      if (!session.ok()) {
        DropTemp(temp);
        return session.status();
      }
      (*session)->CacheSetType(temp);
      (*session)->RunChunks(lines, kChunkLines, {});
      if (const Report* r = (*session)->FirstFailure()) {
        Status s = BulkFailure(*r, 0, entries, name);
        DropTemp(temp);
        return s;
      }
    }
    auto wanted = GetHere(temp, true);
    DropTemp(temp);
    if (!wanted.ok()) return wanted.status();
    std::unordered_map<std::string, const SetEntry*> have;
    for (const SetEntry& e : live.entries) have[e.elem] = &e;
    std::unordered_set<std::string> want;
    std::vector<std::string> ops, dels;
    for (const SetEntry& e : wanted->entries) {
      want.insert(e.elem);
      auto it = have.find(e.elem);
      if (it == have.end()) {
        ops.push_back(ipset::CopyLine(name, e));
        ++report.added;
      } else if (it->second->comment != e.comment || it->second->nomatch != e.nomatch) {
        SetEntry refreshed = e;
        refreshed.packets = it->second->packets;
        refreshed.bytes = it->second->bytes;
        ops.push_back(ipset::CopyLine(name, refreshed));
        ++report.refreshed;
      }
    }
    for (const SetEntry& e : live.entries) {
      if (want.count(e.elem) == 0) {
        dels.push_back("del " + std::string(name) + " " + e.elem + "\n");
        ++report.removed;
      }
    }
    // Deletions first: room for the additions in a set near its capacity.
    ops.insert(ops.begin(), dels.begin(), dels.end());
    report.entries_after = wanted->entries.size();
    if (options.dry_run) return Status::Ok();
    auto session = Session::Open(true);
    if (!session.ok()) return session.status();
    (*session)->CacheSetType(name);
    (*session)->RunChunks(ops, kChunkLines, [&](size_t done) {
      Notify(options.progress, SetProgress::Stage::kLoading, done, ops.size());
    });
    if (const Report* r = (*session)->FirstFailure()) {
      return ipset::ReportStatus(*r, "applying the difference to set " + Quote(name) +
                                         " (partly applied: the set may hold a mix of old and new entries)");
    }
    Notify(options.progress, SetProgress::Stage::kDone, ops.size(), ops.size());
    return Status::Ok();
  }));
  return report;
}

}  // namespace iptkit
