"""The report of a `zoned bench` run, from its result dict: a table for the terminal, a
Markdown report, the JSON, and a schema check of that JSON (validate). Every figure is
shown with its spread (min / median / p95) and its sample count."""
from __future__ import annotations

import json

TEXT_COLUMNS = ("notes", "what / why not")
TCG_CAVEAT = ("TCG (QEMU's software CPU emulation, no KVM) inflates the VMs' boot times and "
              "CPU costs several-fold; memory figures are much less affected.")


def table(rows: list[list], header: list[str], left_last: bool = True) -> str:
    """A plain text table: the first column (and the last, when left_last: notes) left
    aligned, the others right aligned."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        last = len(r) - 1
        return "  ".join(c.ljust(w) if i in (0, last) and left_last or i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=False))).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def markdown_table(rows: list[list], header: list[str]) -> str:
    """First column (and a last column of notes) left aligned, the figures right."""
    def esc(c) -> str:
        return ("" if c is None else str(c)).replace("|", "\\|")

    last = len(header) - 1
    left = {0} | ({last} if header[last] in TEXT_COLUMNS else set())
    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def f(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def spread(s: dict | None, spec: str = ".1f") -> str:
    """'min / median / p95 (n)' of a stats.summary."""
    if not s or not s.get("n"):
        return "-"
    return f"{f(s['min'], spec)} / {f(s['median'], spec)} / {f(s['p95'], spec)} (n={s['n']})"


# -- sections: (title, header, rows, notes) ------------------------------------------------

def sections(res: dict) -> list[tuple[str, list[str], list[list], list[str]]]:
    out = []
    bk = res.get("backends", {})
    rows = [[name, "yes" if b.get("available") else "no",
             b.get("note", "") if b.get("available") else f"unavailable: {b.get('reason')}"]
            for name, b in bk.items()]
    out.append(("backends", ["backend", "available", "what / why not"], rows, []))
    st = res.get("startup")
    if st:
        rows = []
        for name, per in st["stats_ms"].items():
            if name in st.get("disabled", {}):
                rows.append([name, "-", "-", f"FAILED: {st['disabled'][name][:80]}"])
                continue
            fails = len(st.get("failures", {}).get(name, []))
            rows.append([name, spread(per["true"]), spread(per["first_output"]),
                         f"{fails} failed" if fails else ""])
        out.append((f"startup, ms: min / median / p95 over {st['rounds']} interleaved rounds "
                    "(VMs: fewer, see n)",
                    ["backend", "/bin/true to completion", "first output", "notes"], rows,
                    [st["description"]]))
    den = res.get("density")
    if den:
        names = list(den)
        idle = res.get("idle", {})

        def row(label, fn):
            cells = [label]
            for n in names:
                try:
                    cells.append(fn(den[n], idle.get(n)))
                except (KeyError, TypeError, ZeroDivisionError):
                    cells.append("-")
            return cells

        def slope_cell(key):
            def cell(d, _):
                s = d[key]
                return f"{s['slope']:.0f} (r²={s['r2']:.2f})" if s else "-"
            return cell

        rows = [
            row("instances started / requested", lambda d, _: f"{d['started']}/{d['requested']}"
                + (f" ({d['stopped_early']['reason']})" if d.get("stopped_early") else "")),
            row("start ms: min / median / p95", lambda d, _: spread(d["start_latency_ms"])),
            row("starts per s", lambda d, _: f(d["start_rate_per_s"])),
            row("start degradation last/first 10%",
                lambda d, _: f(d["start_degradation_last_over_first"], ".2f")),
            row("memory KiB per instance (own: PSS + memcg kmem)",
                lambda d, _: f"{d['kib_per_instance']:.0f}"
                + (" (slope)" if d["kib_per_instance_basis"] == "slope" else " (mean at end)")),
            row("  least-squares slope of it (r²)", slope_cell("attributed_slope")),
            row("  would fit in MemAvailable", lambda d, _: f(d["fit_in_host_memory"], "d")),
            row("  instances per GiB", lambda d, _: f(d["instances_per_gib"], ".0f")),
            row("  MemTotal-MemAvailable slope KiB", slope_cell("used_slope")),
            row("PSS KiB per instance (all its processes)",
                lambda d, _: spread(d["pss_kib_per_instance"], ".0f")),
            row("memcg charge KiB per instance",
                lambda d, _: spread(d["memcg_kib_per_instance"], ".0f")),
            row("  of which kernel (memcg kmem) KiB",
                lambda d, _: spread(d["memcg_kernel_kib_per_instance"], ".0f")),
            row("host kernel growth KiB per instance (meminfo)",
                lambda d, _: f(d["kernel_kib_per_instance"], ".0f")),
            row("MemAvailable drop KiB per instance",
                lambda d, _: f(d["mem_available_drop_kib_per_instance"], ".0f")),
            row("host processes per instance",
                lambda d, _: f(d["processes_per_instance"]["median"], ".0f")),
            row("idle CPU % per instance: min / median / p95",
                lambda d, i: spread(i["cpu_pct_per_instance"], ".4f")),
            row("  idle window s (host busy %)",
                lambda d, i: f"{i['window_s']:.0f} ({i['host_busy_pct_during_window']:.0f}%)"),
            row("removals per s", lambda d, _: f(d["remove"]["rate_per_s"])),
            row("baseline noise KiB (used, total)", lambda d, _: str(d["baseline_used_noise_kib"])),
        ]
        out.append(("density and idle cost (instances running `sleep 100000`)",
                    ["metric"] + names, rows,
                    ["memory per instance = slope (Theil-Sen), against the number started, "
                     "of the instances' own memory (PSS of all their host processes + kernel "
                     "memory charged to their memory cgroups), or where that is not positive "
                     "the figure's mean over the settled instances; 'would fit' = MemAvailable "
                     "before the first start / memory per instance. The MemTotal-MemAvailable slope and "
                     "the meminfo kernel growth are host-wide and carry the noise of everything "
                     "else on the host (r², noise row)"]))
    net = res.get("network")
    if net:
        rows = [[label, spread(p["throughput"]["gbit_s"], ".2f"),
                 f"{100 * p['throughput'].get('vs_loopback', 0):.0f}%",
                 spread(p["rtt"]["us"], ".1f")] for label, p in net.get("paths", {}).items()]
        notes = [f"not measured: {k}: {v}" for k, v in net.get("not_measured", {}).items()]
        if net.get("error"):
            notes.append(f"FAILED: {net['error']}")
        out.append(("network: TCP throughput and 1-byte round trip",
                    ["path", "Gbit/s min / median / p95", "vs loopback",
                     "RTT us min / median / p95"], rows, notes))
        if net.get("nc_paths"):
            rows = [[label, spread(p["throughput"]["gbit_s"], ".2f"),
                     spread(p["rtt"]["us"], ".1f")] for label, p in net["nc_paths"].items()]
            out.append(("network: zones and VMs by one method",
                        ["path", "Gbit/s min / median / p95", "RTT us min / median / p95"],
                        rows, [net.get("nc_method", "")]))
    mig = res.get("migrate")
    if mig:
        rows = []
        for name, m in mig.get("backends", {}).items():
            for x in m.get("results", []):
                rows.append([name, x["size_mib"], x["mode"], f(x["frozen_ms"], ".0f"),
                             f(x["total_s"], ".2f"), f(x["pings_lost"], ".0f"),
                             f(x["longest_client_gap_ms"], ".0f"), x["tcp_kept"],
                             x["memory_ok"]])
        notes = [f"not measured: {k}: {v}" for k, v in mig.get("not_measured", {}).items()]
        if mig.get("description"):
            notes.insert(0, mig["description"])
        out.append(("migrate", ["backend", "MiB", "mode", "frozen ms", "total s",
                                "pings lost", "longest TCP gap ms", "TCP kept", "memory ok"],
                    rows, notes))
    return out


def headline(res: dict) -> str:
    m = res.get("machine", {})
    acc = m.get("accelerator") or ("n/a (no VM ran)" if not res.get("backends", {}).get(
        "vm", {}).get("available") else "unknown")
    return (f"zoned bench {res.get('command')}: {m.get('date')}, kernel {m.get('kernel')}, "
            f"cgroup {m.get('cgroup_layout')}, {m.get('cpu_count')} CPUs, "
            f"{m.get('mem_total_mib')} MiB, VM accelerator {acc}, "
            f"{'quick' if res.get('parameters', {}).get('quick') else 'full'} run, "
            f"{res.get('elapsed_s')} s")


def leftovers_line(res: dict) -> str:
    left = res.get("leftovers", {})
    if left.get("ok"):
        return "leftovers: none (containers, state dirs, cgroups, mounts, veths, processes)"
    bad = {k: v for k, v in left.items() if isinstance(v, dict) and not v.get("ok")}
    return "LEFTOVERS: " + json.dumps(bad)[:2000]


def render_table(res: dict) -> str:
    parts = [headline(res)]
    for title, header, rows, notes in sections(res):
        parts.append(f"\n{title}")
        if rows:
            parts.append(table(rows, header, left_last=header[-1] in TEXT_COLUMNS))
        parts += [f"  {n}" for n in notes]
    if res.get("plots_note"):
        parts.append(f"\nplots: {res['plots_note']}")
    parts.append("\n" + leftovers_line(res))
    return "\n".join(parts) + "\n"


def render_markdown(res: dict, plots: list[str] | None = None) -> str:
    m = res.get("machine", {})
    v = m.get("versions", {})
    parts = [f"# zoned bench {res.get('command')}", "", headline(res) + ".", "",
             f"Versions: {'; '.join(f'{k}: {x}' for k, x in v.items() if x)}.", "",
             f"zoned measured: `{m.get('zoned_cli')}` (its tree at "
             f"{m.get('zoned_cli_git_head') or 'unknown'}); the bench's tree at "
             f"{m.get('git_head') or 'unknown'}.", ""]
    vm = res.get("backends", {}).get("vm", {})
    if vm.get("available") and (m.get("accelerator") or "tcg") != "kvm":
        why = f" Why TCG: {m['accelerator_reason']}" if m.get("accelerator_reason") else ""
        parts += [f"**Caveat:** {TCG_CAVEAT}{why}", ""]
    for title, header, rows, notes in sections(res):
        parts += [f"## {title}", ""]
        if rows:
            parts += [markdown_table(rows, header), ""]
        parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    if plots:
        parts += ["## plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    elif res.get("plots_note"):
        parts += ["## plots", "", res["plots_note"], ""]
    parts += [leftovers_line(res), ""]
    return "\n".join(parts)


# -- schema ----------------------------------------------------------------------------------

def validate(res: dict) -> list[str]:
    """What is missing or malformed in a result (empty = valid): the keys, types and raw
    samples every consumer (report, plots, tests) relies on."""
    errs: list[str] = []

    def need(d, key, typ, where):
        if not isinstance(d, dict) or key not in d:
            errs.append(f"{where}.{key}: missing")
            return None
        if typ is not None and not isinstance(d[key], typ):
            errs.append(f"{where}.{key}: {type(d[key]).__name__}, expected {typ}")
            return None
        return d[key]

    def numbers(xs, where):
        if not isinstance(xs, list) or not all(isinstance(x, (int, float)) for x in xs):
            errs.append(f"{where}: not a list of numbers")

    def stats(s, where):
        if not isinstance(s, dict) or "n" not in s:
            errs.append(f"{where}: not a summary")
        elif s["n"]:
            for k in ("min", "median", "p95", "max", "mean"):
                need(s, k, (int, float), where)

    need(res, "schema", str, "$")
    need(res, "command", str, "$")
    need(res, "elapsed_s", (int, float), "$")
    need(res, "parameters", dict, "$")
    m = need(res, "machine", dict, "$") or {}
    for k, t in (("kernel", str), ("cgroup_layout", str), ("cpu_count", int),
                 ("mem_total_mib", int), ("versions", dict)):
        need(m, k, t, "$.machine")
    if "accelerator" not in m:
        errs.append("$.machine.accelerator: missing")
    for k in ("zoned", "runc", "podman", "qemu"):
        if k not in m.get("versions", {}):
            errs.append(f"$.machine.versions.{k}: missing")
    bk = need(res, "backends", dict, "$") or {}
    for name, b in bk.items():
        if need(b, "available", bool, f"$.backends.{name}") is False:
            need(b, "reason", str, f"$.backends.{name}")
    left = need(res, "leftovers", dict, "$") or {}
    need(left, "ok", bool, "$.leftovers")
    st = res.get("startup")
    if st is not None:
        for name, per in (need(st, "samples_ms", dict, "$.startup") or {}).items():
            for metric in ("true", "first_output"):
                numbers(per.get(metric), f"$.startup.samples_ms.{name}.{metric}")
                stats(st.get("stats_ms", {}).get(name, {}).get(metric),
                      f"$.startup.stats_ms.{name}.{metric}")
    for name, d in (res.get("density") or {}).items():
        w = f"$.density.{name}"
        need(d, "started", int, w)
        if "kib_per_instance" not in d:
            errs.append(f"{w}.kib_per_instance: missing")
        numbers(d.get("start_latency_ms_samples"), f"{w}.start_latency_ms_samples")
        numbers(d.get("used_kib_after_each_start"), f"{w}.used_kib_after_each_start")
        numbers(d.get("attributed_kib_after_each_start"),
                f"{w}.attributed_kib_after_each_start")
        if "kib_per_instance_slope" not in d:
            errs.append(f"{w}.kib_per_instance_slope: missing")
        if d.get("started"):
            numbers(d.get("pss_kib_per_instance_samples"), f"{w}.pss_kib_per_instance_samples")
    for name, i in (res.get("idle") or {}).items():
        numbers(i.get("cpu_pct_per_instance_samples"), f"$.idle.{name}.cpu_pct_per_instance_samples")
        need(i, "window_s", (int, float), f"$.idle.{name}")
    return errs
