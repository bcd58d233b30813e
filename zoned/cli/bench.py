"""`zoned bench`: zones vs VMs (and runc, podman, and the floors) measured side by side on
this host; the measuring code is zoned.bench. Writes bench.json (every raw sample and the
machine facts), report.md, table.txt and PNG plots to --out, prints the table (or the JSON
or Markdown) on stdout and progress on stderr."""
from __future__ import annotations

import sys


def default_out():
    """bench/results/zoned-bench in zoned's source tree, else ./zoned-bench."""
    from pathlib import Path

    from zoned.bench.facts import REPO

    if (REPO / "bench" / "results").is_dir():
        return REPO / "bench" / "results" / "zoned-bench"
    return Path.cwd() / "zoned-bench"


def options(args):
    """The run's Options from the command line; ConfigError naming the bad flag."""
    import os

    from zoned.bench.kinds import INSTANCE_BACKENDS
    from zoned.bench.session import Options
    from zoned.errors import ConfigError
    from zoned.oci.values import parse_size

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in INSTANCE_BACKENDS]
    if bad or not backends:
        raise ConfigError(f"invalid --backends {args.backends!r}: expected a comma-separated "
                          f"list of {','.join(INSTANCE_BACKENDS)}")
    if args.count is not None and args.count < 1:
        raise ConfigError(f"invalid --count {args.count}: must be at least 1")
    if args.window is not None and not 0 < args.window <= 3600:
        raise ConfigError(f"invalid --window {args.window:g}: seconds, in (0, 3600]")
    budget = parse_size(args.budget, "--budget")
    if budget < 1024 * 1024:
        raise ConfigError(f"invalid --budget {args.budget!r}: at least 1M")
    zoned = getattr(args, "zoned", None) or ""
    if zoned and not (os.path.isfile(zoned) and os.access(zoned, os.X_OK)):
        raise ConfigError(f"invalid --zoned {zoned!r}: not an executable file")
    return Options(what=args.what, backends=list(dict.fromkeys(backends)), count=args.count,
                   quick=args.quick, budget_kib=budget // 1024, window=args.window,
                   zoned=os.path.abspath(zoned) if zoned else "")


def write_outputs(result: dict, out, plot_dir) -> dict[str, str]:
    """bench.json, plots, report.md and table.txt; {kind: path}."""
    import json
    import os
    from pathlib import Path

    from zoned.bench import plots, report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"

    def dump() -> None:
        from zoned.linux.files import replace_file  # (no fixed bench.json.tmp: see there)

        replace_file(str(path), (json.dumps(result, indent=1) + "\n").encode())

    dump()
    files = {"json": str(path)}
    names: list[str] = []
    if plot_dir == "":
        result["plots_note"] = "no plots (--plot '')"
    else:
        pdir = Path(plot_dir) if plot_dir else out
        names, why = plots.make(str(path), str(pdir))
        names = [os.path.relpath(pdir / n, out) for n in names]  # relative: the dir can move
        result["plots"] = names
        result["plots_note"] = why or ", ".join(names) or "no data to plot"
        dump()
    (out / "report.md").write_text(report.render_markdown(result, names))
    (out / "table.txt").write_text(report.render_table(result))
    files.update({"markdown": str(out / "report.md"), "table": str(out / "table.txt")})
    return files


def cmd_bench(args) -> int:
    import json
    import os

    from zoned.bench import report, session
    from zoned.cli.common import interruptible
    from zoned.errors import ConfigError

    opts = options(args)
    if os.geteuid() != 0:
        raise ConfigError("zoned bench needs root (it starts containers, VMs and networks)")
    interruptible()
    result = session.run(opts, session.Progress())
    files = write_outputs(result, args.out or default_out(), args.plot)
    if args.format == "json":
        print(json.dumps(result, indent=1))
    elif args.format == "markdown":
        print(report.render_markdown(result, result.get("plots")))  # links relative to --out
    else:
        print(report.render_table(result))
    for kind, path in files.items():
        print(f"{kind}: {path}", file=sys.stderr)
    problems = report.validate(result)
    for p in problems:
        print(f"zoned: bench result: {p}", file=sys.stderr)
    return 0 if result["complete"] and result["leftovers"]["ok"] and not problems else 1
