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


def test_make_skeleton_and_the_dump_finds_its_binds(tmp_path, monkeypatch):
    """make_skeleton: the host's shared skeleton for a zone that cannot remount, the
    zone's own for one that holds CAP_SYS_ADMIN; the empty dir when paths are masked, a dir
    per hierarchy on v1 with a cgroup mount, nothing on v2. The dump names a mount bound
    from either by its root and device, and only such a mount."""
    from zoned.cgroups.detection import Hierarchy
    from zoned.checkpoint import dump
    from zoned.checkpoint.dump import skeleton_binds
    from zoned.linux.mountinfo import Mount
    from zoned.runtime import steps
    from zoned.runtime.steps import can_remount, make_skeleton

    host = tmp_path / "run" / ".cache" / "skel"  # the host's shared one (not /run/zoned's)
    for module in (steps, dump):
        monkeypatch.setattr(module, "shared_skeleton", lambda: str(host))

    v1 = [Hierarchy("/sys/fs/cgroup/memory", "cgroup", "memory", ("memory",)),
          Hierarchy("/sys/fs/cgroup/unified", "cgroup2", "", ())]
    v2 = [Hierarchy("/sys/fs/cgroup", "cgroup2", "", ("memory",))]
    plain = {"linux": {"maskedPaths": ["/proc/acpi"]},
             "mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup"}],
             "process": {"capabilities": {"bounding": ["CAP_CHOWN"]}}}
    admin = {**plain, "process": {"capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}}
    assert not can_remount(plain) and can_remount(admin)
    assert can_remount({"process": {}})  # no capabilities in the config: all may be kept
    root = tmp_path / "root"
    root.mkdir()
    z1, z2 = root / "z1", root / "z2"
    z1.mkdir(), z2.mkdir()
    shared = make_skeleton(str(z1), plain, v1)
    assert shared == {"empty": f"{host}/empty", "cgroup": f"{host}/cgroup"}
    assert sorted(os.listdir(host / "cgroup")) == ["memory", "unified"]
    assert os.listdir(host / "empty") == []
    assert make_skeleton(str(z2), plain, v1) == shared  # made once
    own = make_skeleton(str(z2), admin, v1)
    assert own == {"empty": f"{z2}/skel/empty", "cgroup": f"{z2}/skel/cgroup"}
    assert make_skeleton(str(z2), admin, v1) == own  # again (a restore into it): the same
    assert sorted(os.listdir(root)) == ["z1", "z2"]  # the state root keeps none
    assert os.listdir(host.parent) == ["skel"]  # and no temporary dir is left
    assert make_skeleton(str(tmp_path / "z3"), {**plain, "linux": {}}, v2) == {}
    os.rmdir(host / "cgroup" / "unified")  # a creator killed half-way: the next completes it
    assert make_skeleton(str(z1), plain, v1) == shared
    assert sorted(os.listdir(host / "cgroup")) == ["memory", "unified"]

    dev = os.stat(root).st_dev

    def mount(path: str, device: int = dev) -> Mount:
        return Mount(1, 0, os.major(device), os.minor(device), path, "/x", (), (), "ext4",
                     "/dev/x", ())
    part = skeleton_binds(str(z2))
    assert part(mount(f"{host}/empty")) == ("empty", f"{host}/empty")
    assert part(mount(f"{z2}/skel/cgroup")) == ("cgroup", f"{z2}/skel/cgroup")
    # the state root on a file system of its own: the bind's root is relative to it
    assert part(mount("/z2/skel/empty"))[0] == "empty"
    assert part(mount(f"{z2}/skel/other")) == ("", "")
    assert part(mount(f"{z1}/skel/empty")) == ("", "")  # another zone's
    assert part(mount("/")) == ("", "")
    assert part(mount(f"{z2}/skel/empty", os.makedev(0, 999))) == ("", "")  # another fs


# -- the cgroup yard zoned hands CRIU (zoned.checkpoint.cgroup_yard) ------------------------
def _h(mountpoint, fstype, options):
    from zoned.cgroups.detection import Hierarchy

    return Hierarchy(mountpoint, fstype, options, tuple(options.split(",")) if options else ())


HYBRID = [_h("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct"),
          _h("/sys/fs/cgroup/memory", "cgroup", "memory"),
          _h("/sys/fs/cgroup/systemd", "cgroup", "name=systemd"),
          _h("/sys/fs/cgroup/unified", "cgroup2", "")]


def test_the_yard_names_each_hierarchy_as_criu_looks_for_it():
    """CRIU opens YARD/<controllers> (name= dropped, "unified" for cgroup2) on dump, and
    on restore joins the image's names the same way: each dir is the host's mount."""
    from zoned.checkpoint.cgroup_yard import plan_for

    lines = ["12:cpu,cpuacct:/user.slice", "4:memory:/", "1:name=systemd:/init.scope",
             "0::/init.scope", ""]
    assert plan_for(lines, HYBRID) == (
        ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"), ("memory", "/sys/fs/cgroup/memory"),
        ("systemd", "/sys/fs/cgroup/systemd"), ("unified", "/sys/fs/cgroup/unified"))
    # A pure v2 host: one line, one dir.
    assert plan_for(["0::/"], [_h("/sys/fs/cgroup", "cgroup2", "")]) == \
        (("unified", "/sys/fs/cgroup"),)


@pytest.mark.parametrize("lines", [
    ["3:pids:/"],                          # a hierarchy this host has not mounted
    ["5:name=foo,cpu:/"],                  # named with controllers: CRIU names it two ways
    ["5:name=..:/"], ["5:name=a/b:/"],     # no directory name, or one with a slash
    ["garbage"],
], ids=["unmounted", "named-with-controllers", "dotdot", "slash", "garbage"])
def test_no_yard_when_a_line_cannot_be_placed(lines):
    """Then CRIU mounts its own hierarchies, as without a yard: slower, never wrong."""
    from zoned.checkpoint.cgroup_yard import args, plan_for

    yard = plan_for(["4:memory:/", *lines], HYBRID)
    assert yard == () and args(yard) == []


def test_criu_without_its_helper_is_one_line_naming_it(monkeypatch, tmp_path):
    """criu runs only through zoned-criuexec (its mount namespace); without it, one line."""
    from zoned.checkpoint import criu
    from zoned.errors import ZonedError

    missing = str(tmp_path / "zoned-criuexec")
    monkeypatch.setattr(criu, "CRIU_EXEC", missing)
    with pytest.raises(ZonedError, match=r"zoned-criuexec is missing \(run `make setup`\)"):
        criu.criu_exec([str(tmp_path / "criu"), "dump"], yard=(("pids", "/x"),))
    # a criu with nothing to set up (no kdat cache for a binary that is not there) runs
    # as it is
    assert criu.criu_exec([str(tmp_path / "criu"), "--version"]) == \
        [str(tmp_path / "criu"), "--version"]


def test_a_frame_longer_than_any_zoned_sends_is_refused_unread():
    """A peer's frame header claiming 4 GiB is a protocol error, not 4 GiB to buffer."""
    from zoned.errors import ZonedError
    from zoned.migration.transport import CTRL, Channel, PipeStream

    r, w = os.pipe()
    try:
        os.write(w, struct.pack("!BI", CTRL, 0xFFFFFFFF) + b"x" * 100)
        ch = Channel(PipeStream(r, w), "peer")
        with pytest.raises(ZonedError, match="a frame of 4294967295 bytes"):
            ch.recv_msg()
    finally:
        os.close(r)
        os.close(w)


def test_recv_msg_times_out_on_a_silent_tls_peer():
    """Before the reader thread runs (the hello, the commit), a timeout given to
    recv_msg applies: a peer that says nothing does not hold a session for ever."""
    import time

    from zoned.migration.transport import Channel, PeerGone

    a, b = socket.socketpair()
    try:
        class Stream:  # what TLSStream gives the channel: reads, and a timeout to set
            def read(self, n):
                return a.recv(n)

            def settimeout(self, t):
                a.settimeout(t)

        t0 = time.monotonic()
        with pytest.raises(PeerGone, match="no answer in 1 s"):
            Channel(Stream(), "peer").recv_msg(timeout=1)
        assert time.monotonic() - t0 < 5
        assert a.gettimeout() is None  # back to blocking for the rest of the session
    finally:
        a.close()
        b.close()


def test_relocation_key_opens_no_name_another_user_could_plant(tmp_path):
    """The audit's attack: another user pre-creates the temp names `relocation-key` would
    use (a file 0666 they keep a second link to, a symlink to a file of theirs) in the
    key's directory. The key must be a new file of ours, 0600, and theirs untouched."""
    import stat

    from zoned.migration.transport import make_key

    d = tmp_path / "pf-keydir"
    d.mkdir()
    d.chmod(0o1777)  # a directory others can write into, as /tmp
    key = d / "relocation.pem"
    planted = d / f"relocation.pem.{os.getpid()}.tmp"  # the old predictable name
    planted.touch()
    planted.chmod(0o666)
    os.link(planted, d / "attacker-copy")  # the attacker keeps the inode
    canary = tmp_path / "pf-canary"
    canary.write_text("canary\n")
    os.symlink(canary, f"{planted}.crt")
    if os.geteuid() == 0:
        os.chown(planted, 65534, 65534, follow_symlinks=False)
    make_key(str(key))
    st = os.lstat(key)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid() and st.st_nlink == 1
    assert st.st_ino != os.stat(d / "attacker-copy").st_ino
    assert (d / "attacker-copy").read_bytes() == b""
    assert canary.read_text() == "canary\n"
    pem = key.read_text()
    assert "PRIVATE KEY-----" in pem and "CERTIFICATE-----" in pem
    # nothing of ours is left behind, and a second key never replaces the first
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["relocation.pem", planted.name, planted.name + ".crt", "attacker-copy"])
    from zoned.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        make_key(str(key))
    assert os.lstat(key).st_ino == st.st_ino
