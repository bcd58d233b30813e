"""`zoned rename OLD NEW` of a stopped VM, as podman renames a stopped container: its
record, VM directory, log and cgroup go to the new name, and nothing is left under the
old one. One TCG boot, one start again (~3 s each)."""
from __future__ import annotations

import json
import os
import time

import pytest

try:
    from zoned.vm.assets import kernel

    kernel()
except Exception as e:  # no guest kernel: `make setup` not run
    pytest.skip(f"no VM guest kernel: {e}", allow_module_level=True)


@pytest.fixture
def zoned(cli):
    """The CLI on this test's own state root (conftest's cli), as `zoned`."""
    return cli


def _ps(zoned) -> dict:
    return {c["id"]: c for c in json.loads(zoned("ps", "-a", "--format", "json",
                                                  check=True).stdout)}


def _stopped(zoned, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (c := _ps(zoned)[name])["status"] != "stopped":
        assert time.monotonic() < deadline, c
        time.sleep(0.1)
    return c


def test_rename_a_stopped_vm_moves_its_record_files_and_log(zoned):
    from zoned.runtime.cgroup_paths import default_cgroups_path
    from zoned.storage import zone_dir

    zoned("run", "-d", "--name", "vmsave-old", "--backend", "vm", "--memory", "160m", "--",
          "sh", "-c", "echo boot-$(cut -d' ' -f1 /proc/uptime); sleep 1000", check=True)
    deadline = time.monotonic() + 60
    while "boot-" not in zoned("logs", "vmsave-old").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    p = zoned("rename", "vmsave-old", "vmsave-new")  # running: refused, nothing changes
    assert p.returncode == 125 and "stop it first" in p.stderr
    zoned("stop", "-t", "1", "vmsave-old", check=True)
    before = _stopped(zoned, "vmsave-old")
    zoned("run", "-d", "--name", "vmsave-taken", "--backend", "vm", "--memory", "160m", "--",
          "true", check=True)
    _stopped(zoned, "vmsave-taken")
    for bad, why in (("vmsave-taken", "vmsave-taken"), ("../x", "invalid")):
        p = zoned("rename", "vmsave-old", bad)
        assert p.returncode == 125 and why in p.stderr, p.stderr
    zoned("rm", "vmsave-taken", check=True)

    zoned("rename", "vmsave-old", "vmsave-new", check=True)
    after = _ps(zoned)
    assert list(after) == ["vmsave-new"]
    assert after["vmsave-new"]["exit_code"] == before["exit_code"]
    st = json.loads(zoned("inspect", "vmsave-new", check=True).stdout)
    st = st[0] if isinstance(st, list) else st
    z = (st.get("state") or st)["zoned"]
    assert z["vm"]["dir"] == os.path.join(zoned.root, "vmsave-new", "vm")
    assert os.path.isdir(z["vm"]["dir"])
    assert z["cgroup"] == default_cgroups_path("vmsave-new", zoned.root)
    assert not os.path.exists(os.path.join(zoned.root, "vmsave-old"))
    from zoned.runtime import Runtime

    data = Runtime(zoned.root).store.data
    assert not os.path.exists(zone_dir(data, "vmsave-old"))
    first = zoned("logs", "vmsave-new", check=True).stdout
    assert first.count("boot-") == 1  # its log came along

    # It starts again under the new name (a new boot), its log going on.
    zoned("start", "vmsave-new", check=True)
    deadline = time.monotonic() + 60
    while zoned("logs", "vmsave-new").stdout.count("boot-") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cmd = open(f"/proc/{_ps(zoned)['vmsave-new']['pid']}/cmdline", "rb").read()
    assert b"/vmsave-new/vm/" in cmd and b"/vmsave-old/" not in cmd
    zoned("rm", "-f", "vmsave-new", check=True)
    assert os.listdir(zoned.root) == [] or all(n.startswith(".")
                                               for n in os.listdir(zoned.root))
    assert not os.path.exists(zone_dir(data, "vmsave-new"))
