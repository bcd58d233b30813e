"""A zone's run options made concrete: RunOptions -> the OCI config (image, --init, the
default seccomp profile), its network set-up, its name, and its exit status as a shell
reports it. The API (zoned.api) and the CLI's `run` share these; the CLI loads only this
module, not the API's classes (start-up time)."""
from __future__ import annotations

import os

from zoned.errors import ZonedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.oci.spec import RunOptions
    from zoned.runtime.lifecycle import Runtime

DEFAULT_IMAGE = "busybox"
LIBEXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libexec")


def new_name() -> str:
    return "z-" + os.urandom(5).hex()


def status_code(wait_status: int) -> int:
    """A waitpid status as a shell would report it: exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def build_config(opts: RunOptions, images_root: str | None = None) -> dict:
    """RunOptions -> OCI config: resolve the image, add --init and the default seccomp."""
    image_rootfs = image_config = None
    if not opts.rootfs:
        from zoned.images.errors import ImageError, ImageNotFound
        from zoned.images.store import ImageStore

        try:
            image = ImageStore(images_root).get(opts.image or DEFAULT_IMAGE)
        except ImageNotFound as e:
            raise ZonedError(str(e)) from None
        except ImageError as e:  # a malformed name ("../../etc") or a damaged image
            from zoned.errors import ConfigError

            raise ConfigError(f"--image: {e}") from None
        opts.image = image.name
        image_rootfs, image_config = image.rootfs_dir, image.config
    init = os.path.join(LIBEXEC, "zoned-init")
    cfg = opts.to_config(image_rootfs=image_rootfs,
                         image_config=image_config,
                         init_path=init if os.path.exists(init) else None)
    from zoned.child.seccomp import default_profile

    cfg["linux"]["seccomp"] = default_profile(cfg["process"]["capabilities"]["bounding"])
    if os.geteuid() != 0:  # rootless: a user namespace of the user's own
        from zoned.rootless import adapt_config

        adapt_config(cfg)
    return cfg


def network_for(opts: RunOptions, rt: Runtime | None, cid: str):
    """The network set-up for a container, or None when it needs none (only lo, or the
    host's network): pyroute2 is imported only when networking is asked for."""
    nets = opts.network
    if os.geteuid() != 0 and nets and nets not in (["none"],):  # rootless: user-mode only
        from zoned.rootless_net import UserNetwork

        if len(nets) != 1:
            raise ZonedError("rootless zones have one network: none or pasta")
        return UserNetwork(nets[0], list(opts.publish))
    if not nets or nets in (["none"], ["host"]):
        if opts.ip or opts.mac or opts.publish:
            raise ZonedError("--ip, --mac and -p need a network (--network NAME)")
        return None
    from zoned.network import attach

    return attach.setup(rt.store.root, cid, opts, rt)
