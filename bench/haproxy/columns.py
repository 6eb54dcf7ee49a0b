"""The columns of the HAProxy load benchmark and the HAProxy configuration each one runs.

no-filter and native are rendered from proxy.cfg (native with native.cfg's rules in its
frontend); portcullis runs the haproxy.cfg and SPOE file that `portcullis-spoa haproxy-config`
writes, with the bench's two settings put in: `nbthread 1` and the x-spoe-ms rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import AUDIENCE, CLAIM_HEADER, ISSUER, portcullis_policy  # bench/envoy/configs.py

HERE = Path(__file__).resolve().parent
PROXY_TEMPLATE = HERE / "proxy.cfg"
NATIVE_RULES = HERE / "native.cfg"
UPSTREAM_TEMPLATE = HERE / "upstream.cfg"
CLOCK_SKEW = 60  # Portcullis's default clock_skew_seconds
# The SPOE file the agent writes is planned to set `option var-prefix portcullis` and
# `option set-process-time ptime`: HAProxy's own measure of each SPOE exchange, in ms, in
# txn.portcullis.ptime (the bench reads the actual names from the file: spoe_time_var).
SPOE_TIME_VAR = "txn.portcullis.ptime"
SPOE_TIME_HEADER = "x-spoe-ms"


def spoe_time_rule(var: str = SPOE_TIME_VAR) -> str:
    return f'    http-after-response set-header {SPOE_TIME_HEADER} "%[var({var})]"'


@dataclass(frozen=True)
class Column:
    name: str
    description: str
    checks_tokens: bool  # False for the no-filter floor: it passes every token
    agent: bool = False  # True: HAProxy + the portcullis-spoa agent
    policy_fields: tuple[tuple[str, Any], ...] = ()  # top-level policy fields (agent columns)

    def policy(self, jwks: dict[str, Any]) -> dict[str, Any]:
        """The Envoy bench's portcullis policy (same issuer, audience, JWKS, claim header)."""
        return portcullis_policy(jwks, **dict(self.policy_fields))


COLUMNS = [
    Column("no-filter", "HAProxy alone in front of the upstream: the floor", checks_tokens=False),
    Column("native", "HAProxy's jwt_verify + jwt_header_query/jwt_payload_query ACLs (native.cfg)",
           checks_tokens=True),
    Column("portcullis", "HAProxy + the portcullis-spoa SPOE agent running portcullis.wasm, default "
           "settings (config from `portcullis-spoa haproxy-config`)", checks_tokens=True, agent=True),
    Column("portcullis-uncached", 'the same with "cache_size": 0: every request verifies its token, '
           "as native does", checks_tokens=True, agent=True, policy_fields=(("cache_size", 0),)),
]
NAMES = [c.name for c in COLUMNS]


def render(template: Path, values: dict[str, str]) -> str:
    """Fill in ${NAME} placeholders, except in comment lines (they keep the names they
    document); one left unfilled is an error (HAProxy would read it as an environment variable)."""
    lines = []
    for line in template.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            unknown = [n for n in re.findall(r"\$\{([A-Z_]+)\}", line) if n not in values]
            if unknown:
                raise ValueError(f"unfilled placeholders in {template}: {unknown}")
            for name, value in values.items():
                line = line.replace("${" + name + "}", value)
        lines.append(line)
    return "\n".join(lines) + "\n"


def native_rules(public_key: Path, kid: str) -> str:
    return render(NATIVE_RULES, {
        "PUBLIC_KEY": str(public_key.resolve()), "KID": kid, "ISSUER": ISSUER, "AUDIENCE": AUDIENCE,
        "CLAIM_HEADER": CLAIM_HEADER, "CLOCK_SKEW": str(CLOCK_SKEW),
    }).rstrip("\n")


def proxy_config(column: Column, listen_port: int, upstream_port: int, public_key: Path, kid: str) -> str:
    """haproxy.cfg of the no-filter and native columns."""
    if column.agent:
        raise ValueError("the portcullis column's config comes from portcullis-spoa haproxy-config")
    rules = native_rules(public_key, kid) if column.checks_tokens else "    # no filter"
    return render(PROXY_TEMPLATE, {"LISTEN_PORT": str(listen_port), "UPSTREAM_PORT": str(upstream_port),
                                   "FILTER_RULES": rules})


def upstream_config(listen_port: int) -> str:
    return render(UPSTREAM_TEMPLATE, {"LISTEN_PORT": str(listen_port)})


class GeneratedConfigError(ValueError):
    pass


_SECTION = re.compile(r"^(global|defaults|frontend|listen|backend|resolvers|peers|userlist|"
                      r"program|http-errors|ring|mailers|cache)\b")


def adapt_generated(text: str, time_var: str = SPOE_TIME_VAR) -> tuple[str, list[str]]:
    """The agent's haproxy.cfg with the bench's settings: `nbthread 1` right after `global`
    (added, or instead of the agent's nbthread; cpu-map and daemon dropped: the bench pins with
    taskset and runs -db), no `log` target in `global` (the other columns log nothing; per
    request log lines would be a cost of their own), and the x-spoe-ms rule at the top of the
    first frontend (or listen) section. Returns the new text and notes on what was changed."""
    nbthread = "    nbthread 1  # bench/haproxy: one thread, pinned with taskset"
    notes: list[str] = []
    out: list[str] = []
    section = None
    saw_global = saw_frontend = False
    for line in text.splitlines():
        stripped = line.strip()
        keyword = stripped.split()[:1]
        if _SECTION.match(line):  # section keywords start in column 0
            section = line.split()[0]
            out.append(line)
            if section == "global":
                saw_global = True
                out.append(nbthread)
            elif section in ("frontend", "listen") and not saw_frontend:
                saw_frontend = True
                out.append(spoe_time_rule(time_var) + "  # bench/haproxy")
            continue
        if section == "global" and keyword in (["nbthread"], ["cpu-map"], ["daemon"], ["nbproc"]):
            if stripped != "nbthread 1":
                notes.append(f"dropped the generated `{stripped}` (the bench runs one thread, -db, under taskset)")
            continue
        if section == "global" and keyword == ["log"]:
            # `log global` elsewhere then has no target: nothing is logged, as in the other columns.
            notes.append(f"dropped the generated `{stripped}` (no column logs requests)")
            continue
        out.append(line)
    if not saw_frontend:
        raise GeneratedConfigError("the generated haproxy.cfg has no frontend or listen section")
    if not saw_global:
        out = ["global", nbthread, ""] + out
    return "\n".join(out) + "\n", notes


def spoe_time_var(text: str) -> str | None:
    """The txn variable in which the generated SPOE file has HAProxy store the processing time:
    txn.<var-prefix>.<set-process-time name>, the prefix defaulting to the spoe-agent's name;
    None when the file does not ask for it (the SPOE ms column then stays empty)."""
    ptime = re.search(r"^\s*option\s+set-process-time\s+(\S+)", text, re.M)
    prefix = re.search(r"^\s*option\s+var-prefix\s+(\S+)", text, re.M) \
        or re.search(r"^\s*spoe-agent\s+(\S+)", text, re.M)
    if not ptime or not prefix:
        return None
    return f"txn.{prefix.group(1)}.{ptime.group(1)}"
