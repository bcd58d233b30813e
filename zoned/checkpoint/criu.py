"""CRIU itself: finding a usable criu (>= 4), its version, running it so that nothing
meant for zoned reaches it, the error lines of its logs, and what a migration asks of the
host (lazy pages, CPU features)."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

from zoned.errors import ZonedError

MIN_VERSION = (4, 0)
# The key of the container's network namespace, external to the dump (dump and restore).
NETNS_KEY = "zoned-netns"
LAZY_PIPE_SIZE = 4 << 20  # fs.pipe-max-size lazy dumps need (CRIU's page pipes)


@functools.lru_cache(maxsize=None)
def criu_version(path: str) -> tuple[int, ...] | None:
    """criu's version (asked once per process: it costs a fork and exec)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            try:
                return tuple(int(x) for x in line.split(":", 1)[1].strip().split(".")[:3])
            except ValueError:
                return None
    return None


def find_criu() -> str:
    """$ZONED_CRIU, then /usr/local/sbin/criu, then PATH; the first that is criu >= 4.
    (Debian 12's criu 3.17 at /usr/sbin fails on current kernels.) Asked once per
    process: `criu --version` costs milliseconds a migration's frozen time should not."""
    return _find_criu(os.environ.get("ZONED_CRIU", ""))


@functools.lru_cache(maxsize=None)
def _find_criu(env: str) -> str:
    candidates = [env] if env else []
    candidates.append("/usr/local/sbin/criu")
    found = shutil.which("criu")
    if found:
        candidates.append(found)
    seen = []
    for c in dict.fromkeys(candidates):
        if not os.access(c, os.X_OK):
            continue
        v = criu_version(c)
        if v is not None and v >= MIN_VERSION:
            return c
        seen.append(f"{c} ({'.'.join(map(str, v)) if v else 'unknown version'})")
    hint = "; found " + ", ".join(seen) if seen else ""
    raise ZonedError(f"checkpoint/restore needs criu >= 4 (run scripts/install-criu.sh or "
                     f"`make criu`, or set ZONED_CRIU){hint}")


# -- CRIU's kernel-facts cache ---------------------------------------------------------------
# Every criu command first learns what this kernel can do (kerndat: probing syscalls,
# pagemap, vDSO, `iptables -L` to load modules...): 30-40 ms here, three times in a live
# migration's frozen window (dump, lazy-pages, restore). CRIU caches it in /run/criu.kdat,
# but only where /run is a tmpfs (so that a reboot drops it). Where /run is not, zoned keeps
# the file CRIU made (in a private tmpfs, once per boot and criu binary) under the state
# root's tmpfs-or-not cache dir, keyed by boot id, and binds it over /run/criu.kdat in the
# private mount namespace of each criu it runs; nothing else on the host sees it.
KDAT = "/run/criu.kdat"
KDAT_DIR = "/run/zoned/.cache/criu"
TMPFS_MAGIC = 0x01021994


@functools.lru_cache(maxsize=None)
def kdat_cache(criu: str) -> str | None:
    """The kdat file to bind for `criu`, or None (CRIU caches itself, or it cannot be had:
    then criu just probes the kernel as usual)."""
    import hashlib

    try:
        if fs_type("/run") == TMPFS_MAGIC:
            return None
        st = os.stat(criu)
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        key = hashlib.sha256(f"{boot}:{criu}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
                             .encode()).hexdigest()[:20]
        path = os.path.join(KDAT_DIR, f"kdat-{key}")
        if not os.path.exists(path):
            if not _make_kdat(criu, path):
                return None
        # The mount point: an empty file where CRIU looks (a criu run without zoned's bind
        # finds it empty, calls it stale and removes it; the next run makes it again).
        if not os.path.lexists(KDAT):
            os.close(os.open(KDAT, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o600))
        if not os.path.isfile(KDAT) or os.path.islink(KDAT):
            return None
        return path
    except OSError:
        return None


def fs_type(path: str) -> int:
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type comes first
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(path.encode(), buf) != 0:
        raise OSError(ctypes.get_errno(), "statfs", path)
    return int.from_bytes(buf.raw[:8], "little")


def _make_kdat(criu: str, path: str) -> bool:
    """Let criu write its kdat into a tmpfs /run of a private mount namespace, and keep
    a copy at `path`."""
    from zoned.linux import syscalls as sc

    def private():
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)

    r = subprocess.run(["/bin/sh", "-c", 'mount -t tmpfs zoned-criu-kdat /run && '
                        '"$0" check >/dev/null 2>&1; cat /run/criu.kdat', criu],
                       capture_output=True, preexec_fn=private, timeout=60)
    if not r.stdout:
        return False
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(r.stdout)
    os.rename(tmp, path)
    return True


# zoned-criuexec (csrc/criuexec.c): sets criu's private mount namespace up and execs it,
# so that subprocess can vfork; a preexec_fn would make it fork the whole interpreter.
# It also binds the kdat cache over KDAT, making that empty mount point again first (another
# criu on the host, not run by zoned, finds it empty, calls it stale and removes it).
CRIU_EXEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "libexec", "zoned-criuexec")


def criu_exec(args: list[str], *, yard: tuple = (),
              overlay: tuple[str, str] | None = None,
              bind: tuple[str, str] | None = None) -> list[str]:
    """The argv that runs criu `args` in a private mount namespace with the kdat cache,
    the cgroup yard (zoned.checkpoint.cgroup_yard.plan()) and an overlay (target,
    options) or a recursive bind (source, target) mounted, through zoned-criuexec; `args`
    itself if criu needs none of them."""
    cache = kdat_cache(args[0])
    if cache is None and not yard and overlay is None and bind is None:
        return args
    if not os.access(CRIU_EXEC, os.X_OK):
        raise ZonedError(f"{CRIU_EXEC} is missing (run `make setup`)")
    pre = [*(["--overlay", *overlay] if overlay else []),
           *(["--bind", *bind] if bind else []),
           *(["--kdat", cache, KDAT] if cache else [])]
    if yard:
        from zoned.checkpoint import cgroup_yard

        pre += ["--yard", cgroup_yard.YARD, *(f"{n}={m}" for n, m in yard)]
    return [CRIU_EXEC, *pre, "--", *args]


def lazy_support(criu: str) -> str | None:
    """Why lazy (post-copy) restore cannot work here, or None if it can."""
    r = subprocess.run(criu_exec([criu, "check", "--feature", "uffd-noncoop"]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "the kernel lacks userfaultfd (criu check --feature uffd-noncoop failed)"
    return None


def ensure_pipe_size() -> None:
    """Lazy dumps keep pages in pipes CRIU sizes up to fs.pipe-max-size: raise it to 4 MiB
    if it is lower (root may write the sysctl even without CAP_SYS_RESOURCE)."""
    path = "/proc/sys/fs/pipe-max-size"
    try:
        with open(path) as f:
            if int(f.read()) >= LAZY_PIPE_SIZE:
                return
        with open(path, "w") as f:
            f.write(str(LAZY_PIPE_SIZE))
    except (OSError, ValueError) as e:
        raise ZonedError(f"lazy migration needs fs.pipe-max-size >= {LAZY_PIPE_SIZE}: "
                         f"{e}") from None


def run_criu(args: list[str], *, yard: tuple = (), overlay: tuple[str, str] | None = None,
             bind: tuple[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run CRIU to completion in a session of its own, in its private mount namespace
    (criu_exec). A signal meant for zoned (Ctrl-C, a killpg of its group) must not reach
    CRIU, and an exception raised in zoned while CRIU runs must not kill it: a CRIU ended
    mid-dump leaves the zone frozen and its network locked (the nftables table CRIU-*),
    which no put-back would then undo."""
    proc = subprocess.Popen(criu_exec(args, yard=yard, overlay=overlay, bind=bind),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate()
    except BaseException:
        while proc.returncode is None:  # it ends on its own: let it, then report the
            try:                           # interrupt (still reading its pipes, which a
                proc.communicate()         # CRIU writing into a full one would wait on)
            except BaseException:
                continue
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def log_tail(path: str, n: int = 6) -> str:
    """The error lines of a criu log, for a one-line message."""
    try:
        with open(path, errors="replace") as f:
            # (RLIMIT_NOFILE: criu cannot raise its own limit here; harmless, not the cause)
            lines = [ln.rstrip() for ln in f if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    except OSError:
        return ""
    return "; ".join(lines[-n:])


def version_string() -> str | None:
    """This host's criu version ("4.2.1"), or None without a usable criu."""
    try:
        return ".".join(map(str, criu_version(find_criu()) or ()))
    except ZonedError:
        return None


# scripts/install-criu.sh records the patch set it built criu with (sha256 of the
# concatenated scripts/criu-patches/*.patch) next to the binary it installs.
PATCHED_CRIU = "/usr/local/sbin/criu"
PATCH_MARKER = "/usr/local/share/zoned/criu-patches"
PATCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "criu-patches")


def build_facts() -> dict:
    """Which criu checkpoints and migrations use here, and whether it is zoned's build
    with the current patches (a stock criu works; its migrations freeze longer)."""
    import hashlib

    try:
        path = find_criu()
    except ZonedError as e:
        return {"criu": None, "why": str(e)}
    facts = {"criu": path, "version": version_string(), "patches": "none (a stock build)"}
    try:
        with open(PATCH_MARKER) as f:
            built = f.read().strip()
    except OSError:
        built = None
    if path == PATCHED_CRIU and built:
        try:
            names = sorted(n for n in os.listdir(PATCH_DIR) if n.endswith(".patch"))
            digest = hashlib.sha256()
            for n in names:
                with open(os.path.join(PATCH_DIR, n), "rb") as f:
                    digest.update(f.read())
            current = digest.hexdigest() == built
        except OSError:
            current = None  # no source tree here to compare with
        facts["patches"] = {True: "zoned's, current", False: "zoned's, outdated (make criu)",
                            None: "zoned's"}[current]
    return facts


def cpuinfo_dump() -> str | None:
    """This CPU's features as CRIU sees them (base64 of cpuinfo.img)."""
    import base64
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        criu = find_criu()
        r = subprocess.run(criu_exec([criu, "cpuinfo", "dump", "-D", d]),
                           capture_output=True)
        if r.returncode != 0:
            return None
        with open(os.path.join(d, "cpuinfo.img"), "rb") as f:
            return base64.b64encode(f.read()).decode()


def cpuinfo_check(d: str, data: str) -> list[str]:
    """Whether this CPU has the features of the source's (cpuinfo_dump()): the problems,
    one line each. d: a scratch dir for the image."""
    import base64

    path = os.path.join(d, "cpuinfo.img")
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    try:
        criu = find_criu()
        r = subprocess.run(criu_exec([criu, "cpuinfo", "check", "-D", d]),
                           capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        return ["this CPU lacks features the source's has (criu cpuinfo check): "
                + (r.stderr.strip().splitlines() or ["?"])[-1]]
    return []
