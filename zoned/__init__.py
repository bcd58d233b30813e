"""zoned: OS-level containers (zones) on Linux.

`zoned.run(...)`, `zoned.Container(...)` and `zoned.Pool(...)` are the Python API
(zoned.api, zoned.pool); names load
lazily so `import zoned` costs nothing for the CLI. zoned's own modules load from one
pack of their bytecode where `make bytecode` wrote it (zoned.modulepack; ZONED_MODULEPACK=0
turns that off).
"""
from zoned.modulepack import install as _install_modulepack

__version__ = "0.1.0"
__all__ = ["run", "Container", "Pool", "Result", "Runtime", "RunOptions", "ZonedError",
           "TimeoutExpired", "CalledProcessError"]


_install_modulepack(__path__[0])


def __getattr__(name: str):
    if name in ("run", "Container", "Result", "TimeoutExpired", "CalledProcessError"):
        from zoned import api

        return getattr(api, name)
    if name == "Pool":
        from zoned.pool import Pool

        return Pool
    if name == "Runtime":
        from zoned.runtime.lifecycle import Runtime

        return Runtime
    if name == "RunOptions":
        from zoned.oci.spec import RunOptions

        return RunOptions
    if name == "ZonedError":
        from zoned.errors import ZonedError

        return ZonedError
    raise AttributeError(f"module 'zoned' has no attribute {name!r}")
