"""Writing zoned's module pack (`make bytecode`), which zoned.modulepack serves: every
module's code, and what each imports at module level (for modulepack.preload). Apart from
the loader, which every command imports: a command loads none of this."""
import marshal
import os

from zoned.modulepack import FORMAT, MAGIC, pack_path


def module_imports(name: str, source, is_package: bool, known) -> tuple[str, ...]:
    """The modules among `known` that module `name` imports at module level (in its body,
    and in an `if` or `try` there, but not under `if TYPE_CHECKING`), in source order:
    what must be loaded before it runs. source: its bytes, or its ast.Module."""
    import ast

    tree = source if isinstance(source, ast.Module) else ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    found: list[str] = []

    def add(module: str) -> None:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m in known and m != name and m not in found:
                found.append(m)

    def visit(statements) -> None:
        for s in statements:
            if isinstance(s, ast.Import):
                for alias in s.names:
                    add(alias.name)
            elif isinstance(s, ast.ImportFrom):
                base = s.module or ""
                if s.level:
                    anchor = package.rsplit(".", s.level - 1)[0] if s.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                add(base)
                for alias in s.names:
                    if f"{base}.{alias.name}" in known:
                        add(f"{base}.{alias.name}")
            elif isinstance(s, ast.If):
                if not (isinstance(s.test, ast.Name) and s.test.id == "TYPE_CHECKING"):
                    visit(s.body)
                    visit(s.orelse)
            elif isinstance(s, ast.Try):
                visit(s.body)
                for handler in s.handlers:
                    visit(handler.body)
                visit(s.orelse)
                visit(s.finalbody)

    visit(tree.body)
    return tuple(found)


# __future__.annotations.compiler_flag (CO_FUTURE_ANNOTATIONS), without importing __future__
FUTURE_ANNOTATIONS = 0x1000000


def compile_module(tree, source: str):
    """A module's code, from its parsed source: as py_compile compiles it (the same code as
    its .pyc), except for `from __future__ import annotations` (see the module's
    docstring). Takes the statement out of `tree`."""
    import ast

    flags = 0
    for i, statement in enumerate(tree.body[:2]):  # after the docstring, if any
        if (isinstance(statement, ast.ImportFrom) and statement.module == "__future__"
                and [a.name for a in statement.names] == ["annotations"]
                and not statement.names[0].asname):
            del tree.body[i]
            flags = FUTURE_ANNOTATIONS
            break
    return compile(tree, source, "exec", flags=flags, dont_inherit=True)


def modules(package_dir: str) -> dict[str, tuple[str, bool]]:
    """Every module of the package in package_dir: name -> (source path relative to
    package_dir, is a package)."""
    top = os.path.basename(os.path.abspath(package_dir))
    found = {}
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d.isidentifier()
                             and os.path.exists(os.path.join(dirpath, d, "__init__.py")))
        rel = os.path.relpath(dirpath, package_dir)
        prefix = top if rel == "." else top + "." + rel.replace(os.sep, ".")
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext != ".py" or not stem.isidentifier():
                continue
            path = os.path.normpath(os.path.join(rel, f))
            if stem == "__init__":
                found[prefix] = (path, True)
            else:
                found[f"{prefix}.{stem}"] = (path, False)
    return found


def write(package_dir: str) -> str:
    """Compile every module of the package into a new pack; returns its path."""
    import ast

    index, imports, blobs, offset = {}, {}, [], 0
    found = modules(package_dir)
    for name, (relpath, is_package) in found.items():
        source = os.path.join(os.path.abspath(package_dir), relpath)
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        tree = ast.parse(data, source)
        imports[name] = module_imports(name, tree, is_package, found)
        blob = marshal.dumps(compile_module(tree, source))
        index[name] = (relpath, is_package, st.st_mtime_ns, st.st_size, offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    head, table = marshal.dumps(index), marshal.dumps(imports)
    path = pack_path(package_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(FORMAT + MAGIC + len(head).to_bytes(8, "little") +
                len(table).to_bytes(8, "little") + head + table)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)
    return path

