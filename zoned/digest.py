"""SHA-256 without OpenSSL: hashlib loads libcrypto (~2-3 ms), and zoned hashes on the start
path (the seccomp cache key, a state root's cgroup parent and data root)."""
from __future__ import annotations

try:  # CPython's builtin implementation (the same digests)
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other builds
    from hashlib import sha256

__all__ = ["sha256"]
