#include "tests/integration/zero_loss_scenario.h"

#include <algorithm>
#include <chrono>
#include <sstream>

namespace iptkit::integration {

std::vector<std::vector<std::string>> ReceiverInputRules(int generation) {
  std::vector<std::vector<std::string>> rules;
  for (int i = 0; i < kOtherRules; ++i) {
    if (i == kOtherRules / 2) {
      rules.push_back({"-p", "udp", "-m", "udp", "--dport", std::to_string(kStreamPort), "-j", "ACCEPT"});
    }
    rules.push_back({"-s", "192.0.2." + std::to_string(i + 1) + "/32", "-p", "tcp", "-m", "tcp", "--dport",
                     std::to_string(1000 + i * 7 + generation), "-j", "DROP"});
  }
  return rules;
}

std::string ReceiverFilterTable(int generation) {
  std::string text = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
  for (const auto& rule : ReceiverInputRules(generation)) {
    text += "-A INPUT";
    for (const auto& arg : rule) text += " " + arg;
    text += "\n";
  }
  text += "COMMIT\n";
  return text;
}

std::string ZeroLossResult::Describe() const {
  std::ostringstream out;
  out << stream.Describe() << "; " << replacements_done << " replacements (slowest " << slowest_replacement_ms
      << " ms); UdpRcvbufErrors +" << rcvbuf_errors;
  return out.str();
}

Result<ZeroLossSetup> MakeZeroLossSetup(Variant variant) {
  ZeroLossSetup setup;
  IPTKIT_ASSIGN_OR_RETURN(setup.sender, TestNetns::Create());
  IPTKIT_ASSIGN_OR_RETURN(setup.receiver, TestNetns::Create());
  IPTKIT_ASSIGN_OR_RETURN(setup.link, ConnectVeth(*setup.sender, *setup.receiver));
  CommandResult r = setup.receiver->Restore(variant, Family::kIPv4, ReceiverFilterTable(0));
  if (!r.ok()) return Status::Internal(r.Describe());
  return setup;
}

Result<ZeroLossResult> RunZeroLoss(const ZeroLossSetup& setup, int replacements,
                                   const std::function<Status(int generation)>& replace,
                                   const UdpStreamOptions& options) {
  ZeroLossResult result;
  IPTKIT_ASSIGN_OR_RETURN(uint64_t errors_before, setup.receiver->NstatCounter("UdpRcvbufErrors"));
  // On a loaded machine replacements take longer than the nominal stream: it then goes on (up to 4 times as
  // long) until the last replacement is done and one more interval has passed, so that every replacement happens
  // under traffic. Only the outcome is asserted, never how fast it came.
  UdpStreamOptions stretchable = options;
  stretchable.max_count = std::max(options.max_count, options.count * 4);
  IPTKIT_ASSIGN_OR_RETURN(
      auto stream, UdpStream::Create(*setup.sender, *setup.receiver, setup.link.b_ipv4, kStreamPort, stretchable));
  stream->EndAt(stretchable.max_count);  // held open until the replacements are done
  stream->Start();
  const size_t interval = options.count / static_cast<size_t>(replacements + 1);
  Status failure;
  for (int g = 1; g <= replacements && failure.ok(); ++g) {
    size_t due = options.count * static_cast<size_t>(g) / static_cast<size_t>(replacements + 1);
    while (stream->sending() && stream->sent() < due) {
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    if (!stream->sending()) break;
    auto start = std::chrono::steady_clock::now();
    failure = replace(g);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    result.slowest_replacement_ms = std::max(result.slowest_replacement_ms, ms);
    if (failure.ok()) ++result.replacements_done;
  }
  stream->EndAt(std::max(options.count, stream->sent() + interval));
  result.stream = stream->Finish();
  if (!failure.ok()) return failure.WithContext("replacement " + std::to_string(result.replacements_done + 1));
  IPTKIT_ASSIGN_OR_RETURN(uint64_t errors_after, setup.receiver->NstatCounter("UdpRcvbufErrors"));
  result.rcvbuf_errors = errors_after - errors_before;
  return result;
}

}  // namespace iptkit::integration
