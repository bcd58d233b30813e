"""cgroups for containers: one interface, with a cgroup v1 implementation (also used on
hybrid hosts) and a cgroup v2 one, picked at run time from /proc/self/mountinfo.

Everything is done by reading and writing cgroupfs files directly (no subprocesses, no
systemd): this sits on the container start path, so it has to be cheap. Resources are the
OCI runtime-spec `linux.resources` object; the v1 and v2 translations follow runc/crun so a
spec behaves the same under zoned as under them.
"""
from __future__ import annotations

import errno
import functools
import os
import posixpath
import re
import signal
import struct
import time
from collections import namedtuple

from zoned.errors import ZonedError

__all__ = [
    "CgroupError", "Hierarchy", "Cgroup", "V1Cgroup", "V2Cgroup", "detect", "hierarchies",
    "list_paths", "remove_if_empty", "shares_to_weight", "blkio_to_io_weight",
    "swap_to_v2", "device_filter",
]



def _log():
    """The module logger, made on first use (logging costs start-up time)."""
    import logging

    return logging.getLogger(__name__)

UNLIMITED = -1  # what stats() reports for "no limit" (the spec's own spelling)

# The kernel's "no limit" on v1: PAGE_COUNTER_MAX pages, rounded to the page size.
_V1_UNLIMITED = 0x7FFFFFFFFFFFF000

# v1 controllers v2 also has (or implies): when one of them is mounted as v1 the host is
# v1/hybrid. net_cls, net_prio and perf_event alone don't make a host "v1".
_V1_ONLY_HARMLESS = {"net_cls", "net_prio", "perf_event"}

# v2 controllers create() enables in the parents, when the hierarchy offers them.
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")

class CgroupError(ZonedError, OSError):
    """A cgroup operation that failed or a resource this host can't enforce. The message is
    one line naming the spec field and the cgroup file; it is an OSError too, so callers
    that treat cgroupfs like any file system keep working."""

    def __init__(self, message: str, err: int | None = None, *, field: str | None = None,
                 path: str | None = None):
        if err is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, err, message)
        self.message = message
        self.field = field
        self.path = path

    def __str__(self) -> str:
        return self.message


# -- small file helpers (os.open/os.write: one write() per value, as cgroupfs requires) ---

def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_opt(path: str) -> str | None:
    try:
        return _read(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _int_or_max(text: str | None) -> int | None:
    """A limit as stats() reports it: None if unreadable, -1 for "max"/v1's huge value."""
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return UNLIMITED
    try:
        v = int(text)
    except ValueError:
        return None
    return UNLIMITED if v >= _V1_UNLIMITED else v


def _int_opt(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """A flat-keyed file (memory.stat, cpu.stat, memory.events) as a dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _set(field: str, path: str, value: str) -> None:
    """Write one cgroup file, turning failures into a CgroupError naming field and file."""
    try:
        _write(path, value)
    except FileNotFoundError:
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            raise CgroupError(f"{field}: cgroup {d} does not exist (create() it first)",
                              errno.ENOENT, field=field, path=path) from None
        raise CgroupError(f"{field}: {path} does not exist (controller not available for "
                          "this cgroup on this host)", errno.ENOENT, field=field,
                          path=path) from None
    except OSError as e:
        raise CgroupError(f"{field}: writing {value!r} to {path} failed: "
                          f"{os.strerror(e.errno or 0)}", e.errno, field=field,
                          path=path) from None


def _procs(d: str) -> set[int]:
    """PIDs in the cgroup directory `d` and every cgroup below it."""
    out: set[int] = set()
    stack = [d]
    while stack:
        cur = stack.pop()
        text = _read_opt(os.path.join(cur, "cgroup.procs"))
        if text is None:
            continue
        out.update(int(p) for p in text.split())
        try:
            with os.scandir(cur) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def _rmtree(d: str, deadline: float) -> None:
    """rmdir a cgroup and its sub-cgroups, bottom-up, retrying EBUSY until `deadline`
    (a just-killed task can keep the cgroup busy for a moment). Missing is fine."""
    try:
        with os.scandir(d) as it:
            subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for s in subs:
        _rmtree(s, deadline)
    delay = 0.001
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"destroy: rmdir {d} failed: {os.strerror(e.errno or 0)}"
                                  + (" (processes still in it?)" if e.errno == errno.EBUSY
                                     else ""), e.errno, path=d) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# -- spec value helpers -------------------------------------------------------------------

def _int(field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CgroupError(f"{field}: expected an integer, got {v!r}", errno.EINVAL, field=field)
    return v


def _get_int(obj: dict, key: str, field: str) -> int | None:
    v = obj.get(key)
    return None if v is None else _int(field, v)


def _check_keys(group: str, obj: Any, known: Iterable[str]) -> dict:
    if not isinstance(obj, dict):
        raise CgroupError(f"{group}: expected an object, got {obj!r}", errno.EINVAL,
                          field=group)
    for k in obj:
        if k not in known:
            _log().warning("cgroups: ignoring unknown field linux.resources.%s.%s", group, k)
    return obj


def _limit(v: int) -> str:
    """A byte/count limit where -1 means unlimited (v2 spelling)."""
    return "max" if v < 0 else str(v)


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the formula runc and crun use, so a
    spec gives the same relative weights under any of them."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc does."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_to_v2(swap: int | None, limit: int | None) -> int | None:
    """The spec's memory.swap is memory+swap (v1's memsw); v2's memory.swap.max is swap
    alone. Returns the memory.swap.max value (-1 for "max"), or None to leave it alone.
    Same rules as runc's ConvertMemorySwapToCgroupV2Value."""
    if limit == -1 and swap in (None, 0):
        return -1  # "memory unlimited" means swap too, as on v1
    if swap is None or swap == 0:
        return None
    if swap == -1:
        return -1
    if limit is None or limit <= 0:
        raise CgroupError("memory.swap: a swap limit needs a memory limit too "
                          "(memory.swap.max = swap - limit)", errno.EINVAL,
                          field="memory.swap")
    if swap < limit:
        raise CgroupError(f"memory.swap: {swap} is below memory.limit {limit} (the spec's "
                          "swap is memory+swap)", errno.EINVAL, field="memory.swap")
    return swap - limit


_PAGE_SIZE_RE = re.compile(r"^[0-9]+[KMGT]B$")


def _memory_fields(m: dict) -> tuple[int | None, int | None, int | None]:
    """Check linux.resources.memory and return its (limit, swap, reservation)."""
    _check_keys("memory", m, ("limit", "reservation", "swap", "kernel", "kernelTCP",
                              "swappiness", "disableOOMKiller", "useHierarchy",
                              "checkBeforeUpdate"))
    return (_get_int(m, "limit", "memory.limit"), _get_int(m, "swap", "memory.swap"),
            _get_int(m, "reservation", "memory.reservation"))


def _page_size(field: str, v: Any) -> str:
    if not isinstance(v, str) or not _PAGE_SIZE_RE.match(v):
        raise CgroupError(f"{field}: invalid pageSize {v!r} (expected e.g. '2MB', '1GB')",
                          errno.EINVAL, field=field)
    return v


def _devno(d: dict, field: str) -> str:
    return f"{_int(field + '.major', d.get('major'))}:{_int(field + '.minor', d.get('minor'))}"


# -- mountinfo ----------------------------------------------------------------------------

class Hierarchy(namedtuple("Hierarchy", "mountpoint fstype options controllers")):
    """One mounted cgroup hierarchy. `options` is the mount data that recreates it (the v1
    controllers and name=, "" for cgroup2), so the runtime can mount the same hierarchy
    inside a container's cgroup namespace. fstype: "cgroup" (v1) or "cgroup2"; options:
    "memory", "cpu,cpuacct", "name=systemd", ""; controllers: v1 from the options, v2 the
    root's cgroup.controllers. (A namedtuple, not a dataclass: this is on the start path.)"""

    __slots__ = ()


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _v1_subsystems() -> set[str]:
    text = _read_opt("/proc/cgroups") or ""
    names = {ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    return names or {"cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer",
                     "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}


def _parse_mountinfo(text: str, subsystems: set[str] | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies in a mountinfo text, one per superblock: a hierarchy bind-
    mounted elsewhere too (e.g. into a container rootfs) is listed once, preferring a mount
    of its root and the first one seen."""
    subsystems = subsystems if subsystems is not None else _v1_subsystems()
    chosen: dict[str, tuple[bool, Hierarchy]] = {}
    order: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        try:
            sep = parts.index("-", 6)
        except ValueError:
            continue
        fstype = parts[sep + 1] if len(parts) > sep + 1 else ""
        if fstype not in ("cgroup", "cgroup2"):
            continue
        devno, root, mnt = parts[2], _unescape(parts[3]), _unescape(parts[4])
        sopts = parts[sep + 3].split(",") if len(parts) > sep + 3 else []
        if fstype == "cgroup":
            keep = [o for o in sopts if o in subsystems or o.startswith("name=")]
            ctrls = tuple(o for o in keep if not o.startswith("name="))
            h = Hierarchy(mnt, fstype, ",".join(keep), ctrls)
        else:
            ctrls = tuple((_read_opt(os.path.join(mnt, "cgroup.controllers")) or "").split())
            h = Hierarchy(mnt, fstype, "", ctrls)
        key = f"{fstype}:{devno}"
        if key not in chosen:
            order.append(key)
            chosen[key] = (root == "/", h)
        elif root == "/" and not chosen[key][0]:
            chosen[key] = (True, h)
    return [chosen[k][1] for k in order]


def _classify(hs: list[Hierarchy]) -> str:
    has_v2 = any(h.fstype == "cgroup2" for h in hs)
    has_v1 = any(h.fstype == "cgroup" and set(h.controllers) - _V1_ONLY_HARMLESS for h in hs)
    if has_v1:
        return "hybrid" if has_v2 else "v1"
    if has_v2:
        return "v2"
    raise CgroupError("no cgroup file system is mounted (nothing in /proc/self/mountinfo)",
                      errno.ENOENT)


@functools.cache
def _mounts() -> tuple[Hierarchy, ...]:
    with open("/proc/self/mountinfo") as f:
        return tuple(_parse_mountinfo(f.read()))


@functools.cache
def detect() -> str:
    """"v1", "hybrid" (v1 controllers plus a cgroup2 mount) or "v2"; read once."""
    return _classify(list(_mounts()))


def hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies this process sees, in mountinfo order. On v2 that is the one
    cgroup2 mount; on v1/hybrid the v1 ones (name=systemd too) and the cgroup2 one if any."""
    hs = list(_mounts())
    if detect() == "v2":
        return [h for h in hs if h.fstype == "cgroup2"][:1]
    return hs


def _clean(path: str) -> str:
    if not isinstance(path, str) or not path or "\0" in path:
        raise CgroupError(f"cgroupsPath {path!r}: invalid", errno.EINVAL)
    p = posixpath.normpath("/" + path.lstrip("/"))  # ".." can't climb above the hierarchy root
    if p == "/":
        raise CgroupError("cgroupsPath '/': refusing to manage the root cgroup", errno.EINVAL)
    return p


def own_cgroup(text: str | None = None, mode: str | None = None) -> str:
    """Where a relative cgroupsPath goes: below the cgroup this process is in, as runc's
    cgroupfs driver does. On v2 that is the parent of our cgroup (runc's fs2: the cgroup
    we are in has processes, so it cannot delegate controllers to children). On v1 runc
    uses each controller's own cgroup; zoned keeps one path for every hierarchy, so it
    takes the deepest cgroup the v1 controllers agree on (the same path when they all
    agree, as they do for a root shell). `text` is a /proc/PID/cgroup, `mode` detect()'s
    answer: ours by default."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    unified, v1 = None, []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        elif parts[1]:
            v1.append(parts[2])
    if (mode or detect()) == "v2" or not v1:
        return posixpath.dirname(unified or "/")
    common = posixpath.commonpath(v1) if all(p.startswith("/") for p in v1) else "/"
    return common or "/"


# -- the interface ------------------------------------------------------------------------

class Cgroup:
    """A container's cgroup, named by an OCI cgroupsPath ("/zoned/<id>") that is relative to
    the root of every hierarchy. Cheap to construct: nothing touches cgroupfs until a
    method is called."""

    path: str

    @classmethod
    def open(cls, path: str) -> "Cgroup":
        """The implementation for this host: V2Cgroup on v2, V1Cgroup on v1 and hybrid."""
        if detect() == "v2":
            return V2Cgroup(path)
        return V1Cgroup(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # implemented by the subclasses
    def create(self) -> None: raise NotImplementedError
    def add(self, pid: int) -> None: raise NotImplementedError
    def pids(self) -> list[int]: raise NotImplementedError
    def stats(self) -> dict: raise NotImplementedError
    def freeze(self, timeout: float = 5.0) -> None: raise NotImplementedError
    def thaw(self) -> None: raise NotImplementedError
    def frozen(self) -> bool: raise NotImplementedError
    def exists(self) -> bool: raise NotImplementedError
    def destroy(self, timeout: float = 5.0) -> None: raise NotImplementedError
    def _fast_kill(self) -> bool: return False

    # runc's order: cpu first (it carries cpuset.cpus/mems), devices before limits
    _GROUPS = ("cpu", "devices", "memory", "pids", "blockIO", "hugepageLimits", "network",
               "rdma", "unified")

    def apply(self, resources: dict | None) -> None:
        """Set the OCI linux.resources on this cgroup. Absent or null fields are left alone;
        a field this host can't enforce raises CgroupError; unknown fields are logged."""
        if not resources:
            return
        if not isinstance(resources, dict):
            raise CgroupError(f"linux.resources: expected an object, got {resources!r}",
                              errno.EINVAL, field="resources")
        for k in resources:
            if k not in self._GROUPS:
                _log().warning("cgroups: ignoring unknown field linux.resources.%s", k)
        for g in self._GROUPS:
            v = resources.get(g)
            if v is not None:
                getattr(self, "_apply_" + g.lower())(v)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send `sig` to every process in the cgroup (and below). SIGKILL waits until the
        cgroup is empty (CgroupError after `timeout`) and leaves it thawed; other signals
        are sent once. The cgroup is frozen while signalling so nothing forks away."""
        if sig != signal.SIGKILL:
            pids = self.pids()
            if pids:
                self._signal_frozen(pids, sig)
            return
        deadline = time.monotonic() + timeout
        last = time.monotonic() if self._fast_kill() else 0.0
        delay = 0.0005
        while True:
            pids = self.pids()
            if not pids:
                if self.frozen():  # v2 keeps cgroup.freeze set; leave it usable, like v1
                    self.thaw()
                return
            now = time.monotonic()
            if now - last >= 0.1:  # (re)signal; dying tasks get a moment to leave first
                self._signal_frozen(pids, sig)
                last = now
            if now >= deadline:
                raise CgroupError(f"kill: {len(pids)} process(es) still in cgroup {self.path} "
                                  f"after {timeout:g}s: {pids[:10]}", errno.EBUSY)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _signal_frozen(self, pids: list[int], sig: int) -> None:
        was_frozen = False
        froze = False
        try:
            was_frozen = self.frozen()
            if not was_frozen:
                self.freeze(timeout=0.5)
                froze = True
        except CgroupError:
            pass  # no freezer, or stuck: signal anyway
        try:
            for pid in self.pids() if froze else pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            # a frozen v1 task can't die, so SIGKILL always thaws
            if froze or (was_frozen and sig == signal.SIGKILL):
                self.thaw()


def _wait(cond, timeout: float) -> bool:
    """Poll `cond` with a growing sleep; False if it is still false after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


# -- cgroup v2 ----------------------------------------------------------------------------

def _v2_hierarchy() -> Hierarchy:
    for h in _mounts():
        if h.fstype == "cgroup2":
            return h
    raise CgroupError("no cgroup2 hierarchy is mounted", errno.ENOENT)


class V2Cgroup(Cgroup):
    """A cgroup in the unified (v2) hierarchy. Also used for the cgroup2 half of a hybrid
    host (then with `controllers=()`: processes are tracked there, limits live in v1)."""

    def __init__(self, path: str, hierarchy: Hierarchy | None = None,
                 controllers: Iterable[str] | None = None):
        self.path = _clean(path)
        self.hierarchy = hierarchy or _v2_hierarchy()
        self.root = self.hierarchy.mountpoint
        self.dir = self.root + self.path
        self.controllers = tuple(V2_CONTROLLERS if controllers is None else controllers)

    def _f(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # -- lifecycle --
    def create(self) -> None:
        """mkdir -p, enabling our controllers in each parent's cgroup.subtree_control on
        the way down (a child only gets the controllers its parent delegates)."""
        cur = self.root
        for comp in self.path.strip("/").split("/"):
            if self.controllers:
                self._delegate(cur, self.controllers)
            cur = os.path.join(cur, comp)
            try:
                os.mkdir(cur)
            except FileExistsError:
                pass
            except OSError as e:
                raise CgroupError(f"create: mkdir {cur} failed: {os.strerror(e.errno or 0)}",
                                  e.errno, path=cur) from None

    @staticmethod
    def _delegate(d: str, want: Iterable[str]) -> None:
        avail = set((_read_opt(os.path.join(d, "cgroup.controllers")) or "").split())
        enabled = set((_read_opt(os.path.join(d, "cgroup.subtree_control")) or "").split())
        missing = [c for c in want if c in avail and c not in enabled]
        if not missing:
            return
        f = os.path.join(d, "cgroup.subtree_control")
        try:
            _write(f, " ".join("+" + c for c in missing))
            return
        except OSError:
            pass
        for c in missing:  # one at a time, so one refusal doesn't cost the others
            try:
                _write(f, "+" + c)
            except OSError as e:
                hint = (" (processes in a non-root parent: the 'no internal processes' rule)"
                        if e.errno == errno.EBUSY else "")
                _log().warning("cgroups: cannot enable %s in %s: %s%s", c, f,
                            os.strerror(e.errno or 0), hint)

    def _ensure_controller(self, ctrl: str) -> None:
        """Enable one controller down to this cgroup (hybrid hosts use this lazily)."""
        cur = self.root
        for comp in self.path.strip("/").split("/"):
            self._delegate(cur, (ctrl,))
            cur = os.path.join(cur, comp)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def add(self, pid: int) -> None:
        _set("add", self._f("cgroup.procs"), str(int(pid)))

    def pids(self) -> list[int]:
        return sorted(_procs(self.dir))

    def destroy(self, timeout: float = 5.0) -> None:
        _rmtree(self.dir, time.monotonic() + timeout)

    # -- freezer --
    def _events(self) -> dict[str, int]:
        return _keyed(_read_opt(self._f("cgroup.events")))

    def freeze(self, timeout: float = 5.0) -> None:
        _set("freeze", self._f("cgroup.freeze"), "1")
        if not _wait(lambda: self._events().get("frozen") == 1, timeout):
            _set("thaw", self._f("cgroup.freeze"), "0")
            raise CgroupError(f"freeze: cgroup {self.path} not frozen after {timeout:g}s "
                              f"({self._f('cgroup.events')})", errno.ETIMEDOUT)

    def thaw(self) -> None:
        _set("thaw", self._f("cgroup.freeze"), "0")
        _wait(lambda: self._events().get("frozen", 0) == 0, 1.0)

    def frozen(self) -> bool:
        return self._events().get("frozen") == 1

    def _fast_kill(self) -> bool:
        """cgroup.kill (Linux 5.14+): the kernel kills the whole subtree, races and all."""
        try:
            _write(self._f("cgroup.kill"), "1")
            return True
        except OSError:
            return False

    # -- stats --
    def stats(self) -> dict:
        if not self.exists():
            raise CgroupError(f"stats: cgroup {self.dir} does not exist", errno.ENOENT)
        mem_events = _keyed(_read_opt(self._f("memory.events")))
        cpu = _keyed(_read_opt(self._f("cpu.stat")))
        swap = _int_opt(_read_opt(self._f("memory.swap.current")))

        def us(k: str) -> int | None:
            return cpu[k] * 1000 if k in cpu else None

        return {
            "memory": {
                "usage": _int_opt(_read_opt(self._f("memory.current"))),
                "peak": _int_opt(_read_opt(self._f("memory.peak"))),
                "limit": _int_or_max(_read_opt(self._f("memory.max"))),
                "swap_usage": swap,
                "oom_kills": mem_events.get("oom_kill"),
                "oom_events": mem_events.get("oom"),
                "events": mem_events,
                "stat": _keyed(_read_opt(self._f("memory.stat"))),
            },
            "cpu": {
                "usage_ns": us("usage_usec"),
                "user_ns": us("user_usec"),
                "system_ns": us("system_usec"),
                "nr_periods": cpu.get("nr_periods"),
                "throttled_periods": cpu.get("nr_throttled"),
                "throttled_ns": us("throttled_usec"),
            },
            "pids": {
                "current": _int_opt(_read_opt(self._f("pids.current"))),
                "limit": _int_or_max(_read_opt(self._f("pids.max"))),
                "peak": _int_opt(_read_opt(self._f("pids.peak"))),
            },
            "frozen": self.frozen(),
        }

    # -- resources --
    def _apply_memory(self, m: dict) -> None:
        limit, swap, reservation = _memory_fields(m)
        if m.get("disableOOMKiller"):
            raise CgroupError("memory.disableOOMKiller: not supported on cgroup v2 (there is "
                              "no memory.oom_control)", errno.EOPNOTSUPP,
                              field="memory.disableOOMKiller")
        if m.get("swappiness") is not None:
            raise CgroupError("memory.swappiness: not supported on cgroup v2 (there is no "
                              "per-cgroup memory.swappiness)", errno.EOPNOTSUPP,
                              field="memory.swappiness")
        if m.get("kernelTCP") is not None:
            raise CgroupError("memory.kernelTCP: not supported on cgroup v2 (kernel memory "
                              "is part of memory.max)", errno.EOPNOTSUPP,
                              field="memory.kernelTCP")
        if m.get("useHierarchy") is False:
            raise CgroupError("memory.useHierarchy: cgroup v2 is always hierarchical",
                              errno.EOPNOTSUPP, field="memory.useHierarchy")
        if m.get("kernel") is not None:
            _log().warning("cgroups: memory.kernel is deprecated and ignored")
        if m.get("checkBeforeUpdate") and limit is not None and limit >= 0:
            usage = _int_opt(_read_opt(self._f("memory.current")))
            if usage is not None and limit < usage:
                raise CgroupError(f"memory.limit: {limit} is below current usage {usage} "
                                  "(checkBeforeUpdate)", errno.EBUSY, field="memory.limit")
        swap_max = swap_to_v2(swap, limit)
        if swap_max is not None:
            f = self._f("memory.swap.max")
            if os.path.exists(f):
                _set("memory.swap", f, _limit(swap_max))
            elif not (swap_max == -1 or (swap_max == 0 and swap == limit)):
                raise CgroupError(f"memory.swap: swap accounting is not available ({f} is "
                                  "missing); only swap == limit or -1 can be honoured",
                                  errno.EOPNOTSUPP, field="memory.swap", path=f)
        if limit is not None:
            _set("memory.limit", self._f("memory.max"), _limit(limit))
        if reservation is not None:
            _set("memory.reservation", self._f("memory.low"), _limit(reservation))

    def _apply_cpu(self, c: dict) -> None:
        _check_keys("cpu", c, ("shares", "quota", "period", "burst", "realtimeRuntime",
                               "realtimePeriod", "cpus", "mems", "idle"))
        if c.get("cpus"):
            _set("cpu.cpus", self._f("cpuset.cpus"), str(c["cpus"]))
        if c.get("mems"):
            _set("cpu.mems", self._f("cpuset.mems"), str(c["mems"]))
        for k in ("realtimeRuntime", "realtimePeriod"):
            if c.get(k):
                raise CgroupError(f"cpu.{k}: not supported on cgroup v2 (no real-time group "
                                  "scheduling)", errno.EOPNOTSUPP, field=f"cpu.{k}")
        shares = _get_int(c, "shares", "cpu.shares")
        if shares:
            _set("cpu.shares", self._f("cpu.weight"), str(shares_to_weight(shares)))
        quota = _get_int(c, "quota", "cpu.quota")
        period = _get_int(c, "period", "cpu.period")
        if quota or period:
            f = self._f("cpu.max")
            if quota:
                q = "max" if quota < 0 else str(quota)
            else:  # only the period changes: keep the current quota
                q = ((_read_opt(f) or "max").split() or ["max"])[0]
            _set("cpu.quota", f, f"{q} {period}" if period else q)
        burst = _get_int(c, "burst", "cpu.burst")
        if burst is not None:
            _set("cpu.burst", self._f("cpu.max.burst"), str(burst))
        idle = _get_int(c, "idle", "cpu.idle")
        if idle is not None:
            _set("cpu.idle", self._f("cpu.idle"), str(idle))

    def _apply_pids(self, p: dict) -> None:
        _check_keys("pids", p, ("limit",))
        limit = _get_int(p, "limit", "pids.limit")
        if limit is not None:
            _set("pids.limit", self._f("pids.max"), "max" if limit <= 0 else str(limit))

    def _apply_blockio(self, b: dict) -> None:
        _check_keys("blockIO", b, ("weight", "leafWeight", "weightDevice",
                                   "throttleReadBpsDevice", "throttleWriteBpsDevice",
                                   "throttleReadIOPSDevice", "throttleWriteIOPSDevice"))
        bfq = self._f("io.bfq.weight")
        has_bfq = os.path.exists(bfq)
        if b.get("leafWeight"):
            raise CgroupError("blockIO.leafWeight: not supported on cgroup v2",
                              errno.EOPNOTSUPP, field="blockIO.leafWeight")
        w = _get_int(b, "weight", "blockIO.weight")
        if w:
            if has_bfq:
                _set("blockIO.weight", bfq, str(w))
            else:
                _set("blockIO.weight", self._f("io.weight"), str(blkio_to_io_weight(w)))
        for i, d in enumerate(b.get("weightDevice") or []):
            field = f"blockIO.weightDevice[{i}]"
            if d.get("leafWeight"):
                raise CgroupError(f"{field}.leafWeight: not supported on cgroup v2",
                                  errno.EOPNOTSUPP, field=field)
            dw = _get_int(d, "weight", field + ".weight")
            if dw:
                if has_bfq:
                    _set(field, bfq, f"{_devno(d, field)} {dw}")
                else:
                    _set(field, self._f("io.weight"),
                         f"{_devno(d, field)} {blkio_to_io_weight(dw)}")
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for i, d in enumerate(b.get(key) or []):
                field = f"blockIO.{key}[{i}]"
                rate = _int(field + ".rate", d.get("rate"))
                _set(field, self._f("io.max"),
                     f"{_devno(d, field)} {name}={rate if rate > 0 else 'max'}")

    def _apply_hugepagelimits(self, limits: list) -> None:
        for i, h in enumerate(limits):
            field = f"hugepageLimits[{i}]"
            size = _page_size(field + ".pageSize", h.get("pageSize"))
            limit = _int(field + ".limit", h.get("limit"))
            _set(field, self._f(f"hugetlb.{size}.max"), _limit(limit))
            rsvd = self._f(f"hugetlb.{size}.rsvd.max")
            if os.path.exists(rsvd):
                _set(field, rsvd, _limit(limit))

    def _apply_network(self, n: dict) -> None:
        _check_keys("network", n, ("classID", "priorities"))
        if n.get("classID") or n.get("priorities"):
            raise CgroupError("network: net_cls/net_prio are not supported on cgroup v2 "
                              "(use eBPF/tc instead)", errno.EOPNOTSUPP, field="network")

    def _apply_rdma(self, r: dict) -> None:
        _rdma(r, self._f("rdma.max"))

    def _apply_unified(self, u: dict) -> None:
        if not isinstance(u, dict):
            raise CgroupError(f"unified: expected an object, got {u!r}", errno.EINVAL,
                              field="unified")
        for key, value in u.items():
            field = f"unified[{key!r}]"
            if "/" in key or key.startswith(".") or "." not in key:
                raise CgroupError(f"{field}: not a cgroup file name", errno.EINVAL,
                                  field=field)
            f = self._f(key)
            if not os.path.exists(f):
                ctrl = key.split(".")[0]
                raise CgroupError(f"{field}: {f} does not exist (controller {ctrl!r} not "
                                  "enabled for this cgroup)", errno.ENOENT, field=field,
                                  path=f)
            _set(field, f, str(value))

    def _apply_devices(self, rules: list) -> None:
        """v2 has no devices files: the allow-list is an eBPF program attached to the
        cgroup (BPF_PROG_TYPE_CGROUP_DEVICE), replacing the one we attached before."""
        prog = device_filter(rules)
        _attach_device_filter(self.dir, prog)


def _rdma(r: dict, f: str) -> None:
    if not isinstance(r, dict):
        raise CgroupError(f"rdma: expected an object, got {r!r}", errno.EINVAL, field="rdma")
    for dev, lim in r.items():
        field = f"rdma[{dev!r}]"
        parts = []
        for key, name in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")):
            v = (lim or {}).get(key)
            if v is not None:
                parts.append(f"{name}={_int(field + '.' + key, v)}")
        if parts:
            _set(field, f, f"{dev} {' '.join(parts)}")


# -- cgroup v1 (and hybrid) ---------------------------------------------------------------

class V1Cgroup(Cgroup):
    """The same path in every v1 hierarchy; on a hybrid host also in the cgroup2 one, so the
    container's processes are tracked there too (as runc does)."""

    def __init__(self, path: str, mounts: list[Hierarchy] | None = None):
        self.path = _clean(path)
        hs = list(_mounts()) if mounts is None else mounts
        self.dirs: list[str] = []
        self._by_ctrl: dict[str, str] = {}
        self.unified: V2Cgroup | None = None
        for h in hs:
            if h.fstype == "cgroup":
                d = h.mountpoint + self.path
                self.dirs.append(d)
                for c in h.controllers:
                    self._by_ctrl[c] = d
            elif self.unified is None:
                self.unified = V2Cgroup(self.path, h, controllers=())
        if not self.dirs:
            raise CgroupError("no cgroup v1 hierarchy is mounted", errno.ENOENT)

    def _f(self, name: str, field: str) -> str:
        ctrl = name.split(".")[0]
        d = self._by_ctrl.get(ctrl)
        if d is None:
            raise CgroupError(f"{field}: the {ctrl} controller is not mounted (no v1 "
                              f"hierarchy for {name})", errno.EOPNOTSUPP, field=field)
        return os.path.join(d, name)

    def _opt(self, name: str) -> str | None:
        """The file's path if its controller is mounted (for stats), else None."""
        d = self._by_ctrl.get(name.split(".")[0])
        return os.path.join(d, name) if d else None

    def _unified_for(self, ctrl: str) -> V2Cgroup | None:
        """On hybrid hosts a controller absent from v1 may be in the cgroup2 hierarchy
        (hugetlb often is): use it there, enabling it down to our cgroup on first use."""
        u = self.unified
        if ctrl in self._by_ctrl or u is None or ctrl not in u.hierarchy.controllers:
            return None
        u._ensure_controller(ctrl)
        return u

    # -- lifecycle --
    def create(self) -> None:
        comps = self.path.strip("/").split("/")
        cpuset = self._by_ctrl.get("cpuset")
        memory = self._by_ctrl.get("memory")
        for d in self.dirs:
            mnt = d[: len(d) - len(self.path)]
            cur = mnt
            for comp in comps:
                parent, cur = cur, os.path.join(cur, comp)
                try:
                    os.mkdir(cur)
                    new = True
                except FileExistsError:
                    new = False
                except OSError as e:
                    raise CgroupError(f"create: mkdir {cur} failed: "
                                      f"{os.strerror(e.errno or 0)}", e.errno, path=cur) from None
                if d == cpuset:
                    self._cpuset_inherit(parent, cur, new)
                elif d == memory and new:
                    self._memory_hierarchy(cur)
        if self.unified is not None:
            try:
                self.unified.create()
            except CgroupError as e:  # tracking in cgroup2 is a nicety on hybrid hosts
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                _log().warning("cgroups: not tracking %s in cgroup2: %s", self.path, e)
                self.unified = None

    @staticmethod
    def _cpuset_inherit(parent: str, cur: str, new: bool) -> None:
        """A new v1 cpuset starts with empty cpus/mems and then refuses tasks (ENOSPC):
        copy the parent's, as runc does."""
        for name in ("cpuset.cpus", "cpuset.mems"):
            f = os.path.join(cur, name)
            if not new and (_read_opt(f) or "").strip():
                continue
            _set("create", f, (_read(os.path.join(parent, name)).strip() or "\n"))

    @staticmethod
    def _memory_hierarchy(d: str) -> None:
        """Old kernels (< 5.x) default memory.use_hierarchy to 0 at the root, so a limit on
        /zoned wouldn't cover its children; newer ones are always hierarchical and the file
        reads 1. Best effort: it can only be changed while the cgroup has no children."""
        f = os.path.join(d, "memory.use_hierarchy")
        if (_read_opt(f) or "1").strip() == "0":
            try:
                _write(f, "1")
            except OSError as e:
                _log().warning("cgroups: cannot set %s: %s", f, os.strerror(e.errno or 0))

    def exists(self) -> bool:
        return (any(os.path.isdir(d) for d in self.dirs)
                or (self.unified is not None and self.unified.exists()))

    def add(self, pid: int) -> None:
        v = str(int(pid))
        for d in self.dirs:
            _set("add", os.path.join(d, "cgroup.procs"), v)
        if self.unified is not None and self.unified.exists():
            self.unified.add(pid)

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            out |= _procs(d)
        if self.unified is not None:
            out |= _procs(self.unified.dir)
        return sorted(out)

    def destroy(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            _rmtree(d, deadline)
        if self.unified is not None:
            _rmtree(self.unified.dir, deadline)

    def _fast_kill(self) -> bool:
        # hybrid: our processes are in the cgroup2 twin too, and cgroup.kill works there
        return self.unified is not None and self.unified.exists() and self.unified._fast_kill()

    # -- freezer --
    def _freezer(self) -> str | None:
        return self._opt("freezer.state")

    def freeze(self, timeout: float = 5.0) -> None:
        f = self._freezer()
        if f is None:
            if self.unified is not None:
                return self.unified.freeze(timeout)
            raise CgroupError("freeze: the freezer controller is not mounted", errno.EOPNOTSUPP)
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            # runc's recipe: keep asking; thaw now and then so tasks stuck mid-fork/vfork
            # get a chance to reach the refrigerator.
            if i % 50 == 49:
                _set("freeze", f, "THAWED")
                time.sleep(0.01)
            _set("freeze", f, "FROZEN")
            state = _wait(lambda: _read(f).strip() == "FROZEN",
                          0.0 if i % 25 != 24 else 0.01)
            if state:
                return
            i += 1
            if time.monotonic() >= deadline:
                _set("thaw", f, "THAWED")
                raise CgroupError(f"freeze: cgroup {self.path} still FREEZING after "
                                  f"{timeout:g}s ({f})", errno.ETIMEDOUT, path=f)
            time.sleep(min(0.0002 * (i + 1), 0.01))

    def thaw(self) -> None:
        f = self._freezer()
        if f is None:
            if self.unified is not None:
                return self.unified.thaw()
            raise CgroupError("thaw: the freezer controller is not mounted", errno.EOPNOTSUPP)
        _set("thaw", f, "THAWED")

    def frozen(self) -> bool:
        f = self._freezer()
        if f is None:
            return self.unified.frozen() if self.unified is not None else False
        return (_read_opt(f) or "").strip() == "FROZEN"

    # -- stats --
    def stats(self) -> dict:
        if not self.exists():
            raise CgroupError(f"stats: cgroup {self.path} does not exist", errno.ENOENT)

        def rd(name: str) -> str | None:
            p = self._opt(name)
            return _read_opt(p) if p else None

        oom = _keyed(rd("memory.oom_control"))
        usage = _int_opt(rd("memory.usage_in_bytes"))
        memsw = _int_opt(rd("memory.memsw.usage_in_bytes"))
        failcnt = _int_opt(rd("memory.failcnt"))
        cpu = _keyed(rd("cpu.stat"))
        usage_user = _int_opt(rd("cpuacct.usage_user"))
        usage_sys = _int_opt(rd("cpuacct.usage_sys"))
        if usage_user is None:  # older kernels: USER_HZ ticks only
            st = _keyed(rd("cpuacct.stat"))
            hz = os.sysconf("SC_CLK_TCK")
            usage_user = st["user"] * 10**9 // hz if "user" in st else None
            usage_sys = st["system"] * 10**9 // hz if "system" in st else None
        return {
            "memory": {
                "usage": usage,
                "peak": _int_opt(rd("memory.max_usage_in_bytes")),
                "limit": _int_or_max(rd("memory.limit_in_bytes")),
                "swap_usage": (memsw - usage) if memsw is not None and usage is not None
                else None,
                # oom_kill is in memory.oom_control since 4.13; failcnt (limit hits) is
                # the closest older kernels offer
                "oom_kills": oom.get("oom_kill", failcnt if oom else None),
                "under_oom": oom.get("under_oom"),
                "failcnt": failcnt,
                "stat": _keyed(rd("memory.stat")),
            },
            "cpu": {
                "usage_ns": _int_opt(rd("cpuacct.usage")),
                "user_ns": usage_user,
                "system_ns": usage_sys,
                "nr_periods": cpu.get("nr_periods"),
                "throttled_periods": cpu.get("nr_throttled"),
                "throttled_ns": cpu.get("throttled_time"),
            },
            "pids": {
                "current": _int_opt(rd("pids.current")),
                "limit": _int_or_max(rd("pids.max")),
                "peak": _int_opt(rd("pids.peak")),
            },
            "frozen": self.frozen(),
        }

    # -- resources --
    def _apply_memory(self, m: dict) -> None:
        limit, swap, reservation = _memory_fields(m)
        lim_f = self._f("memory.limit_in_bytes", "memory.limit")
        if m.get("checkBeforeUpdate") and limit is not None and limit >= 0:
            usage = _int_opt(_read_opt(self._f("memory.usage_in_bytes", "memory.limit")))
            if usage is not None and limit < usage:
                raise CgroupError(f"memory.limit: {limit} is below current usage {usage} "
                                  "(checkBeforeUpdate)", errno.EBUSY, field="memory.limit",
                                  path=lim_f)
        if m.get("useHierarchy") is not None:
            _set("memory.useHierarchy", self._f("memory.use_hierarchy", "memory.useHierarchy"),
                 "1" if m["useHierarchy"] else "0")
        sw_f = self._f("memory.memsw.limit_in_bytes", "memory.swap")
        if swap is not None and swap != 0 and not os.path.exists(sw_f):
            if not (swap == -1 or swap == limit):
                raise CgroupError(f"memory.swap: swap accounting is not enabled ({sw_f} is "
                                  "missing); only swap == limit or -1 can be honoured",
                                  errno.EOPNOTSUPP, field="memory.swap", path=sw_f)
            swap = None
        if swap == 0:
            swap = None  # runc: 0 means "not set"
        if limit is not None and swap is not None:
            # memsw must stay >= limit at every step: order the writes like runc does
            cur = _int_opt(_read_opt(lim_f))
            if swap == -1 or (cur is not None and cur < swap):
                _set("memory.swap", sw_f, str(swap))
                _set("memory.limit", lim_f, str(limit))
            else:
                _set("memory.limit", lim_f, str(limit))
                _set("memory.swap", sw_f, str(swap))
        elif limit is not None:
            _set("memory.limit", lim_f, str(limit))
        elif swap is not None:
            _set("memory.swap", sw_f, str(swap))
        if reservation is not None:
            _set("memory.reservation",
                 self._f("memory.soft_limit_in_bytes", "memory.reservation"), str(reservation))
        if m.get("kernel") is not None:
            _log().warning("cgroups: memory.kernel is deprecated and ignored")
        if m.get("kernelTCP") is not None:
            _set("memory.kernelTCP",
                 self._f("memory.kmem.tcp.limit_in_bytes", "memory.kernelTCP"),
                 str(_int("memory.kernelTCP", m["kernelTCP"])))
        sw = m.get("swappiness")
        if sw is not None:
            sw = _int("memory.swappiness", sw)
            if not 0 <= sw <= 100:
                raise CgroupError(f"memory.swappiness: {sw} is outside 0..100", errno.EINVAL,
                                  field="memory.swappiness")
            _set("memory.swappiness", self._f("memory.swappiness", "memory.swappiness"),
                 str(sw))
        if m.get("disableOOMKiller"):
            _set("memory.disableOOMKiller",
                 self._f("memory.oom_control", "memory.disableOOMKiller"), "1")

    def _apply_cpu(self, c: dict) -> None:
        _check_keys("cpu", c, ("shares", "quota", "period", "burst", "realtimeRuntime",
                               "realtimePeriod", "cpus", "mems", "idle"))
        if c.get("cpus"):
            _set("cpu.cpus", self._f("cpuset.cpus", "cpu.cpus"), str(c["cpus"]))
        if c.get("mems"):
            _set("cpu.mems", self._f("cpuset.mems", "cpu.mems"), str(c["mems"]))
        shares = _get_int(c, "shares", "cpu.shares")
        if shares:
            _set("cpu.shares", self._f("cpu.shares", "cpu.shares"), str(shares))
        quota = _get_int(c, "quota", "cpu.quota")
        period = _get_int(c, "period", "cpu.period")
        if period:
            pf = self._f("cpu.cfs_period_us", "cpu.period")
            try:
                _set("cpu.period", pf, str(period))
            except CgroupError:
                if not quota:
                    raise
                # the current quota doesn't fit the new period: quota first, then period
                _set("cpu.quota", self._f("cpu.cfs_quota_us", "cpu.quota"), str(quota))
        if quota:
            _set("cpu.quota", self._f("cpu.cfs_quota_us", "cpu.quota"), str(quota))
            if period:
                _set("cpu.period", self._f("cpu.cfs_period_us", "cpu.period"), str(period))
        burst = _get_int(c, "burst", "cpu.burst")
        if burst is not None:
            _set("cpu.burst", self._f("cpu.cfs_burst_us", "cpu.burst"), str(burst))
        rt_period = _get_int(c, "realtimePeriod", "cpu.realtimePeriod")
        if rt_period:
            _set("cpu.realtimePeriod", self._f("cpu.rt_period_us", "cpu.realtimePeriod"),
                 str(rt_period))
        rt_runtime = _get_int(c, "realtimeRuntime", "cpu.realtimeRuntime")
        if rt_runtime:
            _set("cpu.realtimeRuntime", self._f("cpu.rt_runtime_us", "cpu.realtimeRuntime"),
                 str(rt_runtime))
        idle = _get_int(c, "idle", "cpu.idle")
        if idle is not None:
            _set("cpu.idle", self._f("cpu.idle", "cpu.idle"), str(idle))

    def _apply_pids(self, p: dict) -> None:
        _check_keys("pids", p, ("limit",))
        limit = _get_int(p, "limit", "pids.limit")
        if limit is not None:
            _set("pids.limit", self._f("pids.max", "pids.limit"),
                 "max" if limit <= 0 else str(limit))

    def _blkio(self, names: tuple[str, ...], field: str) -> str:
        for n in names:
            f = self._f(n, field)
            if os.path.exists(f):
                return f
        raise CgroupError(f"{field}: none of {', '.join(names)} exists (no CFQ/BFQ "
                          "scheduler with weights)", errno.EOPNOTSUPP, field=field)

    def _apply_blockio(self, b: dict) -> None:
        _check_keys("blockIO", b, ("weight", "leafWeight", "weightDevice",
                                   "throttleReadBpsDevice", "throttleWriteBpsDevice",
                                   "throttleReadIOPSDevice", "throttleWriteIOPSDevice"))
        w = _get_int(b, "weight", "blockIO.weight")
        if w:
            _set("blockIO.weight", self._blkio(("blkio.weight", "blkio.bfq.weight"),
                                               "blockIO.weight"), str(w))
        lw = _get_int(b, "leafWeight", "blockIO.leafWeight")
        if lw:
            _set("blockIO.leafWeight", self._f("blkio.leaf_weight", "blockIO.leafWeight"),
                 str(lw))
        for i, d in enumerate(b.get("weightDevice") or []):
            field = f"blockIO.weightDevice[{i}]"
            dw = _get_int(d, "weight", field + ".weight")
            if dw:
                f = self._blkio(("blkio.weight_device", "blkio.bfq.weight_device"), field)
                _set(field, f, f"{_devno(d, field)} {dw}")
            dlw = _get_int(d, "leafWeight", field + ".leafWeight")
            if dlw:
                _set(field, self._f("blkio.leaf_weight_device", field),
                     f"{_devno(d, field)} {dlw}")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for i, d in enumerate(b.get(key) or []):
                field = f"blockIO.{key}[{i}]"
                rate = _int(field + ".rate", d.get("rate"))
                _set(field, self._f("blkio.throttle." + name, field),
                     f"{_devno(d, field)} {rate}")

    def _apply_hugepagelimits(self, limits: list) -> None:
        u = self._unified_for("hugetlb")
        if u is not None:
            return u._apply_hugepagelimits(limits)
        for i, h in enumerate(limits):
            field = f"hugepageLimits[{i}]"
            size = _page_size(field + ".pageSize", h.get("pageSize"))
            limit = _int(field + ".limit", h.get("limit"))
            _set(field, self._f(f"hugetlb.{size}.limit_in_bytes", field), str(limit))
            rsvd = self._f(f"hugetlb.{size}.rsvd.limit_in_bytes", field)
            if os.path.exists(rsvd):
                _set(field, rsvd, str(limit))

    def _apply_network(self, n: dict) -> None:
        _check_keys("network", n, ("classID", "priorities"))
        cid = _get_int(n, "classID", "network.classID")
        if cid is not None:
            _set("network.classID", self._f("net_cls.classid", "network.classID"), str(cid))
        for i, p in enumerate(n.get("priorities") or []):
            field = f"network.priorities[{i}]"
            _set(field, self._f("net_prio.ifpriomap", field),
                 f"{p.get('name')} {_int(field + '.priority', p.get('priority'))}")

    def _apply_rdma(self, r: dict) -> None:
        u = self._unified_for("rdma")
        if u is not None:
            return u._apply_rdma(r)
        _rdma(r, self._f("rdma.max", "rdma"))

    def _apply_unified(self, u: dict) -> None:
        if not u:
            return
        if self.unified is None:
            raise CgroupError("unified: cgroup v2 resources need a cgroup v2 hierarchy "
                              "(this host is cgroup v1 only)", errno.EOPNOTSUPP,
                              field="unified")
        for key in u:  # hybrid: v2 keys apply to the cgroup2 twin, controller enabled lazily
            ctrl = str(key).split(".")[0]
            if ctrl in self.unified.hierarchy.controllers:
                self.unified._ensure_controller(ctrl)
        self.unified._apply_unified(u)

    def _apply_devices(self, rules: list) -> None:
        allow_f = self._f("devices.allow", "devices")
        deny_f = self._f("devices.deny", "devices")
        writes = _v1_device_writes(rules)
        for allow, entry in writes:
            _set("devices", allow_f if allow else deny_f, entry)


# -- devices ------------------------------------------------------------------------------

_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD/READ/WRITE
_TYPE_BITS = {"b": 1, "c": 2}            # BPF_DEVCG_DEV_BLOCK/CHAR


def _device_rule(i: int, r: Any) -> tuple[bool, str, int | None, int | None, str]:
    field = f"devices[{i}]"
    if not isinstance(r, dict):
        raise CgroupError(f"{field}: expected an object, got {r!r}", errno.EINVAL, field=field)
    allow = r.get("allow")
    if not isinstance(allow, bool):
        raise CgroupError(f"{field}.allow: expected true or false, got {allow!r}",
                          errno.EINVAL, field=field)
    typ = r.get("type") or "a"
    if typ not in ("a", "b", "c"):
        raise CgroupError(f"{field}.type: expected 'a', 'b' or 'c', got {typ!r}",
                          errno.EINVAL, field=field)
    access = r.get("access") or "rwm"
    if not isinstance(access, str) or set(access) - set("rwm"):
        raise CgroupError(f"{field}.access: expected letters of 'rwm', got {access!r}",
                          errno.EINVAL, field=field)
    major, minor = r.get("major"), r.get("minor")
    major = None if major is None or major == -1 else _int(field + ".major", major)
    minor = None if minor is None or minor == -1 else _int(field + ".minor", minor)
    access = "".join(c for c in "rwm" if c in access)
    return allow, typ, major, minor, access


def _v1_device_writes(rules: list) -> list[tuple[bool, str]]:
    """The v1 devices.allow/deny writes for an OCI rule list: deny everything, then each
    rule in order (the kernel's exception list then matches the spec's last-rule-wins
    for the usual default-deny-plus-allows lists)."""
    out: list[tuple[bool, str]] = [(False, "a")]
    for i, r in enumerate(rules or []):
        allow, typ, major, minor, access = _device_rule(i, r)
        mj = "*" if major is None else str(major)
        mn = "*" if minor is None else str(minor)
        if typ == "a" and major is None and minor is None and access == "rwm":
            entries = ["a"]  # the kernel's "everything": resets the exception list
        elif typ == "a":
            entries = [f"b {mj}:{mn} {access}", f"c {mj}:{mn} {access}"]
        else:
            entries = [f"{typ} {mj}:{mn} {access}"]
        out.extend((allow, e) for e in entries)
    if len(out) > 1 and out[1] == (False, "a"):
        out.pop(0)  # the spec already starts with deny-all
    return out


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_LDXW, _AND32K, _RSH32K, _MOV32X, _MOV64K = 0x61, 0x54, 0x74, 0xBC, 0xB7
_JNEK, _JNEX, _EXIT = 0x55, 0x5D, 0x95


def device_filter(rules: list) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program for an OCI device rule list: the last matching
    rule decides, nothing matching is denied (runc's devicefilter, same layout)."""
    parsed = [_device_rule(i, r) for i, r in enumerate(rules or [])]
    prog = [
        _insn(_LDXW, 2, 1, 0),            # r2 = ctx->access_type
        _insn(_AND32K, 2, imm=0xFFFF),    # r2 = device type
        _insn(_LDXW, 3, 1, 0),
        _insn(_RSH32K, 3, imm=16),        # r3 = requested access
        _insn(_LDXW, 4, 1, 4),            # r4 = major
        _insn(_LDXW, 5, 1, 8),            # r5 = minor
    ]
    for allow, typ, major, minor, access in reversed(parsed):
        conds: list[list[bytes]] = []
        if typ != "a":
            conds.append([_insn(_JNEK, 2, imm=_TYPE_BITS[typ])])
        if access != "rwm":
            mask = sum(_ACCESS_BITS[c] for c in access)
            conds.append([_insn(_MOV32X, 1, 3), _insn(_AND32K, 1, imm=mask),
                          _insn(_JNEX, 1, 3)])   # requested must be a subset of allowed
        if major is not None:
            conds.append([_insn(_JNEK, 4, imm=major)])
        if minor is not None:
            conds.append([_insn(_JNEK, 5, imm=minor)])
        block = [i for c in conds for i in c] + [_insn(_MOV64K, 0, imm=int(allow)),
                                                 _insn(_EXIT)]
        # patch each jump to skip to the end of this block
        for j, ins in enumerate(block):
            if ins[0] in (_JNEK, _JNEX):
                block[j] = ins[:2] + struct.pack("<h", len(block) - j - 1) + ins[4:]
        prog.extend(block)
        if not conds:
            return b"".join(prog)  # unconditional: rules before it can't matter (and the
            #                        verifier rejects unreachable code)
    prog += [_insn(_MOV64K, 0, imm=0), _insn(_EXIT)]
    return b"".join(prog)


_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_GET_FD_BY_ID, _BPF_PROG_QUERY = 13, 16
_BPF_PROG_TYPE_CGROUP_DEVICE, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI = 15, 6, 2


def _bpf(cmd: int, attr: bytearray, what: str) -> int:
    from zoned import syscalls

    try:
        return syscalls.bpf(cmd, attr)
    except OSError as e:
        raise CgroupError(f"devices: bpf({what}) failed: {os.strerror(e.errno or 0)}",
                          e.errno, field="devices") from None


def _attach_device_filter(cgroup_dir: str, prog: bytes) -> None:
    from zoned.syscalls import address_of

    insns = bytearray(prog)
    lic = bytearray(b"Apache\0")
    attr = bytearray(struct.pack(
        "<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
        address_of(insns), address_of(lic), 0, 0, 0, 0, 0, b"zoned_devices", 0, 0).ljust(72,
                                                                                         b"\0"))
    prog_fd = _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    try:
        try:
            dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError(f"devices: open {cgroup_dir} failed: {os.strerror(e.errno or 0)}",
                              e.errno, field="devices", path=cgroup_dir) from None
        try:
            old, flags = _query_device_progs(dfd)
            # Attach the new program before detaching the old: in between both apply
            # (the stricter of the two), never neither.
            attr = bytearray(struct.pack(
                "<IIIII", dfd, prog_fd, _BPF_CGROUP_DEVICE,
                _BPF_F_ALLOW_MULTI if (flags & _BPF_F_ALLOW_MULTI or not old) else flags, 0))
            _bpf(_BPF_PROG_ATTACH, attr, "BPF_PROG_ATTACH")
            if old and flags & _BPF_F_ALLOW_MULTI:
                for pid_ in old:
                    _detach_prog(dfd, pid_)
        finally:
            os.close(dfd)
    finally:
        os.close(prog_fd)


def _query_device_progs(dfd: int) -> tuple[list[int], int]:
    from zoned.syscalls import address_of

    ids = bytearray(4 * 64)
    attr = bytearray(struct.pack("<IIIIQI4x", dfd, _BPF_CGROUP_DEVICE, 0, 0, address_of(ids),
                                 64))
    try:
        _bpf(_BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    except CgroupError:
        return [], 0
    _, _, _, flags, _, cnt = struct.unpack("<IIIIQI4x", bytes(attr))
    return list(struct.unpack(f"<{min(cnt, 64)}I", bytes(ids[:4 * min(cnt, 64)]))), flags


def _detach_prog(dfd: int, prog_id: int) -> None:
    attr = bytearray(struct.pack("<III", prog_id, 0, 0))
    try:
        fd = _bpf(_BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")
    except CgroupError as e:
        _log().warning("cgroups: cannot detach old device program %d: %s", prog_id, e)
        return
    try:
        attr = bytearray(struct.pack("<IIIII", dfd, fd, _BPF_CGROUP_DEVICE, 0, 0))
        _bpf(_BPF_PROG_DETACH, attr, "BPF_PROG_DETACH")
    finally:
        os.close(fd)


# -- garbage collection -------------------------------------------------------------------

def list_paths(parent: str = "/zoned") -> list[str]:
    """The cgroupsPaths of the cgroups directly under `parent`, in any hierarchy (a
    leftover may survive in only some of them)."""
    p = posixpath.normpath("/" + parent.lstrip("/"))
    out: set[str] = set()
    for h in _mounts():
        d = h.mountpoint + ("" if p == "/" else p)
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        out.add(posixpath.join(p, e.name))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return sorted(out)


def remove_if_empty(path: str) -> bool:
    """Remove the cgroup (and empty sub-cgroups) if no process is in it. True when nothing
    of it is left. The caller makes sure no container is being started in it right now."""
    cg = Cgroup.open(path)
    if not cg.exists():
        return True
    if cg.pids():
        return False
    try:
        cg.destroy(timeout=0.0)
    except CgroupError as e:
        _log().info("cgroups: %s not removed: %s", path, e)
        return False
    return not cg.exists()
