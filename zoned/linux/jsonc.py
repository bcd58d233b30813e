"""json.loads and json.dumps on CPython's C accelerator (_json), without importing json.

json's decoder and encoder import re, and re imports enum, functools and collections:
~6 ms of every zoned command on this 2-core host, for work _json does in C anyway (json
itself uses the same scanner and encoder). The text and the errors are json's: dumps
writes what json.dumps writes, loads raises JSONDecodeError (a ValueError; json.decoder is
imported only then). What this does not cover (indent=, default=, another Python without
_json) is handed to json itself, imported on that call.
"""
from __future__ import annotations

try:
    import _json
except ImportError:  # pragma: no cover - not CPython: json does it all
    _json = None

_SPACE = " \t\n\r"


class _ScanContext:
    """What _json.make_scanner reads off json.JSONDecoder: its defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_ScanContext()) if _json is not None else None


def _not_serializable(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def loads(s: str | bytes | bytearray):
    """json.loads(s) for UTF-8 text or bytes."""
    if _scan is None:
        import json

        return json.loads(s)
    if not isinstance(s, str):
        s = bytes(s).decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = len(s) - len(s.lstrip(_SPACE))
    try:
        obj, end = _scan(s, start)
    except StopIteration as err:
        raise _decode_error("Expecting value", s, err.value) from None
    if s[end:].strip(_SPACE):
        raise _decode_error("Extra data", s, end + len(s[end:]) - len(s[end:].lstrip(_SPACE)))
    return obj


def load(f):
    return loads(f.read())


def dumps(obj, *, separators: tuple[str, str] | None = None, sort_keys: bool = False,
          ensure_ascii: bool = True, **other) -> str:
    """json.dumps(obj, separators=, sort_keys=, ensure_ascii=); any other option: json's."""
    if other or _json is None:
        import json

        return json.dumps(obj, separators=separators, sort_keys=sort_keys,
                          ensure_ascii=ensure_ascii, **other)
    item_sep, key_sep = separators or (", ", ": ")
    quote = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    if isinstance(obj, str):
        return quote(obj)
    encode = _json.make_encoder({}, _not_serializable, quote, None, key_sep, item_sep,
                                sort_keys, False, True)
    return "".join(encode(obj, 0))


def dump(obj, f, **options) -> None:
    f.write(dumps(obj, **options))


def _decode_error(message: str, doc: str, pos: int) -> ValueError:
    from json.decoder import JSONDecodeError

    return JSONDecodeError(message, doc, pos)


def __getattr__(name: str):
    if name == "JSONDecodeError":  # json's own class: `except jsonc.JSONDecodeError` works
        from json.decoder import JSONDecodeError

        return JSONDecodeError
    raise AttributeError(name)
