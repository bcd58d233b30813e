#!/usr/bin/env python3
"""Real OCI clients on runc and on zoned, side by side: wall time of each client command.

What is measured: the wall time of one client command, as a user types it, for:

  podman (+ conmon), private storage/run root/tmp dir/containers.conf under a temp dir,
  cgroupfs, file events and locks, no network; `--runtime runc` vs `--runtime <venv>/zoned`:
    run --rm        `podman run --rm IMG true` (create + start + wait + delete)
    run --rm -t     the same with a pty (`script -qec` gives podman a terminal)
    run -d          `podman run -d IMG sh -c 'trap "exit 0" TERM; sleep 1000 & wait'`
    exec            `podman exec NAME true` in that container
    checkpoint      `podman container checkpoint NAME` (CRIU; stops it), where CRIU >= 4 is
    restore         `podman container restore NAME` (back, running)
    stop            `podman stop NAME` (SIGTERM; the trap exits at once)
    rm              `podman rm NAME`
  containerd (Debian 1.6, io.containerd.runc.v2 shim) started here on a private socket with
  a private root and state, driven with ctr; `--runc-binary runc` vs `--runc-binary zoned`:
    ctr run --rm    `ctr run --rm REF ID true`
    ctr exec        `ctr task exec --exec-id X ID true` in a running task
    ctr exec, seccomp  the same in a task run with `--seccomp --allow-new-privs` (containerd's
                    default profile, no no_new_privs: Kubernetes' RuntimeDefault with
                    allowPrivilegeEscalation), 0.1 s after the task started (an exec probe)
  (The containerd part is left out with --no-containerd or when containerd is missing.)

How: one warm-up round (not recorded), then --rounds rounds (default 5). Each round runs
every step once per runtime, interleaved: runc then zoned in even rounds, zoned then runc in
odd ones, so drift affects both alike. Reported per step and runtime: the median (and min,
max) in milliseconds and zoned's median over runc's. A step that fails is reported with its
error (and the table shows FAIL). Results go to bench/results/oci_clients.json (or --out).

The images are made from zoned's local busybox image (podman import; an OCI layout for
`ctr images import`); nothing is pulled. Everything is named oci-t-*, and all of it
(containers, images, containerd, its shims, cgroups, mounts, temp dirs) is removed at the
end. Needs root.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _common as C  # noqa: E402
import oci_helpers as H  # noqa: E402

LOOP = 'trap "exit 0" TERM; sleep 1000 & wait'


def _criu() -> bool:
    """Whether checkpoint and restore can be timed: zoned's CRIU (>= 4), which podman and
    runc find first on PATH too (/usr/local/sbin)."""
    from zoned.checkpoint.criu import find_criu
    from zoned.errors import ZonedError

    try:
        return bool(find_criu())
    except ZonedError:
        return False


CRIU = _criu()


class StepFailed(Exception):
    pass


def timed(cmd: list[str], *, env=None, expect: int = 0, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != expect:
        raise StepFailed(f"$ {shlex.join(cmd)} -> {p.returncode} (expected {expect}): "
                         f"{(p.stderr or p.stdout).strip()[-400:]}")
    return dt


def podman_round(pm: H.Podman, runtime: str, rt_name: str) -> dict[str, float]:
    """One pass over the podman steps; returns {step: seconds}. Raises StepFailed."""
    out: dict[str, float] = {}
    argv = lambda *a: pm.argv(runtime, *a)  # noqa: E731
    out["podman run --rm"] = timed(argv("run", "--rm", H.IMAGE, "true"), env=pm.env)
    out["podman run --rm -t"] = timed(H.in_tty(argv("run", "--rm", "-t", H.IMAGE, "true")),
                                      env=pm.env)
    name = f"oci-t-bench-{rt_name}-{uuid.uuid4().hex[:6]}"
    try:
        out["podman run -d"] = timed(argv("run", "-d", "--name", name, H.IMAGE, "sh", "-c",
                                          LOOP), env=pm.env)
        out["podman exec"] = timed(argv("exec", name, "true"), env=pm.env)
        if CRIU:
            out["podman checkpoint"] = timed(argv("container", "checkpoint", name),
                                             env=pm.env)
            out["podman restore"] = timed(argv("container", "restore", name), env=pm.env)
        out["podman stop"] = timed(argv("stop", name), env=pm.env)
        out["podman rm"] = timed(argv("rm", name), env=pm.env)
    finally:
        subprocess.run(argv("rm", "-f", "-t", "0", name), env=pm.env, capture_output=True)
    return out


def ctr_round(c: H.Containerd, binary: str, rt_name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    base = ["ctr", "--address", c.address, "--namespace", c.namespace]
    flags = c.runtime_flags(binary)
    cid = f"oci-t-bench-{rt_name}-{uuid.uuid4().hex[:6]}"
    out["ctr run --rm"] = timed(base + ["run", "--rm", *flags, H.CTR_REF, cid, "true"])
    cid = f"oci-t-bench-{rt_name}-{uuid.uuid4().hex[:6]}"
    try:
        timed(base + ["run", "-d", *flags, H.CTR_REF, cid, "sh", "-c", LOOP])
        out["ctr exec"] = timed(base + ["task", "exec", "--exec-id", "x", "--fifo-dir",
                                        c.fifo_dir, cid, "true"])
    finally:
        c.remove_container(cid)
    # Kubernetes' way: RuntimeDefault seccomp without no_new_privs (allowPrivilegeEscalation
    # defaults to true), an exec probe after a quiet spell
    cid = f"oci-t-bench-{rt_name}-{uuid.uuid4().hex[:6]}"
    try:
        timed(base + ["run", "-d", "--seccomp", "--allow-new-privs", *flags, H.CTR_REF, cid,
                      "sh", "-c", LOOP])
        time.sleep(0.1)
        out["ctr exec, seccomp"] = timed(base + ["task", "exec", "--exec-id", "x",
                                                 "--fifo-dir", c.fifo_dir, cid, "true"])
    finally:
        c.remove_container(cid)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--zoned", default=H.ZONED, help="the zoned binary (default: the venv's)")
    ap.add_argument("--runc", default=H.RUNC)
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--out", help="JSON output (default bench/results/oci_clients.json)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/oci_clients.py needs root")
    missing = H.have("podman", "conmon", "script")
    if missing:
        sys.exit(f"{missing} is not installed (make setup installs it)")
    do_ctr = not args.no_containerd and H.have("containerd", "ctr",
                                               "containerd-shim-runc-v2") is None

    # podman picks runc from its own runtime table by name, zoned by path (as a user would)
    runtimes = {"runc": ("runc" if args.runc == H.RUNC else args.runc, args.runc),
                "zoned": (args.zoned, args.zoned)}
    samples: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, dict[str, str]] = {"runc": {}, "zoned": {}}

    pm = H.Podman(tempfile.mkdtemp(prefix="oci-t-bench-podman-"))
    ctd = None
    problems: list[str] = []
    try:
        tar = H.busybox_rootfs_tar(pm.base / "busybox-rootfs.tar")
        pm.import_image(tar)
        if do_ctr:
            ctd = H.Containerd()
            ctd.start()
            ctd.import_image(H.oci_layout_tar(tar, ctd.base / "busybox-oci.tar"))
        for rnd in range(args.rounds + 1):  # round 0 is the warm-up
            order = ["runc", "zoned"] if rnd % 2 == 0 else ["zoned", "runc"]
            for rt in order:
                podman_rt, binary = runtimes[rt]
                groups = [("podman",
                           lambda podman_rt=podman_rt, rt=rt: podman_round(pm, podman_rt, rt))]
                if ctd:
                    groups.append(("ctr", lambda binary=binary, rt=rt: ctr_round(ctd, binary, rt)))
                for gname, fn in groups:
                    try:
                        res = fn()
                    except (StepFailed, subprocess.TimeoutExpired) as e:
                        errors[rt].setdefault(gname, str(e))
                        continue
                    if rnd == 0:
                        continue
                    for step, dt in res.items():
                        samples.setdefault(step, {"runc": [], "zoned": []})[rt].append(dt)
            print(f"round {rnd}/{args.rounds}{' (warm-up)' if rnd == 0 else ''} done",
                  file=sys.stderr)
    finally:
        problems += pm.cleanup()
        if ctd:
            problems += ctd.stop()

    steps = ["podman run --rm", "podman run --rm -t", "podman run -d", "podman exec",
             "podman checkpoint", "podman restore", "podman stop", "podman rm",
             "ctr run --rm", "ctr exec", "ctr exec, seccomp"]
    rows, results = [], {}
    for step in steps:
        if step not in samples and not any(step.startswith(g) for e in errors.values()
                                           for g in e):
            continue
        s = samples.get(step, {"runc": [], "zoned": []})
        summ = {rt: C.summary([x * 1000 for x in s[rt]]) for rt in ("runc", "zoned")}
        results[step] = {rt: {"samples_ms": [round(x * 1000, 2) for x in s[rt]],
                              **{k: (round(v, 2) if isinstance(v, float) else v)
                                 for k, v in summ[rt].items()}} for rt in ("runc", "zoned")}

        def cell(rt, summ=summ):
            if not summ[rt].get("n"):
                return "FAIL"
            return f"{summ[rt]['median']:.0f} ({summ[rt]['min']:.0f}-{summ[rt]['max']:.0f})"

        ratio = (f"{summ['zoned']['median'] / summ['runc']['median']:.2f}"
                 if summ["runc"].get("n") and summ["zoned"].get("n") else "-")
        rows.append([step, cell("runc"), cell("zoned"), ratio])
    print()
    print(C.table(rows, ["step", "runc ms median (min-max)", "zoned ms median (min-max)",
                         "zoned/runc"]))
    for rt, errs in errors.items():
        for g, msg in errs.items():
            print(f"\n{rt} {g}: FAILED: {msg}")
    if problems:
        print("\ncleanup had to remove: " + "; ".join(problems))
    env = C.environment(runc=args.runc, zoned_cli=args.zoned)
    env["podman"] = C.first_line(["podman", "--version"])
    env["conmon"] = C.first_line(["conmon", "--version"])
    if do_ctr:
        env["containerd"] = C.first_line(["containerd", "--version"])
    out = C.write_json("oci_clients", {
        "benchmark": "oci_clients", "rounds": args.rounds, "environment": env,
        "runtimes": {"runc": runtimes["runc"][0], "zoned": runtimes["zoned"][0]},
        "results_ms": results, "errors": errors, "cleanup_problems": problems,
    }, args.out)
    print(f"\nwrote {out}")
    return 1 if any(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
