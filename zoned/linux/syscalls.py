"""Python face of the C extension: each call keeps the syscall's semantics and raises OSError
with errno on failure. No policy here. The constants come from the extension, which took them
from the system's C headers when it was compiled (csrc/constants.cdef): no kernel number is
restated here."""
from __future__ import annotations

import errno
import os


from zoned._native import ffi, lib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence

# clone/unshare flags (linux/sched.h)
CLONE_NEWNS = lib.CLONE_NEWNS
CLONE_NEWCGROUP = lib.CLONE_NEWCGROUP
CLONE_NEWUTS = lib.CLONE_NEWUTS
CLONE_NEWIPC = lib.CLONE_NEWIPC
CLONE_NEWUSER = lib.CLONE_NEWUSER
CLONE_NEWPID = lib.CLONE_NEWPID
CLONE_NEWNET = lib.CLONE_NEWNET
CLONE_NEWTIME = lib.CLONE_NEWTIME
CLONE_PIDFD = lib.CLONE_PIDFD
CLONE_INTO_CGROUP = lib.CLONE_INTO_CGROUP

# mount(2) flags
MS_RDONLY = lib.MS_RDONLY
MS_NOSUID = lib.MS_NOSUID
MS_NODEV = lib.MS_NODEV
MS_NOEXEC = lib.MS_NOEXEC
MS_SYNCHRONOUS = lib.MS_SYNCHRONOUS
MS_REMOUNT = lib.MS_REMOUNT
MS_MANDLOCK = lib.MS_MANDLOCK
MS_DIRSYNC = lib.MS_DIRSYNC
MS_NOSYMFOLLOW = lib.MS_NOSYMFOLLOW
MS_NOATIME = lib.MS_NOATIME
MS_NODIRATIME = lib.MS_NODIRATIME
MS_BIND = lib.MS_BIND
MS_MOVE = lib.MS_MOVE
MS_REC = lib.MS_REC
MS_SILENT = lib.MS_SILENT
MS_UNBINDABLE = lib.MS_UNBINDABLE
MS_PRIVATE = lib.MS_PRIVATE
MS_SLAVE = lib.MS_SLAVE
MS_SHARED = lib.MS_SHARED
MS_RELATIME = lib.MS_RELATIME
MS_STRICTATIME = lib.MS_STRICTATIME
MS_LAZYTIME = lib.MS_LAZYTIME

MNT_DETACH = lib.MNT_DETACH
AT_RECURSIVE = lib.AT_RECURSIVE
AT_FDCWD = lib.AT_FDCWD
MOUNT_ATTR_RDONLY = lib.MOUNT_ATTR_RDONLY
MOUNT_ATTR_NOSUID = lib.MOUNT_ATTR_NOSUID
MOUNT_ATTR_NODEV = lib.MOUNT_ATTR_NODEV
MOUNT_ATTR_NOEXEC = lib.MOUNT_ATTR_NOEXEC

CLOSE_RANGE_CLOEXEC = lib.CLOSE_RANGE_CLOEXEC


def _check(rc: int, what: str, path: str | None = None) -> int:
    if rc < 0:
        err = ffi.errno
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _b(s: str | bytes | None):
    if s is None:
        return ffi.NULL
    return s if isinstance(s, bytes) else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(lib.z_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(lib.z_setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(lib.z_pivot_root(_b(new_root), _b(put_old)), "pivot_root", new_root)


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _check(lib.z_mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(lib.z_umount2(_b(target), flags), "umount2", target)


def mount_setattr(path: str, attr_set: int = 0, attr_clr: int = 0, propagation: int = 0,
                  flags: int = AT_RECURSIVE, dirfd: int = AT_FDCWD,
                  userns_fd: int = -1) -> None:
    _check(lib.z_mount_setattr(dirfd, _b(path), flags, attr_set, attr_clr, propagation,
                               userns_fd), "mount_setattr", path)


OPEN_TREE_CLONE = lib.OPEN_TREE_CLONE
OPEN_TREE_CLOEXEC = lib.OPEN_TREE_CLOEXEC
AT_EMPTY_PATH = lib.AT_EMPTY_PATH
MOVE_MOUNT_F_EMPTY_PATH = lib.MOVE_MOUNT_F_EMPTY_PATH
MOUNT_ATTR_IDMAP = lib.MOUNT_ATTR_IDMAP


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
              dirfd: int = AT_FDCWD) -> int:
    return _check(lib.z_open_tree(dirfd, _b(path), flags), "open_tree", path)


def move_mount(from_fd: int, to_path: str) -> None:
    """Attach a detached mount (an open_tree fd) at to_path."""
    _check(lib.z_move_mount(from_fd, b"", AT_FDCWD, _b(to_path), MOVE_MOUNT_F_EMPTY_PATH),
           "move_mount", to_path)


def sethostname(name: str) -> None:
    b = _b(name)
    _check(lib.z_sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    b = _b(name)
    _check(lib.z_setdomainname(b, len(b)), "setdomainname")


def pidfd_open(pid: int, flags: int = 0) -> int:
    return _check(lib.z_pidfd_open(pid, flags), "pidfd_open")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(lib.z_pidfd_send_signal(pidfd, sig, 0), "pidfd_send_signal")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(lib.z_close_range(first, last, flags), "close_range")


def seccomp_set_filter(bpf: bytes, flags: int = 0) -> None:
    _check(lib.z_seccomp_set_filter(flags, bpf, len(bpf)), "seccomp")


def exit_lending_memory(status: int, keep: Sequence[int] = ()) -> None:
    """_exit(status), with our memory freed after the exit by a process that shares it
    (csrc/exitlend.c): the parent learns of the exit ~1.3 ms sooner. Every fd is closed
    first, but the O_PATH ones in `keep` (zoned.linux.lastref), which the holder keeps
    until it goes. Never returns."""
    fds = sorted(set(keep))
    lib.z_exit_lending_memory(status, ffi.new("int[]", fds) if fds else ffi.NULL, len(fds))


def execve_seccomp(path: str, argv: Sequence[str], env: Sequence[str], bpf: bytes = b"",
                   seccomp_flags: int = 0) -> None:
    """Load `bpf` (if any) and execve with nothing in between. Returns only by raising."""
    keep = [ffi.new("char[]", _b(a)) for a in argv]
    cargv = ffi.new("char *[]", keep + [ffi.NULL])
    keep_env = [ffi.new("char[]", _b(e)) for e in env]
    cenv = ffi.new("char *[]", keep_env + [ffi.NULL])
    lib.z_exec(_b(path), cargv, cenv, bpf, len(bpf), seccomp_flags)
    err = ffi.errno
    raise OSError(err, os.strerror(err), path)


SPAWN_STEPS = {lib.Z_STEP_PDEATHSIG: "prctl(PR_SET_PDEATHSIG)", lib.Z_STEP_SETSID: "setsid",
               lib.Z_STEP_TTY: "ioctl(TIOCSCTTY)", lib.Z_STEP_SECCOMP: "seccomp",
               lib.Z_STEP_EXEC: "execve", lib.Z_STEP_CGROUP: "joining its cgroups",
               lib.Z_STEP_USERNS: "setns(CLONE_NEWUSER)"}
SPAWN_STEP_EXEC = lib.Z_STEP_EXEC


def spawn_exec(path: str, argv: Sequence[str], env: Sequence[str], *, err_fd: int,
               go_fd: int, bpf: bytes = b"", seccomp_flags: int = 0, pdeathsig: int = 0,
               parent_pidfd: int = -1, tty_fd: int = -1) -> int:
    """Clone zoned's child into our pid namespace for children; it waits for a byte on go_fd,
    then execs `path` (see z_spawn_exec). Returns its pid; a failure is reported as
    {errno, step} (two native ints) on err_fd, EOF there means it exec'd."""
    keep = [ffi.new("char[]", _b(a)) for a in argv]
    cargv = ffi.new("char *[]", keep + [ffi.NULL])
    keep_env = [ffi.new("char[]", _b(e)) for e in env]
    cenv = ffi.new("char *[]", keep_env + [ffi.NULL])
    return _check(lib.z_spawn_exec(_b(path), cargv, cenv, bpf, len(bpf), seccomp_flags,
                                   pdeathsig, parent_pidfd, tty_fd, go_fd, err_fd), "clone")


def execveat(fd: int, argv: Sequence[str], env: Sequence[str]) -> None:
    """Run the executable `fd` holds (AT_EMPTY_PATH), env as a list. Returns only by raising."""
    keep = [ffi.new("char[]", _b(a)) for a in argv]
    cargv = ffi.new("char *[]", keep + [ffi.NULL])
    keep_env = [ffi.new("char[]", _b(e)) for e in env]
    cenv = ffi.new("char *[]", keep_env + [ffi.NULL])
    lib.z_execveat(fd, cargv, cenv)
    err = ffi.errno
    raise OSError(err, f"execveat: {os.strerror(err)}")


PR_GET_DUMPABLE = lib.PR_GET_DUMPABLE
PR_SET_DUMPABLE = lib.PR_SET_DUMPABLE


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE. A non-dumpable process's /proc/PID/{exe,mem,fd,...} and ptrace need
    CAP_SYS_PTRACE in the user namespace its memory belongs to (the host's, for zoned's
    children); every credential change resets the flag to fs.suid_dumpable."""
    _check(lib.z_prctl(PR_SET_DUMPABLE, int(on), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def dumpable() -> bool:
    return bool(_check(lib.z_prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_GET_DUMPABLE)"))


def bpf(cmd: int, attr: bytearray) -> int:
    """bpf(2) on a caller-built attr union (a bytearray the kernel may write back into)."""
    return _check(lib.z_bpf(cmd, ffi.from_buffer(attr), len(attr)), "bpf")


def address_of(buf: bytearray) -> int:
    """The address of a bytearray's storage, for pointers inside bpf attrs; the caller keeps
    `buf` alive and unresized while the address is in use."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))


PR_CAP_AMBIENT = lib.PR_CAP_AMBIENT
PR_CAP_AMBIENT_RAISE = lib.PR_CAP_AMBIENT_RAISE
PR_CAP_AMBIENT_CLEAR_ALL = lib.PR_CAP_AMBIENT_CLEAR_ALL


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    """prctl(2) for what python-prctl lacks (ambient capabilities)."""
    return _check(lib.z_prctl(option, a2, a3, a4, a5), "prctl")


def personality(persona: int) -> int:
    """personality(2); 0xffffffff queries."""
    return _check(lib.z_personality(persona), "personality")


def clone_into_cgroup(cgroup_fd: int) -> int:
    """clone3(CLONE_INTO_CGROUP): like fork, but the child starts in the cgroup2 cgroup
    open at cgroup_fd, with no move (so no cgroup_threadgroup_rwsem, zoned.cgroups.join).
    Only for a single-threaded caller: the interpreter is not told about the fork."""
    return _check(lib.z_clone3(lib.CLONE_INTO_CGROUP, cgroup_fd, ffi.NULL), "clone3")


def clone_into_cgroup_reaches_kernel() -> bool:
    """Whether clone3 with CLONE_INTO_CGROUP gets to the kernel here. Probed with a call
    the kernel refuses before making anything (CLONE_THREAD with an exit signal: EINVAL);
    ENOSYS or EPERM instead mean no clone3, or a seccomp filter that denies it (docker's
    default profile answers ENOSYS)."""
    clone_thread = 0x00010000  # linux/sched.h
    rc = lib.z_clone3(lib.CLONE_INTO_CGROUP | clone_thread, -1, ffi.NULL)
    if rc == 0:  # cannot happen (see above): a child must not return into Python
        os._exit(127)
    return rc < 0 and ffi.errno not in (errno.ENOSYS, errno.EPERM)


def fork_exec(exe: int | str, argv: Sequence[str], keep: Sequence[int], *, flags: int = 0,
              cgroup_fd: int = -1, sock: int = -1) -> int:
    """Fork (clone3 with `flags`: CLONE_PARENT, CLONE_INTO_CGROUP with cgroup_fd) a child
    that execs `exe` (an fd: execveat; else a path) at once with no environment, the fds in
    `keep` inherited; its exec failure is said on `sock` (csrc/forkexec.c). Returns its
    pid and an ExecPending, whose finish() the caller must call on every path: until the
    child's exec it shares our memory, and the caller goes on meanwhile."""
    cargs = [ffi.new("char[]", _b(a)) for a in argv]
    cargv = ffi.new("char *[]", cargs + [ffi.NULL])
    cenv = ffi.new("char *[]", [ffi.NULL])
    fds = ffi.new("int[]", list(keep) or [0])
    exe_fd, path = (exe, ffi.NULL) if isinstance(exe, int) else (-1, _b(exe))
    pending = ffi.new("void **")
    pid = _check(lib.z_fork_exec_start(flags, cgroup_fd, exe_fd, path, fds, len(keep), cargv,
                                       cenv, sock, pending), "clone3")
    return pid, ExecPending(pending[0])


class ExecPending:
    """A child of fork_exec that may still share this process's memory (CLONE_VM) until
    its exec: finish() waits for that (at once, as a rule, by the time it is asked) and
    frees what the child ran on. The caller stays undumpable until then."""

    __slots__ = ("_handle",)

    def __init__(self, handle):
        self._handle = handle

    def finish(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            lib.z_fork_exec_finish(handle)


def clone_parent(flags: int = 0) -> int:
    """clone3(CLONE_PARENT | flags): the new process is our sibling, our parent's child.
    Like fork, returns 0 in the child. Only for a single-threaded child of zoned that is
    on its way to exec (the interpreter is not told about the fork)."""
    return _check(lib.z_clone3(lib.CLONE_PARENT | flags, -1, ffi.NULL), "clone3")


# openat2(2) resolve flags (linux/openat2.h)
RESOLVE_NO_XDEV = lib.RESOLVE_NO_XDEV
RESOLVE_NO_MAGICLINKS = lib.RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS = lib.RESOLVE_NO_SYMLINKS
RESOLVE_BENEATH = lib.RESOLVE_BENEATH
RESOLVE_IN_ROOT = lib.RESOLVE_IN_ROOT
PROC_SUPER_MAGIC = lib.PROC_SUPER_MAGIC


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2). Unlike openat, unknown flags fail (EINVAL): pass O_CLOEXEC explicitly."""
    return _check(lib.z_openat2(dirfd, _b(path), flags, mode, resolve), "openat2", path)


def fstatfs_type(fd: int) -> int:
    """The filesystem magic (statfs f_type) of an open file."""
    return _check(lib.z_fstatfs_type(fd), "fstatfs")


MOVE_MOUNT_T_EMPTY_PATH = lib.MOVE_MOUNT_T_EMPTY_PATH


def move_mount_to_fd(from_fd: int, to_fd: int) -> None:
    """Attach a detached mount (an open_tree fd) onto the file `to_fd` is open on (O_PATH
    will do): no path is walked."""
    _check(lib.z_move_mount(from_fd, b"", to_fd, b"",
                            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "move_mount")
