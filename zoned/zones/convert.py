"""The one conversion of a zone file: into the RunOptions that `zoned run`'s flags make,
then through zoned.api.build_config into the same OCI config. No second model: a zone
file is `zoned run -d` with its flags written down."""
from __future__ import annotations

from zoned.errors import ConfigError, ZonedError
from zoned.oci.spec import RunOptions
from zoned.zones.zonefile import Zone

ANN_ZONE = "org.zoned.zone"  # the config of a container started from a zone file
ANN_UUID = "org.zoned.zone.uuid"

# a `zoned run` flag named in an error -> the zone file's key
FLAG_KEYS = {"--memory": "maxmem", "--cpus": "vcpus", "--cpuset-cpus": "cpus",
             "--pids-limit": "pids", "--hostname": "hostname", "--ip": "vif[0].ip",
             "--mac": "vif[0].mac", "-p": "vif", "--publish": "vif", "--network": "vif",
             "-v": "volumes", "--volume": "volumes", "-e": "env", "--env": "env",
             "--user": "user", "-u": "user", "--dns": "dns", "--image": "image",
             "working directory": "workdir", "no command given": "command",
             "invalid volume": "volumes", "volume source": "volumes",
             "invalid network name": "vif", "linux.resources.pids.limit": "pids",
             "linux.resources.memory.limit": "memory"}


def mib(value) -> str:
    """memory: 256 (MiB, as xm) or a size string as `--memory` takes it."""
    return f"{value}m" if isinstance(value, int) else str(value)


def run_options(zone: Zone) -> RunOptions:
    """The RunOptions of `zoned run -d` with this zone's flags."""
    import shlex

    d = zone.data
    command = d.get("command") or []
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as e:
            raise zone.error("command", str(e)) from None
    env = d.get("env") or []
    if isinstance(env, dict):
        env = [f"{k}={'' if v is None else v}" for k, v in env.items()]
    vifs = d.get("vif") or []
    memory = d.get("maxmem", d.get("memory"))
    annotations = {ANN_ZONE: zone.name}
    if d.get("uuid"):
        annotations[ANN_UUID] = d["uuid"]
    return RunOptions(
        args=[str(a) for a in command], image=d.get("image"), rootfs=d.get("rootfs"),
        name=zone.name, hostname=d.get("hostname"),
        memory=mib(memory) if memory is not None else None,
        cpus=str(d["vcpus"]) if "vcpus" in d else None,
        cpuset_cpus=str(d["cpus"]) if "cpus" in d else None,
        pids_limit=d.get("pids"), env=env, workdir=d.get("workdir"),
        user=str(d["user"]) if "user" in d else None, volumes=list(d.get("volumes") or []),
        tty=bool(d.get("tty")), interactive=bool(d.get("tty")),
        network=[v["network"] for v in vifs], ip=vifs[0].get("ip") if vifs else None,
        mac=vifs[0].get("mac") if vifs else None,
        publish=[str(p) for v in vifs for p in v.get("ports") or []],
        dns=[str(x) for x in d.get("dns") or []], annotations=annotations)


def oci_config(zone: Zone, images_root: str | None = None,
               roots: tuple[str, str] | None = None,
               startable: bool = False) -> tuple[RunOptions, dict]:
    """The zone's RunOptions and OCI config; a problem names the zone file's key.
    roots: the runtime's state and data roots (its named volumes are in the latter).
    startable (define): also what a start would refuse (a boot's start checks that
    itself)."""
    from zoned import api

    opts = run_options(zone)
    if roots is not None:
        opts.volume_root, opts.volume_data = roots
    try:
        if zone.get("backend") == "vm":
            from zoned.backends.vm import check_options

            check_options(opts)
        cfg = api.build_config(opts, images_root)
        if startable:
            _check_as_start_would(opts, cfg)
    except ZonedError as e:
        raise keyed(zone, e) from None
    if zone.get("capabilities"):
        add_capabilities(zone, cfg)
    return opts, cfg


def _check_as_start_would(opts: RunOptions, cfg: dict) -> None:
    """What a start checks that building the config does not: the config's field bounds
    (zoned.oci.spec.validate) and the networks' names and ports, so that `define` refuses
    a file no start could run."""
    from zoned.oci.spec import validate

    validate(cfg)
    if opts.network and opts.network != ["none"]:
        from zoned.network.attach import request_from_options
        from zoned.network.definitions import check_name

        request_from_options(opts)
        for name in opts.network:
            if name != "host" and not name.startswith("container:"):
                check_name(name)


def add_capabilities(zone: Zone, cfg: dict) -> None:
    """`capabilities: [SYS_BOOT]` (podman's --cap-add): into every set of the process,
    and the default seccomp profile made again for the larger bounding set (it allows
    reboot(2) only to a zone holding CAP_SYS_BOOT, as Moby's does)."""
    from zoned.child.seccomp import default_profile
    from zoned.child.security import add_capabilities as with_caps, cap_number

    names = zone.get("capabilities")
    for i, name in enumerate(names):
        if cap_number(name) is None:
            raise zone.error(f"capabilities[{i}]", f"{name!r}: no such capability")
    proc = cfg["process"]
    proc["capabilities"] = with_caps(proc.get("capabilities"), names)
    cfg["linux"]["seccomp"] = default_profile(proc["capabilities"]["bounding"])


def keyed(zone: Zone, e: ZonedError) -> ZonedError:
    """`zoned run`'s error for a flag, as the zone file's key that set it."""
    text = str(e)
    for flag, key in FLAG_KEYS.items():
        if _word_at(text, flag):
            if key == "maxmem" and "maxmem" not in zone.data:
                key = "memory"
            if flag.startswith("-"):  # say it in the file's words
                text = _replace_words(text.replace(f"invalid {flag} ", "invalid value "),
                                      flag, key)
            return zone.error(key, text)
    if "image" in text.lower():
        return zone.error("image", text)
    return ConfigError(f"{zone.path}: {text}") if isinstance(e, ConfigError) else e


def _word_at(text: str, phrase: str) -> list[int]:
    """Where the error `text` names `phrase` as a word: a flag such as -e or -v, not the
    same letters inside a path the user wrote ("/tmp/audit-exec")."""
    found, at = [], text.find(phrase)
    while at >= 0:
        before = text[at - 1] if at else " "
        end = at + len(phrase)
        after = text[end] if end < len(text) else " "
        if before in " '\"(" and after in " '\"=:),":
            found.append(at)
        at = text.find(phrase, at + 1)
    return found


def _replace_words(text: str, phrase: str, by: str) -> str:
    for at in reversed(_word_at(text, phrase)):
        text = text[:at] + by + text[at + len(phrase):]
    return text
