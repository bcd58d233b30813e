"""Escapes through zoned's own processes (issue 10, items 1 and 3), tried as an attacker would.

Item 1: zone root must never reach a process of zoned's: open its /proc/PID/exe (the host's
python, which it could rewrite once nothing runs it: CVE-2019-5736) or ptrace it (and run any
syscall the zone's seccomp profile denies). tests/progs/exec_attack.c spins on /proc inside
the zone while `zoned exec` runs, and reports what it reached.
Item 3: a config without a mount namespace must be refused, never pivot the caller's root.
Run in a throw-away mount namespace, so that a regression cannot wreck this machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT_INFRASTRUCTURE, ZONED, zone_state
from twohost import build_static
import test_oci

bundle = test_oci.bundle  # the fixture, under the name the tests ask for



def build_attack() -> str:
    """tests/progs/exec_attack.c, built static."""
    return build_static("exec_attack")


def read_report(path: Path, timeout: float = 30) -> dict:
    """exec_attack's one line, once it is written: {"seen": N, ..., "host": PATH}."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "the attacker wrote no report"
        time.sleep(0.1)
    fields = dict(f.split("=", 1) for f in path.read_text().split())
    return {k: (v if k == "host" else int(v)) for k, v in fields.items()}


@pytest.fixture
def attack_dirs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return ["-v", f"{build_attack()}:/attack:ro", "-v", f"{out}:/out"], out


def test_exec_helper_is_out_of_reach(cli, attack_dirs, monkeypatch):
    """20 `zoned exec`s, each holding its helper for 0.2 s after set-up (the window where
    the old helper sat in the zone's pid namespace, capabilities dropped, seccomp not yet
    loaded, dumpable): the attacker reaches none of zoned's processes. It does reach the
    zone's own processes (its init, the exec'd commands): the attack is live."""
    volumes, out = attack_dirs
    cli("run", "-d", "--name", "z", *volumes, "--", "sleep", "3600", check=True)
    cli("exec", "-d", "z", "--", "/attack", "12", "/out/report", files=True, check=True)
    time.sleep(0.3)  # the attacker is spinning
    monkeypatch.setenv("ZONED_TEST_PAUSE_EXEC", "0.2")
    for i in range(20):
        p = cli("exec", "z", "--", "sh", "-c", f"exit {i % 3}")
        assert p.returncode == i % 3, p.stderr
    report = read_report(out / "report")
    assert report["opened_host"] == 0 and report["attached_host"] == 0, report
    assert report["host"] == "-", report          # it never saw a host binary as an exe
    assert report["attached"] > 0 and report["seen"] >= 3, report


def test_ptrace_capable_attacker_sees_only_a_sealed_copy(cli, attack_dirs):
    """An attacker with CAP_SYS_PTRACE in the host's user namespace (`exec --cap
    SYS_PTRACE`, as for gdb or strace) passes the non-dumpable check, so it can catch each
    new process in the moment between its clone and its execve. Then that process's exe must
    be zoned-spawn's sealed memfd copy, never the host's python (which it could rewrite:
    CVE-2019-5736); runc 1.1 runs from a sealed memfd copy of itself for the same reason."""
    volumes, out = attack_dirs
    cli("run", "-d", "--name", "z", *volumes, "--", "sleep", "3600", check=True)
    cli("exec", "-d", "--cap", "SYS_PTRACE", "z", "--", "/attack", "8", "/out/report",
        files=True, check=True)
    time.sleep(0.3)
    for _ in range(30):
        assert cli("exec", "z", "--", "true").returncode == 0
    report = read_report(out / "report")
    assert report["opened_host"] == 0 and report["attached_host"] == 0, report
    assert report["host"] == "-", report


def attacker_in(bundle) -> Path:  # noqa: F811
    """The attacker copied into a bundle's rootfs (no mount target to create: a user
    namespace's root could not); it reports to /tmp, returned as seen from the host."""
    import shutil

    rootfs = bundle.path / "rootfs"
    shutil.copy(build_attack(), rootfs / "attack")
    os.chmod(rootfs / "tmp", 0o1777)
    return rootfs / "tmp"


def test_created_init_is_out_of_reach(cli, bundle):
    """A created zone's init is zoned's Python until `start`; a process exec'd into the zone
    meanwhile sees it as PID 1 and must reach neither its exe nor ptrace it."""
    out = attacker_in(bundle)
    bundle(["sleep", "1000"])
    cli("create", "--bundle", str(bundle.path), "c1", files=True, check=True)
    assert json.loads(cli("state", "c1").stdout)["status"] == "created"
    p = cli("exec", "c1", "--", "/attack", "1", "/tmp/report", "1")
    assert p.returncode == 0, p.stderr
    report = read_report(out / "report")
    assert report["opened"] == 0 and report["attached"] == 0, report
    assert report["seen"] == 1, report
    cli("start", "c1", check=True)  # still intact: it starts
    assert json.loads(cli("state", "c1").stdout)["status"] == "running"


def test_created_init_is_a_sealed_copy_to_a_ptrace_capable_attacker(cli, bundle):
    """With CAP_SYS_PTRACE in the host's user namespace (`exec --cap SYS_PTRACE`) the
    non-dumpable check passes, so a created zone's init must not be the host's python
    (which the attacker could rewrite through /proc/1/exe once nothing runs it): from its
    set-up to its execve it is zoned-spawn's sealed, execute-only memfd copy, as runc's init
    is its own sealed copy. With and without no_new_privs (then the seccomp filter is still
    to be loaded, by that copy)."""
    out = attacker_in(bundle)
    for nnp in (False, True):
        cid = f"p{int(nnp)}"
        bundle(["sleep", "1000"], **{
            "process.noNewPrivileges": nnp,
            "linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]}})
        cli("create", "--bundle", str(bundle.path), cid, files=True, check=True)
        p = cli("exec", "--cap", "CAP_SYS_PTRACE", cid, "--", "/attack", "1", "/tmp/report",
                "1")
        assert p.returncode == 0, p.stderr
        report = read_report(out / "report")
        (out / "report").unlink()
        assert report["opened_host"] == 0 and report["attached_host"] == 0, report
        assert report["host"] == "-", report
        assert report["opened"] > 0 and report["sealed"] > 0, report  # the attack is live
        cli("start", cid, check=True)  # still intact: it starts, with its filter
        st = json.loads(cli("state", cid).stdout)
        assert st["status"] == "running"
        status = Path(f"/proc/{st['pid']}/status").read_text()
        assert "Seccomp:\t2" in status, status
        assert Path(f"/proc/{st['pid']}/cmdline").read_bytes() == b"sleep\x001000\x00"
        cli("delete", "-f", cid, check=True)


@pytest.mark.parametrize("kind", ["c", "python"])
def test_a_zone_started_at_once_admits_nobody_while_its_init_is_zoneds(cli, monkeypatch,
                                                                      kind):
    """`zoned run` creates and starts in one step (Runtime.run): its init (zoned-spawn from
    the host's file, or a copy of zoned's python) execs the zone's process with no sealed
    copy in between. So until that exec, the zone's record must not say "created" or
    "running": `exec` (the way in for an attacker with CAP_SYS_PTRACE, see above) refuses
    it, and nothing else is in its namespaces. Held in that window by a fault point; then
    it runs, and exec works."""
    monkeypatch.setenv("ZONED_INIT", kind)
    monkeypatch.setenv("ZONED_TEST_FAULT", "run:ready=3")
    run = subprocess.Popen([ZONED, "--root", cli.root, "run", "--name", "r1", "--", "sleep",
                            "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children")
        deadline = time.monotonic() + 20
        init = 0
        while not init:  # the init: the CLI's child, in a pid namespace of its own
            assert time.monotonic() < deadline and run.poll() is None, "no init appeared"
            kids = children.read_text().split()
            if kids and os.readlink(f"/proc/{kids[0]}/ns/pid") != os.readlink(
                    "/proc/self/ns/pid"):
                init = int(kids[0])
            time.sleep(0.02)
        python = Path(f"/proc/{run.pid}/cmdline").read_bytes()
        monkeypatch.delenv("ZONED_TEST_FAULT")
        p = cli("exec", "r1", "--", "true")
        assert p.returncode != 0 and "creating" in p.stderr, (p.returncode, p.stderr)
        assert json.loads(cli("state", "r1").stdout)["status"] == "creating"
        # all of that while PID 1 was still zoned's
        zoneds = b"zoned-spawn\0setup\0" if kind == "c" else python
        assert Path(f"/proc/{init}/cmdline").read_bytes().startswith(zoneds)
        deadline = time.monotonic() + 20
        while json.loads(cli("state", "r1").stdout)["status"] != "running":
            assert time.monotonic() < deadline and run.poll() is None, "it never ran"
            time.sleep(0.05)
        assert Path(f"/proc/{init}/cmdline").read_bytes() == b"sleep\x001000\x00"
        assert cli("exec", "r1", "--", "true").returncode == 0
    finally:
        cli("rm", "-f", "r1")
        run.wait(timeout=30)


def test_created_init_reports_a_failed_exec(cli, bundle, tmp_path):
    """A created init's execve happens in zoned-spawn's copy: a failure there is still told
    the Python path's way, on the zone's stderr after `start` (runc's exit codes 127 and
    126, which podman maps). `run` and `run --bundle` (created and started in one step,
    their init execs from Python) report it on the sync socket, with the same codes."""
    rootfs = bundle.path / "rootfs"
    for name, interpreter in (("noent.sh", "/nonexistent"), ("dir.sh", "/etc")):
        (rootfs / name).write_text(f"#!{interpreter}\n")
        os.chmod(rootfs / name, 0o755)
    for name, code, error in (("noent.sh", 127, "No such file or directory"),
                              ("dir.sh", 126, "Permission denied")):
        p = cli("run", "--rm", "--rootfs", str(rootfs), "--", f"/{name}")
        assert (p.returncode, p.stderr) == (code, f"zoned: {error}: /{name}\n")
        bundle([f"/{name}"])
        p = cli("run", "--bundle", str(bundle.path), "r1", files=True)
        assert (p.returncode, p.stderr) == (code, f"zoned: {error}: /{name}\n"), p.stderr
        with open(tmp_path / "err", "w+") as err:  # the zone's stderr: create's
            subprocess.run([ZONED, "--root", cli.root, "create", "--bundle",
                            str(bundle.path), "c1"], stdin=subprocess.DEVNULL, stdout=err,
                           stderr=err, check=True, timeout=60)
            cli("start", "c1", check=True)
            deadline = time.monotonic() + 20
            while json.loads(cli("state", "c1").stdout)["status"] != "stopped":
                assert time.monotonic() < deadline, "the created init never ended"
                time.sleep(0.05)
            err.seek(0)
            assert err.read() == f"zoned: container init: {error}: /{name}\n"
        cli("delete", "c1", check=True)
    assert cli("ps", "-a", "-q").stdout.split() == []


def test_exec_pid_file_names_the_process_in_the_zone(cli, tmp_path):
    """--pid-file (conmon reads it for podman exec) and the exit code name the exec'd process
    itself, in the zone's pid namespace, not a helper."""
    cli("run", "-d", "--name", "p", "--", "sleep", "3600", check=True)
    init = json.loads(cli("state", "p").stdout)["pid"]
    pidfile = tmp_path / "exec.pid"
    p = cli("exec", "-d", "--pid-file", str(pidfile), "p", "--", "sleep", "30", files=True)
    assert p.returncode == 0, p.stderr
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    # foreground: the pid file's process is the one whose exit code comes back
    pidfile.unlink()
    p = subprocess.Popen([ZONED, "--root", cli.root, "exec", "-i", "--pid-file", str(pidfile),
                          "p", "--", "sh", "-c", "echo $$; read x; exit 7"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    zone_pid = p.stdout.readline().strip()
    for _ in range(100):  # written once the process is made, which may already have run
        if pidfile.exists():
            break
        time.sleep(0.05)
    status = Path(f"/proc/{int(pidfile.read_text())}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
    assert nspid.split()[-1] == zone_pid, nspid
    p.stdin.write("go\n")
    p.stdin.close()
    assert p.wait(timeout=30) == 7
    # a command that cannot be executed: runc's codes, nothing left behind
    assert cli("exec", "p", "--", "/nonexistent").returncode == 127
    assert cli("exec", "p", "--", "/etc/passwd").returncode == 126
    procs = json.loads(cli("ps", "--format", "json", "p").stdout)
    assert len(procs) == 2, procs  # the init and the detached sleep


def test_exec_in_a_user_namespace_zone(cli, bundle):
    """exec into a user-namespace zone: the helper joins the user namespace, then the pid
    namespace with the capabilities it has there; the attacker, root of the zone's user
    namespace, reaches nothing of zoned's either."""
    out = attacker_in(bundle)
    bundle(["sleep", "1000"],
           **{"linux.namespaces": bundle.cfg["linux"]["namespaces"] + [{"type": "user"}],
              "linux.uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
              "linux.gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]})
    for d in [bundle.path, *bundle.path.parents][:4]:
        os.chmod(d, 0o755)
    cli("create", "--bundle", str(bundle.path), "u1", files=True, check=True)
    cli("start", "u1", check=True)
    p = cli("exec", "u1", "--", "sh", "-c", "id -u; cat /proc/self/uid_map; exit 4")
    assert p.returncode == 4 and p.stdout.split()[:4] == ["0", "0", "200000", "65536"], p.stderr
    cli("exec", "-d", "u1", "--", "/attack", "5", "/tmp/report", files=True, check=True)
    for _ in range(10):
        assert cli("exec", "u1", "--", "true").returncode == 0
    report = read_report(out / "report")
    assert report["opened_host"] == 0 and report["attached_host"] == 0, report


def test_config_without_mount_namespace_is_refused(cli, bundle, tmp_path):  # noqa: F811
    """Without a "mount" namespace zoned used to pivot_root the caller's root. Run in a
    throw-away mount namespace: even a regression only wrecks that one."""
    namespaces = [n for n in bundle.cfg["linux"]["namespaces"] if n["type"] != "mount"]
    bundle(["true"], **{"linux.namespaces": namespaces})
    marker = tmp_path / "still-here"
    marker.write_text("x")
    script = (f'{ZONED} --root {cli.root} run --bundle {bundle.path} nomnt; echo "rc=$?"; '
              f'ls / | tr "\\n" " "; echo; cat {marker}; echo; ls -A {cli.root}')
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    assert len(lines) >= 3 and lines[0] == "rc=125", (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        'zoned: linux.namespaces: a "mount" namespace is required (zoned sets up the '
        "rootfs with mounts and pivot_root, which would change the caller's root)"]
    root_entries = lines[1].split()
    assert {"work", "tmp", "usr", "proc"} <= set(root_entries), lines[1]
    assert lines[2] == "x"                # the caller's files are where they were
    assert lines[3:] == [] or lines[3:] == [""], lines  # nothing left in the state root
    # joining some other process's mount namespace is refused as well
    bundle(["true"], **{"linux.namespaces": namespaces + [
        {"type": "mount", "path": "/proc/1/ns/mnt"}]})
    p = subprocess.run(["unshare", "-m", "--propagation", "private", ZONED, "--root",
                        cli.root, "run", "--bundle", str(bundle.path), "joined"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 125 and "linux.namespaces" in p.stderr, p.stderr
    assert zone_state(cli.root) == []


def test_child_refuses_to_mount_in_the_callers_namespace(cli, bundle):
    """Defence in depth: with create's check switched off, the container child itself sees
    that its mount namespace is its creator's and refuses before its first mount. In a
    throw-away mount namespace, like the test above."""
    namespaces = [n for n in bundle.cfg["linux"]["namespaces"] if n["type"] != "mount"]
    bundle(["true"], **{"linux.namespaces": namespaces})
    script = f"""
import json, os, sys
from zoned import runtime
from zoned.oci import spec
from zoned.errors import ZonedError
spec.check_private_mount_namespace = lambda linux: None  # the parent's check, off
cfg = json.load(open({str(bundle.path / "config.json")!r}))
try:
    runtime.Runtime({cli.root!r}).create("dind", cfg, bundle={str(bundle.path)!r},
                                        use_fifo=False)
except ZonedError as e:
    print("refused:", e)
print(" ".join(sorted(os.listdir("/"))))
print(" ".join(n for n in os.listdir({cli.root!r}) if n not in {sorted(ROOT_INFRASTRUCTURE)!r}))
"""
    p = subprocess.run(["unshare", "-m", "--propagation", "private", os.sys.executable, "-c",
                        script], capture_output=True, text=True, timeout=60,
                       cwd="/")  # the installed zoned, not one in the current directory
    lines = p.stdout.splitlines()
    assert len(lines) >= 2, (p.stdout, p.stderr)
    assert lines[0] == ("refused: refusing to set up the rootfs in the caller's mount "
                        'namespace: linux.namespaces needs a new "mount" namespace'), (
        p.stdout, p.stderr)
    assert {"work", "tmp", "usr", "proc"} <= set(lines[1].split()), lines[1]
    assert lines[2:] in ([], [""]), lines


@pytest.mark.parametrize("nnp", [False, True])
def test_exec_under_a_profile_that_denies_execveat(cli, bundle, nnp):  # noqa: F811
    """Without no_new_privs the helper loads the zone's seccomp filter before it runs
    zoned-spawn; a profile denying execveat makes it clone itself instead. Either way the
    process runs, with the filter, and inherits none of zoned's fds."""
    bundle(["sleep", "1000"], **{
        "process.noNewPrivileges": nnp,
        "linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["execveat"], "action": "SCMP_ACT_ERRNO"}]}})
    cli("create", "--bundle", str(bundle.path), "s1", files=True, check=True)
    cli("start", "s1", check=True)
    p = cli("exec", "s1", "--", "sh", "-c",
            "grep ^Seccomp: /proc/self/status; ls /proc/self/fd; exit 6")
    assert p.returncode == 6, p.stderr
    lines = p.stdout.split()
    assert lines[:2] == ["Seccomp:", "2"], p.stdout
    assert lines[2:] == ["0", "1", "2", "3"], p.stdout  # 3: ls's own /proc/self/fd


def test_a_killed_exec_leaves_no_process_waiting(cli):
    """`zoned exec` killed while the process it made waits for "go" (in the zone's pid
    namespace, holding the caller's stdout): that process dies with it. It used to block in
    read for ever, so a caller reading exec's output never saw EOF."""
    cli("run", "-d", "--name", "w", "--", "sleep", "1000", check=True)
    env = {**os.environ, "ZONED_TEST_FAULT": "exec:made=kill"}
    for detach in ([], ["-d"]):
        p = subprocess.Popen([ZONED, "--root", cli.root, "exec", *detach, "w", "--", "sleep",
                              "77777"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
        out, _ = p.communicate(timeout=20)  # EOF: nothing holds the pipe any more
        assert p.returncode == -9
        ps = cli("exec", "w", "--", "ps", "-o", "args", check=True).stdout
        assert "77777" not in ps and "zoned-spawn" not in ps, ps
