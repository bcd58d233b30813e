"""The checkpoint and migration packages without root: the lazy-page relay's hold (the
source's page server must not see CRIU's final close before the migration commits),
that `zoned run`'s path imports neither package (start-up time), and how a dump finds the
zone's skeleton binds."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import pytest

from zoned.migration.pages import PS_IOV_SIZE, PageRelay

pytestmark = pytest.mark.unprivileged

PS_IOV_GET = 7  # a page request; any command below 0x1000 passes (PageRelay._hold_close)
PS_IOV_FLUSH_N_CLOSE = 0x1024


def record(cmd: int, vaddr: int = 0) -> bytes:
    """A page_server_iov: {u32 cmd, u32 flags, u64 nr_pages, u64 vaddr, u64 dst_id}."""
    out = struct.pack("<IIQQQ", cmd, 0, 1, vaddr, 0)
    assert len(out) == PS_IOV_SIZE
    return out


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except BlockingIOError:
        pass
    return out


@pytest.fixture
def pair():
    relay_end, criu_end = socket.socketpair()
    yield relay_end, criu_end
    relay_end.close()
    criu_end.close()


def test_requests_pass_and_the_close_waits_for_the_commit(pair):
    relay_end, criu_end = pair
    relay = PageRelay(relay_end, hold=True)
    first, second = record(PS_IOV_GET, 0x1000), record(PS_IOV_GET, 0x2000)
    relay.from_peer(first + second[:10])      # a record split across two frames
    assert received(criu_end) == first
    relay.from_peer(second[10:])
    assert received(criu_end) == second
    close = record(PS_IOV_FLUSH_N_CLOSE)
    relay.from_peer(close + record(PS_IOV_GET))
    relay.from_peer(b"")                       # the destination's CRIU is done
    assert received(criu_end) == b""           # nothing of it before the commit
    relay.release()
    assert received(criu_end) == close + record(PS_IOV_GET)
    relay.from_peer(record(PS_IOV_GET, 0x3000))  # after the commit: straight through
    assert received(criu_end) == record(PS_IOV_GET, 0x3000)


def test_the_source_fails_its_page_server_when_the_channel_dies(pair):
    relay_end, criu_end = pair
    PageRelay(relay_end, hold=True).fail()
    assert received(criu_end) == b"\xff" * 64  # a command CRIU does not know: dump fails


def test_the_destination_passes_everything_and_the_end(pair):
    relay_end, criu_end = pair
    relay = PageRelay(relay_end, hold=False)
    relay.from_peer(record(PS_IOV_FLUSH_N_CLOSE))
    assert received(criu_end) == record(PS_IOV_FLUSH_N_CLOSE)
    relay.from_peer(b"")
    criu_end.setblocking(True)
    assert criu_end.recv(1) == b""  # EOF: shut down for writing


def test_pump_sends_what_criu_writes_and_counts_it(pair):
    relay_end, criu_end = pair
    relay, frames = PageRelay(relay_end, hold=False), []
    criu_end.sendall(b"x" * 10)
    criu_end.shutdown(socket.SHUT_WR)
    relay.pump(frames.append, 4)
    assert b"".join(frames) == b"x" * 10 and frames[-1] == b"" and relay.sent == 10


def test_the_run_path_imports_neither_package():
    code = ("import zoned.api, zoned.cli.run, zoned.runtime, zoned.gc, sys\n"
            "print(sorted(m for m in sys.modules if m.startswith(('zoned.checkpoint', "
            "'zoned.migration'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_make_skeleton_and_the_dump_finds_its_binds(tmp_path):
    """make_skeleton: an empty dir when paths are masked, a dir per hierarchy on v1 with a
    cgroup mount, nothing on v2; the dump names a mount bound from it by its root and
    device, and only such a mount."""
    from zoned.cgroups.detection import Hierarchy
    from zoned.checkpoint.dump import _skeleton_of
    from zoned.linux.mountinfo import Mount
    from zoned.runtime.steps import make_skeleton

    v1 = [Hierarchy("/sys/fs/cgroup/memory", "cgroup", "memory", ("memory",)),
          Hierarchy("/sys/fs/cgroup/unified", "cgroup2", "", ())]
    v2 = [Hierarchy("/sys/fs/cgroup", "cgroup2", "", ("memory",))]
    cfg = {"linux": {"maskedPaths": ["/proc/acpi"]},
           "mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup"}]}
    state = tmp_path / "z1"
    state.mkdir()
    got = make_skeleton(str(state), cfg, v1)
    assert got == {"empty": f"{state}/skel/empty", "cgroup": f"{state}/skel/cgroup"}
    assert sorted(os.listdir(state / "skel" / "cgroup")) == ["memory", "unified"]
    assert os.listdir(state / "skel" / "empty") == []
    assert make_skeleton(str(state), cfg, v1) == got  # again (a restore into it): the same
    assert make_skeleton(str(tmp_path / "z2"), {**cfg, "linux": {}}, v2) == {}
    assert not (tmp_path / "z2").exists()

    dev = os.stat(state / "skel").st_dev

    def mount(root: str, device: int = dev) -> Mount:
        return Mount(1, 0, os.major(device), os.minor(device), root, "/x", (), (), "ext4",
                     "/dev/x", ())
    part = _skeleton_of(str(state))
    rel = str(state)  # the state dir's path in its file system (here: the root's)
    assert part(mount(f"{rel}/skel/empty")) == "empty"
    assert part(mount(f"{rel}/skel/cgroup")) == "cgroup"
    assert part(mount(f"/z1/skel/empty")) == "empty"  # a state root that is its fs's root
    assert part(mount(f"{rel}/skel/other")) == ""
    assert part(mount(f"/z10/skel/empty")) == ""  # another zone's
    assert part(mount(f"{rel}/skel/empty", os.makedev(0, 999))) == ""  # another fs
    assert _skeleton_of(str(tmp_path / "none"))(mount("/none/skel/empty")) == ""
