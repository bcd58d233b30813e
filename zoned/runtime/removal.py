"""Removing what a zone owns: its processes, cgroups, network, data dir, and last its state
dir (the record that the rest may still exist), in an order a retry or `zoned gc` can
pick up anywhere. Runtime.delete (zoned.runtime.lifecycle) calls it under the zone's lock,
after the `removing` mark; gc and migration call it for zones that are gone."""
from __future__ import annotations

from zoned.linux.proc import reap
from zoned.runtime.cgroup_paths import default_cgroups_path
from zoned.runtime.steps import leave_shared_memory
from zoned.runtime.store import Store
from zoned.testhooks import hit
from zoned.volumes import ANN_ANONYMOUS, remove_anonymous


def release(store: Store, cid: str, st: dict) -> None:
    """Remove what the container owns, in an order that a retry (or gc) can pick up
    anywhere: processes and cgroup, network, then the state dir (the record that the
    rest may still exist) last. Idempotent; also used by gc."""
    pid = st.get("pid") or 0
    if pid:
        reap(pid)
    # a container killed before state.json was written still has its default cgroup
    cg = (st.get("zoned") or {}).get("cgroup") or default_cgroups_path(cid, store.root)
    from zoned.cgroups import open_cgroup

    cgroup = open_cgroup(cg, (st.get("zoned") or {}).get("shared_memory", False))
    remove_if_empty = getattr(cgroup, "remove_if_empty", None)  # (not a rootless
    # NullCgroup's: it has nothing to remove) rmdir alone, unless something is in it
    if not (remove_if_empty is not None and remove_if_empty()) and cgroup.exists():
        cgroup.kill()
        cgroup.destroy()
    leave_shared_memory(cgroup)
    vm = (st.get("zoned") or {}).get("vm")
    if vm:  # a QEMU outside the cgroup (killed mid-boot), before its taps go
        from zoned.vm.machine import destroy

        destroy(vm["dir"])
    hit("rm:cgroup")
    if (st.get("zoned") or {}).get("network"):
        from zoned.network.release import release as release_network

        release_network(store.root, cid, st["zoned"]["network"])
    hit("rm:network")
    # The data dir goes before the state dir: a removal killed in between leaves a
    # stopped zone that `rm` finishes, never an orphan data dir (gc removes those too).
    z = st.get("zoned") or {}
    data = z["data"] if "data" in z else store.data_dir(cid)
    if data and z.get("kept_data"):  # a defined zone's layer (zoned.zones) stays
        from zoned.logs import wait_logger

        wait_logger(z.get("logger"))
    elif data and z.get("logger"):
        from zoned.logs import discard_zone_data

        discard_zone_data(data, z["logger"])
    elif data:  # no logger to wait for (a foreground run): zoned.logs is not loaded
        from zoned.storage import remove_zone_dir

        remove_zone_dir(data)
    if z.get("autoremove") and (st.get("annotations") or {}).get(ANN_ANONYMOUS):
        remove_anonymous(st["annotations"], store.data)  # --rm: its anonymous volumes too
    store.remove(cid)
