"""Checks, ratios and the three renderings of the results: the terminal table, JSON, Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

# Status-mix bounds. A benchmark where every request got 200 (the filter let forged tokens
# through) or every request got 401 (it rejected everything) measures nothing.
ALL_OK_MIN = 0.99  # single/distinct: share of 200s
MIXED_OK = (0.45, 0.55)  # mixed: share of 200s, and likewise of 401s
MAX_OTHER = 0.01  # anything else (5xx, 403, socket errors) as a share of requests

BASELINES = ("native", "native-cached")


def status_problems(result: dict[str, Any], mixed: bool, checks_tokens: bool) -> list[str]:
    """Why a measurement's status mix shows the configuration did not do its job (empty: fine)."""
    total = result["requests"]
    if total == 0:
        return ["no requests completed"]
    statuses: dict[str, int] = result["statuses"]
    ok = statuses.get("200", 0) / total
    denied = statuses.get("401", 0) / total
    other = 1 - ok - denied + sum(result["socket_errors"].values()) / total
    problems = []
    if other > MAX_OTHER:
        problems.append(f"{other:.1%} neither 200 nor 401 (or socket errors)")
    if mixed and checks_tokens:
        for label, share in (("200", ok), ("401", denied)):
            if not MIXED_OK[0] <= share <= MIXED_OK[1]:
                problems.append(f"{label} share {share:.1%} outside {MIXED_OK[0]:.0%}-{MIXED_OK[1]:.0%}")
    elif ok < ALL_OK_MIN:
        # The no-filter floor lands here for every workload: it must pass all tokens.
        problems.append(f"only {ok:.1%} got 200")
    return problems


def add_ratios(rows: list[dict[str, Any]], baselines: tuple[str, ...] = BASELINES) -> None:
    """rps relative to each baseline configuration (by default native jwt_authn, uncached and
    cached) on the same workload, same run: the row gets `vs_<baseline>`."""
    by_key = {(r["config"], r["workload"]): r for r in rows}
    for row in rows:
        for base in baselines:
            other = by_key.get((base, row["workload"]))
            ok = row.get("rps") and other and other.get("rps") and other["status"] == "ok"
            row[f"vs_{base}"] = round(row["rps"] / other["rps"], 3) if ok else None


# Counter names: jwt_authn's jwt_cache_hit/miss and Portcullis's token_cache_hits/misses_total.
CACHE_COUNTERS = (("jwt_cache_hit", "jwt_cache_miss"),
                  ("portcullis_token_cache_hits_total", "portcullis_token_cache_misses_total"))


def cache_hit_ratio(stats: dict[str, int]) -> float | None:
    """Share of token lookups the filter's cache answered during the measurement. In the
    distinct workload it depends on throughput: a faster filter goes round the token pool
    more often within the run."""
    for hit_name, miss_name in CACHE_COUNTERS:
        hits = sum(v for k, v in stats.items() if k.endswith("." + hit_name))
        misses = sum(v for k, v in stats.items() if k.endswith("." + miss_name))
        if hits + misses:
            return round(hits / (hits + misses), 3)
    return None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _statuses(row: dict[str, Any]) -> str:
    if not row.get("statuses"):
        return "-"
    total = row["requests"] or 1
    parts = [f"{code}:{count / total:.0%}" for code, count in row["statuses"].items()]
    errors = sum(row.get("socket_errors", {}).values())
    return " ".join(parts) + (f" sockerr:{errors}" if errors else "")


def _cpu(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "-"
    return f"{cpu['envoy'] + cpu['upstream']:.0%}/{cpu['wrk']:.0%}"


def _verdict(row: dict[str, Any], width: int = 70) -> str:
    if row["status"] == "ok":
        return "ok"
    text = f"{row['status'].upper()}: {row['detail']}" if row.get("detail") else row["status"].upper()
    return text if len(text) <= width else text[:width - 3] + "..."  # the JSON has all of it


HEADERS = ["configuration", "workload", "req/s", "p50 ms", "p99 ms", "RSS MiB",
           "vs native", "vs native-cached", "cache hits", "Envoy CPU us/req", "CPU envoy+up/wrk", "statuses", "check"]


def table_cells(row: dict[str, Any]) -> list[str]:
    lat = row.get("latency_us") or {}
    return [
        row["config"], row["workload"],
        _fmt(row.get("rps"), ",.0f"),
        _fmt(lat.get("p50") and lat["p50"] / 1000, ".2f"),
        _fmt(lat.get("p99") and lat["p99"] / 1000, ".2f"),
        _fmt(row.get("rss_kib") and row["rss_kib"] / 1024, ".1f"),
        _fmt(row.get("vs_native"), ".2f", "x"),
        _fmt(row.get("vs_native-cached"), ".2f", "x"),
        _fmt(row.get("cache_hit_ratio"), ".0%"),
        _fmt(row.get("envoy_cpu_us_per_request"), ".0f"),
        _cpu(row.get("cpu")),
        _statuses(row),
        _verdict(row),
    ]


Cells = Callable[[dict[str, Any]], list[str]]


def text_table(rows: list[dict[str, Any]], headers: list[str] = HEADERS, cells_of: Cells = table_cells) -> str:
    cells = [headers] + [cells_of(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], headers: list[str] = HEADERS, cells_of: Cells = table_cells) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells_of(r)) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    setup = report["settings"]
    return "\n".join([
        f"Measured {report['finished']} with `{report['command']}`",
        "",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, kernel {machine['kernel']}",
        f"- Envoy {machine['envoy_version']}, {machine['wrk_version']}, git {machine['git_commit']}",
        f"- load average (1, 5, 15 min) at start {machine['loadavg_at_start']}, at end "
        f"{machine.get('loadavg_at_end')}: anything near or above 1 means other work shared the CPUs",
        f"- Envoy on CPU {setup['envoy_cpu']} (`--concurrency 1`, log level {setup['envoy_log_level']}), "
        f"upstream Envoy on CPU {setup['envoy_cpu']}, wrk on CPU {setup['wrk_cpu']} "
        f"({setup['wrk_threads']} thread, {setup['connections']} connections); "
        f"{setup['warmup_s']} s warm-up, then {setup['duration_s']} s measured, a fresh Envoy per cell",
        "",
        markdown_table(report["rows"]),
        "",
    ])


def write(report: dict[str, Any], json_path: Path, markdown_path: Path,
          render: Callable[[dict[str, Any]], str] = markdown) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render(report))
