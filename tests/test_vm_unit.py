"""zoned.vm's pure logic: QEMU argv, the cpio writer, guest config records, agent frames."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from zoned.errors import ConfigError, ZonedError
from zoned.vm.agent import decode_frames, encode_frame
from zoned.vm.config import (MachineSpec, Nic, Volume, decode_records, encode_records, guest_config,
                             process_records)
from zoned.vm.cpio import CpioWriter, read_newc
from zoned.vm.machine import BootFiles, VMPaths, argv_for, kernel_cmdline

pytestmark = pytest.mark.unprivileged

BOOT = BootFiles("/k/vmlinux", "/vm/initrd", "/d/img.squashfs")


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_machine_memory_cpus_and_accel():
    s = MachineSpec(image="busybox", argv=["true"], memory_mib=384, vcpus=3, tb_size_mib=24)
    argv = argv_for(s, VMPaths("/vm"), BOOT, "tcg", tsc_khz=2596000)
    assert argv[0] == "qemu-system-x86_64"
    assert opt(argv, "-M") == ["microvm,x-option-roms=off"]
    assert opt(argv, "-accel") == ["tcg,tb-size=24"]
    assert opt(argv, "-m") == ["384"] and opt(argv, "-smp") == ["3"]
    assert opt(argv, "-kernel") == ["/k/vmlinux"] and opt(argv, "-initrd") == ["/vm/initrd"]
    assert "tsc_early_khz=2596000" in opt(argv, "-append")[0].split()
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv)
    assert opt(argv, "-drive") == ["file=/d/img.squashfs,if=none,id=root,format=raw,readonly=on"]
    assert opt(argv, "-qmp") == ["unix:/vm/qmp.sock,server=on,wait=off"]
    assert opt(argv, "-sandbox") == [
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    kvm = argv_for(s, VMPaths("/vm"), BOOT, "kvm", tsc_khz=2596000)
    assert opt(kvm, "-accel") == ["kvm"]
    assert "tsc_early_khz" not in opt(kvm, "-append")[0]


def test_argv_stdio_ports_and_tty():
    s = MachineSpec(image="busybox", argv=["true"])
    argv = argv_for(s, VMPaths("/vm"), BOOT, "tcg", stdout_fd=1, stderr_fd=7)
    chardevs = opt(argv, "-chardev")
    assert "stdio,id=stdin,signal=off" in chardevs
    assert "file,id=stdout,path=/proc/self/fd/1,append=on" in chardevs
    assert "file,id=stderr,path=/proc/self/fd/7,append=on" in chardevs
    assert "socket,id=agent,path=/vm/agent.sock,server=on,wait=off" in chardevs
    names = [d for d in opt(argv, "-device") if d.startswith("virtserialport")]
    assert [d.split("name=")[1].split(",")[0] for d in names] == [
        "zoned.ctl", "zoned.agent", "zoned.stdin", "zoned.stdout", "zoned.stderr"]
    no_in = MachineSpec(image="busybox", argv=["true"], stdin=False)
    assert not any("zoned.stdin" in d for d in opt(argv_for(no_in, VMPaths("/vm"), BOOT, "tcg"),
                                                   "-device"))
    assert ("stdin", "0") in decode_records(guest_config(no_in))
    tty = argv_for(MachineSpec(image="busybox", argv=["sh"], tty=True), VMPaths("/vm"), BOOT,
                   "tcg")
    assert "stdio,id=con,signal=off" in opt(tty, "-chardev")
    assert "virtconsole,bus=vser.0,chardev=con,nr=0" in opt(tty, "-device")
    assert not any("zoned.stdout" in d for d in opt(tty, "-device"))


def test_argv_nics():
    s = MachineSpec(image="busybox", argv=["true"], nics=[
        Nic("zvmtap0", "52:54:00:00:00:01", "10.1.0.2", 24, "10.1.0.1"),
        Nic("zvmtap1", "52:54:00:00:00:02")])
    argv = argv_for(s, VMPaths("/vm"), BOOT, "tcg")
    assert opt(argv, "-netdev") == ["tap,id=net0,ifname=zvmtap0,script=no,downscript=no",
                                    "tap,id=net1,ifname=zvmtap1,script=no,downscript=no"]
    assert "virtio-net-device,netdev=net1,mac=52:54:00:00:00:02" in opt(argv, "-device")


def test_argv_refuses_what_qemu_would_misparse():
    s = MachineSpec(image="busybox", argv=["true"])
    with pytest.raises(ConfigError, match="socket path"):
        argv_for(s, VMPaths("/x" * 60), BOOT, "tcg")
    with pytest.raises(ConfigError, match="','"):
        argv_for(s, VMPaths("/vm,evil=1"), BOOT, "tcg")
    with pytest.raises(ConfigError, match="accel"):
        argv_for(s, VMPaths("/vm"), BOOT, "auto")


@pytest.mark.parametrize("field, kw, words", [
    ("memory", {"memory_mib": 64}, "invalid memory 64 MiB"),
    ("cpus", {"vcpus": 0}, "invalid cpus 0"),
    ("accel", {"accel": "hvf"}, "invalid accel"),
    ("env", {"env": ["NOVALUE"]}, "invalid env"),
    ("workdir", {"cwd": "tmp"}, "invalid workdir"),
    ("hostname", {"hostname": "a b"}, "invalid hostname"),
    ("command", {"argv": []}, "invalid command"),
    ("nul", {"argv": ["a\0b"]}, "contains NUL"),
    ("mac", {"nics": [Nic("t0", "52:54:00:00:00")]}, "invalid nic mac"),
    ("ip", {"nics": [Nic("t0", "52:54:00:00:00:01", "10.0.0.300")]}, "invalid nic address"),
    ("dns", {"dns": ["nameserver"]}, "invalid dns"),
])
def test_spec_validation_names_the_field(field, kw, words):
    kw.setdefault("argv", ["true"])
    with pytest.raises(ConfigError, match=words):
        MachineSpec(image="busybox", **kw).validate()


def test_memory_floor_is_accepted():
    MachineSpec(image="busybox", argv=["true"], memory_mib=128).validate()


def test_records_round_trip_any_byte_but_nul():
    pairs = [("arg", "a=b"), ("arg", ""), ("env", "X=line1\nline2"), ("hosts", "é ü\t")]
    assert decode_records(encode_records(pairs)) == pairs
    with pytest.raises(ValueError):
        encode_records([("arg", "a\0b")])
    with pytest.raises(ValueError):
        encode_records([("k=v", "x")])


def test_guest_config_contents():
    s = MachineSpec(image="busybox", argv=["sh", "-c", "x"], env=["A=1"], cwd="/w", uid=5,
                    gid=6, groups=[10, 11], hostname="h1", dns=["10.0.0.1", "1.1.1.1"], hosts="127.0.0.1 h1\n",
                    nics=[Nic("t0", "52:54:00:00:00:01", "10.0.0.2", 16, ""),
                          Nic("t1", "52:54:00:00:00:02")])
    pairs = decode_records(guest_config(s))
    assert pairs[:2] == [("arg", "sh"), ("arg", "-c")]
    d = dict(pairs)
    assert (d["cwd"], d["uid"], d["gid"], d["tty"], d["hostname"]) == ("/w", "5", "6", "0", "h1")
    assert d["resolv"] == "nameserver 10.0.0.1\nnameserver 1.1.1.1\n"
    assert d["hosts"] == "127.0.0.1 h1\n"
    assert [v for k, v in pairs if k == "group"] == ["10", "11"]
    assert [v for k, v in pairs if k == "nic"] == ["52:54:00:00:00:01 10.0.0.2/16 -"]
    assert process_records(["x"], [], tty=True, rows=24, cols=80)[-2:] == [("rows", "24"),
                                                                          ("cols", "80")]


def test_cpio_round_trip_and_concatenation():
    w = CpioWriter()
    w.directory("lib")
    w.file("lib/a.ko", b"\x7fELF" + bytes(range(256)) * 3, 0o644)
    w.file("init", b"#!x", 0o755)
    w.symlink("bin", "lib")
    second = CpioWriter()
    second.file("zoned/config", b"arg=true\0")
    entries = read_newc(bytes(w) + bytes(second))
    assert [(n, stat.S_IFMT(m), stat.S_IMODE(m)) for n, m, _ in entries] == [
        ("lib", stat.S_IFDIR, 0o755), ("lib/a.ko", stat.S_IFREG, 0o644),
        ("init", stat.S_IFREG, 0o755), ("bin", stat.S_IFLNK, 0o777),
        ("zoned/config", stat.S_IFREG, 0o644)]
    assert entries[1][2] == b"\x7fELF" + bytes(range(256)) * 3
    assert entries[3][2] == b"lib"
    assert len(bytes(w)) % 4 == 0


CPIO = (["cpio", "-id", "--quiet"] if shutil.which("cpio") else
        ["busybox", "cpio", "-id"] if shutil.which("busybox") else None)


@pytest.mark.skipif(CPIO is None, reason="no cpio tool (nor busybox) to cross-check with")
def test_cpio_is_what_a_cpio_tool_reads(tmp_path):
    w = CpioWriter()
    w.directory("d")
    w.file("d/f", b"hello\n", 0o600)
    w.symlink("l", "d/f")
    subprocess.run(CPIO, input=bytes(w), cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "d/f").read_bytes() == b"hello\n"
    assert stat.S_IMODE(os.stat(tmp_path / "d/f").st_mode) == 0o600
    assert os.readlink(tmp_path / "l") == "d/f"


def test_agent_frames_round_trip_and_partial():
    data = encode_frame("E", b"arg=ls\0") + encode_frame("C") + encode_frame("o", b"x" * 70000)
    buf = bytearray(data[:-10])
    assert decode_frames(buf) == [("E", b"arg=ls\0"), ("C", b"")]
    buf += data[-10:]
    assert decode_frames(buf) == [("o", b"x" * 70000)]
    assert buf == bytearray()
    with pytest.raises(ValueError):
        encode_frame("I", b"x" * ((1 << 20) + 1))
    with pytest.raises(ZonedError):
        decode_frames(bytearray(b"o\xff\xff\xff\xff"))


def test_agent_exec_waits_for_the_guest_to_know_it_is_there(tmp_path):
    """Right after a connect the guest may take the client for gone and drop its answers
    (the CI flake: an exec waited 120 s for a P the guest had dropped). A guest that drops
    the first hello, and sends a former client's output, still gives this exec its own
    output and exit code."""
    import socket
    import threading

    from zoned.vm.agent import Agent

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "agent.sock"))
    server.listen(1)
    seen = []

    def guest():
        conn, _ = server.accept()
        buf = bytearray()
        hellos = 0
        conn.sendall(encode_frame("o", b"old client's\n") + encode_frame("x", b"9"))
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            for kind, _body in decode_frames(buf):
                seen.append(kind)
                if kind == "H":
                    hellos += 1
                    if hellos > 1:  # the first one came "too early": no answer
                        conn.sendall(encode_frame("h"))
                elif kind == "E":
                    conn.sendall(encode_frame("h") + encode_frame("P", b"42")
                                 + encode_frame("o", b"mine\n") + encode_frame("x", b"3"))
        conn.close()

    t = threading.Thread(target=guest, daemon=True)
    t.start()
    r, w = os.pipe()
    with Agent(str(tmp_path), timeout=10, verify_peer=False) as agent:
        assert agent.exec(["true"], stdio=(None, w, None)) == 3
    os.close(w)
    assert os.read(r, 100) == b"mine\n"
    t.join(5)
    assert seen[:2] == ["H", "H"] and "E" in seen and seen.index("E") > 1
    server.close()


def test_kernel_cmdline_fits_and_ends_qemu_on_panic():
    line = kernel_cmdline("tcg", 2_000_000)
    assert len(line) < 2048
    assert "panic=-1" in line.split() and "console=ttyS0" in line.split()


def test_volumes_argv_records_and_checks(tmp_path):
    s = MachineSpec(image="busybox", argv=["true"], volumes=[
        Volume(str(tmp_path), "/data/"), Volume(str(tmp_path), "/ro dir", readonly=True)])
    s.validate()
    argv = argv_for(s, VMPaths("/vm"), BOOT, "tcg")
    assert opt(argv, "-fsdev") == [
        f"local,id=vol0,path={tmp_path},security_model=passthrough",
        f"local,id=vol1,path={tmp_path},security_model=passthrough,readonly=on"]
    assert "virtio-9p-device,fsdev=vol1,mount_tag=zvol1" in opt(argv, "-device")
    assert [v for k, v in decode_records(guest_config(s)) if k == "volume"] == [
        "zvol0 rw /data", "zvol1 ro /ro dir"]
    for bad in (Volume(str(tmp_path / "missing"), "/x"), Volume("rel", "/x"),
                Volume(str(tmp_path), "/"), Volume(str(tmp_path), "rel")):
        with pytest.raises(ConfigError, match="invalid volume"):
            MachineSpec(image="busybox", argv=["true"], volumes=[bad]).validate()


def test_launch_refuses_a_bad_spec_before_making_anything(tmp_path):
    from zoned.vm.machine import launch

    with pytest.raises(ConfigError, match="invalid memory 64 MiB"):
        launch(MachineSpec(image="busybox", argv=["true"], memory_mib=64), str(tmp_path / "vm"))
    assert not (tmp_path / "vm").exists()


def _ctl(tmp_path, data: bytes) -> str:
    vmdir = tmp_path / "vm"
    vmdir.mkdir(exist_ok=True)
    open(VMPaths(str(vmdir)).ctl, "wb").write(data)
    return str(vmdir)


@pytest.mark.parametrize("line,code", [
    (b"exit 3", 3), (b"exit 255", 255), (b"exit 256", None), (b"exit notanumber", None),
    (b"exit 99999999999999999999", None), (b"exit -1", None), (b"exit \xd9\xa3", None),
])
def test_a_guests_exit_line_is_a_status_only_from_0_to_255(tmp_path, line, code):
    """A guest that takes its ctl port over (found by session 20's audit) writes what it
    likes there: anything but `exit N` with N in 0..255 is no status, never an error of
    `ps` or `inspect` for every zone of the root, nor a status that wraps (256 -> 0)."""
    from zoned.vm.machine import exit_status

    assert exit_status(_ctl(tmp_path, b"ready\n" + line + b"\n")) == code


def test_a_flooded_ctl_port_is_read_at_its_ends(tmp_path):
    from zoned.vm.machine import CTL_HEAD, CTL_TAIL, read_ctl

    flood = b"A" * (CTL_HEAD + CTL_TAIL) * 4
    lines = read_ctl(_ctl(tmp_path, b"ready\n" + flood + b"\nexit 7\n"))
    assert lines[0] == "ready" and lines[-1] == "exit 7"
    assert sum(map(len, lines)) <= CTL_HEAD + CTL_TAIL


@pytest.mark.parametrize("body,what", [(b"abc", "pid"), (b"-1", "exit status"),
                                       (b"256", "exit status"), (b"\xff", "pid")])
def test_a_guests_numbers_are_checked(body, what):
    from zoned.vm.agent import guest_number

    with pytest.raises(ZonedError, match=f"the guest sent {what}"):
        guest_number(body, what, 255 if what == "exit status" else 1 << 22)


def test_a_frame_kind_that_is_not_ascii_is_still_a_frame():
    buf = bytearray(b"\xff\x00\x00\x00\x00")
    assert decode_frames(buf) == [("\xff", b"")]


class _FakeGuest:
    """A hostile guest's agent on <vmdir>/agent.sock: answers hello, then sends `frames`
    (and, with stream, 'o' frames for ever instead of the process's start)."""

    def __init__(self, vmdir, frames: bytes, stream: bool = False):
        import socket
        import threading

        from zoned.vm.agent import encode_frame

        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(os.path.join(vmdir, "agent.sock"))
        self.srv.listen(1)
        self.stop = False

        def serve():
            conn, _ = self.srv.accept()
            with conn:
                conn.recv(1 << 16)  # the hello
                conn.sendall(encode_frame("h", b""))
                conn.recv(1 << 16)  # the exec: answered as the guest pleases
                conn.sendall(frames)
                while not self.stop:  # (open until the test is done with it)
                    try:
                        if stream:
                            conn.sendall(encode_frame("o", b"noise"))
                    except OSError:
                        return
                    time.sleep(0.01)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop = True
        self.srv.close()


def test_a_guests_error_reaches_no_terminal_as_escape_sequences(tmp_path):
    """An exec's failure, the init's error line and the console's tail are the guest's
    words: their control characters are shown, not sent to the admin's terminal
    (session 21's audit: a retitle and a clear-screen reached stderr as they were)."""
    from zoned.vm.agent import Agent, encode_frame
    from zoned.vm.machine import guest_error

    vmdir = str(tmp_path)
    guest = _FakeGuest(vmdir, encode_frame("!", b"boom \x1b]0;PWNED\x07\x1b[2J"))
    try:
        with Agent(vmdir, timeout=5, verify_peer=False) as a, pytest.raises(ZonedError) as e:
            a.exec(["true"], stdio=(None, None, None))
    finally:
        guest.close()
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value)
    assert "\\x1b]0;PWNED\\x07" in str(e.value)
    assert guest_error(_ctl(tmp_path, b"ready\nerror \x1b[2Jgone\n")) == "\\x1b[2Jgone"


def test_a_guest_streaming_frames_never_holds_an_exec_past_its_timeout(tmp_path):
    """Frames other than the process's start kept select() ready, so the deadline was
    never checked (second audit): the exec fails at its timeout all the same."""
    from zoned.vm.agent import Agent

    vmdir = str(tmp_path)
    guest = _FakeGuest(vmdir, b"", stream=True)
    start = time.monotonic()
    try:
        with Agent(vmdir, timeout=1, verify_peer=False) as a, \
                pytest.raises(ZonedError, match="no answer"):
            a.exec(["true"], stdio=(None, None, None))
    finally:
        guest.close()
    assert time.monotonic() - start < 10


VMWRAP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoned",
                      "libexec", "zoned-vmwrap")


@pytest.mark.parametrize("lines,code", [
    (b"exit 300\nexit 5x\n", 255), (b"exit 7\nexit 300\n", 255), (b"exit 0123\nexit 4\n", 4),
    (b"x" * 5000 + b"exit 9\n", 255), (b"exit 42\n", 42),
])
def test_the_wrapper_takes_the_exit_line_python_takes(tmp_path, lines, code):
    """zoned-vmwrap (what an OCI client sees exit) reads the guest's ctl lines as
    machine._exit_line does: the last line `exit ...` decides, a status only if it is
    `exit N` with N in 0..255; before,
    `exit 300` wrapped to 44, `exit 5x` gave 5 and a line's middle past 4 KiB counted, so a
    client and `zoned state` could disagree. Without one: 255 (QEMU's own exit 0)."""
    from zoned.vm.machine import exit_status

    vmdir = _ctl(tmp_path, lines)
    if not os.access(VMWRAP, os.X_OK):
        pytest.skip("zoned-vmwrap is not built (make setup)")
    p = subprocess.run([VMWRAP, VMPaths(vmdir).ctl, "/bin/true"], timeout=30)
    assert p.returncode == code
    assert exit_status(vmdir) == (None if code == 255 else code)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_the_wrapper_takes_no_exit_line_through_what_qemu_left(tmp_path, kind):
    """The ctl file is in the VM's dir, which a jailed QEMU can write: a symlink it put
    there (to a host file with an `exit 9` line) is not read, a FIFO not waited on."""
    if not os.access(VMWRAP, os.X_OK):
        pytest.skip("zoned-vmwrap is not built (make setup)")
    other = tmp_path / "host-file"
    other.write_text("exit 9\n")
    ctl = tmp_path / "ctl"
    if kind == "symlink":
        ctl.symlink_to(other)
    else:
        os.mkfifo(ctl)
    p = subprocess.run([VMWRAP, str(ctl), "/bin/true"], timeout=30)
    assert p.returncode == 255  # no guest status: QEMU's own exit 0


def test_the_wrapper_passes_on_nothing_once_qemu_has_ended(tmp_path):
    """After QEMU's exit the wrapper still waits (up to 5 s) for zoned-vmlog's lock on ctl;
    a TERM it gets then (a `zoned stop` that found no agent) is not passed on to QEMU's old
    pid, which another process may have by then (found by session 22's audit: a stranger
    got it, and the end was recorded as "signal 15"). Run in a pid namespace of its own,
    where the old pid is handed to a stranger on purpose (ns_last_pid)."""
    if not os.access(VMWRAP, os.X_OK):
        pytest.skip("zoned-vmwrap is not built (make setup)")
    script = tmp_path / "reuse.sh"
    script.write_text(f"""set -e
cd {tmp_path}
: > ctl; flock -x ctl sleep 3 &
{VMWRAP} --status end ctl /bin/sleep 0.3 & W=$!
sleep 0.1; Q=$(pgrep -P $W); sleep 0.6
echo $((Q-1)) > /proc/sys/kernel/ns_last_pid; sleep 30 & S=$!
kill -TERM $W; sleep 0.3
echo "qemu $Q stranger $S"
kill -0 $S && echo stranger-alive
wait $W || echo "wrapper $?"
cat end; kill $S
""")
    p = subprocess.run(["unshare", "-pf", "--mount-proc", "bash", str(script)],
                       capture_output=True, text=True, timeout=30)
    words = p.stdout.split()
    assert words[1] == words[3], p.stdout + p.stderr  # the stranger did get QEMU's pid
    assert "stranger-alive" in words and "exit 0" in p.stdout, p.stdout + p.stderr


ATTACKER = r"""
import ctypes, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {"proc": sorted(os.listdir("/proc")), "top": sorted(os.listdir("/"))}
out["ptrace"] = libc.ptrace(16, int(sys.argv[1]), 0, 0) == 0 or ctypes.get_errno()
try:
    os.kill(int(sys.argv[1]), 0)
    out["kill"] = True
except OSError as e:
    out["kill"] = e.errno
out["pid"] = os.getpid()
for what, path in (("root", "/root"), ("socket", sys.argv[2]), ("vmdir", sys.argv[3])):
    try:
        if what == "socket":
            socket.socket(socket.AF_UNIX).connect(path)
        else:
            os.listdir(path)
        out[what] = True
    except OSError as e:
        out[what] = e.errno
for what, family, addr in (("tcp", socket.AF_INET, ("127.0.0.1", int(sys.argv[4]))),
                           ("abstract", socket.AF_UNIX, b"\0" + sys.argv[5].encode())):
    try:
        socket.socket(family).connect(addr)
        out[what] = True
    except OSError as e:
        out[what] = e.errno
try:
    open("/usr/zoned-jail-write", "w")
    out["write_usr"] = True
except OSError as e:
    out["write_usr"] = e.errno
print(json.dumps(out), flush=True)
"""


def _no_caps_process() -> int:
    """A forked child of uid 0 with no capabilities, dumpable: what another QEMU is."""
    from zoned.child.caps import set_caps

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        set_caps(0, 0, 0)
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return pid


def test_a_jailed_qemu_reaches_no_other_process_file_or_socket(tmp_path):
    """What zoned-vmwrap makes of QEMU's process, tried from inside it by a program run in
    QEMU's place (the system python, under /usr): its /proc is its own directory alone,
    it is PID 1 of its own pid namespace (no host process to signal), in an empty network
    namespace (no host loopback service or abstract socket), ptrace of another
    uid-0 process without capabilities (another QEMU) fails with EPERM (the control: such
    a process, not jailed, attaches), host paths and sockets outside its list are not
    there, /usr is read-only; the VM's dir is there."""
    import errno
    import json

    from zoned.child.caps import set_caps
    from zoned.vm.jail import vmwrap_args

    if not os.access(VMWRAP, os.X_OK) or os.geteuid() != 0:
        pytest.skip("needs root and zoned-vmwrap (make setup)")
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    (vmdir / ".jail").mkdir()
    host_sock = socket.socket(socket.AF_UNIX)
    host_sock.bind(str(tmp_path / "host.sock"))
    host_sock.listen()
    host_tcp = socket.socket()  # a service on the host's loopback
    host_tcp.bind(("127.0.0.1", 0))
    host_tcp.listen()
    abstract = f"zoned-test-{os.getpid()}"  # a host daemon's abstract socket
    host_abstract = socket.socket(socket.AF_UNIX)
    host_abstract.bind(b"\0" + abstract.encode())
    host_abstract.listen()
    target = _no_caps_process()
    try:
        control = os.fork()
        if control == 0:  # not jailed, no capabilities: attaches
            set_caps(0, 0, 0)
            os._exit(0 if ctypes_ptrace_attach(target) == 0 else 1)
        assert os.waitpid(control, 0)[1] == 0
        os.kill(target, signal.SIGKILL)
        os.waitpid(target, 0)
        target = _no_caps_process()
        spec = MachineSpec(image="busybox", argv=["true"])
        p = subprocess.run([VMWRAP, "--caps", "0",
                            *vmwrap_args(spec, str(vmdir), (), "tcg"), str(vmdir / "ctl"),
                            "/usr/bin/python3", "-c", ATTACKER, str(target),
                            str(tmp_path / "host.sock"), str(vmdir),
                            str(host_tcp.getsockname()[1]), abstract],
                           capture_output=True, text=True, timeout=30)
        got = json.loads(p.stdout) if p.stdout else {}
        assert got, p.stderr
    finally:
        os.kill(target, signal.SIGKILL)
        os.waitpid(target, 0)
        for sock in (host_sock, host_tcp, host_abstract):
            sock.close()
    assert got["proc"] == ["self"]
    assert got["tcp"] == errno.ENETUNREACH and got["abstract"] == errno.ECONNREFUSED
    assert got["ptrace"] == errno.EPERM
    assert got["pid"] == 1 and got["kill"] == errno.ESRCH  # a pid namespace of its own
    assert got["root"] == errno.ENOENT and got["socket"] == errno.ENOENT
    assert got["vmdir"] is True
    assert got["write_usr"] == errno.EROFS
    assert "root" not in got["top"] and "home" not in got["top"]
    assert not os.listdir(vmdir / ".jail")  # the jail's tmpfs was QEMU's alone


def ctypes_ptrace_attach(pid: int) -> int:
    """PTRACE_ATTACH: 0, or the errno."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.ptrace(16, pid, 0, 0) == 0 else ctypes.get_errno()


def test_argv_takes_a_tap_by_fd_where_it_is_given_one():
    s = MachineSpec(image="busybox", argv=["true"],
                    nics=[Nic("tap0", "52:54:00:00:00:01", "10.0.0.2", 24, "10.0.0.1")])
    assert opt(argv_for(s, VMPaths("/vm"), BOOT, "tcg", tap_fds=(9,)), "-netdev") == \
        ["tap,id=net0,fd=9"]
    assert opt(argv_for(s, VMPaths("/vm"), BOOT, "tcg"), "-netdev") == \
        ["tap,id=net0,ifname=tap0,script=no,downscript=no"]


def test_qemu_keeps_only_the_9p_file_capabilities_and_only_with_volumes():
    from zoned.vm.config import Volume
    from zoned.vm.machine import qemu_caps

    assert qemu_caps(MachineSpec(image="busybox", argv=["true"])) == 0
    with_volume = MachineSpec(image="busybox", argv=["true"], volumes=[Volume("/h", "/g")])
    # CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID; no MKNOD, SETFCAP, SYS_ADMIN, NET_ADMIN
    assert qemu_caps(with_volume) == 0x1F


def test_qemus_jail_holds_what_it_reads_and_the_vms_own_dir():
    from zoned.vm.config import Nic, Volume
    from zoned.vm.jail import vmwrap_args

    def pairs(args: list[str]) -> list[tuple[str, str]]:
        return list(zip(args[::2], args[1::2], strict=True))

    s = MachineSpec(image="busybox", argv=["true"])
    got = pairs(vmwrap_args(s, "/run/z/vm", ("/k/vmlinux", "/run/z/vm/initrd", "/d/i.sq"), "tcg"))
    assert got[0] == ("--jail", "/run/z/vm/.jail")
    assert ("--ro", "/usr") in got and ("--ro", "/etc/ld.so.cache") in got
    assert ("--ro", "/k/vmlinux") in got and ("--ro", "/d/i.sq") in got
    assert ("--rw", "/run/z/vm") in got and not any(p == "/run/z/vm/initrd" for _, p in got)
    assert [p for k, p in got if k == "--dev"] == ["/dev/null", "/dev/zero", "/dev/random",
                                                   "/dev/urandom"]
    assert [k for k, p in got if p.startswith("/etc")] == ["--ro"]  # nothing else of /etc
    full = MachineSpec(image="busybox", argv=["true"], volumes=[Volume("/h/rw", "/g"),
                                                                Volume("/h/ro", "/r", True)],
                       nics=[Nic("tap0", "52:54:00:00:00:01", "10.0.0.2", 24, "10.0.0.1")])
    got = pairs(vmwrap_args(full, "/run/z/vm", (), "kvm"))
    assert ("--rw", "/h/rw") in got and ("--ro", "/h/ro") in got
    assert ("--dev", "/dev/kvm") in got
    assert ("--dev", "/dev/net/tun") not in got  # (its taps come as fds)


def test_a_qemu_outside_usr_has_its_prefix_in_the_jail(monkeypatch):
    import shutil as shutil_mod

    from zoned.vm import jail

    monkeypatch.setattr(shutil_mod, "which", lambda name: "/opt/qemu/bin/" + name)
    assert jail.qemu_prefix() == ("/opt/qemu",)
    monkeypatch.setattr(shutil_mod, "which", lambda name: "/usr/local/bin/" + name)
    assert jail.qemu_prefix() == ()
