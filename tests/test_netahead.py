"""zoned.linux.netahead: zoned.run's zones join a network namespace made ahead by the
caller's closer thread. Checked from inside each zone and from the caller: every zone has a
fresh namespace of its own (never one another zone was in), with lo up and nothing else; the
caller keeps at most one; a fork's child keeps none; zones it does not fit make their own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

RUNS = textwrap.dedent("""
    import json, os, sys
    import zoned
    root = sys.argv[1]
    host = os.readlink("/proc/self/ns/net")

    def held():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if link.startswith("net:[") and link != host:  # (the maker's own, a moment)
                out.append(link)
        return sorted(out)

    import time
    rounds = []
    for i in range(5):
        deadline = time.monotonic() + 2  # asked for as the run before ended: made by now,
        while i and not held() and time.monotonic() < deadline:  # or in a moment
            time.sleep(0.01)
        before = held()
        # Each zone leaves a mark in its namespace (an address on lo; it may: NET_ADMIN)
        # and counts the marks it finds: a namespace two zones were in would show one.
        r = zoned.run(["sh", "-c", "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags;"
                       " ip -4 -o addr show lo | grep -c ' 127.0.0.1/8 ';"
                       " ip -4 -o addr show lo | grep -c ' 10.213.';"
                       f" ip addr add 10.213.0.{i + 1}/32 dev lo;"
                       " ls /sys/class/net; cat /proc/net/tcp /proc/net/unix | wc -l"],
                      root=root, name=f"ahead{i}", text=True, cap_add=["NET_ADMIN"])
        lines = r.stdout.split()
        rounds.append({"code": r.returncode, "ns": lines[0], "lo_flags": lines[1],
                       "lo_addr": lines[2], "marks": lines[3], "links": lines[4:-1],
                       "sockets": int(lines[-1]), "held": before, "err": r.stderr})
    pid = os.fork()
    if pid == 0:
        os._exit(len(held()))
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps({"rounds": rounds, "host": os.readlink("/proc/self/ns/net"),
                      "fork_child_held": child, "held_at_end": held()}))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="root: zones")
def test_each_run_joins_a_fresh_namespace_made_ahead(zoned_root, busybox):
    """From the second run on, the zone's network namespace is the one the caller held
    before the run (made ahead once the run before ended, its lo brought up there); each
    is new (none holds the
    mark an earlier zone left in its own, none is the host's), lo is up with 127.0.0.1 and
    alone, no socket is in it; the caller holds one at most, and a fork's child none."""
    p = subprocess.run([sys.executable, "-c", RUNS, zoned_root], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    rounds = r["rounds"]
    assert all(x["code"] == 0 for x in rounds), rounds
    assert r["host"] not in [x["ns"] for x in rounds]  # (an inode number may come again)
    for x in rounds:
        assert x["marks"] == "0" and not x["err"], x  # nobody was in it before
        assert int(x["lo_flags"], 16) & 0x1 and x["lo_addr"] == "1", x  # IFF_UP, 127.0.0.1
        assert x["links"] == ["lo"] and x["sockets"] == 2, x  # (the two header lines)
        assert len(x["held"]) <= 1
    made_ahead = [x for x in rounds[1:] if x["held"] == [x["ns"]]]
    assert len(made_ahead) >= 3, rounds  # (the maker may lose a race now and then)
    assert r["fork_child_held"] == 0
    assert len(r["held_at_end"]) <= 1


@pytest.mark.unprivileged
def test_which_configs_join_one():
    """A new network namespace without a user namespace, made by root; not a zone that
    joins a namespace by path, shares the host's, or has a user namespace."""
    from zoned.linux import netahead

    def cfg(*namespaces):
        return {"linux": {"namespaces": [dict(n) for n in namespaces]}}

    root = os.geteuid() == 0
    assert netahead.fits(cfg({"type": "network"}, {"type": "mount"})) is root
    assert not netahead.fits(cfg({"type": "network", "path": "/proc/1/ns/net"}))
    assert not netahead.fits(cfg({"type": "mount"}))  # the host's network
    assert not netahead.fits(cfg({"type": "network"}, {"type": "user"}))
    assert not netahead.fits({})
