"""The backends `zoned bench` knows, by name: the ones that run instances and the floors
(start-up only)."""
from __future__ import annotations

from zoned.bench.backends import VM, Backend, Context, PythonFloor, Runc, UnshareFloor, Zone
from zoned.bench.podman import Podman

INSTANCE_BACKENDS = ["zone", "vm", "runc", "podman"]
FLOORS = ["floor:unshare", "floor:python"]
KINDS: dict[str, type[Backend]] = {
    "zone": Zone, "vm": VM, "runc": Runc, "podman": Podman,
    "floor:unshare": UnshareFloor, "floor:python": PythonFloor,
}


def make(name: str, ctx: Context) -> Backend:
    """The runner of a backend by its name."""
    return KINDS[name](ctx)
