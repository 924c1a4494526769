"""vbdecl: declarative Linux sandbox environments.

The Python API for embedders lives in :mod:`vbdecl.api`; its functions are
re-exported here lazily so that ``import vbdecl`` stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__version__ = "0.1.0"

_API = ("run", "apply", "destroy", "load", "compile_plan")


def __getattr__(name: str) -> Any:
    if name in _API:
        from vbdecl import api

        return getattr(api, name)
    raise AttributeError(f"module 'vbdecl' has no attribute {name!r}")
