"""`zoned image build|import|export|ls|inspect|history|rm|prune`."""
from __future__ import annotations

import os

from zoned.cli.output import human, print_json, print_table


def cmd_image(args) -> int:
    from zoned.errors import ConfigError, ZonedError
    from zoned.images.errors import ImageError
    from zoned.images.store import ImageStore

    store = ImageStore(args.images)
    try:
        cmd = args.image_cmd
        if cmd == "build":
            img = store.build(args.recipe)
            print(f"{img.name}\t{img.rootfs_dir}")
        elif cmd == "import":
            _import(store, args)
        elif cmd == "export":
            from zoned.images.export import export_oci

            desc = export_oci(store, args.name, args.file)
            print(f"{args.file}\t{desc['digest']}")
        elif cmd in ("ls", "list"):
            _ls(store, args.format)
        elif cmd == "inspect":
            meta = store.meta(args.name)
            meta["path"] = store.get(args.name).image_dir
            meta["digest"] = store.digest(args.name)
            print_json(meta)
        elif cmd == "history":
            _history(store.meta(args.name))
        elif cmd == "rm":
            store.remove(args.name)
        elif cmd == "prune":
            for p in store.prune():
                print(p)
            if args.cache:
                import shutil

                cache = os.path.join(store.root_dir, ".cache")
                if os.path.isdir(cache):
                    shutil.rmtree(cache)
                    print(cache)
        else:
            raise ConfigError("image needs a command: build, import, export, ls, inspect, "
                              "history, rm or prune")
    except ImageError as e:
        raise ZonedError(str(e)) from None
    return 0


def _import(store, args) -> None:
    import time

    from zoned.images.unpack import parse_size

    max_size = parse_size(args.max_size) if args.max_size else None
    t0 = time.monotonic()
    img = store.import_image(args.source, name=args.name, max_size=max_size)
    meta = store.meta(img.name)
    seconds = time.monotonic() - t0
    import sys

    print(f"{img.name}\t{img.rootfs_dir}")
    notes = [f"{human(img.size)} in {seconds:.1f}s from {meta['source']['kind']}"]
    if meta.get("setuid") or meta.get("capabilities"):
        notes.append(f"{len(meta.get('setuid', []))} setuid/setgid files and "
                     f"{len(meta.get('capabilities', []))} with file capabilities "
                     f"(listed by: zoned image inspect {img.name})")
    if meta.get("replaced") is not None:  # the old one stays for the zones that use it
        notes.append(f"replaced the image {img.name} of {meta['replaced'] or 'unknown date'}")
    print(f"zoned: imported {img.name}: " + "; ".join(notes), file=sys.stderr)


def _ls(store, fmt: str) -> None:
    from zoned.images.sizes import usage

    images = store.list()
    with store.lock(shared=True):
        shared_bytes = usage({i.name: i.rootfs_dir for i in images}) if images else {}
    # UNIQUE is what removing the image frees: SIZE = SHARED + UNIQUE
    use = {i.name: (shared_bytes[i.name][0], max(0, i.size - shared_bytes[i.name][0]))
           for i in images}
    if fmt == "json":
        print_json([{"name": i.name, "path": i.image_dir, "created": i.created, "size": i.size,
                     "shared": use[i.name][0], "unique": use[i.name][1], "config": i.config}
                    for i in images])
        return
    table = [("NAME", "SIZE", "SHARED", "UNIQUE", "CREATED", "PATH")]
    for i in images:
        shared, unique = use[i.name]
        table.append((i.name, human(i.size), human(shared), human(unique), str(i.created)[:19],
                      i.image_dir))
    print_table(table)


def _history(meta: dict) -> None:
    table = [("CREATED", "CREATED BY", "SIZE", "COMMENT")]
    steps = meta.get("history") or [  # images built before history was recorded
        {"created": meta.get("created", ""), "size": meta.get("size", 0),
         "created_by": f"zoned image build {os.path.basename(str(meta.get('recipe', '')))}",
         "comment": meta.get("description", "")}]
    for h in reversed(steps):
        by = " ".join(str(h.get("created_by", "")).split())
        table.append((str(h.get("created", ""))[:19], by[:70] + ("..." if len(by) > 70 else ""),
                      "0B" if h.get("empty_layer") else human(h.get("size", 0)),
                      str(h.get("comment", ""))[:40]))
    print_table(table)
