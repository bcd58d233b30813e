"""VmBackend: a container as a QEMU micro-VM (zoned.vm), in the same state store, cgroup
tree, networks and logs as zones, so ps/list/inspect/stats/logs/rm/gc treat both alike.

What a VM zone is, in the store's terms:
  pid, pid_start   zoned-vmwrap's, QEMU's parent (a live one is a running VM; ps and wait
                   watch it; VMs of an older zoned: QEMU's own)
  zoned.cgroup     a cgroup holding zoned-vmwrap and QEMU: stats measure the VM's host
                   cost, rm and gc kill what is in it. --memory and --cpus are the guest's
                   RAM and vCPUs (machine_spec); the cgroup's one limit is its memory:
                   that RAM plus QEMU's overhead (host_memory_limit). No device rules:
                   QEMU needs /dev/net/tun and /dev/kvm beyond any zone's.
  zoned.vm         {"dir": the VM's files (sockets, ctl, console.log; inside the state
                   dir), "image", "accel", "reason", "memory_mib", "vcpus"}
  zoned.network    the same NetworkState as a zone's; its links are taps, not veths
The guest's main process is signalled through the VM's agent; its exit code is what the
guest init wrote to the ctl port, or 128+n if a signal n ended QEMU
(zoned.vm.machine.exit_status).
"""
from __future__ import annotations

import math
import os
import signal

from zoned.errors import ConfigError, InvalidState, ZonedError
from zoned.oci.status import Status

DEFAULT_MEMORY_MIB = 256  # the guest's RAM without --memory (the kernel's floor is ~128)
MIB = 1 << 20
# What QEMU may use beyond the guest's RAM and its TCG translation buffer (its own heap,
# threads, device state; measured: ~60-80 MiB for a guest that fills its RAM): Kata's
# overhead for a QEMU sandbox (its RuntimeClass podFixed memory) is the same 160 MiB.
QEMU_OVERHEAD_MIB = 160


def vm_of(st: dict) -> dict | None:
    """A stored state's VM record, or None for a zone."""
    return (st.get("zoned") or {}).get("vm")


def check_options(opts) -> None:
    """What `zoned run` options a VM cannot honour (yet), refused before anything exists."""
    unsupported = [("--rootfs", opts.rootfs), ("--init", opts.init),
                   ("--read-only", opts.read_only)]
    for flag, value in unsupported:
        if value:
            raise ConfigError(f"invalid {flag} with --backend vm: not supported for VMs")
    from zoned.runtime.cgroup_paths import ANN_MEMORY_CGROUP

    if (opts.annotations or {}).get(ANN_MEMORY_CGROUP, "own") != "own":
        raise ConfigError(f"invalid {ANN_MEMORY_CGROUP} with --backend vm: a VM's memory "
                          "is QEMU's, in a cgroup of its own")
    nets = opts.network or []
    if any(n.startswith("container:") for n in nets):
        raise ConfigError("invalid --network container:NAME with --backend vm: a VM has "
                          "its own kernel and network stack")


def refuse_unportable(rt, cid: str, vm: dict, action: str) -> dict:
    """A VM whose state cannot leave this host is refused by name (`action`: save,
    migrate): booted from a bundle's rootfs (its root disk is only here), or with a
    virtio-9p volume (QEMU cannot move it). Returns its config."""
    if not vm.get("image"):
        raise InvalidState(f"cannot {action} container {cid!r}: a VM booted from a "
                           "bundle's rootfs has its root disk only on this host")
    cfg = rt.config(cid)
    if machine_spec(cfg, vm["image"]).volumes:
        raise InvalidState(f"cannot {action} container {cid!r}: QEMU cannot {action} a VM "
                           "with a volume (virtio-9p) mounted")
    return cfg


def host_memory_limit(spec) -> int:
    """The VM cgroup's memory limit (bytes): the guest's RAM, the TCG translation buffer
    and QEMU's own overhead. Without it what a guest makes QEMU allocate beyond its RAM
    (9p fids, device queues) had no host-side bound; a guest filling its RAM stays well
    under it (tests/test_vm_cli.py), and the page cache QEMU's reads make is reclaimed
    first."""
    return (spec.memory_mib + spec.tb_size_mib + QEMU_OVERHEAD_MIB) * MIB


def machine_spec(cfg: dict, image: str, *, accel: str = "auto", nics=(), dns=(),
                 hosts: str = "", disk: str = "", stdin: bool = True):
    """The one conversion from a zone's OCI config to a MachineSpec: its process (args,
    env, cwd, uid/gid, groups, terminal), hostname, bind mounts of host directories (-v)
    as 9p volumes, and linux.resources' memory limit and CPU quota as the guest's RAM and
    vCPUs. stdin False: the process's stdin is /dev/null (no port for it: guest RAM)."""
    from zoned.vm.config import MachineSpec, Volume

    proc = cfg["process"]
    user = proc.get("user") or {}
    res = (cfg.get("linux") or {}).get("resources") or {}
    limit = (res.get("memory") or {}).get("limit")
    memory_mib = math.ceil(limit / MIB) if isinstance(limit, int) and limit > 0 else \
        DEFAULT_MEMORY_MIB
    cpu = res.get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    vcpus = max(1, math.ceil(quota / period)) if quota and period and quota > 0 else 1
    size = proc.get("consoleSize") or {}
    volumes = [Volume(m["source"], m["destination"], "ro" in (m.get("options") or []))
               for m in cfg.get("mounts") or []
               if "bind" in (m.get("options") or []) + [m.get("type")]
               and os.path.isdir(m.get("source") or "")]
    return MachineSpec(image=image, argv=list(proc["args"]), env=list(proc.get("env") or []),
                       cwd=proc.get("cwd") or "/", uid=int(user.get("uid", 0)),
                       gid=int(user.get("gid", 0)), tty=bool(proc.get("terminal")),
                       hostname=cfg.get("hostname") or "", memory_mib=memory_mib,
                       vcpus=vcpus, accel=accel, nics=list(nics), dns=list(dns),
                       hosts=hosts, disk=disk, volumes=volumes, stdin=stdin,
                       groups=[int(g) for g in user.get("additionalGids") or []],
                       rows=int(size.get("height") or 0),
                       cols=int(size.get("width") or 0))


class VmStarted:
    """A booted VM: QEMU's Popen (the caller's child when it waits) and its directory."""

    __slots__ = ("pid", "proc", "vmdir")

    def __init__(self, proc, vmdir: str):
        self.proc, self.pid, self.vmdir = proc, proc.pid, vmdir


class VmBackend:
    """VMs under one state root, through a zoned.runtime Runtime (its store, status and
    removal), so that they sit beside the zones."""

    def __init__(self, runtime):
        self.rt = runtime

    # -- create = boot -----------------------------------------------------------------
    def create(self, cid: str, cfg: dict, *, image: str = "", stdio=(None, None, None),
               network=None, log: bool = False, autoremove: bool = False,
               accel: str = "auto", wait: bool = False,
               die_with_caller: bool = False, incoming: str | None = None,
               rootfs: str | None = None, bundle: str | None = None,
               created: bool = False, pid_file: str | None = None,
               stdin: bool = True, images: str | None = None,
               data_dir: str | None = None) -> VmStarted:
        """Boot `cfg`'s process in a VM of `image`. The record goes into the store first,
        so `zoned gc` removes a boot that was killed half-way (QEMU found by its command
        line). wait: return only once the guest is about to run the process (a detached
        run reports a failed boot instead of an id). die_with_caller: QEMU is killed
        when the caller dies (a foreground run, as a zone's init with pdeathsig).
        incoming: the destination of a migration (zoned.migration.vm): QEMU waits, paused,
        for the source's state (a QEMU -incoming URI), and the record carries an
        "incoming" mark (gc removes it if the receiver dies) until commit_incoming().
        rootfs (an OCI bundle's, with `bundle`): booted from a squashfs of it made for this
        VM instead of an image's. created: the OCI `create`: QEMU waits paused (status
        "created") until start(); pid_file gets the pid of QEMU's parent, zoned-vmwrap (what an
        OCI client watches: it exits with the guest's code). images: the image store
        (zoned --images), else the default one. data_dir (with log): a data dir the caller
        keeps (a restart's): its log goes on, and it outlives the VM (kept_data)."""
        from zoned.linux.locks import acquire
        from zoned.linux.proc import proc_start_time
        from zoned.oci import spec as specmod
        from zoned.runtime.cgroup_paths import default_cgroups_path
        from zoned.runtime.steps import abandon, initial_state, write_config
        from zoned.vm.machine import launch, wait_ready

        specmod.check_id(cid)
        specmod.validate(cfg)
        if (rootfs is None) == (not image):
            raise ConfigError("a VM boots an image or a bundle's rootfs, one of them")
        if rootfs is not None and not os.path.isdir(rootfs):
            raise ConfigError(f"rootfs {rootfs!r} does not exist or is not a directory")
        machine_spec(cfg, image, accel=accel).validate()  # every check before creating
        store = self.rt.store
        d = store.reserve(cid)
        lock = acquire(os.path.join(d, "lock"))
        cgroup = logger = data = None
        proc = None
        vmdir = os.path.join(d, "vm")
        log_fds: list[int] = []
        try:
            from zoned import logs

            if log:
                from zoned.storage import keep_zone_dir, make_zone_dir

                data = keep_zone_dir(data_dir) if data_dir else make_zone_dir(store.data, cid)
                logger = logs.spawn(data)
                null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                log_fds = [logger.write_fd, null]
                stdio = (null, logger.write_fd, logger.write_fd)
            cg_path = default_cgroups_path(cid, store.root)
            state = initial_state(
                cid, cfg, bundle=os.path.abspath(bundle) if bundle else d,
                rootfs=rootfs or "", cgroup=cg_path, data=data,
                log=os.path.join(data, logs.LOG_NAME) if data else None,
                logger=logger.describe() if logger is not None else None,
                autoremove=autoremove, backend="vm",
                vm={"dir": vmdir, "image": image or None,
                    **({"images": os.path.abspath(images)} if images else {})},
                **({"kept_data": True} if data_dir and log else {}))
            nics, dns, hosts = [], [], ""
            if network is not None:
                network.link_kind = "tap"  # recorded as such from the first write on
                network.prepare(d, cfg)
                state["zoned"]["network"] = network.describe()
                nics, dns, hosts = _guest_network(network)
            write_config(d, cfg)
            store.write_state(cid, state)  # from here gc knows what to remove
            if network is not None:
                network.attach_taps()
            from zoned.cgroups import open_cgroup

            from zoned.cgroups.fs import make_despite_removals

            cgroup = open_cgroup(cg_path)
            make_despite_removals(cgroup.create)  # a gc may rmdir an empty parent meanwhile
            disk = ""
            if images is not None and rootfs is None:
                from zoned.vm.assets import root_disk

                disk = root_disk(image, images)
            if rootfs is not None:
                from zoned.vm.assets import dir_disk

                os.makedirs(vmdir, mode=0o700, exist_ok=True)
                disk = dir_disk(rootfs, os.path.join(vmdir, "root.squashfs"))
            spec = machine_spec(cfg, image, accel=accel, nics=nics, dns=dns, hosts=hosts,
                                disk=disk, stdin=stdin and not log)
            cgroup.apply({"memory": {"limit": host_memory_limit(spec)}})
            proc = launch(spec, vmdir, stdio=stdio, die_with_caller=die_with_caller,
                          incoming=incoming, paused=incoming is not None or created,
                          place=cgroup.add)  # QEMU starts in the VM's cgroup
            from zoned.vm.accel import used

            verdict = used(vmdir)
            state["zoned"]["vm"].update(accel=verdict.accel if verdict else None,
                                        reason=verdict.reason if verdict else None,
                                        memory_mib=spec.memory_mib, vcpus=spec.vcpus)
            state.update(status=Status.CREATED if created else Status.RUNNING, pid=proc.pid)
            state["zoned"]["pid_start"] = proc_start_time(proc.pid)
            if incoming is not None:
                state["zoned"]["incoming"] = {"pid": os.getpid(),
                                              "start": proc_start_time(os.getpid())}
            store.write_state(cid, state)
            if pid_file:
                from zoned.runtime.handoff import write_pid_file

                write_pid_file(pid_file, proc.pid)
            if wait:
                wait_ready(vmdir, proc=proc)
            return VmStarted(proc, vmdir)
        except BaseException:
            from zoned.vm.machine import destroy

            destroy(vmdir)
            if proc is not None:
                proc.wait()
            if data_dir and logger is not None:  # the caller's (a restart's): it stays
                from zoned.logs import wait_logger

                wait_logger(logger.describe())
            abandon(store, cid, cgroup=cgroup, network=network,
                    data=None if data_dir else data,
                    logger=logger.describe() if logger is not None else None)
            raise
        finally:
            for fd in log_fds:
                os.close(fd)
            os.close(lock)

    def start(self, cid: str) -> None:
        """The OCI `start` of a created VM: its vCPUs run (QMP cont)."""
        from zoned.vm.qmp import QMP

        with self.rt.store.lock(cid):
            st = self.rt.store.read_state(cid)
            status = self.rt.live_status(cid, st)
            if not status.can_start():
                raise InvalidState(f"cannot start container {cid!r}: it is {status}, "
                                   "not created")
            with QMP(vm_of(st)["dir"]) as q:
                q.execute("cont")
            st["status"] = Status.RUNNING
            self.rt.store.write_state(cid, st)

    def commit_incoming(self, cid: str) -> None:
        """A migrated-in VM is ours now: its vCPUs run (QMP cont), and gc no longer takes
        it for a migration that never committed."""
        from zoned.vm.qmp import QMP

        with self.rt.store.lock(cid):
            st = self.rt.store.read_state(cid)
            with QMP(vm_of(st)["dir"]) as q:
                q.execute("cont")
            st["zoned"].pop("incoming", None)
            self.rt.store.write_state(cid, st)

    # -- the guest's processes -----------------------------------------------------------
    def kill(self, cid: str, sig: int = signal.SIGTERM) -> None:
        """Signal the guest's main process (through the agent), once the guest has started
        it (a VM just started may still be booting; SIGKILL then ends QEMU at once). If
        the agent cannot be reached, QEMU itself gets the signal: the VM ends either way
        on TERM or KILL."""
        st = self.rt.store.read_state(cid)
        status = self.rt.live_status(cid, st)
        if not status.can_kill():
            raise InvalidState(f"cannot kill container {cid!r}: it is {status}")
        vmdir = vm_of(st)["dir"]
        from zoned.vm.machine import read_ctl, wait_ready

        if "ready" not in read_ctl(vmdir):  # booting: the process does not exist yet
            if sig == signal.SIGKILL:  # the same end, sooner
                signal_vm(st, sig)
                return
            wait_ready(vmdir)
        try:
            from zoned.vm.agent import Agent

            with Agent(vmdir, timeout=5) as agent:
                agent.signal(sig, "main")
        except (OSError, ZonedError):
            signal_vm(st, sig)

    def stop(self, cid: str, timeout: float = 10.0) -> None:
        """SIGTERM (or the image's StopSignal) to the guest's process, then QEMU is killed
        after `timeout` s."""
        from zoned.linux.proc import wait_exit
        from zoned.oci.spec import stop_signal

        st = self.rt.store.read_state(cid)
        if not self.rt.live_status(cid, st).is_active():
            return
        pid, start = st["pid"], st["zoned"]["pid_start"]
        self.kill(cid, stop_signal(self.rt.config(cid)))
        if not wait_exit(pid, start, timeout):
            signal_vm(st, signal.SIGKILL)
            wait_exit(pid, start, 10)

    def exec(self, cid: str, process: dict, stdio=(None, 1, 2)) -> int:
        """Run an OCI process object in the running VM (through its agent, one exec at a
        time); returns its exit code."""
        from zoned.vm.agent import Agent

        st = self.rt.store.read_state(cid)
        status = self.rt.live_status(cid, st)
        if status is not Status.RUNNING:
            raise InvalidState(f"cannot exec in container {cid!r}: it is {status}")
        user = process.get("user") or {}
        with Agent(vm_of(st)["dir"], timeout=120) as agent:  # a TCG guest under load is slow
            return agent.exec(list(process["args"]), env=list(process.get("env") or []),
                              cwd=process.get("cwd") or "/", uid=int(user.get("uid", 0)),
                              gid=int(user.get("gid", 0)),
                              tty=bool(process.get("terminal")), stdio=stdio)


# what zoned-vmwrap passes on to QEMU (csrc/vmwrap.c)
WRAPPER_FORWARDS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                              signal.SIGUSR1, signal.SIGUSR2})


def signal_vm(st: dict, sig: int) -> None:
    """`sig` to a VM's QEMU: through its parent, zoned-vmwrap, for a signal it passes on
    (it then records that signal as the VM's end), else to QEMU itself (a SIGKILL of the
    wrapper would end QEMU, by its pdeathsig, with nobody left to record it). A VM of an
    older zoned has no wrapper: its recorded pid is QEMU's."""
    from zoned.linux.proc import signal_pid
    from zoned.vm.machine import signal_qemu

    if sig in WRAPPER_FORWARDS or not signal_qemu(vm_of(st)["dir"], sig):
        signal_pid(st["pid"], st["zoned"]["pid_start"], sig)


def exit_code(st: dict) -> int | None:
    """A stopped VM's main process exit code, as its guest reported it."""
    from zoned.vm.machine import exit_status

    vm = vm_of(st)
    return exit_status(vm["dir"]) if vm else None


def boot_error(vmdir: str) -> str:
    """Why a VM ended without an exit code: the guest init's error, or QEMU's last words."""
    from zoned.vm.machine import VMPaths, guest_error

    err = guest_error(vmdir)
    if err:
        return f"VM boot failed: {err}"
    from zoned.vm.config import guest_text

    try:
        with open(VMPaths(vmdir).log, errors="replace") as f:
            tail = guest_text(f.read()[-300:].strip())
    except OSError:
        tail = ""
    return "the VM ended without an exit status" + (f": {tail}" if tail else "")


def _guest_network(network) -> tuple[list, list[str], str]:
    """The guest's side of a prepared NetworkSetup: a NIC per link (its tap, MAC, address,
    and the gateway on the default route's), the DNS servers, and /etc/hosts as the
    network wrote it for the zone (names of the network's members at boot)."""
    from zoned.vm.config import Nic

    nics = [Nic(a.host_if, a.mac, a.ip, a.prefixlen, a.gateway if a.default_route else "")
            for a in network.links]
    dns = list(network.dns)
    if not dns:
        try:
            with open(network.files["resolv.conf"]) as f:
                dns = [line.split()[1] for line in f if line.startswith("nameserver ")
                       and len(line.split()) > 1]
        except (OSError, KeyError):
            pass
    hosts = ""
    try:
        with open(network.files["hosts"]) as f:
            hosts = f.read()
    except (OSError, KeyError):
        pass
    return nics, dns, hosts
