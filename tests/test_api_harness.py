"""The API as a test harness uses it (issue 17): subprocess's habits (list commands,
timeout=, check=), kill/stop that really stop a PID 1, separate streams, stdin for exec,
and the README's examples run as written."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import zoned
from zoned.api import Container, run
from zoned.errors import ZonedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_timeout_kills_the_zone_and_keeps_its_output(zoned_root, busybox):
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as e:
        run(["sh", "-c", "echo before; echo warn >&2; sleep 100 & exec sleep 100"],
            timeout=1, root=zoned_root)
    assert time.monotonic() - t < 5
    assert isinstance(e.value, ZonedError) and e.value.timeout == 1
    assert (e.value.stdout, e.value.stderr) == (b"before\n", b"warn\n")
    assert os.listdir(zoned_root) == [] or all(n.startswith(".") for n in os.listdir(zoned_root))


def test_timeout_without_capture_still_fires(zoned_root, busybox):
    with pytest.raises(zoned.TimeoutExpired):
        run(["sleep", "100"], timeout=0.5, capture=False, root=zoned_root)


def test_str_command_is_refused_unless_shell(zoned_root, busybox):
    with pytest.raises(TypeError, match="is a str: pass a list"):
        run("echo hi", root=zoned_root)
    r = run("echo hi $((1 + 2)) | tr a-z A-Z", shell=True, root=zoned_root)
    assert r.stdout == b"HI 3\n"
    with pytest.raises(TypeError, match="shell=True needs"):
        run(["echo", "hi"], shell=True, root=zoned_root)


def test_check_raises_a_called_process_error(zoned_root, busybox):
    with pytest.raises(subprocess.CalledProcessError) as e:
        run(["sh", "-c", "echo o; echo e >&2; exit 3"], check=True, root=zoned_root)
    err = e.value
    assert isinstance(err, ZonedError) and isinstance(err, zoned.CalledProcessError)
    assert (err.returncode, err.cmd, err.stdout, err.stderr) == \
        (3, ["sh", "-c", "echo o; echo e >&2; exit 3"], b"o\n", b"e\n")
    assert run(["true"], check=True, root=zoned_root).returncode == 0


def test_kill_default_stops_pid_1(zoned_root, busybox):
    """sleep as PID 1 ignores SIGTERM (no handler): kill()'s default must still stop it."""
    with Container(["sleep", "1000"], root=zoned_root) as c:
        c.kill()
        assert c.wait(timeout=10) == 128 + signal.SIGKILL


def test_stop_escalates_to_sigkill(zoned_root, busybox):
    with Container(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
                   root=zoned_root) as c:
        t = time.monotonic()
        assert c.stop(timeout=1) == 137
        assert time.monotonic() - t < 5


def test_wait_timeout_kills_and_raises(zoned_root, busybox):
    with Container(["sh", "-c", "echo up; exec sleep 1000"], root=zoned_root) as c:
        time.sleep(0.3)
        with pytest.raises(subprocess.TimeoutExpired) as e:
            c.wait(timeout=0.5)
        assert e.value.stdout == "up\n"
        assert c.returncode == 137 and c.status == "stopped"


def test_detached_streams_are_separate(zoned_root, busybox):
    with Container(["sh", "-c", "echo out; echo err >&2; exec sleep 1000"],
                   root=zoned_root) as c:
        deadline = time.monotonic() + 10
        while not c.logs("stderr") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (c.logs("stdout"), c.logs("stderr")) == ("out\n", "err\n")
        assert c.logs() == "out\nerr\n"
        with pytest.raises(ValueError):
            c.logs("both")


def test_exec_stdin_and_timeout(zoned_root, busybox):
    with Container(["sleep", "1000"], root=zoned_root) as c:
        assert c.exec(["sh", "-c", "wc -c"], input=b"x" * 300000).stdout.strip() == "300000"
        assert c.exec("cat; echo !", shell=True, input="in").stdout == "in!\n"
        t = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired) as e:
            c.exec(["sh", "-c", "echo part; exec sleep 100"], timeout=1)
        assert time.monotonic() - t < 5 and e.value.stdout == "part\n"
        assert c.status == "running"  # exec's timeout kills the exec'd process only
        with pytest.raises(subprocess.CalledProcessError):
            c.exec(["false"], check=True)


def readme_blocks() -> list[str]:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("### From Python and pytest"):]
    section = section[:section.index("\n### ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_example_runs(zoned_root, busybox, tmp_path):
    code = readme_blocks()[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "ZONED_ROOT": zoned_root}
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "137" in p.stdout.split() and "up" in p.stdout


def test_readme_pool_example_runs(zoned_root, busybox, tmp_path):
    script = tmp_path / "pool.py"
    script.write_text("import zoned\n" + readme_blocks()[1] + "print('ran')\n")
    env = {**os.environ, "ZONED_ROOT": zoned_root}
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ran\n"
    assert [e for e in os.listdir(zoned_root) if not e.startswith(".")] == []


def test_readme_pytest_example_runs(zoned_root, busybox, tmp_path):
    code = readme_blocks()[2]
    (tmp_path / "test_readme.py").write_text(code)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout


def test_every_option_is_documented():
    from zoned.oci.spec import RunOptions

    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    table = readme[readme.index("### From Python and pytest"):]
    missing = [k for k in [*RunOptions.FIELDS, "timeout", "check", "shell", "input",
                           "capture", "text", "root", "images", "backend", "accel"]
               if k != "args" and f"`{k}`" not in table]
    assert not missing
    for fn in (run, Container.exec, Container.kill, Container.stop, Container.wait,
               Container.logs):
        assert fn.__doc__ and len(fn.__doc__) > 40
