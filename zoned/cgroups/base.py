"""The one interface both drivers implement (crun's cgroup-internal.h): a container's cgroup
named by its cgroupsPath, with create/add/apply/freeze/kill/destroy/stats. What does not
depend on the cgroup version lives here: applying linux.resources group by group in runc's
order, and killing everything in the cgroup without letting a fork escape.
"""
from __future__ import annotations

import errno
import os
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import time

from zoned.cgroups.fs import CgroupError, logger
from zoned.cgroups.resources import GROUPS


class Cgroup:
    """A container's cgroup, named by an OCI cgroupsPath ("/zoned/<id>") that is relative to
    the root of every hierarchy. Cheap to construct: nothing touches cgroupfs until a
    method is called."""

    path: str
    shared_memory = False  # its memory cgroup is its parent's (zoned.runtime.cgroup_paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def load_modules(self) -> None:
        """Import what create() and apply() import lazily. A creator that makes the cgroup
        after forking the init calls this before: imported after a fork, a module costs
        its pages' copies too (~0.4 ms for the device rules here)."""

    # implemented by the subclasses
    def create(self) -> None: raise NotImplementedError
    def add(self, pid: int) -> None: raise NotImplementedError
    def pids(self) -> list[int]: raise NotImplementedError
    def stats(self) -> dict: raise NotImplementedError
    def freeze(self, timeout: float = 5.0) -> None: raise NotImplementedError
    def thaw(self) -> None: raise NotImplementedError
    def frozen(self) -> bool: raise NotImplementedError
    def freezer_dir(self) -> str | None: raise NotImplementedError  # (CRIU's --freeze-cgroup)
    def exists(self) -> bool: raise NotImplementedError
    def destroy(self, timeout: float = 5.0) -> None: raise NotImplementedError
    def directories(self) -> list[str]: raise NotImplementedError

    # how a process joins it on its own (zoned.cgroups.join)
    def cgroup2_dir(self) -> str | None:
        """The cgroup2 directory a new process can be cloned into (CLONE_INTO_CGROUP)."""
        return None

    def make_cgroup2(self) -> None:
        """Make that directory (before the fork; create() later makes the rest)."""

    def join_files(self) -> tuple[list[str], str | None]:
        """The v1 `tasks` files a process writes "0" to, to move itself in, and the shared
        memory cgroup's directory (or None), which it joins the same way."""
        return [], None

    def in_use(self) -> bool:
        """It exists already with a process or a cgroup below it: somebody else's, which a
        container must not join, nor kill and remove when its create fails (runc refuses
        such a cgroup too). A new container's cgroup does not exist: a stat or two."""
        if not self.exists():
            return False
        if self.pids():
            return True
        for d in self.directories():
            try:
                with os.scandir(d) as entries:
                    if any(e.is_dir(follow_symlinks=False) for e in entries):
                        return True
            except FileNotFoundError:
                continue
        return False

    def remove_if_empty(self) -> bool:
        """rmdir the cgroup in every hierarchy, without reading or signalling anything;
        True if none is left. The kernel refuses (EBUSY) a cgroup with a process or a
        sub-cgroup in it: then False, and the caller kills and destroys as before. The
        common case on `rm` (the init was reaped, its pid namespace took the rest) so
        costs one rmdir per hierarchy instead of reading every cgroup.procs and listing
        every directory first."""
        for d in self.directories():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return True

    def fast_kill(self) -> bool:
        """Have the kernel kill every process in the cgroup at once (v2's cgroup.kill);
        False where it can't, and kill() then signals the processes one by one."""
        return False

    def apply(self, resources: dict | None) -> None:
        """Set the OCI linux.resources on this cgroup. Absent or null fields are left alone;
        a field this host can't enforce raises CgroupError; unknown fields are logged.
        Each group goes to the driver's _apply_<group>() hook."""
        if not resources:
            return
        if not isinstance(resources, dict):
            raise CgroupError(f"linux.resources: expected an object, got {resources!r}",
                              errno.EINVAL, field="resources")
        for k in resources:
            if k not in GROUPS:
                logger().warning("cgroups: ignoring unknown field linux.resources.%s", k)
        memory = resources.get("memory") or {}
        if self.shared_memory and any(v is not None for v in memory.values()):
            raise CgroupError("linux.resources.memory: the zone is in the shared memory "
                              "cgroup, which has no limit of its own", errno.EINVAL,
                              field="memory")
        for g in GROUPS:
            v = resources.get(g)
            if v is not None:
                getattr(self, "_apply_" + g.lower())(v)

    def kill(self, sig: int = _signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send `sig` to every process in the cgroup (and below). SIGKILL waits until the
        cgroup is empty (CgroupError after `timeout`) and leaves it thawed; other signals
        are sent once. The cgroup is frozen while signalling so nothing forks away."""
        if sig != _signal.SIGKILL:
            pids = self.pids()
            if pids:
                self._signal_frozen(pids, sig)
            return
        deadline = time.monotonic() + timeout
        last = time.monotonic() if self.fast_kill() else 0.0
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
        """Signal `pids` with the cgroup frozen (if it has a freezer), so no task can fork a
        child we would miss; with the cgroup frozen, signal whoever is in it by then."""
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
            if froze or (was_frozen and sig == _signal.SIGKILL):
                self.thaw()
