"""One network namespace made ahead, off the caller's path, for the API's next zone.

Making a zone's network namespace is the dearest of its namespaces to make (~0.4 ms here of
the ~0.7 ms its init spends in unshare: the loopback device, each protocol's per-namespace
state and sysctl tables), and bringing its lo up another ~0.35 ms. zoned.run asks for the
next one as it ends (make_next): the closer thread of zoned.linux.lastref makes it
(z_make_netns: unshare(CLONE_NEWNET) in that thread alone, lo up, an fd of it kept, the
thread back in its own; one C call that lets the GIL go) while the caller goes on, before
it closes what that run removed (its jobs come first: those closes may wait behind the
disk's trims), and the next run's init joins it (setns) instead of making its own. Asked
for at the start of a run instead, it was made on the other CPU just as the run cloned its
init, whose exec then waited for it (the clone 0.5 ms instead of 0.12; bench/README,
finding 26). It is as fresh as one the init makes: nothing
has been in it but its lo, up, with the kernel's addresses; it belongs to the same user
namespace. Its kernel memory is charged to the caller's memory cgroup, not the zone's (as
on a hybrid host the init's own already is: it joins its v1 cgroups after its unshare).

At most one is kept, for the caller's next zoned.run: the process's exit (or a fork's child,
at once) drops it; none is made where no closer thread may run (lastref's
single_threaded_only), for a zone in a user namespace (a namespace of the host's cannot be
joined from one), or for a caller that is not root. If the kernel refuses one, no more are
asked for.
"""
from __future__ import annotations

import _thread
import os

from zoned.linux import lastref

_lock = _thread.allocate_lock()
_fd: int | None = None  # the namespace made ahead, not handed out yet
_asked = False  # a job to make one is queued or running
_refused = False  # the kernel refused one: no more are asked for
_hooked = False


def fits(cfg: dict) -> bool:
    """Whether a zone of `cfg` may join a namespace made ahead: a new network namespace,
    no user namespace, made by root."""
    types = {n.get("type"): n.get("path") for n in (cfg.get("linux") or {}).get("namespaces")
             or []}
    return "network" in types and not types["network"] and "user" not in types \
        and os.geteuid() == 0


def take() -> int | None:
    """The namespace made ahead (an fd, now the caller's to close), or None."""
    global _fd, _hooked
    with _lock:
        fd, _fd = _fd, None
        if not _hooked:
            os.register_at_fork(after_in_child=_drop_in_child)
            _hooked = True
    return fd


def make_next() -> None:
    """Have the closer thread make the next one, unless one is kept or being made, or
    this process never took one (_hooked: take() was called, its fork hook set)."""
    global _asked
    with _lock:
        ask = not (_asked or _refused or _fd is not None or not _hooked)
        _asked = _asked or ask
    if ask and not lastref.aside(_make):
        with _lock:
            _asked = False


def _make() -> None:
    """lastref's closer thread: one namespace, kept unless one is kept already."""
    global _fd, _asked, _refused
    from zoned._native import lib

    fd = lib.z_make_netns()
    with _lock:
        _asked = False
        if fd < 0:
            _refused = True
            return
        if _fd is None:
            _fd, fd = fd, -1
    if fd >= 0:
        os.close(fd)


def _drop_in_child() -> None:
    global _fd, _asked
    if _fd is not None:
        try:
            os.close(_fd)
        except OSError:
            pass
    _fd, _asked = None, False


def drop() -> None:
    """Close the namespace made ahead, if one is kept (one being made may still come)."""
    global _fd
    with _lock:
        fd, _fd = _fd, None
    if fd is not None:
        os.close(fd)
