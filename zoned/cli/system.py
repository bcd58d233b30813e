"""`zoned gc`: what crashed or killed zoned processes left behind; `zoned info`."""
from __future__ import annotations

import sys

from zoned.cli.common import runtime


def cmd_gc(args) -> int:
    from zoned.gc import collect

    errors: list[str] = []
    for line in collect(runtime(args), dry_run=args.dry_run, errors=errors,
                        images=args.images):
        print(line)
    for e in errors:  # the rest was collected; the next gc tries these again
        sys.stderr.write(f"zoned: {e}\n")
    return 125 if errors else 0


def cmd_info(args) -> int:
    """Facts about this zoned: rootless or not (zoned.rootless), where things go."""
    import os

    from zoned import __version__, storage
    from zoned.runtime.store import default_root

    state_root = args.root or default_root()
    facts = {"version": __version__, "rootless": os.geteuid() != 0,
             "state_root": state_root,
             "data_root": args.data_root or storage.data_root(state_root)}
    if facts["rootless"]:
        from zoned.rootless import describe

        facts.update(describe())
        facts["state_root"], facts["data_root"] = state_root, \
            args.data_root or storage.data_root(state_root)
        if getattr(args, "images", None):
            facts["images"] = args.images
    else:
        from zoned.cgroups import detect
        from zoned.images.store import ImageStore

        facts["images"] = ImageStore(getattr(args, "images", None)).root_dir
        facts["cgroups"] = detect()
        from zoned.checkpoint.criu import build_facts

        criu = build_facts()
        facts["criu"] = (f"{criu['criu']} {criu['version']}, patches: {criu['patches']}"
                         if criu["criu"] else f"none ({criu['why']})")
    if args.format == "json":
        import json

        print(json.dumps(facts, indent=2))
        return 0
    for k, v in facts.items():
        if k == "rootless":
            v = "yes (user namespace, no root needed)" if v else "no (running as root)"
        elif isinstance(v, list):
            v = ", ".join(f"{m['containerID']}->{m['hostID']} x{m['size']}" for m in v)
        print(f"{k + ':':<14}{v}")
    return 0
