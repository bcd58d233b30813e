"""Booting, watching and removing one QEMU micro-VM: the process side of the VM backend.

A VM lives in a directory the caller owns (``vmdir``): QEMU's sockets, pid file, logs and
the VM's initrd are made there, and destroy() removes exactly those. The guest's stdout and
stderr are written by QEMU itself to the fds the caller hands to launch() (through
``/proc/self/fd/N`` in QEMU: so they must be pipes, files, ttys or /dev/null, not sockets);
QEMU's own messages go to ``<vmdir>/qemu.log``, never mixed with the guest's stderr. The
guest's console and ctl port go through pipes to zoned-vmlog (zoned.vm.vmlog), which keeps
console.log and ctl bounded: they are the guest's to write.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from zoned.errors import ConfigError, ZonedError
from zoned.vm.cmdline import QEMU, SANDBOX, host_tsc_khz, kernel_cmdline
from zoned.vm.config import MachineSpec
from zoned.linux.files import open_regular
from zoned.vm.jail import make_jail_dir, new_vm_file, remove_jail_dir, vmwrap_args
from zoned.vm.paths import VMPaths
from zoned.vm.peer import check_peer, is_vm_qemu, qmp_arg

__all__ = ["QEMU", "BootFiles", "VMPaths", "argv_for", "check_peer", "destroy",
           "ended_by_signal", "exit_status", "find_qemus", "host_tsc_khz", "is_vm_qemu",
           "kernel_cmdline", "launch", "qemu_caps", "qemu_end", "qemu_pid", "read_ctl",
           "signal_qemu", "stop", "wait_ready"]

# Port numbers on the virtio-serial bus (0 is the console, hvc0); the guest finds the ports
# by name, the numbers only keep the layout identical on a migration's destination.
PORTS = {"zoned.ctl": 1, "zoned.agent": 2, "zoned.stdin": 3, "zoned.stdout": 4,
         "zoned.stderr": 5}
_SUN_PATH_MAX = 107




@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots: the uncompressed guest kernel, the VM's initrd, the image's disk."""

    vmlinux: str
    initrd: str
    disk: str


def argv_for(spec: MachineSpec, paths: VMPaths, boot: BootFiles, accel: str,
             tsc_khz: int = 0, stdout_fd: int = 1, stderr_fd: int = 3,
             incoming: str | None = None, paused: bool = False,
             console_fd: int = 4, ctl_fd: int = 5,
             tap_fds: tuple[int, ...] = ()) -> list[str]:
    """QEMU's command line (pure: everything it depends on is an argument). The guest's
    stdin is QEMU's fd 0; stdout_fd and stderr_fd are the numbers the guest's stdout and
    stderr have in QEMU (with tty, QEMU's own stdin and stdout are the terminal),
    console_fd and ctl_fd those of the pipes to zoned-vmlog. tap_fds: each NIC's tap,
    attached already (open_tap), QEMU's in a network namespace of its own (the jail);
    without them QEMU opens each tap by name.
    incoming ("defer", then QMP migrate-incoming) makes this the destination of a live
    migration: the same spec and devices as the source, waiting for its state, which
    comes through a unix socket in its VM dir or an fd (jailed, QEMU has no network of its
    own but its taps, and no exec: not "tcp:" or "exec:")."""
    if accel not in ("kvm", "tcg"):
        raise ConfigError(f"invalid accel {accel!r}: kvm or tcg")
    for sock in (paths.qmp, paths.agent):
        if len(sock.encode()) > _SUN_PATH_MAX:
            raise ConfigError(f"invalid VM directory {paths.vmdir!r}: socket path {sock!r} "
                              f"longer than {_SUN_PATH_MAX} bytes")
    for p in (paths.vmdir, boot.vmlinux, boot.initrd, boot.disk):
        if "," in p:
            raise ConfigError(f"invalid path {p!r}: QEMU options cannot hold a ','")
    accel_opt = f"tcg,tb-size={spec.tb_size_mib}" if accel == "tcg" else "kvm"
    argv = [QEMU, "-name", "zoned-vm", "-M", "microvm,x-option-roms=off",
            "-accel", accel_opt, "-cpu", "max", "-m", str(spec.memory_mib),
            "-smp", str(spec.vcpus), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-sandbox", SANDBOX, "-kernel", boot.vmlinux, "-initrd", boot.initrd,
            "-append", kernel_cmdline(accel, tsc_khz),
            "-chardev", f"file,id=ser,path=/proc/self/fd/{console_fd},append=on",
            "-serial", "chardev:ser",
            "-drive", f"file={boot.disk},if=none,id=root,format=raw,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            "-device", "virtio-serial-device,id=vser",
            "-chardev", f"file,id=ctl,path=/proc/self/fd/{ctl_fd},append=on",
            "-device", _port("ctl", "zoned.ctl"),
            "-chardev", f"socket,id=agent,path={paths.agent},server=on,wait=off",
            "-device", _port("agent", "zoned.agent")]
    if spec.tty:
        argv += ["-chardev", "stdio,id=con,signal=off",
                 "-device", "virtconsole,bus=vser.0,chardev=con,nr=0"]
    else:
        # QEMU 7.2's -chardev file cannot read (its "in" is QMP-only): stdin is QEMU's
        # stdio chardev, which never writes (the guest writes nothing to this port).
        if spec.stdin:
            argv += ["-chardev", "stdio,id=stdin,signal=off",
                     "-device", _port("stdin", "zoned.stdin")]
        argv += ["-chardev", f"file,id=stdout,path=/proc/self/fd/{stdout_fd},append=on",
                 "-device", _port("stdout", "zoned.stdout"),
                 "-chardev", f"file,id=stderr,path=/proc/self/fd/{stderr_fd},append=on",
                 "-device", _port("stderr", "zoned.stderr")]
    for i, v in enumerate(spec.volumes):
        ro = ",readonly=on" if v.readonly else ""
        argv += ["-fsdev", f"local,id=vol{i},path={v.host},security_model=passthrough{ro}",
                 "-device", f"virtio-9p-device,fsdev=vol{i},mount_tag=zvol{i}"]
    for i, nic in enumerate(spec.nics):
        tap = f"fd={tap_fds[i]}" if tap_fds else f"ifname={nic.tap},script=no,downscript=no"
        argv += ["-netdev", f"tap,id=net{i},{tap}",
                 "-device", f"virtio-net-device,netdev=net{i},mac={nic.mac}"]
    argv += ["-qmp", qmp_arg(paths.vmdir).decode()]  # (the pid file is zoned-vmwrap's)
    if incoming:
        argv += ["-incoming", incoming]
    if paused:  # -S: the vCPUs wait for QMP `cont` (a migration's commit)
        argv += ["-S"]
    return argv


# What 9p passthrough does as the guest's users: chown, reach and change their files,
# keep set-id bits. Not CAP_SETFCAP (no file capabilities set from a guest) nor CAP_MKNOD:
# a device node the guest made in a volume would be a real one on the host, for any host
# user who can reach it to open (a FIFO or a socket needs no capability).
_9P_CAPS = (0, 1, 2, 3, 4)  # CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID


def qemu_caps(spec: MachineSpec) -> int:
    """The capabilities QEMU keeps (zoned-vmwrap --caps): none, but the file ones 9p
    volumes need. /dev/kvm, the VM's files and its tap (owner 0) are root's, whose
    access needs none."""
    return sum(1 << c for c in _9P_CAPS) if spec.volumes else 0


def open_tap(name: str) -> int:
    """An fd attached to the host tap `name` (TUNSETIFF; its owner, root, needs no
    capability), with virtio-net's header as QEMU would ask for it: QEMU gets this fd and
    needs neither /dev/net/tun nor the host's network namespace."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(),
                                                _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
    except OSError as e:
        os.close(fd)
        raise ZonedError(f"cannot attach to tap {name!r}: {e.strerror}") from None
    return fd


_TUNSETIFF, _IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x400454CA, 0x0002, 0x1000, 0x4000


def _port(chardev: str, name: str) -> str:
    return f"virtserialport,bus=vser.0,chardev={chardev},name={name},nr={PORTS[name]}"


def launch(spec: MachineSpec, vmdir: str,
           stdio: tuple[int | None, int | None, int | None] = (None, None, None),
           accel_verdict: object | None = None,
           incoming: str | None = None, die_with_caller: bool = False,
           paused: bool = False,
           place: Callable[[int], None] | None = None) -> subprocess.Popen:
    """Boots the VM and returns the Popen of QEMU's parent, zoned-vmwrap, at once (not
    waiting for the guest: see wait_ready). It exits once QEMU has, with the guest's exit
    code, and records how QEMU ended (exit_status). It gets its own session and no
    pdeathsig, so a detached VM outlives zoned. place(pid) is called with its pid before
    QEMU is started (QEMU is its child, started once place has returned): the caller
    moves it into the VM's cgroups there, so that all of QEMU starts in them.
    stdio fds of None mean /dev/null. The accelerator used, and why, is written to
    <vmdir>/accel (and returned by zoned.vm.accel.used(vmdir)). With incoming (see argv_for)
    QEMU waits for a migration stream instead of booting; the guest then writes no "ready"
    (it was written on the source): the VM is up when QMP query-migrate says "completed".
    On failure, the files made so far are removed again. die_with_caller: the wrapper,
    and so QEMU, get SIGKILL when the calling thread dies (a foreground `zoned run`, as a
    zone's init).
    paused: the vCPUs do not run until QMP `cont` (an incoming migration that must not
    run before its source commits)."""
    spec.validate()
    os.makedirs(vmdir, mode=0o700, exist_ok=True)
    try:
        return _launch(spec, VMPaths(os.path.abspath(vmdir)), stdio, accel_verdict, incoming,
                       die_with_caller, paused, place)
    except BaseException:
        destroy(vmdir)
        raise


def _launch(spec: MachineSpec, paths: VMPaths, stdio: tuple[int | None, ...],
            accel_verdict: object | None, incoming: str | None,
            die_with_caller: bool, paused: bool,
            place: Callable[[int], None] | None) -> subprocess.Popen:
    from zoned.vm import accel as accel_mod
    from zoned.vm.assets import kernel, root_disk, vm_initrd
    from zoned.vm.config import guest_config

    k = kernel()
    verdict = accel_verdict or accel_mod.choose(spec.accel, k)
    accel_mod.record(paths.accel, verdict)
    boot = BootFiles(k.vmlinux, vm_initrd(paths.vmdir, guest_config(spec), k),
                     spec.disk or root_disk(spec.image))
    for p in (paths.qmp, paths.agent, paths.pid, paths.ctl, paths.console, paths.old_console,
              paths.end):
        _unlink(p)
    from zoned.vm.vmlog import spawn

    vmlog = spawn(paths.vmdir)  # makes console.log and ctl afresh
    opened = [vmlog.console_fd, vmlog.ctl_fd]

    def fd_or_null(fd: int | None, mode: int) -> int:
        if fd is not None:
            return fd
        n = os.open(os.devnull, mode | os.O_CLOEXEC)
        opened.append(n)
        return n

    try:
        fin = fd_or_null(stdio[0], os.O_RDONLY)
        fout = fd_or_null(stdio[1], os.O_WRONLY)
        ferr = fd_or_null(stdio[2], os.O_WRONLY)
        log = new_vm_file(paths.log)
        opened.append(log)
        # The guest's stderr keeps its number in QEMU (pass_fds): fds 0-2 are taken.
        errfd = ferr if ferr > 2 else os.dup(ferr)
        if errfd != ferr:
            opened.append(errfd)
        taps: list[int] = []
        for nic in spec.nics:
            taps.append(open_tap(nic.tap))
            opened.append(taps[-1])
        argv = argv_for(spec, paths, boot, verdict.accel, host_tsc_khz(), 1, errfd, incoming,
                        paused, vmlog.console_fd, vmlog.ctl_fd, tuple(taps))
        if not os.access(VMWRAP, os.X_OK):
            raise ZonedError(f"{VMWRAP} is missing: run `make setup`")
        go_r = go_w = -1
        if place is not None:
            go_r, go_w = os.pipe2(os.O_CLOEXEC)
            opened += [go_r, go_w]
        make_jail_dir(paths.vmdir)
        wrap = [VMWRAP, "--status", paths.end, "--pid-file", paths.pid,
                "--caps", "%x" % qemu_caps(spec),
                *vmwrap_args(spec, paths.vmdir, (boot.vmlinux, boot.initrd, boot.disk),
                             verdict.accel)]
        if place is not None:
            wrap += ["--go", str(go_r)]
        proc = subprocess.Popen(wrap + [paths.ctl, *argv], stdin=fin, stdout=fout, stderr=log,
                                pass_fds=(errfd, vmlog.console_fd, vmlog.ctl_fd, *taps) +
                                ((go_r,) if place is not None else ()),
                                start_new_session=not spec.tty,
                                preexec_fn=_pdeathsig if die_with_caller else None,
                                close_fds=True)
        if place is not None:
            try:
                place(proc.pid)
                os.write(go_w, b"g")  # QEMU starts now (EOF instead: it never does)
            except BaseException:
                os.close(go_w)
                opened.remove(go_w)
                proc.wait()  # (no QEMU: the wrapper exits at the EOF)
                raise
        return proc
    finally:
        for n in opened:
            os.close(n)


VMWRAP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec",
                      "zoned-vmwrap")


def _pdeathsig() -> None:
    import prctl

    prctl.set_pdeathsig(signal.SIGKILL)


CTL_HEAD, CTL_TAIL = 4 << 10, 60 << 10  # what read_ctl reads of a ctl file grown larger


def read_ctl(vmdir: str) -> list[str]:
    """The lines the guest init wrote to its ctl port: "ready", "exit N", "error MSG". A
    guest that takes the port over can write it without end: only its first and last
    lines are read then (where "ready" and "exit N" are), not all of it at every ps."""
    try:
        with open(open_regular(VMPaths(vmdir).ctl), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= CTL_HEAD + CTL_TAIL:
                data = f.read()
            else:
                head = f.read(CTL_HEAD).rpartition(b"\n")[0]
                f.seek(size - CTL_TAIL)
                data = head + b"\n" + f.read().partition(b"\n")[2]
    except OSError:  # none yet, or what the VM's QEMU put in its place: no lines
        return []
    return data.decode(errors="replace").splitlines()


def _last_words(vmdir: str, find) -> object:
    """find(read_ctl(vmdir)), once QEMU has gone after zoned-vmlog has written all QEMU
    wrote (it drains the pipes after QEMU's exit): so the console is complete too."""
    if qemu_pid(vmdir) is None:
        from zoned.vm.vmlog import settle

        settle(VMPaths(vmdir).ctl)
    return find(read_ctl(vmdir))


def _exit_line(lines: list[str]) -> int | None:
    for line in reversed(lines):
        if line.startswith("exit "):  # the guest's own words: anything else is no status
            code = line[5:]
            return int(code) if code.isascii() and code.isdecimal() and len(code) <= 3 \
                and int(code) <= 255 else None
    return None


def exit_status(vmdir: str) -> int | None:
    """The main process's exit code (128+n if killed by signal n) once the guest has
    reported it; else, once QEMU has gone, 128+n if a signal n ended the VM (a SIGKILL of
    `stop`, the OOM killer's; zoned-vmwrap recorded it), as podman reports a container's.
    None while it runs, or if the VM ended without either (a guest that failed to boot,
    a VM started before zoned-vmwrap recorded ends)."""
    code = _last_words(vmdir, _exit_line)
    if code is None and qemu_pid(vmdir) is None:
        signum = ended_by_signal(vmdir)
        if signum is not None:
            return 128 + signum
    return code


def ended_by_signal(vmdir: str) -> int | None:
    """The signal that ended this VM's QEMU, as zoned-vmwrap recorded it (qemu_end)."""
    word = qemu_end(vmdir)
    if word and word.startswith("signal ") and word[7:].isdecimal() and 0 < int(word[7:]) < 65:
        return int(word[7:])
    return None


def qemu_end(vmdir: str, timeout: float = 6.0) -> str | None:
    """How this VM's QEMU ended, as its parent zoned-vmwrap recorded it: "signal N" or
    "exit N"; None where nothing was recorded. zoned-vmwrap holds its record locked until
    written (up to 5 s after QEMU's exit, waiting for zoned-vmlog). Only for after QEMU
    has exited."""
    from zoned.linux.locks import wait_shared

    try:
        fd = os.open(VMPaths(vmdir).end, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not wait_shared(fd, timeout):
            return None
        word = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    kind, _, n = word.partition(" ")
    return word if kind in ("signal", "exit") and n.isdecimal() and len(n) <= 3 else None


def _error_line(lines: list[str]) -> str | None:
    from zoned.vm.config import guest_text

    for line in lines:
        if line.startswith("error "):
            return guest_text(line[6:])
    return None


def guest_error(vmdir: str) -> str | None:
    """What the guest init failed at, if it did (it then ends the VM)."""
    return _last_words(vmdir, _error_line)


def wait_ready(vmdir: str, timeout: float = 60.0,
               proc: subprocess.Popen | None = None) -> None:
    """Waits until the guest init is about to start the zone's process; ZonedError if the
    guest failed, QEMU exited, or the timeout passed."""
    deadline = time.monotonic() + timeout
    while True:
        lines = read_ctl(vmdir)
        if "ready" in lines:
            return
        err = _error_line(lines)
        if err:
            raise ZonedError(f"VM boot failed: {err}")
        pid = qemu_pid(vmdir)
        if proc is not None and proc.poll() is not None:
            err = guest_error(vmdir)  # its last words, written once QEMU has gone
            raise ZonedError(f"VM boot failed: {err}" if err else
                             f"QEMU ended during boot ({qemu_end(vmdir) or 'how: unknown'}): "
                             f"{_tail(VMPaths(vmdir).log)}")
        if time.monotonic() > deadline:
            raise ZonedError(f"VM not ready after {timeout:.0f} s (pid {pid}): "
                             f"{_tail(VMPaths(vmdir).console)}")
        time.sleep(0.01)


def _tail(path: str, n: int = 300) -> str:
    """The end of a log (the guest's console: its words, made printable)."""
    from zoned.vm.config import guest_text

    try:
        with open(open_regular(path), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - n))
            return guest_text(f.read().strip()) or "(no output)"
    except OSError:
        return "(no log)"


def stop(vmdir: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """`zoned stop` for a VM: sig to the main process through the agent (the guest ends the VM
    when it exits), SIGKILL to it after timeout, QEMU killed if even that does not end it;
    returns the exit status (None if the guest never reported one). Files stay (destroy)."""
    from zoned.vm.agent import Agent

    pid = qemu_pid(vmdir)
    if pid is None:
        return exit_status(vmdir)
    deadline = time.monotonic() + timeout
    for s in (sig, signal.SIGKILL):
        try:
            with Agent(vmdir, timeout=2) as a:
                a.signal(s)
        except ZonedError:
            break  # no agent (QEMU going, or the guest never came up)
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.02)
        if not _alive(pid):
            return exit_status(vmdir)
        deadline = time.monotonic() + 5
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while _alive(pid) and time.monotonic() < deadline + 5:
        _reap(pid)
        time.sleep(0.02)
    return exit_status(vmdir)


def _reap(pid: int) -> None:
    try:  # our child: reap it, or it stays a zombie
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def qemu_pid(vmdir: str) -> int | None:
    """QEMU's pid, if it is still running and is this VM's QEMU (its command line names this
    directory's QMP socket: a recycled pid is never taken for it)."""
    try:
        with open(open_regular(VMPaths(vmdir).pid)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if is_vm_qemu(pid, vmdir) and _alive(pid) else None


def signal_qemu(vmdir: str, sig: int) -> bool:
    """`sig` to this VM's QEMU, through a pidfd opened before the check that it is ours
    (a recycled pid is never hit); False if no QEMU of it runs."""
    from zoned.linux import syscalls as sc

    pid = qemu_pid(vmdir)
    if pid is None:
        return False
    try:
        fd = sc.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not is_vm_qemu(pid, vmdir):
            return False
        try:
            sc.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


def find_qemus(vmdir: str) -> list[int]:
    """Every live QEMU of this VM directory, found by command line: covers a launcher killed
    before QEMU wrote its pid file (gc's case), at the cost of a scan of /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and is_vm_qemu(int(name), vmdir) and _alive(int(name)):
            found.append(int(name))
    return found


def destroy(vmdir: str, timeout: float = 10.0) -> None:
    """Kills this VM's QEMU (SIGKILL, by pid, checked to be ours) and removes the files
    launch made; the directory itself too if that leaves it empty. Idempotent."""
    known = qemu_pid(vmdir)
    for pid in [known] if known is not None else find_qemus(vmdir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.01)
        if _alive(pid):
            raise ZonedError(f"QEMU (pid {pid}) did not die")
    from zoned.vm.vmlog import settle

    settle(VMPaths(vmdir).ctl)  # zoned-vmlog has stopped writing (and rotating) here
    for p in VMPaths(vmdir).all():
        _unlink(p)
    try:
        remove_jail_dir(vmdir)
        os.rmdir(vmdir)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
