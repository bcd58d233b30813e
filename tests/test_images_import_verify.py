"""Every blob of an image archive is verified, and a layout directory is read only inside
itself: a docker-archive whose Config is not named by its digest, or whose diff_ids are
empty strings, was imported unverified; a layout dir's symlink led the import to a host
file, and a FIFO in it hung the import forever."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from archives import entry, layer, oci_layout

pytestmark = pytest.mark.unprivileged

ZONED = str(Path(sys.executable).parent / "zoned")


def refused(tmp_path: Path, source: Path, *words: str, timeout: int = 60) -> str:
    store = tmp_path / "store"
    p = subprocess.run([ZONED, "--images", str(store), "image", "import", str(source),
                        "--name", "evil"], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 125 and len(lines) == 1, (p.returncode, p.stderr)
    for w in words:
        assert w in lines[0], lines[0]
    assert not store.exists() or [n for n in os.listdir(store) if n != ".lock"] == []
    return lines[0]


def docker_tar(path: Path, cfg_name: str, config: dict, layers: list[bytes],
               names: list[str] | None = None) -> Path:
    names = names or [hashlib.sha256(b).hexdigest() + ".tar" for b in layers]
    with tarfile.open(path, "w") as tar:
        def add(n: str, b: bytes) -> None:
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            tar.addfile(ti, io.BytesIO(b))
        for n, b in zip(names, layers, strict=True):
            add(n, b)
        add(cfg_name, json.dumps(config).encode())
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["x:1"],
                                          "Layers": names}]).encode())
    return path


def test_docker_config_not_named_by_its_digest_refused(tmp_path):
    lay = layer([entry("etc", "dir"), entry("etc/evil", data=b"x")])
    cfg = {"rootfs": {"type": "layers",
                      "diff_ids": ["sha256:" + hashlib.sha256(lay).hexdigest()]}}
    refused(tmp_path, docker_tar(tmp_path / "a.tar", "config.json", cfg, [lay]),
            "Config 'config.json'", "digest")


@pytest.mark.parametrize("diff_id", ["", "sha256:", "md5:00", "sha256:" + "A" * 64])
def test_docker_diff_id_that_is_no_digest_refused(tmp_path, diff_id):
    lay = layer([entry("etc", "dir"), entry("etc/evil", data=b"x")])
    cfg = {"rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    data = json.dumps(cfg).encode()
    refused(tmp_path, docker_tar(tmp_path / "a.tar", hashlib.sha256(data).hexdigest() + ".json",
                                 cfg, [lay]), "diff_ids[0]")


def test_layout_dir_symlink_out_of_it_refused(tmp_path):
    """index.json (which no digest covers) as a link to a copy outside the dir: the old
    open() followed it and imported."""
    d = oci_layout(tmp_path / "oci", [layer([entry("f", data=b"x")], gz=True)])
    outside = tmp_path / "outside-index.json"
    os.rename(d / "index.json", outside)
    os.symlink(outside, d / "index.json")
    refused(tmp_path, d, "index.json")


def test_layout_dir_relative_symlink_out_refused(tmp_path):
    d = oci_layout(tmp_path / "oci", [layer([entry("f", data=b"x")], gz=True)])
    os.rename(d / "index.json", tmp_path / "index.json")
    os.symlink("../index.json", d / "index.json")
    refused(tmp_path, d, "index.json")


def test_layout_dir_fifo_refused_not_hung(tmp_path):
    d = oci_layout(tmp_path / "oci", [layer([entry("f", data=b"x")], gz=True)])
    blobs = d / "blobs" / "sha256"
    manifest = json.loads((d / "index.json").read_text())["manifests"][0]["digest"]
    lay = json.loads((blobs / manifest.split(":")[1]).read_text())["layers"][0]["digest"]
    victim = blobs / lay.split(":")[1]
    victim.unlink()
    os.mkfifo(victim)
    refused(tmp_path, d, "not a regular file", timeout=30)
