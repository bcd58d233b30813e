"""Issue 10, items 4, 8, 9, 12, 13 and 15, from the outside: the real `zoned` command,
real zones and OCI bundles, read back through the host's cgroupfs and /proc.

Bad input must give exit 125, one line on stderr naming the field, and leave nothing
behind; the pure-logic side (the full type fuzz of config.json) is in
tests/test_validation_unit.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import ZONED, host_snapshot, zone_state
import test_oci

from zoned import cgroups

bundle = test_oci.bundle  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.usefixtures("busybox")


# -- helpers ---------------------------------------------------------------------------------

def controller_dir(controller: str, path: str) -> Path:
    """The host directory of cgroup `path` in the hierarchy holding `controller`."""
    for h in cgroups.hierarchies():
        if controller in h.controllers or (h.fstype == "cgroup2" and cgroups.detect() == "v2"):
            return Path(h.mountpoint + path)
    raise AssertionError(f"no {controller} hierarchy")


def cgroup_of(cli, name: str) -> str:
    return json.loads(cli("inspect", name, check=True).stdout)["cgroup"]


def oci_run(cli, bundle, cid="v1"):
    return cli("run", "--bundle", str(bundle.path), cid)


def assert_refused(p, *words: str) -> None:
    """Exit 125 and exactly one line on stderr, `zoned: ...`, containing every word."""
    assert p.returncode == 125, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoned: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "internal error" not in lines[0] and "Traceback" not in p.stderr


def state_left(root: str) -> list[str]:
    return zone_state(root)


# -- item 4: sysctls outside the zone's namespaces are refused ---------------------------

def _sysctl(key: str) -> str:
    return Path("/proc/sys", key.replace(".", "/")).read_text().strip()


@pytest.mark.parametrize("key, why", [
    ("vm.swappiness", "not in a separate kernel namespace"),
    ("kernel.core_pattern", "not in a separate kernel namespace"),
    ("kernel.hostname", "conflicts with the config's hostname"),
])
def test_host_sysctl_is_refused_before_anything_is_made(cli, bundle, zoned_root, key, why):
    # the host's own value: should a regression write it, nothing on the host changes
    value = _sysctl(key)
    before = host_snapshot(zoned_root)
    bundle(["true"], **{"linux.sysctl": {key: value}})
    p = oci_run(cli, bundle)
    assert_refused(p, "linux.sysctl", key, why)
    assert host_snapshot(zoned_root) == before and state_left(zoned_root) == []
    assert _sysctl(key) == value


def test_net_sysctl_needs_the_zones_own_netns(cli, bundle, zoned_root):
    host = _sysctl("net.ipv4.ip_forward")
    value = "1" if host == "0" else "0"
    nets = [n for n in bundle.cfg["linux"]["namespaces"] if n["type"] != "network"]
    # the host's own value, so that a regression writing it changes nothing
    bundle(["true"], **{"linux.sysctl": {"net.ipv4.ip_forward": host},
                        "linux.namespaces": nets})
    assert_refused(oci_run(cli, bundle), "net.ipv4.ip_forward", "host network namespace")
    assert state_left(zoned_root) == []
    # with a network namespace of its own: set inside, the host's value unchanged
    bundle(["cat", "/proc/sys/net/ipv4/ip_forward"],
           **{"linux.sysctl": {"net.ipv4.ip_forward": value}})
    p = oci_run(cli, bundle)
    assert (p.returncode, p.stdout.strip()) == (0, value), p.stderr
    assert _sysctl("net.ipv4.ip_forward") == host


def test_ipc_sysctl_needs_an_ipc_namespace(cli, bundle, zoned_root):
    nons = [n for n in bundle.cfg["linux"]["namespaces"] if n["type"] != "ipc"]
    bundle(["true"], **{"linux.sysctl": {"kernel.msgmax": _sysctl("kernel.msgmax")},
                        "linux.namespaces": nons})
    assert_refused(oci_run(cli, bundle), "kernel.msgmax", "ipc")
    assert state_left(zoned_root) == []


# -- item 8: a default pids limit ------------------------------------------------------------

def test_run_has_2048_pids_by_default_read_from_the_host(cli):
    cli("run", "-d", "--name", "p", "--", "sleep", "1000", check=True)
    assert (controller_dir("pids", cgroup_of(cli, "p")) / "pids.max").read_text() == "2048\n"
    cli("run", "-d", "--name", "u", "--pids-limit", "-1", "--", "sleep", "1000", check=True)
    assert (controller_dir("pids", cgroup_of(cli, "u")) / "pids.max").read_text() == "max\n"
    cli("run", "-d", "--name", "z", "--pids-limit", "0", "--", "sleep", "1000", check=True)
    assert (controller_dir("pids", cgroup_of(cli, "z")) / "pids.max").read_text() == "max\n"


def test_api_zone_has_2048_pids_by_default(zone):
    c = zone(["sleep", "1000"])
    path = c.state["zoned"]["cgroup"]
    assert (controller_dir("pids", path) / "pids.max").read_text() == "2048\n"


def test_oci_bundle_keeps_its_own_pids_config(cli, bundle):
    bundle(["cat", "/sys/fs/cgroup/pids/pids.max"] if cgroups.detect() != "v2"
           else ["cat", "/sys/fs/cgroup/pids.max"])
    p = oci_run(cli, bundle)
    assert (p.returncode, p.stdout) == (0, "max\n"), p.stderr


def test_help_documents_the_default():
    out = subprocess.run([ZONED, "run", "--help"], capture_output=True, text=True).stdout
    assert "--pids-limit" in out and "2048" in out and "-1" in out


def test_fork_bomb_stops_at_the_limit_and_the_host_survives(cli):
    cli("run", "-d", "--name", "bomb", "--pids-limit", "50", "--", "sleep", "1000",
        check=True)
    d = controller_dir("pids", cgroup_of(cli, "bomb"))
    # bounded: 200 forks at most, each a sleeper, in a zone allowed 50 processes
    p = cli("exec", "bomb", "--", "sh", "-c",
            "i=0; while [ $i -lt 200 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done")
    assert "can't fork" in p.stderr or "Resource temporarily unavailable" in p.stderr
    assert 45 <= int((d / "pids.current").read_text()) <= 50  # it filled up, no further
    events = d / "pids.events"
    if events.exists():  # forks were refused at the limit
        assert int(events.read_text().split()[1]) > 0
    assert subprocess.run(["true"]).returncode == 0  # the host still forks
    assert cli("rm", "-f", "bomb").returncode == 0


# -- item 9: ids, env, cpus ------------------------------------------------------------------

@pytest.mark.parametrize("user, field", [
    ({"uid": -1, "gid": 0}, "process.user.uid"),
    ({"uid": 4294967295, "gid": 0}, "process.user.uid"),  # (uid_t)-1: "unchanged" = root
    ({"uid": 0, "gid": -1}, "process.user.gid"),
    ({"uid": 0, "gid": 0, "additionalGids": [-1]}, "process.user.additionalGids[0]"),
])
def test_negative_or_reserved_ids_are_refused(cli, bundle, zoned_root, user, field):
    bundle(["id", "-u"], **{"process.user": user})
    assert_refused(oci_run(cli, bundle), field)
    assert state_left(zoned_root) == []


def test_env_as_a_string_is_refused(cli, bundle, zoned_root):
    bundle(["true"], **{"process.env": "PATH=/bin"})
    assert_refused(oci_run(cli, bundle), "process.env", "expected a list")
    assert state_left(zoned_root) == []


def test_tiny_cpus_is_refused_and_the_minimum_is_enforced(cli, zoned_root):
    before = host_snapshot(zoned_root)
    assert_refused(cli("run", "--rm", "--cpus", "0.000001", "--", "true"), "--cpus", "1000us")
    assert host_snapshot(zoned_root) == before
    cli("run", "-d", "--name", "c", "--cpus", "0.01", "--", "sleep", "1000", check=True)
    d = controller_dir("cpu", cgroup_of(cli, "c"))
    quota = (d / "cpu.cfs_quota_us").read_text() if (d / "cpu.cfs_quota_us").exists() \
        else (d / "cpu.max").read_text().split()[0]
    assert int(quota) == 1000


# -- item 12: relative cgroupsPath, every capability ---------------------------------------

def test_relative_cgroups_path_goes_below_zoneds_own_cgroup(cli, bundle, zoned_root):
    rel = f"zoned-test-rel-{uuid.uuid4().hex[:8]}"
    base = cgroups.own_cgroup()
    expected = os.path.normpath(f"{base.rstrip('/')}/{rel}/ctr")
    bundle(["sleep", "1000"], **{"linux.cgroupsPath": f"../../{rel}/ctr"})
    try:
        p = cli("create", "--bundle", str(bundle.path), "rel", files=True)
        assert p.returncode == 0, p.stderr
        st = json.loads(cli("state", "rel").stdout)
        procs = (controller_dir("pids", expected) / "cgroup.procs").read_text().split()
        assert str(st["pid"]) in procs
        assert cli("delete", "-f", "rel").returncode == 0
        assert not controller_dir("pids", expected).exists()
    finally:
        cli("delete", "-f", "rel")
        cgroups.remove_if_empty(os.path.dirname(expected))
    assert not controller_dir("pids", os.path.dirname(expected)).exists()


PODMAN_PRIVILEGED_CAPS = [  # what podman 4.3 --privileged writes (every cap it knows)
    "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT", "CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM",
]


def _cap_line(out: str, name: str) -> int:
    return next(int(ln.split()[1], 16) for ln in out.splitlines() if ln.startswith(name + ":"))


def test_every_capability_of_a_podman_privileged_config(cli, bundle):
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    caps = {k: PODMAN_PRIVILEGED_CAPS for k in ("bounding", "effective", "permitted")}
    bundle(["grep", "^Cap", "/proc/self/status"], **{"process.capabilities": caps})
    p = oci_run(cli, bundle)
    assert p.returncode == 0, p.stderr
    from zoned.child.security import CAP_NUMBERS

    listed = sum(1 << CAP_NUMBERS[c] for c in PODMAN_PRIVILEGED_CAPS if CAP_NUMBERS[c] <= last)
    ours = _cap_line(Path("/proc/self/status").read_text(), "CapBnd")  # a sandbox has less
    assert listed & (7 << 38) == 7 << 38 or last < 40  # PERFMON, BPF, CHECKPOINT_RESTORE
    assert _cap_line(p.stdout, "CapBnd") == listed & ours
    assert _cap_line(p.stdout, "CapEff") == listed & ours  # root keeps them across exec
    assert p.stderr == ""


def test_capabilities_the_kernel_lacks_are_dropped_with_a_warning(cli, bundle):
    caps = {k: ["CAP_KILL", "CAP_CHECKPOINT_RESTORE", "CAP_FROM_THE_FUTURE"]
            for k in ("bounding", "effective", "permitted")}
    bundle(["grep", "^CapBnd", "/proc/self/status"], **{"process.capabilities": caps})
    p = oci_run(cli, bundle)
    assert p.returncode == 0, p.stderr
    assert _cap_line(p.stdout, "CapBnd") == (1 << 5) | (1 << 40)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "ignoring unknown or unavailable capabilities" in lines[0]
    assert "CAP_FROM_THE_FUTURE" in lines[0] and "CHECKPOINT" not in lines[0]


# -- item 13: every reported bad input: 125, one line naming the field, nothing left ---------

BAD_CONFIGS = {
    "array": ([], "top level"),
    "linux": ({"linux": "x"}, "linux"),
    "mounts": ({"mounts": {"destination": "/x"}}, "mounts"),
    "caps": ({"process.capabilities": ["CAP_KILL"]}, "process.capabilities"),
    "namespaces": ({"linux.namespaces": {"type": "pid"}}, "linux.namespaces"),
    "rlimit": ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": "abc"}]},
               "process.rlimits[0].hard"),
    "nsname": ({"linux.namespaces": [{"type": "pidd"}]}, "linux.namespaces[0].type"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_json(cli, bundle, zoned_root, case):
    changes, field = BAD_CONFIGS[case]
    if isinstance(changes, list):
        bundle(None, raw=changes)
    else:
        bundle(["true"], **changes)
    before = host_snapshot(zoned_root)
    for p in (cli("create", "--bundle", str(bundle.path), "bad", files=True),
              oci_run(cli, bundle)):
        assert_refused(p, field)
    assert host_snapshot(zoned_root) == before and state_left(zoned_root) == []


@pytest.mark.parametrize("args, words", [
    (["run", "--rm", "--image", "../../../../etc", "--", "true"], ["--image"]),
    (["run", "--rm", "--name", "n" * 65, "--", "true"], ["container name", "at most 64"]),
    (["run", "--rm", "--name", "n" * 128, "--", "true"], ["container name", "at most 64"]),
    (["run", "--rm", "--memory", "1", "--", "true"], ["--memory", "6MB"]),
    (["run", "--rm", "-u", "99999999999", "--", "true"], ["--user", "99999999999"]),
    (["run", "--rm", "--pids-limit", "abc", "--", "true"], ["--pids-limit"]),
    (["run", "--rm", "--pids-limit", "-7", "--", "true"], ["--pids-limit"]),
    (["run", "--rm", "--cpus", "abc", "--", "true"], ["--cpus"]),
    (["start", "ghost"], ["ghost"]),
    (["state", "ghost"], ["ghost"]),
    (["rm", "ghost"], ["ghost"]),
    (["run", "--no-such-flag", "--", "true"], ["--no-such-flag"]),
])
def test_bad_input_is_125_one_line_nothing_left(cli, zoned_root, args, words):
    before = host_snapshot(zoned_root)
    assert_refused(cli(*args), *words)
    assert host_snapshot(zoned_root) == before and state_left(zoned_root) == []


def test_bad_input_to_a_running_zone(cli, zoned_root):
    cli("run", "-d", "--name", "k", "--", "sleep", "1000", check=True)
    before = host_snapshot(zoned_root)
    assert_refused(cli("kill", "k", "99"), "signal", "99")
    assert_refused(cli("update", "--pids-limit", "abc", "k"), "--pids-limit", "abc")
    assert_refused(cli("update", "--memory", "1", "k"), "--memory", "6MB")
    assert_refused(cli("update", "--cpu-quota", "x", "k"), "--cpu-quota")
    assert host_snapshot(zoned_root) == before
    assert json.loads(cli("state", "k").stdout)["status"] == "running"  # untouched
    d = controller_dir("pids", cgroup_of(cli, "k"))
    assert (d / "pids.max").read_text() == "2048\n"
    assert cli("update", "--pids-limit", "77", "k").returncode == 0
    assert (d / "pids.max").read_text() == "77\n"


def test_exec_process_json_of_the_wrong_shape(cli, tmp_path):
    cli("run", "-d", "--name", "e", "--", "sleep", "1000", check=True)
    proc = tmp_path / "process.json"
    proc.write_text(json.dumps({"args": ["true"], "cwd": "/", "env": "A=b"}))
    assert_refused(cli("exec", "-p", str(proc), "e"), "process.env")
    proc.write_text('{"args": ["true"], "cwd": "/",')  # not JSON at all
    assert_refused(cli("exec", "-p", str(proc), "e"), "--process", "not valid JSON")


def test_image_build_of_a_tar_is_one_line(cli, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "blob").write_bytes(bytes(range(256)) * 64)  # not UTF-8
    tar = tmp_path / "some.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(tmp_path / "src"), "."], check=True)
    images = tmp_path / "images"
    p = subprocess.run([ZONED, "--images", str(images), "image", "build", str(tar)],
                       capture_output=True, text=True)
    assert_refused(p, str(tar), "not a text file")
    assert not images.exists() or list(images.iterdir()) in ([], [images / ".lock"])


def test_container_errors_keep_their_own_codes(cli):
    assert cli("run", "--rm", "--", "sh", "-c", "exit 3").returncode == 3
    assert cli("run", "--rm", "--", "/no/such/thing").returncode == 127
    assert cli("run", "--rm", "--", "/etc/passwd").returncode == 126


def test_a_sample_of_wrong_types_through_the_real_cli(cli, bundle, zoned_root):
    """A bounded fuzz through `zoned create`: each wrong-typed field is refused with 125
    and one line naming it, and leaves nothing (the full fuzz runs in-process in
    tests/test_validation_unit.py)."""
    cases = [("process.terminal", "yes"), ("process.user.uid", "0"), ("process.args", "sh"),
             ("process.cwd", 7), ("root.readonly", 1), ("hostname", ["h"]),
             ("linux.resources.memory.limit", "1g"), ("linux.resources.pids.limit", 1.5),
             ("linux.maskedPaths", "/proc/kcore"), ("linux.sysctl", ["a=b"]),
             ("linux.cgroupsPath", 5), ("hooks.prestart", {"path": "/bin/true"}),
             ("annotations", ["a"]), ("process.oomScoreAdj", "1"),
             ("linux.seccomp.defaultAction", 1)]
    before = host_snapshot(zoned_root)
    for path, value in cases:
        bundle(["true"], **{path: value})
        assert_refused(cli("create", "--bundle", str(bundle.path), "fz", files=True), path)
    assert host_snapshot(zoned_root) == before and state_left(zoned_root) == []


# -- item 15: a reader that goes away ------------------------------------------------------

def test_closed_pipe_ends_quietly_with_141(cli):
    cli("run", "-d", "--name", "pp", "--", "sleep", "1000", check=True)
    for args in (["ps", "-a"], ["inspect", "pp"], ["ps", "-a", "--format", "json"]):
        r, w = os.pipe()
        os.close(r)  # the reader is gone before zoned writes anything
        try:
            p = subprocess.run([ZONED, "--root", cli.root, *args], stdout=w,
                               stderr=subprocess.PIPE, text=True, timeout=30)
        finally:
            os.close(w)
        assert (p.returncode, p.stderr) == (141, ""), args


def test_head_in_a_shell_pipe(cli):
    cli("run", "-d", "--name", "hp", "--", "sleep", "1000", check=True)
    p = subprocess.run(["bash", "-c", f"{ZONED} --root {cli.root} inspect hp | head -1; "
                        "echo status=${PIPESTATUS[0]}"],
                       capture_output=True, text=True, timeout=30)
    assert p.stdout.splitlines()[0] == "{"
    assert p.stdout.splitlines()[-1] in ("status=0", "status=141")
    assert p.stderr == ""
