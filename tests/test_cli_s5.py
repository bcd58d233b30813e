"""What was left of issue 15 (the podman-level CLI), from the outside through the real CLI,
side by side with podman where podman runs on this host: exit codes of detached zones,
one JSON timestamp format, `logs --since/-t`, detach keys and `run -dt`."""
from __future__ import annotations

import json
import os
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

