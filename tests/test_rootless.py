"""Rootless zones (issue 17): an ordinary user, made here with useradd (and a subordinate
id range, or none), runs zones, the CLI and the pytest plugin's example suite, on this
host with no cgroup delegation; nothing is left behind, and the user is removed after."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT_INFRASTRUCTURE
from zoned.bench.users import TempUser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "pytest_harness")
ZONED = os.path.join(os.path.dirname(sys.executable), "zoned")


class User(TempUser):
    """An ordinary user for one module (zoned.bench.users), with a work dir in its home."""

    def __init__(self, subids: bool):
        super().__init__(subids, "zhn")
        self.work = os.path.join(self.home, "work")
        self.run("mkdir", "-p", self.work)


@pytest.fixture(scope="module", params=["subids", "single"])
def user(request):
    if request.param == "subids" and not os.access("/usr/bin/newuidmap", os.X_OK):
        pytest.skip("newuidmap is missing (apt-get install uidmap: make setup does)")
    u = User(subids=request.param == "subids")
    try:
        p = u.run(ZONED, "image", "build", "busybox")  # image build works rootless too
        assert p.returncode == 0, p.stderr
        yield u
    finally:
        u.remove()
    assert request.param and u.name not in open("/etc/subuid").read()


def leftovers(u: User) -> list[str]:
    p = u.run("sh", "-c", "ls -A /tmp/zoned-$(id -u) 2>/dev/null; "
              "ls -A ~/.local/share/zoned/containers ~/.local/share/zoned/roots 2>/dev/null")
    return [n for n in p.stdout.split() if n not in ROOT_INFRASTRUCTURE]


def test_cli_runs_a_zone_as_the_user(user):
    p = user.run(ZONED, "run", "--rm", "--", "sh", "-c",
                 "id -u; echo $$; cat /proc/self/uid_map; echo x > /made; ls /sys/class/net")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["0", "1"]
    maps = [m.split() for m in lines if len(m.split()) == 3]
    assert maps[0] == ["0", str(user.uid), "1"]
    if user.range is not None:
        assert maps[1] == ["1", str(user.range), "65536"]
    else:
        assert len(maps) == 1
    assert lines[-1] == "lo"
    warnings = [ln for ln in p.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "cgroup" in warnings[0], p.stderr
    assert "Traceback" not in p.stderr
    assert leftovers(user) == []


def test_both_inits_make_the_same_rootless_zone(user):
    """A rootless zone is set up by the C init (its user namespace's stages in C, mapped
    by newuidmap while it is dumpable, setgroups denied where one id is mapped): the same
    zone, seen from inside, as the Python init's, which ZONED_INIT=python still picks."""
    probe = ("grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups|Umask)' /proc/self/status; "
             "cut -d' ' -f4- /proc/self/mountinfo; ls -A /dev; id; cat /proc/self/uid_map "
             "/proc/self/gid_map /proc/self/setgroups; ls /sys/class/net; ulimit -n; "
             "echo x > /dev/null && head -c1 /dev/zero | wc -c; hostname")
    outs = []
    for init in ("c", "python"):
        p = user.run(ZONED, "run", "--rm", "--name", "rl", "--hostname", "rl", "--", "sh",
                     "-c", probe, ZONED_INIT=init)
        assert p.returncode == 0, (init, p.stderr)
        outs.append(p.stdout)
    assert outs[0] == outs[1]
    assert "uid=0(root)" in outs[0] and outs[0].rstrip().endswith("1\nrl"), outs[0]
    assert leftovers(user) == []


def test_the_seccomp_program_is_kept_in_the_users_runtime_dir(user):
    """A rootless run compiles the zone's seccomp program once and keeps it in the user's
    runtime dir (root's /run/zoned/.cache is not the user's to write: every rootless run
    compiled the default profile again, ~12-16 ms of it). The next run reads it: the
    cached file is not written again."""
    assert user.run(ZONED, "run", "--rm", "--", "true").returncode == 0
    p = user.run("sh", "-c", "stat -c '%u %a %Y %n' /tmp/zoned-$(id -u)/.cache/seccomp/*.bpf")
    assert p.returncode == 0, p.stderr
    first = p.stdout.split("\n")[0].split()
    assert first[0] == str(user.uid) and first[1] == "600" and len(p.stdout.splitlines()) == 1
    time.sleep(1.1)  # (a rewrite would show in the mtime's seconds)
    assert user.run(ZONED, "run", "--rm", "--", "true").returncode == 0
    again = user.run("sh", "-c", "stat -c '%u %a %Y %n' /tmp/zoned-$(id -u)/.cache/seccomp/*.bpf")
    assert again.stdout.split() == first, (first, again.stdout)


def test_cp_both_ways_with_a_running_zone(user):
    """`zoned cp` as the user: in (owned by the zone's root, as docker's cp makes it) and
    out (the user's, without its setuid bit); with a stopped zone too (podman's cp of a
    stopped rootless container): in a user namespace mapped as the zone's, where the user
    mounts its overlay, and what went in is there, its root's, when it runs again."""
    w = user.work
    p = user.run("sh", "-c", f"mkdir -p {w}/cp && echo hi > {w}/cp/f && chmod 4755 {w}/cp/f")
    assert p.returncode == 0, p.stderr
    assert user.run(ZONED, "run", "-d", "--name", "rlcp", "--", "sleep", "100").returncode == 0
    try:
        p = user.run(ZONED, "cp", f"{w}/cp", "rlcp:/tmp/")
        assert p.returncode == 0, p.stderr
        p = user.run(ZONED, "exec", "rlcp", "stat", "-c", "%u %g %a", "/tmp/cp/f")
        assert p.stdout == "0 0 4755\n", p.stderr
        p = user.run(ZONED, "cp", "rlcp:/tmp/cp", f"{w}/back")
        assert p.returncode == 0, p.stderr
        st = os.stat(f"{w}/back/f")
        assert (st.st_uid, st.st_mode & 0o7777) == (user.uid, 0o755)
        assert user.run(ZONED, "stop", "-t", "0", "rlcp").returncode == 0
        p = user.run(ZONED, "cp", f"{w}/cp/f", "rlcp:/tmp/g")
        assert p.returncode == 0, p.stderr
        p = user.run(ZONED, "cp", "rlcp:/tmp/g", f"{w}/g-back")
        assert p.returncode == 0, p.stderr
        with open(f"{w}/g-back") as f:
            assert f.read() == "hi\n"
        assert user.run(ZONED, "restart", "rlcp").returncode == 0  # the same layer
        p = user.run(ZONED, "exec", "rlcp", "stat", "-c", "%u %g %a", "/tmp/g", "/tmp/cp/f")
        assert p.stdout == "0 0 4755\n0 0 4755\n", p.stderr
        assert user.run(ZONED, "stop", "-t", "0", "rlcp").returncode == 0
        p = user.run(ZONED, "cp", f"{w}/cp/f", "rlcp:/no/such/dir/")
        assert p.returncode == 125 and p.stderr.count("\n") == 1, p.stderr
    finally:
        user.run(ZONED, "rm", "-f", "rlcp")
    assert leftovers(user) == []


def test_info_says_rootless(user):
    p = user.run(ZONED, "info", "--format", "json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["rootless"] is True
    assert info["state_root"] == f"/tmp/zoned-{user.uid}"
    assert info["data_root"] == os.path.join(user.home, ".local/share/zoned")
    assert "none" in info["cgroups"]
    xdg = os.path.join(user.home, "run")
    user.run("mkdir", "-m", "700", "-p", xdg)
    p = user.run(ZONED, "info", "--format", "json", XDG_RUNTIME_DIR=xdg,
                 XDG_DATA_HOME=os.path.join(user.home, "data"))
    info = json.loads(p.stdout)
    assert (info["state_root"], info["data_root"]) == \
        (os.path.join(xdg, "zoned"), os.path.join(user.home, "data", "zoned"))


def test_unmapped_user_is_one_clear_error(user):
    p = user.run(ZONED, "run", "--rm", "-u", "70000", "--", "id")
    assert p.returncode == 125
    assert "invalid --user: uid 70000 is not mapped" in p.stderr
    assert "Traceback" not in p.stderr


def test_files_the_zone_makes_are_the_users(user):
    vol = os.path.join(user.work, "vol")
    user.run("mkdir", "-p", vol)
    p = user.run(ZONED, "run", "--rm", "-v", f"{vol}:/v", "--", "sh", "-c",
                 "touch /v/by-root")
    assert p.returncode == 0, p.stderr
    assert os.stat(os.path.join(vol, "by-root")).st_uid == user.uid  # not the host's root


def test_example_suite_passes_as_the_user(user):
    p = user.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-c", "/dev/null", "--rootdir", user.work, EXAMPLE, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "8 passed" in p.stdout
    assert leftovers(user) == []


POOL_SCRIPT = """
import json, os, zoned
SHOW = "for n in user mnt pid; do readlink /proc/self/ns/$n; done; ls /proc | " \\
       "grep -c '^[0-9]'; cat /proc/self/uid_map; mkdir /d /s; chmod 000 /d; touch /s/f; " \\
       "chown -R 1000 /s 2>/dev/null; chmod 700 /s; id -u"
with zoned.Pool(size=2) as pool:
    runs = [pool.run(["sh", "-c", SHOW], text=True) for _ in range(3)]
    bad = pool.run(["sh", "-c", "exit 3"])
    makers = len(pool.maker_pids)
try:
    os.waitpid(-1, os.WNOHANG)
    children = "left"
except ChildProcessError:
    children = "none"
print(json.dumps({"out": [r.stdout for r in runs], "codes": [r.returncode for r in runs],
                  "makers": makers,
                  "bad": bad.returncode, "children": children,
                  "ours": [os.readlink("/proc/self/ns/" + n) for n in ("user", "mnt", "pid")]}))
"""


def test_a_pool_makes_rootless_zones_in_one_mapped_user_namespace(user):
    """zoned.Pool as an ordinary user: its zones join a user namespace the pool mapped
    once for all its makers (not newuidmap per zone: as rootless podman), yet each has
    mount and pid namespaces of its own and sees only its own processes; every process
    made for the caller (the inits, the user-namespace stages) is reaped, and nothing is
    left."""
    script = os.path.join(user.work, "pool.py")
    with open(script, "w") as f:
        f.write(POOL_SCRIPT)
    os.chmod(script, 0o644)
    p = user.run(sys.executable, script)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["codes"] == [0, 0, 0] and got["bad"] == 3
    assert got["children"] == "none"  # no zombie: stage 1s and inits all reaped
    zones = [r.split() for r in got["out"]]
    userns = {z[0] for z in zones}
    assert got["makers"] == 2 and len(userns) == 1  # one for the pool: not per zone/maker
    assert got["ours"][0] not in userns  # and not the user's own
    for z in zones:  # (a gone namespace's inode number is reused: zones run one by one)
        assert z[1] != got["ours"][1] and z[2] != got["ours"][2]
        assert int(z[3]) <= 3  # sh, ls, grep: no other zone's process, no host's
        assert z[4:7] == ["0", str(user.uid), "1"]
        if user.range is not None:
            assert z[7:10] == ["1", str(user.range), "65536"]
        assert z[-1] == "0"
    # each upper has a mode-000 dir of the user's, and with a range one of a subordinate id
    assert leftovers(user) == []


def test_example_suite_under_xdist_as_the_user(user):
    pytest.importorskip("xdist")
    p = user.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                 "-c", "/dev/null", "--rootdir", user.work, EXAMPLE, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "8 passed" in p.stdout
    assert leftovers(user) == []


PASTA_SCRIPT = """
import subprocess, time, zoned
with zoned.Container(["sh", "-c", "echo from-zone > /tmp/i; cd /tmp; exec httpd -f -p 80"],
                     network="pasta", publish=["{port}:80"]) as c:
    for _ in range(50):
        r = subprocess.run(["wget", "-qO-", "http://127.0.0.1:{port}/i"], capture_output=True,
                           text=True)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    print("got", r.stdout.strip())
    print("pasta", c.state["zoned"]["network"]["pid"])
"""


def test_pasta_publishes_a_port(user, tmp_path):
    """-p through pasta. This host's /dev/net/tun is 0600 (no user may open it), so the
    user runs in a throw-away mount namespace where it is a 0666 node of the same device;
    with the host's as it is, the error names the cause."""
    if not os.access("/usr/bin/pasta", os.X_OK):
        pytest.skip("pasta is missing (apt-get install passt: make setup does)")
    port = 20000 + user.uid % 1000
    script = os.path.join(user.work, "pasta_check.py")
    with open(script, "w") as f:
        f.write(PASTA_SCRIPT.format(port=port))
    os.chmod(script, 0o644)
    if (os.stat("/dev/net/tun").st_mode & 0o777) != 0o666:
        p = user.run(ZONED, "run", "--rm", "--network", "pasta", "-p", f"{port}:80", "--",
                     "true")
        assert p.returncode == 125 and "/dev/net/tun is not open to you" in p.stderr
    tun = tmp_path / "tun"
    tun.mkdir()
    env = " ".join(f"{k}={v}" for k, v in user.env().items()
                   if k in ("HOME", "USER", "PATH"))
    inner = (f"mount -t tmpfs zhntun {tun} && mknod -m 666 {tun}/tun c 10 200 && "
             f"mount --bind {tun}/tun /dev/net/tun && "
             f"setpriv --reuid={user.uid} --regid={user.uid} --init-groups -- "
             f"env {env} {sys.executable} {script}")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert p.returncode == 0, p.stderr
    assert "got from-zone" in p.stdout
    pasta = int(p.stdout.split("pasta ")[1].split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # ended with the zone (maybe a zombie
        try:                                          # until this host's PID 1 reaps it)
            with open(f"/proc/{pasta}/stat") as f:
                if f.read().split(") ")[1][0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"pasta {pasta} outlived its zone")
    assert leftovers(user) == []


REMOVE_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from zoned.rootless import remove_tree
home = os.path.expanduser("~")
data = os.path.join(home, "fake-zone")
outside = os.path.join(home, "outside")
os.makedirs(os.path.join(data, "work", "work", "inner"))
os.makedirs(os.path.join(data, "upper", "a", "b", "c"))
os.makedirs(outside)
os.symlink(outside, os.path.join(data, "work", "link"))
os.symlink(outside, os.path.join(data, "upper", "a", "link"))
os.chmod(os.path.join(data, "work", "work"), 0)  # as overlay leaves it
os.chmod(os.path.join(data, "upper", "a", "b"), 0)  # as a zone may
os.chmod(os.path.join(data, "upper", "a"), 0o500)
os.chmod(outside, 0)
def no_fork():
    raise AssertionError("the user's own files needed the mapped helper")
os.fork = no_fork
remove_tree(data)
print(os.path.exists(data), oct(os.stat(outside).st_mode & 0o777))
"""


def test_removal_opens_up_the_users_own_dirs_but_never_through_a_symlink(user):
    """A rootless zone's data dir holds overlay's mode-000 work/work (the user's own), and
    maybe closed directories the zone made: removal opens them up and removes them as the
    user, without the helper that maps a user namespace for it (newuidmap, newgidmap:
    ~3 ms; it was taken at every removal, as the walk's error named no usable path), and
    a symlink the zone left to one of the user's closed dirs elsewhere is removed, not
    followed (that dir stays 000)."""
    p = user.run(sys.executable, "-c", REMOVE_SCRIPT.format(repo=REPO))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "0o0"]


def test_the_state_root_is_a_private_directory_of_the_users_own(tmp_path):
    """_own_dir: made 0700 if missing; refused (one line) if a symlink, not a directory,
    another user's, or open to others: in /tmp another user could have planted it."""
    import tempfile

    from zoned.errors import ZonedError
    from zoned.rootless import _own_dir

    base = tempfile.mkdtemp(prefix="pf-own-", dir="/tmp")
    try:
        made = os.path.join(base, "made")
        assert _own_dir(made, "HINT") == made
        st = os.lstat(made)
        assert st.st_mode & 0o7777 == 0o700 and st.st_uid == os.geteuid()
        mine = os.path.join(base, "mine")
        os.mkdir(mine)
        os.symlink(mine, os.path.join(base, "link"))  # its target passes every check
        os.mkdir(os.path.join(base, "theirs"), 0o700)
        os.chown(os.path.join(base, "theirs"), 65534, 65534)
        os.mkdir(os.path.join(base, "open"))
        os.chmod(os.path.join(base, "open"), 0o755)
        open(os.path.join(base, "file"), "w").close()
        for name, why in [("link", "is a symlink"), ("theirs", "belongs to uid 65534"),
                          ("open", "is open to others (mode 755"),
                          ("file", "is not a directory")]:
            with pytest.raises(ZonedError) as e:
                _own_dir(os.path.join(base, name), "HINT")
            msg = str(e.value)
            assert why in msg and msg.endswith("; HINT") and "\n" not in msg, msg
    finally:
        subprocess.run(["rm", "-rf", base], check=True)


def test_a_planted_tmp_state_root_is_refused_not_followed():
    """The audit's attack: without XDG_RUNTIME_DIR the state root is /tmp/zoned-UID;
    another user plants it first as a symlink to a directory of the victim's (stat()
    followed it: the owner checked out), to swap it later for a place of theirs. zoned
    refuses it in one line (125), touches nothing there, and works once it is gone."""
    u = User(subids=False)
    state = f"/tmp/zoned-{u.uid}"
    try:
        assert not os.path.lexists(state)
        target = os.path.join(u.home, "pf-target")
        assert u.run("mkdir", "-m", "700", target).returncode == 0
        os.symlink(target, state)  # root plays the other user: the link is not the user's
        p = u.run(ZONED, "ps")
        assert p.returncode == 125, (p.stdout, p.stderr)
        assert p.stderr.strip().splitlines() == [
            f"zoned: rootless: {state} is a symlink; set XDG_RUNTIME_DIR to a directory "
            f"of yours (0700), or remove {state} if it is yours"]
        assert os.listdir(target) == []
        os.unlink(state)
        os.mkdir(state, 0o777)  # a directory, but another user's
        os.chmod(state, 0o777)
        p = u.run(ZONED, "ps")
        assert p.returncode == 125 and "belongs to uid 0, not to you" in p.stderr
        os.rmdir(state)
        p = u.run(ZONED, "ps")  # made, the user's, 0700
        assert p.returncode == 0, p.stderr
        st = os.lstat(state)
        assert (st.st_uid, st.st_mode & 0o7777) == (u.uid, 0o700)
        runtime = os.path.join(u.home, "pf-run")  # with XDG_RUNTIME_DIR, /tmp is not used
        assert u.run("mkdir", "-m", "700", runtime).returncode == 0
        p = u.run(ZONED, "info", "--format", "json", XDG_RUNTIME_DIR=runtime)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["state_root"] == os.path.join(runtime, "zoned")
    finally:
        u.remove()  # (rm -rf of the state path: a link itself, not what it names)
    assert not os.path.lexists(state)


def test_a_failing_map_tool_is_one_line_and_leaves_no_child():
    """newuidmap and newgidmap run at once (a rootless run waited for one, then the other);
    one that fails is told in one line, and neither is left unreaped."""
    if not os.access("/usr/bin/newuidmap", os.X_OK):
        pytest.skip("newuidmap is missing (apt-get install uidmap: make setup does)")
    from zoned import rootless
    from zoned.errors import ConfigError

    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)  # a pid with no process: both tools fail
    maps = [{"containerID": 0, "hostID": 1000, "size": 1},
            {"containerID": 1, "hostID": 200000, "size": 10}]
    with pytest.raises(ConfigError) as e:
        rootless.write_maps(gone, {"uidMappings": maps, "gidMappings": maps})
    assert str(e.value).startswith("rootless: newuidmap failed: ") and "\n" not in str(e.value)
    kids = " ".join(open(f"/proc/self/task/{t}/children").read()
                    for t in os.listdir("/proc/self/task")).split()
    assert not [k for k in kids if open(f"/proc/{k}/comm").read().strip() in
                ("newuidmap", "newgidmap")]
