"""Keys and token files for the load benchmark, made fresh on every run (never committed)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mint  # scripts/mint.py

from configs import AUDIENCE, ISSUER

# Long enough to outlive the whole run (the default run takes under ten minutes).
VALID_FOR = 3600


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    token_file: Path
    mixed: bool  # True: half the tokens are invalid, so half the answers must be 401


class TokenMaker:
    def __init__(self) -> None:
        self.trusted = mint.Signer.generate("bench-k1")
        # Same kid, another key: its tokens parse and name a known key but fail the signature.
        self.forger = mint.Signer.generate("bench-k1")

    def valid(self, sub: str) -> str:
        return self.trusted.token(mint.claims(ISSUER, AUDIENCE, sub, expires_in=VALID_FOR))

    def expired(self, sub: str) -> str:
        # Well past both filters' 60 s clock skew.
        body = mint.claims(ISSUER, AUDIENCE, sub, expires_in=-3600)
        body["iat"] = body["nbf"] = body["exp"] - 600
        return self.trusted.token(body)

    def forged(self, sub: str) -> str:
        return self.forger.token(mint.claims(ISSUER, AUDIENCE, sub, expires_in=VALID_FOR))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def mixed_tokens(maker: TokenMaker, groups: int) -> list[str]:
    """valid, expired, valid, forged, ...: 50/25/25 in every window of four requests, so even a
    short run sees the intended mix."""
    tokens: list[str] = []
    for i in range(groups):
        tokens += [maker.valid(f"mix-a{i}"), maker.expired(f"mix-e{i}"),
                   maker.valid(f"mix-b{i}"), maker.forged(f"mix-f{i}")]
    return tokens


def make_workloads(maker: TokenMaker, directory: Path, distinct: int, mixed_groups: int,
                   selected: list[str]) -> list[Workload]:
    started = time.monotonic()
    all_workloads = {
        "single": lambda: Workload(
            "single", "one valid token, repeated",
            write_lines(directory / "single.txt", [maker.valid("user-0")]), mixed=False),
        "distinct": lambda: Workload(
            "distinct", f"{distinct} distinct valid tokens, cycled",
            write_lines(directory / "distinct.txt", [maker.valid(f"user-{i}") for i in range(distinct)]),
            mixed=False),
        "mixed": lambda: Workload(
            "mixed", f"{4 * mixed_groups} tokens: 50% valid, 25% expired, 25% forged signature",
            write_lines(directory / "mixed.txt", mixed_tokens(maker, mixed_groups)), mixed=True),
    }
    workloads = [all_workloads[name]() for name in selected]
    print(f"bench: tokens minted in {time.monotonic() - started:.1f}s", flush=True)
    return workloads
