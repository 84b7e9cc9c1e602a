// docs/cli.md and the binary's help cannot drift apart: every command `iptkit --help` lists has a section in the
// docs and the other way round, and every option of `iptkit --help` (global) and of `iptkit COMMAND --help` is in
// the docs' table of that section and the other way round.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/cli/process.h"

namespace iptkit::clitest {
namespace {

using Flags = std::set<std::string>;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::string Help(std::vector<std::string> args) {
  args.insert(args.begin(), IPTKIT_CLI_BIN);
  args.push_back("--help");
  ProcessResult r = RunProcess(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.out;
}

// The option names of a help section ("Options:" / "Global options ..."): the labels "  -t, --table TABLE   ...".
Flags HelpFlags(const std::string& help, const std::string& section_start) {
  Flags flags;
  bool in = false;
  for (const std::string& line : Lines(help)) {
    if (line.rfind(section_start, 0) == 0) {
      in = true;
      continue;
    }
    if (!in) continue;
    if (line.empty()) break;
    if (line.rfind("  -", 0) != 0) continue;  // a wrapped help line
    std::string label = line.substr(2, line.find("  ", 2) - 2);
    static const std::regex kFlag(R"((^|, )(--?[A-Za-z0-9][-A-Za-z0-9]*))");
    for (std::sregex_iterator it(label.begin(), label.end(), kFlag), end; it != end; ++it) flags.insert((*it)[2]);
  }
  return flags;
}

// The option names in the first cell of the table rows of each "### name" section of docs/cli.md (and of
// "## Global options" under the name "").
std::map<std::string, Flags> DocFlags(const std::string& doc) {
  std::map<std::string, Flags> sections;
  std::string current;
  bool in_section = false;
  for (const std::string& line : Lines(doc)) {
    if (line.rfind("## Global options", 0) == 0) {
      current = "";
      in_section = true;
      sections[current];
      continue;
    }
    if (line.rfind("### ", 0) == 0) {
      current = line.substr(4);
      in_section = true;
      sections[current];
      continue;
    }
    if (line.rfind("## ", 0) == 0) {
      in_section = false;
      continue;
    }
    if (!in_section || line.rfind("| `-", 0) != 0) continue;
    std::string cell = line.substr(2, line.find(" | ", 2) - 2);
    static const std::regex kCode("`(-[^` ]+)[^`]*`");
    for (std::sregex_iterator it(cell.begin(), cell.end(), kCode), end; it != end; ++it) {
      sections[current].insert((*it)[1]);
    }
  }
  return sections;
}

std::string ReadDoc() {
  std::ifstream in(std::string(IPTKIT_DOCS_DIR) + "/cli.md");
  EXPECT_TRUE(in) << "docs/cli.md not found";
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(CliDocsTest, EveryCommandAndOptionOfTheHelpIsDocumentedAndNothingElse) {
  const std::string root = Help({});
  const std::map<std::string, Flags> docs = DocFlags(ReadDoc());

  // Commands: `iptkit --help` lists them under "Commands:"; each has a "### name" section.
  std::set<std::string> help_commands;
  bool in = false;
  for (const std::string& line : Lines(root)) {
    if (line == "Commands:") {
      in = true;
      continue;
    }
    if (!in) continue;
    if (line.empty()) break;
    std::istringstream words(line);
    std::string name, second;
    words >> name;
    if (name == "chain") {
      words >> second;
      name += " " + second;
    }
    help_commands.insert(name);
  }
  std::set<std::string> doc_commands;
  for (const auto& [name, flags] : docs) {
    if (!name.empty()) doc_commands.insert(name);
  }
  EXPECT_EQ(help_commands, doc_commands) << "commands of `iptkit --help` vs the ### sections of docs/cli.md";
  EXPECT_GE(help_commands.size(), 18u);

  // Global options.
  ASSERT_TRUE(docs.count(""));
  EXPECT_EQ(HelpFlags(root, "Global options"), docs.at("")) << "global options: iptkit --help vs docs/cli.md";
  EXPECT_GE(docs.at("").size(), 15u);

  // Each command's options.
  for (const std::string& command : help_commands) {
    std::vector<std::string> args;
    std::istringstream words(command);
    for (std::string w; words >> w;) args.push_back(w);
    const Flags help = HelpFlags(Help(args), "Options:");
    const Flags documented = docs.count(command) ? docs.at(command) : Flags{};
    EXPECT_EQ(help, documented) << "options of `iptkit " << command << " --help` vs docs/cli.md ### " << command;
  }
}

// The option names on the ".TP" lines of the given sections of a man page ("\-\-table" is "--table").
Flags ManFlags(const std::string& page, const std::set<std::string>& sections) {
  Flags flags;
  bool in = false;
  bool label = false;
  for (std::string line : Lines(page)) {
    if (line.rfind(".SH ", 0) == 0) {
      in = sections.count(line.substr(4)) != 0;
      continue;
    }
    if (!in) continue;
    if (line == ".TP") {
      label = true;
      continue;
    }
    if (!label) continue;
    label = false;
    for (size_t at = line.find("\\-"); at != std::string::npos; at = line.find("\\-", at)) line.replace(at, 2, "-");
    static const std::regex kFlag(R"((^|[ "])(--?[A-Za-z0-9][-A-Za-z0-9]*))");
    for (std::sregex_iterator it(line.begin(), line.end(), kFlag), end; it != end; ++it) flags.insert((*it)[2]);
  }
  return flags;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path << " not found";
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// iptkit(8) lists every option of the program (global and per command), and only those.
TEST(CliDocsTest, ManPageOfIptkitHasEveryOption) {
  const std::string root = Help({});
  Flags help = HelpFlags(root, "Global options");
  for (const char* name :
       {"list", "save", "restore", "check", "append", "insert", "delete", "replace", "plan", "apply", "txn"}) {
    Flags f = HelpFlags(Help({name}), "Options:");
    help.insert(f.begin(), f.end());
  }
  for (const char* sub : {"create", "delete", "rename", "flush", "zero", "policy"}) {
    Flags f = HelpFlags(Help({"chain", sub}), "Options:");
    help.insert(f.begin(), f.end());
  }
  const std::string page = ReadFile(std::string(IPTKIT_DOCS_DIR) + "/man/iptkit.8");
  EXPECT_EQ(ManFlags(page, {"GLOBAL OPTIONS", "COMMAND OPTIONS"}), help);
}

// iptkitd(8) lists every option of `iptkitd --help`, and only those.
TEST(CliDocsTest, ManPageOfIptkitdHasEveryOption) {
  ProcessResult r = RunProcess({IPTKITD_BIN, "--help"});
  ASSERT_EQ(r.code, 0) << r.err;
  Flags help;
  bool in = false;
  for (const std::string& line : Lines(r.out)) {
    if (line == "Options:") {
      in = true;
      continue;
    }
    if (!in) continue;
    if (line.empty()) break;
    if (line.rfind("  -", 0) != 0) continue;
    std::string label = line.substr(2, line.find("  ", 2) - 2);
    static const std::regex kFlag(R"((^|,)(--?[A-Za-z0-9][-A-Za-z0-9]*))");
    for (std::sregex_iterator it(label.begin(), label.end(), kFlag), end; it != end; ++it) help.insert((*it)[2]);
  }
  EXPECT_GE(help.size(), 20u);
  const std::string page = ReadFile(std::string(IPTKIT_DOCS_DIR) + "/man/iptkitd.8");
  EXPECT_EQ(ManFlags(page, {"OPTIONS"}), help);
}

// The checker itself: a flag missing on either side is found.
TEST(CliDocsTest, TheComparisonSeesAMissingFlag) {
  const std::string doc =
      "## Global options\n| `-t`, `--table TABLE` | x |\n| `--json` | x |\n## Other\n"
      "### append\n| `--dry-run` | x |\n| `--unique` | x |\n";
  auto flags = DocFlags(doc);
  EXPECT_EQ(flags.at(""), (Flags{"-t", "--table", "--json"}));
  EXPECT_EQ(flags.at("append"), (Flags{"--dry-run", "--unique"}));
  const std::string help =
      "Options:\n  -t, --table TABLE       table\n  --dry-run               x\n"
      "                          wrapped -x --not-a-flag\n\nExamples:\n";
  EXPECT_EQ(HelpFlags(help, "Options:"), (Flags{"-t", "--table", "--dry-run"}));
  const std::string page =
      ".SH OPTIONS\n.TP\n.BR \\-t \", \" \\-\\-table\nThe -x table.\n.SH OTHER\n.TP\n.B \\-\\-no\n";
  EXPECT_EQ(ManFlags(page, {"OPTIONS"}), (Flags{"-t", "--table"}));
}

}  // namespace
}  // namespace iptkit::clitest
