"""Image store and recipe builds, on real files (builds need dpkg-deb and the busybox-static
.deb cached or downloadable; chroot/overlay tests need root)."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from zoned.images.errors import ImageError, ImageNotFound
from zoned.images.store import DEFAULT_STORE, ImageStore
from zoned.images.store_write import find_recipe

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
PT_INTERP = 3


def has_interp(path: Path) -> bool:
    """True if the ELF has a PT_INTERP header, i.e. is dynamically linked."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "expected a 64-bit ELF"
    end = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(end + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    return any(struct.unpack_from(end + "I", data, phoff + i * phentsize)[0] == PT_INTERP
               for i in range(phnum))


def leftovers(root: Path) -> list[str]:
    """Store entries other than images and the lock file: temp/aside dirs must not linger."""
    if not root.exists():
        return []
    return sorted(n for n in os.listdir(root) if n.startswith(".") and n != ".lock")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    store = ImageStore(tmp_path_factory.mktemp("store"))
    return store, store.build("busybox")


def test_busybox_binary_is_static_and_executable(built):
    _, img = built
    bb = img.rootfs / "bin/busybox"
    assert bb.is_file() and os.access(bb, os.X_OK)
    assert not has_interp(bb)
    if shutil.which("file"):
        assert "statically linked" in subprocess.run(["file", "-b", bb], capture_output=True, text=True).stdout


def test_applet_links(built):
    _, img = built
    sh = img.rootfs / "bin/sh"
    assert sh.is_symlink() and os.readlink(sh) == "busybox"
    assert sh.resolve() == (img.rootfs / "bin/busybox").resolve()
    awk = img.rootfs / "usr/bin/awk"
    assert awk.is_symlink() and awk.resolve() == (img.rootfs / "bin/busybox").resolve()
    assert not (img.rootfs / "linuxrc").exists()  # only bin/sbin/usr/bin/usr/sbin applets
    n = sum(len(os.listdir(img.rootfs / d)) for d in ("bin", "sbin", "usr/bin", "usr/sbin"))
    assert n > 200


def test_etc_and_dirs(built):
    _, img = built
    r = img.rootfs
    passwd = (r / "etc/passwd").read_text().splitlines()
    assert passwd[0].startswith("root:x:0:0:")
    assert any(ln.startswith("zone:x:1000:1000:") for ln in passwd)
    assert any(ln.startswith("nobody:x:65534:65534:") for ln in passwd)
    assert "zone:x:1000:" in (r / "etc/group").read_text()
    assert (r / "etc/hostname").read_text().strip()
    assert "localhost" in (r / "etc/hosts").read_text()
    assert (r / "etc/resolv.conf").read_text() == ""
    assert stat.S_IMODE((r / "tmp").stat().st_mode) == 0o1777
    for d in ("proc", "sys", "dev", "run", "var", "root", "home/zone"):
        assert (r / d).is_dir() and not (r / d).is_symlink(), d
    if os.geteuid() == 0:
        st = (r / "home/zone").stat()
        assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert img.config == {
        "cmd": ["/bin/sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "workdir": "/",
        "user": "0:0",
    }
    assert img.size > 500_000 and img.created


@needs_root
def test_chroot_shell_runs(built):
    _, img = built
    p = subprocess.run(["chroot", img.rootfs, "/bin/sh", "-c", "id -un; ls /bin | wc -l"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    user, count = p.stdout.split()
    assert user == "root" and int(count) > 50


def test_get_list_remove(tmp_path):
    store = ImageStore(tmp_path)
    assert store.list() == []
    img = store.build("busybox")
    assert img.path == tmp_path / "busybox" and img.rootfs == tmp_path / "busybox/rootfs"
    got = store.get("busybox")
    assert got == img
    assert got.rootfs_dir == str(tmp_path / "busybox/rootfs") and got.image_dir == str(tmp_path / "busybox")
    assert [i.name for i in store.list()] == ["busybox"]
    store.remove("busybox")
    assert store.list() == []
    assert not (tmp_path / "busybox").exists()
    assert leftovers(tmp_path) == []
    with pytest.raises(ImageNotFound):
        store.remove("busybox")


def test_get_missing_is_clear(tmp_path):
    with pytest.raises(ImageNotFound) as e:
        ImageStore(tmp_path).get("nope")
    assert str(e.value) == "image 'nope' not found (build it with: zoned image build nope)"
    assert isinstance(e.value, ImageError)


def test_store_location(monkeypatch, tmp_path):
    monkeypatch.delenv("ZONED_IMAGES", raising=False)
    assert ImageStore().root == Path(DEFAULT_STORE)
    monkeypatch.setenv("ZONED_IMAGES", str(tmp_path))
    assert ImageStore().root == tmp_path


@pytest.mark.parametrize("text, problem", [
    ("name: [busybox\n", "invalid YAML"),
    ("name: x\ncolour: blue\n", "unknown key 'colour'"),
    ("description: no name\n", "missing required key 'name'"),
    ("name: Bad/Name\n", "invalid name"),
    ("name: x\ndirs:\n  /tmp: 1777\n", "quoted octal"),
    ("name: x\nfiles:\n  etc/passwd: x\n", "must be absolute"),
    ("name: x\nconfig:\n  cmd: /bin/sh\n", "config.cmd"),
    ("name: x\nconfig:\n  entrypoint: [/bin/sh]\n", "unknown key 'entrypoint'"),
])
def test_malformed_recipe(tmp_path, text, problem):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    store_dir = tmp_path / "store"
    with pytest.raises(ImageError) as e:
        ImageStore(store_dir).build(recipe)
    assert problem in str(e.value) and str(recipe) in str(e.value)
    assert "\n" not in str(e.value)
    assert not store_dir.exists() or os.listdir(store_dir) in ([], [".lock"])


def test_failed_build_leaves_nothing(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: broken\nbusybox_links: true\nfiles:\n  /etc/motd: hi\n")
    with pytest.raises(ImageError, match="needs /bin/busybox"):
        ImageStore(tmp_path / "store").build(recipe)
    assert os.listdir(tmp_path / "store") == [".lock"]


def test_find_recipe(monkeypatch, tmp_path):
    assert find_recipe("busybox").name == "busybox.yaml"
    with pytest.raises(ImageError, match="no recipe for image 'nosuch'"):
        find_recipe("nosuch")
    # $ZONED_RECIPES comes first and may add images
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent("""\
        name: tiny
        dirs: {/data: "0750"}
        files:
          /etc/motd: {content: "hello\\n", mode: "0600"}
        symlinks: {/etc/greeting: motd}
        config: {cmd: [/bin/true], hostname: tiny}
    """))
    monkeypatch.setenv("ZONED_RECIPES", str(tmp_path))
    assert find_recipe("tiny") == tmp_path / "tiny.yaml"
    img = ImageStore(tmp_path / "store").build("tiny")
    assert (img.rootfs / "etc/motd").read_text() == "hello\n"
    assert stat.S_IMODE((img.rootfs / "etc/motd").stat().st_mode) == 0o600
    assert stat.S_IMODE((img.rootfs / "data").stat().st_mode) == 0o750
    assert os.readlink(img.rootfs / "etc/greeting") == "motd"
    assert img.config["cmd"] == ["/bin/true"] and img.config["hostname"] == "tiny"


def test_symlinks_cannot_escape_rootfs(tmp_path):
    """Links a package plants (absolute, or climbing with '..') must not redirect a root-run
    build's writes onto the host: they are followed as if chrooted at the rootfs."""
    from zoned.images.recipes import _copy_tree_into, _resolve

    outside = tmp_path / "host"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(outside, rootfs / "etc")  # absolute target
    os.symlink("../../../../..", rootfs / "up")  # climbs past /
    inside = rootfs / outside.relative_to("/")
    assert _resolve(rootfs, "etc/passwd") == inside / "passwd"
    assert _resolve(rootfs, "up/etc/passwd") == inside / "passwd"
    assert _resolve(rootfs, "etc", follow_last=True) == inside

    pkg = tmp_path / "pkg"
    (pkg / "etc").mkdir(parents=True)
    (pkg / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    _copy_tree_into(pkg, "etc", rootfs)
    assert os.listdir(outside) == []
    assert (inside / "passwd").read_text().startswith("root:")


def test_lookup_imports_only_cheap_modules():
    """`zoned run` looks its image up through zoned.images.store on every start: importing it must
    not pull in the build/export machinery (dataclasses+inspect ~5 ms, pathlib ~3 ms, ...)."""
    heavy = ["dataclasses", "inspect", "pathlib", "typing", "tarfile", "subprocess", "tempfile",
             "shutil", "datetime", "pwd", "contextlib", "zoned.images.recipes"]
    code = "import sys, zoned.images.store; print(' '.join(sys.modules))"
    # -S -E and a bare environment: no site hooks or PYTHON* variables preloading modules;
    # zoned is imported from the checkout (sys.path[0] is the cwd for -c).
    repo = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=repo)
    assert p.returncode == 0, p.stderr
    loaded = set(p.stdout.split())
    assert "zoned.images.store" in loaded
    assert sorted(loaded.intersection(heavy)) == []


def test_image_paths_are_strings_with_lazy_pathlib(tmp_path):
    """Image.rootfs_dir/image_dir are str for the run path; .rootfs/.path stay pathlib views."""
    from zoned.images.store import Image

    img = Image(name="x", path=tmp_path / "x", rootfs=tmp_path / "x/rootfs", config={"cmd": ["/bin/sh"]})
    assert img.rootfs_dir == f"{tmp_path}/x/rootfs" and img.image_dir == f"{tmp_path}/x"
    assert img.rootfs == tmp_path / "x/rootfs" and img.path == tmp_path / "x"
    assert img == Image("x", f"{tmp_path}/x", f"{tmp_path}/x/rootfs", {"cmd": ["/bin/sh"]})
    assert img != Image("y", f"{tmp_path}/x", f"{tmp_path}/x/rootfs", {"cmd": ["/bin/sh"]})
    assert repr(img).startswith("Image(name='x', path=")
    assert not hasattr(img, "__dict__")
    for raw, spelled in [("/a//b/./c/", "/a/b/c"), ("./rel/", "rel"), (".", "."), ("/", "/")]:
        assert ImageStore(raw).root_dir == spelled == str(Path(raw))


def test_concurrent_builds_of_same_image(tmp_path):
    code = "import sys; from zoned.images.store import ImageStore; ImageStore(sys.argv[1]).build('busybox')"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = ImageStore(tmp_path)
    assert [i.name for i in store.list()] == ["busybox"]
    assert leftovers(tmp_path) == []
    assert not has_interp(store.get("busybox").rootfs / "bin/busybox")
    assert (store.get("busybox").rootfs / "bin/sh").is_symlink()


def test_rebuild_replaces(built, tmp_path):
    store = ImageStore(tmp_path)
    first = store.build("busybox")
    (first.rootfs / "marker").write_text("old")
    second = store.build("busybox")
    assert second.path == first.path
    assert not (second.rootfs / "marker").exists()
    assert leftovers(tmp_path) == []


def test_export_rootfs_tar(built, tmp_path):
    store, _ = built
    dest = store.export_rootfs_tar("busybox", tmp_path / "busybox.tar")
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        assert "bin/busybox" in names
        sh = tar.getmember("bin/sh")
        assert sh.issym() and sh.linkname == "busybox"
        assert tar.getmember("tmp").mode == 0o1777
        assert all(m.uname == "" for m in tar.getmembers())
    assert [p.name for p in tmp_path.iterdir()] == ["busybox.tar"]
    with pytest.raises(ImageNotFound):
        store.export_rootfs_tar("nope", tmp_path / "nope.tar")


def test_export_writes_through_no_name_another_user_could_plant(built, tmp_path):
    """`zoned image export NAME /tmp/x.tar` runs as root: its temp file was the fixed
    .x.tar.PID.tmp beside the destination, which a symlink planted there redirected."""
    store, _ = built
    canary = tmp_path / "pf-canary"
    canary.write_text("canary\n")
    os.symlink(canary, tmp_path / f".busybox.tar.{os.getpid()}.tmp")
    dest = store.export_rootfs_tar("busybox", tmp_path / "busybox.tar")
    assert canary.read_text() == "canary\n"
    with tarfile.open(dest) as tar:
        assert "bin/busybox" in tar.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".busybox.tar.{os.getpid()}.tmp", "busybox.tar", "pf-canary"]


def test_export_bundle(built, tmp_path):
    store, img = built
    rootfs = store.export_bundle("busybox", tmp_path / "bundle")
    assert rootfs == tmp_path / "bundle/rootfs"
    assert (rootfs / "bin/busybox").is_file() and os.readlink(rootfs / "bin/sh") == "busybox"
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777
    assert os.listdir(tmp_path / "bundle") == ["rootfs"]
    with pytest.raises(ImageError, match="not empty"):
        store.export_bundle("busybox", tmp_path / "bundle")


@needs_root
def test_rebuild_keeps_lower_dir_of_running_container(tmp_path):
    """Deleting a mounted overlay lower dir makes not-yet-opened files vanish in the
    container, so a rebuild must keep the old rootfs until its mounts are gone."""
    store = ImageStore(tmp_path / "store")
    img = store.build("busybox")
    dirs = {n: tmp_path / n for n in ("upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    opts = f"lowerdir={img.rootfs},upperdir={dirs['upper']},workdir={dirs['work']}"
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, dirs["merged"]]).returncode:
        pytest.skip("overlayfs not available")
    try:
        store.build("busybox")
        kept = leftovers(tmp_path / "store")
        assert len(kept) == 1 and kept[0].startswith(".old-busybox-")
        assert (tmp_path / "store" / kept[0] / ".inuse.json").is_file()
        assert store.prune() == []  # still mounted
        assert (dirs["merged"] / "usr/bin/awk").exists()
        assert len(os.listdir(dirs["merged"] / "bin")) > 50
    finally:
        subprocess.run(["umount", dirs["merged"]], check=True)
    # Mount namespaces created meanwhile (e.g. concurrent tests starting containers) hold
    # private copies of our mount, which really do pin the old dir until they exit.
    deadline = time.monotonic() + 30
    while leftovers(tmp_path / "store") and time.monotonic() < deadline:
        store.prune()
        time.sleep(0.2)
    assert leftovers(tmp_path / "store") == []


# -- locks another user could hold (audit 6) ------------------------------------------------
_FLOCK_AS_NOBODY = """
import fcntl, os, sys, time
for p in sys.argv[1:]:
    try:
        fd = os.open(p, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", flush=True)
    except OSError as e:
        print(e.__class__.__name__, flush=True)
time.sleep(600)
"""


def flock_as_nobody(*paths: Path) -> tuple[subprocess.Popen, list[str]]:
    """Another host user (nobody) opens each path read-only and flocks it, holding the
    locks until killed: what each attempt gave ("held", or the error's class)."""
    p = subprocess.Popen(["/usr/bin/python3", "-c", _FLOCK_AS_NOBODY, *map(str, paths)],
                         user=65534, group=65534, extra_groups=[], stdout=subprocess.PIPE,
                         text=True)
    return p, [p.stdout.readline().strip() for _ in paths]


@pytest.fixture
def open_store():
    """A store in a directory others may traverse (as /var/lib/zoned/images is), under
    /tmp/pf-*, with one image made by the store's own write transaction."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pf-store-", dir="/tmp"))
    os.chmod(d, 0o755)
    store = ImageStore(d / "images")
    store.create("pf-x", lambda tmp, rootfs: {"config": {"cmd": ["/bin/true"]}})
    yield store
    shutil.rmtree(d)


@needs_root
def test_another_user_cannot_hold_the_store_lock(open_store):
    """A read-only fd is enough for flock(LOCK_EX): on a 0644 .lock any user could hang
    `zoned run` and `image ls` for ever. 0600, and an older zoned's 0644 file is fixed
    when root next takes the lock."""
    lock = open_store.root / ".lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.chmod(0o644)  # as zoned made it before
    with open_store.lock(shared=True):
        pass
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    p, got = flock_as_nobody(lock)
    try:
        assert got == ["PermissionError"]
    finally:
        p.kill()
        p.wait()


@needs_root
def test_another_users_flock_on_image_dirs_stops_neither_remove_nor_gc(open_store):
    """A store an older zoned left 0755 let anyone open an image dir and flock it (the
    store is 0700 now; a write narrows an older one, but fds opened before stay). That
    must not hang `image rm` (it used to wait for a lock on the image's dir while holding
    the store's, hanging every `zoned run` too) nor keep gc from a crashed build's dir."""
    root = open_store.root
    junk = root / ".build-pf-x-abcd1234"  # a crashed build, as its builder left it
    (junk / "rootfs").mkdir(parents=True)
    for d in (root, root / "pf-x", junk):
        d.chmod(0o755)  # as an older zoned made them
    p, got = flock_as_nobody(root / "pf-x", junk)
    try:
        assert got == ["held", "held"]
        code = ("import sys; from zoned.images.store import ImageStore; "
                "ImageStore(sys.argv[1]).remove('pf-x')")  # and its gc
        try:
            r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                               text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("image remove hangs on a lock another user holds")
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(root)) == [".lock"]  # the image, the junk, their locks
    finally:
        p.kill()
        p.wait()
