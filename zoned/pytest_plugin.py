"""pytest fixtures for test harnesses that embed isolation (installed as a pytest11 plugin).

    def test_once(zoned_run):
        assert zoned_run(["echo", "hi"], timeout=30).stdout == b"hi\\n"

    @pytest.mark.zone(memory="64m", network="none")
    def test_service(zone):
        c = zone(["sleep", "60"])                  # started; removed after the test
        assert c.exec(["hostname"]).stdout.strip() == c.name
        vm = zone(["sleep", "60"], backend="vm")   # the same, as a QEMU micro-VM

`zoned_root` is a private state root per test, so tests never see each other's zones, nor
do pytest-xdist workers: names, cgroups (a parent per test) and state are all per test, and
the default network is "none" (only lo), so no addresses are shared either. Its data root
(writable layers, logs) is derived from it (zoned.storage), so it is private too, and
removed with the test's last zone. As an ordinary user the root lives under
$XDG_RUNTIME_DIR (zoned.rootless).

`zoned_run` calls with the default options run in zones made ahead by the session's
`zoned_pool` (a zoned.Pool: fresh zones, set up on the other CPUs while pytest works; as
root on a tmpfs of its own, --zoned-pool-scratch; rootless too).

`@pytest.mark.zone(**options)` gives defaults for every `zone(...)` and `zoned_run(...)`
call in the test (any zoned.run option: image=, memory=, network=, timeout=, ...). When a
test fails, each zone's stdout and stderr are attached to its report ("zoned NAME stdout").
`zoned_image` (session-scoped) is the image tests run: --zoned-image NAME (default
busybox), checked once per session.
"""
from __future__ import annotations

import os
import tempfile

import pytest

MADE = pytest.StashKey[list]()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("zoned")
    group.addoption("--zoned-image", default=None,
                    help="the image the zoned_image fixture gives (default: busybox)")
    parser.addini("zoned_image", "the image the zoned_image fixture gives", default="busybox")
    group.addoption("--zoned-pool-size", type=int, default=None,
                    help="zones zoned_pool makes ahead (default 2; 0: no pool, every "
                    "zoned_run call makes its zone itself)")
    parser.addini("zoned_pool_size", "zones zoned_pool makes ahead (0: none)", default="2")
    group.addoption("--zoned-pool-scratch", choices=("tmpfs", "disk"), default=None,
                    help="where zoned_pool's zones keep their state and writable layers: "
                    "tmpfs (default as root: ~20%% less CPU a zone; what they write is in "
                    "memory until the test ends) or disk")
    parser.addini("zoned_pool_scratch", "tmpfs or disk (see --zoned-pool-scratch)",
                  default="tmpfs")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "zone(**options): defaults for the zone and zoned_run fixtures' zones "
        "(image=, memory=, network=, timeout=, ... any zoned.run option)")
    _teardown_on_sigterm()


def _teardown_on_sigterm() -> None:
    """SIGTERM (a CI job's timeout, a `kill` of the run) ends the session as Ctrl-C does:
    pytest then still runs the fixtures' teardowns, which remove the zones, state roots
    and cgroup parents the tests made. Killed by the default action instead, the run left
    them all (a stopped CI run left /zoned/zoned-test-* in every hierarchy). Only where
    nobody else handles SIGTERM, and only from the main thread; a process a test forks
    still dies of it."""
    import _signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            _signal.getsignal(_signal.SIGTERM) != _signal.SIG_DFL:
        return

    run = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != run:  # a test's fork: it dies of the signal, as it did
            _signal.signal(signum, _signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    _signal.signal(_signal.SIGTERM, interrupt)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach each of the test's zones' logs: the zone is still there (the
    fixture removes it at teardown, after this report)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for c in item.stash.get(MADE, []):
        for stream in ("stdout", "stderr"):
            try:
                text = c.logs(stream)
            except Exception as e:  # noqa: BLE001 - a report must not fail on a gone zone
                text = f"(no log: {e})"
            if text:
                report.sections.append((f"zoned {c.name} {stream}", text))


@pytest.fixture(scope="session")
def zoned_image(pytestconfig) -> str:
    """The image tests run (--zoned-image, ini zoned_image, default busybox): the default
    of zone() and zoned_run(). Looked up once per session, so a missing image is one clear
    error, not N; busybox, the default, is built if missing (a rootless user starts with
    an empty store of their own), from the recipe `zoned image build` would use
    ($ZONED_RECIPES first)."""
    from zoned.images.errors import ImageError, ImageNotFound
    from zoned.images.store import ImageStore
    from zoned.images.store_write import find_recipe

    name = pytestconfig.getoption("--zoned-image") or pytestconfig.getini("zoned_image")
    store = ImageStore(None)
    try:
        return store.get(name).name
    except ImageNotFound as e:
        if name != "busybox":  # (another image's build can take minutes: not in a test run)
            raise pytest.UsageError(f"zoned_image: {e}") from None
        try:
            recipe = str(find_recipe(name))
        except ImageError:
            raise pytest.UsageError(f"zoned_image: {e}") from None
        from zoned.linux.locks import acquire

        os.makedirs(store.root_dir, exist_ok=True)
        lock = acquire(os.path.join(store.root_dir, ".zoned-image-build"))  # xdist workers
        try:
            try:
                return store.get(name).name
            except ImageNotFound:
                return store.build(recipe).name
        finally:
            os.close(lock)


@pytest.fixture
def zoned_state_fs() -> str:
    """What the test's state root is: "disk" (a directory), or "tmpfs" (a tmpfs of its own,
    as /run is on systemd hosts). Parametrize it to run a test on both:
    pytest.mark.parametrize("zoned_state_fs", ["disk", "tmpfs"])."""
    return "disk"


def _state_base() -> str:
    if os.geteuid() != 0:
        from zoned.rootless import runtime_base

        return runtime_base()
    return "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()


def _make_root(fs: str = "disk") -> tuple[str, str]:
    """A new private state root (a tmpfs of its own with fs="tmpfs") and the cgroup
    parent that goes with it."""
    base = _state_base()
    os.makedirs(base, 0o700, exist_ok=True)
    path = tempfile.mkdtemp(prefix="zoned-test-", dir=base)
    if fs == "tmpfs":
        import subprocess

        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "zoned-test", path],
                       check=True)
    return path, "/zoned/" + os.path.basename(path)


def _remove_root(path: str, fs: str, parent: str) -> None:
    """Remove a state root with everything in it: its zones, networks, data, cgroups."""
    from zoned.gc import collect
    from zoned.runtime.lifecycle import Runtime

    rt = Runtime(path)
    for cid in rt.store.ids():
        try:
            rt.delete(cid, force=True)
        except Exception:  # noqa: BLE001 - teardown removes what it can, gc the rest
            pass
    if os.path.isdir(os.path.join(path, ".networks")):  # networks a failed test left
        from zoned.network import definitions as netconf

        for name in netconf.names(path):
            try:
                netconf.remove(path, name)
            except Exception:  # noqa: BLE001
                pass
    import shutil

    from zoned.volumes import volumes_dir

    shutil.rmtree(volumes_dir(rt.store.data), ignore_errors=True)  # the test's own
    list(collect(rt))  # (also the data dirs of zones that are gone: zoned.storage)
    if fs == "tmpfs":
        import subprocess

        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
    try:
        os.rmdir(path)
    except OSError:
        pass
    if os.geteuid() == 0:
        from zoned.cgroups import remove_empty_ancestors, remove_if_empty

        if remove_if_empty(parent):
            remove_empty_ancestors(parent)  # /zoned, once no test's parent is in it


@pytest.fixture
def zoned_root(monkeypatch, zoned_state_fs):
    """A private state root for this test (removed with everything in it afterwards)."""
    path, parent = _make_root(zoned_state_fs)
    # its own cgroup parent too, so tests (and anything else on the host) never meet
    monkeypatch.setenv("ZONED_CGROUP_PARENT", parent)
    yield path
    _remove_root(path, zoned_state_fs, parent)


class _LazyPool:
    """The session's zoned.Pool, made at its first use (a session that never calls
    zoned_run makes none). scratch "tmpfs" (root only: an ordinary user cannot mount
    one): its state root is a tmpfs of its own, with the zones' writable layers on it."""

    def __init__(self, image: str, size: int, scratch: str):
        self.image, self.size = image, size
        self.fs = "tmpfs" if scratch == "tmpfs" and os.geteuid() == 0 else "disk"
        self.pool = None
        self.root: tuple[str, str] | None = None

    def get(self):
        if self.pool is None:
            from zoned.pool import Pool

            self.root = _make_root(self.fs)
            data = os.path.join(self.root[0], ".data") if self.fs == "tmpfs" else None
            try:
                self.pool = Pool(size=self.size, root=self.root[0], image=self.image,
                                 cgroup_parent=self.root[1], data_root=data)
            except BaseException:
                _remove_root(self.root[0], self.fs, self.root[1])
                raise
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            _remove_root(self.root[0], self.fs, self.root[1])
            self.pool = None


@pytest.fixture(scope="session")
def zoned_pool(pytestconfig, zoned_image):
    """This session's (this xdist worker's) zoned.Pool of zones with the default options,
    made ahead in a state root of its own: zoned_run runs a test's plain calls in it
    (see zoned_run); rootless too. None with --zoned-pool-size 0."""
    size = pytestconfig.getoption("zoned_pool_size")
    if size is None:
        size = int(pytestconfig.getini("zoned_pool_size"))
    if size <= 0:
        yield None
        return
    scratch = pytestconfig.getoption("zoned_pool_scratch") or \
        pytestconfig.getini("zoned_pool_scratch")
    if scratch not in ("tmpfs", "disk"):
        raise pytest.UsageError(f"zoned_pool_scratch: {scratch!r} (tmpfs or disk)")
    lazy = _LazyPool(zoned_image, size, scratch)
    yield lazy
    lazy.close()


def _marker_options(request) -> dict:
    """The test's @pytest.mark.zone(...) options, the closest marker winning."""
    options: dict = {}
    for mark in reversed(list(request.node.iter_markers("zone"))):
        if mark.args:
            raise pytest.UsageError("pytest.mark.zone takes keyword options only "
                                    "(image=, memory=, network=, ...)")
        options.update(mark.kwargs)
    return options


@pytest.fixture
def zone(request, zoned_root, zoned_image):
    """A factory: zone(args, **options) -> a started zoned.Container, killed and removed
    after the test (backend="vm": a VM). Options: the test's @pytest.mark.zone(...), then
    the call's; `timeout` there applies to zoned_run only."""
    from zoned.api import Container

    made = request.node.stash.setdefault(MADE, [])
    defaults = _marker_options(request)
    defaults.pop("timeout", None)

    def make(args=None, **options):
        options = {**defaults, **options}
        options.setdefault("root", zoned_root)
        options.setdefault("image", zoned_image)
        c = Container(args or ["sleep", "3600"], **options)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.remove(force=True)


POOL_CALL_OPTIONS = ("input", "text", "check", "timeout", "shell", "env")


@pytest.fixture
def zoned_run(request, zoned_image, zoned_pool):
    """zoned.run bound to this test's root and @pytest.mark.zone(...) options:
    zoned_run(["echo", "hi"]).stdout == b"hi\\n" (timeout=, check=, input=, ... as run).

    A call with no zone options of its own (only input=, text=, check=, timeout=, shell=,
    env=), in a test with no zone marker and no zoned_root or zoned_state_fs of its own,
    runs in the session's zoned_pool: a fresh zone made ahead, so the test does not wait
    for its set-up. Any other call makes its zone in the test's zoned_root, as zoned.run;
    so does every call once the pool's maker has failed to make one."""
    import zoned.api

    defaults = _marker_options(request)
    own_root = {"zoned_root", "zoned_state_fs"} & set(request.fixturenames)

    def run(args, **options):
        options = {**defaults, **options}
        if options.get("image") == zoned_image:
            options.pop("image")
        if zoned_pool is not None and not own_root and not defaults \
                and set(options) <= set(POOL_CALL_OPTIONS):
            pool = zoned_pool.get()
            if pool.failure is None:
                try:
                    return pool.run(args, **options)
                except zoned.api.ZonedError:
                    if pool.failure is None:
                        raise  # the command's, not the pool's
            # a maker that cannot make zones: each call makes its own (and says why)
        options.setdefault("root", request.getfixturevalue("zoned_root"))
        options.setdefault("image", zoned_image)
        return zoned.api.run(args, **options)

    return run
