"""The CLI as a package (issue 11): each command imports only its own module, the domain
logic it used to hold lives where it belongs, and `run` and `update` share one resources
converter (so `update` checks memory+swap >= memory as `run` does)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoned.errors import ConfigError
from zoned.oci.spec import RunOptions, resources_from_flags
from zoned.oci.values import DEFAULT_PIDS_LIMIT

MiB = 1 << 20


def _imported_after(code: str) -> list[str]:
    """The zoned.cli modules a fresh interpreter has loaded after running `code`."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(sorted(m for m in sys.modules "
         "if m.startswith('zoned.cli')))"], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.unprivileged
def test_version_imports_no_command_module_and_builds_no_subcommand():
    assert _imported_after("from zoned.cli import main; main(['--version'])") == [
        "zoned.cli", "zoned.cli.common", "zoned.cli.fastparse"]  # no argparse (issue 18)
    from zoned.cli.parser import build_parser

    def commands(p) -> set[str]:
        return set(p._subparsers._group_actions[0].choices)

    assert commands(build_parser(None, ["--version"])) == set()
    assert commands(build_parser("run", ["run", "--", "true"])) == {"run"}
    assert {"run", "network", "image", "migrate"} <= commands(build_parser(None, ["--help"]))


@pytest.mark.unprivileged
def test_a_command_imports_only_its_own_module():
    assert _imported_after("from zoned.cli import command; command('run')") == [
        "zoned.cli", "zoned.cli.common", "zoned.cli.run"]
    assert _imported_after("from zoned.cli import command; command('network')") == [
        "zoned.cli", "zoned.cli.network", "zoned.cli.output"]


@pytest.mark.unprivileged
def test_run_resources_are_what_they_were():
    """to_config through the shared converter: podman's defaults (swap = limit, pids 2048)."""
    res = RunOptions(["true"], rootfs="/", memory="64m", cpus="0.5",
                     cpuset_cpus="0").to_config()["linux"]["resources"]
    assert res["memory"] == {"limit": 64 * MiB, "swap": 64 * MiB}
    assert res["cpu"] == {"quota": 50000, "period": 100000, "cpus": "0"}
    assert res["pids"] == {"limit": DEFAULT_PIDS_LIMIT}
    res = RunOptions(["true"], rootfs="/", memory="64m", memory_swap="-1",
                     pids_limit=0).to_config()["linux"]["resources"]
    assert res["memory"] == {"limit": 64 * MiB, "swap": -1} and res["pids"] == {"limit": -1}
    with pytest.raises(ConfigError, match="--memory-swap"):
        RunOptions(["true"], rootfs="/", memory="64m", memory_swap="32m").to_config()
    with pytest.raises(ConfigError, match="--memory"):
        RunOptions(["true"], rootfs="/", memory="-1").to_config()  # no "unlimited" for run


@pytest.mark.unprivileged
def test_update_resources_set_only_what_is_given():
    assert resources_from_flags() == {}
    assert resources_from_flags(memory="-1", pids_limit="0") == {
        "memory": {"limit": -1}, "pids": {"limit": -1}}
    base = {"memory": {"limit": 64 * MiB}, "cpu": {"shares": 512}}
    got = resources_from_flags(base=base, memory_swap="128m", cpu_quota="20000")
    assert got == {"memory": {"limit": 64 * MiB, "swap": 128 * MiB},
                   "cpu": {"shares": 512, "quota": 20000}}
    assert base == {"memory": {"limit": 64 * MiB}, "cpu": {"shares": 512}}  # not changed
    with pytest.raises(ConfigError, match="--memory-swap '32m'"):
        resources_from_flags(memory="64m", memory_swap="32m")
    with pytest.raises(ConfigError, match="--memory-swap"):  # the file's limit counts too
        resources_from_flags(base={"memory": {"limit": 64 * MiB}}, memory_swap="32m")
    with pytest.raises(ConfigError, match="invalid --cpu-period 'x'"):
        resources_from_flags(cpu_period="x")


@pytest.mark.unprivileged
def test_exec_cap_and_runc_stats_are_pure_functions():
    from zoned.runc_stats import UNLIMITED, runc_stats
    from zoned.child.security import add_capabilities

    caps = {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]}
    got = add_capabilities(caps, ["net_admin", "CAP_KILL"])
    assert got == {"bounding": ["CAP_KILL", "CAP_NET_ADMIN"],
                   "effective": ["CAP_KILL", "CAP_NET_ADMIN"], "permitted": ["CAP_NET_ADMIN",
                                                                              "CAP_KILL"]}
    assert caps == {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]}
    s = runc_stats({"memory": {"usage": 5, "limit": -1}, "pids": {"current": 2, "limit": 9}})
    assert s["memory"]["usage"]["limit"] == UNLIMITED and s["memory"]["usage"]["usage"] == 5
    assert s["pids"] == {"current": 2, "limit": 9}


def test_update_refuses_swap_below_the_limit_and_changes_nothing(cli):
    """Before, `update` skipped run's check: the cgroup write failed half-way, after the new
    memory limit was already in place."""
    cli("run", "-d", "--name", "u", "--memory", "32m", "--", "sleep", "1000", check=True)
    before = json.loads(cli("inspect", "u").stdout)["limits"]
    p = cli("update", "--memory", "64m", "--memory-swap", "48m", "u")
    assert p.returncode == 125, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--memory-swap '48m'" in lines[0], p.stderr
    info = json.loads(cli("inspect", "u").stdout)
    assert info["limits"] == before
    assert info["stats"]["memory"]["limit"] == 32 * MiB
    assert cli("update", "--memory", "64m", "--memory-swap", "96m", "u").returncode == 0
    assert json.loads(cli("inspect", "u").stdout)["stats"]["memory"]["limit"] == 64 * MiB


def test_foreground_exit_code_is_kept(cli):
    assert cli("run", "--name", "x", "--", "sh", "-c", "exit 3").returncode == 3
    assert "exited (3)" in cli("ps", "-a").stdout
    assert cli("ps", "-a", "--format", "json").stdout.count('"exit_code": 3') == 1


@pytest.mark.unprivileged
def test_the_program_flushes_what_it_printed_and_keeps_its_status():
    """`zoned` (zoned.cli.console) ends with os._exit, past the interpreter's teardown:
    block-buffered output to a pipe is flushed first, and the status is main()'s."""
    import contextlib
    import io

    from zoned.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["features"]) == 0
    p = subprocess.run([sys.executable, "-m", "zoned", "features"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout == buf.getvalue() and len(p.stdout) > 1000
    p = subprocess.run([sys.executable, "-m", "zoned", "run", "--memory", "bogus", "--",
                        "true"], capture_output=True, text=True)
    assert p.returncode == 125
    assert p.stderr.splitlines() == [p.stderr.strip()] and "--memory" in p.stderr


def test_output_keeps_zoned_times_as_written_and_converts_the_others():
    """A time in zoned's own form is printed as written (no datetime import, no float
    rounding); any other ISO 8601 time with an offset becomes that form; the rest stays."""
    from zoned.cli.output import exposed, is_rfc3339

    mine = "2026-12-04T05:40:00.999999Z"
    assert is_rfc3339(mine) and exposed({"created": mine}) == {"created": mine}
    assert exposed(["2026-12-04T06:40:00.5+01:00", "2026-12-04T05:40:00Z"]) == \
        ["2026-12-04T05:40:00.500000Z", "2026-12-04T05:40:00.000000Z"]
    for other in ("2026-12-04T05:40:00.99999９Z", "2026-12-04T05:40:00,999999Z",
                  "2026-12-04T05:40:00.999999", "2026-12-04 05:40:00.999999Z"):
        assert not is_rfc3339(other)
    assert exposed("2026-12-04T05:40:00.999999") == "2026-12-04T05:40:00.999999"  # no offset
    assert exposed({"finished": 1764826800.25}) == {"finished": "2025-12-04T05:40:00.250000Z"}


def test_events_interval_takes_runcs_durations_and_refuses_the_rest():
    from zoned.cli.oci import go_duration

    assert [go_duration(t, "--interval") for t in ("5s", "500ms", "1m30s", "2")] == \
        [5.0, 0.5, 90.0, 2.0]
    for bad in ("abc", "-1", "0s", "0", "inf", "1x"):
        with pytest.raises(ConfigError, match="--interval"):
            go_duration(bad, "--interval")


def test_the_text_log_quotes_and_escapes_the_message(tmp_path):
    """runc's --log text lines (logrus): a message with quotes (here an id the error
    names) is one quoted, escaped value, and forges no field."""
    import json

    from zoned.cli import main

    log = tmp_path / "log"
    assert main(["--root", str(tmp_path / "root"), "--log", str(log), "--log-format",
                 "text", "state", 'x" level=info msg="forged']) == 125
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    head, _, quoted = lines[0].partition(" msg=")
    assert head.endswith("level=error") and 'forged' in json.loads(quoted), lines


def test_a_usage_error_goes_to_the_log_too(tmp_path):
    """containerd reads the reason a runtime command failed from --log (an argparse
    refusal too: it showed only "unable to retrieve OCI runtime error"). Only runc's
    global flags before the command count: a `--log` among a container command's words
    names no file zoned writes."""
    from conftest import ZONED

    log, planted = tmp_path / "log.json", tmp_path / "planted"
    p = subprocess.run([ZONED, "--root", str(tmp_path / "root"), "--log", str(log),
                        "--log-format", "json", "restore", "--no-such-flag", "x"],
                       capture_output=True, text=True)
    assert p.returncode == 125 and "--no-such-flag" in p.stderr
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and "--no-such-flag" in entry["msg"]
    p = subprocess.run([ZONED, "--root", str(tmp_path / "root"), "exec", "--no-such-flag",
                        "c", "--", "sh", "--log", str(planted)], capture_output=True, text=True)
    assert p.returncode == 125 and not planted.exists()
