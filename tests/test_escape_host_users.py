"""What another (unprivileged) host user can do to root's zones through the files zoned
makes (found by session 21's audit), each tried as uid 65534 with setpriv:
- a zone's writable layer: a setuid-root file the zone made ran as root for any user
  (docker's CVE-2021-41091), and the zone's config (its env: secrets) was readable;
- checkpoints: `--export` wrote a fixed FILE.part through what a user planted there and
  left the archive 0644 (the zone's memory); `--dir` took a directory a user could write
  (CRIU then ran the action script the user had swapped in, as root) or a symlink (old
  images were deleted in the directory it led to); restore took archives a user could
  have swapped.
Targets are canaries under tmp_path; runc keeps /run/runc 0700, podman its storage 0700
and its checkpoint archives 0600."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

NOBODY = 65534


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """argv run as uid 65534, looked up by a shell already running as it (setpriv opens
    its own program before it drops root's rights)."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--", "/bin/sh", "-c", 'exec "$@"', "sh",
                           *argv], capture_output=True, text=True, timeout=30)


def test_another_user_reaches_no_zones_layer_config_or_log(cli, tmp_path):
    """The zone makes a setuid-root copy of its shell in /tmp and has a secret in its env:
    uid 65534 on the host can neither run the copy, nor read the config, the state or
    the log (all reached through the zone's own dirs, now 0700)."""
    cli("run", "-d", "--name", "hu", "-e", "SECRET=hu-secret", "--", "sleep", "1000",
        check=True)
    try:
        cli("exec", "hu", "--", "sh", "-c", "cp /bin/busybox /tmp/s && chmod 4755 /tmp/s",
            check=True)
        info = json.loads(cli("inspect", "hu", check=True).stdout)
        state_dir = Path(cli.root) / "hu"
        data = Path(json.loads((state_dir / "state.json").read_text())["zoned"]["data"])
        setuid_copy = data / "upper" / "tmp" / "s"
        assert setuid_copy.stat().st_mode & stat.S_ISUID  # it is there, for root
        p = as_nobody(str(setuid_copy), "id", "-u")
        assert p.returncode != 0 and "Permission denied" in p.stderr, (p.stdout, p.stderr)
        for f in (state_dir / "config.json", state_dir / "state.json", data / "ctr.log"):
            p = as_nobody("cat", str(f))
            assert p.returncode != 0 and "hu-secret" not in p.stdout, (f, p.stdout)
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert info  # (inspect as root still works)
    finally:
        cli("rm", "-f", "hu")


def _checkpointed(cli) -> None:
    cli("run", "-d", "--name", "hc", "-e", "SECRET=hc-secret", "--", "sleep", "1000",
        check=True)


@pytest.fixture
def criu():
    from conftest import criu_or_skip

    return criu_or_skip()


def test_an_export_is_root_s_alone_and_written_through_nothing_planted(cli, tmp_path, criu):
    """A file planted at the old fixed name (FILE.part, a symlink to a canary) is not
    written through; the archive is 0600."""
    canary = tmp_path / "canary"
    canary.write_text("precious\n")
    out = tmp_path / "hc.tar.zst"
    os.symlink(canary, str(out) + ".part")
    _checkpointed(cli)
    try:
        cli("checkpoint", "--leave-running", "--export", str(out), "hc", check=True,
            timeout=120)
    finally:
        cli("rm", "-f", "hc")
    assert canary.read_text() == "precious\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.stat().st_uid == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary", "hc.tar.zst",
                                                         "hc.tar.zst.part"]


@pytest.mark.parametrize("kind", ["world-writable parent", "other user's dir", "symlink"])
def test_a_checkpoint_dir_others_could_swap_is_refused(cli, tmp_path, criu, kind):
    """Nothing is dumped, nothing deleted, the zone keeps running."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "disk.img").write_text("not criu's\n")
    if kind == "world-writable parent":
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        target, words = shared / "ckpt", "writable by others"
    elif kind == "other user's dir":
        target, words = tmp_path / "theirs", "belongs to uid 65534"
        target.mkdir()
        os.chown(target, NOBODY, NOBODY)
    else:
        target, words = tmp_path / "link", "a symlink"
        target.symlink_to(victim)
    _checkpointed(cli)
    try:
        p = cli("checkpoint", "--leave-running", "--dir", str(target), "hc", timeout=120)
        assert p.returncode == 125 and words in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert (victim / "disk.img").read_text() == "not criu's\n"
        assert json.loads(cli("state", "hc", check=True).stdout)["status"] == "running"
    finally:
        cli("rm", "-f", "hc")
    assert not (target / "pstree.img").exists()


def test_restore_takes_no_archive_others_could_have_swapped(cli, tmp_path, criu):
    """An archive (or a directory) of another user, or one they can write, is refused
    before anything is unpacked or made."""
    out = tmp_path / "hc.tar.zst"
    _checkpointed(cli)
    try:
        cli("checkpoint", "--export", str(out), "hc", check=True, timeout=120)
    finally:
        cli("rm", "-f", "hc")
    out.chmod(0o666)
    p = cli("restore", "--import", str(out))
    assert p.returncode == 125 and "writable by others" in p.stderr, p.stderr
    out.chmod(0o600)
    os.chown(out, NOBODY, NOBODY)
    p = cli("restore", "--import", str(out))
    assert p.returncode == 125 and "belongs to uid 65534" in p.stderr, p.stderr
    os.chown(out, 0, 0)
    p = cli("restore", "--import", str(out), "--name", "hc2", timeout=120)
    assert p.returncode == 0, p.stderr
    cli("rm", "-f", "hc2", check=True)


def test_no_symlink_of_another_user_on_the_way_and_root_s_group_is_trusted(tmp_path):
    """A symlink another user owns anywhere on the path (found by the second audit:
    realpath() first hid it) is refused: they could point it elsewhere once checked.
    A directory writable by root's group alone is root's."""
    from zoned.checkpoint.private import check_own
    from zoned.errors import ConfigError

    safe = tmp_path / "safe" / "cp"
    safe.mkdir(parents=True)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.symlink(safe.parent, theirs / "link")
    os.symlink(safe.parent, tmp_path / "toplink")
    for p in (theirs, theirs / "link", tmp_path / "toplink"):
        os.lchown(p, NOBODY, NOBODY)
    for path in (theirs / "link" / "cp", tmp_path / "toplink" / "cp"):
        with pytest.raises(ConfigError, match="is a symlink of uid 65534"):
            check_own(str(path), "--dir", directory=True)
    os.lchown(tmp_path / "toplink", 0, 0)  # root's link in a root-only dir: fine
    check_own(str(tmp_path / "toplink" / "cp"), "--dir", directory=True)
    group = tmp_path / "group"
    (group / "cp").mkdir(parents=True)
    group.chmod(0o775)  # root:root
    check_own(str(group / "cp"), "--dir", directory=True)


def test_a_directory_an_acl_lets_another_user_write_is_refused(tmp_path):
    """A root-owned 0755 directory where a POSIX ACL gives user nobody rwx (the mode's
    group bits are then the ACL's mask, and the group root's): nobody could swap a saved
    file there (the third audit moved root's one away), so it is refused; an ACL entry
    for root, or one without write, is not."""
    import struct

    from zoned.checkpoint.private import check_own
    from zoned.errors import ConfigError

    def set_acl(d, who: int, perm: int) -> None:  # setfacl -m u:WHO:PERM, as the xattr
        ent = lambda tag, p, i=0xFFFFFFFF: struct.pack("=HHI", tag, p, i)  # noqa: E731
        os.setxattr(d, "system.posix_acl_access", struct.pack("=I", 2) + ent(0x01, 7)
                    + ent(0x02, perm, who) + ent(0x04, 5) + ent(0x10, 7) + ent(0x20, 5))

    d = tmp_path / "acl"
    (d / "cp").mkdir(parents=True)
    d.chmod(0o755)
    try:
        set_acl(d, NOBODY, 7)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {e.strerror}")
    with pytest.raises(ConfigError, match="writable by others"):
        check_own(str(d / "cp"), "--dir", directory=True)
    set_acl(d, NOBODY, 5)
    check_own(str(d / "cp"), "--dir", directory=True)
    set_acl(d, 0, 7)
    check_own(str(d / "cp"), "--dir", directory=True)
