#include "src/ipset/set_json.h"

#include <optional>
#include <string>
#include <vector>

namespace iptkit {
namespace {

std::optional<uint32_t> OptU32(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_unsigned()) return std::nullopt;
  return static_cast<uint32_t>(j[key].get<uint64_t>());
}

std::optional<uint64_t> OptU64(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_unsigned()) return std::nullopt;
  return j[key].get<uint64_t>();
}

}  // namespace

nlohmann::json SetEntryToJson(const SetEntry& e) {
  nlohmann::json j = {{"entry", e.elem}};
  if (e.timeout) j["timeout"] = *e.timeout;
  if (e.packets) j["packets"] = *e.packets;
  if (e.bytes) j["bytes"] = *e.bytes;
  if (e.comment) j["comment"] = *e.comment;
  if (e.nomatch) j["nomatch"] = true;
  if (!e.extra.empty()) j["extra"] = e.extra;
  return j;
}

nlohmann::json SetInfoToJson(const SetInfo& s, bool with_entries) {
  nlohmann::json j = {{"name", s.name},
                      {"type", s.type},
                      {"revision", s.revision},
                      {"options", SetOptionsToJson(s.options)},
                      {"header", s.header},
                      {"memory_bytes", s.memory_bytes},
                      {"references", s.references},
                      {"entry_count", s.entry_count},
                      {"capacity", s.Capacity()}};
  if (with_entries) {
    nlohmann::json entries = nlohmann::json::array();
    for (const SetEntry& e : s.entries) entries.push_back(SetEntryToJson(e));
    j["entries"] = std::move(entries);
  }
  return j;
}

nlohmann::json SetChangeReportToJson(const SetChangeReport& r) {
  nlohmann::json j = {{"added", r.added},
                      {"refreshed", r.refreshed},
                      {"removed", r.removed},
                      {"entries_after", r.entries_after},
                      {"swapped", r.swapped}};
  if (r.grown_maxelem) j["grown_maxelem"] = *r.grown_maxelem;
  return j;
}

SetInfo SetInfoFromJson(const nlohmann::json& j) {
  SetInfo s;
  if (!j.is_object()) return s;
  s.name = j.value("name", "");
  s.type = j.value("type", "");
  s.revision = j.value("revision", 0);
  s.header = j.value("header", "");
  s.memory_bytes = j.value("memory_bytes", uint64_t{0});
  s.references = j.value("references", 0u);
  s.entry_count = j.value("entry_count", 0u);
  if (j.contains("options") && j["options"].is_object()) {
    const nlohmann::json& o = j["options"];
    s.options.family = o.value("family", "");
    s.options.hashsize = OptU32(o, "hashsize");
    s.options.maxelem = OptU32(o, "maxelem");
    s.options.timeout = OptU32(o, "timeout");
    s.options.counters = o.value("counters", false);
    s.options.comment = o.value("comment", false);
    s.options.skbinfo = o.value("skbinfo", false);
    s.options.netmask = OptU32(o, "netmask");
    s.options.range = o.value("range", "");
    s.options.size = OptU32(o, "size");
  }
  if (j.contains("entries") && j["entries"].is_array()) {
    for (const nlohmann::json& e : j["entries"]) {
      if (!e.is_object()) continue;
      SetEntry entry;
      entry.elem = e.value("entry", "");
      entry.timeout = OptU32(e, "timeout");
      entry.packets = OptU64(e, "packets");
      entry.bytes = OptU64(e, "bytes");
      if (e.contains("comment") && e["comment"].is_string()) entry.comment = e["comment"].get<std::string>();
      entry.nomatch = e.value("nomatch", false);
      if (e.contains("extra") && e["extra"].is_array()) {
        for (const nlohmann::json& x : e["extra"]) {
          if (x.is_string()) entry.extra.push_back(x.get<std::string>());
        }
      }
      s.entries.push_back(std::move(entry));
    }
  }
  return s;
}

}  // namespace iptkit
