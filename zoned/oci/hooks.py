"""OCI lifecycle hooks (runtime-spec config.md#posix-platform-hooks).

Each hook is a program run with the container's state JSON on stdin. Where they run:
  prestart, createRuntime  the runtime's namespaces, once the container's namespaces exist
  createContainer          inside the container's namespaces, before pivot_root
  startContainer           inside the container, just before the process is executed
  poststart                the runtime, after the process has started
  poststop                 the runtime, after the container is deleted
A failing hook of the first four fails the operation; poststart and poststop failures are
warnings (the spec's rules). Hooks are run with fork and execve directly rather than
subprocess: the container child calls them after pivot_root, where the Python standard
library may no longer be reachable.
"""
from __future__ import annotations

import os
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import sys
import time

from zoned.errors import ZonedError
from zoned.linux import jsonc

FATAL = ("prestart", "createRuntime", "createContainer", "startContainer")
ALL = FATAL + ("poststart", "poststop")


class HookError(ZonedError):
    """A hook failed: the operation fails with this one line."""


def check(hooks: dict | None) -> None:
    """Validate the config's hooks before anything is created."""
    from zoned.errors import ConfigError

    for kind, items in (hooks or {}).items():
        if kind not in ALL:
            raise ConfigError(f"config.json: unknown hook kind {kind!r}")
        for i, h in enumerate(items or []):
            if not isinstance(h, dict) or not str(h.get("path", "")).startswith("/"):
                raise ConfigError(f"config.json: hooks.{kind}[{i}].path must be absolute")
            if "timeout" in h and (not isinstance(h["timeout"], int) or h["timeout"] <= 0):
                raise ConfigError(f"config.json: hooks.{kind}[{i}].timeout must be > 0")


def run(hooks: dict | None, kind: str, state: dict) -> None:
    """Run the config's hooks of `kind` in order; raise HookError for fatal kinds."""
    for h in (hooks or {}).get(kind) or []:
        try:
            run_one(h, state)
        except HookError as e:
            if kind in FATAL:
                raise HookError(f"{kind} hook {h['path']}: {e}") from None
            sys.stderr.write(f"zoned: warning: {kind} hook {h['path']}: {e}\n")


def run_one(hook: dict, state: dict) -> None:
    data = jsonc.dumps(state).encode()
    args = list(hook.get("args") or [hook["path"]])
    env = list(hook.get("env") or [])
    rin, win = os.pipe()
    rerr, werr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the hook process
        try:
            os.dup2(rin, 0)
            os.dup2(werr, 2)
            for fd in (rin, win, rerr, werr):
                os.close(fd)
            try:  # in the bundle, as runc runs its hooks (it works there)
                os.chdir(state.get("bundle") or "/")
            except OSError:  # (a hook inside the container, after pivot_root: no such path)
                pass
            os.execve(hook["path"], args, dict(e.split("=", 1) for e in env if "=" in e))
        except BaseException as exc:  # noqa: BLE001
            os.write(2, f"exec: {exc}".encode())
        os._exit(127)
    os.close(rin)
    os.close(werr)
    try:
        os.write(win, data)
    except BrokenPipeError:
        pass  # a hook that does not read its stdin is fine
    os.close(win)
    deadline = time.monotonic() + hook["timeout"] if hook.get("timeout") else None
    err = b""
    os.set_blocking(rerr, False)
    while True:
        try:
            chunk = os.read(rerr, 4096)
            if chunk:
                err = (err + chunk)[-4096:]
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, _signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(rerr)
            raise HookError(f"timed out after {hook['timeout']}s")
        time.sleep(0.002)
    try:
        err += os.read(rerr, 4096)
    except BlockingIOError:
        pass
    os.close(rerr)
    if os.WIFSIGNALED(status):
        raise HookError(f"killed by signal {os.WTERMSIG(status)}")
    if os.WEXITSTATUS(status):
        detail = err.decode(errors="replace").strip().splitlines()
        raise HookError(f"exit status {os.WEXITSTATUS(status)}"
                        + (f": {detail[-1]}" if detail else ""))
