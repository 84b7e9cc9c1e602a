#include "src/backend/restore/tool_errors.h"

#include <regex>

namespace iptkit::backend {

std::string CleanToolMessage(std::string_view stderr_text) {
  // "iptables-restore v1.8.9 (nf_tables): ", "ip6tables v1.8.9 (legacy): " (xtables_error's banner).
  static const std::regex kBanner(R"(^[\w.-]+ v[\d.]+ \([\w]+\):\s*)");
  static const std::regex kLineOnly(R"(^(Error occurred at line: \d+|[\w.-]+: line \d+ failed)$)");
  static const std::regex kLinePrefix(R"(^([\w.-]+: )?line \d+( failed)?: )");
  static const std::regex kChainSuffix(R"(: rule in chain \S+$)");
  std::string out;
  size_t start = 0;
  while (start <= stderr_text.size()) {
    size_t end = stderr_text.find('\n', start);
    if (end == std::string_view::npos) end = stderr_text.size();
    std::string line(stderr_text.substr(start, end - start));
    start = end + 1;
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) line.pop_back();
    line = std::regex_replace(line, kBanner, "");
    line = std::regex_replace(line, kLinePrefix, "");
    line = std::regex_replace(line, kChainSuffix, "");
    while (!line.empty() && line.front() == ' ') line.erase(0, 1);
    if (line.empty() || line.starts_with("Try `") || std::regex_match(line, kLineOnly)) continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out;
}

std::optional<size_t> QuotedArgument(std::string_view message, const std::vector<std::string>& args) {
  std::optional<size_t> best;
  size_t best_at = std::string_view::npos;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.empty()) continue;
    for (const std::string& quoted : {"`" + a + "'", "\"" + a + "\"", "'" + a + "'"}) {
      const size_t at = message.find(quoted);
      if (at == std::string_view::npos) continue;
      if (at < best_at || (at == best_at && a.size() > args[*best].size())) {
        best = i;
        best_at = at;
      }
    }
  }
  return best;
}

}  // namespace iptkit::backend
