"""SHA-256 without OpenSSL.

``hashlib`` loads OpenSSL, which costs a start-up ~3 ms and ~4 MiB of
memory; CPython's built-in SHA-256 module computes the same digest. The
plan cache key (``vbdecl run``) and the manifest hash (``vb``) use it.
The module is found once, at import: a failed import is not cached, and
trying ``_sha2`` again on every call rescans sys.path each time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


try:
    from _sha2 import sha256 as _new  # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256 as _new  # Python 3.11
    except ImportError:
        from hashlib import sha256 as _new


def sha256(data: bytes = b"") -> Any:
    """A new SHA-256 object (``update``, ``hexdigest``), fed ``data``."""
    return _new(data)
