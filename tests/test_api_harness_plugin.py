"""The pytest plugin from the outside: a real pytest run on a generated suite (issue 17):
logs on failure, marker options, the example suite, and 40 zone tests under xdist -n 2
leaving nothing behind."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "pytest_harness")


def pytest_in(path, *args, timeout=300, env=None):
    (path / "pytest.ini").write_text("[pytest]\n") if path.is_dir() else None
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=path, capture_output=True, text=True, timeout=timeout,
                          env=env)


def leftovers() -> list[str]:
    """Test roots, their data roots and cgroup parents the plugin makes."""
    found = glob.glob("/run/zoned-test-*") + glob.glob("/var/lib/zoned/roots/zoned-test-*")
    found += glob.glob("/sys/fs/cgroup/*/zoned/zoned-test-*")
    found += glob.glob("/sys/fs/cgroup/zoned/zoned-test-*")
    return sorted(found)


def test_example_suite_passes(busybox, tmp_path):
    p = pytest_in(tmp_path, "-q", EXAMPLE)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "8 passed" in p.stdout


def test_failure_report_has_the_zone_logs(busybox, tmp_path):
    (tmp_path / "test_fails.py").write_text(
        "import time\n"
        "def test_fails(zone):\n"
        "    c = zone(['sh', '-c', 'echo from-stdout; echo from-stderr >&2; exec sleep 60'])\n"
        "    time.sleep(0.5)\n"
        "    assert c.exec(['true']).returncode == 1\n")
    p = pytest_in(tmp_path, "-q")
    assert p.returncode == 1
    out = p.stdout
    assert "- zoned z-" in out and " stdout -" in out and "from-stdout" in out
    assert " stderr -" in out and "from-stderr" in out


def test_marker_options_reach_zone_and_zoned_run(busybox, tmp_path):
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.zone(env=['LEVEL=module'], memory='48m')\n"
        "@pytest.mark.zone(hostname='h1')\n"
        "def test_zone(zone):\n"
        "    c = zone()\n"
        "    assert c.exec(['hostname']).stdout == 'h1\\n'\n"
        "    assert c.exec(['sh', '-c', 'echo $LEVEL']).stdout == 'module\\n'\n"
        "    res = c.runtime.config(c.name)['linux']['resources']\n"
        "    assert res['memory']['limit'] == 48 << 20\n"
        "@pytest.mark.zone(env=['LEVEL=test'], timeout=1)\n"
        "def test_run(zoned_run):\n"
        "    assert zoned_run(['sh', '-c', 'echo $LEVEL']).stdout == b'test\\n'\n"
        "    import subprocess\n"
        "    with pytest.raises(subprocess.TimeoutExpired):\n"
        "        zoned_run(['sleep', '30'])\n"
        "@pytest.mark.zone('positional')\n"
        "def test_bad(zoned_run):\n"
        "    pass\n")
    p = pytest_in(tmp_path, "-q", "-rA")
    assert "2 passed" in p.stdout and "1 error" in p.stdout, p.stdout
    assert "keyword options only" in p.stdout


def test_missing_image_is_one_clear_error(tmp_path):
    (tmp_path / "test_img.py").write_text(
        "def test_a(zoned_image):\n    pass\n"
        "def test_b(zoned_image):\n    pass\n")
    p = pytest_in(tmp_path, "-q", "--zoned-image", "zhn-no-such-image")
    assert p.returncode != 0
    assert "zoned_image:" in p.stdout + p.stderr and "zhn-no-such-image" in p.stdout + p.stderr


def test_a_missing_busybox_is_built_from_the_users_recipe_first(busybox, tmp_path):
    """With an empty image store, the plugin builds busybox as `zoned image build` would:
    from $ZONED_RECIPES/busybox.yaml where there is one (here: the repository's, plus a
    file), not the repository's own."""
    from zoned.images.store_write import RECIPES_DIR

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    recipe = Path(RECIPES_DIR, "busybox.yaml").read_text()
    assert "\nfiles:\n" in recipe
    (recipes / "busybox.yaml").write_text(recipe.replace(
        "\nfiles:\n", "\nfiles:\n  /etc/from-users-recipe: |\n    yes\n", 1))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_img.py").write_text(
        "def test_a(zoned_run):\n"
        "    assert zoned_run(['cat', '/etc/from-users-recipe']).stdout == b'yes\\n'\n")
    env = {**os.environ, "ZONED_RECIPES": str(recipes),
           "ZONED_IMAGES": str(tmp_path / "images")}
    p = pytest_in(suite, "-q", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed" in p.stdout


def test_xdist_40_zone_tests_leave_nothing(busybox, tmp_path):
    pytest.importorskip("xdist")
    before = leftovers()
    (tmp_path / "test_many.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('i', range(20))\n"
        "def test_run(zoned_run, i):\n"
        "    r = zoned_run(['sh', '-c', f'echo {i}; hostname'], name=f'zx{i}', text=True)\n"
        "    assert r.stdout.split() == [str(i), f'zx{i}']\n"
        "@pytest.mark.parametrize('i', range(20))\n"
        "def test_zone(zone, i):\n"
        "    c = zone(['sleep', '60'], name='same-name', memory='32m')\n"
        "    assert c.exec(['cat', '/proc/1/cmdline']).stdout == 'sleep\\x0060\\x00'\n")
    p = pytest_in(tmp_path, "-q", "-n", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "40 passed" in p.stdout
    assert set(leftovers()) - set(before) == set()  # (others' may go meanwhile)


def test_zoned_run_falls_back_when_the_pool_cannot_make_zones(busybox, tmp_path):
    """A session pool whose maker has failed: every zoned_run call makes its own zone
    (in the test's zoned_root) instead of failing the rest of the session; a command's
    own failure (check=True) is still the test's."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "import zoned\n"
        "class Broken:\n"
        "    failure = None\n"
        "    runs = 0\n"
        "    def run(self, args, **options):\n"
        "        Broken.runs += 1\n"
        "        self.failure = 'zoned.Pool: no zone: its maker has gone'\n"
        "        raise zoned.ZonedError(self.failure)\n"
        "class Lazy:\n"
        "    pool = Broken()\n"
        "    def get(self):\n"
        "        return self.pool\n"
        "@pytest.fixture(scope='session')\n"
        "def zoned_pool():\n"
        "    return Lazy()\n")
    (tmp_path / "test_fallback.py").write_text(
        "import subprocess\n"
        "import pytest\n"
        "from conftest import Broken\n"
        "@pytest.mark.parametrize('i', range(3))\n"
        "def test_run(zoned_run, i):\n"
        "    assert zoned_run(['sh', '-c', f'echo {i}'], text=True).stdout == f'{i}\\n'\n"
        "    assert Broken.runs == 1  # asked once; then each call makes its own\n"
        "def test_check(zoned_run):\n"
        "    with pytest.raises(subprocess.CalledProcessError):\n"
        "        zoned_run(['false'], check=True)\n")
    p = pytest_in(tmp_path, "-q", "-p", "no:randomly")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 passed" in p.stdout


SCRATCH_SUITE = """
import os
def test_scratch(zoned_pool, zoned_run):
    mounts = zoned_run(['cat', '/proc/self/mountinfo'], text=True).stdout
    root = zoned_pool.get().root
    fs = [ln.split(' - ')[1].split()[0] for ln in open('/proc/self/mountinfo')
          if ln.split()[4] == root]
    upper = [o for ln in mounts.splitlines() if ln.split()[4] == '/'
             for o in ln.split(' - ')[1].split()[2].split(',') if o.startswith('upperdir=')]
    print('SCRATCH', fs or ['-'], upper[0].startswith('upperdir=' + root + '/'))
"""


@pytest.mark.parametrize("option, fs, inside", [((), "tmpfs", True),
                                                (("--zoned-pool-scratch", "disk"), "-", False)])
def test_the_session_pool_keeps_its_zones_on_a_tmpfs_of_its_own(busybox, tmp_path, option,
                                                                  fs, inside):
    """By default (root) the session pool's state root is a tmpfs mounted for it, and its
    zones' writable layers are on it; with --zoned-pool-scratch disk neither is. Either
    way the session leaves no mount, state or cgroup behind."""
    before = leftovers()
    (tmp_path / "test_scratch.py").write_text(SCRATCH_SUITE)
    p = pytest_in(tmp_path, "-q", "-s", *option)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SCRATCH ['{fs}'] {inside}" in p.stdout, p.stdout
    assert set(leftovers()) - set(before) == set()
    assert "zoned-test-" not in open("/proc/self/mountinfo").read()


def test_sigterm_to_the_run_still_tears_the_zones_down(busybox, tmp_path):
    """A CI job's timeout or a `kill` sends the pytest run SIGTERM: the plugin turns it into
    an interrupt, so the fixtures' teardowns still remove the test's zone, its state root
    and its cgroup parent (the default action left them, /zoned/zoned-test-* included)."""
    import signal
    import time

    ready = tmp_path / "ready"
    (tmp_path / "test_waits.py").write_text(f'''
import time
import zoned

def test_waits(zoned_root):
    zoned.Container(["sleep", "300"], root=zoned_root, name="w").start()
    open({str(ready)!r}, "w").write(zoned_root)
    time.sleep(300)
''')
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), p.communicate(timeout=30)[0] if p.poll() is not None else ""
        root = ready.read_text()
        name = os.path.basename(root)
        assert glob.glob(f"/sys/fs/cgroup/*/zoned/{name}/w")  # the zone runs
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.exists(root), out
    assert not glob.glob(f"/sys/fs/cgroup/*/zoned/{name}"), out
