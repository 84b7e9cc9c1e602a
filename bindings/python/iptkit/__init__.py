"""iptkit: iptables/ip6tables rules from Python, over the C ABI of libiptkit.so.1 (ctypes; nothing to compile).

    import iptkit
    with iptkit.Firewall(netns="blue") as fw:
        fw.append("INPUT", "-p tcp --dport 22 -j ACCEPT")
        for rule in fw.rules("filter"):
            print(rule.chain, rule.position, rule.packets, rule.spec)
        with fw.transaction() as txn:          # committed at the end of the block, all or nothing
            txn.create_chain("WEB")
            txn.append("WEB", "-p tcp --dport 443 -j ACCEPT")
        fw.apply({"owner": "myapp", "family": "ipv4", "chains": []})

Every failure raises an iptkit.Error subclass (NotFound, InvalidArgument, ...) carrying the C status code, its
name, the message and the details (token, field, op_index, ...). A Firewall may be shared by threads (calls on it
are serialized by the library). The library is found through the IPTKIT_LIBRARY environment variable (a path),
else at the path `cmake --install` recorded when it installed this package, else as libiptkit.so.1 on the system's
library path.
"""

import ctypes
import ctypes.util
import json as _json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = [
    "Firewall", "Transaction", "Rule", "Chain", "Error", "InvalidArgument", "NotFound", "AlreadyExists",
    "FailedPrecondition", "Aborted", "Unavailable", "PermissionDenied", "Internal", "library_version",
]

# ---- Errors -------------------------------------------------------------------------------------------------------

_DETAIL_NAMES = ("token", "column", "argument", "field", "op_index", "family", "table", "chain", "rule", "owner",
                 "line", "reason")


class Error(Exception):
    """An iptkit failure: `code` (the C status code), `code_name` ("NOT_FOUND"), `message`, `details` (dict)."""

    code = 8
    code_name = "INTERNAL"

    def __init__(self, message: str, code: Optional[int] = None, details: Optional[Dict[str, str]] = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details or {}

    def __str__(self):
        return f"{self.code_name}: {self.message}"


class InvalidArgument(Error):
    code, code_name = 1, "INVALID_ARGUMENT"


class NotFound(Error):
    code, code_name = 2, "NOT_FOUND"


class AlreadyExists(Error):
    code, code_name = 3, "ALREADY_EXISTS"


class FailedPrecondition(Error):
    code, code_name = 4, "FAILED_PRECONDITION"


class Aborted(Error):
    code, code_name = 5, "ABORTED"


class Unavailable(Error):
    code, code_name = 6, "UNAVAILABLE"


class PermissionDenied(Error):
    code, code_name = 7, "PERMISSION_DENIED"


class Internal(Error):
    code, code_name = 8, "INTERNAL"


_ERRORS = {cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Aborted,
                                      Unavailable, PermissionDenied, Internal)}

# ---- The library --------------------------------------------------------------------------------------------------

_c_void_pp = ctypes.POINTER(ctypes.c_void_p)
_c_char_pp = ctypes.POINTER(ctypes.c_void_p)  # malloc'd strings: kept as addresses, freed with iptkit_string_free


def _load():
    path = os.environ.get("IPTKIT_LIBRARY")
    if not path:
        try:
            from ._installed import LIBRARY as path  # written by cmake --install
        except ImportError:
            path = ctypes.util.find_library("iptkit") or "libiptkit.so.1"
    lib = ctypes.CDLL(path)
    P, S, I, Z, U64P, IP = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_int))
    sigs = {
        "iptkit_version": (S, []),
        "iptkit_status_name": (S, [I]),
        "iptkit_last_error_code": (I, []),
        "iptkit_last_error_message": (S, []),
        "iptkit_error_code": (I, [P]),
        "iptkit_error_message": (S, [P]),
        "iptkit_error_detail": (S, [P, S]),
        "iptkit_error_free": (I, [P]),
        "iptkit_string_free": (None, [P]),
        "iptkit_open": (I, [_c_void_pp, S, I, I, _c_void_pp]),
        "iptkit_close": (I, [P]),
        "iptkit_firewall_backend": (S, [P]),
        "iptkit_firewall_family": (I, [P]),
        "iptkit_ruleset_list": (I, [P, S, _c_void_pp, _c_void_pp]),
        "iptkit_ruleset_list_json": (I, [P, S, _c_char_pp, _c_void_pp]),
        "iptkit_ruleset_save": (I, [P, S, I, _c_char_pp, _c_void_pp]),
        "iptkit_ruleset_free": (I, [P]),
        "iptkit_ruleset_chain_count": (Z, [P]),
        "iptkit_ruleset_chain_table": (S, [P, Z]),
        "iptkit_ruleset_chain_name": (S, [P, Z]),
        "iptkit_ruleset_chain_policy": (S, [P, Z]),
        "iptkit_ruleset_chain_counters": (I, [P, Z, U64P, U64P]),
        "iptkit_ruleset_rule_count": (Z, [P]),
        "iptkit_ruleset_rule_table": (S, [P, Z]),
        "iptkit_ruleset_rule_chain": (S, [P, Z]),
        "iptkit_ruleset_rule_position": (Z, [P, Z]),
        "iptkit_ruleset_rule_spec": (S, [P, Z]),
        "iptkit_ruleset_rule_counters": (I, [P, Z, U64P, U64P]),
        "iptkit_ruleset_rule_owner": (S, [P, Z]),
        "iptkit_ruleset_rule_json": (I, [P, Z, _c_char_pp, _c_void_pp]),
        "iptkit_rule_check": (I, [P, S, S, S, IP, _c_void_pp]),
        "iptkit_rule_append": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_rule_insert": (I, [P, S, S, I, S, _c_void_pp]),
        "iptkit_rule_delete": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_rule_delete_at": (I, [P, S, S, I, S, _c_void_pp]),
        "iptkit_rule_replace": (I, [P, S, S, I, S, S, _c_void_pp]),
        "iptkit_chain_create": (I, [P, S, S, _c_void_pp]),
        "iptkit_chain_delete": (I, [P, S, S, I, _c_void_pp]),
        "iptkit_chain_rename": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_chain_flush": (I, [P, S, S, _c_void_pp]),
        "iptkit_chain_zero": (I, [P, S, S, _c_void_pp]),
        "iptkit_chain_set_policy": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_txn_begin": (I, [P, _c_void_pp, _c_void_pp]),
        "iptkit_txn_append": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_txn_insert": (I, [P, S, S, I, S, _c_void_pp]),
        "iptkit_txn_delete": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_txn_delete_at": (I, [P, S, S, I, S, _c_void_pp]),
        "iptkit_txn_replace": (I, [P, S, S, I, S, S, _c_void_pp]),
        "iptkit_txn_chain_create": (I, [P, S, S, _c_void_pp]),
        "iptkit_txn_chain_delete": (I, [P, S, S, I, _c_void_pp]),
        "iptkit_txn_chain_rename": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_txn_chain_flush": (I, [P, S, S, _c_void_pp]),
        "iptkit_txn_chain_zero": (I, [P, S, S, _c_void_pp]),
        "iptkit_txn_chain_set_policy": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_txn_add_json": (I, [P, S, _c_void_pp]),
        "iptkit_txn_op_count": (Z, [P]),
        "iptkit_txn_dry_run": (I, [P, _c_char_pp, _c_void_pp]),
        "iptkit_txn_commit": (I, [P, _c_void_pp]),
        "iptkit_txn_free": (I, [P]),
        "iptkit_apply_json": (I, [P, S, I, _c_char_pp, _c_void_pp]),
        "iptkit_txn_set_family": (I, [P, I, _c_void_pp]),
        "iptkit_set_create_options": (I, [P, S, S, S, _c_void_pp]),
        "iptkit_set_destroy": (I, [P, S, _c_void_pp]),
        "iptkit_set_flush": (I, [P, S, _c_void_pp]),
        "iptkit_set_add": (I, [P, S, S, ctypes.c_uint32, S, _c_void_pp]),
        "iptkit_set_delete": (I, [P, S, S, _c_void_pp]),
        "iptkit_set_test": (I, [P, S, S, IP, _c_void_pp]),
        "iptkit_set_list_json": (I, [P, S, _c_char_pp, _c_void_pp]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_lib = _load()


def _b(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else text.encode()


def _s(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode(errors="surrogateescape")


def _raise(code: int, err: ctypes.c_void_p):
    message = _s(_lib.iptkit_error_message(err)) if err else None
    details = {}
    if err:
        for name in _DETAIL_NAMES:
            value = _lib.iptkit_error_detail(err, name.encode())
            if value is not None:
                details[name] = _s(value)
        _lib.iptkit_error_free(err)
    if message is None:
        message = _s(_lib.iptkit_last_error_message()) or _s(_lib.iptkit_status_name(code))
    raise _ERRORS.get(code, Internal)(message, code, details)


def _call(fn, *args):
    """Calls an int-returning function with a trailing iptkit_error** and raises on failure."""
    err = ctypes.c_void_p()
    code = fn(*args, ctypes.byref(err))
    if code != 0:
        _raise(code, err)


def _call_string(fn, *args) -> str:
    out = ctypes.c_void_p()
    _call(fn, *args, ctypes.byref(out))
    try:
        return _s(ctypes.string_at(out.value)) if out.value else ""
    finally:
        _lib.iptkit_string_free(out)


def library_version() -> str:
    return _s(_lib.iptkit_version())


# ---- Values -------------------------------------------------------------------------------------------------------


@dataclass
class Rule:
    table: str
    chain: str
    position: int  # 1-based in its chain
    spec: str  # canonical, as iptables-save prints it after "-A CHAIN "
    packets: int = 0
    bytes: int = 0
    owner: Optional[str] = None  # the owner of a rule tagged by declarative apply


@dataclass
class Chain:
    table: str
    name: str
    policy: Optional[str]  # None for user chains
    packets: int = 0
    bytes: int = 0
    rules: List[Rule] = field(default_factory=list)


_BACKENDS = {"auto": 0, "nft": 1, "legacy": 2, "native": 3, "fake": 4, "native-legacy": 5}
_FAMILIES = {4: 4, 6: 6, "ipv4": 4, "ipv6": 6}
_SET_NO_TIMEOUT = 0xFFFFFFFF

# ---- Firewall -----------------------------------------------------------------------------------------------------


class Firewall:
    """The rules of one network namespace (None: the caller's; a name or a path) and one family (4 or 6)."""

    def __init__(self, netns: Optional[str] = None, backend: str = "auto", family=4):
        if backend not in _BACKENDS:
            raise InvalidArgument(f"backend '{backend}' is not one of {', '.join(_BACKENDS)}")
        if family not in _FAMILIES:
            raise InvalidArgument(f"family {family!r} is not 4, 6, 'ipv4' or 'ipv6'")
        handle = ctypes.c_void_p()
        _call(_lib.iptkit_open, ctypes.byref(handle), _b(netns), _BACKENDS[backend], _FAMILIES[family])
        self._h = handle

    def close(self):
        if self._h is not None:
            _lib.iptkit_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _handle(self):
        if self._h is None:
            raise InvalidArgument("the firewall is closed")
        return self._h

    @property
    def backend(self) -> str:
        name = _lib.iptkit_firewall_backend(self._handle())
        if name is None:
            _raise(_lib.iptkit_last_error_code(), None)
        return _s(name)

    # ---- reading ----

    def _read(self, table: Optional[str], with_chains: bool):
        """One snapshot: its rules and (with_chains) its chains holding those rules."""
        rs = ctypes.c_void_p()
        _call(_lib.iptkit_ruleset_list, self._handle(), _b(table), ctypes.byref(rs))
        try:
            lib = _lib
            p, b = ctypes.c_uint64(), ctypes.c_uint64()
            pp, bp = ctypes.byref(p), ctypes.byref(b)
            rules = []
            for i in range(lib.iptkit_ruleset_rule_count(rs)):
                lib.iptkit_ruleset_rule_counters(rs, i, pp, bp)
                owner = lib.iptkit_ruleset_rule_owner(rs, i)
                rules.append(Rule(lib.iptkit_ruleset_rule_table(rs, i).decode(),
                                  lib.iptkit_ruleset_rule_chain(rs, i).decode(),
                                  lib.iptkit_ruleset_rule_position(rs, i),
                                  lib.iptkit_ruleset_rule_spec(rs, i).decode(errors="surrogateescape"),
                                  p.value, b.value, owner.decode() if owner is not None else None))
            chains = []
            if with_chains:
                for i in range(lib.iptkit_ruleset_chain_count(rs)):
                    lib.iptkit_ruleset_chain_counters(rs, i, pp, bp)
                    chains.append(Chain(_s(lib.iptkit_ruleset_chain_table(rs, i)),
                                        _s(lib.iptkit_ruleset_chain_name(rs, i)),
                                        _s(lib.iptkit_ruleset_chain_policy(rs, i)), p.value, b.value))
            return rules, chains
        finally:
            _lib.iptkit_ruleset_free(rs)

    def rules(self, table: Optional[str] = None) -> List[Rule]:
        """Every rule of the family's tables (or one), with counters, in save order."""
        return self._read(table, False)[0]

    def chains(self, table: Optional[str] = None) -> List[Chain]:
        """Every chain with its policy, counters and rules (one snapshot)."""
        rules, chains = self._read(table, True)
        by_name = {(c.table, c.name): c for c in chains}
        for rule in rules:
            by_name[(rule.table, rule.chain)].rules.append(rule)
        return chains

    def list_json(self, table: Optional[str] = None) -> dict:
        """The listing as JSON (docs/json.md), parsed."""
        return _json.loads(_call_string(_lib.iptkit_ruleset_list_json, self._handle(), _b(table)))

    def save(self, table: Optional[str] = None, counters: bool = False) -> str:
        return _call_string(_lib.iptkit_ruleset_save, self._handle(), _b(table), 1 if counters else 0)

    def check(self, chain: str, spec: str, table: str = "filter") -> bool:
        found = ctypes.c_int()
        _call(_lib.iptkit_rule_check, self._handle(), _b(table), _b(chain), _b(spec), ctypes.byref(found))
        return found.value == 1

    # ---- single changes ----

    def append(self, chain: str, spec: str, table: str = "filter"):
        _call(_lib.iptkit_rule_append, self._handle(), _b(table), _b(chain), _b(spec))

    def insert(self, chain: str, position: int, spec: str, table: str = "filter"):
        _call(_lib.iptkit_rule_insert, self._handle(), _b(table), _b(chain), int(position), _b(spec))

    def delete(self, chain: str, spec: str, table: str = "filter"):
        _call(_lib.iptkit_rule_delete, self._handle(), _b(table), _b(chain), _b(spec))

    def delete_at(self, chain: str, position: int, expect: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_rule_delete_at, self._handle(), _b(table), _b(chain), int(position), _b(expect))

    def replace(self, chain: str, position: int, spec: str, expect: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_rule_replace, self._handle(), _b(table), _b(chain), int(position), _b(spec), _b(expect))

    def create_chain(self, chain: str, table: str = "filter"):
        _call(_lib.iptkit_chain_create, self._handle(), _b(table), _b(chain))

    def delete_chain(self, chain: str, cascade: bool = False, table: str = "filter"):
        _call(_lib.iptkit_chain_delete, self._handle(), _b(table), _b(chain), 1 if cascade else 0)

    def rename_chain(self, chain: str, new_name: str, table: str = "filter"):
        _call(_lib.iptkit_chain_rename, self._handle(), _b(table), _b(chain), _b(new_name))

    def flush(self, chain: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_chain_flush, self._handle(), _b(table), _b(chain))

    def zero(self, chain: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_chain_zero, self._handle(), _b(table), _b(chain))

    def set_policy(self, chain: str, policy: str, table: str = "filter"):
        _call(_lib.iptkit_chain_set_policy, self._handle(), _b(table), _b(chain), _b(policy))

    # ---- transactions and declarative state ----

    # ---- IP sets of the firewall's namespace ----

    def create_set(self, name: str, type: str, options: str = ""):
        """Creates an ipset; `options` in ipset's words ("family inet6 maxelem 100000 timeout 3600 comment")."""
        _call(_lib.iptkit_set_create_options, self._handle(), _b(name), _b(type), _b(options))

    def destroy_set(self, name: str):
        _call(_lib.iptkit_set_destroy, self._handle(), _b(name))

    def flush_set(self, name: str):
        _call(_lib.iptkit_set_flush, self._handle(), _b(name))

    def add_to_set(self, name: str, entry: str, timeout: Optional[int] = None, comment: Optional[str] = None):
        """Adds (or refreshes) an entry; timeout None: the set's default."""
        t = _SET_NO_TIMEOUT if timeout is None else int(timeout)
        if not 0 <= t <= _SET_NO_TIMEOUT:
            raise InvalidArgument(f"timeout {timeout!r} is not a number of seconds")
        _call(_lib.iptkit_set_add, self._handle(), _b(name), _b(entry), t, _b(comment))

    def delete_from_set(self, name: str, entry: str):
        _call(_lib.iptkit_set_delete, self._handle(), _b(name), _b(entry))

    def set_contains(self, name: str, entry: str) -> bool:
        found = ctypes.c_int(0)
        _call(_lib.iptkit_set_test, self._handle(), _b(name), _b(entry), ctypes.byref(found))
        return found.value == 1

    def sets(self, name: Optional[str] = None) -> List[dict]:
        """Every set (or one), with options and entries, as iptkitd's GET /v1/sets/NAME shows a set."""
        return _json.loads(_call_string(_lib.iptkit_set_list_json, self._handle(), _b(name)))

    def transaction(self) -> "Transaction":
        return Transaction(self)

    def apply(self, desired, dry_run: bool = False) -> dict:
        """Makes one owner's chains what `desired` (a dict or JSON text, docs/declarative.md) says; returns the plan."""
        text = desired if isinstance(desired, str) else _json.dumps(desired)
        return _json.loads(_call_string(_lib.iptkit_apply_json, self._handle(), _b(text), 1 if dry_run else 0))


class Transaction:
    """Ops applied together by commit(), all or nothing. As a context manager it commits when the block ends
    without an exception (and always frees itself)."""

    def __init__(self, firewall: Firewall):
        handle = ctypes.c_void_p()
        _call(_lib.iptkit_txn_begin, firewall._handle(), ctypes.byref(handle))
        self._h = handle

    def _handle(self):
        if self._h is None:
            raise InvalidArgument("the transaction is closed")
        return self._h

    def close(self):
        if self._h is not None:
            _lib.iptkit_txn_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()

    def __len__(self):
        return _lib.iptkit_txn_op_count(self._handle())

    def append(self, chain: str, spec: str, table: str = "filter"):
        _call(_lib.iptkit_txn_append, self._handle(), _b(table), _b(chain), _b(spec))
        return self

    def insert(self, chain: str, position: int, spec: str, table: str = "filter"):
        _call(_lib.iptkit_txn_insert, self._handle(), _b(table), _b(chain), int(position), _b(spec))
        return self

    def delete(self, chain: str, spec: str, table: str = "filter"):
        _call(_lib.iptkit_txn_delete, self._handle(), _b(table), _b(chain), _b(spec))
        return self

    def delete_at(self, chain: str, position: int, expect: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_txn_delete_at, self._handle(), _b(table), _b(chain), int(position), _b(expect))
        return self

    def replace(self, chain: str, position: int, spec: str, expect: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_txn_replace, self._handle(), _b(table), _b(chain), int(position), _b(spec), _b(expect))
        return self

    def create_chain(self, chain: str, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_create, self._handle(), _b(table), _b(chain))
        return self

    def delete_chain(self, chain: str, cascade: bool = False, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_delete, self._handle(), _b(table), _b(chain), 1 if cascade else 0)
        return self

    def rename_chain(self, chain: str, new_name: str, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_rename, self._handle(), _b(table), _b(chain), _b(new_name))
        return self

    def flush(self, chain: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_flush, self._handle(), _b(table), _b(chain))
        return self

    def zero(self, chain: Optional[str] = None, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_zero, self._handle(), _b(table), _b(chain))
        return self

    def set_policy(self, chain: str, policy: str, table: str = "filter"):
        _call(_lib.iptkit_txn_chain_set_policy, self._handle(), _b(table), _b(chain), _b(policy))
        return self

    def set_family(self, family):
        """Ops added after this are for `family` (4, 6, 'ipv4' or 'ipv6'); a transaction starts with its firewall's.
        One transaction may change IPv4 and IPv6 together, all or nothing (on the native backend in one kernel
        transaction)."""
        if family not in _FAMILIES:
            raise InvalidArgument(f"family {family!r} is not 4, 6, 'ipv4' or 'ipv6'")
        _call(_lib.iptkit_txn_set_family, self._handle(), _FAMILIES[family])
        return self

    def add_json(self, batch):
        """Adds the ops of a batch ({"ops": [...]}, docs/json.md), a dict or JSON text; each op names its own family
        ("family": "ipv6"; IPv4 when absent)."""
        text = batch if isinstance(batch, str) else _json.dumps(batch)
        _call(_lib.iptkit_txn_add_json, self._handle(), _b(text))
        return self

    def dry_run(self) -> str:
        """The exact iptables-restore text a commit would send; sends nothing."""
        return _call_string(_lib.iptkit_txn_dry_run, self._handle())

    def commit(self):
        _call(_lib.iptkit_txn_commit, self._handle())
