#include "src/json/set_options_json.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string_view>

namespace iptkit::json {
namespace {

constexpr std::string_view kOptionNames[] = {"family",  "hashsize", "maxelem", "timeout", "counters",
                                             "comment", "skbinfo",  "netmask", "range",   "size"};

Status Bad(const std::string& pointer, const std::string& why) {
  Status s = Status::InvalidArgument((pointer.empty() ? "(document)" : pointer) + ": " + why);
  return pointer.empty() ? s : s.WithField(pointer);
}

template <typename J>
Result<std::optional<uint32_t>> Uint(const J& j, const std::string& pointer, const char* name, uint64_t max) {
  auto it = j.find(name);
  if (it == j.end()) return std::optional<uint32_t>();
  const std::string p = pointer + "/" + name;
  if (!it->is_number_unsigned()) {
    return Bad(p, "expected an integer 0.." + std::to_string(max) + ", got " + std::string(it->type_name()));
  }
  const uint64_t v = it->template get<uint64_t>();
  if (v > max) return Bad(p, "expected an integer 0.." + std::to_string(max) + ", got " + std::to_string(v));
  return std::optional<uint32_t>(static_cast<uint32_t>(v));
}

template <typename J>
Result<bool> Bool(const J& j, const std::string& pointer, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return false;
  if (!it->is_boolean())
    return Bad(pointer + "/" + name, "expected true or false, got " + std::string(it->type_name()));
  return it->template get<bool>();
}

template <typename J>
Result<SetOptions> Decode(const J& j, const std::string& pointer) {
  if (!j.is_object()) return Bad(pointer, "expected an object, got " + std::string(j.type_name()));
  for (auto m = j.begin(); m != j.end(); ++m) {
    if (std::find(std::begin(kOptionNames), std::end(kOptionNames), m.key()) != std::end(kOptionNames)) continue;
    return Bad(pointer + "/" + m.key(),
               "unknown option (family, hashsize, maxelem, timeout, counters, comment, skbinfo, netmask, range, size)");
  }
  SetOptions o;
  if (auto f = j.find("family"); f != j.end()) {
    if (!f->is_string() || (*f != "inet" && *f != "inet6")) {
      return Bad(pointer + "/family", "expected \"inet\" or \"inet6\", got " + f->dump());
    }
    o.family = f->template get<std::string>();
  }
  if (auto r = j.find("range"); r != j.end()) {
    if (!r->is_string()) return Bad(pointer + "/range", "expected a string, got " + std::string(r->type_name()));
    o.range = r->template get<std::string>();
  }
  IPTKIT_ASSIGN_OR_RETURN(o.hashsize, Uint(j, pointer, "hashsize", 0xffffffffu));
  IPTKIT_ASSIGN_OR_RETURN(o.maxelem, Uint(j, pointer, "maxelem", 0xffffffffu));
  IPTKIT_ASSIGN_OR_RETURN(o.timeout, Uint(j, pointer, "timeout", kMaxSetTimeout));
  IPTKIT_ASSIGN_OR_RETURN(o.netmask, Uint(j, pointer, "netmask", 128));
  IPTKIT_ASSIGN_OR_RETURN(o.size, Uint(j, pointer, "size", 0xffffffffu));
  IPTKIT_ASSIGN_OR_RETURN(o.counters, Bool(j, pointer, "counters"));
  IPTKIT_ASSIGN_OR_RETURN(o.comment, Bool(j, pointer, "comment"));
  IPTKIT_ASSIGN_OR_RETURN(o.skbinfo, Bool(j, pointer, "skbinfo"));
  return o;
}

template <typename J>
J Encode(const SetOptions& o) {
  J j = J::object();
  if (!o.family.empty()) j["family"] = o.family;
  if (o.hashsize) j["hashsize"] = *o.hashsize;
  if (o.maxelem) j["maxelem"] = *o.maxelem;
  if (o.timeout) j["timeout"] = *o.timeout;
  if (o.counters) j["counters"] = true;
  if (o.comment) j["comment"] = true;
  if (o.skbinfo) j["skbinfo"] = true;
  if (o.netmask) j["netmask"] = *o.netmask;
  if (!o.range.empty()) j["range"] = o.range;
  if (o.size) j["size"] = *o.size;
  return j;
}

}  // namespace

Result<SetOptions> SetOptionsFromJson(const nlohmann::json& j, const std::string& pointer) {
  return Decode(j, pointer);
}

Result<SetOptions> SetOptionsFromJson(const nlohmann::ordered_json& j, const std::string& pointer) {
  return Decode(j, pointer);
}

nlohmann::json SetOptionsToJson(const SetOptions& options) { return Encode<nlohmann::json>(options); }

nlohmann::ordered_json SetOptionsToOrderedJson(const SetOptions& options) {
  return Encode<nlohmann::ordered_json>(options);
}

}  // namespace iptkit::json
