#!/usr/bin/env python3
"""A stand-in for portcullis-spoa with the same two subcommands, to test the bench's portcullis
columns before the real agent exists. Not Portcullis and not fast (Python, one thread):

    .venv/bin/python bench/haproxy/run.py --agent bench/haproxy/stub_agent.py --configs portcullis

`serve` is a small SPOE agent (SPOP 2.0 on HAProxy 2.6: HELLO, NOTIFY/ACK, DISCONNECT, the
health-check hello) that checks the bearer token the way the bench's policy asks (RS256, the
policy's JWKS, issuer, audience, exp required, 60 s of skew) with PyJWT, and answers with
variables: `status` (200 or 401), `sub`, and `allow` last. `haproxy-config` writes the
haproxy.cfg and portcullis-spoe.conf that act on them. Standard library + PyJWT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
from pathlib import Path
from typing import Any

import jwt  # PyJWT, in .venv

# Frame types and flags (SPOE.txt §3.2).
HAPROXY_HELLO, HAPROXY_DISCONNECT, NOTIFY = 1, 2, 3
AGENT_HELLO, AGENT_DISCONNECT, ACK = 101, 102, 103
FIN = 1
# Typed data (§3.1).
T_NULL, T_BOOL, T_INT32, T_UINT32, T_INT64, T_UINT64, T_IPV4, T_IPV6, T_STRING, T_BINARY = range(10)
SCOPE_TXN = 2
SET_VAR = 1


def varint(value: int) -> bytes:
    if value < 240:
        return bytes([value])
    out = [(value | 240) & 0xFF]
    value = (value - 240) >> 4
    while value >= 128:
        out.append((value | 128) & 0xFF)
        value = (value - 128) >> 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value = buf[i]
    i += 1
    if value < 240:
        return value, i
    shift = 4
    while True:
        byte = buf[i]
        i += 1
        value += byte << shift
        shift += 7
        if byte < 128:
            return value, i


def read_bytes(buf: bytes, i: int) -> tuple[bytes, int]:
    length, i = read_varint(buf, i)
    return buf[i:i + length], i + length


def read_typed(buf: bytes, i: int) -> tuple[Any, int]:
    kind, flags = buf[i] & 0x0F, buf[i] >> 4
    i += 1
    if kind == T_NULL:
        return None, i
    if kind == T_BOOL:
        return bool(flags & 1), i
    if kind in (T_INT32, T_UINT32, T_INT64, T_UINT64):
        return read_varint(buf, i)
    if kind == T_IPV4:
        return buf[i:i + 4], i + 4
    if kind == T_IPV6:
        return buf[i:i + 16], i + 16
    if kind in (T_STRING, T_BINARY):
        return read_bytes(buf, i)
    raise ValueError(f"unknown data type {kind}")


def string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return varint(len(data)) + data


def typed_string(value: str) -> bytes:
    return bytes([T_STRING]) + string(value)


def typed_uint32(value: int) -> bytes:
    return bytes([T_UINT32]) + varint(value)


def read_kv(payload: bytes) -> dict[str, Any]:
    values, i = {}, 0
    while i < len(payload):
        name, i = read_bytes(payload, i)
        values[name.decode()], i = read_typed(payload, i)
    return values


def read_messages(payload: bytes) -> dict[str, dict[str, Any]]:
    messages, i = {}, 0
    while i < len(payload):
        name, i = read_bytes(payload, i)
        count = payload[i]
        i += 1
        args = {}
        for _ in range(count):
            arg, i = read_bytes(payload, i)
            args[arg.decode()], i = read_typed(payload, i)
        messages[name.decode()] = args
    return messages


def frame(kind: int, stream_id: int, frame_id: int, payload: bytes) -> bytes:
    body = bytes([kind]) + struct.pack(">I", FIN) + varint(stream_id) + varint(frame_id) + payload
    return struct.pack(">I", len(body)) + body


def set_var(name: str, typed_value: bytes) -> bytes:
    return bytes([SET_VAR, 3, SCOPE_TXN]) + string(name) + typed_value


class Checker:
    def __init__(self, policy: dict[str, Any]) -> None:
        (provider,) = policy["providers"].values()
        self.issuer, self.audiences = provider["issuer"], provider["audiences"]
        self.keys = {k["kid"]: jwt.PyJWK(k).key for k in provider["jwks"]["keys"]}
        self.claim = policy["claim_headers"][0]["claim"]

    def check(self, authorization: str | None) -> tuple[int, str]:
        if not authorization or not authorization.lower().startswith("bearer "):
            return 401, ""
        token = authorization[7:].strip()
        try:
            key = self.keys[jwt.get_unverified_header(token).get("kid")]
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=self.audiences, issuer=self.issuer,
                                leeway=60, options={"require": ["exp"]})
        except (KeyError, jwt.PyJWTError):
            return 401, ""
        return 200, str(claims.get(self.claim, ""))


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, checker: Checker) -> None:
    try:
        while True:
            length = struct.unpack(">I", await reader.readexactly(4))[0]
            data = await reader.readexactly(length)
            kind, i = data[0], 5
            stream_id, i = read_varint(data, i)
            frame_id, i = read_varint(data, i)
            payload = data[i:]
            if kind == HAPROXY_HELLO:
                hello = read_kv(payload)
                reply = (string("version") + typed_string("2.0")
                         + string("max-frame-size") + typed_uint32(int(hello.get("max-frame-size", 16380)))
                         + string("capabilities") + typed_string(""))
                writer.write(frame(AGENT_HELLO, 0, 0, reply))
                await writer.drain()
                if hello.get("healthcheck"):
                    return
            elif kind == NOTIFY:
                args: dict[str, Any] = {}
                for message in read_messages(payload).values():
                    args.update(message)
                auth = args.get("auth")
                status, sub = checker.check(auth.decode("utf-8", "replace") if isinstance(auth, bytes) else None)
                actions = set_var("status", typed_uint32(status))
                if sub:
                    actions += set_var("sub", typed_string(sub))
                actions += set_var("allow", bytes([T_BOOL | 0x10]))  # last: a truncated list denies
                writer.write(frame(ACK, stream_id, frame_id, actions))
                await writer.drain()
            elif kind == HAPROXY_DISCONNECT:
                reply = string("status-code") + typed_uint32(0) + string("message") + typed_string("")
                writer.write(frame(AGENT_DISCONNECT, 0, 0, reply))
                await writer.drain()
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    checker = Checker(json.loads(Path(args.policy).read_text()))
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, checker), host, int(port))
    bound = server.sockets[0].getsockname()
    print(f"portcullis-spoa: listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


HAPROXY_CFG = """\
# Written by bench/haproxy/stub_agent.py haproxy-config (a stand-in for portcullis-spoa).
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend portcullis
    bind {bind}
    filter spoe engine portcullis config {spoe}
    http-request send-spoe-group portcullis portcullis-request
    http-request return status 401 content-type text/plain string "invalid or missing token" hdr www-authenticate "Bearer" if {{ var(txn.portcullis.status) -m int 401 }}
    http-request return status 503 content-type text/plain string "authorization unavailable" unless {{ var(txn.portcullis.allow) -m bool }}
    http-request del-header {header}
    http-request set-header {header} %[var(txn.portcullis.sub)] if {{ var(txn.portcullis.sub) -m found }}
    default_backend upstream

backend upstream
    server upstream {upstream}

backend portcullis-agents
    mode tcp
    timeout connect 2s
    timeout server 30s
    option spop-check
    server agent {agent} check
"""

SPOE_CONF = """\
# Written by bench/haproxy/stub_agent.py haproxy-config (a stand-in for portcullis-spoa).
[portcullis]
spoe-agent portcullis
    groups portcullis-request
    option var-prefix portcullis
    option set-on-error err
    option set-process-time ptime
    register-var-names status sub allow
    no option async
    no option send-frag-payload
    timeout hello 2s
    timeout idle 30s
    timeout processing 1s
    use-backend portcullis-agents

spoe-message portcullis-check
    args method=method path=path auth=req.hdr(authorization)

spoe-group portcullis-request
    messages portcullis-check
"""


def haproxy_config(args: argparse.Namespace) -> None:
    policy = json.loads(Path(args.policy).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "portcullis-spoe.conf").write_text(SPOE_CONF)
    (out / "haproxy.cfg").write_text(HAPROXY_CFG.format(
        bind=args.bind, spoe="portcullis-spoe.conf", agent=args.agent, upstream=args.upstream,
        header=policy["claim_headers"][0]["header"]))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--wasm", required=True)
    s.add_argument("--policy", required=True)
    s.add_argument("--listen", required=True)
    s.add_argument("--admin")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--cluster", action="append", default=[])
    h = sub.add_parser("haproxy-config")
    for name in ("--policy", "--agent", "--bind", "--upstream", "--out"):
        h.add_argument(name, required=True)
    args = p.parse_args(argv)
    if args.command == "serve":
        try:
            asyncio.run(serve(args))
        except KeyboardInterrupt:
            pass
    else:
        haproxy_config(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
