"""zoned.linux.lastref: what zoned removes is kept (O_PATH) until the CLI exits or an API
operation ends (then zoned-release drops it), and only where it costs little. Each case
runs in a python of its own: keeping hooks every later fork of the process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import fcntl, json, os, sys
    from zoned.linux import lastref
    base = sys.argv[1]
    for d in ("dir", "gone"):
        os.mkdir(os.path.join(base, d))
    with open(os.path.join(base, "small"), "wb") as f:
        f.write(b"x" * 100)
    with open(os.path.join(base, "large"), "wb") as f:
        f.write(os.urandom(256 * 1024))
        os.fsync(f.fileno())
    lastref.hold(os.path.join(base, "dir"))
    before = lastref.held()
    lastref.defer_until_exit()
    for name in ("dir", "small", "large", "missing"):
        lastref.hold(os.path.join(base, name))
    held = lastref.held()
    flags = [fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH != 0 for fd in held]
    cloexec = [fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC != 0 for fd in held]
    kinds = [os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) for fd in held]
    os.rmdir(os.path.join(base, "dir"))
    gone = os.readlink(f"/proc/self/fd/{held[0]}")
    for i in range(lastref.LIMIT + 5):
        lastref.hold(os.path.join(base, "gone"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fork's child keeps none of them
        os.close(r)
        open_ = [fd for fd in held if os.path.exists(f"/proc/self/fd/{fd}")]
        os.write(w, json.dumps({"child_open": open_, "child_held": lastref.held()}).encode())
        os._exit(0)
    os.close(w)
    child = json.loads(os.read(r, 65536))
    os.waitpid(pid, 0)
    print(json.dumps({"before": before, "kinds": kinds, "o_path": flags, "cloexec": cloexec,
                      "removed_yet_held": gone, "count": len(lastref.held()),
                      "parent_open": all(os.path.exists(f"/proc/self/fd/{fd}")
                                         for fd in lastref.held()), **child}))
""")


@pytest.mark.unprivileged
def test_hold_keeps_small_inodes_only_when_deferring_and_no_fork_inherits_them(tmp_path):
    p = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["before"] == []  # off: hold() keeps nothing
    assert r["kinds"] == ["dir", "small"]  # a large file and a missing one are not kept
    assert all(r["o_path"]) and all(r["cloexec"])
    assert r["removed_yet_held"].endswith("(deleted)")  # the inode outlived its rmdir
    from zoned.linux import lastref

    assert r["count"] == lastref.LIMIT  # no more than that, however many are removed
    assert r["parent_open"]
    assert r["child_open"] == [] and r["child_held"] == []


@pytest.mark.unprivileged
def test_pin_is_for_directories_and_small_files(tmp_path):
    from zoned.linux import lastref

    (tmp_path / "d").mkdir()
    (tmp_path / "s").write_bytes(b"{}")
    big = tmp_path / "b"
    with open(big, "wb") as f:
        f.write(b"\0" * (lastref.SMALL * 4))
        f.flush()
        os.fsync(f.fileno())
    (tmp_path / "l").symlink_to(big)
    fds = {name: lastref.pin(str(tmp_path / name)) for name in ("d", "s", "b", "l", "none")}
    try:
        assert fds["d"] >= 0 and fds["s"] >= 0 and fds["l"] >= 0  # the link, not its target
        assert fds["b"] == -1 and fds["none"] == -1
    finally:
        for fd in fds.values():
            if fd >= 0:
                os.close(fd)


# An API operation on a tmpfs of its own (argv[1]), run as a child subreaper so that the
# releaser's child comes back to it: begin, 5 directories removed, end; the free inodes
# at each point, what the caller still has open, and who was reaped afterwards.
OPERATION = textwrap.dedent("""
    import ctypes, json, os, sys, time
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    from zoned.linux import lastref
    from zoned.linux.files import rmtree
    base = sys.argv[1]
    free = lambda: os.statvfs(base).f_ffree
    fds = lambda: sorted(os.listdir("/proc/self/fd"))
    before_fds = fds()
    outer = lastref.begin()
    inner = lastref.begin()  # part of the outer operation: not its own
    os.makedirs(os.path.join(base, "t", "a", "b"))
    for d in ("c", "d"):
        os.mkdir(os.path.join(base, "t", d))
    made = free()
    rmtree(os.path.join(base, "t"))
    removed = free()
    lastref.end()
    ended_fds = fds()
    reaped, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            reaped.append(os.waitstatus_to_exitcode(status))
        else:
            time.sleep(0.01)
    lastref.hold(os.path.join(base, "gone"))  # ended: keeps nothing
    print(json.dumps({"outer": outer, "inner": inner, "made": made, "removed": removed,
                      "after": free(), "fds_kept": ended_fds != before_fds,
                      "reaped": reaped, "held": lastref.held()}))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="root: mounts a tmpfs")
def test_an_operation_hands_what_it_removed_to_zoned_release(tmp_path):
    """Until end(), the removed directories' inodes stay in use (the O_PATH fds); end()
    closes the caller's fds and reaps zoned-release, whose child, reaped by the nearest
    subreaper, frees them: the tmpfs's free inodes are back to what they were."""
    from zoned.linux import lastref

    assert os.access(lastref.RELEASER, os.X_OK), "make zoned/libexec/zoned-release"
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "zoned-test-lastref", str(fs)], check=True)
    try:
        p = subprocess.run([sys.executable, "-c", OPERATION, str(fs)], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout)
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=True)
    assert r["outer"] is True and r["inner"] is False
    assert r["removed"] == r["made"]  # 5 directories removed, none freed yet
    assert r["fds_kept"] is False  # end() closed the caller's copies
    assert r["reaped"] == [0]  # the releaser's child (end() reaped the releaser itself)
    assert r["after"] == r["made"] + 5
    assert r["held"] == []
