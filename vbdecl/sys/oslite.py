"""os for the hot paths: posix's calls under os's names, without importing os.

``vb``, ``vbdecl run`` and ``vbdecl exec`` start a Python for every sandbox, and
importing os is ~0.9 ms of that start (its environ mapping pulls in
_collections_abc, whose classes take ~0.55 ms to build): a third of bubblewrap's
whole run. os takes its calls from posix, and so does this module: ``os.open``
here is the very function ``os.open`` is. The few names that are os's own and
that the hot paths use are defined here as os (3.11) defines them, for str and
bytes: environb (the dict os.environ and os.environb read), getenv, fsencode,
fsdecode, devnull, and in :class:`path` the posixpath functions the hot paths
call, for str. Anything else is missing on purpose (mypy says so): code that
needs it imports os itself, off the hot paths. tests/integration/
test_lean_imports.py keeps os off them.

Hot modules import it as ``from vbdecl.sys import oslite as os``.
"""

from __future__ import annotations

import posix
import sys as _sys
from posix import *  # noqa: F403  (os's own "from posix import *")
from posix import _exit as _exit
from posix import fspath, getcwd, lstat, stat

# posix's environ is os.environb's dict (bytes); os.environ, the str view of it,
# is not here: os.environ.get("X") on this dict would find nothing, silently.
environb: dict[bytes, bytes] = environ  # noqa: F405
del environ  # noqa: F821

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike

devnull = "/dev/null"
sep = "/"
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
_ENCODING = _sys.getfilesystemencoding()
_ERRORS = _sys.getfilesystemencodeerrors()
_S_IFMT, _S_IFDIR, _S_IFLNK = 0o170000, 0o040000, 0o120000


def fsencode(filename: str | bytes | PathLike[str] | PathLike[bytes]) -> bytes:
    """os.fsencode: a file name in the file system's encoding (surrogateescape)."""
    name = fspath(filename)
    return name.encode(_ENCODING, _ERRORS) if isinstance(name, str) else name


def fsdecode(filename: str | bytes | PathLike[str] | PathLike[bytes]) -> str:
    """os.fsdecode: a file name decoded from the file system's encoding."""
    name = fspath(filename)
    return name.decode(_ENCODING, _ERRORS) if isinstance(name, bytes) else name


def getenv(key: str, default: str | None = None) -> str | None:
    """os.getenv, read from the same dict os.environ reads."""
    value = environb.get(key.encode(_ENCODING, _ERRORS))
    return default if value is None else value.decode(_ENCODING, _ERRORS)


# What posixpath.normpath calls (CPython 3.11 to 3.13 have it; without it, posixpath's).
_path_normpath: Callable[[str], str] | None = getattr(posix, "_path_normpath", None)


class path:
    """posixpath's functions that the hot paths call, for str, as posixpath (3.11)
    has them (posixpath imports os)."""

    @staticmethod
    def join(a: str, *p: str) -> str:
        joined = a
        for b in p:
            if b.startswith("/"):
                joined = b
            elif not joined or joined.endswith("/"):
                joined += b
            else:
                joined += "/" + b
        return joined

    @staticmethod
    def basename(p: str) -> str:
        return p[p.rfind("/") + 1:]

    @staticmethod
    def dirname(p: str) -> str:
        head = p[:p.rfind("/") + 1]
        if head and head != "/" * len(head):
            head = head.rstrip("/")
        return head

    @staticmethod
    def normpath(p: str) -> str:
        if _path_normpath is None:              # pragma: no cover
            import posixpath

            return posixpath.normpath(p)
        return _path_normpath(p) or "."

    @staticmethod
    def abspath(p: str) -> str:
        if not p.startswith("/"):
            p = path.join(getcwd(), p)
        return path.normpath(p)

    @staticmethod
    def realpath(p: str) -> str:
        """posixpath.realpath; for a path that exists, the kernel's: the path of an
        O_PATH fd on it (the same, without a readlink per component)."""
        try:
            fd = posix.open(p, posix.O_PATH | posix.O_CLOEXEC)
        except (OSError, ValueError):
            fd = -1
        if fd >= 0:
            try:
                real = posix.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                real = ""
            finally:
                posix.close(fd)
            if real.startswith("/") and not real.endswith(" (deleted)"):
                return real
        import posixpath

        return posixpath.realpath(p)

    @staticmethod
    def exists(p: str) -> bool:
        try:
            stat(p)
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def lexists(p: str) -> bool:
        try:
            lstat(p)
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def isdir(p: str) -> bool:
        try:
            return stat(p).st_mode & _S_IFMT == _S_IFDIR
        except (OSError, ValueError):
            return False

    @staticmethod
    def islink(p: str) -> bool:
        try:
            return lstat(p).st_mode & _S_IFMT == _S_IFLNK
        except (OSError, ValueError, AttributeError):
            return False
