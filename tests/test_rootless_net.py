"""Rootless zones' cgroups (issue 17): where the host delegates a cgroup v2 subtree to the
user, zones are limited below its top; where it does not (this hybrid host), one warning.
This host cannot delegate (hybrid), so the finding of the delegated top is tested on a
directory tree laid out and owned as systemd's user@UID.service is, and the fallback on
the real host (tests/test_rootless.py runs the CLI as a user and checks the warning)."""
from __future__ import annotations

import os

from zoned.rootless_cgroup import delegated_top, rootless_cgroup

USER = "/user.slice/user-4242.slice/user@4242.service"
LEAF = USER + "/app.slice/term.scope"


def _tree(base, owned_from: str = USER, uid: int = 4242) -> str:
    """A cgroup-like tree under `base`: every dir has the two files; those from
    `owned_from` down belong to `uid`, as systemd delegates them."""
    mount = str(base)
    parts = LEAF.strip("/").split("/")
    for i in range(len(parts) + 1):
        d = os.path.join(mount, *parts[:i])
        os.makedirs(d, exist_ok=True)
        for f in ("cgroup.subtree_control", "cgroup.procs"):
            open(os.path.join(d, f), "a").close()
        rel = "/" + "/".join(parts[:i])
        if owned_from and rel.startswith(owned_from):
            for p in (d, os.path.join(d, "cgroup.subtree_control"),
                      os.path.join(d, "cgroup.procs")):
                os.chown(p, uid, uid)
    return mount


def test_the_top_of_the_delegated_subtree_is_found(tmp_path):
    mount = _tree(tmp_path)
    assert delegated_top(f"0::{LEAF}\n", mount, 4242) == mount + USER
    assert delegated_top(f"0::{USER}/\n", mount, 4242) == mount + USER


def test_nothing_delegated_on_hybrid_v1_or_someone_elses(tmp_path):
    mount = _tree(tmp_path)
    hybrid = f"12:memory:/user.slice\n0::{LEAF}\n"
    assert delegated_top(hybrid, mount, 4242) is None  # cgroup v1 controllers: no v2 limits
    assert delegated_top(f"0::{LEAF}\n", mount, 1000) is None  # not this user's
    half = _tree(tmp_path / "half", owned_from=LEAF)  # only a leaf: still its top
    assert delegated_top(f"0::{LEAF}\n", half, 4242) == half + LEAF
    os.chown(os.path.join(half + LEAF, "cgroup.procs"), 0, 0)  # procs not writable
    assert delegated_top(f"0::{LEAF}\n", half, 4242) is None


def test_this_host_delegates_nothing_so_zones_get_the_null_cgroup():
    """As root on this hybrid host nothing is `delegated` to uid 0's own cgroup in the
    user's sense: the rootless driver falls back to no limits (one warning, see
    tests/test_rootless.py::test_cli_runs_a_zone_as_the_user)."""
    with open("/proc/self/cgroup") as f:
        hybrid = len(f.read().splitlines()) > 1
    if hybrid:
        assert delegated_top() is None
        assert type(rootless_cgroup("/zoned-x/z1")).__name__ == "NullCgroup"
