// Progress of a large restore or apply on stderr: on a terminal a bar redrawn in place, otherwise one plain line
// per stage; nothing with --quiet or for small inputs (fewer than kProgressMinRules rules). Fed by the library's
// CommitProgress callback (include/iptkit/transaction.h).
// Thread-safety: one thread (the callback runs on the committing thread).
//
//   ProgressDisplay progress(err, /*terminal=*/isatty(2), /*quiet=*/false, "restore");
//   options.progress = progress.Callback();
//   auto done = fw.Restore(family, text, options);
//   progress.Finish(done.ok());
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_PROGRESS_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_PROGRESS_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <ostream>
#include <string>

#include "iptkit/transaction.h"

namespace iptkit::cli {

// Inputs with fewer rules than this show no progress.
inline constexpr size_t kProgressMinRules = 1000;

class ProgressDisplay {
 public:
  ProgressDisplay(std::ostream& err, bool terminal, bool quiet, std::string what);
  ~ProgressDisplay();
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  // What the caller knows before the library reports anything (the size of the input): shown when large.
  void Start(size_t rules, const std::string& stage);
  void Update(const CommitProgress& progress);
  std::function<void(const CommitProgress&)> Callback() {
    return [this](const CommitProgress& p) { Update(p); };
  }
  // Ends the bar's line (and shows 100% when `ok`).
  void Finish(bool ok);

 private:
  void Show(double fraction, const std::string& stage);

  std::ostream& err_;
  const bool terminal_;
  const bool quiet_;
  const std::string what_;
  bool active_ = false;  // the input is large enough
  bool drawn_ = false;   // a bar line is on the screen
  bool finished_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_PROGRESS_H_
