"""The machine facts kept next to every run's numbers: kernel, cgroup layout, CPUs,
memory, accelerator for VMs, KSM, and the versions of zoned, runc, podman, qemu, criu."""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the source tree (editable install)


def first_line(cmd: list[str], timeout: float = 20) -> str | None:
    """The first non-empty line a tool prints (its --version), or None if it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    for ln in (p.stdout + "\n" + p.stderr).splitlines():
        if ln.strip():
            return ln.strip()
    return None


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def fstype(path: str) -> str | None:
    """The file system type of the mount that holds `path` (longest mount point prefix)."""
    best, found = "", None
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            parts = ln.split()
            mnt = parts[4]
            fs = parts[parts.index("-", 6) + 1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, found = mnt, fs
    return found


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def kvm_usable() -> tuple[bool, str]:
    """Whether QEMU could use KVM here: /dev/kvm opens and KVM_CREATE_VM succeeds (a
    nested host may have the node but no usable VMX/SVM). (usable, why)."""
    import fcntl

    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"/dev/kvm: {e.strerror}"
    try:
        vm = fcntl.ioctl(fd, 0xAE01, 0)  # KVM_CREATE_VM
        os.close(vm)
        return True, "KVM_CREATE_VM works"
    except OSError as e:
        return False, f"KVM_CREATE_VM: {e.strerror}"
    finally:
        os.close(fd)


def git_head() -> tuple[str | None, list[str]]:
    """HEAD of the source tree and its modified files under zoned/ (None outside git)."""
    if not (REPO / ".git").exists() or not shutil.which("git"):
        return None, []
    head = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    p = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "zoned"],
                       capture_output=True, text=True)
    return head, sorted(ln[3:] for ln in p.stdout.splitlines() if ln.strip())


def machine(zoned_cli: str, accelerator: str | None = None) -> dict:
    """Every fact a reader needs to judge the numbers. `accelerator` is what the VM
    backend reported using (None when no VM ran); the KVM probe is recorded anyway."""
    from zoned.cgroups import detect

    mem = meminfo()
    kvm_ok, kvm_why = kvm_usable()
    head, modified = git_head()
    ksm_run = read_int("/sys/kernel/mm/ksm/run")
    qemu = shutil.which("qemu-system-x86_64")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cgroup_layout": detect(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_mib": round(mem.get("MemTotal", 0) / 1024),
        "mem_available_mib_at_start": round(mem.get("MemAvailable", 0) / 1024),
        "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "pid_max": read_int("/proc/sys/kernel/pid_max"),
        "run_fstype": fstype("/run"),
        "accelerator": accelerator,
        "kvm": {"usable": kvm_ok, "why": kvm_why},
        "ksm": None if ksm_run is None else {
            "run": ksm_run, "pages_sharing": read_int("/sys/kernel/mm/ksm/pages_sharing")},
        "versions": {
            "zoned": first_line([zoned_cli, "--version"]),
            "python": sys.version.split()[0],
            "runc": first_line(["runc", "--version"]) if shutil.which("runc") else None,
            "podman": first_line(["podman", "--version"]) if shutil.which("podman") else None,
            "qemu": first_line([qemu, "--version"]) if qemu else None,
            "criu": first_line(["criu", "--version"]) if shutil.which("criu") else None,
            "iperf3": first_line(["iperf3", "--version"]) if shutil.which("iperf3") else None,
        },
        "git_head": head,
        "zoned_tree_modified": modified,
        "zoned_cli": zoned_cli,
        "zoned_cli_git_head": cli_tree_head(zoned_cli),
    }


def cli_tree_head(zoned_cli: str) -> str | None:
    """HEAD of the source tree whose venv holds `zoned_cli` (TREE/.venv/bin/zoned), which
    may not be the tree of this benchmark (`zoned bench --zoned`); None if unknown."""
    try:
        tree = Path(zoned_cli).resolve().parents[2]
    except (IndexError, OSError):
        return None
    if not (tree / ".git").exists():
        return None
    return first_line(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"])
