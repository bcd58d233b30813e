#!/usr/bin/env python3
"""Fault injection: create/exec/rm cycles with zoned killed (SIGKILL) at random moments,
then the leftovers on the host, per resource kind, before and after `zoned gc`. Goal: 0
after gc for every kind.

Phases (all against a private state root, /run/zoned-bench-faults-*):
  cycles      --cycles N (default 200) of run -d / exec / rm -f of a zone, half of them
              networked (the state root's default network, a published port), one of
              the three commands killed: after a random delay (uniform over the time the
              command normally takes) or at a named fault point (ZONED_TEST_FAULT, see
              zoned/testhooks.py: rm:marked, rm:killed, ..., write:tmp#K; a `run -d`
              killed there may be its worker, which the CLI reports in one line, exit
              125: that counts as killed). The cycle then does what a user would: `rm -f`
              after a killed run or exec. Leftovers
              are counted before and after `zoned gc`, every cycle.
  disk-full   --disk-full K cases on a second state root on a 6 MiB tmpfs that is filled
              to the last block after the zone is made: rm -f (killed at random in half of
              them), a run that must fail cleanly, and gc, all on the full disk.
  concurrent  --workers W zoned workers at once, each doing create/exec/rm cycles with
              random kills, while another process runs `zoned gc` in a loop (killed now
              and then too); counted once at the end.

A removal killed before it began (before its `removing` mark: it has changed nothing) leaves
an intact container, which is the user's, not a leftover: the cycle retries `rm -f` (as a
user would) and counts it under "rm killed before it began".

Kinds counted (scoped to the bench's roots): state dirs (incl. .trash-*), data dirs (if the
store has a data root), cgroup dirs, veths, leases, nft (rules-registry entries and kernel
DNAT rules for the bench's ports), hosts entries (in a long-lived witness zone's
/etc/hosts), mounts, processes (container processes, zoned processes), *.tmp files.

Results: a table and bench/results/faults.json (or --out). Cleans up after itself: every
zone, the network, `zoned gc`, the state roots and the tmpfs mount. Needs root and nft.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from zoned.testhooks import fill_disk  # noqa: E402

KINDS = ["state_dirs", "data_dirs", "cgroup_dirs", "veths", "leases", "nft", "hosts_entries",
         "mounts", "processes", "tmp_files"]
RUN_POINTS = ["write:tmp#1", "write:tmp#2", "write:tmp#3", "write:tmp#4"]
RM_POINTS = ["rm:marked", "rm:killed", "rm:cgroup", "rm:network", "rm:trash",
             "write:tmp#1", "write:tmp#2"]


class Bench:
    def __init__(self, zoned: str, root: str, port_base: int, mark: str, seed: int):
        from zoned.runtime import Runtime

        self.zoned, self.root, self.real = zoned, root, os.path.realpath(root)
        self.rt = Runtime(root)
        self.port_base, self.mark = port_base, mark
        self.rng = random.Random(seed)
        self.durations: dict[str, list[float]] = {}
        self.witness_hosts: str | None = None
        self.witness_port: int | None = None

    # -- running zoned -------------------------------------------------------------------
    def cmd(self, *args: str, kill_after: float | None = None, point: str | None = None,
            root: str | None = None, timeout: float = 120) -> dict:
        """Run zoned; SIGKILL it after `kill_after` s, or let it kill itself at `point`."""
        env = dict(os.environ)
        if point:
            env["ZONED_TEST_FAULT"] = f"{point}=kill"
        t0 = time.monotonic()
        p = subprocess.Popen([self.zoned, "--root", root or self.root, *args], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        if kill_after is not None:
            try:
                p.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                p.kill()
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
        killed = rc == -signal.SIGKILL  # (a kill that came just too late is no kill)
        if point and rc == 125 and "start was ended by SIGKILL" in err:
            # `run -d` creates the zone in a worker it forks (zoned.cli.detach): the fault
            # point killed that worker, and the CLI said so (exit 125, gc undoes the rest)
            killed = True
        if not killed and rc == 0:
            self.durations.setdefault(args[0], []).append(time.monotonic() - t0)
        return {"rc": rc, "killed": killed, "out": out, "err": err.strip()[-300:]}

    def typical(self, verb: str, default: float) -> float:
        d = self.durations.get(verb) or []
        return sorted(d)[len(d) // 2] if d else default

    def run_args(self, name: str, networked: bool, port: int) -> list[str]:
        net = ["--network", "zoned0", "-p", f"{port}:80"] if networked else []
        return ["run", "-d", "--name", name, *net, "--", "sleep", self.mark]

    # -- leftovers -----------------------------------------------------------------------
    def leftovers(self, root: str | None = None, ports: range | None = None,
                  keep: set[str] = frozenset()) -> dict[str, list[str]]:
        """Everything of this bench's root on the host that no kept container owns."""
        from zoned.network import nft
        from zoned.cgroups import list_paths
        from zoned.logs import LOGGER
        from zoned.runtime import Runtime, cgroup_parent

        root = root or self.root
        real = os.path.realpath(root)
        store = Runtime(root).store
        ports = ports or range(self.port_base, self.port_base + 1000)
        out: dict[str, list[str]] = {k: [] for k in KINDS}
        out["state_dirs"] = [n for n in C.state_entries(root)
                             if n not in keep and n not in (".networks", "filler")]
        from zoned.storage import CONTAINERS

        data = os.path.join(store.data, CONTAINERS)
        out["data_dirs"] = [n for n in C.state_entries(data) if n not in keep]
        out["cgroup_dirs"] = [p for p in list_paths(cgroup_parent(root))
                              if p.rsplit("/", 1)[-1] not in keep]
        for name in os.listdir("/sys/class/net"):
            try:
                with open(f"/sys/class/net/{name}/ifalias") as f:
                    alias = f.read().strip()
            except OSError:
                continue
            owner, _, oroot = alias.partition("@")
            if oroot == real and owner.startswith("zoned:") and owner[6:] not in keep:
                out["veths"].append(f"{name} ({owner})")
        netdir = os.path.join(root, ".networks")
        for n in C.state_entries(netdir):
            if n.endswith(".leases.json"):
                try:
                    with open(os.path.join(netdir, n)) as f:
                        leases = json.load(f)["leases"]
                except (OSError, ValueError) as e:
                    out["leases"].append(f"{n}: unreadable ({e})")
                    continue
                out["leases"] += [f"{ip} ({r.get('cid')})" for ip, r in leases.items()
                                  if r.get("cid") not in keep]
        for frag in nft.fragments():
            if frag.get("root") == real:
                out["nft"] += [f"registry port of {cid}" for cid in frag.get("ports") or {}
                               if cid not in keep]
        table = subprocess.run(["nft", "list", "table", "inet", "zoned"],
                               capture_output=True, text=True).stdout
        kept_ports = {self.witness_port} if "witness" in keep else set()
        import ipaddress

        from zoned.network import definitions as netconf

        ours = [ipaddress.ip_network(n["subnet"]) for n in netconf.list_networks(root)]
        for ln in table.splitlines():
            w = ln.split()
            if "dport" in w and "to" in w:  # a DNAT rule to one of our networks' addresses
                port = int(w[w.index("dport") + 1])
                target = ipaddress.ip_address(w[w.index("to") + 1].split(":")[0])
                if port in ports and port not in kept_ports and \
                        any(target in net for net in ours):
                    out["nft"].append("kernel: " + " ".join(w))
        if self.witness_hosts and "witness" in keep:
            try:
                with open(self.witness_hosts) as f:
                    lines = f.read().splitlines()
                out["hosts_entries"] = [ln for ln in lines
                                        if ln.split()[1:2] and ln.split()[1] not in keep
                                        and ln[:1].isdigit() and not ln.startswith("127.")]
            except OSError:
                pass
        out["mounts"] = [ln.split()[4] for ln in C.mounts_containing(real)
                         if ln.split()[4] != real]
        for pid_s in os.listdir("/proc"):
            if not pid_s.isdigit():
                continue
            cmd = C.proc_cmdline(int(pid_s))
            if cmd == f"sleep {self.mark}" and C.proc_state(int(pid_s)) not in (None, "Z"):
                if not self._kept_pid(int(pid_s), keep, root):
                    out["processes"].append(f"{pid_s} {cmd}")
            elif "zoned" in cmd and f"--root {root} " in cmd + " ":
                out["processes"].append(f"{pid_s} {cmd[:80]}")
            elif cmd.startswith(LOGGER) and cmd.split()[1:2] and \
                    os.path.basename(cmd.split()[1]) not in keep and \
                    cmd.split()[1].startswith(data + "/"):
                out["processes"].append(f"{pid_s} {cmd[:80]}")  # a zone's log writer
        for d in [*store.tmp_dirs(), nft.REGISTRY]:
            for n in C.state_entries(d):
                if n.endswith(".tmp"):
                    pid = n[:-4].rsplit(".", 1)[-1]
                    if d != nft.REGISTRY or not os.path.exists(f"/proc/{pid}"):
                        out["tmp_files"].append(os.path.join(d, n))
        return out

    def _kept_pid(self, pid: int, keep: set[str], root: str) -> bool:
        """A process of a kept container (the witness, a concurrent worker's live zone)."""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
        except OSError:
            return False
        from zoned.runtime import cgroup_parent

        parent = cgroup_parent(root)
        return any(f"{parent}/{k}\n" in cg or f"{parent}/{k}/" in cg for k in keep)

    def gc(self, root: str | None = None, kill_after: float | None = None) -> dict:
        return self.cmd("gc", root=root, kill_after=kill_after)

    def removal_began(self, name: str, root: str | None = None) -> bool:
        from zoned.runtime import Runtime

        store = Runtime(root or self.root).store
        return not store.exists(name) or store.removing(name)

    # -- phases --------------------------------------------------------------------------
    def cycle(self, i: int, name: str, port: int, root: str | None = None,
              gc_each: bool = True) -> dict:
        rng = self.rng
        networked = rng.random() < 0.5
        target = rng.choices(["run", "exec", "rm"], weights=[35, 15, 50])[0]
        use_point = target != "exec" and rng.random() < 0.4
        point = rng.choice(RUN_POINTS if target == "run" else RM_POINTS) if use_point else None
        rec = {"i": i, "name": name, "networked": networked, "target": target,
               "point": point}

        def kill_for(verb: str, default: float) -> float | None:
            if verb != target or point:
                return None
            delay = rng.uniform(0.2, 1.1) * self.typical(verb, default)
            rec["delay"] = round(delay, 4)
            return delay

        r = self.cmd(*self.run_args(name, networked, port), root=root,
                     kill_after=kill_for("run", 0.6),
                     point=point if target == "run" else None)
        rec["run"] = r["rc"]
        if r["rc"] == 0:
            e = self.cmd("exec", name, "sh", "-c", "sleep 0.2", root=root,
                         kill_after=kill_for("exec", 0.4))
            rec["exec"] = e["rc"]
        elif not r["killed"]:
            rec["run_error"] = r["err"]
        d = self.cmd("rm", "-f", name, root=root, kill_after=kill_for("rm", 0.4),
                     point=point if target == "rm" else None)
        rec["rm"] = d["rc"]
        rec["killed"] = r["killed"] or d["killed"] or (rec.get("exec") == -9)
        if d["killed"] and not self.removal_began(name, root):
            rec["rm_killed_before_it_began"] = True
            rec["rm_retry"] = self.cmd("rm", "-f", name, root=root)["rc"]
        elif not d["killed"] and d["rc"] != 0 and "does not exist" not in d["err"]:
            rec["rm_error"] = d["err"]
        if gc_each:
            self.count(rec, root)
        return rec

    def count(self, rec: dict, root: str | None = None, keep: set[str] | None = None) -> None:
        keep = {"witness"} if keep is None else keep
        before = self.leftovers(root, keep=keep)
        g = self.gc(root)
        after = self.leftovers(root, keep=keep)
        rec["before"] = {k: len(v) for k, v in before.items() if v}
        rec["after"] = {k: v for k, v in after.items() if v}
        rec["gc"] = g["out"].splitlines()
        if g["rc"] != 0:
            rec["gc_error"] = g["err"]

    def concurrent(self, workers: int, per_worker: int) -> dict:
        """Workers cycling at once (own names and ports), a gc loop beside them."""
        stop = threading.Event()
        recs: list[dict] = []
        gcs = {"runs": 0, "killed": 0, "failed": 0}
        lock = threading.Lock()

        def worker(w: int) -> None:
            for j in range(per_worker):
                rec = self.cycle(j, f"w{w}-{j}", self.port_base + 100 + w, gc_each=False)
                with lock:
                    recs.append(rec)

        def gc_loop() -> None:
            rng = random.Random(self.rng.random())
            while not stop.is_set():
                kill = rng.uniform(0, 0.6) if rng.random() < 0.2 else None
                g = self.gc(kill_after=kill)
                gcs["runs"] += 1
                gcs["killed"] += g["killed"]
                gcs["lines"] = gcs.get("lines", 0) + len(g["out"].splitlines())
                gcs["failed"] += (g["rc"] != 0 and not g["killed"])
                if g["rc"] != 0 and not g["killed"]:
                    gcs.setdefault("errors", []).append(g["err"])
                time.sleep(rng.uniform(0, 0.3))

        t_gc = threading.Thread(target=gc_loop)
        t_gc.start()
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        t_gc.join()
        total: dict = {"workers": workers, "cycles": len(recs), "gc_loop": gcs}
        self.count(total)
        total["killed"] = sum(1 for r in recs if r["killed"])
        total["rm_killed_before_it_began"] = sum(1 for r in recs
                                                 if r.get("rm_killed_before_it_began"))
        total["errors"] = [{k: r[k] for k in ("name", "run_error", "rm_error") if k in r}
                           for r in recs if "run_error" in r or "rm_error" in r]
        return total

    def disk_full(self, cases: int, root: str) -> list[dict]:
        """Cases on a tmpfs state root filled to the last block after the zone exists."""
        out = []
        filler = os.path.join(root, "filler")
        for i in range(cases):
            name = f"full{i}"
            rec: dict = {"i": i, "name": name}
            networked = i % 4 != 3
            r = self.cmd(*self.run_args(name, networked, self.port_base + 200), root=root)
            rec["run"] = r["rc"]
            if r["rc"] != 0:
                rec["run_error"] = r["err"]
            fill_disk(filler)
            rec["full"] = os.statvfs(root).f_bavail == 0
            # a run on the full disk fails, and leaves nothing once gc ran
            bad = self.cmd(*self.run_args(f"{name}-nospace", networked, self.port_base + 201),
                           root=root)
            rec["run_on_full_disk"] = bad["rc"]
            kill = self.rng.uniform(0, 1.2 * self.typical("rm", 0.4)) if i % 2 else None
            point = None
            if kill is not None and i % 4 == 1:
                kill, point = None, self.rng.choice(RM_POINTS)
            d = self.cmd("rm", "-f", name, root=root, kill_after=kill, point=point)
            rec.update(rm=d["rc"], rm_killed=d["killed"], rm_point=point,
                       rm_error=None if d["killed"] or d["rc"] == 0 else d["err"])
            if d["killed"] and not self.removal_began(name, root):
                rec["rm_killed_before_it_began"] = True
                rec["rm_retry"] = self.cmd("rm", "-f", name, root=root)["rc"]
            self.count(rec, root, keep=set())  # gc on the full disk too
            os.unlink(filler)
            out.append(rec)
        return out


def totals(recs: list[dict]) -> tuple[dict, dict]:
    before = {k: sum(r.get("before", {}).get(k, 0) for r in recs) for k in KINDS}
    after = {k: sum(len(r.get("after", {}).get(k, [])) for r in recs) for k in KINDS}
    return before, after


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=200, help="kill cycles (default 200)")
    p.add_argument("--disk-full", type=int, default=None, metavar="K",
                   help="disk-full cases (default cycles/10, at least 4)")
    p.add_argument("--workers", type=int, default=4, help="concurrent workers (default 4)")
    p.add_argument("--per-worker", type=int, default=None,
                   help="cycles per concurrent worker (default cycles/20, at least 3)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--zoned", default=C.DEFAULT_ZONED, help="zoned CLI (default: the venv's)")
    p.add_argument("--port-base", type=int, default=None,
                   help="host ports PORT..PORT+299 are published (default from the pid)")
    p.add_argument("--out", help="JSON path (default bench/results/faults.json)")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/faults.py: run as root")
    seed = a.seed if a.seed is not None else int(time.time())
    disk_cases = a.disk_full if a.disk_full is not None else max(4, a.cycles // 10)
    per_worker = a.per_worker if a.per_worker is not None else max(3, a.cycles // 20)
    port_base = a.port_base or 33000 + (os.getpid() % 100) * 300
    os.environ.setdefault("ZONED_SUBNET_POOL", "10.213.224.0/20")
    env = C.environment(zoned_cli=a.zoned)
    root = tempfile.mkdtemp(prefix="zoned-bench-faults-", dir="/run")
    full_root = tempfile.mkdtemp(prefix="zoned-bench-faults-full-", dir="/run")
    mark = str(86400 + os.getpid() % 1000)
    b = Bench(a.zoned, root, port_base, mark, seed)
    result: dict = {"benchmark": "faults", "environment": env,
                    "params": {"cycles": a.cycles, "disk_full": disk_cases,
                               "workers": a.workers, "per_worker": per_worker, "seed": seed,
                               "subnet_pool": os.environ["ZONED_SUBNET_POOL"]}}
    mounted = False
    t0 = time.monotonic()
    try:
        # warm up (durations for the random delays) and the witness zone
        for k in range(2):
            for networked in (False, True):
                n = f"warm{k}{int(networked)}"
                b.cmd(*b.run_args(n, networked, port_base + 300 - 1))
                b.cmd("exec", n, "true")
                b.cmd("rm", "-f", n)
        b.witness_port = port_base + 299
        w = b.cmd(*b.run_args("witness", True, b.witness_port))
        if w["rc"] != 0:
            sys.exit(f"cannot start the witness zone: {w['err']}")
        b.witness_hosts = os.path.join(root, "witness", "hosts")
        recs = []
        for i in range(a.cycles):
            recs.append(b.cycle(i, f"c{i}", port_base + i % 50))
            if (i + 1) % 25 == 0:
                bf, af = totals(recs)
                print(f"  {i + 1}/{a.cycles} cycles: before gc {sum(bf.values())}, "
                      f"after gc {sum(af.values())}", flush=True)
        result["cycles"] = recs
        b.cmd("rm", "-f", "witness")
        print("  concurrent ...", flush=True)
        result["concurrent"] = b.concurrent(a.workers, per_worker)
        print("  disk-full ...", flush=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0711",
                        "zoned-bench-faults", full_root], check=True)
        mounted = True
        result["disk_full"] = b.disk_full(disk_cases, full_root)
    finally:
        from zoned.network import definitions as netconf

        subnets = []
        for r in (root, full_root):
            if r == full_root and not mounted:
                continue
            subnets += [n["subnet"] for n in netconf.list_networks(r)]
            ids = b.cmd("ps", "-q", root=r)["out"].split()
            if ids:
                b.cmd("rm", "-f", *ids, root=r)
            b.cmd("network", "rm", "zoned0", root=r)
            b.gc(root=r)
        if mounted:
            subprocess.run(["umount", "-l", full_root])
        final = {k: v for k, v in b.leftovers(root).items() if v}
        # the networks are gone too: no element of the kernel's `subnets` set names them
        table = subprocess.run(["nft", "list", "table", "inet", "zoned"],
                               capture_output=True, text=True).stdout
        gone = [s for s in subnets if s in table]
        if gone:
            final["nft_set_elements"] = gone
        final_full = {k: v for k, v in b.leftovers(full_root).items() if v}
        for r in (root, full_root):
            C.rmdir_quiet(r)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["final_leftovers"] = {"root": final, "disk_full_root": final_full}
    report(result)
    path = C.write_json("faults", result, a.out)
    print(f"\nwrote {path}")
    worst = sum(result["summary"]["after_gc"].values())
    return 1 if worst or final or final_full else 0


def report(result: dict) -> None:
    recs = result.get("cycles", [])
    conc = result.get("concurrent") or {}
    full = result.get("disk_full", [])
    cb, ca = totals(recs)
    fb, fa = totals(full)
    kb = {k: conc.get("before", {}).get(k, 0) for k in KINDS}
    ka = {k: len(conc.get("after", {}).get(k, [])) for k in KINDS}
    rows = []
    for k in KINDS:
        rows.append([k, cb[k], ca[k], kb[k], ka[k], fb[k], fa[k]])
    print()
    print(C.table(rows, ["kind", "cycles:before", "after gc", "concurrent:before",
                         "after gc", "disk-full:before", "after gc"], left_last=False))
    killed = sum(1 for r in recs if r["killed"])
    by_target = {}
    for r in recs:
        if r["killed"]:
            key = f"{r['target']}@{r['point'] or 'delay'}"
            by_target[key] = by_target.get(key, 0) + 1
    before_began = sum(1 for r in recs if r.get("rm_killed_before_it_began"))
    errors = [r for r in recs if "rm_error" in r or "run_error" in r or "gc_error" in r]
    full_ok = sum(1 for r in full if r.get("rm") == 0)
    full_unkilled = sum(1 for r in full if not r.get("rm_killed"))
    print(f"\ncycles {len(recs)} (killed {killed}; rm killed before it began {before_began}), "
          f"concurrent {conc.get('cycles', 0)} cycles by {conc.get('workers', 0)} workers "
          f"(killed {conc.get('killed', 0)}; beside them gc ran "
          f"{conc.get('gc_loop', {}).get('runs', 0)} times, was killed "
          f"{conc.get('gc_loop', {}).get('killed', 0)} times, removed "
          f"{conc.get('gc_loop', {}).get('lines', 0)} things), disk-full {len(full)} "
          f"(unkilled rm -f succeeded {full_ok}/{full_unkilled}; run on a full disk failed "
          f"{sum(1 for r in full if r.get('run_on_full_disk'))}/{len(full)})")
    if errors:
        print(f"unexpected errors in {len(errors)} cycles, e.g. "
              + "; ".join(str({k: r[k] for k in ('name', 'run_error', 'rm_error', 'gc_error')
                                if k in r}) for r in errors[:3]))
    for label, part in (("cycles", recs), ("disk-full", full)):
        for r in part:
            if r.get("after"):
                print(f"LEFT after gc ({label} {r['name']}, {r.get('target')}@"
                      f"{r.get('point') or r.get('rm_point') or r.get('delay')}): {r['after']}")
    if conc.get("after"):
        print(f"LEFT after gc (concurrent): {conc['after']}")
    result["summary"] = {
        "kills_by_target": by_target,
        "before_gc": {k: cb[k] + kb[k] + fb[k] for k in KINDS},
        "after_gc": {k: ca[k] + ka[k] + fa[k] for k in KINDS},
        "cycles": {"before_gc": cb, "after_gc": ca},
        "concurrent": {"before_gc": kb, "after_gc": ka},
        "disk_full": {"before_gc": fb, "after_gc": fa,
                      "unkilled_rm_succeeded": f"{full_ok}/{full_unkilled}"},
        "unexpected_errors": len(errors),
    }


if __name__ == "__main__":
    sys.exit(main())
