#!/usr/bin/env python3
"""Images: Debian build time and size, import (and export) time per GiB.

All in a private image store (/var/tmp/zoned-bench-images-XXXX, removed at the end), with
the real CLI (`zoned --images STORE image ...`), as root:

  debian cold   `zoned image build debian` with an empty private .deb cache
                ($ZONED_DEB_CACHE): mmdebstrap downloads every package (from the host's
                apt sources) -- what a new machine pays once.
  debian warm   the same build again with that cache filled: what a rebuild pays.
                Size = the image's apparent size (image.json), packages = dpkg's count.
  export        `zoned image export debian` -> an OCI archive (one gzip layer).
  import oci    `zoned image import` of that archive: gunzip + digest checks + safe
                unpack of a real userland (~10k small files) -- s/GiB of unpacked bytes.
  import docker a synthetic docker-archive (what `podman save` writes: uncompressed
                layers), --size bytes in 4 layers of files from 4 KiB to 64 MiB of
                incompressible data: the large-file rate.

Each import runs --rounds times, the image removed after each (the table gives the
median), then once more next to a kept copy of itself: identical files are then hashed and
hard-linked to the copy's (zoned.images.sizes), the worst case of that step. Rates are per
GiB of bytes unpacked (file data), which is what the import limit (--max-size) counts.

Results: a table on stdout and JSON in bench/results/images.json (or --out).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_ZONED, environment, table, write_json  # noqa: E402

GiB = 1 << 30


def zoned(cli: str, store: str, *args: str, env: dict | None = None) -> float:
    t0 = time.monotonic()
    p = subprocess.run([cli, "--images", store, "image", *args], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise SystemExit(f"zoned image {' '.join(args)}: {p.stderr.strip()}")
    return time.monotonic() - t0


def meta(store: str, name: str) -> dict:
    return json.loads((Path(store) / name / "image.json").read_text())


def imports(cli: str, store: str, archive: str, rounds: int) -> tuple[list[float], float]:
    """rounds imports, each removed before the next (nothing to share), then one more next
    to a kept copy: every file is then hashed and hard-linked to the copy's."""
    times = []
    for _ in range(rounds):
        times.append(zoned(cli, store, "import", archive, "--name", "imp"))
        zoned(cli, store, "rm", "imp")
    zoned(cli, store, "import", archive, "--name", "imp")
    shared = zoned(cli, store, "import", archive, "--name", "imp2")
    zoned(cli, store, "rm", "imp")
    zoned(cli, store, "rm", "imp2")
    return times, shared


def synthetic_archive(path: Path, size: int) -> int:
    """A docker-archive of `size` bytes of random data in 4 uncompressed layers."""
    import hashlib

    sizes = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
    per_layer = size // 4
    diff_ids, names = [], []
    with tarfile.open(path, "w") as outer:
        for li in range(4):
            buf = tempfile.TemporaryFile(dir=path.parent)
            written, k = 0, 0
            with tarfile.open(fileobj=buf, mode="w") as tar:
                while written < per_layer:
                    n = min(sizes[k % len(sizes)], per_layer - written)
                    ti = tarfile.TarInfo(f"data/l{li}/f{k}")
                    ti.size, ti.mode = n, 0o644
                    tar.addfile(ti, io.BytesIO(os.urandom(n)))
                    written, k = written + n, k + 1
            buf.seek(0)
            h = hashlib.sha256()
            while chunk := buf.read(1 << 20):
                h.update(chunk)
            diff_ids.append("sha256:" + h.hexdigest())
            names.append(h.hexdigest() + ".tar")
            buf.seek(0, 2)
            ti = tarfile.TarInfo(names[-1])
            ti.size = buf.tell()
            buf.seek(0)
            outer.addfile(ti, buf)
            buf.close()
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                          "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        for name, data in (("config.json", cfg), ("manifest.json", json.dumps(
                [{"Config": "config.json", "RepoTags": ["localhost/synthetic:1"],
                  "Layers": names}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            outer.addfile(ti, io.BytesIO(data))
    return size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoned", default=DEFAULT_ZONED)
    ap.add_argument("--rounds", type=int, default=3, help="imports per kind (median)")
    ap.add_argument("--size", default="1G", help="synthetic archive size (default 1G)")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian builds")
    ap.add_argument("--out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    from zoned.images.unpack import parse_size

    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="zoned-bench-images-", dir="/var/tmp")
    store = os.path.join(work, "store")
    rows, results = [], {"environment": environment(zoned_cli=args.zoned)}
    try:
        if not args.no_debian:
            env = dict(os.environ, ZONED_DEB_CACHE=os.path.join(work, "debs"))
            cold = zoned(args.zoned, store, "build", "debian", env=env)
            warm = zoned(args.zoned, store, "build", "debian", env=env)
            m = meta(store, "debian")
            pkgs = len(list(Path(store, "debian/rootfs/var/lib/dpkg/info").glob("*.list")))
            debs = sum(f.stat().st_size for f in Path(work, "debs").glob("*.deb"))
            results["debian"] = {"cold_s": cold, "warm_s": warm, "size_bytes": m["size"],
                                 "packages": pkgs, "deb_cache_bytes": debs,
                                 "debian_version": m["debs"][0]["bootstrap"]["debian_version"]}
            rows.append(["debian build, cold cache", f"{cold:.1f} s", f"{m['size'] / 2**20:.0f} MiB",
                         f"{pkgs} packages, {debs / 2**20:.0f} MiB of .debs downloaded"])
            rows.append(["debian build, warm cache", f"{warm:.1f} s", f"{m['size'] / 2**20:.0f} MiB", ""])
            oci = os.path.join(work, "debian.oci.tar")
            t = zoned(args.zoned, store, "export", "debian", oci)
            rate = m["size"] / GiB / t
            results["export_debian"] = {"seconds": t, "archive_bytes": os.path.getsize(oci)}
            rows.append(["export debian (OCI, gzip)", f"{t:.1f} s", f"{os.path.getsize(oci) / 2**20:.0f} MiB",
                         f"{t / (m['size'] / GiB):.1f} s/GiB"])
            times, shared = imports(args.zoned, store, oci, args.rounds)
            t = statistics.median(times)
            gib = m["size"] / GiB
            results["import_debian_oci"] = {"seconds": times, "bytes": m["size"],
                                           "s_per_gib": t / gib, "shared_seconds": shared}
            rows.append(["import debian OCI archive", f"{t:.2f} s", f"{m['size'] / 2**20:.0f} MiB",
                         f"{t / gib:.1f} s/GiB (median of {args.rounds})"])
            rows.append(["  ... next to an identical image", f"{shared:.2f} s", "",
                         f"{shared / gib:.1f} s/GiB (hash + hard-link every file)"])
            del rate
        arch = Path(work, "synthetic.tar")
        synthetic_archive(arch, size)
        times, shared = imports(args.zoned, store, str(arch), args.rounds)
        t = statistics.median(times)
        results["import_docker_synthetic"] = {"seconds": times, "bytes": size,
                                              "s_per_gib": t / (size / GiB), "shared_seconds": shared}
        rows.append(["import docker-archive (random data)", f"{t:.2f} s", f"{size / 2**20:.0f} MiB",
                     f"{t / (size / GiB):.1f} s/GiB (median of {args.rounds})"])
        rows.append(["  ... next to an identical image", f"{shared:.2f} s", "",
                     f"{shared / (size / GiB):.1f} s/GiB (hash + hard-link every file)"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, ["what", "time", "size", "notes"]))
    print(write_json("images", results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
