// IP sets: iptkit (in-process through libipset) vs the ipset tool. Run as root; everything happens in a network
// namespace this program creates (and deletes). Prints a Markdown table and the ratios; no timed assertions.
//
//   build/release/bench/ipset_bench [--adds 10000] [--bulk 100000] [--processes 300]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "iptkit/ipset.h"

namespace iptkit::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::string Address(uint32_t i) {
  return "10." + std::to_string((i >> 16) & 0xff) + "." + std::to_string((i >> 8) & 0xff) + "." +
         std::to_string(i & 0xff);
}

int Fail(const std::string& what, const Status& s) {
  std::cerr << "ipset_bench: " << what << ": " << s.ToString() << "\n";
  return 1;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Main(int argc, char** argv) {
  uint32_t adds = 10000, bulk = 100000, processes = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    uint32_t v = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    if (a == "--adds") adds = v;
    if (a == "--bulk") bulk = v;
    if (a == "--processes") processes = v;
  }
  InstallNetnsCleanupHandlers();
  auto ns = Netns::Create("iptkit-bench-" + std::to_string(::getpid()) + "-ipset");
  if (!ns.ok()) return Fail("namespace", ns.status());
  const int fd = (*ns)->fd();
  Ipsets sets((*ns)->name());
  const std::string ipset = "/usr/sbin/ipset";
  RunOptions in_ns{.netns_fd = fd};

  // 1. Single adds through the library.
  if (Status s = sets.Create("lib", "hash:ip", {.maxelem = 1u << 20}); !s.ok()) return Fail("create", s);
  auto t0 = Clock::now();
  for (uint32_t i = 0; i < adds; ++i) {
    if (Status s = sets.Add("lib", Address(i)); !s.ok()) return Fail("add", s);
  }
  const double lib_add = Seconds(t0) / adds;

  // 2. `ipset add` per entry (one process each); `processes` of them, per add.
  if (auto r = RunProcessOk({ipset, "create", "cli", "hash:ip", "maxelem", "1048576"}, in_ns); !r.ok()) {
    return Fail("ipset create", r.status());
  }
  std::vector<double> ipset_add_times;
  for (uint32_t i = 0; i < processes; ++i) {
    auto t = Clock::now();
    if (auto r = RunProcessOk({ipset, "add", "cli", Address(i)}, in_ns); !r.ok()) return Fail("ipset add", r.status());
    ipset_add_times.push_back(Seconds(t));
  }
  double ipset_add_total = 0;
  for (double d : ipset_add_times) ipset_add_total += d;
  const double ipset_add = ipset_add_total / processes;

  // 3. One `iptkit set add` process vs one `ipset add` process (medians).
  std::vector<double> iptkit_proc, ipset_proc;
  const std::string cli = IPTKIT_CLI_PATH;
  for (uint32_t i = 0; i < processes; ++i) {
    std::string elem = Address(500000 + i);
    auto t = Clock::now();
    if (auto r = RunProcessOk({cli, "--netns", (*ns)->name(), "set", "add", "cli", elem}); !r.ok()) {
      return Fail("iptkit set add", r.status());
    }
    iptkit_proc.push_back(Seconds(t));
    t = Clock::now();
    if (auto r = RunProcessOk({ipset, "add", "cli", Address(600000 + i)}, in_ns); !r.ok()) {
      return Fail("ipset add", r.status());
    }
    ipset_proc.push_back(Seconds(t));
  }

  // 4. Bulk load of `bulk` entries into an empty set: library Load vs `ipset restore`.
  std::vector<SetEntrySpec> entries;
  entries.reserve(bulk);
  std::string restore_text;
  for (uint32_t i = 0; i < bulk; ++i) {
    entries.push_back({Address(i), std::nullopt, std::nullopt, 0});
    restore_text += "add rst " + Address(i) + "\n";
  }
  if (Status s = sets.Create("bulk", "hash:ip", {.maxelem = 1u << 18}); !s.ok()) return Fail("create", s);
  t0 = Clock::now();
  auto loaded = sets.Load("bulk", entries);
  const double lib_bulk = Seconds(t0);
  if (!loaded.ok()) return Fail("load", loaded.status());
  if (auto r = RunProcessOk({ipset, "create", "rst", "hash:ip", "maxelem", "262144"}, in_ns); !r.ok()) {
    return Fail("ipset create", r.status());
  }
  t0 = Clock::now();
  if (auto r = RunProcessOk({ipset, "restore"}, {.netns_fd = fd, .stdin_data = restore_text}); !r.ok()) {
    return Fail("ipset restore", r.status());
  }
  const double ipset_bulk = Seconds(t0);

  // 5. A full swap: the 100,000-entry set becomes 100,000 other entries (Sync: temporary set, swap, destroy).
  std::vector<SetEntrySpec> other;
  other.reserve(bulk);
  for (uint32_t i = 0; i < bulk; ++i) other.push_back({Address(bulk + i), std::nullopt, std::nullopt, 0});
  t0 = Clock::now();
  auto synced = sets.Sync("bulk", other);
  const double lib_sync = Seconds(t0);
  if (!synced.ok()) return Fail("sync", synced.status());

  std::printf("## IP sets: iptkit (libipset in-process) vs the ipset tool\n\n");
  std::printf("| operation | iptkit | ipset | ratio (ipset / iptkit) |\n|---|---|---|---|\n");
  std::printf("| single add (library, %u adds; ipset: %u processes) | %.1f µs | %.1f µs | %.1f× |\n", adds, processes,
              lib_add * 1e6, ipset_add * 1e6, ipset_add / lib_add);
  std::printf("| one add process (median of %u): `iptkit set add` vs `ipset add` | %.2f ms | %.2f ms | %.2f× |\n",
              processes, Median(iptkit_proc) * 1e3, Median(ipset_proc) * 1e3, Median(ipset_proc) / Median(iptkit_proc));
  std::printf("| bulk load of %u entries: Load vs `ipset restore` | %.3f s | %.3f s | %.2f× |\n", bulk, lib_bulk,
              ipset_bulk, ipset_bulk / lib_bulk);
  std::printf("| full swap of %u entries (Sync: temp set + swap) | %.3f s | | |\n", bulk, lib_sync);
  return 0;
}

}  // namespace
}  // namespace iptkit::bench

int main(int argc, char** argv) { return iptkit::bench::Main(argc, argv); }
