/* list_rules: prints every rule of a namespace's tables with counters, through the C ABI (iptkit.h).
 *
 *   list_rules [--netns NAME] [-6] [--backend auto|nft|legacy|native] [TABLE]
 *
 * Output: one "TABLE CHAIN POSITION [PACKETS:BYTES] SPEC" line per rule, after a "TABLE CHAIN POLICY" line per
 * chain. Exit status 0, or 1 with iptkit's message on stderr. */
#include <inttypes.h>
#include <iptkit/c/iptkit.h>
#include <stdio.h>
#include <string.h>

static int backend_of(const char *name) {
  if (strcmp(name, "nft") == 0) return IPTKIT_BACKEND_NFT;
  if (strcmp(name, "legacy") == 0) return IPTKIT_BACKEND_LEGACY;
  if (strcmp(name, "native") == 0) return IPTKIT_BACKEND_NATIVE;
  if (strcmp(name, "auto") == 0) return IPTKIT_BACKEND_AUTO;
  return -1; /* iptkit_open names the bad value */
}

int main(int argc, char **argv) {
  const char *netns = NULL, *table = NULL;
  int family = IPTKIT_FAMILY_IPV4, backend = IPTKIT_BACKEND_AUTO;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--netns") == 0 && i + 1 < argc) {
      netns = argv[++i];
    } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
      backend = backend_of(argv[++i]);
    } else if (strcmp(argv[i], "-6") == 0) {
      family = IPTKIT_FAMILY_IPV6;
    } else if (argv[i][0] != '-' && table == NULL) {
      table = argv[i];
    } else {
      fprintf(stderr, "usage: %s [--netns NAME] [-6] [--backend auto|nft|legacy|native] [TABLE]\n", argv[0]);
      return 2;
    }
  }

  iptkit_firewall *fw = NULL;
  if (iptkit_open(&fw, netns, backend, family, NULL) != IPTKIT_OK) {
    fprintf(stderr, "list_rules: %s\n", iptkit_last_error_message());
    return 1;
  }
  iptkit_ruleset *rs = NULL;
  if (iptkit_ruleset_list(fw, table, &rs, NULL) != IPTKIT_OK) {
    fprintf(stderr, "list_rules: %s\n", iptkit_last_error_message());
    iptkit_close(fw);
    return 1;
  }
  size_t rule = 0, rules = iptkit_ruleset_rule_count(rs);
  for (size_t c = 0; c < iptkit_ruleset_chain_count(rs); c++) {
    const char *chain_table = iptkit_ruleset_chain_table(rs, c), *chain = iptkit_ruleset_chain_name(rs, c);
    const char *policy = iptkit_ruleset_chain_policy(rs, c);
    printf("%s %s %s\n", chain_table, chain, policy != NULL ? policy : "-");
    /* Rules are numbered in the same save order as chains. */
    for (; rule < rules && strcmp(iptkit_ruleset_rule_table(rs, rule), chain_table) == 0 &&
           strcmp(iptkit_ruleset_rule_chain(rs, rule), chain) == 0;
         rule++) {
      uint64_t packets = 0, bytes = 0;
      iptkit_ruleset_rule_counters(rs, rule, &packets, &bytes);
      printf("%s %s %zu [%" PRIu64 ":%" PRIu64 "] %s\n", chain_table, chain, iptkit_ruleset_rule_position(rs, rule),
             packets, bytes, iptkit_ruleset_rule_spec(rs, rule));
    }
  }
  iptkit_ruleset_free(rs);
  iptkit_close(fw);
  return 0;
}
