"""The receiving side of a migration: Session checks everything a restore needs before
the source freezes, unpacks the images, restores the container *stopped*, and lets it run
only when the source commits: so the container never runs in two places, and a failure at
any point before the commit leaves it running on the source and nothing here.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time

from zoned.checkpoint.archive import check_meta, tar_stream
from zoned.checkpoint.criu import cpuinfo_check, ensure_pipe_size, version_string
from zoned.checkpoint.incoming import Incoming, reclaim
from zoned.checkpoint.criu_restore import wait_lazy_pages
from zoned.checkpoint.restore import check_restore, resume
from zoned.checkpoint.scratch import scratch_dir, scratch_done
from zoned.errors import ZonedError
from zoned.migration.timeline import Timeline
from zoned.migration.transport import COMMIT_TIMEOUT, PROTOCOL, Channel, PeerGone
from zoned.testhooks import pause


class Session:
    """One incoming migration on the destination."""

    def __init__(self, rt, ch: Channel, peer: str, log=None):
        self.rt, self.ch, self.peer = rt, ch, peer
        self.log = log or (lambda msg: None)
        self.dir: str | None = None
        self.cid: str | None = None
        self.restored = False
        self.incoming = None  # prepared before the freeze, not restored yet

    def run(self) -> None:
        try:
            self._run()
        except PeerGone as e:
            self.log(f"{self.peer}: {e}")
            self._undo()
        except BaseException as e:
            self.log(f"{self.peer}: migration of {self.cid or '?'} failed: {e}")
            self._undo()
            try:
                self.ch.send_msg({"op": "error", "error": f"destination: {e}"})
            except ZonedError:
                pass
            if not isinstance(e, Exception):
                raise
        finally:
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                scratch_done(self.rt)

    def _run(self) -> None:
        hello = self.ch.expect("hello", timeout=60)
        if hello.get("protocol") != PROTOCOL:
            raise ZonedError(f"protocol {hello.get('protocol')} is not {PROTOCOL}")
        if hello.get("kind") == "vm":
            from zoned.migration.vm import receive_vm

            return receive_vm(self, hello)
        meta = check_meta(hello.get("meta"), f"{self.peer}: the checkpoint's metadata")
        live = bool(hello.get("live"))
        self.cid = cid = meta["id"]
        self.log(f"{self.peer}: {'live ' if live else ''}migration of {cid}")
        if reclaim(self.rt, cid):
            self.log(f"{self.peer}: removed {cid} left by an earlier session that died")
        problems = check_restore(self.rt, meta, cid, lazy=live)
        self.dir = tempfile.mkdtemp(prefix=f"in-{os.getpid()}-{cid}-", dir=scratch_dir(self.rt))
        if hello.get("cpuinfo") and not problems:
            problems += cpuinfo_check(self.dir, hello["cpuinfo"])
        if live and not problems:
            try:
                ensure_pipe_size()
            except ZonedError as e:
                problems.append(str(e))
        prep = Timeline()
        if not problems:
            # Before the source freezes: state, network (its links held down), cgroup.
            self.incoming = Incoming(self.rt, meta, self.dir, cid)
            try:
                self.incoming.prepare(hold_links=True, mark=prep.mark)
            except ZonedError as e:
                self.incoming = None
                problems.append(f"cannot prepare the restore: {e}")
        self.ch.send_msg({"op": "ready", "problems": problems,
                          "criu": version_string(), "kernel": os.uname().release,
                          "timeline": prep.to_list()})
        if problems:
            return
        msg = self.ch.recv_msg()
        if msg.get("op") != "images":
            self._undo()
            return  # the source gave up (its own dump failed)
        t0 = time.monotonic()
        tl = Timeline()  # the destination's part of the frozen window
        self.log(f"{self.peer}: receiving the images of {cid}")
        pause("ZONED_TEST_PAUSE_RECEIVE")
        # criu restore's move of the tasks into their cgroups finds the kernel's way open
        # (zoned.cgroups.prime): the grace period it would wait for passes meanwhile.
        from zoned.cgroups import prime

        prime.prime()
        try:
            self._untar()
            tl.mark("unpack")
            page_sock = mine = None
            if live:
                mine, page_sock = socket.socketpair()
            self.ch.demux(page_sock)
            incoming, self.incoming = self.incoming, None  # restore() undoes its failure
            try:
                st = incoming.restore(lazy_socket=mine.fileno() if mine else None,
                                      stopped=True, consume=True, mark=tl.mark)
            finally:
                if mine is not None:
                    mine.close()
        finally:
            prime.wait()
        self.restored = True
        self.ch.send_msg({"op": "restored", "pid": st["pid"],
                          "restore_s": time.monotonic() - t0, "timeline": tl.to_list()})
        msg = self.ch.recv_msg(timeout=COMMIT_TIMEOUT)
        if msg.get("op") != "commit":
            raise ZonedError(f"the source did not commit ({msg.get('op')})")
        tl = Timeline()
        resume(self.rt, cid, timeline=tl)
        self.restored = False  # from here on it lives here
        self.ch.send_msg({"op": "committed", "timeline": tl.to_list()})
        from zoned.network.checkpoint_hooks import close_lingering

        close_lingering()  # the ARPs' sockets, now that the freeze is over
        self.log(f"{self.peer}: {cid} is running here")
        if live:
            try:
                wait_lazy_pages(st["pid"])
            except ZonedError as e:
                # Without its pages the copy here cannot run: the source's CRIU gives the
                # container back to the source when its page server fails.
                self.log(f"{self.peer}: post-copy of {cid} failed: {e}; removing it")
                self.rt.delete(cid, force=True)
                raise
            self.ch.send_msg({"op": "done"})
            self.log(f"{self.peer}: {cid}: every page arrived")

    def _untar(self) -> None:
        with tar_stream(["-xf", "-", "-C", self.dir], what="unpacking the images",
                        writing=True) as fd:
            self.ch.recv_file_stream(fd)

    def _undo(self) -> None:
        """Nothing half-restored stays: the stopped copy goes (the source still runs)."""
        if self.incoming is not None:
            incoming, self.incoming = self.incoming, None
            incoming.discard()
        if self.restored and self.cid:
            try:
                self.rt.delete(self.cid, force=True)
            except ZonedError:
                pass
            self.restored = False
