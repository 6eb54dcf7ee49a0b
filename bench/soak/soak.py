#!/usr/bin/env python3
"""Soak test: Portcullis in a real Envoy (two worker VMs) under steady load while its identity
provider rotates keys, is flooded with random kids, goes down three ways and serves garbage.

Everything runs on 127.0.0.1: the echo upstream, a fault-injecting fake IdP (idp.py) that the
plugin's remote_jwks provider fetches from, Envoy with `--concurrency 2`, and wrk, one process
per class of traffic (valid tokens, tokens of a freshly rotated key, forged tokens with random
kids), so every answer is attributed to its class and its phase. Per phase it prints the
requests, the non-2xx answers by status, the slowest answer per class, the IdP callouts, and
whether a plugin VM crashed or was reloaded; then PASS/FAIL per target. Exit status 1 when a
target fails, 2 when the run could not be made.

    bench/soak/run             # the full run, about 8 minutes
    bench/soak/run --short     # about 2 minutes, the same phases scaled down
    .venv/bin/python bench/soak/soak.py --help
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "bench" / "envoy"), str(REPO / "scripts")]

import mint  # noqa: E402  (scripts/mint.py)
import wrk_runner  # noqa: E402  (bench/envoy/wrk_runner.py)
from envoy_runner import DEFAULT_WASM, EnvoyError, EnvoyProcess, find_envoy  # noqa: E402
from idp import FakeIdp  # noqa: E402
from run import machine_info, unwind_on_signals  # noqa: E402  (bench/envoy/run.py)

LUA = HERE / "stream.lua"
ECHO_UPSTREAM = REPO / "examples" / "envoy" / "echo_upstream.py"
ISSUER = "https://issuer.soak.test"
AUDIENCE = "soak-api"
PATH = "/api/items"
PROXIES = 1  # Envoys in front of the IdP: the callout budget is per proxy
CALLOUTS_PER_FLOOD = 3  # the target: IdP callouts during a kid flood, per proxy
CALLOUT_TIMEOUT_MS = 2000
WRK_TIMEOUT_S = 30  # far past any hold the plugin may make: a slow answer is measured, not dropped
TOKENS_PER_KEY = 40  # distinct valid tokens (users) per signing key
READY_TIMEOUT = 120.0  # V8 compiles the plugin at start; slow on a busy 2-core machine
# A crashed or trapped plugin VM: a Rust panic (the plugin logs it before the trap), V8's
# report of a failed callback, or Envoy's own VM failure messages.
CRASH_LINE = re.compile(r"panicked|Function: proxy_on_\w+ failed|Uncaught|wasm vm (failed|crash)"
                        r"|Wasm VM failed|failed to (load|start) Wasm", re.IGNORECASE)
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")
REASON = re.compile(r"portcullis decision .*?status=(\d+) .*?reason=(\w+)")


# --- the plan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Seconds per phase, and the two plugin settings the phases are timed against.

    - `kid_window` is the policy's unknown_kid_refetch_seconds (15, the default, in the full
      run; scaled down with the phases in the short one). A kid's hold is at most the window
      plus the callout timeout and a second, well inside WRK_TIMEOUT_S. The rotation phase outlasts it, so the
      flood opens a window of its own; the flood before the second rotation is shorter than it,
      so that rotation lands inside the window the flood opened: the case of issue 12's
      finding 2.
    - `refresh` is the IdP's max-age and the policy's refresh_seconds: long enough that a kid
      flood contains at most one scheduled refresh, short enough that the outage and the
      garbage phases contain scheduled fetches (besides the re-fetches the trickle of random
      kids may earn, one per kid_window)."""
    steady: int
    rotation: int
    flood: int  # the flood right before the second rotation
    rotation_after_flood: int
    flood_after_outage: int
    outage: int  # each of the three flavours
    garbage: int  # each of the two flavours
    health: int
    refresh: int
    kid_window: int


FULL = Timing(steady=30, rotation=35, flood=12, rotation_after_flood=30, flood_after_outage=30,
              outage=60, garbage=30, health=30, refresh=60, kid_window=15)
SHORT = Timing(steady=6, rotation=11, flood=7, rotation_after_flood=6, flood_after_outage=8,
               outage=10, garbage=8, health=8, refresh=8, kid_window=10)


@dataclass(frozen=True)
class Stream:
    """One class of traffic in one phase: a wrk process over a token file."""
    cls: str  # "valid", "new-kid" or "forged"
    connections: int
    delay_ms: int


VALID = Stream("valid", connections=4, delay_ms=20)  # ~190 req/s
NEW_KID = Stream("new-kid", connections=2, delay_ms=50)  # ~40 req/s, from the rotation on
FLOOD = Stream("forged", connections=4, delay_ms=15)  # ~250 req/s, every token a new random kid
TRICKLE = Stream("forged", connections=1, delay_ms=250)  # ~4 req/s of random kids
VALID_CLASSES = ("valid", "new-kid")


@dataclass(frozen=True)
class Phase:
    name: str
    description: str
    seconds: int
    idp_mode: str
    streams: tuple[Stream, ...]
    rotate_to: str | None = None  # publish this new key at the start; new-kid tokens use it
    flood: bool = False  # the callout target applies
    immediate: bool = False  # starts right after the previous phase: no probes in between


def plan(t: Timing) -> list[Phase]:
    return [
        Phase("1 steady", "valid tokens, IdP fine", t.steady, "ok", (VALID,)),
        Phase("2 rotation", "IdP adds key k2; k2 tokens start", t.rotation, "ok", (VALID, NEW_KID),
              rotate_to="k2"),
        Phase("3a kid flood", "forged tokens, each a random kid", t.flood, "ok", (VALID, FLOOD), flood=True),
        Phase("3b rotation after flood", "IdP adds k3 right after the flood; k3 tokens start",
              t.rotation_after_flood, "ok", (VALID, NEW_KID), rotate_to="k3", immediate=True),
        Phase("4a outage: 503", "IdP answers 503", t.outage, "503", (VALID, TRICKLE)),
        Phase("4b outage: refused", "IdP socket closed: connection refused", t.outage, "refused",
              (VALID, TRICKLE), immediate=True),
        Phase("4c outage: hang", f"IdP reads the request, answers nothing (callout timeout "
              f"{CALLOUT_TIMEOUT_MS} ms)", t.outage, "hang", (VALID, TRICKLE), immediate=True),
        Phase("5 kid flood after outage", "IdP back; forged random kids", t.flood_after_outage, "ok",
              (VALID, FLOOD), flood=True, immediate=True),
        Phase("6a garbage: HTML", "IdP answers 200 with an HTML page", t.garbage, "html", (VALID, TRICKLE)),
        Phase("6b garbage: empty set", 'IdP answers 200 {"keys": []}', t.garbage, "empty", (VALID, TRICKLE),
              immediate=True),
        Phase("7 health", "IdP fine again; IdP adds k4; k4 tokens start", t.health, "ok",
              (VALID, NEW_KID, TRICKLE), rotate_to="k4", immediate=True),
    ]


def plugin_config(idp_port: int, t: Timing) -> dict[str, Any]:
    """One remote_jwks provider on the fake IdP, one rule that needs a token. Defaults
    everywhere except the refresh interval (short, so refreshes fall inside the phases), the
    callout timeout (short, so the hang flavour costs seconds, not minutes) and, in the short
    run, the unknown-kid window (see Timing)."""
    return {
        "mode": "enforce",
        "providers": {
            "idp": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "remote_jwks": {
                    "cluster": "idp",
                    "uri": f"http://127.0.0.1:{idp_port}/jwks",
                    "timeout_ms": CALLOUT_TIMEOUT_MS,
                    "refresh_seconds": t.refresh,
                    "min_refresh_seconds": t.refresh,
                    "unknown_kid_refetch_seconds": t.kid_window,
                },
            }
        },
        "rules": [{"name": "api", "match": {"path": {"prefix": "/api/"}}}],
        "claim_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
    }


# --- tokens ----------------------------------------------------------------------------------
class Tokens:
    """Signing keys k1..k4 (k1 published from the start, the others at their rotations), valid
    token files per key, and one file of forged tokens per phase that sends them."""

    VALID_FOR = 3 * 3600

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signers = {name: mint.Signer.generate(f"soak-{name}") for name in ("k1", "k2", "k3", "k4")}
        self.files: dict[str, Path] = {}
        self.samples: dict[str, str] = {}
        for name, signer in self.signers.items():
            tokens = [signer.token(mint.claims(ISSUER, AUDIENCE, f"{name}-user{i}", expires_in=self.VALID_FOR))
                      for i in range(TOKENS_PER_KEY)]
            self.samples[name] = tokens[0]
            self.files[name] = self._write(f"valid-{name}.txt", tokens)

    def _write(self, name: str, lines: list[str]) -> Path:
        path = self.dir / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def valid_file(self, keys: list[str]) -> Path:
        lines: list[str] = []
        for name in keys:
            lines += self.files[name].read_text().split()
        return self._write("valid-" + "-".join(keys) + ".txt", lines)

    def forged_file(self, phase: str, count: int) -> Path:
        """Tokens that look real (issuer, audience, times, RS256) but name a random kid each,
        with a random signature: they can only be refused, and only after the plugin has
        decided what to do about a kid it does not know."""
        header_claims = mint.b64url(json.dumps(
            mint.claims(ISSUER, AUDIENCE, "mallory", expires_in=self.VALID_FOR)).encode())
        lines = []
        for _ in range(count):
            header = {"alg": "RS256", "typ": "JWT", "kid": secrets.token_hex(8)}
            lines.append(f"{mint.b64url(json.dumps(header).encode())}.{header_claims}."
                         f"{mint.b64url(secrets.token_bytes(256))}")
        slug = re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-")
        return self._write(f"forged-{slug}.txt", lines)


# --- processes -------------------------------------------------------------------------------
class Processes:
    """Every process the run starts, so that any exit (a failure, Ctrl-C, SIGTERM, the global
    deadline) stops all of them."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[Any]] = []
        self.envoy: EnvoyProcess | None = None
        self.idp: FakeIdp | None = None

    def spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.children.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.children:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.envoy is not None:
            self.envoy.stop()
        if self.idp is not None:
            self.idp.stop()


def start_upstream(procs: Processes, log: Path) -> int:
    """The echo upstream in its own process (a thread of this one would share its GIL with the
    IdP and the run's bookkeeping); returns its port."""
    proc = procs.spawn([sys.executable, str(ECHO_UPSTREAM), "--port", "0"], stdout=subprocess.PIPE,
                       stderr=open(log, "wb"), text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "echo upstream listening on http://127.0.0.1:PORT"
    match = re.search(r":(\d+)\s*$", line)
    if not match:
        raise RuntimeError(f"echo upstream did not start: {line!r}")
    return int(match.group(1))


def get(url: str, token: str | None = None, timeout: float = 5.0) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def envoy_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """The counters the report needs: wasm VMs, the plugin's fetch counters and denials, and
    the idp cluster's connections and requests (callouts the IdP may never have seen)."""
    url = envoy.admin_url("/stats?filter=" + urllib.request.quote(
        r"^(wasm\.|wasmcustom\.portcullis_(jwks|denied)|cluster\.idp\.upstream_(cx|rq)_)"))
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
            text = resp.read().decode()
    except OSError:
        return {}
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


def delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


# --- one phase -------------------------------------------------------------------------------
@dataclass
class ClassResult:
    cls: str
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    slowest_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None

    def non_2xx(self) -> dict[str, int]:
        out = {code: n for code, n in self.statuses.items() if not code.startswith("2")}
        for kind, n in self.socket_errors.items():
            if n and kind != "status":  # wrk's "status" is its own count of non-2xx/3xx
                out[f"socket {kind}"] = n
        if self.error:
            out["wrk error"] = 1
        return out


def run_streams(phase: Phase, files: dict[str, Path], url: str, wrk: str, procs: Processes
                ) -> list[ClassResult]:
    """All streams of a phase at once, for the phase's duration; each wrk is bounded by a
    hard timeout past its duration."""
    running = []
    for stream in phase.streams:
        cmd = [wrk, "-t", "1", "-c", str(stream.connections), "-d", f"{phase.seconds}s",
               "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(LUA), url, "--",
               str(files[stream.cls]), str(stream.delay_ms)]
        running.append((stream, procs.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results = []
    deadline = time.monotonic() + phase.seconds + WRK_TIMEOUT_S + 30
    for stream, proc in running:
        result = ClassResult(stream.cls)
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            wrk_runner.stop(proc)
            result.error = "wrk did not finish in time"
            results.append(result)
            continue
        try:
            parsed = wrk_runner.parse(out)
        except wrk_runner.WrkError:
            result.error = f"wrk exited {proc.returncode}: {err.strip()[-300:]}"
            results.append(result)
            continue
        result.requests = parsed["requests"]
        result.statuses = parsed["statuses"]
        result.socket_errors = parsed["socket_errors"]
        result.slowest_ms = round(parsed["latency_us"]["max"] / 1000, 1) if parsed["requests"] else None
        result.p99_ms = round(parsed["latency_us"]["p99"] / 1000, 1) if parsed["requests"] else None
        results.append(result)
    return results


def log_lines_between(envoy: EnvoyProcess, start: datetime.datetime, end: datetime.datetime) -> list[str]:
    """Envoy's log lines stamped within [start, end) (its default format starts with local time)."""
    lines = []
    current: datetime.datetime | None = None
    for line in envoy.log_text().splitlines():
        match = LOG_TIME.match(line)
        if match:
            current = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
        if current is not None and start <= current < end:
            lines.append(line)
    return lines


def summarize_log(lines: list[str]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    fetch_messages: dict[str, int] = {}
    crashes = []
    for line in lines:
        decision = REASON.search(line)
        if decision:
            key = f"{decision.group(2)} ({decision.group(1)})"
            reasons[key] = reasons.get(key, 0) + 1
            continue
        if CRASH_LINE.search(line):
            crashes.append(line[-400:])
        if "portcullis:" in line and ("fetch" in line or "key(s)" in line):
            message = re.sub(r"\d+", "N", line.split("portcullis:", 1)[1].strip())
            fetch_messages[message] = fetch_messages.get(message, 0) + 1
    return {"decisions": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "fetch_log": fetch_messages, "crash_lines": crashes[:20]}


def evaluate(phase: Phase, classes: list[ClassResult], callouts: int, vm: dict[str, Any]) -> dict[str, str]:
    """PASS/FAIL per target ('-' where a target does not apply to the phase)."""
    targets: dict[str, str] = {}
    valid = [c for c in classes if c.cls in VALID_CLASSES]
    ok = all(not c.non_2xx() and c.requests > 0 for c in valid)
    targets["valid tokens: zero non-2xx"] = "PASS" if ok else "FAIL"
    forged = [c for c in classes if c.cls == "forged"]
    if forged:
        ok = all(c.requests > 0 and set(c.non_2xx()) == {"401"} for c in forged)
        targets["forged tokens: all 401, no 5xx"] = "PASS" if ok else "FAIL"
    else:
        targets["forged tokens: all 401, no 5xx"] = "-"
    targets[f"IdP callouts in a kid flood <= {CALLOUTS_PER_FLOOD * PROXIES}"] = (
        ("PASS" if callouts <= CALLOUTS_PER_FLOOD * PROXIES else "FAIL") if phase.flood else "-")
    targets["no VM reload or crash"] = "PASS" if vm["ok"] else "FAIL"
    return targets


# --- the run ---------------------------------------------------------------------------------
class Soak:
    def __init__(self, args: argparse.Namespace, procs: Processes) -> None:
        self.args = args
        self.procs = procs
        self.timing = SHORT if args.short else FULL
        self.phases = plan(self.timing)
        self.published = ["k1"]
        self.usable = ["k1"]  # keys whose tokens got a 200: the valid stream uses these
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def start(self) -> None:
        out = self.args.out
        print("soak: minting keys and tokens", flush=True)
        self.tokens = Tokens(out / "tokens")
        self.idp = FakeIdp(max_age=self.timing.refresh, hang_seconds=CALLOUT_TIMEOUT_MS / 1000 + 3)
        self.procs.idp = self.idp
        self.idp.publish([self.tokens.signers["k1"].jwk()])
        upstream_port = start_upstream(self.procs, out / "echo-upstream.log")
        self.envoy = EnvoyProcess(self.args.wasm, plugin_config(self.idp.port, self.timing), upstream_port,
                                  out / "envoy", concurrency=2, log_level="warning", idp_port=self.idp.port)
        self.procs.envoy = self.envoy
        print(f"soak: starting Envoy (--concurrency 2) with {self.args.wasm}", flush=True)
        self.envoy.start(timeout=READY_TIMEOUT)
        self.url = self.envoy.url(PATH)
        # The plugin fetches at start; wait until a valid token passes before phase 1.
        deadline = time.monotonic() + 30
        while get(self.url, self.tokens.samples["k1"]) != 200:
            if time.monotonic() > deadline:
                raise EnvoyError("a valid token still does not pass 30 s after Envoy was ready\n"
                                 + self.envoy.log_tail(40))
            time.sleep(0.5)

    def probe_new_keys(self) -> None:
        """Rotated keys join the valid stream once one of their tokens has passed, so a later
        phase's valid class measures that phase, not a rotation that failed earlier (the
        new-kid class of the rotation phase reports that)."""
        for name in self.published:
            if name not in self.usable and get(self.url, self.tokens.samples[name], timeout=3) == 200:
                self.usable.append(name)

    def run_phase(self, phase: Phase, wrk: str) -> dict[str, Any]:
        idp, envoy = self.idp, self.envoy
        if not phase.immediate:
            idp.set_phase(f"before {phase.name}")
            self.probe_new_keys()
        files = {"valid": self.tokens.valid_file(self.usable)}
        rotated = phase.rotate_to
        if rotated:
            self.published.append(rotated)
            files["new-kid"] = self.tokens.files[rotated]
        for stream in phase.streams:
            if stream.cls == "forged":
                rate = stream.connections * 1000 / stream.delay_ms
                files["forged"] = self.tokens.forged_file(phase.name, int(rate * phase.seconds * 1.2) + 100)
        before = envoy_stats(envoy)
        started_wall = datetime.datetime.now()
        started = time.monotonic()
        idp.set_phase(phase.name)
        idp.set_mode(phase.idp_mode)
        if rotated:
            idp.publish([self.tokens.signers[k].jwk() for k in self.published])
        print(f"soak: phase {phase.name} ({phase.seconds} s): {phase.description}", flush=True)
        classes = run_streams(phase, files, self.url, wrk, self.procs)
        elapsed = time.monotonic() - started
        # The plugin hands its counters to Envoy on a one-second tick. Callouts the phase's
        # last requests caused land in this second too; the IdP's count and Envoy's cover it.
        time.sleep(1.2)
        callouts = idp.requests_in(phase.name)
        after = envoy_stats(envoy)
        log = summarize_log(log_lines_between(envoy, started_wall, datetime.datetime.now()))
        vm = {
            "vms_created": delta(before, after, "wasm.envoy.wasm.runtime.v8.created"),
            "vm_reloads": sum(delta(before, after, k) for k in after if k.startswith("wasm.portcullis.vm_reload")),
            "crash_lines": len(log["crash_lines"]),
            "envoy_running": envoy.running(),
        }
        vm["ok"] = vm["vms_created"] == 0 and vm["vm_reloads"] == 0 and not vm["crash_lines"] and vm["envoy_running"]
        envoy_idp = {k.removeprefix("cluster.idp."): delta(before, after, k) for k in after
                     if k.startswith("cluster.idp.") and delta(before, after, k)}
        row = {
            "phase": phase.name,
            "description": phase.description,
            "idp_mode": phase.idp_mode,
            "seconds_planned": phase.seconds,
            "seconds": round(elapsed, 1),
            "classes": [c.__dict__ | {"non_2xx": c.non_2xx()} for c in classes],
            "idp_callouts": callouts,
            # Connections Envoy opened to the IdP (one per callout, the IdP closes each): this
            # counts the callouts that a refused listener never saw.
            "callout_attempts": envoy_idp.get("upstream_cx_total", 0),
            "envoy_idp_cluster": envoy_idp,
            "plugin_fetches": {"ok": delta(before, after, "wasmcustom.portcullis_jwks_fetch_ok_total"),
                               "failed": delta(before, after, "wasmcustom.portcullis_jwks_fetch_failed_total")},
            "vm": vm,
            "log": log,
            "valid_keys": list(self.usable),
            "new_kid": rotated,
        }
        row["targets"] = evaluate(phase, classes, callouts, vm)
        for line in phase_lines(row):
            print("soak:   " + line, flush=True)
        if not envoy.running():
            raise EnvoyError(f"Envoy exited during phase {phase.name}\n{envoy.log_tail(60)}")
        return row

    def run(self, wrk: str) -> None:
        for phase in self.phases:
            self.rows.append(self.run_phase(phase, wrk))
        self.idp.set_phase("end")


# --- the report ------------------------------------------------------------------------------
def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-"


def phase_lines(row: dict[str, Any]) -> list[str]:
    lines = []
    for c in row["classes"]:
        lines.append(f"{c['cls']:8} {c['requests']:6} req  non-2xx {fmt_counts(c['non_2xx']):30} "
                     f"slowest {c['slowest_ms'] if c['slowest_ms'] is not None else '-'} ms")
    lines.append(f"IdP callouts {row['idp_callouts']} seen, {row['callout_attempts']} attempted; "
                 f"VM {'ok' if row['vm']['ok'] else 'RELOADED/CRASHED ' + json.dumps(row['vm'])}")
    lines.append("targets: " + "; ".join(f"{k} {v}" for k, v in row["targets"].items() if v != "-"))
    return lines


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    out = [f"Soak test ({result['mode']}), {result['finished']}, {result['total_seconds']} s in total: "
           f"`{result['command']}`", ""]
    m = result["machine"]
    out += [f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), Envoy {m['envoy_version']}, {m['wrk_version']}, "
            f"commit {m['git_commit']}, load average at start {m['loadavg_at_start']}. Plugin: `{result['wasm']}`.", ""]
    out += ["| phase | IdP | class | requests | non-2xx (status: count) | slowest ms | IdP callouts (attempts) | VM |",
            "| --- | --- | --- | ---: | --- | ---: | ---: | --- |"]
    for row in rows:
        for i, c in enumerate(row["classes"]):
            first = i == 0
            out.append("| " + " | ".join([
                f"{row['phase']} ({row['seconds']:.0f} s)" if first else "",
                row["idp_mode"] if first else "",
                c["cls"] + (f" ({row['new_kid']})" if c["cls"] == "new-kid" else ""),
                str(c["requests"]),
                fmt_counts(c["non_2xx"]),
                "-" if c["slowest_ms"] is None else f"{c['slowest_ms']:.0f}",
                f"{row['idp_callouts']} ({row['callout_attempts']})" if first else "",
                ("ok" if row["vm"]["ok"] else "**reloaded/crashed**") if first else "",
            ]) + " |")
    names = list(rows[0]["targets"]) if rows else []
    out += ["", "| phase | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in rows:
        cells = [("**FAIL**" if v == "FAIL" else v) for v in row["targets"].values()]
        out.append(f"| {row['phase']} | " + " | ".join(cells) + " |")
    out += ["", "Plugin decisions per phase (reason (status): count), from Envoy's log:", ""]
    for row in rows:
        out.append(f"- {row['phase']}: {fmt_counts(row['log']['decisions'])}")
    out += ["", "Plugin key-fetch log lines per phase (numbers as N):", ""]
    for row in rows:
        out.append(f"- {row['phase']}: {fmt_counts(row['log']['fetch_log'])}")
    failed = result["failed_targets"]
    out += ["", f"Result: {'FAIL: ' + '; '.join(failed) if failed else 'all targets PASS'}", ""]
    return "\n".join(out)


def exact_command(argv: list[str]) -> str:
    return os.environ.get("PORTCULLIS_SOAK_COMMAND") or shlex.join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(__file__, REPO), *argv])


# --- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="the phases scaled down: about 2 minutes in total")
    p.add_argument("--wasm", type=Path, default=Path(os.environ.get("PORTCULLIS_WASM", DEFAULT_WASM)),
                   help="the plugin (default: the built target/wasm32-wasip1/release/portcullis.wasm)")
    p.add_argument("--out", type=Path, help="directory for soak-results.json, soak-results.md, Envoy's log "
                                            "and the tokens (default out/soak, or out/soak-short)")
    args = p.parse_args(argv)
    args.out = (args.out or REPO / "out" / ("soak-short" if args.short else "soak")).resolve()
    args.wasm = args.wasm.resolve()
    return args


class Deadline(Exception):
    pass


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.wasm.is_file():
        print(f"soak: error: plugin not built: {args.wasm} (run scripts/build, or pass --wasm)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    unwind_on_signals()
    try:
        wrk = wrk_runner.ensure_wrk()
    except wrk_runner.WrkError as err:
        print(f"soak: error: {err}", file=sys.stderr)
        return 2
    procs = Processes()
    soak = Soak(args, procs)
    error: str | None = None
    planned = sum(p.seconds for p in soak.phases)
    # A hard bound on the whole run: the phases, Envoy's start, and slack for a slow machine.
    budget = planned + READY_TIMEOUT + 120

    def on_alarm(*_: object) -> None:
        raise Deadline(f"the run took longer than its {budget:.0f} s budget")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(budget))
    machine = machine_info(find_envoy(), wrk)
    command = exact_command(argv)
    started = time.monotonic()
    print(f"soak: {len(soak.phases)} phases, {planned} s of load; results in {args.out}", flush=True)
    try:
        soak.start()
        soak.run(wrk)
    except (EnvoyError, Deadline, RuntimeError) as err:
        error = str(err)
        print(f"soak: error: {error}", file=sys.stderr)
    finally:
        signal.alarm(0)
        idp_log = soak.idp.request_log() if getattr(soak, "idp", None) else []
        procs.stop_all()
    failed = [f"{row['phase']}: {name}" for row in soak.rows for name, v in row["targets"].items() if v == "FAIL"]
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": command,
        "mode": "short" if args.short else "full",
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "total_seconds": round(time.monotonic() - started),
        "machine": machine,
        "wasm": str(args.wasm),
        "settings": {"timing": soak.timing.__dict__, "callout_timeout_ms": CALLOUT_TIMEOUT_MS,
                     "streams": {s.cls + ("-trickle" if s is TRICKLE else ""): s.__dict__
                                 for s in (VALID, NEW_KID, FLOOD, TRICKLE)},
                     "plugin_config": plugin_config(0, soak.timing)},
        "rows": soak.rows,
        "idp_requests": idp_log,
        "failed_targets": failed,
        "error": error,
    }
    (args.out / "soak-results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "soak-results.md").write_text(md)
    print("\n" + md)
    print(f"soak: results in {args.out / 'soak-results.md'} and {args.out / 'soak-results.json'}")
    if error:
        print(f"soak: the run stopped early (phases done: {len(soak.rows)}/{len(soak.phases)}): {error.splitlines()[0]}",
              file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nsoak: interrupted; every process stopped", file=sys.stderr)
        sys.exit(130)
