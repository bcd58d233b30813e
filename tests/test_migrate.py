"""`zoned migrate` between two hosts (tests/twohost.py: two network namespaces with their
own zoned state roots and bridges on one L2 segment with a client namespace).

A memtouch container holds state in memory (a counter, a checksummed buffer) and a client
in the third namespace keeps ONE TCP connection to it: after the move the same connection
goes on counting, the memory checks out, the source has nothing left and the destination
has the container with the same IP, MAC and published port. Refusals and a destination
killed mid-transfer leave it running on the source, connection and all."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import twohost
from conftest import criu_or_skip
from twohost import B_IP, SSHD, ZONED, relocation_server, start_memtouch

two_hosts = twohost.two_hosts  # the fixture, under the name the tests ask for

criu_or_skip()

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")
needs_sshd = pytest.mark.skipif(not os.access(SSHD, os.X_OK),
                                reason=f"{SSHD} is missing (make setup installs openssh-server)")

IP, PORT, PUBLISHED = "10.77.0.10", 5000, 18000
MIB = 64


@pytest.fixture
def key(two_hosts, tmp_path):
    path = str(tmp_path / "relocation.pem")
    two_hosts.a.zoned("relocation-key", path, check=True)
    return path


def _start_svc(th, mib: int = MIB) -> str:
    """memtouch on host A; its checksum."""
    return start_memtouch(th.a, IP, PORT, mib, publish=PUBLISHED, timeout=20)


def _scratch(host) -> list[str]:
    """What is in the host's migration scratch dir (gone when empty), in its data root."""
    from zoned.storage import MIGRATIONS, data_root

    d = os.path.join(data_root(host.root), MIGRATIONS)
    return os.listdir(d) if os.path.isdir(d) else []


def _has_child(pid: int, marker: bytes) -> bool:
    """Whether a child of `pid` has `marker` in its command line (read from /proc: pgrep
    scans every process, over a second on a machine running thousands of zones)."""
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                for child in f.read().split():
                    with open(f"/proc/{child}/cmdline", "rb") as c:
                        if marker in c.read():
                            return True
    except OSError:
        pass
    return False


def _link(host, name: str) -> dict:
    st = host.zoned_json("inspect", name)["state"]
    return st["zoned"]["network"]["networks"][0]


@pytest.mark.parametrize("live,transport", [(True, "zoned"), (False, "ssh")],
                         ids=["live-zoned", "stop-and-copy-ssh"])
def test_migrate_keeps_the_connection(two_hosts, key, tmp_path, live, transport):
    th = two_hosts
    if transport == "ssh":
        if not os.access(SSHD, os.X_OK):
            pytest.skip(f"{SSHD} is missing (make setup installs openssh-server)")
        th.start_sshd()
        dest = f"ssh://root@{B_IP}:2222"
    else:
        relocation_server(th, key, tmp_path, 7000)
        dest = f"zoned://{B_IP}:7000"
    ready = _start_svc(th)
    before = _link(th.a, "svc")
    cc = th.counter_client(IP, PORT)
    cc.wait_values(20)
    ping = th.pinger(IP)
    time.sleep(0.3)

    p = th.a.zoned("migrate", *(["--live"] if live else []), "svc", dest, "--key", key,
                   "--format", "json", timeout=180)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert "running on the destination" in p.stderr  # the progress lines
    n = len(cc.values())
    cc.wait_values(n + 20)
    time.sleep(0.3)
    sent, received, lost = ping.stop()
    values = cc.stop()

    # The same connection went on: one counter, no reset, no gap, no error.
    assert values == list(range(1, len(values) + 1)) and not cc.errors(), cc.errors()
    assert len(values) >= n + 20
    # It left A entirely and runs on B with the same address, MAC and published port.
    assert th.a.container_ids() == [] and th.b.container_ids() == ["svc"]
    after = _link(th.b, "svc")
    assert (after["ip"], after["mac"]) == (before["ip"], before["mac"])
    assert th.ask(IP, PORT, "sum", "verify") == [ready, f"ok {MIB * 256}"]
    assert th.ask(B_IP, PUBLISHED, "pid") == ["1"]
    assert not _scratch(th.a)
    assert summary["mode"] == ("live" if live else "stop-and-copy")
    assert summary["frozen_ms"] > 0 and summary["total_ms"] >= summary["frozen_ms"]
    moved = summary["bytes"]
    assert moved >= MIB * 2**20, summary  # the memory went over the wire (pages or images)
    if live:  # post-copy ran (how much CRIU leaves lazy is its call: usually all of it)
        assert "page_bytes" in summary, summary
    print(f"\n{summary['mode']} over {transport}: frozen {summary['frozen_ms']:.0f} ms, "
          f"total {summary['total_ms']:.0f} ms, {moved / 2**20:.1f} MiB; ping: {sent} sent, "
          f"{lost} lost; longest client gap {cc.longest_gap() * 1000:.0f} ms")


def test_failures_leave_the_container_running_on_the_source(two_hosts, key, tmp_path):
    th = two_hosts
    ready = _start_svc(th, 16)
    cc = th.counter_client(IP, PORT)
    cc.wait_values(10)
    other_key = str(tmp_path / "other.pem")
    th.a.zoned("relocation-key", other_key, check=True)
    empty_images = tmp_path / "no-images"
    empty_images.mkdir()

    def refused(dest, *extra, key=key):
        p = th.a.zoned("migrate", *extra, "svc", dest, "--key", key, timeout=120)
        assert p.returncode != 0 and p.stderr.startswith("zoned: "), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr  # one line, no progress
        assert th.a.container_ids() == ["svc"] and th.b.container_ids() == []
        assert th.ask(IP, PORT, "verify") == ["ok 4096"]
        return p.stderr

    # Nobody is allowed when the allow-list is empty; A is not in B's list; a wrong key.
    _, log = relocation_server(th, key, tmp_path, 7001, allow="")
    assert "not in its --allow list" in refused(f"zoned://{B_IP}:7001", "-q")
    assert "refused 10.77.0.1: not in the allow-list" in log.read_text()
    relocation_server(th, key, tmp_path, 7002, allow=B_IP)
    assert "not in its --allow list" in refused(f"zoned://{B_IP}:7002", "-q")
    _, log = relocation_server(th, key, tmp_path, 7003)
    err = refused(f"zoned://{B_IP}:7003", "-q", key=other_key)
    assert "do not share the same relocation key" in err
    assert "TLS handshake failed" in log.read_text()
    # The image is missing on B: found before anything is frozen.
    relocation_server(th, key, tmp_path, 7004, env={"ZONED_IMAGES": str(empty_images)})
    err = refused(f"zoned://{B_IP}:7004", "-q")
    assert "image 'busybox' is not on this host" in err

    # B dies in the middle of receiving the images, in both modes: the container is put
    # back on A (restored from the local images / given back by CRIU's lazy dump).
    # Or the migrate command itself is stopped (SIGTERM) while B waits: it puts the
    # container back as for any failure, and leaves no scratch dir on A.
    # Last, SIGTERM while CRIU dumps (as Ctrl-C would hit the whole process group): the
    # dump finishes, then the put-back runs; CRIU must neither be killed mid-dump nor leave
    # its network lock on the zone that runs again.
    # And SIGTERM just after the source made its scratch dir (held there by a fault point),
    # before anything froze: the dir goes too.
    for port, live, victim in ((7005, False, "server"), (7006, True, "server"),
                               (7007, False, "migrate"), (7008, False, "migrate-dumping"),
                               (7009, False, "migrate-scratch")):
        srv, log = relocation_server(th, key, tmp_path, port, env={"ZONED_TEST_PAUSE_RECEIVE": "30"})
        dumping = victim == "migrate-dumping"
        fault = {"ZONED_TEST_FAULT": "migrate:scratch=30"} if victim == "migrate-scratch" else {}
        mig = th.a.popen([ZONED, "--root", th.a.root, "migrate", *([] if dumping else ["-q"]),
                          *(["--live"] if live else []), "svc", f"zoned://{B_IP}:{port}",
                          "--key", key], stdout=open(tmp_path / "m.out", "w"),
                         stderr=open(tmp_path / "m.err", "w"), env={**th.a.env, **fault})
        end = time.monotonic() + 30
        while "migration of svc" not in log.read_text():
            assert time.monotonic() < end, log.read_text()
            time.sleep(0.02)
        if dumping:  # CRIU has started to dump (its children: the parasite's helpers)
            while not _has_child(mig.pid, b"criu\0dump"):
                assert time.monotonic() < end, (tmp_path / "m.err").read_text()
                time.sleep(0.002)
            time.sleep(0.03)
        elif victim == "server":  # B waits, receiving the images: A has frozen svc
            while "receiving the images" not in log.read_text():
                assert time.monotonic() < end, log.read_text()
                time.sleep(0.02)
        elif fault:  # A holds at the fault point, its scratch dir made
            while not _scratch(th.a):
                assert time.monotonic() < end, (tmp_path / "m.err").read_text()
                time.sleep(0.01)
        else:
            time.sleep(0.3)
        if victim == "server":
            os.killpg(srv.pid, signal.SIGKILL)  # the server and its session
        else:
            os.killpg(mig.pid, signal.SIGTERM)
        assert mig.wait(60) != 0
        err = (tmp_path / "m.err").read_text()
        assert ("runs here again" if victim == "server" else "interrupted by signal 15") \
            in err, err
        pid = json.loads(th.a.zoned("state", "svc", check=True).stdout)["pid"]
        tables = th.a.sh(f"nsenter -t {pid} -n nft list tables", check=True).stdout
        assert "CRIU-" not in tables, tables  # no network lock left on the zone
        os.killpg(srv.pid, signal.SIGKILL)
        assert th.a.container_ids() == ["svc"]
        assert th.ask(IP, PORT, "sum", "verify") == [ready, "ok 4096"]
        assert not _scratch(th.a)
        # B: the dead session's scratch dir is gc's to remove; no container, no lease.
        gc = th.b.zoned("gc", check=True).stdout
        assert th.b.container_ids() == []
        assert not _scratch(th.b), gc
        if port == 7005:
            # Through all of that the client's one connection kept counting: the
            # refusals came before the freeze, and the put-back restored its socket.
            n = len(cc.values())
            values = cc.wait_values(n + 10)
            assert values == list(range(1, len(values) + 1)) and not cc.errors(), \
                cc.errors()
            cc.stop()


@pytest.mark.parametrize("two_hosts", [True], indirect=True, ids=["tmpfs-roots"])
def test_migrate_with_state_roots_on_tmpfs(two_hosts, key, tmp_path):
    """Both hosts' state roots on a tmpfs, as /run is on systemd hosts: the zone's
    /etc/hostname, hosts and resolv.conf are bound from a tmpfs file (CRIU refused to dump
    those: "./etc/hostname doesn't have a proper root mount"), while its writable layer,
    its log and the checkpoint in transit are on the data root's disk."""
    th = two_hosts
    relocation_server(th, key, tmp_path, 7001)
    ready = _start_svc(th)
    before = _link(th.a, "svc")
    p = th.a.zoned("migrate", "svc", f"zoned://{B_IP}:7001", "--key", key, timeout=180)
    assert p.returncode == 0, p.stderr
    assert th.a.container_ids() == [] and th.b.container_ids() == ["svc"]
    assert (_link(th.b, "svc")["ip"], _link(th.b, "svc")["mac"]) == \
        (before["ip"], before["mac"])
    assert th.ask(IP, PORT, "sum", "verify") == [ready, f"ok {MIB * 256}"]
    assert th.b.zoned("exec", "svc", "--", "hostname", check=True).stdout.strip() == "svc"
    assert f"ready {ready}" in th.b.zoned("logs", "svc", check=True).stdout  # came along
    data = th.b.zoned_json("inspect", "svc")["state"]["zoned"]["data"]
    assert os.path.isdir(os.path.join(data, "upper")) and not data.startswith(th.base)
    assert not _scratch(th.a) and not _scratch(th.b)


def test_the_server_bounds_sessions_and_drops_peers_that_never_authenticate(tmp_path,
                                                                            zoned_root):
    """Connections from an allowed address that never finish the TLS handshake: the
    server keeps at most MAX_SESSIONS of them (the next is closed at once) and closes each
    after HANDSHAKE_TIMEOUT, after which it accepts again."""
    import socket as socketmod

    from zoned.migration.server import HANDSHAKE_TIMEOUT, MAX_SESSIONS

    key = str(tmp_path / "key.pem")
    subprocess.run([ZONED, "relocation-key", key], check=True, capture_output=True)
    probe = socketmod.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([ZONED, "--root", zoned_root, "relocation-server",
                                   "--listen", f"127.0.0.1:{port}", "--allow", "127.0.0.1",
                                   "--key", key], stdout=out, stderr=out)
    conns = []
    try:
        end = time.monotonic() + 10
        while "listening on" not in log.read_text():
            assert server.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.02)
        for _ in range(MAX_SESSIONS):
            conns.append(socketmod.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        extra = socketmod.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once
        extra.close()
        assert "sessions are open already" in log.read_text()
        for c in conns:
            c.settimeout(HANDSHAKE_TIMEOUT + 10)
            assert c.recv(1) == b""  # the server gave up on it
        time.sleep(0.5)
        again = socketmod.create_connection(("127.0.0.1", port))
        again.settimeout(2)
        with pytest.raises(socketmod.timeout):  # accepted: a session waits for its hello
            again.recv(1)
        again.close()
        assert log.read_text().count("TLS handshake failed") >= MAX_SESSIONS
    finally:
        for c in conns:
            c.close()
        server.kill()
        server.wait()

