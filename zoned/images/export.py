"""`zoned image export NAME FILE`: an image as an OCI archive (oci-layout, index.json,
blobs/sha256/...) that `podman load`, skopeo and `zoned image import` read.

The rootfs becomes one gzip layer (flattened: the store keeps unpacked rootfs dirs, not
layers): entries sorted, numeric owners, hard links as links, ``user.*`` and
``security.capability`` xattrs as SCHILY.xattr pax records, no atime/ctime. The config
carries the image's runtime defaults back in OCI spelling, and its history (each old step
marked empty_layer, then the flattened layer), so a round trip keeps them.
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from typing import TYPE_CHECKING, Any

from zoned.images.errors import ImageError, valid_name

if TYPE_CHECKING:
    from zoned.images.store import ImageStore

_XATTRS = ("user.", "security.capability")


class _HashWriter(io.RawIOBase):
    """Hashes and counts what is written through it to f."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self.f = f
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.f.write(data)
        self.hash.update(data)
        self.count += len(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _tar_rootfs(rootfs: str, out: Any) -> None:
    """The rootfs as a tar stream: each directory, then its other entries, by name; by an
    iterative fd walk (zoned.linux.files.walk): no depth limit, no symlink followed."""
    from zoned.linux.files import fd_path, walk

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for fd, parts, entries in walk(rootfs):
            entries.sort(key=lambda e: e.name)  # walk descends in this order
            names = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
            for n in ([""] if parts else []) + names:
                path = fd_path(fd, n)  # (lstat: the dir, not the fd's link)
                arc = "/".join([*parts, n] if n else parts)
                ti = tar.gettarinfo(path, arcname=arc)
                if ti is None:  # a socket: nothing to carry
                    continue
                ti.uname = ti.gname = ""
                if not ti.issym():
                    for attr in os.listxattr(path, follow_symlinks=False):
                        if attr.startswith(_XATTRS):
                            value = os.getxattr(path, attr, follow_symlinks=False)
                            ti.pax_headers["SCHILY.xattr." + attr] = value.decode("utf-8", "surrogateescape")
                if ti.isreg():
                    with open(os.open(n, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd),
                              "rb") as f:
                        tar.addfile(ti, f)
                else:
                    tar.addfile(ti)
    out.flush()


def oci_config(meta: dict[str, Any], diff_id: str, arch: str) -> dict[str, Any]:
    c = meta.get("config") or {}
    cfg: dict[str, Any] = {"Env": c.get("env") or []}
    for ours, theirs in (("cmd", "Cmd"), ("entrypoint", "Entrypoint"), ("workdir", "WorkingDir"),
                         ("user", "User"), ("stop_signal", "StopSignal"), ("labels", "Labels")):
        if c.get(ours):
            cfg[theirs] = c[ours]
    if c.get("exposed_ports"):
        cfg["ExposedPorts"] = {p: {} for p in c["exposed_ports"]}
    history = [{k: v for k, v in h.items() if k in ("created", "created_by", "comment") and v}
               | {"empty_layer": True} for h in meta.get("history") or []]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    history.append({"created": now, "created_by": f"zoned image export {meta.get('name', '')}",
                    "comment": "flattened rootfs"})
    return {"created": meta.get("created") or now, "architecture": arch, "os": "linux",
            "config": cfg, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": history}


def export_oci(store: ImageStore, name: str, dest: str) -> dict[str, Any]:
    """Write image `name` to dest as an OCI archive; returns the manifest's descriptor."""
    from zoned.images.importer import _host_arch

    if not valid_name(name):  # before anything: `../../tmp/x` named a host dir
        raise ImageError(f"invalid image name {name!r}")
    dest = os.path.abspath(dest)
    work = tempfile.mkdtemp(prefix=".zoned-export-", dir=os.path.dirname(dest) or ".")
    try:
        with store.lock(shared=True):  # a concurrent rebuild must not delete it mid-read
            img = store.read_unlocked(name)
            with open(img.image_dir + "/image.json") as f:
                meta = json.loads(f.read())
            layer = os.path.join(work, "layer")
            with open(layer, "wb") as f:
                packed = _HashWriter(f)
                with gzip.GzipFile(fileobj=packed, mode="wb", compresslevel=6, mtime=0) as gz:
                    plain = _HashWriter(gz)
                    _tar_rootfs(img.rootfs_dir, io.BufferedWriter(plain, 1 << 20))
        blobs: dict[str, bytes | str] = {packed.digest(): layer}
        config = json.dumps(oci_config(meta, plain.digest(), _host_arch()), sort_keys=True).encode()
        cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                 "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)}
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cdesc,
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": packed.digest(), "size": packed.count}]}, sort_keys=True).encode()
        mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
                 "annotations": {"org.opencontainers.image.ref.name": f"localhost/{name}:latest"}}
        blobs[cdesc["digest"]] = config
        blobs[mdesc["digest"]] = manifest
        index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
        tmp = os.path.join(work, "out.tar")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            def add(arc: str, data: bytes | None = None, path: str | None = None) -> None:
                ti = tarfile.TarInfo(arc)
                ti.mode, ti.mtime = 0o644, 0
                if data is None and path is None:
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(ti)
                elif path is not None:
                    ti.size = os.path.getsize(path)
                    with open(path, "rb") as f:
                        tar.addfile(ti, f)
                else:
                    ti.size = len(data)  # type: ignore[arg-type]
                    tar.addfile(ti, io.BytesIO(data))  # type: ignore[arg-type]
            add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add("index.json", index)
            add("blobs")
            add("blobs/sha256")
            for digest, blob in blobs.items():
                arc = "blobs/sha256/" + digest.split(":", 1)[1]
                add(arc, path=blob) if isinstance(blob, str) else add(arc, data=blob)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as e:
        raise ImageError(f"exporting {name!r} to {dest}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return mdesc

