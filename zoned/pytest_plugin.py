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


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "zone(**options): defaults for the zone and zoned_run fixtures' zones "
        "(image=, memory=, network=, timeout=, ... any zoned.run option)")


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
    error, not N; an image zoned has a recipe for (busybox) is built if missing (a rootless
    user starts with an empty store of their own)."""
    from zoned.images.errors import ImageNotFound
    from zoned.images.store import RECIPES_DIR, ImageStore

    name = pytestconfig.getoption("--zoned-image") or pytestconfig.getini("zoned_image")
    store = ImageStore(None)
    try:
        return store.get(name).name
    except ImageNotFound as e:
        recipe = os.path.join(RECIPES_DIR, f"{name}.yaml")
        if name != "busybox" or not os.path.exists(recipe):
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


@pytest.fixture
def zoned_root(monkeypatch, zoned_state_fs):
    """A private state root for this test (removed with everything in it afterwards)."""
    base = _state_base()
    os.makedirs(base, 0o700, exist_ok=True)
    path = tempfile.mkdtemp(prefix="zoned-test-", dir=base)
    if zoned_state_fs == "tmpfs":
        import subprocess

        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "zoned-test", path],
                       check=True)
    # its own cgroup parent too, so tests (and anything else on the host) never meet
    parent = "/zoned/" + os.path.basename(path)
    monkeypatch.setenv("ZONED_CGROUP_PARENT", parent)
    yield path
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
    list(collect(rt))  # (also the data dirs of zones that are gone: zoned.storage)
    if zoned_state_fs == "tmpfs":
        import subprocess

        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
    try:
        os.rmdir(path)
    except OSError:
        pass
    if os.geteuid() == 0:
        from zoned.cgroups import remove_if_empty

        remove_if_empty(parent)


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


@pytest.fixture
def zoned_run(request, zoned_root, zoned_image):
    """zoned.run bound to this test's root and @pytest.mark.zone(...) options:
    zoned_run(["echo", "hi"]).stdout == b"hi\\n" (timeout=, check=, input=, ... as run)."""
    import zoned.api

    defaults = _marker_options(request)

    def run(args, **options):
        options = {**defaults, **options}
        options.setdefault("root", zoned_root)
        options.setdefault("image", zoned_image)
        return zoned.api.run(args, **options)

    return run
