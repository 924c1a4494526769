"""The manifest model: pydantic models, YAML loading with positions, normalization.

Importing this package is cheap: :mod:`units` and :mod:`names` are plain
Python (the ``vb`` fast path uses them); pydantic and the YAML loaders are
imported only by :mod:`manifest`, :mod:`load` and :mod:`normalize`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def load_normalized(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load and validate every document of ``path`` and normalize each.

    Returns ``[{"name", "labels", "annotations", "source", "spec"}, ...]``
    (docs/plan-format.md); raises :class:`~vbdecl.errors.ManifestError`
    listing every problem of the file.
    """
    from vbdecl.model.load import load_path
    from vbdecl.model.normalize import normalize

    file = os.path.abspath(os.fspath(path))
    result = load_path(os.fspath(path))
    result.raise_for_problems()
    base_dir = os.path.dirname(file)
    return [normalize(env, base_dir=base_dir, source={"path": file, "document": index})
            for index, env in result.environments]
