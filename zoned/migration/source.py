"""`zoned migrate NAME DEST [--live]`: move a running container to another host.

The sending side. In order:
  1. check here (what CRIU cannot dump is refused by Dump.plan), connect
     (zoned.migration.transport), and ask the destination whether it can restore this
     container: image (by digest), networks and the IP, published ports, volumes, the
     name, CRIU, lazy-page support, CPU features. Any problem ends it here, with the
     container untouched.
  2. freeze and dump. Stop-and-copy dumps everything; --live dumps all but the memory,
     which CRIU's page server then serves on demand (post-copy, userfaultfd).
  3. send the images (a tar stream), the destination restores the container *stopped*.
  4. commit: the destination lets it run, announces its MAC (gratuitous ARP) and says so;
     only then is the source's copy removed. In live mode the remaining pages follow.
A failure before the commit puts the container back here: a live dump's CRIU gives the
tasks back when its page server is closed; a stop-and-copy is restored from the local
images into the very network namespace and cgroup it left (held open meanwhile). If the
connection dies between commit and its answer the outcome is unknown: the container does
not run here, and its checkpoint is kept so nothing is lost.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time

from zoned.checkpoint.archive import clean_dir, tar_stream
from zoned.checkpoint.criu import cpuinfo_dump, ensure_pipe_size, find_criu, lazy_support
from zoned.checkpoint.dump import Dump
from zoned.checkpoint.criu_restore import run_restore
from zoned.checkpoint.scratch import scratch_dir, scratch_done
from zoned.errors import ConfigError, ZonedError
from zoned.migration import transport
from zoned.migration.pages import poison
from zoned.migration.timeline import Timeline
from zoned.testhooks import hit, pause

# What the CLI turns into an exception (zoned.cli.common.interruptible): deferred during
# the dump.
INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class Progress:
    """Where a migration reports its phases and byte counts; this one says nothing. The CLI
    passes one that draws them on stderr (zoned.cli.migration.StderrProgress)."""

    def phase(self, text: str) -> None:
        pass

    def bytes(self, label: str, n: int) -> None:
        pass


class Migration:
    def __init__(self, rt, cid: str, dest: str, *, live: bool = False,
                 keep_source: bool = False, tcp_established: bool = True,
                 key: str | None = None, progress: Progress | None = None):
        transport.parse_dest(dest)  # a bad URL is an error before anything else
        if keep_source and live:
            raise ConfigError("--keep-source needs stop-and-copy: in live mode the memory "
                              "only ever exists in the running container")
        self.rt, self.cid, self.dest, self.live = rt, cid, dest, live
        self.keep_source, self.tcp, self.key = keep_source, tcp_established, key
        self.progress = progress or Progress()
        self.netlock = None  # zoned's own network lock, if it can have one (LinkLock)
        self.summary: dict = {"id": cid, "destination": dest,
                              "mode": "live" if live else "stop-and-copy"}

    def run(self) -> dict:
        if (self.rt.store.read_state(self.cid).get("zoned") or {}).get("vm"):
            if self.keep_source:
                raise ConfigError("--keep-source is for zones: a VM moves by QEMU's "
                                  "migration, which keeps no checkpoint")
            from zoned.migration.vm import migrate_vm

            return migrate_vm(self.rt, self.cid, self.dest, live=self.live, key=self.key,
                              progress=self.progress)
        t0 = time.monotonic()
        criu = find_criu()
        rt, cid, say = self.rt, self.cid, self.progress.phase
        with rt.store.lock(cid):  # nobody else touches it while it moves
            dump = Dump(rt, cid).plan()
            if self.live:
                why = lazy_support(criu)
                if why:
                    raise ZonedError(f"--live is not possible here: {why}")
                ensure_pipe_size()
            say(f"connecting to {self.dest}")
            ch = transport.connect(self.dest, key=self.key)
            try:
                return self._move(criu, dump, ch, t0)
            except transport.PeerGone as e:
                why = transport.ssh_error(ch) or str(e)
                raise ZonedError(f"migration of {cid!r} failed: {why}") from None
            finally:
                ch.close()

    def _move(self, criu, dump, ch, t0) -> dict:
        rt, cid, say, s = self.rt, self.cid, self.progress.phase, self.summary
        say("checking the destination")
        ch.send_msg({"op": "hello", "protocol": transport.PROTOCOL, "live": self.live,
                     "meta": dump.meta(tcp_established=self.tcp, lazy=self.live, criu=criu),
                     "cpuinfo": cpuinfo_dump()})
        ready = ch.expect("ready", timeout=120)
        if ready.get("problems"):
            raise ZonedError(f"{self.dest} cannot take {cid!r}: "
                             + "; ".join(ready["problems"]))
        pause("ZONED_TEST_PAUSE_FREEZE")  # the destination is prepared; nothing frozen
        from zoned.network.checkpoint_hooks import LinkLock

        # zoned locks the network itself where it can (bridge ports held down), so that
        # CRIU's lock costs neither the dump nor the destination's restore (LinkLock).
        self.netlock = LinkLock.for_zone(dump.network)
        self.summary["network_lock"] = "criu" if self.netlock is None else "links"
        netns = dump.hold_netns()
        mine = theirs = None
        if self.live:
            mine, theirs = socket.socketpair()
        committed = False
        work = None
        try:
            # made inside the try: an interrupt (SIGTERM) right after it must not leave it
            work = os.path.join(scratch_dir(rt), f"out-{os.getpid()}-{cid}")
            clean_dir(work)
            hit("migrate:scratch")
            say("freezing and dumping" + (" (all but memory)" if self.live else ""))
            t_freeze = time.monotonic()
            tl = Timeline()  # the frozen window, step by step (summary["timeline"])
            # An interrupt (SIGINT/SIGTERM/SIGHUP) waits until the dump has ended, then
            # unwinds through the put-back below: raised mid-dump it would leave no
            # checkpoint to put back from, and a zone whose tasks CRIU had already ended.
            deferred = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
            try:
                if self.netlock is not None:
                    self.netlock.lock()
                    tl.mark("network locked (links down)")
                meta = dump.run(work, tcp_established=self.tcp, criu=criu,
                                lazy_socket=theirs.fileno() if theirs else None,
                                copy_files=self.keep_source,
                                network_lock="nftables" if self.netlock is None else "skip")
            except BaseException:
                # CRIU gave the tasks back: the container runs on. A failing CRIU may
                # leave its network lock behind.
                try:
                    self._unlock_network(netns)
                    ch.send_msg({"op": "abort"})
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, deferred)
                raise
            finally:
                if theirs is not None:
                    theirs.close()
            s["dump_ms"] = _ms(time.monotonic() - t_freeze)
            # The tasks froze when CRIU seized them, not when it started: its start-up
            # (the tasks still running) is not frozen time, unless zoned's lock had cut
            # the zone off already (then the frozen time counts from the lock).
            if self.netlock is not None:
                t_seized = t_freeze
            else:
                t_seized = dump.frozen_at() or t_freeze
                tl.mark("criu start-up (not frozen)", t_seized)
            tl.mark("dump")
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, deferred)  # a deferred one: now
                say("sending the images")
                ch.send_msg({"op": "images"})
                s["image_bytes"] = self._send_images(ch, work, dump)
                tl.mark("send images")
                ch.demux(mine, hold=True)
                say("restoring on the destination")
                restored = ch.expect("restored", timeout=600)
                tl.mark("restore (destination)")
                s["restore_ms"] = _ms(restored.get("restore_s") or 0)
                ch.send_msg({"op": "commit"})
                committed = True
                if mine is not None:
                    ch.release_pages()
            except BaseException as e:
                try:
                    self._put_back(criu, dump, meta, work, netns, mine, ch)
                except BaseException as e2:
                    kept = self._keep(work)
                    work = None
                    raise ZonedError(f"migration of {cid!r} failed ({e}) and so did putting "
                                     f"it back here ({e2}); its checkpoint is kept in "
                                     f"{kept}") from None
                if isinstance(e, ZonedError):
                    raise ZonedError(f"migration of {cid!r} failed, it runs here again: "
                                     f"{e}") from None
                raise
            try:
                done = ch.expect("committed", timeout=transport.COMMIT_TIMEOUT)
                tl.mark("commit (destination)")
            except ZonedError as e:
                kept = self._keep(work)
                work = None
                raise ZonedError(
                    f"migration of {cid!r}: the destination did not confirm the commit "
                    f"({e}); it may be running {cid!r} now. It does not run here; its "
                    f"checkpoint is kept in {kept} (`zoned restore --dir {kept}` if the "
                    "destination has not got it)") from None
            now = time.monotonic()
            s["frozen_ms"] = _ms(now - t_seized)
            s["dump_started_ms"] = _ms(now - t_freeze)  # from the dump command's start
            s["criu_start_ms"] = _ms(t_seized - t_freeze)
            s["timeline"] = {"destination_before": ready.get("timeline") or [],
                             "source": tl.to_list(),
                             "destination": restored.get("timeline") or [],
                             "destination_commit": done.get("timeline") or []}
            say(f"running on the destination (frozen {s['frozen_ms']:.0f} ms)")
            if self.live:
                say("copying the remaining memory (post-copy)")
                try:
                    dump.finish()
                    ch.expect("done", timeout=3600)
                except ZonedError as e:
                    if rt.state(cid)["status"] != "running":
                        raise
                    self._unlock_network(netns)
                    # The destination cannot run without the rest of its memory; the
                    # source's CRIU gave the tasks back as they were when frozen.
                    raise ZonedError(
                        f"post-copy of {cid!r} failed ({e}): the destination's copy was "
                        "removed and it runs here again, from the moment it was frozen "
                        "(what it did on the destination meanwhile is lost)") from None
                s["page_bytes"] = ch.pages_sent
            st = rt.store.read_state(cid)
            os.close(netns)
            netns = -1
            rt.release(cid, st)  # the source's veths, leases, ports, cgroup, state
            if self.keep_source and work:
                s["kept"] = self._keep(work)
                work = None
        finally:
            if self.netlock is not None:
                self.netlock.close()
            if netns >= 0:
                os.close(netns)
            if mine is not None:
                mine.close()
            if work:
                shutil.rmtree(work, ignore_errors=True)
                scratch_done(rt)
            if not committed:
                dump.abort()
        s["bytes"] = s.get("image_bytes", 0) + s.get("page_bytes", 0)
        s["total_ms"] = _ms(time.monotonic() - t0)
        say(f"done in {s['total_ms'] / 1000:.2f} s")
        return s

    def _send_images(self, ch, work: str, dump) -> int:
        # dump.log stays here: a lazy dump's CRIU is still writing it. The upper dir and
        # the log go from where they are (the tasks are frozen, or ended by the dump),
        # unless --keep-source had them copied into the checkpoint.
        files = [] if self.keep_source else \
            [a for d, name in dump.own_files() for a in ("-C", d, name)]
        with tar_stream(["--exclude=./dump.log", "--exclude=./zoned-action.sh", "-cf", "-",
                         "-C", work, ".", *files], what="packing the images",
                        writing=False) as fd:
            n = ch.send_file_stream(fd, progress=lambda n: self.progress.bytes("sent", n))
        return n

    def _put_back(self, criu, dump, meta, work, netns, mine, ch) -> None:
        """Undo a migration that has not committed: the container runs here again."""
        from zoned.network import checkpoint_hooks as nethooks

        self.progress.phase("failed: putting the container back")
        # Hanging up tells the destination to drop its copy, and cannot block the way a
        # last message could (mid-stream, or to a peer that stopped reading).
        ch.close()
        if self.live:
            # The page server has seen no request yet (they are held back until the
            # commit): fail it, and CRIU gives the frozen tasks back (pages.poison).
            if mine is not None:
                poison(mine)
                mine.shutdown(socket.SHUT_RDWR)
            try:
                dump.finish(timeout=30)
            except ZonedError:
                pass
            self._unlock_network(netns)
            nethooks.announce(self.rt.store.read_state(self.cid))
            return
        rt, cid = self.rt, self.cid
        st = rt.store.read_state(cid)
        d = rt.store.dir(cid)
        cfg = dump.cfg
        from zoned import logs
        from zoned.linux.proc import proc_start_time

        # The dump ended the zone, so its logger saw EOF and exited: a new one takes the
        # restored tasks' output, into the same data dir.
        logger = logs.spawn(dump.data) if any(f.get("pipe") for f in meta["files"]) else None
        try:
            pid = run_restore(criu, work, d, meta, cfg, lower=dump.lower,
                              upper=dump.upper, work=os.path.join(dump.data, "work"),
                              rootfs=os.path.join(d, "rootfs"),
                              cgroup=st["zoned"]["cgroup"], netns_fd=netns,
                              log_path=dump.log, log_fd=logger and logger.write_fd)
        finally:
            if logger is not None:
                os.close(logger.write_fd)
        st["pid"] = pid
        st["zoned"]["pid_start"] = proc_start_time(pid)
        if logger is not None:
            st["zoned"]["logger"] = logger.describe()
        rt.store.write_state(cid, st)
        self._unlock_network(netns)
        nethooks.announce(st)  # the destination's eth0 may have drawn its MAC over there

    def _unlock_network(self, netns: int) -> None:
        """The zone runs here again: lift whichever lock its network had (zoned's held
        links, or what CRIU's left in the namespace)."""
        from zoned.network import checkpoint_hooks as nethooks

        if self.netlock is not None:
            self.netlock.unlock()
        else:
            nethooks.drop_criu_locks(netns)

    def _keep(self, work: str) -> str:
        kept = os.path.join(scratch_dir(self.rt), f"{self.cid}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.rename(work, kept)
        return kept


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def migrate(rt, cid: str, dest: str, *, live: bool = False, keep_source: bool = False,
            tcp_established: bool = True, key: str | None = None,
            progress: Progress | None = None) -> dict:
    """Move container `cid` to `dest` (ssh://... or zoned://...); the summary: mode, frozen
    and total times, bytes moved, and where a kept checkpoint is."""
    return Migration(rt, cid, dest, live=live, keep_source=keep_source,
                     tcp_established=tcp_established, key=key, progress=progress).run()
