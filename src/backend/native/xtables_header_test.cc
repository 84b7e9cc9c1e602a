// The rule header's addresses and protocols parsed without libxtables (DirectParseAddress, DirectParseProtocol) give
// what libxtables' own parsers give, and iptables' protocol table built in (FormatHeader's names) is the library's.
// A difference here would change the bytes a rule is written with, or the name it is printed with.
// clang-format off
#include "src/dialect/xtables_lib.h"  // first: <net/if.h> before the kernel's headers
// clang-format on
#include <arpa/inet.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/native/xt_header.h"
#include "src/backend/native/xtables.h"
#include "src/dialect/extensions.h"

namespace iptkit::backend::native {
namespace {

// libxtables, initialized (its parameters set, the exit handler one that does not return into a test: the inputs
// handed to it here are ones the direct parsers accepted, which libxtables accepts too).
const dialect::XtablesLib* Lib() {
  Result<const dialect::XtablesLib*> lib = dialect::LoadXtables();
  if (!lib.ok()) return nullptr;
  // The dialect's catalog initializes libxtables (xtables_init_all with its parameters) on its first lookup.
  (void)dialect::SystemExtensions().FindMatch(Family::kIPv4, "conntrack");
  return *lib;
}

// libxtables' address and mask for `spec` (exactly one address expected).
bool LibParse(const dialect::XtablesLib& xt, Family family, const std::string& spec, DirectAddress* out) {
  std::lock_guard<std::mutex> lock(dialect::XtablesMutex());
  unsigned int n = 0;
  std::memset(out, 0, sizeof(*out));
  if (family == Family::kIPv4) {
    in_addr* a = nullptr;
    in_addr* m = nullptr;
    xt.ipparse_multiple(spec.c_str(), &a, &m, &n);
    if (n == 1) {
      std::memcpy(out->addr, a, 4);
      std::memcpy(out->mask, m, 4);
    }
    std::free(a);
    std::free(m);
  } else {
    in6_addr* a = nullptr;
    in6_addr* m = nullptr;
    xt.ip6parse_multiple(spec.c_str(), &a, &m, &n);
    if (n == 1) {
      std::memcpy(out->addr, a, 16);
      std::memcpy(out->mask, m, 16);
    }
    std::free(a);
    std::free(m);
  }
  return n == 1;
}

std::string Hex(const uint8_t* p, int n) {
  std::string s;
  char b[4];
  for (int i = 0; i < n; ++i) {
    std::snprintf(b, sizeof(b), "%02x", p[i]);
    s += b;
  }
  return s;
}

TEST(XtablesHeaderTest, CommonAddressFormsAreParsedWithoutLibxtables) {
  for (const char* spec : {"192.168.0.2", "192.168.0.2/32", "10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/1"}) {
    EXPECT_TRUE(DirectParseAddress(Family::kIPv4, spec).has_value()) << spec;
  }
  for (const char* spec : {"2001:db8::1", "2001:db8::/32", "::/0", "::ffff:10.0.0.1/128", "fe80::1%1" /*no*/}) {
    const bool want = std::string(spec).find('%') == std::string::npos;
    EXPECT_EQ(DirectParseAddress(Family::kIPv6, spec).has_value(), want) << spec;
  }
  // Left to libxtables: octal and shortened IPv4, dotted masks, leading zeros, lists, names, bad lengths.
  for (const char* spec : {"010.0.0.1", "10.1", "10.0.0.1/255.0.0.0", "10.0.0.1/08", "10.0.0.1,10.0.0.2", "localhost",
                           "10.0.0.1/33", "10.0.0.256", "10.0.0.1/", "1.2.3.4.5", ""}) {
    EXPECT_FALSE(DirectParseAddress(Family::kIPv4, spec).has_value()) << spec;
  }
  for (const char* spec : {"2001:db8::1/129", "2001:db8::1/ffff::", "2001:db8::1,::2", "localhost", "1.2.3.4"}) {
    EXPECT_FALSE(DirectParseAddress(Family::kIPv6, spec).has_value()) << spec;
  }
}

TEST(XtablesHeaderTest, DirectAddressesAreLibxtablesOnRandomSpecs) {
  const dialect::XtablesLib* xt = Lib();
  if (xt == nullptr) GTEST_SKIP() << "libxtables cannot be loaded";
  std::mt19937 rng(20261208);
  int compared[2] = {0, 0};
  for (int i = 0; i < 6000; ++i) {
    const Family family = i % 2 == 0 ? Family::kIPv4 : Family::kIPv6;
    std::string spec;
    if (family == Family::kIPv4) {
      for (int k = 0; k < 4; ++k) spec += (k ? "." : "") + std::to_string(rng() % 4 == 0 ? rng() % 300 : rng() % 256);
    } else {
      uint8_t a[16];
      for (uint8_t& b : a) b = rng() % 3 == 0 ? 0 : static_cast<uint8_t>(rng());
      char text[INET6_ADDRSTRLEN];
      inet_ntop(AF_INET6, a, text, sizeof(text));
      spec = text;
    }
    if (rng() % 4 != 0) spec += "/" + std::to_string(rng() % (family == Family::kIPv4 ? 34 : 130));
    std::optional<DirectAddress> direct = DirectParseAddress(family, spec);
    if (!direct) continue;
    DirectAddress lib;
    ASSERT_TRUE(LibParse(*xt, family, spec, &lib)) << spec;
    const int n = family == Family::kIPv4 ? 4 : 16;
    EXPECT_EQ(Hex(direct->addr, n), Hex(lib.addr, n)) << spec;
    EXPECT_EQ(Hex(direct->mask, n), Hex(lib.mask, n)) << spec;
    ++compared[family == Family::kIPv6];
  }
  // Most random specs are valid common forms: the comparison covered both families.
  EXPECT_GT(compared[0], 1000);
  EXPECT_GT(compared[1], 2000);
}

TEST(XtablesHeaderTest, DirectProtocolsAreLibxtables) {
  const dialect::XtablesLib* xt = Lib();
  if (xt == nullptr) GTEST_SKIP() << "libxtables cannot be loaded";
  // Numbers, "all" and iptables' own names are always parsed directly; names only the system knows (gre) when it
  // does.
  std::vector<std::string> names = {"all", "0", "6", "17", "255"};
  for (const xtables_pprot* p = xt->chain_protos; p->name != nullptr; ++p) names.push_back(p->name);
  const size_t required = names.size();
  names.insert(names.end(), {"gre", "ipv6", "ospf", "TCP"});
  for (size_t i = 0; i < names.size(); ++i) {
    std::optional<uint16_t> direct = DirectParseProtocol(names[i]);
    if (i < required) {
      ASSERT_TRUE(direct.has_value()) << names[i];
    }
    if (!direct) continue;
    std::lock_guard<std::mutex> lock(dialect::XtablesMutex());
    EXPECT_EQ(*direct, xt->parse_protocol(names[i].c_str())) << names[i];
  }
  for (const char* name : {"256", "06", "0x6", "-1", "", "no-such-protocol"}) {
    EXPECT_FALSE(DirectParseProtocol(name).has_value()) << name;
  }
}

TEST(XtablesHeaderTest, ProtocolNamesPrintedAreIptablesOwn) {
  const dialect::XtablesLib* xt = Lib();
  if (xt == nullptr) GTEST_SKIP() << "libxtables cannot be loaded";
  int names = 0;
  std::set<uint16_t> seen;
  for (const xtables_pprot* p = xt->chain_protos; p->name != nullptr; ++p) {
    // "all": no -p printed; a number's first name is the one printed (iptables' proto_to_name).
    if (p->num == 0 || !seen.insert(p->num).second) continue;
    XtHeader h{};
    h.proto = p->num;
    EXPECT_EQ(FormatHeader(Family::kIPv4, h), std::string(" -p ") + p->name) << int(p->num);
    ++names;
  }
  EXPECT_GE(names, 9);
}

// libxtables is loaded only by a parse or print that needs it, and when it cannot be loaded only those fail, with
// FailedPrecondition naming the file (reason libxtables_unavailable): a rule of the common forms is still parsed
// and printed. In a child process (the library path is set before anything loads it); ctest runs each test in a
// process of its own, so only a run of the whole binary can have it loaded already.
TEST(XtablesDeathTest, MissingLibraryFailsOnlyWhatNeedsIt) {
  void* loaded = ::dlopen(dialect::XtablesLibPath().c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (loaded != nullptr) {
    ::dlclose(loaded);
    GTEST_SKIP() << "an earlier test of this process loaded libxtables";
  }
  EXPECT_EXIT(
      {
        dialect::SetXtablesLibPathForTesting("/nonexistent/libxtables.so.12");
        auto fail = [](const std::string& what) {
          std::fprintf(stderr, "%s\n", what.c_str());
          std::_Exit(1);
        };
        Result<Xtables*> xt = Xtables::Instance();
        if (!xt.ok()) fail("Instance: " + xt.status().ToString());
        Result<Rule> common = ParseRuleSpec("-s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT", Family::kIPv4);
        Result<Rule> conntrack = ParseRuleSpec("-m conntrack --ctstate NEW -j ACCEPT", Family::kIPv4);
        if (!common.ok() || !conntrack.ok()) fail("ParseRuleSpec");
        std::vector<Result<XtRule>> parsed = (*xt)->Parse(Family::kIPv4, {&*common, &*conntrack});
        if (!parsed[0].ok()) fail("common rule: " + parsed[0].status().ToString());
        const Status& s = parsed[1].status();
        if (s.code() != StatusCode::kFailedPrecondition ||
            s.message().find("cannot load /nonexistent/libxtables.so.12") == std::string::npos ||
            s.details().reason != std::optional<std::string>("libxtables_unavailable")) {
          fail("conntrack rule: " + s.ToString());
        }
        std::vector<Result<std::string>> text = (*xt)->Format({&*parsed[0]});
        if (!text[0].ok() || *text[0] != "-s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT") fail("Format");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace iptkit::backend::native
