"""A finder for vbdecl's own modules, for the console programs' start-up.

Python's path-based import spends ~45 us of pure-Python bookkeeping on every
module whatever its size (the meta path's three finders, directory caches,
path joins, the loader's checks): for the ~35 modules of a ``vb`` run about
1.5 ms, a fifth of what vb costs beyond the interpreter's own start. This
finder goes from a module's name straight to its source file and to the
bytecode the default loader cached for it (where ``-O`` and
``PYTHONPYCACHEPREFIX`` put it too), checks that cache exactly as the default
loader checks a timestamp-based one (its length, magic number, flags, source
mtime and size), and leaves everything else to the regular machinery: a
missing or stale cache (which the default loader then writes again), a
hash-based one. Its loader is the default source loader, which only skips
reading and checking the cache again, so resources, ``get_source`` and
tracebacks behave as usual (the code's file names are set to where the
source is now, as the default loader sets them). vbdecl's package keeps no
extension module next to a source module of the same name and no module next
to a package of its name, the two layouts where this finder (a source module
first) and the default one would choose differently.

Installed by the console entry points only: embedders of the Python API keep
the import system as they set it up.
"""

from __future__ import annotations

import sys
from marshal import loads
from posix import O_CLOEXEC, O_RDONLY, close, fstat, read, stat  # (os's: vbdecl/sys/oslite.py)
from posix import open as open_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

_bootstrap: Any = sys.modules["_frozen_importlib"]
_external: Any = sys.modules["_frozen_importlib_external"]
_fix_co_filename: Any = sys.modules["_imp"]._fix_co_filename
_CodeType = type((lambda: None).__code__)


class CachedSourceLoader(_external.SourceFileLoader):  # type: ignore[misc]
    """The default source loader, handed the module's checked cache by the finder."""

    def __init__(self, name: str, path: str, data: bytes) -> None:
        super().__init__(name, path)
        self.data: bytes | None = data

    def exec_module(self, module: ModuleType) -> None:
        data, self.data = self.data, None
        code = loads(memoryview(data)[16:]) if data is not None else None
        del data             # before the module's own imports read theirs
        if type(code) is not _CodeType:
            # run a second time (not a reload: that finds a new spec), or not code at all:
            # the default loader reads and checks the cache itself
            super().exec_module(module)
            return
        _fix_co_filename(code, self.path)
        exec(code, module.__dict__)


class PackageFinder:
    """Finds the submodules of one package, whose directory is ``root``."""

    def __init__(self, package: str, root: str) -> None:
        self.prefix = package + "."
        self.root = root
        tag = sys.implementation.cache_tag
        # the cache's suffix where cache_from_source would only join strings (no -O)
        self.plain_suffix = f".{tag}.pyc" if tag is not None and not sys.flags.optimize else ""

    def cache_of(self, source: str) -> str:
        """Where the default loader keeps ``source``'s bytecode: cache_from_source's
        answer, its generality (~1 us a module) only where it is needed."""
        if self.plain_suffix and sys.pycache_prefix is None:
            head, _, leaf = source.rpartition("/")
            return f"{head}/__pycache__/{leaf[:-3]}{self.plain_suffix}"
        return _external.cache_from_source(source)  # type: ignore[no-any-return]

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if not name.startswith(self.prefix):
            return None
        base = self.root + "/" + name[len(self.prefix):].replace(".", "/")
        # a module before a package: most names are modules (see the module's doc)
        for source, is_package in ((base + ".py", False), (base + "/__init__.py", True)):
            try:
                st = stat(source)
            except OSError:
                continue
            try:
                cached = self.cache_of(source)
                fd = open_fd(cached, O_RDONLY | O_CLOEXEC)
            except (OSError, NotImplementedError):     # (no cache_tag: no caches)
                return None
            try:       # (open(), a FileIO and its readall cost 4 more system calls)
                data = read(fd, fstat(fd).st_size)
            except OSError:
                return None
            finally:
                close(fd)
            if (len(data) < 16 or data[:4] != _external.MAGIC_NUMBER or data[4:8] != b"\0\0\0\0"
                    or int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                    or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
                return None
            loader = CachedSourceLoader(name, source, data)
            spec = _bootstrap.ModuleSpec(name, loader, origin=source, is_package=is_package)
            spec.has_location = True
            spec.cached = cached
            if is_package:
                spec.submodule_search_locations = [source.rpartition("/")[0]]
            return spec
        return None


def install(package: ModuleType) -> None:
    """Put a finder for ``package``'s submodules first on the meta path (once)."""
    if not any(isinstance(finder, PackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PackageFinder(package.__name__, package.__path__[0]))
