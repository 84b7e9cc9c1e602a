#include "src/dialect/rule_parser.h"

#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/dialect/fields.h"
#include "src/dialect/text_util.h"

namespace iptkit::dialect {
namespace {

enum class HeaderOpt {
  kSource,
  kDestination,
  kInInterface,
  kOutInterface,
  kProtocol,
  kFragment,
  kMatch,
  kJump,
  kGoto,
  kCounters
};

struct HeaderName {
  std::string_view name;
  HeaderOpt opt;
};

// iptables.c / ip6tables.c original_opts entries that can appear in a rule spec, plus the short forms.
constexpr HeaderName kShortHeader[] = {
    {"-s", HeaderOpt::kSource},       {"-d", HeaderOpt::kDestination}, {"-i", HeaderOpt::kInInterface},
    {"-o", HeaderOpt::kOutInterface}, {"-p", HeaderOpt::kProtocol},    {"-f", HeaderOpt::kFragment},
    {"-m", HeaderOpt::kMatch},        {"-j", HeaderOpt::kJump},        {"-g", HeaderOpt::kGoto},
    {"-c", HeaderOpt::kCounters},
};
constexpr HeaderName kLongHeader[] = {
    {"source", HeaderOpt::kSource},
    {"src", HeaderOpt::kSource},
    {"destination", HeaderOpt::kDestination},
    {"dst", HeaderOpt::kDestination},
    {"in-interface", HeaderOpt::kInInterface},
    {"out-interface", HeaderOpt::kOutInterface},
    {"protocol", HeaderOpt::kProtocol},
    {"fragment", HeaderOpt::kFragment},
    {"match", HeaderOpt::kMatch},
    {"jump", HeaderOpt::kJump},
    {"goto", HeaderOpt::kGoto},
    {"set-counters", HeaderOpt::kCounters},
};

// Matches that iptables loads implicitly for `-p NAME` when they are missing from the generic catalog's
// knowledge (the libxtables catalog answers this itself).
bool IsProtocolMatch(std::string_view name, Family family) {
  if (name == "tcp" || name == "udp" || name == "sctp" || name == "dccp" || name == "esp" || name == "ah") {
    return true;
  }
  if (family == Family::kIPv4) return name == "icmp";
  return name == "icmp6" || name == "icmpv6" || name == "ipv6-icmp" || name == "mh";
}

// A loaded match or target whose options may follow.
struct Context {
  const Extension* ext = nullptr;
  bool target = false;
  size_t match_index = 0;     // index in Rule::matches (matches only)
  std::vector<int> seen_ids;  // x6 option ids given so far (the "only once" check)
};

struct Resolved {
  size_t context = 0;
  const ExtensionOption* option = nullptr;  // nullptr for a generic extension
  std::string name;                         // full option name
};

class Parser {
 public:
  Parser(std::span<const Token> tokens, Family family, const ExtensionCatalog& catalog, TokenLocation location,
         bool keep_typed)
      : tokens_(tokens),
        family_(family),
        catalog_(catalog),
        location_(location),
        keep_typed_(keep_typed),
        owner_(tokens.size(), kHeaderOwner) {}

  Result<Rule> Parse() {
    for (const Token& t : tokens_) {
      size_t bad = FindForbiddenByte(t.text);
      if (bad != std::string::npos) {
        return Error(t, "contains " + DescribeForbiddenByte(t.text[bad]) +
                            " (tokens with newline, carriage return or NUL are refused)");
      }
    }
    while (pos_ < tokens_.size()) {
      const Token& tok = tokens_[pos_];
      if (!tok.quoted && tok.text == "!") {
        if (negation_) return Error(tok, "multiple consecutive '!' are not allowed");
        negation_ = &tok;
        ++pos_;
        continue;
      }
      if (tok.quoted || !LooksLikeOption(tok.text)) {
        return Error(tok, "unexpected argument: a value must follow the option it belongs to");
      }
      ++pos_;
      Status status = tok.text.size() > 2 && tok.text[1] == '-' ? LongOption(tok) : ShortOption(tok);
      if (!status.ok()) return status;
      negation_ = nullptr;
    }
    if (negation_) return Error(*negation_, "'!' at the end negates nothing");
    if (keep_typed_) SetTypedForm();
    return std::move(rule_);
  }

 private:
  // Rule::typed: every token but those of the owner tag (the last match, when it is one) and of -c.
  void SetTypedForm() {
    const bool tagged = rule_.OwnerTag().has_value();
    int tag_context = -1;
    for (size_t i = 0; i < contexts_.size(); ++i) {
      if (tagged && !contexts_[i].target && contexts_[i].match_index + 1 == rule_.matches.size()) {
        tag_context = static_cast<int>(i);
      }
    }
    rule_.typed.clear();
    if (counters_given_) {
      // `-c PKTS BYTES` first, in that one spelling: only append, insert and replace send it (FormatRuleForRestore).
      rule_.typed = {"-c", std::to_string(rule_.counters.packets), std::to_string(rule_.counters.bytes)};
    }
    for (size_t i = 0; i < tokens_.size(); ++i) {
      if (owner_[i] == kCountersOwner || (tag_context >= 0 && owner_[i] == tag_context)) continue;
      rule_.typed.push_back(tokens_[i].text);
    }
    Rule untagged = rule_;
    untagged.ClearOwnerTag();
    rule_.typed_for = FormatRuleSpec(untagged);
  }

  // Records which extension (context index) or header part a token belongs to.
  static constexpr int kHeaderOwner = -1;
  static constexpr int kCountersOwner = -2;
  void Own(const Token* tok, int owner) {
    if (tok != nullptr && tok >= tokens_.data() && tok < tokens_.data() + tokens_.size()) {
      owner_[static_cast<size_t>(tok - tokens_.data())] = owner;
    }
  }

  std::string Where(const Token& t) const {
    if (location_ == TokenLocation::kArgument) return "(argument " + std::to_string(t.column + 1) + ")";
    return "at column " + std::to_string(t.column + 1);
  }
  Status Error(const Token& t, const std::string& problem) const {
    Status s = Status::InvalidArgument("'" + t.text + "' " + Where(t) + ": " + problem);
    if (location_ == TokenLocation::kArgument) return s.WithToken(t.text).WithArgument(t.column + 1);
    return s.WithToken(t.text, t.column + 1);
  }

  Status ShortOption(const Token& tok) {
    for (const HeaderName& h : kShortHeader) {
      if (tok.text == h.name) return Header(tok, h.opt, std::nullopt);
    }
    return Error(tok, "unknown option");
  }

  Status LongOption(const Token& tok) {
    std::string_view body = std::string_view(tok.text).substr(2);
    std::optional<std::string> attached;  // getopt's "--name=value"
    size_t eq = body.find('=');
    if (eq != std::string_view::npos) {
      attached = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    for (const HeaderName& h : kLongHeader) {
      if (body == h.name) return Header(tok, h.opt, attached);
    }
    IPTKIT_ASSIGN_OR_RETURN(std::optional<Resolved> resolved, Resolve(tok, body));
    if (!resolved) {
      // getopt_long also accepts an unambiguous abbreviation of a header option ("--proto").
      std::optional<HeaderOpt> header;
      for (const HeaderName& h : kLongHeader) {
        if (h.name.substr(0, body.size()) == body && !body.empty()) {
          if (header && *header != h.opt) return Error(tok, "ambiguous option abbreviation");
          header = h.opt;
        }
      }
      if (header) return Header(tok, *header, attached);
      IPTKIT_ASSIGN_OR_RETURN(resolved, ResolveWithImplicitProtocol(tok, body));
    }
    if (!resolved) {
      std::vector<std::string> names;
      auto add = [&names](std::string name) {
        for (const std::string& n : names) {
          if (n == name) return;
        }
        names.push_back(std::move(name));
      };
      for (const Context& c : contexts_) {
        if (c.ext != nullptr) add((c.target ? "target " : "match ") + c.ext->name);
      }
      if (!implicit_protocol_match_.empty()) add("match " + implicit_protocol_match_);
      if (names.empty()) {
        if (!contexts_.empty()) {
          return Error(tok, "unknown option (the jump target is a chain and takes no options)");
        }
        return Error(tok,
                     "option outside any match or target: put -m NAME (or -p PROTO for port options) or "
                     "-j TARGET before it");
      }
      std::string list;
      for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
      return Error(tok, "unknown option (not an option of " + list + ")");
    }
    return AddExtensionOption(tok, *resolved, attached);
  }

  // Finds the extension that owns "--name": the most recently loaded match or target that has it (exact name),
  // else a unique abbreviation. A generic extension (option table unknown) claims every option.
  Result<std::optional<Resolved>> Resolve(const Token& tok, std::string_view name) const {
    for (size_t i = contexts_.size(); i-- > 0;) {
      const Context& c = contexts_[i];
      if (c.ext == nullptr) continue;
      if (c.ext->generic) return std::optional<Resolved>(Resolved{i, nullptr, std::string(name)});
      if (const ExtensionOption* o = c.ext->FindOption(name)) {
        return std::optional<Resolved>(Resolved{i, o, o->name});
      }
    }
    if (name.empty()) return std::optional<Resolved>();
    std::optional<Resolved> found;
    for (size_t i = contexts_.size(); i-- > 0;) {
      const Context& c = contexts_[i];
      if (c.ext == nullptr) continue;
      for (const ExtensionOption& o : c.ext->options) {
        if (o.name.compare(0, name.size(), name) != 0) continue;
        if (found && found->name != o.name) {
          return Error(tok, "ambiguous option abbreviation (--" + found->name + " or --" + o.name + ")");
        }
        // The same option name in an older extension is shadowed by the newer one (getopt order).
        if (!found) found = Resolved{i, &o, o.name};
      }
    }
    return found;
  }

  // iptables' command_default(): an option no loaded extension knows makes iptables load the match named
  // after the protocol (`-p tcp --dport 22`), once.
  Result<std::optional<Resolved>> ResolveWithImplicitProtocol(const Token& tok, std::string_view name) {
    if (!rule_.protocol || implicit_protocol_loaded_) return std::optional<Resolved>();
    std::string match_name = ProtocolMatchName(rule_.protocol->value);
    if (match_name.empty()) return std::optional<Resolved>();
    const Extension* ext = catalog_.FindMatch(family_, match_name);
    if (ext == nullptr || (ext->generic && !IsProtocolMatch(match_name, family_))) {
      return std::optional<Resolved>();
    }
    // Only load it if it can take this option: an unknown option stays an error about the option.
    bool knows = ext->generic;
    for (const ExtensionOption& o : ext->options) {
      if (o.name.compare(0, name.size(), name) == 0) knows = true;
    }
    if (!knows) {
      implicit_protocol_match_ = ext->name;
      return std::optional<Resolved>();
    }
    implicit_protocol_loaded_ = true;
    AddMatch(ext);
    return Resolve(tok, name);
  }

  void AddMatch(const Extension* ext) {
    rule_.matches.push_back(Match{ext->name, {}});
    contexts_.push_back(Context{ext, false, rule_.matches.size() - 1, {}});
  }

  // Whether the next token can be taken as a required argument. getopt takes any next argument (so
  // iptables-save's bare `--comment --x` reads back); "!" and the rule's own options (-j, --source, ...) mean the
  // value is missing.
  bool NextIsRequiredValue() const {
    if (pos_ >= tokens_.size()) return false;
    const Token& t = tokens_[pos_];
    return t.quoted || (t.text != "!" && !IsHeaderOptionToken(t.text));
  }

  // Further values: quoted tokens and tokens that do not look like options.
  bool NextIsExtraValue() const {
    if (pos_ >= tokens_.size()) return false;
    const Token& t = tokens_[pos_];
    return t.quoted || (t.text != "!" && !LooksLikeOption(t.text));
  }

  static bool StrictOldStyle(const dialect::Extension& ext) {
    return ext.name == "tcp" || ext.name == "udp" || ext.name == "icmp" || ext.name == "icmp6" || ext.name == "sctp" ||
           ext.name == "dccp";
  }

  static bool TakesSecondArgument(std::string_view name) {
    return name == "tcp-flags" || name == "chunk-types" || name == "match-set" || name == "add-set" ||
           name == "del-set" || name == "map-set";
  }

  Status MissingValue(const Token& tok) const {
    if (pos_ < tokens_.size() && !tokens_[pos_].quoted && tokens_[pos_].text == "!") {
      return Error(tokens_[pos_],
                   "'!' after " + tok.text + " is the old intrapositioned negation: write '! " + tok.text + " VALUE'");
    }
    return Error(tok, "missing value");
  }

  Status AddExtensionOption(const Token& tok, const Resolved& r, const std::optional<std::string>& attached) {
    Context& ctx = contexts_[r.context];
    const dialect::ExtensionOption* opt = r.option;
    if (negation_ && opt != nullptr && opt->flags_known && !opt->invertible) {
      return Error(tok, "--" + r.name + " of " + ctx.ext->name + " cannot be negated with '!'");
    }
    if (opt != nullptr && opt->flags_known && !opt->multi) {
      for (int id : ctx.seen_ids) {
        if (id == opt->id) return Error(tok, "--" + r.name + " may be given only once per " + ctx.ext->name);
      }
      ctx.seen_ids.push_back(opt->id);
    }
    Own(&tok, static_cast<int>(r.context));
    Own(negation_, static_cast<int>(r.context));
    const size_t first_value = pos_;
    Option option{r.name, negation_ != nullptr, {}};
    using Arg = dialect::ExtensionOption::Arg;
    Arg arg = opt == nullptr ? Arg::kOptional : opt->arg;
    if (attached) {
      if (arg == Arg::kNone) return Error(tok, "--" + r.name + " takes no value");
      option.values.push_back(*attached);
    } else if (arg == Arg::kRequired) {
      if (!NextIsRequiredValue()) return MissingValue(tok);
      option.values.push_back(tokens_[pos_++].text);
    }
    // Extra values. New-style (x6_options) extensions take exactly the declared arity, and so do the old-style
    // protocol matches whose parse functions read nothing more — except the options that read a second argument
    // themselves (argv[optind++]: tcp --tcp-flags MASK COMP, sctp --chunk-types all|any|only LIST, set
    // --match-set NAME FLAGS, SET --add-set/--del-set/--map-set NAME FLAGS). A stray token after those is left
    // for the caller, which reports it as iptables does ("Bad argument"). Other old-style extensions may read
    // argv themselves (rateest: --rateest-bps [RATE] is declared without argument), so they keep every
    // following non-option token.
    const bool exact_arity = opt != nullptr && arg != Arg::kOptional && (opt->flags_known || StrictOldStyle(*ctx.ext));
    if (!exact_arity) {
      while (NextIsExtraValue()) option.values.push_back(tokens_[pos_++].text);
    } else if (TakesSecondArgument(r.name) && NextIsExtraValue()) {
      option.values.push_back(tokens_[pos_++].text);
    }
    for (size_t i = first_value; i < pos_; ++i) owner_[i] = static_cast<int>(r.context);
    if (ctx.target) {
      rule_.target.options.push_back(std::move(option));
    } else {
      rule_.matches[ctx.match_index].options.push_back(std::move(option));
    }
    return Status::Ok();
  }

  Result<const Token*> TakeValue(const Token& tok, const std::optional<std::string>& attached) {
    if (attached) {
      // iptables 1.8.9 takes such an argument whole as the value ("host/network `--source=1.2.3.4' not found",
      // "Chain '--jump=ACCEPT' does not exist"), so it never means what it says.
      const std::string name = tok.text.substr(0, tok.text.find('='));
      return Error(tok, "iptables reads this whole argument as the value of " + name + ": write '" + name + " " +
                            *attached + "'");
    }
    if (!NextIsRequiredValue()) return MissingValue(tok);
    return &tokens_[pos_++];
  }

  Status SetField(const Token& tok, std::optional<Field>& field, const Token& value) {
    if (field) return Error(tok, "given more than once");
    field = Field{value.text, negation_ != nullptr};
    return Status::Ok();
  }

  Status Header(const Token& tok, HeaderOpt opt, const std::optional<std::string>& attached) {
    const bool negatable = opt == HeaderOpt::kSource || opt == HeaderOpt::kDestination ||
                           opt == HeaderOpt::kInInterface || opt == HeaderOpt::kOutInterface ||
                           opt == HeaderOpt::kProtocol || opt == HeaderOpt::kFragment;
    if (negation_ && !negatable) return Error(tok, "cannot be negated with '!'");
    switch (opt) {
      case HeaderOpt::kSource:
      case HeaderOpt::kDestination: {
        IPTKIT_ASSIGN_OR_RETURN(const Token* value, TakeValue(tok, attached));
        std::string problem = CheckAddressSpec(value->text, family_);
        if (!problem.empty()) return Error(*value, problem);
        return SetField(tok, opt == HeaderOpt::kSource ? rule_.source : rule_.destination, *value);
      }
      case HeaderOpt::kInInterface:
      case HeaderOpt::kOutInterface: {
        IPTKIT_ASSIGN_OR_RETURN(const Token* value, TakeValue(tok, attached));
        std::string problem = CheckInterface(value->text);
        if (!problem.empty()) return Error(*value, problem);
        return SetField(tok, opt == HeaderOpt::kInInterface ? rule_.in_interface : rule_.out_interface, *value);
      }
      case HeaderOpt::kProtocol: {
        IPTKIT_ASSIGN_OR_RETURN(const Token* value, TakeValue(tok, attached));
        // xshared.c do_parse: "Canonicalize into lower case".
        Token lowered = *value;
        for (char& c : lowered.text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::optional<int> number = ParseProtocol(lowered.text);
        if (!number) return Error(*value, "unknown protocol");
        if (*number == 0 && negation_) return Error(*value, "'! -p " + lowered.text + "' would never match");
        return SetField(tok, rule_.protocol, lowered);
      }
      case HeaderOpt::kFragment: {
        if (attached) return Error(tok, "takes no value");
        if (family_ == Family::kIPv6) return Error(tok, "-f exists only for IPv4 (use -m frag in IPv6)");
        return SetField(tok, rule_.fragment, Token{"", tok.column, false});
      }
      case HeaderOpt::kMatch: {
        IPTKIT_ASSIGN_OR_RETURN(const Token* value, TakeValue(tok, attached));
        const Extension* ext = catalog_.FindMatch(family_, value->text);
        if (ext == nullptr) {
          return Error(*value,
                       std::string("unknown match extension for ") + (family_ == Family::kIPv4 ? "IPv4" : "IPv6"));
        }
        AddMatch(ext);
        Own(&tok, static_cast<int>(contexts_.size() - 1));
        Own(value, static_cast<int>(contexts_.size() - 1));
        return Status::Ok();
      }
      case HeaderOpt::kJump:
      case HeaderOpt::kGoto: {
        IPTKIT_ASSIGN_OR_RETURN(const Token* value, TakeValue(tok, attached));
        if (!rule_.target.empty()) return Error(tok, "only one -j or -g per rule");
        if (value->text.empty() || value->text.size() > 28) {
          return Error(*value, "target or chain name must be 1 to 28 bytes");
        }
        if (opt == HeaderOpt::kGoto) {
          rule_.target = Target::Goto(value->text);
          return Status::Ok();
        }
        rule_.target = Target::Jump(value->text);
        // A name that is not a target extension is a user chain (xshared.c command_jump); it takes no options.
        const Extension* ext = catalog_.FindTarget(family_, value->text);
        contexts_.push_back(Context{ext, true, 0, {}});
        return Status::Ok();
      }
      case HeaderOpt::kCounters: {
        // "-c PKTS BYTES" or "-c PKTS,BYTES" (xshared.c do_parse).
        IPTKIT_ASSIGN_OR_RETURN(const Token* first, TakeValue(tok, attached));
        std::string packets = first->text;
        std::string bytes;
        const Token* where = first;
        size_t comma = packets.find(',');
        if (comma != std::string::npos) {
          bytes = packets.substr(comma + 1);
          packets.resize(comma);
        } else {
          if (!NextIsRequiredValue()) return Error(tok, "needs packet and byte counters");
          where = &tokens_[pos_++];
          bytes = where->text;
        }
        Own(&tok, kCountersOwner);
        Own(first, kCountersOwner);
        Own(where, kCountersOwner);
        auto p = ParseCounter(packets);
        auto b = ParseCounter(bytes);
        if (!p || !b) return Error(*where, "counters must be unsigned integers");
        rule_.counters = Counters{*p, *b};
        counters_given_ = true;
        return Status::Ok();
      }
    }
    return Status::Internal("unhandled header option");
  }

  static std::optional<uint64_t> ParseCounter(std::string_view s) {
    if (s.empty() || s.size() > 20) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v)) {
        return std::nullopt;
      }
    }
    return v;
  }

  std::span<const Token> tokens_;
  Family family_;
  const ExtensionCatalog& catalog_;
  TokenLocation location_;
  bool keep_typed_;
  bool counters_given_ = false;  // -c / --set-counters
  std::vector<int> owner_;       // per token: kHeaderOwner, kCountersOwner or the index in contexts_
  size_t pos_ = 0;
  const Token* negation_ = nullptr;  // the pending "!"
  bool implicit_protocol_loaded_ = false;
  std::string implicit_protocol_match_;  // set when the protocol's match exists but lacks an option
  std::vector<Context> contexts_;        // loaded matches and target, in load order
  Rule rule_;
};

}  // namespace

Result<Rule> ParseRuleTokens(std::span<const Token> tokens, Family family, const ExtensionCatalog& catalog,
                             TokenLocation location, bool keep_typed) {
  return Parser(tokens, family, catalog, location, keep_typed).Parse();
}

}  // namespace iptkit::dialect
