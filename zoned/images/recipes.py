"""Recipes: parsing and validating YAML image recipes, building a rootfs from one (Debian
packages, busybox links, dirs, files, symlinks, config), the .deb cache, and exporting an image
as a tarball or an OCI bundle rootfs -- everything only `zoned image build/export` needs.

Kept apart from zoned.images.store so that looking an image up on `zoned run`'s start path never
imports dataclasses, pathlib, subprocess, tarfile & co: the store imports this module only
inside ImageStore.build and the export methods. The store's layout, locking and garbage
collection stay in zoned.images.store.

Recipe format (YAML; see images/busybox.yaml). Unknown keys are errors so typos don't build
a silently different image. Paths are absolute paths *inside* the image. Steps run in this order:

    name: busybox                 # required; [a-z0-9][a-z0-9_.-]*, the image name
    description: free text        # optional
    bootstrap: {suite: bookworm}  # a Debian userland by mmdebstrap first (zoned.images.debian)
    debs:                         # Debian packages: fetched (cache dir, then apt's archive
      - busybox-static            #   cache, else `apt-get download`), unpacked with
      - package: busybox-static   #   `dpkg-deb -x` (never installed on the host); `paths`
        paths: [/bin/busybox]     #   keeps only those files/dirs, default keeps everything
    busybox_links: true           # symlink every applet of /bin/busybox --list-full that
                                  #   lives in /bin /sbin /usr/bin /usr/sbin (never clobbers)
    dirs:                         # path: "mode" (quoted octal) or {mode, owner: "uid:gid"}
      /tmp: "1777"
    files:                        # path: content, or {content, mode (default "0644"), owner}
      /etc/hostname: "zone\\n"
    symlinks:                     # path: target (replaces whatever is there)
      /etc/mtab: /proc/mounts
    config:                       # runtime defaults; every key is optional
      cmd: [/bin/sh]
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
      workdir: /
      user: "0:0"
      hostname: zone              # omitted -> the runtime picks one

Builds run as root write through symlinks planted by packages only inside the rootfs
(symlinks are resolved as if chrooted), so a package's absolute link can't reach the host.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoned.images.errors import ImageError, valid_name

if TYPE_CHECKING:
    from zoned.images.store import ImageStore

DEFAULT_DEB_CACHE = "/var/cache/zoned/debs"  # overridable by $ZONED_DEB_CACHE
APT_ARCHIVES = "/var/cache/apt/archives"  # reused read-only when the .deb is already there
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_LINK_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")

_MODE_RE = re.compile(r"^[0-7]{3,4}\Z")
_OWNER_RE = re.compile(r"^\d+:\d+\Z")
_RECIPE_KEYS = ("name", "description", "bootstrap", "debs", "busybox_links", "dirs", "files", "symlinks", "config")
_CONFIG_KEYS = ("cmd", "env", "workdir", "user", "hostname")


# ---------------------------------------------------------------- recipes


@dataclass
class _Deb:
    package: str
    paths: list[str] | None  # relative paths to keep; None keeps the whole package


@dataclass
class _Recipe:
    source: Path
    name: str
    description: str = ""
    bootstrap: dict[str, Any] | None = None  # zoned.images.debian.validate's result
    debs: list[_Deb] = field(default_factory=list)
    busybox_links: bool = False
    dirs: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # rel -> (mode, owner)
    files: dict[str, tuple[bytes, int, str | None]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def load_recipe(path: Path) -> _Recipe:
    """Parse and fully validate a recipe before anything touches the store."""
    import yaml  # lazily: only builds need pyyaml

    def bad(msg: str) -> ImageError:
        return ImageError(f"recipe {path}: {msg}")

    try:
        text = path.read_text()
    except OSError as e:
        raise ImageError(f"cannot read recipe {path}: {e.strerror}") from None
    except UnicodeDecodeError:  # `zoned image build some.tar`
        raise bad("not a text file: a recipe is YAML (see images/busybox.yaml); "
                  "to use an image archive or rootfs tarball: zoned image import FILE") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise bad(f"invalid YAML: {problem}{where}") from None
    if not isinstance(doc, dict):
        raise bad("must be a YAML mapping with at least a 'name' key")
    unknown = [k for k in doc if k not in _RECIPE_KEYS]
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (allowed: {', '.join(_RECIPE_KEYS)})")
    name = doc.get("name")
    if name is None:
        raise bad("missing required key 'name'")
    if not isinstance(name, str) or not valid_name(name):
        raise bad(f"invalid name {name!r} (use lowercase letters, digits, '_', '.', '-')")
    r = _Recipe(source=path, name=name)

    r.description = _text(_typed(doc.get("description", ""), str, "description", bad).strip(),
                          "description", bad)  # one line of `image ls`: no terminal escapes
    r.busybox_links = _typed(doc.get("busybox_links", False), bool, "busybox_links", bad)
    if doc.get("bootstrap") is not None:
        from zoned.images.debian import validate

        r.bootstrap = validate(doc["bootstrap"], bad)

    for i, d in enumerate(_typed(doc.get("debs") or [], list, "debs", bad)):
        if isinstance(d, str):
            d = {"package": d}
        if not isinstance(d, dict):
            raise bad(f"debs[{i}] must be a package name or a mapping with 'package'")
        extra = [k for k in d if k not in ("package", "paths")]
        if extra:
            raise bad(f"debs[{i}]: unknown key {extra[0]!r} (allowed: package, paths)")
        pkg = d.get("package")
        if not isinstance(pkg, str) or not re.match(r"^[a-z0-9][a-z0-9+.-]+\Z", pkg):
            raise bad(f"debs[{i}]: invalid or missing package name {pkg!r}")
        paths = d.get("paths")
        if paths is not None:
            paths = [_rel(p, f"debs[{i}].paths", bad) for p in _typed(paths, list, f"debs[{i}].paths", bad)]
        r.debs.append(_Deb(pkg, paths))

    for p, v in _typed(doc.get("dirs") or {}, dict, "dirs", bad).items():
        where = f"dirs[{p}]"
        if not isinstance(v, dict):
            v = {"mode": v}
        _only(v, ("mode", "owner"), where, bad)
        r.dirs[_rel(p, "dirs", bad)] = (_mode(v.get("mode", "0755"), where, bad), _owner(v.get("owner"), where, bad))

    for p, v in _typed(doc.get("files") or {}, dict, "files", bad).items():
        where = f"files[{p}]"
        if not isinstance(v, dict):
            v = {"content": v}
        _only(v, ("content", "mode", "owner"), where, bad)
        content = v.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise bad(f"{where}: content must be a string")
        r.files[_rel(p, "files", bad)] = (content.encode(), _mode(v.get("mode", "0644"), where, bad),
                                          _owner(v.get("owner"), where, bad))

    for p, target in _typed(doc.get("symlinks") or {}, dict, "symlinks", bad).items():
        if not isinstance(target, str) or not target:
            raise bad(f"symlinks[{p}]: target must be a non-empty string")
        _text(target, f"symlinks[{p}]", bad)
        r.symlinks[_rel(p, "symlinks", bad)] = target

    cfg = _typed(doc.get("config") or {}, dict, "config", bad)
    _only(cfg, _CONFIG_KEYS, "config", bad)
    cmd = cfg.get("cmd", ["/bin/sh"])
    if not (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)):
        raise bad("config.cmd must be a non-empty list of strings")
    env = cfg.get("env", [DEFAULT_PATH])
    if not (isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env)):
        raise bad("config.env must be a list of 'NAME=value' strings")
    workdir = cfg.get("workdir", "/")
    if not (isinstance(workdir, str) and workdir.startswith("/")):
        raise bad("config.workdir must be an absolute path")
    user = cfg.get("user", "0:0")
    if not isinstance(user, str) or not user:
        raise bad("config.user must be a string like \"0:0\" or \"1000:1000\"")
    r.config = {"cmd": cmd, "env": env, "workdir": workdir, "user": user}
    if "hostname" in cfg:
        r.config["hostname"] = _text(_typed(cfg["hostname"], str, "config.hostname", bad),
                                     "config.hostname", bad)
    return r


def _typed(value: Any, typ: type, key: str, bad) -> Any:
    if not isinstance(value, typ):
        raise bad(f"{key} must be a {typ.__name__}, got {type(value).__name__}")
    return value


def _only(d: dict, allowed: tuple[str, ...], where: str, bad) -> None:
    extra = [k for k in d if k not in allowed]
    if extra:
        raise bad(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(allowed)})")


def _text(v: str, where: str, bad) -> str:
    """v if it holds no control character (newline, escape...): recipe strings end up in
    config files, command lines and terminals, where one would start a new line or option."""
    if any(c < " " or c == "\x7f" for c in v):
        raise bad(f"{where}: {v[:60]!r} contains a control character")
    return v


def _rel(p: Any, where: str, bad) -> str:
    """Absolute in-image path -> normalized relative path; rejects '..' so nothing escapes."""
    if not isinstance(p, str) or not p.startswith("/"):
        raise bad(f"{where}: path {p!r} must be absolute")
    _text(p, where, bad)
    parts = [c for c in p.split("/") if c not in ("", ".")]
    if ".." in parts or not parts:
        raise bad(f"{where}: path {p!r} must not contain '..' or be '/'")
    return "/".join(parts)


def _mode(m: Any, where: str, bad) -> int:
    # Quoted on purpose: YAML reads 1777 as decimal and 0755 as octal, a classic trap.
    if not (isinstance(m, str) and _MODE_RE.match(m)):
        raise bad(f"{where}: mode must be a quoted octal string like \"0755\", got {m!r}")
    return int(m, 8)


def _owner(o: Any, where: str, bad) -> str | None:
    if o is not None and not (isinstance(o, str) and _OWNER_RE.match(o)):
        raise bad(f"{where}: owner must be a quoted \"uid:gid\" string, got {o!r}")
    return o


# ---------------------------------------------------------------- building the rootfs


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, **kw)
    except OSError as e:
        raise ImageError(f"{what}: cannot run {argv[0]}: {e.strerror}") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("E:")] or lines[-1:]
        raise ImageError(f"{what}: {errs[0] if errs else f'exit status {p.returncode}'}")
    return p


@functools.lru_cache(maxsize=1)
def _dpkg_arch() -> str:
    return _run(["dpkg", "--print-architecture"], "dpkg").stdout.strip()


def _deb_fields(deb: Path) -> tuple[str, str, str]:
    out = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], f"reading {deb}").stdout
    f = dict(ln.split(": ", 1) for ln in out.splitlines() if ": " in ln)
    return f.get("Package", ""), f.get("Version", ""), f.get("Architecture", "")


def _fetch_deb(package: str) -> Path:
    """A .deb for package: newest already cached (ours, then apt's), else `apt-get download`.
    Cached files win over newer archive versions so rebuilds are repeatable and offline;
    delete the cache dir to refresh."""
    arch = _dpkg_arch()
    cache = Path(os.environ.get("ZONED_DEB_CACHE") or DEFAULT_DEB_CACHE)
    for d in (cache, Path(APT_ARCHIVES)):
        found = []
        for deb in d.glob(f"{package}_*.deb"):
            pkg, ver, a = _deb_fields(deb)
            if pkg == package and a in (arch, "all"):
                found.append((ver, deb))
        if found:
            def cmp(x: tuple[str, Path], y: tuple[str, Path]) -> int:
                if x[0] == y[0]:
                    return 0
                gt = subprocess.run(["dpkg", "--compare-versions", x[0], "gt", y[0]]).returncode == 0
                return 1 if gt else -1
            return max(found, key=functools.cmp_to_key(cmp))[1]

    # Download into a private temp dir and rename, so concurrent builds never see half a file.
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache))
    except OSError as e:
        raise ImageError(f"cannot create deb cache {cache}: {e.strerror}") from None
    try:
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError, OSError):  # let apt's sandbox user write there
                os.chown(tmp, pwd.getpwnam("_apt").pw_uid, -1)
        try:
            _run(["apt-get", "download", "-q", package], f"downloading Debian package {package!r}", cwd=tmp)
        except ImageError as e:
            raise ImageError(f"{e} (is the apt index current? try: apt-get update)") from None
        debs = list(tmp.glob(f"{package}_*.deb"))
        if not debs:
            raise ImageError(f"apt-get download {package} produced no .deb")
        dest = cache / debs[0].name
        os.replace(debs[0], dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resolve(root: Path, rel: str, follow_last: bool = False) -> Path:
    """Host path of rel inside root with symlinks followed as if chrooted at root (absolute
    targets restart at root, '..' stops at root), so writes never land outside the image."""
    parts = [c for c in rel.split("/") if c]
    last = None if follow_last else parts.pop()
    done: list[str] = []
    hops = 0
    while parts:
        c = parts.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, c)
        if here.is_symlink():
            hops += 1
            if hops > 40:
                raise ImageError(f"too many levels of symlinks resolving /{rel} in the image")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [t for t in target.split("/") if t] + parts
            continue
        done.append(c)
    return root.joinpath(*done, last) if last else root.joinpath(*done)


def _own(path: Path, owner: str | None) -> None:
    # Rootless builders can't chown; their images are owned by them (the runtime maps ids).
    if owner and os.geteuid() == 0:
        uid, gid = map(int, owner.split(":"))
        os.chown(path, uid, gid, follow_symlinks=False)


def _make_parent(path: Path) -> None:
    """mkdir -p of path's parent with mode 0755 whatever the umask (a 077 umask must not
    yield an image whose /usr is unreadable to container users)."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)


def _clear(path: Path, what: str) -> None:
    """Remove a non-directory at path so it can be replaced."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            raise ImageError(f"{what}: {path} exists in the image as a directory")
        path.unlink()


def _copy_tree_into(src_root: Path, rel: str, rootfs: Path) -> None:
    """Copy src_root/rel (file, symlink or whole dir) to the same place in rootfs, resolving
    destination parents inside rootfs (dpkg-deb/cp would follow a rootfs symlink anywhere)."""
    src = src_root / rel
    st = os.lstat(src)
    dst = _resolve(rootfs, rel)
    if stat.S_ISDIR(st.st_mode):
        # A symlinked dir in the image (e.g. /lib -> usr/lib) is merged through, like dpkg does.
        real = _resolve(rootfs, rel, follow_last=True)
        if not real.is_dir():
            _clear(real, f"unpacking /{rel}")
            _make_parent(real)
            real.mkdir()
        os.chmod(real, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(real, st.st_uid, st.st_gid)
        for child in sorted(os.listdir(src)):
            _copy_tree_into(src_root, f"{rel}/{child}", rootfs)
        return
    _make_parent(dst)
    _clear(dst, f"unpacking /{rel}")
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst, follow_symlinks=False)
    else:
        raise ImageError(f"unpacking /{rel}: unsupported file type in package")
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)


def build_rootfs(r: _Recipe, rootfs: Path, scratch: Path,
                 store: ImageStore | None = None) -> list[dict[str, Any]]:
    """Populate rootfs from the recipe; returns the packages used, for provenance (a
    bootstrap comes first, as {"bootstrap": ...})."""
    used: list[dict[str, Any]] = []
    if r.bootstrap:
        from zoned.images.debian import bootstrap

        cache = os.environ.get("ZONED_DEB_CACHE") or os.path.join(
            store.root_dir if store else str(scratch), ".cache", "debs")
        used.append({"bootstrap": bootstrap(r.bootstrap, str(rootfs), cache)})
    for i, d in enumerate(r.debs):
        deb = _fetch_deb(d.package)
        pkg, ver, _ = _deb_fields(deb)
        x = scratch / f"deb{i}"
        _run(["dpkg-deb", "-x", str(deb), str(x)], f"unpacking {deb.name}")
        for rel in d.paths if d.paths is not None else sorted(os.listdir(x)):
            if not os.path.lexists(x / rel):
                raise ImageError(f"recipe {r.source}: package {d.package} has no /{rel}")
            _copy_tree_into(x, rel, rootfs)
        shutil.rmtree(x)
        used.append({"package": pkg, "version": ver, "file": deb.name})

    if r.busybox_links:
        bb = rootfs / "bin/busybox"
        if not bb.is_file():
            raise ImageError(f"recipe {r.source}: busybox_links needs /bin/busybox (add busybox-static to debs)")
        applets = _run([str(bb), "--list-full"], "listing busybox applets").stdout.split()
        for rel in applets:
            if os.path.dirname(rel) not in BUSYBOX_LINK_DIRS:  # e.g. /linuxrc
                continue
            link = _resolve(rootfs, rel)
            if os.path.lexists(link):  # never clobber a real file from a package
                continue
            _make_parent(link)
            os.symlink(os.path.relpath("bin/busybox", os.path.dirname(rel)), link)

    for rel, (mode, owner) in r.dirs.items():
        p = _resolve(rootfs, rel, follow_last=True)
        if p.exists() and not p.is_dir():
            raise ImageError(f"recipe {r.source}: dirs: /{rel} exists and is not a directory")
        if not p.is_dir():
            _make_parent(p)
            p.mkdir()
        os.chmod(p, mode)  # explicit: mkdir's mode is filtered by umask and ignores sticky bits
        _own(p, owner)

    for rel, (content, mode, owner) in r.files.items():
        p = _resolve(rootfs, rel)
        _make_parent(p)
        _clear(p, f"recipe {r.source}: files")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(p, mode)
        _own(p, owner)

    for rel, target in r.symlinks.items():
        p = _resolve(rootfs, rel)
        _make_parent(p)
        _clear(p, f"recipe {r.source}: symlinks")
        os.symlink(target, p)
    return used


def tree_size(root: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            if not stat.S_ISDIR(st.st_mode):
                total += st.st_size
    return total


# ---------------------------------------------------------------- exporting


def export_rootfs_tar(store: ImageStore, name: str, dest_path: str | Path) -> Path:
    """ImageStore.export_rootfs_tar: the rootfs as a tarball (e.g. for `podman import`);
    .gz/.tgz compresses. Owners are numeric so the host's user names don't leak into it."""
    from zoned.linux.files import new_beside

    dest = Path(dest_path)
    mode = "w:gz" if dest.name.endswith((".gz", ".tgz")) else "w"

    def numeric(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uname = ti.gname = ""
        return ti

    with store.lock(shared=True):  # a concurrent rebuild must not delete it mid-read
        img = store.read_unlocked(name)
        tmp = None
        try:
            fd, tmp = new_beside(str(dest))  # not a fixed name: root writes it, maybe in /tmp
            with open(fd, "wb") as f, tarfile.open(fileobj=f, mode=mode,
                                                   format=tarfile.PAX_FORMAT) as tar:
                for child in sorted(os.listdir(img.rootfs_dir)):
                    tar.add(img.rootfs / child, arcname=child, filter=numeric)
            os.replace(tmp, dest)
        except BaseException as e:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(e, OSError):
                raise ImageError(f"exporting {name!r} to {dest}: {e}") from None
            raise
    return dest


def export_bundle(store: ImageStore, name: str, dir: str | Path) -> Path:
    """ImageStore.export_bundle: copy the rootfs to <dir>/rootfs for an OCI bundle (the
    runtime writes config.json); returns that path. A copy, not the shared lower dir, since
    OCI runtimes write to it."""
    bundle = Path(dir)
    dest = bundle / "rootfs"
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ImageError(f"{dest} already exists and is not empty")
    bundle.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=bundle))
    try:
        with store.lock(shared=True):
            img = store.read_unlocked(name)
            _run(["cp", "-a", "--reflink=auto", f"{img.rootfs_dir}/.", str(tmp)], f"copying image {name!r}")
        os.chmod(tmp, stat.S_IMODE(os.stat(img.rootfs_dir).st_mode))
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
