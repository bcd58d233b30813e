"""The mountinfo parser's users, from the outside: what checkpoint reads from a zone's
/proc/PID/mountinfo must name its mounts as the config does, UTF-8 and spaces included."""
from __future__ import annotations

import json
import time

from conftest import criu_or_skip

criu_or_skip()

DEST = "/dätä dir"  # UTF-8 and a space: the kernel writes it as /d\xc3\xa4t\xc3\xa4\040dir


def test_checkpoint_and_restore_a_zone_with_a_utf8_volume_path(cli, tmp_path):
    """The volume's mount point is found in the config (it was read back as "/dÃ¤tÃ¤ dir",
    and checkpoint refused: "mount ... is not in its config"), and the restored copy has
    the volume mounted there again."""
    vol = tmp_path / "vol"
    vol.mkdir()
    images = tmp_path / "ck"
    loop = f'while :; do echo x >> "{DEST}/f"; sleep 0.05; done'
    cli("run", "-d", "--name", "orig", "-v", f"{vol}:{DEST}", "--", "sh", "-c", loop,
        check=True)
    try:
        deadline = time.monotonic() + 10
        while not (vol / "f").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        p = cli("checkpoint", "--leave-running", "orig", "--dir", str(images))
        assert p.returncode == 0, p.stderr
        cli("restore", "--dir", str(images), "--name", "copy", check=True)
        ps = {c["id"]: c["status"] for c in json.loads(cli("ps", "-a", "--format", "json").stdout)}
        assert ps == {"orig": "running", "copy": "running"}
        escaped = DEST.replace(" ", "\\040")  # as the kernel writes it
        out = cli("exec", "copy", "--", "grep", "-F", f" {escaped} ", "/proc/self/mountinfo",
                  check=True).stdout
        assert out.count("\n") == 1  # the volume is mounted in the restored zone
    finally:
        cli("rm", "-f", "orig", "copy")
