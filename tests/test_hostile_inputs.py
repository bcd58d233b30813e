"""Inputs found mishandled by session 20's audit (exec flags, --format templates, zone
files, volumes): each is one clear line and exit 125, or does what podman does, and leaves
nothing behind."""
from __future__ import annotations

import pytest

from zoned.cli.format import MAX_DEPTH, render
from zoned.errors import ConfigError


@pytest.mark.parametrize("template", [
    '{{truncate .Id "a"}}',          # ValueError in int()
    "{{join .Config.Env .State}}",   # a dict as the separator
    "{{if .State}}" * (MAX_DEPTH + 5) + "x" + "{{end}}" * (MAX_DEPTH + 5),
], ids=["truncate-not-a-number", "join-not-a-string", "nested-too-deep"])
def test_bad_format_templates_are_one_clear_error(template):
    with pytest.raises(ConfigError, match="invalid --format"):
        render(template, {"Id": "abc", "Config": {"Env": ["A=1"]}, "State": {"x": 1}})


def test_format_nesting_within_the_limit_still_renders():
    depth = MAX_DEPTH - 1
    assert render("{{if .A}}" * depth + "ok" + "{{end}}" * depth, {"A": 1}) == "ok"


@pytest.fixture
def running(cli):
    cli("run", "-d", "--name", "hostile-in", "--", "sleep", "1000", check=True)
    yield "hostile-in"
    cli("rm", "-f", "hostile-in")


def test_exec_user_names_and_groups_are_the_zones(cli, running):
    """`exec -u` resolves in the running zone's own passwd and group, as podman's exec
    does: a name works, and a uid gets its primary group (not group 0, as `run -u`)."""
    def ids(user: str) -> str:
        p = cli("exec", "-u", user, running, "--", "id")
        assert p.returncode == 0, p.stderr
        return p.stdout.split(" groups=")[0].strip()

    assert ids("root") == "uid=0(root) gid=0(root)"
    assert ids("zone") == ids("1000") == "uid=1000(zone) gid=1000(zone)"
    assert ids("zone:root") == "uid=1000(zone) gid=0(root)"
    p = cli("exec", "-u", "nosuch", running, "--", "id")
    assert p.returncode == 125 and "unknown user 'nosuch'" in p.stderr


def test_exec_bad_gids_and_process_files_are_one_line(cli, running, tmp_path):
    gids = cli("exec", "-g", "abc", running, "--", "id")
    assert gids.returncode == 125 and "--additional-gids" in gids.stderr, gids.stderr
    process = tmp_path / "process.json"
    process.write_text("[1]")
    proc = cli("exec", "--process", str(process), running)
    assert proc.returncode == 125 and "must be a JSON object" in proc.stderr, proc.stderr
    for p in (gids, proc):
        assert "internal error" not in p.stderr and len(p.stderr.splitlines()) == 1


def _volumes(cli, *extra) -> list[str]:
    return cli(*extra, "volume", "ls", "-q").stdout.split()


@pytest.mark.parametrize("flags", [
    ["--memory", "1k"], ["-v", "/nonexistent-host-dir:/y"], ["-p", "abc"],
], ids=["memory", "missing-bind", "publish"])
def test_a_refused_run_makes_no_volume(cli, flags):
    p = cli("run", "--rm", "-v", "refusedvol:/x", *flags, "--", "true")
    assert p.returncode == 125, p.stderr
    assert _volumes(cli) == []


def test_rm_removes_anonymous_volumes_and_keeps_named_ones(cli):
    """As podman: a --rm zone's anonymous volumes go with it; named ones stay; without
    --rm the anonymous one stays too (podman rm without -v)."""
    p = cli("run", "--rm", "--mount", "type=volume,target=/anon", "-v", "kept:/named",
            "--", "sh", "-c", "echo x > /anon/f && echo y > /named/f")
    assert p.returncode == 0, p.stderr
    assert _volumes(cli) == ["kept"]
    cli("run", "--name", "noautorm", "--mount", "type=volume,target=/anon", "--", "true",
        check=True)
    cli("rm", "-f", "noautorm", check=True)
    assert len(_volumes(cli)) == 2
    for name in _volumes(cli):
        cli("volume", "rm", name, check=True)


def test_volumes_live_in_the_data_root_of_the_state_root_in_use(cli, tmp_path):
    """`--root R --data-root D`: a run's named volume is D's (volume ls there lists it),
    not the default root's."""
    data = tmp_path / "data"
    z = ("--data-root", str(data))
    cli(*z, "run", "--rm", "-v", "dvol:/x", "--", "sh", "-c", "echo v > /x/f", check=True)
    assert _volumes(cli, *z) == ["dvol"]
    assert (data / "volumes" / "dvol" / "_data" / "f").read_text() == "v\n"
    assert _volumes(cli) == []  # the state root's own data root has none
    cli(*z, "volume", "rm", "dvol", check=True)

