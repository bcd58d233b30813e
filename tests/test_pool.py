"""zoned.Pool: zones made ahead by a maker process, each handed out once (zoned/pool.py).

Checked from outside: each run's zone is fresh (its own layer, hostname, pid namespace),
as confined as zoned.run's (capabilities, seccomp, no_new_privs, cgroups, mounts), its
init is the caller's child (exit status, timeout, reaping); close() and the caller's
death leave no process, cgroup, mount or state behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import zoned
from conftest import children_of, host_snapshot, open_files_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root: these check cgroups and "
                                "host mounts (test_rootless has a rootless Pool)")

STATUS = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status"


@pytest.fixture(params=["c", "python"])
def pool(request, zoned_root, busybox, monkeypatch):
    """A pool whose zones wait as the C init (zoned-spawn: the usual) or as the Python one
    (ZONED_INIT=python, as rootless pools' do: a user namespace)."""
    if request.param == "python":
        monkeypatch.setenv("ZONED_INIT", "python")  # (the makers inherit it)
    with zoned.Pool(root=zoned_root, size=2) as p:
        yield p


def _makers_of(root: str) -> list[int]:
    """Processes whose command line names this state root: a pool's maker and its keeper
    (a fork of it); the inits waiting too where they are clones of it (the Python init)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"maker_main" in f.read() and root.encode() in open(
                            f"/proc/{pid}/cmdline", "rb").read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def _children() -> list[int]:
    return children_of(os.getpid())


def _waiting_inits() -> list[int]:
    """Our children that are a zone's init waiting as zoned-spawn (the C init's)."""
    found = []
    for pid in _children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"zoned-spawn\0setup\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_each_run_gets_a_fresh_zone(pool):
    a = pool.run(["sh", "-c", "echo x > /made; hostname; echo $$; cat /proc/1/cmdline; true"],
                 text=True)
    b = pool.run(["sh", "-c", "hostname; ls /made"], text=True)
    host_a, pid1, cmdline = a.stdout.split("\n")[:3]
    assert a.returncode == 0 and pid1 == "1" and cmdline.startswith("sh\0-c\0")
    assert host_a == a.name  # the zone's own name, not the template's
    assert "/made: No such file" in b.stderr  # not the first zone's layer
    assert b.returncode != 0 and b.stdout.strip() == b.name != a.name


def test_streams_status_input_env_check_and_timeout(pool):
    r = pool.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert pool.run(["cat"], input="fed\n", text=True).stdout == "fed\n"
    assert pool.run(["cat"]).stdout == b""  # no input: EOF at once, as /dev/null
    r = pool.run(["sh", "-c", "echo $A:$PATH:$HOSTNAME"], env=["A=b"], text=True)
    a, path, host = r.stdout.strip().split(":", 2)[0], r.stdout.split(":")[1:-1], \
        r.stdout.strip().rsplit(":", 1)[1]
    assert a == "b" and "/bin" in path and host == r.name  # added to the zone's own env
    with pytest.raises(subprocess.CalledProcessError) as e:
        pool.run(["sh", "-c", "exit 4"], check=True)
    assert e.value.returncode == 4
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as e:
        pool.run(["sh", "-c", "echo started; sleep 60"], timeout=1)
    assert time.monotonic() - t < 30 and e.value.output == b"started\n"
    with pytest.raises(zoned.ZonedError, match="not found"):
        pool.run(["no-such-command"])
    assert pool.run(["true"]).returncode == 0  # the pool goes on after each failure


def test_as_confined_as_zoned_run(pool, zoned_root):
    """Capabilities, seccomp, no_new_privs, mounts and cgroups: the same as zoned.run's,
    whichever init waited (its process came at start: the process exec'd is the same)."""
    cmd = ["sh", "-c", STATUS + "; cat /proc/self/cgroup | sed 's/z-[0-9a-f]*/Z/'; "
           "cut -d' ' -f2,3,5 /proc/self/mounts | sort"]
    pooled = pool.run(cmd, text=True).stdout
    plain = zoned.run(cmd, root=zoned_root, image="busybox", text=True).stdout
    assert pooled == plain
    assert re.search(r"^Seccomp:\s+2$", pooled, re.M)
    assert re.search(r"^NoNewPrivs:\s+1$", pooled, re.M)


def test_a_waiting_init_is_our_child_in_its_cgroup(pool, zoned_root):
    """A zone made ahead: its init is this process's child (not the maker's: so run()
    gets its exit status), already in its own cgroup, as the container's user."""
    pool.run(["true"])  # the next ones are made by now, or soon
    deadline = time.monotonic() + 30
    while True:
        states = []
        for c in os.listdir(zoned_root):
            if not c.startswith("z-"):
                continue
            try:  # atomic writes: it is whole, or not there (yet, or any more)
                with open(os.path.join(zoned_root, c, "state.json")) as f:
                    states.append(json.load(f))
            except FileNotFoundError:
                pass  # a zone being made (its dir reserved first) or being removed
        waiting = [s for s in states if s.get("status") == "created"]
        if len(waiting) == 2:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    for st in waiting:
        pid = st["pid"]
        assert pid in _children()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        assert re.search(r"^Uid:\s+0\s", status, re.M)
        cg = open(f"/proc/{pid}/cgroup").read()
        assert st["id"] in cg  # moved into its own cgroup before it was handed out


def test_wait_ready_returns_once_the_next_zone_waits(zoned_root, busybox):
    """wait_ready: True once a zone waits to be taken, without taking it (the maker may
    still be removing the zone of the run before); a closed pool raises."""
    with zoned.Pool(root=zoned_root, size=1) as p:
        assert p.wait_ready(30)
        assert len(_waiting_inits()) == 1
        p.run(["true"])
        assert p.wait_ready(30)
        assert len(_waiting_inits()) == 1
        assert p.wait_ready(0)  # still there: not taken by waiting
        assert p.run(["true"]).returncode == 0
    with pytest.raises(zoned.ZonedError, match="closed"):
        p.wait_ready(0)


def test_a_maker_stays_single_threaded(pool):
    """A maker clones its zones' inits (the Python one's: clone3 through cffi, the GIL let
    go), so no thread of its own may hold the GIL then (the child would wait for it for
    ever): the removals it makes hand what they free to zoned-release, not to
    zoned.linux.lastref's closer thread (with one, 1 round in 10 hung)."""
    for _ in range(6):
        assert pool.run(["true"]).returncode == 0
    for pid in pool.maker_pids:
        assert os.listdir(f"/proc/{pid}/task") == [str(pid)]


def test_a_zone_made_ahead_waits_as_zoned_spawn_s_sealed_copy(zoned_root, busybox):
    """The C init: a waiting zone is zoned-spawn run from its sealed memfd copy (nothing in
    the zone can write the host's binary through /proc/1/exe), ~0.1 MiB where a waiting
    python held ~5 (bench/README, finding 23); a run's cwd, env and args come with its
    start, and a command that is not there is its error, not the pool's end."""
    with zoned.Pool(root=zoned_root, size=2) as p:
        assert p.run(["true"]).returncode == 0
        deadline = time.monotonic() + 30
        while len(_waiting_inits()) != 2:
            assert time.monotonic() < deadline, _children()
            time.sleep(0.05)
        for pid in _waiting_inits():
            assert os.readlink(f"/proc/{pid}/exe") == "/memfd:zoned-spawn (deleted)"
            with open(f"/proc/{pid}/smaps_rollup") as f:
                rss = int(re.search(r"^Rss:\s+(\d+) kB", f.read(), re.M).group(1))
            assert rss < 1024, rss
        r = p.run(["sh", "-c", "pwd; echo $A"], env=["A=late"], text=True)
        assert r.stdout.split() == ["/", "late"], r
        r = p.run(["/bin/sh", "-c", "echo $0 $1", "zero", "one"], text=True)
        assert r.stdout == "zero one\n", r
        with pytest.raises(zoned.ZonedError, match="not found"):
            p.run(["no-such-command"])
        assert p.run(["true"]).returncode == 0


def test_a_maker_keeps_the_state_a_run_replaces_until_the_zone_is_removed(pool, zoned_root):
    """A run's start replaces its zone's state.json; the maker keeps the version it made
    (an O_PATH fd, zoned.linux.lastref.pin) so that the inode is freed by its removal, off
    the caller's path, and drops it then: no fd to a removed zone's state stays."""
    makers = pool.maker_pids
    names = [pool.run(["true"]).name for _ in range(4)]
    deadline = time.monotonic() + 30
    while True:  # each run's zone removed by its maker ("done")
        left = [n for n in names if os.path.exists(os.path.join(zoned_root, n))]
        if not left:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.05)
    time.sleep(0.2)
    held = [t for m in makers for t in open_files_under(m, (zoned_root + "/",))]
    assert not any(n in t for t in held for n in names), held  # dropped with the zone
    # the zones waiting: one made state.json each, kept, not replaced yet
    assert held and all(t.endswith("/state.json") for t in held), held
    assert len(held) <= pool.size, held


def test_close_leaves_nothing(zoned_root, busybox):
    before = host_snapshot(zoned_root)
    p = zoned.Pool(root=zoned_root, size=3)
    assert p.run(["true"]).returncode == 0
    makers = p.maker_pids
    assert len(makers) == min(3, 2, os.cpu_count())
    # the makers, their keepers and the 3 inits waiting (zoned-spawn, our children)
    from zoned.cgroups import prime

    keepers = len(makers) * (prime.own_procs_file() is not None)  # (where it can move)
    expected = len(makers) + keepers
    deadline = time.monotonic() + 30
    while len(_makers_of(zoned_root)) != expected or len(_waiting_inits()) != 3:
        assert time.monotonic() < deadline, (_makers_of(zoned_root), _waiting_inits())
        time.sleep(0.05)
    p.close()
    p.close()  # twice is fine
    assert not any(os.path.exists(f"/proc/{m}") for m in makers)
    deadline = time.monotonic() + 10
    while _makers_of(zoned_root):  # the keeper sees its pipe close, or its parent go
        assert time.monotonic() < deadline, _makers_of(zoned_root)
        time.sleep(0.05)
    assert _children() == []
    assert [c for c in os.listdir(zoned_root) if not c.startswith(".")] == []
    assert host_snapshot(zoned_root) == before
    with pytest.raises(zoned.ZonedError, match="closed"):
        p.run(["true"])


def test_a_dead_caller_takes_its_zones_and_maker(zoned_root, busybox, tmp_path):
    """SIGKILL the program holding a Pool: its waiting zones die with it (their init's
    parent-death signal), and so does the maker; gc removes the rest."""
    prog = tmp_path / "holder.py"
    prog.write_text(textwrap.dedent(f"""
        import os, sys, time, json, zoned
        p = zoned.Pool(root={zoned_root!r}, size=2)
        p.run(["true"])
        while len([c for c in os.listdir({zoned_root!r}) if c.startswith("z-")]) < 2:
            time.sleep(0.05)
        time.sleep(0.3)
        print(json.dumps(p.maker_pids), flush=True)
        time.sleep(600)
        """))
    h = subprocess.Popen([sys.executable, str(prog)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(zoned.__path__[0])})
    try:
        makers = json.loads(h.stdout.readline())
        inits = [json.load(open(os.path.join(zoned_root, c, "state.json")))["pid"]
                 for c in os.listdir(zoned_root) if c.startswith("z-")]
        assert len(inits) == 2
    finally:
        h.send_signal(signal.SIGKILL)
        h.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in (*makers, *inits)) or \
            _makers_of(zoned_root):
        assert time.monotonic() < deadline, "a zone, a maker or its keeper outlived " \
            "their caller"
        time.sleep(0.05)
    subprocess.run([sys.executable, "-m", "zoned", "--root", zoned_root, "gc"], check=True,
                   capture_output=True)
    assert [c for c in os.listdir(zoned_root) if not c.startswith(".")] == []


@pytest.mark.parametrize("options, field", [
    ({"memory": "lots"}, "memory"),
    ({"network": "bridge"}, "network"),
    ({"size": 0}, "size"),
    ({"size": 2, "makers": 3}, "makers"),
    ({"makers": 0}, "makers"),
])
def test_bad_options_are_refused_in_the_caller(zoned_root, busybox, options, field):
    before = host_snapshot(zoned_root)
    with pytest.raises(zoned.ZonedError, match=field):
        zoned.Pool(root=zoned_root, **options)
    assert _children() == []
    assert host_snapshot(zoned_root) == before


def test_pid_1_is_the_command_not_the_callers_python(pool):
    """The init waited as zoned-spawn or as a copy of the maker's python (late_process);
    at start it execs the command in place, so what the zone sees as PID 1 is that
    command's image, with nothing of python's mapped (its memory is the command's)."""
    r = pool.run(["sh", "-c", "readlink /proc/1/exe; grep -c python /proc/1/maps; true"],
                 text=True)
    exe, python_maps = r.stdout.split()
    assert exe == "/bin/busybox" and python_maps == "0", r


def test_a_zone_the_maker_cannot_make_is_one_clear_error_and_no_zombie(zoned_root, busybox):
    """cpuset 0-63 passes the config checks but fails in the cgroup, after the init was
    cloned (the caller's child): run() raises the maker's error, the init it killed is
    reaped, the next run() raises the same at once, and close() leaves nothing."""
    before = host_snapshot(zoned_root)
    p = zoned.Pool(root=zoned_root, size=1, cpuset_cpus="0-63")
    try:
        with pytest.raises(zoned.ZonedError, match="cpuset.cpus"):
            p.run(["true"])
        assert _children() == p.maker_pids  # no zombie init
        with pytest.raises(zoned.ZonedError, match="cpuset.cpus"):
            p.run(["true"])
    finally:
        p.close()
    assert _children() == []
    assert host_snapshot(zoned_root) == before


def test_zones_made_before_a_failure_still_run(zoned_root, busybox, tmp_path):
    """A volume removed while the pool runs: the zone already made (its bind mount done)
    still runs; the maker's next make fails, and that failure is what run() says next."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    with zoned.Pool(root=zoned_root, size=1, volumes=[f"{vol}:/data"]) as p:
        assert p.run(["cat", "/data/f"]).stdout == b"x"
        deadline = time.monotonic() + 30
        while len([c for c in os.listdir(zoned_root) if c.startswith("z-")]) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        (vol / "f").unlink()
        vol.rmdir()
        assert p.run(["ls", "/data"]).returncode == 0  # made before: mounted already
        with pytest.raises(zoned.ZonedError, match="does not exist"):
            p.run(["true"])
    assert _children() == []
