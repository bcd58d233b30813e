"""The pytest plugin's example suite: what a project's own tests look like with zoned.

Run it as any user (root or not): `pytest examples/pytest_harness`. tests/test_api_harness*
and tests/test_rootless* run it, as root and as an ordinary user.
"""
import subprocess

import pytest


def test_one_shot(zoned_run):
    r = zoned_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_pid_1_and_hostname(zoned_run):
    r = zoned_run(["sh", "-c", "echo $$; hostname"], text=True, name="zex-host")
    assert r.stdout.split() == ["1", "zex-host"]


def test_timeout_kills(zoned_run):
    with pytest.raises(subprocess.TimeoutExpired) as e:
        zoned_run(["sh", "-c", "echo started; sleep 60"], timeout=1)
    assert e.value.stdout == b"started\n"


def test_check(zoned_run):
    with pytest.raises(subprocess.CalledProcessError) as e:
        zoned_run(["sh", "-c", "exit 4"], check=True)
    assert e.value.returncode == 4


def test_own_root_fs(zoned_run):
    r = zoned_run(["sh", "-c", "echo x > /made && ls /made && id -u"], text=True)
    assert r.stdout.split() == ["/made", "0"]
    assert zoned_run(["ls", "/made"]).returncode != 0  # a new zone: a fresh layer


@pytest.mark.zone(env=["GREETING=hi"], hostname="marked")
def test_detached(zone):
    c = zone(["sh", "-c", "echo $GREETING; echo oops >&2; exec sleep 60"])
    assert c.exec(["hostname"]).stdout.strip() == "marked"
    assert c.exec(["cat"], input="piped").stdout == "piped"
    c.exec(["sh", "-c", "test -n \"$(ps)\""], check=True)
    for _ in range(100):
        if c.logs("stderr"):
            break
        import time

        time.sleep(0.05)
    assert (c.logs("stdout"), c.logs("stderr")) == ("hi\n", "oops\n")
    c.kill()
    assert c.wait(10) == 137


def test_loopback_only(zoned_run):
    r = zoned_run(["sh", "-c", "ls /sys/class/net"], text=True)
    assert r.stdout.split() == ["lo"]


def test_image_fixture(zoned_image, zoned_run):
    assert zoned_run(["true"], image=zoned_image).returncode == 0
