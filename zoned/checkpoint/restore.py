"""The restore side: what a restore needs of this host (asked before a migration freezes
anything), restore() as a new zone with its own state dir, cgroup, network and logger,
resume() for a zone restored stopped, and the criu lazy-pages daemons of live migration."""
from __future__ import annotations

import os
import shutil
import subprocess

from zoned.checkpoint.archive import lower_of, read_meta, unlink_if_exists
from zoned.checkpoint.criu import NETNS_KEY, find_criu, lazy_support, log_tail, run_criu
from zoned.errors import ConfigError, ZonedError


def check_restore(rt, meta: dict, cid: str, *, lazy: bool = False) -> list[str]:
    """What would make restoring `meta` as `cid` on this host fail: every problem, each a
    line, and nothing changed. Migration asks the destination this before it freezes."""
    from zoned.runtime.steps import name_problems

    problems = name_problems(rt.store, cid)
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


def restore(rt, directory: str, *, name: str | None = None, lazy_socket: int | None = None,
            stopped: bool = False, consume: bool = False) -> dict:
    """Restore a checkpoint as container `name` (default: the checkpointed one's name)
    with its own state dir, cgroup, network and state.json, so ps/exec/kill/rm work on it.

    lazy_socket: a connected socket to the source's page server (live migration).
    stopped: leave the tasks stopped (SIGSTOP); resume() lets them go. Migration commits
    this way, so source and destination never both run.
    consume: the checkpoint dir is scratch: its upper dir is moved, not copied."""
    from zoned.oci import spec as specmod
    from zoned.runtime.cgroup_paths import default_cgroups_path
    from zoned.runtime.steps import abandon, initial_state, make_cgroup, write_config

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
    from zoned.storage import make_zone_dir

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
            state = initial_state(
                cid, cfg, bundle=d, rootfs=rootfs, cgroup=cg_path, data=data, log=log_path,
                logger=logger.describe() if logger is not None else None,
                autoremove=meta.get("autoremove", False),
                annotations=meta.get("annotations") or {}, restored_from=directory)
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
            write_config(d, cfg)
            cgroup = make_cgroup(cg_path, linux)
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
        keep = os.path.join(directory, f"restore-{cid}.log")
        try:
            shutil.copy(os.path.join(d, "restore.log"), keep)
        except OSError:
            pass
        if logger is not None:
            os.close(logger.write_fd)
            logger.write_fd = -1
        abandon(rt.store, cid, cgroup=cgroup, network=netsetup, data=data,
                logger=logger.describe() if logger is not None else None)
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
    unlink_if_exists(os.path.join(work_dir, "criu.pid"))  # an earlier restore's
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
