"""An ordinary user made for a test module or a benchmark run (rootless zones): useradd -m,
optionally a subordinate uid/gid range for newuidmap/newgidmap, commands run as it through
setpriv, and all of it removed again (the range, the user, its home and zoned's state)."""
from __future__ import annotations

import os
import pwd
import subprocess

RANGE = 65536  # subordinate ids given, as useradd's default


def free_range(path: str) -> int:
    """The first id above every range in /etc/subuid or /etc/subgid (and above 200000)."""
    top = 200000
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    top = max(top, int(parts[1]) + int(parts[2]))
    except FileNotFoundError:
        pass
    return top


class TempUser:
    """An ordinary user named PREFIX + 6 hex digits; `range`: the start of its subordinate
    range (None: its own ids only)."""

    def __init__(self, subids: bool, prefix: str):
        self.name = prefix + os.urandom(3).hex()
        subprocess.run(["useradd", "-m", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0",
                        self.name], check=True)
        self.range: int | None = None
        if subids:
            start = max(free_range("/etc/subuid"), free_range("/etc/subgid"))
            subprocess.run(["usermod", "--add-subuids", self._ids(start), "--add-subgids",
                            self._ids(start), self.name], check=True)
            self.range = start
        pw = pwd.getpwnam(self.name)
        self.uid, self.home = pw.pw_uid, pw.pw_dir

    @staticmethod
    def _ids(start: int) -> str:
        return f"{start}-{start + RANGE - 1}"

    def env(self, **extra) -> dict:
        """This process's environment as the user's: its HOME and names, none of zoned's
        roots or XDG dirs (a rootless zoned finds its own)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "ZONED_ROOT", "ZONED_DATA", "ZONED_IMAGES"))}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, **extra)
        env.pop("ZONED_CGROUP_PARENT", None)
        return env

    def argv(self, *argv: str) -> list[str]:
        """argv run as the user (setpriv: its uid, gid and groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--init-groups",
                "--", *argv]

    def run(self, *argv: str, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*argv), cwd="/", env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout)

    def remove(self) -> None:
        if self.range is not None:
            subprocess.run(["usermod", "--del-subuids", self._ids(self.range),
                            "--del-subgids", self._ids(self.range), self.name])
        subprocess.run(["pkill", "-KILL", "-u", self.name], capture_output=True)
        subprocess.run(["userdel", "-r", self.name], capture_output=True)
        subprocess.run(["rm", "-rf", f"/tmp/zoned-{self.uid}", f"/tmp/pytest-of-{self.name}"])
