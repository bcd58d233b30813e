"""The container lifecycle of the OCI runtime spec: create -> start -> kill -> delete, plus
state, exec and pause, on a state store. Everything a container owns (state dir, cgroup,
overlay dirs, its processes) is created and removed here; `zoned.gc` runs the same removal
against leftovers. No process stays behind per container: state lives in the store.

    lifecycle     Runtime: one state root's containers
    steps         the steps create and checkpoint restore share (state record, cgroup, undo)
    handoff       the parent's side of the forked child's set-up; Started
    cgroup_paths  where a container's cgroup goes
    store         the state store: one dir per container, locks, atomic JSON

Importing this package loads none of them: each public name below comes from its module on
first use (zoned.network uses the store's atomic writes without the lifecycle).
"""

__all__ = ["Runtime", "Started", "Store", "cgroup_parent", "systemd_cgroups_path",
           "default_cgroups_path", "container_resources"]

# Where each public name lives (a module of this package).
_HOME = {
    "Runtime": "lifecycle", "Started": "handoff", "Store": "store",
    "cgroup_parent": "cgroup_paths", "systemd_cgroups_path": "cgroup_paths",
    "default_cgroups_path": "cgroup_paths", "container_resources": "steps",
}


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'zoned.runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"zoned.runtime.{home}"), name)
    globals()[name] = value
    return value
