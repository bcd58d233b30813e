#!/usr/bin/env python3
"""Container start-up latency: `run /bin/true` to completion, zoned vs runc, side by side.

What is measured: the wall time from "start a container running /bin/true" until the
container has exited and been removed again (create + start + wait + delete), for:

  zoned-cli        `zoned --root R run --rm --name N -- /bin/true` as a subprocess: the whole
                   command, Python interpreter start-up and imports included. Image
                   container (overlay over /var/lib/zoned/images/busybox), default seccomp
                   profile, device cgroup rules, the usual namespaces.
  zoned-api        `zoned.run(["/bin/true"], root=R, name=N)` called in this process, timed
                   with time.perf_counter() (no interpreter start-up; imports are warm after
                   the warm-up run). Same container as zoned-cli.
  zoned-api-pool   `pool.run(["/bin/true"])` on a zoned.Pool(root=R, size=1) made in this
                   process: the latency of a run whose zone was made ahead; its set-up is
                   the pool maker's (another process), waited for after the timed run
                   (Pool.wait_ready), before the next variant, and not timed.
  runc             `runc --root X run --bundle B N` as a subprocess on an OCI bundle B (the
                   busybox image exported with ImageStore.export_bundle, config.json from
                   `zoned spec` edited to args ["/bin/true"], terminal false). The bundle
                   config has no seccomp profile and no cgroupsPath (runc puts the cgroup at
                   <its own cgroup>/N in every hierarchy).
  zoned-run-bundle `zoned --root R run --bundle B N`: runc's `run` command in zoned (create +
                   start + wait + delete of the very same bundle and config as runc), where
                   the zoned version has it (a variant that fails its warm-up is reported
                   as FAILED and left out of the rounds).
  zoned-run-bundle-userns, runc-userns
                   `run --bundle` of the same rootfs with a user namespace (root 0 mapped
                   to host 200000, 65536 ids; as Kubernetes' hostUsers: false and podman
                   --userns make it), zoned's and runc's.
  zoned-cli-rootfs `zoned --root R run --rm --rootfs B/rootfs -- /bin/true`: zoned's own
                   `run` on the same rootfs (no overlay; but zoned run's default seccomp
                   profile and device rules still apply).
  zoned-oci        `zoned create --bundle B` + `zoned start` + wait (pidfd) + `zoned delete`
                   on the very same bundle as runc: three zoned processes, same config.
  runc-oci         the same three steps with runc (`runc create/start/delete`), for
                   comparison with zoned-oci.
  zoned-exec, runc-exec
                   `zoned exec ID /bin/true` / `runc exec ID /bin/true` in a container kept
                   running for the rounds, each 0.1 s (untimed) after anything else, as
                   health checks come: the kernel's cgroup-move lock is quiet then.
  zoned-exec-userns, runc-exec-userns
                   the same into a container of the userns bundle.
  zoned-state, runc-state
                   `zoned state ID` / `runc state ID` of a container created on the same
                   bundle before the rounds (never started): the OCI command podman and
                   containerd run most often, one process each.
  ref-python, ref-zoned-version
                   references without a container: the venv's `python -c pass` and
                   `zoned --version`, i.e. the floor any zoned CLI command pays.
  zoned-cli-before, zoned-api-before, zoned-api-worker
                   with --before-ref REF only: zoned-cli and zoned-api as zoned was at git
                   REF (a temporary worktree of REF, with this checkout's built extension and
                   helpers copied in, run as zoned's shim ran it then: python -S, main()),
                   so a change is measured before/after in the same interleaved rounds
                   (this host's load varies too much between two runs). The API variants run
                   in a worker process each (warmed up like zoned-api): zoned-api-before as
                   of REF, zoned-api-worker this checkout, the two to compare.

With --profile K, zoned.run() is additionally run K times under cProfile after the timed
rounds and the functions with the largest own and cumulative time are printed and saved
(where the in-process time goes: fork, cgroup writes, handshake, overlay, seccomp).

How: one warm-up run per variant (not recorded), then --runs rounds; each round runs every
variant once, in a new random order each round (a fixed seed) so slow drift (page
cache, other load on the host) affects all variants equally. Reported per variant: median,
p95 (nearest rank), min and mean in milliseconds, and the median's ratio to runc's median.
Targets checked (from the issue): zoned CLI median <= runc median; zoned API median <= 1/4
of runc's median.

Everything runs under private state roots (/run/zoned-bench-startup-*, /run/runc-bench-*)
with container names bench-s<token>-*; all of it is removed at the end and the leftovers
(state dirs, cgroup dirs, mounts) are checked and reported. Results go to
bench/results/startup.json (or --out). Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# --quick's JSON: git ignores it; not in /tmp, where another user could plant the name
QUICK_OUT = C.RESULTS / "startup-quick.json"
SEED = 18  # the rounds' orders (random.Random): the same on every run of this script
VARIANTS = ["zoned-cli", "zoned-api", "zoned-api-pool", "runc", "zoned-run-bundle",
            "zoned-run-bundle-userns", "runc-userns", "zoned-cli-rootfs",
            "zoned-oci", "runc-oci", "zoned-state", "runc-state", "zoned-exec",
            "runc-exec", "zoned-exec-userns", "runc-exec-userns", "ref-python",
            "ref-zoned-version"]
# what a variant's "vs runc" compares with, where not plain runc
BASES = {"zoned-run-bundle-userns": "runc-userns", "runc-userns": "runc-userns",
         "zoned-exec-userns": "runc-userns", "runc-exec-userns": "runc-userns"}
BEFORE_VARIANTS = ["zoned-cli-before", "zoned-api-before", "zoned-api-worker"]  # --before-ref
NOTES = {
    "zoned-cli": "subprocess incl. Python start-up; image overlay; default seccomp; devices cgroup",
    "zoned-api": "in-process zoned.run(); image overlay; default seccomp; devices cgroup",
    "zoned-api-pool": "in-process zoned.Pool.run(): a zone made ahead (its set-up is the "
                      "pool maker's, waited for after the run: not timed)",
    "runc": "runc run on bundle; no seccomp in config; runc's cgroups",
    "zoned-run-bundle": "zoned run --bundle B ID: runc's `run` on the same bundle (no seccomp)",
    "zoned-run-bundle-userns": "zoned run --bundle: the same rootfs, with a user namespace "
                               "(vs runc-userns)",
    "runc-userns": "runc run --bundle: the same rootfs, with a user namespace "
                   "(vs runc-userns)",
    "zoned-cli-rootfs": "zoned run --rootfs bundle/rootfs (no overlay); default seccomp",
    "zoned-oci": "zoned create+start+delete on the runc bundle (no seccomp), 3 processes",
    "runc-oci": "runc create+start+delete on the same bundle, 3 processes",
    "zoned-state": "zoned state ID of a created container (one process)",
    "runc-state": "runc state ID of a created container (one process)",
    "zoned-exec": "zoned exec ID /bin/true in a running container, 0.1 s after anything "
                  "else (untimed: a quiet spell, as between health checks)",
    "runc-exec": "runc exec ID /bin/true, the same way",
    "zoned-exec-userns": "zoned exec, the same way, into a zone with a user namespace "
                         "(vs runc-userns)",
    "runc-exec-userns": "runc exec, the same way, into its container with a user namespace "
                        "(vs runc-userns)",
    "ref-python": "reference, no container: venv `python -c pass` (interpreter start-up)",
    "ref-zoned-version": "reference, no container: `zoned --version` (CLI start-up floor)",
    "zoned-cli-before": "zoned-cli as of --before-ref (python -S shim, as then)",
    "zoned-api-before": "zoned-api as of --before-ref (in a warm worker process)",
    "zoned-api-worker": "zoned-api of this checkout in a warm worker process (vs -before)",
}

API_WORKER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import zoned
root = sys.argv[2]
for line in sys.stdin:
    t = time.perf_counter()
    r = zoned.run(["/bin/true"], root=root, name=line.strip())
    dt = time.perf_counter() - t
    print(dt if r.returncode == 0 else "exit %d %r" % (r.returncode, r.stderr), flush=True)
"""


class ApiWorker:
    """zoned.run() of the zoned at `tree`, in a process of its own (started on first use,
    warmed up there by the warm-up round)."""

    def __init__(self, tree: Path, python: str):
        self.tree, self.python = tree, python
        self.proc: subprocess.Popen | None = None

    def run(self, root: str, name: str) -> float:
        if self.proc is None:
            self.proc = subprocess.Popen([self.python, "-c", API_WORKER, str(self.tree), root],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        try:
            return float(out)
        except ValueError:
            raise Failed(f"zoned.run ({self.tree}): {out or 'worker died'}") from None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class BeforeTree:
    """zoned as it was at a git ref: a temporary worktree, this checkout's built extension
    modules and libexec helpers copied in (their sources may be older; the helpers'
    protocol is older code's too where it is unchanged; zoned._native and zoned-spawn, whose
    init plan is the Python's, are REF's own, built in the tree, where its csrc/ differs), bytecode compiled (and packed, where
    REF has zoned.modulepack, with its writer of then), and an entry
    script like `make setup`'s shim (python -S, the worktree and the venv's site-packages
    on sys.path, then console() where REF has it, else sys.exit(main())), as the shim of
    that time was."""

    def __init__(self, ref: str, python: str):
        self.dir = Path(tempfile.mkdtemp(prefix="zoned-bench-before-"))
        self.tree = self.dir / "tree"
        self.worker = self.current = None
        try:  # a tree that could not be built (a bad ref, its pack) leaves nothing behind
            self._build(ref, python)
        except BaseException:
            self.close()
            raise

    def _build(self, ref: str, python: str) -> None:
        subprocess.run(["git", "-C", str(C.REPO), "worktree", "add", "-q", "--detach",
                        str(self.tree), ref], check=True)
        for so in (C.REPO / "zoned").glob("_*.so"):
            shutil.copy2(so, self.tree / "zoned" / so.name)
        csrc_differs = subprocess.run(["git", "-C", str(C.REPO), "diff", "--quiet", ref, "--",
                                       "csrc"]).returncode != 0
        if csrc_differs:
            # REF's C differs (zoned._native's may: a wrapper's signature): REF's own
            # extension, built there (~1 s; csrc/build.py names what it is built from)
            (self.tree / "zoned" / "_native.abi3.so").unlink(missing_ok=True)
            subprocess.run([python, "csrc/build.py"], cwd=self.tree, check=True,
                           capture_output=True)
        shutil.copytree(C.REPO / "zoned" / "libexec", self.tree / "zoned" / "libexec",
                        dirs_exist_ok=True)
        if csrc_differs:  # REF's zoned-spawn too: the init's plan format is REF's
            headers = C.REPO / ".stamps" / "musl-kernel-headers"
            subprocess.run(["musl-gcc", "-static", "-Os", "-s", "-isystem", str(headers),
                            "-Icsrc", "-o", "zoned/libexec/zoned-spawn", "csrc/spawn.c"],
                           cwd=self.tree, check=True, capture_output=True)
        subprocess.run([python, "-m", "compileall", "-q", str(self.tree / "zoned")],
                       check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
        if (self.tree / "zoned" / "modulepack.py").exists():  # as `make bytecode` does
            # (the writer is zoned.modulepack_write since e26f305, modulepack's before)
            writer = "modulepack_write" if (self.tree / "zoned" / "modulepack_write.py"
                                            ).exists() else "modulepack"
            subprocess.run([python, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            f"from zoned import {writer}; {writer}.write(sys.argv[2])",
                            str(self.tree), str(self.tree / "zoned")], check=True)
        self.cli = self.dir / "zoned"
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                  "['purelib'])"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        # the shim's entry as of REF: console() (exit without the interpreter's teardown)
        # where REF has it, else main()
        has_console = "def console(" in (self.tree / "zoned/cli/__init__.py").read_text()
        entry = ("from zoned.cli import console\nconsole()\n" if has_console
                 else "from zoned.cli import main\nsys.exit(main())\n")
        self.cli.write_text(f"#!{python} -S\nimport sys\n"
                            f"sys.path[0:1] = [{str(self.tree)!r}, {purelib!r}]\n" + entry)
        self.cli.chmod(0o755)
        self.worker = ApiWorker(self.tree, python)  # zoned-api-before
        self.current = ApiWorker(C.REPO, python)    # zoned-api-worker

    def close(self) -> None:
        for worker in (self.worker, self.current):
            if worker is not None:
                worker.close()
        if self.tree.exists():
            subprocess.run(["git", "-C", str(C.REPO), "worktree", "remove", "--force",
                            str(self.tree)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Failed(Exception):
    pass


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise Failed(f"{what}: exit {proc.returncode}: {err[:500]}")


def _timed(cmd: list[str], what: str) -> float:
    """Seconds one run of cmd took (_sp); Failed if it did not exit 0."""
    t = time.perf_counter()
    p = _sp(cmd)
    dt = time.perf_counter() - t
    _check(p, what)
    return dt


_ERR = tempfile.TemporaryFile()  # stderr of every command: a file, never a pipe (see _sp)


def _sp(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a command with stdio on /dev/null and stderr appended to a temp file.

    Not a pipe: `create` hands its stdio to the container's init, which keeps it open
    until it exits, so reading a stderr pipe to EOF would wait for the container."""
    start = _ERR.seek(0, os.SEEK_END)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=_ERR)
    if p.returncode:
        _ERR.seek(start)
        p.stderr = _ERR.read()
    return p


class Bench:
    def __init__(self, a):
        self.a = a
        self.tok = os.urandom(2).hex()
        self.prefix = f"bench-s{self.tok}-"
        self.zroot = f"/run/zoned-bench-startup-{self.tok}"
        self.rroot = f"/run/runc-bench-{self.tok}"
        self.tmp = Path(tempfile.mkdtemp(prefix="zoned-bench-startup-"))
        self.bundle: Path | None = None
        self.userns_bundle: Path | None = None
        self.n = 0
        self.Z = [a.zoned, "--root", self.zroot]
        self.R = [a.runc, "--root", self.rroot]
        self.before: BeforeTree | None = None
        self.created: dict[str, str] = {}  # the -state variants' containers

    def name(self, v: str) -> str:
        self.n += 1
        return f"{self.prefix}{v}-{self.n}"

    def setup(self) -> None:
        if self.a.before_ref:
            self.before = BeforeTree(self.a.before_ref, str(Path(self.a.zoned).parent / "python"))
        self.bundle = C.make_bundle(["/bin/true"], readonly=self.a.readonly_root,
                                    zoned_cli=self.a.zoned, spec_from=self.a.spec,
                                    runc=self.a.runc, prefix="zoned-bench-startup-bundle-")

    # -- one timed run per variant: returns seconds -------------------------------------------
    def zoned_cli(self) -> float:
        cmd = self.Z + ["run", "--rm", "--name", self.name("cli"), "--", "/bin/true"]
        return _timed(cmd, "zoned run")

    def zoned_api(self) -> float:
        import zoned

        name = self.name("api")
        t = time.perf_counter()
        r = zoned.run(["/bin/true"], root=self.zroot, name=name)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise Failed(f"zoned.run: exit {r.returncode}: {r.stderr!r}")
        return dt

    def zoned_api_pool(self) -> float:
        """Pool.run of /bin/true: the latency a caller sees when a zone was made ahead.
        Then, untimed, until the maker has removed it and made the next one: left to run
        on, that work landed in whichever variant came next (the API after the pool took
        10.5 ms against ~7 after the others: bench/README, finding 24)."""
        if getattr(self, "pool", None) is None:
            import zoned

            self.pool = zoned.Pool(root=self.zroot, size=1)
        t = time.perf_counter()
        r = self.pool.run(["/bin/true"])
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise Failed(f"Pool.run: exit {r.returncode}: {r.stderr!r}")
        if not self.pool.wait_ready(30):
            raise Failed("Pool: no zone made again within 30 s")
        deadline = time.monotonic() + 30  # and the maker's removal of this run's zone
        while os.path.exists(os.path.join(self.zroot, r.name)):
            if time.monotonic() > deadline:
                raise Failed(f"Pool: zone {r.name} not removed within 30 s")
            time.sleep(0.001)
        return dt

    def runc_run(self) -> float:
        cmd = self.R + ["run", "--bundle", str(self.bundle), self.name("runc")]
        return _timed(cmd, "runc run")

    def zoned_run_bundle(self) -> float:
        cmd = self.Z + ["run", "--bundle", str(self.bundle), self.name("bundle")]
        return _timed(cmd, "zoned run --bundle")

    def _userns(self) -> Path:
        """A bundle beside the first, on its rootfs, whose config adds a user namespace
        (made at first use). Both bundles open to others (0755): the namespace's root,
        host uid 200000, must reach the rootfs, as with runc."""
        if self.userns_bundle is None:
            b = Path(str(self.bundle) + "-userns")
            b.mkdir(mode=0o755)
            self.userns_bundle = b
            for d in (b, self.bundle):
                os.chmod(d, 0o755)
            cfg = json.loads((self.bundle / "config.json").read_text())
            cfg["root"]["path"] = str(self.bundle / "rootfs")
            cfg["linux"]["namespaces"].append({"type": "user"})
            maps = [{"containerID": 0, "hostID": 200000, "size": 65536}]
            cfg["linux"].update(uidMappings=maps, gidMappings=maps)
            (b / "config.json").write_text(json.dumps(cfg))
        return self.userns_bundle

    def zoned_run_bundle_userns(self) -> float:
        cmd = self.Z + ["run", "--bundle", str(self._userns()), self.name("userns")]
        return _timed(cmd, "zoned run --bundle (user namespace)")

    def runc_userns(self) -> float:
        cmd = self.R + ["run", "--bundle", str(self._userns()), self.name("runc-userns")]
        return _timed(cmd, "runc run (user namespace)")

    def zoned_cli_rootfs(self) -> float:
        cmd = self.Z + ["run", "--rm", "--name", self.name("rootfs"), "--rootfs",
                        str(self.bundle / "rootfs"), "--", "/bin/true"]
        return _timed(cmd, "zoned run --rootfs")

    def _oci(self, base: list[str], tag: str) -> float:
        name = self.name(tag)
        pidfile = self.tmp / f"{name}.pid"
        t = time.perf_counter()
        p = _sp(base + ["create", "--bundle", str(self.bundle), "--pid-file", str(pidfile),
                        name])
        _check(p, f"{tag} create")
        pid = int(pidfile.read_text())
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = None
        try:
            p = _sp(base + ["start", name])
            _check(p, f"{tag} start")
            if fd is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(30_000):
                    raise Failed(f"{tag}: container did not exit within 30 s")
        finally:
            if fd is not None:
                os.close(fd)
        p = _sp(base + ["delete", name])
        dt = time.perf_counter() - t
        _check(p, f"{tag} delete")
        pidfile.unlink(missing_ok=True)
        return dt

    def zoned_oci(self) -> float:
        return self._oci(self.Z, "zoned-oci")

    def runc_oci(self) -> float:
        return self._oci(self.R, "runc-oci")

    def _state(self, base: list[str], tag: str) -> float:
        """`state` of the container created for it on first use (kept for the rounds)."""
        made = self.created.get(tag)
        if made is None:
            made = self.created[tag] = self.name(tag)
            _check(_sp(base + ["create", "--bundle", str(self.bundle), made]), f"{tag} create")
        return _timed(base + ["state", made], f"{tag}")

    def _exec(self, base: list[str], tag: str, userns: bool = False) -> float:
        """`exec ID /bin/true` in a container kept running for the rounds (a config beside
        the bundle's: `sleep`; userns: the userns bundle's), after a 0.1 s pause: the
        kernel's cgroup-move lock is then quiet, as it is between the execs of health
        checks."""
        made = self.created.get(tag)
        if made is None:
            made = self.created[tag] = self.name(tag)
            spec = self.tmp / f"{tag}-bundle"
            spec.mkdir()
            source = self._userns() if userns else self.bundle
            cfg = json.loads((source / "config.json").read_text())
            cfg["process"]["args"] = ["sleep", "1000000"]
            cfg["root"]["path"] = str(self.bundle / "rootfs")
            (spec / "config.json").write_text(json.dumps(cfg))
            _check(_sp(base + ["create", "--bundle", str(spec), made]), f"{tag} create")
            _check(_sp(base + ["start", made]), f"{tag} start")
        time.sleep(0.1)
        return _timed(base + ["exec", made, "/bin/true"], tag)

    def zoned_exec(self) -> float:
        return self._exec(self.Z, "zoned-exec")

    def runc_exec(self) -> float:
        return self._exec(self.R, "runc-exec")

    def zoned_exec_userns(self) -> float:
        return self._exec(self.Z, "zoned-exec-userns", userns=True)

    def runc_exec_userns(self) -> float:
        return self._exec(self.R, "runc-exec-userns", userns=True)

    def zoned_state(self) -> float:
        return self._state(self.Z, "zoned-state")

    def runc_state(self) -> float:
        return self._state(self.R, "runc-state")

    def ref_python(self) -> float:
        cmd = [str(Path(self.a.zoned).parent / "python"), "-c", "pass"]
        return _timed(cmd, "python -c pass")

    def ref_zoned_version(self) -> float:
        return _timed([self.a.zoned, "--version"], "zoned --version")

    def zoned_cli_before(self) -> float:
        cmd = [str(self.before.cli), "--root", self.zroot, "run", "--rm", "--name",
               self.name("clib"), "--", "/bin/true"]
        return _timed(cmd, "zoned run (before)")

    def zoned_api_before(self) -> float:
        return self.before.worker.run(self.zroot, self.name("apib"))

    def zoned_api_worker(self) -> float:
        return self.before.current.run(self.zroot, self.name("apiw"))

    def fn(self, v: str):
        if v == "zoned-cli-before":
            return self.zoned_cli_before
        if v == "zoned-api-before":
            return self.zoned_api_before
        if v == "zoned-api-worker":
            return self.zoned_api_worker
        return {"ref-python": self.ref_python, "ref-zoned-version": self.ref_zoned_version,"zoned-cli": self.zoned_cli, "zoned-api": self.zoned_api,
                "zoned-api-pool": self.zoned_api_pool,
                "runc": self.runc_run, "zoned-run-bundle": self.zoned_run_bundle,
                "zoned-run-bundle-userns": self.zoned_run_bundle_userns,
                "runc-userns": self.runc_userns,
                "zoned-cli-rootfs": self.zoned_cli_rootfs,
                "zoned-oci": self.zoned_oci, "runc-oci": self.runc_oci,
                "zoned-state": self.zoned_state, "runc-state": self.runc_state,
                "zoned-exec": self.zoned_exec, "runc-exec": self.runc_exec,
                "zoned-exec-userns": self.zoned_exec_userns,
                "runc-exec-userns": self.runc_exec_userns}[v]

    # -- clean-up ---------------------------------------------------------------------------------
    def cleanup(self) -> dict:
        """Remove whatever is left (failed runs), then report what could not be removed."""
        if self.before is not None:
            self.before.close()
        if getattr(self, "pool", None) is not None:
            self.pool.close()
        C.remove_zones([self.a.zoned], self.zroot)
        if os.path.isdir(self.rroot):
            out = subprocess.run(self.R + ["list", "-q"], capture_output=True, text=True).stdout
            for cid in out.split():
                _sp(self.R + ["delete", "-f", cid])
        for b in (self.bundle, self.userns_bundle):
            if b is not None:
                shutil.rmtree(b, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        time.sleep(0.2)
        left = {
            "zoned_state": C.state_entries(self.zroot),
            "runc_state": C.state_entries(self.rroot),
            "cgroup_dirs": C.cgroup_dirs_named(self.prefix),
            "mounts": C.mounts_containing(self.zroot) + C.mounts_containing(self.rroot)
            + (C.mounts_containing(str(self.bundle)) if self.bundle else []),
        }
        C.remove_root(self.zroot)  # and its own cgroup parent, /zoned-<hash>
        C.rmdir_quiet(self.rroot)
        left["ok"] = not any(left.values())
        return left


def run_profile(b: Bench, k: int) -> dict:
    """cProfile over k zoned.run() calls: the top functions by cumulative and own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t = time.perf_counter()
    for _ in range(k):
        prof.enable()
        b.zoned_api()
        prof.disable()
    wall = time.perf_counter() - t
    st = pstats.Stats(prof)

    def rows(key: int, limit: int) -> list[dict]:
        items = sorted(st.stats.items(), key=lambda kv: kv[1][key], reverse=True)[:limit]
        out = []
        for (fname, line, func), (_cc, nc, tt, ct, _) in items:
            where = fname.replace(str(C.REPO) + "/", "")
            out.append({"function": f"{where}:{line}({func})"[-70:], "ncalls": nc,
                        "tottime_ms_per_call": tt * 1000 / k,
                        "cumtime_ms_per_call": ct * 1000 / k})
        return out

    return {"calls": k, "ms_per_call": wall * 1000 / k, "top_cumtime": rows(3, 25),
            "top_tottime": rows(2, 15)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Time `run /bin/true` (create+start+wait+delete): zoned CLI, zoned API, "
                    "runc and zoned's OCI mode, interleaved round-robin.",
        epilog="Results: a table on stdout and JSON in bench/results/startup.json.")
    p.add_argument("--runs", type=int, default=None,
                   help="timed rounds (default 30; at least 30 unless --quick)")
    p.add_argument("--quick", action="store_true",
                   help="allow fewer than 30 runs (default then 5): a smoke test, not a result")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--zoned", default=C.DEFAULT_ZONED, help="zoned CLI (default: the venv's)")
    p.add_argument("--runc", default=shutil.which("runc") or "runc", help="runc binary")
    p.add_argument("--spec", choices=["zoned", "runc"], default="zoned",
                   help="where the bundle's config.json comes from (default zoned: "
                        "`zoned spec`; `runc spec` output does not run under zoned, see README)")
    p.add_argument("--readonly-root", action="store_true",
                   help="set root.readonly in the bundle (runc spec's default)")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="after the rounds, profile K zoned.run() calls with cProfile")
    p.add_argument("--out", help="JSON path (default bench/results/startup.json; with "
                   "--quick, bench/results/startup-quick.json, which git ignores: a smoke "
                   "test never replaces the committed result)")
    p.add_argument("--before-ref", metavar="REF",
                   help="also run zoned-cli-before and zoned-api-before: zoned as of git "
                   "REF, interleaved with the rest (a before/after comparison)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (containers with cgroups and namespaces)")
    if a.runs is None:
        a.runs = 5 if a.quick else 30
    if a.runs < 1 or (a.runs < 30 and not a.quick):
        p.error("--runs must be at least 30 (use --quick for a smoke test)")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if a.before_ref:
        variants += [v for v in BEFORE_VARIANTS if v not in variants]
    bad = [v for v in variants if v not in VARIANTS + (BEFORE_VARIANTS if a.before_ref else [])]
    if bad:
        p.error(f"unknown variants {bad}")

    env = C.environment(runc=a.runc, zoned_cli=a.zoned)
    b = Bench(a)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    failures: dict[str, list[str]] = {v: [] for v in variants}
    disabled: dict[str, str] = {}
    profile = None
    t_start = time.monotonic()
    try:
        b.setup()
        print(f"bundle {b.bundle}, zoned root {b.zroot}, runc root {b.rroot}", file=sys.stderr)
        for v in variants:  # warm-up; a variant that cannot run at all is reported, not timed
            try:
                b.fn(v)()
            except Failed as e:
                disabled[v] = str(e)
                print(f"warm-up: {v} FAILED: {e}", file=sys.stderr)
        active = [v for v in variants if v not in disabled]
        order = random.Random(SEED)
        for r in range(a.runs):
            # A new order each round: with a rotated fixed order each variant always ran
            # after the same one, and a run right after a container pays for that one's
            # teardown (its net namespace is cleaned up by a kworker after it exits), so
            # the variant after a no-container reference came out ~1.5 ms faster.
            for v in order.sample(active, len(active)):
                try:
                    samples[v].append(b.fn(v)())
                except Failed as e:
                    failures[v].append(str(e))
            if (r + 1) % 10 == 0:
                print(f"  round {r + 1}/{a.runs}", file=sys.stderr)
        if a.profile:
            profile = run_profile(b, a.profile)
    finally:
        leftovers = b.cleanup()
    elapsed = time.monotonic() - t_start

    stats = {v: C.summary([s * 1000 for s in samples[v]]) for v in variants}
    base = stats.get("runc", {}).get("median")
    rows = []
    for v in variants:
        s = stats[v]
        if v in disabled:
            rows.append([v, "-", "-", "-", "-", "-", "FAILED: " + disabled[v][:70]])
            continue
        vs = stats.get(BASES[v], {}).get("median") if v in BASES else base
        ratio = f"{s['median'] / vs:.2f}x" if vs and s.get("n") else "-"
        fail = f" [{len(failures[v])} failed]" if failures[v] else ""
        rows.append([v, f"{s['median']:.1f}", f"{s['p95']:.1f}", f"{s['min']:.1f}",
                     f"{s['mean']:.1f}", ratio, NOTES[v] + fail])
    header = ["variant", "median ms", "p95 ms", "min ms", "mean ms", "vs runc", "notes"]

    targets = {}
    if base:
        cli, api = stats.get("zoned-cli", {}).get("median"), stats.get("zoned-api", {}).get("median")
        if cli is not None:
            targets["zoned_cli_le_runc"] = {"target_ms": base, "median_ms": cli,
                                            "met": cli <= base}
        if api is not None:
            targets["zoned_api_le_quarter_runc"] = {"target_ms": base / 4, "median_ms": api,
                                                    "met": api <= base / 4}
        pooled = stats.get("zoned-api-pool", {}).get("median")
        if pooled is not None:  # latency only: the set-up's CPU is spent all the same
            targets["zoned_api_pool_le_quarter_runc"] = {"target_ms": base / 4,
                                                         "median_ms": pooled,
                                                         "met": pooled <= base / 4}
    result = {
        "benchmark": "startup",
        "description": "run /bin/true to completion (create, start, wait, delete), ms",
        "environment": env,
        "parameters": {"runs": a.runs, "variants": variants, "spec": a.spec,
                       "before_ref": a.before_ref,
                       "readonly_root": a.readonly_root, "interleaved":
                       f"each round in a new random order (seed {SEED})", "warmup_runs": 1},
        "stats_ms": stats,
        "samples_ms": {v: [round(s * 1000, 3) for s in samples[v]] for v in variants},
        "notes": NOTES,
        "failures": {v: f for v, f in failures.items() if f},
        "disabled": disabled,
        "targets": targets,
        "leftovers": leftovers,
        "profile": profile,
        "elapsed_s": round(elapsed, 1),
    }
    out = C.write_json("startup", result, a.out or (str(QUICK_OUT) if a.quick else None))

    print(f"\nstartup: /bin/true to completion, {a.runs} interleaved rounds "
          f"({env['date']}, kernel {env['kernel']}, cgroup {env['cgroup_mode']}, "
          f"{env['cpu_count']} CPUs, Python {env['python']}, {env.get('runc')})")
    print(C.table(rows, header))
    for k, t in targets.items():
        print(f"target {k}: median {t['median_ms']:.1f} ms vs target {t['target_ms']:.1f} ms"
              f" -> {'MET' if t['met'] else 'NOT MET'}")
    if profile:
        print(f"\nprofile of {profile['calls']} zoned.run() calls: "
              f"{profile['ms_per_call']:.1f} ms per call under cProfile")
        prow = [[r["function"], f"{r['tottime_ms_per_call']:.2f}",
                 f"{r['cumtime_ms_per_call']:.2f}", r["ncalls"]] for r in profile["top_cumtime"]]
        print(C.table(prow, ["function (by cumulative time)", "own ms/run", "cum ms/run",
                             "calls"], left_last=False))
    if not leftovers["ok"]:
        print(f"LEFTOVERS: {leftovers}")
    else:
        print("leftovers: none (state dirs, cgroup dirs, mounts)")
    print(f"JSON: {out}")
    return 0 if leftovers["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
