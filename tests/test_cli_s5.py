"""What was left of issue 15 (the podman-level CLI), from the outside through the real CLI,
side by side with podman where podman runs on this host: exit codes of detached zones,
one JSON timestamp format, `logs --since/-t`, detach keys and `run -dt`."""
from __future__ import annotations

import datetime
import json
import os
import re
import time

from tests.test_cli_podman import _detached, podman, z  # noqa: F401 - fixtures


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
    assert row["exit_code"] == 5 and row["finished"] > time.time() - 60
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
    deadline = time.monotonic() + 5
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
