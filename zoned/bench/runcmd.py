"""Running the commands a benchmark times: a blocking wait (subprocess's timeout= polls
with sleeps of up to 50 ms, which would round start times up), stderr to a file (never a
pipe: a detached container's init may inherit it and keep it open) and a timer that kills
a command that hangs."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time


class BenchFailure(Exception):
    """One measured command failed; the message names the command and its error."""


_ERR = None


def _errfile():
    global _ERR
    if _ERR is None:
        _ERR = tempfile.TemporaryFile()
    return _ERR


def run(cmd: list[str], timeout: float = 120, env: dict | None = None,
        what: str | None = None) -> float:
    """Run a command to completion with stdio on /dev/null; its wall time in seconds.
    Raises BenchFailure (with the end of its stderr) if it fails or times out."""
    err = _errfile()
    start = err.seek(0, os.SEEK_END)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                         env=env)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        rc = p.wait()
    except BaseException:
        stop(p)
        raise
    finally:
        timer.cancel()
    dt = time.perf_counter() - t
    if rc:
        raise BenchFailure(_failure(what or cmd[0], rc, err, start, timeout))
    return dt


def first_output(cmd: list[str], timeout: float = 120, env: dict | None = None,
                 what: str | None = None) -> float:
    """Run a command that prints a line; the seconds until that first line arrived on
    its stdout (the command is then waited for, untimed). BenchFailure if it prints
    nothing, fails or times out."""
    err = _errfile()
    start = err.seek(0, os.SEEK_END)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                         env=env)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    first = None
    try:
        fd = p.stdout.fileno()
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            if first is None and b"\n" in chunk:
                first = time.perf_counter() - t
        p.stdout.close()
        rc = p.wait()
    except BaseException:
        stop(p)
        raise
    finally:
        timer.cancel()
    if rc:
        raise BenchFailure(_failure(what or cmd[0], rc, err, start, timeout))
    if first is None:
        raise BenchFailure(f"{what or cmd[0]}: printed no line")
    return first


def stop(p: subprocess.Popen, grace: float = 30) -> None:
    """End a command the benchmark is abandoning (Ctrl-C, SIGTERM): SIGTERM, so that a
    `zoned run` removes its half-made instance itself, and wait for it; SIGKILL after
    `grace` s. Otherwise it could finish making an instance after the clean-up looked."""
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def output(cmd: list[str], timeout: float = 60, env: dict | None = None) -> str:
    """stdout of a helper command (not timed); BenchFailure with its stderr if it fails."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchFailure(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}: timed out "
                           f"after {timeout}s") from e
    if p.returncode:
        raise BenchFailure(f"{' '.join(cmd[:6])}: exit {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-300:]}")
    return p.stdout


def quiet(cmd: list[str], timeout: float = 120, env: dict | None = None) -> int:
    """Run a clean-up command, ignoring its output; its exit code (-1 if it could not run)."""
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout, env=env).returncode
    except (OSError, subprocess.SubprocessError):
        return -1


def _failure(what: str, rc: int, err, start: int, timeout: float) -> str:
    err.seek(start)
    text = err.read().decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else ""
    if rc == -signal.SIGKILL:
        return f"{what}: killed after a {timeout:g}s timeout {last}".strip()
    return f"{what}: exit {rc}: {last[-300:]}"
