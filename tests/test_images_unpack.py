"""Safe unpacking: hand-made malicious archives fed to the real `zoned image import`.

Each case must be refused with one line naming the entry (exit 125), leave no image and no
temp dir in the store, and change nothing outside it: an `outside/` dir next to the store
holds canaries the archives aim at, and the whole tmp tree (the store excepted) is compared
before and after. Cases that are not attacks by themselves (replacing a symlink with a
file, setuid bits) must import and still leave the outside untouched.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archives import docker_archive, entry, layer, oci_layout, tree

pytestmark = pytest.mark.unprivileged

ZONED = str(Path(sys.executable).parent / "zoned")


@pytest.fixture
def env(tmp_path):
    """tmp/store (the image store), tmp/outside (canaries), tmp/in (archives)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("canary\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "keep").write_text("keep\n")
    (tmp_path / "in").mkdir()

    class Env:
        root = tmp_path
        store = tmp_path / "store"
        out = outside
        src = tmp_path / "in"

        def zoned(self, *args, **kw):
            return subprocess.run([ZONED, "--images", str(self.store), "image", *args],
                                  capture_output=True, text=True, timeout=120, **kw)

        def snapshot(self):
            return tree(self.root, skip=self.store)

        def refused(self, archive: Path, *words: str, extra: tuple = ()) -> str:
            """Import must fail with one line containing words; nothing changes outside."""
            before = self.snapshot()
            p = self.zoned("import", str(archive), "--name", "evil", *extra)
            assert p.returncode == 125, (p.returncode, p.stdout, p.stderr)
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("zoned: "), p.stderr
            for w in words:
                assert w in lines[0], lines[0]
            assert self.snapshot() == before
            left = sorted(os.listdir(self.store)) if self.store.exists() else []
            assert [n for n in left if n != ".lock"] == [], left
            return lines[0]

    return Env()


def rootfs_tar(env, name: str, entries: list, gz: bool = False) -> Path:
    p = env.src / name
    p.write_bytes(layer(entries, gz=gz))
    return p


# ---------------------------------------------------------------- paths


def test_dotdot_path_refused(env):
    a = rootfs_tar(env, "dotdot.tar", [entry("etc", "dir"), entry("../outside/pwned", data=b"x")])
    env.refused(a, "'../outside/pwned'", "'..' in path")
    assert not (env.out / "pwned").exists()


def test_dotdot_inside_a_path_refused(env):
    a = rootfs_tar(env, "dotdot2.tar", [entry("etc/../../outside/secret", data=b"owned")])
    env.refused(a, "'..' in path")
    assert (env.out / "secret").read_text() == "canary\n"


def test_absolute_path_refused(env):
    a = rootfs_tar(env, "abs.tar", [entry(str(env.out / "pwned"), data=b"x")])
    env.refused(a, "absolute path", str(env.out / "pwned"))


# ---------------------------------------------------------------- symlinks


@pytest.mark.parametrize("target", ["ABS", "../../../../../../../../OUT"])
def test_write_through_symlink_refused(env, target):
    out = str(env.out)
    target = out if target == "ABS" else target.replace("OUT", out.lstrip("/"))
    a = rootfs_tar(env, "sym.tar", [entry("esc", "symlink", link=target),
                                    entry("esc/pwned", data=b"x")])
    env.refused(a, "'esc/pwned'", "goes through the symlink /esc")
    assert not (env.out / "pwned").exists()


def test_write_through_symlinked_dir_deep_refused(env):
    a = rootfs_tar(env, "deep.tar", [entry("usr", "dir"), entry("usr/lib", "symlink", link=str(env.out)),
                                     entry("usr/lib/dir/keep", data=b"owned")])
    env.refused(a, "goes through the symlink /usr/lib")
    assert (env.out / "dir" / "keep").read_text() == "keep\n"


def test_symlink_from_lower_layer_written_through_by_upper_refused(env):
    a = docker_archive(env.src / "layers.tar", [
        layer([entry("esc", "symlink", link=str(env.out))]),
        layer([entry("esc/secret", data=b"owned")]),
    ])
    msg = env.refused(a, "layer 2", "goes through the symlink /esc")
    assert "esc/secret" in msg
    assert (env.out / "secret").read_text() == "canary\n"


def test_file_over_symlink_replaces_the_link(env):
    """Not an attack by itself: the link is replaced, its target never written."""
    a = rootfs_tar(env, "over.tar", [entry("s", "symlink", link=str(env.out / "secret")),
                                     entry("s", data=b"mine\n")])
    before = env.snapshot()
    p = env.zoned("import", str(a), "--name", "over")
    assert p.returncode == 0, p.stderr
    s = env.store / "over" / "rootfs" / "s"
    assert not s.is_symlink() and s.read_text() == "mine\n"
    assert env.snapshot() == before


def test_dir_entry_over_symlink_does_not_follow_it(env):
    a = rootfs_tar(env, "dirover.tar", [entry("d", "symlink", link=str(env.out / "dir")),
                                        entry("d", "dir", mode=0o700)])
    before = env.snapshot()
    p = env.zoned("import", str(a), "--name", "dirover")
    assert p.returncode == 0, p.stderr
    d = env.store / "dirover" / "rootfs" / "d"
    assert d.is_dir() and not d.is_symlink() and stat.S_IMODE(d.stat().st_mode) == 0o700
    assert env.snapshot() == before  # outside/dir keeps its mode


# ---------------------------------------------------------------- hard links


@pytest.mark.parametrize("link", ["../outside/secret", "ABS"])
def test_hard_link_out_refused(env, link):
    link = str(env.out / "secret") if link == "ABS" else link
    a = rootfs_tar(env, "hl.tar", [entry("h", "hardlink", link=link)])
    env.refused(a, "hard link target")
    assert os.stat(env.out / "secret").st_nlink == 1


def test_hard_link_through_symlink_refused(env):
    a = rootfs_tar(env, "hls.tar", [entry("d", "symlink", link=str(env.out)),
                                    entry("h", "hardlink", link="d/secret")])
    env.refused(a, "goes through the symlink /d")
    assert os.stat(env.out / "secret").st_nlink == 1


def test_hard_link_to_outward_symlink_then_write_stays_inside(env):
    """A hard link to a symlink links the symlink; writing the name replaces it."""
    a = rootfs_tar(env, "hlsym.tar", [entry("s", "symlink", link=str(env.out / "secret")),
                                      entry("h", "hardlink", link="s"),
                                      entry("h", data=b"mine\n")])
    before = env.snapshot()
    p = env.zoned("import", str(a), "--name", "hlsym")
    assert p.returncode == 0, p.stderr
    assert (env.store / "hlsym" / "rootfs" / "h").read_text() == "mine\n"
    assert env.snapshot() == before


def test_hard_link_to_missing_target_refused(env):
    a = rootfs_tar(env, "hlmiss.tar", [entry("h", "hardlink", link="nope")])
    env.refused(a, "does not exist")


# ---------------------------------------------------------------- devices, setuid


@pytest.mark.parametrize("kind", ["char", "block"])
def test_device_nodes_refused(env, kind):
    a = rootfs_tar(env, "dev.tar", [entry("dev", "dir"),
                                    entry("dev/sda", kind, devmajor=8, devminor=0, mode=0o666)])
    env.refused(a, "'dev/sda'", "device node")


def test_setuid_kept_and_reported(env):
    a = rootfs_tar(env, "suid.tar", [entry("bin", "dir"),
                                     entry("bin/su", data=b"#!/bin/sh\n", mode=0o4755),
                                     entry("bin/wall", data=b"#!/bin/sh\n", mode=0o2755),
                                     entry("bin/ls", data=b"#!/bin/sh\n", mode=0o755)])
    p = env.zoned("import", str(a), "--name", "suid")
    assert p.returncode == 0, p.stderr
    assert "2 setuid/setgid files" in p.stderr
    su = env.store / "suid" / "rootfs" / "bin" / "su"
    assert stat.S_IMODE(su.stat().st_mode) == 0o4755
    import json

    meta = json.loads(env.zoned("inspect", "suid").stdout)
    assert meta["setuid"] == ["/bin/su", "/bin/wall"]


def test_overlay_xattrs_not_applied(env):
    """trusted.overlay.* in a lower dir would steer the overlay mount: never applied."""
    a = rootfs_tar(env, "xattr.tar", [entry("d", "dir", pax={
        "SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.note": "hi"})])
    p = env.zoned("import", str(a), "--name", "xattr")
    assert p.returncode == 0, p.stderr
    d = env.store / "xattr" / "rootfs" / "d"
    assert "trusted.overlay.redirect" not in os.listxattr(d)
    try:
        assert os.getxattr(d, "user.note") == b"hi"
    except OSError:  # a store filesystem without user xattrs (tmpfs on old kernels)
        pass


# ---------------------------------------------------------------- bombs


def test_decompression_bomb_refused_before_writing(env):
    """64 MiB of zeros gzip to ~64 KiB: refused by the size limit from its header."""
    a = rootfs_tar(env, "bomb.tar.gz", [entry("zeros", size=64 << 20)], gz=True)
    assert a.stat().st_size < 1 << 20
    t0 = time.monotonic()
    msg = env.refused(a, "'zeros'", "exceeds the limit", extra=("--max-size", "8M"))
    assert "8388608" in msg
    assert time.monotonic() - t0 < 20


def test_size_limit_counts_all_layers(env, monkeypatch):
    """Many files each under the limit, together over it ($ZONED_IMAGE_MAX_SIZE)."""
    files = [entry(f"f{i}", size=1 << 20) for i in range(12)]
    a = docker_archive(env.src / "many.tar", [layer(files[:6], gz=True), layer(files[6:], gz=True)])
    monkeypatch.setenv("ZONED_IMAGE_MAX_SIZE", "10M")
    env.refused(a, "layer 2", "exceeds the limit")


def test_invalid_max_size(env):
    a = rootfs_tar(env, "ok.tar", [entry("f", data=b"x")])
    p = env.zoned("import", str(a), "--max-size", "lots")
    assert p.returncode == 125 and "invalid size 'lots'" in p.stderr


# ---------------------------------------------------------------- whiteouts and archives


def test_whiteout_through_symlink_refused(env):
    a = docker_archive(env.src / "wh.tar", [
        layer([entry("esc", "symlink", link=str(env.out))]),
        layer([entry("esc/.wh.secret")]),
    ])
    env.refused(a, "goes through the symlink /esc")
    assert (env.out / "secret").exists()


def test_opaque_whiteout_through_symlink_refused(env):
    a = docker_archive(env.src / "opq.tar", [
        layer([entry("esc", "symlink", link=str(env.out / "dir"))]),
        layer([entry("esc/.wh..wh..opq")]),
    ])
    env.refused(a, "goes through the symlink /esc")
    assert (env.out / "dir" / "keep").exists()


def test_malformed_whiteout_refused(env):
    a = docker_archive(env.src / "whdots.tar", [layer([entry("d", "dir")]),
                                                layer([entry("d/.wh.")])])
    env.refused(a, "malformed whiteout")


def test_manifest_naming_a_host_file_refused(env):
    a = docker_archive(env.src / "hostfile.tar", [layer([entry("f", data=b"x")])],
                       layer_names=[str(env.out / "secret")])
    env.refused(a, "has no file")


def test_oci_layer_not_matching_its_digest_refused(env):
    d = oci_layout(env.src / "tampered", [layer([entry("f", data=b"x")], gz=True)], tamper=True)
    env.refused(d, "layer 1", "does not match its digest")


def test_oci_descriptor_with_a_path_refused(env):
    import json

    d = oci_layout(env.src / "pathdigest", [layer([entry("f", data=b"x")], gz=True)])
    idx = json.loads((d / "index.json").read_text())
    idx["manifests"][0]["digest"] = "sha256:../../../outside/secret"
    (d / "index.json").write_text(json.dumps(idx))
    env.refused(d, "no valid sha256 digest")


def test_not_an_archive(env):
    p = env.src / "recipe.yaml"
    p.write_text("name: x\n")
    r = env.zoned("import", str(p))
    assert r.returncode == 125
    assert "not a tar archive, an image archive or an OCI layout" in r.stderr


def test_truncated_layer_refused(env):
    raw = layer([entry("big", data=os.urandom(100_000))])
    p = env.src / "trunc.tar"
    p.write_bytes(raw[:60_000])
    env.refused(p, "truncated")


def test_huge_extended_header_refused(env):
    """A 64 MiB pax record gzips to ~64 KiB; tarfile would read it into memory whole."""
    ti, _ = entry("f", data=b"x")
    ti.pax_headers = {"comment": "a" * (64 << 20)}
    a = rootfs_tar(env, "pax.tar.gz", [(ti, b"x")], gz=True)
    assert a.stat().st_size < 1 << 20
    env.refused(a, "extended header of", "at most 1048576")


# ---------------------------------------------------------------- malformed headers


@pytest.mark.parametrize("kind, pax, words", [
    ("file", {"path": "etc/a\x00b"}, ["NUL byte in path"]),
    ("symlink", {"linkpath": "/etc/x\x00y"}, ["NUL byte in link target"]),
    ("hardlink", {"linkpath": "etc\x00"}, ["NUL byte"]),
    ("file", {"uid": str(2**40)}, ["uid", "out of range"]),
    ("file", {"uid": "-5"}, ["uid -5 out of range"]),
    ("file", {"gid": "-5"}, ["gid -5 out of range"]),
    ("file", {"mtime": "1e400"}, ["mtime", "out of range"]),
    ("file", {"mtime": "nan"}, ["mtime", "out of range"]),
    ("dir", {"mtime": "1" * 20}, ["mtime", "out of range"]),
    ("file", {"LIBARCHIVE.xattr.user.x": "!!not base64!!"}, ["invalid base64"]),
    ("file", {"SCHILY.xattr.user.a\x00b": "v"}, ["NUL byte in an xattr name"]),
])
def test_malformed_pax_values_refused_with_one_line(env, kind, pax, words):
    """pax records can say anything: each such value is refused naming the entry (they
    were internal errors: ValueError, OverflowError, binascii.Error)."""
    link = "etc" if kind == "symlink" else "etc/base" if kind == "hardlink" else ""
    p = rootfs_tar(env, "pax.tar", [entry("etc", "dir"), entry("etc/base", data=b"b"),
                                    entry("etc/x", kind, data=b"x", link=link, pax=pax)])
    env.refused(p, "refused entry", *words)


def test_deeply_nested_index_json_refused(env):
    d = env.src / "oci"
    d.mkdir()
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (d / "index.json").write_text("[" * 200_000)
    env.refused(d, "index.json", "nested too deeply")


def test_data_after_the_tar_end_is_capped_by_max_size(env):
    """What follows the tar's end marker is decompressed (the layer's hashes cover every
    byte), but no more than --max-size of it: a bomb there ran unbounded."""
    import gzip
    import io

    tar = layer([entry("etc", "dir"), entry("etc/x", data=b"x")])
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(tar)
        for _ in range(64):
            gz.write(bytes(1 << 20))
    p = env.src / "trailing.tar.gz"
    p.write_bytes(buf.getvalue())
    env.refused(p, "after the tar archive's end", "--max-size", extra=("--max-size", "4M"))
