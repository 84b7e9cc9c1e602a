#!/usr/bin/python3
"""The iptkit Python package (bindings/python, ctypes over libiptkit.so.1) next to python-iptables in one run.

    python3 bench/python_capi_bench.py --library build/release/src/capi/libiptkit.so [--rules 10000] [--reps 5]
        [--variants legacy,nft] [--library-b OTHER/libiptkit.so]

Creates a private network namespace per variant (never touches the host's firewall) and loads --rules rules into
filter INPUT of each: one with iptables-legacy (python-iptables drives libiptc, legacy only), one with iptables-nft.
Every contender runs in its own child process, started once and kept (python-iptables inside the namespace through
`ip netns exec`, iptkit with Firewall(netns=...)); each child times its own calls. Per variant, times:
  read    all rules of table filter with counters (python-iptables: table.refresh() and, per rule,
          iptc.easy.decode_iptc_rule + get_counters, its structured form; iptkit: Firewall.rules("filter"): table,
          chain, position, canonical spec, counters, owner per rule),
  append  one rule at the end of INPUT (each call reads the kernel's current state, as a CLI call would),
  delete  that rule by spec.
The contenders take turns call by call (a round: each one appends, then deletes, in an order that rotates from round
to round; reads likewise), so a drift of the machine's speed hits all of them alike, and every call follows another
contender's write; each call's CPU time (user + system of the contender's process, every thread) is kept beside its
wall time, and on a loaded machine it is the steadier of the two. The first round is a checked warm-up. --library-b
adds a second iptkit library on the legacy variant (e.g. an older build) as one more contender; --inside adds each
library's native contender once more, started inside the namespace through `ip netns exec` like python-iptables and
given no namespace (so both ways of reaching the namespace are measured the same way). On the nft namespace
python-iptables is also tried, to show whether it works there. Prints a table of medians (ms, wall and CPU), the
ratios python-iptables / iptkit, the load average before and after, and the same as JSON on the last line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def timed(fn):
    """Wall and CPU milliseconds of one call (CPU: user + system time of the whole process, every thread)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t) * 1000.0, (time.process_time() - c) * 1000.0


# ---- the children: one contender each; stdin: one op per line; stdout: one JSON line per op ----

def serve(ops):
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        op = line.strip()
        if op == "quit":
            break
        try:
            wall, cpu = timed(ops[op])
            print(json.dumps({"ms": wall, "cpu_ms": cpu}), flush=True)
        except Exception as e:
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)


def pyiptc_worker(args):
    try:
        import iptc
        import iptc.easy
    except Exception as e:  # not installed
        print(json.dumps({"error": "python-iptables unavailable: %s" % e}), flush=True)
        return 0
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

    serve({"read": read, "append": append, "delete": delete})
    return 0


def iptkit_worker(args):
    sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
    try:
        import iptkit
        fw = iptkit.Firewall(netns=args.netns or None, backend=args.backend)
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
        return 0

    def read():
        rules = fw.rules("filter")
        if len(rules) != args.rules:
            raise RuntimeError("read %d rules, expected %d" % (len(rules), args.rules))

    serve({"read": read, "append": lambda: fw.append("INPUT", PROBE), "delete": lambda: fw.delete("INPUT", PROBE)})
    fw.close()
    return 0


class Contender:
    def __init__(self, name, variant, argv, env):
        self.name, self.variant = name, variant
        self.times = {"read": [], "append": [], "delete": []}
        self.cpu = {"read": [], "append": [], "delete": []}
        self.error = None
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        self._answer()

    def _answer(self):
        line = self.proc.stdout.readline()
        try:
            answer = json.loads(line)
        except ValueError:
            self.stderr.seek(0)
            answer = {"error": "child failed: %s" % (self.stderr.read().strip()[-300:] or line)}
        if "error" in answer and self.error is None:
            self.error = answer["error"]
        return answer

    def run(self, op, keep):
        if self.error:
            return
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if keep and "ms" in answer:
            self.times[op].append(answer["ms"])
            self.cpu[op].append(answer["cpu_ms"])

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def contenders_for(variant, netns, args):
    me = [sys.executable, os.path.abspath(__file__), "--rules", str(args.rules)]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    out = [Contender("python-iptables", variant,
                     ["/usr/sbin/ip", "netns", "exec", netns] + me + ["--worker", "pyiptc"], env)]
    libs = [("", os.environ.get("IPTKIT_LIBRARY", ""))]
    if args.library_b and variant == "legacy":
        libs.append((" [B]", os.path.abspath(args.library_b)))
    backends = {"legacy": ["native-legacy", "legacy"], "nft": ["native", "nft"]}[variant]
    if args.native_only:
        backends = backends[:1]
    for suffix, lib in libs:
        for backend in backends if not suffix else backends[:1]:
            child_env = dict(env, IPTKIT_LIBRARY=lib) if lib else env
            out.append(Contender("iptkit (%s)%s" % (backend, suffix), variant,
                                 me + ["--worker", "iptkit", "--netns", netns, "--backend", backend], child_env))
            if args.inside and backend == backends[0]:
                # Started inside the namespace like python-iptables, the library told no namespace.
                out.append(Contender("iptkit (%s, inside)%s" % (backend, suffix), variant,
                                     ["/usr/sbin/ip", "netns", "exec", netns] + me +
                                     ["--worker", "iptkit", "--netns", "", "--backend", backend], child_env))
    return out


def run_variant(variant, netns, args):
    cs = contenders_for(variant, netns, args)
    try:
        for rnd in range(args.reps + 1):  # round 0: the checked warm-up
            order = cs[rnd % len(cs):] + cs[:rnd % len(cs)]
            for c in order:
                c.run("read", rnd > 0)
            for _ in range(2):
                for c in order:
                    c.run("append", rnd > 0)
                    c.run("delete", rnd > 0)
    finally:
        for c in cs:
            c.close()
    return cs


def median(values):
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", help="libiptkit.so to use (else IPTKIT_LIBRARY or the system's)")
    parser.add_argument("--library-b", help="a second libiptkit.so, run as one more contender on legacy")
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variants", default="legacy,nft")
    parser.add_argument("--native-only", action="store_true", help="leave out the restore backends")
    parser.add_argument("--inside", action="store_true",
                        help="also run each library's native contender inside the namespace (as python-iptables "
                             "is), told no namespace, beside the one given the namespace")
    parser.add_argument("--worker", choices=["pyiptc", "iptkit"], help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "pyiptc":
        return pyiptc_worker(args)
    if args.worker == "iptkit":
        return iptkit_worker(args)
    if os.geteuid() != 0:
        print("needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if args.library:
        os.environ["IPTKIT_LIBRARY"] = os.path.abspath(args.library)

    load_before = os.getloadavg()
    variants = [v for v in args.variants.split(",") if v]
    names = {v: "iptkit-pybench-%s-%d" % (v, os.getpid()) for v in variants}
    results = []
    try:
        for variant, netns in names.items():
            sh("/usr/sbin/ip", "netns", "add", netns)
            sh("/usr/sbin/ip", "netns", "exec", netns, "/usr/sbin/iptables-%s-restore" % variant,
               stdin=ruleset_text(args.rules))
            results += run_variant(variant, netns, args)
    finally:
        for netns in names.values():
            sh("/usr/sbin/ip", "netns", "delete", netns, check=False)
    load_after = os.getloadavg()

    report = {"rules": args.rules, "reps": args.reps, "load_before": load_before, "load_after": load_after,
              "runs": []}
    print("%d rules in filter INPUT; medians in ms (read: %d reps; append/delete: %d each; contenders alternating)"
          % (args.rules, args.reps, 2 * args.reps))
    print("%-34s %-7s %10s %10s %10s   %s" % ("library", "variant", "read", "append", "delete",
                                             "cpu (user+system ms of the contender's process: read append delete)"))
    for c in results:
        entry = {"library": c.name, "variant": c.variant}
        if c.error or not all(c.times.values()):
            entry["error"] = c.error or "no timings"
            print("%-34s %-7s %s" % (c.name, c.variant, "does not work: " + entry["error"][:90]))
        else:
            for op in ("read", "append", "delete"):
                entry[op + "_ms"] = round(median(c.times[op]), 2)
                entry[op + "_cpu_ms"] = round(median(c.cpu[op]), 2)
            print("%-34s %-7s %10.1f %10.2f %10.2f   cpu %8.1f %8.2f %8.2f"
                  % (c.name, c.variant, entry["read_ms"], entry["append_ms"], entry["delete_ms"],
                     entry["read_cpu_ms"], entry["append_cpu_ms"], entry["delete_cpu_ms"]))
        report["runs"].append(entry)
    base = next((e for e in report["runs"] if e["library"] == "python-iptables" and "error" not in e), None)
    if base:
        print("python-iptables (legacy) / iptkit, >1 = iptkit faster:")
        for e in report["runs"]:
            if e["library"] == "python-iptables" or "error" in e:
                continue
            ratios = {op: round(base[op + "_ms"] / e[op + "_ms"], 2) for op in ("read", "append", "delete")}
            cpu = {op: round(base[op + "_cpu_ms"] / max(e[op + "_cpu_ms"], 1e-3), 2)
                   for op in ("read", "append", "delete")}
            e["ratio_vs_python_iptables"] = ratios
            e["cpu_ratio_vs_python_iptables"] = cpu
            print("  %-34s read %6.1fx  append %5.2fx  delete %5.2fx   cpu: read %6.1fx  append %5.2fx  delete %5.2fx"
                  % (e["library"], ratios["read"], ratios["append"], ratios["delete"], cpu["read"], cpu["append"],
                     cpu["delete"]))
    print("load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (load_before + load_after))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
