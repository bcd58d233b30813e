"""zoned.linux without root: the constants the C extension exports (from the system headers,
not restated in Python), and the mountinfo parser on crafted texts."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.unprivileged

SYSCALLS = Path(__file__).resolve().parent.parent / "zoned" / "linux" / "syscalls.py"


def _constant_names() -> list[tuple[str, ast.expr]]:
    """The module-level UPPER_CASE names syscalls.py assigns, with their value expressions."""
    tree = ast.parse(SYSCALLS.read_text())
    return [(t.id, node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
            and t.id != "TYPE_CHECKING"]


def test_syscalls_takes_every_kernel_constant_from_the_extension():
    """Each constant is `NAME = lib.NAME`: its value came from the C headers at build time."""
    from zoned._native import lib
    from zoned.linux import syscalls as sc

    consts = [(name, value) for name, value in _constant_names()
              if not name.startswith("SPAWN_STEP")]
    assert len(consts) > 50
    for name, value in consts:
        assert ast.unparse(value) == f"lib.{name}", f"{name} is not taken from the extension"
        assert getattr(sc, name) == getattr(lib, name)


def test_the_exported_values_are_the_kernel_abi():
    """Spot checks against the kernel's ABI (these numbers never change): the headers the
    extension was built against were the right ones, 64-bit and negative values included."""
    from zoned.linux import syscalls as sc

    assert sc.CLONE_NEWNS == 0x00020000 and sc.CLONE_NEWUSER == 0x10000000
    assert sc.CLONE_INTO_CGROUP == 0x200000000  # past 32 bits
    assert sc.AT_FDCWD == -100
    assert sc.MS_BIND == 4096 and sc.MS_REC == 16384 and sc.MS_PRIVATE == 1 << 18
    assert sc.MOUNT_ATTR_RDONLY == 1 and sc.MOUNT_ATTR_IDMAP == 0x00100000
    assert sc.RESOLVE_BENEATH == 0x08 and sc.RESOLVE_IN_ROOT == 0x10
    assert sc.OPEN_TREE_CLOEXEC == 0o2000000 and sc.PROC_SUPER_MAGIC == 0x9FA0
    assert sc.PR_CAP_AMBIENT == 47 and sc.CLOSE_RANGE_CLOEXEC == 1 << 2


# -- mountinfo ---------------------------------------------------------------------------------
def _line(mount_point: bytes, *, optional: bytes = b"shared:1", fstype: bytes = b"tmpfs",
          source: bytes = b"tmpfs", super_options: bytes = b"rw,size=64k") -> bytes:
    """A mountinfo line as the kernel writes it (mount_point already escaped)."""
    opt = b" " + optional if optional else b""
    return (b"36 25 0:51 / " + mount_point + b" rw,nosuid,relatime" + opt + b" - " + fstype
            + b" " + source + b" " + super_options)


def test_mountinfo_fields_are_parsed_into_a_record():
    from zoned.linux import mountinfo

    [m] = mountinfo.parse(_line(b"/run/x", optional=b"shared:1 master:7"))
    assert m == mountinfo.Mount(36, 25, 0, 51, "/", "/run/x", ("rw", "nosuid", "relatime"),
                                ("shared:1", "master:7"), "tmpfs", "tmpfs", ("rw", "size=64k"))
    assert m.mount_point == "/run/x" and m.major == 0 and m.minor == 51
    [m] = mountinfo.parse(_line(b"/run/x", optional=b""))
    assert m.optional == () and m.fstype == "tmpfs" and m.super_options == ("rw", "size=64k")


def test_mountinfo_decodes_spaces_and_utf8():
    """`\\040` and friends are decoded on bytes, then the bytes as UTF-8: a name with spaces
    and non-ASCII letters comes back as it was created (unicode_escape made "cafÃ©")."""
    from zoned.linux import mountinfo

    name = "/mnt/my dir/café ünïcode\tx\ny\\z"
    escaped = ("/mnt/my\\040dir/café\\040ünïcode\\011x\\012y\\134z").encode()
    [m] = mountinfo.parse(_line(escaped))
    assert m.mount_point == name
    assert mountinfo.parse(_line(escaped).decode())[0].mount_point == name  # text mode
    # a backslash that is no escape, an escape next to a digit
    assert mountinfo.unescape(b"/a\\x\\0401") == "/a\\x 1"


def test_mountinfo_keeps_names_that_are_not_utf8():
    """Bytes that are not UTF-8 round-trip to the same path bytes (os.fsencode)."""
    import os

    from zoned.linux import mountinfo

    [m] = mountinfo.parse(_line(b"/mnt/\xff\xfe\\040x"))
    assert os.fsencode(m.mount_point) == b"/mnt/\xff\xfe x"


def test_mountinfo_splits_super_options_before_unescaping():
    """An overlay lowerdir with a comma (written `\\054`) stays one option."""
    from zoned.linux import mountinfo

    [m] = mountinfo.parse(_line(b"/merged", fstype=b"overlay", source=b"overlay",
                                super_options=b"rw,lowerdir=/img/a\\054b\\040c:/img/d,"
                                b"upperdir=/u,workdir=/w"))
    assert m.super_options == ("rw", "lowerdir=/img/a,b c:/img/d", "upperdir=/u", "workdir=/w")


def test_mountinfo_lines_split_on_newlines_only():
    """The kernel does not escape a carriage return in a name: it must not end the line;
    a blank or truncated line is skipped, not an error."""
    from zoned.linux import mountinfo

    text = _line(b"/mnt/a\rb") + b"\n\n36 25 0:51 / /trunc\n" + _line(b"/c") + b"\n"
    assert [m.mount_point for m in mountinfo.parse(text)] == ["/mnt/a\rb", "/c"]


def test_mountinfo_reads_what_the_kernel_writes(tmp_path):
    """A real mount, in a throw-away user and mount namespace (no root needed, nothing
    reaches the host), at a path with spaces and UTF-8: read back as it was made."""
    import shutil
    import subprocess

    from zoned.linux import mountinfo

    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    target = tmp_path / "my dir" / "café ü"
    target.mkdir(parents=True)
    p = subprocess.run(["unshare", "-rm", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o size=64k zoned-test "$1" && cat /proc/self/mountinfo',
                        "sh", str(target)], capture_output=True, timeout=30)
    if p.returncode != 0:
        pytest.skip(f"cannot make a user namespace here: {p.stderr.decode().strip()}")
    assert b"\\040" in p.stdout  # the kernel escaped the spaces
    [m] = [m for m in mountinfo.parse(p.stdout) if m.source == "zoned-test"]
    assert m.mount_point == str(target) and m.fstype == "tmpfs"
    assert "size=64k" in m.super_options


def test_mountinfo_reads_this_process():
    from zoned.linux import mountinfo

    mounts = mountinfo.read()
    assert mounts and any(m.mount_point == "/" for m in mounts)
    ids = {m.mount_id for m in mounts}
    assert all(isinstance(m.parent_id, int) for m in mounts) and len(ids) == len(mounts)


# -- proc ----------------------------------------------------------------------------------------
def test_proc_start_time_tells_live_from_gone():
    import os
    import subprocess
    import time

    from zoned.linux.proc import proc_start_time

    assert isinstance(proc_start_time(os.getpid()), int)
    child = subprocess.Popen(["true"])
    for _ in range(500):  # exited, not yet reaped: a zombie counts as gone
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    assert proc_start_time(child.pid) is None
    child.wait()
    assert proc_start_time(child.pid) is None


def test_signal_pid_and_wait_exit_check_the_start_time():
    """A recorded start time that is not the process's (its pid was reused) leaves the
    process alone; the right one signals it, and wait_exit sees it go."""
    import signal
    import subprocess

    from zoned.linux.proc import proc_start_time, signal_pid, wait_exit

    child = subprocess.Popen(["sleep", "30"])
    try:
        start = proc_start_time(child.pid)
        assert wait_exit(child.pid, start, 0.05) is False  # still running
        signal_pid(child.pid, start + 1, signal.SIGKILL)  # a stranger with the same pid
        assert child.poll() is None and wait_exit(child.pid, start, 0.05) is False
        assert wait_exit(child.pid, start + 1, 0.05) is True  # "that process is gone"
        signal_pid(child.pid, start, signal.SIGKILL)
        assert wait_exit(child.pid, start, 5) is True
        assert child.wait(5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_locks_exclude_and_report_busy(tmp_path):
    from zoned.linux.locks import FileLock, acquire, try_acquire

    path = str(tmp_path / "lock")
    with FileLock(path) as fd:
        assert fd >= 0
        assert try_acquire(path) is None  # another open file description: excluded
        with pytest.raises(BlockingIOError):
            acquire(path, blocking=False)
    fd = try_acquire(path)
    assert fd is not None
    os.close(fd)
    shared = [acquire(path, shared=True), acquire(path, shared=True)]  # readers share
    assert try_acquire(path) is None
    for fd in shared:
        os.close(fd)


def test_a_lock_file_is_only_its_owners_and_no_symlink(tmp_path):
    """flock works on a read-only fd, so a lock file others can open is one they can hold
    for ever: an older zoned's 0644 lock file is made 0600 when its owner next takes it,
    and a symlink planted at a lock's path is refused, its target left as it was."""
    import stat

    from zoned.linux.locks import acquire, try_acquire

    path = tmp_path / "store.lock"
    path.touch()
    path.chmod(0o644)
    os.close(acquire(str(path), shared=True))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    target = tmp_path / "pf-canary"
    target.write_text("canary\n")
    target.chmod(0o644)
    os.symlink(target, tmp_path / "planted.lock")
    with pytest.raises(OSError):
        acquire(str(tmp_path / "planted.lock"))
    assert try_acquire(str(tmp_path / "planted.lock")) is None
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "canary\n"


def test_lock_makes_parents_and_follows_a_replaced_file(tmp_path):
    """verify: a lock file unlinked by whoever removed what it guarded is not trusted."""
    from zoned.linux.locks import FileLock

    path = str(tmp_path / "net" / "x.lock")
    with FileLock(path, make_parents=True, verify=True) as fd:
        assert os.fstat(fd).st_ino == os.stat(path).st_ino
    os.unlink(path)
    with FileLock(path, make_parents=True, verify=True) as fd:
        assert os.fstat(fd).st_ino == os.stat(path).st_ino
    with pytest.raises(FileNotFoundError):
        FileLock(str(tmp_path / "missing" / "lock")).__enter__()


FORK_WHILE_LOCKED = """
import json, os, sys, threading, time
from zoned.linux.locks import acquire, try_acquire
other_lock, own_lock = sys.argv[1], sys.argv[2]
held, go = threading.Event(), threading.Event()

def holder():
    fd = acquire(other_lock)  # another thread's operation, holding a zone's lock
    held.set()
    go.wait()
    os.close(fd)

def fds_on(path):
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return n

t = threading.Thread(target=holder)
t.start()
held.wait()
own = acquire(own_lock)  # this thread's: its helpers may rely on it
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, json.dumps([fds_on(other_lock), fds_on(own_lock)]).encode())
    time.sleep(3)  # still alive while the parent checks
    os._exit(0)
child = json.loads(os.read(r, 100))
go.set()
t.join()
free = try_acquire(other_lock)  # the holder closed it: free, though the child lives
os.kill(pid, 9)
os.waitpid(pid, 0)
print(json.dumps({"child": child, "free_while_child_lives": free is not None}))
"""


def test_a_fork_keeps_no_lock_another_thread_holds(tmp_path):
    """A fork by one thread while another thread's operation holds a lock (an API caller's
    multiprocessing worker, say) would keep that lock for the child's life, and the zone
    it guards locked: the child closes its copy (the session 24 audit's note). The forking
    thread's own locks stay in the child, as zoned's helpers rely on."""
    import json
    import subprocess
    import sys

    other, own = str(tmp_path / "other.lock"), str(tmp_path / "own.lock")
    p = subprocess.run([sys.executable, "-c", FORK_WHILE_LOCKED, other, own],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"child": [0, 1], "free_while_child_lives": True}

JSON_SAMPLES = [
    {}, [], "", 0, -1.5, 1e300, True, None, "é\u2028\x00\"\\/",
    {"ociVersion": "1.2.0", "process": {"args": ["sh", "-c", "echo 'ünï'"], "env": []},
     "n": [1, 2.5, -3, {"x": None}], "nested": {"a": {"b": {"c": [[], {}]}}}},
    [float("inf"), float("-inf")], {"z": 1, "a": 2, "m": {"b": 1, "a": 0}},
    {"e": [], "f": {}, "g": [[[]], {"h": [1, {"i": None}]}]}, ({"t": (1, 2)},),
]


@pytest.mark.parametrize("obj", JSON_SAMPLES)
def test_jsonc_writes_and_reads_what_json_does(obj):
    import json

    from zoned.linux import jsonc

    for kw in ({}, {"separators": (",", ":")}, {"sort_keys": True},
               {"ensure_ascii": False}, {"indent": 2}, {"indent": 0}, {"indent": "\t"},
               {"indent": 4, "sort_keys": True, "separators": (",", ":")}):
        text = jsonc.dumps(obj, **kw)
        assert text == json.dumps(obj, **kw)
        assert jsonc.loads(text) == json.loads(text)
        assert jsonc.loads(text.encode()) == json.loads(text.encode())
        assert jsonc.loads(f" \n{text}\t ") == json.loads(text)


@pytest.mark.parametrize("bad", ["", " ", "{", "[1,]", "1 2", '{"a": 1}}', "nul", "'x'",
                                 '"\x01"', "{1: 2}"])
def test_jsonc_refuses_what_json_refuses_with_its_error(bad):
    import json

    from zoned.linux import jsonc

    with pytest.raises(json.JSONDecodeError) as ours:
        jsonc.loads(bad)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(bad)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonc.dumps({"a": {1, 2}})
    with pytest.raises(jsonc.JSONDecodeError):
        jsonc.loads(bad)
    for indent in (None, 2):
        with pytest.raises(TypeError, match="keys must be"):
            jsonc.dumps({(1, 2): 0}, indent=indent)


def test_jsonc_says_what_json_says_where_json_was_never_imported():
    """_json raises json.decoder's error only once that module is loaded; zoned's
    commands never load it, so a bad config.json must still give json's error there."""
    import subprocess
    import sys

    code = ("import sys\nfrom zoned.linux import jsonc\n"
            "for bad in ('[1,]', '{\"a\" 1}', '1 2', ''):\n"
            "    try:\n        jsonc.loads(bad)\n"
            "    except jsonc.JSONDecodeError as e:\n        print(e.msg, e.pos)\n")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(SYSCALLS.parent.parent.parent)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Expecting value 3", "Expecting ':' delimiter 5",
                                     "Extra data 2", "Expecting value 0"]


def test_jsonc_keys_that_are_not_strings_are_written_as_json_writes_them():
    import json

    from zoned.linux import jsonc

    obj = {1: "a", 2.5: "b", False: "c", None: "d", "e": {3: [None]}}
    for indent in (None, 2):
        assert jsonc.dumps(obj, indent=indent) == json.dumps(obj, indent=indent)


def test_seal_filled_memfd_reads_back_and_refuses_any_change():
    """What zoned hands zoned-spawn (its sealed copy, a seccomp program) is read from the
    start as written, and cannot be written, grown or shrunk after."""
    import errno as errno_mod

    from zoned.linux.files import seal_filled

    data = bytes(range(256)) * 40  # over a two-page pipe's 8 KiB
    fd = seal_filled(os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING), data, 0o111)
    try:
        assert os.read(fd, len(data) + 1) == data
        assert os.fstat(fd).st_mode & 0o777 == 0o111
        for change in (lambda: os.pwrite(fd, b"x", 0), lambda: os.ftruncate(fd, 1),
                       lambda: os.ftruncate(fd, len(data) + 4096)):
            with pytest.raises(OSError) as e:
                change()
            assert e.value.errno == errno_mod.EPERM
    finally:
        os.close(fd)


def test_a_prepared_state_is_seen_only_once_committed(tmp_path):
    """Runtime.create writes the next state.json while the init sets up (prepare_state)
    and renames it when it is true (commit_state): readers see the old one until then."""
    from zoned.runtime.store import Store

    store = Store(tmp_path)
    (tmp_path / "c1").mkdir()
    store.write_state("c1", {"id": "c1", "status": "creating"})
    tmp = store.prepare_state("c1", {"id": "c1", "status": "running"})
    assert os.path.dirname(tmp) == str(tmp_path / "c1")
    assert store.read_state("c1")["status"] == "creating"
    store.commit_state("c1", tmp)
    assert store.read_state("c1")["status"] == "running"
    assert sorted(os.listdir(tmp_path / "c1")) == ["state.json"]


def test_a_failed_prepared_state_leaves_no_temp_file(tmp_path):
    """A write that fails once its temp file exists (here past RLIMIT_FSIZE: EFBIG) removes
    the file again: only state.json, as it was, is left."""
    import errno
    import resource
    import signal

    from zoned.runtime.store import Store

    store = Store(tmp_path)
    (tmp_path / "c1").mkdir()
    store.write_state("c1", {"id": "c1", "status": "creating"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        with pytest.raises(OSError) as e:
            store.prepare_state("c1", {"id": "c1", "status": "running"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert e.value.errno == errno.EFBIG
    assert os.listdir(tmp_path / "c1") == ["state.json"]
    assert store.read_state("c1")["status"] == "creating"


def test_the_pid_file_is_never_written_through_what_is_planted_at_its_temp_name(tmp_path):
    """--pid-file's temp name is predictable (PATH.PID.tmp): a symlink planted there made
    zoned write the pid through it (session 20's audit), a FIFO made it wait for ever.
    Refused, the link's target untouched; without one the file is written."""
    from zoned.errors import ConfigError
    from zoned.runtime.handoff import write_pid_file

    canary = tmp_path / "canary"
    canary.write_text("host\n")
    pid_file = tmp_path / "pid"
    (tmp_path / f"pid.{os.getpid()}.tmp").symlink_to(canary)
    with pytest.raises(ConfigError, match="--pid-file"):
        write_pid_file(str(pid_file), 1234)
    assert canary.read_text() == "host\n" and not pid_file.exists()
    (tmp_path / f"pid.{os.getpid()}.tmp").unlink()
    os.mkfifo(tmp_path / f"pid.{os.getpid()}.tmp")
    with pytest.raises(ConfigError, match="--pid-file"):
        write_pid_file(str(pid_file), 1234)
    (tmp_path / f"pid.{os.getpid()}.tmp").unlink()
    write_pid_file(str(pid_file), 1234)
    assert pid_file.read_text() == "1234"


def test_rmtree_of_a_symlink_removes_the_link_not_its_target(tmp_path):
    """A symlink planted where zoned removes a tree (a state root's entry: `delete -f`,
    gc) is removed itself; the directory it points to keeps its files (session 20's
    audit: they were deleted)."""
    from zoned.linux.files import rmtree

    target = tmp_path / "target"
    target.mkdir()
    (target / "important").write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    rmtree(str(link))
    assert not os.path.lexists(link) and (target / "important").read_text() == "keep\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    (tree / "ln").symlink_to(target)
    rmtree(str(tree))
    assert not tree.exists() and (target / "important").exists()


def test_rmtree_finishes_though_a_directory_moves_out_of_the_tree_mid_walk(tmp_path,
                                                                           monkeypatch):
    """A directory of the tree moved elsewhere while rmtree walks it (a zone still writing
    a volume being removed): the walk, which never follows it out, stops there; rmtree
    starts again from the top and finishes. The directory moved out stays (what the walk
    was already inside of it goes: it was the tree's), and so do the files beside it
    there; a tree someone keeps moving fails after WALK_TRIES walks."""
    from zoned.linux import files

    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "c").mkdir()
    (tree / "c" / "g").write_text("y")
    outside.mkdir()
    (outside / "canary").write_text("keep")
    real_hold, moved = files.hold, []

    def hold(path: str, dir_fd: int | None = None) -> None:  # (each file, before its
        if path == "f" and not moved:  # unlink: its name, relative to its directory's fd)
            os.rename(tree / "a", outside / "a")  # the walk is inside a/b now
            moved.append(True)
        real_hold(path, dir_fd)

    monkeypatch.setattr(files, "hold", hold)
    files.rmtree(str(tree))
    assert moved and not tree.exists()
    assert sorted(os.listdir(outside)) == ["a", "canary"]
    assert (outside / "canary").read_text() == "keep"

    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    turn = []

    def hold_always(path: str, dir_fd: int | None = None) -> None:  # moves a/ out and
        if path == "f":  # back in: every walk goes stale
            os.rename(tree / "a", tmp_path / f"away{len(turn)}")
            os.mkdir(tree / "a")
            (tree / "a" / "b").mkdir()
            (tree / "a" / "b" / "f").write_text("x")
            turn.append(True)
        real_hold(path, dir_fd)

    monkeypatch.setattr(files, "hold", hold_always)
    with pytest.raises(OSError, match="moved during the walk"):
        files.rmtree(str(tree))
    assert len(turn) == files.WALK_TRIES
