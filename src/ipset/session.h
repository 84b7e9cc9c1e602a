// One libipset session: ipset command lines (restore format) run in-process, with every report collected.
//
// libipset's traps, handled here: its default error handlers call exit(), so custom print handlers are installed
// before anything runs; ipset_parse_stream goes on past a bad line and may return 0, so every report of type
// error/notice (and every custom error) is a failure the caller sees; only stream mode batches adds into large
// netlink messages, so bulk input goes through RunChunks; line numbers run on across ipset_parse_stream calls of one
// session, so reports carry the session-wide line (1-based over all chunks).
// Thread-safety: a Session belongs to one thread, created in the network namespace it is to act in (the netlink
// socket is opened in the constructor).
#ifndef IPTKIT_SRC_IPSET_SESSION_H_
#define IPTKIT_SRC_IPSET_SESSION_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/status.h"

struct ipset;

namespace iptkit::ipset {

struct Report {
  enum class Kind { kError, kNotice, kWarning };
  Kind kind = Kind::kError;
  std::string message;      // without libipset's "Error in line N: " prefix
  std::optional<int> line;  // session-wide 1-based line of the input, when libipset named one
};

class Session {
 public:
  // Which set types the session registers with libipset (a process-wide list): kAll, every type, before anything
  // runs; kNamedSets, only the types of the sets CacheSetType is called for, which the caller does for every set
  // its lines name before running them (adds, deletes and tests of existing sets: what a one-add process needs).
  enum class SetTypes { kAll, kNamedSets };

  // exist: ipset's -exist (re-adding refreshes; creating an existing identical set and deleting a missing entry
  // are not errors).
  static Result<std::unique_ptr<Session>> Open(bool exist, SetTypes types = SetTypes::kAll);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs the lines of `text` (each ending in '\n') as one stream. Output of list commands is appended to output().
  void Run(std::string_view text);
  // Runs `lines` in chunks of `chunk` lines (one stream each, batched), calling progress(done) after each chunk;
  // stops after the first chunk with a failure.
  void RunChunks(const std::vector<std::string>& lines, size_t chunk, const std::function<void(size_t)>& progress);

  const std::vector<Report>& reports() const { return reports_; }
  const std::string& output() const { return output_; }
  // The first failure (error, notice or custom error), if any.
  const Report* FirstFailure() const;
  // Whether a warning was reported (test: "is in set").
  bool HasWarning() const;
  // Lets the runs that follow skip libipset's per-line type lookup of set `name`: without it, libipset asks the
  // kernel for the set's header (a netlink round trip) for every add/del/test line, since its process-wide set cache
  // holds only what is put there. One header query now; the entry is dropped again by ForgetSetTypes or the
  // destructor (another process may re-create the set with another type). Nothing happens when the set does not
  // exist (the run reports that). Callers hold LibipsetMutex (the cache is process-wide).
  void CacheSetType(std::string_view name);
  void ForgetSetTypes();
  // Forgets the reports and the output, for the next Run of a long-lived session (its netlink socket stays open;
  // libipset's line numbers run on).
  void ClearReports() {
    reports_.clear();
    output_.clear();
  }
  // The lines run so far (as libipset counts them for its reports: the session-wide line of a report is this count
  // before its Run plus its line within the Run's text).
  int lines_run() const { return lines_run_; }
  // ipset's -exist for the runs that follow (Open's `exist` sets it first).
  void SetExist(bool exist);

  // Internal: for the C callbacks.
  void AddReport(Report report) { reports_.push_back(std::move(report)); }
  void AppendOutput(std::string_view text) { output_.append(text); }

 private:
  Session(struct ::ipset* handle, SetTypes types) : handle_(handle), types_(types) {}
  struct ::ipset* handle_;
  const SetTypes types_;
  std::vector<std::string> cached_;  // set names CacheSetType put into libipset's cache
  int lines_run_ = 0;
  std::vector<Report> reports_;
  std::string output_;
};

// A Status for a failure report: the code from what libipset says (missing set or entry: NotFound; exists:
// AlreadyExists; in use: FailedPrecondition "referenced"; full: FailedPrecondition "set_full"; else
// InvalidArgument), the message prefixed with `what`.
Status ReportStatus(const Report& report, std::string_view what);

}  // namespace iptkit::ipset

#endif  // IPTKIT_SRC_IPSET_SESSION_H_
