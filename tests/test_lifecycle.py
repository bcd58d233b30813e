"""The CLI lifecycle: run (foreground, detached, --rm), ps, exec, logs, inspect, stop, kill,
rm; exit codes and signals; the OCI create/start/state/delete state machine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ZONED


def test_exit_status_passes_through(cli, zoned_root):
    assert cli("run", "--rm", "--", "sh", "-c", "exit 7").returncode == 7
    assert cli("run", "--rm", "--", "true").returncode == 0
    # PID 1 cannot be killed from inside its namespace, so the signal comes from the host
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--rm", "--name", "victim", "--",
                          "sh", "-c", "echo up; sleep 1000"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "up\n"
    assert cli("kill", "victim", "KILL").returncode == 0
    assert p.wait(timeout=10) == 128 + signal.SIGKILL
    assert cli("state", "victim").returncode != 0  # --rm removed it


def test_stdio_passes_through(cli):
    p = cli("run", "--rm", "-i", "--", "sh", "-c", "read x; echo out:$x; echo err:$x >&2",
            input="hello\n")
    assert p.stdout == "out:hello\n" and p.stderr == "err:hello\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_to_zoned_reach_the_command(zoned_root, busybox, sig):
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--rm", "--", "sh", "-c",
                          f"trap 'echo got; exit 42' {sig.name[3:]}; echo ready; "
                          "while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(sig)
    out, _ = p.communicate(timeout=10)
    assert out == "got\n" and p.returncode == 42


def test_init_reaps_zombies_and_forwards_signals(zoned_root, busybox):
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--rm", "--init", "--", "sh",
                          "-c", "trap 'exit 43' TERM; (sleep 0.1 &); sleep 0.5; "
                          "ps -o stat,comm | grep -c '^Z' ; echo ready; "
                          "while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "0"  # the orphaned sleep was reaped by init
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)
    assert p.returncode == 43


def test_tty_gives_a_real_pty(cli, zoned_root):
    p = subprocess.run(["script", "-qec", f"{ZONED} --root {zoned_root} run --rm -t -- "
                        "sh -c 'tty; test -t 0 && echo in-tty; stty size'", "/dev/null"],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout.replace("\r", "")
    assert "/dev/pts/0" in out and "in-tty" in out, out


def test_detached_ps_exec_logs_inspect_stop_rm(cli):
    assert cli("run", "-d", "--name", "web", "--memory", "32m", "--", "sh", "-c",
               "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"
               ).stdout.strip() == "web"
    ps = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in ps] == [("web", "running")]
    table = cli("ps", "-a").stdout
    assert "web" in table and "running" in table
    assert cli("exec", "web", "--", "hostname").stdout.strip() == "web"
    assert cli("exec", "web", "--", "sh", "-c", "exit 3").returncode == 3
    info = json.loads(cli("inspect", "web").stdout)
    assert info["state"]["pid"] > 0 and info["limits"]["memory"]["limit"] == 32 << 20
    assert info["stats"]["memory"]["limit"] == 32 << 20
    time.sleep(0.2)
    assert cli("logs", "web").stdout == "started\n"
    assert cli("stop", "-t", "5", "web").returncode == 0
    assert cli("logs", "web").stdout == "started\nbye\n"
    assert json.loads(cli("ps", "-a", "--format", "json").stdout)[0]["status"] == "stopped"
    assert cli("rm", "web").returncode == 0
    assert json.loads(cli("ps", "-a", "--format", "json").stdout) == []


def test_kill_and_force_rm(cli):
    cli("run", "-d", "--name", "k", "--", "sleep", "1000", check=True)
    p = cli("rm", "k")
    assert p.returncode != 0 and "running" in p.stderr
    assert cli("kill", "k", "KILL").returncode == 0
    for _ in range(50):
        if json.loads(cli("state", "k").stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    assert json.loads(cli("state", "k").stdout)["status"] == "stopped"
    assert cli("kill", "k").returncode != 0  # not running any more
    cli("run", "-d", "--name", "k2", "--", "sleep", "1000", check=True)
    assert cli("rm", "-f", "k2").returncode == 0
    assert cli("state", "k2").returncode != 0


def test_exec_joins_the_container_namespaces(cli, zoned_root):
    cli("run", "-d", "--name", "ns", "--", "sleep", "1000", check=True)
    pid = json.loads(cli("state", "ns").stdout)["pid"]
    out = cli("exec", "ns", "--", "sh", "-c",
              "for n in ipc mnt net pid uts cgroup; do readlink /proc/self/ns/$n; done; "
              "echo $$; cat /proc/self/cgroup | grep memory").stdout.split()
    want = [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("ipc", "mnt", "net", "pid", "uts",
                                                         "cgroup")]
    assert out[:6] == want
    assert int(out[6]) > 1  # a pid inside the container's pid namespace
    assert out[7].endswith(":/")  # same cgroup (the namespace root)
    # the same capabilities, no_new_privs and seccomp filter as the container's init
    status = cli("exec", "ns", "--", "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs|Seccomp):",
                 "/proc/self/status").stdout
    init = "".join(line for line in open(f"/proc/{pid}/status")
                   if line.split(":")[0] in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp"))
    assert status == init and "Seccomp:\t2" in status
    for n in ("ipc", "mnt", "net", "pid", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{n}") != os.readlink(f"/proc/self/ns/{n}")


def test_oci_state_machine(cli, zoned_root, busybox, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.symlink(busybox.rootfs, bundle / "rootfs")
    assert cli("spec", "--bundle", str(bundle)).returncode == 0
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sleep", "1000"]
    cfg["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    p = cli("create", "--bundle", str(bundle), "c1", files=True)
    assert p.returncode == 0, p.stderr
    st = json.loads(cli("state", "c1").stdout)
    assert st["status"] == "created" and st["pid"] > 0 and st["bundle"] == str(bundle)
    assert cli("delete", "c1").returncode != 0  # not stopped
    assert cli("start", "c1").returncode == 0
    assert json.loads(cli("state", "c1").stdout)["status"] == "running"
    assert cli("start", "c1").returncode != 0  # only from created
    assert cli("kill", "c1", "KILL").returncode == 0
    for _ in range(50):
        if json.loads(cli("state", "c1").stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    assert cli("kill", "c1").returncode != 0
    assert cli("delete", "c1").returncode == 0
    assert cli("state", "c1").returncode != 0


def test_pause_resume(cli):
    cli("run", "-d", "--name", "p", "--", "sh", "-c", "while :; do :; done", check=True)
    assert cli("pause", "p").returncode == 0
    assert json.loads(cli("state", "p").stdout)["status"] == "paused"
    assert cli("resume", "p").returncode == 0
    assert json.loads(cli("state", "p").stdout)["status"] == "running"
    assert cli("rm", "-f", "p").returncode == 0
