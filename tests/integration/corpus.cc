#include "tests/integration/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace iptkit::integration {
namespace {

constexpr size_t kNflogPrefixMax = 63;

// Objects per corpus file, from $IPTKIT_CORPUS_DIR/README.md.
const std::map<std::string, std::vector<std::vector<std::string>>>& CorpusObjects() {
  static const auto* objects = new std::map<std::string, std::vector<std::vector<std::string>>>{
      {"fail2ban__action_d_jails.v4", {{"ipset", "create", "f2b-recidive", "hash:net", "family", "inet"}}},
      {"fail2ban__action_d_jails.v6", {{"ipset", "create", "f2b-recidive6", "hash:net", "family", "inet6"}}},
      {"kubernetes__proxier_overall_rules.v4",
       {{"nfacct", "add", "ct_state_invalid_dropped_pkts"}, {"nfacct", "add", "localhost_nps_accepted_pkts"}}},
      {"moby__swarm_portmap.v4", {{"ipset", "create", "docker-ext-bridges-v4", "hash:net", "family", "inet"}}},
      {"moby__usernet_portmap.v4", {{"ipset", "create", "docker-ext-bridges-v4", "hash:net", "family", "inet"}}},
      {"neutron__sg_rpc_ipset_filter_2_trusted.v4",
       {{"ipset", "create", "NIPv4security_group1", "hash:net", "family", "inet"}}},
      {"puppetlabs-firewall__conversion_hash.v4", {{"ipset", "create", "setname1", "hash:net", "family", "inet"}}},
  };
  return *objects;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// Applies the known legacy differences to a corpus line.
std::string LegacyForm(std::string line) {
  for (const char* gone : {" ! -i +", " ! -o +"}) {
    size_t at;
    while ((at = line.find(gone)) != std::string::npos) {
      size_t end = at + std::string_view(gone).size();
      if (end == line.size() || line[end] == ' ')
        line.erase(at, end - at);
      else
        break;
    }
  }
  const std::string opt = "--nflog-prefix ";
  size_t at = line.find(opt);
  if (at != std::string::npos) {
    size_t start = at + opt.size();
    if (start < line.size() && line[start] == '"') {
      // Quoted: count unescaped bytes of the value.
      size_t i = start + 1, bytes = 0, cut = std::string::npos;
      while (i < line.size() && line[i] != '"') {
        if (bytes == kNflogPrefixMax && cut == std::string::npos) cut = i;
        i += line[i] == '\\' ? 2 : 1;
        ++bytes;
      }
      if (cut != std::string::npos) line.erase(cut, i - cut);
    } else {
      size_t end = line.find(' ', start);
      if (end == std::string::npos) end = line.size();
      if (end - start > kNflogPrefixMax) line.erase(start + kNflogPrefixMax, end - start - kNflogPrefixMax);
    }
  }
  return line;
}

bool EmptyDefaultTable(const std::string& block) {
  for (const auto& line : Lines(block)) {
    if (line.starts_with("-A ")) return false;
    if (line.starts_with(":") && line.find(" ACCEPT [") == std::string::npos) return false;
  }
  return true;
}

std::string FirstDifference(const std::string& what, const std::string& expected, const std::string& actual) {
  std::vector<std::string> e = Lines(expected), a = Lines(actual);
  size_t i = 0;
  while (i < e.size() && i < a.size() && e[i] == a[i]) ++i;
  std::ostringstream out;
  out << what << " differs at line " << i + 1 << ":\n  expected: " << (i < e.size() ? e[i] : "<end>")
      << "\n  actual:   " << (i < a.size() ? a[i] : "<end>") << "\n  (" << e.size() << " vs " << a.size() << " lines)";
  return out.str();
}

}  // namespace

std::vector<CorpusFile> CorpusFiles() {
  std::vector<CorpusFile> files;
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::path(IPTKIT_CORPUS_DIR) / "valid";
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".v4")) files.push_back({name, entry.path().string(), Family::kIPv4});
    if (name.ends_with(".v6")) files.push_back({name, entry.path().string(), Family::kIPv6});
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return files;
}

Result<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

Status PrepareCorpusObjects(const TestNetns& ns, const std::string& file_name) {
  auto it = CorpusObjects().find(file_name);
  if (it == CorpusObjects().end()) return Status::Ok();
  for (const auto& argv : it->second) {
    CommandResult r = ns.Exec(argv);
    if (!r.ok()) return Status::Unavailable("cannot create corpus object: " + r.Describe());
  }
  return Status::Ok();
}

Status LoadCorpusFile(const TestNetns& ns, Variant variant, const CorpusFile& file, const std::string& text) {
  IPTKIT_RETURN_IF_ERROR(PrepareCorpusObjects(ns, file.name));
  CommandResult loaded = ns.Restore(variant, file.family, text);
  if (!loaded.ok()) return Status::Unavailable("cannot load " + file.name + ": " + loaded.Describe());
  return Status::Ok();
}

std::string CorpusDiff(Variant variant, const std::string& expected, const std::string& actual) {
  if (variant == Variant::kNft) return expected == actual ? "" : FirstDifference("save output", expected, actual);
  auto want = SplitTables(expected);
  auto got = SplitTables(actual);
  for (const auto& [table, block] : want) {
    auto it = got.find(table);
    if (it == got.end()) return "table " + table + " missing";
    std::string normalized;
    for (const auto& line : Lines(block)) normalized += LegacyForm(line) + "\n";
    if (normalized != it->second) return FirstDifference("table " + table, normalized, it->second);
  }
  for (const auto& [table, block] : got) {
    if (!want.count(table) && !EmptyDefaultTable(block)) return "unexpected non-empty table " + table;
  }
  return "";
}

}  // namespace iptkit::integration
