"""What was left of issue 15 (the podman-level CLI), from the outside through the real CLI,
side by side with podman where podman runs on this host: exit codes of detached zones,
one JSON timestamp format, `logs --since/-t`, detach keys and `run -dt`."""
from __future__ import annotations

import datetime
import json
import os
import re
import time

from tests.test_cli_podman import (IMAGE, RUN_FLAGS, Podman, _detached,  # noqa: F401
                                   podman, z)


def _logger_of(z, name: str) -> int:  # noqa: F811
    return json.loads(z("inspect", "--raw", name).stdout)["state"]["zoned"]["logger"]["pid"]


# -- 1. a detached zone's exit code -------------------------------------------------------

def test_detached_exit_code_as_podman(podman, z):  # noqa: F811
    for tool in (podman, z):
        _detached(tool, "zs5x", "sh", "-c", "echo out; exit 3")
        w = tool("wait", "zs5x")
        assert (w.returncode, w.stdout) == (0, "3\n"), (tool, w.stderr)
        assert tool("inspect", "--format", "{{.State.ExitCode}}", "zs5x").stdout == "3\n"
        status = tool("ps", "-a", "--format", "{{.Status}}").stdout
        assert status.lower().startswith("exited (3) ") and " ago" in status, status
        assert tool("logs", "zs5x").stdout == "out\n"
        assert tool("rm", "zs5x").returncode == 0
    _detached(z, "zs5y", "sh", "-c", "exit 5")
    assert z("wait", "zs5y").stdout == "5\n"
    row, = json.loads(z("ps", "-a", "--format", "json").stdout)
    finished = datetime.datetime.fromisoformat(row["finished"].replace("Z", "+00:00"))
    assert row["exit_code"] == 5 and finished.timestamp() > time.time() - 60
    z("rm", "zs5y", check=True)


def test_detached_zone_killed_and_restarted_keeps_codes(podman, z):  # noqa: F811
    for tool in (podman, z):
        _detached(tool, "zs5k", "sleep", "100")
        assert tool("kill", "zs5k").returncode == 0
        assert tool("wait", "zs5k").stdout == "137\n"
        tool("rm", "-f", "zs5k")
    _detached(z, "zs5r", "sh", "-c", "exit $(cat /n 2>/dev/null || echo 4)")
    assert z("wait", "zs5r").stdout == "4\n"
    assert z("restart", "zs5r").stdout == "zs5r\n"
    assert z("wait", "zs5r").stdout == "4\n"
    assert "exited (4)" in z("ps", "-a").stdout
    z("rm", "zs5r", check=True)


def test_detached_zone_costs_no_extra_process(z):  # noqa: F811
    """The logger is the init's parent (it reaps it): still one process beside the zone,
    and it is gone once the zone has exited and been reaped."""
    _detached(z, "zs5p", "sleep", "100")
    pid = int(z("inspect", "--format", "{{.State.Pid}}", "zs5p").stdout)
    logger = _logger_of(z, "zs5p")
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rpartition(")")[2].split()[1]) == logger
    with open(f"/proc/{logger}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0].endswith(b"zoned-logger")
    z("kill", "zs5p", check=True)
    assert z("wait", "zs5p").stdout == "137\n"
    deadline = time.monotonic() + 30  # a loaded host reaps slowly
    while os.path.exists(f"/proc/{logger}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{logger}")
    z("rm", "zs5p", check=True)


def test_detached_start_failure_is_one_line_and_leaves_nothing(z):  # noqa: F811
    r = z("run", "-d", "--name", "zs5f", "busybox", "/no/such/cmd")
    assert r.returncode == 127, r  # as podman: the command is not found
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert z("ps", "-a", "-q").stdout == ""


# -- 2. one JSON timestamp format ---------------------------------------------------------

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
DATE_LIKE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
TIME_KEYS = {"created", "finished", "time", "checkpointed", "booted", "started",
             "restart_times", "Time", "Created", "CreatedAt", "FinishedAt", "StartedAt"}


def times_in(doc, key=None, where="$"):
    """Every (path, value) of `doc` that is or should be a time."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from times_in(v, k, f"{where}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from times_in(v, key, f"{where}[{i}]")
    elif (key in TIME_KEYS and doc is not None) or \
            (isinstance(doc, str) and DATE_LIKE.match(doc)):
        yield where, doc


def check_times(doc, what: str) -> int:
    found = list(times_in(doc))
    bad = [(p, v) for p, v in found if not (isinstance(v, str) and RFC3339_Z.match(v))]
    assert not bad, (what, bad)
    for _, v in found:  # and each one parses as RFC 3339 UTC
        assert datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).utcoffset() == \
            datetime.timedelta(0)
    return len(found)


def test_every_json_time_is_rfc3339_with_z(z):  # noqa: F811
    import subprocess

    from tests.conftest import ZONED

    ev = subprocess.Popen([ZONED, "--root", z.root, "events", "--format", "json",
                           "--timeout", "6"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    assert z("volume", "create", "zs5vol").returncode == 0
    _detached(z, "zs5t", "sh", "-c", "exit 2")
    _detached(z, "zs5u", "sleep", "100")
    z("wait", "zs5t", check=True)
    docs = {
        "inspect": json.loads(z("inspect", "zs5t", "zs5u").stdout),
        "inspect --raw": json.loads(z("inspect", "--raw", "zs5t").stdout),
        "inspect {{json .State}}": json.loads(
            z("inspect", "--format", "{{json .State}}", "zs5t").stdout),
        "ps -a json": json.loads(z("ps", "-a", "--format", "json").stdout),
        "state": json.loads(z("state", "zs5u").stdout),
        "stats": json.loads(z("stats", "--format", "json").stdout),
        "volume inspect": json.loads(z("volume", "inspect", "zs5vol").stdout),
        "volume ls": json.loads(z("volume", "ls", "--format", "json").stdout),
        "image ls": json.loads(z("image", "ls", "--format", "json").stdout),
        "image inspect": json.loads(z("image", "inspect", "busybox").stdout),
    }
    z("rm", "-f", "zs5t", "zs5u", check=True)
    z("volume", "rm", "zs5vol", check=True)
    out, _ = ev.communicate(timeout=30)
    docs["events"] = [json.loads(line) for line in out.splitlines()]
    assert docs["events"], "no events"
    counts = {what: check_times(doc, what) for what, doc in docs.items()}
    for what in ("inspect", "ps -a json", "events", "image ls", "volume inspect", "state"):
        assert counts[what] > 0, (what, counts)
    t, = [row for row in docs["ps -a json"] if row["id"] == "zs5t"]
    assert t["exit_code"] == 2 and RFC3339_Z.match(t["finished"])


# -- 3. logs --since and -t ---------------------------------------------------------------

def _logs_lines_with_times(text: str) -> list[tuple[datetime.datetime, str]]:
    """`logs -t` lines: (time, text). RFC 3339 with nanoseconds (Z or an offset, as
    podman prints local time): cut to microseconds for fromisoformat."""
    out = []
    for line in text.splitlines():
        when, _, rest = line.partition(" ")
        m = re.fullmatch(r"(\S+T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", when)
        assert m, line
        frac = (m.group(2) or ".0")[:7]
        zone = "+00:00" if m.group(3) == "Z" else m.group(3)
        out.append((datetime.datetime.fromisoformat(m.group(1) + frac + zone), rest))
    return out


def test_logs_since_and_timestamps_as_podman(podman, z):  # noqa: F811
    for tool in (podman, z):
        t0 = time.time()
        _detached(tool, "zs5lg", "sh", "-c", "echo early; sleep 3; echo late; echo last")
        time.sleep(1.5)
        between = datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc)
        tool("wait", "zs5lg")
        stamp = between.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert tool("logs", "--since", stamp, "zs5lg").stdout == "late\nlast\n", tool
        assert tool("logs", "--since", "1h", "zs5lg").stdout == "early\nlate\nlast\n"
        assert tool("logs", "--since", "1h", "--tail", "1", "zs5lg").stdout == "last\n"
        future = str(int(time.time()) + 3600)
        assert tool("logs", "--since", future, "zs5lg").stdout == ""
        timed = _logs_lines_with_times(tool("logs", "-t", "zs5lg").stdout)
        assert [text for _, text in timed] == ["early", "late", "last"], tool
        times = [when.timestamp() for when, _ in timed]
        assert t0 - 1 < times[0] < between.timestamp() < times[1] <= times[2] < time.time()
        tool("rm", "zs5lg")
    bad = z("logs", "--since", "yesterday-ish", "zs5lg")
    assert bad.returncode == 125 and len(bad.stderr.splitlines()) == 1


def test_logs_timestamps_follow_and_old_logs_without_times(z):  # noqa: F811
    _detached(z, "zs5lf", "sh", "-c", "echo a; sleep 1; echo b")
    out = z("logs", "-f", "-t", "zs5lf", timeout=30).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in out] == ["a", "b"]
    assert all(RFC3339_Z.match(line.split(" ", 1)[0]) for line in out)
    data = json.loads(z("inspect", "--raw", "zs5lf").stdout)["state"]["zoned"]["data"]
    os.unlink(os.path.join(data, "ctr.ts"))  # a log written before ctr.ts existed
    mtime = os.stat(os.path.join(data, "ctr.log")).st_mtime
    old = z("logs", "-t", "zs5lf").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in old] == ["a", "b"]
    when = _logs_lines_with_times(old[0])[0][0].timestamp()
    assert abs(when - mtime) < 1
    assert z("logs", "zs5lf").stdout == "a\nb\n"  # ctr.log itself is as it always was
    z("rm", "zs5lf", check=True)


# -- 4. detach keys, run -dt and attach ---------------------------------------------------

def on_a_terminal(cmd: tuple[list[str], dict], steps: list[tuple[bytes, float]],
                  timeout: float = 30):
    """Run cmd (argv, env) on a new pty (as a person at a terminal would), type each step's bytes
    after waiting for its seconds of output; (everything it printed, its exit code)."""
    import pty
    import select

    argv, env = cmd
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(argv[0], argv, env)
    out = bytearray()

    def read_for(seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return False
                if not data:
                    return False
                out.extend(data)
        return True

    try:
        for data, wait in steps:
            if not read_for(wait):
                break
            os.write(fd, data)
        deadline = time.monotonic() + timeout
        while read_for(0.2) and time.monotonic() < deadline:
            pass
        for _ in range(50):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return bytes(out), os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError(f"{argv} did not end: {bytes(out)!r}")
    finally:
        os.close(fd)


CTRL_P_Q = b"\x10\x11"


def _cli(tool, *args) -> tuple[list[str], dict]:
    """(argv, env) of podman's or zoned's command line, to run on a terminal."""
    if isinstance(tool, Podman):
        import shutil

        return ([shutil.which("podman"), "--root", str(tool.base / "root"), "--runroot",
                 str(tool.base / "runroot"), "--tmpdir", str(tool.base / "tmp"),
                 "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args],
                tool.env)
    from tests.conftest import ZONED

    return [ZONED, "--root", tool.root, *args], dict(os.environ)


def _run_it(tool, name, *extra):
    if isinstance(tool, Podman):
        return _cli(tool, "run", *RUN_FLAGS, "-it", "--name", name, *extra, IMAGE, "sh")
    return _cli(tool, "run", "-it", "--name", name, *extra, "busybox", "sh")


def _attach_argv(tool, name, *extra):
    return _cli(tool, "attach", *extra, name)


def test_run_it_detach_keys_then_attach(z):  # noqa: F811
    """podman's default keys, ctrl-p,ctrl-q, leave `run -it` with the zone running; attach
    comes back to it. (podman 4.3 on this host passes the keys to the container instead,
    with or without --detach-keys: compared only where it detaches, below.)"""
    out, code = on_a_terminal(_run_it(z, "zs5it"), [
        (b"echo typed-$((40+2))\r", 3), (CTRL_P_Q, 1.5)])
    assert code == 0 and b"typed-42" in out, out
    assert z("inspect", "--format", "{{.State.Status}}", "zs5it").stdout == "running\n"
    out, code = on_a_terminal(_attach_argv(z, "zs5it"), [
        (b"echo again-$((1+1))\r", 1.5), (b"exit 6\r", 1)])
    assert code == 0 and b"again-2" in out, out  # attach: 0, as podman's (below)
    assert z("wait", "zs5it").stdout == "6\n"
    z("rm", "zs5it", check=True)
    out, code = on_a_terminal(_run_it(z, "zs5it2", "--rm"), [(b"exit 4\r", 3)])
    assert code == 4 and z("ps", "-a", "-q").stdout == "", out  # -it --rm as before


def test_detach_keys_custom_and_none(z):  # noqa: F811
    out, code = on_a_terminal(_run_it(z, "zs5dk", "--detach-keys", "ctrl-a,x"), [
        (CTRL_P_Q + b"echo still-here\r", 3), (b"\x01x", 1.5)])
    assert code == 0 and b"still-here" in out, out  # ctrl-p,ctrl-q went to the shell
    assert z("inspect", "--format", "{{.State.Status}}", "zs5dk").stdout == "running\n"
    out, code = on_a_terminal(_attach_argv(z, "zs5dk", "--detach-keys", ""), [
        (CTRL_P_Q + b"\r", 1.5), (b"exit 3\r", 1)])
    assert code == 0 and z("wait", "zs5dk").stdout == "3\n", out  # nothing detaches:
    # the shell got the keys (^P: its history), then `exit 3`
    z("rm", "zs5dk", check=True)
    bad = z("run", "-it", "--detach-keys", "ctrl-é", "busybox", "true")
    assert bad.returncode == 125 and "--detach-keys" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1 and z("ps", "-a", "-q").stdout == ""


def test_run_dt_then_attach_as_podman(podman, z):  # noqa: F811
    for tool in (podman, z):
        r = (tool.run("-dt", "--name", "zs5dt", IMAGE, "sh") if isinstance(tool, Podman)
             else tool("run", "-dt", "--name", "zs5dt", "busybox", "sh"))
        assert r.returncode == 0, r.stderr
        out, code = on_a_terminal(_attach_argv(tool, "zs5dt"), [
            (b"echo via-$((2+3))\r", 1.5), (b"exit 6\r", 1.5)])
        assert code == 0 and b"via-5" in out, (tool, out)  # the code: from wait
        assert tool("wait", "zs5dt").stdout == "6\n"
        assert "via-5" in tool("logs", "zs5dt").stdout
        assert tool("rm", "-f", "zs5dt").returncode == 0
    z("run", "-dt", "--name", "zs5dt", "busybox", "sh", check=True)
    out, code = on_a_terminal(_attach_argv(z, "zs5dt"), [(CTRL_P_Q, 1.5)])
    assert code == 0 and z("inspect", "--format", "{{.State.Status}}", "zs5dt").stdout \
        == "running\n"
    z("rm", "-f", "zs5dt", check=True)
