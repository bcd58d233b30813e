"""`criu restore` itself, into a prepared state dir and network namespace (restore(),
a migration's Incoming, and a failed migration's put-back all end here), and the criu
lazy-pages daemons of live migration."""
from __future__ import annotations

import os
import subprocess

from zoned.checkpoint import cgroup_yard
from zoned.checkpoint.archive import unlink_if_exists
from zoned.checkpoint.criu import NETNS_KEY, criu_exec, log_tail, run_criu
from zoned.errors import ZonedError


def _no_mark(step: str) -> None:
    pass


def run_restore(criu: str, directory: str, work_dir: str, meta: dict, cfg: dict, *,
                lower: str | None = None, upper: str | None = None,
                work: str | None = None, bundle_root: str | None = None,
                rootfs: str, cgroup: str, netns_fd: int, log_path: str | None,
                log_fd: int | None = None, lazy_socket: int | None = None,
                stopped: bool = False, inherit: tuple[tuple[int, str], ...] = (),
                criu_flags: tuple[str, ...] = (), mark=_no_mark) -> int:
    """`criu restore` of DIR into a prepared state dir and network namespace; the root
    task's pid. Used by restore() and, into the very same namespace and cgroup, by a
    failed migration putting its container back. log_fd: the write end of a new logger's
    pipe, for the zone's stdout and stderr (the caller keeps and closes it).
    The root at `rootfs`: the overlay of lower, upper and work, or a recursive bind of an
    OCI bundle's root (bundle_root: runc's restore). inherit: (fd, key) pairs CRIU takes
    in place of what the images name by key (the caller keeps and closes the fds);
    criu_flags: more of CRIU's options."""
    yard = cgroup_yard.plan()
    by_dest = {os.path.normpath(m["destination"]): m.get("source")
               for m in cfg.get("mounts") or []}
    args = [criu, "restore", "--images-dir", directory, "--work-dir", work_dir,
            "--log-file", "restore.log", "-v4", "--restore-detached",
            "--pidfile", os.path.join(work_dir, "criu.pid"), "--root", rootfs,
            "--manage-cgroups", "--cgroup-root", cgroup, "--network-lock", "nftables",
            "--display-stats", "--inherit-fd", f"fd[{netns_fd}]:{NETNS_KEY}",
            *cgroup_yard.args(yard), *criu_flags]
    for fd, key in inherit:
        args += ["--inherit-fd", f"fd[{fd}]:{key}"]
    if meta.get("tcp_established"):
        args.append("--tcp-established")
    if stopped:
        args.append("--leave-stopped")
    skeleton = {}
    if any(e.get("skeleton") for e in meta["mounts"]):  # this host's, for this state dir
        from zoned.cgroups import hierarchies
        from zoned.runtime.steps import make_skeleton

        skeleton = make_skeleton(work_dir, cfg, hierarchies())
    for e in meta["mounts"]:
        if e.get("skeleton"):
            source = skeleton[e["skeleton"]]
        elif e.get("cgroup"):  # its own cgroup directory, bound (zoned.checkpoint.dump)
            source = _cgroup_dir(e["cgroup"], cgroup)
        else:
            source = by_dest.get(os.path.normpath(e["destination"])) or e["source"]
        args += ["--ext-mount-map", f"{e['key']}:{source}"]
    unlink_if_exists(os.path.join(work_dir, "criu.pid"))  # an earlier restore's
    fds = [netns_fd]  # what criu inherits; ours to close: fds[1:]
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
            try:  # (not blocking: a FIFO without a reader fails here, never hangs)
                fd = os.open(path, acc | (fi["flags"] & os.O_APPEND) | os.O_NONBLOCK)
            except OSError as e:
                raise ZonedError(f"restore of {meta['id']!r}: {path}, a file its "
                                 f"processes had open: {e.strerror}") from None
            os.set_blocking(fd, True)
            fds.append(fd)
            args += ["--inherit-fd", f"fd[{fd}]:{fi['key']}"]
        if lazy_socket is not None:
            daemon = _lazy_pages_daemon(criu, directory, work_dir, lazy_socket)
            args.append("--lazy-pages")
            mark("lazy-pages daemon")
        # The overlay is mounted in criu's own mount namespace: criu and only criu sees
        # it; the restored container's mount namespace keeps it, the host's never has it.
        overlay = None if bundle_root else \
            (rootfs, f"lowerdir={lower},upperdir={upper},workdir={work}")
        r = run_criu(args, pass_fds=fds + ([log_fd] if log_fd is not None else []) +
                     [fd for fd, _ in inherit], yard=yard, overlay=overlay,
                     bind=(bundle_root, rootfs) if bundle_root else None)
        if r.returncode != 0:
            why = log_tail(os.path.join(work_dir, "restore.log")) or r.stderr.strip()
            raise ZonedError(f"restore of {meta['id']!r} from {directory} failed: {why}")
        mark("criu restore")
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


def _cgroup_dir(hierarchy: str, cgroup: str) -> str:
    """The directory of cgroup path `cgroup` in this host's hierarchy "FSTYPE:OPTIONS"."""
    from zoned.cgroups.detection import hierarchies

    for h in hierarchies():
        if f"{h.fstype}:{h.options}" == hierarchy:
            return h.mountpoint + "/" + cgroup.strip("/")
    raise ZonedError(f"the checkpoint binds cgroup hierarchy {hierarchy!r}, which this "
                     "host does not have")


# criu lazy-pages daemons of restored containers, by the container's pid: they serve page
# faults until every page has arrived (wait_lazy_pages).
LAZY_DAEMONS: dict[int, subprocess.Popen] = {}


def _lazy_pages_daemon(criu: str, directory: str, work_dir: str,
                       sock: int) -> subprocess.Popen:
    rfd, wfd = os.pipe()
    try:
        argv = criu_exec([criu, "lazy-pages", "--images-dir", directory, "--work-dir",
                          work_dir, "--log-file", "lazy-pages.log", "-v4", "--page-server",
                          "--ps-socket", str(sock), "--status-fd", str(wfd)])
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
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
