// ParseSetOptions and ParseSetAddOptions (include/iptkit/ipset.h): ipset's create and add words → SetOptions and
// SetAddOptions, shared by `iptkit set create/add` and the C ABI's iptkit_set_create_options.
#include <charconv>

#include "iptkit/ipset.h"

namespace iptkit {
namespace {

Result<uint32_t> Number(const std::string& word, const std::string& value, uint64_t max) {
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || p != value.data() + value.size() || n > max) {
    return Status::InvalidArgument(word + " '" + value + "': expected a number from 0 to " + std::to_string(max))
        .WithToken(value);
  }
  return static_cast<uint32_t>(n);
}

}  // namespace

Result<SetOptions> ParseSetOptions(const std::vector<std::string>& words) {
  SetOptions o;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& k = words[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= words.size()) {
        return Status::InvalidArgument("create option '" + k + "' needs a value").WithToken(k);
      }
      return words[++i];
    };
    if (k == "counters") {
      o.counters = true;
    } else if (k == "comment") {
      o.comment = true;
    } else if (k == "skbinfo") {
      o.skbinfo = true;
    } else if (k == "family") {
      IPTKIT_ASSIGN_OR_RETURN(o.family, value());
      if (o.family != "inet" && o.family != "inet6") {
        return Status::InvalidArgument("family '" + o.family + "': expected inet or inet6").WithToken(o.family);
      }
    } else if (k == "range") {
      IPTKIT_ASSIGN_OR_RETURN(o.range, value());
    } else if (k == "hashsize" || k == "maxelem" || k == "timeout" || k == "netmask" || k == "size") {
      IPTKIT_ASSIGN_OR_RETURN(std::string v, value());
      IPTKIT_ASSIGN_OR_RETURN(uint32_t n, Number(k, v, k == "timeout" ? kMaxSetTimeout : 0xffffffffu));
      if (k == "hashsize") o.hashsize = n;
      if (k == "maxelem") o.maxelem = n;
      if (k == "timeout") o.timeout = n;
      if (k == "netmask") o.netmask = n;
      if (k == "size") o.size = n;
    } else {
      return Status::InvalidArgument("unknown create option '" + k +
                                     "' (family, hashsize, maxelem, timeout, counters, comment, skbinfo, netmask, "
                                     "range, size)")
          .WithToken(k);
    }
  }
  return o;
}

Result<SetAddOptions> ParseSetAddOptions(const std::vector<std::string>& words) {
  SetAddOptions o;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == "timeout" && i + 1 < words.size()) {
      IPTKIT_ASSIGN_OR_RETURN(o.timeout, Number("timeout", words[++i], kMaxSetTimeout));
    } else if (words[i] == "comment" && i + 1 < words.size()) {
      o.comment = words[++i];
    } else {
      return Status::InvalidArgument("unexpected '" + words[i] + "' (an entry takes 'timeout N' and 'comment TEXT')")
          .WithToken(words[i]);
    }
  }
  return o;
}

}  // namespace iptkit
