"""zoned.zones' pure logic: exit events, policy decisions, back-off, zone file keys and
their conversion into `zoned run`'s options. No root needed."""
from __future__ import annotations

import signal

import pytest

from zoned.errors import ConfigError
from zoned.zones import policy
from zoned.zones.convert import run_options
from zoned.zones.zonefile import parse, set_key

pytestmark = pytest.mark.unprivileged


def zone(text: str):
    return parse("name: zmgu\nimage: busybox\n" + text, "/z/zmgu.yaml")


def test_exit_events_follow_pid_namespace_reboot_semantics():
    assert policy.event_of(128 + signal.SIGHUP) == "reboot"   # reboot(RB_AUTOBOOT)
    assert policy.event_of(128 + signal.SIGINT) == "poweroff"  # reboot(RB_POWER_OFF)
    assert policy.event_of(0) == "poweroff"
    assert policy.event_of(3) == "crash" and policy.event_of(137) == "crash"


def test_policy_decisions():
    z = zone("on_crash: preserve\non_reboot: restart\n")
    assert policy.decide(z, "crash", None, 0) == "preserve"
    assert policy.decide(z, "reboot", None, 0) == "restart"
    assert policy.decide(z, "poweroff", None, 0) == "destroy"  # xm's default
    assert policy.decide(z, "crash", "shutdown", 0) == "destroy"  # the admin's word wins
    assert policy.decide(z, "crash", "reboot", 0) == "restart"
    f = zone("restart: on-failure:2\n")
    assert [policy.decide(f, "crash", None, n) for n in range(3)] == \
        ["restart", "restart", "preserve"]
    assert policy.decide(f, "poweroff", None, 0) == "destroy"
    assert policy.decide(zone("restart: always\n"), "poweroff", None, 9) == "restart"


def test_backoff_doubles_and_is_capped():
    delays = [policy.backoff(n) for n in range(1, 12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == policy.BACKOFF_MAX and delays == sorted(delays)


def test_zone_file_converts_to_run_options():
    z = zone("command: sh -c 'echo hi'\nmemory: 64\nvcpus: 1.5\ncpus: 0-1\npids: 20\n"
             "env: {A: b}\nvif: [{network: n1, ip: 10.1.0.5, ports: ['80:80']}]\n"
             "volumes: ['/srv:/srv:ro']\ntty: true\n")
    o = run_options(z)
    assert o.args == ["sh", "-c", "echo hi"] and o.memory == "64m" and o.cpus == "1.5"
    assert o.cpuset_cpus == "0-1" and o.pids_limit == 20 and o.env == ["A=b"]
    assert o.network == ["n1"] and o.ip == "10.1.0.5" and o.publish == ["80:80"]
    assert o.volumes == ["/srv:/srv:ro"] and o.tty and o.name == "zmgu"
    assert o.annotations["org.zoned.zone"] == "zmgu"


@pytest.mark.parametrize("text,key,line", [
    ("autostart: yes please\n", "autostart", 3),
    ("vif: [{network: a}, {network: b, ip: 10.0.0.2}]\n", "vif[1].ip", 3),
    ("volumes: [nocolon]\n", "volumes[0]", 3),
    ("rootfs: relative/dir\n", "rootfs", 3),
    ("pids: 0\n", "pids", 3),
])
def test_zone_file_errors_name_line_and_key(text, key, line):
    with pytest.raises(ConfigError) as e:
        zone(text)
    assert str(e.value).startswith(f"/z/zmgu.yaml:{line}: {key}: "), str(e.value)


def test_set_key_keeps_the_rest_of_the_file(tmp_path):
    p = tmp_path / "z.yaml"
    p.write_text("# comment\nname: z\nautostart: false  # old\nimage: busybox\n")
    set_key(str(p), "autostart", "true")
    assert p.read_text() == "# comment\nname: z\nautostart: true\nimage: busybox\n"
    set_key(str(p), "vcpus", "2")
    assert p.read_text().endswith("image: busybox\nvcpus: 2\n")
