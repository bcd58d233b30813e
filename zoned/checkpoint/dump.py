"""The dump side: Dump (every refusal made before anything is frozen, then `criu dump`),
and checkpoint(), what `zoned checkpoint` runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from zoned.checkpoint import cgroup_yard
from zoned.checkpoint.archive import FORMAT, META, clean_dir, export_tar, image_record, \
    is_bind
from zoned.checkpoint.criu import NETNS_KEY, criu_exec, criu_version, ensure_pipe_size, \
    find_criu, log_tail, run_criu
from zoned.checkpoint.scratch import scratch_dir, scratch_done
from zoned.errors import ConfigError, InvalidState, ZonedError
from zoned.runtime.steps import SKELETON, SKELETON_PARTS, shared_skeleton

# File systems CRIU dumps and restores itself (unless bind-mounted from the host); any
# other mount but the root is external.
VIRTUAL_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs",
              "securityfs", "debugfs", "tracefs", "binfmt_misc", "fusectl", "configfs",
              "bpf", "pstore", "hugetlbfs", "autofs"}


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


def skeleton_binds(state_dir: str):
    """-> a function naming the part of a skeleton (zoned.runtime.steps.make_skeleton: the
    zone's own or the host's shared one) a mount is bound from. A bind's root is its
    source's path inside its file system, and its device that file system's."""
    known = []
    for base in (os.path.join(state_dir, SKELETON), shared_skeleton()):
        for name in SKELETON_PARTS:
            path = os.path.join(base, name)
            try:
                known.append((os.stat(path).st_dev, path, name))
            except FileNotFoundError:
                pass

    def part(m) -> tuple[str, str]:
        """-> (part, its path here), or ("", "")."""
        dev = os.makedev(m.major, m.minor)
        for d, path, name in known:
            if d == dev and m.root != "/" and path.endswith(m.root):
                return name, path
        return "", ""
    return part


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


def _hierarchy_of(m):
    """The host's cgroup hierarchy a container's cgroup mount is part of (its device)."""
    from zoned.cgroups.detection import hierarchies

    for h in hierarchies():
        if os.stat(h.mountpoint).st_dev == os.makedev(m.major, m.minor):
            return h
    raise ConfigError(f"mount {m.mount_point} ({m.fstype}) is of no cgroup hierarchy of "
                      "this host's")


def _fd_target(pid: int, fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


# -- the dump side -----------------------------------------------------------------------
class Dump:
    """One container's dump, from the checks made before anything is frozen to the images.

    plan() only reads: every refusal happens there, while the container runs untouched.
    run() freezes and dumps; with a lazy socket it returns once the non-memory images are
    complete and CRIU serves the memory pages over that socket (finish() waits for it).
    """

    def __init__(self, rt, cid: str, *, oci: bool = False):
        """oci: runc's checkpoint, for an engine (zoned.checkpoint.oci): the container may be an
        OCI bundle and in a network namespace the engine made (a path), whose rootfs and
        network the engine itself keeps and hands back at the restore."""
        self.rt, self.cid, self.oci = rt, cid, oci
        self.proc: subprocess.Popen | None = None
        self.work_dir: str | None = None

    def plan(self) -> "Dump":
        rt, cid = self.rt, self.cid
        st = rt.state(cid)
        from zoned.runtime.steps import refuse_vm

        refuse_vm(st, "checkpoint", "CRIU saves processes of this kernel; a VM moves by "
                  "QEMU's own migration")
        status = st["status"]
        if status != "running" and not (self.oci and status == "paused"):
            raise InvalidState(f"cannot checkpoint container {cid!r}: it is {status}")
        cfg = rt.config(cid)
        linux = cfg.get("linux") or {}
        ns = {n["type"]: n.get("path") for n in linux.get("namespaces", [])}
        if cfg["process"].get("terminal"):
            raise ConfigError(f"cannot checkpoint container {cid!r}: it has a terminal (-t)")
        if "user" in ns:
            raise ConfigError(f"cannot checkpoint container {cid!r}: user namespaces are "
                              "not supported by zoned checkpoint yet")
        if (st.get("zoned") or {}).get("shared_memory"):  # CRIU would restore the cgroup
            # set it saw: the memory controller's path is not the others'
            raise ConfigError(f"cannot checkpoint container {cid!r}: a zone in the shared "
                              "memory cgroup is not supported by zoned checkpoint yet")
        if "pid" not in ns or ns["pid"] or "mount" not in ns or ns["mount"]:
            raise ConfigError(f"cannot checkpoint container {cid!r}: it needs its own pid "
                              "and mount namespaces")
        net = (st.get("zoned") or {}).get("network")
        if "network" not in ns or (ns["network"] and not self.oci) or \
                (net and net.get("mode") != "veth"):
            raise ConfigError(f"cannot checkpoint container {cid!r}: its network is the "
                              "host's or another container's (use --network none or NAME)")
        ann = cfg.get("annotations") or {}
        self.lower = ann.get("org.zoned.rootfs.lower")
        if not self.lower and not self.oci:
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
        skeleton = skeleton_binds(self.state_dir)
        for m in mounts:
            if m.mount_id == root_id:
                continue
            if m.fstype in ("cgroup", "cgroup2") and m.root != "/":
                # The container's own cgroup directory of a hierarchy, bound (a cgroup
                # mount without a cgroup namespace on a v1 or hybrid host: podman's),
                # which CRIU cannot dump: the restore binds the new container's there
                # (runc takes cgroup mounts as external too).
                h = _hierarchy_of(m)
                self.externals.append({"key": f"zoned-m{len(self.externals)}",
                                       "destination": m.mount_point,
                                       "cgroup": f"{h.fstype}:{h.options}",
                                       "source": h.mountpoint + m.root})
                continue
            part, path = skeleton(m)
            if part:  # bound from a skeleton: the restoring host's takes its place
                self.externals.append({"key": f"zoned-m{len(self.externals)}",
                                       "destination": m.mount_point, "source": path,
                                       "skeleton": part})
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
        self.stdio = [_fd_target(self.pid, fd) for fd in range(3)]
        # runc's: CRIU freezes the tasks with the cgroup's freezer (and finds a paused
        # one frozen already: containerd pauses a task for its checkpoint)
        self.freezer = rt.cgroup(st).freezer_dir() if self.oci else None
        return self

    def hold_netns(self) -> int:
        """An fd on the container's network namespace: it (veths, addresses, the sockets'
        addresses) outlives the dump, so a failed migration can restore into it."""
        return os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def volumes(self) -> list[dict]:
        """The external mounts a restore must find on its host (not zoned's own files)."""
        return [e for e in self.externals if not e.get("skeleton") and not e.get("cgroup")
                and not e["source"].startswith(self.state_dir + "/")]

    def meta(self, *, tcp_established: bool, lazy: bool, criu: str) -> dict:
        images = image_record(self.image) if self.image else None
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
            # runc's descriptors.json: a restore hands its own stdio to the pipes here
            **({"oci": {"stdio": self.stdio}} if self.oci else {}),
        }

    def run(self, directory: str, *, leave_running: bool = False,
            tcp_established: bool = False, lazy_socket: int | None = None,
            criu: str | None = None, copy_files: bool = True,
            network_lock: str = "nftables", zone_file: str | None = None,
            work_dir: str | None = None, criu_flags: tuple[str, ...] = ()) -> dict:
        """Freeze and dump into `directory` (which clean_dir() prepared). Returns the
        checkpoint's metadata, also written to DIR/zoned-checkpoint.json. The container's
        lock must be held. With `lazy_socket` (a connected socket to the destination's
        `criu lazy-pages`), memory pages are not written: CRIU serves them over the
        socket, and finish() waits until it has.
        copy_files=False: the upper dir and the log are not copied into DIR (a migration
        sends them from where they are, the tasks frozen or ended by then: own_files(); CRIU
        then forks no action script in the frozen time).
        network_lock="skip": the caller has locked the network itself (a migration's
        zoned.network.checkpoint_hooks.LinkLock); the restore then unlocks nothing either.
        zone_file: a defined zone's file (`zoned save`), kept in the metadata so that a
        host where the zone is not defined can restore it (zoned.zones.saving).
        work_dir: where CRIU writes its log (runc's --work-path), if not DIR.
        criu_flags: more of CRIU's options (runc's --file-locks and the like)."""
        criu = criu or find_criu()
        self.directory, self.work_dir = directory, work_dir
        meta = self.meta(tcp_established=tcp_established, lazy=lazy_socket is not None,
                         criu=criu)
        if zone_file is not None:
            meta["zone"] = zone_file
        from zoned.runtime.store import write_json_atomic

        write_json_atomic(os.path.join(directory, META), meta)
        yard = cgroup_yard.plan()
        args = [criu, "dump", "--tree", str(self.pid), "--images-dir", directory,
                *(["--work-dir", work_dir] if work_dir else []),
                "--log-file", "dump.log", "-v4", "--manage-cgroups", "--display-stats",
                "--network-lock", network_lock, *cgroup_yard.args(yard),
                "--external", f"net[{self.netns_inode}]:{NETNS_KEY}", *criu_flags,
                *(["--freeze-cgroup", self.freezer] if self.freezer else [])]
        if copy_files:
            args += ["--action-script", self._action_script(directory)]
        if leave_running:
            args.append("--leave-running")
        if tcp_established:
            args.append("--tcp-established")
        for e in self.externals:
            args += ["--external", f"mnt[{e['destination']}]:{e['key']}"]
        for fi in self.files:
            if not fi.get("pipe"):  # a pipe needs no declaring, only --inherit-fd later
                args += ["--external", fi["key"]]
        self.launched = time.monotonic()
        if lazy_socket is None:
            r = run_criu(args, yard=yard)
            if r.returncode != 0:
                raise self._failed(r.stderr)
            return meta
        ensure_pipe_size()
        rfd, wfd = os.pipe()
        try:
            args += ["--lazy-pages", "--ps-socket", str(lazy_socket),
                     "--status-fd", str(wfd)]
            self.proc = subprocess.Popen(criu_exec(args, yard=yard), stdin=subprocess.DEVNULL,
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

    def own_files(self) -> list[tuple[str, str]]:
        """(dir, name) of what a checkpoint holds besides CRIU's images, where it is: the
        upper dir and the log (and its rotated part)."""
        out = [(os.path.dirname(self.upper), os.path.basename(self.upper))]
        if self.log:
            for f in (self.log, self.log + ".1"):
                if os.path.exists(f):
                    out.append((os.path.dirname(f), os.path.basename(f)))
        return out

    def _action_script(self, directory: str) -> str:
        """The script CRIU runs once the tasks are frozen and dumped: it copies the upper
        dir and the log into the checkpoint, so files and memory agree."""
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
        return script

    def frozen_at(self) -> float | None:
        """When CRIU froze the tasks (time.monotonic()), from its log: the first task
        seized, so the time CRIU spends starting up, the tasks still running, is not
        counted as frozen. None if the log does not say."""
        import re

        try:
            with open(os.path.join(self.directory, "dump.log"), errors="replace") as f:
                for line in f:
                    if "Seized task" in line or "net: Lock network" in line:
                        m = re.match(r"\((\d+\.\d+)\)", line)
                        return self.launched + float(m.group(1)) if m else None
        except OSError:
            pass
        return None

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
        log = os.path.join(self.work_dir or self.directory, "dump.log")
        why = log_tail(log) or (stderr or "").strip()
        return ZonedError(f"checkpoint of {self.cid!r} failed: {why} (see {log})")


def checkpoint(rt, cid: str, directory: str | None, *, leave_running: bool = False,
               tcp_established: bool = False, export: str | None = None,
               zone_file: str | None = None) -> str:
    """Dump container `cid` into `directory` (and/or a .tar.zst `export`). Without
    leave_running the container is stopped by the dump and then removed (as runc does), so
    `restore` can bring it back under the same name, here or on another host."""
    import tempfile

    if directory is None and export is None:
        raise ConfigError("give --dir, --export or both")
    if (rt.state(cid).get("zoned") or {}).get("vm"):
        return _checkpoint_vm(rt, cid, directory, export, leave_running)
    from zoned.checkpoint.private import check_dir_to_write, check_parents

    criu = find_criu()
    tmp = None
    if export:  # (refused before anything is frozen; export_tar checks again at the write)
        check_parents(export, "--export")
    if directory is None:
        tmp = directory = tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=scratch_dir(rt))
    directory = os.path.abspath(directory)
    if tmp is None:  # the user's: root's or ours alone (made 0700 by clean_dir if missing)
        check_dir_to_write(directory, "--dir")
    try:
        with rt.store.lock(cid):
            dump = Dump(rt, cid).plan()
            clean_dir(directory)
            dump.run(directory, leave_running=leave_running,
                     tcp_established=tcp_established, criu=criu, zone_file=zone_file)
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


def _checkpoint_vm(rt, cid: str, directory: str | None, export: str | None,
                   leave_running: bool) -> str:
    """A VM's checkpoint is QEMU's migration stream in one file (zoned.vm.savefile),
    which `zoned restore --import` boots again; CRIU has nothing to do with it."""
    if directory is not None or export is None:
        raise ConfigError(f"invalid --dir for VM container {cid!r}: a VM's checkpoint is "
                          "one file (--export FILE)")
    from zoned.backends.vm_save import save

    save(rt, cid, export, kind="container", what="--export", leave_running=leave_running)
    return os.path.abspath(export)
