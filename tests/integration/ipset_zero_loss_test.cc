// Zero loss while a set is replaced: a rule accepts a UDP stream only from addresses in a 50,000-entry set, and
// the set is replaced 20 times by Sync (temporary set, swap) while the stream from an allowed address flows. Not
// one datagram may be lost: a rule matching the set never sees a partial set. The control (flush, then load)
// loses datagrams, so the test can fail. Traffic test: runs alone (SERIAL).
#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "iptkit/ipset.h"
#include "tests/integration/netns_fixture.h"
#include "tests/integration/test_util.h"
#include "tests/integration/udp_stream.h"

namespace iptkit::integration {
namespace {

constexpr uint16_t kPort = 5577;
constexpr uint32_t kEntries = 50000;

// 50,000 addresses of 10.<gen>.x.y plus the sender's own address (last, so that a partial set would lack it).
std::vector<SetEntrySpec> Generation(int gen, const std::string& sender) {
  std::vector<SetEntrySpec> out;
  out.reserve(kEntries);
  for (uint32_t i = 0; i + 1 < kEntries; ++i) {
    out.push_back({"10." + std::to_string(100 + gen % 100) + "." + std::to_string((i >> 8) & 0xff) + "." +
                       std::to_string(i & 0xff),
                   std::nullopt, std::nullopt, 0});
  }
  out.push_back({sender, std::nullopt, std::nullopt, 0});
  return out;
}

struct Peers {
  std::unique_ptr<TestNetns> sender, receiver;
  VethLink link;
};

class IpsetZeroLossTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(s_.sender, TestNetns::Create());
    ASSERT_OK_AND_ASSIGN(s_.receiver, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*s_.receiver, Variant::kNft, Family::kIPv4);
    ASSERT_OK_AND_ASSIGN(s_.link, ConnectVeth(*s_.sender, *s_.receiver));
    sets_ = std::make_unique<Ipsets>(s_.receiver->name());
    ASSERT_STATUS_OK(sets_->Create("allow", "hash:ip", {.maxelem = 131072}));
    ASSERT_OK_AND_ASSIGN(SetChangeReport r, sets_->Load("allow", Generation(0, s_.link.a_ipv4)));
    ASSERT_EQ(r.entries_after, kEntries);
    auto rule = s_.receiver->Iptables(Variant::kNft, Family::kIPv4,
                                      {"-A", "INPUT", "-p", "udp", "--dport", std::to_string(kPort), "-m", "set", "!",
                                       "--match-set", "allow", "src", "-j", "DROP"});
    ASSERT_TRUE(rule.ok()) << rule.Describe();
  }

  // Runs `replace` `times` times while a stream flows; the stream's result.
  UdpStreamResult Stream(int times, const std::function<Status(int)>& replace) {
    UdpStreamOptions options;
    options.count = 20000;
    options.rate_per_second = 5000;
    options.max_count = 2000000;
    auto stream = UdpStream::Create(*s_.sender, *s_.receiver, s_.link.b_ipv4, kPort, options);
    EXPECT_TRUE(stream.ok()) << stream.status().ToString();
    if (!stream.ok()) return {};
    (*stream)->EndAt(options.max_count);  // open until the replacements are done
    (*stream)->Start();
    for (int g = 1; g <= times; ++g) {
      Status s = replace(g);
      EXPECT_TRUE(s.ok()) << "replacement " << g << ": " << s.ToString();
      if (!s.ok()) break;
    }
    (*stream)->EndAt((*stream)->sent() + 2000);
    return (*stream)->Finish();
  }

  Peers s_;
  std::unique_ptr<Ipsets> sets_;
};

TEST_F(IpsetZeroLossTest, TwentySyncsOfA50000EntrySetLoseNothing) {
  UdpStreamResult r = Stream(20, [&](int g) { return sets_->Sync("allow", Generation(g, s_.link.a_ipv4)).status(); });
  EXPECT_GT(r.received, 0u) << r.Describe();
  EXPECT_EQ(r.missing, 0u) << r.Describe();
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("allow", false));
  EXPECT_EQ(info.entry_count, kEntries);
  EXPECT_EQ(info.references, 1u);
}

TEST_F(IpsetZeroLossTest, ControlFlushThenLoadLosesDatagrams) {
  UdpStreamResult r = Stream(3, [&](int g) -> Status {
    IPTKIT_RETURN_IF_ERROR(sets_->Flush("allow"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the gap a flush-and-refill always has
    return sets_->Load("allow", Generation(g, s_.link.a_ipv4)).status();
  });
  EXPECT_GT(r.missing, 0u) << "the control must lose datagrams, else the test above proves nothing: " << r.Describe();
}

}  // namespace
}  // namespace iptkit::integration
