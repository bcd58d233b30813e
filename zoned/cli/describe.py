"""What `zoned inspect` shows: podman's field names (Id, State.Pid, State.ExitCode,
Config.Labels, Mounts, NetworkSettings...) so that `--format '{{.State.Pid}}'` scripts
work, zoned's own keys (state, config, limits, cgroup, network) beside them, and a short
text summary for people. The seccomp profile (most of the ~700 lines) is left out unless
--raw."""
from __future__ import annotations

from zoned.cli.output import rfc3339

DEFAULT_DESTINATIONS = {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                        "/sys/fs/cgroup"}


def exit_code(rt, cid: str, st: dict) -> int | None:
    """A stopped zone's exit code: recorded by a foreground run, a zone's monitor (run
    --restart, zone files) or a VM's guest; None when nobody saw the init exit."""
    if st.get("exit_code") is not None:
        return int(st["exit_code"])
    from zoned.zones import record

    found = record.exit_file(rt.store.root, cid)
    return found[0] if found else None




def recorded_code(rt, cid: str) -> int | None:
    """A stopped zone's exit code, waiting (up to 2 s) while whoever records it (its
    logger, its init's parent; or its monitor) may still be writing it."""
    import time

    from zoned.logs import logger_alive
    from zoned.zones.record import monitor_alive

    deadline = time.monotonic() + 2
    while True:
        st = rt.state(cid)
        code = exit_code(rt, cid, st)
        if code is not None or time.monotonic() > deadline:
            return code
        if not logger_alive((st.get("zoned") or {}).get("logger")) and \
                not monitor_alive(rt.store.root, cid):
            return exit_code(rt, cid, rt.state(cid))  # written just before it went
        time.sleep(0.02)


def document(rt, cid: str, *, raw: bool = False) -> dict:
    from zoned.oci.runflags import ANN_STOP_TIMEOUT, labels
    from zoned.oci.spec import stop_signal

    st = rt.state(cid)
    cfg = rt.config(cid)
    z = st.get("zoned") or {}
    ann = cfg.get("annotations") or {}
    proc = cfg.get("process") or {}
    res = (cfg.get("linux") or {}).get("resources") or {}
    status = str(st["status"])
    code = exit_code(rt, cid, st) if status == "stopped" else None
    if status == "stopped" and code is not None:
        st["exit_code"] = code  # present for detached zones too, when known
    shown = cfg
    if not raw and (cfg.get("linux") or {}).get("seccomp"):
        sec = cfg["linux"]["seccomp"]
        shown = {**cfg, "linux": {**cfg["linux"], "seccomp": {
            "defaultAction": sec.get("defaultAction"),
            "rules": len(sec.get("syscalls") or []), "shown": "with --raw"}}}
    info = {"id": st["id"], "state": st, "config": shown,
            "image": ann.get("org.zoned.image"), "limits": res,
            "cgroup": z.get("cgroup"), "backend": z.get("backend", "zone")}
    if z.get("vm"):
        info["vm"] = {k: z["vm"].get(k) for k in ("accel", "reason", "memory_mib", "vcpus",
                                                 "image")}
    addrs = []
    if z.get("network"):
        from zoned.network.info import addresses

        addrs = addresses(z["network"])
        info["network"] = {"mode": z["network"].get("mode"), "addresses": addrs}
    if status != "stopped":
        try:
            info["stats"] = rt.cgroup(st).stats()
        except OSError:
            pass
    user = proc.get("user") or {}
    info.update({
        "Id": st["id"], "Name": st["id"], "Created": st.get("created"),
        "ImageName": ann.get("org.zoned.image"), "Image": ann.get("org.zoned.image"),
        "State": {"Status": "exited" if status == "stopped" else status,
                  "Running": status == "running", "Paused": status == "paused",
                  "Pid": st.get("pid") or 0, "ExitCode": code if code is not None else
                  (-1 if status == "stopped" else 0),  # -1: unknown (zoned wait's too)
                  "FinishedAt": rfc3339(st.get("finished"))},
        "Config": {"Cmd": proc.get("args"), "Env": proc.get("env"),
                   "WorkingDir": proc.get("cwd"), "Hostname": cfg.get("hostname"),
                   "User": f"{user.get('uid', 0)}:{user.get('gid', 0)}",
                   "Labels": labels(ann), "Tty": bool(proc.get("terminal")),
                   "StopSignal": stop_signal(cfg),
                   "StopTimeout": int(ann.get(ANN_STOP_TIMEOUT, 10))},
        "Mounts": [{"Type": "volume" if "/volumes/" in m.get("source", "") else m["type"],
                    "Source": m.get("source"), "Destination": m["destination"],
                    "RW": "ro" not in (m.get("options") or [])}
                   for m in cfg.get("mounts") or []
                   if m["destination"] not in DEFAULT_DESTINATIONS
                   and not m["destination"].startswith("/etc/")],
        "NetworkSettings": {
            "IPAddress": addrs[0]["ip"] if addrs else "",
            "Networks": {a["network"]: {"IPAddress": a["ip"], "Gateway": a.get("gateway"),
                                        "MacAddress": a.get("mac")} for a in addrs},
            "Ports": {f"{p['port']}/{p['proto']}": [{"HostIp": p.get("host_ip") or "0.0.0.0",
                                                      "HostPort": str(p["host_port"])}]
                      for p in (z.get("network") or {}).get("ports") or []}},
        "HostConfig": {"Memory": (res.get("memory") or {}).get("limit", 0),
                       "PidsLimit": (res.get("pids") or {}).get("limit", 0),
                       "CpuQuota": (res.get("cpu") or {}).get("quota", 0),
                       "CpuPeriod": (res.get("cpu") or {}).get("period", 0),
                       "CapAdd": (proc.get("capabilities") or {}).get("bounding", [])},
    })
    return info


def summary(info: dict) -> str:
    """The readable inspect: what people look for first."""
    from zoned.cli.output import human

    s, c, h = info["State"], info["Config"], info["HostConfig"]
    lines = [f"Name:       {info['Name']}  ({info['backend']})",
             f"Image:      {info.get('ImageName') or '-'}",
             f"State:      {s['Status']}" + (f", pid {s['Pid']}" if s["Pid"] else "")
             + (f", exit code {info['state'].get('exit_code')}"
                if s["Status"] == "exited" and "exit_code" in info["state"] else ""),
             f"Created:    {info.get('Created') or '-'}",
             f"Command:    {' '.join(c['Cmd'] or [])}",
             f"Workdir:    {c['WorkingDir']}   User: {c['User']}   Hostname: {c['Hostname']}",
             f"Limits:     memory {human(h['Memory'] or None)}, pids "
             f"{h['PidsLimit'] if h['PidsLimit'] and h['PidsLimit'] > 0 else '-'}, cpu "
             + (f"{h['CpuQuota'] / h['CpuPeriod']:.2f}" if h["CpuQuota"] and h["CpuPeriod"]
                else "-")]
    for m in info["Mounts"]:
        lines.append(f"Mount:      {m['Destination']} <- {m['Source']} ({m['Type']}, "
                     f"{'rw' if m['RW'] else 'ro'})")
    for name, n in info["NetworkSettings"]["Networks"].items():
        lines.append(f"Network:    {name} {n['IPAddress']} (gateway {n['Gateway']})")
    for port, binds in info["NetworkSettings"]["Ports"].items():
        lines.append(f"Port:       {port} -> {binds[0]['HostIp']}:{binds[0]['HostPort']}")
    if c["Labels"]:
        lines.append("Labels:     " + ", ".join(f"{k}={v}" for k, v in c["Labels"].items()))
    lines.append(f"Cgroup:     {info.get('cgroup')}")
    lines.append("(zoned inspect --format json for everything, --raw for the full config)")
    return "\n".join(lines)
