#!/usr/bin/env python3
"""Mint RSA keys and JWTs for the demo and the tests (never check keys or tokens in).

  mint.py keygen --dir out/keys [--kid k1] [--bits 2048]
        writes DIR/private.pem (PKCS#8) and DIR/jwks.json (the public key as a JWKS)
  mint.py token --dir out/keys --iss https://issuer.demo.test --aud demo-api --sub alice \\
        [--scope "read write"] [--roles admin] [--email a@example.com] [--expires-in 600] \\
        [--claim name=JSON ...]
        prints an RS256 token signed with DIR/private.pem (kid from DIR/jwks.json)
  mint.py decode TOKEN
        prints a token's header and payload (no verification)

Imported by scripts/demo.py and tests/e2e: `Signer`, `unsigned_token`, `tamper`.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """An RSA key pair with a `kid`: signs tokens and describes its public half as a JWK."""

    def __init__(self, private_key: RSAPrivateKey, kid: str) -> None:
        self.private_key = private_key
        self.kid = kid

    @classmethod
    def generate(cls, kid: str = "k1", bits: int = 2048) -> "Signer":
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits), kid)

    @classmethod
    def load(cls, directory: Path) -> "Signer":
        key = serialization.load_pem_private_key((directory / "private.pem").read_bytes(), password=None)
        assert isinstance(key, RSAPrivateKey)
        kid = json.loads((directory / "jwks.json").read_text())["keys"][0]["kid"]
        return cls(key, kid)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = directory / "private.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
        (directory / "jwks.json").write_text(json.dumps(self.jwks(), indent=2) + "\n")

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": b64url_uint(numbers.n),
            "e": b64url_uint(numbers.e),
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})


def claims(
    iss: str,
    aud: str | list[str],
    sub: str,
    expires_in: int = 600,
    issued_ago: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Registered claims relative to now, plus `extra` (None values are left out)."""
    now = int(time.time())
    iat = now - issued_ago
    body: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": iat,
        "nbf": iat,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def unsigned_token(payload: dict[str, Any]) -> str:
    """An `alg: none` token (empty signature), which a verifier must reject."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


def tamper(token: str) -> str:
    """Flip a bit in the signature, keeping it valid base64url of the same length."""
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def decode(token: str) -> dict[str, Any]:
    def part(p: str) -> Any:
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))

    head, payload, _ = token.split(".")
    return {"header": part(head), "payload": part(payload)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mint RSA keys and JWTs for Portcullis demos and tests.")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="write DIR/private.pem and DIR/jwks.json")
    keygen.add_argument("--dir", type=Path, required=True)
    keygen.add_argument("--kid", default="k1")
    keygen.add_argument("--bits", type=int, default=2048)

    token = sub.add_parser("token", help="print an RS256 token signed with DIR/private.pem")
    token.add_argument("--dir", type=Path, required=True)
    token.add_argument("--iss", required=True)
    token.add_argument("--aud", required=True, action="append", help="repeat for several audiences")
    token.add_argument("--sub", required=True)
    token.add_argument("--scope", help='space-delimited, e.g. "read write"')
    token.add_argument("--roles", help="comma-separated; goes to realm_access.roles")
    token.add_argument("--email")
    token.add_argument("--expires-in", type=int, default=600, help="seconds from now; negative = expired")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=JSON", help="extra claim")

    dec = sub.add_parser("decode", help="print a token's header and payload (no verification)")
    dec.add_argument("token")

    args = parser.parse_args(argv)
    if args.command == "keygen":
        Signer.generate(args.kid, args.bits).save(args.dir)
        print(f"wrote {args.dir / 'private.pem'} and {args.dir / 'jwks.json'} (kid {args.kid})")
    elif args.command == "token":
        extra: dict[str, Any] = {}
        for item in args.claim:
            name, _, value = item.partition("=")
            try:
                extra[name] = json.loads(value)
            except json.JSONDecodeError:
                extra[name] = value
        if args.roles:
            extra["realm_access"] = {"roles": args.roles.split(",")}
        aud = args.aud[0] if len(args.aud) == 1 else args.aud
        body = claims(args.iss, aud, args.sub, args.expires_in, scope=args.scope, email=args.email, **extra)
        if args.expires_in <= 0:  # an expired token was also issued in the past
            body["iat"] = body["nbf"] = body["exp"] - 600
        print(Signer.load(args.dir).token(body))
    elif args.command == "decode":
        print(json.dumps(decode(args.token), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
