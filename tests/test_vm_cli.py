"""`zoned run --backend vm` through the real CLI: the same commands as for zones, checked
from outside (the host's /proc, links, cgroups, another zone). TCG on these hosts; each
boot is ~2-4 s, so each test boots once or twice and checks several things."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time

import pytest

from conftest import ZONED

try:
    from zoned.vm.assets import kernel

    kernel()
except Exception as e:  # no guest kernel: `make setup` not run
    pytest.skip(f"no VM guest kernel: {e}", allow_module_level=True)


def qemus_of(root: str, program: bytes = b"qemu-system") -> list[int]:
    """Live QEMU processes (or, with program=b"zoned-vmwrap", their parents) whose command
    line names a VM dir under this state root."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if os.path.basename(cmd.split(b"\0")[0]).startswith(program) and \
                os.path.realpath(root).encode() + b"/" in cmd:
            found.append(int(name))
    return found


def cgroups_of(pid: int) -> dict[str, str]:
    """A process's cgroup in each hierarchy, from the host's /proc."""
    with open(f"/proc/{pid}/cgroup") as f:
        return {ctl: path for _, ctl, path in (line.rstrip("\n").split(":", 2) for line in f)}


def stopped_with(cli, timeout: float = 30) -> int | None:
    """The exit code of the root's one container, once `ps` shows it stopped."""
    deadline = time.monotonic() + timeout
    while True:
        [c] = json.loads(cli("ps", "-a", "--format", "json").stdout)
        if c["status"] == "stopped":
            return c.get("exit_code")
        assert time.monotonic() < deadline, c
        time.sleep(0.1)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def taps_of(root: str) -> list[str]:
    from zoned.network.definitions import owner_alias

    prefix = owner_alias(root, "")
    out = []
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifalias") as f:
                if f.read().strip().startswith(prefix):
                    out.append(name)
        except OSError:
            pass
    return out


def assert_nothing_left(root: str, cid: str) -> None:
    from zoned.runtime import cgroup_parent

    assert not os.path.exists(os.path.join(root, cid))
    assert qemus_of(root) == []
    assert taps_of(root) == []
    parent = cgroup_parent(root).lstrip("/")
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/{parent}/{cid}")
                   for c in ("memory", "pids", "cpu", "unified", ""))


def test_run_reports_the_guest_kernel_vcpus_and_exit_code(cli, zoned_root):
    p = cli("run", "--rm", "--backend", "vm", "--cpus", "2", "--memory", "300m", "--",
            "sh", "-c", "uname -r; grep -c processor /proc/cpuinfo; "
            "grep MemTotal /proc/meminfo; echo to-stderr >&2; exit 3", timeout=120)
    assert p.returncode == 3, p.stderr
    release, cpus, mem = p.stdout.splitlines()
    assert release != platform.release() and release.startswith("6.1.")
    assert cpus == "2"
    assert 200 << 10 < int(mem.split()[1]) <= 300 << 10  # kB: 300 MiB less the kernel's
    assert p.stderr == "to-stderr\n"
    assert_nothing_left(zoned_root, "x")
    assert os.listdir(zoned_root) == [] or all(n.startswith(".") for n in
                                               os.listdir(zoned_root))


def test_bad_vm_options_are_refused_and_leave_nothing(cli, zoned_root):
    p = cli("run", "--rm", "--backend", "vm", "--memory", "64m", "--", "true")
    assert p.returncode == 125 and "memory" in p.stderr and "128" in p.stderr
    p = cli("run", "--rm", "--backend", "vm", "--init", "--", "true")
    assert p.returncode == 125 and "--init" in p.stderr
    p = cli("run", "--rm", "--accel", "tcg", "--", "true")
    assert p.returncode == 125 and "--accel" in p.stderr
    p = cli("run", "--rm", "--backend", "vm", "--memory-cgroup", "shared", "--", "true")
    assert p.returncode == 125 and "--memory-cgroup shared" in p.stderr
    assert [n for n in os.listdir(zoned_root) if not n.startswith(".")] == []
    assert qemus_of(zoned_root) == []


def test_a_volume_is_shared_with_the_vm(cli, zoned_root, tmp_path):
    """-v HOST:GUEST as a virtio-9p export: the guest reads and writes the host's files."""
    (tmp_path / "in").write_text("from the host\n")
    p = cli("run", "--rm", "--backend", "vm", "-v", f"{tmp_path}:/data", "--", "sh", "-c",
            "cat /data/in; echo from the guest > /data/out", timeout=120)
    assert p.returncode == 0 and p.stdout == "from the host\n", p.stderr
    assert (tmp_path / "out").read_text() == "from the guest\n"


def test_it_gives_a_working_shell():
    """-it: the guest's shell on the virtio console, our terminal in raw mode (QEMU's)."""
    root = "/run/zoned-test-vm-tty"
    script = "echo in-$((6*7)); tty; exit 5\n"
    try:
        p = subprocess.run(["script", "-qec", f"{ZONED} --root {root} run --rm -it "
                            "--backend vm -- sh", "/dev/null"], input=script,
                           capture_output=True, text=True, timeout=120)
        out = p.stdout.replace("\r", "")
        assert "in-42" in out and "/dev/hvc0" in out, out
        assert p.returncode == 5, out
    finally:
        subprocess.run([ZONED, "--root", root, "gc"], capture_output=True)
        subprocess.run(["rm", "-rf", root])


def test_detached_vm_ps_exec_logs_stop_rm(cli, zoned_root):
    assert cli("run", "-d", "--name", "v", "--backend", "vm", "--hostname", "guest",
               "--", "sh", "-c", "echo started; trap 'echo bye; exit 0' TERM; "
               "while :; do sleep 0.2; done", timeout=120).stdout.strip() == "v"
    ps = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in ps] == [("v", "running")]
    wrapper = ps[0]["pid"]  # zoned-vmwrap, QEMU's parent: it records how QEMU ends
    [qemu] = qemus_of(zoned_root)
    assert qemus_of(zoned_root, b"zoned-vmwrap") == [wrapper] and parent_of(qemu) == wrapper
    assert "vm/tcg" in cli("ps", "-a").stdout or "vm/kvm" in cli("ps", "-a").stdout
    info = json.loads(cli("inspect", "v").stdout)
    assert info["backend"] == "vm" and info["vm"]["accel"] in ("tcg", "kvm")
    assert info["vm"]["reason"] and info["vm"]["memory_mib"] == 256
    assert info["stats"]["memory"]["usage"] > 64 << 20  # QEMU's memory, in its cgroup
    p = cli("exec", "v", "--", "sh", "-c", "hostname; cat /proc/1/comm; exit 4")
    assert p.returncode == 4 and p.stdout.split() == ["guest", "init"]  # PID 1: zoned-vminit, as /init, p.stderr
    assert cli("exec", "v", "--", "no-such-command").returncode == 127
    p = cli("exec", "-i", "v", "--", "cat", input="through the agent\n")
    assert p.stdout == "through the agent\n"
    assert "started" in cli("logs", "v").stdout
    top = cli("top", "v").stdout.splitlines()  # the guest's ps, through the agent
    assert top[0].split() == ["USER", "PID", "PPID", "TT", "COMMAND"], top
    assert any(ln.split()[2] == "1" and "sh -c echo started" in ln for ln in top[1:]), top
    assert not any("[" in ln or " ps -o" in ln for ln in top[1:]), top  # no kthreads, no ps
    cli("stop", "v", check=True, timeout=60)
    ps = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert ps[0]["status"] == "stopped" and ps[0]["exit_code"] == 0
    assert "exited (0)" in cli("ps", "-a").stdout
    assert "bye" in cli("logs", "v").stdout
    assert qemus_of(zoned_root) == []
    cli("rm", "v", check=True)
    assert_nothing_left(zoned_root, "v")


def test_a_vm_ended_by_a_signal_reports_128_plus_it(cli, zoned_root):
    """As podman reports a container: `stop` of a guest process that ignores SIGTERM ends
    in SIGKILL, 137; so does a QEMU killed from outside (the OOM killer, an admin), and a
    foreground run's exit code. zoned-vmwrap, QEMU's parent, records it (before, nobody
    waited for a detached VM's QEMU: "exited (None)")."""
    ignore_term = ["--", "sh", "-c", "trap '' TERM; echo trapped; while :; do sleep 0.2; done"]
    cli("run", "-d", "--name", "s", "--backend", "vm", *ignore_term, check=True, timeout=120)
    deadline = time.monotonic() + 30
    while "trapped" not in cli("logs", "s").stdout:  # (a TERM before the trap ends it: 143)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cli("stop", "-t", "1", "s", check=True, timeout=60)
    ps = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert [(c["id"], c["status"], c["exit_code"]) for c in ps] == [("s", "stopped", 137)]
    assert "exited (137)" in cli("ps", "-a").stdout
    assert cli("wait", "s").stdout.split() == ["137"]
    cli("rm", "s", check=True)

    cli("run", "-d", "--name", "o", "--backend", "vm", *ignore_term, check=True, timeout=120)
    [qemu] = qemus_of(zoned_root)
    os.kill(qemu, signal.SIGKILL)
    assert stopped_with(cli) == 137
    cli("rm", "o", check=True)
    assert_nothing_left(zoned_root, "o")

    fg = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--rm", "--name", "f",
                           "--backend", "vm", *ignore_term], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "ready" not in _ctl_of(zoned_root, "f"):
        assert time.monotonic() < deadline and fg.poll() is None
        time.sleep(0.05)
    [qemu] = qemus_of(zoned_root)
    os.kill(qemu, signal.SIGKILL)
    out, err = fg.communicate(timeout=60)
    assert fg.returncode == 137, err
    assert_nothing_left(zoned_root, "f")

    # kill -9 of the wrapper: QEMU dies with it (pdeathsig), unrecorded: unknown, -1 (as
    # `zoned wait` prints it), never a success's 0
    cli("run", "-d", "--name", "u", "--backend", "vm", *ignore_term, check=True, timeout=120)
    [wrapper] = qemus_of(zoned_root, b"zoned-vmwrap")
    os.kill(wrapper, signal.SIGKILL)
    assert stopped_with(cli) is None
    assert "exited (-1)" in cli("ps", "-a").stdout
    assert json.loads(cli("inspect", "u").stdout)["State"]["ExitCode"] == -1
    assert cli("wait", "u").stdout.split() == ["-1"]
    cli("rm", "u", check=True)
    assert_nothing_left(zoned_root, "u")


def _ctl_of(root: str, cid: str) -> str:
    """The guest's ctl lines of a VM of this root ("" until there are any)."""
    try:
        with open(os.path.join(root, cid, "vm", "ctl")) as f:
            return f.read()
    except OSError:
        return ""


def test_qemu_starts_in_the_vms_cgroups(cli, zoned_root):
    """QEMU is forked by zoned-vmwrap only once the wrapper is in the VM's cgroups: none of
    QEMU runs, or is charged, in the caller's (the OCI `create` of podman and containerd
    left it in theirs: the wrapper was moved after it had forked QEMU)."""
    cli("run", "-d", "--name", "c", "--backend", "vm", "--", "sleep", "1000", check=True,
        timeout=120)
    [qemu] = qemus_of(zoned_root)
    [wrapper] = qemus_of(zoned_root, b"zoned-vmwrap")
    ours = cgroups_of(os.getpid())
    for pid in (qemu, wrapper):
        cg = cgroups_of(pid)
        for ctl in [c for c in ("memory", "pids", "") if c in cg]:
            assert cg[ctl].endswith("/c") and cg[ctl] != ours[ctl], (pid, ctl, cg[ctl])
    cli("rm", "-f", "c", check=True, timeout=60)
    assert_nothing_left(zoned_root, "c")


def _memory_file(pid: int, v1: str, v2: str) -> str | None:
    """A memory cgroup file of pid's cgroup: the v1 controller's where mounted, else v2's."""
    cg = cgroups_of(pid)
    if "memory" in cg:
        return f"/sys/fs/cgroup/memory{cg['memory']}/{v1}"
    if "" in cg and os.path.exists(f"/sys/fs/cgroup{cg['']}/{v2}"):
        return f"/sys/fs/cgroup{cg['']}/{v2}"
    return None


def test_qemu_is_bounded_by_a_memory_limit_a_full_guest_stays_under(cli, zoned_root):
    """The VM's cgroup is limited to the guest's RAM + the TCG buffer + QEMU's overhead
    (what a guest makes QEMU allocate beyond its RAM had no bound before); a guest that
    fills its RAM keeps running, well under the limit."""
    from zoned.backends.vm import QEMU_OVERHEAD_MIB
    from zoned.vm.config import MachineSpec

    cli("run", "-d", "--name", "mem", "--backend", "vm", "--memory", "192m", "--",
        "sleep", "1000", check=True, timeout=120)
    [qemu] = qemus_of(zoned_root)
    limit_file = _memory_file(qemu, "memory.limit_in_bytes", "memory.max")
    if limit_file is None:
        cli("rm", "-f", "mem", check=True, timeout=60)
        pytest.skip("no memory controller for the VM's cgroup here")
    tb = MachineSpec(image="busybox", argv=["true"]).tb_size_mib
    with open(limit_file) as f:
        assert int(f.read()) == (192 + tb + QEMU_OVERHEAD_MIB) << 20
    # Both tmpfs (/dev/shm and the root's upper layer) filled: all of the guest's RAM; the
    # guest's own OOM killer may end the filler (its exit is then 137), not the host's QEMU.
    cli("exec", "mem", "--", "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M; "
        "dd if=/dev/zero of=/fill bs=1M", timeout=120)
    peak_file = _memory_file(qemu, "memory.max_usage_in_bytes", "memory.peak")
    if peak_file and os.path.exists(peak_file):
        with open(peak_file) as f:
            peak = int(f.read())
        assert 160 << 20 < peak < (192 + tb + QEMU_OVERHEAD_MIB // 2) << 20, peak >> 20
    ps = json.loads(cli("ps", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in ps] == [("mem", "running")]  # no OOM kill
    cli("rm", "-f", "mem", check=True, timeout=60)
    assert_nothing_left(zoned_root, "mem")


def test_restart_boots_the_vm_again_on_its_addresses_and_log(cli, zoned_root, monkeypatch,
                                                             tmp_path):
    """podman's restart of a Kata container, `virsh reboot`: the guest boots again (its
    writable layer, guest RAM, starts afresh), on the same network address, and its log
    goes on; a stopped VM is started."""
    monkeypatch.setenv("ZONED_SUBNET_POOL", os.environ.get("ZONED_SUBNET_POOL",
                                                           "10.185.0.0/16"))
    cli("network", "create", "vmrs", check=True)
    cli("run", "-d", "--name", "r", "--backend", "vm", "--network", "vmrs", "--", "sh", "-c",
        "echo boot; cat /tmp/mark 2>/dev/null; echo here > /tmp/mark; sleep 1000",
        check=True, timeout=120)
    [before] = json.loads(cli("inspect", "r").stdout)["network"]["addresses"]
    [old_qemu] = qemus_of(zoned_root)
    empty = tmp_path / "no-images"
    empty.mkdir()
    p = cli("--images", str(empty), "restart", "r")  # no image to boot: checked first
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "busybox" in p.stderr, p
    assert qemus_of(zoned_root) == [old_qemu]  # still running, still listed (podman's)
    assert cli("restart", "-t", "1", "r", timeout=120).stdout.strip() == "r"
    [qemu] = qemus_of(zoned_root)
    assert qemu != old_qemu
    after = json.loads(cli("inspect", "r").stdout)
    assert after["state"]["status"] == "running"
    assert [a["ip"] for a in after["network"]["addresses"]] == [before["ip"]]
    deadline = time.monotonic() + 30
    while cli("logs", "r").stdout.count("boot") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "here" not in cli("logs", "r").stdout  # a new guest: /tmp was RAM
    cli("stop", "-t", "1", "r", check=True, timeout=60)
    assert cli("restart", "r", timeout=120).returncode == 0  # a stopped VM: started
    assert json.loads(cli("ps", "--format", "json").stdout)[0]["status"] == "running"
    cli("rm", "-f", "r", check=True, timeout=60)
    assert_nothing_left(zoned_root, "r")
    cli("network", "rm", "vmrs", check=True)


def test_cp_both_ways_through_the_agent_and_a_hostile_guest_tar(cli, zoned_root, tmp_path):
    """podman cp with a Kata container: the guest's tar through the agent. Out of the guest
    nothing keeps a setuid bit; a guest whose tar sends entries beside the one asked for
    (root in the guest replaced /bin/tar) is refused in one line and writes nothing beside
    the destination; a stopped VM's files are gone with its RAM (one line)."""
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("hello\n")
    (src / "link").symlink_to("/etc/passwd")
    cli("run", "-d", "--name", "cp", "--backend", "vm", "--", "sleep", "1000", check=True,
        timeout=120)
    cli("cp", str(src), "cp:/tmp/", check=True, timeout=120)
    p = cli("exec", "cp", "--", "sh", "-c", "cat /tmp/d/f; readlink /tmp/d/link")
    assert p.stdout == "hello\n/etc/passwd\n", p.stderr
    cli("cp", str(src / "f"), "cp:/tmp/renamed", check=True, timeout=120)
    assert cli("exec", "cp", "--", "cat", "/tmp/renamed").stdout == "hello\n"

    cli("exec", "cp", "--", "sh", "-c", "mkdir -p /tmp/out/sub /tmp/outX && "
        "echo x > /tmp/out/sub/y && chmod 4755 /tmp/out/sub/y && echo evil > /tmp/outX/e",
        check=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    cli("cp", "cp:/tmp/out", str(dst), check=True, timeout=120)
    y = dst / "out" / "sub" / "y"
    assert y.read_text() == "x\n" and y.stat().st_mode & 0o7777 == 0o755

    cli("exec", "cp", "--", "sh", "-c", "rm /bin/tar && printf '#!/bin/sh\\n"
        "exec busybox tar -c -f - -C /tmp out outX\\n' > /bin/tar && chmod 755 /bin/tar",
        check=True)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    p = cli("cp", "cp:/tmp/out", str(hostile), timeout=120)
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "outX" in p.stderr, p
    assert not (hostile / "outX").exists() and not (tmp_path / "outX").exists()
    assert not any(n.startswith("out") and n != "out" for n in os.listdir(hostile))

    cli("stop", "-t", "1", "cp", check=True, timeout=60)
    p = cli("cp", "cp:/tmp/out", str(dst))
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "stopped" in p.stderr, p
    cli("rm", "cp", check=True)
    assert_nothing_left(zoned_root, "cp")


def test_kill_delivers_the_signal_to_the_guest_process(cli, zoned_root):
    cli("run", "-d", "--name", "k", "--backend", "vm", "--", "sleep", "1000",
        check=True, timeout=120)
    cli("kill", "k", "TERM", check=True)  # SIGTERM to sleep, in the guest: 128+15
    assert stopped_with(cli) == 143
    cli("rm", "k", check=True)
    assert_nothing_left(zoned_root, "k")


def test_a_vm_and_a_zone_talk_tcp_by_name(cli, zoned_root, monkeypatch):
    monkeypatch.setenv("ZONED_SUBNET_POOL", os.environ.get("ZONED_SUBNET_POOL",
                                                           "10.184.0.0/16"))
    cli("network", "create", "vmz", check=True)
    try:
        cli("run", "-d", "--name", "zweb", "--network", "vmz", "--", "sh", "-c",
            "echo from-zone > /tmp/i; while :; do nc -l -p 8080 < /tmp/i; done", check=True)
        cli("run", "-d", "--name", "vweb", "--backend", "vm", "--network", "vmz", "--",
            "sh", "-c", "echo from-vm > /tmp/i; while :; do nc -l -p 9090 < /tmp/i; done",
            check=True, timeout=120)
        p = cli("exec", "vweb", "--", "sh", "-c", "nc zweb 8080 </dev/null")
        assert p.stdout.strip() == "from-zone", p.stderr
        p = cli("exec", "zweb", "--", "sh", "-c", "nc vweb 9090 </dev/null")
        assert p.stdout.strip() == "from-vm", p.stderr
        net = json.loads(cli("inspect", "vweb").stdout)["network"]
        assert net["mode"] == "tap"
        tap = net["addresses"][0]["host_if"]
        assert os.path.exists(f"/sys/class/net/{tap}/tun_flags")  # a tap, on the bridge
        assert os.path.exists(f"/sys/class/net/{tap}/master")
        with open(f"/sys/class/net/{tap}/owner") as f:  # root's, not anyone's
            assert f.read().strip() == "0"
    finally:
        cli("rm", "-f", "zweb", "vweb")
        cli("network", "rm", "vmz")
    assert_nothing_left(zoned_root, "vweb")


def test_gc_after_zoned_is_killed_mid_boot(zoned_root, busybox, monkeypatch):
    """kill -9 of `zoned run --rm` while QEMU boots: QEMU dies with it (as a zone's init
    does), and `zoned gc` removes the record, the taps, the cgroup and the files."""
    monkeypatch.setenv("ZONED_SUBNET_POOL", os.environ.get("ZONED_SUBNET_POOL",
                                                           "10.184.0.0/16"))
    subprocess.run([ZONED, "--root", zoned_root, "network", "create", "vmgc"], check=True)
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--rm", "--name", "m",
                          "--backend", "vm", "--network", "vmgc", "--", "sleep", "1000"],
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not qemus_of(zoned_root):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 10
    while qemus_of(zoned_root):  # pdeathsig
        assert time.monotonic() < deadline
        time.sleep(0.02)
    subprocess.run([ZONED, "--root", zoned_root, "gc"], check=True, capture_output=True)
    assert_nothing_left(zoned_root, "m")
    subprocess.run([ZONED, "--root", zoned_root, "network", "rm", "vmgc"], check=True)


def test_an_oci_bundle_runs_as_a_vm(cli, zoned_root, tmp_path):
    """runc's run/create/start/state/delete on a bundle, booted as a VM (--backend vm or
    the bundle's annotation org.zoned.backend=vm): created = QEMU paused, start runs it."""
    bundle = tmp_path / "bundle"
    from zoned.images.store import ImageStore

    ImageStore().export_bundle("busybox", str(bundle))  # rootfs/
    cli("spec", "-b", str(bundle), check=True)  # runc's default config.json
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["sh", "-c", "uname -r; exit 7"])
    (bundle / "config.json").write_text(json.dumps(cfg))
    p = cli("run", "--bundle", str(bundle), "--backend", "vm", "b1", timeout=120, files=True)
    assert p.returncode == 7 and p.stdout.strip() != platform.release(), p.stderr
    assert_nothing_left(zoned_root, "b1")

    cfg["annotations"] = {"org.zoned.backend": "vm"}
    cfg["process"]["args"] = ["sleep", "1000"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    pid_file = tmp_path / "pid"
    cli("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "b2", check=True,
        timeout=120, files=True)
    st = json.loads(cli("state", "b2").stdout)
    assert st["status"] == "created" and st["pid"] == int(pid_file.read_text())
    [qemu] = qemus_of(zoned_root)  # started in the container's cgroups, not the caller's
    assert parent_of(qemu) == st["pid"]
    cg = cgroups_of(qemu)
    assert all(cg[c].endswith("/b2") for c in ("memory", "pids", "") if c in cg), cg
    cli("start", "b2", check=True)
    assert json.loads(cli("state", "b2").stdout)["status"] == "running"
    cli("kill", "b2", "KILL", check=True)
    deadline = time.monotonic() + 30
    while json.loads(cli("state", "b2").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cli("delete", "b2", check=True)
    assert_nothing_left(zoned_root, "b2")


def test_api_and_fixture_take_backend_vm(zoned_root, zone):
    import zoned

    r = zoned.run(["sh", "-c", "uname -r; cat; echo oops >&2; exit 3"], backend="vm",
                  root=zoned_root, input="from stdin\n", text=True)
    assert r.returncode == 3 and r.stdout.split("\n")[:2] == [r.stdout.split()[0],
                                                              "from stdin"]
    assert r.stdout.split()[0] != platform.release() and r.stderr == "oops\n"
    c = zone(["sh", "-c", "echo up; sleep 1000"], backend="vm", hostname="vmfix")
    e = c.exec(["sh", "-c", "hostname; cat"], input="x" * 200000)
    assert e.returncode == 0 and e.stdout.startswith("vmfix\n") and len(e.stdout) == 200006
    assert c.status == "running" and c.stats()["memory"]["usage"] > 64 << 20
    c.kill(signal.SIGTERM)
    assert c.wait(30) == 143
    assert "up" in c.logs()
    c.remove()
    assert_nothing_left(zoned_root, c.name)


def test_kvm_is_used_where_it_works():
    from zoned.vm import accel

    verdict = accel.detect()
    if verdict.accel != "kvm":
        pytest.skip(f"KVM-only check: this host runs VMs on TCG ({verdict.reason})")
    assert os.access("/dev/kvm", os.R_OK | os.W_OK)
