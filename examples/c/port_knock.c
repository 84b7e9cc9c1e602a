/* port_knock: guards a TCP port with port knocking, as one owner's declarative state (iptkit_apply_json).
 *
 *   port_knock [--netns NAME] install PORT KNOCK1 KNOCK2   # PORT opens for 30 s to a source that knocked on
 *                                                          # KNOCK1, then within 10 s on KNOCK2
 *   port_knock [--netns NAME] remove
 *
 * The state belongs to the owner "knock": chain KNOCK-IN (the recent-match state machine) and a hook rule first in
 * INPUT. Running install again with other ports changes only what differs; remove deletes both. The plan is
 * printed as JSON. Exit status 0, or 1 with iptkit's message. */
#include <iptkit/c/iptkit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int port(const char *text) {
  char *end = NULL;
  long value = strtol(text, &end, 10);
  return (end != text && *end == '\0' && value >= 1 && value <= 65535) ? (int)value : -1;
}

int main(int argc, char **argv) {
  const char *netns = NULL;
  int i = 1;
  if (i + 1 < argc && strcmp(argv[i], "--netns") == 0) {
    netns = argv[i + 1];
    i += 2;
  }
  char desired[2048];
  if (i + 4 == argc && strcmp(argv[i], "install") == 0) {
    int p = port(argv[i + 1]), k1 = port(argv[i + 2]), k2 = port(argv[i + 3]);
    if (p < 0 || k1 < 0 || k2 < 0 || p == k1 || p == k2 || k1 == k2) {
      fprintf(stderr, "port_knock: three different ports 1..65535 expected\n");
      return 2;
    }
    snprintf(desired, sizeof desired,
             "{\"owner\":\"knock\",\"family\":\"ipv4\",\"chains\":[{\"table\":\"filter\",\"name\":\"KNOCK-IN\","
             "\"rules\":["
             "{\"spec\":\"-p tcp --dport %d -m recent --rcheck --seconds 30 --name knock2 -j ACCEPT\"},"
             "{\"spec\":\"-p tcp --dport %d -j DROP\"},"
             "{\"spec\":\"-p tcp --dport %d -m recent --set --name knock1 -j DROP\"},"
             "{\"spec\":\"-p tcp --dport %d -m recent --rcheck --seconds 10 --name knock1 -m recent --set --name "
             "knock2 -j DROP\"},"
             "{\"spec\":\"-j RETURN\"}]}],"
             "\"hooks\":[{\"table\":\"filter\",\"chain\":\"INPUT\",\"position\":\"first\",\"spec\":\"-p tcp -j "
             "KNOCK-IN\"}]}",
             p, p, k1, k2);
  } else if (i + 1 == argc && strcmp(argv[i], "remove") == 0) {
    snprintf(desired, sizeof desired, "{\"owner\":\"knock\",\"family\":\"ipv4\",\"chains\":[]}");
  } else {
    fprintf(stderr, "usage: %s [--netns NAME] install PORT KNOCK1 KNOCK2 | remove\n", argv[0]);
    return 2;
  }

  iptkit_firewall *fw = NULL;
  iptkit_error *err = NULL;
  if (iptkit_open(&fw, netns, IPTKIT_BACKEND_AUTO, IPTKIT_FAMILY_IPV4, &err) != IPTKIT_OK) {
    fprintf(stderr, "port_knock: %s\n", iptkit_error_message(err));
    iptkit_error_free(err);
    return 1;
  }
  char *plan = NULL;
  int rc = iptkit_apply_json(fw, desired, 0, &plan, &err);
  if (rc == IPTKIT_OK) {
    printf("%s\n", plan);
  } else {
    fprintf(stderr, "port_knock: %s: %s\n", iptkit_status_name(rc), iptkit_error_message(err));
  }
  iptkit_string_free(plan);
  iptkit_error_free(err);
  iptkit_close(fw);
  return rc == IPTKIT_OK ? 0 : 1;
}
