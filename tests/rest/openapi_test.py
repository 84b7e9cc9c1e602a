#!/usr/bin/env python3
"""OpenAPI conformance of iptkitd: docs/openapi.yaml against a running daemon.

Starts iptkitd (in a private network namespace made with `ip netns add` when run as root, else with the in-memory
`--backend fake`), then for every operation of the spec makes at least one successful request and the error
requests it can trigger, and checks each answer:
  (a) the status is one the spec lists for the operation (405 / 404 for unknown methods and paths: the
      MethodNotAllowed / NotFound responses of components),
  (b) the body validates against the response schema (jsonschema, $ref resolved into components); the content
      type is the documented one,
  (c) the documented required headers are present and valid (X-Request-Id, Cache-Control, Allow, Retry-After,
      WWW-Authenticate),
and that bodies the daemon accepts validate against the request schema (and some it refuses do not). It also
checks that the route table of src/rest/api.cc and the spec's paths/methods are the same, that a path outside the
spec answers 404, and reads /v1/events frames (validating each event's data against x-event-data).

Only the Python standard library plus python3-yaml and python3-jsonschema (Debian 12: 4.10) are used.

  openapi_test.py --iptkitd build/tools/iptkitd/iptkitd --spec docs/openapi.yaml --api-source src/rest/api.cc

Exit status 0 when everything conforms; 1 with one line per problem (operation, request, status, schema error).
"""

import argparse
import collections
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    import yaml
    import jsonschema
except ImportError as e:  # pragma: no cover
    print(f"openapi_test: missing Python module ({e}); install python3-yaml python3-jsonschema", file=sys.stderr)
    sys.exit(2)

METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")
BIG_BODY_LIMIT = 65536  # --max-body-bytes of the main daemon


class Fatal(Exception):
    """Setup failed: no point in going on."""


# ---------------------------------------------------------------------------------------------------------------
# The spec


class Spec:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        if not str(self.doc.get("openapi", "")).startswith("3.1"):
            raise Fatal(f"{path}: expected an OpenAPI 3.1 document, got openapi={self.doc.get('openapi')!r}")
        self.components = self.doc.get("components", {})
        self.ops = {}  # (template, METHOD) -> operation object
        self.templates = []  # (template, compiled regex, number of literal segments)
        for template, item in self.doc["paths"].items():
            for m in item:
                if m.upper() in ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"):
                    self.ops[(template, m.upper())] = item[m]
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            literal = sum(1 for s in template.split("/") if s and not s.startswith("{"))
            self.templates.append((template, re.compile(regex), literal))
        # A literal segment beats a parameter ("/v1/owners" before "/v1/{family}").
        self.templates.sort(key=lambda t: -t[2])
        self._validators = {}
        # Path parameter enums (family, table): a path whose values are outside them matches no operation.
        self.path_param_enums = {}
        for name, p in self.components.get("parameters", {}).items():
            if p.get("in") == "path" and "enum" in p.get("schema", {}):
                self.path_param_enums[p["name"]] = set(p["schema"]["enum"])

    def methods(self, template):
        return sorted(m for (t, m) in self.ops if t == template)

    def match(self, path):
        """The template a concrete path belongs to, or None."""
        for template, regex, _ in self.templates:
            if not regex.match(path):
                continue
            names = re.findall(r"\{([^}]+)\}", template)
            values = [v for t, v in zip(template.split("/"), path.split("/")) if t.startswith("{")]
            ok = True
            for n, v in zip(names, values):
                # Only the family enum decides routing (the daemon routes /v1/{family} for ipv4/ipv6 only);
                # an unknown table routes and is answered 404 by the operation.
                if n == "family" and v not in self.path_param_enums.get("family", {v}):
                    ok = False
            if ok:
                return template
        return None

    def deref(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj and len(obj) == 1:
            ref = obj["$ref"]
            if not ref.startswith("#/"):
                raise Fatal(f"external $ref not supported: {ref}")
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
            seen += 1
            if seen > 20:
                raise Fatal(f"$ref loop at {ref}")
        return obj

    def validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            root = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": self.components,
                "allOf": [schema],
            }
            v = jsonschema.Draft202012Validator(root)
            self._validators[key] = v
        return v

    def schema_errors(self, schema, instance):
        """Readable schema errors (empty when valid)."""
        errors = sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
        out = []
        for e in errors[:5]:
            where = "/" + "/".join(str(p) for p in e.absolute_path)
            # For oneOf/anyOf/allOf the best leaf says more than the combinator.
            best = jsonschema.exceptions.best_match([e])
            leaf = best
            while leaf.context:
                leaf = jsonschema.exceptions.best_match(leaf.context)
            leaf_where = "/" + "/".join(str(p) for p in leaf.absolute_path)
            msg = e.message if len(e.message) <= 300 else e.message[:300] + "..."
            out.append(f"at {where}: {msg}" + (f" [{leaf_where}: {leaf.message[:300]}]" if leaf is not e else ""))
        return out

    def schema_name(self, schema):
        if isinstance(schema, dict) and "$ref" in schema:
            return schema["$ref"].rsplit("/", 1)[-1]
        return "(inline schema)"


# ---------------------------------------------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage
        self.body = body
        self._json = None

    def json(self):
        if self._json is None:
            self._json = json.loads(self.body.decode("utf-8"))
        return self._json

    def header(self, name):
        return self.headers.get(name)

    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()


class Checker:
    """Sends requests and checks every answer against the spec."""

    def __init__(self, spec, base, tokens):
        self.spec = spec
        self.base = base.rstrip("/")
        parsed = urllib.parse.urlsplit(self.base)
        self.host, self.port = parsed.hostname, parsed.port
        self.tokens = tokens
        self.failures = []
        self.warnings = []
        self.requests = 0
        self.seen = collections.defaultdict(collections.Counter)  # (template, METHOD) -> statuses
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- reporting --

    def fail(self, what, message):
        self.failures.append(f"{what}: {message}")
        print(f"FAIL {what}: {message}", flush=True)

    def warn(self, what, message):
        if f"{what}: {message}" not in self.warnings:
            self.warnings.append(f"{what}: {message}")

    def op_name(self, template, method):
        op = self.spec.ops.get((template, method))
        return op.get("operationId", f"{method} {template}") if op else f"{method} {template}"

    # -- requests --

    def call(self, method, path, *, token="admin", body=None, raw=None, ctype="application/json", headers=None,
             query=None, expect=None, body_valid=None, chunked=False, label=""):
        """One request; returns the Response (after checking it). `expect`: the status (or statuses) the test
        wants; `body_valid`: whether the request body must (True) / must not (False) validate against the spec's
        request schema (default: must, when a 2xx is expected)."""
        url_path = path
        if query:
            url_path += "?" + (query if isinstance(query, str) else urllib.parse.urlencode(query, doseq=True))
        data = None
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
        hdrs = {}
        if token is not None:
            secret = self.tokens.get(token, token)
            hdrs["Authorization"] = secret if secret.startswith(("Bearer ", "Basic ")) else "Bearer " + secret
        if data is not None and ctype is not None:
            hdrs["Content-Type"] = ctype
        hdrs.update(headers or {})
        if data is not None and chunked:
            payload = data
            data = iter([payload[i:i + 8192] for i in range(0, len(payload), 8192)])
            hdrs["Transfer-Encoding"] = "chunked"
        elif data is None and method in ("POST", "PUT", "DELETE", "PATCH"):
            data = b""  # Content-Length: 0
        req = urllib.request.Request(self.base + url_path, data=data, method=method, headers=hdrs)
        self.requests += 1
        try:
            with self.opener.open(req, timeout=30) as r:
                resp = Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            resp = Response(e.code, e.headers, e.read())
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            self.fail(f"{method} {url_path}", f"no HTTP answer: {e}")
            return None
        what = f"{method} {url_path}" + (f" ({label})" if label else "")
        template = self.check(method, path, resp, what)
        expected = {expect} if isinstance(expect, int) else set(expect or ())
        if expected and resp.status not in expected:
            self.fail(f"{self.op_name(template, method) if template else '-'} {what}",
                      f"expected status {sorted(expected)}, got {resp.status}: {resp.body[:400]!r}")
        if template and (template, method) in self.spec.ops:
            want_valid = body_valid
            if want_valid is None and expected and all(200 <= s < 300 for s in expected):
                want_valid = True
            if want_valid is not None and raw is None and body is not None:
                self.check_request_body(template, method, body, want_valid, what)
            if 200 <= resp.status < 300 and "?" in url_path:
                self.check_request_query(template, method, url_path.split("?", 1)[1], what)
        return resp

    def check_request_query(self, template, method, query, what):
        """Every query parameter of a request the daemon accepted is documented, with a valid value."""
        declared = {}
        item = self.spec.doc["paths"][template]
        for p in item.get("parameters", []) + self.spec.ops[(template, method)].get("parameters", []):
            p = self.spec.deref(p)
            if p.get("in") == "query":
                declared[p["name"]] = p
        name_op = self.op_name(template, method)
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            p = declared.get(name)
            if p is None:
                self.fail(f"{name_op} {what}", f"the daemon accepted query parameter {name!r}, the spec does not "
                                               f"document it (documented: {sorted(declared)})")
                continue
            schema = p.get("schema", {})
            if not self.spec.schema_errors(schema, value):
                continue
            try:
                if not self.spec.schema_errors(schema, int(value)):
                    continue
            except ValueError:
                pass
            self.fail(f"{name_op} {what}", f"the daemon accepted {name}={value!r}, which does not validate against "
                                           f"the parameter's schema {schema}")

    def check_request_body(self, template, method, body, want_valid, what):
        op = self.spec.ops[(template, method)]
        rb = self.spec.deref(op.get("requestBody", {}))
        schema = rb.get("content", {}).get("application/json", {}).get("schema")
        name = self.op_name(template, method)
        if schema is None:
            self.fail(f"{name} {what}", "the test sent a JSON body but the spec documents none")
            return
        errors = self.spec.schema_errors(schema, body)
        if want_valid and errors:
            self.fail(f"{name} {what}", f"a body the daemon accepts does not validate against the request schema "
                                        f"{self.spec.schema_name(schema)}: {'; '.join(errors)}")
        if not want_valid and not errors:
            self.fail(f"{name} {what}", f"a body the daemon refuses validates against the request schema "
                                        f"{self.spec.schema_name(schema)} (the spec is too loose)")

    # -- response checks --

    def check(self, method, path, resp, what):
        """Checks status, content type, body schema and headers; returns the template (or None)."""
        template = self.spec.match(path)
        if template is None:
            self.check_response(self.spec.components["responses"]["NotFound"], resp, f"(no route) {what}",
                                want_status=404)
            return None
        op = self.spec.ops.get((template, method))
        if op is None:
            if method == "OPTIONS":
                self.check_options(template, resp, what)
                return template
            if method == "HEAD":
                return template
            self.seen[(template, method)][resp.status] += 1
            self.check_response(self.spec.components["responses"]["MethodNotAllowed"], resp,
                                f"{method} {template} (not in spec) {what}", want_status=405)
            allow = resp.header("Allow")
            if allow is not None:
                got = sorted(a.strip() for a in allow.split(","))
                if got != self.spec.methods(template):
                    self.fail(what, f"Allow: {allow!r} but the spec lists {self.spec.methods(template)} for {template}")
            return template
        self.seen[(template, method)][resp.status] += 1
        name = self.op_name(template, method)
        responses = op.get("responses", {})
        r = responses.get(str(resp.status))
        if r is None:
            self.fail(f"{name} {what}", f"status {resp.status} is not documented for this operation (documented: "
                                        f"{', '.join(sorted(responses))}); body {resp.body[:300]!r}")
            return template
        self.check_response(r, resp, f"{name} {what}")
        return template

    def check_response(self, r, resp, what, want_status=None):
        r = self.spec.deref(r)
        if want_status is not None and resp.status != want_status:
            self.fail(what, f"expected status {want_status}, got {resp.status}: {resp.body[:300]!r}")
            return
        for name, h in (r.get("headers") or {}).items():
            h = self.spec.deref(h)
            values = resp.headers.get_all(name) or []
            if not values:
                if h.get("required"):
                    self.fail(what, f"status {resp.status}: required header {name} is missing")
                continue
            if len(values) > 1:
                self.warn(what.split(" ")[0], f"header {name} appears {len(values)} times: {values}")
            schema = h.get("schema", {})
            for v in values:
                value = int(v) if schema.get("type") == "integer" and v.isdigit() else v
                errors = self.spec.schema_errors(schema, value)
                if errors:
                    self.fail(what, f"status {resp.status}: header {name}: {v!r}: {'; '.join(errors)}")
        content = r.get("content") or {}
        if not content:
            if resp.body:
                self.fail(what, f"status {resp.status}: the spec documents no body, got {resp.body[:200]!r}")
            return
        ctype = resp.content_type()
        media = content.get(ctype)
        if media is None:
            self.fail(what, f"status {resp.status}: Content-Type {ctype!r}, the spec documents {sorted(content)}")
            return
        schema = media.get("schema")
        if ctype == "application/json":
            try:
                instance = resp.json()
            except ValueError as e:
                self.fail(what, f"status {resp.status}: body is not JSON ({e}): {resp.body[:200]!r}")
                return
            errors = self.spec.schema_errors(schema, instance)
            if errors:
                self.fail(what, f"status {resp.status}: body does not match {self.spec.schema_name(schema)}: "
                                f"{'; '.join(errors)}; body {resp.body[:600]!r}")
            # The error body repeats the request id of the header.
            if isinstance(instance, dict) and "error" in instance:
                rid = instance.get("error", {}).get("details", {}).get("request_id")
                if rid is not None and rid != resp.header("X-Request-Id"):
                    self.fail(what, f"details.request_id {rid!r} differs from X-Request-Id "
                                    f"{resp.header('X-Request-Id')!r}")

    def check_options(self, template, resp, what):
        if resp.status != 204:
            self.fail(what, f"OPTIONS: expected 204, got {resp.status}")
        allow = resp.header("Allow") or ""
        got = sorted(a.strip() for a in allow.split(",") if a.strip())
        if got != self.spec.methods(template):
            self.fail(what, f"OPTIONS Allow: {allow!r}, the spec lists {self.spec.methods(template)}")
        if not resp.header("X-Request-Id"):
            self.fail(what, "OPTIONS: no X-Request-Id")

    # -- Server-Sent Events --

    def open_events(self, query="", headers=None, token="admin"):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        hdrs = {"Authorization": "Bearer " + self.tokens[token], "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        path = "/v1/events" + (("?" + query) if query else "")
        self.requests += 1
        conn.request("GET", path, headers=hdrs)
        r = conn.getresponse()
        resp = Response(r.status, r.headers, b"")
        template = "/v1/events"
        self.seen[(template, "GET")][r.status] += 1
        op = self.spec.ops[(template, "GET")]
        doc = op["responses"].get(str(r.status))
        what = f"getEvents GET {path}"
        if doc is None:
            self.fail(what, f"status {r.status} is not documented")
        elif r.status == 200:
            # Headers and content type only: the body is a stream.
            doc = self.spec.deref(doc)
            for name, h in doc.get("headers", {}).items():
                if self.spec.deref(h).get("required") and not r.headers.get(name):
                    self.fail(what, f"required header {name} missing")
            values = r.headers.get_all("Cache-Control") or []
            if len(values) > 1:
                self.warn("getEvents", f"header Cache-Control appears {len(values)} times: {values}")
            if resp.content_type() not in doc.get("content", {}):
                self.fail(what, f"Content-Type {resp.content_type()!r}, documented {sorted(doc['content'])}")
        return conn, r

    def read_frame(self, r, what, deadline_s=10.0):
        """The next SSE message with an id (comments skipped): {'id', 'event', 'data'}; None on timeout."""
        frame, comments = {}, 0
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                line = r.readline()
            except (TimeoutError, OSError) as e:
                self.fail(what, f"reading the event stream: {e}")
                return None
            if not line:
                self.fail(what, "the event stream ended")
                return None
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if frame:
                    return frame
                continue
            if line.startswith(":"):
                comments += 1
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key not in ("id", "event", "data"):
                self.fail(what, f"unexpected SSE field {key!r} in {line!r}")
            frame[key] = value
        self.fail(what, f"no event within {deadline_s} s")
        return None

    def check_frame(self, frame, what):
        if frame is None:
            return None
        media = self.spec.ops[("/v1/events", "GET")]["responses"]["200"]["content"]["text/event-stream"]
        kinds = media.get("x-event-data", {})
        for k in ("id", "event", "data"):
            if k not in frame:
                self.fail(what, f"event without '{k}': {frame}")
                return None
        if not frame["id"].isdigit() or int(frame["id"]) < 1:
            self.fail(what, f"event id {frame['id']!r} is not an integer >= 1")
        schema = kinds.get(frame["event"])
        if schema is None:
            self.fail(what, f"event type {frame['event']!r} is not in x-event-data ({sorted(kinds)})")
            return None
        try:
            data = json.loads(frame["data"])
        except ValueError as e:
            self.fail(what, f"event data is not JSON ({e}): {frame['data'][:200]!r}")
            return None
        errors = self.spec.schema_errors(schema, data)
        if errors:
            self.fail(what, f"event {frame['event']} data does not match {self.spec.schema_name(schema)}: "
                            f"{'; '.join(errors)}; data {frame['data'][:400]!r}")
        frame["json"] = data
        return frame


# ---------------------------------------------------------------------------------------------------------------
# The daemon


class Daemon:
    def __init__(self, binary, workdir, name, *, netns=None, extra=(), tokens=()):
        self.binary = binary
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.state = os.path.join(self.dir, "state")
        self.ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "iptkitd.log")
        self.netns = netns
        self.proc = None
        self.tokens = {}
        for tname, scopes, ttl_max in tokens:
            cmd = [binary, "token", "create", "--name", tname, "--state-dir", self.state]
            for s in scopes:
                cmd += ["--scope", s]
            if ttl_max:
                cmd += ["--ttl-max", str(ttl_max)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise Fatal(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
            self.tokens[tname] = out.stdout.strip()
        # An empty configuration file: /etc/iptkitd.conf, if the host has one, must not add listeners.
        self.config = os.path.join(self.dir, "iptkitd.conf")
        with open(self.config, "w", encoding="utf-8"):
            pass
        self.args = [binary, "--config", self.config, "--listen", "127.0.0.1:0", "--ready-file", self.ready,
                     "--state-dir", self.state, "--log-level", "info", "--counter-interval", "200ms"]
        self.args += ["--netns", netns] if netns else ["--backend", "fake"]
        self.args += list(extra)

    def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Fatal(f"iptkitd exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            if os.path.exists(self.ready):
                with open(self.ready, encoding="utf-8") as f:
                    info = json.load(f)
                for k in ("pid", "backend", "netns", "endpoints"):
                    if k not in info:
                        raise Fatal(f"ready file {self.ready} lacks {k!r}: {info}")
                http_eps = [e for e in info["endpoints"] if e.startswith("http://")]
                if not http_eps:
                    raise Fatal(f"no http endpoint in {info}")
                self.info = info
                self.base = http_eps[0]
                return self
            time.sleep(0.05)
        raise Fatal(f"iptkitd not ready within 60 s:\n{self.tail()}")

    def tail(self, n=30):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


# ---------------------------------------------------------------------------------------------------------------
# The checks


def check_route_table(spec, api_source):
    """Every route of src/rest/api.cc is in the spec with the same methods, and the spec has nothing else."""
    problems = []
    with open(api_source, encoding="utf-8") as f:
        text = f.read()
    routes = {}
    for m in re.finditer(r'\{RouteId::(k\w+),\s*"([^"]+)",\s*\{([^}]*)\}(?:,\s*&\w+)?\}', text):
        routes[m.group(2)] = sorted(re.findall(r'"([A-Z]+)"', m.group(3)))
    if len(routes) < 5:
        problems.append(f"{api_source}: found only {len(routes)} routes with the pattern "
                        "{{RouteId::kX, \"pattern\", {{methods}}, &Handler}}; has the route table changed shape?")
    spec_paths = {t: spec.methods(t) for t in spec.doc["paths"]}
    for pattern, methods in sorted(routes.items()):
        if pattern not in spec_paths:
            problems.append(f"route {pattern} {methods} of {os.path.basename(api_source)} is not in the spec")
        elif spec_paths[pattern] != methods:
            problems.append(f"route {pattern}: api.cc serves {methods}, the spec documents {spec_paths[pattern]}")
    for path, methods in sorted(spec_paths.items()):
        if path not in routes:
            problems.append(f"spec path {path} {methods} is not a route of {os.path.basename(api_source)}")
    return problems, len(routes)


def run_main(c, d):
    """Every operation on the main daemon. `c` is the Checker, `d` the Daemon."""
    ns = d.info["netns"]
    F = "/v1/ipv4/tables/filter/chains"
    R = F + "/TCHAIN/rules"
    I = F + "/INPUT/rules"

    # ---- Service routes ----
    c.call("GET", "/healthz", token=None, expect=200)
    c.call("GET", "/healthz", token=None, query="foo=1", expect=400, label="unknown query parameter")
    c.call("GET", "/healthz", expect=200, label="with a token")
    r = c.call("GET", "/metrics", expect=200)
    if r is not None and b"iptkitd_http_requests_total" not in r.body:
        c.fail("getMetrics", "no iptkitd_http_requests_total in /metrics")
    c.call("GET", "/metrics", token=None, expect=401, label="no token")
    c.call("GET", "/metrics", token="writer", expect=403, label="write-only token")
    c.call("GET", "/metrics", query="token=" + d.tokens["admin"][:8], expect=400, label="token in the URL")
    r = c.call("GET", "/v1/version", expect=200)
    if r is not None and r.status == 200 and r.json().get("backend") != d.info["backend"]:
        c.fail("getVersion", f"backend {r.json().get('backend')!r}, ready file says {d.info['backend']!r}")
    c.call("GET", "/v1/version", query={"netns": ns}, expect=200, label="netns of the daemon")
    c.call("GET", "/v1/version", query={"netns": "not-" + ns}, expect=400, label="another netns")
    c.call("GET", "/v1/version", token="Basic YWRtaW46YWRtaW4=", expect=401, label="not a bearer token")
    c.call("GET", "/v1/version", token="iptk_" + "a" * 40, expect=401, label="unknown token")
    c.call("GET", "/v1/version", query="access_token=x", expect=400, label="access_token in the URL")
    c.call("GET", "/v1/version", raw="x", ctype="text/plain", expect=200, label="the body of a GET is not read")
    c.call("GET", "/v1/info", expect=200)
    c.call("GET", "/v1/info", token=None, expect=401)
    c.call("GET", "/v1/info", query="x=1", expect=400)

    # X-Request-Id: echoed when valid, generated otherwise; also in error details.
    r = c.call("GET", "/v1/version", headers={"X-Request-Id": "oapi-test:1"}, expect=200, label="own request id")
    if r is not None and r.header("X-Request-Id") != "oapi-test:1":
        c.fail("X-Request-Id", f"a valid X-Request-Id was not echoed: got {r.header('X-Request-Id')!r}")
    r = c.call("GET", "/v1/version", headers={"X-Request-Id": "not valid!"}, expect=200, label="bad request id")
    if r is not None and not re.match(r"^r-[0-9a-f]{16}$", r.header("X-Request-Id") or ""):
        c.fail("X-Request-Id", f"an invalid X-Request-Id should be replaced by r-<16 hex>, got "
                               f"{r.header('X-Request-Id')!r}")
    r = c.call("GET", "/v1/info", query="bogus=1", headers={"X-Request-Id": "oapi-err-1"}, expect=400)
    if r is not None and r.status == 400 and r.json()["error"]["details"].get("request_id") != "oapi-err-1":
        c.fail("X-Request-Id", f"error details.request_id is not the client's id: {r.body!r}")

    # ---- Chains ----
    r = c.call("PUT", F + "/TCHAIN", expect=200, label="create user chain")
    if r is not None and r.status == 200 and not (r.json()["changed"] and "transaction" in r.json()):
        c.fail("putChain", f"creating a chain should change something: {r.body!r}")
    r = c.call("PUT", F + "/TCHAIN", body={}, expect=200, label="create again (idempotent)")
    if r is not None and r.status == 200 and r.json()["changed"]:
        c.fail("putChain", f"PUT of an existing chain should report changed=false: {r.body!r}")
    c.call("PUT", "/v1/ipv6/tables/filter/chains/TCHAIN6", expect=200, label="ipv6 user chain")
    r = c.call("PUT", F + "/TDRY", query="dry_run=1", expect=200, label="dry run")
    if r is not None and r.status == 200 and not r.json()["dry_run"]:
        c.fail("putChain", "dry_run=1 result has dry_run=false")
    c.call("PUT", F + "/FORWARD", body={"policy": "DROP"}, query="dry_run=true", expect=200, label="policy dry run")
    c.call("PUT", F + "/FORWARD", body={"policy": "ACCEPT"}, expect=200, label="policy")
    c.call("PUT", F + "/FORWARD", expect=400, label="builtin chain without policy")
    c.call("PUT", F + "/TCHAIN", body={"policy": "DROP"}, expect=400, label="policy on a user chain")
    c.call("PUT", F + "/FORWARD", body={"policy": "REJECT"}, expect=400, body_valid=False, label="bad policy")
    c.call("PUT", F + "/TNEW", body={"bogus": 1}, expect=400, body_valid=False, label="unknown field")
    c.call("PUT", F + "/TNEW", body={"netns": "not-" + ns}, expect=400, label="body names another netns")
    c.call("PUT", F + "/-bad", expect=400, label="invalid chain name")
    c.call("PUT", F + "/TNEW", query="cascade=1", expect=400, label="parameter of another method")
    c.call("PUT", F + "/TNEW", query="dry_run=maybe", expect=400, label="bad boolean")
    c.call("PUT", F + "/TNEW", raw="{}", ctype="text/plain", expect=415, label="non-JSON content type")
    c.call("PUT", F + "/TNEW", raw="{}", ctype=None, expect=415, label="urllib's default content type")
    c.call("PUT", F + "/TNEW", token="reader", expect=403, label="read-only token")
    c.call("PUT", F + "/TNEW", token="natonly", expect=403, label="token scoped to table nat")
    c.call("PUT", "/v1/ipv4/tables/nope/chains/TNEW", expect=404, label="unknown table")
    big = json.dumps({"policy": "DROP", "netns": "x" * (BIG_BODY_LIMIT + 100)})
    c.call("PUT", F + "/TNEW", raw=big, expect=413, label="body over max_body_bytes (Content-Length)")
    c.call("PUT", F + "/TNEW", raw=big, chunked=True, expect=413, label="body over max_body_bytes (chunked)")
    c.call("GET", F + "/TCHAIN", expect=200)
    c.call("GET", F + "/INPUT", expect=200, label="builtin chain")
    c.call("GET", F + "/NOPE", expect=404, label="missing chain")
    c.call("GET", "/v1/ipv4/tables/nope/chains/INPUT", expect=404, label="unknown table")
    c.call("GET", F + "/INPUT", token="writer", expect=403, label="write-only token")

    # ---- Rules ----
    c.call("POST", R, body={"spec": "-s 192.0.2.1 -p tcp --dport 22 -j ACCEPT"}, expect=200, label="append")
    c.call("POST", R, body={"src": {"addr": "192.0.2.2"}, "target": {"name": "ACCEPT"}}, query="position=1",
           expect=200, label="insert structured rule at 1")
    c.call("POST", R, body={"spec": "-s 192.0.2.3/32 -j DROP", "src": {"addr": "192.0.2.3/32"},
                            "target": {"name": "DROP"}, "family": "ipv4", "table": "filter", "chain": "TCHAIN"},
           expect=200, label="spec and structured fields together")
    c.call("POST", R, body={"spec": "-s 192.0.2.4 -j DROP"}, query="dry_run=1", expect=200, label="dry run")
    r = c.call("POST", I, body={"spec": "-s 198.51.100.1 -j ACCEPT", "owner": "oapi", "id": "ssh1"},
               headers={"X-Request-Id": "oapi-owned-1"}, expect=200, label="owned rule with an id")
    if r is not None and r.status == 200:
        m = r.json()["managed"]
        if len(m) != 1 or m[0]["id"] != "ssh1" or m[0]["owner"] != "oapi" or m[0]["ttl_remaining"] is not None:
            c.fail("addRule", f"owned rule: unexpected managed {m}")
    r = c.call("POST", I, body={"spec": "-s 198.51.100.2 -j DROP", "ttl": 300}, query="position=first",
               expect=200, label="TTL rule (default owner) first")
    first_id = None
    if r is not None and r.status == 200:
        m = r.json()["managed"]
        if len(m) != 1 or m[0]["position"] != "first" or not (0 < (m[0]["ttl_remaining"] or 0) <= 300):
            c.fail("addRule", f"TTL rule: unexpected managed {m}")
        elif "expires_at" not in m[0]:
            c.fail("addRule", f"TTL rule without expires_at: {m}")
        first_id = m[0]["id"] if m else None
    r = c.call("POST", I, body={"spec": "-s 198.51.100.2/32 -j DROP", "ttl": 600}, query="position=first",
               expect=200, label="the same add (other spelling) refreshes")
    if r is not None and r.status == 200:
        m = r.json()["managed"]
        if not m or m[0]["id"] != first_id or m[0]["ttl_remaining"] <= 300 or r.json()["changed"]:
            c.fail("addRule", f"the same add should keep the id, not change the kernel and extend the TTL: {r.body!r}")
    c.call("POST", I, token="svc", body={"spec": "-s 198.51.100.3 -j ACCEPT", "owner": "svc", "ttl": 30},
           expect=200, label="owner-scoped token, own owner, ttl within max")
    c.call("POST", I, token="svc", body={"spec": "-s 198.51.100.4 -j ACCEPT", "owner": "svc", "ttl": 100},
           expect=403, label="ttl over the token's max")
    c.call("POST", I, token="svc", body={"spec": "-s 198.51.100.4 -j ACCEPT", "owner": "svc"},
           expect=403, label="permanent add by a ttl-bound token")
    c.call("POST", I, token="svc", body={"spec": "-s 198.51.100.4 -j ACCEPT"}, expect=403,
           label="unowned add by an owner-scoped token")
    c.call("POST", I, token="svc", body={"spec": "-s 198.51.100.4 -j ACCEPT", "owner": "other", "ttl": 5},
           expect=403, label="another owner")
    c.call("POST", R, token="reader", body={"spec": "-j ACCEPT"}, expect=403, label="read-only token")
    r = c.call("POST", R, body={"spec": "-p tcp --dportx 22 -j ACCEPT"}, expect=400, label="bad spec")
    if r is not None and r.status == 400:
        det = r.json()["error"]["details"]
        if det.get("token") != "--dportx" or det.get("column") != 8 or det.get("field") != "/spec":
            c.fail("addRule", f"spec error details should name field /spec, token --dportx, column 8: {det}")
    c.call("POST", R, raw='{"spec": "-j ACCEPT"', expect=400, label="malformed JSON")
    c.call("POST", R, raw='[]', expect=400, label="not an object")
    c.call("POST", R, expect=400, label="empty body")
    c.call("POST", R, body={"spec": "-j ACCEPT", "spec2": 1}, expect=400, body_valid=False, label="unknown field")
    c.call("POST", R, body={"spec": "-j ACCEPT", "index": 2}, expect=400, body_valid=False, label="index in body")
    c.call("POST", R, body={"spec": "-j ACCEPT", "chain": "INPUT"}, expect=400, label="chain disagrees with route")
    c.call("POST", R, body={"spec": "-j ACCEPT", "ttl": 0}, expect=400, body_valid=False, label="ttl 0")
    c.call("POST", R, body={"spec": "-j ACCEPT", "id": "x1"}, expect=400, body_valid=False, label="id without owner")
    c.call("POST", R, body={"spec": "-j ACCEPT", "owner": "Bad"}, expect=400, body_valid=False, label="bad owner")
    c.call("POST", R, body={"spec": '-m comment --comment "iptkit:x:y" -j ACCEPT'}, expect=400,
           label="spec carrying an owner tag")
    c.call("POST", R, body={"spec": "-s 10.0.0.1 -j ACCEPT", "owner": "oapi"}, expect=400,
           label="owned rule in a foreign user chain")
    c.call("POST", I, body={"spec": "-s 10.0.0.1 -j ACCEPT", "owner": "oapi"}, query="position=3", expect=400,
           label="owned rule at position 3")
    c.call("POST", R, body={"spec": "-j ACCEPT"}, query="position=0", expect=400, label="position 0")
    c.call("POST", R, body={"spec": "-j ACCEPT"}, query="position=first", expect=400,
           label="position first for an unowned rule")
    c.call("POST", R, body={"spec": "-j ACCEPT"}, query="position=99", expect=400, label="position past the end")
    c.call("POST", R, body={"spec": "-j ACCEPT"}, query="position=1&position=2", expect=400,
           label="parameter given twice")
    c.call("POST", F + "/NOPE/rules", body={"spec": "-j ACCEPT"}, expect=404, label="missing chain")
    c.call("POST", R, body={"spec": "-j TNOPE"}, expect=404, label="missing jump target")
    c.call("POST", R, raw='{"spec":"-j ACCEPT"}', ctype="application/x-www-form-urlencoded", expect=415)

    r = c.call("GET", R, expect=200)
    if r is not None and r.status == 200:
        specs = [x["spec"] for x in r.json()["rules"]]
        if not specs or specs[0] != "-s 192.0.2.2/32 -j ACCEPT":
            c.fail("listRules", f"?position=1 should have put the structured rule first: {specs}")
    r = c.call("GET", I, expect=200, label="with managed rules")
    if r is not None and r.status == 200:
        managed = [x for x in r.json()["rules"] if x.get("managed")]
        if not any(x.get("expires_at") for x in managed) or not any(x["ttl_remaining"] is None for x in managed):
            c.fail("listRules", f"INPUT should show a TTL rule (expires_at) and a permanent managed rule: {managed}")
    c.call("GET", "/v1/ipv6/tables/nat/chains/POSTROUTING/rules", expect=200, label="ipv6 nat")
    c.call("GET", F + "/NOPE/rules", expect=404)
    c.call("GET", R, query="position=1", expect=400, label="parameter of POST")

    r = c.call("GET", R + "/1", expect=200)
    if r is not None and r.status == 200 and (r.json().get("chain") != "TCHAIN" or r.json().get("index") != 1):
        c.fail("getRule", f"GET rules/1 should carry chain TCHAIN and index 1: {r.body!r}")
    c.call("GET", R + "/99", expect=404, label="no rule there")
    c.call("GET", R + "/abc", expect=404, label="not a number")
    c.call("GET", R + "/0", expect=404, label="index 0")
    c.call("GET", F + "/NOPE/rules/1", expect=404, label="missing chain")

    # Counter rates: TCHAIN shows up with its rules at a later sample (every 200 ms here; the sampler runs at a
    # lower priority, so under load a sample taken before the rules were added can still be the latest one).
    end = time.monotonic() + 10
    r = None
    while time.monotonic() < end:
        r = c.call("GET", F + "/TCHAIN/rates", expect=(200, 404), label="rates (sampled)")
        if r is None or (r.status == 200 and r.json()["rules"]):
            break
        time.sleep(0.1)
    if r is not None and r.status == 200 and (not r.json()["rules"] or r.json()["rules"][0]["index"] != 1):
        c.fail("getChainRates", f"TCHAIN's rates should list its rules: {r.body!r}")
    c.call("GET", F + "/TCHAIN/rates", query="first=1&count=1", expect=200, label="a window")
    c.call("GET", F + "/TCHAIN/rates", query="first=0", expect=400, label="first 0")
    c.call("GET", F + "/NOPE/rates", expect=404, label="missing chain")
    c.call("GET", F + "/TCHAIN/rates", query="since=1", expect=400, label="unknown parameter")
    c.call("GET", F + "/TCHAIN/rates", token=None, expect=401)

    # Replace by position.
    c.call("PUT", R + "/1", body={"spec": "-s 192.0.2.20 -j ACCEPT", "expect": "-s 192.0.2.2/32 -j ACCEPT"},
           expect=200, label="replace with expect (string)")
    c.call("PUT", R + "/1", body={"spec": "-s 192.0.2.21 -j ACCEPT", "expect": {"spec": "-s 192.0.2.20 -j ACCEPT"}},
           expect=200, label="replace with expect (rule object)")
    c.call("PUT", R + "/1", body={"spec": "-s 192.0.2.22 -j ACCEPT"}, query="dry_run=1", expect=200, label="dry run")
    c.call("PUT", R + "/1", body={"spec": "-s 192.0.2.22 -j ACCEPT", "expect": "-s 192.0.2.99 -j ACCEPT"},
           expect=412, label="expect does not match")
    c.call("PUT", R + "/1", body={"spec": "-j ACCEPT", "owner": "oapi"}, expect=400, body_valid=False,
           label="owner in a replace")
    c.call("PUT", R + "/1", body={"spec": "-j ACCEPT", "expect": 5}, expect=400, body_valid=False,
           label="expect of the wrong type")
    c.call("PUT", R + "/99", body={"spec": "-j ACCEPT"}, expect=404, label="no rule there")
    c.call("PUT", R + "/x", body={"spec": "-j ACCEPT"}, expect=404, label="not a number")
    owned_index = None
    r = c.call("GET", I, expect=200, label="find an owned rule")
    if r is not None and r.status == 200:
        for x in r.json()["rules"]:
            if x.get("owner") == "oapi":
                owned_index = x["index"]
    if owned_index is None:
        c.fail("setup", "no rule of owner oapi in INPUT")
        owned_index = 1
    c.call("PUT", f"{I}/{owned_index}", body={"spec": "-j ACCEPT"}, expect=412, label="owned rule by position")
    c.call("PUT", R + "/1", token="reader", body={"spec": "-j ACCEPT"}, expect=403)
    c.call("PUT", R + "/1", raw="x", ctype="text/plain", expect=415)

    # Delete by position.
    c.call("DELETE", R + "/1", body={"expect": "-s 192.0.2.21 -j ACCEPT"}, expect=200, label="delete with expect")
    c.call("DELETE", R + "/1", query="dry_run=1", expect=200, label="dry run, no body")
    c.call("DELETE", R + "/1", body={"expect": "-s 192.0.2.99 -j ACCEPT"}, expect=412, label="expect mismatch")
    c.call("DELETE", R + "/1", body={"bogus": 1}, expect=400, body_valid=False, label="unknown field")
    c.call("DELETE", R + "/99", expect=404, label="no rule there")
    c.call("DELETE", f"{I}/{owned_index}", expect=412, label="owned rule by position")
    c.call("DELETE", R + "/1", token="reader", expect=403)

    # Delete by spec.
    c.call("POST", R, body={"spec": "-s 192.0.2.30 -j ACCEPT"}, expect=200, label="a rule to delete by spec")
    c.call("DELETE", R, body={"spec": "-s 192.0.2.30 -j ACCEPT"}, query="dry_run=1", expect=200, label="dry run")
    c.call("DELETE", R, body={"spec": "-s 192.0.2.30/32 -j ACCEPT"}, expect=200, label="delete by spec")
    c.call("DELETE", R, body={"spec": "-s 192.0.2.30 -j ACCEPT"}, expect=404, label="no such rule any more")
    c.call("DELETE", R, body={"spec": "-j ACCEPT", "ttl": 5}, expect=400, label="ttl on a delete")
    c.call("DELETE", R, expect=400, label="no body")
    c.call("DELETE", I, body={"spec": "-s 198.51.100.1 -j ACCEPT"}, expect=404,
           label="the spec without the tag matches no owned rule")
    c.call("DELETE", I, body={"spec": "-s 198.51.100.1 -j ACCEPT", "owner": "oapi"}, expect=200,
           label="owned delete")
    c.call("DELETE", I, body={"spec": "-s 198.51.100.1 -j ACCEPT", "owner": "oapi"}, expect=404,
           label="owned delete again")
    c.call("DELETE", R, token="reader", body={"spec": "-j ACCEPT"}, expect=403)
    c.call("DELETE", R, raw="x", ctype="text/plain", expect=415)

    # Tables and families.
    c.call("GET", "/v1/ipv4/tables/filter", expect=200)
    c.call("GET", "/v1/ipv6/tables/nat", expect=200)
    c.call("GET", "/v1/ipv4/tables/nope", expect=404, label="unknown table")
    c.call("GET", "/v1/ipv4/tables/filter", token=None, expect=401)
    c.call("GET", "/v1/ipv4", expect=200)
    c.call("GET", "/v1/ipv6", expect=200)
    c.call("GET", "/v1/ipv4", query="table=filter", expect=400)
    c.call("GET", "/v1/ipv5", expect=404, label="unknown family: no route")

    # Chain deletion.
    c.call("PUT", F + "/TREF", expect=200)
    c.call("POST", F + "/TREF/rules", body={"spec": "-j RETURN"}, expect=200)
    c.call("POST", R, body={"spec": "-j TREF"}, expect=200, label="a jump to TREF")
    c.call("DELETE", F + "/TREF", expect=412, label="not empty and referenced")
    c.call("DELETE", F + "/TREF", query="cascade=1&dry_run=1", expect=200, label="dry run")
    c.call("DELETE", F + "/TREF", query="cascade=yes", expect=200, label="cascade")
    c.call("DELETE", F + "/TREF", expect=404, label="gone")
    c.call("DELETE", F + "/TCHAIN", body={}, expect=400, label="with a body")
    c.call("DELETE", F + "/TCHAIN", query="cascade=2", expect=400, label="bad boolean")
    c.call("DELETE", F + "/TCHAIN", token="reader", expect=403)
    c.call("DELETE", F + "/TCHAIN", raw="x", ctype="text/plain", expect=415)

    # ---- Transactions ----
    tx = {"ops": [
        {"create_chain": {"chain": "TXA"}},
        {"append": {"chain": "TXA", "rule": {"spec": "-p udp --dport 53 -j ACCEPT"}}},
        {"append": {"chain": "TXA", "rule": {"spec": "-j RETURN", "counters": {"packets": 0}}}},
        {"insert": {"family": "ipv4", "table": "filter", "chain": "INPUT", "index": 1,
                    "rule": {"spec": "-s 203.0.113.0/24 -j ACCEPT", "owner": "oapi", "id": "tx1"}}},
        {"append": {"chain": "INPUT", "rule": {"spec": "-s 203.0.113.9 -j DROP", "owner": "oapi", "ttl": 600}}},
        {"policy": {"chain": "FORWARD", "policy": "ACCEPT"}},
        {"zero": {}},
        {"append": {"family": "ipv6", "chain": "TCHAIN6", "rule": {"spec": "-s 2001:db8::1 -j ACCEPT"}}},
    ]}
    c.call("POST", "/v1/transactions", body=tx, query="dry_run=1", expect=200, label="dry run (query)")
    c.call("POST", "/v1/transactions", body=dict(tx, dry_run=True), expect=200, label="dry run (body)")
    c.call("POST", "/v1/transactions", body=tx, expect=200, label="every kind of add")
    tx2 = {"ops": [
        {"append": {"chain": "TXA", "rule": {"spec": "-s 203.0.113.1 -j ACCEPT"}}},
        {"replace": {"chain": "TXA", "index": 3, "rule": {"spec": "-s 203.0.113.2 -j ACCEPT"},
                     "expect": {"spec": "-s 203.0.113.1 -j ACCEPT"}}},
        {"delete": {"chain": "TXA", "index": 3, "expect": {"spec": "-s 203.0.113.2 -j ACCEPT"}}},
        {"delete": {"chain": "TXA", "rule": {"spec": "-p udp -m udp --dport 53 -j ACCEPT"}}},
        {"delete": {"chain": "INPUT", "rule": {"spec": "-s 203.0.113.9 -j DROP", "owner": "oapi"}}},
        {"flush": {"chain": "TXA"}},
        {"rename_chain": {"chain": "TXA", "new_name": "TXB"}},
    ]}
    c.call("POST", "/v1/transactions", body=tx2, expect=200, label="replace, deletes, flush, rename")
    # A chain renamed in a commit cannot be used again in it on iptables-nft 1.8.9 (400 naming the op).
    c.call("POST", "/v1/transactions", body={"ops": [{"delete_chain": {"chain": "TXB", "cascade": True}}]},
           expect=200, label="delete_chain")
    c.call("POST", "/v1/transactions", body={"ops": [{"create_chain": {"chain": "TCHAIN"}}]}, expect=409,
           label="create an existing chain")
    c.call("POST", "/v1/transactions", body={"ops": []}, expect=400, body_valid=False, label="no ops")
    c.call("POST", "/v1/transactions", body={}, expect=400, body_valid=False, label="ops missing")
    c.call("POST", "/v1/transactions", body={"ops": [{"bogus": {}}]}, expect=400, body_valid=False,
           label="unknown verb")
    c.call("POST", "/v1/transactions", body={"ops": [{"append": {"chain": "TCHAIN"}}]}, expect=400,
           body_valid=False, label="append without rule")
    c.call("POST", "/v1/transactions", body={"ops": [{"delete": {"chain": "TCHAIN", "index": 1,
                                                                  "rule": {"spec": "-j ACCEPT"}}}]},
           expect=400, body_valid=False, label="delete with rule and index")
    c.call("POST", "/v1/transactions", body={"ops": [{"insert": {"chain": "INPUT", "index": 2, "rule": {
        "spec": "-j ACCEPT", "owner": "oapi"}}}]}, expect=400, label="owned insert at 2")
    c.call("POST", "/v1/transactions", body={"ops": [{"flush": {}}], "confirm_within": 5, "dry_run": True},
           expect=400, label="confirm_within with dry_run")
    c.call("POST", "/v1/transactions", body={"ops": [{"flush": {}}], "extra": 1}, expect=400, body_valid=False,
           label="unknown member")
    c.call("POST", "/v1/transactions", body={"ops": [{"append": {"chain": "NOPE", "rule": {"spec": "-j ACCEPT"}}}]},
           expect=404, label="missing chain")
    r = c.call("POST", "/v1/transactions", body={"ops": [{"delete": {"chain": "TCHAIN", "index": 1, "expect": {
        "spec": "-s 192.0.2.99 -j ACCEPT"}}}]}, expect=412, label="expect mismatch")
    if r is not None and r.status == 412 and r.json()["error"]["details"].get("field") != "/ops/0":
        c.warn("postTransaction", f"a failing op should be named by details.field /ops/0: {r.body!r}")
    c.call("POST", "/v1/transactions", token="reader", body={"ops": [{"flush": {}}]}, expect=403)
    c.call("POST", "/v1/transactions", token="natonly", body={"ops": [{"flush": {"table": "filter"}}]}, expect=403,
           label="table scope")
    c.call("POST", "/v1/transactions", raw="x", ctype="text/plain", expect=415)
    c.call("POST", "/v1/transactions", raw="x" * (BIG_BODY_LIMIT + 1), expect=413)

    # Commit-confirm.
    r = c.call("POST", "/v1/transactions", body={"ops": [{"append": {"chain": "TCHAIN", "rule": {
        "spec": "-s 192.0.2.40 -j ACCEPT"}}}], "confirm_within": 120}, expect=200, label="with confirm_within")
    txid = None
    if r is not None and r.status == 200:
        res = r.json()
        txid = res.get("transaction")
        if res.get("confirm_url") != f"/v1/transactions/{txid}/confirm" or "confirm_deadline" not in res:
            c.fail("postTransaction", f"confirm_within result lacks confirm_url/confirm_deadline: {r.body!r}")
    txid = txid or "t-missing"
    r = c.call("GET", f"/v1/transactions/{txid}", expect=200, label="pending")
    if r is not None and r.status == 200 and r.json()["state"] != "pending":
        c.fail("getTransaction", f"expected state pending: {r.body!r}")
    c.call("POST", f"/v1/transactions/{txid}/confirm", body={"x": 1}, expect=400, body_valid=False,
           label="a body other than {}")
    c.call("POST", f"/v1/transactions/{txid}/confirm", raw="x", ctype="text/plain", expect=415)
    c.call("POST", f"/v1/transactions/{txid}/confirm", token="reader", expect=403)
    r = c.call("POST", f"/v1/transactions/{txid}/confirm", body={}, expect=200, label="confirm")
    if r is not None and r.status == 200 and r.json()["state"] != "confirmed":
        c.fail("confirmTransaction", f"expected state confirmed: {r.body!r}")
    c.call("POST", f"/v1/transactions/{txid}/confirm", expect=404, label="confirmed already")
    c.call("POST", "/v1/transactions/t-0000/confirm", expect=404, label="unknown")
    c.call("POST", "/v1/transactions/t-0000/confirm", query="dry_run=1", expect=400, label="unknown parameter")
    r = c.call("GET", f"/v1/transactions/{txid}", expect=200, label="confirmed")
    if r is not None and r.status == 200 and (r.json()["state"] != "confirmed" or r.json()["resolved_at"] is None):
        c.fail("getTransaction", f"expected state confirmed with resolved_at: {r.body!r}")
    c.call("GET", "/v1/transactions/t-0000", expect=404, label="unknown")
    c.call("GET", f"/v1/transactions/{txid}", query="x=1", expect=400)
    c.call("GET", f"/v1/transactions/{txid}", token="writer", expect=403)

    # ---- Owners ----
    doc = {"family": "ipv4",
           "chains": [{"table": "filter", "name": "SVC-IN",
                       "rules": [{"spec": "-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT"},
                                 {"src": {"addr": "10.1.0.0/16"}, "target": {"name": "ACCEPT"}},
                                 {"spec": "-j RETURN"}]}],
           "hooks": [{"table": "filter", "chain": "INPUT", "position": "first", "spec": "-j SVC-IN"}]}
    c.call("PUT", "/v1/owners/svc", body=doc, query="dry_run=1", expect=200, label="dry run")
    c.call("PUT", "/v1/owners/svc", body=dict(doc, owner="svc"), expect=200, label="apply a document")
    r = c.call("GET", "/v1/owners/svc", expect=200)
    if r is not None and r.status == 200 and (not r.json()["in_sync"] or r.json()["document"] is None):
        c.fail("getOwner", f"after PUT the owner should be in sync and have a document: {r.body!r}")
    r = c.call("GET", "/v1/owners", expect=200)
    if r is not None and r.status == 200:
        names = [o["owner"] for o in r.json()["owners"]]
        if "svc" not in names or "oapi" not in names:
            c.fail("listOwners", f"owners svc and oapi should be listed: {names}")
    c.call("PUT", "/v1/owners/svc", body=dict(doc, owner="other"), expect=400, label="owner differs from URL")
    c.call("PUT", "/v1/owners/svc", body={"chains": [{"name": "NOPREFIX", "rules": []}]}, expect=400,
           label="chain without the owner's prefix")
    c.call("PUT", "/v1/owners/svc", body={"family": "ipv4"}, expect=400, body_valid=False, label="chains missing")
    c.call("PUT", "/v1/owners/svc", body={"chains": [], "family": "ipv5"}, expect=400, body_valid=False,
           label="bad family")
    c.call("PUT", "/v1/owners/svc", body={"chains": [{"name": "SVC-X", "rules": [{"spec": "-j ACCEPT",
                                                                                   "counters": {}}]}]},
           expect=400, body_valid=False, label="counters in a document rule")
    c.call("PUT", "/v1/owners/svc", body=doc, query="dry_run=1&confirm_within=30", expect=400,
           label="dry_run with confirm_within")
    c.call("PUT", "/v1/owners/svc", body=doc, query="confirm_within=0", expect=400, label="confirm_within 0")
    c.call("PUT", "/v1/owners/BAD", body={"chains": []}, expect=404, label="invalid owner name")
    # svc's token has a TTL bound: documents are permanent state, so it may not replace one, not even its owner's.
    c.call("PUT", "/v1/owners/svc", token="svc", body=doc, expect=403, label="ttl-bounded token, its owner")
    c.call("PUT", "/v1/owners/other", token="svc", body={"chains": []}, expect=403, label="another owner")
    c.call("PUT", "/v1/owners/svc", token="reader", body=doc, expect=403)
    c.call("PUT", "/v1/owners/svc", raw="x", ctype="text/plain", expect=415)
    r = c.call("PUT", "/v1/owners/svc", body=doc, query="confirm_within=120", expect=200, label="commit-confirm")
    if r is not None and r.status == 200 and "confirm_url" not in r.json():
        c.fail("putOwner", f"confirm_within without confirm_url: {r.body!r}")
    elif r is not None and r.status == 200:
        c.call("POST", r.json()["confirm_url"], expect=200, label="confirm the owner change")
    c.call("GET", "/v1/owners/nobody", expect=404, label="no state")
    c.call("GET", "/v1/owners/BAD", expect=404, label="invalid owner name")
    c.call("GET", "/v1/owners", query="owner=svc", expect=400)
    c.call("GET", "/v1/owners", token="writer", expect=403)
    c.call("DELETE", "/v1/owners/svc", query="dry_run=1", expect=200, label="dry run")
    c.call("DELETE", "/v1/owners/svc", body={}, expect=400, label="with a body")
    c.call("DELETE", "/v1/owners/svc", token="reader", expect=403)
    c.call("DELETE", "/v1/owners/svc", raw="x", ctype="text/plain", expect=415)
    c.call("DELETE", "/v1/owners/svc", expect=200)
    c.call("DELETE", "/v1/owners/svc", expect=404, label="gone")
    c.call("DELETE", "/v1/owners/BAD", expect=404, label="invalid owner name")

    # ---- Sets (the kernel's: only in the private namespace; a daemon on the fake backend answers 503) ----
    S = "/v1/sets"
    if not ns:
        c.call("GET", S, expect=503, label="fake backend: no sets")
    else:
        c.call("GET", S, expect=200)
        c.call("POST", S, body={"name": "oset", "type": "hash:ip", "options": {"timeout": 0, "comment": True}},
               expect=201)
        c.call("POST", S, body={"name": "oset2", "type": "hash:ip", "options": {"timeout": 0}}, expect=201)
        c.call("POST", S, body={"name": "odry", "type": "hash:net"}, query="dry_run=1", expect=200, label="dry run")
        c.call("POST", S, body={"name": "oset", "type": "hash:ip"}, expect=409, label="exists")
        c.call("POST", S, body={"name": "x", "type": "hash:nope"}, expect=400, label="unknown type")
        c.call("POST", S, body={"name": "x", "type": "hash:ip", "options": {"frob": 1}}, expect=400,
               body_valid=False, label="unknown option")
        c.call("POST", S, body={"name": "x"}, expect=400, body_valid=False, label="type missing")
        c.call("POST", S, raw="x", ctype="text/plain", expect=415)
        c.call("POST", S, token="reader", body={"name": "y", "type": "hash:ip"}, expect=403)
        c.call("GET", S, query="entries=1", expect=200, label="with entries")
        c.call("GET", S, token="writer", expect=403)
        c.call("POST", S + "/oset/entries", body={"entry": "192.0.2.7", "timeout": 600, "comment": "ids"}, expect=200)
        c.call("POST", S + "/oset/entries", body={"entry": "192.0.2.8"}, query="dry_run=1", expect=200,
               label="dry run")
        c.call("POST", S + "/oset/entries", body={"entry": "192.0.2.7", "no_refresh": True}, expect=409,
               label="no_refresh")
        c.call("POST", S + "/oset/entries", body={"entry": "nonsense"}, expect=400, label="bad entry")
        c.call("POST", S + "/oset/entries", body={"entry": "192.0.2.9", "timeout": 2147484}, expect=400,
               body_valid=False, label="timeout too long")
        c.call("POST", S + "/nosuch/entries", body={"entry": "192.0.2.9"}, expect=404)
        c.call("POST", S + "/oset/entries", token="svc", body={"entry": "192.0.2.9", "timeout": 30}, expect=403,
               label="owner-scoped token")
        c.call("GET", S + "/oset", expect=200)
        c.call("GET", S + "/oset", query="entries=0", expect=200, label="header only")
        c.call("GET", S + "/nosuch", expect=404)
        c.call("GET", S + "/oset/test", query={"entry": "192.0.2.7"}, expect=200)
        c.call("GET", S + "/oset/test", query={"entry": "192.0.2.99"}, expect=200, label="absent")
        c.call("GET", S + "/oset/test", expect=400, label="entry missing")
        c.call("DELETE", S + "/oset/entries", body={"entry": "192.0.2.7"}, expect=200)
        c.call("DELETE", S + "/oset/entries", body={"entry": "192.0.2.7"}, expect=404, label="gone")
        c.call("POST", S + "/oset/load", body=["192.0.2.1", {"entry": "192.0.2.2", "timeout": 60}], expect=200)
        c.call("POST", S + "/oset/load", raw="192.0.2.3\n192.0.2.4 timeout 5\n", ctype="text/plain", expect=200,
               label="restore text")
        c.call("POST", S + "/oset/load", body={"entries": ["192.0.2.5"]}, query="dry_run=1&grow=1", expect=200,
               label="dry run")
        c.call("POST", S + "/oset/load", body=["192.0.2.6", "bogus"], expect=400, label="bad entry")
        c.call("POST", S + "/oset/load", raw="<x/>", ctype="application/xml", expect=415)
        c.call("POST", S + "/oset/sync", body=["192.0.2.1", "192.0.2.10"], expect=200)
        c.call("POST", S + "/oset/sync", raw="192.0.2.10\n", ctype="text/plain", query="mode=minimal", expect=200,
               label="minimal")
        c.call("POST", S + "/oset/sync", body=[], query="mode=fast", expect=400, label="bad mode")
        c.call("POST", S + "/oset/swap", body={"with": "oset2"}, expect=200)
        c.call("POST", S + "/oset/swap", body={"with": "nosuch"}, expect=404, label="no such set")
        c.call("POST", S + "/oset2/rename", body={"to": "oset3"}, expect=200)
        c.call("POST", S + "/oset3/rename", body={"to": "oset"}, expect=409, label="exists")
        c.call("POST", S + "/oset3/flush", expect=200)
        c.call("POST", S + "/oset3/flush", query="dry_run=1", expect=200, label="dry run")
        c.call("POST", I, body={"spec": "-m set --match-set oset src -j DROP"}, expect=200, label="uses a set")
        c.call("DELETE", S + "/oset", expect=412, label="referenced")
        c.call("DELETE", S + "/oset", query="cascade=1&dry_run=1", expect=200, label="cascade dry run")
        c.call("DELETE", S + "/oset", query="cascade=1", expect=200, label="cascade")
        c.call("DELETE", S + "/oset3", expect=200)
        c.call("DELETE", S + "/oset3", expect=404, label="gone")

    # ---- Events ----
    conn, stream = c.open_events()
    if stream.status == 200:
        c.call("POST", R, body={"spec": "-s 192.0.2.50 -j ACCEPT"}, headers={"X-Request-Id": "oapi-event-1"},
               expect=200, label="a change for the event stream")
        # The first frame after the change; the daemon's own work (a drift repair, ...) could come first, so a
        # few frames are read looking for the commit of this request.
        found = None
        for _ in range(5):
            frame = c.check_frame(c.read_frame(stream, "getEvents (from now)"), "getEvents (from now)")
            if frame is None:
                break
            if frame["event"] == "commit" and frame["json"].get("request_id") == "oapi-event-1":
                found = frame
                break
            c.warn("getEvents", f"an event before the commit of oapi-event-1: {frame['event']}")
        if found is None:
            c.fail("getEvents", "no commit event for request oapi-event-1 on a stream opened before it")
        last_id = int(found["id"]) if found else 2
    else:
        last_id = 2
    conn.close()
    conn, stream = c.open_events(query="after=0")
    if stream.status == 200:
        frame = c.check_frame(c.read_frame(stream, "getEvents ?after=0"), "getEvents ?after=0")
        if frame and frame["id"] != "1":
            c.fail("getEvents", f"?after=0 should replay from id 1, got {frame['id']}")
    conn.close()
    conn, stream = c.open_events(headers={"Last-Event-ID": str(last_id - 1)})
    if stream.status == 200:
        frame = c.check_frame(c.read_frame(stream, "getEvents Last-Event-ID"), "getEvents Last-Event-ID")
        if frame and frame["id"] != str(last_id):
            c.fail("getEvents", f"Last-Event-ID {last_id - 1} should resume at {last_id}, got {frame['id']}")
    conn.close()
    # Timers: a rule with a 1 s TTL and an unconfirmed 1 s commit-confirm; both show up as events.
    conn, stream = c.open_events()
    if stream.status == 200:
        c.call("POST", I, body={"spec": "-s 192.0.2.60 -j ACCEPT", "ttl": 1}, expect=200, label="1 s TTL")
        r = c.call("POST", "/v1/transactions", body={"ops": [{"append": {"chain": "TCHAIN", "rule": {
            "spec": "-s 192.0.2.61 -j ACCEPT"}}}], "confirm_within": 1}, expect=200, label="confirm_within 1")
        rolled_tx = r.json().get("transaction") if r is not None and r.status == 200 else None
        want = {"ttl_expired", "confirm_rolled_back"}
        end = time.monotonic() + 15
        while want and time.monotonic() < end:
            frame = c.check_frame(c.read_frame(stream, "getEvents (timers)", deadline_s=15),
                                  "getEvents (timers)")
            if frame is None:
                break
            want.discard(frame["event"])
        if want:
            c.fail("getEvents", f"no {sorted(want)} event within 15 s")
        if rolled_tx:
            r = c.call("GET", f"/v1/transactions/{rolled_tx}", expect=200, label="rolled back")
            if r is not None and r.status == 200 and r.json()["state"] != "rolled_back":
                c.fail("getTransaction", f"an unconfirmed transaction should be rolled_back: {r.body!r}")
    conn.close()
    c.call("GET", "/v1/events", query="after=abc", expect=400, label="bad after")
    c.call("GET", "/v1/events", headers={"Last-Event-ID": "x"}, expect=400, label="bad Last-Event-ID")
    c.call("GET", "/v1/events", query="since=1", expect=400, label="unknown parameter")
    c.call("GET", "/v1/events", token=None, expect=401)
    c.call("GET", "/v1/events", token="writer", expect=403)

    # ---- Audit ----
    r = c.call("GET", "/v1/audit", expect=200)
    if r is not None and r.status == 200 and not r.json()["entries"]:
        c.fail("getAudit", "the audit log is empty after many changes")
    r = c.call("GET", "/v1/audit", query="limit=2", expect=200, label="first page")
    if r is not None and r.status == 200:
        page = r.json()
        nb = page["next_before"]
        if len(page["entries"]) != 2 or nb is None:
            c.fail("getAudit", f"limit=2 should give 2 entries and a next_before: {r.body[:300]!r}")
        else:
            r2 = c.call("GET", "/v1/audit", query=f"limit=2&before={nb}", expect=200, label="next page")
            if r2 is not None and r2.status == 200 and any(e["id"] >= nb for e in r2.json()["entries"]):
                c.fail("getAudit", f"entries of page before={nb} must have smaller ids: {r2.body[:300]!r}")
    r = c.call("GET", "/v1/audit", query="request_id=oapi-owned-1", expect=200, label="by request id")
    if r is not None and r.status == 200:
        es = r.json()["entries"]
        if len(es) != 1 or es[0]["result"] != "ok" or es[0]["action"] != "append":
            c.fail("getAudit", f"request oapi-owned-1 should be audited once as an ok append: {es}")
    c.call("GET", "/v1/audit", query={"principal": "token:admin", "result": "error", "action": "transaction",
                                      "since": "2020-01-01T00:00:00Z", "until": str(int(time.time() * 1000) + 1000)},
           expect=200, label="filters")
    c.call("GET", "/v1/audit", query="since=2020-01-01T00:00:00.123Z&result=NOT_FOUND", expect=200)
    c.call("GET", "/v1/audit", query="limit=0", expect=400)
    c.call("GET", "/v1/audit", query="limit=1001", expect=400)
    c.call("GET", "/v1/audit", query="before=0", expect=400)
    c.call("GET", "/v1/audit", query="since=yesterday", expect=400)
    c.call("GET", "/v1/audit", query="result=bogus", expect=400)
    c.call("GET", "/v1/audit", query="limit=1&limit=2", expect=400, label="given twice")
    c.call("GET", "/v1/audit", query="api_key=x", expect=400, label="api_key in the URL")
    c.call("GET", "/v1/audit", token="writer", expect=403)
    c.call("GET", "/v1/audit", token=None, expect=401)

    # ---- Unknown paths, methods not in the spec, OPTIONS ----
    for path in ("/", "/v1", "/v2/ipv4", "/v1/nope", "/v1/ipv4/tables", "/v1/ipv4/tables/filter/chains",
                 "/healthz/x", "/v1/owners/a/b", "/v1/ipv4/tables/filter/chains/INPUT/rules/1/x"):
        for method in ("GET", "POST"):
            c.call(method, path, expect=404, label="not in the spec")
    samples = {"{family}": "ipv4", "{table}": "filter", "{chain}": "TCHAIN", "{index}": "1", "{owner}": "oapi",
               "{id}": "t-0000", "{set}": "oset"}
    for template in c.spec.doc["paths"]:
        concrete = template
        for k, v in samples.items():
            concrete = concrete.replace(k, v)
        for method in METHODS:
            if (template, method) not in c.spec.ops:
                c.call(method, concrete, expect=405, label="method not in the spec")
        c.call("OPTIONS", concrete, token=None, label="OPTIONS")
    # Methods the HTTP layer does not route: 400 bad_request from httplib itself, with the usual headers (the
    # request id is echoed when httplib got as far as the headers: not for a method it cannot parse).
    for method in ("TRACE", "FOO"):
        conn = http.client.HTTPConnection(c.host, c.port, timeout=15)
        c.requests += 1
        conn.request(method, "/v1/version", headers={"Authorization": "Bearer " + c.tokens["admin"],
                                                     "X-Request-Id": "oapi-trace"})
        r = conn.getresponse()
        resp = Response(r.status, r.headers, r.read())
        conn.close()
        c.check_response(c.spec.components["responses"]["BadRequest"], resp, f"{method} /v1/version (unknown "
                         f"method)", want_status=400)
        if method == "TRACE" and resp.header("X-Request-Id") != "oapi-trace":
            c.fail(f"{method} /v1/version", f"X-Request-Id not echoed: {resp.header('X-Request-Id')!r}")


def run_limits(c, d):
    """Rate limit and max_ops on a second (fake-backend) daemon."""
    for _ in range(4):
        c.call("GET", "/healthz", token=None, expect=200, label="not rate limited")
    statuses = [c.call("GET", "/v1/version", token="lim", label="burst").status for _ in range(3)]
    if statuses.count(200) < 2:
        c.fail("rate limit", f"the first requests of a burst of 3 should pass: {statuses}")
    r = c.call("GET", "/v1/version", token="lim", expect=429, label="over the rate")
    if r is not None and r.status == 429 and r.json()["error"]["details"].get("retry_after") != int(
            r.header("Retry-After") or 0):
        c.fail("rate limit", "details.retry_after differs from Retry-After")
    c.call("GET", "/v1/ipv4", token="lim", expect=429, label="over the rate")
    c.call("GET", "/metrics", token="lim", expect=429, label="over the rate")
    c.call("POST", "/v1/transactions", token="lim", body={"ops": [{"flush": {}}]}, expect=429,
           label="over the rate")
    c.call("GET", "/v1/version", token="ops", expect=200, label="another principal has its own bucket")
    c.call("POST", "/v1/transactions", token="ops", body={"ops": [{"zero": {}}, {"zero": {}}, {"zero": {}}]},
           expect=400, label="more ops than max_ops")
    c.call("PUT", "/v1/owners/lim", token="ops2", body={"chains": [{"name": "LIM-A", "rules": [
        {"spec": "-j ACCEPT"}, {"spec": "-j ACCEPT"}, {"spec": "-j ACCEPT"}]}]}, expect=400,
           label="more rules than max_ops")


# ---------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iptkitd", required=True, help="the iptkitd binary")
    ap.add_argument("--spec", required=True, help="docs/openapi.yaml")
    ap.add_argument("--api-source", required=True, help="src/rest/api.cc (its route table)")
    ap.add_argument("--fake", action="store_true", help="use --backend fake even as root")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = ap.parse_args()

    # ctest's timeout and ^C: clean up (daemons, namespace) on the way out.
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    try:
        spec = Spec(args.spec)
    except (OSError, yaml.YAMLError, Fatal) as e:
        print(f"openapi_test: cannot load the spec: {e}", file=sys.stderr)
        return 1
    try:
        jsonschema.Draft202012Validator.check_schema({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                                      "components": spec.components})
        for name, schema in spec.components.get("schemas", {}).items():
            jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        print(f"openapi_test: invalid JSON schema in the spec: {e.message} at "
              f"{'/'.join(str(p) for p in e.absolute_path)}", file=sys.stderr)
        return 1

    route_problems, n_routes = check_route_table(spec, args.api_source)

    workdir = tempfile.mkdtemp(prefix="iptkit-openapi-")
    netns = None
    daemons = []
    checkers = []
    rc = 1
    try:
        if os.geteuid() == 0 and not args.fake and shutil.which("ip"):
            netns = f"iptkit-oapi-{os.getpid()}"
            out = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise Fatal(f"ip netns add {netns}: {out.stderr.strip()}")
        main_tokens = [("admin", ["read", "write"], None), ("reader", ["read"], None),
                       ("writer", ["write"], None), ("svc", ["read", "write", "owner:svc"], 60),
                       ("natonly", ["read", "write", "table:nat"], None)]
        d = Daemon(args.iptkitd, workdir, "main", netns=netns, tokens=main_tokens,
                   extra=["--max-body-bytes", str(BIG_BODY_LIMIT), "--rate-limit", "0", "--max-ops", "100"])
        daemons.append(d)
        d.start()
        print(f"iptkitd {d.info['backend']} backend, netns {d.info['netns'] or '(own)'}, {d.base}", flush=True)
        c = Checker(spec, d.base, d.tokens)
        checkers.append(c)
        run_main(c, d)

        lim = Daemon(args.iptkitd, workdir, "limits",
                     tokens=[("lim", ["read", "write"], None), ("ops", ["read", "write"], None),
                             ("ops2", ["read", "write"], None)],
                     extra=["--rate-limit", "0.1", "--rate-burst", "3", "--max-ops", "2"])
        daemons.append(lim)
        lim.start()
        cl = Checker(spec, lim.base, lim.tokens)
        checkers.append(cl)
        run_limits(cl, lim)

        # Every operation had a success.
        seen = collections.defaultdict(collections.Counter)
        for ch in checkers:
            for k, v in ch.seen.items():
                seen[k].update(v)
        missing = []
        for (template, method), op in sorted(spec.ops.items()):
            statuses = seen.get((template, method), {})
            if netns is None and template.startswith("/v1/sets"):
                continue  # the fake backend serves no sets (503)
            if not any(200 <= s < 300 for s in statuses):
                missing.append(f"{op.get('operationId')} ({method} {template}): no successful request "
                               f"(got {dict(statuses)})")
        failures = route_problems + missing + [f for ch in checkers for f in ch.failures]
        for d_ in daemons:
            if d_.proc.poll() is not None:
                failures.append(f"iptkitd ({d_.dir}) died with {d_.proc.returncode}:\n{d_.tail()}")
        warnings = [w for ch in checkers for w in ch.warnings]

        n_requests = sum(ch.requests for ch in checkers)
        print()
        print("operation                      requests  statuses")
        for (template, method), op in sorted(spec.ops.items(), key=lambda kv: kv[0]):
            statuses = seen.get((template, method), {})
            print(f"  {op.get('operationId', method + ' ' + template):28} {sum(statuses.values()):5}   "
                  + " ".join(f"{s}x{n}" for s, n in sorted(statuses.items())))
        not_in_spec = sum(sum(v.values()) for k, v in seen.items() if k not in spec.ops)
        print(f"  (methods not in the spec: {not_in_spec} requests, all expected 405)")
        for w in warnings:
            print(f"WARNING {w}")
        print(f"\n{len(spec.ops)} operations on {len(spec.doc['paths'])} paths checked ({n_routes} routes in "
              f"{os.path.basename(args.api_source)}), {n_requests} requests, {len(failures)} problem(s); backend "
              f"{daemons[0].info['backend']}{', netns ' + netns if netns else ''}")
        if failures:
            print("\nPROBLEMS:")
            for f in failures:
                print(f"  - {f}")
            rc = 1
        else:
            print("OK: iptkitd conforms to", args.spec)
            rc = 0
    except Fatal as e:
        print(f"openapi_test: {e}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt as e:
        print(f"openapi_test: interrupted ({e})", file=sys.stderr)
        rc = 1
    finally:
        for d_ in daemons:
            try:
                d_.stop()
            except Exception as e:  # keep cleaning up
                print(f"openapi_test: stopping iptkitd: {e}", file=sys.stderr)
        if netns:
            out = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                print(f"openapi_test: ip netns del {netns}: {out.stderr.strip()}", file=sys.stderr)
        if rc != 0 and daemons:
            for d_ in daemons:
                print(f"--- {d_.log_path} (last lines)\n{d_.tail(15)}", file=sys.stderr)
        if args.keep or rc != 0:
            print(f"openapi_test: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
