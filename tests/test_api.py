"""The Python API and the pytest plugin, as a test harness would use them."""
from __future__ import annotations

import os
import signal

import pytest

import zoned
from zoned.errors import ZonedError


def test_run_returns_status_and_output(zoned_root, busybox):
    r = zoned.run(["sh", "-c", "echo out; echo err >&2; exit 3"], root=zoned_root)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    r = zoned.run(["cat"], root=zoned_root, input="fed\n", text=True)
    assert r.stdout == "fed\n"
    with pytest.raises(ZonedError):
        zoned.run(["false"], root=zoned_root, check=True)


def test_run_options_map_to_the_spec(zoned_root, busybox):
    r = zoned.run(["sh", "-c", "hostname; id -u; echo $A"], root=zoned_root, text=True,
                  hostname="h1", user="1000", env=["A=b"])
    assert r.stdout.split() == ["h1", "1000", "b"]
    with pytest.raises(TypeError):
        zoned.run(["true"], root=zoned_root, no_such_option=1)


def test_container_lifecycle(zoned_root, busybox):
    c = zoned.Container(["sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.05; done"],
                        root=zoned_root, name="api1")
    with c:
        assert c.status == "running" and c.pid > 0
        assert c.exec(["hostname"]).stdout == "api1\n"
        c.kill(signal.SIGTERM)
        assert c.wait(10) == 5  # the real exit status: init is our child
        assert c.status == "stopped"
    assert zoned.Runtime(zoned_root).list() == []


def test_container_logs(zoned_root, busybox):
    with zoned.Container(["sh", "-c", "echo hello; echo oops >&2; sleep 1000"],
                         root=zoned_root) as c:
        for _ in range(50):
            if "oops" in c.logs():
                break
            import time
            time.sleep(0.02)
        assert c.logs() == "hello\noops\n"


def test_pytest_plugin_fixture(zone):
    a = zone(["sleep", "1000"], memory="32m")
    b = zone()
    assert a.name != b.name
    assert a.exec(["cat", "/proc/1/cmdline"]).stdout == "sleep\x001000\x00"
    # the two containers cannot see each other's processes
    assert "sleep 3600" not in a.exec(["ps"]).stdout


def test_a_run_leaves_no_fd_and_no_child_of_the_caller(zoned_root, busybox):
    """zoned.run hands what it removed to a thread of the caller's that closes it
    (zoned.linux.lastref): the caller is left with the fds it had, no child and one
    thread more, however many runs."""
    from conftest import children_of, settled_fds

    zoned.run(["true"], root=zoned_root)  # (what the first run loads, keeps open, starts)
    before, threads = settled_fds(), len(os.listdir("/proc/self/task"))
    for _ in range(3):
        assert zoned.run(["sh", "-c", "echo x > /f"], root=zoned_root).returncode == 0
    assert settled_fds() == before
    assert len(os.listdir("/proc/self/task")) == threads
    assert children_of(os.getpid()) == []
    assert [n for n in os.listdir(zoned_root) if not n.startswith(".")] == []


def test_a_refused_exec_leaves_no_fd_open(zoned_root, busybox, monkeypatch):
    """Runtime.exec opens the zone's namespaces before it checks that the init is still
    the one it started (pid reuse): a refusal there, or any failure later, closes them
    (an API caller is a long-lived program)."""
    import os

    from zoned.errors import InvalidState
    from zoned.runtime import exec_process

    with zoned.Container(["sleep", "1000"], root=zoned_root) as c:
        rt = zoned.Runtime(zoned_root)
        process = dict(rt.config(c.name)["process"], args=["true"])
        before = sorted(os.listdir("/proc/self/fd"))
        monkeypatch.setattr(exec_process, "proc_start_time", lambda pid: -1)
        with pytest.raises(InvalidState, match="has stopped"):
            rt.exec(c.name, process)
        assert sorted(os.listdir("/proc/self/fd")) == before
        monkeypatch.undo()
        assert c.exec(["true"]).returncode == 0


def test_runs_from_several_threads_at_once(zoned_root, busybox):
    """zoned.run from 4 threads at once: each gets its own zone and output, none hangs
    (the cgroup primer was a module global that two threads stopped at once: one then
    waited on it for ever and wrote to an fd number it had closed), and no fd is left."""
    import threading

    from conftest import settled_fds

    zoned.run(["true"], root=zoned_root)  # (imports and caches, before the count)
    before = set(settled_fds())
    results: dict[int, list] = {}

    def worker(n: int) -> None:
        results[n] = [zoned.run(["sh", "-c", f"echo {n}-{i}"], root=zoned_root, text=True,
                                timeout=60).stdout for i in range(5)]

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a run hung"
    assert results == {n: [f"{n}-{i}\n" for i in range(5)] for n in range(4)}
    assert set(settled_fds()) <= before
