"""`zoned cp` against a hostile zone (found in session 20's audit), tried as an attacker would:

- an NSS module the zone plants (its nsswitch.conf names it): the copy's zone side must never
  load it (docker's CVE-2019-14271), for a running and a stopped zone;
- a stopped zone whose path to a volume's destination goes through a symlink to the host's
  state directory, with the volume holding `NAME/rootfs -> /`: the copy must stay inside the
  zone (the volume bound only where the zone's own path leads, inside its root);
- a read-only volume and a --read-only zone, stopped: nothing is written through them;
- a symlink to a FIFO as the destination: replaced, never opened (no hang);
- the host side's destination swapped for a symlink mid-stream: the copy keeps writing
  where it began (zoned.images.unpack.Unpacker, as it unpacks the stream);
- a zone's file in the place of a host directory the copy merges into: refused, the
  directory kept.
Every attack aims at canaries under tmp_path, never at real host files.
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

PROGS = Path(__file__).resolve().parent / "progs"


def _detached(cli, name: str, *argv: str, flags: tuple[str, ...] = ()) -> None:
    cli("run", "-d", "--name", name, *flags, "--", *argv, check=True)


def _nss_module(tmp_path: Path) -> Path:
    out = tmp_path / "libnss_probe.so.2"
    try:
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out),
                        str(PROGS / "nss_probe.c")], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot build the NSS probe with gcc: {e}")
    return out


def _plant_nss(cli, name: str, module: Path) -> None:
    """What the zone does to itself: the module in its /lib, and an nsswitch.conf that
    names it for every user and group lookup; and a file owned by a user with no name."""
    cli("cp", str(module), f"{name}:/tmp/libnss_probe.so.2", check=True)
    cli("exec", name, "sh", "-c",
        "mkdir -p /lib/x86_64-linux-gnu /usr/lib && "
        "cp /tmp/libnss_probe.so.2 /lib/x86_64-linux-gnu/ && "
        "cp /tmp/libnss_probe.so.2 /usr/lib/ && "
        "printf 'passwd: probe\\ngroup: probe\\n' > /etc/nsswitch.conf && "
        "echo report > /tmp/report && chown 4242:4343 /tmp/report", check=True)


def test_cp_never_loads_the_zones_nss_modules(cli, tmp_path):
    """Copying a file out of a zone that planted an NSS module loads none of it, running
    or stopped: no mark in the zone, and the copy keeps the owner as a number."""
    module = _nss_module(tmp_path)
    _detached(cli, "cpnss", "sleep", "1000")
    _plant_nss(cli, "cpnss", module)
    for round_, stop in (("running", False), ("stopped", True)):
        if stop:
            cli("stop", "-t", "0", "cpnss", check=True)
        out = tmp_path / f"report-{round_}"
        p = cli("cp", "cpnss:/tmp/report", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_text() == "report\n"
        st = out.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4343)
        mark = cli("cp", "cpnss:/nss-ran", str(tmp_path / f"mark-{round_}"))
        assert mark.returncode == 125 and "no such file" in mark.stderr, \
            (round_, (tmp_path / f"mark-{round_}").read_text() if mark.returncode == 0
             else mark.stderr)
    cli("rm", "-f", "cpnss", check=True)


def test_cp_into_a_stopped_zone_stays_inside_it_whatever_its_volume_paths(cli, tmp_path):
    """The zone makes the path to its volume's destination lead to the host's state
    directory, and plants NAME/rootfs -> / in the volume: were the volume bound there
    (the host's path) and the root then entered by its path, the copy would land on the
    host. It looks in the zone (where the canary's directory does not exist)."""
    state_parent = os.path.dirname(cli.root)  # e.g. /run
    base = os.path.basename(cli.root)
    vol = tmp_path / "vol"
    vol.mkdir()
    canary = tmp_path / "canary"
    canary.write_text("host\n")
    script = (f"mv /opt /opt.old && ln -s {state_parent} /opt && "
              f"mkdir -p /opt.old/{base}/cpvol && ln -s / /opt.old/{base}/cpvol/rootfs && "
              "sleep 1000")
    _detached(cli, "cpvol", "sh", "-c", script, flags=("-v", f"{vol}:/opt/{base}"))
    time.sleep(0.5)
    assert (vol / "cpvol" / "rootfs").is_symlink()  # the trap is set
    cli("stop", "-t", "0", "cpvol", check=True)
    new = tmp_path / "new"
    new.write_text("from the copy\n")
    p = cli("cp", str(new), f"cpvol:{canary}")  # on the host only were the root the host's
    assert canary.read_text() == "host\n", p
    assert p.returncode == 125 and "no such directory in the container" in p.stderr, p.stderr
    cli("rm", "-f", "cpvol", check=True)


def test_cp_into_a_stopped_zone_keeps_read_only_volumes_and_root(cli, tmp_path):
    """A zone's symlink into its read-only volume does not let a copy into the stopped
    zone write the host's directory; a --read-only zone, stopped, takes no file."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "app.conf").write_text("host\n")
    new = tmp_path / "new.conf"
    new.write_text("zone\n")
    _detached(cli, "cpro", "sh", "-c", "ln -s /hostcfg/app.conf /tmp/app.conf; sleep 1000",
              flags=("-v", f"{shared}:/hostcfg:ro"))
    time.sleep(0.5)
    running = cli("cp", str(new), "cpro:/tmp/app.conf")
    cli("stop", "-t", "0", "cpro", check=True)
    stopped = cli("cp", str(new), "cpro:/hostcfg/app.conf")
    assert (shared / "app.conf").read_text() == "host\n", (running, stopped)
    assert stopped.returncode == 125 and "Read-only" in stopped.stderr, stopped.stderr
    _detached(cli, "cpror", "sleep", "1000", flags=("--read-only",))
    cli("stop", "-t", "0", "cpror", check=True)
    p = cli("cp", str(new), "cpror:/etc/new.conf")
    assert p.returncode == 125 and "Read-only" in p.stderr, p.stderr
    cli("rm", "-f", "cpro", "cpror", check=True)


def test_cp_over_a_symlink_to_a_fifo_replaces_it(cli, tmp_path):
    """A destination that is a symlink to a FIFO is replaced by the file: never opened
    (the copy would wait for a reader forever)."""
    src = tmp_path / "f"
    src.write_text("data\n")
    _detached(cli, "cpfifo", "sh", "-c",
              "mkfifo /tmp/fifo && ln -s /tmp/fifo /tmp/looks-like-a-file && sleep 1000")
    time.sleep(0.5)
    p = cli("cp", str(src), "cpfifo:/tmp/looks-like-a-file", timeout=30)
    assert p.returncode == 0, p.stderr
    assert cli("exec", "cpfifo", "cat", "/tmp/looks-like-a-file").stdout == "data\n"
    assert cli("exec", "cpfifo", "test", "-p", "/tmp/fifo").returncode == 0
    cli("rm", "-f", "cpfifo", check=True)


def test_cp_out_never_replaces_a_hosts_directory_with_a_zones_file(cli, tmp_path):
    """Copying a zone's tree into a host directory that already holds it: where the zone
    has a file and the host a directory, the copy is refused and the host's directory and
    its files stay (docker refuses the same)."""
    out = tmp_path / "out"
    (out / "d" / "a").mkdir(parents=True)
    (out / "d" / "a" / "keep").write_text("host\n")
    _detached(cli, "cpdir", "sh", "-c", "mkdir /d && echo zone > /d/a && sleep 1000")
    time.sleep(0.5)
    p = cli("cp", "cpdir:/d", str(out))
    assert p.returncode == 125 and "a directory is in its place" in p.stderr, p.stderr
    assert (out / "d" / "a" / "keep").read_text() == "host\n"
    cli("rm", "-f", "cpdir", check=True)


def _stream(names: list[str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = 5, 0o4755  # setuid: kept only where privileged
                tar.addfile(info, io.BytesIO(b"data\n"))
    buf.seek(0)
    return buf


def test_unpacking_keeps_to_the_destination_it_opened(tmp_path):
    """The destination swapped for a symlink to elsewhere between two entries (a zone
    racing a copy out into its own volume): the rest still lands where the copy began,
    nothing elsewhere. What comes from a zone onto the host loses its setuid bit."""
    from zoned.images.unpack import Unpacker

    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()

    def swap(member) -> None:
        if member.name == "top/f2":
            dest.rename(tmp_path / "moved")
            dest.symlink_to(elsewhere)

    Unpacker(str(dest), layered=False, privileged=False).apply(
        _stream(["top/", "top/f1", "top/f2"]), "cp", swap)
    assert sorted(os.listdir(tmp_path / "moved" / "top")) == ["f1", "f2"]
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "moved" / "top" / "f2").stat().st_mode & 0o7777 == 0o755
    kept = tmp_path / "kept"
    kept.mkdir()
    Unpacker(str(kept), layered=False).apply(_stream(["f"]), "layer")
    assert (kept / "f").stat().st_mode & 0o7777 == 0o4755


def test_cp_reports_the_hosts_refusal_not_a_broken_pipe(cli, tmp_path):
    """A copy out that the host side refuses (a hard link out of the destination can only
    come from a crafted stream; a device node can come from any zone) says why."""
    _detached(cli, "cpdev", "sh", "-c", "mkdir /d && mknod /d/null c 1 3 && sleep 1000",
              flags=("--cap-add", "MKNOD"))
    time.sleep(0.5)
    p = cli("cp", "cpdev:/d", str(tmp_path))
    assert p.returncode == 125 and "device node" in p.stderr, p.stderr
    assert not (tmp_path / "d" / "null").exists()
    cli("rm", "-f", "cpdev", check=True)

