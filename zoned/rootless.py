"""Rootless zones: an ordinary user runs zones in a user namespace of their own.

zoned picks this mode by itself when it does not run as root (no flag), and says so in
`zoned info`. What changes:
- ids: the zone's root is the user; with a subordinate range in /etc/subuid and /etc/subgid
  (Debian's `uidmap`: newuidmap/newgidmap), ids 1..N map onto it, as podman does; without
  one (or without the tools), only the user's own id is mapped (root in the zone).
- paths: state under $XDG_RUNTIME_DIR/zoned (else /tmp/zoned-UID), writable layers and logs
  under $XDG_DATA_HOME/zoned (else ~/.local/share/zoned), images in its images/.
- cgroups: limits need a cgroup v2 subtree delegated to the user; where there is none (a
  v1 or hybrid host, no systemd delegation) zones run without a cgroup of their own, and
  zoned says so in one warning line, once per process, instead of failing.
- network: "none" (only lo, the default) works; bridges and veths need root.

Only cheap stdlib imports here: zoned.storage and the image store import it on `zoned run`.
"""
from __future__ import annotations

import os
import sys

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
_warned: set[str] = set()


def is_rootless() -> bool:
    return os.geteuid() != 0


def _own_dir(path: str, hint: str) -> str:
    """`path`, made 0700 if missing: a directory (no symlink) of the user's own that
    nobody else may use. Else one line, `hint` saying what to do.

    In /tmp another user can plant the name first (a directory, or a symlink to the
    victim's own files to swap later): zoned would then keep its state, and run hooks,
    where they choose. Checked on the name itself (lstat) after mkdir, so what is
    checked is what is used: in sticky /tmp nobody else can rename our directory away."""
    import stat

    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        from zoned.errors import ZonedError

        raise ZonedError(f"rootless: cannot make {path}: {e.strerror}; {hint}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        why = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        why = "is not a directory"
    elif st.st_uid != os.geteuid():
        why = f"belongs to uid {st.st_uid}, not to you"
    elif st.st_mode & 0o077:
        why = f"is open to others (mode {stat.S_IMODE(st.st_mode):o}, not 700)"
    else:
        return path
    from zoned.errors import ZonedError

    raise ZonedError(f"rootless: {path} {why}; {hint}")


def runtime_base() -> str:
    """Runtime state: $XDG_RUNTIME_DIR/zoned (a per-user tmpfs, cleared at logout), else
    /tmp/zoned-UID."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        path = os.path.join(xdg, "zoned")
        return _own_dir(path, "remove it, or set XDG_RUNTIME_DIR to a directory of yours")
    path = f"/tmp/zoned-{os.geteuid()}"
    return _own_dir(path, "set XDG_RUNTIME_DIR to a directory of yours (0700), or "
                          f"remove {path} if it is yours")


def data_base() -> str:
    """Persistent data: $XDG_DATA_HOME/zoned, else ~/.local/share/zoned."""
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "zoned")


def images_dir() -> str:
    return os.path.join(data_base(), "images")


def _user_names() -> tuple[str, ...]:
    uid = os.geteuid()
    try:
        import pwd

        return (pwd.getpwuid(uid).pw_name, str(uid))
    except (KeyError, ImportError):
        return (str(uid),)


def subordinate_range(path: str) -> tuple[int, int] | None:
    """The user's first range (start, count) in /etc/subuid or /etc/subgid, if any."""
    names = _user_names()
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    try:
                        start, count = int(parts[1]), int(parts[2])
                    except ValueError:
                        continue
                    if count > 0:
                        return start, count
    except OSError:
        pass
    return None


def find_tool(name: str) -> str | None:
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def id_mappings() -> tuple[list[dict], list[dict]]:
    """OCI uidMappings, gidMappings: 0 -> the user, 1..N -> the subordinate range (when the
    user has one and newuidmap/newgidmap are installed), else only 0 -> the user."""
    out = []
    for own, path, tool in ((os.geteuid(), SUBUID, "newuidmap"),
                            (os.getegid(), SUBGID, "newgidmap")):
        maps = [{"containerID": 0, "hostID": own, "size": 1}]
        sub = subordinate_range(path)
        if sub and find_tool(tool) and find_tool("newuidmap") and find_tool("newgidmap"):
            maps.append({"containerID": 1, "hostID": sub[0], "size": min(sub[1], 65536)})
        out.append(maps)
    return out[0], out[1]


def adapt_config(cfg: dict) -> dict:
    """An OCI config made for root, as a user can run it: its own user namespace with
    id_mappings(), no cgroup filesystem of the host's (none is the user's)."""
    linux = cfg.setdefault("linux", {})
    types = {n["type"] for n in linux.get("namespaces") or []}
    if "user" not in types:
        linux.setdefault("namespaces", []).append({"type": "user"})
        linux["uidMappings"], linux["gidMappings"] = id_mappings()
    cfg["mounts"] = [m for m in cfg.get("mounts") or [] if m.get("type") != "cgroup"]
    user = (cfg.get("process") or {}).get("user") or {}
    for kind, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
        want = int(user.get(kind, 0))
        maps = linux.get(key) or []
        if not any(m["containerID"] <= want < m["containerID"] + m["size"] for m in maps):
            from zoned.errors import ConfigError

            top = max(m["containerID"] + m["size"] for m in maps) - 1
            raise ConfigError(f"invalid --user: {kind} {want} is not mapped in a rootless "
                              f"zone (0-{top} are: give your user a range in "
                              f"/etc/sub{kind} for more)")
    gids = {m["containerID"] for m in linux.get("gidMappings") or [] if m["size"] == 1}
    if 5 not in gids and not any(m["containerID"] <= 5 < m["containerID"] + m["size"]
                                 for m in linux.get("gidMappings") or []):
        for m in cfg["mounts"]:  # devpts' gid=5 (tty) must be mapped (runc rootless too)
            if m.get("type") == "devpts":
                m["options"] = [o for o in m.get("options") or [] if o != "gid=5"]
    return cfg


def write_maps(pid: int, linux: dict) -> None:
    """Map a child's user namespace as an ordinary user: newuidmap/newgidmap (setuid, they
    check /etc/subuid) for a range; for only the user's own ids, the files themselves
    (the kernel allows that once setgroups is denied)."""
    from zoned.errors import ConfigError
    from zoned.linux.files import read_to_eof

    uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    if len(uids) == 1 and len(gids) == 1:
        for name, text in (("setgroups", "deny"),
                           ("uid_map", _line(uids[0])), ("gid_map", _line(gids[0]))):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise ConfigError(f"rootless: writing {name} failed: {e.strerror}") from None
        return
    running = []  # both at once: each is a setuid exec of a few ms, and neither waits
    try:  # for the other (each writes its own map)
        for tool, maps in (("newuidmap", uids), ("newgidmap", gids)):
            argv = [find_tool(tool) or tool, str(pid)]
            for m in maps:
                argv += [str(int(m["containerID"])), str(int(m["hostID"])),
                         str(int(m["size"]))]
            try:
                running.append((tool, *_spawn_quiet(argv)))
            except OSError as e:
                raise ConfigError(f"rootless: cannot run {tool}: {e.strerror} (the uidmap "
                                  "package has it)") from None
    finally:
        failed = []
        for tool, child, err in running:
            status = os.waitpid(child, 0)[1]
            try:
                text = read_to_eof(err, 65536).decode(errors="replace").strip()
            finally:
                os.close(err)
            if status != 0:
                failed.append(f"{tool} failed: {text or os.waitstatus_to_exitcode(status)}")
    if failed:
        raise ConfigError(f"rootless: {failed[0]} (is your range in {SUBUID}/{SUBGID}?)")


def _spawn_quiet(argv: list[str]) -> tuple[int, int]:
    """argv started with stdin and stdout on /dev/null and stderr on a pipe: (its pid, the
    pipe's read end). posix_spawn, not subprocess: that module's import alone is ~3 ms of a
    rootless run."""
    r, w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 2)])
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return pid, r


def _line(m: dict) -> str:
    return f"{int(m['containerID'])} {int(m['hostID'])} {int(m['size'])}\n"


def warn_once(key: str, message: str) -> None:
    """One warning line per process, on stderr (a test run of 100 zones says it once)."""
    if key not in _warned:
        _warned.add(key)
        print(f"zoned: warning: {message}", file=sys.stderr, flush=True)


MOUNT = "/sys/fs/cgroup"


def delegated_top(proc_cgroup: str | None = None, mount: str = MOUNT,
                  uid: int | None = None) -> str | None:
    """The topmost directory above (and including) our own v2 cgroup that `uid` (default:
    ours) owns, with cgroup.subtree_control and cgroup.procs it may write: the root of
    the subtree delegated to it. None on v1 or hybrid (/proc/self/cgroup has more than
    the one "0::" line) or when nothing of ours is delegated."""
    if proc_cgroup is None:
        try:
            with open("/proc/self/cgroup") as f:
                proc_cgroup = f.read()
        except OSError:
            return None
    lines = proc_cgroup.splitlines()
    if len(lines) != 1 or not lines[0].startswith("0::"):
        return None
    uid = os.geteuid() if uid is None else uid
    rel = lines[0][3:].rstrip("/")
    top = None
    while rel:
        d = mount + rel
        if not _ours(d, uid):
            break
        top = d
        rel = rel.rpartition("/")[0]
    return top


def _ours(d: str, uid: int) -> bool:
    try:
        if os.stat(d).st_uid != uid:
            return False
        return all(os.stat(os.path.join(d, f)).st_uid == uid
                   for f in ("cgroup.subtree_control", "cgroup.procs"))
    except OSError:
        return False


def delegated_cgroup() -> str | None:
    """The root of the cgroup v2 subtree the host delegates to this user (rootless zones
    are limited below it: zoned.rootless_cgroup), or None."""
    return delegated_top()


class NullCgroup:
    """The cgroup of a rootless zone on a host that delegates none: nothing to make or
    limit; the zone's PID 1 (its pid namespace) is what kill and delete end."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"NullCgroup({self.path!r})"

    def load_modules(self) -> None:
        pass

    def in_use(self) -> bool:
        return False

    def create(self) -> None:
        warn_once("cgroup", "rootless: no cgroup v2 subtree is delegated to you here, so "
                  "zones run without cgroup limits (memory, cpus, pids are not enforced)")

    def apply(self, resources: dict | None) -> None:
        pass

    def add(self, pid: int) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def stats(self) -> dict:
        return {}

    def exists(self) -> bool:
        return False

    def destroy(self, timeout: float = 5.0) -> None:
        pass

    def kill(self, sig: int = 9, timeout: float = 5.0) -> None:
        pass

    def frozen(self) -> bool:
        return False

    def freezer_dir(self) -> str | None:
        return None

    def thaw(self) -> None:
        pass

    def freeze(self, timeout: float = 5.0) -> None:
        from zoned.errors import ZonedError

        raise ZonedError("rootless: pause needs a delegated cgroup (none here)")

    def fast_kill(self) -> bool:
        return False


def describe() -> dict:
    """What `zoned info` shows for rootless mode."""
    uids, gids = id_mappings()
    return {
        "rootless": True,
        "uid_mappings": uids, "gid_mappings": gids,
        "state_root": os.environ.get("ZONED_ROOT") or runtime_base(),
        "data_root": os.environ.get("ZONED_DATA") or data_base(),
        "images": os.environ.get("ZONED_IMAGES") or images_dir(),
        "cgroups": f"below {d} (delegated to you: limits are enforced)"
        if (d := delegated_cgroup()) else
        "none (no delegated cgroup v2 subtree: limits are not enforced)",
        "network": "none (only lo); slirp4netns: " + ("yes" if find_tool("slirp4netns") else "no")
        + ", pasta: " + ("yes" if find_tool("pasta") else "no"),
    }


def _remove_own_tree(path: str) -> bool:
    """rmtree as the user, opening up (0700) a directory of the user's own it may not read
    or write (overlay's work/work is 0000): what a zone wrote as root in the zone is the
    user's too. False where that is not enough (a directory of a subordinate id)."""
    from zoned.linux.files import rmtree

    _open_up(os.path.join(path, "work", "work"))  # overlay's, 0000 at every zone's end
    for _ in range(2):
        try:
            rmtree(path)
            return True
        except PermissionError:  # (its filename is relative to the walk's fd: no use here)
            if not _open_up_below(path):
                return False
    return False


def _open_up_below(path: str) -> bool:
    """_open_up each directory below `path`, top-down (one opened up is walked next):
    whether any was."""
    opened = False
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            opened = _open_up(os.path.join(top, name)) or opened
    return opened


def _open_up(d: str) -> bool:
    """chmod 0700 the directory `d` if it is the user's and closed to them; never through
    a symlink (held by an O_PATH fd, changed through /proc/self/fd: a zone's files are
    its own to shape)."""
    try:
        fd = os.open(d, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o700 == 0o700:
            return False
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
        return True
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """rmtree for a rootless zone's data: its files belong to subordinate ids (and overlay
    leaves a mode-000 work/work), which only root in a namespace with the same mappings
    may remove, so the removal runs in a child mapped as the zone was (podman unshare)."""
    if _remove_own_tree(path):
        return
    from zoned.linux import syscalls as sc
    from zoned.linux.files import rmtree

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a short-lived helper
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            if os.read(go_r, 1) == b"g":
                rmtree(path)
                code = 0
        except BaseException:  # noqa: BLE001 - the parent reports it
            pass
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        os.read(ready_r, 1)
        uids, gids = id_mappings()
        write_maps(pid, {"uidMappings": uids, "gidMappings": gids})
        os.write(go_w, b"g")
    finally:
        os.close(ready_r)
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        from zoned.errors import ZonedError

        raise ZonedError(f"rootless: could not remove {path}")
