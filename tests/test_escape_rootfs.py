"""Issue 10, item 2: a rootfs's symlinks never lead zoned's writes, mknods or mounts out of
it; item 12 (first defect): linux.devices nodes are made although the device cgroup denies
by default; item 9 (/proc part): no mount may hide the container's procfs.

The attacks use crafted rootfs dirs (copies of the busybox image) whose paths are symlinks
such as /n/../../../<tmp>/host/x: with `..` kept after a missing component, these climbed out
of the rootfs. Their targets are a "host" dir under the test's tmp dir holding a canary file,
so a regression damages nothing but that dir; each test asserts that it is untouched, and
where runc is the reference, runc gets the same bundle.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import ZONED, host_snapshot

RUNC = shutil.which("runc")
CANARY = "host file, must survive\n"
CLIMB = "/n" + "/.." * 32  # `n` is missing: a resolver that keeps the `..`s leaves the root


def climb_to(p: Path | str) -> str:
    """A symlink target that reaches host path `p` if `..` after a missing component is
    followed for real, and `p` inside the rootfs if resolved as if the rootfs were /."""
    return CLIMB + str(p)


@pytest.fixture
def host(tmp_path):
    """The host side an escape would reach: a dir with one canary file."""
    h = tmp_path / "host"
    h.mkdir()
    (h / "canary").write_text(CANARY)
    return h


def assert_intact(host: Path) -> None:
    assert sorted(os.listdir(host)) == ["canary"], "zoned made files on the host"
    st = os.lstat(host / "canary")
    assert stat.S_ISREG(st.st_mode), "the host canary was replaced"
    assert (host / "canary").read_text() == CANARY


@pytest.fixture
def rootfs(tmp_path, busybox):
    """A private copy of the busybox image (zoned --rootfs binds it: writes land in it)."""
    r = tmp_path / "rootfs"
    shutil.copytree(busybox.rootfs, r, symlinks=True)
    return r


def make_bundle(tmp_path: Path, busybox, args: list[str], name: str = "bundle",
                **changes) -> Path:
    """An OCI bundle (zoned spec: runc's defaults, deny-all device rules) with a fresh copy
    of the busybox rootfs; `changes` are dotted config paths -> values."""
    b = tmp_path / name
    b.mkdir()
    shutil.copytree(busybox.rootfs, b / "rootfs", symlinks=True)
    subprocess.run([ZONED, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    for path, value in changes.items():
        node = cfg
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def runc_run(tmp_path: Path, bundle: Path) -> subprocess.CompletedProcess:
    """runc on the same bundle, in a private state root, removed afterwards."""
    state, cid = tmp_path / "runc-state", f"zt-esc-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run([RUNC, "--root", str(state), "run", "-b", str(bundle), cid],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
    finally:
        subprocess.run([RUNC, "--root", str(state), "delete", "-f", cid],
                       capture_output=True)


needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")


# -- the resolver, without containers (no root needed) ------------------------------------

def test_secure_join_keeps_dotdot_after_a_missing_component_inside(tmp_path):
    from zoned.child.rootfs import secure_join

    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").symlink_to("/n/../../../../../tmp/x")
    assert secure_join(str(root), "/etc/hostname") == f"{root}/tmp/x"
    assert secure_join(str(root), "/a/missing/../../../b") == f"{root}/b"
    assert secure_join(str(root), "missing/x/../y") == f"{root}/missing/y"
    assert secure_join(str(root), "../../etc") == f"{root}/etc"


def test_secure_join_follows_symlinks_inside_the_root(tmp_path):
    from zoned.child.rootfs import secure_join

    root = tmp_path / "r"
    (root / "real" / "sub").mkdir(parents=True)
    (root / "abs").symlink_to("/real")                    # absolute: from the root
    (root / "rel").symlink_to("../../../real/sub")        # climbs: stops at the root
    (root / "chain").symlink_to("abs/sub")
    (root / "file").write_text("x")
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert secure_join(r, "/abs/sub") == f"{r}/real/sub"
    assert secure_join(r, "/rel") == f"{r}/real/sub"
    assert secure_join(r, "/chain/new/../x") == f"{r}/real/sub/x"
    assert secure_join(r, "/abs/../real") == f"{r}/real"  # `..` of the link's target
    assert secure_join(r, "/") == r
    with pytest.raises(OSError) as e:
        secure_join(r, "/loop/x")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        secure_join(r, "/file/x")
    assert e.value.errno == errno.ENOTDIR


def test_target_makes_missing_parts_inside_the_root(tmp_path, host):
    from zoned.child import inroot

    root = tmp_path / "r"
    root.mkdir()
    (root / "vol").symlink_to(climb_to(host / "made"))
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with inroot.target(fd, "/vol/a/b", "dir") as t:
            assert t.path == f"{host}/made/a/b"
            assert os.path.samestat(os.stat(t.proc), os.stat(f"{root}{host}/made/a/b"))
        with inroot.target(fd, "/vol/f", "file"):
            assert os.path.isfile(f"{root}{host}/made/f")
    finally:
        os.close(fd)
    assert_intact(host)


def test_target_refuses_a_symlink_swapped_in_after_resolving(tmp_path, host):
    """The TOCTOU: the path is checked, then a component becomes a symlink out. The open
    that follows must not go through it."""
    from zoned.child import inroot

    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        names = inroot.resolve(fd, "/a/b/c")
        assert names == ["a", "b", "c"]
        (root / "a").rename(root / "a.old")
        (root / "a").symlink_to(host)                     # absolute: the host's dir itself
        with pytest.raises(OSError):
            inroot.target(fd, "/a/b/c", "dir", names)
        (root / "a").unlink()
        (root / "a").mkdir()
        (root / "a" / "b").symlink_to(host)
        with pytest.raises(OSError):
            inroot.target(fd, "/a/b", "dir", ["a", "b"])  # the last component too
    finally:
        os.close(fd)
    assert_intact(host)


def test_replace_node_replaces_the_symlink_not_its_target(tmp_path, host):
    from zoned.child import inroot

    root = tmp_path / "r"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "evil").symlink_to(climb_to(host / "canary"))
    (root / "dev" / "abs").symlink_to(host / "canary")
    (root / "dd").symlink_to(climb_to(host / "dd"))
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for p in ("/dev/evil", "/dev/abs", "/dd/fifo"):
            inroot.replace_node(fd, p, stat.S_IFIFO | 0o600, 0)
    finally:
        os.close(fd)
    assert stat.S_ISFIFO(os.lstat(root / "dev" / "evil").st_mode)
    assert stat.S_ISFIFO(os.lstat(root / "dev" / "abs").st_mode)
    assert stat.S_ISFIFO(os.lstat(f"{root}{host}/dd/fifo").st_mode)  # the dir: inside
    assert_intact(host)


# -- item 2: the attacks, through the real CLI ---------------------------------------------

def test_volume_destination_symlink_stays_inside(cli, rootfs, host, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the volume\n")
    (rootfs / "vol").symlink_to(climb_to(host / "vol"))
    (rootfs / "abs").symlink_to(host / "abs")
    p = cli("run", "--rm", "--rootfs", str(rootfs), "-v", f"{src}:/vol", "-v", f"{src}:/abs",
            "--", "cat", f"{host}/vol/hello", f"{host}/abs/hello")
    assert_intact(host)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "from the volume\n" * 2  # mounted where the links lead, in the root
    assert (rootfs / str(host).lstrip("/") / "vol").is_dir()


def test_workdir_symlink_stays_inside(cli, rootfs, host):
    (rootfs / "wd").symlink_to(climb_to(host / "wd"))
    p = cli("run", "--rm", "--rootfs", str(rootfs), "-w", "/wd", "--", "pwd")
    assert_intact(host)
    assert (rootfs / str(host).lstrip("/") / "wd").is_dir()  # made inside, as runc does
    # the kernel then cannot chdir through /n/..: a clean one-line failure (runc's too)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [
        'zoned: invalid process.cwd "/wd": no such directory in the zone']
    assert p.returncode == 125  # the config's, not the command's (tests/test_setup_errors)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed")
def test_network_files_symlinks_stay_inside(cli, rootfs, host):
    """/etc/hostname, /etc/hosts and /etc/resolv.conf are bind-mounted by a networked run."""
    for name in ("hostname", "hosts", "resolv.conf"):
        (rootfs / "etc" / name).unlink()
        (rootfs / "etc" / name).symlink_to(climb_to(host / name))
    net = f"zte{os.getpid() % 100000}"
    cli("network", "create", net, "--bridge", f"ztebr{os.getpid() % 100000}", check=True)
    try:
        p = cli("run", "--rm", "--rootfs", str(rootfs), "--network", net, "--hostname",
                "esc", "--", "cat", f"{host}/hostname", f"{host}/hosts", f"{host}/resolv.conf")
    finally:
        cli("network", "rm", net)
    assert_intact(host)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("esc\n")  # the zone's own files, where the links lead
    assert p.stdout.count("esc") >= 2 and "nameserver" in p.stdout


def test_tmpfs_and_device_paths_in_a_bundle_stay_inside(cli, tmp_path, busybox, host):
    """A tmpfs destination and linux.devices entries whose paths lead out; the device one
    used to unlink the host file and put a world-writable node in its place."""
    check = f"test -d {host}/tmpfs && test -c {host}/dd/null2 && echo ok"
    devices = [{"path": "/evil", "type": "c", "major": 1, "minor": 3},
               {"path": "/abs", "type": "c", "major": 1, "minor": 3},
               {"path": "/dd/null2", "type": "c", "major": 1, "minor": 3}]

    def bundle(name: str) -> Path:
        b = make_bundle(tmp_path, busybox, ["sh", "-c", check], name,
                        **{"linux.devices": devices})
        cfg = json.loads((b / "config.json").read_text())
        cfg["mounts"].append({"destination": "/tmpfs", "type": "tmpfs", "source": "tmpfs"})
        (b / "config.json").write_text(json.dumps(cfg))
        r = b / "rootfs"
        (r / "tmpfs").symlink_to(climb_to(host / "tmpfs"))
        (r / "evil").symlink_to(climb_to(host / "canary"))
        (r / "abs").symlink_to(host / "canary")
        (r / "dd").symlink_to(climb_to(host / "dd"))
        return b

    b = bundle("z")
    p = cli("run", "--bundle", str(b), "esc-dev")
    assert_intact(host)
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr
    for link in ("evil", "abs"):  # zoned puts the node in place of the link (inside)
        assert stat.S_ISCHR(os.lstat(b / "rootfs" / link).st_mode)
    if RUNC:  # runc makes it where the link leads, inside the root: also fine
        r = runc_run(tmp_path, bundle("r"))
        assert_intact(host)
        assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_dev_symlink_without_a_dev_mount_stays_inside(cli, tmp_path, busybox, host):
    """No /dev tmpfs in the config: the default nodes and /dev symlinks go into the
    rootfs's own /dev, here a link out. (main failed with ENOENT here rather than escape:
    it never made the missing /n; zoned now makes them where the link leads, inside.)"""
    def bundle(name: str) -> Path:
        b = make_bundle(tmp_path, busybox, ["true"], name)
        cfg = json.loads((b / "config.json").read_text())
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        # a mount that makes the missing /n: the kernel can then walk /n/.. upwards
        cfg["mounts"].append({"destination": "/n", "type": "tmpfs", "source": "tmpfs"})
        cfg["linux"]["maskedPaths"] = []  # they bind the container's /dev/null: not there
        (b / "config.json").write_text(json.dumps(cfg))
        (b / "rootfs" / "dev").rmdir()
        (b / "rootfs" / "dev").symlink_to(climb_to(host))  # its "null": the host's canary
        return b

    b = bundle("z")
    os.rename(host / "canary", host / "null")
    p = cli("run", "--bundle", str(b), "esc-nodev")
    os.rename(host / "null", host / "canary")
    assert_intact(host)
    assert p.returncode == 0, p.stderr
    inside = b / "rootfs" / str(host).lstrip("/")
    assert stat.S_ISCHR(os.lstat(inside / "null").st_mode)
    assert os.readlink(inside / "fd") == "/proc/self/fd"
    if RUNC:
        os.rename(host / "canary", host / "null")
        runc_run(tmp_path, bundle("r"))
        os.rename(host / "null", host / "canary")
        assert_intact(host)  # runc fails cleanly here (its /dev/ptmx link: ENOENT)


# -- item 12: linux.devices under the default device rules -------------------------------

@pytest.mark.parametrize("runtime", ["zoned", "runc"])
def test_linux_devices_are_made_under_deny_all_rules(cli, tmp_path, busybox, runtime):
    if runtime == "runc" and RUNC is None:
        pytest.skip("runc is not installed")
    script = ("stat -c '%n %F %t:%T %a' /dev/fuse /dev/net/tun; "
              "cat /dev/fuse 2>&1 | sed 's/.*: //'")
    b = make_bundle(tmp_path, busybox, ["sh", "-c", script], **{"linux.devices": [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
        {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200, "fileMode": 0o640}]})
    rules = json.loads((b / "config.json").read_text())["linux"]["resources"]["devices"]
    assert rules == [{"allow": False, "access": "rwm"}]  # deny all, then the defaults
    p = runc_run(tmp_path, b) if runtime == "runc" else cli("run", "--bundle", str(b), "dv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "/dev/fuse character special file a:e5 666",
        "/dev/net/tun character special file a:c8 640",
        "Operation not permitted",  # made, not usable: no rule of the config's allows it
    ]


_MKNOD_PROBE = """
import os, stat, sys
sys.stdin.readline()  # in the cgroup now
d = sys.argv[1]
for name, minor in (("fuse", 229), ("other", 230)):
    try:
        os.mknod(os.path.join(d, name), stat.S_IFCHR | 0o666, os.makedev(10, minor))
        print(name, "made")
    except OSError as e:
        print(name, e.strerror)
try:
    os.close(os.open(os.path.join(d, "fuse"), os.O_RDWR))
    print("open ok")
except OSError as e:
    print("open", e.strerror)
"""


def test_v2_device_program_allows_the_configured_mknod_only(tmp_path):
    """The cgroup v2 path: the same rule list becomes the eBPF program, attached before
    the init is moved in (as v1's devices.allow/deny are written); the init can make the
    configured node, no other, and cannot open it. Tried on a cgroup2 dir of this host."""
    from zoned import cgroups
    from zoned.runtime import container_resources

    u = next((h for h in cgroups.hierarchies() if h.fstype == "cgroup2"), None)
    if u is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    devices = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    rules = container_resources({"devices": [{"allow": False, "access": "rwm"}]},
                                devices)["devices"]
    cg = cgroups.V2Cgroup(f"/zoned-test-esc/{uuid.uuid4().hex[:12]}", u, controllers=())
    cg.create()
    try:
        cg.apply({"devices": rules})
        probe = subprocess.Popen([sys.executable, "-c", _MKNOD_PROBE, str(tmp_path)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cg.add(probe.pid)
        out, _ = probe.communicate("go\n", timeout=30)
    finally:
        cg.kill()
        cg.destroy()
        cgroups.remove_if_empty("/zoned-test-esc")
    assert out.splitlines() == ["fuse made", "other Operation not permitted",
                                "open Operation not permitted"]


# -- item 9: nothing hides /proc -------------------------------------------------------------

@pytest.mark.parametrize("dest, why", [
    ("/proc", "not of type proc"),
    ("/proc/sys", "inside /proc"),
    ("/proc/self/attr", "inside /proc"),
    ("/p", "not of type proc"),             # /p is a symlink to /proc in the rootfs
])
def test_mounts_hiding_proc_are_refused(cli, rootfs, tmp_path, dest, why):
    (rootfs / "p").symlink_to("/proc")
    d = tmp_path / "d"
    d.mkdir()
    before = host_snapshot(cli.root)
    p = cli("run", "--rm", "--rootfs", str(rootfs), "-v", f"{d}:{dest}", "--", "true")
    assert p.returncode == 125
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and dest in lines[0] and why in lines[0], p.stderr
    assert host_snapshot(cli.root) == before


def test_lxcfs_style_proc_files_may_be_covered(cli, tmp_path):
    f = tmp_path / "uptime"
    f.write_text("12345.67 0.00\n")
    p = cli("run", "--rm", "-v", f"{f}:/proc/uptime:ro", "--", "cat", "/proc/uptime")
    assert (p.returncode, p.stdout) == (0, "12345.67 0.00\n"), p.stderr


@needs_runc
def test_runc_refuses_the_same_proc_mount(tmp_path, busybox):
    d = tmp_path / "d"
    d.mkdir()
    b = make_bundle(tmp_path, busybox, ["true"])
    cfg = json.loads((b / "config.json").read_text())
    cfg["mounts"].append({"destination": "/proc", "type": "bind", "source": str(d),
                          "options": ["rbind"]})
    (b / "config.json").write_text(json.dumps(cfg))
    r = runc_run(tmp_path, b)
    assert r.returncode != 0 and "because it is not of type proc" in r.stderr


def test_user_lookup_reads_the_images_passwd_not_the_hosts(cli, rootfs, host):
    """-u NAME reads the image's etc/passwd and etc/group resolved inside the rootfs: a link
    to a host file is not read through, a FIFO in the image does not hang zoned."""
    (host / "passwd").write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink(missing_ok=True)
    (rootfs / "etc" / "passwd").symlink_to(host / "passwd")  # absolute: the host's, if followed
    p = cli("run", "--rm", "--rootfs", str(rootfs), "-u", "hostonly", "--", "id", "-u",
            timeout=20)
    assert p.returncode == 125 and "unknown user 'hostonly'" in p.stderr, (p.stdout, p.stderr)
    (rootfs / "etc" / "group").unlink(missing_ok=True)
    os.mkfifo(rootfs / "etc" / "group")
    p = cli("run", "--rm", "--rootfs", str(rootfs), "-u", "0:wheel", "--", "id", "-u",
            timeout=20)
    assert p.returncode == 125 and "unknown group 'wheel'" in p.stderr, p.stderr
    (host / "passwd").unlink()
    assert_intact(host)
