"""Hand-made image archives for the import tests: tar layers from entry lists, wrapped as a
docker-archive (`podman save`'s layout), an OCI layout dir or an oci-archive."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path


def entry(name: str, kind: str = "file", data: bytes = b"", mode: int | None = None,
          link: str = "", uid: int = 0, gid: int = 0, size: int | None = None,
          pax: dict | None = None, devmajor: int = 0, devminor: int = 0) -> tuple:
    """One tar entry: kind is file, dir, symlink, hardlink, char, block or fifo."""
    ti = tarfile.TarInfo(name)
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
               "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
               "fifo": tarfile.FIFOTYPE}[kind]
    ti.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    ti.linkname = link
    ti.uid, ti.gid = uid, gid
    ti.mtime = 1_700_000_000
    ti.devmajor, ti.devminor = devmajor, devminor
    if pax:
        ti.pax_headers = dict(pax)
    if kind == "file":
        ti.size = len(data) if size is None else size
    return ti, data


class _Zeros(io.RawIOBase):
    """n zero bytes, made on demand (a bomb's payload without holding it in memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def layer(entries: list[tuple], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            if ti.isreg():
                payload = io.BytesIO(data) if len(data) == ti.size else io.BufferedReader(_Zeros(ti.size))
                tar.addfile(ti, payload)
            else:
                tar.addfile(ti)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _plain(b: bytes) -> bytes:
    return gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b


def image_config(layers: list[bytes], config: dict | None = None) -> dict:
    return {"architecture": "amd64", "os": "linux", "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": [_sha(_plain(b)) for b in layers]},
            "history": [{"created_by": f"step {i}"} for i in range(len(layers))]}


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    tar.addfile(ti, io.BytesIO(data))


def docker_archive(path: Path, layers: list[bytes], config: dict | None = None,
                   layer_names: list[str] | None = None, tag: str = "localhost/zimg-test:1") -> Path:
    cfg = json.dumps(image_config(layers, config)).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    names = layer_names or [hashlib.sha256(_plain(b)).hexdigest() + ".tar" for b in layers]
    with tarfile.open(path, "w") as tar:
        for n, b in zip(names, layers, strict=False):
            if n.startswith(("/", "..")):
                continue  # a manifest naming a file the archive does not hold
            add_bytes(tar, n, b)
        add_bytes(tar, cfg_name, cfg)
        add_bytes(tar, "manifest.json", json.dumps(
            [{"Config": cfg_name, "RepoTags": [tag], "Layers": names}]).encode())
    return path


def oci_layout(d: Path, layers: list[bytes], config: dict | None = None,
               ref: str = "localhost/zimg-oci:1", tamper: bool = False) -> Path:
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(b: bytes) -> dict:
        (blobs / _sha(b).split(":")[1]).write_bytes(b)
        return {"digest": _sha(b), "size": len(b)}

    cfg = json.dumps(image_config(layers, config)).encode()
    lds = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(b)} for b in layers]
    if tamper:  # the first layer's bytes no longer match their digest
        victim = blobs / lds[0]["digest"].split(":")[1]
        victim.write_bytes(layer([entry("evil", data=b"x")], gz=True))
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(cfg)},
                      "layers": lds}).encode()
    md = put(man)
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **md,
         "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return d


def tree(root: Path, skip: Path | None = None) -> dict:
    """Every path under root (not following links) with its type, mode and content/target:
    to show that an import left nothing outside the store."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if skip is not None and p == skip:
                continue
            st = p.lstat()
            if p.is_symlink():
                what = "-> " + os.readlink(p)
            elif p.is_file():
                what = p.read_bytes()
            else:
                what = "dir"
            out[str(p.relative_to(root))] = (st.st_mode, st.st_nlink, what)
    return out
