"""Same-host checkpoint and restore of a zone with CRIU (>= 4; scripts/install-criu.sh).

zoned drives the `criu` CLI, not its swrk/RPC mode: zoned has no daemon and no Go-style
long-lived parent to hold an RPC socket, a dump or restore is one blocking command here, and
the CLI needs no protobuf bindings in the venv. What runc gets from RPC notifications
(network lock/unlock hooks, setting up the cgroup before restore) zoned does before or after
the command, or with an --action-script.

What CRIU needs for zoned's container model:
- The tree is the container's init (--tree PID), its pid, mount, uts, ipc, net and cgroup
  namespaces are dumped with it. The init is a session leader (zoned's init calls setsid).
- The root is an overlay mounted inside the container's own mount namespace. CRIU does not
  dump the root mount: at restore it bind-mounts --root there. So the overlay's upper layer
  is copied into DIR/upper while the tasks are still frozen (post-dump action script), and
  restore mounts a fresh overlay (image lower + that upper) in a private mount namespace of
  the criu process only: the restored container's namespace keeps it, the host never sees
  it, as with `zoned run`.
- Bind mounts from the host (volumes) are external mounts: `--external mnt[DEST]:KEY` at
  dump, `--ext-mount-map KEY:SOURCE` at restore (as runc does).
- A detached container's stdin (/dev/null) and stdout/stderr (its ctr.log) were opened on
  the host, outside its mount namespace: they are external files (`file[MNT:INODE]`) and
  are handed back with `--inherit-fd` at restore (the log then being the new state dir's).
- Cgroups: restore makes the new container's cgroup and passes --cgroup-root, so the tasks
  land there with --manage-cgroups; the network is locked with nftables.
Not supported (refused with one line): a terminal (-t), a user namespace, --network NAME or
host, a pid namespace joined by path, and container that is not running.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from zoned.errors import ConfigError, InvalidState, ZonedError

FORMAT = 1
META = "zoned-checkpoint.json"
MIN_VERSION = (4, 0)
# File systems CRIU dumps and restores itself; any other mount but the root is external.
VIRTUAL_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs",
              "securityfs", "debugfs", "tracefs", "binfmt_misc", "fusectl", "configfs",
              "bpf", "pstore", "hugetlbfs", "autofs"}


# -- finding criu ------------------------------------------------------------------------
def criu_version(path: str) -> tuple[int, ...] | None:
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
    (Debian 12's criu 3.17 at /usr/sbin fails on current kernels.)"""
    candidates = []
    if os.environ.get("ZONED_CRIU"):
        candidates.append(os.environ["ZONED_CRIU"])
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


# -- helpers -----------------------------------------------------------------------------
def _mountinfo(pid: int) -> list[dict]:
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            out.append({"id": int(fields[0]), "parent": int(fields[1]), "root": fields[3],
                        "mountpoint": _unescape(fields[4]), "fstype": right.split()[0]})
    return out


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape") if "\\" in s else s


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


def _external_files(pids: list[int], container_mnts: set[int], log: str | None) -> list[dict]:
    """Files the container's tasks hold that live outside its mount namespace (its stdio,
    opened by zoned on the host): CRIU dumps them as external, restore passes them back."""
    files: dict[str, dict] = {}
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
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


def _log_tail(path: str, n: int = 6) -> str:
    try:
        with open(path, errors="replace") as f:
            # (RLIMIT_NOFILE: criu cannot raise its own limit here; harmless, not the cause)
            lines = [ln.rstrip() for ln in f if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    except OSError:
        return ""
    return "; ".join(lines[-n:])


def _copy_tree(src: str, dst: str) -> None:
    """cp -a: keeps owners, modes, xattrs (overlay's opaque dirs) and whiteouts."""
    if os.path.lexists(dst):
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", "--", src, dst], check=True)


# -- checkpoint --------------------------------------------------------------------------
def checkpoint(rt, cid: str, directory: str, *, leave_running: bool = False,
               tcp_established: bool = False) -> str:
    """Dump container `cid` into `directory`. Without leave_running the container is
    stopped by the dump and then removed (as runc does), so `restore` can bring it back
    under the same name. Returns the directory."""
    criu = find_criu()
    directory = os.path.abspath(directory)
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
        raise ConfigError(f"cannot checkpoint container {cid!r}: user namespaces are not "
                          "supported by zoned checkpoint yet")
    if "pid" not in ns or ns["pid"] or "mount" not in ns or ns["mount"]:
        raise ConfigError(f"cannot checkpoint container {cid!r}: it needs its own pid and "
                          "mount namespaces")
    if "network" not in ns or ns["network"] or (st.get("zoned") or {}).get("network"):
        raise ConfigError(f"cannot checkpoint container {cid!r}: only --network none is "
                          "supported (a host or veth network is not yet)")
    ann = cfg.get("annotations") or {}
    lower = ann.get("org.zoned.rootfs.lower")
    if not lower:
        raise ConfigError(f"cannot checkpoint container {cid!r}: only image containers "
                          "(overlay root) are supported, not OCI bundles")
    pid, start = st["pid"], st["zoned"]["pid_start"]
    state_dir = rt.store.dir(cid)
    upper = os.path.join(state_dir, "upper")
    log = (st.get("zoned") or {}).get("log")

    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):  # an old checkpoint's images would confuse criu
        if name.endswith(".img") or name in ("upper", "ctr.log", META):
            p = os.path.join(directory, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)

    with rt.store.lock(cid):
        mounts = _mountinfo(pid)
        root_id = next(m["id"] for m in mounts if m["mountpoint"] == "/")
        by_dest = {os.path.normpath(m["destination"]): m for m in cfg.get("mounts") or []}
        externals = []
        for m in mounts:
            if m["id"] == root_id or m["fstype"] in VIRTUAL_FS:
                continue
            spec = by_dest.get(os.path.normpath(m["mountpoint"]))
            if spec is None or not spec.get("source"):
                raise ConfigError(f"cannot checkpoint container {cid!r}: mount "
                                  f"{m['mountpoint']} ({m['fstype']}) is not in its config")
            externals.append({"key": f"zoned-m{len(externals)}",
                              "destination": m["mountpoint"], "source": spec["source"]})
        files = _external_files(_tree(pid), {m["id"] for m in mounts}, log)

        # Copies made while the tasks are frozen, so files and memory agree.
        script = os.path.join(directory, "zoned-action.sh")
        copy_log = f'cp -p -- {_q(log)} {_q(os.path.join(directory, "ctr.log"))}' if log \
            else ":"
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    '[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0\n'
                    f'cp -a -- {_q(upper)} {_q(os.path.join(directory, "upper"))} || exit 1\n'
                    f"{copy_log}\n")
        os.chmod(script, 0o700)

        args = [criu, "dump", "--tree", str(pid), "--images-dir", directory,
                "--log-file", "dump.log", "-v4", "--manage-cgroups",
                "--network-lock", "nftables", "--action-script", script]
        if leave_running:
            args.append("--leave-running")
        if tcp_established:
            args.append("--tcp-established")
        for e in externals:
            args += ["--external", f"mnt[{e['destination']}]:{e['key']}"]
        for fi in files:
            args += ["--external", fi["key"]]
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            why = _log_tail(os.path.join(directory, "dump.log")) or r.stderr.strip()
            raise ZonedError(f"checkpoint of {cid!r} failed: {why} (see "
                             f"{directory}/dump.log)")
        from zoned.state import write_json_atomic

        meta = {
            "format": FORMAT, "id": cid, "config": cfg,
            "annotations": st.get("annotations") or {},
            "lower": lower, "mounts": externals, "files": files,
            "log": bool(log), "autoremove": bool((st.get("zoned") or {}).get("autoremove")),
            "cgroup": st["zoned"]["cgroup"], "leave_running": leave_running,
            "tcp_established": tcp_established, "checkpointed": time.time(),
            "criu": ".".join(map(str, criu_version(criu) or ())),
        }
        write_json_atomic(os.path.join(directory, META), meta)
    if not leave_running:
        from zoned.runtime import wait_exit

        wait_exit(pid, start, 10)
        rt.delete(cid, force=True)
    return directory


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


# -- restore -----------------------------------------------------------------------------
def restore(rt, directory: str, *, name: str | None = None) -> dict:
    """Restore a checkpoint as container `name` (default: the checkpointed one's name)
    with its own state dir, cgroup and state.json, so ps/exec/kill/rm work on it."""
    from zoned import spec as specmod
    from zoned import syscalls as sc
    from zoned.cgroups import Cgroup
    from zoned.runtime import (_utc_now, container_resources, default_cgroups_path,
                               discard_cgroup, hook_kinds)
    from zoned.state import proc_start_time

    criu = find_criu()
    directory = os.path.abspath(directory)
    try:
        with open(os.path.join(directory, META)) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{directory} holds no zoned checkpoint ({META} is missing)") \
            from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{directory}: checkpoint format {meta.get('format')} is not "
                          f"{FORMAT}")
    cid = name or meta["id"]
    specmod.check_id(cid)
    cfg = meta["config"]
    lower = meta["lower"]
    if not os.path.isdir(lower):
        raise ConfigError(f"image rootfs {lower!r} is missing")
    for e in meta["mounts"]:
        if not os.path.exists(e["source"]):
            raise ConfigError(f"mount source {e['source']!r} for {e['destination']} does "
                              "not exist")

    d = rt.store.reserve(cid)
    cgroup = None
    fds: list[int] = []
    try:
        with rt.store.lock(cid):
            rootfs, upper, work = (os.path.join(d, n) for n in ("rootfs", "upper", "work"))
            os.mkdir(rootfs, 0o755)
            os.mkdir(work, 0o755)
            _copy_tree(os.path.join(directory, "upper"), upper)
            log_path = os.path.join(d, "ctr.log") if meta.get("log") else None
            if log_path:
                saved = os.path.join(directory, "ctr.log")
                if os.path.exists(saved):
                    shutil.copy2(saved, log_path)
                else:
                    open(log_path, "a").close()
                os.chmod(log_path, 0o640)  # criu checks the mode of an inherited file
            linux = cfg.setdefault("linux", {})
            explicit = linux.get("cgroupsPath")
            cg_path = explicit if explicit and cid == meta["id"] else \
                default_cgroups_path(cid, rt.store.root)
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(json.dumps(cfg, separators=(",", ":")))
            state = {
                "ociVersion": cfg.get("ociVersion", specmod.OCI_VERSION),
                "id": cid, "status": "creating", "pid": 0, "bundle": d, "rootfs": rootfs,
                "created": _utc_now(), "owner": "",
                "annotations": meta.get("annotations") or {},
                "zoned": {"cgroup": cg_path, "log": log_path,
                          "autoremove": meta.get("autoremove", False),
                          "restored_from": directory, "hooks": hook_kinds(cfg)},
            }
            rt.store.write_state(cid, state)
            cgroup = Cgroup.open(cg_path)
            cgroup.create()
            cgroup.apply(container_resources(linux.get("resources") or {}))

            args = [criu, "restore", "--images-dir", directory, "--work-dir", d,
                    "--log-file", "restore.log", "-v4", "--restore-detached",
                    "--pidfile", os.path.join(d, "criu.pid"), "--root", rootfs,
                    "--manage-cgroups", "--cgroup-root", cg_path]
            if meta.get("tcp_established"):
                args.append("--tcp-established")
            for e in meta["mounts"]:
                args += ["--ext-mount-map", f"{e['key']}:{e['source']}"]
            for fi in meta["files"]:
                path = log_path if fi.get("log") and log_path else fi["path"]
                acc = fi["flags"] & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
                extra = fi["flags"] & os.O_APPEND
                fd = os.open(path, acc | extra)
                fds.append(fd)
                args += ["--inherit-fd", f"fd[{fd}]:{fi['key']}"]
            overlay = f"lowerdir={lower},upperdir={upper},workdir={work}"

            def in_private_mount_ns():
                # criu and only criu sees the overlay; the restored container's mount
                # namespace keeps it, the host's never has it.
                sc.unshare(sc.CLONE_NEWNS)
                sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
                sc.mount("overlay", rootfs, "overlay", 0, overlay)

            r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, pass_fds=fds, preexec_fn=in_private_mount_ns)
            if r.returncode != 0:
                why = _log_tail(os.path.join(d, "restore.log")) or r.stderr.strip()
                raise ZonedError(f"restore of {cid!r} from {directory} failed: {why}")
            with open(os.path.join(d, "criu.pid")) as f:
                pid = int(f.read().strip())
            state.update(status="running", pid=pid)
            state["zoned"]["pid_start"] = proc_start_time(pid)
            rt.store.write_state(cid, state)
            return state
    except BaseException:
        if cgroup is not None:
            discard_cgroup(cgroup)
        keep = os.path.join(directory, f"restore-{cid}.log")
        try:
            shutil.copy(os.path.join(d, "restore.log"), keep)
        except OSError:
            pass
        rt.store.remove(cid)
        raise
    finally:
        for fd in fds:
            os.close(fd)
