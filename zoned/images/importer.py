"""`zoned image import`: images someone already has -- docker-archive (`podman save`,
`docker save`), oci-archive (`podman save --format oci-archive`), an OCI image layout
directory, or a plain rootfs tarball -- unpacked into one rootfs by zoned.images.unpack.

Python's tarfile plus ~200 lines of JSON walking rather than skopeo+umoci: docker-archive
needs skopeo to become OCI first (a second full copy), umoci has no byte limit and no
setuid report, and neither gives the one-line refusal naming the entry our users get; they
would also be two more apt packages. Every blob is checked against its digest while it is
read (the compressed digest from the OCI manifest, the uncompressed diff_id from the image
config), so a damaged or altered archive is refused, not half-trusted.

A compressed file is a rootfs tarball, streamed, unless its first entry is an image
archive's (`docker save | gzip`): that one is decompressed once to a nameless temp file.

The image config's Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, StopSignal and
Labels become the zoned image config (see ``runtime_config``), which `zoned run` uses as
defaults; the config's history is kept for `zoned image history`.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import sys
import tarfile
import time
from typing import IO, Any, Callable

from zoned.images.errors import ImageError, valid_name
from zoned.images.inputs import Dir as _Dir
from zoned.images.inputs import TarDir as _TarDir
from zoned.images.unpack import Limits, Unpacker

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


class Layer:
    """One layer to apply: how to open its raw bytes and what they must hash to."""

    __slots__ = ("open", "size", "digest", "diff_id")

    def __init__(self, open: Callable[[], IO[bytes]], size: int, digest: str | None,
                 diff_id: str | None) -> None:
        self.open = open
        self.size = size  # raw (maybe compressed) bytes, for progress
        self.digest = digest  # sha256 of the raw bytes (OCI descriptors), if known
        self.diff_id = diff_id  # sha256 of the uncompressed tar (image config), if known


class Source:
    """What an input holds: its kind, the OCI image config, the layers, a suggested name."""

    def __init__(self, kind: str, config: dict[str, Any], layers: list[Layer],
                 ref: str = "") -> None:
        self.kind = kind
        self.config = config
        self.layers = layers
        self.ref = ref
        self.closers: list[Any] = []

    def close(self) -> None:
        for c in self.closers:
            c.close()


# ---------------------------------------------------------------- reading the inputs


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: IO[bytes], tick: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0
        self.tick = tick

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        data = self.raw.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.hash.update(data)
        self.count += n
        if self.tick:
            self.tick(n)
        return n

    def drain(self, limit: int | None = None) -> bool:
        """Read (and hash) what is left, at most `limit` bytes more: False if more was
        left (a decompression bomb after the tar's end marker must not run forever)."""
        left = limit
        while left is None or left > 0:
            chunk = self.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                return True
            if left is not None:
                left -= len(chunk)
        return not self.read(1)

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _decompressed(raw: IO[bytes], label: str) -> IO[bytes]:
    """raw, decompressed by its magic number (layers are tar, tar+gzip, +bzip2 or +xz)."""
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise ImageError(f"{label}: zstd-compressed layers are not supported "
                         "(re-save the image with gzip layers)")
    return raw


def _load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise ImageError(f"{what}: invalid JSON ({e})") from None
    except RecursionError:  # json recurses per nesting level: 200k '[' in a few bytes
        raise ImageError(f"{what}: invalid JSON (nested too deeply)") from None


def _object(value: Any, what: str) -> dict:
    """A JSON object of the archive's metadata, or {} where it is absent (null)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _diff_ids(config: dict, what: str) -> list[str]:
    """The image config's rootfs.diff_ids: one digest string per layer."""
    ids = _object(config.get("rootfs"), f"{what}: rootfs").get("diff_ids") or []
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ImageError(f"{what}: rootfs.diff_ids must be a list of strings")
    for i, d in enumerate(ids):  # every layer is checked against its diff_id: none skipped
        if not _DIGEST_RE.match(d):
            raise ImageError(f"{what}: rootfs.diff_ids[{i}] {d[:80]!r} is not a sha256 digest")
    return ids


def _blob(d: _TarDir | _Dir, desc: Any, what: str) -> tuple[str, str, int]:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) \
            or not _DIGEST_RE.match(desc["digest"]):
        raise ImageError(f"{d.path}: {what} has no valid sha256 digest")
    name = "blobs/sha256/" + desc["digest"].split(":", 1)[1]
    return name, desc["digest"], d.size(name)


def _verified_json(d: _TarDir | _Dir, desc: Any, what: str) -> Any:
    name, digest, _ = _blob(d, desc, what)
    data = d.read(name)
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ImageError(f"{d.path}: {what} does not match its digest {digest}")
    return _load_json(data, f"{d.path}: {what}")


def _host_arch() -> str:
    m = os.uname().machine
    return _GOARCH.get(m, m)


def _oci(d: _TarDir | _Dir, kind: str) -> Source:
    index = _object(_load_json(d.read("index.json"), f"{d.path}: index.json"),
                    f"{d.path}: index.json")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{d.path}: index.json lists no image")
    # A multi-platform index: take the host's platform (one nested index level).
    candidates: list[dict] = []
    for m in manifests:
        if isinstance(m, dict) and m.get("mediaType") in _INDEX_TYPES:
            nested = _object(_verified_json(d, m, "nested index"),
                             f"{d.path}: nested index").get("manifests") or []
            if not isinstance(nested, list):
                raise ImageError(f"{d.path}: nested index: manifests must be a list")
            candidates += [dict(n, annotations={
                **_object(m.get("annotations"), f"{d.path}: index.json annotations"),
                **_object(n.get("annotations"), f"{d.path}: nested index annotations")})
                           for n in nested if isinstance(n, dict)]
        elif isinstance(m, dict):
            candidates.append(m)
    arch = _host_arch()
    fitting = [m for m in candidates
               if _object(m.get("platform"), f"{d.path}: a manifest's platform")
               .get("architecture", arch) == arch]
    if not fitting:
        raise ImageError(f"{d.path}: no image for this machine's architecture ({arch})")
    desc = fitting[0]
    manifest = _object(_verified_json(d, desc, "manifest"), f"{d.path}: manifest")
    notes = _object(desc.get("annotations"), f"{d.path}: the manifest's annotations")
    ref = (notes.get("org.opencontainers.image.ref.name")
           or notes.get("io.containerd.image.name") or "")
    if not isinstance(ref, str):
        ref = ""
    config = _object(_verified_json(d, manifest.get("config"), "image config"),
                     f"{d.path}: image config")
    diff_ids = _diff_ids(config, f"{d.path}: image config")
    descs = manifest.get("layers") or []
    if not isinstance(descs, list) or len(diff_ids) != len(descs):
        raise ImageError(f"{d.path}: the manifest lists {len(descs)} layers, "
                         f"the config {len(diff_ids)}")
    layers = []
    for i, (ld, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        name, digest, size = _blob(d, ld, f"layer {i + 1}")
        layers.append(Layer(lambda name=name: d.open(name), size, digest, diff_id))
    return Source(kind, config, layers, ref)


def _docker(d: _TarDir | _Dir) -> Source:
    manifest = _load_json(d.read("manifest.json"), f"{d.path}: manifest.json")
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise ImageError(f"{d.path}: manifest.json lists no image")
    if len(manifest) > 1:
        raise ImageError(f"{d.path}: holds {len(manifest)} images; save one at a time")
    entry = manifest[0]
    cfg_name = entry.get("Config")
    if not isinstance(cfg_name, str):
        raise ImageError(f"{d.path}: manifest.json has no Config")
    stem = os.path.basename(cfg_name).removesuffix(".json")
    if not re.fullmatch(r"[0-9a-f]{64}", stem):  # docker and podman name it by its sha256
        raise ImageError(f"{d.path}: manifest.json: Config {cfg_name!r} is not named by "
                         "its sha256 digest (it could not be verified)")
    data = d.read(cfg_name)
    if hashlib.sha256(data).hexdigest() != stem:
        raise ImageError(f"{d.path}: {cfg_name} does not match its digest")
    config = _object(_load_json(data, f"{d.path}: {cfg_name}"), f"{d.path}: {cfg_name}")
    diff_ids = _diff_ids(config, f"{d.path}: {cfg_name}")
    names = entry.get("Layers") or []
    if not isinstance(names, list) or len(names) != len(diff_ids) \
            or not all(isinstance(n, str) for n in names):
        raise ImageError(f"{d.path}: manifest.json lists {len(names)} layers, "
                         f"the config {len(diff_ids)}")
    layers = [Layer(lambda n=n: d.open(n), d.size(n), None, diff_id)
              for n, diff_id in zip(names, diff_ids, strict=True)]
    tags = entry.get("RepoTags") or []
    return Source("docker-archive", config, layers,
                  tags[0] if isinstance(tags, list) and tags and isinstance(tags[0], str) else "")


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def open_source(path: str, scratch_dir: str | None = None, limits: Limits | None = None) -> Source:
    """Recognize and open an input; the caller closes the Source. A compressed image
    archive is decompressed into scratch_dir (the store: /tmp may be a small tmpfs)."""
    if os.path.isdir(path):
        d = _Dir(path)
        try:
            if d.has("index.json") and d.has("oci-layout"):
                src = _oci(d, "oci-layout")
            elif d.has("manifest.json"):
                src = _docker(d)
            else:
                raise ImageError(f"{path}: not an OCI image layout (no oci-layout and index.json)")
        except BaseException:
            d.close()
            raise
        src.closers.append(d)
        return src
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    scratch = None
    if head.startswith(_COMPRESSED_MAGIC):
        if not _holds_image_archive(path):
            return _rootfs_tar(path)  # a compressed rootfs tarball: streamed as it is
        # `docker save | gzip`: layers are found by name, so decompress it once to a
        # nameless temp file (gone when closed), capped like the unpacked data
        scratch = _decompress_to_temp(path, scratch_dir, limits)
        path_for_tar: str = f"/proc/self/fd/{scratch.fileno()}"
    elif not tarfile.is_tarfile(path):
        raise ImageError(f"{path}: not a tar archive, an image archive or an OCI layout")
    else:
        path_for_tar = path
    d = _TarDir(path_for_tar, shown=path)
    if scratch is not None:
        d.closers.append(scratch)
    if d.has("index.json") and d.has("oci-layout"):
        src = _oci(d, "oci-archive")
    elif d.has("manifest.json"):
        src = _docker(d)
    else:
        d.close()
        return _rootfs_tar(path)
    src.closers.append(d)
    return src


_ARCHIVE_NAMES = re.compile(r"^(\./)?(manifest\.json|index\.json|oci-layout|repositories|blobs(/.*)?"
                            r"|[0-9a-f]{64}(\.json|\.tar|/.*)?)$")


def _holds_image_archive(path: str) -> bool:
    """Whether a compressed tarball's first entry looks like an image archive's."""
    try:
        with tarfile.open(path, "r|*") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as e:
        raise ImageError(f"{path}: not a readable compressed tar archive ({e})") from None
    return first is not None and bool(_ARCHIVE_NAMES.match(first.name))


def _decompress_to_temp(path: str, scratch_dir: str | None, limits: Limits | None) -> IO[bytes]:
    import tempfile

    cap = (limits or Limits()).max_bytes
    out = tempfile.TemporaryFile(dir=scratch_dir)
    try:
        with open(path, "rb") as f:
            src = _decompressed(io.BufferedReader(f), path)  # type: ignore[arg-type]
            total = 0
            while chunk := src.read(1 << 20):
                total += len(chunk)
                if total > cap:
                    raise ImageError(f"{path}: decompressed archive exceeds the limit of "
                                     f"{cap} bytes (--max-size)")
                out.write(chunk)
        out.flush()
        return out
    except (OSError, EOFError, lzma.LZMAError) as e:
        out.close()
        raise ImageError(f"{path}: damaged compressed data ({e})") from None
    except BaseException:
        out.close()
        raise


def _rootfs_tar(path: str) -> Source:
    size = os.path.getsize(path)
    return Source("rootfs-tar", {}, [Layer(lambda: open(path, "rb"), size, None, None)])


# ---------------------------------------------------------------- applying


class Progress:
    """'layer 2/3  45.1/80.0 MiB' on stderr when it is a terminal, at most 5 times a second."""

    def __init__(self, total_layers: int, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total_layers
        self.last = 0.0
        self.label = ""
        self.size = 0
        self.done = 0

    def start(self, index: int, size: int) -> None:
        self.label, self.size, self.done = f"layer {index}/{self.total}", size, 0
        self.show(force=True)

    def tick(self, n: int) -> None:
        self.done += n
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        sys.stderr.write(f"\r{self.label}  {self.done / 2**20:.1f}/{self.size / 2**20:.1f} MiB ")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def apply_layers(src: Source, rootfs: str, limits: Limits, progress: Progress | None = None) -> Unpacker:
    """Unpack every layer of src, in order, into rootfs, checking digests as it goes."""
    up = Unpacker(rootfs, limits, layered=src.kind != "rootfs-tar")
    progress = progress or Progress(len(src.layers))
    for i, layer in enumerate(src.layers, 1):
        label = f"layer {i}" if src.kind != "rootfs-tar" else "tarball"
        progress.start(i, layer.size)
        before = up.bytes
        with layer.open() as raw_file:
            raw = _Hashing(raw_file, progress.tick)
            buffered = io.BufferedReader(raw, 1 << 20)  # peek() for the magic
            plain = _Hashing(_decompressed(buffered, label))
            up.apply(io.BufferedReader(plain, 1 << 20), label)
            try:  # tar's trailing padding: the hashes cover every byte, up to --max-size
                if not plain.drain(max(limits.max_bytes - (up.bytes - before), 0)):
                    raise ImageError(f"{label}: more data after the tar archive's end than "
                                     f"the limit of {limits.max_bytes} bytes (--max-size)")
                while buffered.read(1 << 20):  # the raw rest (its digest), not into memory
                    pass
            except (OSError, EOFError, lzma.LZMAError) as e:
                raise ImageError(f"{label}: damaged compressed data ({e})") from None
        if src.kind != "rootfs-tar" and not (layer.digest or layer.diff_id):
            raise ImageError(f"{label}: has no digest to verify it by")
        if layer.digest and raw.digest() != layer.digest:
            raise ImageError(f"{label}: content does not match its digest {layer.digest} "
                             "(damaged or altered archive)")
        if layer.diff_id and plain.digest() != layer.diff_id:
            raise ImageError(f"{label}: content does not match its diff_id {layer.diff_id} "
                             "(damaged or altered archive)")
        up.layer_sizes.append(up.bytes - before)
    progress.end()
    return up


def runtime_config(oci_config: dict[str, Any], what: str) -> dict[str, Any]:
    """The OCI image config's runtime part as a zoned image config, each field checked."""
    c = oci_config.get("config") or {}
    if not isinstance(c, dict):
        raise ImageError(f"{what}: config must be an object")

    def strings(key: str) -> list[str] | None:
        v = c.get(key)
        if v is None:
            return None
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ImageError(f"{what}: config.{key} must be a list of strings")
        return v

    out: dict[str, Any] = {}
    env = strings("Env") or [DEFAULT_PATH]
    if not all("=" in e for e in env):
        raise ImageError(f"{what}: config.Env must be NAME=value strings")
    out["env"] = env
    if strings("Cmd"):
        out["cmd"] = c["Cmd"]
    if strings("Entrypoint"):
        out["entrypoint"] = c["Entrypoint"]
    workdir = c.get("WorkingDir") or "/"
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise ImageError(f"{what}: config.WorkingDir must be an absolute path")
    out["workdir"] = workdir
    user = c.get("User")
    if user:
        if not isinstance(user, str):
            raise ImageError(f"{what}: config.User must be a string")
        out["user"] = user
    ports = c.get("ExposedPorts")
    if ports:
        if not isinstance(ports, dict):
            raise ImageError(f"{what}: config.ExposedPorts must be an object")
        out["exposed_ports"] = sorted(str(p) for p in ports)
    sig = c.get("StopSignal")
    if sig:
        if not isinstance(sig, str):
            raise ImageError(f"{what}: config.StopSignal must be a string")
        out["stop_signal"] = sig
    labels = c.get("Labels")
    if labels:
        if not isinstance(labels, dict):
            raise ImageError(f"{what}: config.Labels must be an object")
        out["labels"] = {str(k): str(v) for k, v in labels.items()}
    return out


def history(oci_config: dict[str, Any], layer_sizes: list[int]) -> list[dict[str, Any]]:
    """The config's history, each non-empty step given the unpacked size of its layer."""
    steps = oci_config.get("history") or []
    out = []
    sizes = iter(layer_sizes)
    for h in steps if isinstance(steps, list) else []:
        if not isinstance(h, dict):
            continue
        empty = bool(h.get("empty_layer"))
        out.append({"created": str(h.get("created", "")), "created_by": str(h.get("created_by", "")),
                    "comment": str(h.get("comment", "")), "empty_layer": empty,
                    "size": 0 if empty else next(sizes, 0)})
    return out


def default_name(src: Source, path: str) -> str:
    """A store name from the image's reference (localhost/foo:1 -> foo) or the file name."""
    ref = src.ref
    if src.kind.startswith("oci") and "/" not in ref and ":" not in ref:
        ref = ""  # an OCI ref.name is often just a tag ("latest", skopeo's oci:DIR:TAG)
    base = ref.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0] if ref else ""
    if not base:
        base = os.path.basename(os.path.normpath(path))
        for ext in (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar", ".oci"):
            if base.endswith(ext):
                base = base[: -len(ext)]
                break
    name = re.sub(r"[^a-z0-9_.-]", "-", base.lower()).lstrip("._-")
    if not valid_name(name):
        raise ImageError(f"cannot make an image name from {path!r}: give one with --name")
    return name
