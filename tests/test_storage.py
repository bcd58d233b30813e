"""Where a zone's things live (issue 10, items 10 and 11): runtime state in the state root
(a tmpfs on systemd hosts), writable layers, logs and checkpoints in transit in the data
root on disk. The state root is put on a real tmpfs here (zoned_state_fs), as /run is on
a systemd host; on this machine /run is on the root disk, so without it nothing shows."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ZONED, host_snapshot

TMPFS = pytest.mark.parametrize("zoned_state_fs", ["tmpfs"])
LINE = "x" * 90  # a log line is "line N " + LINE


def _wait_for(fn, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out")


def _state(cli, name: str) -> dict:
    return json.loads(cli("inspect", name, check=True).stdout)["state"]


def _fstype(path: str) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                          check=True).stdout.strip()


def _numbers(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^line (\d+) ", text, re.M)]


def _data_root(cli) -> str:
    from zoned.storage import data_root

    return data_root(cli.root)


def _leftovers(cli) -> dict:
    """What the test's zones could leave: host_snapshot (with the data root) and loggers."""
    snap = host_snapshot(cli.root)
    snap["loggers"] = _loggers(_data_root(cli))
    return snap


def _loggers(data: str) -> list[int]:
    """zoned-logger processes writing into `data`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[0].endswith(b"zoned-logger") and any(  # DIR: after -p INIT STATEDIR too
                a.decode(errors="replace").startswith(data) for a in cmd[1:]):
            found.append(int(pid))
    return found


# -- item 10: writable layers ------------------------------------------------------------
@TMPFS
def test_a_zone_writes_200mb_with_64m_of_memory_when_the_state_root_is_a_tmpfs(cli):
    """Its writable layer is on the data root's disk: the zone's writes are page cache the
    kernel can write back, not tmpfs pages charged to its memory cgroup (then it was
    killed at ~64 MB)."""
    assert _fstype(cli.root) == "tmpfs"
    before = _leftovers(cli)
    p = cli("run", "--rm", "--memory", "64m", "--", "sh", "-c",
            "dd if=/dev/zero of=/big bs=1M count=200 2>&1 && ls -l /big", timeout=120)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert " 209715200 " in p.stdout
    assert _leftovers(cli) == before  # --rm took its data dir too


def test_the_data_dir_is_on_the_data_root_and_goes_with_the_zone(cli):
    before = _leftovers(cli)
    cli("run", "-d", "--name", "keep", "--", "sh", "-c", "echo hi > /f; echo out; sleep 600",
        check=True)
    st = _state(cli, "keep")
    data = st["zoned"]["data"]
    assert data == os.path.join(_data_root(cli), "containers", "keep")
    assert not data.startswith(cli.root + "/")  # not in the state root
    assert _wait_for(lambda: os.path.exists(os.path.join(data, "upper", "f")))
    assert sorted(os.listdir(cli.root + "/keep")) == \
        ["config.json", "lock", "rootfs", "state.json"]  # runtime state only
    assert _wait_for(lambda: cli("logs", "keep").stdout == "out\n")
    assert cli("rm", "-f", "keep").returncode == 0
    assert not os.path.exists(data)
    assert _leftovers(cli) == before


def test_data_root_choice(cli, tmp_path):
    """/var/lib/zoned for the default state root, a directory keyed by any other state
    root (so per-test roots never share data dirs), or --data-root / $ZONED_DATA."""
    from zoned.storage import data_root

    env = {k: v for k, v in os.environ.items() if k != "ZONED_DATA"}
    code = "import sys; from zoned.storage import data_root; print(data_root(sys.argv[1]))"

    def root_of(state: str) -> str:
        return subprocess.run([sys.executable, "-c", code, state],
                              env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    assert root_of("/run/zoned") == "/var/lib/zoned"
    mine = root_of(cli.root)
    assert mine.startswith("/var/lib/zoned/roots/" + os.path.basename(cli.root) + "-")
    assert root_of(cli.root + "-other") != mine
    assert data_root(cli.root) == mine

    explicit = tmp_path / "data"
    cli("--data-root", str(explicit), "run", "-d", "--name", "x", "--", "sleep", "600",
        check=True)
    st = json.loads(cli("inspect", "x", check=True).stdout)["state"]
    assert st["zoned"]["data"] == str(explicit / "containers" / "x")
    assert (explicit / "containers" / "x" / "upper").is_dir()
    cli("rm", "-f", "x", check=True)  # the data dir is recorded: rm needs no --data-root
    assert [p.name for p in explicit.iterdir()] == ["containers"]  # (kept for the next)
    assert list((explicit / "containers").iterdir()) == []


def test_a_data_root_stays_for_the_next_zone_and_gc_prunes_it_once_empty(cli, tmp_path):
    """A removed zone leaves its derived data root (and containers/) for the next zone of
    its state root, as the root's cgroup parent stays; `zoned gc` of any state root
    removes such an empty one whose state root was deleted, and never one holding a zone's
    data dir."""
    other = tempfile.mkdtemp(prefix="zoned-test-other-", dir="/run")
    keep = tempfile.mkdtemp(prefix="zoned-test-keep-", dir="/run")
    from zoned.storage import data_root

    gone_data, keep_data = data_root(other), data_root(keep)
    try:
        cli("run", "--rm", "--", "true", root=other, check=True)
        assert os.listdir(gone_data) == ["containers"]  # kept, empty
        assert os.listdir(os.path.join(gone_data, "containers")) == []
        cli("run", "-d", "--name", "held", "--", "sleep", "600", root=keep, check=True)
        os.rmdir(other)  # its state root deleted: nobody will run its gc
        out = cli("gc", check=True).stdout  # (the test's own root)
        assert not os.path.exists(gone_data)
        assert f"directory {gone_data}: empty data root" in out
        assert os.path.isdir(os.path.join(keep_data, "containers", "held", "upper"))
    finally:
        cli("rm", "-f", "held", root=keep)
        cli("gc", root=keep)
        for root in (other, keep):
            shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(keep_data)  # (its own gc pruned it)


def test_gc_removes_data_dirs_whose_zone_is_gone(cli):
    """After a reboot the state root (/run) is empty and its zones can never run again;
    their data dirs stay readable on disk until `zoned gc` removes them. Zones that still
    exist keep theirs, stopped ones too."""
    before = _leftovers(cli)
    for name in ("gone", "kept"):
        cli("run", "-d", "--name", name, "--", "sh", "-c", "echo hi; echo x > /f; sleep 600",
            check=True)
    gone = _state(cli, "gone")["zoned"]["data"]
    kept = _state(cli, "kept")["zoned"]["data"]
    _wait_for(lambda: os.path.exists(os.path.join(gone, "upper", "f")))
    cli("kill", "kept", "KILL", check=True)
    # A "reboot" of zone `gone`: its processes end and its runtime state vanishes.
    cli("kill", "gone", "KILL", check=True)
    _wait_for(lambda: {c["status"] for c in json.loads(cli("ps", "-a", "--format", "json").stdout)}
              == {"stopped"})
    shutil.rmtree(os.path.join(cli.root, "gone"))
    assert (Path(gone) / "ctr.log").read_text() == "hi\n"  # still there to read
    dry = cli("gc", "--dry-run", check=True).stdout
    assert f"directory {gone}: data of a zone that no longer exists" in dry
    assert os.path.isdir(gone)
    out = cli("gc", check=True).stdout
    assert f"directory {gone}: data of a zone that no longer exists" in out
    assert not os.path.exists(gone)
    assert os.path.isdir(os.path.join(kept, "upper"))  # a stopped zone keeps its data
    assert kept not in out
    cli("rm", "kept", check=True)
    assert _leftovers(cli) == before


# -- item 10: logs -----------------------------------------------------------------------
CHATTY = ("awk 'BEGIN{for(i=1;;i++) printf \"line %d " + LINE + "\\n\", i}'")


@TMPFS
def test_a_chatty_zone_keeps_running_and_its_log_rotates(cli, monkeypatch):
    """--memory 32m and a log written as fast as awk can: the log is written by
    zoned-logger, outside the zone's cgroup, to the data root, and rotates at
    $ZONED_LOG_SIZE_MAX. (With the log in a tmpfs state root the zone stopped at ~32 MB.)"""
    monkeypatch.setenv("ZONED_LOG_SIZE_MAX", "1m")
    before = _leftovers(cli)
    cli("run", "-d", "--name", "chatty", "--memory", "32m", "--", "sh", "-c", CHATTY,
        check=True)

    def newest() -> int:
        nums = _numbers(cli("logs", "chatty").stdout)
        return nums[-1] if nums else 0
    # well past the zone's memory limit: 3 x 32 MiB of log written
    _wait_for(lambda: newest() * (len(LINE) + 12) > 96 << 20, timeout=90, interval=0.5)
    st = _state(cli, "chatty")
    assert st["status"] == "running"
    data = st["zoned"]["data"]

    def log_sizes() -> dict[str, int]:
        """The log files' sizes, read between two rotations (a listing taken just as the
        writer renames ctr.log to ctr.log.1 sees one file, or loses one to the rename)."""
        sizes: dict[str, int] = {}
        for _ in range(100):
            try:
                sizes = {n: os.path.getsize(os.path.join(data, n)) for n in os.listdir(data)
                         if n.startswith("ctr.log")}
            except FileNotFoundError:
                continue
            if set(sizes) == {"ctr.log", "ctr.log.1"}:
                break
            time.sleep(0.01)
        return sizes

    sizes = log_sizes()
    assert set(sizes) == {"ctr.log", "ctr.log.1"} and max(sizes.values()) <= 1 << 20, sizes
    # `zoned logs` gives the newest lines, whole and in order, across the two files.
    nums = _numbers(cli("logs", "chatty").stdout)[:-1]  # (the last may be half-written)
    assert len(nums) > 10000 and nums == list(range(nums[0], nums[0] + len(nums)))
    assert nums[-1] >= (96 << 20) // (len(LINE) + 12)
    # The writer is small and is not the zone's: not in its memory cgroup.
    (logger,) = _loggers(data)
    assert logger == st["zoned"]["logger"]["pid"]
    mem = next(ln for ln in Path(f"/proc/{logger}/cgroup").read_text().splitlines()
               if ":memory:" in ln or ln.startswith("0::"))
    assert not mem.rstrip("/").endswith("/chatty"), mem
    rollup = Path(f"/proc/{logger}/smaps_rollup").read_text()
    pss_kb = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))
    print(f"\nzoned-logger: Pss {pss_kb} kB")
    assert pss_kb < 2048
    assert cli("rm", "-f", "chatty").returncode == 0
    assert _leftovers(cli) == before  # the logger exited, the data dir is gone


def test_logs_follow_reads_across_rotations(cli, monkeypatch):
    """`logs -f` from the start of a zone to its end sees every line once, in order,
    while the log rotates every ~80 lines; plain `logs` then shows the newest lines."""
    monkeypatch.setenv("ZONED_LOG_SIZE_MAX", "8k")
    cli("run", "-d", "--name", "slow", "--", "sh", "-c",
        "while [ ! -e /go ]; do sleep 0.05; done; "
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo \"line $i " + LINE + "\"; "
        "[ $((i % 10)) -ne 0 ] || sleep 0.1; done", check=True)
    f = subprocess.Popen([ZONED, "--root", cli.root, "logs", "-f", "slow"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    cli("exec", "slow", "--", "touch", "/go", check=True)  # write once -f is following
    out, err = f.communicate(timeout=60)
    assert f.returncode == 0, err
    assert _numbers(out) == list(range(1, 401))
    data = _state(cli, "slow")["zoned"]["data"]
    assert 0 < os.path.getsize(os.path.join(data, "ctr.log.1")) <= 8192
    tail = _numbers(cli("logs", "slow", check=True).stdout)
    assert tail[-1] == 400 and tail == list(range(tail[0], 401)) and tail[0] > 1
    cli("rm", "slow", check=True)


# -- item 11: checkpoint with the state root on a tmpfs --------------------------------------
@pytest.fixture
def net(cli):
    cli("network", "create", "stnet", check=True)
    yield "stnet"
    cli("network", "rm", "stnet")


@TMPFS
def test_checkpoint_and_restore_a_networked_zone_with_the_state_root_on_tmpfs(cli, net,
                                                                             tmp_path,
                                                                             request):
    """/etc/hostname, /etc/hosts and /etc/resolv.conf are bound from files in the zone's
    state dir, on the tmpfs: CRIU refused to dump them ("./etc/hostname doesn't have a
    proper root mount") until zoned declared them external mounts. A volume from a tmpfs
    (/dev/shm) is the same case."""
    assert _fstype(cli.root) == "tmpfs"
    before = _leftovers(cli)
    vol = Path(tempfile.mkdtemp(prefix="zoned-test-", dir="/dev/shm"))  # a volume on a tmpfs
    request.addfinalizer(lambda: shutil.rmtree(vol, ignore_errors=True))
    cli("run", "-d", "--name", "web", "--network", net, "-v", f"{vol}:/data", "--", "sh",
        "-c", "i=0; while :; do i=$((i+1)); echo \"line $i x\"; echo $i > /n; "
        "echo $i >> /data/seq; sleep 0.05; done", check=True)
    ip = _state(cli, "web")["zoned"]["network"]["networks"][0]["ip"]
    _wait_for(lambda: len(_numbers(cli("logs", "web").stdout)) >= 10)
    images = tmp_path / "ck"
    p = cli("checkpoint", "web", "--dir", str(images))
    assert p.returncode == 0, p.stderr
    # (the loop rewrites /n: the dump may have frozen it between truncate and write)
    at_dump = int((images / "upper" / "n").read_text() or 0)
    assert cli("restore", "--dir", str(images), check=True).stdout.strip() == "web"
    out = cli("exec", "web", "--", "sh", "-c", "hostname; cat /etc/hosts; ip -4 addr",
              check=True).stdout
    assert out.splitlines()[0] == "web" and f"{ip}\tweb" in out and f"inet {ip}/" in out
    _wait_for(lambda: int(cli("exec", "web", "--", "cat", "/n").stdout.strip() or 0)
              > at_dump + 5)
    seq = [int(x) for x in (vol / "seq").read_text().split()]
    assert seq == list(range(1, len(seq) + 1)) and seq[-1] > at_dump + 5  # same volume
    # The log went on through the new logger: one sequence, nothing lost or repeated.
    nums = _numbers(cli("logs", "web").stdout)
    assert nums == list(range(1, len(nums) + 1)) and nums[-1] > at_dump
    assert cli("rm", "-f", "web").returncode == 0
    assert _leftovers(cli) == before


def test_one_logger_keeps_stdout_before_stderr(tmp_path):
    """The API's split logs (logs("stdout"), logs("stderr")): one zoned-logger reads both
    pipes and drains stdout first, so once a stderr line is in its log, every stdout line
    written before it is in the other. (With a logger per stream, test_api's
    test_container_logs saw "oops" but not the "hello" written before it.) It also exits
    only when both pipes are closed, and the zone's stdio is all it holds open."""
    from zoned import logs

    out_dir, err_dir = tmp_path / "out", tmp_path / "err"
    out_dir.mkdir()
    err_dir.mkdir()
    lg = logs.spawn(str(out_dir), str(err_dir))
    try:
        fds = {int(fd): os.readlink(f"/proc/{lg.pid}/fd/{fd}")
               for fd in os.listdir(f"/proc/{lg.pid}/fd")}
        assert sorted(fd for fd, what in fds.items() if what.startswith("pipe:")) == [0, 3]
        assert {fds[0], fds[3]} == {f"pipe:[{os.fstat(fd).st_ino}]"
                                    for fd in (lg.write_fd, lg.err_write_fd)}
        assert all(what.startswith(str(tmp_path)) for fd, what in fds.items() if fd > 3), fds
        for i in range(300):
            os.write(lg.write_fd, f"o{i}\n".encode())
            os.write(lg.err_write_fd, f"e{i}\n".encode())
            line = f"e{i}\n"
            _wait_for(lambda line=line: (err_dir / "ctr.log").read_text().endswith(line),
                      interval=0.0005)
            assert (out_dir / "ctr.log").read_text().endswith(f"o{i}\n"), i
        os.close(lg.write_fd)
        lg.write_fd = -1
        time.sleep(0.1)
        assert logs.logger_alive(lg.describe())  # stderr's writer is still there
        os.write(lg.err_write_fd, b"last\n")
        os.close(lg.err_write_fd)
        lg.err_write_fd = -1
        logs.wait_logger(lg.describe(), timeout=5)
        assert not logs.logger_alive(lg.describe())
        assert (err_dir / "ctr.log").read_text().endswith("e299\nlast\n")
        assert (out_dir / "ctr.log").read_text().count("\n") == 300
    finally:
        for fd in (lg.write_fd, lg.err_write_fd):
            if fd >= 0:
                os.close(fd)


def test_a_detached_zones_log_files_exist_when_run_returns(cli, zoned_root):
    """`zoned run -d` returns once the zone runs; its logger, which creates ctr.log and
    ctr.ts, starts just after. Both are made before the return, so what the data dir
    holds right then is what it holds a moment later."""
    cli("run", "-d", "--name", "lg", "--", "sleep", "1000", check=True)
    log = json.loads(cli("inspect", "lg").stdout)["state"]["zoned"]["log"]
    logdir = os.path.dirname(log)
    assert {"ctr.log", "ctr.ts"} <= set(os.listdir(logdir))


def test_rmtree_never_empties_a_mount_left_in_the_tree(tmp_path):
    """A bind mount left inside a tree zoned removes (a failed unmount; a bind of the
    same file system, which st_dev cannot tell) is not walked: the removal fails, and
    what is mounted there (maybe a host directory) stays (second audit of session 21).
    In a throw-away mount namespace."""
    src, tree = tmp_path / "src", tmp_path / "tree"
    src.mkdir()
    (src / "precious").write_text("keep\n")
    (tree / "a" / "m").mkdir(parents=True)
    (tree / "a" / "file").write_text("x")
    script = ("import subprocess, sys\n"
              "from zoned.linux.files import rmtree\n"
              "subprocess.run(['mount', '--bind', sys.argv[1], sys.argv[2] + '/a/m'],"
              " check=True)\n"
              "try:\n    rmtree(sys.argv[2])\nexcept OSError as e:\n    print(e.errno)\n")
    repo = str(Path(__file__).resolve().parent.parent)
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                        script, str(src), str(tree)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": repo})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() in ("16", "39")  # EBUSY or ENOTEMPTY: refused, not emptied
    assert (src / "precious").read_text() == "keep\n"
    assert not (tree / "a" / "file").exists()  # the rest went
