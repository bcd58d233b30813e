"""`zoned features`: what this runtime supports, as runtime-spec features.md describes, so
engines can check before they ask (containerd and podman read it)."""
from __future__ import annotations


def features() -> dict:
    from zoned import cgroups
    from zoned.child import rootfs, seccomp_abi, security
    from zoned.oci import hooks
    from zoned.oci import spec

    actions = sorted(a for a in seccomp_abi.ACTIONS if a != "SCMP_ACT_NOTIFY")
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": spec.OCI_VERSION,
        "hooks": list(hooks.ALL),
        "mountOptions": sorted(set(rootfs.MOUNT_FLAGS) | set(rootfs.PROPAGATION)),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": list(security.CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": actions,
                "operators": list(seccomp_abi.OPS),
                "archs": sorted(seccomp_abi.ARCHES),
                "knownFlags": sorted(seccomp_abi.FLAGS),
                "supportedFlags": sorted(seccomp_abi.FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {
            "org.zoned.version": "0.1.0",
            "org.zoned.cgroup.mode": cgroups.detect(),
        },
    }
