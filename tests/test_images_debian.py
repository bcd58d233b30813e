"""The `debian` recipe: a real Debian userland made by mmdebstrap from the host's apt
sources, built once per session into a private store (the .deb cache lives in the machine's
default store, so later sessions download nothing), then run as a zone and as a VM.

Skipped, with the reason, only when the Debian archive cannot be reached."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ZONED

DEFAULT_CACHE = "/var/lib/zoned/images/.cache/debs"


@pytest.fixture(scope="session")
def debian(tmp_path_factory):
    """(store dir, build seconds): `zoned image build debian`, once per session."""
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing: `make setup` installs it")
    store = tmp_path_factory.mktemp("debian-store")
    env = dict(os.environ, ZONED_DEB_CACHE=os.environ.get("ZONED_DEB_CACHE", DEFAULT_CACHE))
    from zoned.vm.assets import vm_dir

    disks = os.path.join(vm_dir(), "disks")
    had = set(os.listdir(disks)) if os.path.isdir(disks) else set()
    t0 = time.monotonic()
    p = subprocess.run([ZONED, "--images", str(store), "image", "build", "debian"],
                       capture_output=True, text=True, timeout=900, env=env)
    if p.returncode != 0:
        if "unreachable through apt's sources" in p.stderr:
            pytest.skip(f"the Debian archive is unreachable: {p.stderr.strip()}")
        raise AssertionError(f"zoned image build debian: {p.stderr}")
    yield store, time.monotonic() - t0
    # the VM test's root disk is made per image digest: don't leave this session's behind
    # (mmdebstrap builds are reproducible: the machine's own debian image may share it)
    digest_file = store / "debian" / "digest"
    if digest_file.exists():
        name = digest_file.read_text().split()[1].split(":")[1][:32] + ".squashfs"
        if name not in had and os.path.exists(os.path.join(disks, name)):
            os.unlink(os.path.join(disks, name))


@pytest.fixture
def zoned(debian, cli, monkeypatch):
    store, _ = debian
    monkeypatch.setenv("ZONED_IMAGES", str(store))  # also for the VM backend's root disk

    def run(*args, check=True, timeout=300):
        p = cli(*args, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"zoned {' '.join(args)} -> {p.returncode}: {p.stderr}")
        return p

    return run


def test_debian_image_is_a_real_userland(debian, zoned):
    store, seconds = debian
    meta = json.loads(zoned("image", "inspect", "debian").stdout)
    boot = meta["debs"][0]["bootstrap"]
    assert boot["tool"] == "mmdebstrap" and boot["variant"] == "minbase"
    assert re.fullmatch(r"\d+\.\d+", boot["debian_version"])
    # minbase is small, and slimmed further (no manuals, translations)
    assert 40 << 20 < meta["size"] < 250 << 20, meta["size"]
    rootfs = store / "debian" / "rootfs"
    assert not any((rootfs / "usr/share/man").glob("*/*"))
    assert os.listdir(rootfs / "dev") == []  # the runtime brings its own /dev
    assert "/usr/bin/passwd" in meta["setuid"]  # Debian's setuid programs, listed
    r = zoned("run", "--rm", "--image", "debian", "--", "sh", "-c",
              "cat /etc/debian_version; dpkg-query -W -f='${Package}\\n' bash apt coreutils")
    lines = r.stdout.split()
    assert lines[0] == boot["debian_version"] and sorted(lines[1:]) == ["apt", "bash", "coreutils"]
    assert zoned("run", "--rm", "--image", "debian").returncode == 0  # cmd: bash, stdin EOF
    print(f"debian build: {seconds:.1f}s, {meta['size'] / 2**20:.0f} MiB")


def test_debs_are_cached_for_the_next_build(debian):
    cache = os.environ.get("ZONED_DEB_CACHE", DEFAULT_CACHE)
    debs = [n for n in os.listdir(cache) if n.endswith(".deb")]
    assert any(n.startswith("bash_") for n in debs) and len(debs) > 50


def test_apt_get_works_inside_with_a_network(zoned):
    zoned("network", "create", "zimgdeb")
    try:
        r = zoned("run", "--rm", "--network", "zimgdeb", "--image", "debian", "--", "sh", "-c",
                  "apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "
                  "netbase >/dev/null && grep -c tcp /etc/services", timeout=600)
        assert int(r.stdout.strip()) > 10
    finally:
        zoned("network", "rm", "zimgdeb", check=False)


def test_debian_boots_as_a_vm(zoned):
    try:
        from zoned.vm.assets import kernel

        kernel()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no VM guest kernel: {e}")
    r = zoned("run", "--rm", "--backend", "vm", "--image", "debian", "--",
              "sh", "-c", "cat /etc/debian_version; test -x /usr/bin/apt-get && echo apt")
    assert r.stdout.split()[1] == "apt" and re.fullmatch(r"\d+\.\d+", r.stdout.split()[0])


def test_unreachable_archive_is_one_line_and_leaves_nothing(tmp_path, cli):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "deadend.yaml").write_text(
        "name: deadend\nbootstrap:\n  suite: bookworm\n"
        "  mirror: ['deb [trusted=yes] http://127.0.0.1:9/debian bookworm main']\n")
    store = tmp_path / "store"
    p = subprocess.run([ZONED, "--images", str(store), "image", "build", "deadend"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, ZONED_RECIPES=str(recipes),
                                ZONED_DEB_CACHE=str(tmp_path / "debs")))
    assert p.returncode == 125
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "the Debian archive is unreachable through apt's sources" in lines[0]
    assert "127.0.0.1" in lines[0]
    assert sorted(n for n in os.listdir(store) if n != ".lock") == []


def test_bad_bootstrap_keys_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    for body, words in ((" variant: tiny\n", "bootstrap.variant: 'tiny'"),
                        (" tool: debootstrap\n", "bootstrap.tool"),
                        (" packages: ['rm -rf /']\n", "bootstrap.packages"),
                        (" suit: bookworm\n", "unknown key 'suit'")):
        bad.write_text("name: bad\nbootstrap:\n" + body)
        p = subprocess.run([ZONED, "--images", str(tmp_path / "s"), "image", "build", str(bad)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 125 and words in p.stderr, p.stderr
        assert not (tmp_path / "s" / "bad").exists()
