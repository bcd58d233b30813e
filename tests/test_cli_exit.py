"""The CLI's exit leaves the freeing of its memory to a holder (csrc/exitlend.c), and that
holder never outlives it for long, holds none of its fds and is reaped like any orphan.

Each case runs the exiting program under a child subreaper of its own (a helper process),
so that the holder is re-parented there and can be seen: the program's own exit status,
then every other process that ended up there, until none is left.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ZONED = str(Path(sys.executable).parent / "zoned")

# The subreaper: runs argv with its stdout on a pipe, reads that to EOF, reaps argv's
# process, tries the lock file (its first argument; "-" for none), then reaps whatever
# else was re-parented to it for up to 10 s. Prints one JSON line.
SUBREAPER = textwrap.dedent("""
    import ctypes, fcntl, json, os, sys, time
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    lock, argv = sys.argv[1], sys.argv[2:]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.execv(argv[0], argv)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    _, status = os.waitpid(pid, 0)
    lock_free = None
    if lock != "-":
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_free = True
        except BlockingIOError:
            lock_free = False
    others, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            other, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if other:
            others.append({"signal": os.WTERMSIG(st) if os.WIFSIGNALED(st) else None,
                           "code": os.WEXITSTATUS(st) if os.WIFEXITED(st) else None})
        else:
            time.sleep(0.01)
    else:
        others.append("still running after 10 s")
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "out": out.decode(),
                      "lock_free": lock_free, "others": others}))
""")

# A program that holds a lock and a pipe (its stdout), then exits lending its memory.
EXITER = textwrap.dedent("""
    import fcntl, os, sys
    from zoned.linux import syscalls
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    syscalls.exit_lending_memory(7)
""")


def _under_subreaper(argv: list[str], lock: str = "-", env: dict | None = None) -> dict:
    p = subprocess.run([sys.executable, "-c", SUBREAPER, lock, *argv], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _ended(holder) -> bool:
    """The holder dies by its death signal, or exits 0 if we were gone before it set it."""
    return isinstance(holder, dict) and (holder["signal"] == 9 or holder["code"] == 0)


@pytest.mark.unprivileged
def test_status_output_lock_and_pipe_end_with_the_exit(tmp_path):
    result = _under_subreaper([sys.executable, "-c", EXITER, str(tmp_path / "lock")],
                              lock=str(tmp_path / "lock"))
    assert result["code"] == 7
    assert result["out"] == "ready\n"  # and EOF came: the holder had no copy of the pipe
    assert result["lock_free"] is True  # released by the exit, not whenever the holder ends
    # one holder, re-parented here and reaped: none lingers
    assert len(result["others"]) == 1 and _ended(result["others"][0]), result["others"]


def test_a_zoned_run_leaves_nothing_running(cli):
    result = _under_subreaper([ZONED, "--root", cli.root, "run", "--rm", "--", "/bin/sh",
                               "-c", "echo out; exit 3"])
    assert result["code"] == 3 and result["out"] == "out\n"
    assert len(result["others"]) == 1 and _ended(result["others"][0]), result["others"]


def test_a_command_without_the_extension_exits_plainly():
    """`zoned --version` loads no zoned._native: loading it would cost more than the exit
    saves, so there is no holder."""
    result = _under_subreaper([ZONED, "--version"])
    assert result["code"] == 0 and result["out"].startswith("zoned version")
    assert result["others"] == []


# As EXITER, but asking the holder to keep the lock's fd and an O_PATH fd of a directory.
KEEPER = EXITER.replace("syscalls.exit_lending_memory(7)", """\
kept = os.open(os.path.dirname(sys.argv[1]), os.O_PATH | os.O_CLOEXEC)
syscalls.exit_lending_memory(7, [fd, kept])""")


@pytest.mark.unprivileged
def test_the_holder_keeps_no_fd_but_an_o_path_one(tmp_path):
    """zoned.linux.lastref's fds (O_PATH) go to the holder; any other fd in the list is
    closed all the same: a lock or a pipe never outlives the exit."""
    result = _under_subreaper([sys.executable, "-c", KEEPER, str(tmp_path / "lock")],
                              lock=str(tmp_path / "lock"))
    assert result["code"] == 7 and result["out"] == "ready\n"
    assert result["lock_free"] is True
    assert len(result["others"]) == 1 and _ended(result["others"][0]), result["others"]


@contextmanager
def own_tmpfs(path, name: str):
    """A tmpfs of the test's own at `path` (state and data on it), gc'd and unmounted after."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", name, str(path)], check=True)
    try:
        (path / "data").mkdir()
        yield {**os.environ, "ZONED_DATA": str(path / "data")}, [ZONED, "--root",
                                                                str(path / "state")]
    finally:
        subprocess.run([ZONED, "--root", str(path / "state"), "gc"], capture_output=True)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_what_a_zoned_run_removed_is_freed_once_its_holder_has_gone(cli, tmp_path):
    """The CLI keeps what its removal unlinks until its holder goes (zoned.linux.lastref):
    on a tmpfs of its own, holding the state and the data, the file system's free inodes
    are what they were before the run once the holder has been reaped."""
    fs = tmp_path / "fs"
    with own_tmpfs(fs, "zoned-test-lastref") as (env, zoned):
        frees = []
        for _ in range(3):  # the first makes the roots' own directories
            result = _under_subreaper([*zoned, "run", "--rm", "--", "/bin/true"], env=env)
            assert result["code"] == 0
            assert len(result["others"]) == 1 and _ended(result["others"][0]), result
            frees.append(os.statvfs(fs).f_ffree)
        assert frees[1] == frees[2]


def test_a_command_without_a_holder_hands_what_it_removed_to_zoned_release(cli, tmp_path):
    """The OCI `delete` of a stopped container loads no zoned._native (no holder): at its
    exit it hands what it removed to zoned-release, whose child is the one process left
    to reap; once it has been, the free inodes are back to what they were."""
    from zoned.bench.common import make_bundle

    bundle = make_bundle(["/bin/true"], readonly=False, zoned_cli=ZONED,
                         prefix=str(tmp_path / "bundle-"))
    fs = tmp_path / "fs"
    try:
        with own_tmpfs(fs, "zoned-test-release") as (env, zoned):
            warm = _under_subreaper([*zoned, "run", "--rm", "--", "/bin/true"], env=env)
            assert warm["code"] == 0 and len(warm["others"]) == 1  # (its holder, reaped)
            free = os.statvfs(fs).f_ffree
            for step in (["create", "--bundle", str(bundle), "c1"], ["start", "c1"]):
                p = subprocess.run([*zoned, *step], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=60)
                assert p.returncode == 0, step
            deadline = time.monotonic() + 10
            while json.loads(subprocess.run([*zoned, "state", "c1"], env=env,
                                            capture_output=True, text=True).stdout
                             )["status"] != "stopped":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            result = _under_subreaper([*zoned, "delete", "c1"], env=env)
            assert result["code"] == 0
            assert result["others"] == [{"signal": None, "code": 0}]  # zoned-release's child
            assert os.statvfs(fs).f_ffree == free
    finally:
        subprocess.run(["rm", "-rf", str(bundle)])
