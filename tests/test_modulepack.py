"""zoned.modulepack: one file of compiled modules serves the imports, and is only ever a
cache of the sources (no root needed).

Each case imports a small package of its own in a fresh interpreter, with the pack
installed as zoned installs its own: a module comes from the pack while its source is the
one compiled; an edited source, a pack of another Python, a pack file replaced on disk, or
an fd of the pack closed and its number reused (a zone's init closes every fd) each fall
back to the usual import, never to wrong code. The real zoned checkout's pack is checked
too (`make bytecode` writes it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoned import modulepack

REPO = Path(__file__).resolve().parent.parent


def _package(tmp_path: Path, value: str = "one") -> Path:
    pkg = tmp_path / "pk"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("NAME = 'pk'\n")
    (pkg / "a.py").write_text(f"def value():\n    return {value!r}\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from pk import a\n\ndef twice():\n    return a.value() * 2\n")
    (pkg / "not-a-module.py").write_text("raise SystemExit('imported')\n")
    return pkg


# Runs in a fresh interpreter: installs the pack of `pkg`, then runs `body`; prints JSON.
PRELUDE = """
import json, os, sys
sys.path[0:0] = [{repo!r}, {parent!r}]
os.environ.pop("ZONED_MODULEPACK", None)
from zoned import modulepack
finder = modulepack.install({pkg!r})
def origin(mod):
    return type(mod.__spec__.loader).__name__
"""


def _run(pkg: Path, body: str, env: dict | None = None) -> dict:
    code = PRELUDE.format(repo=str(REPO), parent=str(pkg.parent), pkg=str(pkg))
    code += textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_modules_lists_every_importable_module_relative_to_the_package(tmp_path):
    pkg = _package(tmp_path)
    assert modulepack.modules(str(pkg)) == {
        "pk": ("__init__.py", True), "pk.a": ("a.py", False),
        "pk.sub": ("sub/__init__.py", True), "pk.sub.b": ("sub/b.py", False)}


def test_modules_come_from_the_pack_and_behave_as_from_source(tmp_path):
    pkg = _package(tmp_path)
    modulepack.write(str(pkg))
    out = _run(pkg, """
        import pk.sub.b, pk.a
        print(json.dumps({"twice": pk.sub.b.twice(), "loaders": [origin(pk), origin(pk.a),
            origin(pk.sub), origin(pk.sub.b)], "file": pk.sub.b.__file__,
            "path": pk.sub.__path__, "co": pk.a.value.__code__.co_filename,
            "at": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path]}))
    """)
    assert out["twice"] == "oneone"
    assert set(out["loaders"]) == {"PackLoader"}
    assert out["file"] == str(pkg / "sub" / "b.py")
    assert out["path"] == [str(pkg / "sub")]
    assert out["co"] == str(pkg / "a.py")
    # just before the path finder: hooks placed earlier (pytest's) keep their modules
    assert out["at"][-2:] == ["PackFinder", "PathFinder"]


def test_an_edited_source_is_imported_from_source_not_from_the_pack(tmp_path):
    pkg = _package(tmp_path)
    modulepack.write(str(pkg))
    (pkg / "a.py").write_text("def value():\n    return 'two'\n")  # the same size
    out = _run(pkg, """
        import pk.a
        print(json.dumps({"value": pk.a.value()}))
    """)
    assert out["value"] == "two"


def test_a_pack_of_another_python_or_a_damaged_one_is_ignored(tmp_path):
    pkg = _package(tmp_path)
    path = Path(modulepack.write(str(pkg)))
    data = bytearray(path.read_bytes())
    data[4:8] = b"\0\0\0\0"  # another bytecode magic
    path.write_bytes(bytes(data))
    out = _run(pkg, """
        import pk.a
        print(json.dumps({"finder": finder is None, "value": pk.a.value(),
                          "loader": origin(pk.a)}))
    """)
    assert out == {"finder": True, "value": "one", "loader": "SourceFileLoader"}
    path.write_bytes(b"ZMP1")
    out = _run(pkg, "print(json.dumps(finder is None))\n")
    assert out is True


def test_zoned_modulepack_0_turns_the_pack_off(tmp_path):
    pkg = _package(tmp_path)
    modulepack.write(str(pkg))
    code = PRELUDE.format(repo=str(REPO), parent=str(pkg.parent), pkg=str(pkg))
    code = code.replace('os.environ.pop("ZONED_MODULEPACK", None)\n', "")
    code += "import pk.a\nprint(json.dumps([finder is None, origin(pk.a)]))\n"
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "ZONED_MODULEPACK": "0"})
    assert json.loads(proc.stdout) == [True, "SourceFileLoader"], proc.stderr


def test_a_closed_pack_fd_whose_number_is_reused_is_never_read_as_code(tmp_path):
    """A zone's init closes every fd it does not keep, then opens others: the pack's fd
    number may then name another file. The pack opens itself again."""
    pkg = _package(tmp_path)
    modulepack.write(str(pkg))
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"\xe3" + os.urandom(4096))
    out = _run(pkg, f"""
        import pk
        fd = finder.pack.fd
        os.close(fd)
        other = os.open({str(decoy)!r}, os.O_RDONLY)
        assert other == fd
        import pk.sub.b
        print(json.dumps({{"twice": pk.sub.b.twice(), "loader": origin(pk.sub.b),
                          "decoy_still_open": os.fstat(other).st_size,
                          "pack_fd_moved": finder.pack.fd != fd}}))
    """)
    assert out == {"twice": "oneone", "loader": "PackLoader", "decoy_still_open": 4097,
                   "pack_fd_moved": True}


def test_a_pack_replaced_on_disk_after_its_fd_closed_is_given_up(tmp_path):
    """The index read at start names offsets in the file opened then: a new pack at the
    path (make bytecode ran meanwhile) is not read with the old index."""
    pkg = _package(tmp_path)
    modulepack.write(str(pkg))
    out = _run(pkg, f"""
        import pk
        os.close(finder.pack.fd)
        (open({str(pkg / "a.py")!r}, "a")).write("# edited\\n")
        modulepack.write({str(pkg)!r})
        import pk.sub.b  # unchanged: the pack has it, but in a new file
        print(json.dumps({{"twice": pk.sub.b.twice(), "fd": finder.pack.fd}}))
    """)
    assert out == {"twice": "oneone", "fd": -1}


def test_a_copied_tree_imports_its_own_sources(tmp_path):
    pkg = _package(tmp_path / "one")
    modulepack.write(str(pkg))
    copy = tmp_path / "two" / "pk"
    shutil.copytree(pkg, copy, copy_function=shutil.copy2)  # mtimes kept: the pack applies
    out = _run(copy, """
        import pk.a
        print(json.dumps({"file": pk.a.__file__, "co": pk.a.value.__code__.co_filename,
                          "loader": origin(pk.a)}))
    """)
    assert out == {"file": str(copy / "a.py"), "co": str(copy / "a.py"),
                   "loader": "PackLoader"}


def test_the_checkouts_zoned_modules_come_from_its_pack():
    pack = Path(modulepack.pack_path(str(REPO / "zoned")))
    if not pack.exists():
        pytest.skip("no pack: `make bytecode` writes it")
    code = (f"import sys, json; sys.path[0:0] = [{str(REPO)!r}]\n"
            "import zoned.api, zoned.cli.run\n"
            "print(json.dumps([type(m.__spec__.loader).__name__ for m in "
            "(zoned.api, zoned.cli.run)] + [zoned.api.__file__]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "ZONED_MODULEPACK"})
    assert json.loads(proc.stdout) == ["PackLoader", "PackLoader",
                                       str(REPO / "zoned" / "api.py")], proc.stderr
