/* iptkit.h: the C ABI of iptkit (libiptkit.so.1), for C programs, setuid helpers and other languages' bindings.
 *
 * One firewall handle manages the iptables rules of one network namespace (the caller's, or one named by `ip netns`
 * name or path) and one address family, through one backend. Every change is one atomic transaction per table;
 * several changes go into one transaction with iptkit_txn_*. Rules are written in iptables' own syntax
 * ("-p tcp --dport 22 -j ACCEPT"); listings give the canonical iptables-save spec, structured fields and counters.
 *
 * Conventions (docs/c-api.md is the reference):
 *  - Functions returning `int` return IPTKIT_OK (0) or one of the IPTKIT_E* codes, which mirror iptkit::StatusCode.
 *  - Every such function also sets the calling thread's last error (iptkit_last_error_code/_message) on failure
 *    and clears it on success, and, when `err` is not NULL, stores a new iptkit_error in *err on failure (the
 *    caller frees it with iptkit_error_free) or NULL on success. Accessors that return a value directly (counts,
 *    names) set the last error when they fail (NULL handle, index out of range) and leave it alone otherwise.
 *  - Handles (iptkit_firewall, iptkit_ruleset, iptkit_txn, iptkit_error) are opaque values carrying a generation:
 *    a handle used after its free function, a handle of another type, or a made-up value is refused with
 *    IPTKIT_EINVAL ("stale or invalid handle"); the library never dereferences a handle value.
 *  - Ownership: a `char **out` string is malloc'd for the caller (free it with iptkit_string_free); a returned
 *    `const char *` belongs to the handle it came from and lives until that handle is freed.
 *  - Thread-safety: every function may be called from any thread; calls on one handle are serialized internally.
 *  - No function calls exit(), aborts on bad input, or lets a C++ exception escape.
 *  - A process whose real and effective user or group ids differ (setuid/setgid) cannot open a firewall: call
 *    setresgid(0,0,0) and setresuid(0,0,0) first (iptables' libxtables would _exit(111) in such a process).
 *
 *   iptkit_firewall *fw;
 *   if (iptkit_open(&fw, "blue", IPTKIT_BACKEND_AUTO, IPTKIT_FAMILY_IPV4, NULL) != IPTKIT_OK) {
 *     fprintf(stderr, "iptkit: %s\n", iptkit_last_error_message());
 *     return 1;
 *   }
 *   if (iptkit_rule_append(fw, "filter", "INPUT", "-p tcp --dport 22 -j ACCEPT", NULL) != IPTKIT_OK) ...
 *   iptkit_close(fw);
 */
#ifndef IPTKIT_C_IPTKIT_H_
#define IPTKIT_C_IPTKIT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ---- */

#define IPTKIT_ABI_MAJOR 1 /* the N of libiptkit.so.N */
#define IPTKIT_ABI_MINOR 1 /* the symbol version node is IPTKIT_<major>.<minor> */

/* The library's version ("0.1.0"). Never fails; the string is static. */
const char *iptkit_version(void);

/* ---- Status codes (iptkit::StatusCode) ---- */

enum {
  IPTKIT_OK = 0,
  IPTKIT_EINVAL = 1,    /* invalid argument: a NULL pointer, bad spec or JSON, unknown enum value; nothing changed */
  IPTKIT_ENOTFOUND = 2, /* table, chain, rule or set does not exist */
  IPTKIT_EEXIST = 3,    /* chain or set exists already */
  IPTKIT_EPRECOND = 4,  /* chain not empty / referenced, table unrepresentable, rule not where expected */
  IPTKIT_EABORTED = 5,  /* a concurrent change won; retry */
  IPTKIT_EUNAVAIL = 6,  /* lock busy past the wait bound, tool or service unavailable */
  IPTKIT_EPERM = 7,     /* not root / no CAP_NET_ADMIN, or a setuid process that did not setresuid first */
  IPTKIT_EINTERNAL = 8  /* a bug, or a tool that misbehaved */
};

/* "OK", "INVALID_ARGUMENT", ... ("UNKNOWN" for other values). Static string. */
const char *iptkit_status_name(int code);

/* ---- Errors ---- */

typedef struct iptkit_error iptkit_error;

/* The calling thread's last error: its code (IPTKIT_OK when the last status-returning call succeeded) and message
 * ("" then). The message stays valid until the next iptkit call on this thread. Never fail; never change it. */
int iptkit_last_error_code(void);
const char *iptkit_last_error_message(void);
/* A detail of the last error by name, or NULL when unset: "token", "column", "argument", "field", "op_index",
 * "family", "table", "chain", "rule", "owner", "line", "reason" (numbers as decimal text). */
const char *iptkit_last_error_detail(const char *name);
/* Sets the last error to IPTKIT_OK. */
void iptkit_clear_error(void);

/* An error returned through an `iptkit_error **err` out-parameter. Code, message and details as above; the strings
 * belong to the error. A stale or invalid handle gives IPTKIT_EINVAL, NULL message/detail. */
int iptkit_error_code(const iptkit_error *error);
const char *iptkit_error_message(const iptkit_error *error);
const char *iptkit_error_detail(const iptkit_error *error, const char *name);
/* Frees the error; NULL is ignored. Returns IPTKIT_OK, or IPTKIT_EINVAL for a stale handle (double free). */
int iptkit_error_free(iptkit_error *error);

/* Frees a string the library allocated for the caller (a `char **out`); NULL is ignored. */
void iptkit_string_free(char *string);

/* ---- Opening ---- */

enum { IPTKIT_FAMILY_IPV4 = 4, IPTKIT_FAMILY_IPV6 = 6 };

enum {
  IPTKIT_BACKEND_AUTO = 0,         /* the iptables variant that holds rules, in-process (NATIVE or NATIVE_LEGACY) */
  IPTKIT_BACKEND_NFT = 1,          /* iptables-nft-restore / -save */
  IPTKIT_BACKEND_LEGACY = 2,       /* iptables-legacy-restore / -save */
  IPTKIT_BACKEND_NATIVE = 3,       /* nf_tables over netlink, in-process */
  IPTKIT_BACKEND_FAKE = 4,         /* in-memory, for tests (no kernel, no root) */
  IPTKIT_BACKEND_NATIVE_LEGACY = 5 /* x_tables (the legacy variant) in-process, through libiptc */
};

typedef struct iptkit_firewall iptkit_firewall;

/* Opens the firewall of network namespace `netns` (NULL or "" = the caller's; a name as `ip netns` uses, or a path
 * such as /proc/PID/ns/net) for `family`, through `backend`. On success *out is a new handle (close it with
 * iptkit_close); on failure *out is NULL. IPTKIT_EPERM when real and effective uid or gid differ. */
int iptkit_open(iptkit_firewall **out, const char *netns, int backend, int family, iptkit_error **err);
/* Closes the handle; NULL is ignored. IPTKIT_EINVAL for a stale handle (double close). Transactions and
 * rulesets made from it stay valid as objects; a transaction of a closed firewall cannot commit. */
int iptkit_close(iptkit_firewall *fw);
/* The backend in use: "native", "nft", "legacy" or "fake" (string owned by the handle). NULL on error. */
const char *iptkit_firewall_backend(iptkit_firewall *fw);
/* IPTKIT_FAMILY_IPV4 or _IPV6; -1 on error. */
int iptkit_firewall_family(iptkit_firewall *fw);
/* `iptkit info` as JSON into *out (iptkit_string_free). */
int iptkit_firewall_info_json(iptkit_firewall *fw, char **out, iptkit_error **err);

/* ---- Reading ---- */

typedef struct iptkit_ruleset iptkit_ruleset;

/* A snapshot of every table of the firewall's family (table NULL) or of one, with counters. *out is a new handle
 * (iptkit_ruleset_free). A table that iptables-save cannot show faithfully is refused (IPTKIT_EPRECOND). */
int iptkit_ruleset_list(iptkit_firewall *fw, const char *table, iptkit_ruleset **out, iptkit_error **err);
/* The same snapshot as JSON (docs/json.md), into *out (iptkit_string_free). */
int iptkit_ruleset_list_json(iptkit_firewall *fw, const char *table, char **out, iptkit_error **err);
/* Canonical iptables-save text (with "[packets:bytes]" when `counters` != 0), into *out (iptkit_string_free). */
int iptkit_ruleset_save(iptkit_firewall *fw, const char *table, int counters, char **out, iptkit_error **err);
/* Frees the snapshot; NULL is ignored; IPTKIT_EINVAL for a stale handle. */
int iptkit_ruleset_free(iptkit_ruleset *rs);

/* Tables, chains and rules of a snapshot by 0-based index, in save order. Counts are 0 and strings NULL on error
 * (the last error then says why). */
size_t iptkit_ruleset_table_count(const iptkit_ruleset *rs);
const char *iptkit_ruleset_table_name(const iptkit_ruleset *rs, size_t table);

/* Chains of all tables, flattened. */
size_t iptkit_ruleset_chain_count(const iptkit_ruleset *rs);
const char *iptkit_ruleset_chain_table(const iptkit_ruleset *rs, size_t chain);
const char *iptkit_ruleset_chain_name(const iptkit_ruleset *rs, size_t chain);
/* "ACCEPT"/"DROP" for builtin chains, NULL for user chains (last error untouched then). */
const char *iptkit_ruleset_chain_policy(const iptkit_ruleset *rs, size_t chain);
int iptkit_ruleset_chain_counters(const iptkit_ruleset *rs, size_t chain, uint64_t *packets, uint64_t *bytes);

/* Rules of all chains, flattened in save order. */
size_t iptkit_ruleset_rule_count(const iptkit_ruleset *rs);
const char *iptkit_ruleset_rule_table(const iptkit_ruleset *rs, size_t rule);
const char *iptkit_ruleset_rule_chain(const iptkit_ruleset *rs, size_t rule);
/* The 1-based position of the rule in its chain; 0 on error. */
size_t iptkit_ruleset_rule_position(const iptkit_ruleset *rs, size_t rule);
/* The canonical spec, as iptables-save prints it after "-A CHAIN ". */
const char *iptkit_ruleset_rule_spec(const iptkit_ruleset *rs, size_t rule);
int iptkit_ruleset_rule_counters(const iptkit_ruleset *rs, size_t rule, uint64_t *packets, uint64_t *bytes);

/* Structured fields of a rule. */
enum {
  IPTKIT_FIELD_SOURCE = 0,        /* -s */
  IPTKIT_FIELD_DESTINATION = 1,   /* -d */
  IPTKIT_FIELD_IN_INTERFACE = 2,  /* -i */
  IPTKIT_FIELD_OUT_INTERFACE = 3, /* -o */
  IPTKIT_FIELD_PROTOCOL = 4,      /* -p */
  IPTKIT_FIELD_FRAGMENT = 5       /* -f (value "") */
};
/* The header field's value, or NULL when the rule has none (last error untouched) or on error. *negated (may be
 * NULL) is 1 for "! -s ...". */
const char *iptkit_ruleset_rule_field(const iptkit_ruleset *rs, size_t rule, int field, int *negated);

enum { IPTKIT_TARGET_NONE = 0, IPTKIT_TARGET_JUMP = 1, IPTKIT_TARGET_GOTO = 2 };
/* The target's name ("ACCEPT", "LOG", a chain), or NULL for none or on error; *kind (may be NULL) as above. */
const char *iptkit_ruleset_rule_target(const iptkit_ruleset *rs, size_t rule, int *kind);
/* The matches (-m NAME) in order. */
size_t iptkit_ruleset_rule_match_count(const iptkit_ruleset *rs, size_t rule);
const char *iptkit_ruleset_rule_match_name(const iptkit_ruleset *rs, size_t rule, size_t match);
/* The owner and id of a rule iptkit tagged for an owner (declarative apply), or NULL. */
const char *iptkit_ruleset_rule_owner(const iptkit_ruleset *rs, size_t rule);
/* The rule with every field, match option and target option as JSON (docs/json.md), into *out. */
int iptkit_ruleset_rule_json(const iptkit_ruleset *rs, size_t rule, char **out, iptkit_error **err);

/* ---- Single changes (each one transaction) ---- */

/* Whether `chain` of `table` (NULL = "filter") holds the rule, as `iptables -C` finds it: *found 1 or 0. */
int iptkit_rule_check(iptkit_firewall *fw, const char *table, const char *chain, const char *spec, int *found,
                      iptkit_error **err);
int iptkit_rule_append(iptkit_firewall *fw, const char *table, const char *chain, const char *spec, iptkit_error **err);
/* At 1-based `position` (rules + 1 appends). */
int iptkit_rule_insert(iptkit_firewall *fw, const char *table, const char *chain, int position, const char *spec,
                       iptkit_error **err);
/* The first rule equal to spec (as iptables -D CHAIN spec). IPTKIT_ENOTFOUND when there is none. */
int iptkit_rule_delete(iptkit_firewall *fw, const char *table, const char *chain, const char *spec, iptkit_error **err);
/* The rule at `position`; when `expect` is not NULL it must be that rule (else IPTKIT_EPRECOND). */
int iptkit_rule_delete_at(iptkit_firewall *fw, const char *table, const char *chain, int position, const char *expect,
                          iptkit_error **err);
int iptkit_rule_replace(iptkit_firewall *fw, const char *table, const char *chain, int position, const char *spec,
                        const char *expect, iptkit_error **err);

int iptkit_chain_create(iptkit_firewall *fw, const char *table, const char *chain, iptkit_error **err);
/* `cascade` != 0 also deletes the rules that jump to it; else a referenced or non-empty chain is IPTKIT_EPRECOND. */
int iptkit_chain_delete(iptkit_firewall *fw, const char *table, const char *chain, int cascade, iptkit_error **err);
int iptkit_chain_rename(iptkit_firewall *fw, const char *table, const char *chain, const char *new_name,
                        iptkit_error **err);
/* `chain` NULL: every chain of the table. */
int iptkit_chain_flush(iptkit_firewall *fw, const char *table, const char *chain, iptkit_error **err);
int iptkit_chain_zero(iptkit_firewall *fw, const char *table, const char *chain, iptkit_error **err);
/* Policy "ACCEPT" or "DROP" of a builtin chain. */
int iptkit_chain_set_policy(iptkit_firewall *fw, const char *table, const char *chain, const char *policy,
                            iptkit_error **err);

/* ---- Transactions ---- */

typedef struct iptkit_txn iptkit_txn;

/* A new, empty transaction on `fw` (iptkit_txn_free). Ops are checked when added (a bad spec fails the add, not
 * the commit) and applied in order by iptkit_txn_commit, all or nothing. */
int iptkit_txn_begin(iptkit_firewall *fw, iptkit_txn **out, iptkit_error **err);
int iptkit_txn_append(iptkit_txn *txn, const char *table, const char *chain, const char *spec, iptkit_error **err);
int iptkit_txn_insert(iptkit_txn *txn, const char *table, const char *chain, int position, const char *spec,
                      iptkit_error **err);
int iptkit_txn_delete(iptkit_txn *txn, const char *table, const char *chain, const char *spec, iptkit_error **err);
int iptkit_txn_delete_at(iptkit_txn *txn, const char *table, const char *chain, int position, const char *expect,
                         iptkit_error **err);
int iptkit_txn_replace(iptkit_txn *txn, const char *table, const char *chain, int position, const char *spec,
                       const char *expect, iptkit_error **err);
int iptkit_txn_chain_create(iptkit_txn *txn, const char *table, const char *chain, iptkit_error **err);
int iptkit_txn_chain_delete(iptkit_txn *txn, const char *table, const char *chain, int cascade, iptkit_error **err);
int iptkit_txn_chain_rename(iptkit_txn *txn, const char *table, const char *chain, const char *new_name,
                            iptkit_error **err);
int iptkit_txn_chain_flush(iptkit_txn *txn, const char *table, const char *chain, iptkit_error **err);
int iptkit_txn_chain_zero(iptkit_txn *txn, const char *table, const char *chain, iptkit_error **err);
int iptkit_txn_chain_set_policy(iptkit_txn *txn, const char *table, const char *chain, const char *policy,
                                iptkit_error **err);
/* Ops added after this call are for `family` (IPTKIT_FAMILY_IPV4 or _IPV6); a new transaction starts with the
 * firewall's family. One transaction may hold ops of both families: on the native backend they commit as one kernel
 * transaction (all or nothing across IPv4 and IPv6); on the restore backends table by table, each atomically, with
 * the tables already committed undone when a later one fails (docs/c-api.md). Since IPTKIT_1.1. */
int iptkit_txn_set_family(iptkit_txn *txn, int family, iptkit_error **err);
/* Adds the ops of a JSON batch ({"ops":[...]}, docs/json.md); each op carries its own family ("family": "ipv6";
 * IPv4 when absent), whatever iptkit_txn_set_family said. */
int iptkit_txn_add_json(iptkit_txn *txn, const char *json, iptkit_error **err);
/* How many ops the transaction holds; 0 on error. */
size_t iptkit_txn_op_count(const iptkit_txn *txn);
/* Validates and renders without sending: the exact iptables-restore text per table, into *out. */
int iptkit_txn_dry_run(iptkit_txn *txn, char **out, iptkit_error **err);
/* Commits every op as one transaction. The ops stay in the transaction (commit again to repeat them). */
int iptkit_txn_commit(iptkit_txn *txn, iptkit_error **err);
int iptkit_txn_free(iptkit_txn *txn);

/* ---- Declarative ---- */

/* Makes the owner's chains and hook rules what the desired-state document says (docs/declarative.md) with the
 * minimal change; `dry_run` != 0 changes nothing. *plan_json (may be NULL) gets the plan (iptkit_string_free). */
int iptkit_apply_json(iptkit_firewall *fw, const char *desired_json, int dry_run, char **plan_json, iptkit_error **err);

/* ---- IP sets (ipset) of the firewall's namespace ---- */

/* `type` as ipset ("hash:ip", "hash:net", ...); hash sets of addresses hold the firewall's family ("family inet6"
 * on an IPTKIT_FAMILY_IPV6 handle); every set is created with comment support. `timeout` is the default entry timeout
 * in seconds (0: none, entries stay unless given one; IPTKIT_SET_NO_TIMEOUT: the set has no timeout support). */
#define IPTKIT_SET_NO_TIMEOUT UINT32_MAX
int iptkit_set_create(iptkit_firewall *fw, const char *name, const char *type, uint32_t timeout, iptkit_error **err);
/* Creates a set with ipset's create options as words, as `ipset create NAME TYPE OPTIONS` takes them:
 * "family inet6 maxelem 1000000 hashsize 65536 timeout 3600 counters comment skbinfo netmask 24 range ... size N"
 * ("" for the kernel's defaults; unlike iptkit_set_create, nothing is implied: no comment support unless asked for,
 * family inet unless given). IPTKIT_EINVAL names an unknown word, a bad value or an option the type does not take.
 * Since IPTKIT_1.1. */
int iptkit_set_create_options(iptkit_firewall *fw, const char *name, const char *type, const char *options,
                              iptkit_error **err);
int iptkit_set_destroy(iptkit_firewall *fw, const char *name, iptkit_error **err);
int iptkit_set_flush(iptkit_firewall *fw, const char *name, iptkit_error **err);
/* Adds (or refreshes) an entry; `timeout` IPTKIT_SET_NO_TIMEOUT: the set's default; `comment` may be NULL. */
int iptkit_set_add(iptkit_firewall *fw, const char *name, const char *elem, uint32_t timeout, const char *comment,
                   iptkit_error **err);
int iptkit_set_delete(iptkit_firewall *fw, const char *name, const char *elem, iptkit_error **err);
/* *found 1 when the element is in the set. */
int iptkit_set_test(iptkit_firewall *fw, const char *name, const char *elem, int *found, iptkit_error **err);
/* Every set (name NULL) or one, with its options and entries, as a JSON array into *out: each set as iptkitd's
 * GET /v1/sets/NAME answers it (docs/rest.md "Sets"). */
int iptkit_set_list_json(iptkit_firewall *fw, const char *name, char **out, iptkit_error **err);

#ifdef __cplusplus
}
#endif

#endif /* IPTKIT_C_IPTKIT_H_ */
