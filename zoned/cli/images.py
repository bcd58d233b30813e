"""`zoned image build|ls|rm`."""
from __future__ import annotations

from zoned.cli.output import human, print_json, print_table


def cmd_image(args) -> int:
    from zoned.errors import ConfigError, ZonedError
    from zoned.images.errors import ImageError
    from zoned.images.store import ImageStore

    store = ImageStore(args.images)
    try:
        if args.image_cmd == "build":
            img = store.build(args.recipe)
            print(f"{img.name}\t{img.rootfs_dir}")
        elif args.image_cmd in ("ls", "list"):
            images = store.list()
            if args.format == "json":
                print_json([{"name": i.name, "path": i.image_dir, "created": i.created,
                              "size": i.size, "config": i.config} for i in images])
            else:
                table = [("NAME", "SIZE", "CREATED", "PATH")]
                for i in images:
                    table.append((i.name, human(i.size), str(i.created)[:19], i.image_dir))
                print_table(table)
        elif args.image_cmd == "rm":
            store.remove(args.name)
        else:
            raise ConfigError("image needs a command: build, ls or rm")
    except ImageError as e:
        raise ZonedError(str(e)) from None
    return 0
