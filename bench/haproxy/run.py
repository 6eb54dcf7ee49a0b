#!/usr/bin/env python3
"""Load benchmark: Portcullis in HAProxy (through the portcullis-spoa SPOE agent) against
HAProxy's own jwt_verify, side by side, in one run.

For each column (HAProxy alone; HAProxy's native JWT converters; HAProxy + the Portcullis agent,
with and without its token cache) and each workload of the Envoy bench (one token; 10 000
distinct tokens; a 50/25/25 mix of valid, expired and forged tokens) it starts a fresh HAProxy
(`nbthread 1`) pinned to one core, in front of an upstream on the same core (and the agent on it
too), probes that the column does the job, drives it with wrk pinned to another core, checks the
status mix, and prints one table (also written as JSON and Markdown).

    bench/haproxy/run            # the whole run; bench/haproxy/run --quick: a short smoke run
    .venv/bin/python bench/haproxy/run.py --help

It reuses bench/envoy's modules (tokens, wrk, status checks, tables, the upstream Envoy).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENVOY_BENCH = REPO / "bench" / "envoy"
sys.path[:0] = [str(ENVOY_BENCH), str(REPO / "scripts")]

import columns  # noqa: E402  (bench/haproxy/columns.py)
import configs  # noqa: E402  (bench/envoy/configs.py)
import mint  # noqa: E402  (scripts/mint.py)
import report  # noqa: E402  (bench/envoy/report.py)
import tokens  # noqa: E402  (bench/envoy/tokens.py)
import wrk_runner  # noqa: E402  (bench/envoy/wrk_runner.py)
from envoy_runner import DEFAULT_WASM, EnvoyError, find_envoy  # noqa: E402


def _load_envoy_bench() -> ModuleType:
    """bench/envoy/run.py as a module (not `import run`: this file is run.py too)."""
    spec = importlib.util.spec_from_file_location("envoy_bench", ENVOY_BENCH / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


envoy_bench = _load_envoy_bench()

AGENT = REPO / "target" / "release" / "portcullis-spoa"
AGENT_READY = re.compile(r"portcullis-spoa: listening on 127\.0\.0\.1:(\d+)")
AGENT_READY_TIMEOUT = 120.0  # the agent compiles the plugin at start; slow on a busy machine
HAPROXY_READY_TIMEOUT = 20.0
ANSWER_TIMEOUT = 10.0  # after the port opens: until the first probe gets its expected answer
WORKLOAD_NAMES = ["single", "distinct", "mixed"]
BASELINES = ("native", "no-filter")
UPSTREAMS = {
    "envoy": "the Envoy bench's upstream Envoy (bench/envoy/upstream.yaml, direct_response 200)",
    "haproxy": "a second HAProxy answering 200 itself (bench/haproxy/upstream.cfg)",
}


class BenchError(RuntimeError):
    """A process did not start or a config could not be made; the message says why."""


# --- arguments -------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: 3 s per cell after 1 s warm-up, 1000 distinct tokens")
    p.add_argument("--duration", type=int, help="seconds measured per cell (default 10; --quick 3)")
    p.add_argument("--warmup", type=int, help="seconds of load before each measurement (default 2; --quick 1)")
    p.add_argument("--tokens", type=int, help="distinct tokens of the 'distinct' workload (default 10000)")
    p.add_argument("--mixed-tokens", type=int, help="tokens in the 'mixed' workload, a multiple of 4 "
                                                     "(default 2000; --quick 400)")
    p.add_argument("--configs", default=",".join(columns.NAMES),
                   help="comma-separated columns, from: " + ", ".join(columns.NAMES))
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES),
                   help="comma-separated, from: " + ", ".join(WORKLOAD_NAMES))
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--proxy-cpu", default="0", help="taskset CPU list for HAProxy and the upstream (default 0)")
    p.add_argument("--agent-cpu", help="taskset CPU list for the agent (default: --proxy-cpu)")
    p.add_argument("--wrk-cpu", default="1", help="taskset CPU list for wrk (default 1)")
    p.add_argument("--agent-workers", type=int, default=1, help="the agent's --workers (default 1: one core)")
    p.add_argument("--upstream", choices=sorted(UPSTREAMS), default="envoy",
                   help="envoy (default): " + UPSTREAMS["envoy"] + "; haproxy: " + UPSTREAMS["haproxy"])
    p.add_argument("--wasm", type=Path, default=Path(os.environ.get("PORTCULLIS_WASM", DEFAULT_WASM)))
    p.add_argument("--agent", type=Path, default=Path(os.environ.get("PORTCULLIS_SPOA", AGENT)),
                   help=f"the portcullis-spoa binary (default {AGENT.relative_to(REPO)})")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench",
                   help="directory for haproxy-results.json, haproxy-results.md, and haproxy/ "
                        "(tokens, key, each cell's configs and logs)")
    p.add_argument("--record", action="store_true",
                   help="also append the Markdown results to bench/haproxy/RESULTS.md")
    args = p.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.tokens = args.tokens or (1000 if args.quick else 10_000)
    args.mixed_tokens = args.mixed_tokens or (400 if args.quick else 2000)
    args.agent_cpu = args.agent_cpu or args.proxy_cpu
    args.configs = envoy_bench._names(p, args.configs, columns.NAMES)
    args.workloads = envoy_bench._names(p, args.workloads, WORKLOAD_NAMES)
    if args.mixed_tokens % 4:
        p.error("--mixed-tokens must be a multiple of 4 (the mix repeats every 4 requests)")
    return args


# --- the machine -----------------------------------------------------------------------------
def find_haproxy() -> str:
    found = os.environ.get("PORTCULLIS_HAPROXY") or shutil.which("haproxy")
    if found:
        return found
    if os.access("/usr/sbin/haproxy", os.X_OK):  # Debian's place, often not on a user's PATH
        return "/usr/sbin/haproxy"
    raise BenchError("haproxy not found: run scripts/setup (it installs Debian's haproxy package)")


def haproxy_version(haproxy: str) -> str:
    # "HAProxy version 2.6.12-1+deb12u3 2025/10/03 - https://haproxy.org/" -> "2.6.12-1+deb12u3"
    words = envoy_bench._first_line([haproxy, "-v"]).split()
    return words[2] if len(words) > 2 and words[1] == "version" else " ".join(words)


def machine_info(haproxy: str, wrk: str) -> dict[str, Any]:
    try:
        envoy = find_envoy()
    except EnvoyError:
        envoy = "envoy"
    machine: dict[str, Any] = envoy_bench.machine_info(envoy, wrk)
    machine["haproxy_version"] = haproxy_version(haproxy)
    return machine


# --- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """A child in its own session, stdout and stderr in one log file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.name, self.cmd, self.log_path, self.cwd = name, cmd, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Process":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.cwd, start_new_session=True)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.proc.returncode} {when}: {' '.join(self.cmd)}\n"
                             f"--- {self.log_path} ---\n{self.log_tail()}")

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive("before it listened")
            if port_open(port):
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s\n{self.log_tail()}")

    def warnings(self) -> list[str]:
        return [line.strip() for line in self.log().splitlines() if "[WARNING]" in line or "[ALERT]" in line]

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start_haproxy(haproxy: str, config: Path, port: int, cpu: str, name: str, cwd: Path) -> Process:
    """`haproxy -db -f <config>` under taskset (which execs it: same pid), once it listens."""
    proc = Process(name, ["taskset", "-c", cpu, haproxy, "-db", "-f", str(config)],
                   config.parent / f"{name}.log", cwd=cwd).start()
    try:
        proc.wait_port(port, HAPROXY_READY_TIMEOUT)
    except BaseException:
        proc.stop()
        raise
    return proc


class Upstream:
    def __init__(self, kind: str, port: int, pid: int, stop: Any) -> None:
        self.kind, self.port, self.pid, self.stop = kind, port, pid, stop


def start_upstream(args: argparse.Namespace, haproxy: str) -> Upstream:
    workdir = args.out / "haproxy"
    if args.upstream == "envoy":
        envoy = envoy_bench.start_upstream(
            SimpleNamespace(out=workdir, envoy_cpu=args.proxy_cpu, envoy_log_level="warn"))
        assert envoy.listen_port is not None and envoy.proc is not None
        return Upstream("envoy", envoy.listen_port, envoy.proc.pid, envoy.stop)
    port = free_port()
    config = workdir / "upstream" / "haproxy.cfg"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(columns.upstream_config(port))
    proc = start_haproxy(haproxy, config, port, args.proxy_cpu, "upstream", config.parent)
    return Upstream("haproxy", port, proc.pid, proc.stop)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (an agent may run worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            total += envoy_bench.process_cpu_seconds(p)
        except OSError:
            pass
    return total


def tree_memory_kib(pid: int) -> dict[str, int]:
    total = {"VmRSS": 0, "VmHWM": 0}
    for p in process_tree(pid):
        try:
            for key, value in envoy_bench.memory_kib(p).items():
                total[key] += value
        except OSError:
            pass
    return total


# --- the portcullis columns ------------------------------------------------------------------
def agent_unavailable(args: argparse.Namespace) -> str | None:
    if not args.agent.is_file():
        return (f"{os.path.relpath(args.agent, REPO)} is not built (bench/haproxy/run builds it with "
                f"`cargo build --release --workspace --bin portcullis-spoa`)")
    if not args.wasm.is_file():
        return f"the plugin {os.path.relpath(args.wasm, REPO)} is not built (run scripts/build)"
    return None


def agent_command(args: argparse.Namespace) -> list[str]:
    return [str(args.agent)]


def generate_config(args: argparse.Namespace, workdir: Path, policy: Path, agent_port: int, bind_port: int,
                    upstream_port: int) -> tuple[Path, list[str]]:
    """`portcullis-spoa haproxy-config`, then the bench's settings put in; returns the config to
    run (next to the generated files, so that relative paths in it work) and notes."""
    out = workdir / "generated"
    cmd = [*agent_command(args), "haproxy-config", "--policy", str(policy), "--agent", f"127.0.0.1:{agent_port}",
           "--bind", f"127.0.0.1:{bind_port}", "--upstream", f"127.0.0.1:{upstream_port}", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"portcullis-spoa haproxy-config exited {done.returncode}: {' '.join(cmd)}\n"
                         f"{done.stderr[-2000:]}{done.stdout[-2000:]}")
    generated, spoe = out / "haproxy.cfg", out / "portcullis-spoe.conf"
    for path in (generated, spoe):
        if not path.is_file():
            raise BenchError(f"portcullis-spoa haproxy-config wrote no {path}: {' '.join(cmd)}")
    time_var = columns.spoe_time_var(spoe.read_text())
    notes = [] if time_var else [f"{spoe.name} sets no `option set-process-time`: no SPOE ms column"]
    try:
        text, changes = columns.adapt_generated(generated.read_text(), time_var or columns.SPOE_TIME_VAR)
    except columns.GeneratedConfigError as err:
        raise BenchError(f"{generated}: {err}") from err
    bench_config = out / "haproxy.bench.cfg"
    bench_config.write_text(text)
    return bench_config, notes + changes


def start_agent(args: argparse.Namespace, workdir: Path, policy: Path, port: int) -> Process:
    cmd = ["taskset", "-c", args.agent_cpu, *agent_command(args), "serve", "--wasm", str(args.wasm.resolve()),
           "--policy", str(policy), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}",
           "--workers", str(args.agent_workers)]
    agent = Process("portcullis-spoa", cmd, workdir / "agent.log").start()
    try:
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        while time.monotonic() < deadline:
            agent.check_alive("before it was ready")
            ready = AGENT_READY.search(agent.log())
            if ready:
                if int(ready.group(1)) != port:
                    raise BenchError(f"portcullis-spoa listens on {ready.group(1)}, asked for {port}")
                return agent
            time.sleep(0.05)
        raise BenchError(f"portcullis-spoa printed no 'listening on' line within {AGENT_READY_TIMEOUT:.0f}s\n"
                         f"{agent.log_tail()}")
    except BaseException:
        agent.stop()
        raise


# --- one cell --------------------------------------------------------------------------------
class Target:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def probes(maker: tokens.TokenMaker, checks_tokens: bool) -> list[Any]:
    """The Envoy bench's probes (valid → 200 with x-jwt-sub upstream, expired, forged, missing →
    401), plus the checks that show a column does the whole job: issuer, audience, nbf/iat, an
    unknown kid, `alg: none`. All but alg-none are signed by the trusted key, so each one shows
    its own check at work."""
    checks: list[Any] = envoy_bench.probes(maker, checks_tokens)
    if not checks_tokens:
        return checks
    Probe, signer, iss, aud = envoy_bench.Probe, maker.trusted, configs.ISSUER, configs.AUDIENCE
    now = int(time.time())
    return checks + [
        Probe("wrong-issuer", signer.token(mint.claims("https://other.bench.test", aud, "probe-user", 3600)), 401),
        Probe("wrong-audience", signer.token(mint.claims(iss, "other-api", "probe-user", 3600)), 401),
        Probe("not-yet-valid", signer.token({**mint.claims(iss, aud, "probe-user", 7200),
                                             "nbf": now + 3600, "iat": now + 3600}), 401),
        Probe("unknown-kid", signer.token(mint.claims(iss, aud, "probe-user", 3600), {"kid": "bench-other"}), 401),
        Probe("alg-none", mint.unsigned_token(mint.claims(iss, aud, "probe-user", 3600)), 401),
    ]


def wait_answering(target: Target, first: Any, proc: Process) -> None:
    """Until the first probe gets its answer (an agent connection may take a moment)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        proc.check_alive("during the probes")
        try:
            if envoy_bench.send(target.url("/api/items"), first.token)[0] == first.want_status:
                return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            return  # the preflight reports what it gets
        time.sleep(0.1)


def load(target: Target, workload: tokens.Workload, seconds: int, args: argparse.Namespace, wrk: str,
         start: int = 1) -> dict[str, Any]:
    spec = wrk_runner.LoadSpec(target.url("/api/items"), workload.token_file, seconds, args.connections,
                               args.wrk_threads, args.wrk_cpu, start, header=columns.SPOE_TIME_HEADER)
    return wrk_runner.run(wrk, spec)


def spoe_ms(header: dict[str, Any] | None) -> dict[str, Any] | None:
    """HAProxy's SPOE processing time (whole ms, as set-process-time gives it) over the answers."""
    if not header:
        return None
    values: list[tuple[float, int]] = []
    for text, count in header.get("values", {}).items():
        try:
            values.append((float(text), int(count)))
        except ValueError:
            continue
    total = sum(c for _, c in values)
    if not total:
        return None
    values.sort()

    def percentile(p: float) -> float:
        seen = 0
        for value, count in values:
            seen += count
            if seen >= p / 100 * total:
                return value
        return values[-1][0]

    return {"count": total, "missing": header.get("missing", 0), "mean": round(sum(v * c for v, c in values) / total, 3),
            "p50": percentile(50), "p99": percentile(99), "max": values[-1][0]}


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # wrk is the only child that ends during a measurement: the others are still running.
    return {**snap, "wrk": usage.ru_utime + usage.ru_stime, "wall": time.monotonic()}


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    wall = after["wall"] - before["wall"]
    shares = {k: round((after[k] - before[k]) / wall, 3) for k in before if k != "wall"}
    seconds = {f"{k}_seconds": round(after[k] - before[k], 3) for k in before if k not in ("wall", "wrk")}
    return {**shares, **seconds}


def measure(column: columns.Column, workload: tokens.Workload, upstream: Upstream, checks: list[Any],
            env: SimpleNamespace) -> dict[str, Any]:
    args = env.args
    row = envoy_bench.base_row(column, workload)
    workdir = args.out / "haproxy" / f"{column.name}-{workload.name}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    port = free_port()
    agent = haproxy = None
    notes: list[str] = []
    try:
        if column.agent:
            policy = workdir / "policy.json"
            policy.write_text(json.dumps(column.policy(env.maker.trusted.jwks()), indent=2) + "\n")
            agent_port = free_port()
            config, notes = generate_config(args, workdir, policy, agent_port, port, upstream.port)
            agent = start_agent(args, workdir, policy, agent_port)
        else:
            config = workdir / "haproxy.cfg"
            config.write_text(columns.proxy_config(column, port, upstream.port, env.public_key, env.maker.trusted.kid))
        haproxy = start_haproxy(env.haproxy, config, port, args.proxy_cpu, "haproxy", config.parent)
        target = Target(port)
        wait_answering(target, checks[0], haproxy)
        problems = envoy_bench.preflight(target, checks)
        row.update({"haproxy_config": str(config), "haproxy_log": str(haproxy.log_path),
                    "agent_log": str(agent.log_path) if agent else None,
                    "warnings": haproxy.warnings(), "notes": notes})
        if problems:
            return {**row, "status": "invalid", "detail": "probes: " + "; ".join(problems)}
        # As in the Envoy bench, the measurement goes on through the token file where the
        # warm-up stopped (past the requests in flight then, one per connection).
        warmed = 0
        if args.warmup > 0:
            warmed = load(target, workload, args.warmup, args, env.wrk)["requests"] + args.connections
        pids = {"haproxy": haproxy.pid, "upstream": upstream.pid, **({"agent": agent.pid} if agent else {})}
        before = cpu_snapshot(pids)
        result = load(target, workload, args.duration, args, env.wrk, start=warmed + 1)
        cpu = cpu_shares(before, cpu_snapshot(pids))
        memory = {name: tree_memory_kib(pid) for name, pid in pids.items() if name != "upstream"}
    finally:
        for proc in (haproxy, agent):
            if proc is not None:
                proc.stop()
    problems = report.status_problems(result, workload.mixed, column.checks_tokens)
    requests = max(1, result["requests"])
    proxy_seconds = cpu["haproxy_seconds"] + cpu.get("agent_seconds", 0.0)
    row.update({
        "status": "invalid" if problems else "ok",
        "detail": "; ".join(problems),
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "requests": result["requests"],
        "duration_s": round(result["duration_us"] / 1e6, 3),
        "latency_us": result["latency_us"],
        "statuses": result["statuses"],
        "socket_errors": result["socket_errors"],
        "rss_kib": sum(m["VmRSS"] for m in memory.values()),
        "peak_rss_kib": sum(m["VmHWM"] for m in memory.values()),
        "rss_kib_by_process": {name: m["VmRSS"] for name, m in memory.items()},
        "cpu": cpu,
        "cpu_us_per_request": round(proxy_seconds * 1e6 / requests, 1),
        "cpu_us_per_request_by_process": {
            name: round(cpu[f"{name}_seconds"] * 1e6 / requests, 1) for name in memory},
        "spoe_ms": spoe_ms(result.get("header")),
    })
    return row


def not_measured(column: columns.Column, workloads: list[tokens.Workload], status: str, detail: str) -> list[dict[str, Any]]:
    return [{**envoy_bench.base_row(column, w), "status": status, "detail": detail} for w in workloads]


def run_column(column: columns.Column, workloads: list[tokens.Workload], upstream: Upstream, checks: dict[bool, list[Any]],
               env: SimpleNamespace) -> list[dict[str, Any]]:
    if column.agent:
        missing = agent_unavailable(env.args)
        if missing:
            print(f"bench: {column.name}: SKIPPED: {missing}", flush=True)
            return not_measured(column, workloads, "skipped", missing)
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        print(f"bench: {column.name} / {workload.name} ...", flush=True)
        try:
            row = measure(column, workload, upstream, checks[column.checks_tokens], env)
        except BenchError as err:
            print(f"bench: {column.name}: ERROR: {err}", file=sys.stderr, flush=True)
            first = str(err).splitlines()[0]
            return rows + not_measured(column, workloads[len(rows):], "error", first)
        if not rows:
            for line in row.get("notes", []) + row.get("warnings", []):
                print(f"bench:   {column.name}: {line}", flush=True)
        rows.append(row)
        if row["status"] == "invalid" and row["detail"].startswith("probes:"):
            # The same config fails the same probes on every workload: say it once, loudly.
            print(f"bench: {column.name}: INVALID, not measured: {row['detail']}", file=sys.stderr, flush=True)
            return rows + not_measured(column, workloads[len(rows):], "invalid", "not measured: " + row["detail"])
        print("bench:   " + "  ".join(table_cells(row)[2:]), flush=True)
    return rows


# --- the table -------------------------------------------------------------------------------
HEADERS = ["configuration", "workload", "req/s", "p50 ms", "p99 ms", "RSS MiB", "vs native", "vs no-filter",
           "CPU us/req", "CPU proxy+up/wrk", "SPOE ms mean/p99", "statuses", "check"]


def _split(total: float | None, parts: dict[str, float] | None, spec: str, scale: float = 1.0) -> str:
    """`total`, and `(haproxy+agent)` after it when an agent ran."""
    if total is None:
        return "-"
    text = format(total / scale, spec)
    if parts and "agent" in parts:
        text += f" ({format(parts['haproxy'] / scale, spec)}+{format(parts['agent'] / scale, spec)})"
    return text


def _cpu(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "-"
    return f"{cpu['haproxy'] + cpu.get('agent', 0) + cpu['upstream']:.0%}/{cpu['wrk']:.0%}"


def _spoe(spoe: dict[str, Any] | None) -> str:
    return "-" if not spoe else f"{spoe['mean']:.2f}/{spoe['p99']:g}"


def table_cells(row: dict[str, Any]) -> list[str]:
    lat = row.get("latency_us") or {}
    return [
        row["config"], row["workload"],
        report._fmt(row.get("rps"), ",.0f"),
        report._fmt(lat.get("p50") and lat["p50"] / 1000, ".2f"),
        report._fmt(lat.get("p99") and lat["p99"] / 1000, ".2f"),
        _split(row.get("rss_kib"), row.get("rss_kib_by_process"), ".1f", 1024),
        report._fmt(row.get("vs_native"), ".2f", "x"),
        report._fmt(row.get("vs_no-filter"), ".2f", "x"),
        _split(row.get("cpu_us_per_request"), row.get("cpu_us_per_request_by_process"), ".0f"),
        _cpu(row.get("cpu")),
        _spoe(row.get("spoe_ms")),
        report._statuses(row),
        report._verdict(row),
    ]


def markdown(result: dict[str, Any]) -> str:
    machine, setup = result["machine"], result["settings"]
    return "\n".join([
        f"Measured {result['finished']} with `{result['command']}`",
        "",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, kernel {machine['kernel']}",
        f"- HAProxy {machine['haproxy_version']}, {machine['wrk_version']}, git {machine['git_commit']}"
        + (f", upstream Envoy {machine['envoy_version']}" if setup["upstream"] == "envoy" else ""),
        f"- load average (1, 5, 15 min) at start {machine['loadavg_at_start']}, at end "
        f"{machine.get('loadavg_at_end')}: anything near or above 1 means other work shared the CPUs",
        f"- HAProxy (`nbthread 1`) and the upstream ({UPSTREAMS[setup['upstream']]}) on CPU {setup['proxy_cpu']}, "
        f"the agent on CPU {setup['agent_cpu']} (`--workers {setup['agent_workers']}`), wrk on CPU {setup['wrk_cpu']} "
        f"({setup['wrk_threads']} thread, {setup['connections']} connections); {setup['warmup_s']} s warm-up, "
        f"then {setup['duration_s']} s measured, a fresh HAProxy (and agent) per cell",
        "",
        report.markdown_table(result["rows"], HEADERS, table_cells),
        "",
    ])


RESULTS_MD = HERE / "RESULTS.md"
RESULTS_INTRO = """# HAProxy load benchmark results

How the benchmark works and what the columns mean: [README.md](README.md). Each section is one
run of `bench/haproxy/run` (appended by `--record`); ratios are only ever taken between cells of
the same run.
"""


def record(result: dict[str, Any], markdown_text: str) -> None:
    text = RESULTS_MD.read_text() if RESULTS_MD.is_file() else RESULTS_INTRO
    machine = result["machine"]
    title = f"## {result['finished']}, git {machine['git_commit']}"
    RESULTS_MD.write_text(text.rstrip("\n") + "\n\n" + title + "\n\n" + markdown_text)


# --- the run ---------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    envoy_bench.unwind_on_signals()
    workdir = args.out / "haproxy"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        haproxy = find_haproxy()
        wrk = wrk_runner.ensure_wrk()
    except (BenchError, wrk_runner.WrkError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    command = envoy_bench.exact_command(argv, __file__)
    machine = machine_info(haproxy, wrk)
    print(f"bench: {command}\nbench: {machine}", flush=True)

    maker = tokens.TokenMaker()
    public_key = workdir / "keys" / "public.pem"
    public_key.parent.mkdir(parents=True, exist_ok=True)
    public_key.write_bytes(maker.trusted.public_pem())
    workloads = tokens.make_workloads(maker, workdir / "tokens", args.tokens, args.mixed_tokens // 4, args.workloads)
    checks = {flag: probes(maker, flag) for flag in (False, True)}
    env = SimpleNamespace(args=args, haproxy=haproxy, wrk=wrk, maker=maker, public_key=public_key)
    chosen = [c for c in columns.COLUMNS if c.name in args.configs]

    rows: list[dict[str, Any]] = []
    try:
        upstream = start_upstream(args, haproxy)
    except (EnvoyError, BenchError) as err:
        print(f"bench: error: the upstream did not start: {err}", file=sys.stderr)
        return 1
    try:
        for column in chosen:
            rows += run_column(column, workloads, upstream, checks, env)
    except wrk_runner.WrkError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    finally:
        upstream.stop()

    report.add_ratios(rows, BASELINES)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
            "wrk_threads": args.wrk_threads, "proxy_cpu": args.proxy_cpu, "agent_cpu": args.agent_cpu,
            "wrk_cpu": args.wrk_cpu, "agent_workers": args.agent_workers, "distinct_tokens": args.tokens,
            "mixed_tokens": args.mixed_tokens, "upstream": args.upstream,
            "agent": os.path.relpath(args.agent, REPO), "wasm": os.path.relpath(args.wasm, REPO),
        },
        "rows": rows,
    }
    json_path, md_path = args.out / "haproxy-results.json", args.out / "haproxy-results.md"
    report.write(result, json_path, md_path, markdown)
    print("\n" + report.text_table(rows, HEADERS, table_cells) + "\n")
    if args.record:
        record(result, md_path.read_text())
        print(f"bench: appended to {os.path.relpath(RESULTS_MD, REPO)}")
    print(f"bench: {command}\nbench: results in {json_path} and {md_path}")
    failed = [f"{r['config']}/{r['workload']}" for r in rows if r["status"] in ("invalid", "error")]
    if failed:
        print(f"bench: INVALID or failed cells (a column not doing its job, or not starting): {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nbench: interrupted; HAProxy, the agent and wrk stopped", file=sys.stderr)
        sys.exit(130)
