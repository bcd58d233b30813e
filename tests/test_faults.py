"""Removal under faults (issue 10, item 14): `zoned rm -f` killed at each of its steps is
finished by `zoned gc`, `rm` works on a full disk, and temp files of killed writers are
collected. Checked from outside: the state root, leases, the rules registry and the
kernel's nft table, links, cgroups and processes.

The kill points come from ZONED_TEST_FAULT (zoned.testhooks): zoned SIGKILLs itself there.
Networked zones use the default network of the test's own state root, with subnets from
$ZONED_SUBNET_POOL.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ZONED, host_snapshot, process_alive, zone_state

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")

PORT = 31000 + (os.getpid() % 1000) * 2   # host ports PORT, PORT+1 for this run
REGISTRY = os.environ.get("ZONED_NET_REGISTRY", "/run/zoned-net")


def leftovers(root: str, cid: str, port: int) -> dict:
    """Everything a removed container could leave, by kind (empty lists: nothing)."""
    real = os.path.realpath(root)
    netdir = os.path.join(root, ".networks")
    leases = []
    for n in os.listdir(netdir) if os.path.isdir(netdir) else []:
        if n.endswith(".leases.json"):
            with open(os.path.join(netdir, n)) as f:
                leases += [ip for ip, rec in json.load(f)["leases"].items()
                           if rec.get("cid") == cid]
    ports = []
    for n in os.listdir(REGISTRY) if os.path.isdir(REGISTRY) else []:
        if n.endswith(".json"):
            with open(os.path.join(REGISTRY, n)) as f:
                frag = json.load(f)
            if frag.get("root") == real and cid in (frag.get("ports") or {}):
                ports.append(n)
    table = subprocess.run(["nft", "list", "table", "inet", "zoned"], capture_output=True,
                           text=True).stdout
    links = []
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifalias") as f:
                if f.read().strip() == f"zoned:{cid}@{real}":
                    links.append(name)
        except OSError:
            pass
    tmp = [os.path.join(d, n) for d in (root, netdir, REGISTRY) if os.path.isdir(d)
           for n in os.listdir(d) if n.endswith(".tmp")]
    snap = host_snapshot(root)
    return {"state": [n for n in snap["state"] if n not in (".networks", "filler")],
            "cgroups": snap["cgroups"], "leases": leases,
            "mounts": [m for m in snap["mounts"] if m.split()[4] != real],  # but a tmpfs root
            "registry": ports, "nft": [ln for ln in table.splitlines()
                                       if f"dport {port} " in ln],
            "links": links, "tmp": tmp}


def clean(root: str, cid: str, port: int) -> dict:
    return {k: v for k, v in leftovers(root, cid, port).items() if v}


def init_pid(cli, cid: str) -> int:
    return json.loads(cli("state", cid, check=True).stdout)["pid"]


@pytest.fixture
def netcleanup(cli, zoned_root):
    """Remove the test root's default network at the end (the zoned_root fixture removes
    the containers)."""
    yield
    ids = cli("ps", "-a", "-q").stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    cli("network", "rm", "zoned0")
    cli("gc")


# write:tmp#1 is the rules registry's temp file, #2 the lease file's (in that order)
POINTS = ["rm:marked", "rm:killed", "rm:cgroup", "write:tmp#1", "write:tmp#2",
          "rm:network", "rm:trash"]


@pytest.mark.parametrize("point", POINTS)
def test_rm_killed_at_each_step_gc_finishes(cli, zoned_root, netcleanup, point):
    """kill -9 of `zoned rm -f` at each step of a networked zone's removal (process,
    cgroup, published port, lease, state dir): afterwards `zoned gc` leaves nothing."""
    cid = "victim"
    cli("run", "-d", "--name", cid, "--network", "zoned0", "-p", f"{PORT}:80", "--",
        "sleep", "1000", check=True)
    pid = init_pid(cli, cid)
    assert clean(zoned_root, cid, PORT), "the zone holds a lease, a port, a cgroup"
    env = dict(os.environ, ZONED_TEST_FAULT=f"{point}=kill")
    p = subprocess.run([ZONED, "--root", zoned_root, "rm", "-f", cid], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    if point == "rm:marked":  # killed before it killed anything
        assert process_alive(pid)
    if point in ("rm:marked", "rm:killed", "rm:cgroup"):
        assert json.loads(cli("state", cid, check=True).stdout)["id"] == cid
    out = cli("gc", check=True).stdout
    assert point == "rm:trash" or f"container {cid}: interrupted removal" in out, out
    assert clean(zoned_root, cid, PORT) == {}
    assert not process_alive(pid)
    assert cli("state", cid).returncode != 0
    # the name and the port are free again
    cli("run", "-d", "--name", cid, "--network", "zoned0", "-p", f"{PORT}:80", "--",
        "sleep", "1000", check=True)
    cli("rm", "-f", cid, check=True)
    assert clean(zoned_root, cid, PORT) == {}


def test_a_second_rm_finishes_an_interrupted_one(cli, zoned_root, netcleanup):
    """A removal killed half-way is also finished by the user's next `rm -f`."""
    cid = "twice"
    cli("run", "-d", "--name", cid, "--network", "zoned0", "-p", f"{PORT + 1}:80", "--",
        "sleep", "1000", check=True)
    env = dict(os.environ, ZONED_TEST_FAULT="rm:cgroup=kill")
    p = subprocess.run([ZONED, "--root", zoned_root, "rm", "-f", cid], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert cli("rm", "-f", cid).returncode == 0
    assert clean(zoned_root, cid, PORT + 1) == {}


@pytest.fixture
def full_disk_root(zoned_root, cli):
    """The test's state root on a 4 MiB tmpfs, mounted over it in our mount namespace and
    unmounted at the end, after everything on it was removed."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0711", "zoned-test-full",
                    zoned_root], check=True)
    try:
        yield zoned_root
    finally:
        filler = os.path.join(zoned_root, "filler")
        if os.path.exists(filler):
            os.unlink(filler)
        ids = cli("ps", "-a", "-q").stdout.split()
        if ids:
            cli("rm", "-f", *ids)
        cli("network", "rm", "zoned0")
        cli("gc")
        subprocess.run(["umount", "-l", zoned_root], check=True)


def fill(path: str) -> None:
    """Fill the file system of `path` to the last block."""
    from zoned.testhooks import fill_disk

    fill_disk(os.path.join(path, "filler"))
    assert os.statvfs(path).f_bavail == 0


def test_rm_works_on_a_full_disk(cli, full_disk_root):
    """`rm -f` of a networked zone with a published port, its state root full: the lease,
    the port, the state dir and the cgroup all go, and no empty temp file stays."""
    root = full_disk_root
    cid = "full"
    cli("run", "-d", "--name", cid, "--network", "zoned0", "-p", f"{PORT}:80", "--",
        "sleep", "1000", check=True)
    pid = init_pid(cli, cid)
    fill(root)
    p = cli("rm", "-f", cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [cid]
    assert clean(root, cid, PORT) == {}
    assert not process_alive(pid)
    # and gc, also on a full disk, has nothing left to do for it
    assert cid not in cli("gc", check=True).stdout
    with open(os.path.join(root, ".networks", "zoned0.leases.json")) as f:
        assert json.load(f)["leases"] == {}


def test_gc_on_a_full_disk_finishes_an_interrupted_rm(cli, full_disk_root):
    """A removal killed after its mark, then the disk filled up: gc still finishes it."""
    root = full_disk_root
    cid = "fullgc"
    cli("run", "-d", "--name", cid, "--network", "zoned0", "-p", f"{PORT + 1}:80", "--",
        "sleep", "1000", check=True)
    env = dict(os.environ, ZONED_TEST_FAULT="rm:killed=kill")
    p = subprocess.run([ZONED, "--root", root, "rm", "-f", cid], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    fill(root)
    assert f"container {cid}: interrupted removal" in cli("gc", check=True).stdout
    assert clean(root, cid, PORT + 1) == {}


def test_rm_killed_while_waiting_for_the_lease_lock(cli, zoned_root, netcleanup):
    """The reported case, without fault points: `rm -f` waits for the network's lease
    lock (held here, as by a busy zoned) after it killed the zone, and is killed there.
    The zone is "stopped" and still holds its lease; gc must finish the removal."""
    import fcntl

    cid = "waiter"
    cli("run", "-d", "--name", cid, "--network", "zoned0", "--", "sleep", "1000",
        check=True)
    pid = init_pid(cli, cid)
    fd = os.open(os.path.join(zoned_root, ".networks", "zoned0.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = subprocess.Popen([ZONED, "--root", zoned_root, "rm", "-f", cid])
        deadline = time.monotonic() + 20
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # rm is now blocked on the lock
        p.kill()
        p.wait()
    finally:
        os.close(fd)
    assert json.loads(cli("state", cid, check=True).stdout)["status"] == "stopped"
    assert leftovers(zoned_root, cid, 0)["leases"], "the stopped zone holds its lease"
    cli("gc", check=True)
    assert clean(zoned_root, cid, 0) == {}


def test_gc_collects_temp_files_of_killed_writers(cli, zoned_root):
    """Temp files of tmp+rename writers: a dead writer's, and one older than the bound,
    are removed; a live writer's fresh one is left alone."""
    cli("run", "-d", "--name", "t", "--", "sleep", "1000", check=True)
    d = os.path.join(zoned_root, "t")
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    paths = {"dead": os.path.join(d, f"state.json.{dead.pid}.tmp"),
             "dead-net": os.path.join(zoned_root, ".networks", f"n.leases.json.{dead.pid}.tmp"),
             "old": os.path.join(d, f"config.json.{me}.tmp"),
             "live": os.path.join(zoned_root, f"x.json.{me}.tmp")}
    os.makedirs(os.path.join(zoned_root, ".networks"))
    for path in paths.values():
        open(path, "w").close()
    os.utime(paths["old"], (time.time() - 3600, time.time() - 3600))
    out = cli("gc", check=True).stdout
    for kind in ("dead", "dead-net", "old"):
        assert not os.path.exists(paths[kind]), (kind, out)
    assert os.path.exists(paths["live"])
    assert not os.path.exists(os.path.join(zoned_root, ".networks"))  # nothing left in it
    os.unlink(paths["live"])
    assert json.loads(cli("state", "t", check=True).stdout)["status"] == "running"


def test_a_killed_writer_leaves_a_temp_file_gc_removes(cli, zoned_root):
    """zoned killed between writing state.json's temp file and renaming it."""
    env = dict(os.environ, ZONED_TEST_FAULT="write:tmp=kill")
    p = subprocess.run([ZONED, "--root", zoned_root, "run", "-d", "--name", "k", "--",
                        "sleep", "1000"], env=env, capture_output=True, timeout=60)
    # run -d's worker (zoned.cli.detach) writes the state and is the one killed; the
    # command says so in one line and exits 125
    assert p.returncode == 125 and b"ended by SIGKILL" in p.stderr, p
    assert len(p.stderr.splitlines()) == 1
    assert [n for n in os.listdir(os.path.join(zoned_root, "k")) if n.endswith(".tmp")]
    out = cli("gc", check=True).stdout
    assert "temp file of a killed writer" in out and "container k:" in out
    assert zone_state(zoned_root) == []
