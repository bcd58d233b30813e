"""The subset of Go's text/template that scripts pass to `podman inspect --format` and
`ps --format`: {{.A.B}}, {{json .A}}, {{index .A "key"}}, {{len .A}}, {{upper .A}},
{{lower .A}}, {{join .A ","}}, {{range .A}}...{{end}}, {{if .A}}...{{else}}...{{end}}, and
\\t, \\n escapes. Anything else is one clear error (exit 125), never a wrong value."""
from __future__ import annotations

import re

from zoned.errors import ConfigError

MAPS = {"Labels", "Networks", "Ports", "Annotations", "annotations"}  # maps, not structs
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')


def render(template: str, data) -> str:
    """`template` applied to `data` (dicts and lists, podman's field names)."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    nodes, rest = _parse(_lex(template), template)
    if rest:
        raise ConfigError(f"invalid --format {template!r}: unexpected {{{{{rest[0][1]}}}}}")
    return _run(nodes, data, data, template)


def _lex(template: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for m in _ACTION.finditer(template):
        if m.start() > pos:
            out.append(("text", template[pos:m.start()]))
        out.append(("action", m.group(1)))
        pos = m.end()
    if pos < len(template):
        out.append(("text", template[pos:]))
    return out


MAX_DEPTH = 50  # nested range/if blocks: a deeper template is refused, not a RecursionError


def _parse(tokens, template, stop=("end",), depth=0):
    """Nodes until an {{end}}/{{else}}: ("text", s), ("expr", a), ("range"|"if", a, body,
    else_body). Returns (nodes, tokens left starting at the stop word)."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"invalid --format: range/if nested deeper than {MAX_DEPTH}")
    nodes = []
    while tokens:
        kind, value = tokens[0]
        word = value.split(" ", 1)[0] if kind == "action" else ""
        if word in ("end", "else"):
            return nodes, tokens
        tokens = tokens[1:]
        if kind == "text":
            nodes.append(("text", value))
        elif word in ("range", "if"):
            body, tokens = _parse(tokens, template, depth=depth + 1)
            other = []
            if tokens and tokens[0][1] == "else":
                other, tokens = _parse(tokens[1:], template, depth=depth + 1)
            if not tokens or tokens[0][1] != "end":
                raise ConfigError(f"invalid --format {template!r}: {{{{{word}}}}} without "
                                  "{{end}}")
            tokens = tokens[1:]
            nodes.append((word, value.split(" ", 1)[1] if " " in value else "", body, other))
        else:
            nodes.append(("expr", value))
    return nodes, tokens


def _run(nodes, dot, root, template) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(_show(_eval(node[1], dot, root, template)))
        elif node[0] == "if":
            value = _eval(node[1], dot, root, template)
            out.append(_run(node[2] if value else node[3], dot, root, template))
        else:  # range
            value = _eval(node[1], dot, root, template)
            items = list(value.values()) if isinstance(value, dict) else list(value or [])
            if not items:
                out.append(_run(node[3], dot, root, template))
            for item in items:
                out.append(_run(node[2], item, root, template))
    return "".join(out)


def _eval(expr: str, dot, root, template):
    tokens = _TOKEN.findall(expr)
    if not tokens:
        raise ConfigError(f"invalid --format {template!r}: empty {{{{}}}}")
    func, args = (None, tokens) if tokens[0].startswith((".", "$", '"')) else \
        (tokens[0], tokens[1:])
    values = [_value(a, dot, root, template) for a in args]
    if func is None:
        if len(values) != 1:
            raise ConfigError(f"invalid --format {template!r}: {expr!r} is not a field")
        return values[0]
    import json

    from zoned.cli.output import exposed

    funcs = {
        "json": lambda v: json.dumps(exposed(v), separators=(",", ":")),
        "index": lambda v, *keys: _index(v, keys, template),
        "len": lambda v: len(v or ()),
        "upper": lambda v: _show(v).upper(), "lower": lambda v: _show(v).lower(),
        "join": lambda v, sep: sep.join(_show(x) for x in v or ()),
        "truncate": lambda v, n: _show(v)[:int(n)],
    }
    if func not in funcs:
        raise ConfigError(f"invalid --format {template!r}: function {func!r} is not "
                          f"supported (only {', '.join(funcs)}, range, if)")
    try:
        return funcs[func](*values)
    except (TypeError, ValueError, AttributeError):  # truncate "a", join of a non-list...
        raise ConfigError(f"invalid --format {template!r}: wrong arguments to {func}") \
            from None


def _value(token: str, dot, root, template):
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token == ".":
        return dot
    value = root if token.startswith("$") else dot
    path = token.lstrip("$").lstrip(".")
    parent = None
    for name in path.split(".") if path else []:
        if parent in MAPS and isinstance(value, dict) and name not in value:
            return None  # Go: a missing map key is <no value>, a missing field an error
        parent = name
        if not isinstance(value, dict) or name not in value:
            raise ConfigError(f"invalid --format {template!r}: can't evaluate field {name} "
                              f"(in {token})")
        value = value[name]
    return value


def _index(value, keys, template):
    for k in keys:
        try:
            value = value[int(k) if isinstance(value, list) else k]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ConfigError(f"invalid --format {template!r}: no index {k!r}") from None
    return value


def _show(value) -> str:
    """Go's way of printing a value: true/false, <no value> for nil, [a b] for lists."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_show(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
