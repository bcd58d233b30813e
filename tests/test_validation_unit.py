"""Issue 10, items 4, 8, 9, 12, 13: the pure-logic side of config validation. Nothing here
needs root or touches the host (tests/conftest.py skips every test file for non-root all
the same); the end-to-end checks through the real CLI are in tests/test_validation.py.
"""
from __future__ import annotations

import copy
import random

import pytest

from zoned.child import security
from zoned.oci import spec, values
from zoned.errors import ConfigError

pytestmark = pytest.mark.unprivileged  # pure logic: runs without root


def base_config() -> dict:
    """runc's default config (what `zoned spec` writes), with a few optional fields set so
    that the fuzz below reaches them too."""
    cfg = spec.default_config(["sh"])
    cfg["process"]["user"].update({"umask": 18, "additionalGids": [1, 2]})
    cfg["process"]["consoleSize"] = {"height": 24, "width": 80}
    cfg["process"]["oomScoreAdj"] = 0
    cfg["process"]["capabilities"]["ambient"] = []
    cfg["domainname"] = "example"
    cfg["annotations"] = {"a": "b"}
    cfg["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=b"],
                                  "timeout": 5}]}
    linux = cfg["linux"]
    linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
    linux["cgroupsPath"] = "/zoned/x"
    linux["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                         "fileMode": 0o666, "uid": 0, "gid": 0}]
    linux["resources"].update({
        "memory": {"limit": 1 << 26, "swap": 1 << 26, "swappiness": 0,
                   "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 100, "throttleReadBpsDevice": [{"major": 8, "minor": 0,
                                                              "rate": 1000}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "unified": {"memory.high": "max"},
    })
    linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                                      "errnoRet": 1,
                                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    linux["maskedPaths"].append("/proc/x")
    linux["personality"] = {"domain": "LINUX"}
    return cfg


def leaf_paths(value, path=()):
    """Every (path, value) in a JSON document, containers included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaf_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaf_paths(v, path + (i,))


def dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def wrong_values(value) -> list:
    """Values of another JSON type than `value` (and out-of-range ones for integers)."""
    if isinstance(value, bool):
        return ["yes", 1]
    if isinstance(value, int):
        return ["abc", 1.5, True, [], 1 << 64, -(1 << 64)]
    if isinstance(value, str):
        return [1, ["x"], {}, False]
    if isinstance(value, list):
        return ["x", {}, 3]
    if isinstance(value, dict):
        return ["x", [], 1]
    return []


def test_base_config_is_valid():
    spec.validate(base_config())


def test_every_field_of_the_wrong_type_is_one_config_error_naming_it():
    """The fuzz of item 13: every field of a full config, given each wrong JSON type, fails
    validate() with a ConfigError naming that field, never another exception (those became
    "internal error" or a crash in the container's set-up)."""
    base = base_config()
    cases = 0
    for path, value in list(leaf_paths(base)):
        if not path:
            continue
        for bad in wrong_values(value):
            cfg = copy.deepcopy(base)
            node = cfg
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = bad
            try:
                spec.validate(cfg)
            except ConfigError as e:
                # the field, or for a list item its list
                where = dotted(path)
                assert where in str(e) or dotted(path[:-1]) in str(e), (where, bad, str(e))
                cases += 1
                continue
            # a few substitutions are still valid (e.g. an int where another int was)
            if isinstance(value, int) and not isinstance(value, bool) and bad is True:
                pytest.fail(f"{dotted(path)} = True accepted")
            if not isinstance(bad, type(value)):
                pytest.fail(f"{dotted(path)} = {bad!r} accepted")
    assert cases > 300


@pytest.mark.parametrize("doc, field", [
    ([], "top level"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh"]},
      "linux": []}, "linux"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh"]},
      "mounts": {}}, "mounts"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "capabilities": ["CAP_KILL"]}}, "process.capabilities"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh"]},
      "linux": {"namespaces": {"type": "pid"}}}, "linux.namespaces"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1,
                                                "hard": "abc"}]}},
     "process.rlimits[0].hard"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "user": {"uid": -1, "gid": 0}}}, "process.user.uid"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "user": {"uid": 4294967295, "gid": 0}}},
     "process.user.uid"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "env": "PATH=/bin"}}, "process.env"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh"], "env": ["NOEQUALS"]}}, "process.env[0]"),
    # the string lists' and string fields' quick path (zoned.oci.schema) names them too
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh", 1]}},
     "process.args[1]: expected a string"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
      "process": {"args": ["sh", "a\0b"]}}, "process.args[1]: contains a NUL"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs\0"}, "process": {"args": ["sh"]}},
     "root.path: contains a NUL"),
    ({"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh"]},
      "hostname": 7}, "hostname: expected a string"),
])
def test_the_reported_configs_name_their_field(doc, field):
    with pytest.raises(ConfigError) as e:
        spec.validate(doc)
    assert field in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("change, field", [
    ({"hostname": "h" * 65}, "hostname"),
    ({"domainname": "d" * 65}, "domainname"),
    ({"linux": {"namespaces": [{"type": "mount"}]}, "hostname": "h"}, "uts namespace"),
    ({"linux": {"namespaces": [{"type": "user"}]}}, "uidMappings"),
    ({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}},
     "no user namespace"),
    ({"linux": {"timeOffsets": {"monotonic": {"secs": 1}}}}, "no time namespace"),
    ({"process": {"args": ["sh"], "oomScoreAdj": 1001}}, "process.oomScoreAdj"),
])
def test_runcs_namespace_rules(change, field):
    cfg = {"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["sh"]},
           "linux": {"namespaces": [{"type": "uts"}]}, **change}
    with pytest.raises(ConfigError, match=field):
        spec.validate(cfg)


@pytest.mark.parametrize("path, mount", [
    ("/proc/x", "the proc mount on /proc"), ("/proc/kcore", "the proc mount on /proc"),
    ("/dev/../proc/x", "the proc mount on /proc"), ("//proc/x", "the proc mount on /proc"),
    ("/proc", "the proc mount on /proc"), ("/sys/x", "the sysfs mount on /sys"),
    ("/sys/fs/cgroup/x", "the cgroup mount on /sys/fs/cgroup"),
    ("/dev/pts/x", "the devpts mount on /dev/pts"),
    ("/dev/mqueue/x", "the mqueue mount on /dev/mqueue"),
])
def test_a_device_where_no_node_can_be_made_is_refused_naming_it(path, mount):
    """runc fails in its init ("mknod .../proc/x: no such file or directory"), which podman
    reports as a missing command (127); zoned refuses it before anything is made."""
    cfg = spec.default_config(["sh"])
    cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                               {"path": path, "type": "c", "major": 1, "minor": 3}]
    with pytest.raises(ConfigError) as e:
        spec.validate(cfg)
    assert str(e.value) == (f'invalid linux.devices[1].path "{path}": inside {mount}, '
                            "where no device node can be made")


@pytest.mark.parametrize("path", ["/dev/fuse", "/dev/shm/x", "/procfs/x", "/dev/ptsx"])
def test_devices_elsewhere_are_fine(path):
    cfg = spec.default_config(["sh"])
    cfg["linux"]["devices"] = [{"path": path, "type": "c", "major": 1, "minor": 3}]
    spec.validate(cfg)


def test_a_device_under_proc_is_fine_without_a_proc_mount_or_under_a_later_one():
    """The last mount over the path decides, as the init makes devices after all mounts:
    without a procfs there, /proc is a directory of the rootfs (runc makes it too)."""
    cfg = spec.default_config(["sh"])
    cfg["linux"]["devices"] = [{"path": "/proc/x", "type": "c", "major": 1, "minor": 3}]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"]
    spec.validate(cfg)
    # a tmpfs on /dev mounted after the devpts on /dev/pts hides it: the node is the tmpfs's
    cfg["mounts"].append({"destination": "/dev", "type": "tmpfs", "source": "tmpfs"})
    cfg["linux"]["devices"] = [{"path": "/dev/pts/x", "type": "c", "major": 1, "minor": 3}]
    spec.validate(cfg)


def test_nulls_are_absent_fields():
    cfg = base_config()
    cfg["linux"]["resources"]["memory"]["limit"] = None
    cfg["process"]["rlimits"] = None
    spec.validate(cfg)
    assert "limit" not in cfg["linux"]["resources"]["memory"] and "rlimits" not in cfg["process"]


# -- item 4: sysctls ------------------------------------------------------------------------

NS = {"ipc": {"type": "ipc"}, "net": {"type": "network"}, "uts": {"type": "uts"},
      "user": {"type": "user"}}


@pytest.mark.parametrize("key, namespaces, ok", [
    ("vm.swappiness", ["ipc", "net", "uts"], False),
    ("kernel.core_pattern", ["ipc", "net", "uts", "user"], False),
    ("kernel.panic", ["ipc", "net", "uts"], False),
    ("fs.file-max", ["ipc", "net", "uts"], False),
    ("kernel.msgmax", ["ipc"], True),
    ("kernel.msgmax", ["net"], False),
    ("kernel.shm_rmid_forced", ["ipc"], True),
    ("fs.mqueue.queues_max", ["ipc"], True),
    ("fs.mqueue.queues_max", [], False),
    ("net.ipv4.ip_forward", ["net"], True),
    ("net.ipv4.ip_forward", ["ipc", "uts"], False),
    ("net/ipv4/ip_forward", ["net"], True),       # sysctl.d's slash form
    ("net/ipv4/ip_forward", ["ipc"], False),
    ("kernel.domainname", ["uts"], True),
    ("kernel.domainname", [], False),
    ("kernel.hostname", ["uts"], False),           # conflicts with the hostname field
    ("user.max_user_namespaces", ["user"], True),
    ("user.max_user_namespaces", ["ipc", "net"], False),
    ("/kernel/core_pattern", ["ipc", "net", "uts"], False),
    ("net.ipv4/../../kernel/core_pattern", ["ipc", "uts"], False),
])
def test_sysctl_rule_is_runcs(key, namespaces, ok):
    linux = {"namespaces": [NS[n] for n in namespaces], "sysctl": {key: "1"}}
    if ok:
        security.check_sysctl(linux)
    else:
        with pytest.raises(ConfigError, match="linux.sysctl"):
            security.check_sysctl(linux)


def test_sysctl_in_the_callers_own_netns_path_is_the_host():
    linux = {"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}],
             "sysctl": {"net.ipv4.ip_forward": "1"}}
    with pytest.raises(ConfigError, match="host network namespace"):
        security.check_sysctl(linux)


@pytest.mark.parametrize("given, dotted_form", [
    ("net.ipv4.conf.eno2/100.rp_filter", "net.ipv4.conf.eno2/100.rp_filter"),
    ("net/ipv4/conf/eno2.100/rp_filter", "net.ipv4.conf.eno2/100.rp_filter"),
    ("kernel.msgmax", "kernel.msgmax"), ("kernel/msgmax", "kernel.msgmax"), ("x", "x"),
])
def test_sysctl_dotted_is_runcs_conversion(given, dotted_form):
    assert security.sysctl_dotted(given) == dotted_form


# -- item 8: the default pids limit -----------------------------------------------------

def pids_of(opts: dict):
    cfg = spec.RunOptions(["true"], rootfs="/", **opts).to_config()
    return cfg["linux"]["resources"].get("pids")


def test_run_defaults_to_2048_pids_and_minus_one_or_zero_is_unlimited():
    assert pids_of({}) == {"limit": 2048}
    assert pids_of({"pids_limit": 50}) == {"limit": 50}
    assert pids_of({"pids_limit": -1}) == {"limit": -1}
    assert pids_of({"pids_limit": 0}) == {"limit": -1}
    with pytest.raises(ConfigError, match="--pids-limit"):
        pids_of({"pids_limit": -5})
    with pytest.raises(ConfigError, match="--pids-limit"):
        pids_of({"pids_limit": "abc"})


def test_oci_default_config_has_no_pids_limit():
    assert "pids" not in spec.default_config(["sh"])["linux"]["resources"]


# -- item 9: cpus, user ----------------------------------------------------------------------

def test_cpus_below_a_1ms_quota_is_refused():
    assert values.parse_cpus("0.01") == (1000, 100000)
    assert values.parse_cpus("1.5") == (150000, 100000)
    for bad in ("0.000001", "0.009", "0", "-1", "nan", "inf", "x"):
        with pytest.raises(ConfigError, match="--cpus"):
            values.parse_cpus(bad)


@pytest.mark.parametrize("user", ["99999999999", "-1", "4294967295", "0:-1",
                                  "0:99999999999"])
def test_user_ids_out_of_range_are_refused(user):
    with pytest.raises(ConfigError, match="--user"):
        values.parse_user(user)


def test_user_ids_in_range():
    assert values.parse_user("4294967294:7") == {"uid": 4294967294, "gid": 7}


def test_memory_below_6mb_is_refused():
    with pytest.raises(ConfigError, match="minimum memory limit allowed is 6MB"):
        spec.RunOptions(["true"], rootfs="/", memory="1").to_config()
    cfg = spec.RunOptions(["true"], rootfs="/", memory="6m").to_config()
    assert cfg["linux"]["resources"]["memory"]["limit"] == 6 << 20


# -- item 12: capabilities, cgroupsPath ----------------------------------------------------

def test_capability_table_is_the_kernels_through_40():
    assert len(security.CAPABILITIES) == 41
    assert security.CAP_NUMBERS["CAP_PERFMON"] == 38
    assert security.CAP_NUMBERS["CAP_BPF"] == 39
    assert security.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert security.CAP_NUMBERS["CAP_SYS_ADMIN"] == 21
    assert security.cap_number("sys_admin") == 21 and security.cap_number("CAP_NOPE") is None


def test_unknown_capabilities_are_dropped_like_runc(monkeypatch):
    monkeypatch.setattr(security, "cap_last_cap", lambda: 37)  # a kernel before 5.8
    proc = {"args": ["sh"], "capabilities": {
        "bounding": ["CAP_KILL", "CAP_BPF", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE",
                     "CAP_FUTURE"],
        "effective": ["CAP_KILL", "CAP_BPF"]}}
    security.check_process(proc)
    assert proc["capabilities"] == {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]}


def test_unknown_capability_set_is_refused():
    with pytest.raises(ConfigError, match="process.capabilities.bounds"):
        security.check_process({"capabilities": {"bounds": []}})


V1_TEXT = ("12:pids:/user.slice/user-0.slice/session-1.scope\n"
           "5:memory:/user.slice/user-0.slice/session-1.scope\n"
           "3:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n"
           "0::/user.slice/user-0.slice/session-1.scope\n")


def test_own_cgroup_is_runcs_base_for_relative_paths():
    from zoned.cgroups import own_cgroup

    # v2: the parent of our cgroup (runc fs2), which has no processes of its own
    assert own_cgroup("0::/user.slice/user-0.slice/session-1.scope\n", "v2") == \
        "/user.slice/user-0.slice"
    assert own_cgroup("0::/\n", "v2") == "/"
    # v1: where the controllers agree
    assert own_cgroup(V1_TEXT, "hybrid") == "/user.slice"
    assert own_cgroup("4:pids:/a/b\n3:memory:/a/b\n", "v1") == "/a/b"


def test_relative_cgroups_path_stays_below_the_base(monkeypatch):
    from zoned import cgroups
    from zoned.runtime import cgroup_paths as runtime

    monkeypatch.setattr(cgroups, "own_cgroup", lambda: "/base")
    assert runtime.resolve_cgroups_path("ctr") == "/base/ctr"
    assert runtime.resolve_cgroups_path("a/b") == "/base/a/b"
    assert runtime.resolve_cgroups_path("../../../x") == "/base/x"  # runc's CleanPath
    assert runtime.resolve_cgroups_path("/abs/p") == "/abs/p"
    assert runtime.resolve_cgroups_path("/abs/../../p") == "/p"
    assert runtime.resolve_cgroups_path("") is None
    with pytest.raises(ConfigError, match="cgroupsPath"):
        runtime.resolve_cgroups_path("/a/..")
    monkeypatch.setattr(cgroups, "own_cgroup", lambda: "/")
    with pytest.raises(ConfigError, match="cgroupsPath"):
        runtime.resolve_cgroups_path("..")


# -- item 13: names --------------------------------------------------------------------------

def test_names_are_runcs_characters_and_at_most_64():
    for good in ("a", "A1_b.c+d-e", "x" * 64, "0" * 64):
        assert spec.check_id(good) == good
    for bad in ("x" * 65, "x" * 128, "", ".", "..", "-a", "a/b", "a b", "é", "a\n"):
        with pytest.raises(ConfigError, match="invalid container name"):
            spec.check_id(bad)


def test_a_random_sample_of_bad_configs_never_escapes_as_another_error():
    """Random wrong values in random places (seeded, bounded): only ConfigError."""
    rng = random.Random(10)
    base = base_config()
    paths = [p for p, _ in leaf_paths(base) if p]
    junk = [None, "", "x", -1, 0, 1 << 70, 1.5, True, [], {}, [None], {"a": None}, ["x"]]
    for _ in range(500):
        cfg = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths)
            node = cfg
            try:
                for p in path[:-1]:
                    node = node[p]
                node[path[-1]] = rng.choice(junk)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier substitution replaced a parent
        try:
            spec.validate(cfg)
        except ConfigError:
            pass


@pytest.mark.parametrize("name", ["SIG_DFL", "_DFL", "SIG_IGN", "SIG_SETMASK", "RTMIN+1",
                                  "0", "65", "BOGUS", "", "SIGKILL\n"])
def test_signal_names_that_are_not_signals_are_refused(name):
    """zoned kill reads names off _signal (not signal.py's enum), whose other constants
    (SIG_DFL is 0, SIG_SETMASK 2) must never pass for a signal."""
    from zoned.cli.containers import parse_signal

    with pytest.raises(ConfigError, match="signal"):
        parse_signal(name)


def test_signal_names_are_the_kernels():
    import signal

    from zoned.cli.containers import parse_signal

    for sig in signal.Signals:
        assert parse_signal(sig.name) == parse_signal(sig.name[3:].lower()) == sig.value
    assert parse_signal("9") == 9


@pytest.mark.parametrize("check, value", [
    ("id", "web\n"), ("id", "web\nx"), ("id", "-web"), ("id", "wéb"), ("id", "w/b"),
    ("image", "busybox\n"), ("image", "BusyBox"), ("image", "a" * 129), ("image", "../x"),
    ("hostname", "h\n"), ("hostname", "h-"), ("hostname", "a..b"), ("hostname", "ü"),
])
def test_names_checked_without_re_take_no_trailing_newline(check, value):
    """zoned.linux.names replaced re's patterns, whose `$` let "name\n" through."""
    from zoned.images.errors import valid_name
    from zoned.oci.hostname import hostname_problem
    from zoned.oci.spec import check_id

    if check == "id":
        with pytest.raises(ConfigError):
            check_id(value)
    elif check == "image":
        assert not valid_name(value)
    else:
        assert hostname_problem(value) is not None
