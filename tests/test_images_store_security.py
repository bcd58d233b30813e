"""The image store against other host users and crafted layers (the images/ audit).

- the store is root's alone (0700): another host user cannot run an image's setuid-root
  binary (docker's CVE-2021-41091), write into its world-writable /tmp, or list the store;
  a store an older zoned made 0755 is made 0700 when zoned writes to it;
- the import's hard-link sharing works on directory fds: a directory of the new image
  swapped for a symlink while it runs cannot make root replace a file outside;
- a layer of thousands of nested dirs is refused with one line (PATH_MAX), and a crashed
  import's deep temp dir neither breaks later commands nor survives `image prune`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from archives import entry, layer

ZONED = str(Path(sys.executable).parent / "zoned")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
          "/bin/sh", "-c", 'exec "$@"', "sh"]


@pytest.fixture
def pub():
    """A dir every host user can traverse (pytest's own tmp dir is 0700, which would hide
    the store from uid 65534 whatever zoned does)."""
    d = tempfile.mkdtemp(prefix="zoned-imgtest-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def zoned(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([ZONED, "--images", str(store), "image", *args],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *cmd], capture_output=True, text=True, timeout=30)


def test_other_host_users_cannot_use_the_store(pub):
    """As uid 65534: a setuid-root file of an image does not run (as root or at all), the
    image's /tmp (1777) cannot be written, the store cannot be listed."""
    store = pub / "store"
    id_bin = Path(shutil.which("id") or "/usr/bin/id").read_bytes()
    tar = pub / "suid.tar"
    tar.write_bytes(layer([entry("bin", "dir"), entry("bin/suid-id", data=id_bin, mode=0o4755),
                           entry("tmp", "dir", mode=0o1777)]))
    zoned(store, "import", str(tar), "--name", "suid")
    rootfs = store / "suid" / "rootfs"
    assert (rootfs / "bin" / "suid-id").stat().st_mode & 0o4000  # kept, as the image says
    ran = as_nobody(str(rootfs / "bin" / "suid-id"), "-u")
    assert ran.returncode != 0 and "0" not in ran.stdout.split(), (ran.stdout, ran.stderr)
    wrote = as_nobody("/bin/sh", "-c", f"echo x > {rootfs}/tmp/planted")
    assert wrote.returncode != 0 and not (rootfs / "tmp" / "planted").exists()
    listed = as_nobody("ls", str(store))
    assert listed.returncode != 0 and "suid" not in listed.stdout
    assert (store.stat().st_mode & 0o777) == 0o700
    assert (store / "suid").stat().st_mode & 0o077 == 0


def test_an_older_world_readable_store_is_made_private(pub):
    store = pub / "store"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    zoned(store, "prune")
    assert (store.stat().st_mode & 0o777) == 0o700


# ---------------------------------------------------------------- sharing (dedup)


def test_share_does_not_follow_a_directory_swapped_for_a_symlink(tmp_path, monkeypatch):
    """While share() hashes the new image's file, its directory is swapped for a symlink to
    a host dir holding a file of the same name: that host file must stay as it was (the
    old path-string link+rename replaced it with the other image's inode, as root)."""
    from zoned.images import sizes

    data = os.urandom(8192)
    other = tmp_path / "other" / "rootfs"
    (other / "d").mkdir(parents=True)
    (other / "d" / "f").write_bytes(data)
    mine = tmp_path / "mine" / "rootfs"
    (mine / "d").mkdir(parents=True)
    (mine / "d" / "f").write_bytes(data)
    victim = tmp_path / "host"
    victim.mkdir()
    (victim / "f").write_text("host file\n")
    before = (victim / "f").stat().st_ino
    real_sha256 = sizes.hashlib.sha256
    swapped = []

    class Swapping:
        def __init__(self) -> None:
            self.h = real_sha256()

        def update(self, b: bytes) -> None:
            if not swapped:  # the first file hashed: the new image's own
                swapped.append(True)
                os.rename(mine / "d", mine / "d.moved")
                os.symlink(victim, mine / "d")
            self.h.update(b)

        def digest(self) -> bytes:
            return self.h.digest()

    class FakeHashlib:
        sha256 = Swapping

    monkeypatch.setattr(sizes, "hashlib", FakeHashlib)
    sizes.share(str(mine), [str(other)])
    assert swapped
    assert (victim / "f").read_text() == "host file\n"
    assert (victim / "f").stat().st_ino == before
    assert sorted(os.listdir(victim)) == ["f"]


def test_share_links_only_identical_plain_regular_files(tmp_path):
    from zoned.images import sizes

    data = {n: os.urandom(8192) for n in ("same", "mode", "xattr", "fifo")}
    other = tmp_path / "other"
    mine = tmp_path / "mine"
    for r in (other, mine):
        r.mkdir()
        for n in ("same", "mode", "xattr"):
            (r / n).write_bytes(data[n])
    os.mkfifo(other / "fifo")
    (mine / "fifo").write_bytes(data["fifo"])
    os.chmod(other / "mode", 0o755)
    os.setxattr(other / "xattr", "user.x", b"1")
    saved = sizes.share(str(mine), [str(other)])
    assert saved == 8192
    assert (mine / "same").stat().st_ino == (other / "same").stat().st_ino
    assert (mine / "mode").stat().st_ino != (other / "mode").stat().st_ino
    assert (mine / "xattr").stat().st_ino != (other / "xattr").stat().st_ino
    assert not any(n.endswith("share-tmp") for n in os.listdir(mine))


# ---------------------------------------------------------------- deep trees


def deep_entries(depth: int, name: str = "a") -> list:
    out, path = [], ""
    for _ in range(depth):
        path = f"{path}/{name}" if path else name
        out.append(entry(path, "dir"))
    out.append(entry(f"{path}/leaf", data=b"x" * 5000))
    return out


def test_nested_dirs_beyond_path_max_refused_with_one_line(tmp_path):
    store = tmp_path / "store"
    tar = tmp_path / "deep.tar"
    tar.write_bytes(layer(deep_entries(3000)))
    p = zoned(store, "import", str(tar), "--name", "deep", check=False)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 125 and len(lines) == 1, p.stderr
    assert "PATH_MAX" in lines[0] and "internal error" not in lines[0]
    assert [n for n in os.listdir(store) if n != ".lock"] == []


def test_deeper_than_recursion_limit_imports_and_removes(tmp_path):
    """1500 levels (3000 bytes of path, within PATH_MAX) is deeper than Python's recursion
    limit: scanning, sharing, digest and removal must all be iterative."""
    from zoned.images.store import ImageStore
    from zoned.linux.files import rmtree

    store = tmp_path / "store"
    tar = tmp_path / "deep.tar"
    tar.write_bytes(layer(deep_entries(1500)))
    try:
        zoned(store, "import", str(tar), "--name", "deep1")
        zoned(store, "import", str(tar), "--name", "deep2")  # shares deep1's leaf
        s = ImageStore(str(store))
        assert s.digest("deep1") == s.digest("deep2")
        zoned(store, "export", "deep1", str(tmp_path / "deep-oci.tar"))
        zoned(store, "rm", "deep1")
        zoned(store, "rm", "deep2")
        assert [n for n in os.listdir(store) if n != ".lock"] == []
    finally:
        rmtree(str(store))  # pytest's own clean-up would recurse (RecursionError)


def test_crashed_deep_build_does_not_break_later_commands(tmp_path):
    """A crashed import's temp dir 3000 levels deep (more than PATH_MAX, as an older zoned
    left it): import, rm and prune run the store's GC first and must neither die on it nor
    keep it."""
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir(".build-x-crashed", dir_fd=fd)
    d = os.open(".build-x-crashed", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    for _ in range(3000):
        os.mkdir("a", dir_fd=d)
        n = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        os.close(d)
        d = n
    os.close(d)
    tar = tmp_path / "small.tar"
    tar.write_bytes(layer([entry("etc", "dir"), entry("etc/hostname", data=b"x\n")]))
    try:
        zoned(store, "import", str(tar), "--name", "small")
        assert sorted(n for n in os.listdir(store) if n != ".lock") == ["small"]
    finally:
        from zoned.linux.files import rmtree

        rmtree(str(store))  # pytest's own clean-up would recurse (RecursionError)


# ---------------------------------------------------------------- the image digest


def test_digest_framing_tells_files_apart_from_data_that_spells_them(tmp_path):
    """Image A's one file holds bytes that spell, in the old unframed format, the rest of
    image B's records (its file a, then a file b): they must not share a digest (they did:
    one VM disk, and migration's same-image check passed)."""
    from zoned.images.store import ImageStore

    store = tmp_path / "store"
    record_b = b"b\x00" + b"%o" % 0o100644 + b"\x000:0\x00y"
    a = tmp_path / "a.tar"
    a.write_bytes(layer([entry("a", data=b"x\n" + record_b)]))
    b = tmp_path / "b.tar"
    b.write_bytes(layer([entry("a", data=b"x"), entry("b", data=b"y")]))
    zoned(store, "import", str(a), "--name", "a")
    zoned(store, "import", str(b), "--name", "b")
    s = ImageStore(str(store))
    assert s.digest("a") != s.digest("b")


def test_digest_covers_xattrs(tmp_path):
    from zoned.images.store import ImageStore

    store = tmp_path / "store"
    for name, pax in (("plain", None), ("attr", {"SCHILY.xattr.user.note": "1"})):
        t = tmp_path / f"{name}.tar"
        t.write_bytes(layer([entry("f", data=b"same", pax=pax)]))
        zoned(store, "import", str(t), "--name", name)
    s = ImageStore(str(store))
    if not os.listxattr(store / "attr" / "rootfs" / "f"):
        pytest.skip("the store's file system keeps no user xattrs")
    assert s.digest("plain") != s.digest("attr")
    assert s.digest("plain") == s.digest("plain")


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("name", ["../victim", "../../victim", "/abs", "a/b", "."])
def test_export_refuses_a_name_that_is_not_one(tmp_path, name):
    """`zoned image export ../victim` exported a host dir holding an image.json."""
    store = tmp_path / "s" / "store"
    store.mkdir(parents=True)
    victim = tmp_path / "s" / "victim"
    (victim / "rootfs").mkdir(parents=True)
    (victim / "rootfs" / "secret").write_text("host data\n")
    (victim / "image.json").write_text('{"config": {}}')
    out = tmp_path / "out.tar"
    p = zoned(store, "export", name, str(out), check=False)
    assert p.returncode == 125 and "invalid image name" in p.stderr, p.stderr
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["s"]
