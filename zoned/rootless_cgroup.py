"""Cgroup limits for rootless zones, where the host delegates a cgroup v2 subtree.

On a pure v2 host with systemd, the user's manager (user@UID.service) is a subtree the
user owns: its directories, cgroup.subtree_control and cgroup.procs are the user's, and
no process lives in its top (systemd keeps them in leaves). A rootless zone's cgroup goes
below that top, at TOP + the path a root zone would use (/zoned-<hash>/NAME), so the
memory, cpu and pids limits are enforced as for root. Moving the zone's init there is
allowed because the top is the common ancestor of the user's own cgroup and the zone's.

Where nothing is delegated (cgroup v1, a hybrid host like the test machine, no systemd
user manager), zones run without a cgroup of their own: zoned.rootless.NullCgroup, with
one warning line.
"""
from __future__ import annotations

from zoned.rootless import MOUNT, NullCgroup, delegated_top


def rootless_cgroup(path: str):
    """The cgroup of a rootless zone: a DelegatedCgroup below the delegated top, or a
    NullCgroup (no limits, one warning) where nothing is delegated."""
    top = delegated_top()
    if top is None:
        return NullCgroup(path)
    return delegated_cgroup_class()(top[len(MOUNT):] + "/" + path.strip("/"),
                                    base=top[len(MOUNT):])


def delegated_cgroup_class():
    """V2Cgroup for a delegated subtree (imported only when one is used)."""
    from zoned.cgroups.v2 import V2Cgroup

    class DelegatedCgroup(V2Cgroup):
        """A V2Cgroup that enables controllers only from the delegated top down (above it
        they are the host's to give, and systemd has), and has no device filter (a cgroup
        BPF program needs privileges; a rootless zone's devices are the host's files)."""

        def __init__(self, path: str, *, base: str):
            super().__init__(path)
            self.base = base

        def create(self) -> None:
            self.create_below(self.base)

        def _apply_devices(self, rules: list) -> None:
            pass

    return DelegatedCgroup
