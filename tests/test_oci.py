"""The runc-compatible OCI commands and config.json fields, each checked from inside the
container or from the host (runtime-spec runtime.md and config.md)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import ZONED, process_alive, zone_state


@pytest.fixture
def bundle(tmp_path, busybox):
    """A bundle with a copy of the busybox image (tests write into it) and runc's default
    config (zoned spec)."""
    import shutil

    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox.rootfs, b / "rootfs", symlinks=True)
    subprocess.run([ZONED, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False

    def write(args, raw=None, **changes):
        if raw is not None:  # the document as given, whatever its shape
            (b / "config.json").write_text(json.dumps(raw))
            return raw
        c = json.loads(json.dumps(cfg))
        c["process"]["args"] = args
        for path, value in changes.items():
            node = c
            *parents, last = path.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        (b / "config.json").write_text(json.dumps(c))
        return c

    write.path = b
    write.cfg = cfg
    return write


def oci_run(cli, bundle_dir, cid="t1", timeout=30):
    """`zoned run --bundle`: create, start, wait, delete; stdout of the container."""
    return cli("run", "--bundle", str(bundle_dir), cid, timeout=timeout)


def test_spec_writes_runc_default(tmp_path):
    subprocess.run([ZONED, "spec", "--bundle", str(tmp_path)], check=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ociVersion"] == "1.2.0" and cfg["root"]["path"] == "rootfs"
    assert "CAP_NET_RAW" in cfg["process"]["capabilities"]["bounding"]  # runc's set
    p = subprocess.run([ZONED, "spec", "--bundle", str(tmp_path)], capture_output=True,
                       text=True)
    assert p.returncode == 125 and "already exists" in p.stderr
    (tmp_path / "config.json").unlink()
    subprocess.run([ZONED, "spec", "--rootless", "--bundle", str(tmp_path)], check=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"] and cfg["linux"]["uidMappings"]


def test_state_transitions(cli, bundle):
    bundle(["sleep", "1000"])
    b = str(bundle.path)
    assert cli("start", "nope").returncode == 125
    assert cli("create", "--bundle", b, "s1", files=True).returncode == 0
    assert cli("create", "--bundle", b, "s1", files=True).returncode == 125  # id in use
    st = json.loads(cli("state", "s1").stdout)
    assert st["status"] == "created" and st["ociVersion"] and st["pid"] > 0
    assert set(st) >= {"ociVersion", "id", "status", "pid", "bundle", "rootfs", "created",
                       "owner", "annotations"}
    assert cli("resume", "s1").returncode == 125  # not paused
    assert cli("delete", "s1").returncode == 125  # created, not stopped
    assert json.loads(cli("state", "s1").stdout)["status"] == "created"  # unchanged
    assert cli("start", "s1").returncode == 0
    assert json.loads(cli("state", "s1").stdout)["status"] == "running"
    assert cli("start", "s1").returncode == 125
    assert cli("pause", "s1").returncode == 0
    assert json.loads(cli("state", "s1").stdout)["status"] == "paused"
    assert cli("pause", "s1").returncode == 125
    assert cli("resume", "s1").returncode == 0
    assert cli("kill", "s1", "9").returncode == 0
    assert _wait_status(cli, "s1", "stopped")
    assert cli("kill", "s1", "TERM").returncode == 125  # only created/running
    assert cli("start", "s1").returncode == 125
    assert cli("delete", "s1").returncode == 0
    assert cli("state", "s1").returncode == 125


def test_kill_created_and_delete_force(cli, bundle):
    bundle(["sleep", "1000"])
    cli("create", "--bundle", str(bundle.path), "k1", files=True, check=True)
    assert cli("kill", "k1", "KILL").returncode == 0  # allowed while created
    assert _wait_status(cli, "k1", "stopped")
    assert cli("delete", "k1").returncode == 0
    cli("create", "--bundle", str(bundle.path), "k2", files=True, check=True)
    cli("start", "k2", check=True)
    assert cli("delete", "--force", "k2").returncode == 0
    assert cli("delete", "--force", "k2").returncode == 0  # gone already: fine, as runc
    assert cli("delete", "k2").returncode == 125
    assert cli("list", "--format", "json").stdout.strip() in ("[]", "")


def test_kill_all_and_ps(cli, bundle):
    bundle(["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    cli("create", "--bundle", str(bundle.path), "ka", files=True, check=True)
    cli("start", "ka", check=True)
    time.sleep(0.2)
    pids = json.loads(cli("ps", "--format", "json", "ka").stdout)
    assert len(pids) == 3
    assert cli("kill", "--all", "ka", "KILL").returncode == 0
    assert _wait_status(cli, "ka", "stopped")
    for p in pids:
        assert not os.path.exists(f"/proc/{p}") or "Z" in open(f"/proc/{p}/stat").read()


def test_kill_all_reaches_what_outlived_the_init(cli, bundle, tmp_path):
    """Without a pid namespace of its own, what the init started outlives it in the
    container's cgroup. containerd's shim then sends `kill --all ID 9`: runc signals the
    leftovers and exits 0; so must zoned (it refused a stopped container: they lived on)."""
    c = bundle.cfg
    namespaces = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "pid"]
    pidfile = tmp_path / "left.pid"
    bundle(["sh", "-c", "sleep 1000 & echo $! > /left.pid"], **{
        "linux.namespaces": namespaces,
        "mounts": c["mounts"] + [{"destination": "/left.pid", "type": "bind",
                                  "source": str(pidfile), "options": ["rbind", "rw"]}]})
    pidfile.write_text("")
    cli("create", "--bundle", str(bundle.path), "left", files=True, check=True)
    cli("start", "left", check=True)
    assert _wait_status(cli, "left", "stopped")
    left = int(pidfile.read_text())  # a host pid: no pid namespace
    assert "sleep" in open(f"/proc/{left}/cmdline").read()
    p = cli("kill", "left", "KILL")  # the init alone: gone, and said as runc says it
    assert p.returncode == 125 and "container not running" in p.stderr
    assert process_alive(left)
    assert cli("kill", "--all", "left", "KILL").returncode == 0
    deadline = time.monotonic() + 10
    while process_alive(left) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(left)
    assert cli("kill", "--all", "left", "KILL").returncode == 0  # nothing left: still fine
    assert cli("delete", "left").returncode == 0


def test_run_bundle_exit_code_and_pid_file(cli, bundle, tmp_path):
    bundle(["sh", "-c", "echo out; exit 9"])
    p = oci_run(cli, bundle.path)
    assert p.returncode == 9 and p.stdout == "out\n"
    assert cli("state", "t1").returncode == 125  # deleted after the run
    bundle(["sleep", "1000"])
    pidfile = tmp_path / "pid"
    cli("create", "--bundle", str(bundle.path), "--pid-file", str(pidfile), "pf",
        files=True, check=True)
    assert int(pidfile.read_text()) == json.loads(cli("state", "pf").stdout)["pid"]


def test_process_fields(cli, bundle):
    c = bundle(["sh", "-c", "id -u; id -g; id -G; umask; pwd; echo $FOO; "
                "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | cut -f2; "
                "cat /proc/self/oom_score_adj; ulimit -n; grep NoNewPrivs /proc/self/status"],
               **{"process.user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20],
                                   "umask": 0o027},
                  "process.cwd": "/tmp/newdir",
                  "process.env": ["PATH=/bin:/usr/bin", "FOO=bar"],
                  "process.oomScoreAdj": 123,
                  "process.noNewPrivileges": False,
                  "process.rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}],
                  "process.capabilities": {
                      "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"],
                      "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                      "inheritable": ["CAP_NET_BIND_SERVICE"],
                      "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                      "ambient": ["CAP_NET_BIND_SERVICE"]}})
    assert c["process"]["cwd"] == "/tmp/newdir"
    out = oci_run(cli, bundle.path).stdout.split("\n")
    assert out[0:3] == ["1000", "1000", "1000 10 20"]
    assert out[3] == "0027" and out[4] == "/tmp/newdir" and out[5] == "bar"
    inh, prm, eff, bnd, amb = (int(x, 16) for x in out[6:11])
    nbs, kill, chown = 1 << 10, 1 << 5, 1 << 0
    # a non-root user keeps only the ambient set across exec: permitted = effective = ambient
    assert (inh, prm, eff, amb) == (nbs, nbs, nbs, nbs)
    assert bnd == nbs | kill | chown
    assert out[11] == "123" and out[12] == "256"
    assert out[13].split()[-1] == "0"


def test_hostname_domainname_sysctl_readonly_masked(cli, bundle):
    bundle(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname; "
            "cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/msgmax; "
            "touch /x 2>/dev/null && echo rw || echo ro; "
            "cat /etc/hostname > /dev/null && echo masked-readable; "
            "cat /etc/passwd 2>&1 | head -c 5; echo"],
           **{"hostname": "hn", "domainname": "dn.example",
              "linux.sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"},
              "root.readonly": True,
              "linux.maskedPaths": ["/etc/passwd"]})
    out = oci_run(cli, bundle.path).stdout.split("\n")
    assert out[:5] == ["hn", "dn.example", "1", "4096", "ro"]
    assert out[5] == "masked-readable" and out[6] == ""  # /etc/passwd masked: empty


def test_bad_sysctl_fails_cleanly(cli, bundle, zoned_root):
    bundle(["true"], **{"linux.sysctl": {"kernel.no_such_thing": "1"}})
    p = oci_run(cli, bundle.path)
    assert p.returncode != 0 and "kernel.no_such_thing" in p.stderr
    assert zone_state(zoned_root) == []


def test_mounts_bind_ro_propagation(cli, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hostfile\n")
    bundle(["sh", "-c", "cat /mnt/b/f; touch /mnt/b/g 2>/dev/null && echo rw || echo ro; "
            "grep ' /mnt/t ' /proc/self/mountinfo | cut -d' ' -f7-8; "
            "mount | grep ' /mnt/t ' | grep -o 'size=[0-9]*k'"],
           mounts=bundle.cfg["mounts"] + [
               {"destination": "/mnt/b", "type": "bind", "source": str(src),
                "options": ["rbind", "ro", "rslave"]},
               {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "size=1024k"]}])
    out = oci_run(cli, bundle.path).stdout.split("\n")
    assert out[0] == "hostfile" and out[1] == "ro"
    assert out[3] == "size=1024k"


def test_relative_bind_source_is_the_bundles_whatever_the_callers_cwd(cli, bundle, tmp_path):
    """A bind mount's relative source names a path in the bundle, as runc reads it; a
    directory of that name in the caller's cwd is not what the zone gets."""
    import shutil

    (bundle.path / "data").mkdir()
    (bundle.path / "data" / "f").write_text("bundle\n")
    elsewhere = tmp_path / "cwd"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "f").write_text("caller\n")
    bundle(["cat", "/mnt/f"], mounts=bundle.cfg["mounts"] + [
        {"destination": "/mnt", "type": "bind", "source": "data", "options": ["rbind", "ro"]}])
    zoned = subprocess.run([ZONED, "--root", cli.root, "run", "--bundle", str(bundle.path),
                            "relsrc"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert (zoned.returncode, zoned.stdout) == (0, "bundle\n"), zoned.stderr
    runc = shutil.which("runc")
    if runc:  # the same bundle, the same cwd
        root = tmp_path / "runc-root"
        r = subprocess.run([runc, "--root", str(root), "run", "--bundle", str(bundle.path),
                            "relsrc"], cwd=elsewhere, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        subprocess.run([runc, "--root", str(root), "delete", "-f", "relsrc"],
                       capture_output=True)
        assert r.stdout == zoned.stdout, r.stderr


def test_a_bundle_cannot_set_zoneds_own_annotations(cli, bundle, tmp_path):
    """org.zoned.rootfs.lower names the overlay's lower dir, a host path zoned's own front
    ends set: from a bundle, = / would make the host's root the container's (found by
    session 20's audit). Refused, one line, nothing made; runc runs the bundle's rootfs."""
    canary = tmp_path / "canary"
    canary.write_text("host secret\n")
    for key, value in (("org.zoned.rootfs.lower", "/"), ("org.zoned.volumes.anonymous", "x")):
        bundle(["cat", str(canary)], annotations={key: value})
        p = oci_run(cli, bundle.path, cid="ann1")
        assert p.returncode == 125 and key in p.stderr and "host secret" not in p.stdout, p
        assert cli("ps", "-aq").stdout == ""


def test_exec_in_a_container_with_an_oom_score_adj(cli, bundle):
    """process.oomScoreAdj (kubelet sets it on every pod container, and CRI's exec copies
    the process): exec used to fail, writing /proc/self of a pid namespace it is not in
    (session 20's audit). The exec'd process gets the score, as the init does."""
    bundle(["sleep", "100"], **{"process.oomScoreAdj": 500})
    cli("create", "--bundle", str(bundle.path), "oom1", check=True, files=True)
    cli("start", "oom1", check=True)
    p = cli("exec", "oom1", "--", "cat", "/proc/self/oom_score_adj")
    assert (p.returncode, p.stdout) == (0, "500\n"), p.stderr
    cli("delete", "-f", "oom1", check=True)


def test_a_console_socket_nobody_listens_on_makes_no_container(cli, bundle, tmp_path):
    """runc dials --console-socket first; zoned made the container, then failed to send
    its pty and left it created, with its pid file (session 20's audit). One line naming
    the flag, nothing left."""
    bundle(["sleep", "100"], **{"process.terminal": True})
    pid_file = tmp_path / "pid"
    p = cli("create", "--bundle", str(bundle.path), "--console-socket",
            str(tmp_path / "nobody"), "--pid-file", str(pid_file), "tty1", files=True)
    assert p.returncode == 125 and "--console-socket" in p.stderr, p.stderr
    assert cli("ps", "-aq").stdout == "" and not pid_file.exists()


def test_devices(cli, bundle):
    bundle(["sh", "-c", "ls -l /dev/mynull | cut -c1; echo x > /dev/mynull && echo ok; "
            "head -c1 /dev/mem 2>&1 | grep -c 'No such'"],
           **{"linux.devices": [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                 "fileMode": 0o666, "uid": 0, "gid": 0}],
              "linux.resources": {"devices": [
                  {"allow": False, "access": "rwm"},
                  {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}})
    out = oci_run(cli, bundle.path).stdout.split("\n")
    assert out[:3] == ["c", "ok", "1"]


def test_user_namespace(cli, bundle):
    bundle(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
            "stat -c %u /bin/busybox; echo $$"],
           **{"linux.namespaces": bundle.cfg["linux"]["namespaces"] + [{"type": "user"}],
              "linux.uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
              "linux.gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]})
    # the namespace's root (host uid 200000) must be able to reach the bundle, as with runc
    for d in [bundle.path, *bundle.path.parents][:4]:
        os.chmod(d, 0o755)
    p = oci_run(cli, bundle.path)
    out = p.stdout.split()
    assert out[:6] == ["0", "200000", "65536", "0", "200000", "65536"], p.stderr
    assert out[6] == "0"          # root inside
    assert out[7] == "65534"      # host root's files are unmapped: nobody
    assert out[8] == "1"


def test_seccomp_custom_profile(cli, bundle):
    bundle(["sh", "-c", "uname -m; cat /etc/hostname >/dev/null; echo $?"],
           **{"linux.seccomp": {
               "defaultAction": "SCMP_ACT_ALLOW",
               "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": 38}]}})
    p = oci_run(cli, bundle.path)
    assert "Function not implemented" in p.stderr or p.stdout.split()[0] != "x86_64"


def test_personality_and_time_offsets(cli, bundle):
    host_uptime = float(open("/proc/uptime").read().split()[0])
    bundle(["sh", "-c", "uname -m; cut -d' ' -f1 /proc/uptime"],
           **{"linux.personality": {"domain": "LINUX32"},
              "linux.namespaces": bundle.cfg["linux"]["namespaces"] + [{"type": "time"}],
              "linux.timeOffsets": {"boottime": {"secs": 86400 * 365, "nanosecs": 0},
                                    "monotonic": {"secs": 1000, "nanosecs": 0}}})
    out = oci_run(cli, bundle.path).stdout.split()
    assert out[0] in ("i686", "i386")
    assert float(out[1]) - host_uptime > 86400 * 364


def test_hooks_order_and_state(cli, bundle, tmp_path):
    log = tmp_path / "hooks.log"

    def hook(name):
        return {"path": "/bin/sh", "args": ["sh", "-c",
                f"read s; echo {name} $(echo $s | cut -c1-400) >> {log}"]}

    def inside(name, path):  # in the container namespaces: before pivot_root the rootfs
        # is still at its bundle path (createContainer), after it at / (startContainer)
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {name} >> {path}"]}

    bundle(["sh", "-c", "echo process >> /hooklog; cat /hooklog"],
           hooks={"prestart": [hook("prestart"),
                               {"path": "/bin/sh", "args": ["sh", "-c", f"pwd > {tmp_path}/cwd"]}],
                  "createRuntime": [hook("createRuntime")],
                  "createContainer": [inside("createContainer",
                                              f"{bundle.path}/rootfs/hooklog")],
                  "startContainer": [inside("startContainer", "/hooklog")],
                  "poststart": [hook("poststart")], "poststop": [hook("poststop")]},
           **{"root.readonly": False})
    p = cli("run", "--bundle", str(bundle.path), "h1")
    assert p.stdout.split() == ["createContainer", "startContainer", "process"], p.stderr
    lines = log.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["prestart", "createRuntime", "poststart",
                                               "poststop"]
    state = json.loads(lines[1].split(" ", 1)[1])
    assert state["id"] == "h1" and state["status"] == "creating" and state["pid"] > 0
    assert json.loads(lines[3].split(" ", 1)[1])["status"] == "stopped"
    assert (tmp_path / "cwd").read_text().strip() == str(bundle.path)  # runc's: the bundle


def test_failing_hook_fails_create_and_runs_poststop(cli, bundle, tmp_path, zoned_root):
    flag = tmp_path / "poststop-ran"
    bundle(["true"], hooks={
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}],
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {flag}"]}]})
    p = cli("create", "--bundle", str(bundle.path), "hf", files=True)
    assert p.returncode == 125 and "createRuntime hook" in p.stderr and "exit status 3" in p.stderr
    assert flag.exists()
    assert zone_state(zoned_root) == []
    bundle(["true"], hooks={"createRuntime": [
        {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]})
    t = time.monotonic()
    p = cli("create", "--bundle", str(bundle.path), "ht", files=True)
    assert p.returncode == 125 and "timed out" in p.stderr and time.monotonic() - t < 8


def test_exec_process_file_and_detach(cli, bundle, tmp_path):
    bundle(["sleep", "1000"])
    cli("create", "--bundle", str(bundle.path), "e1", files=True, check=True)
    cli("start", "e1", check=True)
    proc = dict(bundle.cfg["process"], args=["sh", "-c", "echo $X; id -u; exit 5"],
                env=["X=from-process-json"], user={"uid": 1000, "gid": 1000})
    (tmp_path / "p.json").write_text(json.dumps(proc))
    p = cli("exec", "--process", str(tmp_path / "p.json"), "e1")
    assert p.returncode == 5 and p.stdout.split() == ["from-process-json", "1000"]
    pidfile = tmp_path / "exec.pid"
    p = cli("exec", "--detach", "--pid-file", str(pidfile), "e1", "--", "sleep", "30",
            files=True)
    assert p.returncode == 0 and int(pidfile.read_text()) > 0
    assert len(json.loads(cli("ps", "--format", "json", "e1").stdout)) == 2
    cli("delete", "-f", "e1", check=True)


def test_preserve_fds(cli, bundle, tmp_path):
    bundle(["sh", "-c", "cat <&3; ls /proc/self/fd | tr '\\n' ' '"])
    (tmp_path / "in").write_text("through fd 3\n")
    # the caller's fd 3 goes into the container, as conmon passes fds to runc
    p = subprocess.run(["sh", "-c", f'exec {ZONED} --root {cli.root} run --bundle '
                        f'{bundle.path} --preserve-fds 1 pfd 3<{tmp_path / "in"}'],
                       capture_output=True, text=True, timeout=30)
    assert p.stdout.startswith("through fd 3\n"), p.stderr
    fds = p.stdout.split("\n")[1].split()
    assert fds[:4] == ["0", "1", "2", "3"] and len(fds) <= 5  # (+ ls's own directory fd)


def test_update_and_events(cli, bundle):
    bundle(["sleep", "1000"], **{"linux.resources": {"memory": {"limit": 64 << 20},
                                                      "pids": {"limit": 50}}})
    cli("create", "--bundle", str(bundle.path), "u1", files=True, check=True)
    cli("start", "u1", check=True)
    ev = json.loads(cli("events", "--stats", "u1").stdout)
    assert ev["type"] == "stats" and ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"]["limit"] == 50
    assert cli("update", "--memory", "32m", "--pids-limit", "20", "u1").returncode == 0
    p = cli("update", "--resources", "-", "u1",
            input=json.dumps({"cpu": {"quota": 20000, "period": 100000}}))
    assert p.returncode == 0, p.stderr
    cpu = [h for h in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup")
           if os.path.exists(h + "/cgroup.procs")][0]
    cg = json.loads(cli("inspect", "u1").stdout)["cgroup"]
    quota = (open(f"{cpu}{cg}/cpu.cfs_quota_us").read().strip()
             if os.path.exists(f"{cpu}{cg}/cpu.cfs_quota_us")
             else open(f"{cpu}{cg}/cpu.max").read().split()[0])
    assert quota == "20000"
    ev = json.loads(cli("events", "--stats", "u1").stdout)
    assert ev["data"]["memory"]["usage"]["limit"] == 32 << 20
    assert ev["data"]["pids"]["limit"] == 20
    cfg_limits = json.loads(cli("inspect", "u1").stdout)["limits"]
    assert cfg_limits["memory"]["limit"] == 32 << 20
    cli("kill", "u1", "KILL", check=True)
    for _ in range(50):
        if json.loads(cli("state", "u1").stdout)["status"] == "stopped":
            break
        time.sleep(0.1)
    p = cli("events", "--stats", "u1")  # runc: "is not running", not an empty success
    assert p.returncode == 125 and "not running" in p.stderr, p


def test_features(cli):
    f = json.loads(cli("features").stdout)
    assert f["ociVersionMax"] == "1.2.0" and "createRuntime" in f["hooks"]
    assert "user" in f["linux"]["namespaces"] and f["linux"]["seccomp"]["enabled"]
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"]


def test_console_socket(cli, bundle, tmp_path):
    """process.terminal: the pty master arrives over --console-socket (SCM_RIGHTS)."""
    bundle(["sh", "-c", "tty; stty size; echo done"],
           **{"process.terminal": True, "process.consoleSize": {"height": 33, "width": 99}})
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    p = subprocess.Popen([ZONED, "--root", cli.root, "create", "--bundle",
                          str(bundle.path), "--console-socket", path, "tty1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    conn, _ = srv.accept()
    from zoned.console import recv_fd

    master = recv_fd(conn)
    assert p.wait(timeout=20) == 0, p.stderr.read()
    cli("start", "tty1", check=True)
    out = b""
    end = time.monotonic() + 10
    while b"done" not in out and time.monotonic() < end:
        try:
            out += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    text = out.decode().replace("\r", "")
    assert "/dev/pts/0" in text and "33 99" in text, text
    assert cli("create", "--bundle", str(bundle.path), "tty2", files=True).returncode == 125


def _wait_status(cli, cid, status, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p = cli("state", cid)
        if p.returncode == 0 and json.loads(p.stdout)["status"] == status:
            return True
        time.sleep(0.05)
    return False


def test_idmapped_bind_mount(cli, bundle, tmp_path):
    """mounts[].uidMappings/gidMappings + "idmap": the kernel shows files through the
    mapping (containerID on disk -> hostID seen), as runc does."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    os.chown(src / "f", 0, 0)
    bundle(["sh", "-c", "stat -c '%u %g' /idm/f; stat -c '%u %g' /plain/f"],
           mounts=bundle.cfg["mounts"] + [
               {"destination": "/idm", "type": "bind", "source": str(src),
                "options": ["rbind", "idmap"],
                "uidMappings": [{"containerID": 0, "hostID": 1234, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 4321, "size": 1}]},
               {"destination": "/plain", "type": "bind", "source": str(src),
                "options": ["rbind"]}])
    p = oci_run(cli, bundle.path)
    assert p.stdout.split("\n")[:2] == ["1234 4321", "0 0"], p.stderr
    assert os.stat(src / "f").st_uid == 0  # the files themselves are unchanged


def test_idmapped_bind_mount_in_a_user_namespace(cli, bundle, tmp_path):
    """Kubernetes' hostUsers: false: a user namespace (root 0 = host 200000) and a volume
    idmapped the same way: the host root's files are root's inside, the namespace's root
    writes them as the host's root, and a plain bind shows them as nobody's. zoned makes
    the idmapped tree as the host's root (both inits failed it from inside: EPERM)."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    maps = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    bundle(["sh", "-c", "stat -c '%u %g' /idm/f /plain/f; echo y > /idm/made"],
           mounts=bundle.cfg["mounts"] + [
               {"destination": "/idm", "type": "bind", "source": str(src),
                "options": ["rbind", "idmap"], "uidMappings": maps, "gidMappings": maps},
               {"destination": "/plain", "type": "bind", "source": str(src),
                "options": ["rbind"]}],
           **{"linux.namespaces": bundle.cfg["linux"]["namespaces"] + [{"type": "user"}],
              "linux.uidMappings": maps, "linux.gidMappings": maps})
    for d in [bundle.path, src, *bundle.path.parents][:5]:
        os.chmod(d, 0o755)
    for top, dirs, files in os.walk(bundle.path / "rootfs"):  # (the zone's root's)
        for name in [".", *dirs, *files]:
            os.lchown(os.path.join(top, name), 200000, 200000)
    for init in ("c", "python"):
        p = subprocess.run([ZONED, "--root", cli.root, "run", "--bundle", str(bundle.path),
                            f"idu-{init}"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "ZONED_INIT": init})
        assert p.returncode == 0, (init, p.stderr)
        assert p.stdout.split("\n")[:2] == ["0 0", "65534 65534"], (init, p.stdout)
        assert os.stat(src / "made").st_uid == 0  # written through the mapping
        os.unlink(src / "made")


def test_systemd_cgroup_paths(cli, bundle):
    from zoned.runtime import systemd_cgroups_path

    assert systemd_cgroups_path("machine.slice:libpod:abc", "x") == \
        "/machine.slice/libpod-abc.scope"
    assert systemd_cgroups_path("a-b.slice:p:n", "x") == "/a.slice/a-b.slice/p-n.scope"
    bundle(["sleep", "100"], **{"linux.cgroupsPath": "zt-test.slice:zoned:sd1"})
    p = cli("--systemd-cgroup", "create", "--bundle", str(bundle.path), "sd1", files=True)
    assert p.returncode == 0, p.stderr
    pid = json.loads(cli("state", "sd1").stdout)["pid"]
    procs = open("/sys/fs/cgroup/memory/zt.slice/zt-test.slice/zoned-sd1.scope/cgroup.procs").read()
    assert str(pid) in procs.split()
    cli("delete", "-f", "sd1", check=True)
    assert not os.path.exists("/sys/fs/cgroup/memory/zt.slice/zt-test.slice/zoned-sd1.scope")
    from zoned.cgroups import remove_if_empty

    remove_if_empty("/zt.slice/zt-test.slice")
    remove_if_empty("/zt.slice")
