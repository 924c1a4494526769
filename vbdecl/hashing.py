"""SHA-256 without OpenSSL.

``hashlib`` loads OpenSSL, which costs a start-up ~3 ms and ~4 MiB of
memory; CPython's built-in SHA-256 module computes the same digest. The
plan cache key (``vbdecl run``) and the manifest hash (``vb``) use it.
The module is found once, at import: a failed import is not cached, and
trying ``_sha2`` again on every call rescans sys.path each time.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# The module of this Python first: a failed import scans sys.path (~0.1 ms).
try:
    if sys.version_info >= (3, 12):
        from _sha2 import sha256 as _new
    else:
        from _sha256 import sha256 as _new
except ImportError:
    from hashlib import sha256 as _new


def sha256(data: bytes = b"") -> Any:
    """A new SHA-256 object (``update``, ``hexdigest``), fed ``data``."""
    return _new(data)


def file_sha256(path: str, *, limit: int | None = None) -> str | None:
    """The hex SHA-256 of a file's content (of its first ``limit`` bytes, and one more
    when there are: a file that grew while read differs), or None when it cannot be read."""
    digest = _new()
    left = -1 if limit is None else limit + 1
    try:
        with open(path, "rb") as f:
            while left and (chunk := f.read(1 << 20 if left < 0 else min(1 << 20, left))):
                digest.update(chunk)
                left = left - len(chunk) if left > 0 else left
    except OSError:
        return None
    return str(digest.hexdigest())
