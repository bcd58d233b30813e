"""The zone commands on existing containers: ps, stop, kill, rm, logs, inspect, stats,
pause, resume."""
from __future__ import annotations

import os
import sys

from zoned.cli.common import runtime
from zoned.cli.output import human, print_json, print_table


def cmd_ps(args) -> int:
    rt = runtime(args)
    if args.id:
        return _ps_processes(rt, args)
    rows = rt.list()
    if not args.all:  # podman's: running (and paused) ones; -a all
        rows = [r for r in rows if r["status"] not in ("stopped", "created")]
    if args.format not in ("table", "json"):
        from zoned.cli.format import render

        for r in rows:
            print(render(args.format, _ps_row(rt, r)))
        return 0
    if args.format == "json":
        print_json(rows)
        return 0
    if args.quiet:
        for r in rows:
            print(r["id"])
        return 0
    table = [("NAME", "STATUS", "PID", "IMAGE", "BACKEND", "CREATED", "COMMAND")]
    for r in rows:
        cfg = {}
        try:
            cfg = rt.config(r["id"])
        except Exception:  # noqa: BLE001 - a half-created container has no config yet
            pass
        table.append((r["id"], _status(r), str(r.get("pid") or "-"),
                      (r.get("annotations") or {}).get("org.zoned.image", "-"),
                      _backend(r), r.get("created", "")[:19].replace("T", " "),
                      " ".join((cfg.get("process") or {}).get("args") or [])[:40]))
    print_table(table)
    return 0


def _ps_row(rt, r: dict) -> dict:
    """A ps row with podman's --format names (.ID, .Names, .Status, .Image, .Command)."""
    try:
        args = (rt.config(r["id"]).get("process") or {}).get("args") or []
    except Exception:  # noqa: BLE001 - a half-created container has no config yet
        args = []
    state = "exited" if r["status"] == "stopped" else str(r["status"])
    return {**r, "ID": r["id"], "Names": r["id"], "Status": _status(r),
            "State": state, "Pid": r.get("pid") or 0,
            "Image": (r.get("annotations") or {}).get("org.zoned.image", ""),
            "Command": " ".join(args), "CreatedAt": r.get("created", ""),
            "ExitCode": UNKNOWN_EXIT if "exit_code" in r and r["exit_code"] is None else
            r.get("exit_code", 0)}


UNKNOWN_EXIT = -1  # an exit code nobody recorded (`zoned wait` prints it too, as podman)


def _status(r: dict) -> str:
    """running, paused, created, or podman's "exited (3) 5 seconds ago"."""
    status = str(r["status"])
    if status == "stopped" and "exit_code" in r:
        code = r["exit_code"]
        status = f"exited ({UNKNOWN_EXIT if code is None else code})"
        if r.get("finished"):
            import time

            from zoned.zones.listing import ago

            status += f" {ago(time.time() - r['finished'])} ago"
    return status


def _backend(st: dict) -> str:
    """zone, or vm/ACCEL (the accelerator a VM runs on: kvm or tcg)."""
    vm = (st.get("zoned") or {}).get("vm")
    return f"vm/{vm.get('accel') or '?'}" if vm else "zone"


def _ps_processes(rt, args) -> int:
    st = rt.state(args.id)
    pids = rt.cgroup(st).pids() if st["status"] != "stopped" else []
    if args.format == "json":
        print_json(pids)
        return 0
    table = [("PID", "CMD")]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        table.append((str(pid), cmd))
    print_table(table)
    return 0


def cmd_stop(args) -> int:
    """Stop the zones in parallel (podman's: `stop a b c` takes one timeout, not three);
    their names in the order given, errors as one line each."""
    from concurrent.futures import ThreadPoolExecutor

    from zoned.errors import ZonedError

    rt = runtime(args)

    def stop(cid: str) -> str | ZonedError:
        try:
            rt.state(cid)  # NotFound for a wrong name
            zone_request(rt, cid, "preserve")  # a monitored zone: stopped, not restarted
            rt.stop(cid, stop_timeout(rt, cid, args.time))
            _autoremove(rt, cid)
            return cid
        except ZonedError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(16, len(args.ids))) as pool:
        results = list(pool.map(stop, args.ids))
    failed = 0
    for r in results:
        if isinstance(r, ZonedError):
            sys.stderr.write(f"zoned: {r}\n")
            failed = r.exit_code
        else:
            print(r)
    return failed


def stop_timeout(rt, cid: str, given: float | None) -> float:
    """-t if given, else the zone's --stop-timeout, else podman's 10 s."""
    if given is not None:
        return given
    from zoned.oci.runflags import ANN_STOP_TIMEOUT

    try:
        return float((rt.config(cid).get("annotations") or {}).get(ANN_STOP_TIMEOUT, 10))
    except Exception:  # noqa: BLE001 - no config (half-created): the default
        return 10.0


def zone_request(rt, cid: str, what: str) -> None:
    """Tell a zone's monitor (zoned.zones: a zone file's, or `run --restart`) that the
    admin stops it, so its restart policy does not undo that."""
    if os.path.isdir(os.path.join(rt.store.root, ".zones", cid)):
        from zoned.zones.record import request_stop

        request_stop(rt.store.root, cid, what)


def _zone_forget(rt, cid: str) -> None:
    """After `rm`: a `run --restart` zone's monitor record goes with its container."""
    if os.path.isdir(os.path.join(rt.store.root, ".zones", cid)):
        from zoned.zones.record import forget, wait_monitor

        wait_monitor(rt.store.root, cid)
        forget(rt.store.root, cid)


def _autoremove(rt, cid: str) -> None:
    try:
        st = rt.state(cid)
    except Exception:  # noqa: BLE001
        return
    if st["status"] == "stopped" and st.get("zoned", {}).get("autoremove"):
        rt.delete(cid, force=True)


def cmd_kill(args) -> int:
    """podman's kill: SIGKILL unless -s/--signal (or runc's positional SIGNAL) says."""
    if args.signal and args.sig:
        from zoned.errors import ConfigError

        raise ConfigError("give the signal once: -s/--signal or the SIGNAL argument")
    runtime(args).kill(args.id, parse_signal(args.signal or args.sig or "KILL"),
                       all=args.all)
    return 0


def parse_signal(value: str) -> int:
    """A signal's number from its name (HUP, SIGHUP) or number. (_signal, not signal.py:
    its enum of every signal costs ~4 ms of `zoned kill`, which podman calls.)"""
    import _signal

    from zoned.errors import ConfigError

    v = value.upper()
    if v.isdigit():
        if not 0 < int(v) <= _signal.SIGRTMAX:
            raise ConfigError(f"invalid signal {value!r}: signal numbers are 1 to "
                              f"{_signal.SIGRTMAX}")
        return int(v)
    name = v if v.startswith("SIG") else "SIG" + v
    number = getattr(_signal, name, None) if name[3:].isalnum() else None  # not SIG_DFL
    if not isinstance(number, int):
        raise ConfigError(f"unknown signal {value!r}")
    return number


def cmd_rm(args) -> int:
    rt = runtime(args)
    failed = 0
    from zoned.errors import ZonedError

    for cid in args.ids:
        try:
            if args.force:
                zone_request(rt, cid, "destroy")
            rt.delete(cid, force=args.force)
            _zone_forget(rt, cid)
            print(cid)
        except ZonedError as e:
            from zoned.errors import NotFound

            if args.force and isinstance(e, NotFound):
                continue  # podman's rm -f: a missing name is not an error
            sys.stderr.write(f"zoned: {e}\n")
            failed = e.exit_code
    return failed


def cmd_logs(args) -> int:
    rt = runtime(args)
    st = rt.state(args.id)
    log = st.get("zoned", {}).get("log")
    if not log:
        from zoned.errors import ZonedError

        raise ZonedError(f"container {args.id!r} was not detached: its output went to "
                         "the terminal that ran it")
    from zoned import logs

    if args.tail is not None or args.since or args.timestamps:  # zoned.cli.logview
        from zoned.cli.logview import show

        return show(rt, args, log)
    if not args.follow:
        logs.read(log, sys.stdout.buffer)
        return 0

    def finished() -> bool:  # the zone has stopped and its logger has written it all
        st = rt.state(args.id)
        return st["status"] == "stopped" and not logs.logger_alive(st["zoned"].get("logger"))
    logs.follow(log, sys.stdout.buffer, finished)
    return 0


def cmd_inspect(args) -> int:
    """podman's inspect: several IDs; --format TEMPLATE (Go-template subset) or json; a
    readable summary on a terminal; --raw keeps the full config (the seccomp profile)."""
    from zoned.cli.describe import document, summary

    rt = runtime(args)
    docs = [document(rt, cid, raw=args.raw) for cid in args.ids]
    fmt = args.format or ("summary" if sys.stdout.isatty() and not args.raw else "json")
    if fmt == "summary":
        print("\n\n".join(summary(d) for d in docs))
    elif fmt == "json":
        print_json(docs[0] if len(docs) == 1 else docs)
    else:
        from zoned.cli.format import render

        for d in docs:
            print(render(fmt, d))
    return 0


def cmd_stats(args) -> int:
    """Usage of the running zones (or those named): once when piped or with --no-stream,
    else refreshed every 2 s like podman's until interrupted."""
    import time

    rt = runtime(args)
    stream = not args.no_stream and args.format == "table" and sys.stdout.isatty()
    while True:
        rows = _stats_rows(rt, args.ids)
        if args.format == "json":
            print_json([{"id": cid, **s} for cid, s in rows.items()])
            return 0
        table = [("NAME", "MEM USAGE", "MEM LIMIT", "CPU SECONDS", "PIDS", "NET RX",
                  "NET TX")]
        for cid, s in rows.items():
            mem, cpu, pids = s.get("memory", {}), s.get("cpu", {}), s.get("pids", {})
            net = s.get("network") or {}
            table.append((cid, human(mem.get("usage")), human(mem.get("limit")),
                          f"{(cpu.get('usage_ns') or 0) / 1e9:.2f}",
                          str(pids.get("current", "-")),
                          human(net.get("rx_bytes")), human(net.get("tx_bytes"))))
        if stream:
            sys.stdout.write("\x1b[H\x1b[2J")
        print_table(table)
        if not stream:
            return 0
        sys.stdout.flush()
        time.sleep(2)


def _stats_rows(rt, ids: list[str]) -> dict:
    ids = ids or [s["id"] for s in rt.list() if s["status"] in ("running", "paused")]
    rows = {}
    for cid in ids:
        st = rt.state(cid)
        rows[cid] = rt.cgroup(st).stats() if st["status"] != "stopped" else {}
        if st["status"] != "stopped" and st["zoned"].get("network"):
            from zoned.network.info import counters

            net = counters(rt.store.root, st["zoned"]["network"])
            if net:
                rows[cid]["network"] = net
    return rows


def cmd_pause(args) -> int:
    runtime(args).pause(args.id)
    return 0


def cmd_resume(args) -> int:
    runtime(args).resume(args.id)
    return 0
