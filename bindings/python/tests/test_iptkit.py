"""The iptkit Python package against the real kernel, in a private network namespace per test, on every backend
(root; skipped otherwise). Run by ctest (iptkit_python_test) with IPTKIT_LIBRARY pointing at the built library."""

import os
import subprocess
import threading

import pytest

import iptkit

BACKENDS = ["nft", "legacy", "native", "native-legacy"]


def run(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin"})


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"iptkit-py-{os.getpid()}-{threading.get_ident() % 100000}"
    run("/usr/sbin/ip", "netns", "add", name)
    try:
        yield name
    finally:
        run("/usr/sbin/ip", "netns", "delete", name, check=False)


@pytest.fixture(params=BACKENDS)
def fw(request, netns):
    backend = request.param
    if backend in ("legacy", "native-legacy") and run("/usr/sbin/ip", "netns", "exec", netns, "/usr/sbin/iptables-legacy", "-L",
                                   check=False).returncode != 0:
        pytest.skip("iptables-legacy does not work here")
    with iptkit.Firewall(netns=netns, backend=backend) as f:
        f.variant = "legacy" if backend in ("legacy", "native-legacy") else "nft"
        f.netns = netns
        yield f


def kernel_save(fw):
    return run("/usr/sbin/ip", "netns", "exec", fw.netns, f"/usr/sbin/iptables-{fw.variant}-save", "-t", "filter").stdout


def test_append_list_delete(fw):
    fw.append("INPUT", "-s 192.0.2.1 -p tcp --dport 22 -j ACCEPT")
    fw.insert("INPUT", 1, "-i lo -j ACCEPT")
    rules = [r for r in fw.rules("filter") if r.chain == "INPUT"]
    assert [r.spec for r in rules] == ["-i lo -j ACCEPT", "-s 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"]
    assert [r.position for r in rules] == [1, 2]
    assert all(r.packets == 0 and r.bytes == 0 and r.table == "filter" for r in rules)
    assert "-A INPUT -s 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT\n" in kernel_save(fw)
    assert fw.check("INPUT", "-p tcp -s 192.0.2.1 --dport 22 -j ACCEPT")
    fw.delete("INPUT", "-p tcp -s 192.0.2.1 --dport 22 -j ACCEPT")
    assert not fw.check("INPUT", "-p tcp -s 192.0.2.1 --dport 22 -j ACCEPT")
    assert "192.0.2.1" not in kernel_save(fw)
    chains = {c.name: c for c in fw.chains("filter")}
    assert chains["INPUT"].policy == "ACCEPT" and len(chains["INPUT"].rules) == 1
    assert fw.list_json("filter")["tables"][0]["name"] == "filter"
    assert "-A INPUT -i lo -j ACCEPT" in fw.save("filter", counters=True)


def test_errors_carry_code_message_details(fw):
    with pytest.raises(iptkit.InvalidArgument) as e:
        fw.append("INPUT", "-p tcp --dport 22 --bogus -j ACCEPT")
    assert e.value.code == 1 and e.value.code_name == "INVALID_ARGUMENT"
    assert "--bogus" in e.value.message and e.value.details["token"] == "--bogus"
    with pytest.raises(iptkit.NotFound) as e:
        fw.delete("INPUT", "-j DROP")
    assert e.value.code == 2
    with pytest.raises(iptkit.NotFound):
        fw.append("NOSUCH", "-j ACCEPT")
    fw.create_chain("PY")
    with pytest.raises(iptkit.AlreadyExists):
        fw.create_chain("PY")
    fw.append("INPUT", "-j PY")
    with pytest.raises(iptkit.FailedPrecondition):
        fw.delete_chain("PY")
    fw.delete_chain("PY", cascade=True)
    with pytest.raises(iptkit.InvalidArgument):
        fw.apply("{not json")
    with pytest.raises(iptkit.InvalidArgument):
        iptkit.Firewall(backend="bogus")
    assert "PY" not in kernel_save(fw)


def test_transaction_all_or_nothing(fw):
    with fw.transaction() as txn:
        txn.create_chain("WEB").append("WEB", "-p tcp --dport 443 -j ACCEPT").append("INPUT", "-j WEB")
        txn.add_json({"ops": [{"append": {"chain": "WEB", "rule": {"spec": "-j RETURN"}}}]})
        assert len(txn) == 4
        text = txn.dry_run()
        assert "-N WEB" in text and "-A INPUT -j WEB" in text
        assert "WEB" not in kernel_save(fw)
    save = kernel_save(fw)
    assert "-A WEB -p tcp -m tcp --dport 443 -j ACCEPT\n" in save and "-A INPUT -j WEB\n" in save

    txn = fw.transaction()
    txn.flush("WEB").delete("INPUT", "-j NOSUCHCHAIN")
    with pytest.raises(iptkit.NotFound) as e:
        txn.commit()
    assert e.value.details.get("op_index") == "1"
    txn.close()
    assert "-A WEB -p tcp -m tcp --dport 443 -j ACCEPT\n" in kernel_save(fw)

    with pytest.raises(iptkit.InvalidArgument):
        with fw.transaction() as txn:
            txn.append("WEB", "-p tcp --dport 22 --bogus -j ACCEPT")
    with pytest.raises(RuntimeError):
        with fw.transaction() as txn:  # an exception in the block: nothing is committed
            txn.flush("WEB")
            raise RuntimeError("stop")
    assert "-A WEB -p tcp -m tcp --dport 443 -j ACCEPT\n" in kernel_save(fw)


def test_apply_and_owner(fw):
    desired = {"owner": "pyapp", "family": "ipv4",
               "chains": [{"table": "filter", "name": "PYAPP-IN", "rules": [{"spec": "-p tcp --dport 80 -j ACCEPT"}]}],
               "hooks": [{"table": "filter", "chain": "INPUT", "position": "first", "spec": "-j PYAPP-IN"}]}
    plan = fw.apply(desired, dry_run=True)
    assert plan["steps"] and "PYAPP-IN" not in kernel_save(fw)
    fw.apply(desired)
    owned = [r for r in fw.rules("filter") if r.owner == "pyapp"]
    assert len(owned) == 2
    assert fw.apply(desired)["steps"] == []
    fw.apply({"owner": "pyapp", "family": "ipv4", "chains": []})
    assert "PYAPP" not in kernel_save(fw)


def test_closed_firewall_and_threads(fw):
    fw.create_chain("T")
    errors = []

    def work(base):
        try:
            for i in range(10):
                fw.append("T", f"-p tcp --dport {base + i} -j ACCEPT")
                fw.rules("filter")
        except iptkit.Error as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(base,)) for base in (1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len([r for r in fw.rules("filter") if r.chain == "T"]) == 20
    fw.close()
    with pytest.raises(iptkit.InvalidArgument):
        fw.rules()


def test_one_transaction_changes_both_families(fw):
    save6 = lambda: run("/usr/sbin/ip", "netns", "exec", fw.netns, f"/usr/sbin/ip6tables-{fw.variant}-save", "-t",
                        "filter").stdout
    with fw.transaction() as txn:
        txn.append("INPUT", "-s 192.0.2.1 -j ACCEPT")
        txn.set_family(6).append("INPUT", "-s 2001:db8::1 -j ACCEPT")
        with pytest.raises(iptkit.InvalidArgument):
            txn.append("INPUT", "-s 192.0.2.9 -j ACCEPT")  # an IPv4 address in an IPv6 op
        with pytest.raises(iptkit.InvalidArgument):
            txn.set_family(5)
    assert "-A INPUT -s 192.0.2.1/32 -j ACCEPT\n" in kernel_save(fw)
    assert "-A INPUT -s 2001:db8::1/128 -j ACCEPT\n" in save6()

    # The IPv6 half fails: the IPv4 half is not left behind.
    txn = fw.transaction()
    txn.flush("INPUT").set_family("ipv6").flush("INPUT").append("NOSUCH6", "-j ACCEPT")
    with pytest.raises(iptkit.Error):
        txn.commit()
    txn.close()
    assert "-A INPUT -s 192.0.2.1/32 -j ACCEPT\n" in kernel_save(fw)
    assert "-A INPUT -s 2001:db8::1/128 -j ACCEPT\n" in save6()


def test_sets(fw):
    fw.create_set("py-ban", "hash:net", "family inet6 maxelem 1000 timeout 60 comment")
    fw.add_to_set("py-ban", "2001:db8::/64", timeout=30, comment="lab")
    fw.add_to_set("py-ban", "2001:db8:1::/64")
    assert fw.set_contains("py-ban", "2001:db8::1")
    (info,) = fw.sets("py-ban")
    assert info["options"]["maxelem"] == 1000 and info["options"]["family"] == "inet6"
    entries = {e["entry"]: e for e in info["entries"]}
    assert entries["2001:db8::/64"]["comment"] == "lab" and 0 < entries["2001:db8::/64"]["timeout"] <= 30
    assert entries["2001:db8:1::/64"]["timeout"] > 30  # the set's default
    with pytest.raises(iptkit.InvalidArgument) as e:
        fw.create_set("py-bad", "hash:ip", "maxelem lots")
    assert e.value.details.get("token") == "lots"
    with pytest.raises(iptkit.InvalidArgument):
        fw.add_to_set("py-ban", "192.0.2.0/24")
    fw.delete_from_set("py-ban", "2001:db8::/64")
    assert not fw.set_contains("py-ban", "2001:db8::1")
    fw.flush_set("py-ban")
    assert fw.sets("py-ban")[0]["entries"] == []
    fw.destroy_set("py-ban")
    with pytest.raises(iptkit.NotFound):
        fw.sets("py-ban")
