"""zoned.child.seccomp against the real kernel: compile profiles, load them in forked children with
no_new_privs set, try syscalls there and report the outcome to the parent through a pipe.

Every syscall the default profile should deny is called with arguments that would fail
harmlessly (EINVAL/EFAULT/EBADF...) if the filter let it through, so a broken filter cannot
reboot the host; and as the children run as root with all capabilities, an EPERM can only
come from seccomp.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import subprocess
import sys
import threading

import prctl
import pytest

import zoned.child.seccomp as zs
import zoned.child.seccomp_abi as zabi
import zoned.child.seccomp_program as zsp
import zoned.linux.syscalls as zsys

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64"),
]

# runc's default capability set
RUNC_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
X86_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]

# x86_64 syscall numbers
NR = dict(
    getpid=39, socket=41, clone=56, getpgid=121, personality=135, getpriority=140, acct=163,
    settimeofday=164, swapon=167, swapoff=168, reboot=169, init_module=175,
    delete_module=176, clock_settime=227, kexec_load=246, add_key=248, request_key=249,
    keyctl=250, unshare=272, perf_event_open=298, open_by_handle_at=304, finit_module=313,
    kexec_file_load=320, bpf=321, io_uring_setup=425, io_uring_enter=426,
    io_uring_register=427, clone3=435,
)
SIGCHLD = 17
AF_UNIX, AF_VSOCK, SOCK_STREAM = 1, 40, 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sc(name: str, *args: int) -> str | int:
    """Raw syscall: its return value, or the errno name on failure."""
    cargs = [ctypes.c_ulong(a) if a >= 1 << 63 else ctypes.c_long(a) for a in args]
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(NR[name]), *cargs)
    if ret == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return ret


def run_filtered(bpf: bytes, probe, flags: int = 0):
    """Fork, set no_new_privs, load `bpf`, run `probe()` and return its (JSON) result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            prctl.set_no_new_privs(1)
            zsys.seccomp_set_filter(bpf, flags)
            out = json.dumps({"ok": probe()})
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            out, code = json.dumps({"error": repr(e)}), 1
        try:
            os.write(w, out.encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res = json.loads(b"".join(chunks) or b"{}")
    assert "error" not in res, res.get("error")
    assert os.waitstatus_to_exitcode(status) == 0
    return res["ok"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Test profiles go to a cache of their own, not the host's /run/zoned one."""
    monkeypatch.setattr(zs, "CACHE_DIR", str(tmp_path / "seccomp-cache"))
    monkeypatch.setattr(zs, "_memo", {})
    return zs.CACHE_DIR


@pytest.fixture
def default_bpf() -> bytes:
    return zs.compile_bpf(zs.default_profile(RUNC_CAPS))


# ---------------------------------------------------------------- default profile contents

def test_import_does_not_load_extension():
    code = "import sys, zoned.child.seccomp; print('zoned._seccomp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_default_profile_shape():
    p = zs.default_profile(RUNC_CAPS)
    assert p["defaultAction"] == "SCMP_ACT_ERRNO"
    assert p["defaultErrnoRet"] == errno.EPERM
    assert p["architectures"] == X86_ARCHES
    for rule in p["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}  # plain OCI, resolved
    allowed = {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
               for n in r["names"]}
    for name in ("keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
                 "init_module", "finit_module", "delete_module", "open_by_handle_at", "bpf",
                 "perf_event_open", "reboot", "swapon", "swapoff", "acct", "settimeofday",
                 "clock_settime", "unshare", "setns", "mount", "clone3"):
        assert name not in allowed, name
    assert {"read", "write", "openat", "getpid", "arch_prctl", "chroot"} <= allowed
    clone3 = [r for r in p["syscalls"] if "clone3" in r["names"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


def test_default_profile_caps_resolution():
    base = zs.default_profile(RUNC_CAPS)
    admin = zs.default_profile(RUNC_CAPS + ["CAP_SYS_ADMIN"])
    names = lambda p: {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
                       and not r.get("args") for n in r["names"]}
    assert {"unshare", "setns", "mount", "clone", "clone3"} <= names(admin)
    assert not any(r["action"] == "SCMP_ACT_ERRNO" for r in admin["syscalls"])  # no clone3 ENOSYS
    # cap names with or without the prefix, any case
    assert zs.default_profile(["sys_admin", "chown"]) == zs.default_profile(["CAP_SYS_ADMIN",
                                                                               "CAP_CHOWN"])
    assert "chroot" not in names(zs.default_profile([]))
    assert "reboot" in names(zs.default_profile(["CAP_SYS_BOOT"]))
    # a fresh object every call: callers may edit it
    base["syscalls"][0]["names"].append("x")
    assert "x" not in zs.default_profile(RUNC_CAPS)["syscalls"][0]["names"]


# ---------------------------------------------------------------- default profile, loaded

DENIED_PROBES = {
    # syscall: harmless arguments (each would fail on its own without the filter)
    "keyctl": (9999, 0, 0, 0, 0),
    "add_key": (0, 0, 0, 0, 0),
    "request_key": (0, 0, 0, 0),
    "kexec_load": (0, 0, 0, 0xFFFFFFFF),
    "kexec_file_load": (-1, -1, 0, 0, 0xFFFFFFFF),
    "init_module": (0, 0, 0),
    "finit_module": (-1, 0, 0),
    "delete_module": (0, 0),
    "open_by_handle_at": (-1, 0, 0),
    "bpf": (9999, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "reboot": (0, 0, 0, 0),
    "swapon": (0, 0),
    "swapoff": (0,),
    "acct": (1,),
    "settimeofday": (1, 1),
    "clock_settime": (0x7FFF, 1),
    # io_uring: the usual kernel exploit path out of containers (moby#46762, found by
    # session 21's audit: zoned's copy of moby's profile predated its removal)
    "io_uring_setup": (0, 0),
    "io_uring_enter": (-1, 0, 0, 0, 0, 0),
    "io_uring_register": (-1, 0, 0, 0),
}


def _probe_denied():
    out = {name: sc(name, *args) for name, args in DENIED_PROBES.items()}
    out["unshare_newuser"] = sc("unshare", zsys.CLONE_NEWUSER)
    out["unshare_newns"] = sc("unshare", zsys.CLONE_NEWNS)
    ret = sc("clone", zsys.CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)  # should not happen: a clone child got through
    if isinstance(ret, int):
        os.waitpid(ret, 0)
    out["clone_newuser"] = ret
    out["clone3"] = sc("clone3", 0, 0)
    out["socket_vsock"] = sc("socket", AF_VSOCK, SOCK_STREAM, 0)
    return out


def test_default_profile_denies(default_bpf):
    res = run_filtered(default_bpf, _probe_denied)
    for name in DENIED_PROBES:
        assert res[name] == "EPERM", (name, res[name])
    assert res["unshare_newuser"] == "EPERM"
    assert res["unshare_newns"] == "EPERM"
    assert res["clone_newuser"] == "EPERM"
    assert res["clone3"] == "ENOSYS"
    assert res["socket_vsock"] == "EPERM"


def test_unfiltered_probes_are_not_eperm():
    """The denial above is the filter's doing: the same calls fail otherwise (as root)."""
    def probe():
        return {name: sc(name, *args) for name, args in DENIED_PROBES.items()
                if name not in ("kexec_load", "kexec_file_load")  # may be locked down
                and not (name.startswith("io_uring") and _io_uring_disabled())}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, json.dumps(probe()).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(data)
    assert all(v != "EPERM" for v in res.values()), res


def _io_uring_disabled() -> bool:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() == "2"
    except OSError:
        return False


def _probe_allowed():
    out = {"getpid": sc("getpid") == os.getpid()}
    r, w = os.pipe()
    os.write(w, b"ping")
    out["pipe"] = os.read(r, 4).decode()
    fd = os.open("/proc/self/status", os.O_RDONLY)  # openat
    out["openat"] = os.read(fd, 5).decode()
    os.close(fd)
    s = sc("socket", AF_UNIX, SOCK_STREAM, 0)
    out["socket_unix"] = isinstance(s, int)
    if isinstance(s, int):
        os.close(s)
    out["personality_query"] = isinstance(sc("personality", 0xFFFFFFFF), int)
    # glibc's pthread_create tries clone3 first; ENOSYS must make it fall back to clone
    box = []
    t = threading.Thread(target=box.append, args=(1,))
    t.start()
    t.join()
    out["thread"] = box
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return out


def test_default_profile_allows(default_bpf):
    res = run_filtered(default_bpf, _probe_allowed)
    assert res == {"getpid": True, "pipe": "ping", "openat": "Name:", "socket_unix": True,
                   "personality_query": True, "thread": [1], "fork": 7}


def test_default_profile_with_sys_admin_allows_userns():
    bpf = zs.compile_bpf(zs.default_profile(RUNC_CAPS + ["CAP_SYS_ADMIN"]))

    def probe():
        return {"clone3": sc("clone3", 0, 0), "unshare": sc("unshare", zsys.CLONE_NEWUSER),
                "keyctl": sc("keyctl", 9999, 0, 0, 0, 0)}
    res = run_filtered(bpf, probe)
    assert res["unshare"] == 0
    assert res["clone3"] == "EINVAL"   # reached the kernel (size 0)
    assert res["keyctl"] == "EPERM"    # still not allowed


def test_default_profile_with_filter_flags(default_bpf):
    p = dict(zs.default_profile(RUNC_CAPS), flags=["SECCOMP_FILTER_FLAG_TSYNC",
                                                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
    flags = zs.filter_flags(p)
    assert flags == zabi.SECCOMP_FILTER_FLAG_TSYNC | zabi.SECCOMP_FILTER_FLAG_SPEC_ALLOW
    bpf = zs.compile_bpf(p)
    assert bpf == default_bpf   # flags are load-time only
    assert run_filtered(bpf, lambda: sc("keyctl", 9999, 0, 0, 0, 0), flags) == "EPERM"


def test_default_errno_ret_honoured():
    p = dict(zs.default_profile(RUNC_CAPS), defaultErrnoRet=errno.ENOSYS)
    assert run_filtered(zs.compile_bpf(p), lambda: sc("keyctl", 9999, 0, 0, 0, 0)) == "ENOSYS"


def test_execve_true_under_default_profile(default_bpf):
    flags = zs.filter_flags(zs.default_profile(RUNC_CAPS))

    def run(argv):
        pid = os.fork()
        if pid == 0:
            try:
                prctl.set_no_new_privs(1)
                zsys.execve_seccomp(argv[0], argv, ["PATH=/usr/bin:/bin"], default_bpf, flags)
            finally:
                os._exit(127)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert run(["/usr/bin/true"]) == 0
    if os.path.exists("/usr/bin/unshare"):
        assert run(["/usr/bin/unshare", "--user", "/usr/bin/true"]) != 0


# ---------------------------------------------------------------- custom OCI profiles

def custom(*rules, default="SCMP_ACT_ALLOW", **extra):
    return {"defaultAction": default, "architectures": X86_ARCHES, "syscalls": list(rules),
            **extra}


def test_custom_profile_args_and_errno_ret():
    p = custom(
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO"},  # errnoRet defaults to EPERM
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},      # different indexes:
                  {"index": 1, "value": 12345, "op": "SCMP_CMP_EQ"}]},  # both must match
        {"names": ["no_such_syscall_zoned"], "action": "SCMP_ACT_KILL"},  # skipped
    )

    def probe():
        return {"pers_query": sc("personality", 0xFFFFFFFF),
                "pers_0": sc("personality", 0),
                "getpgid": sc("getpgid", 0),
                "prio_match": sc("getpriority", 0, 12345),
                "prio_other": sc("getpriority", 0, 0),
                "prio_half": sc("getpriority", 1, 12345)}
    res = run_filtered(zs.compile_bpf(p), probe)
    assert res["pers_query"] == "ENOSYS"
    assert isinstance(res["pers_0"], int)
    assert res["getpgid"] == "EPERM"
    assert res["prio_match"] == "EDOM"
    assert isinstance(res["prio_other"], int)
    assert res["prio_half"] != "EDOM"


def test_same_index_conditions_split_like_runc():
    """Two conditions on arg 0 cannot both hold: runc adds them as two rules (either matches)."""
    p = custom({"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
                "args": [{"index": 0, "value": 1000001, "op": "SCMP_CMP_EQ"},
                         {"index": 0, "value": 1000002, "op": "SCMP_CMP_EQ"}]})
    res = run_filtered(zs.compile_bpf(p), lambda: [sc("getpgid", a)
                                                   for a in (1000001, 1000002, 1000003)])
    assert res == ["EDOM", "EDOM", "ESRCH"]


@pytest.mark.parametrize("op, value, value2, expect", [
    # probes: getpgid(5_000_000), getpgid(6_000_000), getpgid(7_000_000) -> matched?
    ("SCMP_CMP_NE", 6_000_000, 0, [True, False, True]),
    ("SCMP_CMP_LT", 6_000_000, 0, [True, False, False]),
    ("SCMP_CMP_LE", 6_000_000, 0, [True, True, False]),
    ("SCMP_CMP_EQ", 6_000_000, 0, [False, True, False]),
    ("SCMP_CMP_GE", 6_000_000, 0, [False, True, True]),
    ("SCMP_CMP_GT", 6_000_000, 0, [False, False, True]),
    # value is the mask, valueTwo what the masked arg must equal
    ("SCMP_CMP_MASKED_EQ", 0xFF, 6_000_000 & 0xFF, [False, True, False]),
])
def test_ops(op, value, value2, expect):
    p = custom({"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
                "args": [{"index": 0, "value": value, "valueTwo": value2, "op": op}]})
    res = run_filtered(zs.compile_bpf(p), lambda: [sc("getpgid", a)
                                                   for a in (5_000_000, 6_000_000, 7_000_000)])
    assert [r == "EDOM" for r in res] == expect
    assert all(r in ("EDOM", "ESRCH") for r in res)


def test_other_actions_compile_and_kill():
    for action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                   "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG", "SCMP_ACT_ALLOW"):
        assert zs.compile_bpf(custom({"names": ["getpgid"], "action": action},
                                     default="SCMP_ACT_ERRNO"))
    bpf = zs.compile_bpf(custom({"names": ["getpgid"], "action": "SCMP_ACT_KILL_PROCESS"}))
    pid = os.fork()
    if pid == 0:
        try:
            prctl.set_no_new_privs(1)
            zsys.seccomp_set_filter(bpf)
            sc("getpgid", 0)
        finally:
            os._exit(0)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 31  # SIGSYS


@pytest.mark.parametrize("profile, field", [
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "defaultAction"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "not supported yet"),
    (custom({"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}), "not supported yet"),
    (custom({"names": ["getpid"], "action": "ALLOW"}), "syscalls[0].action"),
    (custom({"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_BOGUS"}]}), "syscalls[0].args[0].op"),
    (custom({"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}), "syscalls[0].args[0].index"),
    (custom({"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}), "errnoRet"),
    (custom({"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4096}), "errnoRet"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}, "defaultErrnoRet"),
    (custom(architectures=["SCMP_ARCH_VAX"]), "architectures"),
    (custom(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "flags"),
])
def test_bad_profiles_raise_value_error(profile, field):
    with pytest.raises(ValueError, match=__import__("re").escape(field)):
        zs.compile_bpf(profile)


def test_filter_flags():
    assert zs.filter_flags({}) == 0
    assert zs.filter_flags({"flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                      "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}) == 0b111
    # only meaningful with a notify listener, which the kernel otherwise refuses
    assert zs.filter_flags({"flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}) == 0
    with pytest.raises(ValueError, match="flags"):
        zs.filter_flags({"flags": ["TSYNC"]})


# ---------------------------------------------------------------- caching

def test_disk_cache_identical_bytes_and_no_libseccomp():
    # a profile nobody compiled before (random value), so the first call is a miss
    p = custom({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
                "args": [{"index": 0, "value": random.getrandbits(64), "op": "SCMP_CMP_EQ"}]})
    path = zs._cache_path(zs._canonical(p))
    assert not os.path.exists(path)
    first = zs.compile_bpf(p)
    assert os.path.isfile(path)
    with open(path, "rb") as f:
        assert f.read() == first
    st = os.stat(path)
    assert st.st_mode & 0o077 == 0 and st.st_uid == 0
    assert not [n for n in os.listdir(zs.CACHE_DIR) if n.startswith(".tmp-")]

    zs._memo.clear()
    assert zs.compile_bpf(p) == first           # from disk
    assert zs.compile_bpf(p) is zs.compile_bpf(p)  # from memory

    # a fresh CLI process gets it from disk without loading libseccomp
    code = ("import sys, json, zoned.child.seccomp as s; s.CACHE_DIR = sys.argv[2];"
            "b = s.compile_bpf(json.loads(sys.argv[1]));"
            "print(b.hex(), 'zoned._seccomp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(p), zs.CACHE_DIR], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == [first.hex(), "False"]

    # a damaged cache entry is ignored and replaced
    with open(path, "wb") as f:
        f.write(b"garbage")
    zs._memo.clear()
    assert zs.compile_bpf(p) == first
    with open(path, "rb") as f:
        assert f.read() == first
    os.unlink(path)


def test_cache_key_is_canonical():
    p = custom({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5})
    q = json.loads(json.dumps(p, sort_keys=True))
    q = dict(reversed(list(q.items())))
    assert zs._canonical(p) == zs._canonical(q)
    assert zs.compile_bpf(p) is zs.compile_bpf(q)


def test_default_cache_dir_is_used():
    """Unpatched, programs land in /run/zoned/.cache/seccomp (the default profile only)."""
    code = ("import os, zoned.child.seccomp as s; p = s.default_profile(%r);"
            "b = s.compile_bpf(p); path = s._cache_path(s._canonical(p));"
            "print(s.CACHE_DIR, os.path.dirname(path), open(path, 'rb').read() == b)") % (RUNC_CAPS,)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["/run/zoned/.cache/seccomp", "/run/zoned/.cache/seccomp", "True"]


# -- the binary tree decides as the list does ---------------------------------------------------
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
X32_SYSCALL_BIT = 0x40000000


def _bpf_decide(program: bytes, nr: int, arch: int, args: tuple[int, ...]) -> int:
    """What a classic-BPF seccomp filter returns for struct seccomp_data {nr, arch, ip=0,
    args}: the instructions libseccomp emits (loads, stores, AND, jumps, returns); any
    other opcode fails the test."""
    import struct

    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100_000):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:      # ld  [k]
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:    # ld  #k
            a = k
        elif code == 0x60:    # ld  M[k]
            a = mem[k]
        elif code == 0x61:    # ldx M[k]
            x = mem[k]
        elif code == 0x02:    # st  M[k]
            mem[k] = a
        elif code == 0x03:    # stx M[k]
            mem[k] = x
        elif code == 0x54:    # and #k
            a &= k
        elif code == 0x07:    # tax
            x = a
        elif code == 0x87:    # txa
            a = x
        elif code == 0x05:    # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            hit = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if hit else jf
        elif code == 0x06:    # ret #k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} at {pc - 1}")
    raise AssertionError("no return")


@pytest.mark.parametrize("profile", ["default", "args"])
def test_the_binary_tree_filter_decides_as_the_plain_list(profile):
    """compile_program's binary tree (what zoned loads) returns the same action as
    libseccomp's plain list for every syscall number of each arch (x86_64, i386, x32),
    with argument values on both sides of the profile's conditions."""
    if profile == "default":
        p = zs.default_profile(RUNC_CAPS)
    else:
        p = custom({"names": ["getpgid", "personality"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_GT"}]},
                   {"names": ["kill"], "action": "SCMP_ACT_KILL",
                    "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
                   default="SCMP_ACT_ERRNO")
    tree, plain = zsp.compile_program(p), zsp.compile_program(p, tree=False)
    assert tree != plain
    argsets = [(0,) * 6, (8, 9, 0, 0, 0, 0), (7, 1 << 32, 0x7E020000, 0, 0, 0),
               (0xFFFFFFFF, 0x10000, 2, 1, 0, 0), (0x40000, 0x8, 0x20000, 0, 0, 0)]
    decided = 0
    for arch, base in ((AUDIT_ARCH_X86_64, 0), (AUDIT_ARCH_I386, 0),
                       (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT)):
        for nr in [*range(0, 470), 0xFFFF, -1]:
            for args in argsets:
                want = _bpf_decide(plain, base + nr if nr >= 0 else nr, arch, args)
                assert _bpf_decide(tree, base + nr if nr >= 0 else nr, arch, args) == want, \
                    (hex(arch), base + nr, args)
                decided += 1
    assert decided == 3 * 472 * len(argsets)
    assert _bpf_decide(tree, 0x3333, 0x1234, (0,) * 6) == _bpf_decide(plain, 0x3333, 0x1234,
                                                                       (0,) * 6)


@pytest.mark.parametrize("profile, surely", [
    ({"defaultAction": "SCMP_ACT_ALLOW"}, True),
    ({"defaultAction": "SCMP_ACT_ERRNO"}, False),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW"}]}, True),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}, False),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [  # a condition: maybe not
        {"names": ["clone3"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]}, False),
], ids=["default allows", "default denies", "allowed", "denied", "conditional"])
def test_allows_is_sure_only_without_conditions(profile, surely):
    """initstub.allows: whether a profile surely lets a syscall through (an exec then keeps
    its old way; a created init waits as zoned-spawn's copy)."""
    from zoned.child.initstub import allows

    assert allows(profile, "clone3") is surely


def test_the_default_profile_denies_clone3_without_cap_sys_admin():
    """Docker's profile, as zoned resolves it: clone3 answers ENOSYS unless the process holds
    CAP_SYS_ADMIN. That is when an exec's process takes its own credentials
    (zoned.runtime.exec_process.creds_in_spawn)."""
    from zoned.child.initstub import allows

    assert not allows(zs.default_profile(["CAP_CHOWN", "CAP_KILL"]), "clone3")
    assert allows(zs.default_profile(["CAP_CHOWN", "CAP_SYS_ADMIN"]), "clone3")
