"""`zoned events` without an ID: podman's lifecycle events (create, start, pause, unpause,
oom, died with the exit code, remove) as they happen, one line each. zoned has no daemon
to keep a journal, so this watches the state root while it runs: events from before it
started are not shown. (`zoned events ID` is runc's stats stream: zoned.cli.oci.)"""
from __future__ import annotations

import sys
import time

from zoned.cli.common import runtime


def _snapshot(rt) -> dict[str, dict]:
    out = {}
    for st in rt.list():
        oom = None
        if st["status"] in ("running", "paused") and not (st.get("zoned") or {}).get("vm"):
            try:
                oom = (rt.cgroup(st).stats().get("memory") or {}).get("oom_kills")
            except OSError:
                pass
        out[st["id"]] = {"status": str(st["status"]), "oom": oom or 0,
                         "image": (st.get("annotations") or {}).get("org.zoned.image", ""),
                         "pid": st.get("pid")}
    return out


def _changes(rt, before: dict, after: dict):
    from zoned.cli.describe import exit_code

    for cid, now in after.items():
        was = before.get(cid)
        if was is None:
            yield cid, "create", now, {}
            if now["status"] in ("running", "paused"):
                yield cid, "start", now, {}
            continue
        if was["status"] in ("creating", "created") and now["status"] != was["status"] \
                and now["status"] != "created":  # it started (and may have ended already)
            yield cid, "start", now, {}
        if now["oom"] > was["oom"]:
            yield cid, "oom", now, {}
        if was["status"] == "running" and now["status"] == "paused":
            yield cid, "pause", now, {}
        if was["status"] == "paused" and now["status"] == "running":
            yield cid, "unpause", now, {}
        if now["status"] == "running" and was["status"] == "running" and \
                now["pid"] != was["pid"]:  # restarted between two looks
            yield cid, "died", now, {}
            yield cid, "start", now, {}
        if was["status"] != "stopped" and now["status"] == "stopped":
            time.sleep(0.05)  # a foreground run or monitor records the code just after
            try:
                code = exit_code(rt, cid, rt.state(cid))
            except Exception:  # noqa: BLE001 - removed meanwhile
                code = None
            yield cid, "died", now, {"exitCode": code}
    for cid, was in before.items():
        if cid not in after:
            if was["status"] != "stopped":
                yield cid, "died", was, {"exitCode": None}
            yield cid, "remove", was, {}


def cmd_lifecycle_events(args) -> int:
    import json

    from zoned.cli.output import rfc3339

    rt = runtime(args)
    wanted = {f.partition("=")[0]: [] for f in args.filter}
    for f in args.filter:
        key, eq, value = f.partition("=")
        if not eq or key not in ("container", "event", "image"):
            from zoned.errors import ConfigError

            raise ConfigError(f"invalid --filter {f!r}: use container=NAME, event=EVENT or "
                              "image=IMAGE")
        wanted[key].append(value)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    before = _snapshot(rt)
    while deadline is None or time.monotonic() < deadline:
        time.sleep(args.interval)
        after = _snapshot(rt)
        for cid, event, info, extra in _changes(rt, before, after):
            if any(values and v not in values for v, values in (
                    (cid, wanted.get("container")), (event, wanted.get("event")),
                    (info["image"], wanted.get("image")))):
                continue
            now = time.time()
            if args.format == "json":
                line = json.dumps({"ID": cid, "Name": cid, "Status": event, "Type":
                                   "container", "Image": info["image"],
                                   "Time": rfc3339(now), **extra})
            else:
                code = f", exit code {extra['exitCode']}" if extra.get("exitCode") is not \
                    None else ""
                line = f"{rfc3339(now)} container {event} {cid} (image={info['image']}{code})"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        before = after
    return 0
