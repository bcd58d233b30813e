"""The `zoned run` start path made cheaper (issue 18) behaves exactly as before.

- the `zoned` command is a `python -S` shim (Makefile) that still runs this checkout;
- `zoned run`'s argv is parsed without argparse (zoned.cli.fastparse): the same Namespace
  as argparse's for every form it takes, argparse (and its errors) for every other;
- a container's init sets its capabilities through zoned._native (zoned.child.caps), not
  python-prctl: the sets a zone gets are the configured ones, for root and another user;
- the cgroup move's grace period is paid ahead by moving zoned into its own cgroup
  (zoned.cgroups.prime): that names our own cgroup, moves nothing, and is skipped where no
  mount shows our cgroup;
- a zone removed when it exits (--rm) has a volatile overlay (no sync of the upper's file
  system at its end); any other keeps a durable one;
- a whole `zoned run` loads none of the stdlib modules that cost milliseconds to import.
No timed asserts: the times are bench/startup.py's.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoned

REPO = Path(__file__).resolve().parent.parent
ZONED = Path(sys.executable).parent / "zoned"


# -- the shim -----------------------------------------------------------------------------
def test_zoned_command_is_a_no_site_shim_running_this_checkout():
    text = ZONED.read_text()
    assert text.splitlines()[0] == f"#!{sys.executable} -S"
    assert repr(str(REPO)) in text  # the editable checkout, not a copy
    probe = subprocess.run([str(ZONED), "--version"], capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.startswith("zoned version")
    # python -S plus the shim's paths: zoned from this checkout, cffi from the venv
    code = ("import sys; exec(open(sys.argv[1]).read().split('from zoned.cli')[0]); "
            "import zoned, _cffi_backend; print(sys.flags.no_site, zoned.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ZONED)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", str(REPO / "zoned" / "__init__.py")]


# -- the lean parser ----------------------------------------------------------------------
AGREE = [
    ["run", "--rm", "--", "/bin/true"],
    ["--root", "/r", "run", "--rm", "--name", "n1", "--", "true", "--rm", "-e", "X"],
    ["--root=/r", "--data-root", "/d", "--images", "/i", "--debug", "run", "busybox"],
    ["run", "busybox", "sh", "-c", "echo $X"],
    ["run", "-d", "--name", "web", "-p", "8080:80", "-v", "data:/data", "busybox", "httpd"],
    ["run", "-e", "A=1", "--env", "B=2", "--env-file", "/f", "-m", "64m", "--cpus", "0.5",
     "--pids-limit", "64", "--cpu-shares", "512", "--", "id"],
    ["run", "--image", "busybox", "--hostname", "h", "-w", "/tmp", "-u", "1000:1000",
     "--read-only", "--init", "--privileged", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL",
     "--tmpfs", "/run:size=1m", "--mount", "type=tmpfs,target=/x", "-l", "a=b",
     "--label=c=d", "--stop-signal", "HUP", "--stop-timeout", "3", "--", "ls"],
    ["run", "--rootfs", "/some/dir", "--network", "n", "--net", "m", "--ip", "10.1.2.3",
     "--mac", "02:00:00:00:00:01", "--dns", "1.1.1.1", "--add-host", "a:1.2.3.4", "--", "x"],
    ["run", "--backend", "vm", "--accel", "tcg", "--memory-swap", "1g", "--", "true"],
    ["run", "-b", "/bundle", "--pid-file", "/p", "--console-socket", "/s", "--no-pivot",
     "--no-new-keyring", "--preserve-fds", "2", "--keep", "cid"],
    ["run", "--restart", "always", "--entrypoint", "", "--cpuset-cpus", "0", "busybox"],
    ["run", "-i", "-t", "--detach-keys", "", "busybox", "sh"],
    ["run", "-d", "-t", "--detach-keys", "ctrl-a,x", "--name", "dt", "busybox", "sh"],
    ["run", "--rm", "-i", "-t", "--interactive", "--tty", "--detach", "--", "sh"],
    ["--log", "/l", "--log-format", "json", "--systemd-cgroup", "run", "--", "true"],
    ["run"],
    ["--version"], ["-v"], ["--root", "/r", "--version"],
    ["run", "--pids-limit=-1", "--name=a", "--", "true"],
    # runc's lifecycle commands, as podman (conmon) and containerd's shim call them
    ["--root", "/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup", "create",
     "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "cid"],
    ["create", "-b", "/b", "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "c"],
    ["create", "c", "--backend", "vm", "--accel", "tcg"], ["create", "c"],
    ["start", "cid"], ["--root", "/r", "state", "cid"], ["delete", "cid"],
    ["delete", "--force", "cid"], ["delete", "cid", "-f"], ["kill", "cid"],
    ["kill", "cid", "TERM"], ["kill", "--all", "cid", "9"], ["kill", "-s", "HUP", "-a", "c"],
    ["exec", "--process", "/p.json", "--detach", "--pid-file", "/pf", "cid"],
    ["exec", "--console-socket", "/s", "--preserve-fds", "1", "--cap", "CAP_KILL", "-g",
     "10", "--no-new-privs", "-p", "/p.json", "cid"],
    ["exec", "-i", "-t", "-e", "A=1", "--env", "B=2", "-u", "1000", "-w", "/tmp", "web",
     "ls", "-l", "-it"], ["exec", "--cwd", "/", "web", "sh", "-c", "echo -e x"],
    # zoned ps
    ["ps"], ["ps", "-a"], ["--root", "/r", "ps", "--all", "-q"], ["ps", "--quiet", "web"],
    ["ps", "--format", "json"], ["ps", "--format={{.Names}} {{.Status}}", "-a"],
    ["ps", "web", "--all"],
]
FALLBACK = [  # forms the lean parser leaves to argparse: the answer must still be argparse's
    ["run", "-it", "--", "sh"],            # clustered short flags
    ["run", "--na", "x", "--", "true"],    # an abbreviation
    ["run", "--pids-limit", "-1", "--", "true"],  # a value starting with "-"
    ["run", "--rm", "-", "x"],
    ["run", "--rm", "-x y"],               # argparse: a positional (it has a space)
    ["kill", "cid", "-sHUP"], ["delete", "-f", "--", "c"], ["create", "--bund", "/b", "c"],
    ["exec", "web", "--", "ls"], ["exec", "-it", "web", "sh"],
    ["ps", "-aq"], ["ps", "--form", "json"],
]
ERRORS = [  # argparse's errors, exit 125, one line naming the flag
    (["run", "--pids-limit", "many", "--", "true"], "--pids-limit"),
    (["run", "--backend", "qemu", "--", "true"], "--backend"),
    (["run", "--image", "a", "--rootfs", "/b", "--", "true"], "--rootfs"),
    (["run", "--name"], "--name"),
    (["run", "--bogus", "--", "true"], "--bogus"),
    (["--log-format", "xml", "run", "--", "true"], "--log-format"),
    (["run", "--rm=1", "--", "true"], "--rm"),
    (["create", "--preserve-fds", "x", "c"], "--preserve-fds"),
    (["create", "--backend", "qemu", "c"], "--backend"),
    (["state"], "id"), (["start", "a", "b"], "b"), (["kill", "a", "b", "c"], "c"),
    (["ps", "a", "b"], "b"), (["ps", "--bogus"], "--bogus"), (["ps", "--format", "-x"],
                                                             "--format"),
]


def argparse_namespace(argv: list[str]) -> dict:
    from zoned.cli.parser import build_parser, command_of

    return vars(build_parser(command_of(argv), argv).parse_args(argv))


@pytest.mark.unprivileged
@pytest.mark.parametrize("argv", AGREE, ids=" ".join)
def test_lean_parser_gives_argparses_namespace(argv):
    from zoned.cli import fastparse

    fast = fastparse.parse(argv)
    assert fast is not None, argv
    assert vars(fast) == argparse_namespace(argv)


@pytest.mark.unprivileged
@pytest.mark.parametrize("argv", FALLBACK, ids=" ".join)
def test_lean_parser_leaves_unusual_forms_to_argparse(argv):
    from zoned.cli import fastparse

    assert fastparse.parse(argv) is None
    argparse_namespace(argv)  # and argparse takes them


@pytest.mark.unprivileged
@pytest.mark.parametrize("argv,flag", ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else v)
def test_bad_run_flags_still_get_argparses_one_line_error(argv, flag):
    from zoned.cli import fastparse

    assert fastparse.parse(argv) is None
    p = subprocess.run([str(ZONED), *argv], capture_output=True, text=True, timeout=30)
    assert p.returncode == 125
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("zoned: ") and flag in p.stderr


@pytest.mark.unprivileged
def test_lean_parser_knows_every_run_flag_and_default():
    """A flag added to parser.py's `run` must be added to fastparse too (else its dest
    would be missing from the Namespace): the two tables must name the same flags."""
    from zoned.cli import fastparse
    from zoned.cli.parser import build_parser

    p = build_parser("run", ["run"])
    sub = next(a for a in p._actions if a.dest == "cmd")  # noqa: SLF001 - argparse's own
    run = sub.choices["run"]
    flags = {o for a in run._actions for o in a.option_strings} - {"-h", "--help"}
    fast = set(fastparse.RUN_TRUE) | set(fastparse.RUN_VALUE) | set(fastparse.RUN_APPEND)
    assert flags == fast
    glob = {o for a in p._actions for o in a.option_strings} - {"-h", "--help"}
    assert glob == set(fastparse.GLOBAL_VALUE) | set(fastparse.GLOBAL_TRUE)
    assert vars(fastparse.parse(["run"])) == argparse_namespace(["run"])
    for name, cmd in fastparse.LEAN.items():  # the lifecycle commands' and ps's too
        p = build_parser(name, [name])
        sub = next(a for a in p._actions if a.dest == "cmd")  # noqa: SLF001
        actions = sub.choices[name]._actions
        flags = {o for a in actions for o in a.option_strings} - {"-h", "--help"}
        assert flags == set(cmd.true) | set(cmd.value) | set(cmd.append), name
        positionals = [a.dest for a in actions if not a.option_strings]
        rest = [cmd.remainder] if cmd.remainder else []
        assert positionals == [*cmd.positionals, *cmd.optional, *rest], name


def test_run_through_the_lean_parser_and_through_argparse_alike(cli):
    """The same zone from `-e A=1 -e B=2 --name N` (lean) and `-eA=1 ...` (argparse)."""
    lean = cli("run", "--rm", "-e", "A=1", "--env", "B=2", "--hostname", "h1", "--",
               "sh", "-c", "echo $A $B $(hostname)")
    slow = cli("run", "--rm", "-eA=1", "--env", "B=2", "--hostname", "h1", "--",
               "sh", "-c", "echo $A $B $(hostname)")
    assert lean.returncode == slow.returncode == 0, (lean.stderr, slow.stderr)
    assert lean.stdout == slow.stdout == "1 2 h1\n"


# What each costs a `zoned run` on this host if loaded (python -X importtime): enum, re,
# json (re with it), functools and collections ~2-4 ms each; zoned uses C modules or small
# code of its own instead (zoned.linux.jsonc, names, once; zoned.strconst; _signal).
NOT_ON_THE_RUN_PATH = {"enum", "re", "json", "functools", "collections", "contextlib",
                       "signal", "array", "typing", "dataclasses", "argparse", "subprocess",
                       "threading", "socket", "selectors", "tempfile", "shutil",
                       "__future__"}  # (the module pack compiles the statement as its flag)
# `zoned run` builds its config with zoned.runconfig: the API's classes (~0.5 ms) stay out
NOT_ON_RUN = NOT_ON_THE_RUN_PATH | {"zoned.api", "zoned.backends.zone"}


@pytest.mark.parametrize("steps", [
    [["run", "--rm", "--", "true"]],
    [["run", "-d", "--name", "zs-detached", "--", "sleep", "60"]],
    [["run", "-d", "--name", "zs-exec", "--", "sleep", "60"], ["exec", "zs-exec", "true"]],
], ids=["run --rm", "run -d", "exec"])
def test_zoned_run_loads_none_of_the_costly_stdlib_modules(zoned_root, busybox, steps):
    """A whole `zoned run --rm` (parse, create, start, wait, delete), a `run -d` and an
    `exec`, through the shim's own interpreter set-up: none of those modules is loaded
    by the end, so none crept back (nor, for a `run`, the API's)."""
    shim = ZONED.read_text().split("from zoned.cli")[0]
    unwanted = NOT_ON_THE_RUN_PATH if steps[-1][0] == "exec" else NOT_ON_RUN
    calls = "".join(f"code = code or main(['--root', {zoned_root!r}, *{step!r}])\n"
                    for step in steps)
    code = (shim + "from zoned.cli import main\ncode = 0\n" + calls +
            f"print(code, sorted(set(sys.modules) & {unwanted!r}))\n")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "0 []", p.stdout


def test_zoned_run_imports_nothing_between_forking_the_init_and_its_cgroup(zoned_root,
                                                                           busybox):
    """Between the init's fork and its cgroup (step "fork" to "cgroup") the creator works
    alongside the init, on pages they share: a module imported there costs its copies too
    (cgroup.load_modules() loads the device rules' before the fork). None is imported
    there; the run itself works."""
    shim = ZONED.read_text().split("from zoned.cli")[0]
    code = (shim + "import zoned.testhooks as th\n"
            "seen = {}\n"
            "th.mark = lambda step: seen.setdefault(step, set(sys.modules))\n"
            "from zoned.cli import main\n"
            f"code = main(['--root', {zoned_root!r}, 'run', '--rm', '--', 'true'])\n"
            "print(code, sorted(seen['cgroup'] - seen['fork']))\n")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "0 []", p.stdout


def _bundle(tmp_path: Path) -> Path:
    """busybox as an OCI bundle whose process is /bin/true, without a terminal."""
    from zoned.images.store import ImageStore

    bundle = tmp_path / "b"
    ImageStore().export_bundle("busybox", bundle)
    subprocess.run([str(ZONED), "spec"], cwd=bundle, check=True)  # writes config.json
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"].update(args=["/bin/true"], terminal=False)
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


@pytest.mark.parametrize("command", ["run", "create", "exec"])
def test_run_create_and_exec_load_their_modules_in_one_preload(zoned_root, busybox, tmp_path,
                                                               command):
    """`zoned run`, the OCI `create` and `exec` load what they import from there on in
    one go (zoned.cli.common.preload_modules, zoned.modulepack.preload): after the
    preload, the import system itself loads none of zoned's Python modules, so the lists
    still cover them. (What a preload may not pull in, the test above checks.)"""
    from zoned.modulepack import pack_path

    if not Path(pack_path(str(REPO / "zoned"))).exists():
        pytest.skip("no module pack: `make bytecode` writes it")
    z = [str(ZONED), "--root", zoned_root]
    if command == "run":
        argv, first = ["run", "--rm", "--", "true"], "zoned.runconfig"
    elif command == "create":
        argv, first = ["create", "--bundle", str(_bundle(tmp_path)), "zs-pre"], "zoned.linux.jsonc"
    else:
        subprocess.run(z + ["run", "-d", "--name", "zs-pre", "--", "sleep", "60"], check=True,
                       capture_output=True)
        argv, first = ["exec", "zs-pre", "true"], "zoned.api"
    shim = ZONED.read_text().split("from zoned.cli")[0]
    code = (shim + "import importlib._bootstrap as _b, zoned.modulepack as mp\n"
            "late, preloads = [], []\n"
            "_load, _preload = _b._load_unlocked, mp.preload\n"
            "def load(spec):\n"
            "    if preloads and spec.name.startswith('zoned.') and \\\n"
            "            spec.origin.endswith('.py'):\n"
            "        late.append(spec.name)\n"
            "    return _load(spec)\n"
            "def preload(names):\n"
            "    preloads.append(list(names))\n"
            "    return _preload(names)\n"
            "_b._load_unlocked, mp.preload = load, preload\n"
            "from zoned.cli import main\n"
            f"code = main(['--root', {zoned_root!r}, *{argv!r}])\n"
            "print(code, preloads[0][:1], late)\n")
    env = {k: v for k, v in os.environ.items() if k != "ZONED_MODULEPACK"}
    out = tmp_path / "out"  # a file: a created zone's init holds the creator's stdio
    with open(out, "w") as f:
        p = subprocess.run([sys.executable, "-S", "-c", code], stdout=f, stderr=f,
                           env=env, stdin=subprocess.DEVNULL)
    text = out.read_text()
    assert p.returncode == 0, text
    assert text.splitlines()[-1] == f"0 [{first!r}] []", text
    if command == "exec":
        subprocess.run(z + ["rm", "-f", "zs-pre"], check=True, capture_output=True)
    if command == "create":  # it works: the zone starts, runs and is deleted
        subprocess.run(z + ["start", "zs-pre"], check=True)
        subprocess.run(z + ["wait", "zs-pre"], check=True, capture_output=True)
        subprocess.run(z + ["delete", "zs-pre"], check=True)


# what only create and exec need: the fork's machinery, the C extension (cffi), the spec;
# and datetime (state's `created` is printed as it was written: zoned.cli.output.is_rfc3339)
NOT_IN_LIFECYCLE_COMMANDS = {"zoned.child.process", "zoned.child.spawn", "zoned.runtime.handoff",
                             "_cffi_backend",
                             "zoned.oci.spec", "datetime"} | NOT_ON_THE_RUN_PATH


def test_oci_state_start_and_delete_load_no_fork_machinery(zoned_root, busybox, tmp_path):
    """podman and containerd run `state`, `start` and `delete` as processes of their own
    for every container: each loads none of what only create and exec use (~3 ms each),
    nor a costly stdlib module, and each still works (the container created, started,
    reported stopped, deleted)."""
    bundle = _bundle(tmp_path)
    z = [str(ZONED), "--root", zoned_root]
    subprocess.run(z + ["create", "--bundle", str(bundle), "c1"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    shim = ZONED.read_text().split("from zoned.cli")[0]
    for step in (["state", "c1"], ["start", "c1"], ["kill", "c1", "KILL"], ["delete", "c1"]):
        code = (shim + "from zoned.cli import main\n"
                f"code = main(['--root', {zoned_root!r}, *{step!r}])\n"
                f"print(code, sorted(set(sys.modules) & {NOT_IN_LIFECYCLE_COMMANDS!r}))\n")
        p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                           text=True)
        assert p.returncode == 0, p.stderr
        last = p.stdout.splitlines()[-1]
        if step[0] == "kill":  # /bin/true may have ended already: then kill refuses
            assert last.endswith(" []"), p.stdout
        else:
            assert last == "0 []", p.stdout
    assert subprocess.run(z + ["ps", "-aq"], capture_output=True, text=True).stdout == ""


# -- capabilities without python-prctl ------------------------------------------------------
def _caps(r: zoned.Result) -> dict[str, int]:
    fields = dict(line.split(":\t") for line in r.stdout.splitlines())
    return {k: int(v, 16) for k, v in fields.items()}


def test_capability_sets_are_the_configured_ones(zoned_root, busybox):
    script = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"
    net_raw, chown, kill = 1 << 13, 1 << 0, 1 << 5
    r = zoned.run(["sh", "-c", script], root=zoned_root, text=True, cap_drop=["ALL"],
                  cap_add=["NET_RAW", "CHOWN"])
    assert _caps(r) == {"CapInh": 0, "CapPrm": net_raw | chown, "CapEff": net_raw | chown,
                        "CapBnd": net_raw | chown, "CapAmb": 0}
    # another user: keeps none in effect or permitted (no ambient), bounding as configured
    r = zoned.run(["sh", "-c", script], root=zoned_root, text=True, user="1000",
                  cap_drop=["ALL"], cap_add=["KILL"])
    assert _caps(r) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": kill, "CapAmb": 0}


# -- priming the cgroup move ----------------------------------------------------------------
def _own_cgroups() -> str:
    return Path("/proc/self/cgroup").read_text()


def test_prime_names_our_own_cgroup_and_moves_nothing():
    from zoned.cgroups import prime

    path = prime.own_procs_file()
    assert path is not None and os.path.isfile(path)
    assert str(os.getpid()) in Path(path).read_text().split()  # the cgroup we are in
    before = _own_cgroups()
    prime.prime()
    time.sleep(0.05)  # the first move, then a few that keep the way open
    prime.prime()  # one runs: no second
    prime.wait()
    assert _own_cgroups() == before
    assert prime._state["thread"] is None  # noqa: SLF001 - joined before any fork


def _primer_loop(procs: str, every_ms: int, for_ms: int):
    """csrc/primer.c's loop in a thread, on any file standing in for cgroup.procs: (thread,
    its result list, the stop pipe's write end)."""
    import threading

    from zoned._native import lib

    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        lib.z_primer_loop(procs.encode(), every_ms, for_ms, stop_r)))
    t.start()
    return t, result, stop_r, stop_w


def test_primer_loop_writes_our_pid_until_told_to_stop(tmp_path):
    """The C loop moves this process (writes its pid) at once and then again and again, with
    the GIL released (this thread runs Python meanwhile), until a byte on the stop pipe."""
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    t, result, stop_r, stop_w = _primer_loop(str(procs), 1, 60_000)
    deadline = time.monotonic() + 30
    writes_seen = set()
    while len(writes_seen) < 3 and time.monotonic() < deadline:  # Python runs meanwhile
        writes_seen.add(procs.stat().st_mtime_ns)
        time.sleep(0.002)
    assert procs.read_text() == str(os.getpid())
    assert len(writes_seen) >= 3  # the first move and those that keep the way open
    os.write(stop_w, b"x")
    t.join(30)
    assert not t.is_alive() and result == [0]
    os.close(stop_r)
    os.close(stop_w)


def test_primer_loop_stops_by_itself_and_reports_a_failed_move(tmp_path):
    """Nobody stops it (the caller failed before its fork): it ends after for_ms. A move that
    fails ends it with -errno, and the first one is made before any wait."""
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    t, result, stop_r, stop_w = _primer_loop(str(procs), 1, 20)
    t.join(30)
    assert not t.is_alive() and result == [0] and procs.read_text() == str(os.getpid())
    t, result, stop_r2, stop_w2 = _primer_loop(str(tmp_path / "none" / "cgroup.procs"), 1,
                                               60_000)
    t.join(30)
    assert result == [-errno.ENOENT]
    for fd in (stop_r, stop_w, stop_r2, stop_w2):
        os.close(fd)


def test_prime_never_guesses_a_cgroup_a_mount_does_not_show(tmp_path):
    """In a mount namespace where cgroup2 is mounted only from a subtree that is not ours
    (a bind of another cgroup), own_procs_file finds no file: it never writes elsewhere."""
    code = f"""
import os, subprocess, sys
sys.path[0:0] = [{str(REPO)!r}]
from zoned.cgroups import prime
from zoned.linux import mountinfo
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
for m in mountinfo.parse(open("/proc/self/mountinfo", "rb").read()):
    if m.fstype in ("cgroup", "cgroup2"):
        subprocess.run(["umount", "-l", m.mount_point], check=False)
os.makedirs({str(tmp_path / "cg")!r}, exist_ok=True)
subprocess.run(["mount", "-t", "cgroup2", "none", {str(tmp_path / "cg")!r}], check=True)
other = {str(tmp_path / "cg")!r} + "/st-prime-other"
os.makedirs(other, exist_ok=True)
os.makedirs({str(tmp_path / "sub")!r}, exist_ok=True)
subprocess.run(["mount", "--bind", other, {str(tmp_path / "sub")!r}], check=True)
subprocess.run(["umount", {str(tmp_path / "cg")!r}], check=True)
print(prime.own_procs_file())
"""
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                        code], capture_output=True, text=True, timeout=60)
    # the cgroup made for the probe is removed from the host's view afterwards
    for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        d = os.path.join(base, "st-prime-other")
        if os.path.isdir(d):
            os.rmdir(d)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "None"


# -- volatile overlay for --rm ----------------------------------------------------------------
def test_rm_zone_has_a_volatile_overlay_and_a_kept_zone_a_durable_one(cli):
    probe = "grep ' / overlay ' /proc/self/mounts || grep overlay /proc/self/mounts"
    rm = cli("run", "--rm", "--", "sh", "-c", probe)
    assert rm.returncode == 0, rm.stderr
    volatile = {"volatile", "fsync=volatile"}  # as newer kernels show it
    assert volatile & set(rm.stdout.split()[3].split(","))
    kept = cli("run", "--name", "st-kept", "--", "sh", "-c", probe)
    assert kept.returncode == 0, kept.stderr
    assert not volatile & set(kept.stdout.split()[3].split(","))
    assert cli("rm", "-f", "st-kept").returncode == 0


# -- removal: rmdir first, kill only what is left ---------------------------------------------
def test_delete_kills_what_outlives_the_init_of_a_zone_without_pid_namespace(zoned_root,
                                                                              busybox):
    """Without a pid namespace the init's exit leaves its children running in the cgroup:
    the cheap rmdir fails there, and delete kills them and removes every directory."""
    from conftest import host_snapshot
    from zoned.api import build_config
    from zoned.linux.proc import proc_start_time
    from zoned.oci.spec import RunOptions
    from zoned.runtime.lifecycle import Runtime

    rt = Runtime(zoned_root)
    before = host_snapshot(zoned_root)
    cfg = build_config(RunOptions(["sh", "-c", "sleep 300 & echo $! > /pidfile; exit 0"],
                                  name="st-nopidns"))
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                  if n["type"] != "pid"]
    started = rt.create("st-nopidns", cfg, use_fifo=False)
    rt.start("st-nopidns", started)
    os.waitpid(started.pid, 0)
    st = rt.state("st-nopidns")
    cg = rt.cgroup(st)
    deadline = time.monotonic() + 10
    while not cg.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = cg.pids()
    assert left, "the sleep should outlive the init"
    starts = {p: proc_start_time(p) for p in left}
    rt.delete("st-nopidns", force=True)
    assert all(proc_start_time(p) != s for p, s in starts.items())  # killed
    assert not cg.exists()
    assert host_snapshot(zoned_root) == before


# -- an embedding program: many starts in one process ----------------------------------------
def test_many_runs_in_one_process_leak_no_fd_and_all_succeed(zoned_root, busybox):
    """zoned.run left a selector (its epoll fd) to the cyclic GC; a collection in a later
    start's forked init then closed that number, by then one of the init's own files:
    "Bad file descriptor" from the 16th start on. Now the selector is closed and the init
    never runs the cyclic GC. (Counted once zoned.linux.lastref's closer thread has
    closed what each run removed: it does so just after the run returns.)"""
    code = (
        "import os, sys, time, zoned\n"
        "def settled():\n"
        "    seen = None\n"
        "    while True:\n"
        "        now = len(os.listdir('/proc/self/fd'))\n"
        "        if now == seen:\n"
        "            return now\n"
        "        seen = now\n"
        "        time.sleep(0.02)\n"
        "counts = []\n"
        "for i in range(40):\n"
        "    r = zoned.run(['/bin/true'], root=sys.argv[1], name=f'st-many-{i}')\n"
        "    assert r.returncode == 0, (i, r)\n"
        "    if i in (0, 39):\n"
        "        counts.append(settled())\n"
        "print(counts[0], counts[-1])\n")
    p = subprocess.run([sys.executable, "-c", code, zoned_root], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    first, last = map(int, p.stdout.split())
    assert last == first


# -- the start's timeline (bench/start_timeline.py) -------------------------------------------
TRACED_STEPS = ["main", "imported", "configured", "create", "fork", "init-namespaces",
                "cgroup", "init-mounts", "init-root", "ready", "started",
                "exited", "removed", "exit"]


def _traced(root: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ZONED_TRACE_START"}
    if env_value is not None:
        env["ZONED_TRACE_START"] = env_value
    return subprocess.run([str(ZONED), "--root", root, "run", "--rm", "--", "sh", "-c",
                           "echo out; echo err >&2"], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_traced_start_marks_every_step_in_order_and_an_untraced_one_none(zoned_root):
    """ZONED_TRACE_START=1: each step of a foreground start, in the CLI and in the init up
    to its exec, writes one "zoned-trace STEP MS" line to stderr, on one monotonic clock:
    the CLI's steps in order, the init's after the fork and before "ready". Unset (or not
    1): the zone's own output only."""
    p = _traced(zoned_root, "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "out\n"
    lines = p.stderr.splitlines()
    assert "err" in lines
    marks = [line.split() for line in lines if line.startswith("zoned-trace ")]
    assert all(len(m) == 3 for m in marks)
    steps = [m[1] for m in marks]
    at = {m[1]: float(m[2]) for m in marks}
    assert sorted(steps) == sorted(TRACED_STEPS)  # each once
    cli = [s for s in TRACED_STEPS if not s.startswith("init-")]
    assert [s for s in steps if not s.startswith("init-")] == cli
    assert all(at[a] <= at[b] for a, b in zip(cli[:-1], cli[1:], strict=True))
    assert at["fork"] <= at["init-namespaces"] <= at["init-mounts"] <= at["init-root"] \
        <= at["ready"]
    for value in (None, "0"):
        quiet = _traced(zoned_root, value)
        assert quiet.returncode == 0 and quiet.stderr == "err\n"


# -- the seccomp program's way into zoned-spawn ---------------------------------------------------
def test_zones_start_and_exec_when_roots_pipe_pages_are_used_up(zoned_root):
    """Past fs.pipe-user-pages-soft (the log pipes of ~1,000 detached zones take root
    there), a process with neither CAP_SYS_ADMIN nor CAP_SYS_RESOURCE gets pipes of two
    pages, 8 KiB: the init holding the zone's capabilities is one. The default seccomp
    program (9.6 KiB) written into such a pipe blocked the init for good (bench/density.py
    hung at zone 998). It goes through a memfd: run, run -d and exec all work."""
    knob = Path("/proc/sys/fs/pipe-user-pages-soft")
    old = knob.read_text()
    z = [str(ZONED), "--root", zoned_root]
    try:
        knob.write_text("1")
        r = subprocess.run(z + ["run", "--rm", "--", "echo", "ran"], capture_output=True,
                           text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
        d = subprocess.run(z + ["run", "-d", "--name", "pipes", "--", "sleep", "60"],
                           capture_output=True, text=True, timeout=60)
        assert d.returncode == 0, d.stderr
        e = subprocess.run(z + ["exec", "pipes", "--", "echo", "exec'd"], capture_output=True,
                           text=True, timeout=60)
        assert (e.returncode, e.stdout) == (0, "exec'd\n"), e.stderr
    finally:
        knob.write_text(old)
        subprocess.run(z + ["rm", "-f", "pipes"], capture_output=True, timeout=60)
