// The create options of an IP set (SetOptions, include/iptkit/set_types.h) as JSON: the one decoder of the
// "options" object of POST /v1/sets (docs/rest.md), of an owner document's sets (docs/json.md) and of a fleet set
// document (docs/fleet.md), and the one encoder of what iptkitd, `iptkit set --json` and owner documents print.
// Thread-safety: pure functions.
//
//   IPTKIT_ASSIGN_OR_RETURN(SetOptions o, json::SetOptionsFromJson(body["options"], "/options"));
//   body["options"] = json::SetOptionsToJson(o);   // {"maxelem": 200000, "timeout": 0}
#ifndef IPTKIT_SRC_JSON_SET_OPTIONS_JSON_H_
#define IPTKIT_SRC_JSON_SET_OPTIONS_JSON_H_

#include <nlohmann/json.hpp>
#include <string>

#include "iptkit/set_types.h"
#include "iptkit/status.h"

namespace iptkit::json {

// `j` is the value at JSON pointer `pointer` ("/options", "/sets/0/options"). It must be an object whose members
// are options of ipset's words (family, hashsize, maxelem, timeout, counters, comment, skbinfo, netmask, range,
// size) with values of their type and range; errors are InvalidArgument "POINTER/MEMBER: why" with details.field
// POINTER/MEMBER (POINTER alone for a value that is not an object). Members left out stay unset.
Result<SetOptions> SetOptionsFromJson(const nlohmann::json& j, const std::string& pointer);
Result<SetOptions> SetOptionsFromJson(const nlohmann::ordered_json& j, const std::string& pointer);

// Only the options that are set ({} for none): keys sorted (json) or in the order of SetOptions (ordered_json).
nlohmann::json SetOptionsToJson(const SetOptions& options);
nlohmann::ordered_json SetOptionsToOrderedJson(const SetOptions& options);

}  // namespace iptkit::json

#endif  // IPTKIT_SRC_JSON_SET_OPTIONS_JSON_H_
