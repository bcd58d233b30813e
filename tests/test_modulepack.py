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

from zoned import modulepack, modulepack_write

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
from zoned import modulepack, modulepack_write
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
    assert modulepack_write.modules(str(pkg)) == {
        "pk": ("__init__.py", True), "pk.a": ("a.py", False),
        "pk.sub": ("sub/__init__.py", True), "pk.sub.b": ("sub/b.py", False)}


def test_modules_come_from_the_pack_and_behave_as_from_source(tmp_path):
    pkg = _package(tmp_path)
    modulepack_write.write(str(pkg))
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
    modulepack_write.write(str(pkg))
    (pkg / "a.py").write_text("def value():\n    return 'two'\n")  # the same size
    out = _run(pkg, """
        import pk.a
        print(json.dumps({"value": pk.a.value()}))
    """)
    assert out["value"] == "two"


def test_a_pack_of_another_python_or_a_damaged_one_is_ignored(tmp_path):
    pkg = _package(tmp_path)
    path = Path(modulepack_write.write(str(pkg)))
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
    modulepack_write.write(str(pkg))
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
    modulepack_write.write(str(pkg))
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
    modulepack_write.write(str(pkg))
    out = _run(pkg, f"""
        import pk
        os.close(finder.pack.fd)
        (open({str(pkg / "a.py")!r}, "a")).write("# edited\\n")
        modulepack_write.write({str(pkg)!r})
        import pk.sub.b  # unchanged: the pack has it, but in a new file
        print(json.dumps({{"twice": pk.sub.b.twice(), "fd": finder.pack.fd}}))
    """)
    assert out == {"twice": "oneone", "fd": -1}


def test_a_copied_tree_imports_its_own_sources(tmp_path):
    pkg = _package(tmp_path / "one")
    modulepack_write.write(str(pkg))
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


# -- preload ------------------------------------------------------------------------------
def test_module_imports_are_the_module_level_ones_in_source_order():
    known = {"pk", "pk.a", "pk.b", "pk.sub", "pk.sub.c", "pk.d", "pk.e", "pk.f"}
    source = textwrap.dedent("""
        from __future__ import annotations
        import os
        from pk.sub import c
        from . import a
        from .. import outside
        if TYPE_CHECKING:
            from pk import d
        try:
            import pk.b
        except ImportError:
            from pk import f
        def later():
            import pk.e
    """).encode()
    assert modulepack_write.module_imports("pk.x", source, False, known) == (
        "pk", "pk.sub", "pk.sub.c", "pk.a", "pk.b", "pk.f")
    # in a package's __init__, "." is the package itself
    assert modulepack_write.module_imports("pk.sub", b"from . import c\n", True, known) == (
        "pk", "pk.sub.c")


def _preload_package(tmp_path: Path) -> Path:
    pkg = _package(tmp_path)
    (pkg / "c.py").write_text(textwrap.dedent("""
        from .sub import b
        def thrice():
            from pk import e
            return b.twice() + e.VALUE
    """))
    (pkg / "e.py").write_text("VALUE = 'e'\n")
    (pkg / "bad.py").write_text("raise ValueError('bad at import')\n")
    modulepack_write.write(str(pkg))
    return pkg


# Records each module the import system itself loads (not a preload's).
LOADS = """
import importlib._bootstrap as _b
imported = []
_orig = _b._load_unlocked
def _load(spec):
    imported.append(spec.name)
    return _orig(spec)
_b._load_unlocked = _load
def attrs(mod):
    return {k: getattr(mod, k, None) for k in ("__name__", "__package__", "__file__",
            "__cached__", "__path__")} | {"loader": origin(mod), "spec": mod.__spec__.name,
            "origin": mod.__spec__.origin, "parent": mod.__spec__.parent,
            "initializing": getattr(mod.__spec__, "_initializing", False)}
"""


def test_preload_loads_a_module_and_its_imports_as_an_import_would(tmp_path):
    pkg = _preload_package(tmp_path)
    body = """
        {how}
        import pk.c
        print(json.dumps({{"imported": imported, "thrice": pk.c.thrice(),
            "attrs": [attrs(sys.modules[m]) for m in ("pk", "pk.sub", "pk.sub.b", "pk.c")],
            "parents": [pk.sub.b is sys.modules["pk.sub.b"], pk.c is sys.modules["pk.c"]],
            "loaded": sorted(m for m in sys.modules if m.startswith("pk"))}}))
    """
    pre = _run(pkg, LOADS + textwrap.dedent(body).format(how="modulepack.preload(['pk.c'])"))
    usual = _run(pkg, LOADS + textwrap.dedent(body).format(how=""))
    # what the import system loaded itself: nothing of the preloaded ones; pk.e only when
    # thrice() imports it (a function's import is not the module's)
    assert pre["imported"] == ["pk.e"]
    assert usual["imported"] == ["pk", "pk.c", "pk.sub", "pk.sub.b", "pk.a", "pk.e"]
    assert pre["thrice"] == usual["thrice"] == "oneonee"
    assert pre["attrs"] == usual["attrs"]  # __file__, __cached__, __path__, spec, loader
    assert pre["parents"] == [True, True]
    assert pre["loaded"] == usual["loaded"]


def test_preload_leaves_an_edited_source_and_a_failing_module_to_the_import_system(tmp_path):
    pkg = _preload_package(tmp_path)
    (pkg / "a.py").write_text("def value():\n    return 'two'\n")  # the same size
    out = _run(pkg, LOADS + textwrap.dedent("""
        modulepack.preload(["pk.sub.b", "pk.bad"])
        import pk.sub.b
        try:
            import pk.bad
            error = None
        except ValueError as e:
            error = str(e)
        print(json.dumps({"imported": imported, "twice": pk.sub.b.twice(),
                          "loader_a": origin(pk.a), "loader_b": origin(pk.sub.b),
                          "error": error}))
    """))
    # pk.a's source changed: imported by b's body through the import system, which took
    # its code from the source (its loader falls back to it); pk.bad raised in the
    # preload, was dropped, and raises at its import as it would have
    assert out == {"imported": ["pk.a", "pk.bad"], "twice": "twotwo",
                   "loader_a": "PackLoader", "loader_b": "PackLoader",
                   "error": "bad at import"}


def test_preload_does_nothing_while_another_thread_runs(tmp_path):
    """An import in another thread would not wait for a module the preload is running
    (it takes no import lock): with a thread, the import system does it all."""
    pkg = _preload_package(tmp_path)
    out = _run(pkg, LOADS + textwrap.dedent("""
        import threading
        done = threading.Event()
        t = threading.Thread(target=done.wait)
        t.start()
        modulepack.preload(["pk.c"])
        loaded = "pk.c" in sys.modules
        done.set()
        t.join()
        import time
        while os.stat("/proc/self/task").st_nlink != 3:  # the thread's task is gone
            time.sleep(0.001)
        modulepack.preload(["pk.c"])
        print(json.dumps({"with_thread": loaded, "after": "pk.c" in sys.modules,
                          "imported": [m for m in imported if m.startswith("pk")]}))
    """))
    assert out == {"with_thread": False, "after": True, "imported": []}


def test_the_checkouts_pack_records_each_modules_imports():
    pack = Path(modulepack.pack_path(str(REPO / "zoned")))
    if not pack.exists():
        pytest.skip("no pack: `make bytecode` writes it")
    pack = modulepack.Pack(str(REPO / "zoned"))
    source = (REPO / "zoned" / "cli" / "run.py").read_bytes()
    assert pack.imports("zoned.cli.run") == modulepack_write.module_imports(
        "zoned.cli.run", source, False, modulepack_write.modules(str(REPO / "zoned")))
    assert "zoned.cli.common" in pack.imports("zoned.cli.run")


def test_a_future_annotations_module_from_the_pack_imports_no_future_module(tmp_path):
    """`from __future__ import annotations` is compiled as its flag: annotations stay
    strings, `__future__` is never imported, and every function's code is the .pyc's."""
    pkg = _package(tmp_path)
    source = textwrap.dedent('''
        """A docstring first."""
        from __future__ import annotations

        def f(x: Later) -> list[Later]:
            return [x]

        class Later:
            pass
    ''')
    (pkg / "fut.py").write_text(source)
    modulepack_write.write(str(pkg))
    out = _run(pkg, """
        import pk.fut
        print(json.dumps({"hints": pk.fut.f.__annotations__, "doc": pk.fut.__doc__,
                          "future": "__future__" in sys.modules, "loader": origin(pk.fut),
                          "works": type(pk.fut.f(pk.fut.Later())[0]).__name__}))
    """)
    assert out == {"hints": {"x": "Later", "return": "list[Later]"},
                   "doc": "A docstring first.", "future": False, "loader": "PackLoader",
                   "works": "Later"}
    import ast

    usual = compile(source, "fut.py", "exec", dont_inherit=True)
    packed = modulepack_write.compile_module(ast.parse(source), "fut.py")
    functions = [[c for c in code.co_consts if hasattr(c, "co_code")]
                 for code in (usual, packed)]
    assert [(c.co_code, c.co_flags, c.co_linetable) for c in functions[0]] == \
        [(c.co_code, c.co_flags, c.co_linetable) for c in functions[1]]


def test_preload_does_nothing_behind_an_import_hook(tmp_path):
    """A hook before the pack's finder (pytest's assertion rewriting, a user's) would have
    been asked first by an import: with one there, the import system does it all."""
    pkg = _preload_package(tmp_path)
    out = _run(pkg, LOADS + textwrap.dedent("""
        class Hook:
            asked = []
            def find_spec(self, name, path=None, target=None):
                self.asked.append(name)
                return None
        sys.meta_path.insert(0, Hook())
        modulepack.preload(["pk.c"])
        preloaded = "pk.c" in sys.modules
        import pk.c
        print(json.dumps({"preloaded": preloaded, "asked": "pk.c" in Hook.asked,
                          "imported": [m for m in imported if m.startswith("pk")]}))
    """))
    assert out == {"preloaded": False, "asked": True,
                   "imported": ["pk", "pk.c", "pk.sub", "pk.sub.b", "pk.a"]}


def test_a_damaged_imports_table_costs_the_preload_its_order_not_the_command(tmp_path):
    """The pack is a cache: with its imports table unreadable, a preload loads the named
    modules without their imports first (which their bodies then import), and nothing
    fails."""
    pkg = _preload_package(tmp_path)
    path = Path(modulepack.pack_path(str(pkg)))
    data = bytearray(path.read_bytes())
    index_size = int.from_bytes(data[8:16], "little")
    start = modulepack.HEADER + index_size
    data[start:start + 8] = b"\xff" * 8  # not marshal data
    path.write_bytes(bytes(data))
    out = _run(pkg, LOADS + textwrap.dedent("""
        modulepack.preload(["pk.c"])
        import pk.c
        print(json.dumps({"thrice": pk.c.thrice(), "loader": origin(pk.c),
                          "imported": [m for m in imported if m.startswith("pk")]}))
    """))
    # pk and pk.c preloaded (pk as c's parent); pk.c's body imported the rest
    assert out == {"thrice": "oneonee", "loader": "PackLoader",
                   "imported": ["pk.sub", "pk.sub.b", "pk.a", "pk.e"]}
