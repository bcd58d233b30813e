"""The podman backend: podman + conmon with runc as its runtime, private storage, run root
and config under /run/zoned-zbench-<token>-podman, cgroupfs, no network, and the local
busybox image imported (never pulled). The rlimits are passed explicitly: podman's default
ones need CAP_SYS_RESOURCE, which root lacks on hosts like this one."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from zoned.bench import runcmd
from zoned.bench.backends import IDLE, READY, TRUE, Backend, Instance
from zoned.bench.leftovers import alive, cgroup_dirs_named, mounts_containing
from zoned.bench.procfs import CGROUP_ROOT
from zoned.bench.runcmd import BenchFailure

IMAGE = "localhost/zb-busybox"
CONTAINERS_CONF = """\
[containers]
log_driver = "k8s-file"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""
RUN_FLAGS = ["--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:20000",
             "--ulimit", "nproc=1024:1024"]


class Podman(Backend):
    name = "podman"
    note = "podman run (conmon + runc), overlay storage, no network"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.base = Path(f"/run/zoned-zbench-{ctx.token}-podman")
        self.env = dict(os.environ)
        self.env.pop("CONTAINER_HOST", None)
        self.env["CONTAINERS_CONF"] = str(self.base / "containers.conf")
        self.env["CONTAINERS_STORAGE_CONF"] = str(self.base / "storage.conf")
        self.ids: set[str] = set()
        # podman's cgroupfs manager makes <hierarchy>/libpod_parent, runc /run/runc: removed
        # at the end if this run made them (and they are empty)
        self.made_here: list[str] = []

    def P(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.base / "root"), "--runroot",
                str(self.base / "runroot"), "--tmpdir", str(self.base / "tmp"),
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]

    def unavailable(self) -> str | None:
        for tool in ("podman", "conmon", "runc"):
            if not shutil.which(tool):
                return f"{tool} is not installed"
        return None

    def setup(self) -> None:
        from zoned.images.store import ImageStore

        self.made_here = [p for p in [os.path.join(CGROUP_ROOT, h, "libpod_parent")
                                      for h in os.listdir(CGROUP_ROOT)] + ["/run/runc"]
                          if not os.path.exists(p)]
        for d in ("root", "runroot", "tmp"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "containers.conf").write_text(CONTAINERS_CONF)
        (self.base / "storage.conf").write_text(STORAGE_CONF.format(
            root=self.base / "root", runroot=self.base / "runroot"))
        tar = ImageStore().export_rootfs_tar(self.ctx.image, self.ctx.tmp / "podman-rootfs.tar")
        runcmd.output(self.P("import", str(tar), IMAGE), env=self.env, timeout=120)
        Path(tar).unlink(missing_ok=True)

    def run_true(self) -> float:
        return runcmd.run(self.P("run", "--rm", *RUN_FLAGS, "--name", self.instance_name(),
                                 IMAGE, *TRUE), env=self.env, what="podman run /bin/true")

    def first_output(self) -> float:
        return runcmd.first_output(self.P("run", "--rm", *RUN_FLAGS, "--name",
                                          self.instance_name(), IMAGE, *READY),
                                   env=self.env, what="podman run echo")

    def start_idle(self) -> Instance:
        name = self.instance_name()
        runcmd.run(self.P("run", "-d", *RUN_FLAGS, "--name", name, IMAGE, *IDLE),
                   env=self.env, what="podman run -d")
        out = runcmd.output(self.P("inspect", "--format",
                                   "{{.Id}} {{.State.Pid}} {{.State.ConmonPid}}", name),
                            env=self.env).split()
        if len(out) != 3:
            raise BenchFailure(f"podman inspect {name}: unexpected {out}")
        self.ids.add(out[0])
        inst = Instance(name, int(out[1]), [int(out[2])])
        self.started.append(inst)
        return inst

    def remove(self, insts: list[Instance]) -> None:
        names = [i.name for i in insts]
        for k in range(0, len(names), 50):
            runcmd.run(self.P("rm", "-f", "-t", "0", *names[k:k + 50]), env=self.env,
                       timeout=600, what="podman rm -f")
        gone = set(names)
        self.started = [i for i in self.started if i.name not in gone]

    def cleanup(self) -> dict:
        pids = [p for i in self.started for p in [i.pid, *i.helpers]]
        if self.base.exists():
            try:
                self.ids.update(runcmd.output(self.P("ps", "-a", "-q", "--no-trunc"),
                                              env=self.env).split())
            except BenchFailure:
                pass
            runcmd.quiet(self.P("rm", "-a", "-f", "-t", "0"), env=self.env, timeout=300)
            runcmd.quiet(self.P("rmi", "-a", "-f"), env=self.env, timeout=120)
            for ln in reversed(mounts_containing(str(self.base))):
                runcmd.quiet(["umount", "-l", ln.split()[4]])
            shutil.rmtree(self.base, ignore_errors=True)
        for path in self.made_here:  # only while empty
            for d in sorted((os.path.join(r, x) for r, ds, _ in os.walk(path) for x in ds),
                            key=len, reverse=True) if path.startswith(CGROUP_ROOT) else []:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            try:
                os.rmdir(path)
            except OSError:
                pass
        found = {
            "storage": [str(self.base)] if self.base.exists() else [],
            "cgroup_dirs": [d for i in self.ids for d in cgroup_dirs_named(f"libpod-{i[:12]}")],
            "mounts": mounts_containing(str(self.base)),
            "runc_state": [i for i in self.ids if os.path.exists(f"/run/runc/{i}")],
            "processes": alive(pids),
        }
        found["ok"] = not any(found.values())
        return found
