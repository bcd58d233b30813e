"""The podman-level CLI (issue 15), from the outside: the same small scripts through podman
and through zoned where podman works on this host (its own storage, a busybox imported
from zoned's image, never pulled, runc, no network), comparing outputs and exit codes;
zoned alone where podman cannot run here (-p needs a network)."""
from __future__ import annotations

import functools
import json
import os
import tempfile
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from oci_helpers import podman_made_paths, remove_made_paths
from tests.conftest import ZONED

from zoned.bench.podman import CONTAINERS_CONF  # podman alone: private, no network

IMAGE = "localhost/zpc-busybox"
RUN_FLAGS = ["--runtime", "runc", "--network", "none", "--pull", "never", "--ulimit",
             "nofile=1024:20000", "--ulimit", "nproc=1024:1024"]


class Podman:
    """podman with storage of its own under `base` (nothing shared with the host's)."""

    def __init__(self, base: Path):
        self.base = base
        self.env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
        self.env["CONTAINERS_CONF"] = str(base / "containers.conf")

    def __call__(self, *args, input=None, timeout=120):
        cmd = ["podman", "--root", str(self.base / "root"), "--runroot",
               str(self.base / "runroot"), "--tmpdir", str(self.base / "tmp"),
               "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def run(self, *args, **kw):
        """`podman run` with the flags this host needs, then the rest."""
        return self("run", *RUN_FLAGS, *args, **kw)


@pytest.fixture(scope="module")
def podman(busybox, tmp_path_factory):
    for tool in ("podman", "conmon", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    made_here = podman_made_paths()
    base = Path(f"/run/zoned-zpc-podman-{uuid.uuid4().hex[:8]}")
    for d in ("root", "runroot", "tmp"):
        (base / d).mkdir(parents=True)
    (base / "containers.conf").write_text(CONTAINERS_CONF)
    from zoned.images.store import ImageStore

    tar = ImageStore().export_rootfs_tar("busybox", tmp_path_factory.mktemp("pm") / "bb.tar")
    p = Podman(base)
    r = p("import", str(tar), IMAGE)
    assert r.returncode == 0, r.stderr
    yield p
    p("rm", "-af", "-t", "0")
    p("system", "reset", "-f")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if str(base) in line:
            subprocess.run(["umount", "-l", line.split()[4]], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    remove_made_paths(made_here)


@pytest.fixture
def z(cli):
    """zoned with the test's state root: its named volumes go when the test ends."""
    yield cli
    from zoned.volumes import volumes_dir

    shutil.rmtree(volumes_dir(cli.root), ignore_errors=True)
    from zoned.storage import data_root

    try:
        os.rmdir(data_root(cli.root))
    except OSError:
        pass


def both(podman, z, *args, input=None):
    """Run `run --rm IMAGE ARGS` through both: (podman's, zoned's) completed processes."""
    flags, rest = _split(args)
    return (podman.run("--rm", *flags, IMAGE, *rest, input=input),
            z("run", "--rm", *flags, "busybox", *rest, input=input))


def _split(args):
    """(run flags, command): the command starts at the "::" marker."""
    i = args.index("::")
    return list(args[:i]), list(args[i + 1:])


def same(pair, *, out=True):
    pm, zd = pair
    assert pm.returncode == zd.returncode, (pm.stderr, zd.stderr)
    if out:
        assert pm.stdout == zd.stdout, (pm.stdout, zd.stdout)
    return zd


# -- positional image ---------------------------------------------------------------------

def test_positional_image_and_exit_code_as_podman(podman, z):
    same(both(podman, z, "::", "sh", "-c", "echo hi; exit 3"))
    r = same(both(podman, z, "::", "echo", "a", "b"))
    assert r.stdout == "a b\n"


def test_positional_image_is_the_image_not_a_command(z, tmp_path):
    """(busybox as the image hides the difference: `busybox sh` is also a command)"""
    from zoned.images.store import ImageStore

    store = tmp_path / "images"
    tar = ImageStore().export_rootfs_tar("busybox", tmp_path / "bb.tar")
    z("--images", str(store), "image", "import", str(tar), "--name", "zpcimg", check=True)
    p = z("--images", str(store), "run", "--rm", "zpcimg", "sh", "-c", "exit 3")
    assert p.returncode == 3, p.stderr
    p = z("--images", str(store), "run", "--rm", "zpcimg", "cat", "/etc/hostname")
    assert p.returncode == 0 and p.stdout.strip(), p.stderr


def test_entrypoint_replaces_the_image_s(podman, z):
    r = same(both(podman, z, "--entrypoint", "echo", "::", "from", "entrypoint"))
    assert r.stdout == "from entrypoint\n"


def test_a_missing_image_is_an_error_not_a_command(podman, z):
    pm = podman.run("--rm", "zpcnosuchimage", "ls")
    zd = z("run", "--rm", "zpcnosuchimage", "ls")
    assert pm.returncode == zd.returncode == 125
    lines = zd.stderr.strip().splitlines()
    assert len(lines) == 1 and "no image 'zpcnosuchimage'" in lines[0], zd.stderr
    assert "-- zpcnosuchimage" in lines[0]  # how to run it in the default image


def test_default_image_after_double_dash_and_image_flag_still_work(z):
    assert z("run", "--rm", "--", "sh", "-c", "exit 4").returncode == 4
    assert z("run", "--rm", "--image", "busybox", "sh", "-c", "exit 5").returncode == 5
    assert z("run", "--rm", "busybox", "--", "sh", "-c", "exit 6").returncode == 6


# -- run flags ----------------------------------------------------------------------------

def test_env_file_then_env_override(podman, z, tmp_path):
    f = tmp_path / "env"
    f.write_text("# comment\nA=1\n\nB=two words\nC=3\n")
    r = same(both(podman, z, "--env-file", str(f), "-e", "C=over", "::",
                  "sh", "-c", 'echo "$A|$B|$C"'))
    assert r.stdout == "1|two words|over\n"
    pm, zd = both(podman, z, "--env-file", str(tmp_path / "missing"), "::", "true")
    assert pm.returncode == zd.returncode == 125
    assert "--env-file" in zd.stderr


def test_tmpfs_and_mount_types(podman, z, tmp_path):
    (tmp_path / "f").write_text("x")
    script = ("grep -E ' /(scratch|t) ' /proc/mounts | cut -d' ' -f1-3 | sort; cat /b/f; "
              "echo y > /b/g 2>/dev/null || echo ro")
    r = same(both(podman, z, "--tmpfs", "/scratch", "--mount", "type=tmpfs,target=/t",
                  "--mount", f"type=bind,source={tmp_path},target=/b,ro", "::",
                  "sh", "-c", script))
    assert r.stdout == "tmpfs /scratch tmpfs\ntmpfs /t tmpfs\nxro\n"


def test_tmpfs_under_a_bind_mount_keeps_parents_first(z, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("seen")
    p = z("run", "--rm", "-v", f"{tmp_path / 'sub'}:/x/y", "--tmpfs", "/x", "busybox",
          "cat", "/x/y/f")
    assert p.stdout == "seen", p.stderr


def test_cap_add_drop_and_privileged(podman, z):
    caps = "grep -E '^Cap(Bnd|Eff)' /proc/self/status"
    r = same(both(podman, z, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "::",
                  "sh", "-c", caps))
    assert "0000000000001000" in r.stdout  # CAP_NET_ADMIN (12) only
    same(both(podman, z, "--cap-drop", "chown", "--cap-drop", "kill", "::", "sh", "-c",
              caps + " | head -1 | grep -c ffff"), out=False)
    r = same(both(podman, z, "--privileged", "::", "sh", "-c",
                  caps + "; grep Seccomp: /proc/self/status"))
    assert "Seccomp:\t0" in r.stdout


def test_workdir_missing_fails_as_podman(podman, z, tmp_path):
    pm, zd = both(podman, z, "-w", "/zpc/none", "::", "pwd")
    assert pm.returncode == zd.returncode == 126
    assert "/zpc/none" in zd.stderr and zd.stdout == ""
    same(both(podman, z, "-w", "/tmp", "::", "pwd"))
    same(both(podman, z, "-v", f"{tmp_path}:/made/by/mount", "-w", "/made/by/mount", "::",
              "pwd"))


def test_named_volumes_and_volume_commands(podman, z):
    for cmd, image in ((podman, IMAGE), (z, "busybox")):
        run = cmd.run if cmd is podman else functools.partial(z, "run")
        assert run("--rm", "-v", "zpcvol:/data", image, "sh", "-c",
                   "echo kept > /data/f").returncode == 0
        r = run("--rm", "--mount", "type=volume,source=zpcvol,target=/d", image,
                "cat", "/d/f")
        assert r.stdout == "kept\n", r.stderr
        assert "zpcvol" in cmd("volume", "ls", "-q").stdout.split()
        assert cmd("volume", "inspect", "--format", "{{.Name}}", "zpcvol").stdout == "zpcvol\n"
        assert cmd("volume", "rm", "zpcvol").returncode == 0
        assert "zpcvol" not in cmd("volume", "ls", "-q").stdout.split()
    mount = json.loads(z("volume", "inspect", z("volume", "create", "zpcv2").stdout.strip())
                       .stdout)[0]["Mountpoint"]
    assert mount.startswith("/var/lib/zoned/") and os.path.isdir(mount)
    z("run", "-d", "--name", "zpcuser", "-v", "zpcv2:/v", "busybox", "sleep", "100",
      check=True)
    p = z("volume", "rm", "zpcv2")
    assert p.returncode == 125 and "in use by zpcuser" in p.stderr
    z("rm", "-f", "zpcuser", check=True)
    assert z("volume", "rm", "zpcv2").returncode == 0 and not os.path.exists(mount)


def test_label_stop_signal_and_stop_timeout(z):
    z("run", "-d", "--name", "zpcl", "--label", "app=web", "--stop-signal", "USR1",
      "--stop-timeout", "1", "busybox", "sleep", "100", check=True)
    fmt = "{{.Config.Labels.app}} {{.Config.StopSignal}} {{.Config.StopTimeout}}"
    assert z("inspect", "--format", fmt, "zpcl").stdout == "web 10 1\n"
    t = time.monotonic()
    z("stop", "zpcl", check=True)  # sleep as PID 1 ignores USR1: SIGKILL after 1 s
    assert 0.8 < time.monotonic() - t < 5


@pytest.mark.parametrize("flags, field", [
    (["--cap-add", "BOGUS"], "--cap-add"), (["--mount", "type=nfs,target=/x"], "--mount"),
    (["--mount", "type=bind,source=/nonexistent-zpc,target=/x"], "--mount"),
    (["--tmpfs", "relative"], "--tmpfs"), (["--stop-signal", "NOPE"], "--stop-signal"),
    (["--label", "=x"], "--label"), (["-v", "bad name!:/x"], "volume"),
    (["--stop-timeout", "x"], "--stop-timeout"), (["--bogus"], "--bogus"),
])
def test_bad_run_flags_one_line_125_nothing_left(z, flags, field):
    p = z("run", "--rm", "--name", "zpcbad", *flags, "busybox", "true")
    assert p.returncode == 125, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], p.stderr
    assert z("ps", "-a", "-q").stdout == ""


# -- commands on zones --------------------------------------------------------------------

def _detached(tool, name, *cmd, image=None):
    if isinstance(tool, Podman):
        r = tool.run("-d", "--name", name, IMAGE, *cmd)
    else:
        r = tool("run", "-d", "--name", name, "busybox", *cmd)
    assert r.returncode == 0, r.stderr
    return r


def test_ps_lists_running_by_default_all_with_a(podman, z):
    for tool in (podman, z):
        _detached(tool, "zpcup", "sleep", "100")
        assert tool("run", "--name", "zpcdone", *(RUN_FLAGS if tool is podman else []),
                    IMAGE if tool is podman else "busybox", "sh", "-c", "exit 3"
                    ).returncode == 3
        running = tool("ps", "--format", "{{.Names}}").stdout.split()
        every = tool("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert running == ["zpcup"] and sorted(every) == ["zpcdone", "zpcup"]
        assert tool("rm", "-f", "zpcup", "zpcdone").returncode == 0
    assert "exited (3)" not in z("ps").stdout


def test_kill_defaults_to_sigkill_and_rm_f_of_missing_is_ok(podman, z):
    for tool in (podman, z):
        _detached(tool, "zpck", "sleep", "100")  # PID 1: would ignore SIGTERM
        assert tool("kill", "zpck").returncode == 0
        deadline = time.monotonic() + 10
        while tool("inspect", "--format", "{{.State.Status}}", "zpck").stdout.strip() \
                != "exited" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tool("inspect", "--format", "{{.State.Status}}", "zpck").stdout == "exited\n"
        assert tool("rm", "-f", "zpck", "zpcnosuch").returncode == 0
    p = z("kill", "-s", "NOPE", "zpcnosuch")
    assert p.returncode == 125


def test_inspect_format_several_ids_and_summary(podman, z):
    for tool in (podman, z):
        _detached(tool, "zpci1", "sleep", "100")
        _detached(tool, "zpci2", "sleep", "100")
        out = tool("inspect", "--format", "{{.Name}} {{.State.Running}} {{.State.Pid}}",
                   "zpci1", "zpci2").stdout.splitlines()
        assert [line.split()[:2] for line in out] == [["zpci1", "true"], ["zpci2", "true"]]
        assert all(int(line.split()[2]) > 1 for line in out)
        bad = tool("inspect", "--format", "{{.State.Nope}}", "zpci1")
        assert bad.returncode == 125
        tool("rm", "-f", "zpci1", "zpci2")
    _detached(z, "zpci3", "sleep", "100")
    doc = json.loads(z("inspect", "zpci3").stdout)
    assert doc["state"]["status"] == "running" and doc["State"]["Pid"] == doc["state"]["pid"]
    assert len(json.dumps(doc)) < 12000  # the seccomp profile is summarised
    assert json.loads(z("inspect", "--raw", "zpci3").stdout)["config"]["linux"]["seccomp"][
        "syscalls"]
    summary = z("inspect", "--format", "summary", "zpci3").stdout
    assert "State:      running, pid" in summary and "Image:      busybox" in summary
    assert len(summary.splitlines()) < 20


def test_stop_several_in_parallel(podman, z):
    names = ["zpcs1", "zpcs2", "zpcs3"]
    took = {}
    for tool in (podman, z):
        for n in names:
            _detached(tool, n, "sleep", "100")  # each ignores SIGTERM: -t runs out
        t = time.monotonic()
        p = tool("stop", "-t", "2", *names)
        took[tool is z] = time.monotonic() - t
        assert p.returncode == 0 and sorted(p.stdout.split()) == names
        tool("rm", "-f", *names)
    assert took[True] < 5, took  # one timeout, not three (podman: took[False])


def test_logs_tail(podman, z):
    script = "for i in 1 2 3 4 5; do echo line$i; done"
    for tool in (podman, z):
        _detached(tool, "zpclog", "sh", "-c", script)
        tool("wait", "zpclog")
        assert tool("logs", "--tail", "2", "zpclog").stdout == "line4\nline5\n"
        assert tool("logs", "--tail", "0", "zpclog").stdout == ""
        tool("rm", "-f", "zpclog")
    _detached(z, "zpclog", "sh", "-c", script)
    z("wait", "zpclog")
    p = z("logs", "--since", "1m", "--tail", "1", "zpclog")  # tests/test_cli_s5.py: more
    assert (p.returncode, p.stdout) == (0, "line5\n"), p.stderr


def test_cp_both_ways_running_and_stopped(podman, z, tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("hello\n")
    (src / "link").symlink_to("/etc/shadow")
    for tool in (podman, z):
        out = tmp_path / ("pm" if tool is podman else "zd")
        out.mkdir()
        _detached(tool, "zpccp", "sleep", "100")
        assert tool("cp", str(src), "zpccp:/tmp").returncode == 0
        assert tool("exec", "zpccp", "cat", "/tmp/d/f").stdout == "hello\n"
        assert tool("exec", "zpccp", "readlink", "/tmp/d/link").stdout == "/etc/shadow\n"
        assert tool("stop", "-t", "0", "zpccp").returncode == 0
        assert tool("cp", str(src / "f"), "zpccp:/root/g").returncode == 0  # stopped
        assert tool("cp", "zpccp:/root/g", str(out / "g")).returncode == 0
        assert tool("cp", "zpccp:/tmp/d", str(out)).returncode == 0
        assert (out / "g").read_text() == "hello\n"
        assert os.readlink(out / "d" / "link") == "/etc/shadow"  # the link, not followed
        assert tool("cp", "zpccp:/nonexistent", str(out)).returncode != 0
        tool("rm", "-f", "zpccp")
    p = z("cp", str(src), str(tmp_path / "x"))
    assert p.returncode == 125 and "ID:PATH" in p.stderr


def test_cp_out_cannot_write_through_a_zone_symlink(z, tmp_path):
    """A zone's tar stream that names a link and then a file under it must not write
    outside the destination."""
    victim = tmp_path / "victim"
    victim.mkdir()
    _detached(z, "zpcevil", "sh", "-c",
              f"mkdir -p /e && ln -s {victim} /e/esc && sleep 100")
    time.sleep(0.5)
    out = tmp_path / "out"
    out.mkdir()
    assert z("cp", "zpcevil:/e", str(out)).returncode == 0
    assert os.path.islink(out / "e" / "esc") and list(victim.iterdir()) == []


def test_restart_keeps_layer_and_addresses(z):
    _detached(z, "zpcr", "sh", "-c", "echo $$ > /tmp/pid; sleep 100")
    time.sleep(0.3)
    pid = z("inspect", "--format", "{{.State.Pid}}", "zpcr").stdout
    z("exec", "zpcr", "sh", "-c", "echo kept > /root/mark", check=True)
    assert z("restart", "-t", "0", "zpcr").stdout == "zpcr\n"
    assert z("inspect", "--format", "{{.State.Pid}}", "zpcr").stdout != pid
    assert z("exec", "zpcr", "cat", "/root/mark").stdout == "kept\n"
    z("rm", "-f", "zpcr", check=True)


def test_start_of_an_exited_or_running_container_as_podman(podman, z):
    """podman's start boots an exited container again (its log goes on, its exit code is
    the new run's) and leaves a running one as it is; both print the name."""
    seen = []
    for tool, name in ((podman, "zpcs-pm"), (z, "zpcs")):
        _detached(tool, name, "sh", "-c", "echo hi; exit 3")
        assert tool("wait", name).stdout == "3\n"
        started = tool("start", name)
        waited = tool("wait", name).stdout
        seen.append((started.returncode, started.stdout.replace(name, "N"), waited,
                     tool("logs", name).stdout))
        _detached(tool, name + "-up", "sleep", "100")
        again = tool("start", name + "-up")
        seen.append((again.returncode, again.stdout.replace(name, "N"),
                     tool("inspect", "--format", "{{.State.Running}}", name + "-up").stdout))
        tool("rm", "-f", name, name + "-up")
    assert seen[:2] == seen[2:], seen
    assert seen[0] == (0, "N\n", "3\n", "hi\nhi\n"), seen


def test_restart_that_cannot_start_keeps_the_zone(z, tmp_path):
    """A restart whose new start fails (a bind source gone) says why in one line and
    leaves the zone listed, exited with its code, its writable layer kept: once the source
    is back it starts with what it had written. (Before, the zone vanished, its layer left
    on disk.)"""
    vol = tmp_path / "vol"
    vol.mkdir()
    z("run", "-d", "--name", "zpcrf", "-v", f"{vol}:/v", "busybox", "sh", "-c",
      "test -e /root/mark || echo kept > /root/mark; cat /root/mark; exit 3", check=True)
    assert z("wait", "zpcrf").stdout == "3\n"
    data = json.loads(Path(z.root, "zpcrf", "state.json").read_text())["zoned"]["data"]
    assert os.path.isdir(data)
    vol.rmdir()
    for cmd in ("restart", "start"):
        r = z(cmd, "zpcrf")
        assert r.returncode == 125, (cmd, r.stderr)
        assert r.stderr.count("\n") == 1 and str(vol) in r.stderr, (cmd, r.stderr)
        ps = z("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
        assert ps.startswith("zpcrf exited (3)"), (cmd, ps)
    vol.mkdir()
    assert z("start", "zpcrf").stdout == "zpcrf\n"
    assert z("wait", "zpcrf").stdout == "3\n"
    assert z("logs", "zpcrf").stdout == "kept\nkept\n"  # the first run's and this one's
    z("rm", "zpcrf", check=True)
    assert not os.path.exists(data) and z("ps", "-a", "-q").stdout == ""


def test_wait_rename_top_port(z):
    assert z("run", "--name", "zpcw", "busybox", "sh", "-c", "exit 7").returncode == 7
    assert z("wait", "zpcw").stdout == "7\n"
    assert z("rename", "zpcw", "zpcw2").returncode == 0
    assert z("ps", "-a", "-q").stdout.split() == ["zpcw2"]
    assert z("inspect", "--format", "{{.State.ExitCode}}", "zpcw2").stdout == "7\n"
    assert z("rm", "zpcw2").returncode == 0
    _detached(z, "zpct", "sleep", "100")
    top = z("top", "zpct").stdout.splitlines()
    assert "PID" in top[0] and any("sleep 100" in line for line in top[1:])
    assert z("rename", "zpct", "x y").returncode == 125
    assert z("port", "zpct").stdout == ""


def test_a_renamed_zone_takes_no_cgroup_of_its_old_name_with_it(z):
    """A stopped zone renamed: its record no longer names the old name's cgroup, so a new
    zone of the old name (whose cgroup that is) survives the rm of the renamed one; a
    running or created zone, whose processes are in that cgroup, is refused."""
    assert z("run", "--name", "zpcg", "busybox", "true").returncode == 0
    assert z("rename", "zpcg", "zpcg2").returncode == 0
    _detached(z, "zpcg", "sleep", "100")  # the old name again: the cgroup of that name
    assert z("rm", "zpcg2").returncode == 0
    assert z("inspect", "--format", "{{.State.Status}}", "zpcg").stdout == "running\n"
    assert z("exec", "zpcg", "true").returncode == 0
    p = z("rename", "zpcg", "zpcg3")
    assert p.returncode == 125 and "it is running (stop it first)" in p.stderr, p.stderr
    z("rm", "-f", "zpcg", check=True)
    # a name that is a path reaches no other state root's zone (the third audit moved one
    # in by `rename ../ROOT/ID` and half-removed one by `rm ../ROOT/ID`)
    other = tempfile.mkdtemp(prefix="zoned-test-other-", dir="/run")
    theirs = [ZONED, "--root", other]
    try:
        subprocess.run([*theirs, "run", "-d", "--name", "x", "busybox", "sleep", "100"],
                       check=True, capture_output=True)
        up = f"../{os.path.basename(other)}/x"
        z("rm", "-f", up)  # (-f: a missing container is no error)
        for args in (("rm", up), ("rename", up, "y"), ("inspect", up), ("rm", ".zones")):
            p = z(*args)
            assert p.returncode == 125 and ("does not exist" in p.stderr or
                                            "invalid container name" in p.stderr), \
                (args, p.stderr)
        st = subprocess.run([*theirs, "inspect", "--format", "{{.State.Status}}", "x"],
                            capture_output=True, text=True)
        assert st.stdout == "running\n" and os.listdir(other) == ["x"], st
    finally:
        subprocess.run([*theirs, "rm", "-f", "x"], capture_output=True)
        os.rmdir(other)


def test_publish_without_network_uses_the_default_network(z):
    port = 18000 + os.getpid() % 1000
    r = z("run", "-d", "--name", "zpcweb", "-p", f"{port}:80", "busybox", "sleep", "100")
    assert r.returncode == 0, r.stderr
    assert z("port", "zpcweb").stdout == f"80/tcp -> 0.0.0.0:{port}\n"
    ip = z("inspect", "--format", "{{.NetworkSettings.IPAddress}}", "zpcweb").stdout.strip()
    assert ip.count(".") == 3
    z("rm", "-f", "zpcweb", check=True)


def test_stats_no_stream_and_json_list(z):
    _detached(z, "zpcst", "sleep", "100")
    p = z("stats", "--no-stream")
    assert p.returncode == 0 and p.stdout.splitlines()[1].startswith("zpcst")
    rows = json.loads(z("stats", "--format", "json").stdout)
    assert isinstance(rows, list) and rows[0]["id"] == "zpcst"


def test_events_and_attach(z):
    ev = subprocess.Popen([ZONED, "--root", z.root, "events", "--format", "json",
                           "--timeout", "8"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    _detached(z, "zpcev", "sh", "-c", "sleep 1; echo late")
    att = z("attach", "zpcev", timeout=20)
    assert att.stdout == "late\n"
    z("rm", "zpcev", check=True)
    out, _ = ev.communicate(timeout=20)
    got = [(e["Name"], e["Status"]) for e in map(json.loads, out.splitlines())]
    assert got == [("zpcev", s) for s in ("create", "start", "died", "remove")], got


def test_every_option_has_help_and_every_command_an_example():
    import argparse

    from zoned.cli.parser import build_parser

    missing, no_example = [], []

    def walk(parser, path):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    if len(path) == 0 and "example" not in (sub.epilog or ""):
                        no_example.append(name)
                    walk(sub, path + [name])
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                missing.append((" ".join(path), a.dest))
    walk(build_parser(), [])
    assert missing == [] and no_example == []


def test_flag_errors_exit_125_and_point_to_the_subcommand(podman, z):
    pm, zd = podman("run", "--bogus", IMAGE), z("run", "--bogus", "busybox")
    assert pm.returncode == zd.returncode == 125
    assert "`zoned run --help`" in zd.stderr


def test_piped_output_ends_quietly(z):
    _detached(z, "zpcpipe", "sleep", "100")
    for cmd in ("inspect zpcpipe", "ps -a", "run --help"):
        p = subprocess.run(f"{ZONED} --root {z.root} {cmd} | head -c 1 >/dev/null; "
                           "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                           capture_output=True, text=True)
        assert p.stderr == "" and p.stdout.strip() in ("0", "141"), (cmd, p)


@pytest.mark.parametrize("flags", [["--tmpfs", "/x"], ["--mount", "type=tmpfs,target=/x"],
                                   ["--cap-add", "NET_ADMIN"], ["--privileged"]])
def test_run_flags_a_vm_cannot_honour_are_refused(z, flags):
    p = z("run", "--rm", "--backend", "vm", *flags, "busybox", "true")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "--backend vm" in p.stderr
    assert z("ps", "-a", "-q").stdout == ""


def test_vm_zones_commands_work_or_refuse_in_one_line(z, tmp_path):
    try:
        from zoned.vm.assets import kernel

        kernel()
    except Exception as e:  # noqa: BLE001 - no guest kernel on this host
        pytest.skip(f"no VM guest kernel: {e}")
    r = z("run", "-d", "--name", "zpcvm", "--backend", "vm", "--label", "k=v", "busybox",
          "sleep", "1000", timeout=180)
    assert r.returncode == 0, r.stderr
    assert z("inspect", "--format", "{{.Config.Labels.k}} {{.State.Running}}",
             "zpcvm").stdout == "v true\n"
    assert z("cp", str(tmp_path), "zpcvm:/tmp").returncode == 0  # through the agent
    assert "sleep 1000" in z("top", "zpcvm", timeout=180).stdout  # the guest's ps
    p = z("rename", "zpcvm", "zpcvm2")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "stop it" in p.stderr, p
    assert z("restart", "-t", "1", "zpcvm", timeout=180).stdout == "zpcvm\n"  # a reboot
    assert z("ps", "--format", "{{.Names}}").stdout == "zpcvm\n"
    assert z("kill", "zpcvm").returncode == 0  # SIGKILL to the guest's process
    assert z("rm", "-f", "zpcvm").returncode == 0
