"""A zone's set-up that fails because of its config exits 125 with one line naming the
field, and leaves nothing behind; only the command itself, missing or not executable,
exits 127 or 126 (the shell's codes, as runc's and podman's).

runc exits 1 for all of these; podman reads runc's words, so a device under /proc
("mknod ...: no such file or directory") or an exec's missing working directory ("chdir to
cwd ...: no such file or directory") come out of podman as 127, "command not found".
The pure logic is in tests/test_validation_unit.py and tests/test_child_sync_unit.py.
"""
from __future__ import annotations

import json
import os

import pytest
from conftest import host_snapshot, zone_state
import test_oci
from test_validation import assert_refused

bundle = test_oci.bundle  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.usefixtures("busybox")


def create_and_run(cli, bundle) -> list:
    """The OCI create and run of the bundle as it is (each a failure here)."""
    return [cli("create", "--bundle", str(bundle.path), "x125", files=True),
            cli("run", "--bundle", str(bundle.path), "x125")]


def device(path: str) -> dict:
    return {"path": path, "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}


# -- devices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path, mount", [("/proc/x", "proc mount on /proc"),
                                         ("/proc/kcore", "proc mount on /proc"),
                                         ("/dev/pts/x", "devpts mount on /dev/pts"),
                                         ("/sys/x", "sysfs mount on /sys")])
def test_a_device_where_no_node_can_be_made_is_refused_first(cli, bundle, zoned_root, path,
                                                             mount):
    """Found by the config's check, before anything is made (runc's init fails at mknod,
    and podman turns that into 127)."""
    bundle(["true"], **{"linux.devices": [device("/dev/x125"), device(path)]})
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, f'invalid linux.devices[1].path "{path}"', mount)
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


def test_a_device_through_a_symlink_into_proc_is_the_inits_to_refuse(cli, bundle, zoned_root):
    """A symlink in the rootfs leads the node into /proc: only the init sees that. It
    fails there, once the cgroup and mounts are made; still 125, the field named, and
    all of it undone."""
    (bundle.path / "rootfs" / "lnk").symlink_to("/proc")
    bundle(["true"], **{"linux.devices": [device("/lnk/x125")]})
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, 'invalid linux.devices[0].path "/lnk/x125"')
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


# -- mounts, masked and read-only paths ---------------------------------------------------

@pytest.mark.parametrize("field, change", [
    ("mounts[7] (overlay on \"/x125\")",  # ENOENT: it exited 127
     {"mounts+": {"destination": "/x125", "type": "overlay", "source": "overlay",
                  "options": ["lowerdir=/nonexistent-x125"]}}),
    ("mounts[7] (tmpfs on \"/etc/passwd/x\")",
     {"mounts+": {"destination": "/etc/passwd/x", "type": "tmpfs", "source": "tmpfs"}}),
    ('linux.readonlyPaths[0] "/etc/passwd/x"', {"linux.readonlyPaths": ["/etc/passwd/x"]}),
], ids=["overlay-lowerdir-missing", "under-a-file", "readonly-under-a-file"])
def test_a_mount_the_init_cannot_make_names_it(cli, bundle, zoned_root, field, change):
    extra = change.pop("mounts+", None)
    if extra is not None:  # after runc's 7 default mounts
        assert len(bundle.cfg["mounts"]) == 7
        change["mounts"] = bundle.cfg["mounts"] + [extra]
    bundle(["true"], **change)
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, f"invalid {field}")
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


# -- the process's rlimits, ids and OOM score -------------------------------------------

def in_a_user_namespace(bundle) -> dict:
    """Config changes for a user namespace mapping ids 0-999 to 100000-100999."""
    maps = [{"containerID": 0, "hostID": 100000, "size": 1000}]
    return {"linux.namespaces": bundle.cfg["linux"]["namespaces"] + [{"type": "user"}],
            "linux.uidMappings": maps, "linux.gidMappings": maps}


def reachable(bundle) -> None:
    """The namespace's root (host uid 100000) must reach the bundle, as with runc (as
    tests/test_oci.py's test_user_namespace)."""
    for d in [bundle.path, *bundle.path.parents][:4]:
        os.chmod(d, 0o755)


def test_a_rootfs_the_user_namespaces_root_cannot_reach_names_root_path(cli, bundle,
                                                                        zoned_root):
    """It exited 126, "cannot be run" (the bind's EACCES)."""
    os.chmod(bundle.path, 0o700)
    bundle(["true"], **in_a_user_namespace(bundle))
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, f'invalid root.path "{bundle.path}/rootfs"', "Permission denied")
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


@pytest.mark.parametrize("field, change", [
    ("process.rlimits[0] (RLIMIT_NOFILE", {"process.rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1 << 40}]}),  # above fs.nr_open
    ("process.user.uid 5000", {"process.user": {"uid": 5000, "gid": 0}, "userns": True}),
    ("process.user.gid 5000", {"process.user": {"uid": 0, "gid": 5000}, "userns": True}),
    ("process.user.additionalGids [5000]",
     {"process.user": {"uid": 0, "gid": 0, "additionalGids": [5000]}, "userns": True}),
    # lower than the creator's needs CAP_SYS_RESOURCE in the host's user namespace: EACCES
    # (it exited 126, "cannot be run")
    ("process.oomScoreAdj -1", {"process.oomScoreAdj": -1, "userns": True}),
    # the monotonic clock would go below 0 in the namespace: ERANGE
    ("linux.timeOffsets", {"linux.timeOffsets": {"monotonic": {"secs": -(1 << 40)}},
                           "timens": True}),
], ids=["rlimit-above-nr_open", "uid-unmapped", "gid-unmapped", "groups-unmapped",
        "oom-score-adj-lowered", "time-offset-out-of-range"])
def test_a_process_setting_the_kernel_refuses_names_it(cli, bundle, zoned_root, field, change):
    if change.pop("userns", False):
        change.update(in_a_user_namespace(bundle))
        reachable(bundle)
    if change.pop("timens", False):
        change["linux.namespaces"] = bundle.cfg["linux"]["namespaces"] + [{"type": "time"}]
    bundle(["true"], **change)
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, f"invalid {field}")
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


# -- the working directory ---------------------------------------------------------------

@pytest.fixture
def running(cli):
    cli("run", "-d", "--name", "x125-e", "--", "sleep", "1000", check=True)
    yield "x125-e"
    cli("rm", "-f", "x125-e")


def zone_processes(cli, name: str) -> list[str]:
    """The pids in the zone's cgroup (cgroup2's, or v1's pids hierarchy)."""
    from zoned import cgroups

    path = json.loads(cli("inspect", name, check=True).stdout)["cgroup"]
    for h in cgroups.hierarchies():
        if h.fstype == "cgroup2" or "pids" in h.controllers:
            with open(f"{h.mountpoint}{path}/cgroup.procs") as f:
                return f.read().split()
    raise AssertionError("no cgroup hierarchy with the zone's processes")


@pytest.mark.parametrize("workdir, why", [("/nonexistent", "no such directory in the zone"),
                                          ("/etc/passwd", "not a directory in the zone")])
def test_exec_in_a_missing_working_directory_is_125(cli, running, workdir, why):
    """runc: "chdir to cwd ... no such file or directory", which podman reports as 127."""
    procs = zone_processes(cli, running)
    before = host_snapshot(cli.root)
    assert_refused(cli("exec", "-w", workdir, running, "--", "true"),
                   f'invalid process.cwd "{workdir}"', why)
    assert zone_processes(cli, running) == procs and host_snapshot(cli.root) == before
    p = cli("exec", "-w", "/tmp", running, "--", "pwd")  # the zone is as it was
    assert (p.returncode, p.stdout) == (0, "/tmp\n"), p.stderr


def test_exec_process_json_with_a_missing_cwd_is_125(cli, running, tmp_path):
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["true"], "cwd": "/no/such/dir",
                                   "env": ["PATH=/bin"]}))
    assert_refused(cli("exec", "--process", str(process), running),
                   'invalid process.cwd "/no/such/dir"')


def test_a_cwd_that_cannot_be_made_is_125_and_leaves_nothing(cli, bundle, zoned_root):
    """A missing cwd is made, as runc makes it; one under a file cannot be."""
    bundle(["pwd"], **{"process.cwd": "/new/dir"})
    p = cli("run", "--bundle", str(bundle.path), "x125")
    assert (p.returncode, p.stdout) == (0, "/new/dir\n"), p.stderr
    bundle(["true"], **{"process.cwd": "/etc/passwd/x"})
    before = host_snapshot(zoned_root)
    for p in create_and_run(cli, bundle):
        assert_refused(p, 'invalid process.cwd "/etc/passwd/x"', "not a directory")
    assert host_snapshot(zoned_root) == before and zone_state(zoned_root) == []


# -- the command itself keeps 127 and 126 -------------------------------------------------

@pytest.mark.parametrize("command, code, words", [
    ("/no/such/thing", 127, 'stat /no/such/thing: no such file or directory'),
    ("no-such-thing", 127, "executable file not found in $PATH"),
    ("/etc/passwd", 126, "permission denied"),
])
def test_a_missing_or_unexecutable_command_keeps_its_code(cli, bundle, running, zoned_root,
                                                          command, code, words):
    """runc's words, which podman maps to 127 and 126; zoned's own exit codes match."""
    ps = [cli("run", "--rm", "--", command), cli("exec", running, command)]
    bundle([command])
    before = host_snapshot(zoned_root)
    ps += create_and_run(cli, bundle)
    for p in ps:
        assert p.returncode == code, (p.returncode, p.stderr)
        assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert host_snapshot(zoned_root) == before
    assert zone_state(zoned_root) == [running]
    assert os.path.isdir(os.path.join(zoned_root, running))


def test_an_executable_that_is_no_program_is_126(cli, running, tmp_path):
    """execve's ENOEXEC (no #!, another machine's binary): 126, as bash and podman give,
    from the init's exec (zoned-spawn) and from exec's."""
    prog = tmp_path / "noprog"
    prog.write_bytes(b"\x01\x02 not a program\n")
    prog.chmod(0o755)
    tmp_path.chmod(0o755)
    p = cli("run", "--rm", "-v", f"{tmp_path}:/x:ro", "--", "/x/noprog")
    assert p.returncode == 126 and "Exec format error" in p.stderr, (p.returncode, p.stderr)
    cli("exec", running, "sh", "-c", "printf '\\001\\002' > /tmp/noprog; chmod +x /tmp/noprog",
        check=True)
    p = cli("exec", running, "/tmp/noprog")
    assert p.returncode == 126 and "Exec format error" in p.stderr, (p.returncode, p.stderr)
