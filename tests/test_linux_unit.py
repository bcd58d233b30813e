"""zoned.linux without root: the constants the C extension exports (from the system headers,
not restated in Python)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unprivileged

SYSCALLS = Path(__file__).resolve().parent.parent / "zoned" / "linux" / "syscalls.py"


def _constant_names() -> list[tuple[str, ast.expr]]:
    """The module-level UPPER_CASE names syscalls.py assigns, with their value expressions."""
    tree = ast.parse(SYSCALLS.read_text())
    return [(t.id, node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
            and t.id != "TYPE_CHECKING"]


def test_syscalls_takes_every_kernel_constant_from_the_extension():
    """Each constant is `NAME = lib.NAME`: its value came from the C headers at build time."""
    from zoned._native import lib
    from zoned.linux import syscalls as sc

    consts = [(name, value) for name, value in _constant_names()
              if not name.startswith("SPAWN_STEP")]
    assert len(consts) > 50
    for name, value in consts:
        assert ast.unparse(value) == f"lib.{name}", f"{name} is not taken from the extension"
        assert getattr(sc, name) == getattr(lib, name)


def test_the_exported_values_are_the_kernel_abi():
    """Spot checks against the kernel's ABI (these numbers never change): the headers the
    extension was built against were the right ones, 64-bit and negative values included."""
    from zoned.linux import syscalls as sc

    assert sc.CLONE_NEWNS == 0x00020000 and sc.CLONE_NEWUSER == 0x10000000
    assert sc.CLONE_INTO_CGROUP == 0x200000000  # past 32 bits
    assert sc.AT_FDCWD == -100
    assert sc.MS_BIND == 4096 and sc.MS_REC == 16384 and sc.MS_PRIVATE == 1 << 18
    assert sc.MOUNT_ATTR_RDONLY == 1 and sc.MOUNT_ATTR_IDMAP == 0x00100000
    assert sc.RESOLVE_BENEATH == 0x08 and sc.RESOLVE_IN_ROOT == 0x10
    assert sc.OPEN_TREE_CLOEXEC == 0o2000000 and sc.PROC_SUPER_MAGIC == 0x9FA0
    assert sc.PR_CAP_AMBIENT == 47 and sc.CLOSE_RANGE_CLOEXEC == 1 << 2
