#include "tools/iptkit/cli_progress.h"

#include <fmt/format.h>

#include <algorithm>

namespace iptkit::cli {
namespace {

constexpr int kBarWidth = 30;

}  // namespace

ProgressDisplay::ProgressDisplay(std::ostream& err, bool terminal, bool quiet, std::string what)
    : err_(err), terminal_(terminal), quiet_(quiet), what_(std::move(what)) {}

ProgressDisplay::~ProgressDisplay() {
  if (drawn_ && !finished_) err_ << "\n";
}

void ProgressDisplay::Start(size_t rules, const std::string& stage) {
  if (quiet_ || rules < kProgressMinRules) return;
  active_ = true;
  Show(0.0, stage);
}

void ProgressDisplay::Update(const CommitProgress& p) {
  using Stage = CommitProgress::Stage;
  if (quiet_) return;
  if ((p.stage == Stage::kParsed || p.stage == Stage::kCanonicalized) && p.rules >= kProgressMinRules) {
    active_ = true;
  }
  if (!active_) return;
  switch (p.stage) {
    case Stage::kParsed:
      Show(0.05, fmt::format("parsed {} rules; reading the current rules", p.rules));
      break;
    case Stage::kCanonicalized:
      Show(0.25, fmt::format("checked {} rules; reading the current rules", p.rules));
      break;
    case Stage::kSnapshotRead:
      Show(0.3, "planning");
      break;
    case Stage::kPlanned:
      Show(0.4, fmt::format("planned {} ops in {} table{}", p.ops, p.tables, p.tables == 1 ? "" : "s"));
      break;
    case Stage::kCommitting:
      Show(0.5, fmt::format("committing {} ops in {} table{}", p.ops, p.tables, p.tables == 1 ? "" : "s"));
      break;
    case Stage::kCommitted:
      Show(1.0, fmt::format("committed {} ops in {} table{}", p.ops, p.tables, p.tables == 1 ? "" : "s"));
      break;
  }
}

void ProgressDisplay::Finish(bool ok) {
  if (!active_ || finished_) return;
  if (ok) Show(1.0, "done");
  if (drawn_) err_ << "\n";
  err_.flush();
  finished_ = true;
}

void ProgressDisplay::Show(double fraction, const std::string& stage) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (terminal_) {
    const int filled = static_cast<int>(fraction * kBarWidth + 0.5);
    // \r and "erase to end of line": the bar is redrawn in place.
    err_ << fmt::format("\r\x1b[Kiptkit {}: [{}{}] {:3.0f}% {} ({:.1f} s)", what_, std::string(filled, '#'),
                        std::string(kBarWidth - filled, '.'), fraction * 100, stage, seconds);
    drawn_ = true;
  } else {
    err_ << fmt::format("iptkit {}: {} ({:.1f} s)\n", what_, stage, seconds);
  }
  err_.flush();
}

}  // namespace iptkit::cli
