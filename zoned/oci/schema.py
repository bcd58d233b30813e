"""The types of config.json's fields (runtime-spec 1.2, specs-go/config.go), checked before
anything is created.

runc gets this check for free: it decodes config.json into Go structs, so `"uid": -1`, an
rlimit `"hard": "abc"` or `"env": "A=b"` fail to decode with the field's name. zoned works
on the plain JSON, so it checks the same types here, once, and every later step can trust
them instead of failing deep inside with a TypeError. Unknown fields are ignored (as Go
does); a JSON null is treated as the field being absent and removed, since the rest of
zoned reads configs with `.get(key, default)`.
"""
from __future__ import annotations

from zoned.errors import ConfigError

# Scalar types by Go type name: (low, high) for integers.
_INT_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1), "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint": (0, (1 << 64) - 1),
    "uint16": (0, (1 << 16) - 1), "uint32": (0, (1 << 32) - 1), "uint64": (0, (1 << 64) - 1),
}
_NAMES = {"int": "an integer", "int32": "a 32-bit integer", "int64": "an integer",
          "uint": "an unsigned integer", "uint16": "an integer from 0 to 65535",
          "uint32": "an integer from 0 to 4294967295",
          "uint64": "an unsigned 64-bit integer"}

# A type is a scalar name, ["list", T], ["map", T] (string keys) or a dict of fields;
# a field name ending in "!" is required.
_STRS = ["list", "str"]
_IDMAP = {"containerID!": "uint32", "hostID!": "uint32", "size!": "uint32"}
_HOOK = {"path!": "str", "args": _STRS, "env": _STRS, "timeout": "int"}
_BLKDEV = {"major!": "int64", "minor!": "int64"}
_THROTTLE = ["list", {**_BLKDEV, "rate!": "uint64"}]

RESOURCES = {
    "devices": ["list", {"allow!": "bool", "type": "str", "major": "int64",
                         "minor": "int64", "access": "str"}],
    "memory": {"limit": "int64", "reservation": "int64", "swap": "int64", "kernel": "int64",
               "kernelTCP": "int64", "swappiness": "uint64", "disableOOMKiller": "bool",
               "useHierarchy": "bool", "checkBeforeUpdate": "bool"},
    "cpu": {"shares": "uint64", "quota": "int64", "burst": "uint64", "period": "uint64",
            "realtimeRuntime": "int64", "realtimePeriod": "uint64", "cpus": "str",
            "mems": "str", "idle": "int64"},
    "pids": {"limit": "int64"},
    "blockIO": {"weight": "uint16", "leafWeight": "uint16",
                "weightDevice": ["list", {**_BLKDEV, "weight": "uint16",
                                          "leafWeight": "uint16"}],
                "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
                "throttleReadIOPSDevice": _THROTTLE, "throttleWriteIOPSDevice": _THROTTLE},
    "hugepageLimits": ["list", {"pageSize!": "str", "limit!": "uint64"}],
    "network": {"classID": "uint32",
                "priorities": ["list", {"name!": "str", "priority!": "uint32"}]},
    "rdma": ["map", {"hcaHandles": "uint32", "hcaObjects": "uint32"}],
    "unified": ["map", "str"],
}

CONFIG = {
    "ociVersion!": "str",
    "root!": {"path!": "str", "readonly": "bool"},
    "process!": {
        "terminal": "bool", "consoleSize": {"height!": "uint", "width!": "uint"},
        "user": {"uid": "uint32", "gid": "uint32", "umask": "uint32",
                 "additionalGids": ["list", "uint32"]},
        "args!": _STRS, "env": _STRS, "cwd": "str",
        "capabilities": {k: _STRS for k in
                         ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": ["list", {"type!": "str", "hard!": "uint64", "soft!": "uint64"}],
        "noNewPrivileges": "bool", "apparmorProfile": "str", "oomScoreAdj": "int",
        "scheduler": {"policy!": "str", "nice": "int32", "priority": "int32",
                      "flags": _STRS, "runtime": "uint64", "deadline": "uint64",
                      "period": "uint64"},
        "selinuxLabel": "str", "ioPriority": {"class!": "str", "priority": "int"},
        "execCPUAffinity": {"initial": "str", "final": "str"},
    },
    "hostname": "str", "domainname": "str",
    "mounts": ["list", {"destination!": "str", "type": "str", "source": "str",
                        "options": _STRS, "uidMappings": ["list", _IDMAP],
                        "gidMappings": ["list", _IDMAP]}],
    "hooks": {k: ["list", _HOOK] for k in ("prestart", "createRuntime", "createContainer",
                                           "startContainer", "poststart", "poststop")},
    "annotations": ["map", "str"],
    "linux": {
        "uidMappings": ["list", _IDMAP], "gidMappings": ["list", _IDMAP],
        "sysctl": ["map", "str"], "resources": RESOURCES, "cgroupsPath": "str",
        "namespaces": ["list", {"type!": "str", "path": "str"}],
        "devices": ["list", {"path!": "str", "type!": "str", "major": "int64",
                             "minor": "int64", "fileMode": "uint32", "uid": "uint32",
                             "gid": "uint32"}],
        "netDevices": ["map", {"name": "str"}],
        "seccomp": {"defaultAction!": "str", "defaultErrnoRet": "uint",
                    "architectures": _STRS, "flags": _STRS, "listenerPath": "str",
                    "listenerMetadata": "str",
                    "syscalls": ["list", {"names!": _STRS, "action!": "str",
                                          "errnoRet": "uint",
                                          "args": ["list", {"index!": "uint",
                                                            "value!": "uint64",
                                                            "valueTwo": "uint64",
                                                            "op!": "str"}]}]},
        "rootfsPropagation": "str", "maskedPaths": _STRS, "readonlyPaths": _STRS,
        "mountLabel": "str",
        "intelRdt": {"closID": "str", "schemata": _STRS, "l3CacheSchema": "str",
                     "memBwSchema": "str", "enableMonitoring": "bool"},
        "personality": {"domain!": "str", "flags": _STRS},
        "timeOffsets": ["map", {"secs": "int64", "nanosecs": "uint32"}],
    },
}


def check(value: object, typ: object = None, where: str = "", source: str = "config.json") -> object:
    """Check `value` against `typ` (the whole config by default); raise a ConfigError that
    names the field (e.g. "config.json: process.rlimits[0].hard: ..."). Nulls inside
    objects are dropped."""
    if typ is None:
        typ = CONFIG
    try:
        return _check(value, typ, where)
    except ConfigError as e:
        if source == "config.json":
            raise
        raise ConfigError(str(e).replace("config.json: ", f"{source}: ", 1)) from None


# An object type's fields as (key, type, required), in its order, made once per type. The
# entry holds the type itself, so its id is never another's.
_FIELDS: dict[int, tuple[dict, tuple[tuple[str, object, bool], ...]]] = {}


def _fields(typ: dict) -> tuple[tuple[str, object, bool], ...]:
    entry = _FIELDS.get(id(typ))
    if entry is None:
        entry = _FIELDS[id(typ)] = (typ, tuple((name.rstrip("!"), sub, name.endswith("!"))
                                               for name, sub in typ.items()))
    return entry[1]


def _check(value: object, typ: object, where: str) -> object:
    if isinstance(typ, dict):
        if not isinstance(value, dict):
            _bad(where, "an object", value)
        if None in value.values():
            for key in [k for k, v in value.items() if v is None]:
                del value[key]
        for key, sub, required in _fields(typ):
            if key in value:
                v = value[key]
                if sub == "str" and v.__class__ is str and "\0" not in v:
                    continue  # the commonest field, checked without a call
                _check(v, sub, f"{where}.{key}" if where else key)
            elif required:
                raise ConfigError("config.json: missing required field "
                                  f"{f'{where}.{key}' if where else key!r}")
        return value
    if isinstance(typ, list):
        kind, item = typ
        if kind == "list":
            if not isinstance(value, list):
                _bad(where, "a list", value)
            if item == "str":  # most lists (env, args, seccomp's names): no path per item
                for i, v in enumerate(value):
                    if v.__class__ is not str or "\0" in v:
                        _check(v, item, f"{where}[{i}]")  # (a str subclass passes here)
                return value
            for i, v in enumerate(value):
                _check(v, item, f"{where}[{i}]")
        else:
            if not isinstance(value, dict):
                _bad(where, "an object", value)
            for k, v in value.items():
                _check(v, item, f"{where}.{k}")
        return value
    if typ == "str":
        if not isinstance(value, str):
            _bad(where, "a string", value)
        if "\0" in value:
            raise ConfigError(f"config.json: {where}: contains a NUL byte")
    elif typ == "bool":
        if not isinstance(value, bool):
            _bad(where, "true or false", value)
    else:
        low, high = _INT_RANGES[typ]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _bad(where, _NAMES[typ], value)
    return value


def _bad(where: str, expected: str, value: object) -> None:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise ConfigError(f"config.json: {where or 'top level'}: expected {expected}, "
                      f"got {shown}")
