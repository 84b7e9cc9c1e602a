// The zero-loss scenario of docs/testing.md, shared by the library variant (zero_loss_test.cc) and the iptables
// CLI variants (zero_loss_cli_test.cc: the atomic iptables-restore baseline and the naive flush-and-re-add that
// must lose packets):
//   sender ns ──veth── receiver ns (filter INPUT policy DROP; 50 unrelated rules and, in the middle, the ACCEPT
//   for the stream's UDP port). A paced, sequence-numbered UDP stream runs while `replace(generation)` rewrites
//   the receiver's filter table `replacements` times, spread evenly over the stream.
#ifndef IPTKIT_TESTS_INTEGRATION_ZERO_LOSS_SCENARIO_H_
#define IPTKIT_TESTS_INTEGRATION_ZERO_LOSS_SCENARIO_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "iptkit/status.h"
#include "tests/integration/netns_fixture.h"
#include "tests/integration/udp_stream.h"

namespace iptkit::integration {

inline constexpr uint16_t kStreamPort = 5555;
inline constexpr int kOtherRules = 50;

// The INPUT rules of generation `generation` as argv tails ("-s", "192.0.2.7/32", ...), in canonical save form;
// the stream's ACCEPT sits in the middle. Generations differ in the unrelated rules only.
std::vector<std::vector<std::string>> ReceiverInputRules(int generation);
// The whole filter table of that generation in iptables-save form (INPUT policy DROP).
std::string ReceiverFilterTable(int generation);

struct ZeroLossSetup {
  std::unique_ptr<TestNetns> sender;
  std::unique_ptr<TestNetns> receiver;
  VethLink link;
};
// Two namespaces joined by a veth; the receiver's filter table is generation 0, loaded with `variant`'s
// iptables-restore.
Result<ZeroLossSetup> MakeZeroLossSetup(Variant variant);

struct ZeroLossResult {
  UdpStreamResult stream;
  int replacements_done = 0;
  uint64_t rcvbuf_errors = 0;  // increase of the receiver's UdpRcvbufErrors over the run
  double slowest_replacement_ms = 0;
  std::string Describe() const;
};

// Runs the stream and calls `replace(g)` for g = 1..replacements, the g-th once g/(replacements+1) of the stream
// was sent (later if the previous call was slow: the stream then runs longer, up to 4 times its count, so that
// every call happens under traffic; calls left when even that has ended are skipped). Stops at
// the first failing call and returns its Status.
Result<ZeroLossResult> RunZeroLoss(const ZeroLossSetup& setup, int replacements,
                                   const std::function<Status(int generation)>& replace,
                                   const UdpStreamOptions& options = {});

}  // namespace iptkit::integration

#endif  // IPTKIT_TESTS_INTEGRATION_ZERO_LOSS_SCENARIO_H_
