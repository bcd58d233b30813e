"""once: functools.cache for a function of no arguments, without functools.

functools imports collections (with keyword, operator, reprlib, heapq): ~2 ms of every
zoned command on this host, for the few facts zoned reads once per process.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

_UNSET = object()


def once(fn: Callable[[], object]):
    """fn() the first time, its result (or its exception, each time) afterwards;
    `.cache_clear()` forgets the result, as functools' does."""
    result = _UNSET

    def cached():
        nonlocal result
        if result is _UNSET:
            result = fn()
        return result

    def cache_clear() -> None:
        nonlocal result
        result = _UNSET

    cached.cache_clear = cache_clear
    cached.__name__, cached.__doc__, cached.__wrapped__ = fn.__name__, fn.__doc__, fn
    return cached
