#!/usr/bin/env python3
"""Load benchmark: Portcullis against Envoy's native jwt_authn, side by side, in one run.

For each configuration (no filter, native jwt_authn without and with its cache, Portcullis,
Portcullis with "crypto": "wasm") and each workload (one token; 10 000 distinct tokens; a
50/25/25 mix of valid, expired and forged tokens) it starts a fresh Envoy pinned to one core
(--concurrency 1) in front of an upstream Envoy on the same core, drives it with wrk pinned to
another core, checks the status mix, and prints one table (also written as JSON and Markdown).

    bench/envoy/run            # the whole run (about 4 minutes); bench/envoy/run --quick: ~1 minute
    .venv/bin/python bench/envoy/run.py --help
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "scripts")]

import configs  # noqa: E402
import report  # noqa: E402
import tokens  # noqa: E402
import wrk_runner  # noqa: E402
from envoy_runner import DEFAULT_WASM, EnvoyError, EnvoyProcess, find_envoy  # noqa: E402

PROXY_TEMPLATE = HERE / "proxy.yaml"
UPSTREAM_TEMPLATE = HERE / "upstream.yaml"
# The harness's test plugin, built by bench/envoy/run: the floor for any proxy-wasm filter.
FLOOR_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "harness_test_plugin.wasm"
CONFIG_NAMES = [
    "no-filter", "wasm-floor", "native", "native-cached", "portcullis", "portcullis-uncached", "portcullis-wasm-crypto",
    "portcullis-wasm-uncached",
]
WORKLOAD_NAMES = ["single", "distinct", "mixed"]
READY_TIMEOUT = 90.0  # V8 compiles the plugin at start; slow on a busy 2-core machine


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
    p.add_argument("--configs", default=",".join(CONFIG_NAMES), help="comma-separated, from: " + ", ".join(CONFIG_NAMES))
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES), help="comma-separated, from: " + ", ".join(WORKLOAD_NAMES))
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--envoy-cpu", default="0", help="taskset CPU list for both Envoys (default 0)")
    p.add_argument("--wrk-cpu", default="1", help="taskset CPU list for wrk (default 1)")
    p.add_argument("--envoy-log-level", default="warn",
                   help="Envoy's -l (default warn: Portcullis's per-request info lines are not written)")
    p.add_argument("--wasm", type=Path, default=Path(os.environ.get("PORTCULLIS_WASM", DEFAULT_WASM)))
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench",
                   help="directory for envoy-results.json, envoy-results.md, tokens and Envoy logs")
    args = p.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.tokens = args.tokens or (1000 if args.quick else 10_000)
    args.mixed_tokens = args.mixed_tokens or (400 if args.quick else 2000)
    args.configs = _names(p, args.configs, CONFIG_NAMES)
    args.workloads = _names(p, args.workloads, WORKLOAD_NAMES)
    if args.mixed_tokens % 4:
        p.error("--mixed-tokens must be a multiple of 4 (the mix repeats every 4 requests)")
    return args


def _names(parser: argparse.ArgumentParser, text: str, allowed: list[str]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        parser.error(f"unknown or empty selection {unknown or text!r}; choose from {', '.join(allowed)}")
    return [n for n in allowed if n in names]  # table order, whatever the order given


# --- the machine -----------------------------------------------------------------------------
def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def envoy_version(envoy: str) -> str:
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" -> "1.40.0 (<sha>, RELEASE, BoringSSL)"
    build = _first_line([envoy, "--version"]).split("version:")[-1].strip()
    parts = build.split("/")
    return f"{parts[1]} ({parts[0][:12]}, {', '.join(parts[3:])})" if len(parts) >= 4 else build


def machine_info(envoy: str, wrk: str) -> dict[str, Any]:
    dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "envoy_version": envoy_version(envoy),
        "wrk_version": wrk_runner.wrk_version(wrk),
        "python": platform.python_version(),
        "git_commit": _first_line(["git", "rev-parse", "--short", "HEAD"])
        + ("+dirty" if dirty not in ("", "unknown") else ""),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def exact_command(argv: list[str], script: str = __file__) -> str:
    # The wrapper (bench/envoy/run, bench/haproxy/run) passes the command line it was given.
    return os.environ.get("PORTCULLIS_BENCH_COMMAND") or shlex.join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(script, REPO), *argv])


# --- Envoy -----------------------------------------------------------------------------------
class PinnedEnvoy(EnvoyProcess):
    """EnvoyProcess under `taskset`, with one log level for every component (the runner's
    `wasm:info` would make Portcullis write a line per request, which jwt_authn does not)."""

    def __init__(self, cpu: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cpu = cpu

    def command(self) -> list[str]:
        cmd = super().command()
        if "--component-log-level" in cmd:
            i = cmd.index("--component-log-level")
            del cmd[i:i + 2]
        return ["taskset", "-c", self.cpu, *cmd]


def start_envoy(template: Path, filters: str, upstream_port: int, workdir: Path,
                args: argparse.Namespace, wasm: Path) -> PinnedEnvoy:
    envoy = PinnedEnvoy(
        cpu=args.envoy_cpu, wasm=wasm, plugin_config=filters, upstream_port=upstream_port,
        workdir=workdir, concurrency=1, log_level=args.envoy_log_level, template=template)
    try:
        envoy.start(timeout=READY_TIMEOUT)
    except BaseException:
        envoy.stop()
        raise
    return envoy


def start_upstream(args: argparse.Namespace) -> PinnedEnvoy:
    # EnvoyProcess insists on an existing wasm file; upstream.yaml never references it.
    return start_envoy(UPSTREAM_TEMPLATE, "", 0, args.out / "envoy" / "upstream", args, UPSTREAM_TEMPLATE)


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def process_cpu_seconds(pid: int) -> float:
    # /proc/PID/stat: utime and stime are fields 14 and 15, after the parenthesised name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(envoy_pid: int, upstream_pid: int) -> dict[str, float]:
    return {
        "wall": time.monotonic(),
        "envoy": process_cpu_seconds(envoy_pid),
        "upstream": process_cpu_seconds(upstream_pid),
        "wrk": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,  # wrk is our only child then
    }


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU each process used during the measurement, as a share of one core. Envoy + upstream
    well under 100% means the pinned core was not saturated (or other work took it)."""
    wall = after["wall"] - before["wall"]
    shares = {k: round((after[k] - before[k]) / wall, 3) for k in ("envoy", "upstream", "wrk")}
    return {**shares, "envoy_seconds": round(after["envoy"] - before["envoy"], 3)}


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def filter_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """The filters' own counters (cache hits, denials); the JSON keeps what changed during
    the measurement, to explain a number."""
    try:
        url = envoy.admin_url("/stats?filter=(portcullis|jwt_authn)")
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
            text = resp.read().decode()
    except OSError:
        return {}
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit() and int(value) > 0:
            stats[name] = int(value)
    return stats


# --- one cell --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    label: str
    token: str | None
    want_status: int
    want_sub: str | None = None


def probes(maker: tokens.TokenMaker, checks_tokens: bool) -> list[Probe]:
    """What each configuration must answer before it is measured: proof of the same job."""
    if not checks_tokens:
        return [Probe("valid", maker.valid("probe"), 200), Probe("forged", maker.forged("probe"), 200)]
    return [
        Probe("valid", maker.valid("probe-user"), 200, want_sub="probe-user"),
        Probe("expired", maker.expired("probe-user"), 401),
        Probe("forged", maker.forged("probe-user"), 401),
        Probe("missing", None, 401),
    ]


def send(url: str, token: str | None) -> tuple[int, str | None]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.headers.get("x-upstream-saw-sub")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("x-upstream-saw-sub")


def preflight(envoy: EnvoyProcess, checks: list[Probe]) -> list[str]:
    problems = []
    for probe in checks:
        status, sub = send(envoy.url("/api/items"), probe.token)
        if status != probe.want_status:
            problems.append(f"{probe.label} token: {status}, want {probe.want_status}")
        elif probe.want_sub is not None and sub != probe.want_sub:
            problems.append(f"{probe.label} token: upstream saw {configs.CLAIM_HEADER}={sub!r}")
    return problems


def load(envoy: EnvoyProcess, workload: tokens.Workload, seconds: int, args: argparse.Namespace,
         wrk: str, start: int = 1) -> dict[str, Any]:
    spec = wrk_runner.LoadSpec(envoy.url("/api/items"), workload.token_file, seconds,
                               args.connections, args.wrk_threads, args.wrk_cpu, start)
    return wrk_runner.run(wrk, spec)


def base_row(config: configs.Configuration, workload: tokens.Workload) -> dict[str, Any]:
    return {"config": config.name, "config_description": config.description,
            "workload": workload.name, "workload_description": workload.description}


def measure(config: configs.Configuration, workload: tokens.Workload, upstream: EnvoyProcess,
            maker: tokens.TokenMaker, args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    row = base_row(config, workload)
    workdir = args.out / "envoy" / f"{config.name}-{workload.name}"
    assert upstream.listen_port is not None and upstream.proc is not None
    envoy = start_envoy(PROXY_TEMPLATE, configs.render_filters(config.filters), upstream.listen_port,
                        workdir, args, args.wasm)
    try:
        problems = preflight(envoy, probes(maker, config.checks_tokens))
        # The measurement goes on through the token file where the warm-up stopped (past the
        # requests still in flight then, one per connection), so the warm-up does not fill
        # the cache with exactly the tokens measured first.
        warmed = 0
        if args.warmup > 0:
            warmed = load(envoy, workload, args.warmup, args, wrk)["requests"] + args.connections
        assert envoy.proc is not None
        stats_before = filter_stats(envoy)
        before = cpu_snapshot(envoy.proc.pid, upstream.proc.pid)
        result = load(envoy, workload, args.duration, args, wrk, start=warmed + 1)
        cpu = cpu_shares(before, cpu_snapshot(envoy.proc.pid, upstream.proc.pid))
        memory = memory_kib(envoy.proc.pid)  # taskset execs Envoy: same pid
        # Portcullis hands its decision counts to Envoy on a one-second tick.
        time.sleep(1.2)
        stats = counter_deltas(stats_before, filter_stats(envoy))
    finally:
        envoy.stop()
    problems += report.status_problems(result, workload.mixed, config.checks_tokens)
    row.update({
        "status": "invalid" if problems else "ok",
        "detail": "; ".join(problems),
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "requests": result["requests"],
        "duration_s": round(result["duration_us"] / 1e6, 3),
        "latency_us": result["latency_us"],
        "statuses": result["statuses"],
        "socket_errors": result["socket_errors"],
        "rss_kib": memory.get("VmRSS"),
        "peak_rss_kib": memory.get("VmHWM"),
        "cache_hit_ratio": report.cache_hit_ratio(stats),
        "cpu": cpu,
        # Robust to other work on the machine, unlike req/s: what a request costs the proxy.
        "envoy_cpu_us_per_request": round(cpu["envoy_seconds"] * 1e6 / max(1, result["requests"]), 1),
        "filter_stats": stats,
        "envoy_log": str(envoy.log_path),
    })
    return row


def rejection(err: EnvoyError) -> str | None:
    """The plugin's own message when it refused its configuration, else None."""
    for line in str(err).splitlines():
        if "invalid configuration" in line:
            message = line.split("invalid configuration:", 1)[1].strip()
            return message.split(", expected one of")[0]  # serde's list of every known field
    return None


def run_config(config: configs.Configuration, workloads: list[tokens.Workload], upstream: EnvoyProcess,
               maker: tokens.TokenMaker, args: argparse.Namespace, wrk: str) -> list[dict[str, Any]]:
    rows = []
    for workload in workloads:
        print(f"bench: {config.name} / {workload.name} ...", flush=True)
        try:
            row = measure(config, workload, upstream, maker, args, wrk)
        except EnvoyError as err:
            reason = rejection(err)
            if not (config.optional and reason):
                raise
            # The plugin does not know this setting yet: report it and go on with the others.
            print(f"bench: {config.name}: config rejected: {reason}", flush=True)
            return rows + [{**base_row(config, w), "status": "config rejected", "detail": reason}
                           for w in workloads[len(rows):]]
        print("bench:   " + "  ".join(report.table_cells(row)[2:]), flush=True)
        rows.append(row)
    return rows


def run_all(chosen: list[configs.Configuration], workloads: list[tokens.Workload],
            maker: tokens.TokenMaker, args: argparse.Namespace, wrk: str) -> list[dict[str, Any]]:
    """Every cell, behind one upstream Envoy kept for the whole run (identical for all)."""
    rows: list[dict[str, Any]] = []
    upstream = start_upstream(args)
    try:
        for config in chosen:
            rows += run_config(config, workloads, upstream, maker, args, wrk)
    finally:
        upstream.stop()
    return rows


# --- the run ---------------------------------------------------------------------------------
def unwind_on_signals() -> None:
    # SIGTERM (e.g. from CI) unwinds like Ctrl-C, so the finally blocks stop every process;
    # SIGINT too when it was inherited as ignored (a background job of a script).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    unwind_on_signals()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        wrk = wrk_runner.ensure_wrk()
    except wrk_runner.WrkError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    if any(c.startswith("portcullis") for c in args.configs) and not args.wasm.is_file():
        print(f"bench: plugin not built: {args.wasm} (run scripts/build)", file=sys.stderr)
        return 2
    if "wasm-floor" in args.configs and not FLOOR_WASM.is_file():
        print(f"bench: floor plugin not built: {FLOOR_WASM} (run bench/envoy/run)", file=sys.stderr)
        return 2
    command = exact_command(argv)
    machine = machine_info(find_envoy(), wrk)
    print(f"bench: {command}\nbench: {machine}", flush=True)

    maker = tokens.TokenMaker()
    workloads = tokens.make_workloads(maker, args.out / "tokens", args.tokens, args.mixed_tokens // 4,
                                      args.workloads)
    chosen = [c for c in configs.all_configurations(maker.trusted.jwks(), args.wasm, FLOOR_WASM) if c.name in args.configs]

    try:
        rows = run_all(chosen, workloads, maker, args, wrk)
    except EnvoyError as err:
        print(f"bench: error: Envoy did not become ready: {err}", file=sys.stderr)
        return 1
    except wrk_runner.WrkError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1

    report.add_ratios(rows)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
            "wrk_threads": args.wrk_threads, "envoy_cpu": args.envoy_cpu, "wrk_cpu": args.wrk_cpu,
            "envoy_log_level": args.envoy_log_level, "distinct_tokens": args.tokens,
            "mixed_tokens": args.mixed_tokens, "upstream": "second Envoy, direct_response 200, same CPU",
        },
        "rows": rows,
    }
    json_path, md_path = args.out / "envoy-results.json", args.out / "envoy-results.md"
    report.write(result, json_path, md_path)
    print("\n" + report.text_table(rows) + "\n")
    print(f"bench: {command}\nbench: results in {json_path} and {md_path}")
    invalid = [f"{r['config']}/{r['workload']}" for r in rows if r["status"] == "invalid"]
    if invalid:
        print(f"bench: INVALID measurements (the status mix shows a filter not doing its job): "
              f"{', '.join(invalid)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nbench: interrupted; Envoy and wrk stopped", file=sys.stderr)
        sys.exit(130)
