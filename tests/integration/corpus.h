// The real-world iptables-save corpus ($IPTKIT_CORPUS_DIR/valid, see its README.md) for kernel round-trips:
// the files, the ipsets / nfacct objects some of them need, and the comparison of a save output with a file.
#ifndef IPTKIT_TESTS_INTEGRATION_CORPUS_H_
#define IPTKIT_TESTS_INTEGRATION_CORPUS_H_

#include <ostream>
#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "tests/integration/netns_fixture.h"

namespace iptkit::integration {

struct CorpusFile {
  std::string name;  // "ufw__assembled_host.v4"
  std::string path;
  Family family = Family::kIPv4;  // from the .v4 / .v6 suffix
};
inline void PrintTo(const CorpusFile& file, std::ostream* os) { *os << file.name; }

// The files of $IPTKIT_CORPUS_DIR/valid sorted by name; empty when the corpus is absent.
std::vector<CorpusFile> CorpusFiles();
Result<std::string> ReadTextFile(const std::string& path);

// Creates in `ns` the ipsets and nfacct objects the corpus README lists for `file_name` (no-op for others).
Status PrepareCorpusObjects(const TestNetns& ns, const std::string& file_name);

// Loads `text` (the contents of `file`) into `ns` with the variant's iptables-restore, after its corpus objects.
Status LoadCorpusFile(const TestNetns& ns, Variant variant, const CorpusFile& file, const std::string& text);

// "" when `actual` (iptables-save output without comment lines) matches the corpus text `expected`, else a
// description of the first difference. nft: byte-identical. legacy: compared per table, tolerating the known
// differences of iptables-legacy 1.8.9 (corpus README): tables in kernel order, extra empty tables,
// `! -i +` / `! -o +` dropped (the legacy save cannot print an inverted match-all interface), and
// --nflog-prefix cut to 63 bytes (xt_NFLOG's 64-byte prefix field).
std::string CorpusDiff(Variant variant, const std::string& expected, const std::string& actual);

}  // namespace iptkit::integration

#endif  // IPTKIT_TESTS_INTEGRATION_CORPUS_H_
