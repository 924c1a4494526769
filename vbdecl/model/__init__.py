"""The manifest model: pydantic models, YAML loading with positions, normalization.

Importing this package is cheap: :mod:`units` and :mod:`names` are plain
Python (the ``vb`` fast path uses them); pydantic and the YAML loaders are
imported only by :mod:`manifest`, :mod:`load` and :mod:`normalize`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike
    from typing import Any


def load_normalized(path: str | PathLike[str], *, data: bytes | None = None) -> list[dict[str, Any]]:
    """Load and validate every document of ``path`` and normalize each.

    Returns ``[{"name", "labels", "annotations", "source", "spec"}, ...]``
    (docs/plan-format.md); raises :class:`~vbdecl.errors.ManifestError`
    listing every problem of the file.

    ``data``: a manifest read already (from stdin). ``path`` then only names it in
    messages (``<stdin>:line:col``), relative host paths are to the current
    directory, and the documents have no source file.
    """
    import os  # (this package is on the hot paths; os is not: vbdecl/sys/oslite.py)

    from vbdecl.model.load import load_path
    from vbdecl.model.normalize import normalize

    result = load_path(os.fspath(path), data)
    result.raise_for_problems()
    if data is not None:
        return [normalize(env, base_dir=os.getcwd()) for _index, env in result.environments]
    file = os.path.abspath(os.fspath(path))
    base_dir = os.path.dirname(file)
    # The file on record by its real path: the same file reached through a link (a home
    # under a symlink, a relative argument) is not a manifest that moved (plan.diff)
    real = os.path.realpath(file)
    return [normalize(env, base_dir=base_dir, source={"path": real, "document": index})
            for index, env in result.environments]
