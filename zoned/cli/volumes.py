"""`zoned volume create|ls|inspect|rm`: named volumes (zoned.volumes)."""
from __future__ import annotations

import sys

from zoned.cli.common import runtime
from zoned.cli.output import print_json, print_table


def users(rt) -> dict[str, list[str]]:
    """volume name -> the containers whose config mounts it (running or not)."""
    from zoned.volumes import ANN_VOLUMES

    out: dict[str, list[str]] = {}
    for cid in rt.store.ids():
        try:
            names = (rt.config(cid).get("annotations") or {}).get(ANN_VOLUMES, "")
        except Exception:  # noqa: BLE001 - half-created: no config yet
            continue
        for name in filter(None, names.split(",")):
            out.setdefault(name, []).append(cid)
    return out


def cmd_volume(args) -> int:
    from zoned.volumes import Volumes

    rt = runtime(args)
    vols = Volumes(rt.store.data)
    what = {"list": "ls", "remove": "rm"}.get(args.volume_cmd, args.volume_cmd)
    if what == "create":
        print(vols.create(args.name))
        return 0
    if what == "ls":
        names = vols.names()
        if args.quiet:
            print("\n".join(names)) if names else None
        elif args.format == "json":
            print_json([vols.inspect(n) for n in names])
        elif args.format == "table":
            print_table([("DRIVER", "VOLUME NAME")] + [("local", n) for n in names])
        else:
            from zoned.cli.format import render

            for n in names:
                print(render(args.format, vols.inspect(n)))
        return 0
    if what == "inspect":
        used = users(rt)
        docs = [{**vols.inspect(n), "UsedBy": used.get(n, [])} for n in args.names]
        if args.format and args.format != "json":
            from zoned.cli.format import render

            for d in docs:
                print(render(args.format, d))
        else:
            print_json(docs)
        return 0
    used = users(rt)
    from zoned.errors import ZonedError

    failed = 0
    for n in args.names:
        try:
            vols.remove(n, used.get(n, []), force=args.force)
            print(n)
        except ZonedError as e:
            sys.stderr.write(f"zoned: {e}\n")
            failed = e.exit_code
    return failed
