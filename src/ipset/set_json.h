// IP sets as JSON: the one encoding of sets, entries, options and change reports that iptkitd's /v1/sets answers
// (docs/rest.md "Sets") and `iptkit set --json` prints, and its decoding for the CLI's --daemon mode.
// Thread-safety: pure functions.
#ifndef IPTKIT_SRC_IPSET_SET_JSON_H_
#define IPTKIT_SRC_IPSET_SET_JSON_H_

#include <nlohmann/json.hpp>

#include "iptkit/ipset.h"
#include "src/json/set_options_json.h"

namespace iptkit {

nlohmann::json SetEntryToJson(const SetEntry& entry);
// Only the options that are set ({} for none): the encoder of src/json, shared with owner and fleet documents.
using json::SetOptionsToJson;
// name, type, revision, options, header, memory_bytes, references, entry_count, capacity; with_entries adds entries.
nlohmann::json SetInfoToJson(const SetInfo& set, bool with_entries);
nlohmann::json SetChangeReportToJson(const SetChangeReport& report);
// The inverse of SetInfoToJson; members that are missing or of another type stay at their defaults.
SetInfo SetInfoFromJson(const nlohmann::json& j);

}  // namespace iptkit

#endif  // IPTKIT_SRC_IPSET_SET_JSON_H_
