"""Checkpoint and restore of a zone with CRIU (>= 4; scripts/install-criu.sh), on one host
or, with zoned.migrate, between hosts.

zoned drives the `criu` CLI, not its swrk/RPC mode: zoned has no daemon and no Go-style
long-lived parent to hold an RPC socket, a dump or restore is one command here, the CLI
needs no protobuf bindings in the venv, and what lazy migration needs (--ps-socket to hand
CRIU a socket zoned relays, --status-fd to learn when the images are complete) is there on
the command line. What runc gets from RPC notifications zoned does before or after the
command, or with an --action-script.

What CRIU needs for zoned's container model:
- The tree is the container's init (--tree PID), its pid, mount, uts, ipc and cgroup
  namespaces are dumped with it. The init is a session leader (zoned's init calls setsid).
- The network namespace is *external* (`--external net[INODE]:zoned-netns`, as runc does
  for a namespace it did not make): CRIU dumps the sockets in it, TCP ones in repair mode
  with --tcp-established, but not its interfaces. A restore makes a new namespace, plugs
  the container's veths into it with the same addresses and MACs
  (zoned.network.attach.setup_for_restore) and hands it to CRIU with --inherit-fd; then a
  gratuitous ARP tells the bridges (zoned.network.checkpoint_hooks).
- The root is an overlay mounted inside the container's own mount namespace. CRIU does not
  dump the root mount: at restore it bind-mounts --root there. So the overlay's upper layer
  is copied into DIR/upper while the tasks are still frozen (post-dump action script), and
  restore mounts a fresh overlay (the image, found by name and checked by digest, plus that
  upper) in a private mount namespace of the criu process only.
- Bind mounts from the host (volumes, and /etc/hosts etc. from the state dir) are external
  mounts: `--external mnt[DEST]:KEY` at dump, `--ext-mount-map KEY:SOURCE` at restore.
- A detached container's stdin (/dev/null) was opened on the host: an external file
  (`file[MNT:INODE]`), handed back with --inherit-fd. Its stdout/stderr are a pipe to its
  zoned-logger (zoned.logs): CRIU dumps the pipe, and restore hands it a new logger's pipe
  with --inherit-fd fd[N]:pipe:[OLD INODE] (runc does the same for its stdio pipes).
- The writable layer and the log are in the zone's data dir (zoned.storage), as are the
  checkpoints in transit: on the data root's disk, never in the state root (a tmpfs).
- Cgroups: restore makes the new container's cgroup and passes --cgroup-root; the network
  is locked with nftables.
Not supported (refused with one line, before anything is frozen): a terminal (-t), a user
namespace, --network host or container:X, a pid namespace joined by path, an OCI bundle
root, and a container that is not running.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time

from zoned.errors import ConfigError, InvalidState, ZonedError

FORMAT = 2
META = "zoned-checkpoint.json"
MIN_VERSION = (4, 0)
NETNS_KEY = "zoned-netns"
# File systems CRIU dumps and restores itself (unless bind-mounted from the host); any
# other mount but the root is external.
VIRTUAL_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs",
              "securityfs", "debugfs", "tracefs", "binfmt_misc", "fusectl", "configfs",
              "bpf", "pstore", "hugetlbfs", "autofs"}
# What a checkpoint directory holds besides criu's *.img files.
OWN_FILES = ("upper", "ctr.log", "ctr.log.1", META, "zoned-action.sh", "dump.log",
             "stats-dump")
LAZY_PIPE_SIZE = 4 << 20  # fs.pipe-max-size lazy dumps need (CRIU's page pipes)


# -- finding criu ------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def criu_version(path: str) -> tuple[int, ...] | None:
    """criu's version (asked once per process: it costs a fork and exec)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            try:
                return tuple(int(x) for x in line.split(":", 1)[1].strip().split(".")[:3])
            except ValueError:
                return None
    return None


def find_criu() -> str:
    """$ZONED_CRIU, then /usr/local/sbin/criu, then PATH; the first that is criu >= 4.
    (Debian 12's criu 3.17 at /usr/sbin fails on current kernels.) Asked once per
    process: `criu --version` costs milliseconds a migration's frozen time should not."""
    return _find_criu(os.environ.get("ZONED_CRIU", ""))


@functools.lru_cache(maxsize=None)
def _find_criu(env: str) -> str:
    candidates = [env] if env else []
    candidates.append("/usr/local/sbin/criu")
    found = shutil.which("criu")
    if found:
        candidates.append(found)
    seen = []
    for c in dict.fromkeys(candidates):
        if not os.access(c, os.X_OK):
            continue
        v = criu_version(c)
        if v is not None and v >= MIN_VERSION:
            return c
        seen.append(f"{c} ({'.'.join(map(str, v)) if v else 'unknown version'})")
    hint = "; found " + ", ".join(seen) if seen else ""
    raise ZonedError(f"checkpoint/restore needs criu >= 4 (run scripts/install-criu.sh or "
                     f"`make criu`, or set ZONED_CRIU){hint}")


def lazy_support(criu: str) -> str | None:
    """Why lazy (post-copy) restore cannot work here, or None if it can."""
    r = subprocess.run([criu, "check", "--feature", "uffd-noncoop"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return "the kernel lacks userfaultfd (criu check --feature uffd-noncoop failed)"
    return None


def ensure_pipe_size() -> None:
    """Lazy dumps keep pages in pipes CRIU sizes up to fs.pipe-max-size: raise it to 4 MiB
    if it is lower (root may write the sysctl even without CAP_SYS_RESOURCE)."""
    path = "/proc/sys/fs/pipe-max-size"
    try:
        with open(path) as f:
            if int(f.read()) >= LAZY_PIPE_SIZE:
                return
        with open(path, "w") as f:
            f.write(str(LAZY_PIPE_SIZE))
    except (OSError, ValueError) as e:
        raise ZonedError(f"lazy migration needs fs.pipe-max-size >= {LAZY_PIPE_SIZE}: "
                         f"{e}") from None


# -- helpers -----------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """pid and all its descendants (the container's processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def is_bind(mount: dict | None) -> bool:
    """Whether a config mount is a bind mount (as zoned.rootfs mounts it)."""
    if not mount:
        return False
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _external_files(pids: list[int], container_mnts: set[int], log: str | None,
                    log_pipe: int | None = None) -> list[dict]:
    """Files the container's tasks hold that live outside its mount namespace (its stdio,
    opened by zoned on the host): CRIU dumps them as external, restore passes them back.
    The pipe to the zone's logger is one too (key pipe:[INODE], restore only)."""
    files: dict[str, dict] = {}
    pipe_key = f"pipe:[{log_pipe}]" if log_pipe else None
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
                if target == pipe_key:
                    files.setdefault(pipe_key, {"key": pipe_key, "path": None,
                                                "flags": os.O_WRONLY, "log": True,
                                                "pipe": True})
                    continue
                if not target.startswith("/"):
                    continue  # pipes, sockets, anon inodes: CRIU's own business
                info = {}
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    for line in f:
                        k, _, v = line.partition(":")
                        info[k] = v.strip()
                mnt = int(info["mnt_id"])
                if mnt in container_mnts:
                    continue
                ino = os.stat(f"/proc/{p}/fd/{fd}").st_ino
            except (OSError, KeyError, ValueError):
                continue
            key = f"file[{mnt:x}:{ino:x}]"
            flags = int(info.get("flags", "0"), 8)
            files.setdefault(key, {"key": key, "path": target, "flags": flags,
                                   "log": bool(log) and target == log})
    return list(files.values())


def run_criu(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run CRIU to completion in a session of its own. A signal meant for zoned (Ctrl-C, a
    killpg of its group) must not reach CRIU, and an exception raised in zoned while CRIU
    runs must not kill it: a CRIU ended mid-dump leaves the zone frozen and its network
    locked (the nftables table CRIU-*), which no put-back would then undo."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate()
    except BaseException:
        while proc.poll() is None:  # it ends on its own; let it, then report the interrupt
            try:
                proc.wait()
            except BaseException:
                continue
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def log_tail(path: str, n: int = 6) -> str:
    """The error lines of a criu log, for a one-line message."""
    try:
        with open(path, errors="replace") as f:
            # (RLIMIT_NOFILE: criu cannot raise its own limit here; harmless, not the cause)
            lines = [ln.rstrip() for ln in f if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    except OSError:
        return ""
    return "; ".join(lines[-n:])


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def clean_dir(directory: str) -> None:
    """Make `directory` exist and hold no old checkpoint (old images would confuse criu)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".img") or name in OWN_FILES:
            p = os.path.join(directory, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def read_meta(directory: str) -> dict:
    try:
        with open(os.path.join(directory, META)) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{directory} holds no zoned checkpoint ({META} is missing)") \
            from None
    except ValueError as e:
        raise ConfigError(f"{directory}/{META} is damaged: {e}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{directory}: checkpoint format {meta.get('format')} is not "
                          f"{FORMAT}")
    return meta


# -- the dump side -----------------------------------------------------------------------
class Dump:
    """One container's dump, from the checks made before anything is frozen to the images.

    plan() only reads: every refusal happens there, while the container runs untouched.
    run() freezes and dumps; with a lazy socket it returns once the non-memory images are
    complete and CRIU serves the memory pages over that socket (finish() waits for it).
    """

    def __init__(self, rt, cid: str):
        self.rt, self.cid = rt, cid
        self.proc: subprocess.Popen | None = None

    def plan(self) -> "Dump":
        rt, cid = self.rt, self.cid
        st = rt.store.read_state(cid)
        status = rt._status(cid, st)
        if status != "running":
            raise InvalidState(f"cannot checkpoint container {cid!r}: it is {status}")
        cfg = rt.config(cid)
        linux = cfg.get("linux") or {}
        ns = {n["type"]: n.get("path") for n in linux.get("namespaces", [])}
        if cfg["process"].get("terminal"):
            raise ConfigError(f"cannot checkpoint container {cid!r}: it has a terminal (-t)")
        if "user" in ns:
            raise ConfigError(f"cannot checkpoint container {cid!r}: user namespaces are "
                              "not supported by zoned checkpoint yet")
        if "pid" not in ns or ns["pid"] or "mount" not in ns or ns["mount"]:
            raise ConfigError(f"cannot checkpoint container {cid!r}: it needs its own pid "
                              "and mount namespaces")
        net = (st.get("zoned") or {}).get("network")
        if "network" not in ns or ns["network"] or (net and net.get("mode") != "veth"):
            raise ConfigError(f"cannot checkpoint container {cid!r}: its network is the "
                              "host's or another container's (use --network none or NAME)")
        ann = cfg.get("annotations") or {}
        self.lower = ann.get("org.zoned.rootfs.lower")
        if not self.lower:
            raise ConfigError(f"cannot checkpoint container {cid!r}: only image containers "
                              "(overlay root) are supported, not OCI bundles")
        self.image = ann.get("org.zoned.image")
        self.st, self.cfg, self.network = st, cfg, net
        self.pid, self.start = st["pid"], st["zoned"]["pid_start"]
        self.state_dir = rt.store.dir(cid)
        z = st.get("zoned") or {}
        self.data = z.get("data") or self.state_dir  # (zones made before the data root)
        self.upper = os.path.join(self.data, "upper")
        self.log = z.get("log")
        self.log_pipe = (z.get("logger") or {}).get("pipe")
        from zoned.linux import mountinfo

        mounts = mountinfo.read(self.pid)
        root_id = next(m.mount_id for m in mounts if m.mount_point == "/")
        by_dest = {os.path.normpath(m["destination"]): m for m in cfg.get("mounts") or []}
        self.externals = []
        for m in mounts:
            if m.mount_id == root_id:
                continue
            spec = by_dest.get(os.path.normpath(m.mount_point))
            # A bind mount from the host is external whatever its file system: a file
            # bound from a tmpfs state root (/run/zoned/ID/hostname) is a tmpfs mount
            # whose tmpfs root is not in the container, which CRIU cannot dump itself
            # ("doesn't have a proper root mount").
            if m.fstype in VIRTUAL_FS and not is_bind(spec):
                continue
            if spec is None or not spec.get("source"):
                raise ConfigError(f"cannot checkpoint container {cid!r}: mount "
                                  f"{m.mount_point} ({m.fstype}) is not in its config")
            self.externals.append({"key": f"zoned-m{len(self.externals)}",
                                   "destination": m.mount_point, "source": spec["source"]})
        self.files = _external_files(_tree(self.pid), {m.mount_id for m in mounts}, self.log,
                                     self.log_pipe)
        self.netns_inode = os.stat(f"/proc/{self.pid}/ns/net").st_ino
        return self

    def hold_netns(self) -> int:
        """An fd on the container's network namespace: it (veths, addresses, the sockets'
        addresses) outlives the dump, so a failed migration can restore into it."""
        return os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def volumes(self) -> list[dict]:
        """The external mounts a restore must find on its host (not zoned's own files)."""
        return [e for e in self.externals
                if not e["source"].startswith(self.state_dir + "/")]

    def meta(self, *, tcp_established: bool, lazy: bool, criu: str) -> dict:
        images = None
        if self.image:
            from zoned.images import ImageStore

            try:
                images = {"name": self.image, "digest": ImageStore().digest(self.image)}
            except ZonedError:
                images = {"name": self.image, "digest": None}
        return {
            "format": FORMAT, "id": self.cid, "config": self.cfg,
            "annotations": self.st.get("annotations") or {}, "image": images,
            "lower": self.lower, "state_dir": self.state_dir, "mounts": self.externals,
            "files": self.files, "log": bool(self.log),
            "autoremove": bool((self.st.get("zoned") or {}).get("autoremove")),
            "cgroup": self.st["zoned"]["cgroup"], "network": self.network,
            "hostname": self.cfg.get("hostname") or self.cid,
            "tcp_established": tcp_established, "lazy": lazy,
            "checkpointed": time.time(),
            "criu": ".".join(map(str, criu_version(criu) or ())),
        }

    def run(self, directory: str, *, leave_running: bool = False,
            tcp_established: bool = False, lazy_socket: int | None = None,
            criu: str | None = None) -> dict:
        """Freeze and dump into `directory` (which clean_dir() prepared). Returns the
        checkpoint's metadata, also written to DIR/zoned-checkpoint.json. The container's
        lock must be held. With `lazy_socket` (a connected socket to the destination's
        `criu lazy-pages`), memory pages are not written: CRIU serves them over the
        socket, and finish() waits until it has."""
        criu = criu or find_criu()
        self.directory = directory
        script = os.path.join(directory, "zoned-action.sh")
        copy_log = ":"
        if self.log:  # the log and its rotated part, if any
            logs = [self.log, self.log + ".1"]
            copy_log = "; ".join(f'[ ! -e {_q(f)} ] || cp -p -- {_q(f)} '
                                 f'{_q(os.path.join(directory, os.path.basename(f)))}'
                                 for f in logs)
        # Copies made while the tasks are frozen, so files and memory agree.
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    '[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0\n'
                    f'cp -a -- {_q(self.upper)} {_q(os.path.join(directory, "upper"))} '
                    "|| exit 1\n"
                    f"{copy_log}\n")
        os.chmod(script, 0o700)
        meta = self.meta(tcp_established=tcp_established, lazy=lazy_socket is not None,
                         criu=criu)
        from zoned.state import write_json_atomic

        write_json_atomic(os.path.join(directory, META), meta)
        args = [criu, "dump", "--tree", str(self.pid), "--images-dir", directory,
                "--log-file", "dump.log", "-v4", "--manage-cgroups", "--display-stats",
                "--network-lock", "nftables", "--action-script", script,
                "--external", f"net[{self.netns_inode}]:{NETNS_KEY}"]
        if leave_running:
            args.append("--leave-running")
        if tcp_established:
            args.append("--tcp-established")
        for e in self.externals:
            args += ["--external", f"mnt[{e['destination']}]:{e['key']}"]
        for fi in self.files:
            if not fi.get("pipe"):  # a pipe needs no declaring, only --inherit-fd later
                args += ["--external", fi["key"]]
        if lazy_socket is None:
            r = run_criu(args)
            if r.returncode != 0:
                raise self._failed(r.stderr)
            return meta
        ensure_pipe_size()
        rfd, wfd = os.pipe()
        try:
            args += ["--lazy-pages", "--ps-socket", str(lazy_socket),
                     "--status-fd", str(wfd)]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         pass_fds=(lazy_socket, wfd), text=True,
                                         start_new_session=True)  # see run_criu
            os.close(wfd)
            wfd = -1
            ready = os.read(rfd, 1)  # "\0" once the page server runs; EOF if criu failed
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
        if ready != b"\0":
            err = self.proc.communicate()[1]
            self.proc = None
            raise self._failed(err)
        return meta

    def finish(self, timeout: float | None = None) -> None:
        """Wait for a lazy dump's page server to have served every page."""
        if self.proc is None:
            return
        try:
            err = self.proc.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        rc, self.proc = self.proc.returncode, None
        if rc != 0:
            raise self._failed(err)

    def abort(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _failed(self, stderr: str) -> ZonedError:
        why = log_tail(os.path.join(self.directory, "dump.log")) or (stderr or "").strip()
        return ZonedError(f"checkpoint of {self.cid!r} failed: {why} (see "
                          f"{self.directory}/dump.log)")


def checkpoint(rt, cid: str, directory: str | None, *, leave_running: bool = False,
               tcp_established: bool = False, export: str | None = None) -> str:
    """Dump container `cid` into `directory` (and/or a .tar.zst `export`). Without
    leave_running the container is stopped by the dump and then removed (as runc does), so
    `restore` can bring it back under the same name, here or on another host."""
    import tempfile

    if directory is None and export is None:
        raise ConfigError("give --dir, --export or both")
    criu = find_criu()
    tmp = None
    if directory is None:
        tmp = directory = tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=scratch_dir(rt))
    directory = os.path.abspath(directory)
    try:
        with rt.store.lock(cid):
            dump = Dump(rt, cid).plan()
            clean_dir(directory)
            dump.run(directory, leave_running=leave_running,
                     tcp_established=tcp_established, criu=criu)
        if not leave_running:
            from zoned.linux.proc import wait_exit

            wait_exit(dump.pid, dump.start, 10)
            rt.delete(cid, force=True)
        if export:
            export_tar(directory, export)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
            scratch_done(rt)
    return export or directory


def scratch_dir(rt) -> str:
    """Where zoned keeps checkpoints in transit: DATA/migrations, on the data root's disk
    (a memory dump is as big as the zone's memory: never on the state root's tmpfs), and
    on the same file system as the zones' upper dirs, so restore can move one in. Names
    say who owns them: in-PID-NAME (a destination's session), out-PID-NAME (a source's
    migration), tmp-PID-* (an export or import); gc removes those whose PID is gone.
    NAME-TIMESTAMP is a checkpoint kept on purpose (migrate --keep-source)."""
    from zoned.storage import MIGRATIONS

    d = os.path.join(rt.store.data, MIGRATIONS)
    for attempt in range(5):  # a concurrent storage.prune() may remove a parent meanwhile
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
    return d


def scratch_done(rt) -> None:
    """Remove the scratch dir if nothing is in transit any more."""
    from zoned.storage import prune

    prune(rt.store.data)


def gc_scratch(rt, *, dry_run: bool = False):
    """Remove checkpoints in transit whose zoned process died (yields a line each)."""
    import re

    from zoned.linux.proc import proc_start_time

    from zoned.storage import MIGRATIONS

    d = os.path.join(rt.store.data, MIGRATIONS)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for n in names:
        m = re.match(r"^(in|out|tmp)-(\d+)-", n)
        if not m or proc_start_time(int(m.group(2))) is not None:  # (a zombie is gone)
            continue
        yield f"directory {d}/{n}: checkpoint of a migration that died"
        if not dry_run:
            shutil.rmtree(os.path.join(d, n), ignore_errors=True)
    if not dry_run:
        scratch_done(rt)


# -- export / import ---------------------------------------------------------------------
TAR_FLAGS = ["--xattrs", "--xattrs-include=*", "--numeric-owner", "--sparse"]


def export_tar(directory: str, path: str) -> None:
    """DIR as a .tar.zst (owners, xattrs and overlay whiteouts kept), written atomically."""
    path = os.path.abspath(path)
    tmp = f"{path}.part"
    r = subprocess.run(["tar", *TAR_FLAGS, "--zstd", "-cf", tmp, "-C", directory, "."],
                       capture_output=True, text=True)
    if r.returncode != 0:
        _unlink(tmp)
        raise ZonedError(f"cannot write {path}: {r.stderr.strip()}")
    os.replace(tmp, path)


def import_tar(path: str, directory: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"--import {path}: no such file")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    r = subprocess.run(["tar", *TAR_FLAGS, "--zstd", "-xf", path, "-C", directory],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"--import {path}: not a zoned checkpoint archive "
                          f"({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'tar failed'})")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the restore side --------------------------------------------------------------------
def check_restore(rt, meta: dict, cid: str, *, lazy: bool = False) -> list[str]:
    """What would make restoring `meta` as `cid` on this host fail: every problem, each a
    line, and nothing changed. Migration asks the destination this before it freezes."""
    from zoned import spec as specmod

    problems = []
    try:
        specmod.check_id(cid)
    except ZonedError as e:
        problems.append(str(e))
    if rt.store.exists(cid):
        problems.append(f"the name {cid!r} is already in use")
    try:
        criu = find_criu()
        if lazy:
            why = lazy_support(criu)
            if why:
                problems.append(f"no lazy restore: {why}")
    except ZonedError as e:
        problems.append(str(e))
    try:
        lower_of(meta)
    except ZonedError as e:
        problems.append(str(e))
    for e in meta["mounts"]:
        if not e["source"].startswith(meta["state_dir"] + "/") and \
                not os.path.exists(e["source"]):
            problems.append(f"volume {e['source']} (for {e['destination']}) does not exist")
    net = meta.get("network")
    if net:
        from zoned.network.checkpoint_hooks import check_restore

        problems += check_restore(rt.store.root, net, cid)
    return problems


def lower_of(meta: dict) -> str:
    """The image's rootfs on this host: found by the image's name, and the very same
    contents as the checkpointed one (the upper layer is only valid over that)."""
    img = meta.get("image")
    if not img:
        if os.path.isdir(meta["lower"]):
            return meta["lower"]
        raise ConfigError(f"image rootfs {meta['lower']!r} is missing")
    from zoned.images import ImageNotFound, ImageStore

    store = ImageStore()
    try:
        lower = store.get(img["name"]).rootfs_dir
    except ImageNotFound:
        raise ConfigError(f"image {img['name']!r} is not on this host (build it with "
                          f"`zoned image build {img['name']}`)") from None
    if img.get("digest") and store.digest(img["name"]) != img["digest"]:
        raise ConfigError(f"image {img['name']!r} here differs from the checkpointed one "
                          f"({store.digest(img['name'])[:19]} vs {img['digest'][:19]})")
    return lower


def restore(rt, directory: str, *, name: str | None = None, lazy_socket: int | None = None,
            stopped: bool = False, consume: bool = False) -> dict:
    """Restore a checkpoint as container `name` (default: the checkpointed one's name)
    with its own state dir, cgroup, network and state.json, so ps/exec/kill/rm work on it.

    lazy_socket: a connected socket to the source's page server (live migration).
    stopped: leave the tasks stopped (SIGSTOP); resume() lets them go. Migration commits
    this way, so source and destination never both run.
    consume: the checkpoint dir is scratch: its upper dir is moved, not copied."""
    from zoned import spec as specmod
    from zoned.cgroups import open_cgroup
    from zoned.runtime import _utc_now, container_resources, default_cgroups_path, \
        discard_cgroup, hook_kinds

    directory = os.path.abspath(directory)
    meta = read_meta(directory)
    cid = name or meta["id"]
    specmod.check_id(cid)
    problems = check_restore(rt, meta, cid, lazy=lazy_socket is not None)
    if problems:
        raise ConfigError(f"cannot restore {cid!r}: " + "; ".join(problems))
    criu = find_criu()
    lower = lower_of(meta)
    cfg = meta["config"]
    old_dir = meta["state_dir"]

    from zoned import logs
    from zoned.storage import make_zone_dir, remove_zone_dir

    d = rt.store.reserve(cid)
    cgroup = netsetup = logger = data = None
    nsfd = -1
    try:
        with rt.store.lock(cid):
            data = make_zone_dir(rt.store.data, cid)
            rootfs = os.path.join(d, "rootfs")
            upper, work = os.path.join(data, "upper"), os.path.join(data, "work")
            os.mkdir(rootfs, 0o755)
            os.mkdir(work, 0o755)
            if consume:
                os.rename(os.path.join(directory, "upper"), upper)
            else:
                subprocess.run(["cp", "-a", "--", os.path.join(directory, "upper"), upper],
                               check=True)
            log_path = os.path.join(data, logs.LOG_NAME) if meta.get("log") else None
            if log_path:
                for name in (logs.OLD_NAME, logs.LOG_NAME):
                    saved = os.path.join(directory, name)
                    if os.path.exists(saved):
                        shutil.copy2(saved, os.path.join(data, name))
                if not os.path.exists(log_path):
                    open(log_path, "a").close()
                os.chmod(log_path, 0o640)  # criu checks the mode of an inherited file
                if any(fi.get("pipe") for fi in meta["files"]):
                    logger = logs.spawn(data)
            cfg.setdefault("annotations", {})["org.zoned.rootfs.lower"] = lower
            linux = cfg.setdefault("linux", {})
            explicit = linux.get("cgroupsPath")
            cg_path = explicit if explicit and cid == meta["id"] and \
                os.path.realpath(old_dir) == os.path.realpath(d) else \
                default_cgroups_path(cid, rt.store.root)
            linux["cgroupsPath"] = cg_path
            # zoned's own files (hosts, resolv.conf, hostname) move to the new state dir;
            # networking writes them afresh below.
            owned = {e["destination"] for e in meta["mounts"]
                     if e["source"].startswith(old_dir + "/")}
            cfg["mounts"] = [m for m in cfg.get("mounts") or []
                             if m.get("destination") not in owned]
            state = {
                "ociVersion": cfg.get("ociVersion", specmod.OCI_VERSION),
                "id": cid, "status": "creating", "pid": 0, "bundle": d, "rootfs": rootfs,
                "created": _utc_now(), "owner": "",
                "annotations": meta.get("annotations") or {},
                "zoned": {"cgroup": cg_path, "log": log_path, "data": data,
                          "logger": logger.describe() if logger is not None else None,
                          "autoremove": meta.get("autoremove", False),
                          "restored_from": directory, "hooks": hook_kinds(cfg)},
            }
            rt.store.write_state(cid, state)  # from here gc knows what to remove
            from zoned.network import checkpoint_hooks as nethooks

            if meta.get("network"):
                from zoned.network.attach import setup_for_restore

                netsetup = setup_for_restore(rt.store.root, cid, meta["network"],
                                             meta.get("hostname") or cid)
                netsetup.prepare(d, cfg)
                state["zoned"]["network"] = netsetup.describe()
                rt.store.write_state(cid, state)
            nsfd = nethooks.new_netns()
            if netsetup is not None:
                nethooks.quarantine(nsfd, True)
                netsetup.attach_ns(nsfd, loopback=True)
            else:
                nethooks.loopback_up(nsfd)
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(json.dumps(cfg, separators=(",", ":")))
            cgroup = open_cgroup(cg_path)
            cgroup.create()
            cgroup.apply(container_resources(linux.get("resources") or {}))
            pid = run_restore(criu, directory, d, meta, cfg, lower=lower, upper=upper,
                              work=work, rootfs=rootfs, cgroup=cg_path, netns_fd=nsfd,
                              log_path=log_path, log_fd=logger and logger.write_fd,
                              lazy_socket=lazy_socket, stopped=stopped)
            from zoned.linux.proc import proc_start_time

            state.update(status="running", pid=pid)
            state["zoned"]["pid_start"] = proc_start_time(pid)
            if stopped:  # until resume(): gc removes it if this process dies first
                state["zoned"]["incoming"] = {"pid": os.getpid(),
                                              "start": proc_start_time(os.getpid())}
            rt.store.write_state(cid, state)
            if netsetup is not None and not stopped:
                nethooks.quarantine(nsfd, False)
                nethooks.announce(state, nsfd)
            return state
    except BaseException:
        if cgroup is not None:
            discard_cgroup(cgroup)
        if netsetup is not None:
            netsetup.release()
        keep = os.path.join(directory, f"restore-{cid}.log")
        try:
            shutil.copy(os.path.join(d, "restore.log"), keep)
        except OSError:
            pass
        if logger is not None:
            os.close(logger.write_fd)
            logger.write_fd = -1
            logs.wait_logger(logger.describe())
        remove_zone_dir(data)
        rt.store.remove(cid)
        raise
    finally:
        if logger is not None and logger.write_fd >= 0:
            os.close(logger.write_fd)  # the restored tasks have it now
        if nsfd >= 0:
            os.close(nsfd)


def resume(rt, cid: str) -> None:
    """Let a container restored with stopped=True run: SIGCONT to every task in it, then
    lift the quarantine and announce it."""
    import signal

    with rt.store.lock(cid):
        st = rt.store.read_state(cid)
        for pid in rt.cgroup(st).pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        st["zoned"].pop("incoming", None)
        rt.store.write_state(cid, st)
    if (st["zoned"].get("network") or {}).get("networks"):
        from zoned.network import checkpoint_hooks as nethooks

        fd = os.open(f"/proc/{st['pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            nethooks.quarantine(fd, False)
            nethooks.announce(st, fd)
        finally:
            os.close(fd)


def run_restore(criu: str, directory: str, work_dir: str, meta: dict, cfg: dict, *,
                lower: str, upper: str, work: str, rootfs: str, cgroup: str,
                netns_fd: int, log_path: str | None, log_fd: int | None = None,
                lazy_socket: int | None = None, stopped: bool = False) -> int:
    """`criu restore` of DIR into a prepared state dir and network namespace; the root
    task's pid. Used by restore() and, into the very same namespace and cgroup, by a
    failed migration putting its container back. log_fd: the write end of a new logger's
    pipe, for the zone's stdout and stderr (the caller keeps and closes it)."""
    from zoned.linux import syscalls as sc

    by_dest = {os.path.normpath(m["destination"]): m.get("source")
               for m in cfg.get("mounts") or []}
    args = [criu, "restore", "--images-dir", directory, "--work-dir", work_dir,
            "--log-file", "restore.log", "-v4", "--restore-detached",
            "--pidfile", os.path.join(work_dir, "criu.pid"), "--root", rootfs,
            "--manage-cgroups", "--cgroup-root", cgroup, "--network-lock", "nftables",
            "--display-stats", "--inherit-fd", f"fd[{netns_fd}]:{NETNS_KEY}"]
    if meta.get("tcp_established"):
        args.append("--tcp-established")
    if stopped:
        args.append("--leave-stopped")
    for e in meta["mounts"]:
        source = by_dest.get(os.path.normpath(e["destination"])) or e["source"]
        args += ["--ext-mount-map", f"{e['key']}:{source}"]
    _unlink(os.path.join(work_dir, "criu.pid"))  # an earlier restore's
    fds = [netns_fd]
    daemon = None
    try:
        for fi in meta["files"]:
            if fi.get("pipe"):
                if log_fd is None:
                    raise ZonedError(f"restore of {meta['id']!r}: no log pipe for "
                                     f"{fi['key']}")
                args += ["--inherit-fd", f"fd[{log_fd}]:{fi['key']}"]
                continue
            path = log_path if fi.get("log") and log_path else fi["path"]
            acc = fi["flags"] & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
            fd = os.open(path, acc | (fi["flags"] & os.O_APPEND))
            fds.append(fd)
            args += ["--inherit-fd", f"fd[{fd}]:{fi['key']}"]
        if lazy_socket is not None:
            daemon = _lazy_pages_daemon(criu, directory, work_dir, lazy_socket)
            args.append("--lazy-pages")
        overlay = f"lowerdir={lower},upperdir={upper},workdir={work}"

        def in_private_mount_ns():
            # criu and only criu sees the overlay; the restored container's mount
            # namespace keeps it, the host's never has it.
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
            sc.mount("overlay", rootfs, "overlay", 0, overlay)

        r = run_criu(args, pass_fds=fds[1:] + [netns_fd] + ([log_fd] if log_fd else []),
                     preexec_fn=in_private_mount_ns)
        if r.returncode != 0:
            why = log_tail(os.path.join(work_dir, "restore.log")) or r.stderr.strip()
            raise ZonedError(f"restore of {meta['id']!r} from {directory} failed: {why}")
        with open(os.path.join(work_dir, "criu.pid")) as f:
            pid = int(f.read().strip())
        if daemon is not None:
            LAZY_DAEMONS[pid] = daemon
            daemon = None
        return pid
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        for fd in fds[1:]:
            os.close(fd)


# criu lazy-pages daemons of restored containers, by the container's pid: they serve page
# faults until every page has arrived (wait_lazy_pages).
LAZY_DAEMONS: dict[int, subprocess.Popen] = {}


def _lazy_pages_daemon(criu: str, directory: str, work_dir: str,
                       sock: int) -> subprocess.Popen:
    rfd, wfd = os.pipe()
    try:
        p = subprocess.Popen([criu, "lazy-pages", "--images-dir", directory,
                              "--work-dir", work_dir, "--log-file", "lazy-pages.log", "-v4",
                              "--page-server", "--ps-socket", str(sock),
                              "--status-fd", str(wfd)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, pass_fds=(sock, wfd), text=True)
        os.close(wfd)
        wfd = -1
        ready = os.read(rfd, 1)
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    if ready != b"\0":
        err = p.communicate()[1]
        why = log_tail(os.path.join(work_dir, "lazy-pages.log")) or err.strip()
        raise ZonedError(f"criu lazy-pages did not start: {why}")
    return p


def wait_lazy_pages(pid: int, timeout: float | None = None) -> None:
    """Wait until the lazy-pages daemon of restored container `pid` has every page."""
    p = LAZY_DAEMONS.pop(pid, None)
    if p is None:
        return
    try:
        err = p.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        err = p.communicate()[1]
    if p.returncode != 0:
        raise ZonedError(f"criu lazy-pages failed ({p.returncode}): {err.strip()[-300:]}")
