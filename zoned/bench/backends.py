"""One runner per backend, all with the same verbs, so every measurement treats zones,
VMs, runc and podman alike: run /bin/true to completion, time to first output, start one
idle instance, list its host processes, remove instances, clean up and report leftovers.
The floors (5 namespaces with `unshare`, the interpreter) only take part in start-up.

Names: every instance is zb-<token>-<backend>-<n>; state roots /run/zoned-zbench-<token>*."""
from __future__ import annotations

import json
import os
import time
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from zoned.bench import runcmd
from zoned.bench.leftovers import (alive, cgroup_dirs_named, links_aliased, mounts_containing,
                                   rmdir_quiet, state_entries)
from zoned.bench.procfs import cgroup_procs, tree
from zoned.bench.runcmd import BenchFailure

IDLE = ["sleep", "100000"]
READY = ["echo", "ready"]
TRUE = ["/bin/true"]
VM_BOOT_TIMEOUT = 180  # s: a TCG boot takes 3-5 s; a loaded host much longer


@dataclass
class Instance:
    """One started idle instance: its name and the pid the backend reports for it (the
    container's init, or QEMU's pid for a VM), plus helper processes (logger, conmon)."""
    name: str
    pid: int
    helpers: list[int] = field(default_factory=list)


@dataclass
class Context:
    """What every backend of one run shares."""
    token: str
    zoned: str                   # the zoned CLI to drive
    mounts: dict                 # procfs.cgroup_mounts()
    tmp: Path                    # scratch dir of this run (removed at the end)
    image: str = "busybox"


class Backend:
    """Base: subclasses implement the verbs they support."""
    name = "?"
    floor = False
    note = ""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.n = 0
        self.started: list[Instance] = []

    def instance_name(self) -> str:
        self.n += 1
        return f"zb-{self.ctx.token}-{self.name.replace(':', '-')}-{self.n}"

    def unavailable(self) -> str | None:
        """Why this backend cannot run here, or None."""
        return None

    def setup(self) -> None:
        pass

    def run_true(self) -> float:
        raise NotImplementedError

    def first_output(self) -> float:
        raise NotImplementedError

    def start_idle(self) -> Instance:
        raise NotImplementedError

    def host_pids(self, inst: Instance) -> list[int]:
        """Every host process that exists for this instance (workload, init, monitors)."""
        return sorted(set(cgroup_procs(inst.pid, self.ctx.mounts)) | set(tree(inst.pid))
                      | {p for h in inst.helpers for p in tree(h)})

    def remove(self, insts: list[Instance]) -> None:
        raise NotImplementedError

    def cleanup(self) -> dict:
        """Remove whatever this backend made (also after a failure); return the leftovers
        found afterwards, with "ok"."""
        return {"ok": True}


# -- zones and VMs: the zoned CLI ----------------------------------------------------------

class Zone(Backend):
    name = "zone"
    note = "zoned run: image overlay, default seccomp, own namespaces and cgroups"
    run_flags: list[str] = []

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.root = f"/run/zoned-zbench-{ctx.token}-{self.name}"
        self.Z = [ctx.zoned, "--root", self.root]
        self.data_dirs: set[str] = set()
        self.cgroup_parents: set[str] = set()

    def run_cmd(self, *flags: str) -> list[str]:
        return self.Z + ["run", *self.run_flags, *flags]

    def run_true(self) -> float:
        return runcmd.run(self.run_cmd("--rm", "--name", self.instance_name(), "--", *TRUE),
                          timeout=self.timeout, what=f"{self.name} run /bin/true")

    def first_output(self) -> float:
        return runcmd.first_output(
            self.run_cmd("--rm", "--name", self.instance_name(), "--", *READY),
            timeout=self.timeout, what=f"{self.name} run echo")

    timeout = 60

    def start_idle(self) -> Instance:
        name = self.instance_name()
        try:
            runcmd.run(self.run_cmd("-d", "--name", name, "--", *IDLE), timeout=self.timeout,
                       what=f"{self.name} run -d")
        finally:
            state = self.state(name)
        if not state or not state.get("pid"):
            raise BenchFailure(f"{self.name} {name}: no pid in its state")
        z = state.get("zoned") or {}
        if z.get("data"):
            self.data_dirs.add(os.path.dirname(os.path.dirname(z["data"])))
        if z.get("cgroup"):
            self.cgroup_parents.add(os.path.dirname(z["cgroup"]))
        helpers = [z["logger"]["pid"]] if (z.get("logger") or {}).get("pid") else []
        inst = Instance(name, int(state["pid"]), helpers)
        self.started.append(inst)
        return inst

    def state(self, name: str) -> dict | None:
        """The instance's state: state.json in the state root, else `zoned inspect`."""
        try:
            with open(os.path.join(self.root, name, "state.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
        try:
            data = json.loads(runcmd.output(self.Z + ["inspect", name]))
        except (BenchFailure, ValueError):
            return None
        if isinstance(data, list):
            data = data[0] if data else {}
        return data.get("state", data)

    def remove(self, insts: list[Instance]) -> None:
        names = [i.name for i in insts]
        for k in range(0, len(names), 50):
            runcmd.run(self.Z + ["rm", "-f", *names[k:k + 50]], timeout=600,
                       what=f"{self.name} rm -f")
        gone = {i.name for i in insts}
        self.started = [i for i in self.started if i.name not in gone]

    def cleanup(self) -> dict:
        pids = [p for i in self.started for p in [i.pid, *i.helpers]]
        for _ in range(3):  # a start abandoned mid-way may still finish meanwhile
            left = state_entries(self.root)
            for k in range(0, len(left), 50):
                runcmd.quiet(self.Z + ["rm", "-f", *left[k:k + 50]], timeout=600)
            runcmd.quiet(self.Z + ["gc"], timeout=120)
            if not state_entries(self.root):
                break
            time.sleep(1)
        rmdir_quiet(self.root)
        found = {
            "state": state_entries(self.root),
            "cgroup_dirs": cgroup_dirs_named(f"zb-{self.ctx.token}-{self.name}-"),
            "cgroup_parents": [p for p in self.cgroup_parents
                               if cgroup_dirs_named(os.path.basename(p))],
            "data_dirs": [d for d in self.data_dirs if os.path.exists(d)],
            "mounts": mounts_containing(self.root),
            "links": links_aliased(f"@{self.root}"),
            "processes": alive(pids),
        }
        found["ok"] = not any(found.values())
        return found


class VM(Zone):
    """The QEMU micro-VM backend, driven through the same CLI as zones
    (`zoned run --backend vm`); QEMU's pid is the instance's pid."""
    name = "vm"
    note = "zoned run --backend vm: QEMU micro-VM"
    run_flags = ["--backend", "vm"]
    timeout = VM_BOOT_TIMEOUT
    accel_reason: str | None = None  # why that accelerator, where inspect says

    def unavailable(self) -> str | None:
        try:
            helptext = runcmd.output([self.ctx.zoned, "run", "--help"], timeout=30)
        except BenchFailure as e:
            return f"`zoned run --help` failed: {e}"
        if "--backend" not in helptext:
            return "`zoned run` has no --backend option (the VM backend is not in this zoned)"
        if not shutil.which("qemu-system-x86_64"):
            return "qemu-system-x86_64 is not installed"
        try:
            self.run_true()  # the probe, and a warm-up
        except BenchFailure as e:
            return f"probe `zoned run --backend vm --rm -- /bin/true` failed: {e}"
        return None

    def accelerator(self) -> str | None:
        """What a running VM says it uses ("kvm" or "tcg"), from `zoned inspect`: a key
        named accel or accelerator anywhere in its JSON, else the word in its text."""
        for inst in self.started:
            try:
                text = runcmd.output(self.Z + ["inspect", inst.name])
            except BenchFailure:
                continue
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            found = find_accel(data)
            if found:
                self.accel_reason = find_key(data, "reason", within=("vm", "accel"))
                return found
            low = text.lower()
            for word in ("tcg", "kvm"):
                if f'"{word}"' in low or f"accel={word}" in low:
                    return word
        return None


def find_key(data, key: str, within: tuple[str, ...]) -> str | None:
    """A string value of `key` inside an object under one of the keys `within`."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k in within and isinstance(v, dict) and isinstance(v.get(key), str):
                return v[key]
        for v in data.values():
            found = find_key(v, key, within)
            if found:
                return found
    elif isinstance(data, list):
        for v in data:
            found = find_key(v, key, within)
            if found:
                return found
    return None


def find_accel(data) -> str | None:
    """The value of the first key named accel/accelerator (kvm or tcg) in nested JSON."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k.lower() in ("accel", "accelerator") and isinstance(v, str) \
                    and v.lower() in ("kvm", "tcg"):
                return v.lower()
            if isinstance(v, dict) and k.lower() in ("accel", "accelerator"):
                inner = v.get("accel") or v.get("name")
                if isinstance(inner, str) and inner.lower() in ("kvm", "tcg"):
                    return inner.lower()
        for v in data.values():
            found = find_accel(v)
            if found:
                return found
    elif isinstance(data, list):
        for v in data:
            found = find_accel(v)
            if found:
                return found
    return None


# -- runc ------------------------------------------------------------------------------------

class Runc(Backend):
    name = "runc"
    note = "runc run on an OCI bundle (busybox, read-only root, no seccomp)"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.root = f"/run/zoned-zbench-{ctx.token}-runc"
        self.R = [shutil.which("runc") or "runc", "--root", self.root]
        self.bundles: dict[str, Path] = {}
        self.base: Path | None = None

    def unavailable(self) -> str | None:
        return None if shutil.which("runc") else "runc is not installed"

    def setup(self) -> None:
        """One exported busybox rootfs, shared read-only by three bundles (true, echo,
        sleep) that differ only in process.args."""
        from zoned.images.store import ImageStore

        self.base = Path(tempfile.mkdtemp(prefix="runc-", dir=self.ctx.tmp))
        ImageStore().export_bundle(self.ctx.image, self.base / "image")
        runcmd.output([self.ctx.zoned, "spec", "--bundle", str(self.base / "image")])
        cfg = json.loads((self.base / "image" / "config.json").read_text())
        for key, args in (("true", TRUE), ("ready", READY), ("idle", IDLE)):
            b = self.base / key
            b.mkdir()
            cfg["process"]["args"] = list(args)
            cfg["process"]["terminal"] = False
            cfg["root"] = {"path": str(self.base / "image" / "rootfs"), "readonly": True}
            (b / "config.json").write_text(json.dumps(cfg, indent=1))
            self.bundles[key] = b

    def run_true(self) -> float:
        return runcmd.run(self.R + ["run", "--bundle", str(self.bundles["true"]),
                                    self.instance_name()], what="runc run /bin/true")

    def first_output(self) -> float:
        return runcmd.first_output(self.R + ["run", "--bundle", str(self.bundles["ready"]),
                                             self.instance_name()], what="runc run echo")

    def start_idle(self) -> Instance:
        name = self.instance_name()
        runcmd.run(self.R + ["run", "-d", "--bundle", str(self.bundles["idle"]), name],
                   what="runc run -d")
        try:
            with open(os.path.join(self.root, name, "state.json")) as f:
                pid = int(json.load(f)["init_process_pid"])
        except (OSError, ValueError, KeyError) as e:
            raise BenchFailure(f"runc {name}: no init pid in its state: {e}") from e
        inst = Instance(name, pid)
        self.started.append(inst)
        return inst

    def remove(self, insts: list[Instance]) -> None:
        for i in insts:
            runcmd.run(self.R + ["delete", "-f", i.name], what="runc delete -f")
        gone = {i.name for i in insts}
        self.started = [i for i in self.started if i.name not in gone]

    def cleanup(self) -> dict:
        pids = [i.pid for i in self.started]
        if os.path.isdir(self.root):
            try:
                names = runcmd.output(self.R + ["list", "-q"]).split()
            except BenchFailure:
                names = state_entries(self.root)
            for name in names:
                runcmd.quiet(self.R + ["delete", "-f", name])
        rmdir_quiet(self.root)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
        found = {
            "state": state_entries(self.root),
            "cgroup_dirs": cgroup_dirs_named(f"zb-{self.ctx.token}-runc-"),
            "mounts": mounts_containing(self.root),
            "processes": alive(pids),
        }
        found["ok"] = not any(found.values())
        return found


# -- floors: no container runtime at all -------------------------------------------------------

class UnshareFloor(Backend):
    """The container floor: `unshare` of the 5 namespaces a container gets (mount, UTS,
    IPC, network, PID) and exec of the command; no rootfs, no cgroups."""
    name = "floor:unshare"
    floor = True
    note = "unshare -m -u -i -n -p -f: 5 new namespaces + exec, no rootfs/cgroup"
    FLAGS = ["unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "--"]

    def unavailable(self) -> str | None:
        return None if shutil.which("unshare") else "unshare (util-linux) is not installed"

    def run_true(self) -> float:
        return runcmd.run(self.FLAGS + ["/bin/true"], what="unshare true")

    def first_output(self) -> float:
        return runcmd.first_output(self.FLAGS + ["echo", "ready"], what="unshare echo")


class PythonFloor(Backend):
    """The interpreter floor: what every zoned CLI command pays before it does anything."""
    name = "floor:python"
    floor = True
    note = "the interpreter zoned runs on: python -c pass (no container)"

    def run_true(self) -> float:
        return runcmd.run([sys.executable, "-c", "pass"], what="python -c pass")

    def first_output(self) -> float:
        return runcmd.first_output([sys.executable, "-c", "print('ready')"],
                                   what="python -c print")
