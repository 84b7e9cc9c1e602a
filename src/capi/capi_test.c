/* Tests of the C ABI (include/iptkit/c/iptkit.h), written in C against libiptkit.so.
 *
 * Usage: iptkit_capi_test fake|nft|legacy|native|native-legacy
 * "fake" needs no root. The kernel backends run in a private network namespace iptkit-capi-<pid> (created with
 * `ip netns add`, deleted at the end), check the kernel with the real iptables-save, and exit 77 (skipped) when not
 * root or when the variant does not work here. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iptkit/c/iptkit.h"

static int failures = 0;
static const char *backend_name = "fake";
static char netns[64] = "";

#define CHECK(cond)                                                                               \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error %d: %s)\n", __FILE__, __LINE__, #cond, \
              iptkit_last_error_code(), iptkit_last_error_message());                             \
      failures++;                                                                                 \
    }                                                                                             \
  } while (0)
#define CHECK_OK(call) CHECK((call) == IPTKIT_OK)
#define CHECK_CODE(call, code) CHECK((call) == (code))
#define CHECK_CONTAINS(haystack, needle) CHECK((haystack) != NULL && strstr((haystack), (needle)) != NULL)

static int backend_kind(void) {
  if (strcmp(backend_name, "nft") == 0) return IPTKIT_BACKEND_NFT;
  if (strcmp(backend_name, "legacy") == 0) return IPTKIT_BACKEND_LEGACY;
  if (strcmp(backend_name, "native-legacy") == 0) return IPTKIT_BACKEND_NATIVE_LEGACY;
  if (strcmp(backend_name, "native") == 0) return IPTKIT_BACKEND_NATIVE;
  return IPTKIT_BACKEND_FAKE;
}
static int kernel(void) { return backend_kind() != IPTKIT_BACKEND_FAKE; }
/* The iptables variant whose tables the backend writes. */
static int legacy(void) {
  return backend_kind() == IPTKIT_BACKEND_LEGACY || backend_kind() == IPTKIT_BACKEND_NATIVE_LEGACY;
}

/* Runs a command line (no user input in it) and returns its stdout (malloc'd; "" when it failed to run). */
static char *run(const char *command) {
  FILE *p = popen(command, "r");
  size_t size = 0, cap = 4096;
  char *out = calloc(1, cap);
  if (p == NULL || out == NULL) return out;
  size_t n;
  while ((n = fread(out + size, 1, cap - size - 1, p)) > 0) {
    size += n;
    if (cap - size < 2) {
      cap *= 2;
      out = realloc(out, cap);
    }
  }
  out[size] = '\0';
  pclose(p);
  return out;
}

/* The kernel's view: iptables-save of the backend's variant inside the namespace. */
static char *kernel_save(void) {
  char command[256];
  const char *tool = legacy() ? "iptables-legacy-save" : "iptables-nft-save";
  snprintf(command, sizeof command, "/usr/sbin/ip netns exec %s /usr/sbin/%s -t filter 2>&1", netns, tool);
  return run(command);
}

static iptkit_firewall *open_fw(void) {
  iptkit_firewall *fw = NULL;
  iptkit_error *err = NULL;
  int rc = iptkit_open(&fw, kernel() ? netns : NULL, backend_kind(), IPTKIT_FAMILY_IPV4, &err);
  if (rc != IPTKIT_OK) {
    fprintf(stderr, "iptkit_open failed: %s\n", iptkit_error_message(err));
    iptkit_error_free(err);
    exit(1);
  }
  CHECK(err == NULL);
  return fw;
}

/* The number of rules in chain `chain` of table filter. */
static size_t rules_in(iptkit_firewall *fw, const char *chain) {
  iptkit_ruleset *rs = NULL;
  size_t n = 0;
  CHECK_OK(iptkit_ruleset_list(fw, "filter", &rs, NULL));
  for (size_t i = 0; i < iptkit_ruleset_rule_count(rs); i++) {
    if (strcmp(iptkit_ruleset_rule_chain(rs, i), chain) == 0) n++;
  }
  iptkit_ruleset_free(rs);
  return n;
}

static void test_version_and_names(void) {
  CHECK(strlen(iptkit_version()) > 0);
  CHECK(strcmp(iptkit_status_name(IPTKIT_OK), "OK") == 0);
  CHECK(strcmp(iptkit_status_name(IPTKIT_ENOTFOUND), "NOT_FOUND") == 0);
  CHECK(strcmp(iptkit_status_name(IPTKIT_EINTERNAL), "INTERNAL") == 0);
  CHECK(strcmp(iptkit_status_name(42), "UNKNOWN") == 0);
  CHECK(strcmp(iptkit_status_name(-1), "UNKNOWN") == 0);
}

static void test_open_errors(void) {
  iptkit_firewall *fw = (iptkit_firewall *)1;
  iptkit_error *err = NULL;
  CHECK_CODE(iptkit_open(NULL, NULL, IPTKIT_BACKEND_FAKE, IPTKIT_FAMILY_IPV4, NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "out is NULL");

  CHECK_CODE(iptkit_open(&fw, NULL, 99, IPTKIT_FAMILY_IPV4, &err), IPTKIT_EINVAL);
  CHECK(fw == NULL);
  CHECK(err != NULL);
  CHECK(iptkit_error_code(err) == IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_error_message(err), "backend 99");
  CHECK_CONTAINS(iptkit_last_error_message(), "backend 99"); /* also set when open fails */
  CHECK_OK(iptkit_error_free(err));
  CHECK_CODE(iptkit_error_free(err), IPTKIT_EINVAL); /* double free detected */
  CHECK(iptkit_error_message(err) == NULL);          /* stale error handle */

  CHECK_CODE(iptkit_open(&fw, NULL, IPTKIT_BACKEND_FAKE, 5, NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "family 5");

  if (kernel()) {
    CHECK_CODE(iptkit_open(&fw, "iptkit-capi-no-such-ns", backend_kind(), IPTKIT_FAMILY_IPV4, NULL), IPTKIT_ENOTFOUND);
    CHECK_CONTAINS(iptkit_last_error_message(), "iptkit-capi-no-such-ns");
    CHECK(fw == NULL);
  }
  iptkit_clear_error();
  CHECK(iptkit_last_error_code() == IPTKIT_OK);
  CHECK(strcmp(iptkit_last_error_message(), "") == 0);
}

/* A setuid caller (real uid != effective uid) is refused with a message telling it what to do. Runs in a child. */
static void test_setuid_refused(void) {
  if (geteuid() != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    if (setresuid(65534, 0, 0) != 0) _exit(2);
    iptkit_firewall *fw = NULL;
    int rc = iptkit_open(&fw, NULL, IPTKIT_BACKEND_FAKE, IPTKIT_FAMILY_IPV4, NULL);
    if (rc != IPTKIT_EPERM || fw != NULL) _exit(3);
    if (strstr(iptkit_last_error_message(), "setresuid(0, 0, 0)") == NULL) _exit(4);
    /* After setresuid it works. */
    if (setresuid(0, 0, 0) != 0) _exit(5);
    if (iptkit_open(&fw, NULL, IPTKIT_BACKEND_FAKE, IPTKIT_FAMILY_IPV4, NULL) != IPTKIT_OK) _exit(6);
    iptkit_close(fw);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_rules(iptkit_firewall *fw) {
  iptkit_error *err = NULL;
  CHECK(iptkit_firewall_family(fw) == IPTKIT_FAMILY_IPV4);
  const char *backend = iptkit_firewall_backend(fw);
  CHECK(backend != NULL && strcmp(backend, backend_name) == 0);

  CHECK_OK(iptkit_chain_create(fw, NULL, "CAPI", &err));
  CHECK(err == NULL);
  CHECK_OK(iptkit_rule_append(fw, NULL, "CAPI", "-s 10.1.0.0/16 -p tcp --dport 22 -j ACCEPT", NULL));
  CHECK(iptkit_last_error_code() == IPTKIT_OK);
  CHECK_OK(iptkit_rule_append(fw, "filter", "CAPI", "! -i lo -m comment --comment \"two words\" -j DROP", NULL));
  CHECK_OK(iptkit_rule_insert(fw, "filter", "CAPI", 1, "-p udp --dport 53 -j ACCEPT", NULL));
  CHECK_OK(iptkit_rule_append(fw, "filter", "INPUT", "-j CAPI", NULL));

  int found = -1;
  CHECK_OK(iptkit_rule_check(fw, NULL, "CAPI", "-p tcp -s 10.1.0.0/16 --dport 22 -j ACCEPT", &found, NULL));
  CHECK(found == 1);
  CHECK_OK(iptkit_rule_check(fw, NULL, "CAPI", "-p tcp --dport 23 -j ACCEPT", &found, NULL));
  CHECK(found == 0);

  iptkit_ruleset *rs = NULL;
  CHECK_OK(iptkit_ruleset_list(fw, "filter", &rs, NULL));
  CHECK(iptkit_ruleset_table_count(rs) == 1);
  CHECK(strcmp(iptkit_ruleset_table_name(rs, 0), "filter") == 0);
  size_t chains = iptkit_ruleset_chain_count(rs), capi_chain = (size_t)-1;
  for (size_t c = 0; c < chains; c++) {
    if (strcmp(iptkit_ruleset_chain_name(rs, c), "INPUT") == 0) {
      CHECK(strcmp(iptkit_ruleset_chain_policy(rs, c), "ACCEPT") == 0);
      uint64_t p = 99, b = 99;
      CHECK_OK(iptkit_ruleset_chain_counters(rs, c, &p, &b));
    }
    if (strcmp(iptkit_ruleset_chain_name(rs, c), "CAPI") == 0) capi_chain = c;
  }
  CHECK(capi_chain != (size_t)-1);
  iptkit_clear_error();
  CHECK(iptkit_ruleset_chain_policy(rs, capi_chain) == NULL);
  CHECK(iptkit_last_error_code() == IPTKIT_OK); /* NULL policy of a user chain is not an error */
  CHECK(strcmp(iptkit_ruleset_chain_table(rs, capi_chain), "filter") == 0);

  CHECK(iptkit_ruleset_rule_count(rs) == 4);
  int seen = 0;
  for (size_t i = 0; i < iptkit_ruleset_rule_count(rs); i++) {
    if (strcmp(iptkit_ruleset_rule_chain(rs, i), "CAPI") != 0) continue;
    const char *spec = iptkit_ruleset_rule_spec(rs, i);
    size_t pos = iptkit_ruleset_rule_position(rs, i);
    CHECK(strcmp(iptkit_ruleset_rule_table(rs, i), "filter") == 0);
    uint64_t packets = 99, bytes = 99;
    CHECK_OK(iptkit_ruleset_rule_counters(rs, i, &packets, &bytes));
    CHECK(packets == 0 && bytes == 0);
    int neg = -1, kind = -1;
    if (pos == 1) {
      CHECK(strcmp(spec, "-p udp -m udp --dport 53 -j ACCEPT") == 0);
      seen++;
    } else if (pos == 2) {
      CHECK(strcmp(spec, "-s 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT") == 0);
      CHECK(strcmp(iptkit_ruleset_rule_field(rs, i, IPTKIT_FIELD_SOURCE, &neg), "10.1.0.0/16") == 0);
      CHECK(neg == 0);
      CHECK(strcmp(iptkit_ruleset_rule_field(rs, i, IPTKIT_FIELD_PROTOCOL, NULL), "tcp") == 0);
      CHECK(iptkit_ruleset_rule_field(rs, i, IPTKIT_FIELD_DESTINATION, &neg) == NULL);
      CHECK(strcmp(iptkit_ruleset_rule_target(rs, i, &kind), "ACCEPT") == 0);
      CHECK(kind == IPTKIT_TARGET_JUMP);
      CHECK(iptkit_ruleset_rule_match_count(rs, i) == 1);
      CHECK(strcmp(iptkit_ruleset_rule_match_name(rs, i, 0), "tcp") == 0);
      char *json = NULL;
      CHECK_OK(iptkit_ruleset_rule_json(rs, i, &json, NULL));
      CHECK_CONTAINS(json, "\"dport\"");
      CHECK_CONTAINS(json, "\"chain\":\"CAPI\"");
      iptkit_string_free(json);
      seen++;
    } else if (pos == 3) {
      CHECK(strcmp(spec, "! -i lo -m comment --comment \"two words\" -j DROP") == 0);
      CHECK(strcmp(iptkit_ruleset_rule_field(rs, i, IPTKIT_FIELD_IN_INTERFACE, &neg), "lo") == 0);
      CHECK(neg == 1);
      seen++;
    }
    CHECK(iptkit_ruleset_rule_owner(rs, i) == NULL);
  }
  CHECK(seen == 3);
  /* Bad indices and enum values: errors, not crashes. */
  CHECK(iptkit_ruleset_rule_spec(rs, 4) == NULL);
  CHECK(iptkit_last_error_code() == IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "rule index 4 is out of range");
  CHECK(iptkit_ruleset_rule_field(rs, 0, 17, NULL) == NULL);
  CHECK_CONTAINS(iptkit_last_error_message(), "field 17");
  CHECK(iptkit_ruleset_rule_match_name(rs, 0, 9) == NULL);
  CHECK(iptkit_ruleset_table_name(rs, 1) == NULL);
  CHECK(iptkit_ruleset_chain_name(rs, chains) == NULL);
  CHECK_CODE(iptkit_ruleset_rule_counters(rs, 1000, NULL, NULL), IPTKIT_EINVAL);
  CHECK_OK(iptkit_ruleset_free(rs));

  char *text = NULL;
  CHECK_OK(iptkit_ruleset_save(fw, "filter", 1, &text, NULL));
  CHECK_CONTAINS(text, "[0:0] -A CAPI -s 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT\n");
  iptkit_string_free(text);
  CHECK_OK(iptkit_ruleset_list_json(fw, NULL, &text, NULL));
  CHECK_CONTAINS(text, "\"name\":\"CAPI\"");
  iptkit_string_free(text);
  CHECK_OK(iptkit_firewall_info_json(fw, &text, NULL));
  CHECK_CONTAINS(text, backend_name);
  iptkit_string_free(text);

  if (kernel()) {
    char *save = kernel_save();
    CHECK_CONTAINS(save, "-A CAPI -s 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT\n");
    CHECK_CONTAINS(save, "-A CAPI ! -i lo -m comment --comment \"two words\" -j DROP\n");
    free(save);
  }

  /* delete by spec, delete at a position with a wrong expectation, replace. */
  CHECK_OK(iptkit_rule_delete(fw, NULL, "CAPI", "-p udp --dport 53 -j ACCEPT", NULL));
  CHECK_CODE(iptkit_rule_delete(fw, NULL, "CAPI", "-p udp --dport 53 -j ACCEPT", &err), IPTKIT_ENOTFOUND);
  CHECK(iptkit_error_code(err) == IPTKIT_ENOTFOUND);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_rule_delete_at(fw, NULL, "CAPI", 1, "-j DROP", NULL), IPTKIT_EPRECOND);
  CHECK_OK(iptkit_rule_replace(fw, NULL, "CAPI", 2, "-i lo -j ACCEPT",
                               "! -i lo -m comment --comment \"two words\" -j DROP", NULL));
  CHECK_OK(iptkit_rule_delete_at(fw, NULL, "CAPI", 1, NULL, NULL));
  CHECK(rules_in(fw, "CAPI") == 1);
  CHECK_OK(iptkit_rule_check(fw, NULL, "CAPI", "-i lo -j ACCEPT", &found, NULL));
  CHECK(found == 1);

  /* chains: a referenced chain is not deleted without cascade; rename; policy; flush; zero. */
  CHECK_CODE(iptkit_chain_delete(fw, NULL, "CAPI", 0, NULL), IPTKIT_EPRECOND);
  CHECK_CODE(iptkit_chain_create(fw, NULL, "CAPI", NULL), IPTKIT_EEXIST);
  CHECK_OK(iptkit_chain_set_policy(fw, NULL, "FORWARD", "DROP", NULL));
  CHECK_CODE(iptkit_chain_set_policy(fw, NULL, "FORWARD", "REJECT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_detail("token"), "REJECT");
  CHECK_OK(iptkit_chain_zero(fw, NULL, NULL, NULL));
  CHECK_OK(iptkit_chain_zero(fw, NULL, "CAPI", NULL));
  CHECK_OK(iptkit_chain_rename(fw, NULL, "CAPI", "CAPI2", NULL));
  CHECK_OK(iptkit_chain_flush(fw, NULL, "CAPI2", NULL));
  CHECK(rules_in(fw, "CAPI2") == 0);
  CHECK_OK(iptkit_chain_delete(fw, NULL, "CAPI2", 1, NULL)); /* cascade: the -j CAPI2 in INPUT goes too */
  CHECK(rules_in(fw, "INPUT") == 0);
  CHECK_CODE(iptkit_chain_delete(fw, NULL, "CAPI2", 0, NULL), IPTKIT_ENOTFOUND);
  if (kernel()) {
    char *save = kernel_save();
    CHECK_CONTAINS(save, ":FORWARD DROP");
    CHECK(strstr(save, "CAPI") == NULL);
    free(save);
  }
  CHECK_OK(iptkit_chain_set_policy(fw, NULL, "FORWARD", "ACCEPT", NULL));
  CHECK_OK(iptkit_chain_flush(fw, NULL, NULL, NULL));
}

static void test_bad_input(iptkit_firewall *fw) {
  iptkit_error *err = NULL;
  int found = 0;
  CHECK_CODE(iptkit_rule_append(NULL, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "iptkit_firewall is NULL");
  CHECK_CODE(iptkit_rule_append(fw, NULL, NULL, "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "chain is NULL");
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", NULL, NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "spec is NULL");
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", "-p tcp --dport 22 --bogus -j ACCEPT", &err), IPTKIT_EINVAL);
  CHECK(iptkit_error_detail(err, "token") != NULL && strcmp(iptkit_error_detail(err, "token"), "--bogus") == 0);
  CHECK(iptkit_error_detail(err, "nonsense") == NULL);
  CHECK(iptkit_error_detail(err, NULL) == NULL);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", "-s host.example.com -j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", "-m comment --comment \"a\nb\" -j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_append(fw, NULL, "NOSUCH", "-j ACCEPT", NULL), IPTKIT_ENOTFOUND);
  CHECK_CODE(iptkit_rule_append(fw, "nosuchtable", "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_insert(fw, NULL, "INPUT", 0, "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_insert(fw, NULL, "INPUT", -5, "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_check(fw, NULL, "INPUT", "-j ACCEPT", NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_check(fw, NULL, "INPUT", "-j", &found, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_chain_rename(fw, NULL, "INPUT", NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_chain_create(fw, NULL, "DNAT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_ruleset_list(fw, NULL, NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_ruleset_save(fw, NULL, 0, NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_apply_json(fw, "{not json", 0, NULL, &err), IPTKIT_EINVAL);
  CHECK(iptkit_error_message(err) != NULL);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_apply_json(fw, NULL, 0, NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_apply_json(fw, "{\"owner\":\"Bad Owner\",\"family\":\"ipv4\",\"chains\":[]}", 1, NULL, NULL),
             IPTKIT_EINVAL);
  CHECK(iptkit_ruleset_rule_count(NULL) == 0);
  CHECK_CONTAINS(iptkit_last_error_message(), "iptkit_ruleset is NULL");
  CHECK(iptkit_firewall_family(NULL) == -1);
  CHECK(iptkit_txn_op_count(NULL) == 0);
  CHECK(iptkit_error_code(NULL) == IPTKIT_EINVAL);
  CHECK_OK(iptkit_close(NULL));
  CHECK_OK(iptkit_ruleset_free(NULL));
  CHECK_OK(iptkit_txn_free(NULL));
  CHECK_OK(iptkit_error_free(NULL));
  iptkit_string_free(NULL);
  CHECK(rules_in(fw, "INPUT") == 0); /* nothing of the above changed anything */
}

static void test_stale_handles(void) {
  iptkit_firewall *fw = open_fw();
  iptkit_ruleset *rs = NULL;
  iptkit_txn *txn = NULL;
  CHECK_OK(iptkit_ruleset_list(fw, NULL, &rs, NULL));
  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_append(txn, NULL, "INPUT", "-j ACCEPT", NULL));

  /* A handle of another type. */
  CHECK_CODE(iptkit_rule_append((iptkit_firewall *)rs, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "the handle is an iptkit_ruleset");
  /* Made-up values: a small integer, a pointer to the stack. Never dereferenced. */
  int local = 0;
  CHECK_CODE(iptkit_rule_append((iptkit_firewall *)0x1234, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "not a handle of this library");
  CHECK_CODE(iptkit_close((iptkit_firewall *)&local), IPTKIT_EINVAL);

  CHECK_OK(iptkit_close(fw));
  CHECK_CODE(iptkit_close(fw), IPTKIT_EINVAL); /* double close */
  CHECK_CONTAINS(iptkit_last_error_message(), "stale handle");
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "stale handle");
  CHECK(iptkit_firewall_backend(fw) == NULL);
  /* A new firewall does not revive the old handle, even in the same slot. */
  iptkit_firewall *fw2 = open_fw();
  CHECK(fw2 != fw);
  CHECK_CODE(iptkit_rule_append(fw, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  /* The ruleset outlives its firewall; the transaction cannot commit without it. */
  iptkit_clear_error();
  (void)iptkit_ruleset_table_count(rs);
  CHECK(iptkit_last_error_code() == IPTKIT_OK);
  CHECK_CODE(iptkit_txn_commit(txn, NULL), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_last_error_message(), "stale handle");
  CHECK_OK(iptkit_ruleset_free(rs));
  CHECK(iptkit_ruleset_table_count(rs) == 0);
  CHECK_CONTAINS(iptkit_last_error_message(), "stale handle");
  CHECK_CODE(iptkit_ruleset_free(rs), IPTKIT_EINVAL);
  CHECK_OK(iptkit_txn_free(txn));
  CHECK_CODE(iptkit_txn_append(txn, NULL, "INPUT", "-j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_txn_free(txn), IPTKIT_EINVAL);
  CHECK_OK(iptkit_close(fw2));
}

static void test_transactions(iptkit_firewall *fw) {
  iptkit_txn *txn = NULL;
  iptkit_error *err = NULL;
  char *text = NULL;
  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_chain_create(txn, NULL, "TXN", NULL));
  CHECK_OK(iptkit_txn_append(txn, NULL, "TXN", "-p tcp --dport 80 -j ACCEPT", NULL));
  CHECK_OK(iptkit_txn_insert(txn, NULL, "TXN", 1, "-p tcp --dport 443 -j ACCEPT", NULL));
  CHECK_OK(iptkit_txn_append(txn, NULL, "INPUT", "-j TXN", NULL));
  CHECK_OK(iptkit_txn_chain_set_policy(txn, NULL, "OUTPUT", "ACCEPT", NULL));
  CHECK_OK(
      iptkit_txn_add_json(txn, "{\"ops\":[{\"append\":{\"chain\":\"TXN\",\"rule\":{\"spec\":\"-j RETURN\"}}}]}", NULL));
  /* Bad ops fail when added and leave the transaction as it was. */
  CHECK_CODE(iptkit_txn_append(txn, NULL, "TXN", "-p tcp --dport 22 --bogus -j ACCEPT", &err), IPTKIT_EINVAL);
  iptkit_error_free(err);
  CHECK_CODE(
      iptkit_txn_add_json(txn,
                          "{\"ops\":[{\"append\":{\"chain\":\"TXN\",\"rule\":{\"spec\":\"-j RETURN\"}}},"
                          "{\"append\":{\"family\":\"ipv7\",\"chain\":\"X\",\"rule\":{\"spec\":\"-j ACCEPT\"}}}]}",
                          &err),
      IPTKIT_EINVAL);
  CHECK(iptkit_error_detail(err, "field") != NULL);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_txn_add_json(txn, "{\"ops\":[{\"bogus\":{}}]}", &err), IPTKIT_EINVAL);
  CHECK(iptkit_error_detail(err, "field") != NULL);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_txn_add_json(txn, "[1,2", NULL), IPTKIT_EINVAL);
  CHECK(iptkit_txn_op_count(txn) == 6);

  CHECK_OK(iptkit_txn_dry_run(txn, &text, NULL));
  CHECK_CONTAINS(text, "*filter\n");
  CHECK_CONTAINS(text, "-N TXN\n");
  CHECK_CONTAINS(text, "-A INPUT -j TXN\n");
  iptkit_string_free(text);
  CHECK(rules_in(fw, "INPUT") == 0); /* a dry run sends nothing */

  CHECK_OK(iptkit_txn_commit(txn, NULL));
  CHECK(rules_in(fw, "TXN") == 3);
  CHECK(rules_in(fw, "INPUT") == 1);
  CHECK_OK(iptkit_txn_free(txn));

  /* A transaction whose last op fails changes nothing. */
  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_chain_flush(txn, NULL, "TXN", NULL));
  CHECK_OK(iptkit_txn_chain_zero(txn, NULL, NULL, NULL));
  CHECK_OK(iptkit_txn_delete_at(txn, NULL, "INPUT", 1, "-j TXN", NULL));
  CHECK_OK(iptkit_txn_replace(txn, NULL, "TXN", 1, "-j DROP", NULL, NULL));
  CHECK_OK(iptkit_txn_chain_rename(txn, NULL, "TXN", "TXN2", NULL));
  CHECK_OK(iptkit_txn_delete(txn, NULL, "INPUT", "-j NOSUCH", NULL));
  CHECK_CODE(iptkit_txn_commit(txn, &err), IPTKIT_ENOTFOUND);
  CHECK(iptkit_error_detail(err, "op_index") != NULL);
  iptkit_error_free(err);
  CHECK(rules_in(fw, "TXN") == 3);
  CHECK_OK(iptkit_txn_free(txn));

  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_chain_delete(txn, NULL, "TXN", 1, NULL));
  CHECK_OK(iptkit_txn_commit(txn, NULL));
  CHECK_OK(iptkit_txn_free(txn));
  CHECK(rules_in(fw, "INPUT") == 0);
}

static size_t rules_in6(const char *chain) {
  iptkit_firewall *fw6 = NULL;
  size_t n = 0;
  CHECK_OK(iptkit_open(&fw6, kernel() ? netns : NULL, backend_kind(), IPTKIT_FAMILY_IPV6, NULL));
  n = rules_in(fw6, chain);
  iptkit_close(fw6);
  return n;
}

/* One transaction holds ops of both families (iptkit_txn_set_family, or "family" in JSON ops); it is all or
 * nothing across them: on the native backend one kernel transaction, on the others table by table with the tables
 * already committed undone. */
static void test_both_families(iptkit_firewall *fw) {
  iptkit_txn *txn = NULL;
  iptkit_error *err = NULL;
  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_append(txn, NULL, "INPUT", "-s 192.0.2.1/32 -j ACCEPT", NULL));
  CHECK_CODE(iptkit_txn_set_family(txn, 5, &err), IPTKIT_EINVAL);
  CHECK_CONTAINS(iptkit_error_message(err), "family 5");
  iptkit_error_free(err);
  CHECK_OK(iptkit_txn_set_family(txn, IPTKIT_FAMILY_IPV6, NULL));
  CHECK_CODE(iptkit_txn_append(txn, NULL, "INPUT", "-s 192.0.2.1/32 -j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_OK(iptkit_txn_append(txn, NULL, "INPUT", "-s 2001:db8::1/128 -j ACCEPT", NULL));
  CHECK_OK(iptkit_txn_add_json(txn,
                               "{\"ops\":[{\"append\":{\"family\":\"ipv6\",\"chain\":\"INPUT\",\"rule\":{\"spec\":"
                               "\"-s 2001:db8::2/128 -j DROP\"}}},{\"append\":{\"chain\":\"INPUT\",\"rule\":{\"spec\":"
                               "\"-s 192.0.2.2/32 -j DROP\"}}}]}",
                               NULL));
  CHECK(iptkit_txn_op_count(txn) == 4);
  CHECK_OK(iptkit_txn_commit(txn, NULL));
  CHECK_OK(iptkit_txn_free(txn));
  CHECK(rules_in(fw, "INPUT") == 2);
  if (kernel()) CHECK(rules_in6("INPUT") == 2); /* a fake firewall lives in its handle */
  if (kernel()) {
    char command[256];
    snprintf(command, sizeof command, "/usr/sbin/ip netns exec %s /usr/sbin/ip6tables-%s-save -t filter", netns,
             legacy() ? "legacy" : "nft");
    char *save = run(command);
    CHECK_CONTAINS(save, "-A INPUT -s 2001:db8::1/128 -j ACCEPT\n-A INPUT -s 2001:db8::2/128 -j DROP\n");
    free(save);
    save = kernel_save();
    CHECK_CONTAINS(save, "-A INPUT -s 192.0.2.1/32 -j ACCEPT\n-A INPUT -s 192.0.2.2/32 -j DROP\n");
    free(save);
  }

  /* The IPv6 half fails (no such chain): the IPv4 half is not left behind. */
  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_chain_flush(txn, NULL, "INPUT", NULL));
  CHECK_OK(iptkit_txn_set_family(txn, IPTKIT_FAMILY_IPV6, NULL));
  CHECK_OK(iptkit_txn_chain_flush(txn, NULL, "INPUT", NULL));
  CHECK_OK(iptkit_txn_append(txn, NULL, "NOSUCH6", "-j ACCEPT", NULL));
  CHECK(iptkit_txn_commit(txn, NULL) != IPTKIT_OK);
  CHECK_OK(iptkit_txn_free(txn));
  CHECK(rules_in(fw, "INPUT") == 2);
  if (kernel()) CHECK(rules_in6("INPUT") == 2);

  CHECK_OK(iptkit_txn_begin(fw, &txn, NULL));
  CHECK_OK(iptkit_txn_chain_flush(txn, NULL, "INPUT", NULL));
  CHECK_OK(iptkit_txn_set_family(txn, IPTKIT_FAMILY_IPV6, NULL));
  CHECK_OK(iptkit_txn_chain_flush(txn, NULL, "INPUT", NULL));
  CHECK_OK(iptkit_txn_commit(txn, NULL));
  CHECK_OK(iptkit_txn_free(txn));
  CHECK(rules_in(fw, "INPUT") == 0);
  if (kernel()) CHECK(rules_in6("INPUT") == 0);
}

static void test_apply(iptkit_firewall *fw) {
  const char *desired =
      "{\"owner\":\"capi\",\"family\":\"ipv4\",\"chains\":[{\"table\":\"filter\",\"name\":\"CAPI-IN\",\"rules\":["
      "{\"spec\":\"-p tcp --dport 22 -j ACCEPT\"},{\"spec\":\"-j RETURN\"}]}],"
      "\"hooks\":[{\"table\":\"filter\",\"chain\":\"INPUT\",\"position\":\"first\",\"spec\":\"-j CAPI-IN\"}]}";
  char *plan = NULL;
  CHECK_OK(iptkit_apply_json(fw, desired, 1, &plan, NULL));
  CHECK_CONTAINS(plan, "CAPI-IN");
  iptkit_string_free(plan);
  CHECK(rules_in(fw, "INPUT") == 0);
  CHECK_OK(iptkit_apply_json(fw, desired, 0, NULL, NULL));
  CHECK(rules_in(fw, "CAPI-IN") == 2);
  iptkit_ruleset *rs = NULL;
  CHECK_OK(iptkit_ruleset_list(fw, "filter", &rs, NULL));
  int owned = 0;
  for (size_t i = 0; i < iptkit_ruleset_rule_count(rs); i++) {
    const char *owner = iptkit_ruleset_rule_owner(rs, i);
    if (owner != NULL && strcmp(owner, "capi") == 0) owned++;
  }
  CHECK(owned == 3);
  iptkit_ruleset_free(rs);
  /* Unchanged: an empty plan. */
  CHECK_OK(iptkit_apply_json(fw, desired, 0, &plan, NULL));
  CHECK_CONTAINS(plan, "\"steps\":[]");
  iptkit_string_free(plan);
  CHECK_OK(iptkit_apply_json(fw, "{\"owner\":\"capi\",\"family\":\"ipv4\",\"chains\":[]}", 0, NULL, NULL));
  CHECK(rules_in(fw, "INPUT") == 0);
}

static void test_sets(iptkit_firewall *fw) {
  int found = -1;
  char *json = NULL;
  CHECK_OK(iptkit_set_create(fw, "capi-ban", "hash:ip", 0, NULL));
  CHECK_CODE(iptkit_set_create(fw, "capi-ban", "hash:ip", 0, NULL), IPTKIT_EEXIST);
  CHECK_CODE(iptkit_set_create(fw, "capi-bad", "hash:nonsense", 0, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_set_create(fw, "capi-bad", "hash:ip", 4000000000u, NULL), IPTKIT_EINVAL);
  CHECK_OK(iptkit_set_add(fw, "capi-ban", "192.0.2.7", 3600, "ids", NULL));
  CHECK_OK(iptkit_set_add(fw, "capi-ban", "192.0.2.8", IPTKIT_SET_NO_TIMEOUT, NULL, NULL));
  CHECK_CODE(iptkit_set_add(fw, "capi-ban", "not-an-ip", IPTKIT_SET_NO_TIMEOUT, NULL, NULL), IPTKIT_EINVAL);
  CHECK_OK(iptkit_set_test(fw, "capi-ban", "192.0.2.7", &found, NULL));
  CHECK(found == 1);
  CHECK_OK(iptkit_set_list_json(fw, "capi-ban", &json, NULL));
  CHECK_CONTAINS(json, "\"entry\":\"192.0.2.7\"");
  iptkit_string_free(json);
  CHECK_OK(iptkit_rule_append(fw, NULL, "INPUT", "-m set --match-set capi-ban src -j DROP", NULL));
  CHECK_CODE(iptkit_set_destroy(fw, "capi-ban", NULL), IPTKIT_EPRECOND); /* referenced */
  CHECK_OK(iptkit_rule_delete(fw, NULL, "INPUT", "-m set --match-set capi-ban src -j DROP", NULL));
  CHECK_OK(iptkit_set_delete(fw, "capi-ban", "192.0.2.7", NULL));
  CHECK_OK(iptkit_set_test(fw, "capi-ban", "192.0.2.7", &found, NULL));
  CHECK(found == 0);
  CHECK_OK(iptkit_set_flush(fw, "capi-ban", NULL));
  CHECK_OK(iptkit_set_destroy(fw, "capi-ban", NULL));
  CHECK_CODE(iptkit_set_destroy(fw, "capi-ban", NULL), IPTKIT_ENOTFOUND);
  CHECK_CODE(iptkit_set_add(fw, NULL, "192.0.2.7", 0, NULL, NULL), IPTKIT_EINVAL);

  /* Every create option, in ipset's words. */
  iptkit_error *err = NULL;
  CHECK_OK(iptkit_set_create_options(fw, "capi-opt", "hash:net",
                                     "family inet6 hashsize 128 maxelem 1000 timeout 60 counters comment", NULL));
  CHECK_OK(iptkit_set_list_json(fw, "capi-opt", &json, NULL));
  CHECK_CONTAINS(json, "\"maxelem\":1000");
  CHECK_CONTAINS(json, "\"family\":\"inet6\"");
  CHECK_CONTAINS(json, "\"counters\":true");
  iptkit_string_free(json);
  CHECK_OK(iptkit_set_add(fw, "capi-opt", "2001:db8::/64", IPTKIT_SET_NO_TIMEOUT, "lab", NULL));
  CHECK_CODE(iptkit_set_add(fw, "capi-opt", "192.0.2.0/24", IPTKIT_SET_NO_TIMEOUT, NULL, NULL), IPTKIT_EINVAL);
  CHECK_OK(iptkit_set_destroy(fw, "capi-opt", NULL));
  CHECK_OK(iptkit_set_create_options(fw, "capi-port", "bitmap:port", "range 1-1024", NULL));
  CHECK_OK(iptkit_set_add(fw, "capi-port", "22", IPTKIT_SET_NO_TIMEOUT, NULL, NULL));
  CHECK_OK(iptkit_set_destroy(fw, "capi-port", NULL));
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", "maxelem", &err), IPTKIT_EINVAL);
  CHECK(iptkit_error_detail(err, "token") != NULL && strcmp(iptkit_error_detail(err, "token"), "maxelem") == 0);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", "maxelem lots", &err), IPTKIT_EINVAL);
  CHECK(iptkit_error_detail(err, "token") != NULL && strcmp(iptkit_error_detail(err, "token"), "lots") == 0);
  iptkit_error_free(err);
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", "bogus 1", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", "family inet7", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", "range 1-1024", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_set_create_options(fw, "capi-bad", "hash:ip", NULL, NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_set_list_json(fw, "capi-bad", &json, NULL), IPTKIT_ENOTFOUND);
}

/* An IPv6 handle: ip6tables rules, and sets of IPv6 addresses. */
static void test_ipv6(void) {
  iptkit_firewall *fw6 = NULL;
  CHECK_OK(iptkit_open(&fw6, kernel() ? netns : NULL, backend_kind(), IPTKIT_FAMILY_IPV6, NULL));
  CHECK(iptkit_firewall_family(fw6) == IPTKIT_FAMILY_IPV6);
  CHECK_OK(iptkit_rule_append(fw6, NULL, "INPUT", "-s 2001:db8::1 -p tcp --dport 22 -j ACCEPT", NULL));
  CHECK_CODE(iptkit_rule_append(fw6, NULL, "INPUT", "-p icmp -j ACCEPT", NULL), IPTKIT_EINVAL);
  CHECK_CODE(iptkit_rule_append(fw6, NULL, "INPUT", "-s 10.0.0.1 -j ACCEPT", NULL), IPTKIT_EINVAL);
  iptkit_ruleset *rs = NULL;
  CHECK_OK(iptkit_ruleset_list(fw6, "filter", &rs, NULL));
  CHECK(iptkit_ruleset_rule_count(rs) == 1);
  CHECK(iptkit_ruleset_rule_spec(rs, 0) != NULL &&
        strcmp(iptkit_ruleset_rule_spec(rs, 0), "-s 2001:db8::1/128 -p tcp -m tcp --dport 22 -j ACCEPT") == 0);
  iptkit_ruleset_free(rs);
  if (kernel()) {
    char command[256];
    snprintf(command, sizeof command, "/usr/sbin/ip netns exec %s /usr/sbin/ip6tables-%s-save -t filter", netns,
             legacy() ? "legacy" : "nft");
    char *save = run(command);
    CHECK_CONTAINS(save, "-A INPUT -s 2001:db8::1/128 -p tcp -m tcp --dport 22 -j ACCEPT\n");
    free(save);
    int found = 0;
    CHECK_OK(iptkit_set_create(fw6, "capi-ban6", "hash:ip", 0, NULL));
    CHECK_OK(iptkit_set_add(fw6, "capi-ban6", "2001:db8::7", 60, NULL, NULL));
    CHECK_OK(iptkit_set_test(fw6, "capi-ban6", "2001:db8::7", &found, NULL));
    CHECK(found == 1);
    CHECK_OK(iptkit_set_destroy(fw6, "capi-ban6", NULL));
  }
  CHECK_OK(iptkit_chain_flush(fw6, NULL, "INPUT", NULL));
  CHECK_OK(iptkit_close(fw6));
}

/* Two threads share one handle: each appends its own rules and lists; every rule arrives, nothing crashes. */
#define THREAD_RULES 20
struct worker {
  iptkit_firewall *fw;
  int id;
  int errors;
};
static void *worker_main(void *arg) {
  struct worker *w = arg;
  for (int i = 0; i < THREAD_RULES; i++) {
    char spec[128];
    snprintf(spec, sizeof spec, "-p tcp --dport %d -j ACCEPT", 1000 + w->id * 100 + i);
    if (iptkit_rule_append(w->fw, NULL, "THREADS", spec, NULL) != IPTKIT_OK) {
      fprintf(stderr, "thread %d: %s\n", w->id, iptkit_last_error_message());
      w->errors++;
    }
    iptkit_ruleset *rs = NULL;
    if (iptkit_ruleset_list(w->fw, "filter", &rs, NULL) != IPTKIT_OK) w->errors++;
    for (size_t r = 0; r < iptkit_ruleset_rule_count(rs); r++) {
      if (iptkit_ruleset_rule_spec(rs, r) == NULL) w->errors++;
    }
    iptkit_ruleset_free(rs);
  }
  return NULL;
}
static void test_two_threads(iptkit_firewall *fw) {
  CHECK_OK(iptkit_chain_create(fw, NULL, "THREADS", NULL));
  pthread_t threads[2];
  struct worker workers[2] = {{fw, 0, 0}, {fw, 1, 0}};
  for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, worker_main, &workers[i]);
  for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
  CHECK(workers[0].errors == 0 && workers[1].errors == 0);
  CHECK(rules_in(fw, "THREADS") == 2 * THREAD_RULES);
  CHECK_OK(iptkit_chain_delete(fw, NULL, "THREADS", 1, NULL));
}

static void cleanup_netns(void) {
  if (netns[0] != '\0') {
    char command[128];
    snprintf(command, sizeof command, "/usr/sbin/ip netns delete %s", netns);
    if (system(command) != 0) fprintf(stderr, "could not delete namespace %s\n", netns);
    netns[0] = '\0';
  }
}

int main(int argc, char **argv) {
  if (argc > 1) backend_name = argv[1];
  if (strcmp(backend_name, "fake") != 0 && strcmp(backend_name, "nft") != 0 && strcmp(backend_name, "legacy") != 0 &&
      strcmp(backend_name, "native") != 0 && strcmp(backend_name, "native-legacy") != 0) {
    fprintf(stderr, "usage: %s fake|nft|legacy|native|native-legacy\n", argv[0]);
    return 2;
  }
  if (kernel()) {
    if (geteuid() != 0) {
      printf("SKIP: the %s backend needs root\n", backend_name);
      return 77;
    }
    snprintf(netns, sizeof netns, "iptkit-capi-%d", (int)getpid());
    char command[256];
    snprintf(command, sizeof command, "/usr/sbin/ip netns add %s", netns);
    if (system(command) != 0) {
      netns[0] = '\0';
      printf("SKIP: cannot create a network namespace\n");
      return 77;
    }
    atexit(cleanup_netns);
    if (legacy()) {
      snprintf(command, sizeof command, "/usr/sbin/ip netns exec %s /usr/sbin/iptables-legacy -L >/dev/null 2>&1",
               netns);
      if (system(command) != 0) {
        printf("SKIP: iptables-legacy does not work here\n");
        return 77;
      }
    }
  }

  test_version_and_names();
  test_open_errors();
  test_setuid_refused();
  test_stale_handles();
  iptkit_firewall *fw = open_fw();
  test_rules(fw);
  test_bad_input(fw);
  test_transactions(fw);
  test_both_families(fw);
  test_apply(fw);
  if (kernel()) test_sets(fw);
  test_ipv6();
  test_two_threads(fw);
  CHECK_OK(iptkit_close(fw));

  if (failures > 0) {
    fprintf(stderr, "%d check(s) failed (backend %s)\n", failures, backend_name);
    return 1;
  }
  printf("capi test passed (backend %s)\n", backend_name);
  return 0;
}
