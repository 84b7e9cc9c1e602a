#!/usr/bin/python3
"""Whole processes on legacy: `iptkit append/delete` (backend native-legacy, in-process libiptc) vs
`iptables-legacy -A/-D`.

    python3 bench/legacy_cli_bench.py --iptkit build/release/tools/iptkit/iptkit [--sizes 100,1000,10000] [--reps 9]
        [--iptkit-b OTHER/iptkit]

For each size it creates a private network namespace (iptkit-legacybench-<pid>-<size>; never the host's), loads that
many rules into filter INPUT with iptables-legacy-restore, then runs rounds: append the probe rule, delete it by spec,
once per tool in turn (so every command follows the other tool's write). Both tools start through the same
`nsenter --net=...` wrapper, so both pay the same process start-up. The first round is a checked warm-up (exit codes
and the rule count). --iptkit-b adds a second iptkit binary (e.g. an older build) as a third tool in the same rounds.
Prints a Markdown table of medians in ms, the load average before and after, and JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROBE = ["-s", "192.168.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def sh(argv, stdin=None, check=True):
    return subprocess.run(argv, input=stdin, check=check, capture_output=True, text=True, env=ENV)


def ruleset_text(n):
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i in range(n):
        lines.append("-A INPUT -s 10.%d.%d.%d/32 -p tcp -m tcp --dport %d -j ACCEPT"
                     % ((i >> 16) & 255, (i >> 8) & 255, i & 255, 1024 + i % 50000))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def rule_count(netns):
    out = sh(["/usr/bin/nsenter", "--net=/run/netns/" + netns, "/usr/sbin/iptables-legacy-save", "-t", "filter"])
    return sum(1 for line in out.stdout.splitlines() if line.startswith("-A INPUT "))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iptkit", required=True)
    parser.add_argument("--iptkit-b", help="a second iptkit binary, timed in the same rounds")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    iptkit = os.path.abspath(args.iptkit)
    tools = {
        "iptkit (native-legacy)": lambda op: [iptkit, "--backend", "native-legacy",
                                              {"-A": "append", "-D": "delete"}[op], "INPUT"] + PROBE,
        "iptables-legacy": lambda op: ["/usr/sbin/iptables-legacy", "-w", op, "INPUT"] + PROBE,
    }
    if args.iptkit_b:
        other = os.path.abspath(args.iptkit_b)
        tools["iptkit-b (native-legacy)"] = lambda op: [other, "--backend", "native-legacy",
                                                        {"-A": "append", "-D": "delete"}[op], "INPUT"] + PROBE
    load_before = os.getloadavg()
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        netns = "iptkit-legacybench-%d-%d" % (os.getpid(), size)
        sh(["/usr/sbin/ip", "netns", "add", netns])
        try:
            sh(["/usr/bin/nsenter", "--net=/run/netns/" + netns, "/usr/sbin/iptables-legacy-restore"],
               stdin=ruleset_text(size))
            times = {(t, op): [] for t in tools for op in ("-A", "-D")}
            for rnd in range(args.reps + 1):
                for name, argv in tools.items():
                    for op in ("-A", "-D"):
                        cmd = ["/usr/bin/nsenter", "--net=/run/netns/" + netns] + argv(op)
                        t = time.perf_counter()
                        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
                        ms = (time.perf_counter() - t) * 1000.0
                        if r.returncode != 0:
                            raise SystemExit("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))
                        if rnd == 0:
                            want = size + (1 if op == "-A" else 0)
                            got = rule_count(netns)
                            if got != want:
                                raise SystemExit("%s %s: %d rules, expected %d" % (name, op, got, want))
                        else:
                            times[(name, op)].append(ms)
            results[size] = {"%s %s" % k: round(statistics.median(v), 2) for k, v in times.items()}
        finally:
            sh(["/usr/sbin/ip", "netns", "delete", netns], check=False)
    load_after = os.getloadavg()
    extra = " iptkit-b ms | iptkit-b ÷ iptables-legacy |" if args.iptkit_b else ""
    print("| rules in INPUT | op | iptkit (native-legacy) ms | iptables-legacy ms | iptkit ÷ iptables-legacy |" + extra)
    print("|--:|---|--:|--:|--:|" + ("--:|--:|" if args.iptkit_b else ""))
    for size, r in results.items():
        for op, word in (("-A", "append"), ("-D", "delete by spec")):
            a = r["iptkit (native-legacy) " + op]
            b = r["iptables-legacy " + op]
            row = "| %d | %s | %.1f | %.1f | %.2f |" % (size, word, a, b, a / b)
            if args.iptkit_b:
                c = r["iptkit-b (native-legacy) " + op]
                row += " %.1f | %.2f |" % (c, c / b)
            print(row)
    print("load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (load_before + load_after))
    print(json.dumps({"reps": args.reps, "load_before": load_before, "load_after": load_after,
                      "medians_ms": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
