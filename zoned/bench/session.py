"""One `zoned bench` run: which measurements, which backends, how many, and the clean-up
that runs whatever happens (failure, Ctrl-C): every backend removes what it made and
reports what it found left; the run's result says so."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zoned.bench import backends as B
from zoned.bench import kinds

WHATS = ("startup", "density", "idle", "migrate", "network", "all")
SCHEMA = "zoned-bench/1"
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass
class Options:
    what: str = "all"
    backends: list[str] = field(default_factory=lambda: list(kinds.INSTANCE_BACKENDS))
    count: int | None = None
    quick: bool = False
    budget_kib: int = 8 * 1024 * 1024
    window: float | None = None
    zoned: str = ""

    def rounds(self) -> int:
        return self.count or (10 if self.quick else 30)

    def instances(self) -> int:
        return self.count or (10 if self.quick else 50)

    def vm_cap(self) -> int:
        """VMs boot in seconds under TCG: fewer rounds and instances keep `all --quick`
        within its 5 minutes (the count used is in the result)."""
        return 3 if self.quick else 10

    def idle_window(self) -> float:
        return self.window if self.window is not None else (5.0 if self.quick else 30.0)

    def settle(self) -> float:
        return 1.0 if self.quick else 2.0


def default_zoned() -> str:
    """The zoned CLI next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "zoned"
    return str(here) if here.exists() else (shutil.which("zoned") or "zoned")


class Progress:
    """Progress lines on stderr, with the seconds since the run began."""

    def __init__(self, stream=None):
        self.t0 = time.monotonic()
        self.stream = stream or sys.stderr

    def __call__(self, msg: str) -> None:
        print(f"[bench {time.monotonic() - self.t0:6.1f}s] {msg}", file=self.stream,
              flush=True)


def run(opts: Options, progress: Callable[[str], None] | None = None) -> dict:
    """Run the measurements `opts` names; the result dict (see report.validate)."""
    from zoned.bench import density, facts, idle, migrate, network, startup
    from zoned.bench.procfs import cgroup_mounts

    progress = progress or Progress()
    opts.zoned = opts.zoned or default_zoned()
    token = os.urandom(3).hex()
    tmp = Path(tempfile.mkdtemp(prefix=f"zoned-zbench-{token}-"))
    ctx = B.Context(token=token, zoned=opts.zoned, mounts=cgroup_mounts(), tmp=tmp)
    want = {opts.what} if opts.what != "all" else {"startup", "density", "migrate", "network"}
    if "idle" in want:
        want.add("density")
    result: dict = {"schema": SCHEMA, "command": opts.what, "complete": False,
                    "parameters": {"backends": opts.backends, "count": opts.count,
                                   "quick": opts.quick, "budget_kib": opts.budget_kib,
                                   "idle_window_s": opts.idle_window(),
                                   "startup_rounds": opts.rounds(),
                                   "density_instances": opts.instances(),
                                   "vm_cap": opts.vm_cap(), "token": token},
                    "backends": {}, "leftovers": {}}
    made: list[B.Backend] = []
    accelerator = accel_reason = None
    t0 = time.monotonic()
    try:
        progress(f"token {token}; checking backends {','.join(opts.backends)}")
        active: list[B.Backend] = []
        for name in opts.backends:
            b = kinds.make(name, ctx)
            why = b.unavailable()
            if why is None:
                made.append(b)
                try:
                    b.setup()
                except B.BenchFailure as e:
                    why = f"set-up failed: {e}"
            result["backends"][name] = ({"available": True, "note": b.note} if why is None
                                        else {"available": False, "reason": why})
            progress(f"backend {name}: " + ("ok" if why is None else f"unavailable: {why}"))
            if why is None:
                active.append(b)
        floors = []
        for name in kinds.FLOORS:
            f = kinds.make(name, ctx)
            why = f.unavailable()
            result["backends"][name] = ({"available": True, "note": f.note, "floor": True}
                                        if why is None else
                                        {"available": False, "reason": why, "floor": True})
            if why is None:
                floors.append(f)
        caps = {"vm": min(opts.rounds(), opts.vm_cap())}
        if "startup" in want:
            progress(f"startup: {opts.rounds()} interleaved rounds")
            result["startup"] = startup.measure(active + floors, opts.rounds(), caps, progress)
        if "density" in want:
            result["density"] = {}
            result["idle"] = {}
            for b in active:
                n = min(opts.instances(), opts.vm_cap()) if b.name == "vm" else opts.instances()
                progress(f"density: {b.name}: starting up to {n} idle instances")
                res, insts = density.start_many(b, n, opts.budget_kib, opts.settle(), progress)
                try:
                    res = density.analyse(b, res, insts, opts.settle())
                    if insts:
                        progress(f"idle: {b.name}: {len(insts)} instances, "
                                 f"{opts.idle_window():g} s window")
                        result["idle"][b.name] = idle.measure(b, insts, opts.idle_window())
                    if b.name == "vm":
                        accelerator = b.accelerator()
                        accel_reason = getattr(b, "accel_reason", None)
                finally:
                    progress(f"density: {b.name}: removing {len(insts)}")
                    res["remove"] = density.remove(b, insts)
                result["density"][b.name] = res
        if "network" in want:
            result["network"] = network.measure(ctx, [b.name for b in active], opts.quick,
                                                progress)
            if "leftovers" in result["network"]:
                result["leftovers"]["network"] = result["network"]["leftovers"]
        if "migrate" in want:
            result["migrate"] = migrate.measure(ctx, [b.name for b in active], opts.quick,
                                                progress)
            for name, m in result["migrate"]["backends"].items():
                result["leftovers"][f"migrate-{name}"] = m["leftovers"]
        result["complete"] = True
    finally:
        # A second Ctrl-C (or TERM, HUP) must not cut the clean-up short: ignored until it
        # is done, by the `zoned rm`s it runs too (a terminal's Ctrl-C reaches them). Not a
        # blocked mask: that is the main thread's only, and a signal another thread takes
        # (a subprocess timeout's timer) still ran Python's handler, KeyboardInterrupt.
        held = {s: signal.signal(s, signal.SIG_IGN) for s in HELD_SIGNALS}
        try:
            progress("cleaning up")
            for b in made:
                try:
                    result["leftovers"][b.name] = b.cleanup()
                except Exception as e:  # noqa: BLE001 - the other backends still get cleaned
                    result["leftovers"][b.name] = {"ok": False,
                                                   "error": f"{type(e).__name__}: {e}"}
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            for s, handler in held.items():
                signal.signal(s, handler)
        result["leftovers"]["ok"] = all(v.get("ok") for v in result["leftovers"].values()
                                        if isinstance(v, dict))
        result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"] = facts.machine(opts.zoned, accelerator)
    result["machine"]["accelerator_reason"] = accel_reason
    return result
