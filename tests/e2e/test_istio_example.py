"""examples/istio: the WasmPlugin's pluginConfig is a working Portcullis policy (loaded into the
built plugin by the host harness, with the IdP's JWKS served on the Istio cluster it names), and
it says the same as the RequestAuthentication + AuthorizationPolicy pair it replaces."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import mint
from e2e_support import REPO, host_harness

EXAMPLE = REPO / "examples" / "istio"


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{name}: one resource of each kind"
    return by_kind


@pytest.fixture(scope="module")
def plugin() -> dict[str, Any]:
    return documents("wasmplugin.yaml")


@pytest.fixture(scope="module")
def istio_native() -> dict[str, Any]:
    return documents("requestauthentication.yaml")


def policy_of(plugin: dict[str, Any]) -> dict[str, Any]:
    # What Istio hands the plugin: the pluginConfig Struct as JSON.
    return json.loads(json.dumps(plugin["WasmPlugin"]["spec"]["pluginConfig"]))


def test_wasmplugin_fields(plugin):
    wp = plugin["WasmPlugin"]
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1"
    spec = wp["spec"]
    assert spec["url"].startswith("oci://")
    assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"]), "Istio's pattern: 64 hex digits, no prefix"
    assert spec["imagePullPolicy"] in ("IfNotPresent", "Always")
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert not ("selector" in spec and "targetRefs" in spec), "Istio takes one of them"
    assert spec["match"][0]["mode"] == "SERVER"


def test_the_keys_cluster_is_the_service_entry(plugin):
    policy = policy_of(plugin)
    for name, provider in policy["providers"].items():
        cluster = provider["remote_jwks"]["cluster"]
        m = re.fullmatch(r"outbound\|(\d+)\|\|(.+)", cluster)
        assert m, f"{name}: {cluster!r} is not an Istio outbound cluster name"
        port, host = int(m[1]), m[2]
        se = plugin["ServiceEntry"]["spec"]
        assert host in se["hosts"] and port in [p["number"] for p in se["ports"]]
        dr = plugin["DestinationRule"]["spec"]
        assert dr["host"] == host
        tls = {s["port"]["number"]: s["tls"] for s in dr["trafficPolicy"]["portLevelSettings"]}
        assert tls[port]["mode"] == "SIMPLE", "the plugin speaks HTTP; the proxy must add TLS"
        assert provider["remote_jwks"]["uri"].startswith(f"https://{host}/")


def test_same_checks_as_request_authentication(plugin, istio_native):
    policy = policy_of(plugin)
    (provider,) = policy["providers"].values()
    (rule,) = istio_native["RequestAuthentication"]["spec"]["jwtRules"]
    assert provider["issuer"] == rule["issuer"]
    assert provider["remote_jwks"]["uri"] == rule["jwksUri"]
    assert provider["audiences"] == rule["audiences"]
    assert policy["forward_token"] == rule.get("forwardOriginalToken", False)
    assert sorted((h["claim"], h["header"]) for h in policy["claim_headers"]) == sorted(
        (h["claim"], h["header"]) for h in rule["outputClaimToHeaders"])
    principals = {p for r in istio_native["AuthorizationPolicy"]["spec"]["rules"]
                  for f in r.get("from", []) for p in f["source"]["requestPrincipals"]}
    assert principals == {provider["issuer"] + "/*"}
    # Every scope or claim value the AuthorizationPolicy asks for appears in the plugin's rules.
    wanted = {v for r in istio_native["AuthorizationPolicy"]["spec"]["rules"]
              for w in r.get("when", []) for v in w["values"]}
    asked = {v for r in policy["rules"] for v in r.get("scopes", {}).get("any_of", [])}
    asked |= {v for r in policy["rules"] for c in r.get("claims", []) for v in c.get("any_of", [])}
    assert wanted == asked


@pytest.mark.timeout(900)  # `cargo run` may have to build the harness first
def test_plugin_config_runs_in_the_plugin(plugin, wasm, tmp_path):
    policy = policy_of(plugin)
    (provider,) = policy["providers"].values()
    signer = mint.Signer.generate("idp-k1")
    (tmp_path / "jwks.json").write_text(json.dumps(signer.jwks()))
    upstreams = {provider["remote_jwks"]["cluster"]: {
        "status": 200, "headers": {"content-type": "application/json"}, "body_file": "jwks.json"}}

    def token(sub: str, aud: str | None = None, **claims: Any) -> str:
        return signer.token(mint.claims(iss=provider["issuer"], aud=aud or provider["audiences"][0],
                                        sub=sub, **claims))

    reader = token("alice", scope="orders.read")
    writer = token("bob", scope="orders.read orders.write")
    operator = token("carol", scope="", groups=["dev", "ops"])
    cases = [
        ("GET", "/healthz", None, {}, 200),
        ("GET", "/orders/1", None, {}, 401),
        ("GET", "/orders/1", reader, {"x-user": "mallory"}, 200),
        ("POST", "/orders", reader, {}, 403),
        ("POST", "/orders", writer, {}, 200),
        ("GET", "/admin/users", reader, {}, 403),
        ("GET", "/admin/users", operator, {}, 200),
        ("GET", "/orders/1", token("alice", aud="another-api", scope="orders.read"), {}, 401),
        ("GET", "/elsewhere", reader, {}, 403),
    ]
    lines = []
    for method, path, tok, headers, _ in cases:
        h = {":authority": "orders.orders.svc.cluster.local", **headers}
        if tok:
            h["authorization"] = f"Bearer {tok}"
        lines.append(json.dumps({"method": method, "path": path, "headers": h}))
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    (tmp_path / "upstreams.json").write_text(json.dumps(upstreams))
    (tmp_path / "cases.jsonl").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [*host_harness(), "run", "--json",
         "--plugin", str(wasm), "--config", str(tmp_path / "policy.json"),
         "--upstreams", str(tmp_path / "upstreams.json"), "--requests", str(tmp_path / "cases.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["status"] for r in results] == [c[4] for c in cases], results

    def upstream(i: int) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for k, v in results[i]["upstream_headers"]:
            seen.setdefault(k, []).append(v)
        return seen

    alice = upstream(2)
    assert alice["x-user"] == ["alice"], "the spoofed x-user is replaced by the token's sub"
    assert "authorization" not in alice, "forward_token: false keeps the token from the app"
    assert upstream(6)["x-groups"] == ["dev,ops"]
