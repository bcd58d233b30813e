"""Zone files: one YAML file per zone, keys in the spirit of xmdomain.cfg. Loading checks
every key and type and reports the first problem as one line naming the file, the line and
the key (ConfigError, exit 125). yaml is imported here only: never on `zoned run`'s path."""
from __future__ import annotations

import os
import re

from zoned.errors import ConfigError

DEFAULT_ZONE_DIR = "/etc/zoned/zones"
ACTIONS = ("destroy", "restart", "preserve")
# xm's defaults: a guest that powers off is gone, one that reboots or crashes comes back
DEFAULT_ACTIONS = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "restart"}
RESTART_RE = re.compile(r"^(no|always|on-failure(:[1-9][0-9]*)?)\Z")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")

# key -> (accepted types, description); nested vif keys are checked in _check_vif
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a zone name"),
    "uuid": ((str,), "a UUID"),
    "image": ((str,), "an image name"),
    "rootfs": ((str,), "a directory"),
    "command": ((str, list), "a command line or a list of arguments"),
    "env": ((dict, list), "a mapping or a list of NAME=VALUE"),
    "memory": ((int, str), "MiB or a size such as 256m"),
    "maxmem": ((int, str), "MiB or a size such as 512m"),
    "vcpus": ((int, float), "a number of CPUs"),
    "cpus": ((str, int), "a cpuset such as 0-1"),
    "pids": ((int,), "a number of processes"),
    "hostname": ((str,), "a host name"),
    "vif": ((list,), "a list of interfaces"),
    "volumes": ((list,), "a list of HOST:ZONE[:ro]"),
    "on_poweroff": ((str,), "|".join(ACTIONS)),
    "on_reboot": ((str,), "|".join(ACTIONS)),
    "on_crash": ((str,), "|".join(ACTIONS)),
    "restart": ((str,), "no, on-failure[:N] or always"),
    "autostart": ((bool,), "true or false"),
    "backend": ((str,), "zone or vm"),
    "tty": ((bool,), "true or false (a console to attach to)"),
    "user": ((str, int), "a user"),
    "workdir": ((str,), "an absolute path"),
    "dns": ((list,), "a list of addresses"),
    "stop_signal": ((str, int), "a signal such as SIGTERM"),
    "stop_timeout": ((int, float), "seconds"),
    "capabilities": ((list,), "a list of capabilities to add, such as [SYS_BOOT]"),
}
VIF_KEYS = {"network": (str,), "ip": (str,), "mac": (str,), "ports": (list,)}


def zone_dir() -> str:
    return os.environ.get("ZONED_ZONE_DIR") or DEFAULT_ZONE_DIR


def zone_path(name: str) -> str:
    return os.path.join(zone_dir(), f"{name}.yaml")


class Zone:
    """A loaded, checked zone file: `data` holds its keys, `lines` where each was."""

    __slots__ = ("path", "data", "lines", "text")

    def __init__(self, path: str, data: dict, lines: dict, text: str):
        self.path, self.data, self.lines, self.text = path, data, lines, text

    @property
    def name(self) -> str:
        return self.data["name"]

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def action(self, event: str) -> str:
        return self.data.get(event, DEFAULT_ACTIONS[event])

    def error(self, key: str, message: str, line: int | None = None) -> ConfigError:
        """One line naming this file, the line of `key` and the key."""
        line = line or self.lines.get(key) or self.lines.get(key.split("[")[0].split(".")[0])
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {key}: {message}")


def load(path: str) -> Zone:
    """Read and check a zone file."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such zone file") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<zone file>") -> Zone:
    import yaml

    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.context_mark or e.problem_mark  # where the broken construct began
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a zone file is a mapping of keys (name: ..., image: ...)")
    lines: dict[str, int] = {}
    for k, v in node.value:
        lines[str(k.value)] = k.start_mark.line + 1
        if isinstance(v, yaml.SequenceNode):  # list items: "vif[0]", "vif[0].ip"
            for i, item in enumerate(v.value):
                lines[f"{k.value}[{i}]"] = item.start_mark.line + 1
                if isinstance(item, yaml.MappingNode):
                    for ik, _ in item.value:
                        lines[f"{k.value}[{i}].{ik.value}"] = ik.start_mark.line + 1
    zone = Zone(path, data, lines, text)
    check(zone)
    return zone


def check(zone: Zone) -> None:
    data = zone.data
    for key, value in data.items():
        if key not in KEYS:
            raise zone.error(str(key), f"unknown key (known: {', '.join(sorted(KEYS))})")
        types, what = KEYS[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise zone.error(key, f"must be {what}, not {_kind(value)}")
    if "name" not in data:
        base = os.path.basename(zone.path)
        if not base.endswith(".yaml"):
            raise zone.error("name", "missing (or name the file NAME.yaml)", 1)
        data["name"] = base[:-5]
    from zoned.oci.spec import check_id

    try:
        check_id(data["name"])
    except ConfigError as e:
        raise zone.error("name", str(e)) from None
    if "uuid" in data and not UUID_RE.match(data["uuid"].lower()):
        raise zone.error("uuid", f"{data['uuid']!r} is not a UUID")
    if "image" in data and "rootfs" in data:
        raise zone.error("rootfs", "give image or rootfs, not both")
    if "rootfs" in data and not os.path.isabs(data["rootfs"]):
        raise zone.error("rootfs", "must be an absolute path")
    for event in DEFAULT_ACTIONS:
        if event in data and data[event] not in ACTIONS:
            raise zone.error(event, f"{data[event]!r}: must be one of {', '.join(ACTIONS)}")
    if "restart" in data and not RESTART_RE.match(data["restart"]):
        raise zone.error("restart", f"{data['restart']!r}: must be no, on-failure[:N] "
                         "or always")
    if data.get("backend", "zone") not in ("zone", "vm"):
        raise zone.error("backend", f"{data['backend']!r}: must be zone or vm")
    if isinstance(data.get("command"), list) and not all(isinstance(a, (str, int, float))
                                                         for a in data["command"]):
        raise zone.error("command", "every argument must be a string")
    env = data.get("env")
    if isinstance(env, list) and not all(isinstance(e, str) and "=" in e for e in env):
        raise zone.error("env", "every item must be NAME=VALUE")
    for key in ("vcpus", "pids", "stop_timeout"):
        if key in data and data[key] <= 0:
            raise zone.error(key, "must be greater than 0")
    for i, cap in enumerate(data.get("capabilities") or []):
        if not isinstance(cap, str) or not re.match(r"^(CAP_)?[A-Z_]+$", cap.upper()):
            raise zone.error(f"capabilities[{i}]", f"{cap!r} is not a capability name")
    for i, vol in enumerate(data.get("volumes") or []):
        if not isinstance(vol, str) or ":" not in vol:
            raise zone.error(f"volumes[{i}]", "must be HOST:ZONE[:ro]")
    for i, vif in enumerate(data.get("vif") or []):
        _check_vif(zone, i, vif)


def _check_vif(zone: Zone, i: int, vif) -> None:
    key = f"vif[{i}]"
    if not isinstance(vif, dict):
        raise zone.error(key, f"must be a mapping (network: NAME, ip: ...), not {_kind(vif)}")
    for k, v in vif.items():
        if k not in VIF_KEYS:
            raise zone.error(f"{key}.{k}", f"unknown key (known: {', '.join(VIF_KEYS)})")
        if not isinstance(v, VIF_KEYS[k]):
            raise zone.error(f"{key}.{k}", f"must be a {VIF_KEYS[k][0].__name__}, "
                             f"not {_kind(v)}")
    if "network" not in vif:
        raise zone.error(key, "needs network: NAME")
    if i > 0 and ("ip" in vif or "mac" in vif):
        raise zone.error(f"{key}.{'ip' if 'ip' in vif else 'mac'}",
                         "only the first vif may set ip and mac")
    for j, port in enumerate(vif.get("ports") or []):
        if not isinstance(port, (str, int)):
            raise zone.error(f"{key}.ports", f"item {j} must be HOSTPORT:ZONEPORT[/proto]")


def _kind(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "empty"}.get(type(value),
                                                                       type(value).__name__)


def set_key(path: str, key: str, value: str) -> None:
    """Change (or add) one top-level `key: value` line in a zone file, keeping the rest of
    the text (comments, order) as the admin wrote it."""
    set_keys(path, {key: value})


def set_keys(path: str, changes: dict[str, str]) -> Zone:
    """set_key for several keys at once; the result is checked as a zone file before it
    replaces the old one (a bad value changes nothing)."""
    with open(path) as f:
        text = f.read()
    for key, value in changes.items():
        pattern = re.compile(rf"^{re.escape(key)}\s*:.*$", re.M)
        line = f"{key}: {value}"
        text = pattern.sub(lambda _m, line=line: line, text, count=1) \
            if pattern.search(text) else \
            text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    zone = parse(text, path)
    write_text(path, text)
    return zone


def write_text(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
