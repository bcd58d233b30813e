"""How the CLI prints: JSON documents, aligned tables and human sizes, in one place so that
every command's `--format json` and table look alike."""
from __future__ import annotations

import sys
import time

# zoned's records keep times as epoch seconds where that is handy (state.json's finished,
# a checkpoint's, a zone's boots and exits); output shows every time in one format.
EPOCH_KEYS = frozenset({"finished", "checkpointed", "booted", "time", "restart_times",
                        "started", "since"})


def rfc3339(epoch: float | None) -> str | None:
    """One timestamp format everywhere: RFC 3339, UTC, microseconds, Z."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + \
        f".{int(epoch % 1 * 1e6):06d}Z"


def is_rfc3339(text: str) -> bool:
    """Whether `text` is in rfc3339()'s form already (YYYY-MM-DDTHH:MM:SS.ffffffZ), as
    zoned writes its own times (state.json's `created`)."""
    return (len(text) == 27 and text[26] == "Z" and text[19] == "."
            and text[4] == text[7] == "-" and text[10] == "T" and text[13] == text[16] == ":"
            and (text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16]
                 + text[17:19] + text[20:26]).isdecimal()
            and text.isascii())


def _from_text(text: str) -> str:
    """An RFC 3339 / ISO 8601 time in any offset or precision as rfc3339(); other text
    as it was. A time in that form already is kept as it is, without the datetime module
    (~1.5 ms of every `zoned state`, which podman and containerd call often) and without
    the float's rounding, which could move it by a microsecond."""
    if len(text) < 20 or text[4:5] != "-" or text[10:11] != "T" or not text[:4].isdigit():
        return text
    if is_rfc3339(text):
        return text
    import datetime

    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is None:
        return text
    return rfc3339(when.timestamp())


def exposed(data, key: str | None = None):
    """`data` with its times in rfc3339(): epoch numbers under EPOCH_KEYS, and ISO
    strings with another offset or precision; the rest as it was."""
    if isinstance(data, dict):
        return {k: exposed(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [exposed(v, key) for v in data]
    if key in EPOCH_KEYS and isinstance(data, (int, float)) and not isinstance(data, bool) \
            and data > 1e8:
        return rfc3339(data)
    if isinstance(data, str):
        return _from_text(data)
    return data


def print_json(data) -> None:
    """`data` as indented JSON on stdout (what `--format json` and `inspect` print), its
    times in one format (exposed())."""
    from zoned.linux import jsonc

    jsonc.dump(exposed(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings in left-aligned columns, the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def human(n: float | None) -> str:
    """A byte count as 1.5KiB, 64MiB...; '-' for unknown, negative or unlimited (2^62+)."""
    if n is None or n < 0 or n >= 1 << 62:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}PiB"


def log_error(path: str, log_format: str, message: str) -> None:
    """An error line in runc's --log file (logrus's JSON or text), where podman and
    containerd look for the reason a runtime command failed."""
    import json

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = (json.dumps({"level": "error", "msg": message, "time": now})
            if log_format == "json"  # logrus's text: the message quoted, escaped
            else f'time="{now}" level=error msg={json.dumps(message)}')
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass
