"""Which accelerator a VM runs on: KVM where it really works, TCG otherwise.

/dev/kvm existing proves little: on these hosts it is kvm_pvm (software-nested), where a stock
guest kernel aborts or crawls through its decompressor instruction by instruction. So the
answer comes from trying: a marker boot (the guest kernel plus zoned-vminit in probe mode,
which only writes a marker to the console) under ``-accel kvm`` with a short timeout. The
verdict is cached per (host kernel, QEMU binary, guest kernel) in $ZONED_VM_DIR/accel.json.
An explicit kvm/tcg overrides detection; every VM records which one it used and why.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

from zoned.errors import ZonedError

PROBE_MARKER = "zoned-vminit: probe ok"
PROBE_TIMEOUT = 10.0  # a working KVM reaches init in well under a second; TCG in ~2-3 s


@dataclass(frozen=True)
class Verdict:
    accel: str  # "kvm" or "tcg"
    reason: str


def _cache_key(kernel_version: str) -> str:
    qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
    try:
        st = os.stat(qemu)
        qemu_id = f"{qemu}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        qemu_id = qemu
    return f"{platform.release()}|{qemu_id}|{kernel_version}"


def _cache_path() -> str:
    from zoned.vm.assets import vm_dir

    return os.path.join(vm_dir(), "accel.json")


def choose(requested: str, k: object | None = None) -> Verdict:
    """The accelerator for a VM: the requested one if forced, else detect()."""
    if requested == "tcg":
        return Verdict("tcg", "requested")
    if requested == "kvm":
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise ZonedError("invalid accel kvm: /dev/kvm is missing or not accessible")
        return Verdict("kvm", "requested")
    return detect(k)


def detect(k: object | None = None, refresh: bool = False) -> Verdict:
    """KVM if a marker boot under KVM reaches the guest init in time, else TCG (cached)."""
    from zoned.vm.assets import kernel

    k = k or kernel()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Verdict("tcg", "no usable /dev/kvm")
    key = _cache_key(k.version)
    path = _cache_path()
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not refresh and key in cache:
        c = cache[key]
        return Verdict(c["accel"], c["reason"] + " (cached)")
    verdict = _probe(k)
    cache[key] = asdict(verdict)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1)
    os.rename(tmp, path)
    return verdict


def probe_boot(k: object, accel: str, timeout: float) -> tuple[bool, float, str]:
    """Boots the guest kernel with the probe initrd under `accel`; (reached init?, seconds,
    the console's last line or QEMU's error)."""
    from zoned.vm.assets import vm_initrd
    from zoned.vm.config import encode_records
    from zoned.vm.cmdline import QEMU, host_tsc_khz, kernel_cmdline

    with tempfile.TemporaryDirectory(prefix="zoned-vm-probe.") as d:
        initrd = vm_initrd(d, encode_records([("probe", "1")]), k)
        console = os.path.join(d, "console.log")
        accel_opt = "tcg,tb-size=32" if accel == "tcg" else "kvm"
        argv = [QEMU, "-M", "microvm,x-option-roms=off", "-accel", accel_opt, "-cpu", "max",
                "-m", "128", "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", "-kernel", k.vmlinux, "-initrd", initrd,
                "-append", kernel_cmdline(accel, host_tsc_khz()),
                "-chardev", f"file,id=ser,path={console}", "-serial", "chardev:ser"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        ok = False
        try:
            while time.monotonic() - start < timeout:
                if _has_marker(console):
                    ok = True
                    break
                if proc.poll() is not None:
                    ok = _has_marker(console)
                    break
                time.sleep(0.02)
        finally:
            took = time.monotonic() - start
            proc.kill()
            _, err = proc.communicate()
        detail = err.decode(errors="replace").strip().splitlines()
        if not detail:
            try:
                with open(console, errors="replace") as f:
                    detail = f.read().strip().splitlines()
            except OSError:
                detail = []
        return ok, took, (detail[-1] if detail else "no output")


def _has_marker(console: str) -> bool:
    try:
        with open(console, errors="replace") as f:
            return PROBE_MARKER in f.read()
    except OSError:
        return False


def _probe(k: object) -> Verdict:
    ok, took, detail = probe_boot(k, "kvm", PROBE_TIMEOUT)
    if ok:
        return Verdict("kvm", f"a KVM marker boot reached the guest init in {took:.1f} s")
    return Verdict("tcg", f"a KVM marker boot did not reach the guest init (after "
                          f"{took:.1f} s, limit {PROBE_TIMEOUT:.0f} s: {detail[:160]})")


def record(path: str, verdict: Verdict) -> None:
    """Writes which accelerator a VM uses and why (for inspect/list), in the VM's dir."""
    from zoned.vm.jail import new_vm_file

    with open(new_vm_file(path), "w") as f:
        json.dump(asdict(verdict), f)


def used(vmdir: str) -> Verdict | None:
    """The accelerator a launched VM runs on, and why; None if unknown."""
    from zoned.linux.files import open_regular

    try:
        with open(open_regular(os.path.join(vmdir, "accel"))) as f:
            return Verdict(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None
