"""Pipes in place of our terminal for a zone's process run without -t.

A process given our terminal itself (fds 0-2 that are a tty) keeps it: a program left
behind by `zoned exec` read what the admin typed at the shell's next prompt, and one with
CAP_SYS_ADMIN pushed input into that shell with TIOCSTI (found by session 21's audit).
runc and conmon give a process without a terminal pipes, and copy between them and their
own stdio; zoned does the same where one of ours is a terminal. Pipes and files are passed
on as they are: there is nothing of the caller's to take through them, and no copy costs.
Where fds 1 and 2 are the same terminal, one pipe stands in for both: two, read in turn,
would print a run of stdout's lines before stderr's written between them.
"""
from __future__ import annotations

import os
import select

CHUNK = 65536
DRAIN_READS = 16  # reads of each pipe once the process has exited (a pipe holds 64 KiB)


class Relay:
    """Pipes standing in for those of fds 0 (with stdin), 1 and 2 that are a terminal.
    stdio is what the process gets; call started() once it has them, then wait()."""

    def __init__(self, stdin: bool, null_stdin: int | None = None):
        self.stdio: list[int] = [0 if null_stdin is None else null_stdin, 1, 2]
        self._zone_ends: list[int] = []
        self._outs: dict[int, int] = {}  # our read end -> our fd it goes to
        self._in_w = -1  # the stdin pipe's write end (ours)
        self._pending = b""
        for fd in (1, 2):
            if fd == 2 and _same_terminal(1, 2):
                self.stdio[2] = self.stdio[1]  # (its copies go to our fd 1: the same)
            elif os.isatty(fd):
                r, w = os.pipe2(os.O_CLOEXEC)
                self.stdio[fd] = w
                self._zone_ends.append(w)
                self._outs[r] = fd
        if stdin and os.isatty(0):
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(w, False)  # a process that reads nothing must not stop us
            self.stdio[0] = r
            self._zone_ends.append(r)
            self._in_w = w

    def started(self) -> None:
        """The process has its ends: ours of them go, so EOF comes when its side ends."""
        for fd in self._zone_ends:
            os.close(fd)
        self._zone_ends = []

    def close(self) -> None:
        """Every fd left (after a failed start, or at the end)."""
        self.started()
        for fd in list(self._outs):
            os.close(fd)
        self._outs.clear()
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self._in_w >= 0:
            os.close(self._in_w)
            self._in_w = -1
        self._pending = b""

    def wait(self, pid: int) -> int:
        """Copy until `pid` (our child) has exited, then what it left in the pipes; its
        wait status."""
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            for r in self._outs:
                poller.register(r, select.POLLIN)
            reading_stdin = self._in_w >= 0
            if reading_stdin:
                poller.register(0, select.POLLIN)
            exited = False
            while not exited:
                for fd, _ev in poller.poll():
                    if fd == pidfd:
                        exited = True
                    elif fd in self._outs:
                        if not self._copy_out(fd):
                            poller.unregister(fd)
                    elif fd == 0:
                        if not self._read_stdin():
                            poller.unregister(0)
                            if self._in_w >= 0 and not self._pending:
                                self._close_stdin()  # EOF reaches the process
                        elif self._pending:  # the pipe is full: wait for it, not for 0
                            poller.unregister(0)
                            poller.register(self._in_w, select.POLLOUT)
                    elif fd == self._in_w:
                        if not self._flush_stdin():
                            poller.unregister(fd)
                            self._close_stdin()
                        elif not self._pending:
                            poller.unregister(fd)
                            poller.register(0, select.POLLIN)
            self._close_stdin()
            for r in list(self._outs):  # what it wrote before it exited: no wait for
                os.set_blocking(r, False)  # EOF, and at most a pipe's worth (a child of
                for _ in range(DRAIN_READS):  # an exec's may hold it, writing on)
                    if not self._copy_out(r):
                        break
        finally:
            os.close(pidfd)
            self.close()
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except InterruptedError:
                continue

    def _copy_out(self, r: int) -> bool:
        """One read of the process's output to our fd; False at EOF (or nothing now)."""
        try:
            data = os.read(r, CHUNK)
        except BlockingIOError:
            return False
        if not data:
            os.close(r)
            del self._outs[r]
            return False
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._outs[r], view):]
            except OSError:  # our terminal is gone: the rest is dropped
                break
        return True

    def _read_stdin(self) -> bool:
        """One read of our terminal for the process's stdin; False at EOF (or hangup)."""
        try:
            data = os.read(0, CHUNK)
        except OSError:  # EIO: the terminal hung up
            return False
        if not data:
            return False
        self._pending = data
        return self._flush_stdin()

    def _flush_stdin(self) -> bool:
        """Write what is pending as far as the pipe takes it; False if the process's side
        is closed."""
        try:
            n = os.write(self._in_w, self._pending)
        except BlockingIOError:
            return True
        except BrokenPipeError:
            return False
        self._pending = self._pending[n:]
        return True


def _same_terminal(a: int, b: int) -> bool:
    """Whether fds a and b are both the one terminal."""
    if not (os.isatty(a) and os.isatty(b)):
        return False
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino, sa.st_rdev) == (sb.st_dev, sb.st_ino, sb.st_rdev)
