"""Recipe strings that reach mmdebstrap's command line or a config file on the host: a
mirror entry spelled as an option (`--setup-hook=CMD` ran CMD as root on the host), a
path_exclude with a newline (an extra line in dpkg.cfg.d), control characters elsewhere.
Each recipe must be refused when it is parsed -- exit 125, one line naming the field --
and nothing run: a fake mmdebstrap first on PATH would leave a canary if it were."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ZONED = str(Path(sys.executable).parent / "zoned")


@pytest.fixture
def build(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    ran = tmp_path / "ran"
    (fake / "mmdebstrap").write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\nexit 1\n")
    (fake / "mmdebstrap").chmod(0o755)

    def run(bootstrap: dict | None = None, **top) -> str:
        recipe = tmp_path / "evil.yaml"
        doc = {"name": "evil", **top}
        if bootstrap is not None:
            doc["bootstrap"] = {"suite": "bookworm", **bootstrap}
        recipe.write_text(json.dumps(doc))  # JSON is YAML: the strings exactly as given
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
        p = subprocess.run([ZONED, "--images", str(tmp_path / "store"), "image", "build",
                            str(recipe)], capture_output=True, text=True, timeout=60, env=env)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 125 and len(lines) == 1, (p.returncode, p.stderr)
        assert not ran.exists(), ran.read_text()
        assert not (tmp_path / "store" / "evil").exists()
        return lines[0]

    return run


@pytest.mark.parametrize("mirror", [
    "--setup-hook=id > /tmp/zoned-imgtest-hook",
    "-v",
    "http://deb.debian.org/debian\n--setup-hook=id",
    "deb http://deb.debian.org/debian bookworm main\n--customize-hook=id",
    "deb http://deb.debian.org/debian bookworm main\rx",
    "ftp://example.org/debian",
    "",
])
def test_mirror_must_be_a_uri_or_a_sources_line(build, mirror):
    line = build({"mirror": [mirror]})
    assert "bootstrap.mirror[0]" in line
    assert not os.path.exists("/tmp/zoned-imgtest-hook")


@pytest.mark.parametrize("key", ["path_exclude", "path_include"])
def test_dpkg_path_filters_refuse_newlines(build, key):
    line = build({key: ["/usr/share/man/*\nforce-script-chrootless"]})
    assert f"bootstrap.{key}" in line


@pytest.mark.parametrize("top, field", [
    ({"description": "ok\x1b]0;owned\x07"}, "description"),
    ({"debs": ["busybox-static\n"]}, "debs[0]"),
    ({"files": {"/etc/x\ny": "z"}}, "files"),
    ({"symlinks": {"/etc/mtab": "/proc/mounts\n"}}, "symlinks[/etc/mtab]"),
    ({"config": {"hostname": "a\nb"}}, "config.hostname"),
])
def test_control_characters_refused_elsewhere(build, top, field):
    assert field in build(None, **top)


def test_a_folded_description_and_good_mirrors_still_load(tmp_path):
    from zoned.images.recipes import load_recipe

    recipe = tmp_path / "ok.yaml"
    recipe.write_text("name: ok\ndescription: >\n  two\n  words\nbootstrap:\n  suite: bookworm\n"
                      "  mirror:\n    - http://deb.debian.org/debian\n"
                      "    - deb [signed-by=/usr/share/keyrings/k.gpg] https://m.example/debian"
                      " bookworm main contrib\n    - file:///srv/mirror\n")
    r = load_recipe(recipe)
    assert r.description == "two words"
    assert len(r.bootstrap["mirror"]) == 3
