#include "src/ipset/set_text.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace iptkit::ipset {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsControl(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (IsBlank(s.front()) || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (IsBlank(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

template <typename T>
std::optional<T> Number(std::string_view s) {
  T v{};
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<uint32_t> Ipv4(std::string_view s) {
  std::string str(s);
  in_addr a{};
  if (inet_pton(AF_INET, str.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

}  // namespace

bool IsHashType(std::string_view type) { return type.rfind("hash:", 0) == 0; }

std::vector<std::string> SplitTokens(std::string_view line) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (IsBlank(line[i]) || line[i] == '\r' || line[i] == '\n')) ++i;
    if (i >= line.size()) break;
    std::string token;
    if (line[i] == '"') {
      size_t end = line.find('"', i + 1);
      if (end == std::string_view::npos) end = line.size();
      token = std::string(line.substr(i + 1, end - i - 1));
      i = end + 1;
    } else {
      size_t start = i;
      while (i < line.size() && !IsBlank(line[i]) && line[i] != '\r' && line[i] != '\n') ++i;
      token = std::string(line.substr(start, i - start));
    }
    out.push_back(std::move(token));
  }
  return out;
}

SetOptions ParseHeader(std::string_view header) {
  SetOptions o;
  std::vector<std::string> t = SplitTokens(header);
  for (size_t i = 0; i < t.size(); ++i) {
    const std::string& k = t[i];
    const bool has_value = i + 1 < t.size();
    if (k == "counters") {
      o.counters = true;
    } else if (k == "comment") {
      o.comment = true;
    } else if (k == "skbinfo") {
      o.skbinfo = true;
    } else if (has_value && k == "family") {
      o.family = t[++i];
    } else if (has_value && k == "hashsize") {
      o.hashsize = Number<uint32_t>(t[++i]);
    } else if (has_value && k == "maxelem") {
      o.maxelem = Number<uint32_t>(t[++i]);
    } else if (has_value && k == "timeout") {
      o.timeout = Number<uint32_t>(t[++i]);
    } else if (has_value && k == "netmask") {
      o.netmask = Number<uint32_t>(t[++i]);
    } else if (has_value && k == "range") {
      o.range = t[++i];
    } else if (has_value && k == "size") {
      o.size = Number<uint32_t>(t[++i]);
    } else if (has_value && (k == "bucketsize" || k == "initval" || k == "markmask")) {
      ++i;
    }
  }
  return o;
}

uint64_t CapacityOf(const SetInfo& s) {
  if (IsHashType(s.type)) return s.options.maxelem.value_or(kDefaultSetMaxElem);
  if (s.type == "list:set") return s.options.size.value_or(8);
  // bitmap:port "1-1024"; bitmap:ip, bitmap:ip,mac "10.0.0.0-10.0.0.255".
  size_t dash = s.options.range.find('-');
  if (dash == std::string::npos) return 0;
  std::string_view from = std::string_view(s.options.range).substr(0, dash);
  std::string_view to = std::string_view(s.options.range).substr(dash + 1);
  if (s.type == "bitmap:port") {
    auto a = Number<uint32_t>(from), b = Number<uint32_t>(to);
    return a && b && *b >= *a ? uint64_t{*b} - *a + 1 : 0;
  }
  auto a = Ipv4(from), b = Ipv4(to);
  if (!a || !b || *b < *a) return 0;
  uint64_t n = uint64_t{*b} - *a + 1;
  if (s.options.netmask && *s.options.netmask < 32) n >>= (32 - *s.options.netmask);
  return std::max<uint64_t>(n, 1);
}

Result<std::vector<SetInfo>> ParseListOutput(std::string_view text) {
  std::vector<SetInfo> sets;
  bool in_members = false;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    auto field = [&](std::string_view key) -> std::optional<std::string_view> {
      if (line.rfind(key, 0) != 0) return std::nullopt;
      return Trim(line.substr(key.size()));
    };
    if (auto v = field("Name: ")) {
      sets.emplace_back();
      sets.back().name = std::string(*v);
      in_members = false;
      continue;
    }
    if (Trim(line).empty()) {
      in_members = false;
      continue;
    }
    if (sets.empty()) return Status::Internal("unexpected ipset list output at line " + std::to_string(line_no));
    SetInfo& s = sets.back();
    if (in_members) {
      std::vector<std::string> t = SplitTokens(line);
      if (t.empty()) continue;
      SetEntry e;
      e.elem = t[0];
      // A quoted comment may contain blanks: take it from the raw line.
      for (size_t i = 1; i < t.size(); ++i) {
        const std::string& k = t[i];
        const bool has_value = i + 1 < t.size();
        if (k == "nomatch") {
          e.nomatch = true;
        } else if (k == "timeout" && has_value) {
          e.timeout = Number<uint32_t>(t[++i]);
        } else if (k == "packets" && has_value) {
          e.packets = Number<uint64_t>(t[++i]);
        } else if (k == "bytes" && has_value) {
          e.bytes = Number<uint64_t>(t[++i]);
        } else if (k == "comment" && has_value) {
          e.comment = t[++i];
        } else {
          e.extra.push_back(k);
        }
      }
      s.entries.push_back(std::move(e));
      continue;
    }
    if (auto v = field("Type: ")) {
      s.type = std::string(*v);
    } else if (auto v = field("Revision: ")) {
      s.revision = Number<int>(*v).value_or(0);
    } else if (auto v = field("Header: ")) {
      s.header = std::string(*v);
      s.options = ParseHeader(*v);
    } else if (auto v = field("Size in memory: ")) {
      s.memory_bytes = Number<uint64_t>(*v).value_or(0);
    } else if (auto v = field("References: ")) {
      s.references = Number<uint32_t>(*v).value_or(0);
    } else if (auto v = field("Number of entries: ")) {
      s.entry_count = Number<uint32_t>(*v).value_or(0);
    } else if (line.rfind("Members:", 0) == 0) {
      in_members = true;
    }
  }
  return sets;
}

Status CheckSetName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("empty set name").WithField("name");
  if (name.size() > kMaxSetNameLength) {
    return Status::InvalidArgument("set name '" + std::string(name) + "' is longer than " +
                                   std::to_string(kMaxSetNameLength) + " characters")
        .WithToken(std::string(name))
        .WithField("name");
  }
  for (char c : name) {
    if (IsBlank(c) || IsControl(c) || c == '"' || c == '\'') {
      return Status::InvalidArgument("set name '" + std::string(name) +
                                     "' contains a blank, a quote or a control character")
          .WithToken(std::string(name))
          .WithField("name");
    }
  }
  if (name[0] == '-') {
    return Status::InvalidArgument("set name '" + std::string(name) + "' starts with '-'")
        .WithToken(std::string(name))
        .WithField("name");
  }
  return Status::Ok();
}

Status CheckElem(std::string_view elem) {
  if (elem.empty()) return Status::InvalidArgument("empty entry").WithField("entry");
  for (char c : elem) {
    if (IsBlank(c) || IsControl(c) || c == '"' || c == '\'') {
      return Status::InvalidArgument("entry '" + std::string(elem) +
                                     "' contains a blank, a quote or a control character")
          .WithToken(std::string(elem))
          .WithField("entry");
    }
  }
  if (elem[0] == '-') {
    return Status::InvalidArgument("entry '" + std::string(elem) + "' starts with '-'")
        .WithToken(std::string(elem))
        .WithField("entry");
  }
  return Status::Ok();
}

Status CheckComment(std::string_view comment) {
  if (comment.size() > kMaxSetCommentLength) {
    return Status::InvalidArgument("comment is longer than " + std::to_string(kMaxSetCommentLength) + " bytes")
        .WithField("comment");
  }
  for (char c : comment) {
    if (IsControl(c) || c == '"') {
      return Status::InvalidArgument("comment '" + std::string(comment) + "' contains a '\"' or a control character")
          .WithToken(std::string(comment))
          .WithField("comment");
    }
  }
  return Status::Ok();
}

Status CheckTimeout(int64_t timeout) {
  if (timeout < 0 || timeout > kMaxSetTimeout) {
    return Status::InvalidArgument("timeout " + std::to_string(timeout) + " is out of range (0.." +
                                   std::to_string(kMaxSetTimeout) + " seconds)")
        .WithToken(std::to_string(timeout))
        .WithField("timeout");
  }
  return Status::Ok();
}

Status CheckEntrySpec(const SetEntrySpec& spec) {
  Status s = CheckElem(spec.elem);
  if (s.ok() && spec.timeout) s = CheckTimeout(*spec.timeout);
  if (s.ok() && spec.comment) s = CheckComment(*spec.comment);
  if (s.ok()) return s;
  if (spec.line > 0) s = s.WithContext("line " + std::to_string(spec.line)).WithLine(spec.line);
  return s;
}

namespace {

struct OptionRule {
  std::string_view option;
  bool (*applies)(std::string_view type);
};

bool AnyType(std::string_view) { return true; }
bool HashOnly(std::string_view t) { return IsHashType(t); }
bool BitmapOnly(std::string_view t) { return t.rfind("bitmap:", 0) == 0; }
bool ListOnly(std::string_view t) { return t == "list:set"; }
bool NetmaskTypes(std::string_view t) { return t == "hash:ip" || t == "bitmap:ip"; }

}  // namespace

Result<std::string> CreateLine(std::string_view name, std::string_view type, const SetOptions& o) {
  IPTKIT_RETURN_IF_ERROR(CheckSetName(name));
  const auto& types = SetTypes();
  if (std::find(types.begin(), types.end(), type) == types.end()) {
    std::string known;
    for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
    return Status::InvalidArgument("unknown set type '" + std::string(type) + "' (known: " + known + ")")
        .WithToken(std::string(type))
        .WithField("type");
  }
  std::string line = "create " + std::string(name) + " " + std::string(type);
  auto check = [&](bool given, std::string_view option, bool (*applies)(std::string_view)) -> Status {
    if (!given || applies(type)) return Status::Ok();
    return Status::InvalidArgument("option '" + std::string(option) + "' does not apply to a set of type " +
                                   std::string(type))
        .WithToken(std::string(option))
        .WithField(std::string(option));
  };
  IPTKIT_RETURN_IF_ERROR(check(!o.family.empty(), "family", HashOnly));
  IPTKIT_RETURN_IF_ERROR(check(o.hashsize.has_value(), "hashsize", HashOnly));
  IPTKIT_RETURN_IF_ERROR(check(o.maxelem.has_value(), "maxelem", HashOnly));
  IPTKIT_RETURN_IF_ERROR(check(o.netmask.has_value(), "netmask", NetmaskTypes));
  IPTKIT_RETURN_IF_ERROR(check(!o.range.empty(), "range", BitmapOnly));
  IPTKIT_RETURN_IF_ERROR(check(o.size.has_value(), "size", ListOnly));
  (void)AnyType;
  if (BitmapOnly(type) && o.range.empty()) {
    return Status::InvalidArgument("a set of type " + std::string(type) + " needs a range (range FROM-TO)")
        .WithField("range");
  }
  if (!o.family.empty()) {
    if (o.family != "inet" && o.family != "inet6") {
      return Status::InvalidArgument("family '" + o.family + "': expected inet or inet6")
          .WithToken(o.family)
          .WithField("family");
    }
    line += " family " + o.family;
  }
  if (o.hashsize) line += " hashsize " + std::to_string(*o.hashsize);
  if (o.maxelem) line += " maxelem " + std::to_string(*o.maxelem);
  if (o.timeout) {
    IPTKIT_RETURN_IF_ERROR(CheckTimeout(*o.timeout));
    line += " timeout " + std::to_string(*o.timeout);
  }
  if (o.counters) line += " counters";
  if (o.comment) line += " comment";
  if (o.skbinfo) line += " skbinfo";
  if (o.netmask) line += " netmask " + std::to_string(*o.netmask);
  if (!o.range.empty()) {
    IPTKIT_RETURN_IF_ERROR(CheckElem(o.range).WithField("range"));
    line += " range " + o.range;
  }
  if (o.size) line += " size " + std::to_string(*o.size);
  return line + "\n";
}

std::string AddLine(std::string_view name, const SetEntrySpec& spec) {
  std::string line = "add ";
  line += name;
  line += ' ';
  line += spec.elem;
  if (spec.timeout) line += " timeout " + std::to_string(*spec.timeout);
  if (spec.comment) line += " comment \"" + *spec.comment + "\"";
  line += '\n';
  return line;
}

std::string CopyLine(std::string_view name, const SetEntry& e) {
  std::string line = "add ";
  line += name;
  line += ' ';
  line += e.elem;
  if (e.timeout) line += " timeout " + std::to_string(*e.timeout);
  if (e.packets) line += " packets " + std::to_string(*e.packets);
  if (e.bytes) line += " bytes " + std::to_string(*e.bytes);
  if (e.comment) line += " comment \"" + *e.comment + "\"";
  for (const std::string& x : e.extra) line += " " + x;
  if (e.nomatch) line += " nomatch";
  line += '\n';
  return line;
}

}  // namespace iptkit::ipset
