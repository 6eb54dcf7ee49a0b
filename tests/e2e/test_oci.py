"""The OCI images of `scripts/oci build`: reproducible, readable by independent tools (skopeo,
oci-image-tool, Python's tarfile/gzip), and unchanged through a real registry (Debian's
docker-registry on 127.0.0.1) and back, in both variants."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from e2e_support import REPO, free_port

TAG = "9.9.9-test"
VARIANTS = ("compat", "wasm")
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

pytestmark = pytest.mark.timeout(900)  # the first `scripts/oci` may compile the packager


def run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def oci_build(wasm: Path, out: Path, *extra: str, epoch: str | None = None) -> dict[str, str]:
    """Runs `scripts/oci build`; returns the manifest digest it printed for each variant."""
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    stdout = run(["scripts/oci", "build", "--wasm", wasm, "--out", out, "--tag", TAG, *extra],
                 timeout=900, env=env)
    printed = dict(re.findall(r"^(compat|wasm) image: oci:\S+\n  manifest digest  (sha256:[0-9a-f]{64})",
                              stdout, re.M))
    assert set(printed) == set(VARIANTS), stdout
    return printed


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Layout:
    """An OCI image layout read with nothing but json and hashlib."""

    def __init__(self, root: Path, tag: str = TAG) -> None:
        self.root = root
        index = json.loads((root / "index.json").read_text())
        (entry,) = [m for m in index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        self.manifest_bytes = self.blob(entry)
        self.manifest = json.loads(self.manifest_bytes)

    def blob(self, descriptor: dict[str, Any]) -> bytes:
        data = (self.root / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
        assert sha256(data) == descriptor["digest"] and len(data) == descriptor["size"], descriptor
        return data

    def config(self) -> dict[str, Any]:
        return json.loads(self.blob(self.manifest["config"]))

    def module(self) -> bytes:
        """The .wasm as Istio's fetcher finds it: plugin.wasm in the last tar+gzip layer (compat),
        or the layer of the wasm content media type (two-layer variant)."""
        layers = self.manifest["layers"]
        if layers[-1]["mediaType"] == GZIP_LAYER:
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(self.blob(layers[-1])))) as tar:
                member = tar.extractfile("plugin.wasm")
                assert member is not None
                return member.read()
        (layer,) = [l for l in layers if l["mediaType"] == WASM_CONTENT]
        return self.blob(layer)


@pytest.fixture(scope="module")
def builds(wasm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    first, second = tmp_path_factory.mktemp("oci-first"), tmp_path_factory.mktemp("oci-second")
    digests = oci_build(wasm, first)
    assert oci_build(wasm, second) == digests, "same module, same digests"
    return first, second, digests


def test_two_builds_are_byte_identical(builds):
    first, second, _ = builds
    for variant in VARIANTS:
        a, b = tree(first / variant), tree(second / variant)
        assert a == b, f"{variant}: {sorted(set(a) ^ set(b)) or 'same files, different bytes'}"
        assert {"oci-layout", "index.json"} <= set(a)


def test_printed_digest_is_the_manifest_skopeo_reads(builds):
    first, _, digests = builds
    for variant in VARIANTS:
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{first / variant}:{TAG}"],
                             capture_output=True, timeout=60, check=True).stdout
        assert sha256(raw) == digests[variant]
        assert raw == Layout(first / variant).manifest_bytes


def test_compat_image(builds, wasm):
    first, _, _ = builds
    layout = Layout(first / "compat")
    m = layout.manifest
    assert m["mediaType"] == OCI_MANIFEST and m["schemaVersion"] == 2
    assert m["annotations"]["module.wasm.image/variant"] == "compat"
    assert [l["mediaType"] for l in m["layers"]] == [GZIP_LAYER]
    assert m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"

    layer = layout.blob(m["layers"][0])
    assert layer[:2] == b"\x1f\x8b" and layer[3] & 0x08 == 0, "gzip without a file name"
    assert layer[4:8] == b"\0\0\0\0", "gzip without a modification time"
    assert layer[9] == 255, "gzip OS byte fixed to 'unknown'"
    tar_bytes = gzip.decompress(layer)
    config = layout.config()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(tar_bytes)]}
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    assert config["created"] == "1970-01-01T00:00:00Z"

    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode, member.uid, member.gid, member.mtime) == ("plugin.wasm", 0o644, 0, 0, 0)
        assert (member.uname, member.gname) == ("root", "root")
        assert member.isfile()
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == wasm.read_bytes()


def test_two_layer_image(builds, wasm):
    first, _, _ = builds
    layout = Layout(first / "wasm")
    m = layout.manifest
    assert m["config"]["mediaType"] == WASM_CONFIG
    # Istio's fetcher takes this variant only with exactly two layers, one of them the module.
    assert [l["mediaType"] for l in m["layers"]] == [WASM_CONFIG, WASM_CONTENT]
    assert layout.module() == wasm.read_bytes()
    runtime = layout.config()
    assert runtime["type"] == "envoy_proxy" and runtime["config"]["rootIds"] == ["portcullis"]


def test_source_date_epoch_sets_the_time(builds, wasm, tmp_path):
    _, _, digests = builds
    later = oci_build(wasm, tmp_path, epoch="1700000000")
    assert later["compat"] != digests["compat"] and later["wasm"] != digests["wasm"]
    compat = Layout(tmp_path / "compat")
    assert compat.config()["created"] == "2023-11-14T22:13:20Z"
    assert compat.manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(compat.blob(compat.manifest["layers"][0])))) as tar:
        assert tar.getmember("plugin.wasm").mtime == 1700000000
    assert Layout(tmp_path / "wasm").module() == wasm.read_bytes()


def test_oci_image_tool_validates_and_unpacks(builds, wasm, tmp_path):
    first, _, _ = builds
    # Debian's oci-image-tool (1.0.0-rc1) detects the image layout itself: `--type image`, refs
    # as name=TAG.
    out = run(["oci-image-tool", "validate", "--type", "image", "--ref", f"name={TAG}", first / "compat"])
    assert "Validation succeeded" in out
    run(["oci-image-tool", "unpack", "--ref", f"name={TAG}", first / "compat", tmp_path / "rootfs"])
    assert (tmp_path / "rootfs" / "plugin.wasm").read_bytes() == wasm.read_bytes()
    # It knows only the standard image media types, so of the two-layer image it can check the
    # manifest (with warnings about the wasm media types), not the whole image.
    manifest = first / "wasm" / "blobs" / "sha256" / sha256(Layout(first / "wasm").manifest_bytes)[7:]
    assert "Validation succeeded" in run(["oci-image-tool", "validate", "--type", "manifest", manifest])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8) on a free loopback port, storage in a temp dir."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n")
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (root / "registry.log").read_text()
            try:
                if requests.get(f"http://{base}/v2/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "registry did not answer /v2/ within 30 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_push_and_pull_through_a_registry(registry, builds, wasm, tmp_path):
    _, _, digests = builds
    stdout = run(["scripts/oci", "build", "--wasm", wasm, "--out", tmp_path / "built",
                  "--push", f"{registry}/portcullis:{TAG}"], timeout=900)
    refs = {"compat": f"{registry}/portcullis:{TAG}", "wasm": f"{registry}/portcullis:{TAG}-wasm"}
    for variant, ref in refs.items():
        assert f"oci: pushed {ref} = {digests[variant]}" in stdout, stdout
        # What Istio asks the registry for, without skopeo in between.
        repo, tag = ref.split("/", 1)[1].split(":")
        resp = requests.get(f"http://{registry}/v2/{repo}/manifests/{tag}",
                            headers={"Accept": OCI_MANIFEST}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Docker-Content-Digest"] == digests[variant]
        assert sha256(resp.content) == digests[variant]

        pulled = tmp_path / f"pulled-{variant}"
        run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{pulled}:{TAG}"])
        layout = Layout(pulled)
        assert sha256(layout.manifest_bytes) == digests[variant]
        assert layout.module() == wasm.read_bytes(), f"{variant}: the pulled module differs from the build"
