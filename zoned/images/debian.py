"""A recipe's ``bootstrap:`` step: a real Debian userland from the Debian archive, made by
mmdebstrap (dependencies resolved by apt, maintainer scripts run), before the recipe's
debs/dirs/files/symlinks steps.

    bootstrap:
      tool: mmdebstrap          # the only one supported
      suite: bookworm           # default: the host's release
      variant: minbase          # mmdebstrap --variant (minbase, buildd, required, important...)
      components: [main]
      packages: [ca-certificates, iproute2]   # extra packages, dependencies resolved
      path_exclude: [/usr/share/man/*]        # dpkg path-exclude (and path_include) filters
      path_include: []
      mirror: host              # host: the host's own apt sources for the suite (default);
                                #   or a list of "deb URI suite comps" lines / URIs

The machines zoned runs on may reach the archive only through apt's configured sources (a
proxy, a snapshot, a local mirror), so the default copies the host's sources for the suite.
Downloaded .debs are kept in ``<store>/.cache/debs`` (or $ZONED_DEB_CACHE) and handed to
the next build through mmdebstrap's sync-in/sync-out hooks, so a rebuild downloads only
what changed. mmdebstrap runs in a private mount namespace (``unshare -m``): the /proc,
/sys and /dev mounts it makes inside the build dir die with it even if it is killed.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
import sys
from typing import Any

from zoned.images.errors import ImageError

_KEYS = ("tool", "suite", "variant", "components", "packages", "path_exclude", "path_include",
         "mirror")
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd",
             "important", "debootstrap", "standard")
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?\Z")
_WORD_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\Z")
# What a mirror entry may be: mmdebstrap takes its positional mirrors as URIs or sources
# lines, but parses options anywhere (`--setup-hook=CMD` would run CMD on the host as
# root), and writes them to a sources.list: no control character, no leading '-'.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_URI_RE = re.compile(r"^(https?|file)://[^\s\x00-\x1f\x7f]+\Z")
_DEB_LINE_RE = re.compile(r"^deb(-src)?( \[[^\]\x00-\x1f\x7f]*\])? (https?|file)://[^\s\x00-\x1f\x7f]+"
                          r"( [^\s\x00-\x1f\x7f]+)+\Z")
# apt's ways of saying the network or the archive cannot be reached
_UNREACHABLE = ("Failed to fetch", "Could not resolve", "Temporary failure resolving",
                "Could not connect", "Unable to connect", "Connection timed out",
                "Network is unreachable", "No route to host", "Connection refused")


class ArchiveUnreachable(ImageError):
    """apt could not reach the Debian archive through the configured sources."""


def host_codename() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "stable"


def validate(spec: Any, bad) -> dict[str, Any]:
    """The bootstrap: mapping, checked and with its defaults filled in."""
    if not isinstance(spec, dict):
        raise bad("bootstrap must be a mapping (tool, suite, variant, packages...)")
    extra = [k for k in spec if k not in _KEYS]
    if extra:
        raise bad(f"bootstrap: unknown key {extra[0]!r} (allowed: {', '.join(_KEYS)})")
    tool = spec.get("tool", "mmdebstrap")
    if tool != "mmdebstrap":
        raise bad(f"bootstrap.tool: {tool!r} is not supported (use mmdebstrap)")
    suite = spec.get("suite") or host_codename()
    if not (isinstance(suite, str) and _WORD_RE.match(suite)):
        raise bad(f"bootstrap.suite: invalid suite {suite!r}")
    variant = spec.get("variant", "minbase")
    if variant not in _VARIANTS:
        raise bad(f"bootstrap.variant: {variant!r} is not one of {', '.join(_VARIANTS)}")

    def words(key: str, pattern: re.Pattern, default: list[str]) -> list[str]:
        v = spec.get(key, default)
        if not (isinstance(v, list) and all(isinstance(x, str) and pattern.match(x) for x in v)):
            raise bad(f"bootstrap.{key} must be a list of names, got {v!r}")
        return v

    def paths(key: str) -> list[str]:
        v = spec.get(key, [])
        if not (isinstance(v, list) and all(isinstance(x, str) and x.startswith("/")
                                            and not _CONTROL_RE.search(x) for x in v)):
            raise bad(f"bootstrap.{key} must be a list of absolute path globs "
                      "(no control characters: each becomes a line of a dpkg config file)")
        return v

    mirror = spec.get("mirror", "host")
    if mirror != "host":
        if not (isinstance(mirror, list) and mirror):
            raise bad("bootstrap.mirror must be 'host' or a list of sources lines / URIs")
        for i, m in enumerate(mirror):
            if not (isinstance(m, str) and (_URI_RE.match(m) or _DEB_LINE_RE.match(m))):
                raise bad(f"bootstrap.mirror[{i}]: {m!r} is not an http(s)/file URI or a "
                          "'deb URI suite [components]' line")
    return {"tool": tool, "suite": suite, "variant": variant,
            "components": words("components", _WORD_RE, ["main"]),
            "packages": words("packages", _PKG_RE, []),
            "path_exclude": paths("path_exclude"), "path_include": paths("path_include"),
            "mirror": mirror}


def _deb822(text: str) -> list[dict[str, str]]:
    out, cur, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
        elif line[0].isspace() and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    return out


def host_sources(suite: str, components: list[str]) -> list[str]:
    """One-line sources for suite (and its -updates/-security) from the host's apt config."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security", f"{suite}/updates"}
    lines: list[str] = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for p in _deb822(text):
                if "deb" not in p.get("types", "").split() or p.get("enabled", "yes") == "no":
                    continue
                opts = f" [signed-by={p['signed-by']}]" if p.get("signed-by", "").startswith("/") else ""
                for uri in p.get("uris", "").split():
                    for s in p.get("suites", "").split():
                        if s in wanted:
                            lines.append(f"deb{opts} {uri} {s} {' '.join(components)}")
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(3) in wanted:
                    opts = f" {m.group(1).strip()}" if m.group(1) else ""
                    lines.append(f"deb{opts} {m.group(2)} {m.group(3)} {' '.join(components)}")
    return list(dict.fromkeys(lines))


def bootstrap(spec: dict[str, Any], rootfs: str, cache: str) -> dict[str, Any]:
    """Run mmdebstrap into the (empty) rootfs; returns provenance for image.json."""
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed: run `make setup` (or apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        raise ImageError("building a Debian image needs root (mmdebstrap --mode=root)")
    os.makedirs(cache, mode=0o755, exist_ok=True)
    mirrors = (host_sources(spec["suite"], spec["components"]) if spec["mirror"] == "host"
               else list(spec["mirror"]))
    argv = ["unshare", "--mount", "--propagation", "private", "--",
            "mmdebstrap", "--mode=root", f"--variant={spec['variant']}", "--format=directory",
            f"--components={','.join(spec['components'])}",
            "--aptopt=Acquire::Languages \"none\"", "--aptopt=Acquire::Retries \"2\"",
            "--skip=essential/unlink", "--dpkgopt=force-unsafe-io",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
            f"--setup-hook=sync-in {cache} /var/cache/apt/archives",
            f"--customize-hook=sync-out /var/cache/apt/archives {cache}"]
    if spec["packages"]:
        argv.append(f"--include={','.join(spec['packages'])}")
    for p in spec["path_exclude"]:
        argv.append(f"--dpkgopt=path-exclude={p}")
    for p in spec["path_include"]:
        argv.append(f"--dpkgopt=path-include={p}")
    # `--`: whatever follows is positional for mmdebstrap's Getopt, never an option
    argv += ["--", spec["suite"], rootfs] + mirrors
    tail = _run_with_progress(argv)
    _empty_dev(rootfs)
    with open(os.path.join(rootfs, "etc/debian_version")) as f:
        version = f.read().strip()
    return {"tool": "mmdebstrap", "suite": spec["suite"], "variant": spec["variant"],
            "packages": spec["packages"], "debian_version": version,
            "sources": mirrors or ["mmdebstrap default (deb.debian.org)"], "log_tail": tail[-3:]}


def _run_with_progress(argv: list[str]) -> list[str]:
    """Run the bootstrapper, echoing its lines to a terminal; a failure becomes one line."""
    show = sys.stderr.isatty()
    lines: list[str] = []
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise ImageError(f"cannot run mmdebstrap: {e.strerror}") from None
    assert p.stdout is not None
    for line in p.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        del lines[:-400]
        if show:
            sys.stderr.write(f"  {line}\n")
            sys.stderr.flush()
    rc = p.wait()
    if rc != 0:
        unreachable = [ln for ln in lines if any(u in ln for u in _UNREACHABLE)]
        if unreachable:
            raise ArchiveUnreachable("the Debian archive is unreachable through apt's sources: "
                                     + unreachable[0].strip()[:300])
        errs = [ln for ln in lines if ln.startswith("E:")] or [ln for ln in lines if ln.strip()][-1:]
        raise ImageError(f"mmdebstrap failed (exit {rc}): {errs[0].strip()[:300] if errs else ''}")
    return lines


def _empty_dev(rootfs: str) -> None:
    """Drop the device nodes mmdebstrap made: every runtime (zones, the VM's init) mounts its
    own /dev, and device nodes in an image would be refused on re-import."""
    dev = os.path.join(rootfs, "dev")
    if os.path.islink(dev) or not os.path.isdir(dev):
        return
    for n in os.listdir(dev):
        p = os.path.join(dev, n)
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(p)  # pts, shm: empty dirs (mounts are gone with the namespace)
        else:
            os.unlink(p)
