"""All of zoned's compiled modules in one file, served by one finder (start-up time).

A `zoned run` imports some 60 of zoned's modules. Through the usual path each costs a
directory check, a stat, an open, two reads and a close, and several microseconds of the
import system's Python code to find its .pyc. Here they come from one pack, written next to
the .pyc files by `make bytecode` (zoned.modulepack_write): a module costs a stat of
its source and one pread. That took 2.7 ms off the ~11 ms of `zoned run`'s imports.

Like a .pyc, the pack is only a cache of the source:
- each module's code is used only while its source has the mtime and size recorded for it;
  otherwise (an edited source, a pack from another checkout) the module loads as usual;
- a pack from another Python (its bytecode magic differs), or none at all, is ignored;
- the pack is replaced by a rename, so a running process keeps reading the file it opened.

The pack's fd is checked (fstat: the same inode) before each read, since a fork's child may
close every fd (the zone's init does) and reuse the number; a child with the fd closed opens
the pack again by path, and gives the pack up if that is now another file.

The finder stands just before the import system's path finder, after any other hook
(pytest's assertion rewriting keeps its modules). A module from the pack is a regular source
module: __file__, tracebacks, getsource and resources work as usual.

preload() loads a command's modules in one go, before the command imports them: each with
what it imports at module level first (the pack records that, from the source), straight
from the pack. The import system's own Python code per module (its lock, finders, spec and
attributes, ~25-30 us cold) is then paid by none of them: the 60 imports of a `zoned run`
took 12.9 -> 11.3 ms in interleaved runs.

A module's `from __future__ import annotations` is compiled as the flag it stands for,
without the statement: the same code otherwise, but no command imports `__future__`
(found through sys.path and loaded from the stdlib: ~0.3 ms). The module then lacks the
`annotations` name that statement binds, which zoned never reads. This module does
without the statement: the import system loads it before the pack is there.
"""
import _imp
import marshal
import os
import sys

# importlib.machinery re-exports these; importing it costs ~0.7 ms (it imports warnings).
# The frozen module is always loaded, it is what importlib.machinery itself imports.
import _frozen_importlib as _bootstrap  # noqa: I001
import _frozen_importlib_external as _external

FORMAT = b"ZMP3"
PACK_NAME = f"modules.{sys.implementation.cache_tag}.pack"
HEADER = len(FORMAT) + 4 + 8 + 8  # FORMAT, bytecode magic, the index's and imports' lengths
MAGIC = _external.MAGIC_NUMBER  # this Python's bytecode magic (importlib.util.MAGIC_NUMBER)


def pack_path(package_dir: str) -> str:
    return os.path.join(package_dir, "__pycache__", PACK_NAME)


class Pack:
    """An opened pack: its index, and the fd its code is read from. The index names each
    source relative to the package's directory, so a copied tree reads its own sources."""

    def __init__(self, package_dir: str):
        self.package_dir = package_dir
        self.path = path = pack_path(package_dir)
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(self.fd)
            self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            head = os.pread(self.fd, HEADER, 0)
            if len(head) != HEADER or head[:4] != FORMAT or head[4:8] != MAGIC:
                raise ValueError(f"{path}: not a pack of this Python's bytecode")
            size = int.from_bytes(head[8:16], "little")
            self._imports_size = int.from_bytes(head[16:], "little")
            self._imports: dict[str, tuple[str, ...]] | None = None
            # name -> (source path relative to the package's directory, is a package,
            #          source mtime_ns, source size, offset, length)
            self.index: dict[str, tuple] = marshal.loads(os.pread(self.fd, size, HEADER))
            if not isinstance(self.index, dict):
                raise ValueError(f"{path}: not a pack's index")
            self.base = HEADER + size + self._imports_size
        except BaseException:
            os.close(self.fd)
            raise

    def source(self, name: str) -> tuple[str, bool] | None:
        """(the module's source path, whether it is a package), if the pack has it."""
        entry = self.index.get(name)
        if entry is None:
            return None
        return os.path.join(self.package_dir, entry[0]), entry[1]

    def code(self, name: str, fd_checked: bool = False):
        """The module's code object, or None where the pack cannot vouch for it.
        fd_checked: the caller has just seen that self.fd is the pack (_own_fd)."""
        entry = self.index.get(name)
        if entry is None:
            return None
        relpath, _, mtime_ns, size, offset, length = entry
        source = os.path.join(self.package_dir, relpath)
        try:
            st = os.stat(source)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size or not (fd_checked or
                                                                     self._own_fd()):
            return None
        data = os.pread(self.fd, length, self.base + offset)
        if len(data) != length:
            return None
        code = marshal.loads(data)
        _imp._fix_co_filename(code, source)  # as importlib does for a .pyc: a moved tree
        return code

    def imports(self, name: str) -> tuple[str, ...]:
        """The package's modules that `name` imports at module level (as
        zoned.modulepack_write.module_imports found them), read from the pack the first
        time (only a preload needs them: not every start)."""
        if self._imports is None:
            try:
                table = marshal.loads(os.pread(self.fd, self._imports_size,
                                               self.base - self._imports_size))
            except (OSError, ValueError, EOFError, TypeError):
                table = None
            self._imports = table if isinstance(table, dict) else {}  # damaged: none
        return self._imports.get(name, ())

    def _own_fd(self) -> bool:
        """Whether self.fd is still the pack (see the module's docstring), opening it again
        by path where it is not."""
        if self.fd < 0:
            return False
        try:
            st = os.fstat(self.fd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == self.identity:
                return True
        except OSError:
            pass
        # Not ours any more: whatever has that number now belongs to someone else.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
            os.close(fd)
            self.fd = -1
            return False
        self.fd = fd
        return True


class PackLoader(_external.SourceFileLoader):
    """A source module's loader that takes its code from the pack when the pack's is current."""

    def __init__(self, fullname: str, path: str, pack: Pack):
        super().__init__(fullname, path)
        self.pack = pack

    def get_code(self, fullname):
        code = self.pack.code(fullname)
        return code if code is not None else super().get_code(fullname)


class PackFinder:
    """Finds zoned's modules in the pack (a meta path finder)."""

    def __init__(self, pack: Pack):
        self.pack = pack

    def find_spec(self, fullname, path=None, target=None):
        """The spec spec_from_file_location would make for the module's source, made
        directly (its Python is ~3 us a module)."""
        found = self.pack.source(fullname)
        if found is None:
            return None
        source, is_package = found
        spec = _bootstrap.ModuleSpec(fullname, PackLoader(fullname, source, self.pack),
                                     origin=source, is_package=is_package)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(source)]
        return spec

    def invalidate_caches(self) -> None:
        pass

    def load(self, fullname: str) -> bool:
        """Load a module of the pack as the import system would (its spec, loader and
        attributes; in sys.modules while it runs; an attribute of its parent), minus the
        import system's own work. False, and nothing loaded, where the pack cannot vouch
        for its code or its body raised: an import then loads it the usual way (and
        raises where it would have)."""
        code = self.pack.code(fullname, fd_checked=True)
        if code is None:
            return False
        spec = self.find_spec(fullname)
        module = type(sys)(fullname)  # _init_module_attrs' attributes, set directly
        module.__spec__, module.__loader__ = spec, spec.loader
        module.__package__, module.__file__ = spec.parent, spec.origin
        if spec.submodule_search_locations is not None:
            module.__path__ = spec.submodule_search_locations
        module.__cached__ = spec.cached
        spec._initializing = True
        sys.modules[fullname] = module
        try:
            exec(code, module.__dict__)
        except Exception:
            sys.modules.pop(fullname, None)
            return False
        except BaseException:  # an interrupt: nothing half-run stays, as with an import
            sys.modules.pop(fullname, None)
            raise
        finally:
            spec._initializing = False
        parent, _, child = fullname.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[fullname])
        return True


def install(package_dir: str) -> PackFinder | None:
    """Serve zoned's modules from the pack in package_dir's __pycache__, if there is one."""
    package_dir = os.path.abspath(package_dir)
    if os.environ.get("ZONED_MODULEPACK") == "0" or any(
            isinstance(f, PackFinder) and f.pack.package_dir == package_dir
            for f in sys.meta_path):
        return None
    try:
        pack = Pack(package_dir)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    finder = PackFinder(pack)
    at = next((i for i, f in enumerate(sys.meta_path) if f is _external.PathFinder),
              len(sys.meta_path))
    sys.meta_path.insert(at, finder)
    return finder


def preload(names) -> None:
    """Load the named modules of a pack, and before each what it imports at module level,
    from the pack (see the module's docstring); any that is loaded already is left as it
    is. Only in a single-threaded process: another thread's import of a module loaded
    here would not wait for it (no import lock is taken); and only where no import hook
    stands before the pack's finder (pytest's assertion rewriting, a user's), which an
    import would have asked first. Anything not preloaded is imported the usual way when
    the command gets to it."""
    names = [n for n in names if n not in sys.modules]
    if not names:  # (a command's runtime() after its preload_modules)
        return
    finders = [f for f in sys.meta_path if isinstance(f, PackFinder) and f.pack._own_fd()]
    if not finders or not _single_threaded():
        return
    for finder in sys.meta_path:
        if isinstance(finder, PackFinder):
            break
        if finder not in (_bootstrap.BuiltinImporter, _bootstrap.FrozenImporter):
            return
    seen: set[str] = set()
    for name in names:
        _preload(name, finders, seen)


def _preload(name: str, finders: list[PackFinder], seen: set[str]) -> None:
    """Depth first: the parent package, then the module-level imports, then `name`."""
    if name in sys.modules or name in seen:
        return
    seen.add(name)
    for finder in finders:
        if name in finder.pack.index:
            break
    else:
        return
    parent = name.rpartition(".")[0]
    for dep in ((parent,) if parent else ()) + finder.pack.imports(name):
        _preload(dep, finders, seen)
    if name not in sys.modules and (not parent or parent in sys.modules):
        finder.load(name)


def _single_threaded() -> bool:
    """/proc/self/task's links: 2, and one per thread. (zoned.cgroups.join.single_threaded
    makes the same check; importing that module would load cffi's backend for every
    command that preloads.)"""
    try:
        return os.stat("/proc/self/task").st_nlink == 3
    except OSError:
        return False
