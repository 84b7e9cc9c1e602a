// The JSON the REST API answers with (docs/rest.md, docs/openapi.yaml): service results, managed rules, owners,
// commit-confirm records, audit entries, and rulesets annotated with what the daemon manages. Pure functions.
// Thread-safety: safe to call concurrently.
//
//   HttpResponse r;
//   r.body = json::Dump(ResultJson(change_result));
#ifndef IPTKIT_SRC_REST_ENCODE_H_
#define IPTKIT_SRC_REST_ENCODE_H_

#include <optional>
#include <string>
#include <vector>

#include "iptkit/model.h"
#include "src/json/json_codec.h"
#include "src/service/service.h"
#include "src/store/store.h"

namespace iptkit::rest {

// A managed rule with its owner, position, ttl_remaining/expires_at and times.
json::Json ManagedJson(const service::ManagedRuleView& view);
// The change result every change answers with ("transaction", "dry_run", "changed", "tables", ...).
json::Json ResultJson(const service::ChangeResult& result);
// A commit-confirm record.
json::Json ConfirmJson(const store::ConfirmRecord& record);
// An owner; with_drift adds "in_sync" and "drift".
json::Json OwnerJson(const service::OwnerView& owner, bool with_drift);
// One audit entry: "request" is the body as JSON when it parses (else the stored text, e.g. a truncated one),
// and *_bytes name the original sizes of truncated texts.
json::Json AuditEntryJson(const store::AuditEntry& entry);
// A family's ruleset (json::RulesetToJson) with the rules of `managed` marked "managed" and their
// ttl_remaining/expires_at.
json::Json AnnotatedRuleset(const Ruleset& ruleset, const std::vector<service::ManagedRuleView>& managed);

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_ENCODE_H_
