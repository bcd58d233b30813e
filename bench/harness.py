#!/usr/bin/env python3
"""Per-test overhead of isolation in a pytest suite: zoned's fixtures (root and rootless)
against `podman run --rm` and plain `subprocess` (the floor), issue 17.

The same N small tests (run `echo hi` and check its output) are generated once per way and
run by a real `python -m pytest` (one process, no xdist):

  empty            N tests that run nothing: pytest's own cost, subtracted from the rest
  subprocess       subprocess.run(["echo", "hi"]) on the host: no isolation, the floor
  unshare          the same through `unshare --mount --uts --ipc --net --pid --fork`:
                   fresh namespaces and nothing else (no rootfs, cgroups, seccomp, caps),
                   the floor of any runtime that gives each test namespaces of its own
  zoned            the zoned_run fixture (a fresh zone per call: namespaces, overlay on
                   busybox, seccomp, cgroups), as root: zones made ahead by the session's
                   zoned_pool (zoned.Pool) while pytest works
  zoned-nopool     the same with --zoned-pool-size 0: each call makes its zone itself, in
                   the test's own state root
  zoned-zone       the zone fixture: a detached zone per test and one exec in it, as root
  zoned-rootless   the zoned_run fixture as an ordinary user (a user namespace through
                   newuidmap, no cgroups on this host); the user is made with useradd and
                   removed afterwards, or --user NAME
  podman           subprocess.run(["podman", "run", "--rm", "--rootfs", BUSYBOX, ...]):
                   runc, --network none, a private podman store removed afterwards (and
                   the ulimits zoned bench gives it: root lacks CAP_SYS_RESOURCE here)

Per-test overhead = (wall time of the suite - wall time of `empty`) / N, the median over
--runs runs. Needs root. Usage: bench/harness.py [-n 20] [--runs 3] [--only a,b] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
BUSYBOX = "/var/lib/zoned/images/busybox/rootfs"

BODIES = {
    "empty": "    pass\n",
    "subprocess": "    r = subprocess.run(['echo', 'hi'], capture_output=True)\n"
                  "    assert r.stdout == b'hi\\n'\n",
    "unshare": "    r = subprocess.run(['unshare', '--mount', '--uts', '--ipc', '--net', '--pid', "
               "'--fork', 'echo', 'hi'], capture_output=True)\n"
               "    assert r.stdout == b'hi\\n', r.stderr\n",
    "zoned": "    assert zoned_run(['echo', 'hi']).stdout == b'hi\\n'\n",
    "zoned-nopool": "    assert zoned_run(['echo', 'hi']).stdout == b'hi\\n'\n",
    "zoned-zone": "    c = zone(['sleep', '60'])\n"
                  "    assert c.exec(['echo', 'hi']).stdout == 'hi\\n'\n",
    "zoned-rootless": "    assert zoned_run(['echo', 'hi']).stdout == b'hi\\n'\n",
    "podman": "    r = subprocess.run(PODMAN + ['run', '--rm', '--network', 'none', "
              "'--ulimit', 'nofile=1024:20000', '--ulimit', 'nproc=1024:1024', '--rootfs', "
              "BUSYBOX, 'echo', 'hi'], capture_output=True)\n"
              "    assert r.stdout == b'hi\\n', r.stderr\n",
}
FIXTURE = {"zoned": "zoned_run", "zoned-nopool": "zoned_run", "zoned-rootless": "zoned_run",
           "zoned-zone": "zone"}
EXTRA_ARGS = {"zoned-nopool": ["--zoned-pool-size", "0"]}


def suite(way: str, n: int, podman_root: str) -> str:
    head = ("import subprocess\nimport pytest\n"
            f"BUSYBOX = {BUSYBOX!r}\n"
            f"PODMAN = ['podman', '--root', {podman_root + '/root'!r}, '--runroot', "
            f"{podman_root + '/run'!r}, '--cgroup-manager', 'cgroupfs', "
            "'--events-backend', 'none', '--runtime', 'runc']\n\n")
    arg = FIXTURE.get(way, "")
    return head + f"@pytest.mark.parametrize('i', range({n}))\n" \
        f"def test_small({arg + ', ' if arg else ''}i):\n" + BODIES[way]


def run_suite(path: str, way: str, user: pwd.struct_passwd | None) -> float:
    argv = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
            "--rootdir", os.path.dirname(path), *EXTRA_ARGS.get(way, []), path]
    env = dict(os.environ)
    if user is not None:
        argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--init-groups", "--"] + argv
        env = {k: v for k, v in env.items() if not k.startswith(("XDG_", "ZONED_"))}
        env.update(HOME=user.pw_dir, USER=user.pw_name)
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/")
    took = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{way}: the suite failed:\n{p.stdout[-3000:]}{p.stderr[-2000:]}")
    return took


def make_user() -> pwd.struct_passwd:
    name = "zhnb" + os.urandom(3).hex()
    subprocess.run(["useradd", "-m", name], check=True)
    user = pwd.getpwnam(name)
    subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                    "--init-groups", "--", os.path.join(os.path.dirname(PY), "zoned"),
                    "image", "build", "busybox"], check=True, capture_output=True,
                   env={"HOME": user.pw_dir, "PATH": os.environ.get("PATH", "")}, cwd="/")
    return user


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="tests per suite (default 20)")
    ap.add_argument("--runs", type=int, default=3, help="runs per way; the median counts")
    ap.add_argument("--only", help="comma-separated ways (default: all)")
    ap.add_argument("--user", help="an existing user for zoned-rootless (default: a new one)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/harness.py: run it as root (it also makes a user)")
    ways = args.only.split(",") if args.only else list(BODIES)
    if "podman" in ways and not shutil.which("podman"):
        print("podman: not installed, skipped", file=sys.stderr)
        ways.remove("podman")
    work = tempfile.mkdtemp(prefix="zhn-harness-bench-")
    os.chmod(work, 0o755)
    podman_root = os.path.join(work, "podman")
    made_user = None
    user = pwd.getpwnam(args.user) if args.user else None
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        if "zoned-rootless" in ways and user is None:
            user = made_user = make_user()
        paths = {}
        for w in ways:
            d = os.path.join(work, w)
            os.mkdir(d)
            os.chmod(d, 0o755)
            paths[w] = os.path.join(d, f"test_{w.replace('-', '_')}.py")
            with open(paths[w], "w") as f:
                f.write(suite(w, args.n, podman_root))
        for w in ways:  # one warm-up each (page cache, podman's store), not recorded
            run_suite(paths[w], w, user if w == "zoned-rootless" else None)
        for r in range(args.runs):
            for w in ways[r % len(ways):] + ways[:r % len(ways)]:  # rotate the order
                t = run_suite(paths[w], w, user if w == "zoned-rootless" else None)
                times[w].append(t)
                print(f"run {r + 1}: {w:<15} {t:6.2f} s", file=sys.stderr)
    finally:
        if os.path.isdir(podman_root):
            subprocess.run(["podman", "--root", podman_root + "/root", "--runroot",
                            podman_root + "/run", "system", "reset", "-f"],
                           capture_output=True)
            subprocess.run(["umount", "-R", podman_root + "/root/overlay"],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        if made_user is not None:
            subprocess.run(["pkill", "-KILL", "-u", made_user.pw_name], capture_output=True)
            subprocess.run(["userdel", "-r", made_user.pw_name], capture_output=True)
            shutil.rmtree(f"/tmp/zoned-{made_user.pw_uid}", ignore_errors=True)
            shutil.rmtree(f"/tmp/pytest-of-{made_user.pw_name}", ignore_errors=True)
    empty = statistics.median(times["empty"]) if "empty" in times else 0.0
    per = {w: (statistics.median(ts) - empty) / args.n * 1000 for w, ts in times.items()
           if w != "empty"}
    floor = per.get("subprocess")
    podman = per.get("podman")
    print(f"\nper-test overhead, {args.n} tests, median of {args.runs} runs "
          f"(pytest's own {empty / args.n * 1000:.1f} ms/test subtracted)")
    print(f"{'way':<16}{'ms/test':>9}{'x subprocess':>14}{'podman / it':>13}")
    for w, ms in per.items():
        vs_floor = f"{ms / floor:.1f}" if floor else "-"
        vs_podman = f"{podman / ms:.1f}" if podman and ms > 0 else "-"
        print(f"{w:<16}{ms:9.1f}{vs_floor:>14}{vs_podman:>13}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "runs": args.runs, "seconds": times,
                       "per_test_ms": per}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
