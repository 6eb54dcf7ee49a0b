"""Signatures checked by Envoy's own crypto (the `verify_signature` foreign function), with the
plugin's pure-Rust path as the fallback: the decision log says which one checked each token."""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

import mint
from e2e_support import AUDIENCE, ISSUER, Keys, base_config, call, decision_lines
from envoy_runner import EnvoyProcess


class EcSigner:
    """An ECDSA key pair (P-256 for ES256, P-384 for ES384) with its JWK."""

    def __init__(self, curve: ec.EllipticCurve, alg: str, crv: str, kid: str) -> None:
        self.key = ec.generate_private_key(curve)
        self.alg, self.crv, self.kid = alg, crv, kid

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        size = (self.key.curve.key_size + 7) // 8
        return {
            "kty": "EC", "crv": self.crv, "kid": self.kid, "alg": self.alg, "use": "sig",
            "x": mint.b64url(numbers.x.to_bytes(size, "big")),
            "y": mint.b64url(numbers.y.to_bytes(size, "big")),
        }

    def token(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid})


@pytest.fixture(scope="module")
def signers() -> dict[str, EcSigner]:
    return {
        "ES256": EcSigner(ec.SECP256R1(), "ES256", "P-256", "e2e-ec256"),
        "ES384": EcSigner(ec.SECP384R1(), "ES384", "P-384", "e2e-ec384"),
    }


def config(keys: Keys, signers: dict[str, EcSigner], **extra: Any) -> dict[str, Any]:
    jwks = {"keys": keys.trusted.jwks()["keys"] + [s.jwk() for s in signers.values()]}
    return base_config(keys, provider={"jwks": jwks, "algorithms": ["RS256", "ES256", "ES384"]}, **extra)


def claims(sub: str) -> dict[str, Any]:
    return mint.claims(ISSUER, AUDIENCE, sub, scope="read")


def counter(envoy: EnvoyProcess, name: str) -> int:
    # Decision counts reach Envoy on the plugin's tick, once a second.
    time.sleep(1.5)
    if envoy.kind == "haproxy":  # the agent's Prometheus text
        text = requests.get(envoy.admin_url("/metrics"), timeout=5).text
        found = re.search(rf"^{name} (\d+)$", text, re.MULTILINE)
        return int(found.group(1)) if found else 0
    text = requests.get(envoy.admin_url(f"/stats?filter={name}"), timeout=5).text
    found = re.search(rf"wasmcustom\.{name}: (\d+)", text)
    return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def envoy(start_envoy, keys: Keys, signers: dict[str, EcSigner]) -> EnvoyProcess:
    return start_envoy(config(keys, signers))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384"])
def test_envoy_checks_the_signature(envoy, keys, signers, alg):
    sub = f"host-{alg}"
    token = keys.trusted.token(claims(sub)) if alg == "RS256" else signers[alg].token(claims(sub))
    answer = call(envoy, "/api/items", token)
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == [sub]
    assert envoy.wait_for_log(f'sub="{sub}"')
    line = next(line for line in decision_lines(envoy) if f'sub="{sub}"' in line)
    assert "crypto=host" in line, line


def test_forgeries_are_refused_and_a_replay_is_not_checked_again(envoy, keys, signers):
    # Same kid as the trusted EC key, another key pair: the host must say no.
    impostor = EcSigner(ec.SECP256R1(), "ES256", "P-256", "e2e-ec256")
    forged = [mint.tamper(keys.trusted.token(claims("mallory"))), impostor.token(claims("mallory"))]
    for token in forged:
        assert call(envoy, "/api/items", token).status == 401
    assert envoy.wait_for_log("reason=bad_signature")
    checks = counter(envoy, "portcullis_token_cache_misses_total")
    for token in forged:
        answer = call(envoy, "/api/items", token)
        assert answer.status == 401 and "signature does not verify" in answer.www_authenticate, answer
    assert counter(envoy, "portcullis_token_cache_misses_total") == checks
    assert counter(envoy, "portcullis_signatures_host_total") >= 3


def test_crypto_wasm_keeps_envoy_out_of_it(start_envoy, keys, signers):
    envoy = start_envoy(config(keys, signers, crypto="wasm"))
    answer = call(envoy, "/api/items", signers["ES256"].token(claims("wasm-only")))
    assert answer.status == 200, answer
    assert envoy.wait_for_log('sub="wasm-only"')
    line = next(line for line in decision_lines(envoy) if 'sub="wasm-only"' in line)
    assert "crypto=wasm" in line, line
    assert counter(envoy, "portcullis_signatures_host_total") == 0
