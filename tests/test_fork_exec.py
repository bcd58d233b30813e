"""How a C init is started (csrc/forkexec.c, zoned.child.initplan.fork and settle): the child
shares the creator's memory until its exec, and the creator goes on meanwhile instead of
sleeping until that exec. Until settle() the creator stays undumpable and holds FORKING,
on every path; the child's failure is said on the sync socket."""
from __future__ import annotations

import json
import os
import socket

import pytest

import zoned
from zoned.child.process import FORKING
from zoned.linux import syscalls as sc


def _anonymous_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if len(line.split()) == 5)


@pytest.mark.unprivileged
def test_a_started_child_execs_with_its_fds_and_leaves_no_mapping_behind():
    ours, theirs = socket.socketpair()
    kept = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        script = f"test -e /proc/self/fd/{kept} && ! test -e /proc/self/fd/{ours.fileno()}"

        def one() -> int:
            pid, pending = sc.fork_exec("/bin/sh", ["sh", "-c", script], [kept],
                                        sock=theirs.fileno())
            pending.finish()
            pending.finish()  # (idempotent)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

        assert one() == 0  # the kept fd is inherited, a CLOEXEC one is not
        before = _anonymous_maps()
        codes = [one() for _ in range(40)]
        assert codes == [0] * 40
        assert _anonymous_maps() < before + 10  # each child's stack and arguments unmapped
        assert os.get_inheritable(kept) is False  # only the child's copy was changed
    finally:
        os.close(kept)
        ours.close()
        theirs.close()


@pytest.mark.unprivileged
def test_a_failed_exec_is_said_on_the_socket_and_the_child_exits_127():
    ours, theirs = socket.socketpair()
    try:
        pid, pending = sc.fork_exec("/nonexistent/zoned-spawn", ["zoned-spawn"], [],
                                    sock=theirs.fileno())
        pending.finish()
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 127
        msg = json.loads(ours.recv(4096))
        assert msg["op"] == "error"
        assert msg["message"] == "cannot run zoned-spawn: errno 2"
    finally:
        ours.close()
        theirs.close()


def test_the_creator_is_undumpable_until_its_init_has_execd(zoned_root, busybox, monkeypatch):
    """The creator's own work after the fork (make_cgroup) runs while the init may still
    share its memory: undumpable then, holding FORKING (no other thread makes it dumpable
    again); both undone once the create is through."""
    from zoned.runtime import lifecycle

    seen = []
    real = lifecycle.make_cgroup

    def make_cgroup(*args, **kwargs):
        seen.append((sc.dumpable(), FORKING.locked()))
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "make_cgroup", make_cgroup)
    assert sc.dumpable()
    assert zoned.run(["true"], root=zoned_root).returncode == 0
    assert seen == [(False, True)]
    assert sc.dumpable()
    assert not FORKING.locked()


def test_a_failure_after_the_fork_settles_the_init_and_leaves_nothing(zoned_root, busybox,
                                                                      monkeypatch):
    from zoned.runtime import lifecycle

    def make_cgroup(*args, **kwargs):
        raise RuntimeError("injected after the fork")

    monkeypatch.setattr(lifecycle, "make_cgroup", make_cgroup)
    with pytest.raises(RuntimeError, match="injected after the fork"):
        zoned.run(["true"], root=zoned_root, name="settled")
    assert sc.dumpable()
    assert not FORKING.locked()  # (held: the next create of this process would hang)
    assert not os.path.exists(os.path.join(zoned_root, "settled"))
    monkeypatch.undo()
    assert zoned.run(["true"], root=zoned_root, name="settled").returncode == 0
