"""Helpers shared by tests/test_oci_clients.py and bench/oci_clients.py: drive real OCI
clients (podman + conmon, containerd + ctr + the io.containerd.runc.v2 shim) with runc or
zoned as the runtime, each in private state under a temp dir, and clean up after them.

Plain stdlib (no pytest), so the benchmark can use it too. Everything made here is named
`oci-t-...`: images, containers, containerd namespaces (and so their cgroups).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from conftest import argvs
from zoned.bench.leftovers import cgroup_dirs_named
from zoned.bench.procfs import cgroup_mounts, proc_cgroups

REPO = Path(__file__).resolve().parent.parent
ZONED = str(Path(sys.executable).parent / "zoned")  # the venv's, like tests/conftest.py
if not os.path.exists(ZONED):
    ZONED = str(REPO / ".venv" / "bin" / "zoned")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CGROUP_ROOT = "/sys/fs/cgroup"
ZONED_STATE_ROOT = os.environ.get("ZONED_ROOT") or "/run/zoned"  # podman passes no --root
IMAGE = "oci-t-busybox"
CTR_REF = "docker.io/library/oci-t-busybox:latest"

# podman's default rlimits cannot be set without CAP_SYS_RESOURCE on this host (runc fails
# as well), so the private containers.conf sets these; netns "none" avoids network backends.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:20000", "nproc=1024:1024"]
log_driver = "k8s-file"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
# zoned writes runc-style JSON error logs: podman then passes --log/--log-format json and
# reports the runtime's own error message (README: "Using zoned from podman")
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "zoned"]
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""


def runtime_path(name: str) -> str:
    """'runc' or 'zoned' -> the binary."""
    return {"runc": RUNC, "zoned": ZONED}[name]


def have(*tools: str) -> str | None:
    """None if every tool is on PATH, else the first missing one."""
    for t in tools:
        if shutil.which(t) is None:
            return t
    return None


# -- images ---------------------------------------------------------------------------------

def busybox_rootfs_tar(dest: str | Path) -> Path:
    """zoned's local busybox image (built if missing) as a plain rootfs tarball."""
    from zoned.images.errors import ImageNotFound
    from zoned.images.store import ImageStore

    store = ImageStore()
    try:
        store.get("busybox")
    except ImageNotFound:
        store.build("busybox")
    return Path(store.export_rootfs_tar("busybox", dest))


def oci_layout_tar(rootfs_tar: str | Path, dest: str | Path, ref: str = CTR_REF) -> Path:
    """An OCI image layout (oci-layout, index.json, blobs: config, manifest, one
    uncompressed layer) in one tar, as `ctr images import` takes it. No registry, no umoci."""
    layer = Path(rootfs_tar).read_bytes()
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else os.uname().machine,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "tests/oci_helpers.py"}],
    }
    config_desc = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest).encode(),
                         "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": ref,
                                    "io.containerd.image.name": ref}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    dest = Path(dest)
    with tarfile.open(dest, "w") as t:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, int(time.time())
            t.addfile(ti, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest, data)
    return dest


# -- argv-logging runtime wrapper -------------------------------------------------------------

WRAPPER = """\
#!/bin/sh
# Logs how the client called the runtime, then execs the real one ({target}).
exec 9>>{log}
fds=$(for f in /proc/$$/fd/*; do n=${{f##*/}}; [ "$n" = 9 ] || echo "fd: $n -> $(readlink "$f")"; done)
{{
  parent=$(tr '\\0' ' ' < /proc/$PPID/cmdline | cut -c1-200)
  echo "=== $(date +%s.%N) pid=$$ ppid=$PPID parent=$parent"
  for a in "$@"; do printf 'arg: %s\\n' "$a"; done
  echo "cwd: $(pwd)"
  env | sort | sed 's/^/env: /'
  echo "$fds"
}} >&9 2>&1
exec 9>&-
exec {target} "$@"
"""


def write_wrapper(path: str | Path, target: str, log: str | Path) -> str:
    """A shell script at `path` that appends its argv, cwd, env and open fds to `log`, then
    execs `target`. Name it like the runtime it stands for (podman decides what a runtime
    supports by its base name: runc gets --log/--log-format json, others do not)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(WRAPPER.format(target=shlex.quote(target), log=shlex.quote(str(log))))
    path.chmod(0o755)
    return str(path)


def read_wrapper_log(log: str | Path) -> list[dict]:
    """The calls a wrapper logged: [{"argv": [...], "env": {...}, "fds": {...}, "parent": str}]."""
    calls: list[dict] = []
    try:
        text = Path(log).read_text()
    except FileNotFoundError:
        return calls
    for line in text.splitlines():
        if line.startswith("=== "):
            parent = line.split("parent=", 1)[1] if "parent=" in line else ""
            calls.append({"argv": [], "env": {}, "fds": {}, "parent": parent, "cwd": None})
        elif not calls:
            continue
        elif line.startswith("arg: "):
            calls[-1]["argv"].append(line[5:])
        elif line.startswith("env: "):
            k, _, v = line[5:].partition("=")
            calls[-1]["env"][k] = v
        elif line.startswith("fd: "):
            k, _, v = line[4:].partition(" -> ")
            calls[-1]["fds"][k] = v
        elif line.startswith("cwd: "):
            calls[-1]["cwd"] = line[5:]
    return calls


def oci_command(argv: list[str]) -> str | None:
    """The OCI subcommand in a runtime argv (global options skipped)."""
    with_value = {"--root", "--log", "--log-format", "--criu", "--rootless"}
    it = iter(argv)
    for a in it:
        if a in with_value:
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


# -- host inspection (leftovers) ----------------------------------------------------------------

def cgroup_dirs(needle: str, max_depth: int = 4) -> list[str]:
    """Cgroup directories (any v1 hierarchy or cgroup2) whose name contains `needle`."""
    return cgroup_dirs_named(needle, max_depth, anywhere=True)


def remove_cgroup_tree(path: str) -> None:
    """rmdir a cgroup directory and its children, deepest first (they must be empty)."""
    for d, _subdirs, _ in sorted(os.walk(path, topdown=False), key=lambda x: -len(x[0])):
        try:
            os.rmdir(d)
        except OSError:
            pass


def mounts_with(needle: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.strip() for ln in f if needle in ln]


def unmount_under(path: str) -> None:
    """Lazily unmount every mount point at or below `path`, deepest first."""
    points = []
    for ln in mounts_with(path):
        mp = ln.split()[4].encode().decode("unicode_escape")
        if mp == path or mp.startswith(path.rstrip("/") + "/"):
            points.append(mp)
    for mp in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def processes_with(needle: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of processes whose command line contains `needle` (not us)."""
    me = os.getpid()
    out = []
    for pid, argv in argvs():
        cmd = b" ".join(argv).decode(errors="replace").strip()
        if pid != me and needle in cmd:
            out.append((pid, cmd))
    return out


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def cgroup_of(pid: int, controller: str) -> str | None:
    """The host path of `pid`'s cgroup in a v1 controller hierarchy (or cgroup2 for '')."""
    return proc_cgroups(pid, cgroup_mounts()).get(controller)


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def in_tty(cmd: list[str]) -> list[str]:
    """Run cmd with a pty as its stdio (util-linux script; -e keeps the exit status)."""
    return ["script", "-qec", shlex.join(cmd), "/dev/null"]


# -- podman -----------------------------------------------------------------------------------

class Podman:
    """podman (+ conmon) with private storage, run root, tmp dir, containers.conf and
    storage.conf under `base`; cgroupfs cgroup manager, file events, file locks, no network.
    The runtime is chosen per command: 'runc' (podman's own lookup) or a path."""

    def __init__(self, base: str | Path):
        self.base = Path(base)
        self.root = self.base / "root"
        self.runroot = self.base / "runroot"
        self.tmpdir = self.base / "tmp"
        for d in (self.root, self.runroot, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        (self.base / "containers.conf").write_text(CONTAINERS_CONF)
        (self.base / "storage.conf").write_text(
            STORAGE_CONF.format(root=self.root, runroot=self.runroot))
        self.env = {**os.environ,
                    "CONTAINERS_CONF": str(self.base / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf")}
        self.env.pop("CONTAINER_HOST", None)
        self.ids: set[str] = set()  # every container id seen, for teardown
        self.made_here = podman_made_paths()

    def argv(self, runtime: str | None, *args: str) -> list[str]:
        cmd = ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
               "--tmpdir", str(self.tmpdir), "--cgroup-manager", "cgroupfs",
               "--events-backend", "file"]
        if runtime:
            cmd += ["--runtime", runtime]
        return cmd + list(args)

    def __call__(self, runtime: str | None, *args: str, input: str | None = None,
                 timeout: float = 120, tty: bool = False,
                 check: bool = False) -> subprocess.CompletedProcess:
        cmd = self.argv(runtime, *args)
        if tty:
            cmd = in_tty(cmd)
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env,
                           timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        p.cmd = cmd
        if check and p.returncode != 0:
            raise AssertionError(describe(p))
        return p

    def import_image(self, rootfs_tar: str | Path, name: str = IMAGE) -> None:
        self(None, "import", str(rootfs_tar), name, check=True)

    def container_ids(self) -> list[str]:
        """Every container in this storage (podman's view), also half-made ones."""
        p = self(None, "ps", "-a", "--no-trunc", "--format", "{{.ID}}")
        return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]

    def cleanup(self) -> list[str]:
        """Remove containers, images and storage; returns what had to be forced."""
        problems: list[str] = []
        try:
            self.ids.update(self.container_ids())
            p = self(None, "rm", "-a", "-f", "-t", "0", timeout=180)
            if p.returncode != 0:
                problems.append(f"podman rm -af: {p.stderr.strip()}")
            self(None, "rmi", "-a", "-f", timeout=120)
        except Exception as e:  # noqa: BLE001 - go on removing what can be removed
            problems.append(f"podman cleanup: {e}")
        for cid in self.ids:  # runtime state a failed podman command may have left
            for root, rt in ((ZONED_STATE_ROOT, ZONED), ("/run/runc", RUNC)):
                if os.path.exists(os.path.join(root, cid)):
                    problems.append(f"runtime state left: {root}/{cid}")
                    subprocess.run([rt, "--root", root, "delete", "--force", cid],
                                   capture_output=True, timeout=60)
                    shutil.rmtree(os.path.join(root, cid), ignore_errors=True)
            for pid, cmd in processes_with(cid):
                problems.append(f"process left: {pid} {cmd[:120]}")
                kill_pids([pid])
            for d in cgroup_dirs(cid):
                problems.append(f"cgroup left: {d}")
                kill_pids([int(x) for x in (read(os.path.join(d, "cgroup.procs")) or "").split()])
                time.sleep(0.1)
                remove_cgroup_tree(d)
        unmount_under(str(self.base))
        shutil.rmtree(self.base, ignore_errors=True)
        remove_made_paths(self.made_here)
        return problems


def podman_made_paths() -> list[str]:
    """What podman with runc makes on the host on first use and never removes, that is not
    there yet: its cgroupfs manager's <hierarchy>/libpod_parent (conmon's cgroups below),
    and runc's default root /run/runc. For remove_made_paths once the test is done."""
    return [p for p in [os.path.join(CGROUP_ROOT, h, "libpod_parent")
                        for h in os.listdir(CGROUP_ROOT)] + ["/run/runc"]
            if not os.path.exists(p)]


def remove_made_paths(paths: list[str]) -> None:
    """rmdir what podman_made_paths listed, only while empty (cgroups: no process in them)."""
    for path in paths:
        if path.startswith(CGROUP_ROOT):
            remove_cgroup_tree(path)
        else:
            try:
                os.rmdir(path)
            except OSError:
                pass


def describe(p: subprocess.CompletedProcess) -> str:
    cmd = getattr(p, "cmd", p.args)
    return (f"$ {shlex.join(cmd) if isinstance(cmd, list) else cmd}\n-> exit {p.returncode}\n"
            f"stdout: {p.stdout!r}\nstderr: {p.stderr!r}")


# -- containerd ---------------------------------------------------------------------------------

CONTAINERD_CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = "{base}/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


class Containerd:
    """A private containerd (root, state, sockets, opt dir under a temp dir; no CRI), driven
    with ctr in its own namespace `oci-t-<random>`. The runc v2 shim is pointed at a runtime
    with ctr's --runc-binary, its state with --runc-root, the IO fifos with --fifo-dir."""

    def __init__(self, base: str | Path | None = None):
        # Short paths: unix socket addresses must stay under 108 bytes.
        self.base = Path(base or tempfile.mkdtemp(prefix="oci-t-ctd-", dir="/tmp"))
        self.address = str(self.base / "containerd.sock")
        self.namespace = "oci-t-" + uuid.uuid4().hex[:8]
        self.runc_root = str(self.base / "rt")
        self.fifo_dir = str(self.base / "fifo")
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "containerd.log"
        self.run_containerd_existed = os.path.exists("/run/containerd")

    def start(self, timeout: float = 30) -> None:
        (self.base / "config.toml").write_text(CONTAINERD_CONFIG.format(base=self.base))
        for d in (self.runc_root, self.fifo_dir):
            os.makedirs(d, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.base / "config.toml")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.address):
                p = self.ctr("version", timeout=10)
                if p.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not come up:\n{self.log()}")
            time.sleep(0.1)

    def log(self, tail: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def ctr(self, *args: str, input: str | None = None, timeout: float = 120,
            tty: bool = False, check: bool = False) -> subprocess.CompletedProcess:
        cmd = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        if tty:
            cmd = in_tty(cmd)
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        p.cmd = cmd
        if check and p.returncode != 0:
            raise AssertionError(describe(p) + "\ncontainerd log:\n" + self.log())
        return p

    def runtime_flags(self, runtime_binary: str) -> list[str]:
        return ["--runc-binary", runtime_binary, "--runc-root", self.runc_root,
                "--fifo-dir", self.fifo_dir]

    def import_image(self, layout_tar: str | Path) -> None:
        self.ctr("images", "import", str(layout_tar), check=True)

    def remove_container(self, cid: str) -> None:
        self.ctr("task", "kill", "-s", "KILL", cid, timeout=30)
        wait_for(lambda: "RUNNING" not in self.ctr("task", "ls").stdout.split(cid)[-1][:60],
                 timeout=5)
        self.ctr("task", "delete", "--force", cid, timeout=30)
        self.ctr("container", "delete", cid, timeout=30)

    def stop(self) -> list[str]:
        """Remove every container, image and the namespace, stop containerd, and remove what
        it left on the host; returns what had to be forced."""
        problems: list[str] = []
        if self.proc and self.proc.poll() is None:
            try:
                for ln in self.ctr("container", "ls", "-q").stdout.split():
                    problems.append(f"container left: {ln}")
                    self.remove_container(ln)
                self.ctr("images", "rm", "--sync", CTR_REF)
                self.ctr("content", "prune", "references")  # harmless if unsupported
                p = self.ctr("namespaces", "rm", self.namespace)
                if p.returncode != 0:
                    problems.append(f"namespace rm: {p.stderr.strip()}")
            except Exception as e:  # noqa: BLE001
                problems.append(f"containerd cleanup: {e}")
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append("containerd ignored SIGTERM")
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Shims of this containerd exit once their container is deleted: give them a moment.
        wait_for(lambda: not processes_with(self.address), timeout=5)
        for pid, cmd in processes_with(self.address):
            problems.append(f"process left: {pid} {cmd[:120]}")
            kill_pids([pid])
        for d in cgroup_dirs(self.namespace, max_depth=1):
            for child in os.listdir(d) if os.path.isdir(d) else []:
                if os.path.isdir(os.path.join(d, child)):
                    problems.append(f"cgroup left: {d}/{child}")
                    kill_pids([int(x) for x in
                               (read(os.path.join(d, child, "cgroup.procs")) or "").split()])
            time.sleep(0.05)
            remove_cgroup_tree(d)
        unmount_under(str(self.base))
        shutil.rmtree(self.base, ignore_errors=True)
        if not self.run_containerd_existed:  # the shim's sockets dir is fixed: /run/containerd/s
            def rmdirs() -> bool:
                for d in ("/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc",
                          "/run/containerd"):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
                return not os.path.exists("/run/containerd")

            wait_for(rmdirs, timeout=5, interval=0.1)
        return problems
