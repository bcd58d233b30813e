"""zoned.child.sync without root: typed messages over a real socketpair, fds passed, and
the errno of a failure deciding the exit code (127 missing, 126 not executable)."""
from __future__ import annotations

import errno
import json
import os

import pytest

from zoned.child.sync import EOF, Channel, CommandError, Message, Op, pair, send_error
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


def _child_failing_with(exc: BaseException) -> tuple[dict, int]:
    """run_child in a forked child whose set-up raises `exc`: the error message it sent
    (its fields) and its exit code."""
    from zoned.child import process

    a, b = pair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: run_child never returns
        def fail(plan):
            raise exc

        process._child = fail
        a.close()
        process.run_child(process.Plan({"process": {"args": ["x"]}}, b))
    b.close()
    with a:
        msg = Channel(a).recv()
    _, status = os.waitpid(pid, 0)
    assert msg.op is Op.ERROR
    return msg.fields, os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("exc", [
    FileNotFoundError(errno.ENOENT, "No such file or directory"),   # mknod under /proc
    PermissionError(errno.EACCES, "Permission denied"),             # a write to /proc
    PermissionError(errno.EPERM, "Operation not permitted"),        # a mount
    OSError(errno.EINVAL, "Invalid argument"),
], ids=["ENOENT", "EACCES", "EPERM", "EINVAL"])
def test_a_set_up_failure_is_never_127_or_126(exc):
    """Only the command's own exec failure carries its errno to the parent: any other
    failure of the set-up, whatever its errno, is zoned's error (125), not "command not
    found" (127) or "cannot be run" (126)."""
    fields, code = _child_failing_with(exc)
    assert fields["errno"] == 0 and code == 1
    error = Message(Op.ERROR, fields, []).error("default")
    assert type(error) is ZonedError and error.exit_code == 125


@pytest.mark.parametrize("err, code", [(errno.ENOENT, 127), (errno.EACCES, 126)])
def test_the_commands_own_exec_failure_keeps_its_code(err, code):
    fields, exit_code = _child_failing_with(CommandError(err, "exec: it"))
    assert fields == {"message": "exec: it", "errno": err} and exit_code == code
    error = Message(Op.ERROR, fields, []).error("default")
    assert isinstance(error, ExecError) and error.exit_code == code


def test_lookup_path_failures_are_the_commands(tmp_path):
    from zoned.child.process import lookup_path

    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CommandError) as missing:
        lookup_path(str(tmp_path / "nothing"), [])
    with pytest.raises(CommandError) as not_executable:
        lookup_path(str(script), [])
    with pytest.raises(CommandError) as not_in_path:
        lookup_path("nothing-x125", [f"PATH={tmp_path}"])
    assert (missing.value.errno, not_executable.value.errno, not_in_path.value.errno) == \
        (errno.ENOENT, errno.EACCES, errno.ENOENT)
    assert "executable file not found in $PATH" in str(not_in_path.value)  # runc's words


def test_a_working_directory_that_cannot_be_entered_is_the_configs_error(tmp_path):
    """process.cwd missing or not a directory: one line naming the field, exit 125, in
    words podman does not read as a missing command ("no such file or directory")."""
    from zoned.child.process import enter_cwd
    from zoned.errors import ConfigError

    (tmp_path / "file").write_text("")
    here = os.getcwd()
    try:
        for cwd, why in ((tmp_path / "missing", "no such directory in the zone"),
                         (tmp_path / "file", "not a directory in the zone")):
            with pytest.raises(ConfigError) as e:
                enter_cwd(str(cwd))
            assert str(e.value) == f'invalid process.cwd "{cwd}": {why}'
            assert e.value.exit_code == 125 and os.getcwd() == here
        enter_cwd(str(tmp_path))
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(here)
