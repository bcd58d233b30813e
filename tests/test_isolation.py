"""Isolation as seen from inside and checked from the host: pid, uts, mount, ipc, net,
cgroup namespaces, pivot_root, /dev, /proc masking, capabilities and seccomp."""
from __future__ import annotations

import os
import socket
import time

import zoned
from zoned.runtime.steps import shared_skeleton


def sh(script: str, zoned_root, **kw) -> zoned.Result:
    return zoned.run(["sh", "-c", script], root=zoned_root, text=True, **kw)


def test_pid_1_and_host_pids_invisible(zoned_root, busybox):
    r = sh("echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '", zoned_root)
    assert r.returncode == 0, r.stderr
    first, pids = r.stdout.splitlines()
    assert first == "1"
    visible = {int(p) for p in pids.split()}
    # only this container's own sh, ls, grep, sort, tr: numbered from 1 in its namespace
    assert visible == set(range(1, len(visible) + 1)) and len(visible) <= 6
    host_pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    assert len(host_pids) > 20


def test_hostname_isolated(zoned_root, busybox):
    host = socket.gethostname()
    r = sh("hostname; cat /etc/hostname; hostname other 2>/dev/null || echo denied", zoned_root,
           hostname="inner")
    assert r.stdout.split()[0] == "inner" and r.stdout.split()[-1] == "denied"
    assert socket.gethostname() == host != "inner"
    r = sh("hostname", zoned_root, name="named-zone")
    assert r.stdout.strip() == "named-zone"


def test_host_mounts_invisible_and_root_unreachable(zoned_root, busybox, tmp_path):
    (tmp_path / "host-secret").write_text("x")
    r = sh(f"cat /proc/self/mountinfo; echo ---; ls {tmp_path} 2>&1; "
           "cd /; cd ../../..; pwd; ls /proc/1/root/ | tr '\\n' ' '; echo; "
           "ls /proc/1/root/../../ | tr '\\n' ' '", zoned_root)
    mountinfo, rest = r.stdout.split("---\n")
    points = [line.split()[4] for line in mountinfo.splitlines()]
    assert points[0] == "/"
    host_points = {line.split()[4] for line in open("/proc/self/mountinfo")}
    # only the container's own tree: /, /proc, /dev..., nothing of the host's
    assert not [p for p in points if p.startswith(("/run/zoned", "/work", str(tmp_path)))]
    assert "/proc/sys" in points and "/sys/fs/cgroup" in points
    assert len(host_points - set(points)) > 0
    assert "No such file" in rest
    lines = rest.splitlines()
    assert lines[1] == "/"
    ctr_root = set(lines[2].split())
    assert "work" not in ctr_root and "bin" in ctr_root
    assert ctr_root == set(lines[3].split())  # ../.. of the root is the root


def test_dev_is_minimal(zoned_root, busybox):
    r = sh("ls /dev | tr '\\n' ' '; echo; ls -l /dev/null | cut -c1", zoned_root)
    names = set(r.stdout.splitlines()[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
            "mqueue"} <= names
    assert not names & {"sda", "vda", "mem", "kmsg", "loop0", "kvm"}
    assert r.stdout.splitlines()[1] == "c"


def test_proc_masked_and_sys_readonly(zoned_root, busybox):
    # (this kernel has no /proc/kcore or /proc/sysrq-trigger; the masks skip what is absent)
    assert os.path.getsize("/proc/keys") == 0 and open("/proc/keys").read()  # host: readable
    r = sh("wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
           "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo rw || echo ro; "
           "touch /sys/x 2>/dev/null && echo rw || echo ro; "
           "touch /proc/bus/x 2>/dev/null && echo rw || echo ro", zoned_root)
    assert r.stdout.split() == ["0", "0", "0", "ro", "ro", "ro"], r.stdout + r.stderr


def test_capabilities_dropped_and_no_new_privs(zoned_root, busybox):
    r = sh("grep -E 'Cap(Eff|Bnd|Prm)|NoNewPrivs|Seccomp:' /proc/self/status", zoned_root)
    fields = dict(line.split(":\t") for line in r.stdout.splitlines())
    podman_caps = 0x00000000800405fb  # chown dac_override fowner fsetid kill setgid setuid
    # setpcap net_bind_service sys_chroot setfcap
    assert int(fields["CapEff"], 16) == podman_caps
    assert int(fields["CapBnd"], 16) == podman_caps
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


def test_privileged_operations_denied(zoned_root, busybox, tmp_path):
    script = ";".join([
        "mount -t tmpfs none /mnt 2>/dev/null && echo mount:ok || echo mount:denied",
        "mknod /tmp/sda b 8 0 2>/dev/null && echo mknod:ok || echo mknod:denied",
        "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo raw:ok || echo raw:denied",
        "unshare -U true 2>/dev/null && echo userns:ok || echo userns:denied",
        "hostname -F /dev/null 2>/dev/null; sysctl -w kernel.hostname=x >/dev/null 2>&1 "
        "&& echo sysctl:ok || echo sysctl:denied",
        "chroot / true && echo chroot:ok || echo chroot:denied",
    ])
    r = sh(script, zoned_root)
    got = dict(x.split(":") for x in r.stdout.split())
    assert got == {"mount": "denied", "mknod": "denied", "raw": "denied", "userns": "denied",
                   "sysctl": "denied", "chroot": "ok"}, r.stdout


def test_seccomp_denies_keyctl(zoned_root, busybox, tmp_path):
    # busybox has no keyctl applet: use the raw syscall through a tiny static helper
    src = tmp_path / "k.c"
    src.write_text('#include <unistd.h>\n#include <sys/syscall.h>\n#include <errno.h>\n'
                   '#include <stdio.h>\nint main(void){long r=syscall(SYS_keyctl,0,0,0,0,0);'
                   'printf("%ld %d\\n",r,errno);r=syscall(SYS_bpf,0,0,0);'
                   'printf("%ld %d\\n",r,errno);return 0;}\n')
    import subprocess

    subprocess.run(["cc", "-static", "-o", str(tmp_path / "k"), str(src)], check=True)
    r = zoned.run(["/probe/k"], root=zoned_root, text=True, volumes=[f"{tmp_path}:/probe:ro"])
    assert r.stdout.split() == ["-1", "1", "-1", "1"], r.stdout + r.stderr  # EPERM, EPERM


def test_no_host_fds_leak(zoned_root, busybox):
    extra = os.open("/etc/hostname", os.O_RDONLY)  # an inheritable fd in the caller
    os.set_inheritable(extra, True)
    try:
        r = sh("ls /proc/self/fd | tr '\\n' ' '", zoned_root)
    finally:
        os.close(extra)
    assert sorted(int(x) for x in r.stdout.split()) == [0, 1, 2, 3]  # 3: ls's own dir fd


def test_network_namespace_has_only_lo(zoned_root, busybox):
    r = sh("ls /sys/class/net | tr '\\n' ' '; ip -o link 2>/dev/null | wc -l; "
           "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; cat /proc/net/dev | wc -l", zoned_root)
    assert r.stdout.split()[0] == "lo"


def test_cgroup_namespace_shows_own_root(zoned_root, busybox):
    r = sh("cat /proc/self/cgroup", zoned_root)
    for line in r.stdout.splitlines():
        assert line.rsplit(":", 1)[1] == "/", line


def test_readonly_rootfs_and_volumes(zoned_root, busybox, tmp_path):
    (tmp_path / "in").write_text("from host\n")
    r = sh("cat /data/in; echo out > /data/out; touch /x 2>/dev/null && echo rw || echo ro; "
           "echo t > /tmp/t && echo tmp-rw", zoned_root, read_only=True,
           volumes=[f"{tmp_path}:/data"])
    assert r.stdout.splitlines() == ["from host", "ro", "tmp-rw"]  # /tmp: a tmpfs, as podman
    assert (tmp_path / "out").read_text() == "out\n"
    r = sh("echo x > /data/y 2>/dev/null && echo rw || echo ro", zoned_root,
           volumes=[f"{tmp_path}:/data:ro"])
    assert r.stdout.strip() == "ro" and not (tmp_path / "y").exists()


def test_user_env_workdir(zoned_root, busybox):
    r = sh('id -u; id -g; pwd; echo "$FOO"', zoned_root, user="1000:1000",
           env=["FOO=bar"], workdir="/tmp")
    assert r.stdout.split() == ["1000", "1000", "/tmp", "bar"]
    r = sh("id -un", zoned_root, user="nobody")
    assert r.stdout.strip() == "nobody"


def test_overlay_writes_are_per_container(zoned_root, busybox):
    r = sh("echo changed > /etc/hostname; cat /etc/hostname", zoned_root)
    assert r.stdout.strip() == "changed"
    assert (busybox.rootfs / "etc/hostname").read_text().strip() != "changed"
    r = sh("cat /etc/hostname", zoned_root)
    assert r.stdout.strip() != "changed"


def _devices(script_out: str) -> dict[str, int]:
    """`stat -c '%n %d'` lines -> {path: device number}."""
    return {p: int(d) for p, d in (line.split() for line in script_out.splitlines())}


def test_masked_dirs_and_cgroup_skeleton_are_binds_not_superblocks(cli):
    """A masked directory and v1's /sys/fs/cgroup are read-only binds of a skeleton dir
    (zoned.runtime.steps.make_skeleton; the host's, shared by zones that cannot remount),
    not a tmpfs each: every superblock costs a slot in every memory cgroup.
    Nothing can be written, run or made there."""
    from zoned.cgroups import hierarchies

    v1 = not (len(hierarchies()) == 1 and hierarchies()[0].fstype == "cgroup2")
    cli("run", "-d", "--name", "skel", "busybox", "sleep", "60", check=True)
    shared = shared_skeleton()
    host_dev = os.stat(os.path.join(shared, "empty")).st_dev
    assert not os.path.exists(os.path.join(cli.root, "skel", "skel"))  # none of its own
    dirs = ["/sys/firmware", "/proc/acpi"] + (["/sys/fs/cgroup"] if v1 else [])
    r = cli("exec", "skel", "sh", "-c",
            "for d in " + " ".join(dirs) + "; do [ -d $d ] && stat -c '%n %d' $d; done",
            check=True)
    devs = _devices(r.stdout)
    assert "/sys/firmware" in devs and set(devs.values()) == {host_dev}, (devs, host_dev)
    r = cli("exec", "skel", "sh", "-c",
            "touch /sys/firmware/x 2>&1; " + ("mkdir /sys/fs/cgroup/y 2>&1; " if v1 else "") +
            "grep -E ' /sys/firmware | /sys/fs/cgroup ' /proc/self/mountinfo | cut -d' ' -f6")
    assert r.stdout.count("Read-only file system") == 1 + v1, r.stdout
    for opts in r.stdout.split()[-1 - v1:]:
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts.split(",")), r.stdout
    assert os.listdir(os.path.join(shared, "empty")) == []
    cli("rm", "-f", "skel", check=True)
    assert not os.path.exists(os.path.join(cli.root, "skel"))


def test_a_zone_writing_its_unlocked_mask_reaches_no_other_zone(cli):
    """With CAP_SYS_ADMIN a zone can remount its masks read-write (as with runc's tmpfs).
    Such a zone gets a skeleton of its own: what it writes lands there, never in the shared
    one another zone's masked dirs show, and is removed with it."""
    cli("run", "-d", "--name", "other", "busybox", "sleep", "60", check=True)
    r = cli("run", "-d", "--name", "admin", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
            "mount -o remount,bind,rw /sys/firmware && echo planted > /sys/firmware/x && "
            "sleep 60", check=True)
    own = os.path.join(cli.root, "admin", "skel", "empty", "x")
    deadline = time.monotonic() + 10
    while not os.path.exists(own) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open(own).read() == "planted\n"
    r = cli("exec", "other", "ls", "-A", "/sys/firmware", "/proc/acpi", check=True)
    assert "x" not in r.stdout.split(), r.stdout
    assert os.listdir(os.path.join(shared_skeleton(), "empty")) == []
    cli("rm", "-f", "admin", "other", check=True)
    assert not os.path.exists(os.path.join(cli.root, "admin"))


def test_every_cgroup_hierarchy_shows_the_zones_own_cgroup_read_only(zoned_root, busybox):
    """Each /sys/fs/cgroup hierarchy in the zone is its own cgroup (bound, not a fresh
    cgroupfs mount: see zoned.child.rootfs.mount_cgroups), holding only its processes, and
    read-only."""
    r = sh("cd /sys/fs/cgroup; for h in $(ls); do [ -f $h/cgroup.procs ] || continue; "
           "echo $h $(cat $h/cgroup.procs | tr '\\n' ,) "
           "$(echo 1 2>&1 > $h/cgroup.procs | grep -c Read-only); done", zoned_root)
    rows = [line.split() for line in r.stdout.splitlines()]
    assert len(rows) >= 1, r.stdout + r.stderr
    for name, procs, readonly in rows:
        pids = {int(p) for p in procs.strip(",").split(",")}
        # the zone's own: its init is 1, and no process outside its pid namespace (0)
        assert 1 in pids and 0 not in pids and len(pids) < 8, (name, procs)
        assert readonly == "1", (name, r.stdout)


def test_the_hosts_console_is_no_device_a_zone_may_use(cli):
    """The device allow-list has no c 5:1 (the host's /dev/console; session 21's audit: a
    zone with CAP_MKNOD, which `zoned spec` bundles and CRI give, opened it and read the
    host's ttyS0), as runc since 1.0. A -t zone's /dev/console is its own pty."""
    p = cli("run", "--rm", "--cap-add", "MKNOD", "--", "sh", "-c",
            "mknod /tmp/console c 5 1 && exec 3<>/tmp/console && echo opened")
    assert "opened" not in p.stdout and p.returncode != 0, (p.stdout, p.stderr)
    p = cli("run", "--rm", "--cap-add", "MKNOD", "--", "sh", "-c",
            "mknod /tmp/null c 1 3 && exec 3<>/tmp/null && echo opened")
    assert p.stdout == "opened\n", p.stderr  # (what the allow-list does allow still works)
