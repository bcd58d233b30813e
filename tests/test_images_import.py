"""`zoned image import/export/inspect/history/ls/prune` with real podman images: podman
builds a layered image (files added, hard-linked, setuid, then deleted: whiteouts), saves it
as docker-archive and oci-archive, zoned imports each and runs it, and the files and config
must be podman's. Podman images here are only ones we make (`podman import` of a busybox
tarball, `podman build`); nothing is pulled."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from archives import docker_archive, entry, layer, oci_layout
from oci_helpers import podman_made_paths, remove_made_paths

PODMAN_RUN = ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=1024:1024"]
TAG = f"zimg-{os.getpid()}"
CONTAINERFILE = """\
FROM localhost/{tag}-base:1
RUN mkdir -p /data/sub /data/opq && echo one > /data/a && echo two > /data/sub/b \\
    && echo old > /data/opq/old && ln /data/a /data/hard && chmod 4755 /data/a \\
    && chown 1000:1000 /data/sub/b
RUN rm /data/a && rm -r /data/sub && echo three > /etc/zimg
ENV FOO=bar
WORKDIR /tmp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["id -u; pwd; echo $FOO; cat /etc/zimg"]
USER 1000:1000
EXPOSE 8080/tcp
STOPSIGNAL SIGINT
"""

needs_podman = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")


@pytest.fixture(scope="module", autouse=True)
def podmans_leftovers():
    """The host's podman (its own storage: the images here are its) with runc makes
    /run/runc and <hierarchy>/libpod_parent on first use (`podman build`'s RUN, `podman
    run`) and never removes them: removed after this module when it made them."""
    made = podman_made_paths()
    yield
    remove_made_paths(made)


def podman(*args, check=True, **kw):
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {p.stderr}")
    return p


@pytest.fixture(scope="module")
def saved(tmp_path_factory, busybox):
    """The podman image saved both ways, and podman's own view of it (files and config)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    d = tmp_path_factory.mktemp("podman")
    from zoned.images.store import ImageStore

    ImageStore().export_rootfs_tar("busybox", d / "base.tar")
    podman("import", str(d / "base.tar"), f"localhost/{TAG}-base:1")
    (d / "Containerfile").write_text(CONTAINERFILE.format(tag=TAG))
    try:
        podman("build", "-q", "-t", f"localhost/{TAG}:1", str(d))
        podman("save", "-o", str(d / "docker.tar"), f"localhost/{TAG}:1")
        podman("save", "--format", "oci-archive", "-o", str(d / "oci.tar"), f"localhost/{TAG}:1")
        cfg = json.loads(podman("image", "inspect", f"localhost/{TAG}:1").stdout)[0]["Config"]
        cid = podman("create", f"localhost/{TAG}:1").stdout.strip()
        try:
            podman("export", "-o", str(d / "flat.tar"), cid)
        finally:
            podman("rm", "-f", cid, check=False)
        yield {"dir": d, "config": cfg, "flat": d / "flat.tar"}
    finally:
        for ref in (f"localhost/{TAG}:1", f"localhost/{TAG}-base:1", f"localhost/{TAG}-rt:latest"):
            podman("rmi", "-f", ref, check=False)


@pytest.fixture
def images(tmp_path, cli):
    """`zoned image ...` (and run) against a private store."""
    store = tmp_path / "store"

    def run(*args, check=True, timeout=120):
        p = cli("--images", str(store), *args, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"zoned {' '.join(args)} -> {p.returncode}: {p.stderr}")
        return p

    run.store = store
    return run


def entries(rootfs: Path) -> dict:
    """path -> (type, mode, uid, gid, content or link) of a rootfs, podman-export style."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            rel = str(p.relative_to(rootfs))
            kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
            what = os.readlink(p) if kind == "l" else p.read_bytes() if kind == "f" else None
            out[rel] = (kind, st.st_mode & 0o7777 if kind != "l" else 0, st.st_uid, st.st_gid, what)
    return out


def tar_entries(path: Path) -> dict:
    out = {}
    with tarfile.open(path) as tar:
        links = {}
        for m in tar:
            rel = os.path.normpath(m.name)
            if m.islnk():
                links[rel] = os.path.normpath(m.linkname)
                continue
            kind = "l" if m.issym() else "d" if m.isdir() else "f"
            what = m.linkname if kind == "l" else tar.extractfile(m).read() if kind == "f" else None
            out[rel] = (kind, m.mode & 0o7777 if kind != "l" else 0, m.uid, m.gid, what)
        for rel, target in links.items():
            out[rel] = out[target]
    return out


# Mount points and files podman's runtime creates in every container it exports.
RUNTIME_MADE = {"dev", "proc", "sys", "run", "etc/hostname", "etc/hosts", "etc/resolv.conf",
                "run/.containerenv", "etc/mtab", "tmp"}


def comparable(d: dict) -> dict:
    return {k: v for k, v in d.items() if k.split("/")[0] not in ("dev", "proc", "sys", "run")
            and k not in RUNTIME_MADE}


@needs_podman
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_podman_save_round_trip(saved, images, fmt):
    p = images("image", "import", str(saved["dir"] / f"{fmt}.tar"), "--name", f"rt-{fmt}")
    assert f"rt-{fmt}\t" in p.stdout
    rootfs = images.store / f"rt-{fmt}" / "rootfs"
    ours, theirs = comparable(entries(rootfs)), comparable(tar_entries(saved["flat"]))
    assert ours.keys() == theirs.keys(), set(ours) ^ set(theirs)
    assert ours == theirs
    # whiteouts applied, hard link kept, owner kept, setuid kept (and reported)
    data = rootfs / "data"
    assert sorted(os.listdir(data)) == ["hard", "opq"]
    assert (data / "hard").stat().st_mode & 0o4000
    meta = json.loads(images("image", "inspect", f"rt-{fmt}").stdout)
    assert "/data/hard" in meta["setuid"]
    # the config podman has, in zoned's spelling
    c, pc = meta["config"], saved["config"]
    assert c["entrypoint"] == pc["Entrypoint"] and c["cmd"] == pc["Cmd"]
    assert c["env"] == pc["Env"] and c["workdir"] == pc["WorkingDir"] == "/tmp"
    assert c["user"] == pc["User"] == "1000:1000" and c["stop_signal"] == "SIGINT"
    assert c["exposed_ports"] == sorted(pc["ExposedPorts"])
    # and zoned run uses it: entrypoint + cmd, user, workdir, env
    r = images("run", "--rm", "--image", f"rt-{fmt}")
    assert r.stdout.split() == ["1000", "/tmp", "bar", "three"]
    r = images("run", "--rm", "--image", f"rt-{fmt}", "echo replaced cmd")
    assert r.stdout.strip() == "replaced cmd"


@needs_podman
def test_history_and_ls(saved, images):
    images("image", "import", str(saved["dir"] / "docker.tar"))  # name from the tag
    hist = images("image", "history", TAG).stdout
    assert "rm /data/a && rm -r /data/sub" in hist and "STOPSIGNAL SIGINT" in hist
    images("image", "import", str(saved["dir"] / "oci.tar"), "--name", "twin")
    rows = json.loads(images("image", "ls", "--format", "json").stdout)
    by = {r["name"]: r for r in rows}
    # the twin's files are hard links to the first import's: all shared, next to nothing unique
    assert by["twin"]["shared"] > 1_000_000
    assert by["twin"]["unique"] < 64 * 1024
    table = images("image", "ls").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "SIZE", "SHARED", "UNIQUE"]
    images("image", "rm", TAG)
    twin = images.store / "twin" / "rootfs"
    assert (twin / "bin" / "busybox").stat().st_nlink == 1
    rows = json.loads(images("image", "ls", "--format", "json").stdout)
    assert rows[0]["shared"] == 0


@needs_podman
def test_export_loads_in_podman_and_reimports_identically(saved, images, tmp_path):
    images("image", "import", str(saved["dir"] / "docker.tar"), "--name", "orig")
    out = tmp_path / "orig.oci.tar"
    images("image", "export", "orig", str(out))
    ref = f"localhost/{TAG}-rt:latest"
    try:
        podman("load", "-i", str(out))
        podman("tag", "localhost/orig:latest", ref)
        podman("rmi", "localhost/orig:latest", check=False)
        r = podman("run", "--rm", "--network", "none", *PODMAN_RUN, ref)
        assert r.stdout.split() == ["1000", "/tmp", "bar", "three"]
    finally:
        podman("rmi", "-f", ref, "localhost/orig:latest", check=False)
    images("image", "import", str(out), "--name", "again")
    a = json.loads(images("image", "inspect", "orig").stdout)
    b = json.loads(images("image", "inspect", "again").stdout)
    assert a["digest"] == b["digest"]
    assert a["config"] == b["config"]
    hist = images("image", "history", "again").stdout
    assert "zoned image export orig" in hist and "rm /data/a" in hist


def test_hand_made_layers_whiteouts_owners_links(images, tmp_path):
    """Layer 2 empties /d of layer 1's files (opaque), deletes /f and /e/x (whiteouts)."""
    l1 = layer([entry("d", "dir"), entry("d/a", data=b"a"), entry("d/b", data=b"b"),
                entry("e", "dir"), entry("e/x", data=b"x"), entry("f", data=b"f", uid=1234, gid=99),
                entry("g", data=b"g", mode=0o600, uid=1234, gid=99), entry("h", "hardlink", link="g"),
                entry("fifo", "fifo")])
    l2 = layer([entry("d", "dir", mode=0o750), entry("d/c", data=b"c"), entry("d/.wh..wh..opq"),
                entry(".wh.f"), entry("e/.wh.x"), entry("n/deep/file", data=b"implicit parents")],
               gz=True)
    a = docker_archive(tmp_path / "two.tar", [l1, l2], config={"Cmd": ["/bin/true"]})
    images("image", "import", str(a), "--name", "two")
    r = images.store / "two" / "rootfs"
    assert sorted(os.listdir(r / "d")) == ["c"]
    assert oct((r / "d").stat().st_mode & 0o777) == oct(0o750)
    assert not (r / "f").exists() and os.listdir(r / "e") == []
    g, h = (r / "g").stat(), (r / "h").stat()
    assert (g.st_ino, g.st_uid, g.st_gid, g.st_mode & 0o777) == (h.st_ino, 1234, 99, 0o600)
    assert (r / "fifo").is_fifo()
    assert (r / "n/deep/file").read_text() == "implicit parents"
    assert oct((r / "n").stat().st_mode & 0o777) == oct(0o755)
    hist = images("image", "history", "two").stdout
    assert "step 0" in hist and "step 1" in hist


def test_oci_layout_dir_and_rootfs_tarball(images, tmp_path, busybox):
    d = oci_layout(tmp_path / "layout", [layer([entry("hello", data=b"from oci\n")], gz=True)],
                   config={"Cmd": ["/bin/cat", "/hello"]})
    p = images("image", "import", str(d))
    assert p.stdout.startswith("zimg-oci\t")
    # a rootfs tarball (gzip) of busybox + the OCI layout's file: both run
    tgz = tmp_path / "bb.tar.gz"
    from zoned.images.store import ImageStore

    ImageStore().export_rootfs_tar("busybox", tgz)
    images("image", "import", str(tgz))
    assert images("run", "--rm", "--image", "bb", "cat", "/etc/hostname").returncode == 0
    meta = json.loads(images("image", "inspect", "bb").stdout)
    assert meta["source"]["kind"] == "rootfs-tar" and meta["config"]["env"][0].startswith("PATH=")
    r = images("run", "--rm", "--image", "bb", "echo", "hi")
    assert r.stdout == "hi\n"
    r = images("run", "--rm", "--image", "zimg-oci", check=False)
    # the layout's image has no shell or libc: cat is missing, and zoned says so
    assert r.returncode == 127


def test_prune_removes_crashed_imports(images, tmp_path):
    images.store.mkdir()
    junk = images.store / ".build-x-1234"
    (junk / "rootfs").mkdir(parents=True)
    out = images("image", "prune").stdout
    assert str(junk) in out and not junk.exists()


def test_export_and_inspect_unknown_image(images, tmp_path):
    for args in (("export", "nope", str(tmp_path / "x.tar")), ("inspect", "nope"),
                 ("history", "nope")):
        p = images("image", *args, check=False)
        assert p.returncode == 125 and "image 'nope' not found" in p.stderr
    assert not (tmp_path / "x.tar").exists()


@needs_podman
def test_entrypoint_override_and_stop_signal(saved, images):
    """--entrypoint replaces the image's Entrypoint (and Cmd); `stop` sends its StopSignal."""
    images("image", "import", str(saved["dir"] / "docker.tar"), "--name", "sig")
    r = images("run", "--rm", "--image", "sig", "--entrypoint", "/bin/echo", "plain")
    assert r.stdout == "plain\n"
    r = images("run", "--rm", "--image", "sig", "--entrypoint", "", "/bin/echo", "no", "ep")
    assert r.stdout == "no ep\n"
    # a shell that reports the signal it gets: INT (the image's StopSignal), not TERM
    script = ("trap 'echo got INT; exit 0' INT; trap 'echo got TERM; exit 0' TERM; "
              "echo ready; while :; do sleep 0.1; done")
    images("run", "-d", "--name", "zimg-sig", "--image", "sig", "--entrypoint", "/bin/sh",
           "--", "-c", script)
    try:
        import time

        deadline = time.monotonic() + 10
        while "ready" not in images("logs", "zimg-sig", check=False).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        images("stop", "-t", "5", "zimg-sig")
        assert images("logs", "zimg-sig").stdout.split() == ["ready", "got", "INT"]
    finally:
        images("rm", "-f", "zimg-sig", check=False)


def test_gzipped_docker_archive_and_progress_on_a_terminal(images, tmp_path):
    """`docker save | gzip` imports as an image, not as a rootfs holding manifest.json; on a
    terminal the import shows per-layer progress."""
    import gzip
    import pty

    plain = docker_archive(tmp_path / "img.tar", [layer([entry("a", data=b"A")]),
                                                  layer([entry("b", data=b"B" * 100_000)])],
                           config={"Cmd": ["/a"]}, tag="localhost/gz:1")
    packed = tmp_path / "img.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    leader, follower = pty.openpty()
    try:
        p = subprocess.run([*images_cmd(images), "image", "import", str(packed)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=follower, timeout=60)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert p.returncode == 0, shown
    assert b"layer 1/2" in shown and b"layer 2/2" in shown
    r = images.store / "gz" / "rootfs"
    assert sorted(os.listdir(r)) == ["a", "b"]
    assert json.loads(images("image", "inspect", "gz").stdout)["source"]["kind"] == "docker-archive"
    assert [n for n in os.listdir(images.store) if n.startswith(".build")] == []


def images_cmd(images) -> list[str]:
    from conftest import ZONED

    return [ZONED, "--images", str(images.store)]


def test_sharing_keeps_an_images_own_links_and_size(images, tmp_path):
    """Two identical files in an image stay two inodes when both match a neighbour's file:
    the image's size must not depend on which images are already in the store."""
    blob = os.urandom(8192)
    a = docker_archive(tmp_path / "dup.tar", [layer([entry("x", data=blob), entry("y", data=blob)])])
    images("image", "import", str(a), "--name", "first")
    images("image", "import", str(a), "--name", "second")
    first = json.loads(images("image", "inspect", "first").stdout)
    second = json.loads(images("image", "inspect", "second").stdout)
    assert first["size"] == second["size"] == 2 * 8192
    r1, r2 = images.store / "first" / "rootfs", images.store / "second" / "rootfs"
    assert (r2 / "x").stat().st_ino != (r2 / "y").stat().st_ino
    assert {(r2 / n).stat().st_ino for n in "xy"} == {(r1 / n).stat().st_ino for n in "xy"}
    assert second["shared_at_create"] == 2 * 8192


def test_oci_tag_only_ref_names_the_image_after_the_file(images, tmp_path):
    d = oci_layout(tmp_path / "webapp", [layer([entry("f", data=b"x")], gz=True)], ref="latest")
    assert images("image", "import", str(d)).stdout.startswith("webapp\t")


def _raw_docker_archive(path: Path, config: object, repo_tags: object = None) -> Path:
    """A docker-archive whose config.json is `config` as given, whatever its shape."""
    from archives import add_bytes

    data = json.dumps(config).encode()
    name = hashlib.sha256(data).hexdigest() + ".json"  # verified: named by its digest
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, name, data)
        add_bytes(tar, "manifest.json", json.dumps(
            [{"Config": name, "Layers": [], "RepoTags": repo_tags}]).encode())
    return path


def _raw_oci_layout(d: Path, manifest_entry: dict) -> Path:
    """An OCI layout whose index.json's one manifest entry has `manifest_entry`'s extra
    fields (annotations, platform) as given; the manifest and config are valid."""
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(b: bytes) -> dict:
        digest = hashlib.sha256(b).hexdigest()
        (blobs / digest).write_bytes(b)
        return {"digest": "sha256:" + digest, "size": len(b)}

    cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    man = put(json.dumps({"schemaVersion": 2, "config": cfg, "layers": []}).encode())
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **man,
         **manifest_entry}]}))
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return d


@pytest.mark.parametrize("config,tags,field", [
    ([1], None, "must be a JSON object"),
    ({"rootfs": "x"}, None, "rootfs must be a JSON object"),
    ({"rootfs": {"diff_ids": "abc"}}, None, "rootfs.diff_ids must be a list of strings"),
    ({"rootfs": {"diff_ids": [7]}}, None, "rootfs.diff_ids must be a list of strings"),
    ({"rootfs": {"diff_ids": []}, "config": [1]}, None, "config must be an object"),
], ids=["config-a-list", "rootfs-a-string", "diff-ids-a-string", "diff-ids-numbers",
        "runtime-config-a-list"])
def test_malformed_image_metadata_gets_one_line_naming_it(images, tmp_path, config, tags,
                                                          field):
    """Image metadata of the wrong shape is refused with one line naming the field, not
    an internal error, and nothing is left in the store."""
    p = images("image", "import", str(_raw_docker_archive(tmp_path / "a.tar", config, tags)),
               "--name", "bad", check=False)
    assert p.returncode == 125 and field in p.stderr, p.stderr
    assert "internal error" not in p.stderr and len(p.stderr.splitlines()) == 1
    assert images("image", "ls", "-q", check=False).stdout.split() == []


@pytest.mark.parametrize("extra,field", [
    ({"annotations": ["x"]}, "annotations must be a JSON object"),
    ({"platform": "amd64"}, "platform must be a JSON object"),
], ids=["annotations-a-list", "platform-a-string"])
def test_malformed_oci_index_gets_one_line_naming_it(images, tmp_path, extra, field):
    p = images("image", "import", str(_raw_oci_layout(tmp_path / "layout", extra)),
               "--name", "bad", check=False)
    assert p.returncode == 125 and field in p.stderr, p.stderr
    assert "internal error" not in p.stderr


def test_odd_repo_tags_and_ref_names_are_ignored(images, tmp_path):
    """A RepoTags or ref.name of another type names nothing: the image is imported."""
    a = _raw_docker_archive(tmp_path / "a.tar", {"rootfs": {"diff_ids": []}}, {"x": 1})
    images("image", "import", str(a), "--name", "oddtags")
    layout = _raw_oci_layout(tmp_path / "layout", {
        "annotations": {"org.opencontainers.image.ref.name": 5}})
    images("image", "import", str(layout), "--name", "oddref")

