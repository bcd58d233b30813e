"""Issue 11, the oci/images/backends slice: typed container states (zoned.oci.status), the
image errors inside the ZonedError hierarchy, and the Backend seam with the zone backend
behind it. The first tests are pure logic (no root); the others run real zones."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ZONED
from zoned.backends.base import Backend
from zoned.backends.zone import ZoneBackend
from zoned.errors import InvalidState, NotFound, ZonedError
from zoned.images.errors import ImageError, ImageNotFound
from zoned.oci.status import Status

# What each state allows (runc's and youki's rules; zoned deletes a "creating" leftover).
ALLOWED = {
    #                 start  kill   pause  resume exec   delete active
    Status.CREATING: (False, False, False, False, False, True, False),
    Status.CREATED:  (True,  True,  False, False, True,  False, True),
    Status.RUNNING:  (False, True,  True,  False, True,  False, True),
    Status.PAUSED:   (False, True,  False, True,  False, False, True),
    Status.STOPPED:  (False, False, False, False, False, True, False),
}


@pytest.mark.unprivileged
def test_status_transitions():
    assert set(ALLOWED) == set(Status)
    for status, allowed in ALLOWED.items():
        got = (status.can_start(), status.can_kill(), status.can_pause(), status.can_resume(),
               status.can_exec(), status.can_delete(), status.is_active())
        assert got == allowed, status


@pytest.mark.unprivileged
def test_status_is_the_string_state_json_and_podman_read():
    assert [s.value for s in Status] == ["creating", "created", "running", "paused", "stopped"]
    st = {"id": "x", "status": Status.RUNNING}
    assert json.dumps(st) == '{"id": "x", "status": "running"}'
    assert json.loads(json.dumps(st, indent=2))["status"] == "running"
    assert Status.PAUSED == "paused" and f"it is {Status.PAUSED}" == "it is paused"
    assert Status("stopped") is Status.STOPPED


@pytest.mark.unprivileged
def test_image_errors_are_zoned_errors():
    """So the CLI reports them as one line with exit 125, never "internal error"."""
    assert issubclass(ImageError, ZonedError)
    assert issubclass(ImageNotFound, ImageError) and issubclass(ImageNotFound, NotFound)


@pytest.mark.unprivileged
def test_zone_backend_implements_the_interface(tmp_path):
    with pytest.raises(TypeError):
        Backend()  # abstract

    class Half(Backend):
        def create(self, cid, config, **kw):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()  # a backend missing a method fails when it is made, not when it is used
    assert Backend.__abstractmethods__ == {"create", "start", "run", "kill", "delete", "state",
                                           "exec", "attach_network", "checkpoint"}
    backend = ZoneBackend(str(tmp_path))
    assert isinstance(backend, Backend)
    assert not getattr(ZoneBackend, "__abstractmethods__", None)


def test_a_zone_through_the_backend(zoned_root, busybox):
    """create, start, exec, state, kill, delete: the whole lifecycle through the seam."""
    from zoned.api import build_config, exec_process
    from zoned.oci.spec import RunOptions

    backend = ZoneBackend(zoned_root)
    opts = RunOptions(["sleep", "1000"], name="seam")
    assert backend.attach_network("seam", opts) is None  # no --network: none to attach
    cfg = build_config(opts)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        started = backend.create("seam", cfg, stdio=(devnull, devnull, devnull))
    finally:
        os.close(devnull)
    st = backend.state("seam")
    assert st["status"] is Status.CREATED and st["pid"] == started.pid
    with pytest.raises(InvalidState, match="it is created"):
        backend.delete("seam")
    backend.start("seam", started)
    assert backend.state("seam")["status"] is Status.RUNNING
    with pytest.raises(InvalidState, match="it is running, not created"):
        backend.start("seam")

    r, w = os.pipe()
    try:
        proc = exec_process(cfg["process"], ["hostname"])
        ex = backend.exec("seam", proc, stdio=(w, w, w))
    finally:
        os.close(w)
    ex.release()
    with os.fdopen(r) as out:
        assert out.read().strip() == "seam"
    os.waitpid(ex.pid, 0)

    backend.kill("seam", signal.SIGKILL)
    os.waitpid(started.pid, 0)  # our child: reap it
    deadline = time.monotonic() + 10
    while backend.state("seam")["status"] is not Status.STOPPED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert backend.state("seam")["pid"] == 0
    with pytest.raises(InvalidState, match="it is stopped"):
        backend.kill("seam")
    with pytest.raises(InvalidState, match="cannot exec"):
        backend.exec("seam", exec_process(cfg["process"], ["true"]))
    backend.delete("seam")
    with pytest.raises(NotFound):
        backend.state("seam")
    assert list(backend.runtime.store.ids()) == []


def test_checkpoint_of_a_zone_whose_image_is_gone(cli, tmp_path):
    """The image a zone runs on was removed from the store (here: the store is another,
    empty one): checkpoint still works, recording no digest, where it used to fail with
    "internal error: ImageNotFound"."""
    from zoned.checkpoint.criu import find_criu

    try:
        find_criu()
    except ZonedError as e:
        pytest.skip(f"no criu >= 4: {e}")
    cli("run", "-d", "--name", "ck", "--", "sleep", "1000", check=True)
    empty = tmp_path / "images"
    empty.mkdir()
    env = {**os.environ, "ZONED_IMAGES": str(empty)}
    p = subprocess.run([ZONED, "--root", cli.root, "checkpoint", "ck", "--dir",
                        str(tmp_path / "ck"), "--leave-running"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "internal error" not in p.stderr
    cli("rm", "-f", "ck", check=True)
