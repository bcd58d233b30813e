"""A zone's init joins its cgroups itself (zoned.cgroups.join): it is cloned into its cgroup2
cgroup (CLONE_INTO_CGROUP) and moves itself into each v1 one by writing "0" to the `tasks`
file its creator opened. No process of zoned writes a pid into a cgroup.procs on that path,
so no move waits for an RCU grace period while holding cgroup_mutex, which every cgroup
mkdir on the host would wait for too (bench/README, finding 12). Checked from the host; the
pieces without root on temp files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ZONED as ZONED_CLI, cgroups_of, open_files_under
from zoned.cgroups import join

ROOT = os.geteuid() == 0
SHARED = ("--memory-cgroup", "shared")


def _cgroup_fds(pid: int) -> list[str]:
    """What the process holds open on a cgroup filesystem."""
    from zoned.cgroups import hierarchies

    return open_files_under(pid, tuple(h.mountpoint + "/" for h in hierarchies()))


# -- the pieces, on plain files (no root) ----------------------------------------------------
def test_join_writes_0_to_each_tasks_file_and_closes_every_fd(tmp_path):
    files = [tmp_path / f"h{i}" for i in range(3)]
    for f in files:
        f.write_text("")
    fds = [os.open(f, os.O_WRONLY) for f in files]
    join.join(fds)
    assert [f.read_text() for f in files] == ["0"] * 3
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_join_makes_the_shared_cgroup_again_when_another_removal_took_it(tmp_path, monkeypatch):
    """The shared memory cgroup goes with the last zone in it, which may be just before this
    init is in it: the init makes it again, below the directory it was given."""
    real_mkdir = os.mkdir
    made = []

    def mkdir(name, mode=0o777, *, dir_fd=None):  # cgroupfs makes a cgroup's files itself
        real_mkdir(name, mode, dir_fd=dir_fd)
        made.append(name)
        fd = os.open(f"{name}/tasks", os.O_CREAT | os.O_WRONLY, dir_fd=dir_fd)
        os.close(fd)

    monkeypatch.setattr(join.os, "mkdir", mkdir)
    (tmp_path / "v1").write_text("")
    fds = [os.open(tmp_path / "v1", os.O_WRONLY),
           os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)]
    join.join(fds, "@shared-memory")
    assert made == ["@shared-memory"]
    assert (tmp_path / "@shared-memory" / "tasks").read_text() == "0"
    assert (tmp_path / "v1").read_text() == "0"


def test_join_gives_up_when_the_shared_cgroup_cannot_be_made(tmp_path, monkeypatch):
    monkeypatch.setattr(join.os, "mkdir", lambda *a, **k: None)  # made, yet never there
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    with pytest.raises(FileNotFoundError):
        join.join([fd], "@shared-memory")
    with pytest.raises(OSError):
        os.fstat(fd)  # closed all the same


class _FakeZoneCgroup:
    """A zone's cgroup2 directory holding the given processes' pids (a tmp dir)."""

    def __init__(self, d: Path, pids: list[int]):
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
        self.d = str(d)

    def cgroup2_dir(self) -> str:
        return self.d


DENY_CLONE3 = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}


@pytest.mark.parametrize("case, takes", [
    ("as podman's profile here: clone3 allowed", False),
    ("no filter", False),
    ("no_new_privs: the filter is loaded last anyway", False),
    ("no cgroup2 to clone into", False),
    ("a user namespace: the process joins it in its cgroups, any profile", True),
    ("a user namespace, a terminal: the helper makes the pty in it", False),
    ("a user namespace, no cgroup2 to clone into", False),
    ("no zoned-spawn copy to make the process", False),
    ("the process may hold CAP_SYS_PTRACE", False),
    ("a process in the zone may ptrace", False),
    ("Docker's and containerd's: clone3 denied, nothing ptrace-capable", True),
])
def test_exec_takes_its_own_credentials_only_where_it_gains_and_nothing_can_ptrace_it(
        tmp_path, case, takes):
    """zoned.runtime.exec_process.creds_in_spawn, without root: the process loads its
    filter and takes its user and capabilities itself only where the filter may deny clone3
    (else nothing is gained) and no process of the zone, nor it, may hold CAP_SYS_PTRACE
    (it holds the helper's capabilities until then); in a zone with a user namespace
    always (none of its processes can hold it in the host's), but with a terminal. The
    zone's processes here: this one (a root process: CapBnd has every capability) or
    none."""
    from zoned.runtime.exec_process import creds_in_spawn

    process = {"args": ["true"], "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"]}}
    profile, joins, join_fds, spawn_fd, pids = DENY_CLONE3, (5, []), {}, 6, []
    if case.startswith("as podman's"):
        profile = {"defaultAction": "SCMP_ACT_ALLOW"}
    elif case == "no filter":
        profile = None
    elif case.startswith("no_new_privs"):
        process["noNewPrivileges"] = True
    elif case == "no cgroup2 to clone into":
        joins = (-1, [7])
    elif case.startswith("a user namespace"):
        join_fds, profile = {"user": 9}, None
        process["capabilities"]["bounding"].append("CAP_SYS_PTRACE")  # (the namespace's)
        if "terminal" in case:
            process["terminal"] = True
        if "no cgroup2" in case:
            joins = (-1, [7])
    elif case.startswith("no zoned-spawn"):
        spawn_fd = None
    elif case.startswith("the process may"):
        process["capabilities"]["bounding"].append("CAP_SYS_PTRACE")
    elif case.startswith("a process in the zone"):
        bounding = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                        if ln.startswith("CapBnd:"))
        if not int(bounding.split()[1], 16) >> 19 & 1:
            pytest.skip("this process's bounding set lacks CAP_SYS_PTRACE")
        pids = [os.getpid()]
    cgroup = _FakeZoneCgroup(tmp_path, pids)
    assert creds_in_spawn(process, profile, joins, join_fds, spawn_fd, cgroup) is takes


def test_single_threaded_counts_this_process_threads():
    import threading

    assert join.single_threaded() == (len(os.listdir("/proc/self/task")) == 1)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not join.single_threaded()
    finally:
        stop.set()
        t.join()


# -- real zones, checked from the host ---------------------------------------------------------
needs_root = pytest.mark.skipif(not ROOT, reason="needs root and real cgroups")


def _pid(cli, name: str) -> int:
    return json.loads(cli("state", name, check=True).stdout)["pid"]


@needs_root
@pytest.mark.parametrize("flags", [[], list(SHARED)], ids=["own", "shared memory"])
def test_the_init_is_in_every_hierarchy_and_keeps_no_cgroup_fd(cli, flags):
    """Every hierarchy of the host holds the init at the zone's cgroup (the shared memory
    cgroup's for memory), and the `tasks` files it wrote to are closed: an fd of one in a
    zone would let its root move any host process into that cgroup."""
    from zoned.cgroups import hierarchies

    cli("run", "-d", "--name", "j", *flags, "busybox", "sleep", "300", check=True)
    try:
        pid = _pid(cli, "j")
        cgroups = cgroups_of(pid)
        assert len(cgroups) == len(hierarchies())
        own = {p for k, p in cgroups.items() if "memory" not in k.split(",")}
        assert len(own) == 1 and own.pop().endswith("/j"), cgroups
        mem = next((p for k, p in cgroups.items() if "memory" in k.split(",")), None)
        if mem is not None:
            assert mem.endswith("/@shared-memory" if flags else "/j")
        assert _cgroup_fds(pid) == []
        exec_ = cli("exec", "j", "sh", "-c", "ls -l /proc/1/fd /proc/self/fd", check=True)
        assert "cgroup" not in exec_.stdout and "tasks" not in exec_.stdout
    finally:
        cli("rm", "-f", "j", check=True)


@needs_root
@pytest.mark.parametrize("flags", [[], list(SHARED)], ids=["own", "shared memory"])
def test_no_process_of_zoned_writes_a_pid_into_a_cgroup(cli, flags):
    """Seen by strace: a `zoned run` opens no cgroup.procs for writing (the old way, a move
    by pid), its init is cloned into its cgroup2 cgroup where the host has one, and the
    v1 `tasks` files are written "0"."""
    from tests.conftest import ZONED
    from zoned.cgroups import hierarchies

    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,openat2,clone3,write", "-s", "64",
                        "-o", "/dev/stderr", ZONED, "--root", cli.root, "run", "--rm", *flags,
                        "busybox", "true"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stderr.splitlines()
    assert not [ln for ln in lines if "cgroup.procs" in ln and "O_WRONLY" in ln], lines
    v1 = [h for h in hierarchies() if h.fstype == "cgroup"]
    tasks = [ln for ln in lines if '/tasks"' in ln and "O_WRONLY" in ln]
    assert len(tasks) == len(v1), tasks
    # (a write that strace shows as "<unfinished ...>", as the init's may be while the
    # creator makes a syscall too, ends its line before the ")")
    assert len([ln for ln in lines if 'write(' in ln and ', "0", 1' in ln]) >= len(v1)
    if any(h.fstype == "cgroup2" for h in hierarchies()):
        assert [ln for ln in lines if "clone3(" in ln and "CLONE_INTO_CGROUP" in ln], lines


def _userns_bundle(busybox, tmp_path: Path) -> Path:
    """A bundle of busybox whose config (`zoned spec`'s) adds a user namespace, root 0 =
    host 200000, and runs `sleep 300`; its dirs open to others, so that the namespace's
    root reaches the rootfs (as with runc)."""
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox.rootfs, b / "rootfs", symlinks=True)
    subprocess.run([ZONED_CLI, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["sleep", "300"])
    cfg["linux"]["namespaces"].append({"type": "user"})
    maps = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["linux"].update(uidMappings=maps, gidMappings=maps)
    (b / "config.json").write_text(json.dumps(cfg))
    for d in [b, *b.parents][:4]:
        os.chmod(d, 0o755)
    return b


@needs_root
def test_an_init_in_a_user_namespace_joins_its_cgroups_itself(cli, busybox, tmp_path):
    """A zone with a user namespace (Kubernetes' hostUsers: false, podman --userns): the
    init's stage 1 is cloned into the cgroup2 cgroup, so the init, its child, is born
    there, and it joins each v1 cgroup by "0" to the `tasks` file root opened. Before, it
    was moved by pid, and that write waited for an RCU grace period (13 ms of a 24 ms
    start here). Seen by strace, and from the host: in every hierarchy, no cgroup fd."""
    from zoned.cgroups import hierarchies

    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    b = _userns_bundle(busybox, tmp_path)
    trace = tmp_path / "strace"
    err = tmp_path / "stderr"  # (the created init keeps our stdio, and strace left it at
    with open(err, "w") as f:   # its exec, once set up: nothing waits for either's end)
        p = subprocess.run(["strace", "-f", "-qq", "--detach-on=execve", "-e",
                            "trace=openat,openat2,clone3,write", "-s", "64", "-o", str(trace),
                            ZONED_CLI, "--root", cli.root, "create", "--bundle", str(b), "uj"],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=60)
    try:
        assert p.returncode == 0, err.read_text()[-2000:]
        lines = trace.read_text().splitlines()
        assert not [ln for ln in lines if "cgroup.procs" in ln and "O_WRONLY" in ln], lines
        v1 = [h for h in hierarchies() if h.fstype == "cgroup"]
        assert len([ln for ln in lines if '/tasks"' in ln and "O_WRONLY" in ln]) == len(v1)
        if any(h.fstype == "cgroup2" for h in hierarchies()):
            assert [ln for ln in lines if "clone3(" in ln and "CLONE_INTO_CGROUP" in ln]
        pid = _pid(cli, "uj")
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "200000", "65536"]
        cgroups = cgroups_of(pid)
        assert len(cgroups) == len(hierarchies())
        assert {path.rsplit("/", 1)[-1] for path in cgroups.values()} == {"uj"}, cgroups
        assert _cgroup_fds(pid) == []
    finally:
        cli("delete", "--force", "uj")


def _start_in_a_process(setup: str, root: str, name: str) -> dict:
    """Run `setup` in a fresh Python, then start a detached zone there: its cgroup paths
    (/proc/PID/cgroup, seen from the host) and what the clone3 probe says in that process."""
    code = f"""import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
{setup}
import zoned
from zoned.linux import syscalls as sc
c = zoned.Container(["sleep", "300"], root={root!r}, name={name!r})
c.start()
lines = open(f"/proc/{{c.pid}}/cgroup").read().splitlines()
print(json.dumps({{"probe": sc.clone_into_cgroup_reaches_kernel(),
                  "paths": sorted({{line.split(":", 2)[2] for line in lines}})}}))
c.remove(force=True)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.splitlines()[-1])


@needs_root
def test_a_creator_with_another_thread_moves_the_init_by_pid(zoned_root, busybox):
    """A program that embeds zoned and runs threads cannot clone the init (the interpreter
    is not told about such a fork): its create moves the init by pid, primed, and the
    zone is in the same cgroups."""
    out = _start_in_a_process("""
import threading
from zoned.cgroups import join
threading.Thread(target=threading.Event().wait, daemon=True).start()
assert not join.single_threaded()
""", zoned_root, "t")
    assert len(out["paths"]) == 1 and out["paths"][0].endswith("/t"), out


@needs_root
def test_the_closer_thread_of_earlier_runs_does_not_make_a_creator_threaded(zoned_root,
                                                                             busybox):
    """After zoned.run, the caller has zoned.linux.lastref's closer thread, which never
    holds a lock at a fork: the next zones are still cloned into their cgroup2 cgroup and
    join their v1 ones themselves, with no primer (none started), in the same cgroups."""
    out = _start_in_a_process(f"""
import zoned
from zoned.cgroups import join, prime
from zoned.linux import lastref
for _ in range(2):
    assert zoned.run(["true"], root={zoned_root!r}).returncode == 0
assert lastref.closer_running() and join.single_threaded(besides_closer=True)
def refuse():
    raise AssertionError("primed")
prime.prime = refuse
assert zoned.run(["true"], root={zoned_root!r}).returncode == 0
""", zoned_root, "c")
    assert len(out["paths"]) == 1 and out["paths"][0].endswith("/c"), out


@needs_root
def test_a_python_init_is_not_cloned_beside_the_closer_thread(zoned_root, busybox):
    """The closer thread may hold the GIL when another thread clones through cffi: a
    python child would then wait for it for ever. Only the C init (whose child runs no
    python) discounts it; a zone whose init is python (ZONED_INIT=python here) is forked
    by os.fork and moved by pid, and many start one after the other."""
    out = _start_in_a_process(f"""
import os
import zoned
from zoned.cgroups import join
from zoned.linux import lastref
assert zoned.run(["true"], root={zoned_root!r}).returncode == 0
assert lastref.closer_running()
assert not join.single_threaded() and join.single_threaded(besides_closer=True)
os.environ["ZONED_INIT"] = "python"
for _ in range(20):
    assert zoned.run(["true"], root={zoned_root!r}).returncode == 0
""", zoned_root, "p")
    assert len(out["paths"]) == 1 and out["paths"][0].endswith("/p"), out


@needs_root
def test_where_seccomp_denies_clone3_the_init_is_moved_by_pid(zoned_root, busybox):
    """zoned inside a container whose seccomp profile answers clone3 with ENOSYS (docker's
    default): the probe says so, and a zone starts the old way, in its cgroups."""
    out = _start_in_a_process("""
from zoned.child import seccomp
from zoned.linux import syscalls as sc
prof = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
sc.seccomp_set_filter(seccomp.compile_bpf(prof), seccomp.filter_flags(prof))
""", zoned_root, "s")
    assert out["probe"] is False
    assert len(out["paths"]) == 1 and out["paths"][0].endswith("/s"), out


def _exec_detached(cli, name: str, pid_file: Path, *args: str) -> int:
    cli("exec", "--detach", "--pid-file", str(pid_file), name, "--", *args, check=True,
        files=True)  # (its stdio: files, not pipes it would hold open)
    return int(pid_file.read_text())


def _same_cgroups(pid: int, init: int) -> bool:
    return cgroups_of(pid) == cgroups_of(init)


@needs_root
@pytest.mark.parametrize("flags", [[], list(SHARED)], ids=["own", "shared memory"])
def test_an_exec_d_process_joins_its_cgroups_itself(cli, flags, tmp_path):
    """`zoned exec`'s process is cloned into the zone's cgroup2 cgroup and writes "0" to
    its v1 `tasks` files before it execs: no move by pid, whose first write after a quiet
    spell waits for an RCU grace period (runc's exec pays it: 8-30 ms here). In a shared
    memory cgroup it is moved by pid, as before. Either way it is where the init is, in
    every hierarchy, and holds no cgroup file."""
    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    cli("run", "-d", "--name", "x", *flags, "busybox", "sleep", "300", check=True)
    try:
        init = _pid(cli, "x")
        pid = _exec_detached(cli, "x", tmp_path / "pid", "sleep", "301")
        assert _same_cgroups(pid, init), (cgroups_of(pid), cgroups_of(init))
        assert _cgroup_fds(pid) == []
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,clone3,write", "-s",
                            "64", "-o", "/dev/stderr", ZONED_CLI, "--root", cli.root, "exec", "x",
                            "true"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        by_pid = [ln for ln in p.stderr.splitlines() if "cgroup.procs" in ln and
                  "O_WRONLY" in ln]
        assert bool(by_pid) == bool(flags), by_pid
    finally:
        cli("rm", "-f", "x", check=True)


@needs_root
def test_an_exec_d_process_joins_a_user_namespace_zone_s_cgroups_itself(cli, busybox,
                                                                       tmp_path):
    """exec into a zone with a user namespace: its helper stays in the host's user
    namespace, zoned-spawn clones the process into the zone's cgroup2 cgroup (refused
    from inside the zone's: EACCES, and it was moved by pid, as runc's exec is) and the
    process joins the zone's user namespace, then takes its user. Seen by strace: no
    cgroup.procs write (failing before); from inside: the init's maps and credentials,
    and its cgroups (all at the cgroup namespace's root)."""
    from zoned.cgroups import hierarchies

    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    b = _userns_bundle(busybox, tmp_path)
    cli("create", "--bundle", str(b), "ue", check=True, files=True)
    try:
        cli("start", "ue", check=True)
        probe = ("cat /proc/self/uid_map; grep -E '^(Uid|Gid|Groups|Cap|NoNew)' "
                 "/proc/{}/status; cut -d: -f3 /proc/{}/cgroup | sort -u")
        init = cli("exec", "ue", "sh", "-c", probe.format(1, 1), check=True).stdout
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,clone3", "-o",
                            str(tmp_path / "strace"), ZONED_CLI, "--root", cli.root, "exec",
                            "ue", "sh", "-c", probe.format("self", "self")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout == init  # (the init's as the exec'd process sees it)
        assert p.stdout.splitlines()[0].split() == ["0", "200000", "65536"]
        assert p.stdout.splitlines()[-1] == "/"  # at the root of its cgroup namespace
        lines = (tmp_path / "strace").read_text().splitlines()
        assert not [ln for ln in lines if "cgroup.procs" in ln and "O_WRONLY" in ln], lines
        if any(h.fstype == "cgroup2" for h in hierarchies()):
            assert [ln for ln in lines if "CLONE_INTO_CGROUP" in ln and "= -1" not in ln]
    finally:
        cli("delete", "--force", "ue")


def _seccomp_bundle(busybox, b: Path, denied: dict, **process) -> Path:
    """A bundle whose process has no no_new_privs and whose profile answers each of
    `denied` (syscall -> errno, or (errno, the first argument's value)) with that errno."""
    b.mkdir()
    shutil.copytree(busybox.rootfs, b / "rootfs", symlinks=True)
    subprocess.run([ZONED_CLI, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["sleep", "300"], noNewPrivileges=False,
                          **process)
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": [n], "action": "SCMP_ACT_ERRNO",
                      **({"errnoRet": e[0], "args": [{"index": 0, "value": e[1],
                                                     "op": "SCMP_CMP_EQ"}]}
                         if isinstance(e, tuple) else {"errnoRet": e})}
                     for n, e in denied.items()]}
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def _create_started(cli, b: Path, name: str) -> None:
    with open(os.devnull, "w") as null:
        subprocess.run([ZONED_CLI, "--root", cli.root, "create", "--bundle", str(b), name],
                       stdin=subprocess.DEVNULL, stdout=null, stderr=null, check=True)
    cli("start", name, check=True)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(ln.split(":\t", 1) for ln in lines if ":\t" in ln)


CREDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
         "NoNewPrivs", "Seccomp", "Seccomp_filters")


@needs_root
def test_where_the_zones_seccomp_denies_clone3_an_exec_d_process_still_joins_itself(
        cli, busybox, tmp_path):
    """Without no_new_privs a filter needs CAP_SYS_ADMIN to load (runc loads it before the
    capabilities go). zoned's helper loaded it before the process was made, so a profile
    that answers clone3 with ENOSYS (Docker's, containerd's) refused zoned-spawn's clone into
    the cgroup2 cgroup, and the process was moved by pid (the grace period). Now the
    process loads the filter, then takes its user and capabilities itself: it is cloned
    into its cgroups, and ends up with the credentials, capabilities and filter the old
    way gave it: those of the zone's C init, which took the same config's (the control).
    Not while a process in the zone may ptrace it before then."""
    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    user = {"uid": 1000, "gid": 1000, "additionalGids": [3000, 3001], "umask": 0o27}
    _create_started(cli, _seccomp_bundle(busybox, tmp_path / "bundle", {"clone3": 38},
                                         user=user), "s")
    try:
        init = _pid(cli, "s")
        pid = _exec_detached(cli, "s", tmp_path / "pid", "sleep", "301")
        assert _same_cgroups(pid, init)
        got = _status(pid)
        assert got["Uid"].split() == ["1000"] * 4 and got["Gid"].split() == ["1000"] * 4
        assert got["Groups"].split() == ["3000", "3001"] and got["Umask"] == "0027"
        assert got["Seccomp"] == "2" and got["NoNewPrivs"] == "0"
        assert {k: got[k] for k in CREDS} == {k: _status(init)[k] for k in CREDS}
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,clone3,write", "-s",
                            "64", "-o", "/dev/stderr", ZONED_CLI, "--root", cli.root, "exec",
                            "s", "true"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        lines = p.stderr.splitlines()
        assert not [ln for ln in lines if "cgroup.procs" in ln and "O_WRONLY" in ln]
        assert [ln for ln in lines if "clone3(" in ln and "CLONE_INTO_CGROUP" in ln
                and "= -1" not in ln], lines
        # Until it takes them it holds the helper's capabilities in the zone's pid namespace:
        # not while a process there may ptrace (CAP_SYS_PTRACE in its bounding set): the
        # helper takes them then, and the process is moved by pid as before
        cli("exec", "--detach", "--cap", "CAP_SYS_PTRACE", "s", "--", "sleep", "302",
            check=True, files=True)
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,clone3,write", "-s",
                            "64", "-o", "/dev/stderr", ZONED_CLI, "--root", cli.root, "exec",
                            "s", "true"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        assert [ln for ln in p.stderr.splitlines() if "cgroup.procs" in ln and "O_WRONLY" in ln]
        pid = _exec_detached(cli, "s", tmp_path / "pid3", "sleep", "303")
        assert _same_cgroups(pid, init)
        assert {k: _status(pid)[k] for k in CREDS} == {k: _status(init)[k] for k in CREDS}
    finally:
        cli("delete", "--force", "s", check=True)


@needs_root
def test_an_exec_d_process_that_cannot_take_its_user_fails_and_leaves_nothing(
        cli, busybox, tmp_path):
    """The process takes its user after its filter (runc's order): a profile that denies
    setresuid fails the exec, as runc's does, in one line naming the step, and no process
    of it is left in the zone (the init, root, took its user before)."""
    _create_started(cli, _seccomp_bundle(busybox, tmp_path / "bundle",
                                         {"clone3": 38, "setresuid": (1, 1000)}), "s")
    try:
        init = _pid(cli, "s")
        p = cli("exec", "--user", "1000", "s", "--", "sleep", "303")
        assert p.returncode != 0
        assert p.stderr == "zoned: invalid process.user.uid 1000: Operation not permitted\n", \
            p.stderr  # (as where zoned's helper took them)
        pids = Path(f"/sys/fs/cgroup/pids{cgroups_of(init)['pids']}/cgroup.procs")
        assert pids.read_text().split() == [str(init)]  # nothing of the exec is left
    finally:
        cli("delete", "--force", "s", check=True)
