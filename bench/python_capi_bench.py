#!/usr/bin/python3
"""The iptkit Python package (bindings/python, ctypes over libiptkit.so.1) next to python-iptables in one run.

    python3 bench/python_capi_bench.py --library build/release/src/capi/libiptkit.so [--rules 10000] [--reps 5]

Creates two private network namespaces (never touches the host's firewall) and loads --rules rules into filter
INPUT of each: one with iptables-legacy (python-iptables drives libiptc, legacy only), one with iptables-nft. Then,
per library and backend, times:
  read    all rules of table filter with counters (python-iptables: table.refresh() and, per rule,
          iptc.easy.decode_iptc_rule + get_counters, its structured form; iptkit: Firewall.rules("filter"): table,
          chain, position, canonical spec, counters, owner per rule),
  append  one rule at the end of INPUT (each call reads the kernel's current state, as a CLI call would),
  delete  that rule by spec.
python-iptables runs in a child process inside the legacy namespace (`ip netns exec`), iptkit in this process
(Firewall(netns=...)). On the nft namespace python-iptables is also tried, to show whether it works there.
Prints a table of medians (ms), the ratios python-iptables / iptkit, the load average before and after, and the
same as JSON on the last line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = "-s 192.168.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"


def sh(*argv, stdin=None, check=True):
    return subprocess.run(argv, input=stdin, check=check, capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def ruleset_text(n):
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i in range(n):
        lines.append("-A INPUT -s 10.%d.%d.%d/32 -p tcp -m tcp --dport %d -j ACCEPT"
                     % ((i >> 16) & 255, (i >> 8) & 255, i & 255, 1024 + i % 50000))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


# ---- python-iptables, in a child inside the namespace ----

def pyiptc_worker(args):
    result = {}
    try:
        import iptc
        import iptc.easy
    except Exception as e:  # not installed
        print(json.dumps({"error": "python-iptables unavailable: %s" % e}))
        return 0
    try:
        table = iptc.Table(iptc.Table.FILTER)
        table.autocommit = True

        def read():
            table.refresh()
            rules = []
            for chain in table.chains:
                for rule in chain.rules:
                    d = iptc.easy.decode_iptc_rule(rule)
                    d["counters"] = rule.get_counters()
                    rules.append(d)
            if len(rules) != args.rules:
                raise RuntimeError("read %d rules, expected %d" % (len(rules), args.rules))

        def probe():
            rule = iptc.Rule()
            rule.src = "192.168.0.1/255.255.255.255"
            rule.protocol = "tcp"
            rule.create_match("tcp").dport = "22"
            rule.target = rule.create_target("ACCEPT")
            return rule

        def append():
            table.refresh()
            iptc.Chain(table, "INPUT").append_rule(probe())

        def delete():
            table.refresh()
            iptc.Chain(table, "INPUT").delete_rule(probe())

        result["read"] = timed(read, args.reps)
        appends, deletes = [], []
        for _ in range(args.reps * 2):
            appends += timed(append, 1)
            deletes += timed(delete, 1)
        result["append"], result["delete"] = appends, deletes
    except Exception as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(result))
    return 0


def run_pyiptc(netns, args):
    r = sh("/usr/sbin/ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__), "--pyiptc-worker",
           "--rules", str(args.rules), "--reps", str(args.reps), check=False)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": "python-iptables child failed: %s" % (r.stderr.strip()[-300:] or r.returncode)}


# ---- iptkit, in this process ----

def run_iptkit(netns, backend, args):
    import iptkit
    result = {}
    try:
        with iptkit.Firewall(netns=netns, backend=backend) as fw:
            def read():
                rules = fw.rules("filter")
                if len(rules) != args.rules:
                    raise RuntimeError("read %d rules, expected %d" % (len(rules), args.rules))

            result["read"] = timed(read, args.reps)
            appends, deletes = [], []
            for _ in range(args.reps * 2):
                appends += timed(lambda: fw.append("INPUT", PROBE), 1)
                deletes += timed(lambda: fw.delete("INPUT", PROBE), 1)
            result["append"], result["delete"] = appends, deletes
    except Exception as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    return result


def median(values):
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", help="libiptkit.so to use (else IPTKIT_LIBRARY or the system's)")
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pyiptc-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pyiptc_worker:
        return pyiptc_worker(args)
    if os.geteuid() != 0:
        print("needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if args.library:
        os.environ["IPTKIT_LIBRARY"] = os.path.abspath(args.library)
    sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))

    load_before = os.getloadavg()
    names = {"legacy": "iptkit-pybench-legacy-%d" % os.getpid(), "nft": "iptkit-pybench-nft-%d" % os.getpid()}
    rows = []
    try:
        for variant, netns in names.items():
            sh("/usr/sbin/ip", "netns", "add", netns)
            sh("/usr/sbin/ip", "netns", "exec", netns, "/usr/sbin/iptables-%s-restore" % variant,
               stdin=ruleset_text(args.rules))
        runs = [
            ("python-iptables", "legacy", run_pyiptc(names["legacy"], args)),
            ("iptkit (native-legacy)", "legacy", run_iptkit(names["legacy"], "native-legacy", args)),
            ("iptkit (legacy)", "legacy", run_iptkit(names["legacy"], "legacy", args)),
            ("python-iptables", "nft", run_pyiptc(names["nft"], args)),
            ("iptkit (native)", "nft", run_iptkit(names["nft"], "native", args)),
            ("iptkit (nft)", "nft", run_iptkit(names["nft"], "nft", args)),
        ]
    finally:
        for netns in names.values():
            sh("/usr/sbin/ip", "netns", "delete", netns, check=False)
    load_after = os.getloadavg()

    report = {"rules": args.rules, "reps": args.reps, "load_before": load_before, "load_after": load_after,
              "runs": []}
    print("%d rules in filter INPUT; medians in ms (read: %d reps; append/delete: %d each)"
          % (args.rules, args.reps, 2 * args.reps))
    print("%-22s %-7s %10s %10s %10s" % ("library", "variant", "read", "append", "delete"))
    for name, variant, r in runs:
        entry = {"library": name, "variant": variant}
        if "error" in r:
            entry["error"] = r["error"]
            print("%-22s %-7s %s" % (name, variant, "does not work: " + r["error"][:90]))
        else:
            for op in ("read", "append", "delete"):
                entry[op + "_ms"] = round(median(r[op]), 2)
            print("%-22s %-7s %10.1f %10.2f %10.2f" % (name, variant, entry["read_ms"], entry["append_ms"],
                                                       entry["delete_ms"]))
        report["runs"].append(entry)
    base = next((e for e in report["runs"] if e["library"] == "python-iptables" and "error" not in e), None)
    if base:
        print("python-iptables (legacy) / iptkit, >1 = iptkit faster:")
        for e in report["runs"]:
            if e["library"] == "python-iptables" or "error" in e:
                continue
            ratios = {op: round(base[op + "_ms"] / e[op + "_ms"], 2) for op in ("read", "append", "delete")}
            e["ratio_vs_python_iptables"] = ratios
            print("  %-22s read %6.1fx  append %5.2fx  delete %5.2fx"
                  % (e["library"], ratios["read"], ratios["append"], ratios["delete"]))
    print("load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (load_before + load_after))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
