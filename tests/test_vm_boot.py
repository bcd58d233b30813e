"""The VM backend's machinery (zoned.vm) booting real QEMU micro-VMs: TCG on these hosts.

Each boot costs ~2-4 s, so each test boots once and checks several things. KVM-only checks
skip with the accelerator detector's reason.
"""
from __future__ import annotations

import json
import os
import platform
import pty
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import argvs

from zoned.errors import ZonedError
from zoned.vm import accel as accel_mod
from zoned.vm import machine, vmlog
from zoned.vm.agent import Agent, encode_frame
from zoned.vm.cmdline import host_tsc_khz
from zoned.vm.config import MachineSpec, Nic, Volume, encode_records, process_records
from zoned.vm.qmp import QMP

try:
    from zoned.vm.assets import kernel

    KERNEL = kernel()
except Exception as e:  # no guest kernel: `make setup` not run
    pytest.skip(f"no VM guest kernel: {e}", allow_module_level=True)


@pytest.fixture
def vmdir(busybox):
    d = tempfile.mkdtemp(prefix="zvm-test.")
    yield d
    machine.destroy(d)
    assert not os.path.exists(d)


def spec(**kw) -> MachineSpec:
    kw.setdefault("image", "busybox")
    kw.setdefault("accel", "tcg")
    return MachineSpec(**kw)


def run_vm(s: MachineSpec, vmdir: str, stdin: bytes | None = None,
           timeout: float = 120) -> tuple[int | None, str, str]:
    """Boots s to completion; (the guest's exit status, its stdout, its stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        r = None
        if stdin is not None:
            r, w = os.pipe()
            os.write(w, stdin)
            os.close(w)
        try:
            p = machine.launch(s, vmdir, stdio=(r, out.fileno(), err.fileno()))
        finally:
            if r is not None:
                os.close(r)
        code = p.wait(timeout)  # zoned-vmwrap's: the guest's code, else 255 (QEMU's exit 0)
        status = machine.exit_status(vmdir)
        assert code == (255 if status is None else status), machine.VMPaths(vmdir).log
        out.seek(0), err.seek(0)
        return status, out.read().decode(), err.read().decode()


def running(pid: int) -> bool:
    """Not gone and not a zombie (an orphaned QEMU is reaped by whoever PID 1 here is)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def rootfs_listing(rootfs: str) -> dict[str, tuple]:
    found = {}
    for d, dirs, files in os.walk(rootfs):
        for n in dirs + files:
            st = os.lstat(os.path.join(d, n))
            found[os.path.relpath(os.path.join(d, n), rootfs)] = (st.st_mode, st.st_size,
                                                                   st.st_mtime_ns)
    return found


def test_process_runs_in_the_guest_kernel_with_its_config(vmdir):
    """uname is the guest's, vCPUs and RAM are the spec's, env/cwd/user/hostname applied,
    stdout and stderr arrive apart, and the exit code is the process's."""
    script = ("uname -r; grep -c processor /proc/cpuinfo; grep MemTotal /proc/meminfo; "
              "hostname; id -u; id -g; id -G; pwd; echo \"FOO=$FOO\"; echo to-stderr >&2; "
              "cat; exit 3")
    s = spec(argv=["sh", "-c", script], env=["FOO=bar baz"], cwd="/tmp", uid=1000, gid=1001, groups=[5, 7],
             hostname="zvm-one", vcpus=2, memory_mib=192)
    status, out, err = run_vm(s, vmdir, stdin=b"from-stdin\n")
    lines = out.splitlines()
    assert status == 3, (out, err, machine.read_ctl(vmdir))
    assert lines[0] == KERNEL.version and lines[0] != platform.release()
    assert lines[1] == "2"
    mem_kib = int(lines[2].split()[1])
    assert (192 - 64) * 1024 < mem_kib <= 192 * 1024  # minus the kernel (~47 MiB)
    assert lines[3:] == ["zvm-one", "1000", "1001", "1001 5 7", "/tmp", "FOO=bar baz", "from-stdin"]
    assert err == "to-stderr\n"
    assert accel_mod.used(vmdir).accel == "tcg"


def _read_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    """One agent frame (kind, body): a kind byte and a little-endian u32 length."""
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("agent closed the connection")
            buf += chunk
        return buf

    hdr = exact(5)
    return hdr[:1], exact(int.from_bytes(hdr[1:], "little"))


def test_exec_signal_and_an_untouched_image(vmdir, busybox):
    """The agent execs into a running VM (output, stdin, exit code, user); files written in
    the VM land in its tmpfs upper, never in the image; a signal ends the main process with
    128+n."""
    before = rootfs_listing(busybox.rootfs_dir)
    p = machine.launch(spec(argv=["sh", "-c", "cat; sleep 600"], stdin=False), vmdir)
    machine.wait_ready(vmdir, 60, p)  # stdin=False: /dev/null, so cat ends at once
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    os.write(in_w, b"piped\n")
    os.close(in_w)
    with Agent(vmdir) as a:
        code = a.exec(["sh", "-c", "echo x > /etc/written-in-vm; touch /bin/new; rm /bin/ls; "
                       "cat; id -u; echo oops >&2; exit 7"], stdio=(in_r, out_w, err_w))
    os.close(out_w), os.close(err_w), os.close(in_r)
    assert code == 7
    assert os.read(out_r, 1000) == b"piped\n0\n"
    assert os.read(err_r, 1000) == b"oops\n"
    os.close(out_r), os.close(err_r)
    with Agent(vmdir) as a:
        r, w = os.pipe()
        assert a.exec(["sh", "-c", "cat /etc/written-in-vm; id -u; ls /bin/ls"],
                      uid=65534, gid=65534, stdio=(None, w, w)) == 1
        os.close(w)
        assert os.read(r, 1000).decode().splitlines()[:2] == ["x", "65534"]
        os.close(r)
    # A client that goes away mid-exec takes its process with it; the next exec works at
    # once and sees nothing of the old one's output or exit.
    with socket.socket(socket.AF_UNIX) as gone:
        gone.connect(machine.VMPaths(vmdir).agent)
        # hello until heard (as Agent does): right after a connect the guest may still take
        # this client for gone and drop the P of its exec (csrc/vmagent.h)
        gone.settimeout(0.2)
        for _ in range(100):
            gone.sendall(encode_frame("H"))
            try:
                if _read_frame(gone)[0] == b"h":
                    break
            except TimeoutError:
                continue
        gone.settimeout(30)
        gone.sendall(encode_frame("E", encode_records(process_records(
            ["sh", "-c", "while true; do echo old; sleep 0.1; done"], []))))
        kind = _read_frame(gone)[0]
        while kind == b"h":  # the answer to a repeated hello
            kind = _read_frame(gone)[0]
        assert kind == b"P"
        time.sleep(0.5)
    with Agent(vmdir) as a:
        r, w = os.pipe()
        assert a.exec(["echo", "new"], stdio=(None, w, None)) == 0
        os.close(w)
        assert os.read(r, 1000) == b"new\n"
        os.close(r)
    with Agent(vmdir) as a:  # a terminal for the exec'd process: output on stdout
        r, w = os.pipe()
        ir, iw = os.pipe()
        os.write(iw, b"typed\n")
        os.close(iw)
        assert a.exec(["sh", "-c", "tty; read x; echo got:$x; exit 2"], tty=True,
                      stdio=(ir, w, None)) == 2
        os.close(w), os.close(ir)
        text = os.read(r, 1000).decode()
        os.close(r)
        assert "/dev/pts/" in text and "got:typed" in text, text
    with Agent(vmdir) as a:
        r, w = os.pipe()
        assert a.exec(["no-such-command"], stdio=(None, None, w)) == 127
        os.close(w)
        assert b"no-such-command" in os.read(r, 1000)
        os.close(r)
    with QMP(vmdir) as q:
        assert q.execute("query-status")["status"] == "running"
    assert machine.stop(vmdir, timeout=60) == 128 + signal.SIGTERM
    assert p.wait(60) == 128 + signal.SIGTERM  # zoned-vmwrap exits with the guest's code
    assert machine.exit_status(vmdir) == 128 + signal.SIGTERM
    assert rootfs_listing(busybox.rootfs_dir) == before


def test_stop_escalates_to_sigkill(vmdir):
    """A main process that ignores SIGTERM is killed after the timeout: 128+9."""
    p = machine.launch(spec(argv=["sh", "-c", "trap '' TERM; echo up; sleep 600 & wait"],
                            stdin=False), vmdir)
    machine.wait_ready(vmdir, 60, p)
    time.sleep(0.5)
    start = time.monotonic()
    assert machine.stop(vmdir, timeout=2) == 128 + signal.SIGKILL
    assert time.monotonic() - start < 30
    assert p.wait(10) == 128 + signal.SIGKILL


def test_destroy_after_the_caller_is_killed(vmdir):
    """A VM outlives its launcher (own session, no pdeathsig); destroy() then leaves no QEMU
    process, socket or file behind."""
    code = textwrap.dedent(f"""
        import sys
        from zoned.vm import machine
        from zoned.vm.config import MachineSpec
        p = machine.launch(MachineSpec(image="busybox", argv=["sleep", "600"], accel="tcg"),
                           {vmdir!r})
        machine.wait_ready({vmdir!r}, 60, p)
        print(machine.qemu_pid({vmdir!r}), flush=True)  # (p: zoned-vmwrap, its parent)
        import time; time.sleep(600)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    qemu = int(launcher.stdout.readline())
    launcher.kill()
    launcher.wait()
    launcher.stdout.close()
    time.sleep(0.2)
    assert machine.qemu_pid(vmdir) == qemu  # still running, found through its pid file
    os.unlink(machine.VMPaths(vmdir).pid)  # as if killed before QEMU wrote it
    assert machine.find_qemus(vmdir) == [qemu]
    machine.destroy(vmdir)
    assert not running(qemu)
    assert not os.path.exists(vmdir)
    machine.destroy(vmdir)  # idempotent


def test_tty_gives_the_process_a_terminal(vmdir):
    """With tty the process's stdio is hvc0, its controlling terminal, sized as asked; QEMU's
    stdio is the caller's terminal (what `-it` needs)."""
    master, slave = pty.openpty()
    s = spec(argv=["sh", "-c", "tty; stty size; read line; echo got:$line; exit 4"],
             tty=True, rows=33, cols=101)
    p = machine.launch(s, vmdir, stdio=(slave, slave, slave))
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline and p.poll() is None:
        if select.select([master], [], [], 0.1)[0]:
            try:
                out += os.read(master, 1000)
            except OSError:
                break
        if not sent and b"101" in out:
            os.write(master, b"typed\r")
            sent = True
    assert p.wait(60) == 4
    os.close(master)
    text = out.decode(errors="replace")
    assert "/dev/hvc0" in text and "33 101" in text and "got:typed" in text, text
    assert machine.exit_status(vmdir) == 4


def test_network_through_a_tap(vmdir):
    """A guest IP on a virtio-net NIC over a host tap: the guest pings the host, the host
    connects to a listener in the guest. QEMU gets the tap as an fd, from its own network
    namespace (the jail's)."""
    from pyroute2 import IPRoute

    pool = os.environ.get("ZONED_SUBNET_POOL", "10.181.0.0/16")
    prefix = ".".join(pool.split("/")[0].split(".")[:2])
    host_ip, guest_ip = f"{prefix}.250.1", f"{prefix}.250.2"
    from zoned.network.netlink import Netlink

    tap = f"zvmt{os.getpid() % 100000}"
    with Netlink() as nl:  # the tap zoned's networks make for a VM
        idx = nl.create_tap(tap, alias="zvm-test")
    try:
        with IPRoute() as ipr:
            ipr.link("set", index=idx, state="up")
            ipr.addr("add", index=idx, address=host_ip, prefixlen=24)
        s = spec(argv=["sh", "-c", f"ping -c 1 -W 10 {host_ip} >/dev/null || exit 9; "
                       "echo hello-from-vm | nc -l -p 7777"],
                 nics=[Nic(tap, "52:54:00:12:34:56", guest_ip, 24, host_ip)])
        p = machine.launch(s, vmdir)
        machine.wait_ready(vmdir, 60, p)
        got = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not got:
            try:
                with socket.create_connection((guest_ip, 7777), timeout=5) as c:
                    got = c.recv(100)
            except OSError:
                if p.poll() is not None:
                    break
                time.sleep(0.2)
        try:
            status = p.wait(60)
        except subprocess.TimeoutExpired:  # say what the guest got to (a hang at its exit?)
            with open(machine.VMPaths(vmdir).console, errors="replace") as f:
                console = f.read()[-2000:]
            pytest.fail(f"the VM still runs; got {got!r}, ctl {machine.read_ctl(vmdir)}, "
                        f"console {console!r}")
        assert status == 0
        assert got == b"hello-from-vm\n", machine.read_ctl(vmdir)
        assert machine.exit_status(vmdir) == 0
    finally:
        with Netlink() as nl:
            assert nl.delete_link(tap, "zvm-test")
            assert not nl.delete_link(tap)  # idempotent
        with IPRoute() as ipr:
            assert not ipr.link_lookup(ifname=tap)


def test_the_guest_exit_skips_the_kernels_device_shutdown(vmdir):
    """The guest init ends the VM with an immediate reset (SysRq 'b'), not a power-off: a
    power-off first runs the guest kernel's device shutdown, where Debian 6.1's virtio-net
    could spin in ksoftirqd for good (about one exit in 50 with a busy NIC; QEMU never
    exited). QEMU pauses here instead of exiting, so its devices can be looked at after
    the guest is done: none was reset by the guest, and the guest asked for a reset."""
    from zoned.vm.assets import kernel, root_disk, vm_initrd
    from zoned.vm.config import guest_config

    s = spec(argv=["sh", "-c", "exit 5"])
    paths = machine.VMPaths(vmdir)
    boot = machine.BootFiles(KERNEL.vmlinux, vm_initrd(vmdir, guest_config(s), kernel()),
                             root_disk("busybox"))
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    log = vmlog.spawn(vmdir)
    try:
        argv = machine.argv_for(s, paths, boot, "tcg", host_tsc_khz(), null, null,
                                console_fd=log.console_fd, ctl_fd=log.ctl_fd)
        p = subprocess.Popen([*argv, "-action", "shutdown=pause"], stdin=subprocess.DEVNULL,
                             stdout=null, stderr=null,
                             pass_fds=(null, log.console_fd, log.ctl_fd))
    finally:
        for fd in (null, log.console_fd, log.ctl_fd):
            os.close(fd)
    try:
        with QMP(vmdir, timeout=60) as q:
            shutdown = q.wait_event("SHUTDOWN", timeout=120)
            assert q.execute("query-status")["status"] == "shutdown"
            devices = q.execute("x-query-virtio")
            assert {d["name"] for d in devices} >= {"virtio-blk", "virtio-serial"}
            for d in devices:
                st = q.execute("x-query-virtio-status", path=d["path"])
                assert any(f.startswith("VIRTIO_CONFIG_S_DRIVER_OK")
                           for f in st["status"]["statuses"]), (d["name"], st["status"])
        assert shutdown["data"] == {"guest": True, "reason": "guest-reset"}, shutdown
        assert machine.exit_status(vmdir) == 5
    finally:
        p.kill()
        p.wait()


def test_a_guest_flooding_its_console_cannot_fill_the_host(vmdir, monkeypatch):
    """The serial console is the guest's to write (root in it writes /dev/ttyS0, its kernel
    prints there): zoned-vmlog keeps console.log and console.log.1 under the limit each,
    keeping the newest output, where QEMU's file chardev grew without end (the console
    held all 400 KB here, a guest's whole disk-full of it elsewhere). Its exit code still
    comes through, and nothing of the writer stays."""
    monkeypatch.setenv("ZONED_VM_CONSOLE_MAX", "64k")
    script = ("head -c 400000 /dev/zero | tr '\\0' x > /dev/ttyS0; "
              "echo the-end > /dev/ttyS0; exit 6")
    status, out, err = run_vm(spec(argv=["sh", "-c", script]), vmdir)
    assert status == 6, (out, err, machine.read_ctl(vmdir))
    paths = machine.VMPaths(vmdir)
    new, old = os.path.getsize(paths.console), os.path.getsize(paths.old_console)
    assert 0 < new <= 64 << 10 and 0 < old <= 64 << 10, (new, old)
    with open(paths.console, "rb") as f:
        assert b"the-end" in f.read()[-200:]  # then only the kernel's "sysrq: Resetting"
    assert machine.read_ctl(vmdir) == ["ready", "exit 6"]
    deadline = time.monotonic() + 5
    while vmlog_writers(vmdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vmlog_writers(vmdir) == []


def vmlog_writers(vmdir: str) -> list[int]:
    """The pids of zoned-vmlog processes writing into vmdir."""
    return [pid for pid, argv in argvs()
            if argv[0] == vmlog.VMLOG.encode() and argv[1:2] == [vmdir.encode()]]


def test_vm_exits_bench_counts_ended_vms_and_leaves_nothing(tmp_path):
    """bench/vm_exits.py: VMs whose NIC is busy at their end all end, with the time from
    the guest's exit line to QEMU gone; no tap, VM dir or QEMU left. Bad flags: one line,
    exit 125, no file."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(repo, "bench", "vm_exits.py")
    out = tmp_path / "vmx.json"
    p = subprocess.run([sys.executable, script, "--count", "3", "--parallel", "2", "--out",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["vms"] == 3 and res["outcomes"]["ended"] == 3, res["not_ended"]
    assert res["exchange_failed"] == 0 and res["exit_to_gone_ms"]["n"] == 3
    assert 0 < res["exit_to_gone_ms"]["max"] < 30_000
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("zvmx")]
    assert not [d for d in os.listdir(tempfile.gettempdir()) if d.startswith("zoned-bench-vmx.")]
    from zoned.bench.procfs import proc_cmdline

    assert [pid for pid in filter(str.isdigit, os.listdir("/proc"))
            if "zoned-bench-vmx." in proc_cmdline(int(pid))] == []
    for flags, field in ((["--count", "0"], "--count"), (["--parallel", "9"], "--parallel"),
                         (["--vminit", "/nonexistent"], "--vminit")):
        bad = tmp_path / "bad.json"
        p = subprocess.run([sys.executable, script, *flags, "--out", str(bad)],
                           capture_output=True, text=True, timeout=60)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 125 and len(lines) == 1 and field in lines[0], p.stderr
        assert not bad.exists()


def test_accel_detection_says_which_and_why():
    """detect() picks an accelerator by a marker boot and says why; the marker boot itself
    is checked under TCG (which always reaches the guest init), so a TCG verdict is not
    just the probe failing for everything."""
    v = accel_mod.detect()
    assert v.accel in ("kvm", "tcg") and v.reason
    ok, took, _ = accel_mod.probe_boot(KERNEL, "tcg", 60)
    assert ok, "the TCG marker boot did not reach the guest init"


def test_kvm_boot(vmdir):
    v = accel_mod.detect()
    if v.accel != "kvm":
        pytest.skip(f"KVM not usable here: {v.reason}")
    status, out, _ = run_vm(spec(argv=["uname", "-r"], accel="kvm"), vmdir)
    assert status == 0 and out.strip() == KERNEL.version


def _relay(src_listener: socket.socket, dst_path: str) -> threading.Thread:
    """Carry one connection's bytes from src_listener to a connection to dst_path, one way
    (as zoned's migration carries the stream between the hosts: each jailed QEMU reaches
    only unix sockets in its own VM dir)."""
    def run():
        conn, _ = src_listener.accept()
        with conn, socket.socket(socket.AF_UNIX) as out:
            out.connect(dst_path)
            while data := conn.recv(1 << 16):
                out.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_live_migration_keeps_the_guest_running(vmdir):
    """QEMU's own precopy migration to a second QEMU (launch(incoming=...)) moves the guest
    with its tmpfs upper, agent and exit reporting: nothing blocks migration (no 9p). The
    stream goes through unix sockets in each VM's dir, relayed, as zoned's migration does."""
    dst = tempfile.mkdtemp(prefix="zvm-test-dst.")
    try:
        # (renamed into place: a `cat` between the truncation and the write read nothing)
        s = spec(argv=["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; "
                       "mv /tmp/count.new /tmp/count; sleep 0.2; done"])
        p = machine.launch(s, vmdir)
        machine.wait_ready(vmdir, 60, p)
        dp = machine.launch(s, dst, incoming="defer")
        deadline = time.monotonic() + 60
        with QMP(dst) as q:  # QMP answers once QEMU is up
            assert q.execute("query-status")["status"] == "inmigrate"
            q.execute("migrate-incoming", uri=f"unix:{dst}/mig.sock")
        out = socket.socket(socket.AF_UNIX)
        out.bind(f"{vmdir}/mig.sock")
        out.listen(1)
        relay = _relay(out, f"{dst}/mig.sock")
        with QMP(vmdir) as q:
            q.execute("migrate", uri=f"unix:{vmdir}/mig.sock")
            while (st := q.execute("query-migrate"))["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, st
                time.sleep(0.05)
        assert st["status"] == "completed", st
        relay.join(30)
        out.close()
        os.unlink(f"{vmdir}/mig.sock")
        machine.destroy(vmdir)
        with QMP(dst) as q:
            while q.execute("query-status")["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        r, w = os.pipe()
        with Agent(dst) as a:
            assert a.exec(["sh", "-c", "cat /tmp/count; sleep 1; cat /tmp/count"],
                          stdio=(None, w, None)) == 0
        os.close(w)
        before, after = map(int, os.read(r, 100).split())
        os.close(r)
        assert after > before > 1
        with Agent(dst) as a:
            a.signal(signal.SIGKILL)
        assert dp.wait(60) == 128 + signal.SIGKILL
        assert machine.exit_status(dst) == 128 + signal.SIGKILL
    finally:
        machine.destroy(dst)


def qemu_status(vmdir: str) -> dict[str, str]:
    """The fields of the VM's QEMU's /proc/PID/status."""
    with open(f"/proc/{machine.qemu_pid(vmdir)}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_qemu_runs_sandboxed_without_capabilities(vmdir):
    """What an exploited QEMU could do as root is cut, as libvirt cuts it: no capability
    (bounding set empty: its exec gave it none, nor can a later exec), no_new_privs, and
    QEMU's seccomp sandbox, under which it spawns nothing: a migration to `exec:` never
    runs its command. Its root holds only what it needs (no /root, /run or /home, no
    /etc but the loader's cache, a /proc of itself) and is read-only; zoned-vmwrap's
    filter under QEMU's own keeps it from ptracing another QEMU (test_vm_unit tries that).
    The guest runs on (its tap, /dev/kvm and files need no capability)."""
    s = spec(argv=["sleep", "600"])
    p = machine.launch(s, vmdir)
    machine.wait_ready(vmdir, 60, p)
    st = qemu_status(vmdir)
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    assert st["Seccomp_filters"] == "2"  # zoned-vmwrap's, then QEMU's -sandbox
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[field], 16) == 0, (field, st[field])
    pid = machine.qemu_pid(vmdir)
    root = f"/proc/{pid}/root"
    top_dirs = set(os.listdir(root))
    assert top_dirs <= {"bin", "dev", "etc", "lib", "lib64", "proc", "sys", "tmp", "usr",
                        "var"} | {vmdir.split("/")[1]}, top_dirs  # (the VM's dir's top)
    assert not {"root", "home", "run", "boot"} & top_dirs - {vmdir.split("/")[1]}
    assert os.listdir(f"{root}/etc") == ["ld.so.cache"]
    assert sorted(os.listdir(f"{root}/dev")) == ["null", "random", "urandom", "zero"]
    assert os.path.exists(f"{root}{vmdir}/qmp.sock")
    with open(f"/proc/{pid}/mountinfo") as f:
        top = next(line.split() for line in f if line.split()[4] == "/")
    assert "ro" in top[5].split(",")
    assert os.listdir(f"{root}/proc") == ["self"]
    assert st["NSpid"].split() == [str(pid), "1"]  # PID 1 of a pid namespace of its own
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    marker = Path(vmdir) / "spawned"  # (in the jail: only the sandbox stops the spawn)
    with QMP(vmdir) as q:
        try:
            q.execute("migrate", uri=f"exec:touch {marker}")
        except Exception:  # noqa: BLE001 - refused, or QEMU killed by its filter: both fine
            pass
    time.sleep(1)
    assert not marker.exists()
    machine.stop(vmdir)
    p.wait(60)


def test_zoned_follows_nothing_a_vms_qemu_left_in_its_dir(vmdir, tmp_path):
    """The VM's dir is QEMU's to write (its jail binds it read-write), and zoned, as root,
    writes and reads files there and connects to its sockets. What an exploited QEMU can
    leave there (symlinks to host files and sockets, a FIFO) for the next launch in that
    dir (a defined VM's restart) or for zoned's reads: no host file is truncated or
    written, read back as the guest's lines, or connected to."""
    import socket

    from zoned.vm import accel as accel_mod

    canary = tmp_path / "canary"
    canary.write_text("exit 77\nerror host secret\n")
    os.makedirs(vmdir, exist_ok=True)
    for name in ("qemu.log", "accel", "initrd.tmp"):
        os.symlink(canary, os.path.join(vmdir, name))
    os.symlink(tmp_path, os.path.join(vmdir, ".jail"))  # the jail's mount point
    p = machine.launch(spec(argv=["sleep", "600"]), vmdir)
    machine.wait_ready(vmdir, 60, p)
    assert canary.read_text() == "exit 77\nerror host secret\n"
    assert not os.path.islink(os.path.join(vmdir, ".jail"))
    assert accel_mod.used(vmdir).accel == "tcg"
    paths = machine.VMPaths(vmdir)
    os.rename(paths.ctl, paths.ctl + ".real")
    os.symlink(canary, paths.ctl)
    assert machine.read_ctl(vmdir) == []
    os.unlink(paths.ctl)
    os.mkfifo(paths.ctl)
    assert machine.read_ctl(vmdir) == []  # (and no wait on the FIFO)
    impostor = socket.socket(socket.AF_UNIX)
    impostor.bind(str(tmp_path / "impostor.sock"))
    impostor.listen(4)
    try:
        for sock, client in ((paths.agent, lambda: Agent(vmdir, timeout=2).signal(0)),
                             (paths.qmp, lambda: QMP(vmdir, timeout=2).connect())):
            os.rename(sock, sock + ".real")
            os.symlink(tmp_path / "impostor.sock", sock)
            with pytest.raises(ZonedError, match="not this VM's QEMU"):
                client()
            os.unlink(sock)
            os.rename(sock + ".real", sock)
    finally:
        impostor.close()
    os.unlink(paths.ctl)
    os.rename(paths.ctl + ".real", paths.ctl)
    assert machine.stop(vmdir) is not None  # zoned still reaches its own QEMU
    p.wait(60)
    assert canary.read_text() == "exit 77\nerror host secret\n"


def test_volumes_over_9p(vmdir, tmp_path):
    """Host directories shared read-write and read-only; such a VM cannot migrate (QEMU 7.2
    blocks migration while a 9p export is mounted), which QMP reports as an error. QEMU
    keeps the file capabilities 9p passthrough needs, and no more: the guest's root
    chowns, and writes another user's 0600 file."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir(), ro.mkdir()
    (ro / "in").write_text("from-host\n")
    theirs = rw / "theirs"
    theirs.write_text("")
    os.chown(theirs, 4242, 4242)
    theirs.chmod(0o600)
    s = spec(argv=["sh", "-c", "cat /data/ro/in; echo from-vm > /data/rw/out; "
                   "echo appended >> /data/rw/theirs; chown 1234:5678 /data/rw/out; "
                   "touch /data/ro/x 2>/dev/null && echo ro-writable; sleep 600"],
             volumes=[Volume(str(rw), "/data/rw"), Volume(str(ro), "/data/ro", True)])
    r, w = os.pipe()
    p = machine.launch(s, vmdir, stdio=(None, w, None))
    os.close(w)
    machine.wait_ready(vmdir, 60, p)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # created first, written a moment later
        if (rw / "out").exists() and (rw / "out").read_text():
            break
        time.sleep(0.05)
    assert (rw / "out").read_text() == "from-vm\n"
    while time.monotonic() < deadline and (rw / "out").stat().st_uid != 1234:
        time.sleep(0.05)
    assert ((rw / "out").stat().st_uid, (rw / "out").stat().st_gid) == (1234, 5678)
    assert theirs.read_text() == "appended\n"
    assert int(qemu_status(vmdir)["CapBnd"], 16) == machine.qemu_caps(s)
    with QMP(vmdir) as q:
        with pytest.raises(Exception, match="VirtFS|9p|migrat"):
            q.execute("migrate", uri="exec:cat > /dev/null")
    with Agent(vmdir) as a:
        a.signal(signal.SIGKILL)
    assert p.wait(60) == 128 + signal.SIGKILL
    assert os.read(r, 1000) == b"from-host\n"
    os.close(r)
    assert not (ro / "x").exists()
