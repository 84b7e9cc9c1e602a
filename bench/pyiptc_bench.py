#!/usr/bin/python3
"""python-iptables driver for iptkit_bench: append / delete-by-spec / structured list, timed in-process.

Runs inside a network namespace the benchmark created (`ip netns exec NS /usr/bin/python3 pyiptc_bench.py ...`)
and must never be run in the host's namespace: it refuses unless /proc/self/ns/net is the namespace whose inode
the benchmark passes (--netns-inode, the st_ino of /run/netns/NS).
python-iptables (Debian python3-iptables) drives libiptc, i.e. the legacy x_tables backend only.

Each operation starts from the kernel's current state, as a CLI call would: refresh the table handle
(iptc_init reads the whole table), change it, commit (iptc_commit replaces the whole table). The listing
decodes every rule of every filter chain into dicts (iptc.easy.decode_iptc_rule), the library's structured form.
Prints one JSON object: {"append_ms": [...], "delete_ms": [...], "list_ms": [...]} or {"error": "..."}.
"""

import argparse
import json
import os
import sys
import time


def in_netns(inode):
    try:
        return os.stat("/proc/self/ns/net").st_ino == inode
    except OSError:
        return False


def probe_rule(iptc):
    # The benchmark's probe rule: -s 192.168.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
    rule = iptc.Rule()
    rule.src = "192.168.0.1/255.255.255.255"
    rule.protocol = "tcp"
    match = rule.create_match("tcp")
    match.dport = "22"
    rule.target = rule.create_target("ACCEPT")
    return rule


def is_probe(decoded):
    return (decoded.get("src") == "192.168.0.1/32" and decoded.get("protocol") == "tcp"
            and decoded.get("tcp", {}).get("dport") == "22" and decoded.get("target") == "ACCEPT")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--min-reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per op kind")
    parser.add_argument("--chain", default="INPUT")
    parser.add_argument("--expect-rules", type=int, required=True)
    parser.add_argument("--netns-inode", type=int, required=True)
    args = parser.parse_args()

    if not in_netns(args.netns_inode):
        print(json.dumps({"error": "not inside the benchmark's network namespace (inode %d); refusing"
                          % args.netns_inode}))
        return 2
    try:
        import iptc
        import iptc.easy
    except ImportError as e:
        print(json.dumps({"error": "python-iptables not importable: %s" % e}))
        return 1

    table = iptc.Table(iptc.Table.FILTER, autocommit=False)

    def append():
        table.refresh()
        iptc.Chain(table, args.chain).append_rule(probe_rule(iptc))
        table.commit()

    def delete():
        table.refresh()
        iptc.Chain(table, args.chain).delete_rule(probe_rule(iptc))
        table.commit()

    def listing():
        table.refresh()
        return {chain.name: [iptc.easy.decode_iptc_rule(r) for r in chain.rules] for chain in table.chains}

    try:
        # Warm-up with checks, so a silently wrong op cannot be timed: the probe lands last, then is gone.
        append()
        listed = listing()[args.chain]
        if len(listed) != args.expect_rules + 1 or not is_probe(listed[-1]):
            raise RuntimeError("after append: %d rules, last %r" % (len(listed), listed[-1] if listed else None))
        delete()
        listed = listing()[args.chain]
        if len(listed) != args.expect_rules or any(is_probe(r) for r in listed):
            raise RuntimeError("after delete: %d rules, expected %d" % (len(listed), args.expect_rules))

        result = {"append_ms": [], "delete_ms": [], "list_ms": []}
        spent = {"append": 0.0, "delete": 0.0, "list": 0.0}

        def wants_more(kind):
            n = len(result[kind + "_ms"])
            return n < args.reps and (n < args.min_reps or spent[kind] < args.budget)

        while wants_more("append") or wants_more("list"):
            if wants_more("append"):
                t0 = time.perf_counter()
                append()
                t1 = time.perf_counter()
                delete()
                t2 = time.perf_counter()
                result["append_ms"].append((t1 - t0) * 1e3)
                result["delete_ms"].append((t2 - t1) * 1e3)
                spent["append"] += t1 - t0
                spent["delete"] += t2 - t1
            if wants_more("list"):
                t0 = time.perf_counter()
                rules = listing()[args.chain]
                t1 = time.perf_counter()
                if len(rules) != args.expect_rules:
                    raise RuntimeError("listing shows %d rules, expected %d" % (len(rules), args.expect_rules))
                result["list_ms"].append((t1 - t0) * 1e3)
                spent["list"] += t1 - t0
    except Exception as e:  # report any library error as the measurement's error
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
