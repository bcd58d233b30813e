"""`zoned network ...` (placeholder until the network layer lands)."""


def add_parser(sub, argparse) -> None:
    sub.add_parser("network", help="manage networks (not available yet)")


def run(args) -> int:
    from zoned.errors import ZonedError

    raise ZonedError("networking is not available yet")
