"""`zoned save`/`restore` of a VM zone and `zoned checkpoint --export`/`restore --import`
of a VM container (zoned.backends.vm_save, zoned.vm.savefile), through the real CLI and
real TCG guests. What the guest had is checked from inside it after the restore: a token
only its shell's memory holds, a counter that goes on, its uptime and its process's pid.
The attacks on the file and on FILE's path are tested with crafted files (no boot), the
ones that need a real stream with one exported here. Boots are few (~3 s each)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import ZONED, argvs, undefine_zone, zone_record

try:
    from zoned.vm.assets import kernel

    kernel()
except Exception as e:  # no guest kernel: `make setup` not run
    pytest.skip(f"no VM guest kernel: {e}", allow_module_level=True)

# The guest's process: a token only its memory holds (a shell variable), its pid, and a
# counter, all written to the guest's tmpfs five times a second.
NET, SUBNET = "vmsave-net", "10.251.77.0/24"
GUEST = ("t=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n'); i=0; "
         "while true; do i=$((i+1)); echo $$ $t $i > /tmp/c; sleep 0.2; done")


@pytest.fixture
def env(busybox, monkeypatch):
    """A state root, zone dir and file dir of this module's own (/run/zoned-vmsave-*,
    /tmp/vmsave-*), everything in them removed after."""
    root = tempfile.mkdtemp(prefix="zoned-vmsave-", dir="/run")
    files = tempfile.mkdtemp(prefix="vmsave-", dir="/tmp")
    zdir = os.path.join(files, "zones")
    os.mkdir(zdir)
    monkeypatch.setenv("ZONED_CGROUP_PARENT", "/zoned/" + os.path.basename(root))
    monkeypatch.setenv("ZONED_ZONE_DIR", zdir)
    monkeypatch.delenv("ZONED_TEST_FAULT", raising=False)

    def zoned(*args, timeout=120, check=False, fault=None):
        e = dict(os.environ, **({"ZONED_TEST_FAULT": fault} if fault else {}))
        p = subprocess.run([ZONED, "--root", root, *args], capture_output=True, text=True,
                           timeout=timeout, env=e)
        if check and p.returncode != 0:
            raise AssertionError(f"zoned {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        return p

    zoned.root, zoned.files, zoned.zdir = root, files, zdir
    yield zoned
    for f in os.listdir(zdir):
        undefine_zone(zoned, f.removesuffix(".yaml"))
    for c in json.loads(zoned("ps", "-a", "--format", "json").stdout or "[]"):
        zoned("rm", "-f", c["id"])
    if os.path.isdir(os.path.join(root, ".networks")):
        zoned("network", "rm", NET)
    zoned("gc")
    shutil.rmtree(os.path.join(root, ".networks"), ignore_errors=True)
    shutil.rmtree(os.path.join(root, ".zones"), ignore_errors=True)
    shutil.rmtree(files, ignore_errors=True)
    os.rmdir(root)
    assert _qemus(root) == []


def _qemus(root: str) -> list[int]:
    """Live QEMUs whose command line names a VM dir under this state root."""
    return [pid for pid, argv in argvs()
            if os.path.basename(argv[0]).startswith(b"qemu-system")
            and root.encode() + b"/" in b"\0".join(argv)]


def _guest(zoned, name: str) -> tuple[int, str, int, float]:
    """(pid, token, counter, uptime) from inside the guest."""
    p = zoned("exec", name, "--", "sh", "-c", "cat /tmp/c /proc/uptime", check=True)
    first, uptime = p.stdout.splitlines()
    pid, token, count = first.split()
    return int(pid), token, int(count), float(uptime.split()[0])


def _wait_guest(zoned, name: str, timeout: float = 60) -> tuple[int, str, int, float]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _guest(zoned, name)
        except (AssertionError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _state(zoned, name: str) -> str:
    rows = json.loads(zoned("list", "--format", "json", check=True).stdout)
    return next(r["state"] for r in rows if r["name"] == name)


def _define(zoned, name: str, extra: str = "") -> None:
    path = os.path.join(zoned.files, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\nimage: busybox\nbackend: vm\nmemory: 160\n"
                f"command: [sh, -c, {json.dumps(GUEST)}]\non_crash: restart\n{extra}")
    zoned("define", path, check=True)


def _link(zoned, name: str) -> dict:
    st = json.loads(zoned("inspect", name, check=True).stdout)
    st = st[0] if isinstance(st, list) else st
    return (st.get("state") or st)["zoned"]["network"]["networks"][0]


def _names(zoned) -> list[str]:
    return [c["id"] for c in json.loads(zoned("ps", "-a", "--format", "json").stdout)]


def _leftovers(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".part"))


# -- the defined zone --------------------------------------------------------------------
def test_save_and_restore_a_vm_zone_keeps_its_memory_and_process(env):
    zoned = env
    _define(zoned, "vmsave-z")
    zoned("start", "vmsave-z", check=True)
    pid, token, count, uptime = _wait_guest(zoned, "vmsave-z")
    time.sleep(0.5)
    image = os.path.join(zoned.files, "z.save")
    p = zoned("save", "vmsave-z", image, check=True)
    assert "saved to" in p.stdout and "MiB" in p.stdout
    assert os.stat(image).st_mode & 0o777 == 0o600
    assert _leftovers(zoned.files) == []
    assert _qemus(zoned.root) == [] and _state(zoned, "vmsave-z") == "shutoff"
    time.sleep(1)  # saved: stopped for good, not restarted by its policy
    assert _qemus(zoned.root) == [] and _state(zoned, "vmsave-z") == "shutoff"

    p = zoned("restore", image, check=True)
    assert "zone vmsave-z restored" in p.stdout
    pid2, token2, count2, uptime2 = _wait_guest(zoned, "vmsave-z")
    assert (pid2, token2) == (pid, token)  # the same process, its memory intact
    assert count2 > count and uptime2 > uptime  # going on from where it was, no reboot
    time.sleep(0.6)
    assert _guest(zoned, "vmsave-z")[2] > count2  # and it runs

    # The restored VM is the monitor's: a crash restarts it by its policy (a fresh boot).
    [qemu] = _qemus(zoned.root)
    os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while zone_record(zoned.root, "vmsave-z").get("restarts", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pid3, token3, _, uptime3 = _wait_guest(zoned, "vmsave-z")
    assert token3 != token and uptime3 < uptime2

    # Restoring over a running zone, or a file of a zone defined otherwise now: refused.
    p = zoned("restore", image)
    assert p.returncode == 125 and "running" in p.stderr
    zoned("destroy", "vmsave-z", check=True)
    _define(zoned, "vmsave-z", "vcpus: 2\n")
    p = zoned("restore", image)
    assert p.returncode == 125 and "vcpus is now 2, saved with 1" in p.stderr, p.stderr
    assert _qemus(zoned.root) == []

    # Where the zone is not defined (undefined since; another host), the file defines it:
    # as it was saved (one vCPU, not two), and the guest goes on.
    zoned("undefine", "vmsave-z", check=True)
    p = zoned("restore", image, check=True)
    assert "zone vmsave-z defined from the file and restored" in p.stdout, p.stdout
    assert (_wait_guest(zoned, "vmsave-z")[:2]) == (pid, token)
    with open(os.path.join(zoned.zdir, "vmsave-z.yaml")) as f:
        assert "vcpus" not in f.read()
    zoned("destroy", "vmsave-z", check=True)


# -- the container: checkpoint --export / restore --import, and a damaged stream ---------
def _http(ip: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}/index.html", timeout=10) as r:
        return r.read().decode()


def test_checkpoint_export_and_import_of_a_vm_container(env):
    """On a network: the restored guest has its address and MAC, and serves from them."""
    zoned = env
    zoned("network", "create", NET, "--subnet", SUBNET, check=True)
    zoned("run", "-d", "--name", "vmsave-c", "--backend", "vm", "--memory", "160m",
          "--network", NET, "--", "sh", "-c",
          "echo served > /tmp/index.html; httpd -p 80 -h /tmp; " + GUEST, check=True)
    pid, token, count, _ = _wait_guest(zoned, "vmsave-c")
    link = _link(zoned, "vmsave-c")
    assert _http(link["ip"]) == "served\n"
    # FILE's path: a directory others can write, or another user's symlink on the way,
    # is refused before the guest is touched.
    other = os.path.join(zoned.files, "open")
    os.mkdir(other)
    os.chmod(other, 0o777)
    p = zoned("checkpoint", "--export", f"{other}/x.save", "vmsave-c")
    assert p.returncode == 125 and "writable by others" in p.stderr, p.stderr
    assert os.listdir(other) == []
    theirs = os.path.join(zoned.files, "theirs")
    os.symlink(zoned.files, theirs)
    os.lchown(theirs, 12345, 12345)
    p = zoned("checkpoint", "--export", f"{theirs}/x.save", "vmsave-c")
    assert p.returncode == 125 and "symlink of uid 12345" in p.stderr, p.stderr
    p = zoned("checkpoint", "--dir", zoned.files, "vmsave-c")
    assert p.returncode == 125 and "--export FILE" in p.stderr
    for where, why in ((f"{zoned.files}/none/x.save", "no such directory"),
                       (other, "a directory")):
        p = zoned("checkpoint", "--export", where, "vmsave-c")
        assert p.returncode == 125 and why in p.stderr, p.stderr
    # A symlink at FILE itself is replaced by the file, never written through.
    victim = os.path.join(zoned.files, "victim")
    with open(victim, "w") as f:
        f.write("precious")
    kept = os.path.join(zoned.files, "kept.save")
    os.symlink(victim, kept)
    zoned("checkpoint", "--leave-running", "--export", kept, "vmsave-c", check=True)
    assert not os.path.islink(kept) and open(victim).read() == "precious"
    assert _guest(zoned, "vmsave-c")[2] > count  # --leave-running: it runs on
    image = os.path.join(zoned.files, "c.save")
    zoned("checkpoint", "--export", image, "vmsave-c", check=True)
    assert json.loads(zoned("ps", "-a", "--format", "json").stdout) == []
    assert _qemus(zoned.root) == []

    # One byte of the stream changed: QEMU would load it; the digest does not match, and
    # the VM goes before its guest ever ran.
    bad = os.path.join(zoned.files, "bad.save")
    shutil.copy(image, bad)
    with open(bad, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    p = zoned("restore", "--import", bad, "--name", "vmsave-bad")
    assert p.returncode == 125 and "SHA-256" in p.stderr, p.stderr
    assert json.loads(zoned("ps", "-a", "--format", "json").stdout) == []
    assert _qemus(zoned.root) == []

    p = zoned("restore", "--import", image, check=True)
    assert p.stdout.strip() == "vmsave-c"
    pid2, token2, count2, _ = _wait_guest(zoned, "vmsave-c")
    assert (pid2, token2) == (pid, token) and count2 > count
    again = _link(zoned, "vmsave-c")
    assert (again["ip"], again["mac"]) == (link["ip"], link["mac"])
    assert _http(link["ip"]) == "served\n"  # its httpd, from before the save
    # The copy kept with --leave-running cannot come back beside it: its address is taken.
    p = zoned("restore", "--import", kept, "--name", "vmsave-c2")
    assert p.returncode == 125 and f"{link['ip']} is taken" in p.stderr, p.stderr
    assert list(_names(zoned)) == ["vmsave-c"] and len(_qemus(zoned.root)) == 1
    # A zone's file is not a container's, nor the reverse.
    p = zoned("restore", image)
    assert p.returncode == 125 and "restore --import" in p.stderr


# -- gc finishes what a killed zoned left ------------------------------------------------
def test_gc_finishes_or_rolls_back_a_save_and_a_restore_that_died(env):
    zoned = env
    _define(zoned, "vmsave-g")
    zoned("start", "vmsave-g", check=True)
    pid, token, count, _ = _wait_guest(zoned, "vmsave-g")
    image = os.path.join(zoned.files, "g.save")

    # Killed mid-stream: a half-written temp file, a stopped guest. gc removes the file
    # and the guest runs on, under its policy again.
    p = zoned("save", "vmsave-g", image, fault="vmsave:streaming=kill")
    assert p.returncode == -signal.SIGKILL
    assert len(_leftovers(zoned.files)) == 1 and not os.path.exists(image)
    p = zoned("gc", check=True)
    assert "save that died" in p.stdout, p.stdout
    assert _leftovers(zoned.files) == [] and not os.path.exists(image)
    n = _guest(zoned, "vmsave-g")[2]
    time.sleep(0.6)
    assert _guest(zoned, "vmsave-g")[2] > n
    assert "stop" not in zone_record(zoned.root, "vmsave-g")

    # Killed once the file was complete, before its rename and the VM's removal: gc
    # finishes the save, and the file restores.
    p = zoned("save", "vmsave-g", image, fault="vmsave:complete=kill")
    assert p.returncode == -signal.SIGKILL and not os.path.exists(image)
    p = zoned("gc", check=True)
    assert "once complete" in p.stdout, p.stdout
    assert os.path.isfile(image) and _leftovers(zoned.files) == []
    deadline = time.monotonic() + 30
    while _qemus(zoned.root) or _state(zoned, "vmsave-g") != "shutoff":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    zoned("restore", image, check=True)
    assert _wait_guest(zoned, "vmsave-g")[:2] == (pid, token)


def test_killed_qemu_and_killed_restore_leave_nothing_for_long(env):
    zoned = env
    zoned("run", "-d", "--name", "vmsave-k", "--backend", "vm", "--memory", "160m", "--",
          "sh", "-c", GUEST, check=True)
    _wait_guest(zoned, "vmsave-k")
    image = os.path.join(zoned.files, "k.save")
    # QEMU killed while the stream is being written: one line, exit 125, nothing left.
    save = subprocess.Popen([ZONED, "--root", zoned.root, "checkpoint", "--export", image,
                             "vmsave-k"], text=True, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL,
                            env=dict(os.environ, ZONED_TEST_FAULT="vmsave:streaming=3"))
    deadline = time.monotonic() + 30
    while not _leftovers(zoned.files):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [qemu] = _qemus(zoned.root)
    os.kill(qemu, signal.SIGKILL)
    err = save.communicate(timeout=60)[1]
    assert save.returncode == 125 and len(err.strip().splitlines()) == 1, err
    assert _leftovers(zoned.files) == [] and not os.path.exists(image)
    zoned("rm", "-f", "vmsave-k", check=True)

    # A restore killed while QEMU loads the stream: a paused VM that gc removes.
    zoned("run", "-d", "--name", "vmsave-k", "--backend", "vm", "--memory", "160m", "--",
          "sh", "-c", GUEST, check=True)
    pid, token, _, _ = _wait_guest(zoned, "vmsave-k")
    zoned("checkpoint", "--export", image, "vmsave-k", check=True)
    p = zoned("restore", "--import", image, fault="vmrestore:streaming=kill")
    assert p.returncode == -signal.SIGKILL  # (QEMU ends itself at the stream's EOF)
    assert [c["id"] for c in json.loads(zoned("ps", "-a", "--format", "json").stdout)] \
        == ["vmsave-k"]
    p = zoned("gc", check=True)
    assert "container vmsave-k: migration or restore that never committed" in p.stdout
    assert _qemus(zoned.root) == []
    assert json.loads(zoned("ps", "-a", "--format", "json").stdout) == []
    zoned("restore", "--import", image, check=True)
    assert _wait_guest(zoned, "vmsave-k")[:2] == (pid, token)


def _streaming(directory: str) -> bool:
    """Whether a save's temp file there holds some of the stream (past its header)."""
    import struct

    for name in _leftovers(directory):
        try:
            with open(os.path.join(directory, name), "rb") as f:
                prefix = f.read(64)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            continue
        if len(prefix) == 64 and size > 64 + struct.unpack(">I", prefix[20:24])[0]:
            return True
    return False


def test_a_wedged_qemu_gives_the_save_up_and_gc_resumes_its_guest(env):
    """QEMU stopped (SIGSTOP) while it streams a save: the save gives up once the stream
    has stood still for the stall limit (short here), says so in one line (exit 125) and
    leaves no file, where it had waited for ever under the zone's lock; the guest, which
    QEMU cannot resume while stopped, is resumed by `zoned gc` once QEMU runs again, and
    goes on where it was."""
    zoned = env
    zoned("run", "-d", "--name", "vmsave-w", "--backend", "vm", "--memory", "160m", "--",
          "sh", "-c", GUEST, check=True)
    pid, token, _, _ = _wait_guest(zoned, "vmsave-w")
    image = os.path.join(zoned.files, "w.save")
    save = subprocess.Popen([ZONED, "--root", zoned.root, "checkpoint", "--export", image,
                             "vmsave-w"], text=True, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL,
                            env=dict(os.environ, ZONED_TEST_FAULT="vmsave:streaming=3",
                                     ZONED_TEST_STREAM_STALL="2"))
    deadline = time.monotonic() + 30
    while not _streaming(zoned.files):  # (then the save sleeps 3 s at its first chunk)
        assert time.monotonic() < deadline and save.poll() is None
        time.sleep(0.02)
    [qemu] = _qemus(zoned.root)
    os.kill(qemu, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        err = save.communicate(timeout=90)[1]
        assert save.returncode == 125 and len(err.strip().splitlines()) == 1, err
        assert "for 2 s (wedged?)" in err and "zoned gc" in err, err
        assert time.monotonic() - t0 < 60  # (the stall, then QMP's own limits)
        assert _leftovers(zoned.files) == [] and not os.path.exists(image)
        assert "resumed once it does" in zoned("gc", check=True).stdout
    finally:
        os.kill(qemu, signal.SIGCONT)
    assert "its guest runs on" in zoned("gc", check=True).stdout
    n = _wait_guest(zoned, "vmsave-w")[:3]
    assert n[:2] == (pid, token)
    time.sleep(0.6)
    assert _guest(zoned, "vmsave-w")[2] > n[2]  # it runs
    zoned("rm", "-f", "vmsave-w", check=True)

# -- attacks on the file restore reads ---------------------------------------------------
def _config(**changes) -> dict:
    """A VM's config as save writes it: zoned's own annotations left out."""
    from zoned.oci.spec import RunOptions, zoned_own_annotations
    from zoned.runconfig import build_config

    cfg = build_config(RunOptions(image="busybox", args=["sh"], memory="160m"))
    cfg["annotations"] = {k: v for k, v in cfg.get("annotations", {}).items()
                          if k not in zoned_own_annotations()}
    cfg.update(changes)
    return cfg


def _header(**changes) -> dict:
    from zoned.images.store import ImageStore

    h = {"kind": "container", "id": "vmsave-evil", "config": _config(), "accel": "tcg",
         "image": {"name": "busybox", "digest": ImageStore().digest("busybox")},
         "log": True, "autoremove": False, "saved": time.time()}
    h.update(changes)
    return h


def _craft(path: str, header: dict | bytes | None = None, stream: bytes = b"\0" * 4096, *,
           length: int | None = None, digest: bytes | None = None, version: int = 1,
           mode: int = 0o600) -> str:
    """A saved-VM file as an attacker would write it (zoned.vm.savefile's layout)."""
    import hashlib

    from zoned.vm.savefile import MAGIC, PREFIX

    raw = header if isinstance(header, bytes) else json.dumps(header or _header()).encode()
    with open(path, "wb") as f:
        f.write(PREFIX.pack(MAGIC, version, len(raw), len(stream) if length is None else length,
                            hashlib.sha256(stream).digest() if digest is None else digest))
        f.write(raw + stream)
    os.chmod(path, mode)
    return path


def test_restore_refuses_hostile_files_and_leaves_nothing(env):
    zoned = env
    d = zoned.files
    net = {"mode": "tap", "networks": [{"network": "../../../etc/evil", "ifname": "eth0",
                                        "host_if": "eth0", "ip": "10.99.0.2",
                                        "mac": "02:00:00:00:00:02"}]}
    big = _config()
    big["linux"]["resources"]["memory"]["limit"] = 1 << 50
    bind = _config(mounts=[{"destination": "/host", "source": "/", "type": "bind",
                            "options": ["rbind", "rw"]}])
    other = os.path.join(d, "open")
    os.mkdir(other)
    os.chmod(other, 0o777)  # anyone may swap files in it
    cases = {
        "not ours": (_craft(f"{d}/uid"), "belongs to uid 12345"),
        "group-writable": (_craft(f"{d}/gw", mode=0o620), "writable by others"),
        "in a dir others write": (_craft(f"{other}/f"), "writable by others"),
        "truncated": (_craft(f"{d}/short", length=8192), "truncated"),
        "unfinished": (_craft(f"{d}/unfinished", length=0), "unfinished save"),
        "other format": (_craft(f"{d}/v2", version=2), "format 2 is not 1"),
        "huge header": (f"{d}/hugeh", "header of"),
        "not json": (_craft(f"{d}/nj", b"{nope"), "header is not JSON"),
        "unknown field": (_craft(f"{d}/uf", _header(hooks={})), "unknown field 'hooks'"),
        "bad id": (_craft(f"{d}/id", _header(id="../../etc/passwd")), "id"),
        "host path": (_craft(f"{d}/bind", _header(config=bind)), "names no host path"),
        "huge memory": (_craft(f"{d}/mem", _header(config=big)), "more than this host has"),
        "network name": (_craft(f"{d}/net", _header(network=net)), "network"),
        "other image": (_craft(f"{d}/img", _header(image={"name": "busybox", "digest":
                                                          "sha256:" + "0" * 64})),
                        "image 'busybox' here is not"),
        "no such image": (_craft(f"{d}/noimg", _header(image={"name": "vmsave-none",
                                                              "digest": "sha256:" + "1" * 64})),
                          "image 'vmsave-none'"),
        # the third audit's: a hook ran on the host as root at the restored VM's removal,
        # an annotation named another zone's volume for it to remove; a digest carried
        # escape sequences to the terminal; no network, a deep header: internal errors
        "hooks": (_craft(f"{d}/hooks", _header(config=_config(hooks={"poststop": [
            {"path": "/bin/sh", "args": ["sh", "-c", f"id > {d}/PWNED"]}]}))),
            "config has hooks"),
        "zoned's annotation": (_craft(f"{d}/ann", _header(config=_config(annotations={
            "org.zoned.volumes.anonymous": "victim"}))), "is zoned's own"),
        "digest text": (_craft(f"{d}/esc", _header(image={"name": "busybox", "digest":
                                                          "sha256:\x1b[31mred"})),
                        "a sha256: digest"),
        "no network": (_craft(f"{d}/nonet", _header(network={"mode": "tap",
                                                              "networks": []})),
                       "names no network"),
        "deep header": (_craft(f"{d}/deep", b"[" * 200000 + b"]" * 200000),
                        "header is not JSON"),
        "a zone's file": (_craft(f"{d}/zone", _header(kind="zone")), "defined zone's"),
        "huge stream": (f"{d}/hugestream", "stream of"),
        "garbage stream": (_craft(f"{d}/garbage", stream=os.urandom(1 << 16)), "QEMU"),
    }
    os.chown(f"{d}/uid", 12345, 12345)
    from zoned.vm.savefile import MAGIC, PREFIX

    with open(f"{d}/hugeh", "wb") as f:
        f.write(PREFIX.pack(MAGIC, 1, 2 << 20, 1, b"\1" * 32))
    os.chmod(f"{d}/hugeh", 0o600)
    _craft(f"{d}/hugestream", stream=b"", length=1 << 40, digest=b"\1" * 32)
    os.truncate(f"{d}/hugestream", os.stat(f"{d}/hugestream").st_size + (1 << 40))  # sparse
    os.symlink(f"{d}/unfinished", f"{d}/link")
    cases["symlink"] = (f"{d}/link", "a symlink")
    os.mkfifo(f"{d}/fifo", 0o600)
    cases["fifo"] = (f"{d}/fifo", "not a regular file")
    for what, (path, expected) in cases.items():
        p = zoned("restore", "--import", path, timeout=60)
        assert p.returncode == 125 and expected in p.stderr, (what, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (what, p.stderr)
        assert json.loads(zoned("ps", "-a", "--format", "json").stdout) == [], what
        assert _qemus(zoned.root) == [], what
    # and `zoned restore FILE`: the same checks, then the zone must be defined here
    p = zoned("restore", _craft(f"{d}/undefined", _header(kind="zone")))
    assert p.returncode == 125 and "is not defined" in p.stderr
    p = zoned("restore", f"{d}/bind")
    assert p.returncode == 125 and "names no host path" in p.stderr
    assert not os.path.exists("/etc/evil") and os.listdir(zoned.root) == []
    assert not os.path.exists(f"{d}/PWNED")
