"""zoned.child.sync without root: typed messages over a real socketpair, fds passed, and
the errno of a failure deciding the exit code (127 missing, 126 not executable)."""
from __future__ import annotations

import errno
import json
import os

import pytest

from zoned.child.sync import EOF, Channel, Op, pair, send_error
from zoned.errors import ExecError, ZonedError

pytestmark = pytest.mark.unprivileged


def test_messages_round_trip_with_fields_and_fds():
    a, b = pair()
    r, w = os.pipe()
    try:
        Channel(a).send(Op.CONSOLE, [r], name="/dev/pts/3")
        msg = Channel(b).recv()
        assert msg.op is Op.CONSOLE and msg.get("name") == "/dev/pts/3"
        assert len(msg.fds) == 1 and not os.get_inheritable(msg.fds[0])
        os.write(w, b"x")
        assert os.read(msg.fds[0], 1) == b"x"  # the same pipe, received
        os.close(msg.fds[0])
        a.close()
        assert Channel(b).recv() is EOF and EOF.op is None
    finally:
        for fd in (r, w):
            os.close(fd)
        b.close()


@pytest.mark.parametrize("err, code", [(errno.ENOENT, 127), (errno.EACCES, 126),
                                       (errno.EPERM, 126)])
def test_errno_of_a_failure_decides_the_exit_code(err, code):
    a, b = pair()
    with a, b:
        send_error(a, "cannot run it", err)
        exc = Channel(b).recv().error("default")
    assert isinstance(exc, ExecError) and exc.exit_code == code and str(exc) == "cannot run it"


def test_other_failures_and_foreign_messages_are_plain_errors():
    a, b = pair()
    with a, b:
        send_error(a, "mount: Invalid argument", errno.EINVAL)
        exc = Channel(b).recv().error("default")
        assert type(exc) is ZonedError and str(exc) == "mount: Invalid argument"
        a.send(json.dumps({"op": "reboot"}).encode())  # not an op of ours
        msg = Channel(b).recv()
        assert msg.op is Op.ERROR and "protocol" in str(msg.error("x"))
    assert str(EOF.error("container init exited")) == "container init exited"


def test_late_process_adds_env_and_replaces_args_and_cwd():
    """zoned.pool's start message: args replace, env entries add to (or replace by key)
    the config's own (HOSTNAME=... stays the zone's), cwd replaces; nothing else moves."""
    from zoned.child.process import late_process

    base = {"args": ["true"], "env": ["PATH=/bin", "HOSTNAME=z-1", "A=old"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}}
    got = late_process(base, {"args": ["sh", "-c", "x"], "env": ["A=new", "B=1"],
                              "cwd": "/tmp"})
    assert got == {"args": ["sh", "-c", "x"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0},
                   "env": ["PATH=/bin", "HOSTNAME=z-1", "A=new", "B=1"]}
    assert late_process(base, {}) == base and base["args"] == ["true"]  # not changed
