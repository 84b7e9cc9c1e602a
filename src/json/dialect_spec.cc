// Binds the codec's "spec" member to the iptables-save dialect (include/iptkit/dialect.h).
#include "iptkit/dialect.h"
#include "src/json/json_codec.h"

namespace iptkit::json {

const SpecCodec& DialectSpec() {
  static const SpecCodec kSpec{
      [](const Rule& rule) { return FormatRuleSpec(rule); },
      [](std::string_view spec, Family family) { return ParseRuleSpec(spec, family); },
  };
  return kSpec;
}

}  // namespace iptkit::json
