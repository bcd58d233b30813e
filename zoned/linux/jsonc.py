"""json.loads and json.dumps on CPython's C accelerator (_json), without importing json.

json's decoder and encoder import re, and re imports enum, functools and collections:
~6 ms of every zoned command on this 2-core host, for work _json does in C anyway (json
itself uses the same scanner and encoder). The text and the errors are json's: dumps
writes what json.dumps writes (indent= too, as json's own Python encoder does it), loads
raises JSONDecodeError (a ValueError; json.decoder is imported only then). What this does
not cover (default=, skipkeys=, another Python without _json) is handed to json itself,
imported on that call.
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
    except SystemError:  # a syntax error inside: _json raises json.decoder's error only
        import json  # once json.decoder is loaded (else this); json says what and where

        return json.loads(s)
    if s[end:].strip(_SPACE):
        raise _decode_error("Extra data", s, end + len(s[end:]) - len(s[end:].lstrip(_SPACE)))
    return obj


def load(f):
    return loads(f.read())


def dumps(obj, *, separators: tuple[str, str] | None = None, sort_keys: bool = False,
          ensure_ascii: bool = True, indent: int | str | None = None, **other) -> str:
    """json.dumps(obj, separators=, sort_keys=, ensure_ascii=, indent=); any other
    option: json's."""
    if other or _json is None:
        import json

        return json.dumps(obj, separators=separators, sort_keys=sort_keys,
                          ensure_ascii=ensure_ascii, indent=indent, **other)
    quote = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    if indent is not None:
        item_sep, key_sep = separators or (",", ": ")
        pad = " " * indent if isinstance(indent, int) else indent
        out: list[str] = []
        _indented(obj, out, "\n", pad, quote, item_sep, key_sep, sort_keys)
        return "".join(out)
    item_sep, key_sep = separators or (", ", ": ")
    if isinstance(obj, str):
        return quote(obj)
    encode = _json.make_encoder({}, _not_serializable, quote, None, key_sep, item_sep,
                                sort_keys, False, True)
    return "".join(encode(obj, 0))


def _scalar(o, quote) -> str | None:
    """A scalar's JSON text as json writes it, or None for a container."""
    if isinstance(o, str):
        return quote(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        if o != o:
            return "NaN"
        if o in (float("inf"), float("-inf")):
            return "Infinity" if o > 0 else "-Infinity"
        return float.__repr__(o)
    return None


def _indented(o, out: list[str], newline: str, pad: str, quote, item_sep: str,
              key_sep: str, sort_keys: bool) -> None:
    """json's indented layout (json.encoder._make_iterencode), appended to `out`."""
    text = _scalar(o, quote)
    if text is not None:
        out.append(text)
        return
    if isinstance(o, dict):
        items = sorted(o.items()) if sort_keys else o.items()
        opening, closing = "{", "}"
    elif isinstance(o, (list, tuple)):
        items, opening, closing = o, "[", "]"
    else:
        _not_serializable(o)
    if not o:
        out.append(opening + closing)
        return
    inner = newline + pad
    out.append(opening)
    for n, item in enumerate(items):
        out.append(inner if n == 0 else item_sep + inner)
        if opening == "{":
            key, item = item
            if isinstance(key, str):
                out.append(quote(key) + key_sep)
            elif isinstance(key, (int, float)) or key is None:  # json's: 1 -> "1"
                out.append(f'"{_scalar(key, quote)}"' + key_sep)
            else:
                raise TypeError(f"keys must be str, int, float, bool or None, not "
                                f"{key.__class__.__name__}")
        _indented(item, out, inner, pad, quote, item_sep, key_sep, sort_keys)
    out.append(newline + closing)


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
