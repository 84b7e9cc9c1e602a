/* ban_ip: a setuid-root helper that bans one IP address for an hour.
 *
 *   ban_ip ADDRESS        (an IPv4 or IPv6 literal)
 *
 * Install it setuid root and executable only by the group allowed to ban (the file's mode is the access control):
 *   install -o root -g banners -m 4750 ban_ip /usr/local/sbin/ban_ip
 * It acts in the network namespace it runs in.
 *
 * How: the address goes into the ipset `iptkit-ban` (hash:ip, or `iptkit-ban6` hash:ip family inet6) with a
 * timeout of 3600 s, and one rule `-m set --match-set iptkit-ban src -j DROP` first in INPUT makes the set drop
 * packets. The kernel removes the entry when its timeout expires: nothing has to run an hour later, and banning
 * the same address again restarts its hour. The set and the rule are created on first use.
 *
 * Setuid: iptkit_open refuses a process whose real and effective ids differ (iptables' libxtables would _exit(111)
 * there), so after checking its argument the helper makes all its ids root with setresgid/setresuid. It keeps the
 * caller's environment on purpose: iptkit reads no environment variable and never lets libxtables or a child see
 * XTABLES_LIBDIR and friends (docs/c-api.md); tests run it with XTABLES_LIBDIR pointing at a canary library. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <iptkit/c/iptkit.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define BAN_SECONDS 3600

static int fail(const char *what) {
  fprintf(stderr, "ban_ip: %s: %s (%s)\n", what, iptkit_last_error_message(),
          iptkit_status_name(iptkit_last_error_code()));
  return 1;
}

int main(int argc, char **argv) {
  unsigned char buf[16];
  int family;
  if (argc != 2) {
    fprintf(stderr, "usage: ban_ip ADDRESS\n");
    return 2;
  }
  /* Only a numeric address: no host names, no ranges, no options. */
  if (inet_pton(AF_INET, argv[1], buf) == 1) {
    family = IPTKIT_FAMILY_IPV4;
  } else if (inet_pton(AF_INET6, argv[1], buf) == 1) {
    family = IPTKIT_FAMILY_IPV6;
  } else {
    fprintf(stderr, "ban_ip: '%s' is not an IPv4 or IPv6 address\n", argv[1]);
    return 2;
  }
  const char *set = family == IPTKIT_FAMILY_IPV4 ? "iptkit-ban" : "iptkit-ban6";

  /* Become root for real: group first (setresuid would give up the right to change it). */
  if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) {
    perror("ban_ip: setresuid/setresgid (is it installed setuid root?)");
    return 1;
  }

  iptkit_firewall *fw = NULL;
  if (iptkit_open(&fw, NULL, IPTKIT_BACKEND_AUTO, family, NULL) != IPTKIT_OK) return fail("open");

  int rc = 0;
  char rule[128];
  snprintf(rule, sizeof rule, "-m set --match-set %s src -j DROP", set);
  int found = 0;
  if (iptkit_set_create(fw, set, "hash:ip", 0, NULL) != IPTKIT_OK && iptkit_last_error_code() != IPTKIT_EEXIST) {
    rc = fail("create set");
  } else if (iptkit_set_add(fw, set, argv[1], BAN_SECONDS, "ban_ip", NULL) != IPTKIT_OK) {
    rc = fail("add to set");
  } else if (iptkit_rule_check(fw, "filter", "INPUT", rule, &found, NULL) != IPTKIT_OK) {
    rc = fail("check rule");
  } else if (!found && iptkit_rule_insert(fw, "filter", "INPUT", 1, rule, NULL) != IPTKIT_OK) {
    rc = fail("insert rule");
  } else {
    printf("banned %s for %d s\n", argv[1], BAN_SECONDS);
  }
  iptkit_close(fw);
  return rc;
}
