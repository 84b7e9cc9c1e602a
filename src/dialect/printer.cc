// Printing rules and rulesets exactly as iptables-save 1.8.9 (nf_tables variant) prints them.

#include <string>
#include <string_view>

#include "iptkit/dialect.h"
#include "src/dialect/text_util.h"

namespace iptkit {
namespace {

// How an extension's save function prints an option's value. The model carries no "quoted" flag: quoting is a
// property of the (extension, option) pair, taken from the iptables 1.8.9 extension sources.
enum class ValueStyle {
  kBare,          // printf(" --opt %s"): most options (numbers, keywords, set/chain/label names)
  kSaveString,    // xtables_save_string(): bare if [A-Za-z0-9_-]+, else quoted with " \ ' escaped
  kAlwaysQuoted,  // printf(" \"...\""): always in double quotes, " and \ escaped
};

struct OptionStyle {
  std::string_view extension;
  std::string_view option;
  ValueStyle style;
  bool extra_space;  // "--nfacct-name  NAME": the save function prints a trailing blank before save_string's own
};

// Matches (lower-case names).
constexpr OptionStyle kMatchStyles[] = {
    {"comment", "comment", ValueStyle::kSaveString, false},      // libxt_comment.c comment_save
    {"helper", "helper", ValueStyle::kSaveString, false},        // libxt_helper.c helper_save
    {"nfacct", "nfacct-name", ValueStyle::kSaveString, true},    // libxt_nfacct.c nfacct_print_name
    {"cgroup", "path", ValueStyle::kSaveString, false},          // libxt_cgroup.c cgroup_save_v1/v2
    {"string", "string", ValueStyle::kAlwaysQuoted, false},      // libxt_string.c print_string
    {"string", "hex-string", ValueStyle::kAlwaysQuoted, false},  // libxt_string.c print_hex_string
    {"u32", "u32", ValueStyle::kAlwaysQuoted, false},            // libxt_u32.c u32_dump
    {"bpf", "bytecode", ValueStyle::kAlwaysQuoted, false},       // libxt_bpf.c bpf_save_code
    {"connlabel", "label", ValueStyle::kAlwaysQuoted, false},    // libxt_connlabel.c connlabel_mt_save
};

// Targets (upper-case names).
constexpr OptionStyle kTargetStyles[] = {
    {"LOG", "log-prefix", ValueStyle::kSaveString, false},        // libxt_LOG.c LOG_save
    {"NFLOG", "nflog-prefix", ValueStyle::kSaveString, false},    // libxt_NFLOG.c nflog_print
    {"ULOG", "ulog-prefix", ValueStyle::kSaveString, false},      // libipt_ULOG.c ULOG_save
    {"LED", "led-trigger-id", ValueStyle::kAlwaysQuoted, false},  // libxt_LED.c LED_save
};

template <size_t N>
OptionStyle FindStyle(const OptionStyle (&table)[N], std::string_view extension, std::string_view option) {
  for (const OptionStyle& s : table) {
    if (s.extension == extension && s.option == option) return s;
  }
  return OptionStyle{extension, option, ValueStyle::kBare, false};
}

// Whether a bare value would be read back as something else: an option, a negation, a separator. The first
// value of an option is read like getopt reads a required argument (anything but "!" or one of the rule's own
// options such as -j); later values must not look like options at all.
bool MisreadBare(std::string_view value, size_t index) {
  if (value == "!") return true;
  if (index == 0) return dialect::IsHeaderOptionToken(value);
  return dialect::LooksLikeOption(value);
}

void AppendValue(std::string& out, ValueStyle style, std::string_view value, size_t index) {
  switch (style) {
    case ValueStyle::kAlwaysQuoted:
      dialect::AppendDoubleQuoted(out, value);
      return;
    case ValueStyle::kSaveString:
      dialect::AppendSaveString(out, value, MisreadBare(value, index));
      return;
    case ValueStyle::kBare: {
      // iptables prints these raw. A value that would not lex back as one identical token (empty, blanks, a
      // double quote) is quoted instead, so the text stays a faithful restore line.
      bool lexes = !value.empty() && value.find_first_of(" \t\"") == std::string_view::npos &&
                   dialect::FindForbiddenByte(value) == std::string_view::npos && !MisreadBare(value, index);
      if (lexes) {
        out.append(value);
      } else {
        dialect::AppendSaveString(out, value, true);
      }
      return;
    }
  }
}

void AppendField(std::string& out, const std::optional<Field>& field, std::string_view flag) {
  if (!field) return;
  if (field->negated) out += " !";
  out += ' ';
  out += flag;
  if (flag == "-f") return;  // no value
  out += ' ';
  AppendValue(out, ValueStyle::kBare, field->value, 0);
}

template <size_t N>
void AppendOptions(std::string& out, const OptionStyle (&table)[N], std::string_view extension,
                   const std::vector<Option>& options) {
  for (const Option& option : options) {
    OptionStyle style = FindStyle(table, extension, option.name);
    if (option.negated) out += " !";
    out += " --";
    out += option.name;
    if (style.extra_space && !option.values.empty()) out += ' ';
    for (size_t i = 0; i < option.values.size(); ++i) {
      out += ' ';
      AppendValue(out, style.style, option.values[i], i);
    }
  }
}

// Appends " -s ... -j ..." (with the leading blank, as iptables' save functions print it).
void AppendRuleSpec(std::string& out, const Rule& rule) {
  // nft_ipv4_save_rule / nft_ipv6_save_rule: addresses, then save_rule_details (-i -o -p -f), then
  // save_matches_and_target.
  AppendField(out, rule.source, "-s");
  AppendField(out, rule.destination, "-d");
  AppendField(out, rule.in_interface, "-i");
  AppendField(out, rule.out_interface, "-o");
  AppendField(out, rule.protocol, "-p");
  AppendField(out, rule.fragment, "-f");
  for (const Match& match : rule.matches) {
    out += " -m ";
    AppendValue(out, ValueStyle::kBare, match.name, 0);
    AppendOptions(out, kMatchStyles, match.name, match.options);
  }
  switch (rule.target.kind) {
    case Target::Kind::kNone:
      break;
    case Target::Kind::kJump:
      out += " -j ";
      AppendValue(out, ValueStyle::kBare, rule.target.name, 0);
      AppendOptions(out, kTargetStyles, rule.target.name, rule.target.options);
      break;
    case Target::Kind::kGoto:
      out += " -g ";
      AppendValue(out, ValueStyle::kBare, rule.target.name, 0);
      break;
  }
}

// A reason as one comment line (a reason quoting iptables' stderr may span lines).
std::string OneLine(std::string_view text) {
  std::string out;
  for (char c : text) out += (c == '\n' || c == '\r') ? ' ' : c;
  return out;
}

void AppendCounters(std::string& out, const Counters& counters) {
  dialect::AppendSaveCounters(out, counters.packets, counters.bytes);
}

}  // namespace

std::string FormatRuleSpec(const Rule& rule) {
  std::string out;
  AppendRuleSpec(out, rule);
  if (!out.empty()) out.erase(0, 1);
  return out;
}

bool HasTypedForm(const Rule& rule) {
  if (rule.typed.empty() && rule.typed_for.empty()) return false;
  if (!rule.OwnerTag()) return FormatRuleSpec(rule) == rule.typed_for;
  Rule untagged = rule;
  untagged.ClearOwnerTag();
  return FormatRuleSpec(untagged) == rule.typed_for;
}

std::string QuoteRestoreArgument(std::string_view argument) {
  if (!argument.empty() && argument.find_first_of(" \t\"") == std::string_view::npos) return std::string(argument);
  std::string out = "\"";
  for (char c : argument) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string FormatRuleForRestore(const Rule& rule, bool counters) {
  if (!HasTypedForm(rule)) return FormatRuleSpec(rule);
  std::string out;
  const size_t skip = !counters && rule.typed.size() >= 3 && rule.typed[0] == "-c" ? 3 : 0;
  for (size_t i = skip; i < rule.typed.size(); ++i) {
    const std::string& arg = rule.typed[i];
    if (!out.empty()) out += ' ';
    out += QuoteRestoreArgument(arg);
  }
  if (std::optional<Rule::Tag> tag = rule.OwnerTag()) {
    if (!out.empty()) out += ' ';
    out += "-m comment --comment " + QuoteRestoreArgument("iptkit:" + tag->owner + ":" + tag->id);
  }
  return out;
}

std::string FormatSave(const Ruleset& ruleset, const SaveFormatOptions& options) {
  std::string out;
  static const Counters kZero;
  for (const Table& table : ruleset.tables) {
    out += '*';
    out += table.name;
    out += '\n';
    if (options.mark_lossy && !table.unrepresentable_reason.empty()) {
      out += "# iptkit: unrepresentable table: " + OneLine(table.unrepresentable_reason) + "\n";
    }
    for (const Chain& chain : table.chains) {
      out += ':';
      out += chain.name;
      out += ' ';
      out += chain.policy ? *chain.policy : "-";
      out += ' ';
      AppendCounters(out, options.counters ? chain.counters : kZero);
      out += '\n';
    }
    for (const Chain& chain : table.chains) {
      for (size_t i = 0; i < chain.rules.size(); ++i) {
        const Rule& rule = chain.rules[i];
        if (options.counters) {
          AppendCounters(out, rule.counters);
          out += ' ';
        }
        out += "-A ";
        out += chain.name;
        AppendRuleSpec(out, rule);
        out += '\n';
        if (options.mark_lossy && !rule.lossy.empty()) {
          out +=
              "# iptkit: lossy rule " + std::to_string(i + 1) + " of " + chain.name + ": " + OneLine(rule.lossy) + "\n";
        }
      }
    }
    out += "COMMIT\n";
  }
  return out;
}

}  // namespace iptkit
